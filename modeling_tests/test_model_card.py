"""Model cards: metadata (base model, license, model-index from results files), sections, and a usage snippet that
runs, as written in the card, in a process where gemma_encoder_hf cannot be imported."""

import json
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import tiny_encoder_config
from huggingface_hub import ModelCard
from transformers import AutoTokenizer

from gemma_encoder_hf import (
    GemmaEncoderConfig,
    GemmaEncoderForQuestionAnswering,
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderForTokenClassification,
)
from gemma_encoder_hf.harness.cli import main as cli_main
from gemma_encoder_hf.integrations.model_card import (
    TASKS,
    build_model_card,
    eval_results,
    load_results,
    write_model_card,
)
from gemma_encoder_hf.modeling.modeling_gemma_encoder import (
    GemmaEncoderModel,
    served_model_classes,
)

# The record `gemma-encoder evaluate --out` writes (gemma_encoder_hf.harness.evaluation.results_record).
SST2_RESULTS = {
    "model": "runs/sst2",
    "task": "sst2",
    "dataset": {"name": "sst2", "split": "validation", "path": "/data/sst2/train.tsv"},
    "metrics": {"accuracy": 0.91234, "f1": 0.905},
    "config": {"attention": "bidirectional", "pooling": "attention"},
}


def tiny_config(**overrides) -> GemmaEncoderConfig:
    # The card's settings rows below spell out the width and pooling heads set here.
    fields = {"decoder_model_type": "gemma3_text", "hidden_size": 64, "attention_pooling_num_heads": 4}
    return tiny_encoder_config(**{**fields, **overrides})


def front_matter(path) -> dict:
    return ModelCard.load(path).data.to_dict()


def test_cli_card_has_metadata_results_and_sections(tmp_path):
    model_dir = tmp_path / "model"
    config = tiny_config(
        pooling="attention",
        attention_pooling_probe="kv",
        hidden_dropout=0.05,
        classifier_dropout=0.1,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    GemmaEncoderForSequenceClassification(config).save_pretrained(model_dir)
    results = tmp_path / "sst2.json"
    results.write_text(json.dumps(SST2_RESULTS))
    out = tmp_path / "card" / "README.md"
    out.parent.mkdir()

    code = cli_main(
        [
            "card", str(model_dir), "--out", str(out), "--results", str(results), "--model-id", "me/gemma-sst2",
            "--base-model", "google/gemma-3-270m", "--training-data", "nyu-mll/glue",
        ]
    )
    assert code == 0
    card = ModelCard.load(out)
    assert card.data.base_model == "google/gemma-3-270m"
    assert card.data.license == "gemma"
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "text-classification"
    assert card.data.datasets == ["nyu-mll/glue"]
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics == {"accuracy": 0.9123, "f1": 0.905}
    assert {(r.dataset_type, r.dataset_config, r.dataset_split) for r in card.data.eval_results} == {
        ("nyu-mll/glue", "sst2", "validation")
    }
    text = card.content
    assert "model-index:" in text
    for section in ("## Usage", "## Conversion settings", "## Intended uses and limitations", "## Training data",
                    "## Evaluation results", "## Terms of use"):
        assert section in text
    assert "| Pooling | attention pooling, kv-probe (4 probes, 4 heads) |" in text
    assert "| Dropout (attention / hidden / classifier) | 0.0 / 0.05 / 0.1 |" in text
    assert "| Head | dropout → linear 64→64 → gelu → dropout → linear 64→2 |" in text
    assert "0: negative, 1: positive" in text
    assert "| GLUE SST-2 | validation | accuracy | 0.9123 |" in text
    assert "https://ai.google.dev/gemma/terms" in text
    assert '"me/gemma-sst2"' in text  # the snippet loads the repo id it was given
    assert "/data/sst2" not in text  # local paths of the results file stay out of a public card


@pytest.mark.parametrize("model_class", served_model_classes(), ids=lambda cls: cls.__name__)
def test_card_matches_architecture(model_class, tmp_path):
    model_class(tiny_config(attention="causal")).save_pretrained(tmp_path)
    out = write_model_card(tmp_path)
    pipeline_tag, task_text = TASKS[model_class.__name__]
    assert front_matter(out)["pipeline_tag"] == pipeline_tag
    text = out.read_text()
    assert task_text in text and "Attention stays causal" in text
    assert "base_model" not in front_matter(out)  # not recorded in the config: left out, not guessed
    if model_class is GemmaEncoderForRanking:
        assert "| Ranking loss | listwise (groups of 8 documents) |" in text


@pytest.mark.parametrize(
    "record, message",
    [
        ({"task": "sst2", "dataset": "sst2"}, r"lacks \['metrics'\]"),
        ({"task": "sst2", "dataset": "sst2", "metrics": {"accuracy": "high"}}, r"\['accuracy'\] are not numbers"),
        ({"task": "sst2", "dataset": {"split": "test"}, "metrics": {"accuracy": 0.5}}, "'dataset' must be a name"),
        (["not a record"], "must be a JSON object"),
    ],
)
def test_malformed_results_are_refused(record, message, tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=message):
        load_results([path])
    GemmaEncoderModel(tiny_config()).save_pretrained(tmp_path / "model")
    assert cli_main(["card", str(tmp_path / "model"), "--results", str(path)]) == 2
    assert "error" in capsys.readouterr().err


def test_reranking_records_link_their_dataset():
    """`gemma-encoder evaluate --rerank` writes task="rerank" and the folder name as the dataset."""
    record = {"task": "rerank", "dataset": {"name": "scifact", "split": "test"}, "metrics": {"ndcg@10": 0.71234}}
    (result,) = eval_results([record], "text-ranking")
    assert (result.task_type, result.dataset_type, result.dataset_split) == ("text-ranking", "BeIR/scifact", "test")
    assert (result.metric_type, result.metric_value) == ("ndcg@10", 0.7123)
    (unknown,) = eval_results([{"task": "rerank", "dataset": "my-set", "metrics": {"mrr@10": 0.5}}], "text-ranking")
    assert (unknown.dataset_type, unknown.dataset_name) == ("my-set", "my-set")


def test_card_refuses_non_gemma_encoder_config():
    from transformers import BertConfig

    with pytest.raises(TypeError, match="GemmaEncoderConfig"):
        build_model_card(BertConfig(), model_id="me/bert")


def test_usage_snippets_run_as_written_without_package(real_encoder_dir, tmp_path):
    """Each card's snippet is cut out of the rendered README and executed against the saved folder it names."""
    tokenizer = AutoTokenizer.from_pretrained(real_encoder_dir)
    snippets = {}
    for model_class in (
        GemmaEncoderForSequenceClassification,
        GemmaEncoderForRanking,
        GemmaEncoderModel,
        GemmaEncoderForTokenClassification,
        GemmaEncoderForQuestionAnswering,
    ):
        folder = tmp_path / model_class.__name__
        model_class(tiny_config(vocab_size=len(tokenizer), pooling="attention")).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        card = write_model_card(folder).read_text()
        snippets[model_class.__name__] = re.search(r"```python\n(.*?)\n```", card, re.DOTALL).group(1)

    script = textwrap.dedent(
        """
        import importlib.abc, json, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "gemma_encoder_hf":
                    raise ModuleNotFoundError(name)

        sys.meta_path.insert(0, Block())
        try:
            import gemma_encoder_hf
            raise SystemExit("gemma_encoder_hf is importable: the snippet test would prove nothing")
        except ModuleNotFoundError:
            pass
        for name, code in json.loads(sys.argv[1]).items():
            print(f"=== {name}", flush=True)
            exec(compile(code, f"README.md of {name}", "exec"), {"__name__": "__main__"})
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(snippets)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=500,  # five snippets, each loading the 33 MB Gemma tokenizer
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert "custom code" not in result.stdout + result.stderr  # no trust_remote_code prompt on the way
    sections = dict(re.findall(r"=== (\w+)\n(.*?)(?==== |\Z)", result.stdout, re.DOTALL))
    classifier_lines = sections["GemmaEncoderForSequenceClassification"].strip().splitlines()
    assert len(classifier_lines) == 2 and all("'label': 'LABEL_" in line for line in classifier_lines)
    ranking_lines = sections["GemmaEncoderForRanking"].strip().splitlines()
    assert len(ranking_lines) == 2 and all(re.match(r"\s*-?\d+\.\d{3}  \S", line) for line in ranking_lines)
    assert sections["GemmaEncoderModel"].strip() == "torch.Size([2, 64])"
    # Random heads: any entities (possibly none) as the pipeline's list of dicts; an answer cut from the context.
    assert sections["GemmaEncoderForTokenClassification"].strip().startswith("[")
    assert sections["GemmaEncoderForQuestionAnswering"].strip() in "Angela Müller flew from Hamburg to São Paulo."


def test_card_describes_windows_and_recurrences():
    """The attention row names the sliding window and, for RecurrentGemma-derived encoders, how the recurrences run."""
    from gemma_encoder_hf.integrations.model_card import conversion_settings

    config = tiny_config(
        decoder_model_type="recurrent_gemma", layer_types=["linear_attention", "sliding_attention"], lru_width=32,
        recurrence_combine="gate",
    )  # fmt: skip
    rows = dict(conversion_settings(config, "GemmaEncoderModel"))
    assert rows["Decoder generation"] == "RecurrentGemma"
    assert rows["Attention"] == (
        "bidirectional; sliding-window layers see ±2 tokens (`bidirectional_window=split`); recurrent layers run over "
        "the text and over the reversed text (`recurrence_combine=gate`, `recurrence_reverse_weights=tied`)"
    )


    # Only the top layer bidirectional: the row says which layers keep the decoder's mask.
    config.bidirectional_layers = 1
    assert dict(conversion_settings(config, "GemmaEncoderModel"))["Attention"].startswith(
        "bidirectional in the top 1 of 2 layers, the decoder's causal mask below them (`bidirectional_layers=1`); "
        "sliding-window layers see ±2 tokens"
    )

"""CoNLL-2003 / SQuAD harness: loaders, the by-article split, metrics from seqeval / torchmetrics, and the
`gemma-encoder finetune` / `evaluate` commands end to end on a tiny backbone with Gemma's real tokenizer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gemma_encoder_hf.harness.cli import main as cli_main
from gemma_encoder_hf.harness.data import DATA_ENV_VAR
from gemma_encoder_hf.harness.token_tasks import (
    CONLL_FILES,
    CONLL_LABELS,
    RECIPES,
    SQUAD_FILE,
    entity_metrics,
    load_conll,
    load_squad,
    split_by_article,
    squad_metrics,
)
from gemma_encoder_hf.harness.training import capped_bidirectional_layers
from gemma_encoder_hf.integrations.model_card import write_model_card

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get(DATA_ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "data")


def test_conll_loader_reads_the_shared_files():
    train = load_conll(DATA_ROOT / CONLL_FILES["train"])
    validation = load_conll(DATA_ROOT / CONLL_FILES["validation"])
    assert (len(train), len(validation)) == (14_041, 3_250)  # the counts in PROVENANCE.md
    assert set(tag for tags in validation["ner_tags"] for tag in tags) == set(CONLL_LABELS)


def test_conll_loader_refuses_unknown_tags(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tokens": ["Paris"], "ner_tags": ["U-LOC"]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: tags \['U-LOC'\]"):
        load_conll(bad)
    with pytest.raises(FileNotFoundError, match="No CoNLL file"):
        load_conll(tmp_path / "missing.jsonl")


def test_squad_split_is_by_article_and_deterministic():
    questions = load_squad(DATA_ROOT / SQUAD_FILE)
    train, validation = split_by_article(questions, seed=0)
    assert len(train) + len(validation) == len(questions) == 5_397
    assert not set(train["title"]) & set(validation["title"])
    assert set(train["title"]) | set(validation["title"]) == set(questions["title"])
    assert len(set(validation["title"])) == round(0.2 * 24)
    again, _ = split_by_article(questions, seed=0)
    assert again["id"] == train["id"]
    other, _ = split_by_article(questions, seed=1)
    assert set(other["title"]) != set(train["title"])


def test_entity_metrics_are_entity_level():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O"]]
    metrics = entity_metrics(gold, predicted)
    assert metrics["precision"] == 1.0 and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(0.8)
    # A partly found entity is wrong as a whole, though most of its tokens are right.
    half = entity_metrics([["B-PER", "I-PER", "I-PER"]], [["B-PER", "I-PER", "O"]])
    assert half["f1"] == 0.0 and half["accuracy"] == pytest.approx(2 / 3)


def test_squad_metrics_take_the_best_gold_answer():
    questions = load_squad(DATA_ROOT / SQUAD_FILE).select(range(2))
    golds = questions["answers"]
    predictions = {questions[0]["id"]: golds[0]["text"][-1], questions[1]["id"]: "the " + golds[1]["text"][0] + " x"}
    metrics = squad_metrics(predictions, questions)
    assert metrics["exact_match"] == 0.5  # articles are normalised away, the extra word is not
    assert 0.5 < metrics["f1"] < 1.0


@pytest.mark.parametrize("task", ["conll2003", "squad"])
def test_finetune_then_evaluate_cli(task, tiny_real_vocab_dir, tmp_path, capsys):
    """finetune writes the model and a results file; evaluate scores the saved model on the same split with the
    same numbers, and the card generator puts them into model-index."""
    out = tmp_path / "model"
    length = "64" if task == "conll2003" else "96"
    assert cli_main(["finetune", str(tiny_real_vocab_dir), str(out), "--task", task, "--data", str(DATA_ROOT),
                     "--train-examples", "16", "--eval-examples", "24", "--epochs", "1", "--batch-size", "8", "--max-length", length,
                     "--device", "cpu"]) == 0  # fmt: skip
    record = json.loads((out / "results.json").read_text())
    assert record["task"] == task and record["training"]["train_examples"] >= 16
    assert record["training"]["attention"] == RECIPES[task].attention  # no --attention: the task's recipe
    # ... and its bidirectional top layers, capped at the tiny model's depth (None: every layer).
    layers = capped_bidirectional_layers(tiny_real_vocab_dir, RECIPES[task].bidirectional_layers)
    assert record["training"]["bidirectional_layers"] == layers
    assert json.loads((out / "config.json").read_text())["bidirectional_layers"] == layers
    capsys.readouterr()
    limit = ["--max-examples", "24"]
    assert cli_main(["evaluate", str(out), "--task", task, "--data", str(DATA_ROOT), "--max-length", length, "--device", "cpu",
                     "--out", str(tmp_path / "eval.json"), *limit]) == 0  # fmt: skip
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    main_metrics = ("f1", "precision", "recall") if task == "conll2003" else ("exact_match", "f1")
    for name in main_metrics:
        assert 0.0 <= evaluated["metrics"][name] <= 1.0
        # The saved model, reloaded, scores the same rows as at the end of fine-tuning.
        assert evaluated["metrics"][name] == pytest.approx(record["metrics"][name], abs=1e-6)
    card = write_model_card(out, results_files=[tmp_path / "eval.json"]).read_text()
    assert "model-index" in card and f"type: {main_metrics[0]}" in card
    pipeline_tag = "token-classification" if task == "conll2003" else "question-answering"
    assert f"pipeline_tag: {pipeline_tag}" in card


def test_finetune_cli_adapts_on_the_training_text_first(tiny_real_vocab_dir, tmp_path):
    """--adapt-steps runs the masked-next-token stage on the training sentences, then fine-tunes the adapted encoder;
    the stage adapts with the attention the fine-tune uses (here only the top layer bidirectional). The fine-tune's
    flags (here --layer-lr-decay) are recorded."""
    out = tmp_path / "model"
    assert cli_main(["finetune", str(tiny_real_vocab_dir), str(out), "--task", "conll2003", "--data", str(DATA_ROOT),
                     "--train-examples", "8", "--eval-examples", "8", "--batch-size", "4", "--adapt-steps", "2",
                     "--bidirectional-layers", "1", "--layer-lr-decay", "0.8", "--device", "cpu"]) == 0  # fmt: skip
    adaptation = json.loads((out / "adapted" / "adaptation.json").read_text())
    assert adaptation["steps"] == 2 and adaptation["num_texts"] == 8
    assert (adaptation["attention"], adaptation["bidirectional_layers"]) == ("bidirectional", 1)
    assert json.loads((out / "adapted" / "config.json").read_text())["bidirectional_layers"] == 1
    record = json.loads((out / "results.json").read_text())
    assert record["training"]["adapt_steps"] == 2 and record["training"]["layer_lr_decay"] == 0.8
    assert record["training"]["max_length"] == RECIPES["conll2003"].max_length  # no flag: the recipe's


def test_finetune_cli_bidirectional_layers_reach_the_saved_model(tiny_real_vocab_dir, tmp_path):
    """--bidirectional-layers N turns only the top N layers bidirectional (recorded, and saved in the config); 0 turns
    them all, whatever the recipe says."""
    depth = json.loads((tiny_real_vocab_dir / "config.json").read_text())["num_hidden_layers"]
    assert depth >= 2
    for flag, expected in (("1", 1), ("0", None)):
        out = tmp_path / f"model-{flag}"
        assert cli_main(["finetune", str(tiny_real_vocab_dir), str(out), "--task", "conll2003",
                         "--data", str(DATA_ROOT), "--train-examples", "8", "--eval-examples", "8", "--batch-size", "4",
                         "--bidirectional-layers", flag, "--device", "cpu"]) == 0  # fmt: skip
        record = json.loads((out / "results.json").read_text())
        assert record["training"]["bidirectional_layers"] == expected
        assert json.loads((out / "config.json").read_text())["bidirectional_layers"] == expected


def test_finetune_cli_causal_attention_drops_the_recipes_bidirectional_layers(tiny_real_vocab_dir, tmp_path):
    """SQuAD's recipe turns the top layers bidirectional; `--attention causal` (the causal baseline) must not leave
    that count in the saved config and the results record, where it would claim layers that attend both ways."""
    assert RECIPES["squad"].attention == "bidirectional" and RECIPES["squad"].bidirectional_layers
    out = tmp_path / "causal"
    assert cli_main(["finetune", str(tiny_real_vocab_dir), str(out), "--task", "squad", "--data", str(DATA_ROOT),
                     "--train-examples", "8", "--eval-examples", "8", "--batch-size", "4", "--max-length", "96",
                     "--attention", "causal", "--device", "cpu"]) == 0  # fmt: skip
    record = json.loads((out / "results.json").read_text())
    assert (record["training"]["attention"], record["training"]["bidirectional_layers"]) == ("causal", None)
    config = json.loads((out / "config.json").read_text())
    assert (config["attention"], config["bidirectional_layers"]) == ("causal", None)


def test_finetune_cli_errors(tmp_path, capsys):
    assert cli_main(["finetune", "embedded", str(tmp_path / "x"), "--task", "nope"]) == 2
    assert "gemma-encoder finetune: error: Unknown task 'nope'" in capsys.readouterr().err


def test_token_tasks_benchmark_merge_states_each_files_own_setup(tmp_path):
    """`benchmarks/token_tasks.py --merge` joins separate runs into one table. Fields their setups share head the
    table; a field that differs (threads, the top layers of a bidirectional-topK run) goes with that file's rows. The
    merged table used to print the first file's setup for every run, so two-thread runs read as one-thread runs."""
    # The causal file predates the bidirectional_layers field; a None there means the same as its absence.
    base = {"task": "squad", "max_length": 384, "device": "cpu (x86_64, 1 threads)", "torch": "2.13.0+cpu"}
    row = {"train_examples": 2000, "f1": 0.6, "exact_match": 0.5, "adapt_seconds": 0.0, "train_seconds": 1.0}
    files = {
        "causal": {"setup": base, "runs": [{**row, "mode": "causal", "seed": 1}]},
        "top2": {"setup": {**base, "device": "cpu (x86_64, 2 threads)", "bidirectional_layers": 2},
                 "runs": [{**row, "mode": "bidirectional-top2", "seed": 0, "f1": 0.7}]},
        "causal-newer": {"setup": {**base, "bidirectional_layers": None},
                         "runs": [{**row, "mode": "causal", "seed": 2}]},
    }  # fmt: skip
    for name, report in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(report))
    out = tmp_path / "merged"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "token_tasks.py"), "--task", "squad", "--out", str(out),
                    "--merge", *(str(tmp_path / f"{name}.json") for name in files)], check=True)  # fmt: skip
    merged = json.loads(out.with_suffix(".json").read_text())
    assert merged["setup"] == {"task": "squad", "max_length": 384, "torch": "2.13.0+cpu"}
    assert [(r["mode"], r["seed"], r.get("run_setup")) for r in merged["runs"]] == [
        ("bidirectional-top2", 0, {"device": "cpu (x86_64, 2 threads)", "bidirectional_layers": 2}),
        ("causal", 1, {"device": "cpu (x86_64, 1 threads)"}),
        ("causal", 2, {"device": "cpu (x86_64, 1 threads)"}),
    ]
    table = out.with_suffix(".md").read_text()
    assert "| 0.6000 | 0.5000 | 0.0 | 1.0 | device: cpu (x86_64, 1 threads) |" in table
    assert "device: cpu (x86_64, 2 threads), bidirectional_layers: 2 |" in table
    # Tables of two tasks do not join: their metrics differ.
    (tmp_path / "conll.json").write_text(json.dumps({"setup": {**base, "task": "conll2003"}, "runs": []}))
    refused = subprocess.run([sys.executable, str(REPO / "benchmarks" / "token_tasks.py"), "--out", str(out),
                              "--merge", str(tmp_path / "causal.json"), str(tmp_path / "conll.json")],
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode != 0 and "one task" in refused.stderr

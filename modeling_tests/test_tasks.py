"""Task metrics, the Trainer fine-tuning entry points, the examples and `gemma-encoder evaluate` end to end.

Trainer paths run on a tiny random GemmaEncoder with the real Gemma tokenizer (fast); the evaluate command runs on
the real Gemma 3 270M (`real_encoder_dir`) over 16 SST-2 rows and 2 SciFact queries x 5 candidates.
"""

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from ranx import Qrels, Run, evaluate
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import AutoTokenizer

from gemma_encoder_hf import (
    GemmaEncoderConfig,
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
)
from gemma_encoder_hf.harness import cli, data, evaluation
from gemma_encoder_hf.harness.evaluation import ranking_metrics, task_metrics
from gemma_encoder_hf.harness.training import (
    RankingCollator,
    TrainingConfig,
    build_optimizer,
    finetune_classifier,
    finetune_reranker,
    init_head_from_label_words,
    load_task_model,
)
from gemma_encoder_hf.integrations.inference import predict_logits, score_pairs
from gemma_encoder_hf.integrations.model_card import build_model_card, load_results
from test_docs import DOCS, commands

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get(data.DATA_ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "data")
ADAPTATION_BENCHMARK = [sys.executable, str(REPO / "benchmarks" / "adaptation.py")]
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason=f"the shared data folder {ROOT} is not beside the repo")


# ----------------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------------


def test_classification_metrics_match_sklearn():
    labels = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    logits = np.array([[0, 1], [1, 0], [1, 0], [0, 2], [0, 1], [3, 0], [0, 1], [1, 0]], dtype=np.float32)
    predicted = logits.argmax(-1)
    sst2 = task_metrics(data.get_task("sst2"), logits, labels)
    assert sst2 == {"accuracy": 0.75, "f1": pytest.approx(f1_score(labels, predicted))}
    cola = task_metrics(data.get_task("cola"), logits, labels)
    assert cola["matthews_correlation"] == pytest.approx(matthews_corrcoef(labels, predicted)) == pytest.approx(0.5)
    assert cola["accuracy"] == accuracy_score(labels, predicted)


def test_regression_metrics():
    stsb = data.get_task("stsb")
    labels = np.array([0.0, 1.0, 2.5, 4.0, 5.0])
    assert task_metrics(stsb, (labels * 2 + 1)[:, None], labels) == {"pearson": pytest.approx(1.0),
                                                                      "spearmanr": pytest.approx(1.0)}
    assert task_metrics(stsb, -labels, labels)["spearmanr"] == pytest.approx(-1.0)
    # A constant prediction has no correlation: 0, not NaN (NaN would break best-checkpoint selection).
    assert task_metrics(stsb, np.full(5, 2.0), labels) == {"pearson": 0.0, "spearmanr": 0.0}


def test_ranking_metrics_known_values():
    qrels = {"q1": {"a": 1}, "q2": {"x": 2, "y": 1}}
    run = {"q1": {"b": 3.0, "a": 2.0, "c": 1.0}, "q2": {"x": 5.0, "y": 4.0, "z": 1.0}}
    metrics = ranking_metrics(qrels, run)
    assert metrics["mrr@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["ndcg@10"] == pytest.approx((1 / np.log2(3) + 1.0) / 2)
    with pytest.raises(ValueError, match="relevance judgments"):
        ranking_metrics({"other": {"a": 1}}, run)


# ----------------------------------------------------------------------------------------------------------------------
# Trainer entry points on a tiny random encoder with the real tokenizer
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_encoder_dir(tiny_real_vocab_dir) -> Path:
    return tiny_real_vocab_dir


def test_optimizer_gives_the_head_its_own_learning_rate(tiny_encoder_dir):
    model = GemmaEncoderForSequenceClassification.from_pretrained(tiny_encoder_dir, num_labels=2, pooling="attention")
    optimizer = build_optimizer(model, TrainingConfig(learning_rate=1e-5, head_learning_rate=1e-3, weight_decay=0.1))
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["score.out_proj.weight"])]["lr"] == 1e-3
    assert by_param[id(named["score.pooler.probes"])]["lr"] == 1e-3
    assert by_param[id(named["score.pooler.probes"])]["weight_decay"] == 0.0
    assert by_param[id(named["model.layers.0.self_attn.q_proj.weight"])]["lr"] == 1e-5
    assert by_param[id(named["model.layers.0.self_attn.q_proj.weight"])]["weight_decay"] == 0.1
    assert by_param[id(named["model.norm.weight"])]["weight_decay"] == 0.0


@pytest.mark.parametrize("native", [False, True], ids=["ours", "native"])
def test_layer_lr_decay_scales_each_layer_by_its_depth(tiny_encoder_dir, native):
    if native:
        from transformers import Gemma3TextForSequenceClassification

        from conftest import tiny_decoder_config

        model = Gemma3TextForSequenceClassification(tiny_decoder_config("gemma3", num_labels=2))
    else:
        model = GemmaEncoderForSequenceClassification.from_pretrained(tiny_encoder_dir, num_labels=2)
    layers = len(model.model.layers)
    assert layers >= 2
    config = TrainingConfig(learning_rate=1e-4, head_learning_rate=1e-3, layer_lr_decay=0.5, freeze_embeddings=False)
    by_param = {id(p): g["lr"] for g in build_optimizer(model, config).param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    for i in range(layers):
        for weight in (f"model.layers.{i}.self_attn.q_proj.weight", f"model.layers.{i}.input_layernorm.weight"):
            assert by_param[id(named[weight])] == pytest.approx(1e-4 * 0.5 ** (layers - 1 - i)), weight
    assert by_param[id(named["model.embed_tokens.weight"])] == pytest.approx(1e-4 * 0.5**layers)
    assert by_param[id(named["model.norm.weight"])] == 1e-4
    assert by_param[id(named["score.weight" if native else "score.out_proj.weight"])] == 1e-3
    # Freezing the top layer leaves the depth of the others unchanged.
    model.model.layers[-1].requires_grad_(False)
    by_param = {id(p): g["lr"] for g in build_optimizer(model, config).param_groups for p in g["params"]}
    assert by_param[id(named["model.layers.0.self_attn.q_proj.weight"])] == pytest.approx(1e-4 * 0.5 ** (layers - 1))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="layer_lr_decay must be in"):
            TrainingConfig(layer_lr_decay=bad)


def test_finetune_classifier_learns_and_restores_the_best_checkpoint(tiny_encoder_dir, tmp_path):
    task = data.get_task("sst2")
    rows = data.subsample(data.load_glue(task, ROOT), 32, task, seed=0)
    model = GemmaEncoderForSequenceClassification.from_pretrained(tiny_encoder_dir, **task.model_kwargs())
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    before = task_metrics(task, predict_logits(model, tokenizer, rows["text"]).numpy(), np.asarray(rows["label"]))
    config = TrainingConfig(output_dir=tmp_path, epochs=6, batch_size=8, learning_rate=3e-3, warmup_ratio=0.0,
                            max_length=48, freeze_embeddings=True, show_progress_bar=False, device="cpu")
    result = finetune_classifier(model, tokenizer, task, rows, rows, config)  # fits its own training rows
    assert set(result.metrics) == {"accuracy", "f1", "loss"}
    assert result.metrics["accuracy"] >= 0.9 > before["accuracy"]
    assert result.trainer.state.best_metric == pytest.approx(result.metrics["accuracy"])
    assert not model.model.embed_tokens.weight.requires_grad


def test_ranking_collator_and_reranker_training(tiny_encoder_dir, tmp_path):
    train = data.load_reranking(ROOT / "scifact", "train")
    groups = data.ranking_groups(train, 4, seed=0, max_queries=4)
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    batch = RankingCollator(tokenizer, max_length=64)([groups[0], groups[1]])
    assert batch["input_ids"].shape[0] == 8 and batch["labels"].tolist() == [1, 0, 0, 0, 1, 0, 0, 0]
    first = tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert first.startswith("<bos>" + groups[0]["query"]) and "<eos>" in first  # pair template

    model = GemmaEncoderForRanking.from_pretrained(tiny_encoder_dir, ranking_group_size=4)
    config = TrainingConfig(output_dir=tmp_path, epochs=2, batch_size=2, max_length=64, learning_rate=1e-3,
                            show_progress_bar=False, device="cpu")
    result = finetune_reranker(model, tokenizer, groups, config)
    assert np.isfinite(result.metrics["train_loss"]) and result.trainer.state.global_step > 0
    wrong = GemmaEncoderForRanking.from_pretrained(tiny_encoder_dir, ranking_group_size=8)
    with pytest.raises(ValueError, match="ranking_group_size=8"):
        finetune_reranker(wrong, tokenizer, groups, config)


def test_load_task_model_draws_the_new_head_from_its_seed(tiny_encoder_dir):
    def head(seed):
        torch.rand(7)  # whatever ran before must not matter
        model, _ = load_task_model(GemmaEncoderForSequenceClassification, tiny_encoder_dir, seed=seed, num_labels=2)
        return model.score.out_proj.weight.detach().clone()

    assert torch.equal(head(3), head(3))
    assert not torch.equal(head(3), head(4))


def test_evaluation_scores_through_the_inference_runner(tiny_encoder_dir, tmp_path, capsys):
    """`gemma-encoder evaluate` and `score_pairs` share one batched runner: on the same pairs and length limit they
    give bit-identical scores (so identical metrics), and evaluation shows the runner's progress bar."""
    task = data.get_task("stsb")
    torch.manual_seed(0)
    model = GemmaEncoderForSequenceClassification.from_pretrained(tiny_encoder_dir, **task.model_kwargs())
    model.save_pretrained(tmp_path / "stsb")
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    tokenizer.save_pretrained(tmp_path / "stsb")
    assert cli.main(["evaluate", str(tmp_path / "stsb"), "--task", "stsb", "--data", str(ROOT), "--max-examples",
                     "24", "--max-length", "20", "--batch-size", "5", "--device", "cpu",
                     "--out", str(tmp_path / "stsb.json")]) == 0
    assert re.search(r"score: 100%.*5/5", capsys.readouterr().err)  # 24 pairs in batches of 5
    record = json.loads((tmp_path / "stsb.json").read_text())

    _, validation = data.train_validation_split(data.load_glue(task, ROOT), task, seed=0)
    rows = data.subsample(validation, 24, task, seed=0)
    scores = score_pairs(model, tokenizer, list(zip(rows["text"], rows["text_pair"])), batch_size=5, max_length=20,
                         show_progress_bar=False)
    assert record["metrics"] == task_metrics(task, scores.numpy(), np.asarray(rows["label"]))
    assert torch.equal(evaluation.predict_logits(model, tokenizer, rows["text"], rows["text_pair"], batch_size=5,
                                                 max_length=20, show_progress_bar=False).squeeze(-1), scores)

    # Reranking goes through the same runner: its run holds exactly score_pairs' scores.
    reranking = data.load_reranking(ROOT / "scifact", "test").restrict(2, 3)
    run = evaluation.rerank(model, tokenizer, reranking, batch_size=4, max_length=20, show_progress_bar=False)
    pairs = [(q, d) for q, cands in reranking.candidates.items() for d, _ in cands]
    expected = score_pairs(model, tokenizer, [(reranking.queries[q], reranking.corpus[d]) for q, d in pairs],
                           batch_size=4, max_length=20, show_progress_bar=False)
    assert [run[q][d] for q, d in pairs] == expected.tolist()
    with pytest.raises(ValueError, match="has no rows"):
        evaluation.evaluate_classifier(model, tokenizer, rows.select([]), task)


def test_finetune_glue_example_writes_what_the_docs_say(tiny_encoder_dir, tmp_path, monkeypatch):
    """The README's main job (on the tiny encoder, 2 steps), then every documented `gemma-encoder` command on its
    output, run as written: every `runs/glue-sst2/...` path the docs name exists afterwards; `gemma-encoder evaluate`
    re-scores the validation rows the example carved (same accuracy); the same command in a new process trains the
    same weights; the model card publishes the model's metrics only."""
    main_job = next(tokens for doc, tokens in commands() if doc == "README.md" and "finetune_glue.py" in tokens[1])
    command = [sys.executable, str(REPO / main_job[1]), *main_job[2:], "--model", str(tiny_encoder_dir),
               "--max-steps", "2", "--device", "cpu"]
    subprocess.run(command, check=True, cwd=tmp_path, capture_output=True)
    subprocess.run([*command, "--output-dir", "again"], check=True, cwd=tmp_path, capture_output=True)
    weights, again = (load_file(tmp_path / out / "model" / "model.safetensors") for out in ("runs/glue-sst2", "again"))
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(data.DATA_ENV_VAR, str(ROOT))
    documented = [tokens for _, tokens in commands()
                  if tokens[0] == "gemma-encoder" and "runs/glue-sst2/model" in tokens]
    assert {tokens[1] for tokens in documented} == {"evaluate", "card"}
    for tokens in documented:
        assert cli.main([*tokens[1:], *(["--device", "cpu"] if tokens[1] == "evaluate" else [])]) == 0, tokens
    named = {path for doc in DOCS for path in re.findall(r"runs/glue-sst2/[\w./-]*\w", doc.read_text())}
    assert {"runs/glue-sst2/model", "runs/glue-sst2/results.json", "runs/glue-sst2/eval.json"} <= named
    assert [path for path in sorted(named) if not (tmp_path / path).exists()] == []

    record = json.loads((tmp_path / "runs/glue-sst2/results.json").read_text())
    assert record["task"] == "sst2" and record["dataset"]["split"] == "validation(seed=0)"
    assert record["config"]["attention"] == "bidirectional" and record["details"]["eval_examples"] == 256
    evaluated = json.loads((tmp_path / "runs/glue-sst2/eval.json").read_text())
    assert evaluated["metrics"]["accuracy"] == pytest.approx(record["metrics"]["accuracy"])
    assert set(evaluated) == {"model", "task", "dataset", "metrics", "details", "config"}
    # The card built from the main job's results.json: no counts or timings among the model-index metrics.
    card = build_model_card(GemmaEncoderConfig.from_pretrained(tmp_path / "runs/glue-sst2/model"), model_id="me/sst2",
                            results=load_results([tmp_path / "runs/glue-sst2/results.json"]))
    assert {result.metric_type for result in card.data.eval_results} == {"accuracy", "f1", "loss"}


def test_finetune_glue_example_adapts_on_the_training_split_only(tiny_encoder_dir, tmp_path):
    """`--adapt-steps` runs the adaptation stage on every text of the training split (both sides of a pair), never on
    the validation rows, and fine-tunes the adapted encoder; `--bidirectional-layers` reaches the saved model."""
    out = tmp_path / "rte"
    command = [sys.executable, str(REPO / "examples" / "finetune_glue.py"), "--task", "rte", "--model",
               str(tiny_encoder_dir), "--train-examples", "16", "--eval-examples", "12", "--max-steps", "2",
               "--max-length", "48", "--no-checkpoints", "--device", "cpu", "--output-dir", str(out),
               "--adapt-steps", "2", "--adapt-batch-size", "4", "--bidirectional-layers", "1"]
    subprocess.run(command, check=True, cwd=tmp_path, capture_output=True)
    assert GemmaEncoderConfig.from_pretrained(out / "model").bidirectional_layers == 1
    record = json.loads((out / "adapted" / "adaptation.json").read_text())
    task = data.get_task("rte")
    train_pool, validation = data.train_validation_split(data.load_glue(task, ROOT), task, seed=0)
    assert record["steps"] == 2 and record["objective"] == "mntp"
    assert record["num_texts"] == 2 * len(train_pool) == 2 * (len(data.load_glue(task, ROOT)) - len(validation))
    adapted = GemmaEncoderForSequenceClassification.from_pretrained(out / "adapted", num_labels=2)
    original = GemmaEncoderForSequenceClassification.from_pretrained(tiny_encoder_dir, num_labels=2)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(adapted.state_dict()[q], original.state_dict()[q])
    assert json.loads((out / "results.json").read_text())["details"]["eval_examples"] == 12


def test_run_glue_adapts_finetunes_and_scores_the_dev_shaped_split(tiny_encoder_dir, tmp_path):
    """`run_glue` (what `gemma-encoder finetune --task T SOURCE OUT` runs) adapts on the training split, fine-tunes with
    the task's recipe and scores the dev-shaped validation split; `evaluate` re-scores the same rows. The recipes skip
    adaptation; 2 steps are added here so the stage runs too; everything else is the task's recipe."""
    import dataclasses

    from gemma_encoder_hf.harness.glue import GLUE_RECIPES, run_glue

    recipe = dataclasses.replace(GLUE_RECIPES["rte"], adapt_steps=2)
    out = tmp_path / "rte"
    record = run_glue(
        "rte", tiny_encoder_dir, out, 16, recipe=recipe, data_root=ROOT, device="cpu", show_progress_bar=False
    )
    assert record["metrics"] == json.loads((out / "results.json").read_text())["metrics"]
    assert record["recipe"] == dataclasses.asdict(recipe)
    assert json.loads((out / "adapted" / "adaptation.json").read_text())["steps"] == 2
    task = data.get_task("rte")
    _, validation = data.train_validation_split(data.load_glue(task, ROOT), task, seed=0)
    assert record["details"]["train_examples"] == 16 and record["details"]["eval_examples"] == len(validation)
    # Counts and timings are not quality metrics: model cards publish `metrics` as model-index entries.
    assert "accuracy" in record["metrics"] and not {"train_examples", "eval_examples", "train_seconds"} & set(
        record["metrics"]
    )
    assert record["config"]["attention"] == recipe.attention and record["config"]["pooling"] == recipe.pooling
    # The pair recipe turns the top 3 layers bidirectional; the tiny encoder has 2, so both.
    assert recipe.bidirectional_layers == 3 and record["config"]["bidirectional_layers"] == 2

    assert cli.main(["evaluate", str(out / "model"), "--task", "rte", "--data", str(ROOT), "--max-length",
                     str(recipe.max_length), "--device", "cpu", "--out", str(tmp_path / "eval.json")]) == 0
    again = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    assert again["accuracy"] == pytest.approx(record["metrics"]["accuracy"])


def test_every_glue_recipe_reaches_the_training_config():
    """`run_glue` fine-tunes with `recipe.training_config(...)`: each optimisation field of the recipe (learning rates,
    layer-wise decay, warm-up, epochs, tokens, batch) must arrive there unchanged, for every task."""
    import dataclasses

    from gemma_encoder_hf.harness.glue import GLUE_RECIPES

    optimisation = ("learning_rate", "head_learning_rate", "layer_lr_decay", "warmup_ratio", "epochs", "max_length",
                    "batch_size")
    for task, recipe in GLUE_RECIPES.items():
        # Off-default values, so a field the config silently ignored would show.
        changed = dataclasses.replace(recipe, learning_rate=3e-5, head_learning_rate=2e-4, layer_lr_decay=0.7,
                                      warmup_ratio=0.25, epochs=3.0, max_length=40, batch_size=5)
        for candidate in (recipe, changed):
            config = candidate.training_config(output_dir="out", seed=7, device="cpu")
            assert {name: getattr(config, name) for name in optimisation} == {
                name: getattr(candidate, name) for name in optimisation
            }, task
            assert (config.seed, config.device, config.checkpoints, config.eval_strategy) == (7, "cpu", False, "no")


def test_finetune_cli_causal_attention_drops_a_glue_recipes_bidirectional_layers(tiny_encoder_dir, tmp_path):
    """`--attention causal` on a recipe with bidirectional top layers (SST-2's) runs a causal model, and must not
    leave the recipe's layer count in the saved config and the results record, where it would claim layers that
    attend both ways."""
    from gemma_encoder_hf.harness.glue import GLUE_RECIPES

    assert GLUE_RECIPES["sst2"].attention == "bidirectional" and GLUE_RECIPES["sst2"].bidirectional_layers
    out = tmp_path / "sst2"
    assert cli.main(["finetune", "--task", "sst2", str(tiny_encoder_dir), str(out), "--train-examples", "16",
                     "--attention", "causal", "--data", str(ROOT), "--device", "cpu"]) == 0  # fmt: skip
    record = json.loads((out / "results.json").read_text())
    assert (record["recipe"]["attention"], record["recipe"]["bidirectional_layers"]) == ("causal", None)
    config = json.loads((out / "model" / "config.json").read_text())
    assert (config["attention"], config["bidirectional_layers"]) == ("causal", None)
    assert "bidirectional_layers" not in record["config"]  # the record lists the set (non-None) fields


def test_finetune_cli_sst2_decays_the_layer_rates_unless_told_otherwise(tiny_encoder_dir, tmp_path, capsys):
    """SST-2's recipe trains each lower layer at 0.9 times the rate of the one above; `--layer-lr-decay` replaces it,
    and a decay outside (0, 1] stops the command with the field's name before anything is trained."""
    from gemma_encoder_hf.harness.glue import GLUE_RECIPES

    assert GLUE_RECIPES["sst2"].layer_lr_decay == 0.9 and GLUE_RECIPES["mrpc"].layer_lr_decay == 1.0
    def finetune(out: Path, *flags: str) -> int:
        return cli.main(["finetune", "--task", "sst2", str(tiny_encoder_dir), str(out), "--train-examples", "16",
                         "--data", str(ROOT), "--device", "cpu", *flags])  # fmt: skip

    for flags, expected in (([], 0.9), (["--layer-lr-decay", "1"], 1.0)):
        assert finetune(tmp_path / f"sst2-{expected}", *flags) == 0
        record = json.loads((tmp_path / f"sst2-{expected}" / "results.json").read_text())
        assert record["recipe"]["layer_lr_decay"] == expected
    assert finetune(tmp_path / "bad", "--layer-lr-decay", "0") == 2
    assert "layer_lr_decay must be in (0, 1], got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cola_recipe_keeps_the_decoders_causal_attention(tiny_encoder_dir, tmp_path):
    """CoLA's recipe is the one GLUE recipe without bidirectional layers (causal attention, last-token pooling, a
    linear head like native's): the saved model is causal, and its outputs are the decoder's, the same whatever
    follows a token."""
    from gemma_encoder_hf.harness.glue import run_glue

    record = run_glue("cola", tiny_encoder_dir, tmp_path / "cola", 16, data_root=ROOT, device="cpu",
                      show_progress_bar=False)
    assert record["recipe"]["attention"] == "causal" and record["recipe"]["bidirectional_layers"] is None
    model = GemmaEncoderForSequenceClassification.from_pretrained(tmp_path / "cola" / "model").eval()
    assert (model.config.attention, model.config.pooling) == ("causal", "last")
    # A single linear layer over the pooled state: no hidden layer, the projection reads hidden_size features.
    assert model.score.dense is None and model.score.out_proj.in_features == model.config.hidden_size
    ids = torch.tensor([[2, 10, 11, 12, 13]])
    with torch.no_grad():
        states = model.model(input_ids=ids).last_hidden_state
        changed = model.model(input_ids=torch.tensor([[2, 10, 11, 12, 99]])).last_hidden_state
    torch.testing.assert_close(states[:, :4], changed[:, :4])
    assert "matthews_correlation" in record["metrics"]


def test_label_word_head_starts_as_the_decoders_next_word_scores(tiny_decoder_dirs):
    """`init_head_from_label_words` makes a causal, last-token classifier with a linear head (ours, or transformers'
    native one) score each label as the decoder's language-model head scores that label's word next; it refuses an
    MLP head, a word of several tokens and a word count other than the number of labels."""
    from tiny_tokenizer import char_tokenizer
    from transformers import AutoModelForCausalLM, Gemma3TextForSequenceClassification

    source = tiny_decoder_dirs["gemma3"]
    tokenizer = char_tokenizer()
    words = ["n", "p", "?"]
    word_ids = tokenizer.convert_tokens_to_ids(words)
    rows = [tokenizer(text)["input_ids"] for text in ("is it good or bad", "bad, worse, the worst")]
    input_ids = torch.tensor([row[:18] for row in rows])
    decoder = AutoModelForCausalLM.from_pretrained(source).eval()
    with torch.no_grad():
        expected = decoder(input_ids=input_ids).logits[:, -1, word_ids]
    ours = GemmaEncoderForSequenceClassification.from_decoder(
        source, attention="causal", pooling="last", classifier_hidden_size=0, num_labels=3).eval()
    native = Gemma3TextForSequenceClassification.from_pretrained(source, num_labels=3).eval()
    native.config.pad_token_id = tokenizer.pad_token_id
    for model in (ours, native):
        init_head_from_label_words(model, tokenizer, words)
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=input_ids).logits, expected, atol=1e-4, rtol=1e-4)
    assert expected.std() > 1e-2  # the words score differently, so matching a constant would not pass
    mlp = GemmaEncoderForSequenceClassification.from_decoder(source, num_labels=3)
    with pytest.raises(ValueError, match="classifier_hidden_size=0"):
        init_head_from_label_words(mlp, tokenizer, words)
    with pytest.raises(ValueError, match="one token"):
        init_head_from_label_words(ours, tokenizer, ["no", "p", "?"])
    with pytest.raises(ValueError, match="2 label words for a head with 3 outputs"):
        init_head_from_label_words(ours, tokenizer, words[:2])


def test_adaptation_benchmark_reports_each_task_by_its_own_metrics(tmp_path):
    """`benchmarks/adaptation.py --report` tables every task by the metrics it has: MRPC by accuracy and F1, STS-B (a
    regression, no accuracy) by Pearson; seeds are averaged per (variant, size)."""
    def record(task, variant, seed, metrics):
        return {"task": task, "variant": variant, "size": "2000", "seed": seed, "metrics": metrics, "model": {}}

    results = {
        "mrpc/native/2000/seed0": record("mrpc", "native", 0, {"accuracy": 0.75, "f1": 0.8}),
        "stsb/native/2000/seed0": record("stsb", "native", 0, {"pearson": 0.8, "spearmanr": 0.79}),
        "stsb/native/2000/seed1": record("stsb", "native", 1, {"pearson": 0.9, "spearmanr": 0.88}),
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    report = subprocess.run(ADAPTATION_BENCHMARK + ["--report", str(path)], check=True, capture_output=True,
                            text=True).stdout
    titles = [line.split(" (")[0] for line in report.splitlines() if "(mean over seeds" in line]
    assert titles == ["mrpc accuracy", "mrpc f1", "stsb pearson"]
    assert "| native | 0.850 [0.800-0.900] (2) |" in report.split("stsb pearson")[1]


def _adaptation_results(tmp_path, task: str, labels: list[str], metrics) -> tuple[Path, list[str]]:
    """A results file holding one seed-0 record at 2,000 examples per label (`metrics(i)` for the i-th), and the
    benchmark arguments that resume into it."""
    results = {
        f"{task}/{label}/2000/seed0": {"task": task, "variant": label, "size": "2000", "seed": 0,
                                       "metrics": metrics(i), "model": {}}
        for i, label in enumerate(labels)
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path, ["--task", task, "--sizes", "2000", "--seeds", "0", "--out", str(path), "--data", str(ROOT),
                  "--work-dir", str(tmp_path / "work"), "--device", "cpu"]


def _skipped_keys(argv: list[str]) -> list[str]:
    """The keys a benchmark invocation skips as done. Every key a test asks for is in its file, so nothing trains; a
    wrong label would start a fine-tune, which the timeout turns into a failure rather than a long run."""
    out = subprocess.run(ADAPTATION_BENCHMARK + argv, check=True, capture_output=True, text=True, timeout=300).stdout
    return [line.split()[1] for line in out.splitlines() if line.startswith("skip ")]


def test_adaptation_benchmark_files_each_pooling_and_head_under_its_own_label(tmp_path):
    """A run with a pooling or head width other than its variant's default must not be skipped as done (results
    are keyed by label) nor averaged with the default's; the report orders layer counts by number and other settings
    after the default."""
    labels = ["bidir-top10", "causal-mean-head0", "bidir-top3-last-head0", "native", "causal", "bidir-top3", "bidir"]
    path, argv = _adaptation_results(tmp_path, "mrpc", labels, lambda i: {"accuracy": 0.5 + i / 100, "f1": 0.6})
    runs = [
        (["--variants", "bidir-top", "causal", "--bidirectional-layers", "3", "--pooling", "last",
          "--causal-pooling", "mean", "--classifier-hidden-size", "0"], ["bidir-top3-last-head0", "causal-mean-head0"]),
        (["--variants", "native", "causal", "bidir"], ["native", "causal", "bidir"]),
    ]
    for extra, expected in runs:
        assert _skipped_keys(argv + extra) == [f"mrpc/{label}/2000/seed0" for label in expected]
    report = subprocess.run(ADAPTATION_BENCHMARK + ["--report", str(path)], check=True, capture_output=True,
                            text=True).stdout
    table = report.split("mrpc accuracy")[1].split("mrpc f1")[0]
    rows = [line.split(" | ")[0].removeprefix("| ") for line in table.splitlines() if line.startswith("| ")][1:]
    assert rows == ["native", "causal", "causal-mean-head0", "bidir", "bidir-top3", "bidir-top3-last-head0",
                    "bidir-top10"]
    assert "| bidir-top3-last-head0 | 0.520 (1) |" in table


def test_adaptation_benchmark_files_each_finetune_setting_words_and_template_under_its_own_label(tmp_path):
    """A sweep of a fine-tuning setting (warm-up, epochs, learning rates, batch size), label words or a text template
    into the results file of the default runs must be filed under its own key: before, keys named only the model, so a
    warm-up-0 run found the default run's key and was skipped as done, silently."""
    template = "Review: {text}\nSentiment:"
    tag = "tpl" + hashlib.sha1(template.encode()).hexdigest()[:6]
    words = hashlib.sha1(json.dumps([" no", " yes"]).encode()).hexdigest()[:6]
    labels = ["native", "native-warmup0", "causal", f"causal-epochs2-lr0.0001-{tag}", "bidir-top3-head0-bs8",
              f"causal-head0-words{words}-{tag}"]
    _, argv = _adaptation_results(tmp_path, "sst2", labels, lambda i: {"accuracy": 0.8 + i / 100})
    runs = [
        (["--variants", "native", "--warmup-ratio", "0"], "native-warmup0"),
        (["--variants", "causal", "--epochs", "2", "--learning-rate", "1e-4", "--text-template", template],
         f"causal-epochs2-lr0.0001-{tag}"),
        (["--variants", "bidir-top", "--bidirectional-layers", "3", "--classifier-hidden-size", "0", "--batch-size",
          "8"], "bidir-top3-head0-bs8"),
        (["--variants", "causal", "--classifier-hidden-size", "0", "--label-words", " no", " yes", "--text-template",
          template], f"causal-head0-words{words}-{tag}"),
    ]
    for extra, expected in runs:
        assert _skipped_keys(argv + extra) == [f"sst2/{expected}/2000/seed0"]
    # Defaults spelled out are still the default runs' labels.
    explicit = ["--learning-rate", str(TrainingConfig.learning_rate), "--warmup-ratio",
                str(TrainingConfig.warmup_ratio), "--epochs", "1", "--batch-size", "16"]
    assert _skipped_keys(argv + ["--variants", "native", "causal"] + explicit) == [
        "sst2/native/2000/seed0", "sst2/causal/2000/seed0"]
    # The template formats the first text of training and validation rows alike; the second text of a pair is left.
    spec = importlib.util.spec_from_file_location("adaptation_benchmark", REPO / "benchmarks" / "adaptation.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    rows = benchmark.apply_template(Dataset.from_dict({"text": ["a {b}"], "text_pair": ["c"], "label": [1]}), template)
    assert rows[0] == {"text": "Review: a {b}\nSentiment:", "text_pair": "c", "label": 1}
    # A template without {text}, or naming another field, is refused before anything runs.
    for bad in ("Sentiment:", "{label}: {text}"):
        refused = subprocess.run(ADAPTATION_BENCHMARK + argv + ["--text-template", bad], capture_output=True,
                                 text=True)
        assert refused.returncode == 2 and "--text-template" in refused.stderr


def test_finetune_cli_bad_input_exits_2(tiny_encoder_dir, tmp_path, capsys):
    assert cli.main(["finetune", "--task", "rte", str(tiny_encoder_dir), str(tmp_path), "--train-examples", "0"]) == 2
    assert "gemma-encoder finetune: error: train_examples=0: ask for at least 1" in capsys.readouterr().err
    assert cli.main(["finetune", "--task", "mnli", str(tiny_encoder_dir), str(tmp_path)]) == 2
    assert "gemma-encoder finetune: error: Unknown task 'mnli'" in capsys.readouterr().err
    # A layer count with causal attention would be saved in the config and change nothing: CoLA's recipe is causal.
    for task, extra in (("cola", []), ("sst2", ["--attention", "causal"]), ("conll2003", ["--attention", "causal"])):
        argv = ["finetune", "--task", task, str(tiny_encoder_dir), str(tmp_path), "--bidirectional-layers", "1",
                "--data", str(ROOT), *extra]
        assert cli.main(argv) == 2, task
        assert "bidirectional_layers=1 turns the top layers of a bidirectional encoder" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------------------------------
# `gemma-encoder evaluate` on the real Gemma 3 270M
# ----------------------------------------------------------------------------------------------------------------------


def test_evaluate_cli_sst2_real_model(real_encoder_dir, tmp_path):
    torch.manual_seed(0)
    model = GemmaEncoderForSequenceClassification.from_pretrained(real_encoder_dir, num_labels=2)
    model.save_pretrained(tmp_path / "clf")
    tokenizer = AutoTokenizer.from_pretrained(real_encoder_dir)
    tokenizer.save_pretrained(tmp_path / "clf")

    assert cli.main(["evaluate", str(tmp_path / "clf"), "--task", "sst2", "--max-examples", "16", "--device", "cpu",
                     "--data", str(ROOT), "--out", str(tmp_path / "sst2.json")]) == 0
    record = json.loads((tmp_path / "sst2.json").read_text())
    assert record["dataset"] == {"name": "sst2", "split": "validation(seed=0)", "path": str(ROOT / "sst2/train.tsv")}
    assert record["config"]["model_type"] == "gemma_encoder" and record["details"]["num_examples"] == 16

    # Independent check: the same 16 rows scored one at a time (no padding, no length sorting).
    task = data.get_task("sst2")
    _, val = data.train_validation_split(data.load_glue(task, ROOT), task, seed=0)
    rows = data.subsample(val, 16, task, seed=0)
    model.eval()
    with torch.inference_mode():
        predicted = [int(model(**tokenizer(t, return_tensors="pt")).logits.argmax(-1)) for t in rows["text"]]
    assert record["metrics"]["accuracy"] == pytest.approx(accuracy_score(rows["label"], predicted))


def test_evaluate_cli_rerank_real_model(real_encoder_dir, tmp_path):
    torch.manual_seed(0)
    GemmaEncoderForRanking.from_pretrained(real_encoder_dir).save_pretrained(tmp_path / "ranker")
    AutoTokenizer.from_pretrained(real_encoder_dir).save_pretrained(tmp_path / "ranker")
    assert cli.main(["evaluate", str(tmp_path / "ranker"), "--rerank", str(ROOT / "scifact"), "--max-queries", "2",
                     "--top-k", "5", "--max-length", "128", "--device", "cpu", "--out", str(tmp_path / "r.json")]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    metrics, details = record["metrics"], record["details"]
    assert record["task"] == "rerank" and details["num_queries"] == 2 and details["top_k"] == 5
    assert set(metrics) == {"ndcg@10", "mrr@10"}  # BM25's scores are details, not the model's metrics

    subset = data.load_reranking(ROOT / "scifact", "test").restrict(2, 5)
    qrels = Qrels(subset.qrels)
    bm25 = Run({q: dict(c) for q, c in subset.candidates.items()})
    assert details["bm25_ndcg@10"] == pytest.approx(evaluate(qrels, bm25, "ndcg@10"))
    # Re-score each pair alone: the reranker's metrics must come from these scores.
    model = GemmaEncoderForRanking.from_pretrained(tmp_path / "ranker").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "ranker")
    with torch.inference_mode():
        run = {q: {d: float(model(**tokenizer(subset.queries[q], subset.corpus[d], truncation=True, max_length=128,
                                              return_tensors="pt")).logits[0, 0]) for d, _ in cands}
               for q, cands in subset.candidates.items()}
    assert metrics["ndcg@10"] == pytest.approx(evaluate(qrels, Run(run), "ndcg@10"))
    assert metrics["mrr@10"] == pytest.approx(evaluate(qrels, Run(run), "mrr@10"))


def test_evaluate_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", str(tmp_path), "--task", "sst2", "--rerank", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "argument --rerank: not allowed with argument --task" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path), "--rerank", str(tmp_path)]) == 2
    assert "error: argument --rerank: " in capsys.readouterr().err
    # A missing model folder is named as such, not sent to the Hub ("Repo id must be in the form ...").
    missing = tmp_path / "runs" / "glue-sst2" / "modle"
    assert cli.main(["evaluate", str(missing), "--task", "sst2", "--data", str(ROOT), "--max-examples", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gemma-encoder evaluate: error: argument model: No such folder: {missing}")
    assert "Repo id" not in err

# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Scoring models on tasks: per-task metrics, classifier evaluation, BM25-candidate reranking, JSON results.

Owns: metric computation (scikit-learn, scipy and ranx do the arithmetic; nothing here re-implements a metric),
scoring a model on a labelled dataset or on a reranking set's candidates (through the package's one batched inference
runner, `integrations.inference.predict_logits`, with a progress bar), and the results file that the model-card
generator reads. Results schema (one JSON object per file):

    {"model": str, "task": str,
     "dataset": {"name": str, "split": str, "path": str},
     "metrics": {name: float},        # the model's quality metrics only: each becomes a model-index entry
     "details": {name: float},        # optional: counts, timings, baselines (e.g. BM25's nDCG@10)
     "config": {"attention": str, "pooling": str, ...}}
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import EvalPrediction, PreTrainedModel, PreTrainedTokenizerBase

from ..integrations.inference import predict_logits, score_pairs
from .data import REGRESSION, RerankingSet, TaskSpec, column
from .errors import InvalidArgumentError, PathNotFoundError

RANKING_METRICS = ("ndcg@10", "mrr@10")

# Encoder knobs copied into results files (absent keys are skipped, e.g. for transformers' native classifiers).
_CONFIG_KEYS = (
    "model_type",
    "attention",
    "bidirectional_layers",
    "bidirectional_window",
    "pooling",
    "pooling_k",
    "attention_pooling_probe",
    "attention_dropout",
    "hidden_dropout",
    "classifier_dropout",
    "ranking_loss",
    "ranking_group_size",
    "decoder_model_type",
)


# ----------------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------------


def task_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics from raw model outputs: logits (batch, num_labels) or regression scores (batch[, 1])."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if task.problem_type == REGRESSION:
        scores = predictions.reshape(-1).astype(np.float64)
        if np.ptp(scores) == 0:
            # A constant prediction has no correlation; scipy would warn and return NaN, which breaks best-model
            # selection. 0.0 is what a constant predictor deserves.
            return {name: 0.0 for name in task.metrics}
        stats = {"pearson": pearsonr(scores, labels)[0], "spearmanr": spearmanr(scores, labels)[0]}
        return {name: float(stats[name]) for name in task.metrics}
    predicted = predictions.argmax(-1) if predictions.ndim > 1 else predictions
    metric_fns: dict[str, Callable[[], float]] = {
        "accuracy": lambda: accuracy_score(labels, predicted),
        "f1": lambda: f1_score(labels, predicted, average="binary"),
        "f1_macro": lambda: f1_score(labels, predicted, average="macro"),
        "matthews_correlation": lambda: matthews_corrcoef(labels, predicted),
    }
    return {name: float(metric_fns[name]()) for name in task.metrics}


def compute_metrics_fn(task: TaskSpec) -> Callable[[EvalPrediction], dict[str, float]]:
    """`Trainer(compute_metrics=...)` for a task."""

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return task_metrics(task, logits, prediction.label_ids)

    return compute


def ranking_metrics(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], metrics: Sequence[str] = RANKING_METRICS
) -> dict[str, float]:
    """IR metrics of a run against judgments, computed by ranx (nDCG with exponential gain, as BEIR/trec_eval)."""
    from ranx import Qrels, Run, evaluate  # imported here: ranx pulls in ir_datasets, which no other metric needs
    judged = {q: docs for q, docs in qrels.items() if q in run}
    if not judged:
        raise ValueError("None of the run's queries has relevance judgments; check the qrels file and query ids.")
    scores = evaluate(Qrels(judged), Run({q: run[q] for q in judged}), list(metrics), make_comparable=True)
    if isinstance(scores, float):  # ranx returns a bare float for a single metric
        scores = {metrics[0]: scores}
    return {name: float(value) for name, value in scores.items()}


# ----------------------------------------------------------------------------------------------------------------------
# Running models
# ----------------------------------------------------------------------------------------------------------------------


def _autocast(model: PreTrainedModel) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, as in training (never fp16: Gemma 3 overflows); CPU keeps the model's dtype."""
    device = next(model.parameters()).device
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def evaluate_classifier(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    task: TaskSpec,
    *,
    batch_size: int = 32,
    max_length: int = 256,
    show_progress_bar: bool = True,
) -> dict[str, float]:
    """Metrics of `task` for a classifier/regressor on a Dataset with `text`, optional `text_pair` and `label`."""
    if model.config.num_labels != task.num_labels:
        raise ValueError(
            f"The model has num_labels={model.config.num_labels} but task {task.name!r} needs {task.num_labels}; "
            "evaluate a model fine-tuned for this task."
        )
    if len(dataset) == 0:
        raise ValueError(f"The {task.name!r} dataset to evaluate on has no rows.")
    pairs = column(dataset, "text_pair") if task.is_pair else None
    with _autocast(model):
        logits = predict_logits(
            model, tokenizer, column(dataset, "text"), pairs,
            batch_size=batch_size, max_length=max_length, show_progress_bar=show_progress_bar,
        )
    return task_metrics(task, logits.numpy(), np.asarray(column(dataset, "label")))


def rerank(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    reranking: RerankingSet,
    *,
    batch_size: int = 32,
    max_length: int = 256,
    show_progress_bar: bool = True,
) -> dict[str, dict[str, float]]:
    """Score every (query, candidate) pair with the model: {query id: {doc id: score}} (logit 0 = relevance)."""
    if model.config.num_labels != 1:
        raise ValueError(
            f"Reranking needs one relevance score per pair; the model has num_labels={model.config.num_labels}. "
            "Use a GemmaEncoderForRanking model (or a 1-label classifier)."
        )
    pairs = [(q, d) for q, cands in reranking.candidates.items() for d, _ in cands]
    with _autocast(model):
        scores = score_pairs(
            model,
            tokenizer,
            [(reranking.queries[q], reranking.corpus[d]) for q, d in pairs],
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            max_length=max_length,
        ).view(-1).tolist()
    run: dict[str, dict[str, float]] = {}
    for (q, d), score in zip(pairs, scores):
        run.setdefault(q, {})[d] = float(score)
    return run


def evaluate_reranker(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    reranking: RerankingSet,
    *,
    batch_size: int = 32,
    max_length: int = 256,
    show_progress_bar: bool = True,
) -> dict[str, float]:
    """nDCG@10 and MRR@10 of the model's reranking of the candidates, next to BM25's own on the same candidates
    (`bm25_ndcg@10`, `bm25_mrr@10`) and the number of queries (`num_queries`); `split_reranking_metrics` separates
    the model's metrics from the rest for a results record."""
    run = rerank(
        model, tokenizer, reranking, batch_size=batch_size, max_length=max_length, show_progress_bar=show_progress_bar
    )
    metrics = ranking_metrics(reranking.qrels, run)
    bm25 = {q: dict(cands) for q, cands in reranking.candidates.items()}
    metrics.update({f"bm25_{name}": value for name, value in ranking_metrics(reranking.qrels, bm25).items()})
    metrics["num_queries"] = float(len(run))
    return metrics


# ----------------------------------------------------------------------------------------------------------------------
# Results files
# ----------------------------------------------------------------------------------------------------------------------


def split_reranking_metrics(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """`evaluate_reranker`'s output as (the model's metrics, details: BM25's metrics and counts)."""
    own = {name: value for name, value in metrics.items() if name in RANKING_METRICS}
    return own, {name: value for name, value in metrics.items() if name not in own}


def config_summary(config) -> dict:
    """The encoder knobs of a model config that results tables and model cards report."""
    return {key: getattr(config, key) for key in _CONFIG_KEYS if getattr(config, key, None) is not None}


def results_record(
    *,
    model: str,
    task: str,
    dataset_name: str,
    split: str,
    path: str,
    metrics: dict[str, float],
    config,
    details: dict[str, float] | None = None,
) -> dict:
    """One results record (schema in the module docstring). `metrics` are the model's quality metrics, which model
    cards publish as model-index entries; counts, timings and baselines go to `details`."""
    record = {
        "model": model,
        "task": task,
        "dataset": {"name": dataset_name, "split": split, "path": path},
        "metrics": {name: float(value) for name, value in metrics.items()},
    }
    if details:
        record["details"] = {name: float(value) for name, value in details.items()}
    record["config"] = config_summary(config) if not isinstance(config, dict) else dict(config)
    return record


def write_results(path: str | Path, record: dict) -> Path:
    """Write one results record as JSON (the format `gemma-encoder evaluate --out` produces)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Saved models (the `gemma-encoder evaluate` command)
# ----------------------------------------------------------------------------------------------------------------------


def _load_saved(model_path: str | os.PathLike, device: str | None):
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import gemma_encoder_hf  # noqa: F401  (registers the GemmaEncoder Auto classes)

    if not Path(model_path).is_dir():
        # Anything that is not a folder goes to the Hub; say at once when it cannot be a Hub id either (a mistyped
        # local path such as runs/glue-sst2/modle), instead of transformers' "Repo id must be in the form ...".
        try:
            validate_repo_id(str(model_path))
        except HFValidationError:
            raise PathNotFoundError(
                "model_path",
                f"No such folder: {model_path} (and it is not a Hub repo id); pass a folder written by "
                "save_pretrained, such as the `model` folder that examples/finetune_glue.py writes.",
            ) from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.device(device)
    except RuntimeError:
        raise InvalidArgumentError(
            "device", f"device={device!r} is not a torch device; use e.g. 'cpu' or 'cuda'."
        ) from None
    model = AutoModelForSequenceClassification.from_pretrained(model_path).to(device).eval()
    return model, AutoTokenizer.from_pretrained(model_path)


def evaluate_saved_classifier(
    model_path: str | os.PathLike,
    task: str,
    *,
    data: str | os.PathLike | None = None,
    split: str = "validation",
    split_seed: int = 0,
    validation_size: int | float | None = None,
    max_examples: int | None = None,
    batch_size: int = 32,
    max_length: int = 256,
    device: str | None = None,
    show_progress_bar: bool = True,
) -> dict:
    """Score a saved classifier on a GLUE task and return a results record.

    `data` is the data root or the task's file itself (default: the data root in the environment variable
    GEMMA_ENCODER_DATA). `split="validation"` scores the validation split that `train_validation_split` carves
    with `split_seed` (the one `examples/finetune_glue.py` held out); `split="all"` scores every row of the file
    (e.g. a labelled test file in the same format).
    """
    from .data import get_task, load_glue, resolve_data_root, subsample, train_validation_split

    spec = get_task(task)
    if split not in ("validation", "all"):
        raise InvalidArgumentError(
            "split", f"split={split!r} is not supported; use 'validation' (carved from train) or 'all'."
        )
    if data is not None and Path(data).is_file():
        # A file in the task's own layout: same columns as the shared copy, just another path.
        data = Path(data)
        dataset = load_glue(dataclasses.replace(spec, file=data.name), data.parent)
    else:
        root = resolve_data_root(data)
        dataset = load_glue(spec, root)
        data = root / spec.file
    if split == "validation":
        _, dataset = train_validation_split(dataset, spec, validation_size=validation_size, seed=split_seed)
    dataset = subsample(dataset, max_examples, spec, seed=split_seed)
    model, tokenizer = _load_saved(model_path, device)
    metrics = evaluate_classifier(
        model, tokenizer, dataset, spec, batch_size=batch_size, max_length=max_length,
        show_progress_bar=show_progress_bar,
    )
    return results_record(
        model=str(model_path), task=spec.name, dataset_name=spec.name,
        split=f"{split}(seed={split_seed})" if split == "validation" else split, path=str(data), metrics=metrics,
        details={"num_examples": len(dataset)}, config=model.config,
    )


def evaluate_saved_reranker(
    model_path: str | os.PathLike,
    directory: str | os.PathLike,
    *,
    split: str = "test",
    max_queries: int | None = None,
    top_k: int | None = None,
    batch_size: int = 32,
    max_length: int = 256,
    device: str | None = None,
    show_progress_bar: bool = True,
) -> dict:
    """Rerank a BEIR folder's BM25 candidates with a saved one-score model; a results record with nDCG@10/MRR@10.

    `max_queries` keeps the first judged queries by id and `top_k` the top BM25 candidates of each (CPU budgets).
    """
    from .data import load_reranking

    reranking = load_reranking(directory, split).restrict(max_queries, top_k)
    model, tokenizer = _load_saved(model_path, device)
    metrics, details = split_reranking_metrics(evaluate_reranker(
        model, tokenizer, reranking, batch_size=batch_size, max_length=max_length, show_progress_bar=show_progress_bar
    ))
    if top_k:
        details["top_k"] = top_k
    return results_record(
        model=str(model_path), task="rerank", dataset_name=reranking.name, split=split, path=str(directory),
        metrics=metrics, details=details, config=model.config,
    )

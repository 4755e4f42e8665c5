# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Contrastive training of an embedding model (the EmbeddingGemma / Gemini Embedding recipe) on sentence-transformers.

Owns: reading the training inputs into sentence-transformers datasets, mining BM25 hard negatives from a BEIR folder,
choosing the loss per input, and the run itself. The arithmetic is sentence-transformers': in-batch + hard-negative
NCE is `MultipleNegativesRankingLoss` (or its GradCache variant `CachedMultipleNegativesRankingLoss`, for batches
larger than memory), scored pairs are `CoSENTLoss` / `AnglELoss`, Matryoshka dimensions are `MatryoshkaLoss`, and
`SentenceTransformerTrainer` runs the steps (progress bars, checkpoints, multi-dataset batches).

Inputs (`read_training_data`), each one dataset whose batches never mix with another's:

- pairs / triplets: `.jsonl` rows `{"anchor", "positive"[, "negative"]}` or a `.tsv`/`.csv` with that header
  (e.g. `../shared/data/nli/triplets.jsonl`); extra hard negatives as `negative_1`, `negative_2`, ...
- scored pairs: `.jsonl` / `.tsv` with `sentence1`, `sentence2`, `score` (STS-B's `train.tsv` as shipped);
- a BEIR folder (`corpus.jsonl`, `queries.<split>.jsonl`, `qrels/<split>.tsv`,
  `candidates/bm25_top100.<split>.tsv`): one (query, judged document, BM25-mined negatives) row per judgment.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from datasets import Dataset

from ..integrations.sentence_transformers import DEFAULT_PROMPTS, build_sentence_transformer, is_embedding_folder
from .data import RerankingSet, _id_key, _read_rows, load_reranking
from .training import encoder_dir

PAIRS = "pairs"
SCORED = "scored"
PAIR_LOSSES = ("mnrl", "cached-mnrl")
SCORED_LOSSES = ("cosent", "angle")


@dataclass
class TrainingData:
    """One training input: `kind` is `"pairs"` (anchor, positive, negatives...) or `"scored"` (sentence1, sentence2,
    score)."""

    name: str
    kind: str
    dataset: Dataset


# ----------------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------------


def mine_bm25_negatives(
    reranking: RerankingSet, num_negatives: int = 1, depth: int = 30, seed: int = 0
) -> list[tuple[str, str, list[str]]]:
    """(query id, judged document id, negative ids) per judgment, negatives drawn from the query's top `depth` BM25
    candidates that are not judged for it.

    BM25's top candidates are hard negatives because they share the query's words; every document the qrels judge
    for the query is excluded, since training to push a relevant document away is worse than no negative. Queries
    whose candidates run out are topped up with random unjudged corpus documents.
    """
    if num_negatives < 0 or depth < 1:
        raise ValueError(f"num_negatives ({num_negatives}) must be >= 0 and depth ({depth}) >= 1.")
    rng = random.Random(seed)
    doc_ids = sorted(reranking.corpus, key=_id_key)
    rows = []
    for qid in sorted(reranking.qrels, key=_id_key):
        if qid not in reranking.queries:
            continue
        judged = set(reranking.qrels[qid])
        positives = sorted((d for d, grade in reranking.qrels[qid].items() if grade > 0 and d in reranking.corpus),
                           key=_id_key)
        pool = [d for d, _ in reranking.candidates.get(qid, [])[:depth] if d not in judged]
        for positive in positives:
            negatives = rng.sample(pool, min(len(pool), num_negatives))
            while len(negatives) < num_negatives:
                extra = rng.choice(doc_ids)
                if extra not in judged and extra not in negatives:
                    negatives.append(extra)
            rows.append((qid, positive, negatives))
    if not rows:
        raise ValueError(f"{reranking.name}/{reranking.split}: no judged query has a relevant document in the corpus.")
    return rows


def beir_training_pairs(
    directory: str | os.PathLike, split: str = "train", num_negatives: int = 1, depth: int = 30, seed: int = 0
) -> Dataset:
    """A BEIR folder's split as (anchor = query, positive = judged document, negative_i = BM25-mined) rows."""
    reranking = load_reranking(directory, split)
    mined = mine_bm25_negatives(reranking, num_negatives, depth, seed)
    columns = {"anchor": [reranking.queries[q] for q, _, _ in mined],
               "positive": [reranking.corpus[p] for _, p, _ in mined]}
    for i in range(num_negatives):
        columns[_negative_column(i, num_negatives)] = [reranking.corpus[negs[i]] for _, _, negs in mined]
    return Dataset.from_dict(columns)


def _negative_column(i: int, count: int) -> str:
    return "negative" if count == 1 else f"negative_{i + 1}"


def read_training_data(path: str | os.PathLike, *, num_negatives: int = 1, negative_depth: int = 30,
                       seed: int = 0) -> TrainingData:
    """One input of `train_embeddings` (see the module docstring for the accepted layouts)."""
    path = Path(path)
    if path.is_dir():
        dataset = beir_training_pairs(path, "train", num_negatives, negative_depth, seed)
        return TrainingData(path.name, PAIRS, dataset)
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path} has no rows.")
    columns = set(rows[0])
    name = path.stem if path.stem not in ("train", "triplets") else path.parent.name
    if {"sentence1", "sentence2", "score"} <= columns:
        # Scores on any scale (STS-B: 0-5): CoSENT and AnglE use only their order.
        dataset = Dataset.from_dict({
            "sentence1": [r["sentence1"] for r in rows],
            "sentence2": [r["sentence2"] for r in rows],
            "score": [float(r["score"]) for r in rows],
        })
        return TrainingData(name, SCORED, dataset)
    if {"anchor", "positive"} <= columns:
        negatives = sorted((c for c in columns if c == "negative" or c.startswith("negative_")),
                           key=lambda c: (len(c), c))
        keep = ["anchor", "positive", *negatives]
        missing = [i for i, r in enumerate(rows) if any(not isinstance(r.get(c), str) or not r[c] for c in keep)]
        if missing:
            raise ValueError(f"{path}: rows {missing[:5]} lack a text in one of the columns {keep}.")
        return TrainingData(name, PAIRS, Dataset.from_dict({c: [r[c] for r in rows] for c in keep}))
    raise ValueError(
        f"{path}: columns {sorted(columns)} are neither pairs/triplets (anchor, positive[, negative]) nor scored "
        "pairs (sentence1, sentence2, score); a BEIR folder is passed as the folder itself."
    )


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class EmbeddingTrainingRecord:
    """What `train_embeddings` writes to `embedding_training.json` next to the model."""

    source: str
    data: dict[str, int]
    pair_loss: str
    scored_loss: str
    temperature: float
    matryoshka_dims: list[int]
    projection_dims: list[int]
    prompts: dict[str, str]
    lora_rank: int | None
    steps: int
    learning_rate: float
    batch_size: int
    max_length: int
    seed: int
    device: str
    train_seconds: float
    first_logged_loss: float | None
    last_logged_loss: float | None


def _load_start(source, projection_dims, normalize, prompts, truncate_dim, pooling, cache_dir, device):
    from sentence_transformers import SentenceTransformer

    if is_embedding_folder(source):
        # Continue training a saved embedding model: its modules, prompts and pooling stay as saved.
        return SentenceTransformer(str(source), device=device)
    folder = encoder_dir(source, cache_dir)
    return build_sentence_transformer(
        folder, projection_dims=projection_dims, normalize=normalize, prompts=prompts, truncate_dim=truncate_dim,
        device=device, pooling=pooling,
    )


def _losses(model, data: Sequence[TrainingData], pair_loss, scored_loss, temperature, mini_batch_size, dims):
    from sentence_transformers.sentence_transformer import losses

    result = {}
    for item in data:
        if item.kind == PAIRS:
            if pair_loss == "cached-mnrl":
                loss = losses.CachedMultipleNegativesRankingLoss(
                    model, scale=1.0 / temperature, mini_batch_size=mini_batch_size
                )
            else:
                loss = losses.MultipleNegativesRankingLoss(model, scale=1.0 / temperature)
        else:
            loss = (losses.CoSENTLoss if scored_loss == "cosent" else losses.AnglELoss)(model)
        result[item.name] = losses.MatryoshkaLoss(model, loss, list(dims)) if len(dims) > 1 else loss
    return result


def train_embeddings(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    data: Sequence[str | os.PathLike | TrainingData],
    *,
    pair_loss: str = "mnrl",
    scored_loss: str = "cosent",
    temperature: float = 0.05,
    mini_batch_size: int = 8,
    num_negatives: int = 1,
    negative_depth: int = 30,
    matryoshka_dims: Sequence[int] = (256, 128),
    projection_dims: Sequence[int] = (),
    normalize: bool = True,
    prompts: Mapping[str, str] | None = None,
    truncate_dim: int | None = None,
    pooling: str = "mean",
    lora: bool | int = False,
    steps: int | None = None,
    learning_rate: float = 5e-5,
    batch_size: int = 16,
    max_length: int = 160,
    warmup_ratio: float = 0.1,
    save_steps: int = 0,
    seed: int = 0,
    device: str | None = None,
    show_progress_bar: bool = True,
    cache_dir: str | os.PathLike = "runs/converted",
) -> Path:
    """Train an embedding model contrastively and save it as a SentenceTransformer folder (`output_dir`).

    Args:
        source: a GemmaEncoder folder (converted, or adapted by `adapt`: MNTP first is BidirLM's recipe), a decoder
            (`"embedded"`, a `.gguf`, a decoder folder or Hub id: converted once under `cache_dir`), or a saved
            embedding model to train further.
        data: training inputs (paths, see `read_training_data`, or `TrainingData`); several are trained together,
            each batch drawn from one of them in proportion to their sizes.
        pair_loss: `"mnrl"` (in-batch + hard negatives InfoNCE) or `"cached-mnrl"` (same loss, GradCache: a batch
            of any size in `mini_batch_size` chunks of memory).
        scored_loss: `"cosent"` or `"angle"` for scored pairs.
        temperature: of the softmax over similarities (the losses' `scale` is its inverse).
        num_negatives / negative_depth: BM25-mined negatives per BEIR judgment, drawn from the top `negative_depth`.
        matryoshka_dims: smaller dimensions trained alongside the full one (`MatryoshkaLoss`); sizes not below
            the embedding size are dropped, and an empty list trains the full size only.
        projection_dims / normalize / prompts / truncate_dim / pooling: the model format, see
            `build_sentence_transformer` (ignored when `source` is already an embedding model). Pair inputs are
            trained with the `query` prompt on anchors and the `document` prompt on the other columns; scored
            pairs without prompts.
        lora: `False`, `True` (rank 16) or a rank: train LoRA adapters on every projection instead of all weights;
            they are merged into the saved model.
        steps / learning_rate / batch_size / max_length / warmup_ratio: the optimisation budget (max_length caps
            tokens per text during training only; the saved model keeps the encoder's limit). `steps=None` is one
            pass over the training rows in full batches (rows // batch_size steps). The defaults are the measured
            CPU search recipe: one pass over SciFact's 919 train judgments in batches of 16 at lr 5e-5 and 160
            tokens gave dense nDCG@10 0.670 and min-max hybrid 0.743 against BM25's 0.694
            (benchmarks/results/embeddings_cpu_scifact.md).
        device: "cpu", "cuda", ... (default: cuda when available).
        save_steps: write a checkpoint every `save_steps` steps under `output_dir/checkpoints` (0: none).
        show_progress_bar: tqdm bars for the training steps.
    """
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    if pair_loss not in PAIR_LOSSES or scored_loss not in SCORED_LOSSES:
        raise ValueError(f"pair_loss must be one of {PAIR_LOSSES} and scored_loss one of {SCORED_LOSSES}; got "
                         f"{pair_loss!r}, {scored_loss!r}.")
    if not data:
        raise ValueError("train_embeddings needs at least one training input (data=[...]).")
    if (steps is not None and steps < 1) or batch_size < 2 or not temperature > 0:
        raise ValueError(f"steps ({steps}) must be >= 1, batch_size ({batch_size}) >= 2 (in-batch negatives) and "
                         f"temperature ({temperature}) > 0.")
    items = [d if isinstance(d, TrainingData) else
             read_training_data(d, num_negatives=num_negatives, negative_depth=negative_depth, seed=seed)
             for d in data]
    names = [item.name for item in items]
    if steps is None:
        steps = max(1, sum(len(item.dataset) for item in items) // batch_size)  # full batches only
    if len(set(names)) != len(names):
        raise ValueError(f"Two training inputs share a name ({names}); rename one of the files.")

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    model = _load_start(source, projection_dims, normalize, prompts, truncate_dim, pooling, cache_dir, device)
    saved_max_length = model.max_seq_length
    model.max_seq_length = max_length
    width = model.get_embedding_dimension()
    dims = [width, *sorted((d for d in matryoshka_dims if d < width), reverse=True)]

    lora_rank = None
    transformer = model[0]
    if lora:
        from peft import get_peft_model

        from .adaptation import lora_config

        config = lora_config(16 if lora is True else int(lora))
        lora_rank = config.r
        transformer.model = get_peft_model(transformer.model, config)

    # Per dataset and column, as SentenceTransformerTrainingArguments(prompts=...) reads them for several datasets.
    column_prompts = {}
    for item in items:
        if item.kind == PAIRS:
            column_prompts[item.name] = {
                column: model.prompts.get("query" if column == "anchor" else "document", "")
                for column in item.dataset.column_names
            }
    if len(items) == 1:
        # One dataset: the trainer takes the per-column mapping itself.
        column_prompts = column_prompts.get(items[0].name, {})
    output_dir = Path(output_dir)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=int(round(warmup_ratio * steps)),
        lr_scheduler_type="linear",
        logging_steps=max(1, min(10, steps // 10)),
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=2,
        # Duplicate texts in one batch would be in-batch "negatives" of themselves (NLI anchors repeat).
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        prompts=column_prompts or None,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        seed=seed,
        data_seed=seed,
        report_to=[],
        disable_tqdm=not show_progress_bar,
    )
    train_dataset = {item.name: item.dataset for item in items}
    loss = _losses(model, items, pair_loss, scored_loss, temperature, mini_batch_size, dims)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset if len(items) > 1 else items[0].dataset,
        loss=loss if len(items) > 1 else loss[items[0].name],
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    if lora:
        transformer.model = transformer.model.merge_and_unload()
    model.max_seq_length = saved_max_length
    model.save(str(output_dir))
    record = EmbeddingTrainingRecord(
        source=str(source),
        data={item.name: len(item.dataset) for item in items},
        pair_loss=pair_loss,
        scored_loss=scored_loss,
        temperature=temperature,
        matryoshka_dims=dims,
        projection_dims=list(projection_dims),
        prompts=dict(model.prompts),
        lora_rank=lora_rank,
        steps=steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        device="cuda" if cuda else "cpu",
        train_seconds=round(train_seconds, 2),
        first_logged_loss=logged[0] if logged else None,
        last_logged_loss=logged[-1] if logged else None,
    )
    (output_dir / "embedding_training.json").write_text(json.dumps(asdict(record), indent=2) + "\n")
    return output_dir


__all__ = [
    "DEFAULT_PROMPTS",
    "TrainingData",
    "beir_training_pairs",
    "mine_bm25_negatives",
    "read_training_data",
    "train_embeddings",
]

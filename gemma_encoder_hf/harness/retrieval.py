# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Evaluating embedding models: dense retrieval over a whole BEIR corpus, hybrid fusion with BM25, reranking, STS.

Owns: encoding a corpus once (cached on disk, keyed by model and corpus fingerprints), exact dense search, and the
results records of `gemma-encoder evaluate --retrieve / --sts`. The arithmetic is the libraries': ranx computes
nDCG@10 / Recall@100 and fuses runs (reciprocal rank fusion, min-max normalised CombSUM), sentence-transformers'
`EmbeddingSimilarityEvaluator` computes the STS Spearman correlation, and reranking is `evaluation.rerank`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from ranx import Run, fuse
from tqdm.auto import tqdm

from .data import RerankingSet, _id_key, column, load_reranking
from .evaluation import ranking_metrics, rerank, results_record

RETRIEVAL_METRICS = ("ndcg@10", "recall@100")
FUSION_METHODS = {"rrf": dict(method="rrf", norm=None), "minmax": dict(method="sum", norm="min-max")}
DEFAULT_CACHE_DIR = Path("runs") / "embedding_cache"
# Documents per saved piece of a corpus encoding: what an interrupted encoding can lose.
CORPUS_PIECE_SIZE = 256


# ----------------------------------------------------------------------------------------------------------------------
# Fingerprints and the corpus cache
# ----------------------------------------------------------------------------------------------------------------------


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """sha256 over every file of a saved model folder (weights, configs, projections, tokenizer), names included:
    any change to what the folder computes changes the key."""
    digest = hashlib.sha256()
    root = Path(model_dir)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "checkpoints" not in p.relative_to(root).parts):
        if path.name in ("README.md", "embedding_training.json"):
            continue  # documentation, not computation
        digest.update(str(path.relative_to(root)).encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def corpus_fingerprint(corpus: dict[str, str], settings: dict) -> str:
    """sha256 of the documents (ids and texts, in id order) and of the encoding settings (prompt, max length...)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for doc_id in sorted(corpus):
        digest.update(json.dumps([doc_id, corpus[doc_id]]).encode())
    return digest.hexdigest()


def encode_corpus(
    model,
    model_dir: str | os.PathLike,
    corpus: dict[str, str],
    *,
    batch_size: int = 32,
    cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
    show_progress_bar: bool = True,
    piece_size: int = CORPUS_PIECE_SIZE,
) -> tuple[list[str], torch.Tensor]:
    """(doc ids, unit-length document embeddings) of a SentenceTransformer loaded from `model_dir`, read from the
    cache when this model already encoded this corpus with these settings.

    The cache file is `<cache_dir>/<model fingerprint>-<corpus fingerprint>.pt`; `cache_dir=None` disables it.
    While a corpus is being encoded, every `piece_size` documents are saved under `<same name>.parts/`, so an
    interrupted run (an hour on CPU for SciFact) resumes at the first missing piece instead of starting over; the
    pieces are deleted once the whole file is written.
    """
    if not corpus:
        raise ValueError("The corpus has no documents to encode.")
    doc_ids = sorted(corpus, key=_id_key)
    texts = [corpus[d] for d in doc_ids]
    if cache_dir is None:
        return doc_ids, _encode_documents(model, texts, batch_size, show_progress_bar)
    settings = {"max_seq_length": model.max_seq_length, "prompt": model.prompts.get("document", ""),
                "truncate_dim": model.truncate_dim}
    key = f"{model_fingerprint(model_dir)[:20]}-{corpus_fingerprint(corpus, settings)[:20]}"
    cache_file = Path(cache_dir) / f"{key}.pt"
    if cache_file.is_file():
        cached = torch.load(cache_file)
        return cached["doc_ids"], cached["embeddings"]

    parts = cache_file.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    # A piece's name holds its document range, so pieces written with another piece_size are never mistaken for it.
    ranges = [(start, min(start + piece_size, len(texts))) for start in range(0, len(texts), piece_size)]
    done = {r for r in ranges if (parts / f"{r[0]}-{r[1]}.pt").is_file()}
    pieces = []
    with tqdm(total=len(texts), initial=sum(b - a for a, b in done), unit="doc", desc="Encoding the corpus",
              disable=not show_progress_bar) as progress:
        for a, b in ranges:
            piece_file = parts / f"{a}-{b}.pt"
            if (a, b) in done:
                pieces.append(torch.load(piece_file))
                continue
            piece = _encode_documents(model, texts[a:b], batch_size, show_progress_bar=False)
            _save_atomically(piece, piece_file)
            pieces.append(piece)
            progress.update(b - a)
    embeddings = torch.cat(pieces)
    _save_atomically({"doc_ids": doc_ids, "embeddings": embeddings}, cache_file)
    # Another process encoding the same corpus at the same time may have removed them already (both write the same
    # file, atomically; the work is duplicated, never mixed).
    shutil.rmtree(parts, ignore_errors=True)
    return doc_ids, embeddings


def _encode_documents(model, texts: list[str], batch_size: int, show_progress_bar: bool) -> torch.Tensor:
    return model.encode_document(
        texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
        show_progress_bar=show_progress_bar,
    ).float().cpu()


def _save_atomically(obj, path: Path) -> None:
    """A concurrent reader, or the next run after a kill, never sees half a file. The staging name carries the
    process id (as `bulk._write_atomically`'s does), so two processes writing the same file never share one."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, staging)
    staging.replace(path)


def dense_run(
    model,
    model_dir: str | os.PathLike,
    queries: dict[str, str],
    corpus: dict[str, str],
    *,
    top_k: int = 100,
    batch_size: int = 32,
    cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
    show_progress_bar: bool = True,
) -> dict[str, dict[str, float]]:
    """Exact cosine search of every query over the whole corpus: {query id: {doc id: score}} (top `top_k`)."""
    doc_ids, documents = encode_corpus(
        model, model_dir, corpus, batch_size=batch_size, cache_dir=cache_dir, show_progress_bar=show_progress_bar
    )
    qids = sorted(queries, key=_id_key)
    encoded = model.encode_query(
        [queries[q] for q in qids], batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
        show_progress_bar=show_progress_bar,
    ).float().cpu()
    scores, indices = (encoded @ documents.T).topk(min(top_k, len(doc_ids)), dim=-1)
    return {
        q: {doc_ids[i]: float(s) for s, i in zip(row_scores.tolist(), row_indices.tolist())}
        for q, row_scores, row_indices in zip(qids, scores, indices)
    }


def fused_run(runs: Sequence[dict[str, dict[str, float]]], fusion: str) -> dict[str, dict[str, float]]:
    """ranx's fusion of runs: `"rrf"` (reciprocal rank fusion) or `"minmax"` (min-max normalised CombSUM)."""
    if fusion not in FUSION_METHODS:
        raise ValueError(f"fusion={fusion!r} is not supported; use one of {list(FUSION_METHODS)}.")
    fused = fuse([Run(run) for run in runs], **FUSION_METHODS[fusion])
    return {q: dict(docs) for q, docs in fused.to_dict().items()}


# ----------------------------------------------------------------------------------------------------------------------
# Saved models (`gemma-encoder evaluate --retrieve / --sts`)
# ----------------------------------------------------------------------------------------------------------------------


def load_embedding_model(model_path: str | os.PathLike, device: str | None = None, max_length: int | None = None):
    """A SentenceTransformer from a saved embedding folder (or any GemmaEncoder folder, used with its own pooling)."""
    from sentence_transformers import SentenceTransformer

    import gemma_encoder_hf  # noqa: F401  (registers the GemmaEncoder Auto classes)

    if not (Path(model_path) / "modules.json").is_file():
        raise ValueError(
            f"{model_path} is not a sentence-transformers folder (no modules.json); train one with "
            "`gemma-encoder train-embeddings` or save a GemmaEncoderModel with save_pretrained."
        )
    model = SentenceTransformer(str(model_path), device=device)
    if max_length is not None:
        model.max_seq_length = max_length
    return model


def evaluate_retrieval(
    model_path: str | os.PathLike,
    directory: str | os.PathLike,
    *,
    split: str = "test",
    max_queries: int | None = None,
    top_k: int = 100,
    fusion: Sequence[str] = ("rrf", "minmax"),
    reranker: str | os.PathLike | None = None,
    rerank_top_k: int = 20,
    batch_size: int = 32,
    max_length: int | None = 512,
    cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
    device: str | None = None,
    show_progress_bar: bool = True,
) -> dict:
    """Dense retrieval of a BEIR split over the folder's whole corpus, its fusions with the folder's BM25 run, and
    optionally a `GemmaEncoderForRanking` reranking of BM25's top `rerank_top_k`: one results record whose metrics
    are `dense_*`, `bm25_*`, `hybrid_<fusion>_*` and `rerank_*` (nDCG@10, Recall@100).

    BM25 is the folder's candidate file (top 100 per query); the dense run searches every document of
    `corpus.jsonl`. `max_queries` keeps the first judged queries by id (the corpus is always whole).
    """
    reranking: RerankingSet = load_reranking(directory, split).restrict(max_queries)
    model = load_embedding_model(model_path, device, max_length)
    dense = dense_run(
        model, model_path, reranking.queries, reranking.corpus, top_k=top_k, batch_size=batch_size,
        cache_dir=cache_dir, show_progress_bar=show_progress_bar,
    )
    bm25 = {q: dict(cands) for q, cands in reranking.candidates.items()}
    runs = {"dense": dense, "bm25": bm25}
    for method in fusion:
        runs[f"hybrid_{method}"] = fused_run([dense, bm25], method)
    if reranker is not None:
        from .evaluation import _load_saved

        ranker, tokenizer = _load_saved(reranker, device)
        runs["rerank"] = rerank(ranker, tokenizer, reranking.restrict(None, rerank_top_k), batch_size=batch_size,
                                max_length=max_length or 512, show_progress_bar=show_progress_bar)
    scores = {}
    for name, run in runs.items():
        scores.update({f"{name}_{m}": v for m, v in ranking_metrics(reranking.qrels, run, RETRIEVAL_METRICS).items()})
    # The model's own runs are its metrics (model-index); BM25 is the baseline, kept with the counts in details.
    metrics = {name: value for name, value in scores.items() if not name.startswith("bm25_")}
    details = {name: value for name, value in scores.items() if name.startswith("bm25_")}
    details.update(num_queries=len(reranking.queries), corpus_size=len(reranking.corpus))
    config = {"prompts": dict(model.prompts), "truncate_dim": model.truncate_dim, "max_length": max_length,
              **({"reranker": str(reranker), "rerank_top_k": rerank_top_k} if reranker is not None else {})}
    record = results_record(model=str(model_path), task="retrieval", dataset_name=reranking.name, split=split,
                            path=str(directory), metrics=metrics, details=details, config=config)
    record["task_type"] = "retrieval"
    return record


def evaluate_sts(
    model_path: str | os.PathLike,
    path: str | os.PathLike,
    *,
    split: str = "validation",
    split_seed: int = 0,
    batch_size: int = 32,
    max_length: int | None = None,
    truncate_dim: int | None = None,
    device: str | None = None,
) -> dict:
    """Spearman (and Pearson) correlation of cosine similarities with STS scores, by sentence-transformers'
    `EmbeddingSimilarityEvaluator`, on an STS-B-format file (`sentence1`, `sentence2`, `score`).

    `split="validation"` scores the validation split `train_validation_split` carves with `split_seed` (the one
    `gemma-encoder evaluate --task stsb` uses); `"all"` scores every row. `truncate_dim` scores a Matryoshka
    dimension (default: the model's own).
    """
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from .data import get_task, load_glue, train_validation_split

    path = Path(path)
    spec = dataclasses.replace(get_task("stsb"), file=path.name)
    dataset = load_glue(spec, path.parent)
    if split == "validation":
        _, dataset = train_validation_split(dataset, spec, seed=split_seed)
    elif split != "all":
        raise ValueError(f"split={split!r} is not supported; use 'validation' (carved from train) or 'all'.")
    model = load_embedding_model(model_path, device, max_length)
    evaluator = EmbeddingSimilarityEvaluator(
        column(dataset, "text"), column(dataset, "text_pair"), [float(s) for s in column(dataset, "label")],
        batch_size=batch_size, main_similarity="cosine", similarity_fn_names=["cosine"], name="sts", write_csv=False,
        truncate_dim=truncate_dim,
    )
    scores = evaluator(model)
    metrics = {"spearman": float(scores["sts_spearman_cosine"]), "pearson": float(scores["sts_pearson_cosine"]),
               "num_examples": float(len(dataset))}
    record = results_record(
        model=str(model_path), task="stsb", dataset_name="stsb",
        split=f"{split}(seed={split_seed})" if split == "validation" else split, path=str(path), metrics=metrics,
        config={"prompts": dict(model.prompts), "truncate_dim": truncate_dim or model.truncate_dim},
    )
    record["task_type"] = "sentence-similarity"
    return record


__all__ = [
    "corpus_fingerprint",
    "dense_run",
    "encode_corpus",
    "evaluate_retrieval",
    "evaluate_sts",
    "fused_run",
    "model_fingerprint",
]

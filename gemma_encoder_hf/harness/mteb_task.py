# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""A BEIR folder of ours as an `mteb` retrieval task, so a saved embedding model is scored by mteb offline.

mteb's own SciFact task downloads its data from the Hub; this one reads the same layout from disk
(`corpus.jsonl`, `queries.<split>.jsonl`, `qrels/<split>.tsv`). Documents are given as the text our evaluator embeds
(title and abstract joined, `read_corpus`), so both evaluators see the same strings and their nDCG@10 can be compared.
Needs `pip install mteb`.

    import mteb
    from sentence_transformers import SentenceTransformer
    task = local_retrieval_task("../shared/data/scifact", split="test")
    results = mteb.evaluate(SentenceTransformer("my-embedder"), [task], cache=None)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .data import load_reranking


def local_retrieval_task(directory: str | os.PathLike, split: str = "test", max_queries: int | None = None):
    """An instance of an `mteb` `AbsTaskRetrieval` over the folder's whole corpus and the split's judged queries."""
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata

    directory = Path(directory)
    name = f"Local{directory.name.title().replace('-', '')}"

    class LocalRetrievalTask(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=name,
            description=f"BEIR-layout folder {directory} ({split} queries), read from disk.",
            reference=None,
            dataset={"path": str(directory), "revision": "local"},
            type="Retrieval",
            category="t2t",
            modalities=["text"],
            eval_splits=[split],
            eval_langs=["eng-Latn"],
            main_score="ndcg_at_10",
            date=None,
            domains=None,
            task_subtypes=None,
            license=None,
            annotations_creators=None,
            dialect=None,
            sample_creation=None,
            bibtex_citation="",
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            reranking = load_reranking(directory, split).restrict(max_queries)
            split_data = RetrievalSplitData(
                queries=Dataset.from_dict({"id": list(reranking.queries), "text": list(reranking.queries.values())}),
                corpus=Dataset.from_dict({"id": list(reranking.corpus), "text": list(reranking.corpus.values())}),
                relevant_docs=reranking.qrels,
                top_ranked=None,
            )
            self.dataset = {"default": {split: split_data}}
            self.data_loaded = True

    return LocalRetrievalTask()


def mteb_ndcg_at_10(model, directory: str | os.PathLike, split: str = "test", max_queries: int | None = None,
                    batch_size: int = 32) -> float:
    """nDCG@10 of a SentenceTransformer on the folder's split, as mteb computes it (no result files written)."""
    import mteb

    task = local_retrieval_task(directory, split, max_queries)
    results = mteb.evaluate(model, [task], cache=None, encode_kwargs={"batch_size": batch_size},
                            show_progress_bar=False)
    return float(results[0].scores[split][0]["ndcg_at_10"])


__all__ = ["local_retrieval_task", "mteb_ndcg_at_10"]

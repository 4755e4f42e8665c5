# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Datasets for fine-tuning and evaluation: GLUE tasks, user tables, Hub datasets, BEIR reranking sets.

Owns: where each GLUE task's file lives under the data root and how its columns/labels are read, loaders for a
user's TSV/CSV/JSONL or a Hub dataset, the deterministic train/validation split, BEIR readers (corpus, queries,
qrels, BM25 candidates) and the construction of ranking training groups. Every loader returns the same shape: a
`datasets.Dataset` with columns `text`, optionally `text_pair`, and `label`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, Features, Value
from sklearn.model_selection import StratifiedGroupKFold, train_test_split
from transformers import PreTrainedTokenizerBase

from .errors import InvalidArgumentError, PathNotFoundError

# The data root (the folder holding sst2/, cola/, ..., scifact/) when a function is not given one.
DATA_ENV_VAR = "GEMMA_ENCODER_DATA"

CLASSIFICATION = "single_label_classification"
REGRESSION = "regression"


def column(dataset: Dataset, name: str) -> list:
    """A column's values as a Python list, read from Arrow at once. (`dataset[name]` is a lazy column whose every
    element access formats one row: seconds for a GLUE training file.)"""
    return dataset.select_columns([name])[:][name]


def map_with_tokenizer(
    dataset: Dataset, function, tokenizer: PreTrainedTokenizerBase, *, settings: tuple = (), **map_kwargs
) -> Dataset:
    """`dataset.map(function, **map_kwargs)` for a `function` that tokenizes with `tokenizer` under `settings` (the
    other values it closes over, such as max_length).

    datasets names every map result by hashing the function, which means pickling the tokenizer it closes over: about
    30 s for Gemma's 262k-piece vocabulary, on every call. The result is named here from what decides it instead: the
    input's fingerprint, the function, the tokenizer's identity and pair template, and `settings`.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    template = backend.post_processor.__getstate__() if backend is not None and backend.post_processor else b""
    key = repr((
        dataset._fingerprint, function.__module__, function.__qualname__, type(tokenizer).__name__,
        tokenizer.name_or_path, len(tokenizer), tokenizer.padding_side, tokenizer.truncation_side,
        sorted(tokenizer.special_tokens_map.items()), template, settings, sorted(map_kwargs.items(), key=str),
    ))  # fmt: skip
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:32]
    return dataset.map(function, new_fingerprint=fingerprint, **map_kwargs)


@dataclass(frozen=True)
class TaskSpec:
    """How to read one sentence(-pair) task and how to score it.

    Attributes:
        name: short name (`"sst2"`).
        problem_type: `"single_label_classification"` or `"regression"` (transformers' `problem_type`).
        metrics: metric names computed by `gemma_encoder_hf.evaluation.task_metrics`.
        main_metric: the metric that picks the best checkpoint and headlines results.
        label_names: class names in id order; `None` for regression.
        file: path of the training pool relative to the data root (GLUE tasks only).
        text_column / pair_column / label_column: column names in that file.
        column_names: names for a file without a header row.
        string_labels: the file stores class names instead of ids.
    """

    name: str
    problem_type: str
    metrics: tuple[str, ...]
    main_metric: str
    label_names: tuple[str, ...] | None = None
    file: str | None = None
    text_column: str = "text"
    pair_column: str | None = None
    label_column: str = "label"
    column_names: tuple[str, ...] | None = None
    string_labels: bool = False

    @property
    def num_labels(self) -> int:
        return 1 if self.problem_type == REGRESSION else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return self.pair_column is not None

    def with_labels_of(self, dataset: Dataset) -> TaskSpec:
        """This task with the class names a loader recorded in `dataset` (its `label` column's `ClassLabel`), e.g.
        the star values of a 1-5 star file; unchanged for regression."""
        feature = dataset.features.get("label")
        if not isinstance(feature, ClassLabel):
            return self
        return dataclasses.replace(self, label_names=tuple(feature.names))

    def model_kwargs(self) -> dict:
        """Config overrides for a classifier of this task (`num_labels`, `problem_type`, label maps)."""
        kwargs = {"num_labels": self.num_labels, "problem_type": self.problem_type}
        if self.label_names is not None:
            kwargs["id2label"] = dict(enumerate(self.label_names))
            kwargs["label2id"] = {name: i for i, name in enumerate(self.label_names)}
        return kwargs


# Layouts follow each folder's PROVENANCE.md: CoLA has no header, MRPC's header starts with a BOM, RTE and QNLI store
# label names, and QNLI has only half of the official dev set, which serves as its training pool here.
GLUE_TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(
        "sst2", CLASSIFICATION, ("accuracy", "f1"), "accuracy", ("negative", "positive"),
        file="sst2/train.tsv", text_column="sentence",
    ),
    "cola": TaskSpec(
        "cola", CLASSIFICATION, ("matthews_correlation", "accuracy"), "matthews_correlation",
        ("unacceptable", "acceptable"), file="cola/train.tsv", text_column="sentence",
        column_names=("source", "label", "author_mark", "sentence"),
    ),
    "mrpc": TaskSpec(
        "mrpc", CLASSIFICATION, ("accuracy", "f1"), "f1", ("not_equivalent", "equivalent"),
        file="mrpc/train.tsv", text_column="#1 String", pair_column="#2 String", label_column="Quality",
    ),
    "rte": TaskSpec(
        "rte", CLASSIFICATION, ("accuracy",), "accuracy", ("entailment", "not_entailment"),
        file="rte/train.tsv", text_column="sentence1", pair_column="sentence2", string_labels=True,
    ),
    "stsb": TaskSpec(
        "stsb", REGRESSION, ("pearson", "spearmanr"), "pearson",
        file="stsb/train.tsv", text_column="sentence1", pair_column="sentence2", label_column="score",
    ),
    "qnli": TaskSpec(
        "qnli", CLASSIFICATION, ("accuracy",), "accuracy", ("entailment", "not_entailment"),
        file="qnli/dev_shared_half.tsv", text_column="question", pair_column="sentence", string_labels=True,
    ),
}


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The data root: `data_root` when given, else the environment variable GEMMA_ENCODER_DATA."""
    if data_root is None:
        if not os.environ.get(DATA_ENV_VAR):
            raise InvalidArgumentError(
                "data_root",
                f"No data root given: pass data_root (the folder holding the task folders such as sst2/ and "
                f"scifact/) or set the environment variable {DATA_ENV_VAR}.",
            )
        root = Path(os.environ[DATA_ENV_VAR])
        if not root.is_dir():
            raise PathNotFoundError("data_root", f"{DATA_ENV_VAR}={root} is not a folder; point it at the data root.")
        return root
    root = Path(data_root)
    if not root.is_dir():
        raise PathNotFoundError("data_root", f"The data root {root} is not a folder.")
    return root


def get_task(name: str) -> TaskSpec:
    try:
        return GLUE_TASKS[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}; known GLUE tasks: {sorted(GLUE_TASKS)}.") from None


def custom_task(
    name: str,
    *,
    num_labels: int,
    pair: bool = False,
    label_names: list[str] | None = None,
) -> TaskSpec:
    """A TaskSpec for a user's own data: regression when `num_labels == 1`, else single-label classification."""
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}.")
    if num_labels == 1:
        pair_column = "text_pair" if pair else None
        return TaskSpec(name, REGRESSION, ("pearson", "spearmanr"), "pearson", pair_column=pair_column)
    names = tuple(label_names) if label_names else tuple(str(i) for i in range(num_labels))
    if len(names) != num_labels:
        raise ValueError(f"{len(names)} label names given for num_labels={num_labels}.")
    metrics = ("accuracy", "f1") if num_labels == 2 else ("accuracy", "f1_macro")
    return TaskSpec(name, CLASSIFICATION, metrics, "accuracy", names, pair_column="text_pair" if pair else None)


# ----------------------------------------------------------------------------------------------------------------------
# Tables -> Dataset(text, [text_pair], label)
# ----------------------------------------------------------------------------------------------------------------------


def _read_rows(path: Path, column_names: tuple[str, ...] | None = None) -> list[dict]:
    """Rows of a TSV/CSV/JSONL file as dicts. GLUE TSVs contain raw quotes, so delimited files are read verbatim."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if suffix not in (".tsv", ".csv", ".txt"):
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .tsv, .csv or .jsonl.")
    # utf-8-sig strips the BOM that opens MRPC's header. TSV fields are never quoted in GLUE; CSV follows RFC 4180.
    with path.open(encoding="utf-8-sig", newline="") as f:
        if suffix == ".csv":
            reader = csv.reader(f)
        else:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = list(reader)
    header = list(column_names) if column_names else rows.pop(0)
    return [dict(zip(header, row)) for row in rows if row]


def _class_ids(raw_labels: list, task: TaskSpec, source: str) -> tuple[list[int], tuple[str, ...]]:
    """Class ids of a classification column, and the class names in id order.

    Labels are names from `task.label_names`, or class ids 0..num_labels-1. A task with no names of its own (a
    custom task's default names are its ids) whose labels are other integers, e.g. 1-5 stars, gets one class per
    distinct value in ascending order (1 -> id 0, ..., 5 -> id 4), and those values become the class names.
    """
    names = task.label_names
    label2id = {name: i for i, name in enumerate(names)}
    ids, named = [], False
    for row, raw in enumerate(raw_labels):
        text = str(raw).strip()
        if text in label2id and (task.string_labels or not text.isdigit()):
            ids.append(label2id[text])
            named = True
            continue
        try:
            ids.append(int(raw))
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                "label_column",
                f"{source} row {row}: label {raw!r} is neither a class id nor one of the class names {list(names)}.",
            ) from None
    if all(0 <= i < task.num_labels for i in ids):
        return ids, names
    values = sorted(set(ids))
    if not named and names == tuple(str(i) for i in range(task.num_labels)) and len(values) == task.num_labels:
        value2id = {value: i for i, value in enumerate(values)}
        return [value2id[i] for i in ids], tuple(str(value) for value in values)
    raise InvalidArgumentError(
        "label_column",
        f"{source}: the labels {values[:10]} are not class ids 0..{task.num_labels - 1}, and there are {len(values)} "
        f"distinct values for num_labels={task.num_labels}; give num_labels equal to the number of classes, or the "
        "class names (label_names) when the labels are names.",
    )


def _table_to_dataset(rows, task: TaskSpec, source: str, text_column: str, pair_column: str | None,
                      label_column: str) -> Dataset:
    if not rows:
        raise ValueError(f"{source} has no data rows.")
    columns = {"text_column": text_column, "pair_column": pair_column, "label_column": label_column}
    available = list(rows[0])
    missing = {argument: column for argument, column in columns.items() if column and column not in available}
    if missing:
        described = ", ".join(f"{column!r} ({argument})" for argument, column in missing.items())
        raise InvalidArgumentError(
            next(iter(missing)), f"{source} has no column {described}; its columns are {available}."
        )
    raw_labels = [row[label_column] for row in rows]
    data = {"text": [str(row[text_column]) for row in rows]}
    features = {"text": Value("string")}
    if pair_column:
        data["text_pair"] = [str(row[pair_column]) for row in rows]
        features["text_pair"] = Value("string")
    if task.problem_type == REGRESSION:
        data["label"], features["label"] = [float(raw) for raw in raw_labels], Value("float64")
    else:
        data["label"], names = _class_ids(raw_labels, task, source)
        features["label"] = ClassLabel(names=list(names))
    return Dataset.from_dict(data, features=Features(features))


def load_glue(task: str | TaskSpec, data_root: str | os.PathLike | None = None) -> Dataset:
    """The training pool of a GLUE task from `<data_root>/<task>/...` (see `GLUE_TASKS` for each file).

    `data_root` defaults to the environment variable GEMMA_ENCODER_DATA.
    """
    spec = get_task(task) if isinstance(task, str) else task
    path = resolve_data_root(data_root) / spec.file
    if not path.is_file():
        raise PathNotFoundError("data_root", f"{path} does not exist: the data root holds no {spec.file}.")
    rows = _read_rows(path, spec.column_names)
    return _table_to_dataset(rows, spec, str(path), spec.text_column, spec.pair_column, spec.label_column)


def load_table(
    path: str | Path,
    task: TaskSpec,
    *,
    text_column: str = "text",
    pair_column: str | None = None,
    label_column: str = "label",
) -> Dataset:
    """A user's TSV, CSV or JSONL file with the given columns.

    Classification labels are class ids, names from `task.label_names`, or (for a task without names, e.g.
    `custom_task`'s default) any `num_labels` distinct integers such as 1-5 stars, numbered in ascending order. The
    `label` column is a `ClassLabel` holding the class names: `task.with_labels_of(dataset)` takes them over.
    """
    path = Path(path)
    if not path.is_file():
        raise PathNotFoundError("path", f"{path} does not exist.")
    return _table_to_dataset(_read_rows(path), task, str(path), text_column, pair_column, label_column)


def load_hub(
    dataset_id: str,
    task: TaskSpec,
    *,
    config_name: str | None = None,
    split: str = "train",
    text_column: str = "text",
    pair_column: str | None = None,
    label_column: str = "label",
) -> Dataset:
    """A split of a Hub dataset (needs network access, or a populated `datasets` cache)."""
    from datasets import load_dataset

    hub = load_dataset(dataset_id, config_name, split=split)
    return _table_to_dataset(hub, task, f"{dataset_id}[{split}]", text_column, pair_column, label_column)


def train_validation_split(
    dataset: Dataset,
    task: TaskSpec,
    *,
    validation_size: int | float | None = None,
    seed: int = 0,
    max_validation: int | None = 2000,
) -> tuple[Dataset, Dataset]:
    """Carve a deterministic validation split from a training pool.

    With `validation_size=None` (the default), a GLUE task's pool is split by `dev_shaped_split`: a validation set
    shaped like the task's official dev set (SST-2: full sentences; pairs: no sentence on both sides), the split
    every example, benchmark and `gemma-encoder evaluate` use. Any other data, or an explicit `validation_size`
    (a fraction or a count, capped at `max_validation`), gets a random split stratified by label.

    The split depends only on the pool, `validation_size` and `seed`: subsampling the training part afterwards
    (`subsample`) never changes the validation set, so runs with different training budgets are comparable.
    """
    if validation_size is None:
        if task.name in DEV_SHAPES and task.file is not None:
            return dev_shaped_split(dataset, task, seed=seed)
        validation_size = 0.1
    n = len(dataset)
    size = int(round(validation_size * n)) if isinstance(validation_size, float) else int(validation_size)
    if max_validation is not None:
        size = min(size, max_validation)
    if not 0 < size < n:
        raise ValueError(
            f"validation_size={validation_size} gives {size} of {n} rows; it must leave both sides non-empty."
        )
    labels = np.asarray(column(dataset, "label"))
    stratify = labels if task.problem_type == CLASSIFICATION and np.bincount(labels).min() >= 2 else None
    train_idx, val_idx = train_test_split(np.arange(n), test_size=size, random_state=seed, stratify=stratify)
    return dataset.select(np.sort(train_idx)), dataset.select(np.sort(val_idx))


# ----------------------------------------------------------------------------------------------------------------------
# Validation splits shaped like the official GLUE dev sets
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DevShape:
    """What a task's official dev set looks like, and so what its carved validation split imitates.

    Attributes:
        size: rows of the official dev set (the validation split's target size).
        kind: `"sentences"`: full sentences only, and no piece of them left in training (a treebank's phrase table,
            SST-2); `"pairs"`: pairs that share a text stay on one side, labels (or rounded scores) stratified;
            `"random"`: a stratified random sample, for a dev set drawn like the training rows.
    """

    size: int
    kind: str


# Facts about the dev sets from each folder's PROVENANCE.md:
# - SST-2: dev is 872 full sentences (444 positive, mean 19.5 words); the training file is mostly their sub-phrases
#   (mean 9.4 words). The rows that are no sub-phrase of another row are the full sentences (6,885 rows, mean 19.4).
# - CoLA: dev's in-domain half (527 rows) comes from the same 17 publications as train, drawn like it; 527 rather
#   than all 1,043 leaves the 8,000 training sentences the benchmarks ask for.
# - MRPC (408 pairs), RTE (277), STS-B (1,500): drawn from the same corpora as train; some sentences occur in several
#   pairs (137 MRPC sentences, 99 RTE premises, 227 STS-B first sentences), which must not straddle the split.
# - QNLI: the pool is half of the official dev set (the other half is the test); questions and paragraph sentences
#   recur across pairs. A fifth of the pool (546) leaves the 2,000 training pairs the benchmarks ask for.
DEV_SHAPES: dict[str, DevShape] = {
    "sst2": DevShape(872, "sentences"),
    "cola": DevShape(527, "random"),
    "mrpc": DevShape(408, "pairs"),
    "rte": DevShape(277, "pairs"),
    "stsb": DevShape(1500, "pairs"),
    "qnli": DevShape(546, "pairs"),
}


def dev_shaped_split(dataset: Dataset, task: TaskSpec, *, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, validation) of a GLUE task's pool, the validation side shaped like the official dev set.

    See `DEV_SHAPES` for what each task's split imitates. Deterministic in (pool, seed); no validation text, and for
    SST-2 no sub-phrase of a validation sentence, is left in the training side.
    """
    shape = DEV_SHAPES[task.name]
    if shape.kind == "sentences":
        train_idx, val_idx = _full_sentence_split(dataset, task, shape.size, seed)
    elif shape.kind == "pairs":
        train_idx, val_idx = _grouped_pair_split(dataset, task, shape.size, seed)
    else:
        labels = np.asarray(column(dataset, "label"))
        train_idx, val_idx = train_test_split(
            np.arange(len(dataset)), test_size=shape.size, random_state=seed, stratify=labels
        )
    return dataset.select(np.sort(train_idx)), dataset.select(np.sort(val_idx))


def _spans(words: tuple[str, ...]):
    """Every contiguous word span of `words` shorter than the whole."""
    n = len(words)
    for length in range(1, n):
        for start in range(n - length + 1):
            yield words[start : start + length]


def full_sentence_rows(texts: list[str]) -> np.ndarray:
    """Indices of the rows that are no word-level sub-phrase of another row: in a treebank's phrase table (SST-2's
    training file), the full sentences.

    Rows are visited longest first, so a row already found inside a longer one is never expanded: only the full
    sentences' spans are enumerated.
    """
    words = [tuple(t.split()) for t in texts]
    rows = set(words)
    contained: set[tuple[str, ...]] = set()
    for row in sorted(rows, key=len, reverse=True):
        if row in contained:
            continue
        contained.update(span for span in _spans(row) if span in rows)
    return np.array([i for i, w in enumerate(words) if w not in contained], dtype=np.int64)


def _full_sentence_split(dataset: Dataset, task: TaskSpec, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    texts = column(dataset, "text")
    labels = np.asarray(column(dataset, "label"))
    candidates = full_sentence_rows(texts)
    # Duplicated sentences count once, so the same sentence can't be drawn into validation and left in training.
    _, first = np.unique(np.array(texts, dtype=object)[candidates], return_index=True)
    candidates = candidates[np.sort(first)]
    if len(candidates) <= size:
        raise ValueError(f"{task.name}: only {len(candidates)} full-sentence rows, fewer than the {size} wanted.")
    _, val_idx = train_test_split(candidates, test_size=size, random_state=seed, stratify=labels[candidates])
    # A validation sentence's sub-phrases (and the sentence itself) are training rows too: drop them, or the model
    # would be scored on sentences whose pieces it was trained on.
    leaked = set()
    for i in val_idx:
        words = tuple(texts[i].split())
        leaked.add(words)
        leaked.update(_spans(words))
    train_idx = np.array([i for i, t in enumerate(texts) if tuple(t.split()) not in leaked], dtype=np.int64)
    return train_idx, val_idx


def _grouped_pair_split(dataset: Dataset, task: TaskSpec, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One fold of `StratifiedGroupKFold` whose groups are the connected components of "shares a text": a text
    (first or second of a pair) never appears on both sides. Strata: the label, or the rounded score (regression)."""
    texts = column(dataset, "text")
    pairs = column(dataset, "text_pair") if "text_pair" in dataset.column_names else texts
    parent: dict[str, str] = {}

    def root(text: str) -> str:
        while parent.setdefault(text, text) != text:
            parent[text] = parent[parent[text]]
            text = parent[text]
        return text

    for a, b in zip(texts, pairs):
        parent[root(a)] = root(b)
    roots = {r: g for g, r in enumerate(dict.fromkeys(root(t) for t in texts))}
    groups = np.array([roots[root(t)] for t in texts])
    labels = np.asarray(column(dataset, "label"))
    strata = np.rint(labels).astype(np.int64) if task.problem_type == REGRESSION else labels
    n_splits = max(2, round(len(dataset) / size))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(np.zeros(len(dataset)), strata, groups))
    return train_idx, val_idx


def subsample(dataset: Dataset, n: int | None, task: TaskSpec, seed: int = 0) -> Dataset:
    """A deterministic (stratified for classification) subset of `n` rows; all rows when `n` is None or larger."""
    if n is None or n >= len(dataset):
        return dataset
    if n < 1:
        raise ValueError(f"Cannot keep {n} examples; ask for at least 1.")
    labels = np.asarray(column(dataset, "label"))
    stratify = None
    if task.problem_type == CLASSIFICATION and np.bincount(labels).min() >= 2 and n >= len(np.unique(labels)):
        stratify = labels
    keep, _ = train_test_split(np.arange(len(dataset)), train_size=n, random_state=seed, stratify=stratify)
    return dataset.select(np.sort(keep))


# ----------------------------------------------------------------------------------------------------------------------
# BEIR reranking sets
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class RerankingSet:
    """One split of a BEIR-layout folder: texts, judgments and the first-stage (BM25) candidates per query.

    `candidates[qid]` lists (doc id, BM25 score) in BM25 rank order.
    """

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    candidates: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    name: str = ""
    split: str = ""

    def restrict(self, max_queries: int | None = None, top_k: int | None = None) -> RerankingSet:
        """The first `max_queries` judged queries (sorted by id, so deterministic) and their top `top_k` candidates."""
        qids = sorted((q for q in self.candidates if q in self.qrels), key=_id_key)[:max_queries]
        return RerankingSet(
            corpus=self.corpus,
            queries={q: self.queries[q] for q in qids},
            qrels={q: self.qrels[q] for q in qids},
            candidates={q: self.candidates[q][:top_k] for q in qids},
            name=self.name,
            split=self.split,
        )


def _id_key(identifier: str) -> tuple[int, int | str]:
    return (0, int(identifier)) if identifier.isdigit() else (1, identifier)


def read_corpus(path: str | Path) -> dict[str, str]:
    """`corpus.jsonl` -> {doc id: "title text"} (the title, when present, opens the document as BEIR rerankers do)."""
    corpus = {}
    for row in _read_rows(Path(path)):
        title, text = (row.get("title") or "").strip(), (row.get("text") or "").strip()
        corpus[str(row["_id"])] = f"{title} {text}".strip() if title else text
    return corpus


def read_queries(path: str | Path) -> dict[str, str]:
    return {str(row["_id"]): row["text"] for row in _read_rows(Path(path))}


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """`qrels/<split>.tsv` (`query-id corpus-id score`) -> {query id: {doc id: graded relevance}}."""
    qrels: dict[str, dict[str, int]] = {}
    for row in _read_rows(Path(path)):
        qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return qrels


def read_candidates(path: str | Path) -> dict[str, list[tuple[str, float]]]:
    """`candidates/bm25_top100.<split>.tsv` (`query-id corpus-id rank bm25_score`) -> ranked (doc id, score) lists."""
    ranked: dict[str, list[tuple[int, str, float]]] = {}
    for row in _read_rows(Path(path)):
        ranked.setdefault(row["query-id"], []).append((int(row["rank"]), row["corpus-id"], float(row["bm25_score"])))
    return {q: [(doc, score) for _, doc, score in sorted(rows)] for q, rows in ranked.items()}


def load_reranking(directory: str | Path, split: str = "test") -> RerankingSet:
    """A BEIR folder's split: `corpus.jsonl`, `queries.<split>.jsonl`, `qrels/<split>.tsv`, BM25 candidates."""
    directory = Path(directory)
    if not (directory / "corpus.jsonl").is_file():
        raise PathNotFoundError(
            "directory",
            f"{directory} is not a BEIR folder: it has no corpus.jsonl (a BEIR folder holds corpus.jsonl, "
            "queries.<split>.jsonl, qrels/<split>.tsv and candidates/bm25_top100.<split>.tsv).",
        )
    candidates_path = directory / "candidates" / f"bm25_top100.{split}.tsv"
    return RerankingSet(
        corpus=read_corpus(directory / "corpus.jsonl"),
        queries=read_queries(directory / f"queries.{split}.jsonl"),
        qrels=read_qrels(directory / "qrels" / f"{split}.tsv"),
        candidates=read_candidates(candidates_path),
        name=directory.name,
        split=split,
    )


def ranking_groups(
    reranking: RerankingSet,
    group_size: int,
    *,
    seed: int = 0,
    hard_negative_depth: int = 30,
    max_queries: int | None = None,
) -> Dataset:
    """Training groups for `GemmaEncoderForRanking`: each row is one query with `group_size` documents.

    Document 0 is a relevant one (one group per relevant document), the other `group_size - 1` are hard negatives
    drawn from the query's top `hard_negative_depth` BM25 candidates that are not judged relevant (topped up from
    random corpus documents when BM25 found too few). Columns: `query`, `documents` (list), `labels` (list, 1 then
    0s). `RankingCollator` flattens a batch of groups into consecutive rows, as the ranking losses expect.
    """
    if group_size < 2:
        raise ValueError(f"A ranking group needs a positive and at least one negative; group_size={group_size}.")
    rng = random.Random(seed)
    doc_ids = sorted(reranking.corpus)
    qids = sorted((q for q in reranking.qrels if q in reranking.queries), key=_id_key)
    rng.shuffle(qids)
    rows = {"query": [], "documents": [], "labels": []}
    for qid in qids[:max_queries]:
        relevant = {d for d, grade in reranking.qrels[qid].items() if grade > 0 and d in reranking.corpus}
        if not relevant:
            continue
        pool = [d for d, _ in reranking.candidates.get(qid, [])[:hard_negative_depth] if d not in relevant]
        for positive in sorted(relevant):
            negatives = rng.sample(pool, min(len(pool), group_size - 1))
            while len(negatives) < group_size - 1:
                extra = rng.choice(doc_ids)
                if extra not in relevant and extra not in negatives:
                    negatives.append(extra)
            rows["query"].append(reranking.queries[qid])
            rows["documents"].append([reranking.corpus[d] for d in (positive, *negatives)])
            rows["labels"].append([1] + [0] * (group_size - 1))
    if not rows["query"]:
        raise ValueError(f"{reranking.name}/{reranking.split}: no query has a relevant document in the corpus.")
    return Dataset.from_dict(rows)

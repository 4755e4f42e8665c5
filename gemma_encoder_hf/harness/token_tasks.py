# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Token-level tasks: CoNLL-2003 NER and SQuAD extractive QA, from data files to Trainer fine-tuning and metrics.

Owns: reading `conll2003/*.jsonl` (IOB2 tags) and `squad/validation.jsonl` (Hugging Face squad layout), the
deterministic by-article SQuAD split, word-to-piece label alignment, doc-stride QA features, answer decoding, the
metrics (seqeval entity F1; torchmetrics' SQuAD exact match / F1) and the fine-tune / evaluate entry points behind
`gemma-encoder finetune --task conll2003|squad` and `gemma-encoder evaluate --task conll2003|squad`.

Tokenization works on the text as a reader sees it: a CoNLL sentence is its words joined by single spaces, and pieces
are mapped back to words (and answers to characters) through the tokenizer's offsets. Gemma's pieces carry the space
before a word (`"▁Müller"`), so an offset's leading space is skipped before it is matched to a word.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import (
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
)

from ..integrations.pipelines import best_answer_span
from .data import column, map_with_tokenizer, resolve_data_root
from .evaluation import results_record
from .training import FinetuneResult, TrainingConfig, _prepare_model, build_optimizer, training_arguments

# Tag set of shared/data/conll2003 (PROVENANCE.md), in the id order of the Hugging Face `conll2003` dataset.
CONLL_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
CONLL_FILES = {"train": "conll2003/train.jsonl", "validation": "conll2003/validation.jsonl"}
SQUAD_FILE = "squad/validation.jsonl"
TOKEN_TASKS = ("conll2003", "squad")


@dataclass(frozen=True)
class TokenTaskRecipe:
    """Defaults of `gemma-encoder finetune --task conll2003|squad`: the settings of the measured runs
    (`benchmarks/token_tasks.py`, README "Token-level tasks"). Learning rates are `TrainingConfig`'s (5e-5 backbone,
    1e-3 head)."""

    max_length: int
    attention: str = "bidirectional"  # `GemmaEncoderConfig.attention`
    bidirectional_layers: int | None = None  # only the top N layers bidirectional (capped at the depth); None: all
    epochs: float = 1.0
    batch_size: int = 16
    adapt_steps: int = 0  # masked-next-token steps on the training split's text (`adaptation_texts`) first; 0: none


RECIPES = {
    # 64 pieces hold 99.6 % of the training sentences (the longest is 208). Bidirectional: entity F1 0.907 / 0.911
    # against causal 0.784 / 0.779 at 4,000 sentences (seeds 0 / 1), 0.809 / 0.786 against 0.725 / 0.701 at 1,000,
    # 0.942 with all 14,041.
    "conll2003": TokenTaskRecipe(max_length=64),
    # Only the top 2 layers bidirectional (of the 270M's 18): at 2,000 questions and 1 epoch, F1 0.651 / 0.653 / 0.635
    # (seeds 0 / 1 / 2; mean 0.646) against the causal reader's 0.645 / 0.637 / 0.639 (mean 0.641). More bidirectional
    # layers learn more slowly at this budget: the top 3 score 0.640 / 0.641 / 0.635, the top 6 0.635 on seed 0, and
    # the reader with every layer bidirectional trails in training loss from step 20 on (4.3 at step 40 against
    # causal's 2.7; README, token-level tasks).
    "squad": TokenTaskRecipe(max_length=384, bidirectional_layers=2),
}


def adaptation_texts(task: str, train: Dataset) -> list[str]:
    """The unlabelled text of a training split that the adaptation stage reads: CoNLL sentences (words joined by
    spaces), or each SQuAD paragraph once followed by the questions (what the QA model reads)."""
    if task == "conll2003":
        return [" ".join(tokens) for tokens in column(train, "tokens")]
    return sorted(set(column(train, "context"))) + column(train, "question")


def default_doc_stride(max_length: int) -> int:
    """Overlap of consecutive QA windows: a third of the window (128 tokens at the usual 384)."""
    return max_length // 3


# ----------------------------------------------------------------------------------------------------------------------
# CoNLL-2003
# ----------------------------------------------------------------------------------------------------------------------


def conll_label_kwargs() -> dict:
    """Config overrides for a CoNLL-2003 tagger: `num_labels` and the label maps (which the pipeline reports)."""
    return {
        "num_labels": len(CONLL_LABELS),
        "id2label": dict(enumerate(CONLL_LABELS)),
        "label2id": {name: i for i, name in enumerate(CONLL_LABELS)},
    }


def load_conll(path: str | Path) -> Dataset:
    """A CoNLL JSONL file (`{"tokens": [...], "ner_tags": ["B-ORG", ...]}` per line) -> Dataset(tokens, ner_tags)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No CoNLL file at {path}; expected JSON lines with 'tokens' and 'ner_tags'.")
    known = set(CONLL_LABELS)
    tokens, tags = [], []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "tokens" not in row or "ner_tags" not in row or len(row["tokens"]) != len(row["ner_tags"]):
                raise ValueError(f"{path}:{number}: needs 'tokens' and 'ner_tags' lists of the same length.")
            unknown = set(row["ner_tags"]) - known
            if unknown:
                raise ValueError(f"{path}:{number}: tags {sorted(unknown)} are not IOB2 CoNLL tags {CONLL_LABELS}.")
            tokens.append(row["tokens"])
            tags.append(row["ner_tags"])
    return Dataset.from_dict({"tokens": tokens, "ner_tags": tags})


def _word_of_tokens(offsets, word_spans: list[tuple[int, int]], text: str) -> list[int | None]:
    """The index of the word each token starts in (None for special tokens), matching offsets to word spans."""
    starts = {start: i for i, (start, _) in enumerate(word_spans)}
    result, current = [], None
    for start, end in offsets:
        if start == end:  # special tokens (<bos>) have empty offsets
            result.append(None)
            continue
        while start < end and text[start].isspace():
            start += 1
        if start < end and starts.get(start, current) != current:
            current = starts[start]
            result.append(current)
        else:  # a later piece of the current word (or a piece made of spaces only)
            result.append(None if current is None else -1 - current)
    return result


def align_ner_labels(tokens: list[str], tags: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    """Tokenize one sentence (words joined by spaces) and label the first piece of each word; others get -100.

    Words cut off by `max_length` keep no label (`num_words` records how many survived).
    """
    text = " ".join(tokens)
    spans, position = [], 0
    for word in tokens:
        spans.append((position, position + len(word)))
        position += len(word) + 1
    encoded = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True)
    label_ids = []
    for word in _word_of_tokens(encoded.pop("offset_mapping"), spans, text):
        label_ids.append(CONLL_LABELS.index(tags[word]) if word is not None and word >= 0 else -100)
    encoded["labels"] = label_ids
    encoded["num_words"] = sum(label != -100 for label in label_ids)
    return encoded


def tokenize_conll(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Dataset:
    def encode(row: dict) -> dict:
        return align_ner_labels(row["tokens"], row["ner_tags"], tokenizer, max_length)

    return map_with_tokenizer(dataset, encode, tokenizer, settings=(max_length,), remove_columns=dataset.column_names)


def entity_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """seqeval's entity-level precision / recall / F1 (CoNLL's conlleval rules) and token accuracy."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    return {
        "f1": float(f1_score(gold, predicted)),
        "precision": float(precision_score(gold, predicted)),
        "recall": float(recall_score(gold, predicted)),
        "accuracy": float(accuracy_score(gold, predicted)),
    }


def _tags_from_predictions(logits: np.ndarray, labels: np.ndarray) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted tags of the labelled (first-piece) positions, one list per sentence."""
    predictions = logits.argmax(-1)
    gold, predicted = [], []
    for row_pred, row_labels in zip(predictions, labels):
        keep = row_labels != -100
        gold.append([CONLL_LABELS[i] for i in row_labels[keep]])
        predicted.append([CONLL_LABELS[i] for i in row_pred[keep]])
    return gold, predicted


def _ner_compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    return entity_metrics(*_tags_from_predictions(prediction.predictions, prediction.label_ids))


def evaluate_ner(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    *,
    batch_size: int = 32,
    max_length: int = 128,
) -> dict[str, float]:
    """Entity-level metrics of `model` on Dataset(tokens, ner_tags) against the complete gold sequences.

    Each word is tagged by its first piece; words cut off by `max_length` count as predicted `O` (so truncation
    costs recall instead of vanishing from the score).
    """
    features = tokenize_conll(dataset, tokenizer, max_length)
    logits = _predict(model, tokenizer, features.remove_columns(["num_words"]), batch_size, token_level=True)
    predicted = []
    for row_logits, labels, tags in zip(logits, column(features, "labels"), column(dataset, "ner_tags")):
        labels = np.asarray(labels)
        first_pieces = row_logits[: len(labels)][labels != -100].argmax(-1)
        row = [CONLL_LABELS[i] for i in first_pieces]
        predicted.append(row + ["O"] * (len(tags) - len(row)))
    metrics = entity_metrics(column(dataset, "ner_tags"), predicted)
    metrics["num_sentences"] = float(len(dataset))
    return metrics


# ----------------------------------------------------------------------------------------------------------------------
# SQuAD
# ----------------------------------------------------------------------------------------------------------------------


def load_squad(path: str | Path) -> Dataset:
    """A SQuAD JSONL file (Hugging Face layout: id, title, context, question, answers{text, answer_start})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No SQuAD file at {path}; expected JSON lines in the Hugging Face squad layout.")
    rows = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    for number, row in enumerate(rows, 1):
        missing = {"id", "title", "context", "question", "answers"} - set(row)
        if missing:
            raise ValueError(f"{path}:{number}: missing {sorted(missing)}.")
    return Dataset.from_list(rows)


def split_by_article(dataset: Dataset, validation_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, validation) with every article (`title`) on one side only, chosen deterministically from `seed`.

    Questions about one article share its paragraphs, so a split by question would let the model see validation
    contexts in training.
    """
    all_titles = column(dataset, "title")
    titles = sorted(set(all_titles))
    if len(titles) < 2:
        raise ValueError("A by-article split needs at least two articles.")
    random.Random(seed).shuffle(titles)
    count = min(len(titles) - 1, max(1, round(validation_fraction * len(titles))))
    held_out = set(titles[:count])
    is_validation = [title in held_out for title in all_titles]
    train = [i for i, flag in enumerate(is_validation) if not flag]
    validation = [i for i, flag in enumerate(is_validation) if flag]
    return dataset.select(train), dataset.select(validation)


def qa_features(
    examples: dict,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    doc_stride: int,
    with_positions: bool,
    indices: list[int] | None = None,
) -> dict:
    """Batched map function: question + context pairs -> overlapping windows (doc stride), question first.

    With `with_positions`, each window gets the token indices of the first gold answer, or 0 (the `<bos>` token,
    BERT's `[CLS]` convention) when the answer is not wholly inside that window. Otherwise it keeps `example_index`
    and the offsets of its context tokens (None elsewhere) for decoding answers. `indices` are the dataset rows of
    `examples` (`Dataset.map(..., with_indices=True)`): `example_index` must name the row in the whole dataset, since
    `map` hands over batches of 1,000 rows and a position inside the batch repeats from one batch to the next.
    """
    encoded = tokenizer(
        [q.lstrip() for q in examples["question"]],
        examples["context"],
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    sample_of = encoded.pop("overflow_to_sample_mapping")
    offsets = encoded.pop("offset_mapping")
    starts, ends, example_index, context_offsets = [], [], [], []
    for i, sample in enumerate(sample_of):
        sequence_ids = encoded.sequence_ids(i)
        if not with_positions:
            example_index.append(sample if indices is None else indices[sample])
            context_offsets.append([o if s == 1 else None for o, s in zip(offsets[i], sequence_ids)])
            continue
        answers = examples["answers"][sample]
        answer_start = answers["answer_start"][0]
        answer_end = answer_start + len(answers["text"][0])
        context = [j for j, s in enumerate(sequence_ids) if s == 1]
        first, last = context[0], context[-1]
        if offsets[i][first][0] > answer_start or offsets[i][last][1] < answer_end:
            starts.append(0)
            ends.append(0)
            continue
        # The first token reaching past the answer's first character, the last one starting before its end: a piece
        # whose offsets include the space before the answer still starts it.
        starts.append(next(j for j in context if offsets[i][j][1] > answer_start))
        ends.append(next(j for j in reversed(context) if offsets[i][j][0] < answer_end))
    if with_positions:
        encoded["start_positions"], encoded["end_positions"] = starts, ends
    else:
        encoded["example_index"], encoded["context_offsets"] = example_index, context_offsets
    return encoded


def squad_metrics(predictions: dict[str, str], dataset: Dataset) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1 (max over the gold answers) from torchmetrics, as fractions in [0, 1]."""
    from torchmetrics.text import SQuAD

    metric = SQuAD()
    preds = [{"id": row["id"], "prediction_text": predictions[row["id"]]} for row in dataset]
    target = [{"id": row["id"], "answers": row["answers"]} for row in dataset]
    scores = metric(preds, target)
    return {"exact_match": float(scores["exact_match"]) / 100, "f1": float(scores["f1"]) / 100}


def predict_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    *,
    max_length: int = 384,
    doc_stride: int | None = None,
    max_answer_len: int = 30,
    batch_size: int = 32,
) -> dict[str, str]:
    """The answer text of every question (id -> text), decoded over all its windows as the QA pipeline does.

    `doc_stride`: overlap of the windows, a third of `max_length` by default.
    """
    doc_stride = default_doc_stride(max_length) if doc_stride is None else doc_stride
    features = map_with_tokenizer(
        dataset,
        lambda batch, indices: qa_features(batch, tokenizer, max_length, doc_stride, False, indices),
        tokenizer,
        settings=(max_length, doc_stride, False),
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
    )
    model_features = features.remove_columns(["example_index", "context_offsets"])
    start_logits, end_logits = _predict(model, tokenizer, model_features, batch_size, token_level=False)
    windows: dict[int, list[int]] = {}
    for feature, example in enumerate(column(features, "example_index")):
        windows.setdefault(example, []).append(feature)
    answers = {}
    all_offsets = column(features, "context_offsets")
    for example, rows in windows.items():
        width = max(len(all_offsets[r]) for r in rows)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for k, r in enumerate(rows):
            mask[k, : len(all_offsets[r])] = torch.tensor([o is not None for o in all_offsets[r]])
        window, first, last, _ = best_answer_span(
            torch.from_numpy(start_logits[rows][:, :width]), torch.from_numpy(end_logits[rows][:, :width]), mask,
            max_answer_len,
        )  # fmt: skip
        context = dataset[example]["context"]
        offsets = all_offsets[rows[window]]
        start, end = offsets[first][0], offsets[last][1]
        answers[dataset[example]["id"]] = context[start:end].strip()
    return answers


def evaluate_squad(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, **decoding
) -> dict[str, float]:
    metrics = squad_metrics(predict_answers(model, tokenizer, dataset, **decoding), dataset)
    metrics["num_questions"] = float(len(dataset))
    return metrics


# ----------------------------------------------------------------------------------------------------------------------
# Running the model, fine-tuning
# ----------------------------------------------------------------------------------------------------------------------


def _predict(model, tokenizer, features: Dataset, batch_size: int, token_level: bool):
    """Padded-right logits of every feature as numpy: (n, seq, labels), or the (start, end) pair of (n, seq)."""
    device = next(model.parameters()).device
    columns = [c for c in ("input_ids", "attention_mask") if c in features.column_names]
    features = features.select_columns(columns)
    outputs = []
    model.eval()
    with torch.inference_mode():
        for begin in range(0, len(features), batch_size):
            rows = [features[i] for i in range(begin, min(begin + batch_size, len(features)))]
            # Right padding whatever the tokenizer's default (Gemma's is left): position i of every row is then the
            # feature's token i, which is what the labels and offsets index.
            batch = tokenizer.pad(rows, padding=True, padding_side="right", return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            if token_level:
                outputs.append(out.logits.float().cpu())
            else:
                outputs.append(torch.stack([out.start_logits, out.end_logits], -1).float().cpu())
    width = max(o.shape[1] for o in outputs)
    padded = np.concatenate([_pad_to(o, width) for o in outputs])
    return padded if token_level else (padded[..., 0], padded[..., 1])


def _pad_to(tensor: torch.Tensor, width: int) -> np.ndarray:
    """Right-pad dimension 1 of a batch's outputs to `width` (with a very low score, never a prediction)."""
    pad = width - tensor.shape[1]
    if pad:
        filler = torch.full((tensor.shape[0], pad, *tensor.shape[2:]), torch.finfo(torch.float32).min)
        tensor = torch.cat([tensor, filler], 1)
    return tensor.numpy()


def finetune_ner(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: Dataset,
    eval_dataset: Dataset | None,
    config: TrainingConfig,
) -> FinetuneResult:
    """Fine-tune a token classifier on Dataset(tokens, ner_tags) with the Trainer; metrics are seqeval's on
    `eval_dataset` (full gold sequences, see `evaluate_ner`)."""
    if model.config.num_labels != len(CONLL_LABELS):
        raise ValueError(f"The model has num_labels={model.config.num_labels}; CoNLL-2003 needs {len(CONLL_LABELS)}: "
                         "build it with conll_label_kwargs().")  # fmt: skip
    _prepare_model(model, config)
    train = tokenize_conll(train_dataset, tokenizer, config.max_length).remove_columns(["num_words"])
    evaluation = None
    if eval_dataset is not None and config.checkpoints:
        evaluation = tokenize_conll(eval_dataset, tokenizer, config.max_length).remove_columns(["num_words"])
    trainer = Trainer(
        model=model,
        args=training_arguments(config, main_metric="f1", evaluate=evaluation is not None),
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
        compute_metrics=_ner_compute_metrics,
        optimizers=(build_optimizer(model, config), None),
    )
    return _train_and_score(trainer, len(train), eval_dataset, lambda m: evaluate_ner(
        m, tokenizer, eval_dataset, batch_size=config.eval_batch_size, max_length=config.max_length))  # fmt: skip


def finetune_qa(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: Dataset,
    eval_dataset: Dataset | None,
    config: TrainingConfig,
    *,
    doc_stride: int | None = None,
) -> FinetuneResult:
    """Fine-tune an extractive QA model on SQuAD-layout questions (doc-stride windows); EM/F1 on `eval_dataset`.

    Windows overlap by `doc_stride` tokens (default: a third of `config.max_length`). They are padded on the right
    (the answer positions index the unpadded window), so the tokenizer's `padding_side` is set to "right"; it is
    saved that way with the model.
    """
    tokenizer.padding_side = "right"
    doc_stride = default_doc_stride(config.max_length) if doc_stride is None else doc_stride
    _prepare_model(model, config)
    train = map_with_tokenizer(
        train_dataset,
        lambda batch: qa_features(batch, tokenizer, config.max_length, doc_stride, with_positions=True),
        tokenizer,
        settings=(config.max_length, doc_stride, True),
        batched=True,
        remove_columns=train_dataset.column_names,
    )
    trainer = Trainer(
        model=model,
        args=training_arguments(config, main_metric=None, evaluate=False),
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        optimizers=(build_optimizer(model, config), None),
    )
    return _train_and_score(trainer, len(train), eval_dataset, lambda m: evaluate_squad(
        m, tokenizer, eval_dataset, max_length=config.max_length, doc_stride=doc_stride,
        batch_size=config.eval_batch_size))  # fmt: skip


def _train_and_score(trainer: Trainer, num_train: int, eval_dataset, score) -> FinetuneResult:
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    metrics, eval_seconds = {}, 0.0
    if eval_dataset is not None:
        started = time.perf_counter()
        metrics = score(trainer.model)
        eval_seconds = time.perf_counter() - started
    return FinetuneResult(trainer.model, trainer, metrics, train_seconds, eval_seconds, num_train)


# ----------------------------------------------------------------------------------------------------------------------
# Saved models (`gemma-encoder evaluate --task conll2003|squad`)
# ----------------------------------------------------------------------------------------------------------------------


def evaluate_saved_token_model(
    model_path: str | Path,
    task: str,
    *,
    data: str | Path | None = None,
    max_examples: int | None = None,
    split_seed: int = 0,
    batch_size: int = 32,
    max_length: int | None = None,
    device: str | None = None,
) -> dict:
    """Score a saved tagger (`conll2003`) or QA model (`squad`) and return a results record (model-card format).

    `data`: a CoNLL JSONL file (default: the shared validation file) or a SQuAD JSONL file (default: the validation
    articles of `split_by_article(shared squad, seed=split_seed)`; a file given here is scored whole).
    `max_examples` keeps the first N sentences / questions.
    """
    from transformers import AutoModelForQuestionAnswering, AutoModelForTokenClassification, AutoTokenizer

    import gemma_encoder_hf  # noqa: F401  (registers the GemmaEncoder Auto classes)

    if task not in TOKEN_TASKS:
        raise ValueError(f"task={task!r} is not a token-level task; known: {list(TOKEN_TASKS)}.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    max_length = max_length or RECIPES[task].max_length
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    # `data`: the data root (the shared split is used) or the task's file itself (all of it is scored).
    given = Path(data) if data is not None else None
    if task == "conll2003":
        path = given if given is not None and given.is_file() else resolve_data_root(given) / CONLL_FILES["validation"]
        dataset, split = load_conll(path), path.stem
        auto_class = AutoModelForTokenClassification
    else:
        if given is not None and given.is_file():
            path, split = given, "all"
            dataset = load_squad(path)
        else:
            path, split = resolve_data_root(given) / SQUAD_FILE, f"validation-articles(seed={split_seed})"
            dataset = split_by_article(load_squad(path), seed=split_seed)[1]
        auto_class = AutoModelForQuestionAnswering
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    model = auto_class.from_pretrained(model_path).to(device).eval()
    if task == "conll2003":
        metrics = evaluate_ner(model, tokenizer, dataset, batch_size=batch_size, max_length=max_length)
    else:
        metrics = evaluate_squad(model, tokenizer, dataset, max_length=max_length,
                                 doc_stride=default_doc_stride(max_length), batch_size=batch_size)  # fmt: skip
    return results_record(
        model=str(model_path), task=task, dataset_name=task, split=split, path=str(path), metrics=metrics,
        config=model.config,
    )

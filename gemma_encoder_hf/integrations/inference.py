# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""High-level inference: pooled sentence embeddings (`embed`), classifier logits (`predict_logits`) and pair scores
(`score_pairs`).

Owns: the one batched inference loop of the package (`_run_batched`), behind these three functions and behind the
harness' evaluation. Texts are tokenized once, sorted by token length and batched, so a batch pads to the length of
its own longest text rather than the corpus' longest; the model runs in eval mode under `inference_mode`, a tqdm bar
shows progress, and results come back in the caller's order as float32 CPU tensors.

Why not `pipeline("feature-extraction")`: by transformers convention it returns per-token states
(`last_hidden_state`), not the pooled vector the encoder was trained to produce (which, for attention pooling,
involves learned weights no caller could reproduce from token states). `embed` returns that pooled vector.
"""

import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

from ..modeling.modeling_gemma_encoder import GemmaEncoderModel, GemmaEncoderPreTrainedModel
from .conversion import check_pair_template
from .sentence_transformers import EmbeddingFormat

Pair = tuple[str, str]


def embed(
    model: GemmaEncoderPreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 32,
    normalize_embeddings: bool = False,
    show_progress_bar: bool = True,
    max_length: int | None = None,
    prompt_name: str | None = None,
    prompt: str | None = None,
    truncate_dim: int | None = None,
) -> torch.Tensor:
    """Pooled embeddings of `texts`, one row per text, in input order: a float32 CPU tensor of shape
    `(len(texts), hidden_size)` (or a saved embedding model's projected / truncated size), whatever the model's dtype
    and device.

    The vector is the one the model pools with its own `config.pooling` (mean, first-K, last-K or attention pooling):
    `pooler_output` of a `GemmaEncoderModel`, or the input of the task head of a classifier/ranker.

    Args:
        model: a `GemmaEncoderModel`, `GemmaEncoderForSequenceClassification` or `GemmaEncoderForRanking`.
        tokenizer: the model's tokenizer.
        texts: the texts to embed.
        batch_size: texts per forward pass.
        normalize_embeddings: L2-normalise each vector (cosine similarity becomes a dot product).
        show_progress_bar: show a tqdm bar over batches.
        max_length: truncate texts to this many tokens (default and upper bound: the tokenizer's `model_max_length`
            and the model's `max_position_embeddings`).
        prompt_name: a prompt saved with an embedding model (`query`, `document`, ...), prepended to every text.
        prompt: the text to prepend (wins over `prompt_name`).
        truncate_dim: keep the first dimensions only (Matryoshka); default: the saved model's `truncate_dim`.

    A model loaded from an embedding model folder (`train_embeddings`, `build_sentence_transformer(...).save`) gets
    the folder's prompts, projections, `Normalize` and `truncate_dim`, exactly as `SentenceTransformer(folder)`.
    """
    texts = _check_texts(texts, "texts")
    embedding_format = EmbeddingFormat.of_model(model)
    prefix = embedding_format.resolve_prompt(prompt_name, prompt)
    pooled = _run_batched(
        model, tokenizer, [prefix + text for text in texts], None, _pooling_function(model),
        batch_size=batch_size, max_length=max_length, show_progress_bar=show_progress_bar, description="embed",
    )
    if pooled is None:
        pooled = torch.empty(0, model.config.hidden_size)
    embeddings = embedding_format.apply(pooled, truncate_dim)
    return F.normalize(embeddings, dim=-1) if normalize_embeddings else embeddings


def predict_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None = None,
    batch_size: int = 32,
    show_progress_bar: bool = True,
    max_length: int | None = None,
) -> torch.Tensor:
    """Raw logits of a sequence classifier (or ranker) for texts, or (text, text_pair) pairs, in input order: a
    float32 CPU tensor of shape `(len(texts), num_labels)`. No sigmoid/softmax is applied.

    Works for any transformers model whose output has `logits` of shape `(batch, num_labels)`: GemmaEncoder
    classifiers and rankers, transformers' native classifiers, PEFT-wrapped ones. Evaluation scores models through it.

    Args:
        model: a sequence classifier or ranker.
        tokenizer: the model's tokenizer; pairs are joined by its pair template (`<bos> text <eos> text_pair` for
            tokenizers prepared by `gemma_encoder_hf.prepare_tokenizer`).
        texts: the (first) texts.
        text_pairs: the second text of each pair, or None for single texts.
        batch_size: inputs per forward pass.
        show_progress_bar: show a tqdm bar over batches.
        max_length: truncate inputs to this many tokens, the longer text of a pair first (default and upper bound:
            the tokenizer's `model_max_length` and the model's `max_position_embeddings`).
    """
    texts = _check_texts(texts, "texts")
    if text_pairs is not None:
        text_pairs = _check_texts(text_pairs, "text_pairs")
        if len(text_pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs; give one text_pair per text.")
    num_labels = model.config.num_labels

    def logits(batch: BatchEncoding) -> torch.Tensor:
        output = getattr(model(**batch), "logits", None)
        # A base encoder has no logits; a masked-LM head has per-token logits: neither scores a text.
        if output is None or output.ndim != 2 or output.shape[-1] != num_labels:
            raise TypeError(
                f"{type(model).__name__} is not a sequence classifier: it returns no logits of shape (batch, "
                f"num_labels={num_labels}). Load the checkpoint with AutoModelForSequenceClassification (or "
                "GemmaEncoderForRanking for one relevance score per pair); use `embed` for pooled vectors."
            )
        return output

    scores = _run_batched(
        model, tokenizer, texts, text_pairs, logits,
        batch_size=batch_size, max_length=max_length, show_progress_bar=show_progress_bar, description="score",
    )
    return torch.empty(0, num_labels) if scores is None else scores


def score_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[Pair],
    batch_size: int = 32,
    show_progress_bar: bool = True,
    max_length: int | None = None,
) -> torch.Tensor:
    """Raw logits for (text, text_pair) pairs, in input order, as a float32 CPU tensor: shape `(len(pairs),)` for a
    one-output model (a ranker or a regressor), `(len(pairs), num_labels)` otherwise. No sigmoid/softmax is applied.

    Pairs are joined by the tokenizer's pair template, which must be `<bos> text <eos> text_pair` (tokenizers saved
    by `gemma-encoder convert` or prepared by `gemma_encoder_hf.prepare_tokenizer`; a raw Gemma tokenizer is refused
    with a ValueError). An empty `text_pair` still counts as a pair (`<bos> text <eos>`), as in CrossEncoder. When a
    pair is too long, the longer of the two texts is truncated first, with a warning. Arguments as in
    `predict_logits`.
    """
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs must be a list of (text, text_pair) tuples, got {type(pairs).__name__}.")
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise TypeError(f"pairs[{i}] must be a (text, text_pair) tuple of two strings, got {pair!r}.")
    # A raw Gemma tokenizer would join the pairs as `<bos> A <bos> B`: scores unlike every other path's.
    check_pair_template(tokenizer)
    scores = predict_logits(
        model, tokenizer, [p[0] for p in pairs], [p[1] for p in pairs],
        batch_size=batch_size, show_progress_bar=show_progress_bar, max_length=max_length,
    )
    return scores.squeeze(-1) if model.config.num_labels == 1 else scores


def _check_texts(texts: Sequence[str], name: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings; wrap a single text as [{texts[:30]!r}].")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must hold strings only; items {bad[:5]} are not strings.")
    return texts


def _pooling_function(model: torch.nn.Module) -> Callable[[BatchEncoding], torch.Tensor]:
    """How to get the pooled vector out of this kind of model."""
    if isinstance(model, GemmaEncoderModel):
        if model.pooler is None:
            raise ValueError("This GemmaEncoderModel was built with add_pooling_layer=False: it has no pooled output.")
        return lambda batch: model(**batch).pooler_output
    backbone, head = getattr(model, "model", None), getattr(model, "score", None)
    if isinstance(backbone, GemmaEncoderModel) and hasattr(head, "pooler"):
        # Task models pool inside their head (so PEFT saves the pooler with the head); run backbone + head pooler.
        return lambda batch: head.pooler(backbone(**batch).last_hidden_state, batch["attention_mask"])
    raise TypeError(
        f"embed needs a GemmaEncoder model (GemmaEncoderModel or a GemmaEncoder classifier/ranker), got "
        f"{type(model).__name__}."
    )


def _warn_if_truncated(tokenizer, texts, text_pairs, input_ids, max_length: int) -> None:
    """Warn when inputs were cut at `max_length`: a silently truncated text scores as another text."""
    # Only inputs that fill max_length can have been cut: tokenize those again, whole, to tell.
    full = [i for i, ids in enumerate(input_ids) if len(ids) == max_length]
    if not full:
        return
    again = tokenizer([texts[i] for i in full], [text_pairs[i] for i in full] if text_pairs else None, verbose=False)
    lengths = {i: len(ids) for i, ids in zip(full, again["input_ids"]) if len(ids) > max_length}
    if lengths:
        warnings.warn(
            f"{len(lengths)} of {len(texts)} inputs are longer than max_length={max_length} tokens (the longest has "
            f"{max(lengths.values())}; first at index {min(lengths)}) and were truncated. Raise max_length or "
            "tokenizer.model_max_length to keep more (at most the model's max_position_embeddings; time and memory "
            "grow with it).",
            stacklevel=4,
        )


def truncation_length(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, max_length: int | None) -> int:
    """The token length inference truncates to: `max_length`, never more than the tokenizer's `model_max_length` nor
    the positions the model has (a tokenizer that was not prepared may carry transformers' "no limit" sentinel,
    ~1e30)."""
    limit = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    return min(limit, max_length or limit)


def _run_batched(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    text_pairs: list[str] | None,
    forward: Callable[[BatchEncoding], torch.Tensor],
    *,
    batch_size: int,
    max_length: int | None,
    show_progress_bar: bool,
    description: str,
) -> torch.Tensor | None:
    """The one batched inference loop: tokenize once, sort by token length, pad per batch, run `forward` in eval
    mode under `inference_mode`, and return its float32 CPU outputs in the input order (None when there is no input).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 or None, got {max_length}.")
    if not texts:
        return None
    max_length = truncation_length(model, tokenizer, max_length)
    encoded = tokenizer(texts, text_pairs, truncation=True, max_length=max_length, return_attention_mask=True)
    _warn_if_truncated(tokenizer, texts, text_pairs, encoded["input_ids"], max_length)
    encodings = [{k: encoded[k][i] for k in ("input_ids", "attention_mask")} for i in range(len(texts))]
    # Longest first: the first batch is the most memory-hungry, so an out-of-memory error shows up immediately.
    # Python's sort is stable, so equal lengths keep their input order and the batches do not depend on ties.
    order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i]["input_ids"]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.inference_mode():
            starts = range(0, len(order), batch_size)
            for start in tqdm(starts, desc=description, disable=not show_progress_bar, unit="batch"):
                batch = tokenizer.pad([encodings[i] for i in order[start : start + batch_size]], return_tensors="pt")
                outputs.append(forward(batch.to(device)).float().cpu())
    finally:
        model.train(was_training)
    sorted_outputs = torch.cat(outputs)
    result = torch.empty_like(sorted_outputs)
    result[torch.tensor(order)] = sorted_outputs
    return result


__all__ = ["embed", "predict_logits", "score_pairs"]

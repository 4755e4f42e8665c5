# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""High-level inference: pooled sentence embeddings (`embed`) and pair scores (`score_pairs`).

Owns: batching texts for inference. Texts are tokenized once, sorted by token length and batched, so a batch pads to
the length of its own longest text rather than the corpus' longest; results come back in the caller's order.

Why not `pipeline("feature-extraction")`: by transformers convention it returns per-token states
(`last_hidden_state`), not the pooled vector the encoder was trained to produce (which, for attention pooling,
involves learned weights no caller could reproduce from token states). `embed` returns that pooled vector.
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

from ..modeling.modeling_gemma_encoder import GemmaEncoderModel, GemmaEncoderPreTrainedModel
from .sentence_transformers import EmbeddingFormat

Pair = tuple[str, str]


def embed(
    model: GemmaEncoderPreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 32,
    normalize: bool = False,
    show_progress_bar: bool = True,
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
        tokenizer: the model's tokenizer (texts longer than the model's limit are truncated).
        texts: the texts to embed.
        batch_size: texts per forward pass.
        normalize: L2-normalise each vector (cosine similarity becomes a dot product).
        show_progress_bar: show a tqdm bar over batches.
        prompt_name: a prompt saved with an embedding model (`query`, `document`, ...), prepended to every text.
        prompt: the text to prepend (wins over `prompt_name`).
        truncate_dim: keep the first dimensions only (Matryoshka); default: the saved model's `truncate_dim`.

    A model loaded from an embedding model folder (`train_embeddings`, `build_sentence_transformer(...).save`) gets
    the folder's prompts, projections, `Normalize` and `truncate_dim`, exactly as `SentenceTransformer(folder)`.
    """
    texts = _check_texts(texts, "texts")
    pool = _pooling_function(model)
    embedding_format = EmbeddingFormat.of_model(model)
    prefix = embedding_format.resolve_prompt(prompt_name, prompt)
    encodings = _tokenize(tokenizer, model, [prefix + text for text in texts])
    pooled = _run_sorted(model, tokenizer, encodings, batch_size, pool, "embed", show_progress_bar)
    if pooled is None:
        pooled = torch.empty(0, model.config.hidden_size)
    embeddings = embedding_format.apply(pooled, truncate_dim)
    return F.normalize(embeddings, dim=-1) if normalize else embeddings


def score_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[Pair],
    batch_size: int = 32,
    show_progress_bar: bool = True,
) -> torch.Tensor:
    """Raw logits for (text, text_pair) pairs, in input order, as a float32 CPU tensor: shape `(len(pairs),)` for a
    one-output model (a ranker or a regressor), `(len(pairs), num_labels)` otherwise. No sigmoid/softmax is applied.

    Pairs are joined by the tokenizer's pair template (`<bos> text <eos> text_pair` for tokenizers prepared by
    `gemma_encoder_hf.prepare_tokenizer`); when a pair is too long, the longer of the two texts is truncated first.
    """
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs must be a list of (text, text_pair) tuples, got {type(pairs).__name__}.")
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise TypeError(f"pairs[{i}] must be a (text, text_pair) tuple of two strings, got {pair!r}.")
    if not hasattr(model.config, "num_labels"):
        raise TypeError(f"{type(model).__name__} has no classification head; score_pairs needs a classifier/ranker.")
    encodings = _tokenize(tokenizer, model, [p[0] for p in pairs], [p[1] for p in pairs])

    def logits(batch: BatchEncoding) -> torch.Tensor:
        return model(**batch).logits

    scores = _run_sorted(model, tokenizer, encodings, batch_size, logits, "score", show_progress_bar)
    if scores is None:
        scores = torch.empty(0, model.config.num_labels)
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


def _tokenize(
    tokenizer: PreTrainedTokenizerBase,
    model: PreTrainedModel,
    texts: list[str],
    text_pairs: list[str] | None = None,
) -> list[dict[str, list[int]]]:
    if not texts:
        return []
    # A tokenizer that was not prepared may carry transformers' "no limit" sentinel (~1e30): never exceed the
    # positions the model has.
    max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    encoded = tokenizer(texts, text_pairs, truncation=True, max_length=max_length, return_attention_mask=True)
    keys = ("input_ids", "attention_mask")
    return [{k: encoded[k][i] for k in keys} for i in range(len(texts))]


def _run_sorted(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    encodings: list[dict[str, list[int]]],
    batch_size: int,
    forward: Callable[[BatchEncoding], torch.Tensor],
    description: str,
    show_progress_bar: bool,
) -> torch.Tensor | None:
    """Run `forward` over length-sorted batches in eval mode; return the outputs in the original order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if not encodings:
        return None
    # Longest first: the first batch is the most memory-hungry, so an out-of-memory error shows up immediately.
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


__all__ = ["embed", "score_pairs"]

# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Pipelines for the token-level heads, with character spans that slice the input exactly.

Owns: `GemmaEncoderTokenClassificationPipeline` (transformers' token-classification pipeline with span fixes) and
`ExtractiveQuestionAnsweringPipeline` (registered as the task `"extractive-question-answering"` on
`import gemma_encoder_hf`), plus `best_answer_span`, the answer decoding shared with `harness/token_tasks.py`.

Why they exist:
- Gemma's SentencePiece pieces carry the space before a word (`"▁Müller"`), and the tokenizer's offsets include that
  space: transformers' token-classification pipeline then reports an entity starting one character early, with a
  leading space in `word`. No setting of the `tokenizers` library trims a `▁` piece's offsets (its `trim_offsets`
  only knows byte-level `Ġ`), and changing the pre-tokenizer would change the token ids the decoder was trained on,
  so the fix is here, after the model has run.
- transformers 5 removed its `question-answering` pipeline (and refuses the task name), so extractive QA gets its own
  pipeline: question + context in, the best answer span out, contexts longer than the window read in overlapping
  windows (doc stride).
"""

from __future__ import annotations

import torch
from transformers import AutoModelForQuestionAnswering, Pipeline, TokenClassificationPipeline
from transformers.pipelines import PIPELINE_REGISTRY

QA_TASK = "extractive-question-answering"


def _skip_leading_space(text: str, start: int, end: int) -> int:
    while start < end and text[start].isspace():
        start += 1
    return start


class GemmaEncoderTokenClassificationPipeline(TokenClassificationPipeline):
    """transformers' token-classification pipeline whose entity `start`/`end` slice the text to exactly `word`.

    Use it with `pipeline("token-classification", model=..., pipeline_class=GemmaEncoderTokenClassificationPipeline)`.
    Only the reported spans change: the model, the scores and the grouping of tokens into entities are transformers'.
    """

    def gather_pre_entities(self, sentence, *args, **kwargs) -> list[dict]:
        # transformers decides which pieces start a word from the untrimmed offsets (a space before the piece means a
        # new word), so the spans are trimmed after that decision.
        pre_entities = super().gather_pre_entities(sentence, *args, **kwargs)
        for entity in pre_entities:
            if entity["start"] is not None:
                entity["start"] = _skip_leading_space(sentence, entity["start"], entity["end"])
        return pre_entities

    def postprocess(self, all_outputs, aggregation_strategy=None, ignore_labels=None):
        entities = super().postprocess(all_outputs, aggregation_strategy, ignore_labels)
        sentence = all_outputs[0]["sentence"]
        for entity in entities:
            # Grouped entities are spelled from their tokens (`" São Paulo"`); the text itself is what was tagged.
            if "entity_group" in entity and entity["start"] is not None:
                entity["word"] = sentence[entity["start"] : entity["end"]]
        return entities


def best_answer_span(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    context_mask: torch.Tensor,
    max_answer_len: int,
) -> tuple[int, int, int, float]:
    """The best answer over the windows of one question: (window, start token, end token, probability).

    A span lies inside the context tokens of one window, ends at or after its start and holds at most
    `max_answer_len` tokens. Windows are compared by start + end logit (as the SQuAD reference decoding does); the
    probability is that of the span under the window's start and end distributions over its context tokens.
    """
    if not bool(context_mask.any()):
        raise ValueError("No context token left in any window: the question fills the whole max_seq_len.")
    low = torch.finfo(torch.float32).min
    start = start_logits.float().masked_fill(~context_mask, low)
    end = end_logits.float().masked_fill(~context_mask, low)
    seq = start.shape[-1]
    index = torch.arange(seq, device=start.device)
    length = index[None, :] - index[:, None]  # end - start
    allowed = (length >= 0) & (length < max_answer_len)
    pair = start[:, :, None] + end[:, None, :]
    pair = pair.masked_fill(~(allowed[None] & context_mask[:, :, None] & context_mask[:, None, :]), low)
    best = int(pair.flatten().argmax())
    window, rest = divmod(best, seq * seq)
    first, last = divmod(rest, seq)
    log_start = torch.log_softmax(start[window], -1)[first]
    log_end = torch.log_softmax(end[window], -1)[last]
    return window, first, last, float((log_start + log_end).exp())


class ExtractiveQuestionAnsweringPipeline(Pipeline):
    """Extractive QA: `{"question", "context"}` -> `{"answer", "start", "end", "score"}`, `context[start:end] == answer`.

    Registered as `pipeline("extractive-question-answering", model=...)` by `import gemma_encoder_hf`, for any model
    of `AutoModelForQuestionAnswering`. The question and context are tokenized as a pair (question first, right
    padding); a context that does not fit in `max_seq_len` tokens (default: the tokenizer's `model_max_length`, at
    most 384) is cut into windows that overlap by `doc_stride` tokens, and the best span of all windows wins.

    Call it with `pipe(question=..., context=...)`, `pipe({"question": ..., "context": ...})` or a list of such dicts.
    Options: `doc_stride` (default 128), `max_seq_len`, `max_answer_len` (in tokens, default 30).
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __call__(self, inputs=None, *, question=None, context=None, **kwargs):
        if inputs is None:
            if question is None or context is None:
                raise ValueError("Pass question= and context=, or {'question': ..., 'context': ...} dicts.")
            if isinstance(question, str) != isinstance(context, str):
                raise ValueError("question and context must both be strings or both be lists of the same length.")
            if isinstance(question, str):
                inputs = {"question": question, "context": context}
            else:
                if len(question) != len(context):
                    raise ValueError(f"Got {len(question)} questions but {len(context)} contexts.")
                inputs = [{"question": q, "context": c} for q, c in zip(question, context)]
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, doc_stride=None, max_seq_len=None, max_answer_len=None, **kwargs):
        if kwargs:
            raise TypeError(f"Unknown argument(s) {sorted(kwargs)}; options: doc_stride, max_seq_len, max_answer_len.")
        preprocess = {}
        if doc_stride is not None:
            preprocess["doc_stride"] = doc_stride
        if max_seq_len is not None:
            preprocess["max_seq_len"] = max_seq_len
        postprocess = {} if max_answer_len is None else {"max_answer_len": max_answer_len}
        return preprocess, {}, postprocess

    def preprocess(self, inputs: dict, doc_stride: int = 128, max_seq_len: int | None = None) -> dict:
        if not isinstance(inputs, dict) or not {"question", "context"} <= set(inputs):
            raise ValueError(f"Each input must be a dict with 'question' and 'context', got {inputs!r}.")
        question, context = inputs["question"], inputs["context"]
        if not question.strip() or not context.strip():
            raise ValueError("question and context must be non-empty strings.")
        max_seq_len = max_seq_len or min(self.tokenizer.model_max_length, 384)
        if doc_stride >= max_seq_len:
            raise ValueError(f"doc_stride={doc_stride} must be smaller than max_seq_len={max_seq_len}.")
        encoded = self.tokenizer(
            question,
            context,
            truncation="only_second",
            max_length=max_seq_len,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=True,
            padding_side="right",
            return_tensors="pt",
        )
        context_mask = torch.tensor(
            [[sequence == 1 for sequence in encoded.sequence_ids(i)] for i in range(len(encoded["input_ids"]))]
        )
        return {
            "model_inputs": {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]},
            "offsets": encoded["offset_mapping"],
            "context_mask": context_mask,
            "context": context,
        }

    def _forward(self, inputs: dict) -> dict:
        outputs = self.model(**inputs["model_inputs"])
        return {**inputs, "start_logits": outputs.start_logits, "end_logits": outputs.end_logits}

    def postprocess(self, outputs: dict, max_answer_len: int = 30) -> dict:
        window, first, last, score = best_answer_span(
            outputs["start_logits"], outputs["end_logits"], outputs["context_mask"].to(outputs["start_logits"].device),
            max_answer_len,
        )  # fmt: skip
        context = outputs["context"]
        start, end = (int(v) for v in (outputs["offsets"][window, first, 0], outputs["offsets"][window, last, 1]))
        start = _skip_leading_space(context, start, end)
        return {"score": score, "start": start, "end": end, "answer": context[start:end]}


def register_pipelines() -> None:
    """Add the `extractive-question-answering` task to transformers' pipeline registry (its public extension API)."""
    PIPELINE_REGISTRY.register_pipeline(
        QA_TASK, pipeline_class=ExtractiveQuestionAnsweringPipeline, pt_model=AutoModelForQuestionAnswering, type="text"
    )


__all__ = [
    "ExtractiveQuestionAnsweringPipeline",
    "GemmaEncoderTokenClassificationPipeline",
    "QA_TASK",
    "best_answer_span",
    "register_pipelines",
]

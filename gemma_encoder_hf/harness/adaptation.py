# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Adaptation: teach a converted encoder to use bidirectional context, on unlabelled text only.

A causally pretrained Gemma switched to bidirectional attention sees a distribution it was never trained on; a short
task fine-tune has to absorb that shift and the task at once. This module runs a short self-supervised stage first,
as LLM2Vec does: masked next-token prediction (MNTP: token i is predicted from the state at i - 1, so the decoder's
own LM head keeps its job) or plain masked language modelling (MLM: from the state at i), through the Trainer, with
full weights or LoRA. The result is an encoder folder that every GemmaEncoder task class loads.

Owns: reading unlabelled texts (`read_texts`, `default_corpus`), the masking collator settings, the `adapt` loop and
the `adaptation.json` record written next to the weights.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoConfig,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from ..modeling.configuration_gemma_encoder import GemmaEncoderConfig
from ..integrations.conversion import from_decoder, load_decoder_tokenizer
from .data import _read_rows, map_with_tokenizer, resolve_data_root
from .errors import InvalidArgumentError, PathNotFoundError
from ..modeling.modeling_gemma_encoder import GemmaEncoderForMaskedLM, GemmaEncoderPreTrainedModel

# The generic corpus a user without their own unlabelled text can adapt on offline: 5,000 MS MARCO web passages
# (general English, unlike SciFact's biomedical abstracts), read from the project's data folder.
DEFAULT_CORPUS = Path("msmarco-dl19-subset") / "corpus.jsonl"
DEFAULT_CORPUS_COLUMN = "text"

# Every projection of the Gemma block: adapting attention alone leaves the MLPs tuned to causal inputs.
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# How a selected token is corrupted: "mask" = always `<mask>` (LLM2Vec's choice for decoders), "bert" = 80% `<mask>`,
# 10% random token, 10% unchanged.
MASKING_STRATEGIES = {"mask": (1.0, 0.0), "bert": (0.8, 0.1)}


@dataclass
class AdaptationRecord:
    """What was run and what it cost; written to `<output_dir>/adaptation.json`."""

    source: str
    objective: str
    masking: str
    mask_rate: float
    steps: int
    learning_rate: float
    batch_size: int
    max_length: int
    lora_rank: int | None
    train_embeddings: bool
    attention: str
    bidirectional_layers: int | None
    num_texts: int
    num_texts_seen: int
    seed: int
    device: str
    train_seconds: float
    seconds_per_step: float
    mean_loss: float
    first_logged_loss: float | None
    last_logged_loss: float | None


# ----------------------------------------------------------------------------------------------------------------------
# Unlabelled text
# ----------------------------------------------------------------------------------------------------------------------


def read_texts(path: str | os.PathLike, column: str | None = None) -> list[str]:
    """Texts of a file: `.txt` (one text per line), or a `.tsv`/`.csv`/`.jsonl` table and its `column`.

    Blank texts are dropped; nothing else is filtered or deduplicated.
    """
    path = Path(path)
    if not path.is_file():
        raise PathNotFoundError("path", f"{path} does not exist.")
    if path.suffix.lower() == ".txt" and column is None:
        texts = path.read_text(encoding="utf-8").splitlines()
    else:
        rows = _read_rows(path)
        if not rows:
            raise ValueError(f"{path} has no rows.")
        if column is None:
            raise InvalidArgumentError(
                "column", f"{path} is a table: name the column that holds the text (its columns: {list(rows[0])})."
            )
        if column not in rows[0]:
            raise InvalidArgumentError(
                "column", f"{path} has no column {column!r}; its columns are {list(rows[0])}."
            )
        texts = [str(row[column]) for row in rows]
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise ValueError(f"{path} holds no non-empty text.")
    return texts


def default_corpus(data_root: str | os.PathLike | None = None) -> list[str]:
    """The offline generic corpus: MS MARCO passages from `<data_root>/msmarco-dl19-subset/corpus.jsonl`.

    `data_root` defaults to the environment variable GEMMA_ENCODER_DATA.
    """
    path = resolve_data_root(data_root) / DEFAULT_CORPUS
    if not path.is_file():
        raise PathNotFoundError(
            "data_root", f"The data root holds no default adaptation corpus ({path} does not exist)."
        )
    return read_texts(path, DEFAULT_CORPUS_COLUMN)


# ----------------------------------------------------------------------------------------------------------------------
# Model and tokenizer
# ----------------------------------------------------------------------------------------------------------------------


def _is_encoder_folder(source: str | os.PathLike) -> bool:
    config_path = Path(source) / "config.json"
    if not config_path.is_file():
        return False
    return json.loads(config_path.read_text()).get("model_type") == GemmaEncoderConfig.model_type


def load_for_adaptation(
    source: str | os.PathLike | GemmaEncoderPreTrainedModel, **overrides
) -> GemmaEncoderForMaskedLM:
    """A GemmaEncoderForMaskedLM from a decoder source, an encoder folder, or an encoder model in memory.

    An encoder's head (`score`, pooler) is not carried over: adaptation trains the backbone only, and the task
    model built on the result initialises its own head. A model in memory is rebuilt from a copy of its config with
    the overrides rather than edited: layers read settings such as the attention window when they are constructed.
    """
    if isinstance(source, GemmaEncoderPreTrainedModel):
        config = GemmaEncoderConfig(**{**source.config.to_dict(), **overrides})
        model = GemmaEncoderForMaskedLM(config)
        backbone = source.model if hasattr(source, "model") else source
        missing = model.model.load_state_dict(backbone.state_dict(), strict=False).missing_keys
        if missing:
            raise ValueError(f"The given encoder lacks backbone weights {missing[:3]}.")
        model.tie_weights()
        return model.to(next(source.parameters()).dtype)
    if _is_encoder_folder(source):
        config = AutoConfig.from_pretrained(source, **overrides)
        return GemmaEncoderForMaskedLM.from_pretrained(source, config=config, dtype=torch.float32)
    return from_decoder(GemmaEncoderForMaskedLM, source, dtype=torch.float32, **overrides)


def load_tokenizer(source: str | os.PathLike, max_position_embeddings: int) -> PreTrainedTokenizerBase:
    """The source's tokenizer; a decoder's gets the encoder conventions (pair template, length limit)."""
    if _is_encoder_folder(source):
        return AutoTokenizer.from_pretrained(source)
    return load_decoder_tokenizer(source, max_position_embeddings)


# ----------------------------------------------------------------------------------------------------------------------
# Adaptation
# ----------------------------------------------------------------------------------------------------------------------


def masking_collator(
    tokenizer: PreTrainedTokenizerBase, mask_rate: float, masking: str = "mask", seed: int | None = None
) -> DataCollatorForLanguageModeling:
    """transformers' MLM collator with Gemma's `<mask>` token; special tokens (`<bos>`, padding) are never masked.

    The labels it makes are the original token ids at the masked positions, for MNTP as for MLM: the MNTP shift
    (predict token i from position i - 1) happens inside `GemmaEncoderForMaskedLM`, so one collator serves both.
    """
    if tokenizer.mask_token_id is None:
        raise ValueError(
            f"{type(tokenizer).__name__} has no mask token; Gemma tokenizers define `<mask>` (id 4). Set "
            "tokenizer.mask_token to a token of the vocabulary."
        )
    if masking not in MASKING_STRATEGIES:
        raise ValueError(f"masking={masking!r} is not supported; allowed values: {list(MASKING_STRATEGIES)}.")
    if not 0.0 < mask_rate < 1.0:
        raise ValueError(f"mask_rate={mask_rate} must be in (0, 1).")
    mask_prob, random_prob = MASKING_STRATEGIES[masking]
    return DataCollatorForLanguageModeling(
        tokenizer,
        mlm=True,
        mlm_probability=mask_rate,
        mask_replace_prob=mask_prob,
        random_replace_prob=random_prob,
        pad_to_multiple_of=8,
        seed=seed,
    )


def lora_config(rank: int = 16):
    """The default adaptation LoRA: every projection of the block, alpha = 2 x rank, dropout 0.05."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05, target_modules=list(DEFAULT_LORA_TARGETS))


def _trainable_setup(model: GemmaEncoderForMaskedLM, lora, train_embeddings: bool):
    """Freeze the tied embedding/head unless asked, or wrap the model with LoRA; returns (model to train, rank)."""
    if lora:
        from peft import get_peft_model

        if lora is True or isinstance(lora, int):
            lora = lora_config() if lora is True else lora_config(lora)
        return get_peft_model(model, lora), lora.r
    # The embedding is 63% of Gemma 3 270M's weights and doubles as the output head: freezing it keeps the
    # vocabulary geometry both directions rely on and makes a full-weight step markedly cheaper.
    model.model.embed_tokens.weight.requires_grad_(train_embeddings)
    return model, None


def adapt(
    source: str | os.PathLike | GemmaEncoderPreTrainedModel,
    texts: Sequence[str] | Iterable[str],
    output_dir: str | os.PathLike,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    objective: str = "mntp",
    masking: str = "mask",
    mask_rate: float = 0.2,
    steps: int = 150,
    learning_rate: float = 1e-4,
    batch_size: int = 32,
    max_length: int = 64,
    lora=False,
    train_embeddings: bool = False,
    attention: str = "bidirectional",
    bidirectional_layers: int | None = None,
    warmup_ratio: float = 0.1,
    seed: int = 0,
    bf16: bool | None = None,
    device: str | None = None,
    logging_steps: int = 10,
) -> Path:
    """Adapt an encoder to bidirectional attention on unlabelled `texts` and save it to `output_dir`.

    Args:
        source: a decoder (folder, Hub id, `.gguf`, `"embedded"`), a GemmaEncoder folder, or a GemmaEncoder model.
        texts: unlabelled texts, e.g. the task's own training sentences without labels, or `default_corpus()`.
        output_dir: where the adapted `GemmaEncoderForMaskedLM` (config, weights, tokenizer) and `adaptation.json`
            go. Any GemmaEncoder class loads it: `GemmaEncoderForSequenceClassification.from_pretrained(output_dir,
            num_labels=2)` takes the adapted backbone and initialises a new head.
        tokenizer: needed when `source` is a model in memory; otherwise loaded from `source`.
        objective: `"mntp"` (masked next-token prediction, default) or `"mlm"`; stored as
            `config.masked_lm_objective`, so the saved model's `fill-mask` matches what it was trained for.
        masking: `"mask"` (every selected token becomes `<mask>`) or `"bert"` (80/10/10).
        mask_rate: fraction of (non-special) tokens selected for prediction.
        steps: optimizer steps (one batch of `batch_size` texts each; the texts are cycled as needed, so the run
            sees `min(steps * batch_size, len(texts))` distinct texts: `num_texts_seen` in `adaptation.json`).
        learning_rate: peak learning rate of a linear warmup + linear decay schedule.
        batch_size / max_length: texts per step, and tokens per text (longer texts are truncated).
        lora: `False` or 0 (train all backbone weights), `True` (rank-16 LoRA on every projection), a rank, or a
            `peft.LoraConfig`. LoRA weights are merged before saving, so the result is a plain encoder.
        train_embeddings: also train the tied input embedding / output head (full-weight mode only).
        attention: the attention the encoder is adapted (and later used) with.
        bidirectional_layers: with bidirectional attention, only the top this many layers attend both ways during
            adaptation (`GemmaEncoderConfig.bidirectional_layers`), as the fine-tune that follows will have them;
            None: every layer. Saved in the adapted encoder's config.
        seed: seeds masking, shuffling and LoRA init.
        bf16: mixed precision; defaults to True on a CUDA GPU with bf16 support, False on CPU.
        device: `"cpu"` or `"cuda"`; None: CUDA when available.

    Returns:
        `output_dir` as a Path.
    """
    if objective not in ("mntp", "mlm"):
        raise ValueError(f"objective={objective!r} is not supported; use 'mntp' or 'mlm'.")
    if device not in (None, "cpu", "cuda"):
        raise InvalidArgumentError("device", f"device={device!r} is not supported; use 'cpu', 'cuda' or None.")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps ({steps}) and batch_size ({batch_size}) must be >= 1.")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("adapt() needs at least one non-empty text.")

    model = load_for_adaptation(
        source, masked_lm_objective=objective, attention=attention, bidirectional_layers=bidirectional_layers
    )
    if tokenizer is None:
        if isinstance(source, torch.nn.Module):
            raise ValueError("adapt() got a model in memory: pass its tokenizer too (tokenizer=...).")
        tokenizer = load_tokenizer(source, model.config.max_position_embeddings)

    dataset = map_with_tokenizer(
        Dataset.from_dict({"text": texts}),
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        tokenizer,
        settings=(max_length,),
        batched=True,
        remove_columns=["text"],
    )
    train_model, lora_rank = _trainable_setup(model, lora, train_embeddings)
    cuda = torch.cuda.is_available() and device != "cpu"
    if device == "cuda" and not cuda:
        raise InvalidArgumentError("device", "device='cuda' was asked for but torch sees no CUDA GPU.")
    if bf16 is None:
        bf16 = cuda and torch.cuda.is_bf16_supported()

    with tempfile.TemporaryDirectory(prefix="gemma-encoder-adapt-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=int(round(warmup_ratio * steps)),
            weight_decay=0.0,
            logging_steps=max(1, min(logging_steps, steps)),
            save_strategy="no",
            report_to=[],
            bf16=bf16,
            use_cpu=not cuda,
            seed=seed,
            data_seed=seed,
            dataloader_drop_last=len(dataset) >= batch_size,
        )
        trainer = Trainer(
            model=train_model,
            args=args,
            train_dataset=dataset,
            data_collator=masking_collator(tokenizer, mask_rate, masking, seed=seed),
        )
        start = time.perf_counter()
        mean_loss = trainer.train().training_loss
        train_seconds = time.perf_counter() - start
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    if lora:
        model = train_model.merge_and_unload()
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    record = AdaptationRecord(
        source=str(source) if not isinstance(source, torch.nn.Module) else type(source).__name__,
        objective=objective,
        masking=masking,
        mask_rate=mask_rate,
        steps=steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        max_length=max_length,
        lora_rank=lora_rank,
        train_embeddings=train_embeddings,
        attention=attention,
        bidirectional_layers=bidirectional_layers,
        num_texts=len(texts),
        num_texts_seen=min(steps * batch_size, len(texts)),
        seed=seed,
        device="cuda" if cuda else "cpu",
        train_seconds=round(train_seconds, 2),
        seconds_per_step=round(train_seconds / steps, 3),
        mean_loss=round(mean_loss, 4),
        first_logged_loss=losses[0] if losses else None,
        last_logged_loss=losses[-1] if losses else None,
    )
    (output_dir / "adaptation.json").write_text(json.dumps(asdict(record), indent=2) + "\n")
    return output_dir

# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Fine-tuning through `transformers.Trainer`: the one entry point used by the examples, benchmarks and experiments.

Owns: tokenising task datasets, the optimizer (optionally a separate learning rate for the freshly initialised head,
as in the paper), the Trainer arguments (per-task best-checkpoint metric, bf16 autocast on CUDA, dynamic padding),
the ranking-group collator and a head started from label words (`init_head_from_label_words`). Works for any sequence
classifier, including transformers' native ones (baselines).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, Value
from transformers import (
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)

from ..integrations.conversion import convert
from .data import REGRESSION, TaskSpec, map_with_tokenizer
from .evaluation import compute_metrics_fn
from ..modeling.modeling_gemma_encoder import ranking_loss

# Parameters under these top-level names are the task head (and its pooler): new weights, which the paper trains with
# a larger learning rate than the pretrained backbone. `score` is also the head name of transformers' own classifiers;
# `classifier` and `qa_outputs` are the token-level heads' (and BERT's) names.
HEAD_PREFIXES = ("score.", "classifier.", "qa_outputs.")


@dataclass
class TrainingConfig:
    """Budget and optimisation settings of one fine-tuning run.

    Attributes:
        output_dir: checkpoints (and the final model when `save_model`) go here.
        epochs: passes over the training set (ignored when `max_steps` > 0).
        max_steps: stop after this many optimizer steps when > 0.
        batch_size: training examples per step (ranking: query groups per step).
        eval_batch_size: examples per evaluation forward pass.
        learning_rate: backbone learning rate.
        head_learning_rate: learning rate of the new head (`score.*`: pooler and MLP); `learning_rate` when
            unset. The defaults (5e-5 backbone, 1e-3 head) are the recipe measured in docs/adaptation.md; the head
            starts from random weights, the backbone from pretrained ones, hence the larger head step.
        weight_decay: AdamW weight decay (not applied to biases and norms).
        layer_lr_decay: layer-wise learning-rate decay. Decoder layer i of L trains at
            `learning_rate * layer_lr_decay ** (L - 1 - i)`, the token embedding (when trained) at `** L`, the final
            norm at `learning_rate` and the head at `head_learning_rate`. 1.0 (the default) gives every backbone weight
            `learning_rate`; below 1, the lower layers, which carry the most general features, move less than the top
            ones.
        warmup_ratio: fraction of the steps spent in linear warmup.
        max_length: tokens per example (pairs are truncated longest-first).
        seed: seed of the data order and dropout. The Trainer applies it once the model exists, so a new head's
            initialisation is seeded where the model is built: `load_task_model(..., seed=...)`.
        eval_strategy: "epoch", "steps" or "no"; with "steps", every `eval_steps` steps.
        checkpoints: evaluate and save a checkpoint every epoch (or `eval_steps`) and reload the best one (by the
            task's main metric) at the end. Off: no evaluation during training, the final weights are kept and
            evaluated once, and nothing large is written (the CPU benchmark setting).
        freeze_embeddings: keep the 262k x hidden token embedding fixed (the default, as in every measured recipe).
            It is 60% of Gemma 3 270M's weights, so freezing it cuts optimizer memory and step time, and most of its
            rows never occur in a small labelled set; set False to train it too.
        gradient_checkpointing: trade compute for activation memory (long inputs, large models).
        device: "cpu", "cuda" or None (CUDA when available).
        bf16: bf16 autocast (mixed precision, fp32 master weights); None = on for CUDA with bf16 support. Never fp16:
            Gemma 3 overflows in fp16.
        logging_steps: loss logging interval.
        show_progress_bar: tqdm progress bars.
        extra_args: any other `TrainingArguments` field (e.g. `{"dataloader_num_workers": 4}`); applied last.
    """

    output_dir: str | Path = "runs/finetune"
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16
    eval_batch_size: int = 32
    learning_rate: float = 5e-5
    head_learning_rate: float | None = 1e-3
    weight_decay: float = 0.01
    layer_lr_decay: float = 1.0
    warmup_ratio: float = 0.1
    max_length: int = 128
    seed: int = 0
    eval_strategy: str = "epoch"
    eval_steps: int | None = None
    checkpoints: bool = True
    freeze_embeddings: bool = True
    gradient_checkpointing: bool = False
    device: str | None = None
    bf16: bool | None = None
    logging_steps: int = 10
    show_progress_bar: bool = True
    extra_args: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ValueError(f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}.")

    def resolved_device(self) -> str:
        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def use_bf16(self) -> bool:
        if self.bf16 is not None:
            return self.bf16
        return self.resolved_device() == "cuda" and torch.cuda.is_bf16_supported()


@dataclass
class FinetuneResult:
    """What a fine-tuning run returns: the trained model, its validation metrics and timings."""

    model: PreTrainedModel
    trainer: Trainer
    metrics: dict[str, float]
    train_seconds: float
    eval_seconds: float
    train_examples: int


def tokenize_dataset(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, task: TaskSpec, max_length: int) -> Dataset:
    """Dataset(text, [text_pair], label) -> input_ids, attention_mask, labels (unpadded; the collator pads per batch).

    Pairs go through the tokenizer's pair template (`<bos> A <eos> B` for converted encoders).
    """
    if task.is_pair and "text_pair" not in dataset.column_names:
        raise ValueError(f"Task {task.name!r} is a sentence-pair task but the dataset has no 'text_pair' column.")

    def encode(batch: dict) -> dict:
        pairs = batch["text_pair"] if task.is_pair else None
        return tokenizer(batch["text"], pairs, truncation="longest_first", max_length=max_length)

    encoded = map_with_tokenizer(
        dataset, encode, tokenizer, settings=(task.name, task.is_pair, max_length), batched=True,
        remove_columns=[c for c in dataset.column_names if c != "label"],
    )
    encoded = encoded.rename_column("label", "labels")
    if task.problem_type == REGRESSION:
        # float64 labels would reach MSE as double tensors; models compute in fp32.
        encoded = encoded.cast_column("labels", Value("float32"))
    return encoded


def build_optimizer(model: PreTrainedModel, config: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW with groups by {head, backbone depth} x {decayed, not decayed (biases, norms, probes)}.

    The head trains at `head_learning_rate`; a backbone weight at `learning_rate`, scaled by `layer_lr_decay` per
    decoder layer above it (`_layer_lr_scale`).
    """
    head_lr = config.head_learning_rate or config.learning_rate
    # Depth counts every layer, trained or frozen, so freezing the top layers does not shift the others' rates.
    num_layers = 1 + max((_layer_index(name) for name, _ in model.named_parameters()), default=-1)
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, param in named:
        if name.startswith(HEAD_PREFIXES):
            lr = head_lr
        else:
            lr = config.learning_rate * _layer_lr_scale(name, num_layers, config.layer_lr_decay)
        decay = param.ndim >= 2 and "norm" not in name and "probes" not in name
        groups.setdefault((lr, decay), []).append(param)
    param_groups = [
        {"params": params, "lr": lr, "weight_decay": config.weight_decay if decay else 0.0}
        for (lr, decay), params in groups.items()
    ]
    return torch.optim.AdamW(param_groups, lr=config.learning_rate)


# `model.layers.7.mlp...` in ours and in transformers' Gemma classifiers; `base_model.model.model.layers.7...` under
# PEFT.
_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _layer_index(name: str) -> int:
    """The decoder layer a parameter belongs to, or -1 for the embedding, the final norm and anything else."""
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) if match else -1


def _layer_lr_scale(name: str, num_layers: int, decay: float) -> float:
    index = _layer_index(name)
    if index >= 0:
        return decay ** (num_layers - 1 - index)
    if "embed" in name:
        return decay**num_layers
    return 1.0  # the final norm sits above the top layer


def training_arguments(config: TrainingConfig, *, main_metric: str | None, evaluate: bool) -> TrainingArguments:
    device = config.resolved_device()
    keep_best = config.checkpoints and evaluate and config.eval_strategy != "no" and main_metric is not None
    # Without checkpoints nothing can be restored, so evaluating during training would only cost time: the caller
    # evaluates the final weights once.
    eval_strategy = config.eval_strategy if keep_best else "no"
    kwargs = dict(
        output_dir=str(config.output_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type="linear",
        eval_strategy=eval_strategy,
        eval_steps=config.eval_steps,
        save_strategy=eval_strategy,
        save_only_model=True,
        save_total_limit=1 if keep_best else None,
        load_best_model_at_end=keep_best,
        metric_for_best_model=main_metric if keep_best else None,
        greater_is_better=True if keep_best else None,
        logging_steps=config.logging_steps,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.use_bf16(),
        use_cpu=device == "cpu",
        activation_checkpointing=config.gradient_checkpointing,
        report_to="none",
        disable_tqdm=not config.show_progress_bar,
        dataloader_pin_memory=device == "cuda",
    )
    kwargs.update(config.extra_args)
    return TrainingArguments(**kwargs)


def _prepare_model(model: PreTrainedModel, config: TrainingConfig) -> None:
    if config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)


def finetune_classifier(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: TaskSpec,
    train_dataset: Dataset,
    eval_dataset: Dataset | None,
    config: TrainingConfig,
) -> FinetuneResult:
    """Fine-tune a sequence classifier/regressor on Dataset(text, [text_pair], label) and score it on `eval_dataset`.

    With `config.checkpoints` the checkpoint with the best `task.main_metric` on `eval_dataset` is restored at the end.
    Returned metrics are the task's metrics on `eval_dataset` (without the `eval_` prefix), plus `loss`.
    """
    if model.config.num_labels != task.num_labels:
        raise ValueError(
            f"The model has num_labels={model.config.num_labels} but task {task.name!r} needs {task.num_labels}; "
            f"build it with {task.model_kwargs()}."
        )
    _prepare_model(model, config)
    train = tokenize_dataset(train_dataset, tokenizer, task, config.max_length)
    evaluation = None
    if eval_dataset is not None:
        evaluation = tokenize_dataset(eval_dataset, tokenizer, task, config.max_length)
    trainer = Trainer(
        model=model,
        args=training_arguments(config, main_metric=task.main_metric, evaluate=evaluation is not None),
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics_fn(task),
        optimizers=(build_optimizer(model, config), None),
    )
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    metrics, eval_seconds = {}, 0.0
    if evaluation is not None:
        started = time.perf_counter()
        raw = trainer.evaluate()
        eval_seconds = time.perf_counter() - started
        wanted = (*task.metrics, "loss")
        metrics = {k.removeprefix("eval_"): float(v) for k, v in raw.items() if k.removeprefix("eval_") in wanted}
    return FinetuneResult(trainer.model, trainer, metrics, train_seconds, eval_seconds, len(train))


@dataclass
class RankingCollator:
    """Flattens a batch of ranking groups (query, documents, labels) into consecutive (query, document) rows.

    The ranking losses read a batch as whole groups of `ranking_group_size` rows, positive first; Trainer shuffles
    groups, never rows inside a group.
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int = 256

    def __call__(self, groups: list[dict]) -> dict[str, torch.Tensor]:
        queries = [g["query"] for g in groups for _ in g["documents"]]
        documents = [d for g in groups for d in g["documents"]]
        batch = self.tokenizer(
            queries,
            documents,
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch["labels"] = torch.tensor([label for g in groups for label in g["labels"]], dtype=torch.float32)
        return batch


def _ranking_loss_fn(kind: str, group_size: int):
    def compute(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        return ranking_loss(outputs.logits[:, 0], labels.to(outputs.logits.device), kind, group_size)

    return compute


def finetune_reranker(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    groups: Dataset,
    config: TrainingConfig,
) -> FinetuneResult:
    """Train a `GemmaEncoderForRanking` on groups from `gemma_encoder_hf.data.ranking_groups`.

    The loss is `model.config.ranking_loss` (listwise for models without that field, e.g. transformers' native
    one-label classifiers used as baselines), computed here on the model's scores, so every model trains with the
    same objective. Reranking quality is measured over BM25 candidates with `evaluation.evaluate_reranker`
    afterwards, not inside the Trainer loop; `metrics` holds the final training loss.
    """
    group_size = len(groups[0]["documents"])
    expected = getattr(model.config, "ranking_group_size", group_size)
    if group_size != expected:
        raise ValueError(
            f"The training groups hold {group_size} documents but model.config.ranking_group_size={expected}; build "
            "the groups with the model's group size."
        )
    _prepare_model(model, config)
    args = training_arguments(config, main_metric=None, evaluate=False)
    args.remove_unused_columns = False  # the collator needs the raw query/documents columns
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=groups,
        data_collator=RankingCollator(tokenizer, config.max_length),
        processing_class=tokenizer,
        optimizers=(build_optimizer(model, config), None),
        compute_loss_func=_ranking_loss_fn(getattr(model.config, "ranking_loss", "listwise"), group_size),
    )
    started = time.perf_counter()
    output = trainer.train()
    return FinetuneResult(
        trainer.model, trainer, {"train_loss": float(output.training_loss)}, time.perf_counter() - started, 0.0,
        len(groups),
    )


def encoder_dir(source: str | Path = "embedded", cache_dir: str | Path = "runs/converted") -> Path:
    """A folder holding a GemmaEncoder and its prepared tokenizer: `source` itself when it is one, else the
    conversion of the decoder `source` under `cache_dir` (made on first use; dequantising a GGUF takes ~30 s)."""
    folder = Path(source)
    config_file = folder / "config.json"
    if config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == "gemma_encoder":
        return folder
    folder = Path(cache_dir) / re.sub(r"[^A-Za-z0-9_.-]+", "_", str(source)).strip("_")
    if (folder / "config.json").is_file():
        return folder
    # Convert into a staging folder beside the entry and rename it into place: save_pretrained writes config.json
    # before the weights, so converting in place would leave an interrupted conversion looking finished, and two
    # processes converting at once would write over each other's files.
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        convert(source, staging)
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / "config.json").is_file():
                raise
            # Another process renamed its conversion into place first: use that one.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def capped_bidirectional_layers(folder: str | Path, layers: int | None) -> int | None:
    """A recipe's `bidirectional_layers` (top layers attending both ways) for the GemmaEncoder in `folder`: a
    backbone with fewer layers turns all of them bidirectional. None (every layer) stays None."""
    if layers is None:
        return None
    return min(layers, json.loads((Path(folder) / "config.json").read_text())["num_hidden_layers"])


def load_task_model(
    model_class: type[PreTrainedModel],
    source: str | Path = "embedded",
    *,
    cache_dir: str | Path = "runs/converted",
    seed: int | None = 0,
    **overrides,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A task model (`GemmaEncoderForSequenceClassification`, `...ForRanking`) and its tokenizer, from a saved
    encoder or a decoder.

    A folder holding a GemmaEncoder (`model_type="gemma_encoder"`) loads directly. Any decoder source (`"embedded"`,
    a GGUF file, a decoder folder or Hub id) is converted once to a base encoder under `cache_dir` and reused by
    later runs (`encoder_dir`). `overrides` are config fields: task labels and encoder knobs.
    The backbone weights come from the checkpoint; the head is new unless the folder already holds this class's head.
    A new head is drawn from `seed` (`transformers.set_seed`; pass the run's `TrainingConfig.seed`): the Trainer seeds
    only what happens after the model exists, so without it two runs of the same command start from different heads.
    `None` leaves the random state as it is.
    """
    folder = encoder_dir(source, cache_dir)
    if seed is not None:
        set_seed(seed)
    return model_class.from_pretrained(folder, **overrides), AutoTokenizer.from_pretrained(folder)


def init_head_from_label_words(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, label_words: list[str] | tuple[str, ...]
) -> None:
    """Start a classifier's single linear layer as the decoder's language-model head cut down to one word per label
    (label i scores `label_words[i]`, e.g. `[" negative", " positive"]`), so that before any step the classifier
    predicts what the decoder would say next: prompt-based fine-tuning, with the prompt in the tokenizer's suffix
    (`prepare_tokenizer(suffix=...)`) and the last token pooled.

    For GemmaEncoderForSequenceClassification with `classifier_hidden_size=0` (its `score.out_proj`) or
    transformers' `Gemma3TextForSequenceClassification` (its `score`). The weights are the rows of the tied token
    embedding, which is Gemma's output layer; the bias (if any) starts at 0. Each word must be one token.
    """
    head = model.score
    if hasattr(head, "out_proj"):
        if head.dense is not None:
            raise ValueError("label words set a single linear head: build the model with classifier_hidden_size=0.")
        head = head.out_proj
    if len(label_words) != head.out_features:
        raise ValueError(f"{len(label_words)} label words for a head with {head.out_features} outputs.")
    ids = [tokenizer(word, add_special_tokens=False)["input_ids"] for word in label_words]
    if any(len(word_ids) != 1 for word_ids in ids):
        pieces = {word: tokenizer.convert_ids_to_tokens(word_ids) for word, word_ids in zip(label_words, ids)}
        raise ValueError(f"each label word must be one token of the vocabulary: {pieces}")
    with torch.no_grad():
        head.weight.copy_(model.get_input_embeddings().weight[[word_ids[0] for word_ids in ids]])
        if head.bias is not None:
            head.bias.zero_()


"""One optimizer step of each GemmaEncoder head with transformers' Trainer, shared by test_trainer_contracts.py and
the two-process workers it launches (ddp_step_worker.py, fsdp_step_worker.py).

Each case is a tiny model and an 8-row batch whose loss depends on how the rows are split: micro-batches hold
different numbers of masked-LM and token-classification labels, and ranking rows come in whole query groups. Plain
SGD with a constant learning rate and no clipping makes the parameter update proportional to the gradient, so two ways
of splitting the same 8 rows (one batch of 8, 2 x 4 with gradient accumulation, 2 processes x 4) must take the same
step.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from conftest import tiny_encoder_config
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from gemma_encoder_hf import (
    GemmaEncoderForMaskedLM,
    GemmaEncoderForQuestionAnswering,
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderForTokenClassification,
)

ROWS, LENGTH, VOCAB = 8, 10, 128
LEARNING_RATE = 0.5  # plain SGD: the update is this times the gradient


@dataclass(frozen=True)
class Case:
    """A head, its config and its targets: `labels`, or (question answering) a dict of target columns."""

    model_class: type
    config: dict
    labels: list | dict | None


def _masked_lm_labels() -> list:
    """Token labels: one per row in rows 0-3, three per row in rows 4-7 (never on the first token, which masked
    next-token prediction cannot predict), so that micro-batches of 4 hold 4 and 12 labels."""
    ids = _input_ids()
    labels = torch.full((ROWS, LENGTH), -100)
    for row in range(ROWS):
        for position in [3] if row < 4 else [2, 5, 7]:
            labels[row, position] = ids[row, position]
    return labels.tolist()


CASES = {
    "sequence_classification": Case(GemmaEncoderForSequenceClassification, {"num_labels": 3}, [0, 2, 1, 1, 0, 2, 2, 1]),
    "regression": Case(
        GemmaEncoderForSequenceClassification, {"num_labels": 1}, [0.5, -1.0, 2.0, 0.0, 1.5, 0.2, -0.3, 1.0]
    ),
    "multi_label": Case(
        GemmaEncoderForSequenceClassification,
        {"num_labels": 2, "problem_type": "multi_label_classification"},
        [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]] * 2,
    ),
    "ranking_pointwise": Case(GemmaEncoderForRanking, {"ranking_loss": "pointwise"}, [1, 0, 0, 1, 0, 0, 1, 0]),
    # Two query groups of 4 documents with graded labels: 3 better/worse pairs in the first group, 5 in the second.
    "ranking_pairwise": Case(
        GemmaEncoderForRanking, {"ranking_loss": "pairwise", "ranking_group_size": 4}, [1, 0, 0, 0, 2, 1, 0, 0]
    ),
    "ranking_listwise": Case(
        GemmaEncoderForRanking, {"ranking_loss": "listwise", "ranking_group_size": 4}, [1, 0, 0, 0, 2, 1, 0, 0]
    ),
    "masked_lm": Case(GemmaEncoderForMaskedLM, {}, None),
    # One tagged token per row in rows 0-3, three in rows 4-7 (inside every row's length): micro-batches of 4 hold 4
    # and 12 targets.
    "token_classification": Case(
        GemmaEncoderForTokenClassification,
        {"num_labels": 3},
        [[(p % 3 if p in ([3] if row < 4 else [1, 2, 3]) else -100) for p in range(10)] for row in range(8)],
    ),
    "question_answering": Case(
        GemmaEncoderForQuestionAnswering,
        {},
        {"start_positions": [1, 2, 0, 3, 4, 1, 2, 0], "end_positions": [3, 5, 8, 3, 9, 2, 6, 4]},
    ),
}


def _input_ids() -> torch.Tensor:
    return torch.randint(3, VOCAB, (ROWS, LENGTH), generator=torch.Generator().manual_seed(0))


def dataset(name: str) -> Dataset:
    """8 rows, right-padded to different lengths."""
    lengths = [10, 7, 9, 4, 10, 6, 8, 5]
    attention_mask = [[1] * n + [0] * (LENGTH - n) for n in lengths]
    labels = CASES[name].labels if CASES[name].labels is not None else _masked_lm_labels()
    targets = labels if isinstance(labels, dict) else {"labels": labels}
    return Dataset.from_dict({"input_ids": _input_ids().tolist(), "attention_mask": attention_mask, **targets})


def model(name: str):
    case = CASES[name]
    torch.manual_seed(0)
    # Dropout off so that the steps are deterministic; the padded path pinned so that every split runs the same kernels.
    config = tiny_encoder_config(packed_execution="never", **case.config)
    return case.model_class(config)


def training_arguments(output_dir: Path, batch_size: int, accumulation: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,  # no clipping: it would hide a step of the wrong size
        train_sampling_strategy="sequential",  # ranking groups stay whole, splits are the same rows
        logging_steps=1,
        use_cpu=True,
        seed=0,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )


def trainer_step(name: str, output_dir: Path, batch_size: int, accumulation: int) -> tuple[torch.Tensor, Trainer]:
    """The parameter update (after - before, flattened) of one Trainer step, and the trainer."""
    encoder = model(name)
    before = torch.cat([p.detach().flatten().clone() for p in encoder.parameters()])
    trainer = Trainer(
        model=encoder, args=training_arguments(output_dir, batch_size, accumulation), train_dataset=dataset(name)
    )
    trainer.train()
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    return after - before, trainer


def plain_step(encoder: torch.nn.Module, data: Dataset, rows, world_size: int = 1) -> None:
    """The step `trainer_step` takes, without the Trainer, on `rows` of `data` (for models the Trainer cannot wrap, such
    as FSDP2-sharded ones on CPU): SGD at the same learning rate, and the Trainer's loss contract. A model that accepts
    loss kwargs gets the whole batch's `num_items_in_batch` and its loss times `world_size` (data-parallel gradients
    are averaged over processes); any other model's loss is the mean over its own rows."""
    batch = data.select(rows).with_format("torch")[:]
    kwargs = {}
    if encoder.accepts_loss_kwargs:
        kwargs["num_items_in_batch"] = int((data.with_format("torch")[:]["labels"] != -100).sum())
    loss = encoder(**batch, **kwargs).loss * (world_size if encoder.accepts_loss_kwargs else 1)
    loss.backward()
    torch.optim.SGD(encoder.parameters(), lr=LEARNING_RATE).step()


def relative_difference(update: torch.Tensor, reference: torch.Tensor) -> float:
    return float((update - reference).norm() / reference.norm())

"""A few Trainer steps of a tiny GemmaEncoder classifier, run by test_training.py under
`accelerate launch --multi_gpu --num_processes 2` with no visible GPU (DDP on CPU over gloo).

Each rank writes its final weights (`rank<k>.pt`), and rank 0 the initial ones (`init.pt`): the test checks that the
two ranks, which trained on different shards of the data, end with identical weights that differ from the start.
"""

import argparse
from pathlib import Path

import torch
from conftest import leave_process_group, tiny_encoder_config
from datasets import Dataset
from transformers import Trainer, TrainingArguments
from transformers.training_args import ParallelMode

from gemma_encoder_hf import GemmaEncoderForSequenceClassification


def tiny_classifier() -> GemmaEncoderForSequenceClassification:
    config = tiny_encoder_config(pooling="attention", num_labels=2)
    return GemmaEncoderForSequenceClassification(config)


def toy_dataset(size: int = 64, length: int = 10) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 128, (size, length), generator=generator)
    labels = (input_ids[:, 1] % 2).tolist()  # learnable from the tokens, so the loss has a direction
    return Dataset.from_dict({"input_ids": input_ids.tolist(), "labels": labels})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", type=Path, required=True)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = tiny_classifier()
    training_args = TrainingArguments(
        output_dir=str(args.output_dir / "trainer"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        use_cpu=True,
        seed=0,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=toy_dataset())
    if trainer.args.process_index == 0:
        torch.save(model.state_dict(), args.output_dir / "init.pt")
    if trainer.args.parallel_mode != ParallelMode.DISTRIBUTED or trainer.args.world_size != 2:
        raise SystemExit(f"expected DDP over 2 processes, got {trainer.args.parallel_mode} x {trainer.args.world_size}")
    trainer.train()
    state = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    torch.save(state, args.output_dir / f"rank{trainer.args.process_index}.pt")
    leave_process_group()


if __name__ == "__main__":
    main()

"""One Trainer step of every head in trainer_step_cases.CASES, run by test_trainer_contracts.py under
`accelerate launch --multi_gpu --num_processes 2` with no visible GPU (DDP on CPU over gloo).

Each process takes 4 of the 8 rows; rank 0 writes the parameter update of each case (`<case>.pt`), which the test
compares with the step of one process on all 8 rows.
"""

import argparse
from pathlib import Path

import torch
from conftest import leave_process_group
from trainer_step_cases import CASES, trainer_step
from transformers.training_args import ParallelMode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", type=Path, required=True)
    args = parser.parse_args()
    for name in CASES:
        update, trainer = trainer_step(name, args.output_dir / "trainer", batch_size=4, accumulation=1)
        if trainer.args.parallel_mode != ParallelMode.DISTRIBUTED or trainer.args.world_size != 2:
            mode = f"{trainer.args.parallel_mode} x {trainer.args.world_size}"
            raise SystemExit(f"expected DDP over 2 processes, got {mode}")
        if trainer.args.process_index == 0:
            torch.save(update, args.output_dir / f"{name}.pt")
    leave_process_group()


if __name__ == "__main__":
    main()

"""One optimizer step of every head in trainer_step_cases.CASES with the model sharded by FSDP2 over 2 CPU processes,
run by test_trainer_contracts.py under `accelerate launch` (torchrun, gloo).

accelerate 1.15 turns its FSDP plugin on only for GPU-type process groups (`AcceleratorState` keeps `MULTI_CPU` for a
CPU run), so the model is sharded here the way accelerate's FSDP2 path does it on GPUs: `fully_shard` on every module
of a class named in `model._no_split_modules` (its `TRANSFORMER_BASED_WRAP` policy), then on the root. The step
follows the Trainer's loss contract: a model that accepts loss kwargs gets the global `num_items_in_batch` and its
loss is multiplied by the number of processes (FSDP averages gradients over them); any other model's loss is the
mean over its own rows. Each process takes 4 of the 8 rows; rank 0 gathers the full parameters and writes the update
of each case (`<case>.pt`, flattened in `named_parameters()` order, as trainer_step_cases.trainer_step does).
"""

import argparse
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import PartialState
from conftest import leave_process_group
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from trainer_step_cases import CASES, dataset, model, plain_step


def shard(encoder: torch.nn.Module) -> None:
    for module in encoder.modules():
        if type(module).__name__ in encoder._no_split_modules:
            fully_shard(module)
    fully_shard(encoder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", type=Path, required=True)
    args = parser.parse_args()
    state = PartialState(cpu=True)
    if state.num_processes != 2:
        raise SystemExit(f"expected 2 processes, got {state.num_processes}")
    for name in CASES:
        encoder = model(name)
        names = [n for n, _ in encoder.named_parameters()]
        before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
        shard(encoder)
        if not all(isinstance(p, DTensor) for p in encoder.parameters()):
            raise SystemExit(f"{name}: some parameters are not sharded")
        rows = range(4 * state.process_index, 4 * state.process_index + 4)
        plain_step(encoder, dataset(name), rows, world_size=state.num_processes)
        full = get_model_state_dict(encoder, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if state.is_main_process:
            torch.save(torch.cat([(full[n] - before[n]).flatten() for n in names]), args.output_dir / f"{name}.pt")
        dist.barrier()
    leave_process_group()


if __name__ == "__main__":
    main()

"""transformers' Trainer contracts of every head: the step and the logged loss do not depend on how a batch is split
(gradient accumulation, data-parallel processes).

The Trainer passes `num_items_in_batch` to a model that accepts loss kwargs and then leaves the gradient-accumulation
scaling to the model's loss; a model that accepted them but returned a batch mean trained with a GA-times larger step
(and a GA-times larger logged loss). See trainer_step_cases.py for the cases.
"""

import pytest
import torch
from conftest import launch_two_processes
from trainer_step_cases import CASES, dataset, model, plain_step, relative_difference, trainer_step

# fp32 sums in a different order: far below the 2x (100%) error of a step scaled twice.
TOLERANCE = 1e-6


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_accumulation_takes_the_step_of_the_whole_batch(name, tmp_path):
    whole, whole_trainer = trainer_step(name, tmp_path / "whole", batch_size=8, accumulation=1)
    accumulated, accumulated_trainer = trainer_step(name, tmp_path / "accumulated", batch_size=4, accumulation=2)

    assert relative_difference(accumulated, whole) <= TOLERANCE
    logged = [entry["loss"] for entry in (accumulated_trainer.state.log_history[0], whole_trainer.state.log_history[0])]
    assert logged[0] == pytest.approx(logged[1], rel=1e-5)


def test_two_processes_take_the_step_of_one_process_on_the_global_batch(tmp_path):
    launch_two_processes("ddp_step_worker.py", tmp_path)
    for name in CASES:
        whole, _ = trainer_step(name, tmp_path / "whole", batch_size=8, accumulation=1)
        distributed = torch.load(tmp_path / f"{name}.pt")
        assert relative_difference(distributed, whole) <= TOLERANCE, name


def test_fsdp2_sharded_step_over_two_processes_equals_the_one_process_step(tmp_path):
    """Training a model too large for one device: FSDP2 shards every GemmaEncoderLayer and the root across 2 processes
    (as accelerate's FSDP2 plugin wraps `_no_split_modules`); the step equals the Trainer's step on the whole batch."""
    launch_two_processes("fsdp_step_worker.py", tmp_path)
    for name in CASES:
        whole, _ = trainer_step(name, tmp_path / "whole", batch_size=8, accumulation=1)
        encoder = model(name)
        before = torch.cat([p.detach().flatten().clone() for p in encoder.parameters()])
        plain_step(encoder, dataset(name), range(8))
        plain = torch.cat([p.detach().flatten() for p in encoder.parameters()]) - before
        assert relative_difference(plain, whole) <= TOLERANCE, f"{name}: the loop without the Trainer drifted from it"
        sharded = torch.load(tmp_path / f"{name}.pt")
        assert relative_difference(sharded, whole) <= TOLERANCE, name

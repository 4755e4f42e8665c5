"""Training integrations: gradient checkpointing, DDP through `accelerate launch` with the Trainer, and the cache of
converted encoders that the training entry points start from (`encoder_dir`)."""

from pathlib import Path

import pytest
import torch
from conftest import launch_two_processes, random_batch, tiny_encoder_config

from gemma_encoder_hf import GemmaEncoderForSequenceClassification

WORKER = Path(__file__).with_name("ddp_train_worker.py")


def tiny_classifier(**overrides) -> GemmaEncoderForSequenceClassification:
    """conftest's tiny encoder with a third (sliding) layer, three labels and every dropout off."""
    torch.manual_seed(0)
    config = tiny_encoder_config(
        num_hidden_layers=3,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        num_labels=3,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        classifier_dropout=0.0,
        **overrides,
    )
    return GemmaEncoderForSequenceClassification(config)


def gradients(model, input_ids, attention_mask, labels) -> tuple[dict[str, torch.Tensor], int]:
    """Gradients of one training step, and how many times the first layer's feed-forward ran during it (hooks on the
    layer itself stay outside the checkpoint, so the count is taken inside it)."""
    calls = []
    hook = model.model.layers[0].mlp.register_forward_hook(lambda *_: calls.append(1))
    model.zero_grad()
    model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
    hook.remove()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls)


@pytest.mark.parametrize("checkpoint_kwargs", [None, {"use_reentrant": True}], ids=["default", "reentrant"])
@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_gradient_checkpointing_gives_the_same_gradients(pooling, checkpoint_kwargs):
    model = tiny_classifier(pooling=pooling).train()
    input_ids, attention_mask = random_batch(128, batch=3, seq=14, seed=2)
    labels = torch.tensor([0, 2, 1])

    plain, plain_calls = gradients(model, input_ids, attention_mask, labels)
    # transformers 5 renamed gradient_checkpointing_enable (still an alias) to activation_checkpointing_enable.
    model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpoint_kwargs)
    assert model.is_activation_checkpointing
    checkpointed, checkpointed_calls = gradients(model, input_ids, attention_mask, labels)

    # Checkpointing really happened: the layer ran again during backward to recompute its activations.
    assert (plain_calls, checkpointed_calls) == (1, 2)
    assert plain.keys() == checkpointed.keys()
    assert len(plain) == len([p for p in model.parameters() if p.requires_grad])
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-5, rtol=0, msg=name)


def test_ddp_two_processes_end_with_identical_weights(tmp_path):
    launch_two_processes(WORKER.name, tmp_path)

    init = torch.load(tmp_path / "init.pt")
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert rank0.keys() == rank1.keys() == init.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between the ranks"
    # The ranks trained on different shards: only the all-reduce keeps them equal, and they did move.
    moved = [name for name in init if not torch.equal(init[name], rank0[name])]
    assert "score.out_proj.weight" in moved and any(name.startswith("model.layers.") for name in moved)


def fake_conversion(calls: list[Path], interrupt_first: bool = False, winner: Path | None = None):
    """A stand-in for `convert` that writes config.json, then the weights, as save_pretrained does. It can be
    interrupted between the two on its first call (Ctrl-C), or find that another process (`winner`) finished the same
    cache entry while it was converting."""

    def convert(source, out):
        calls.append(Path(out))
        Path(out, "config.json").write_text('{"model_type": "gemma_encoder"}')
        if interrupt_first and len(calls) == 1:
            raise KeyboardInterrupt
        Path(out, "model.safetensors").write_bytes(b"ours")
        if winner is not None:
            winner.mkdir(parents=True)
            (winner / "config.json").write_text('{"model_type": "gemma_encoder"}')
            (winner / "model.safetensors").write_bytes(b"theirs")

    return convert


def test_encoder_dir_never_leaves_a_half_converted_cache_entry(tmp_path, monkeypatch):
    """`encoder_dir` reuses any cache entry with a config.json. A conversion interrupted after config.json was written
    (the weights come after it) must leave no entry, so the next call converts again; the call after that reuses it."""
    from gemma_encoder_hf.harness import training

    calls: list[Path] = []
    monkeypatch.setattr(training, "convert", fake_conversion(calls, interrupt_first=True))
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        training.encoder_dir("some/decoder", cache)
    assert list(cache.iterdir()) == []  # neither the entry nor the staging folder
    folder = training.encoder_dir("some/decoder", cache)
    assert folder == cache / "some_decoder" and (folder / "model.safetensors").read_bytes() == b"ours"
    assert training.encoder_dir("some/decoder", cache) == folder and len(calls) == 2
    assert [p.name for p in cache.iterdir()] == ["some_decoder"]


def test_encoder_dir_keeps_the_entry_another_process_finished_first(tmp_path, monkeypatch):
    """Two processes converting the same source at once: the one that finishes second uses the first one's entry and
    removes its own staging folder, instead of writing over files the first may already be reading."""
    from gemma_encoder_hf.harness import training

    cache = tmp_path / "cache"
    calls: list[Path] = []
    monkeypatch.setattr(training, "convert", fake_conversion(calls, winner=cache / "some_decoder"))
    folder = training.encoder_dir("some/decoder", cache)
    assert (folder / "model.safetensors").read_bytes() == b"theirs"
    assert [p.name for p in cache.iterdir()] == ["some_decoder"] and not calls[0].exists()

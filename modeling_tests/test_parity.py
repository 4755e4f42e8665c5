"""Numerical parity with transformers' own Gemma, Gemma2 and Gemma3Text models (fp32, padded batches).

Every comparison runs both execution paths (`packed_execution`): "never" keeps the padded computation, "always" packs
the real tokens; left to "auto", a batch of these tests would only ever take the packed path (>= 10% padding).
"""

import pytest
import torch
from conftest import DECODER_CLASSES, GENERATIONS, make_tiny_decoder, random_batch

from gemma_encoder_hf import GemmaEncoderModel

TOLERANCE = 1e-4


def _native_hidden(decoder_dir, generation, implementation, input_ids, attention_mask):
    # Gemma 2 has no sdpa in transformers (softcapping); its eager path is the reference for both of ours.
    if generation == "gemma2":
        implementation = "eager"
    native = DECODER_CLASSES[generation].from_pretrained(
        decoder_dir, dtype=torch.float32, attn_implementation=implementation
    ).model.eval()
    # transformers counts positions from the first column; ours from the first real token. Give both the same ones.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        return native(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state


def _ours_hidden(decoder_dir, implementation, input_ids, attention_mask, **overrides):
    model = GemmaEncoderModel.from_decoder(decoder_dir, dtype=torch.float32, **overrides).eval()
    model.set_attn_implementation(implementation)
    with torch.inference_mode():
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


PACKED_EXECUTION = ["never", "always"]


@pytest.mark.parametrize("packed_execution", PACKED_EXECUTION)
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("generation", GENERATIONS)
def test_causal_matches_native_decoder(tiny_decoder_dirs, generation, implementation, packed_execution):
    decoder_dir = tiny_decoder_dirs[generation]
    input_ids, attention_mask = random_batch(128, batch=3, seq=14)
    expected = _native_hidden(decoder_dir, generation, implementation, input_ids, attention_mask)
    actual = _ours_hidden(
        decoder_dir, implementation, input_ids, attention_mask, attention="causal", packed_execution=packed_execution
    )
    real = attention_mask.bool()
    assert (expected[real] - actual[real]).abs().max() <= TOLERANCE


@pytest.mark.parametrize("packed_execution", PACKED_EXECUTION)
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_bidirectional_matches_gemma3_use_bidirectional_attention(tmp_path, implementation, packed_execution):
    # Long enough (20 > window 6) that the sliding-window layers really cut attention.
    decoder_dir = make_tiny_decoder("gemma3", tmp_path / "bidir", use_bidirectional_attention=True)
    input_ids, attention_mask = random_batch(128, batch=3, seq=20, seed=1)
    expected = _native_hidden(decoder_dir, "gemma3", implementation, input_ids, attention_mask)
    actual = _ours_hidden(decoder_dir, implementation, input_ids, attention_mask, packed_execution=packed_execution)
    real = attention_mask.bool()
    assert (expected[real] - actual[real]).abs().max() <= TOLERANCE

    # The window matters: the same model without sliding windows gives different states.
    no_window = _ours_hidden(
        decoder_dir, implementation, input_ids, attention_mask, bidirectional_window="global",
        packed_execution=packed_execution,
    )  # fmt: skip
    assert (no_window[real] - actual[real]).abs().max() > 1e-3


def test_bidirectional_window_recovers_the_decoder_window(tmp_path):
    """Gemma3TextConfig halves the stored window when built bidirectional; the encoder keeps the decoder's window."""
    plain = make_tiny_decoder("gemma3", tmp_path / "plain")
    bidirectional = make_tiny_decoder("gemma3", tmp_path / "bidir", use_bidirectional_attention=True)
    windows = {GemmaEncoderModel.from_decoder(d).config.sliding_window for d in (plain, bidirectional)}
    assert windows == {6}


def test_attention_implementation_can_be_switched(tiny_decoder_dirs):
    model = GemmaEncoderModel.from_decoder(tiny_decoder_dirs["gemma3"], attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    model.set_attn_implementation("sdpa")
    assert model.config._attn_implementation == "sdpa"


def test_editing_the_attention_knobs_of_a_built_model_applies_to_every_path(tiny_decoder_dirs):
    input_ids, attention_mask = random_batch(128, batch=3, seq=14)
    expected = _ours_hidden(tiny_decoder_dirs["gemma3"], "sdpa", input_ids, attention_mask, attention="causal")
    model = GemmaEncoderModel.from_decoder(tiny_decoder_dirs["gemma3"]).eval()
    model.config.attention = "causal"
    real = attention_mask.bool()
    for packed in ("never", "always"):
        model.config.packed_execution = packed
        with torch.inference_mode():
            actual = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        assert (expected[real] - actual[real]).abs().max() <= TOLERANCE, packed

"""Numerical parity with transformers' own models (fp32, padded batches): Gemma, Gemma2, Gemma3Text and Gemma4Text
decoders in causal mode, Gemma 3 / Gemma 4 with use_bidirectional_attention, the bidirectional encoders of T5Gemma
and T5Gemma 2, and EmbeddingGemma 2's text tower.

Every comparison runs both execution paths (`packed_execution`): "never" keeps the padded computation, "always" packs
the real tokens; left to "auto", a batch of these tests would only ever take the packed path (>= 10% padding).
"""

import pytest
import torch
from conftest import (
    DECODER_CLASSES,
    ENCODER_SOURCES,
    GENERATIONS,
    T5GEMMA2_EOI_TOKEN,
    encoder_source_class,
    make_tiny_decoder,
    random_batch,
)

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


def _native_encoder_hidden(checkpoint_dir, kind, implementation, input_ids, attention_mask):
    # T5Gemma (soft-capping) has no sdpa in transformers; its eager path is the reference for both of ours.
    if kind == "t5gemma":
        implementation = "eager"
    native = encoder_source_class(kind).from_pretrained(
        checkpoint_dir, dtype=torch.float32, attn_implementation=implementation
    ).eval()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    with torch.inference_mode():
        if kind != "embedding_gemma2":
            return native.get_encoder()(**inputs).last_hidden_state
        # EmbeddingGemma 2 returns its states projected (`embedding_projection`, which `convert` keeps as a Dense
        # module): the encoder's states are those of its final norm.
        states = []
        hook = native.language_model.norm.register_forward_hook(lambda module, args, output: states.append(output))
        native.language_model(**inputs)
        hook.remove()
        return states[0]


def _max_diff_per_setting(model, input_ids, attention_mask, expected, settings: dict[str, list]) -> dict:
    """Max abs difference to `expected` on real positions for each value of each config field in `settings`."""
    real = attention_mask.bool()
    diffs = {}
    for name, values in settings.items():
        original = getattr(model.config, name)
        for value in values:
            setattr(model.config, name, value)
            with torch.inference_mode():
                actual = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            diffs[name, value] = float((expected[real] - actual[real]).abs().max())
        setattr(model.config, name, original)
    return diffs


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", ENCODER_SOURCES)
def test_bidirectional_matches_native_encoder_of_encoder_decoders(tiny_decoder_dirs, kind, implementation):
    """The encoder stack of a T5Gemma / T5Gemma 2 checkpoint (EmbeddingGemma 2's text tower) gives transformers' own
    encoder's states, padded or packed; the decoder-derived window rules do not (the encoders were trained with
    their own windows)."""
    # Longer (20) than the windows (4 and 6), so the encoders' own sliding windows really cut attention.
    input_ids, attention_mask = random_batch(128, batch=3, seq=20, seed=2)
    input_ids[2, 5] = T5GEMMA2_EOI_TOKEN  # T5Gemma 2 embeds it with its own vector; an ordinary token for T5Gemma
    expected = _native_encoder_hidden(tiny_decoder_dirs[kind], kind, implementation, input_ids, attention_mask)
    model = GemmaEncoderModel.from_decoder(tiny_decoder_dirs[kind], dtype=torch.float32).eval()
    model.set_attn_implementation(implementation)
    assert model.config.bidirectional_window == "native"
    diffs = _max_diff_per_setting(
        model, input_ids, attention_mask, expected,
        {"packed_execution": ["never", "always"], "bidirectional_window": ["split", "full"]},
    )  # fmt: skip
    assert diffs["packed_execution", "never"] <= TOLERANCE
    assert diffs["packed_execution", "always"] <= TOLERANCE
    assert diffs["bidirectional_window", "split"] > 1e-3
    if kind != "embedding_gemma2":  # its causal window is its radius + 1, so "full" is its own window
        assert diffs["bidirectional_window", "full"] > 1e-3


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("generation", GENERATIONS)
def test_causal_matches_native_decoder(tiny_decoder_dirs, generation, implementation):
    decoder_dir = tiny_decoder_dirs[generation]
    input_ids, attention_mask = random_batch(128, batch=3, seq=14)
    expected = _native_hidden(decoder_dir, generation, implementation, input_ids, attention_mask)
    model = GemmaEncoderModel.from_decoder(decoder_dir, dtype=torch.float32, attention="causal").eval()
    model.set_attn_implementation(implementation)
    diffs = _max_diff_per_setting(
        model, input_ids, attention_mask, expected, {"packed_execution": ["never", "always"]}
    )
    assert max(diffs.values()) <= TOLERANCE, diffs


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize(("generation", "flag"), [("gemma3", True), ("gemma4", "all"), ("gemma4_moe", "all")])
def test_bidirectional_matches_native_use_bidirectional_attention(tmp_path, generation, flag, implementation):
    """Gemma 3 with use_bidirectional_attention=True and Gemma 4 with "all" (EmbeddingGemma's layout), padded or
    packed. transformers gives Gemma 4's bidirectional sliding layers one token more per side than Gemma 3's; the
    conversion reads that from the flag (`bidirectional_window="native"`)."""
    # Long enough (20 > window 6) that the sliding-window layers really cut attention.
    decoder_dir = make_tiny_decoder(generation, tmp_path / "bidir", use_bidirectional_attention=flag)
    input_ids, attention_mask = random_batch(128, batch=3, seq=20, seed=1)
    expected = _native_hidden(decoder_dir, generation, implementation, input_ids, attention_mask)
    model = GemmaEncoderModel.from_decoder(decoder_dir, dtype=torch.float32).eval()
    model.set_attn_implementation(implementation)
    diffs = _max_diff_per_setting(
        model, input_ids, attention_mask, expected,
        {"packed_execution": ["never", "always"], "bidirectional_window": ["global"]},
    )  # fmt: skip
    assert diffs["packed_execution", "never"] <= TOLERANCE
    assert diffs["packed_execution", "always"] <= TOLERANCE
    # The window matters: the same model without sliding windows gives different states.
    assert diffs["bidirectional_window", "global"] > 1e-3


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


def test_text_tower_of_a_gemma4_multimodal_checkpoint(tmp_path):
    """A `gemma4` checkpoint keeps its text decoder under `model.language_model`; the encoder is that decoder."""
    from conftest import tiny_decoder_config
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    torch.manual_seed(0)
    config = Gemma4Config(text_config=tiny_decoder_config("gemma4"), vision_config=None, audio_config=None)
    multimodal = Gemma4ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, param in multimodal.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.5)
    multimodal.save_pretrained(tmp_path)
    input_ids, attention_mask = random_batch(128, batch=3, seq=14)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        expected = multimodal.model.language_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
    model = GemmaEncoderModel.from_decoder(tmp_path, dtype=torch.float32, attention="causal").eval()
    assert model.config.decoder_model_type == "gemma4_text"
    diffs = _max_diff_per_setting(model, input_ids, attention_mask, expected, {"packed_execution": ["never", "always"]})
    assert max(diffs.values()) <= TOLERANCE, diffs

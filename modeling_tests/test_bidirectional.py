"""Bidirectionality is real: a later token changes an earlier token's state, in every path; causal mode does not."""

import pytest
import torch
from conftest import SOURCES

from gemma_encoder_hf import GemmaEncoderModel


def _first_token_change(model, batch_size: int, padded: bool) -> float:
    seq = 10
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 128, (batch_size, seq), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    if padded:
        attention_mask[0, :3] = 0  # left padding: the first real token is at column 3
    first = int(attention_mask[0].argmax())
    changed = input_ids.clone()
    changed[0, -1] = (changed[0, -1] + 7) % 125 + 3
    with torch.inference_mode():
        before = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[0, first]
        after = model(input_ids=changed, attention_mask=attention_mask).last_hidden_state[0, first]
    return float((before - after).abs().max())


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("generation", SOURCES)
def test_last_token_reaches_first_token(tiny_decoder_dirs, generation, implementation, padded, batch_size):
    # A window wider than the sequence on sliding layers would hide nothing; "global" makes every layer see all.
    bidirectional = GemmaEncoderModel.from_decoder(tiny_decoder_dirs[generation], bidirectional_window="global")
    causal = GemmaEncoderModel.from_decoder(tiny_decoder_dirs[generation], attention="causal")
    for model in (bidirectional, causal):
        model.set_attn_implementation(implementation)
        model.eval()
    assert _first_token_change(bidirectional, batch_size, padded) > 1e-4
    assert _first_token_change(causal, batch_size, padded) == 0.0



# RecurrentGemma's top 2 layers are a recurrent and an attention layer: both directions of each kind are covered.
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize(("generation", "top_layers"), [("gemma3", 1), ("recurrent_gemma", 2)])
def test_bidirectional_layers_turns_only_the_top_layers_bidirectional(
    tiny_decoder_dirs, generation, top_layers, implementation
):
    """Below the top `bidirectional_layers`, every layer reproduces causal mode's states exactly (the decoder's own);
    from the first bidirectional layer on they differ, and the last token reaches the first, padded or packed."""
    source = tiny_decoder_dirs[generation]
    causal = GemmaEncoderModel.from_decoder(source, attention="causal").eval()
    top = GemmaEncoderModel.from_decoder(source, bidirectional_layers=top_layers, bidirectional_window="global").eval()
    for model in (causal, top):
        model.set_attn_implementation(implementation)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 128, (3, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[2, :4] = 0
    real = attention_mask.bool()
    causal_layers = top.config.num_hidden_layers - top_layers
    with torch.inference_mode():
        expected = causal(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
        for mode in ("never", "always"):
            top.config.packed_execution = mode
            states = top(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
            # hidden_states[0] is the embedding output, hidden_states[n] the output of layer n - 1.
            for n in range(causal_layers + 1):
                assert (states[n] - expected[n])[real].abs().max() <= 1e-5, f"{mode}: layer {n - 1} changed"
            for n in range(causal_layers + 1, len(states)):
                assert (states[n] - expected[n])[real].abs().max() > 1e-4, f"{mode}: layer {n - 1} stayed causal"
    top.config.packed_execution = "never"
    assert _first_token_change(top, batch_size=3, padded=True) > 1e-4

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

"""RecurrentGemma (Griffin) as a source: causal parity with transformers' RecurrentGemma, and the bidirectional
recurrent encoder built from it (both directions over each text, state reset at text boundaries, a parallel scan).

The suites that run over every source (`SOURCES` in conftest: bidirectionality, pooling, packed = padded, flattened
batches, save/reload, the Hub round trip) cover it as well.
"""

import pytest
import torch
from conftest import random_batch
from tiny_tokenizer import char_tokenizer
from transformers import RecurrentGemmaForCausalLM

from gemma_encoder_hf import GemmaEncoderForMaskedLM, GemmaEncoderModel
from gemma_encoder_hf.harness.adaptation import adapt
from gemma_encoder_hf.modeling.modeling_gemma_encoder import linear_scan

TOLERANCE = 1e-4


def right_padded_batch(seed: int = 0):
    """A full row and a right-padded one. transformers' RecurrentGemma convolves over whatever precedes a token in
    its row, padding included, so a left-padded row is no reference for the first real tokens (ours are padding-
    invariant: `test_each_text_gets_the_states_it_gets_alone`)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 128, (2, 20), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 13:] = 0
    return input_ids, attention_mask


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_causal_matches_native_recurrent_gemma(tiny_decoder_dirs, implementation):
    """Causal mode (forward recurrence only, the decoder's local window) gives RecurrentGemma's states, padded or
    packed, with its bf16-rounded embedding scale, partial RoPE, biased MLP and attention output."""
    path = tiny_decoder_dirs["recurrent_gemma"]
    native = RecurrentGemmaForCausalLM.from_pretrained(path, attn_implementation=implementation).eval()
    model = GemmaEncoderModel.from_decoder(path, attention="causal").eval()
    model.set_attn_implementation(implementation)
    assert model.config.layer_types == ["linear_attention", "linear_attention", "sliding_attention"]
    assert model.config.embedding_scale == 6.9375 and model.config.rope_rotary_dim == 6
    input_ids, attention_mask = right_padded_batch()
    real = attention_mask.bool()
    with torch.no_grad():
        expected = native.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        for packed in ("never", "always"):
            model.config.packed_execution = packed
            actual = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            assert (expected[real] - actual[real]).abs().max() <= TOLERANCE, packed


def test_causal_mntp_logits_equal_recurrent_gemma_next_token_logits(tiny_decoder_dirs):
    """The masked-LM head of a causal encoder reproduces RecurrentGemma's soft-capped next-token logits."""
    path = tiny_decoder_dirs["recurrent_gemma"]
    encoder = GemmaEncoderForMaskedLM.from_decoder(path, attention="causal").eval()
    decoder = RecurrentGemmaForCausalLM.from_pretrained(path).eval()
    input_ids, _ = right_padded_batch(seed=1)
    with torch.no_grad():
        ours = encoder(input_ids).logits
        theirs = decoder(input_ids, use_cache=False).logits
    torch.testing.assert_close(ours[:, 1:], theirs[:, :-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"recurrence_combine": "sum"}, {"recurrence_combine": "gate", "recurrence_reverse_weights": "separate"}],
    ids=["tied-mean", "tied-sum", "separate-gate"],
)
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_each_text_gets_the_states_it_gets_alone(tiny_decoder_dirs, overrides, implementation):
    """Bidirectional: every row of a left/right-padded batch, padded or packed, equals its text run alone; and three
    texts flattened into one row (position_ids restarting) equal the same: neither direction's convolution or
    recurrence crosses a padding or text boundary."""
    model = GemmaEncoderModel.from_decoder(tiny_decoder_dirs["recurrent_gemma"], **overrides).eval()
    model.set_attn_implementation(implementation)
    input_ids, attention_mask = random_batch(128, batch=3, seq=20, seed=5)
    texts = [row[mask.bool()] for row, mask in zip(input_ids, attention_mask)]
    with torch.no_grad():
        alone = [model(input_ids=text[None]).last_hidden_state[0] for text in texts]
        for packed in ("never", "always"):
            model.config.packed_execution = packed
            batch = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            for row, (states, mask) in enumerate(zip(batch, attention_mask)):
                assert (states[mask.bool()] - alone[row]).abs().max() <= TOLERANCE, (packed, row)
        flat = model(
            input_ids=torch.cat(texts)[None], position_ids=torch.cat([torch.arange(len(t)) for t in texts])[None]
        ).last_hidden_state[0]
    assert (flat - torch.cat(alone)).abs().max() <= TOLERANCE


def test_both_directions_reach_every_token(tiny_decoder_dirs):
    """Without any attention layer, only the recurrence can carry information: changing the last token changes the
    first token's state in bidirectional mode, never in causal mode, and changing the first changes the last."""
    path = tiny_decoder_dirs["recurrent_gemma"]
    input_ids, _ = right_padded_batch()
    changed = input_ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 128
    changed_first = input_ids.clone()
    changed_first[:, 0] = (changed_first[:, 0] + 1) % 128
    for attention, reaches_back in (("bidirectional", True), ("causal", False)):
        model = GemmaEncoderModel.from_decoder(
            path, attention=attention, num_hidden_layers=2, layer_types=["linear_attention"] * 2
        ).eval()
        with torch.no_grad():
            base = model(input_ids=input_ids).last_hidden_state
            last = model(input_ids=changed).last_hidden_state
            first = model(input_ids=changed_first).last_hidden_state
        assert ((base[:, 0] - last[:, 0]).abs().max() > 1e-4) == reaches_back, attention
        assert (base[:, -1] - first[:, -1]).abs().max() > 1e-4


def test_combine_and_reverse_weight_options(tiny_decoder_dirs):
    """Separate reverse weights start as the forward ones (same states as tied) and are then used; the gate starts
    at the mean; "sum" differs from the mean."""
    path = tiny_decoder_dirs["recurrent_gemma"]
    input_ids, attention_mask = random_batch(128, batch=3, seq=20, seed=6)
    real = attention_mask.bool()

    def states(**overrides):
        model = GemmaEncoderModel.from_decoder(path, **overrides).eval()
        with torch.no_grad():
            return model, model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[real]

    tied_model, tied = states()
    assert not any("reverse" in name or "direction_gate" in name for name, _ in tied_model.named_parameters())
    separate_model, separate = states(recurrence_reverse_weights="separate")
    assert (tied - separate).abs().max() <= TOLERANCE
    _, gated = states(recurrence_combine="gate")
    assert (tied - gated).abs().max() <= TOLERANCE
    _, summed = states(recurrence_combine="sum")
    assert (tied - summed).abs().max() > 1e-3
    with torch.no_grad():
        separate_model.layers[0].recurrent_block.rg_lru_reverse.recurrent_param.add_(1.0)
        moved = separate_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[real]
    assert (moved - separate).abs().max() > 1e-3


def test_parallel_scan_equals_the_sequential_recurrence():
    """`linear_scan` gives h[t] = a[t] h[t-1] + x[t] (a = 0 restarting it), forward and backward, at lengths that
    are and are not powers of two."""
    generator = torch.Generator().manual_seed(0)
    for length in (1, 7, 16, 33):
        decay = torch.rand(2, length, 5, generator=generator, dtype=torch.float64)
        decay[:, length // 2] = 0.0
        inputs = torch.randn(2, length, 5, generator=generator, dtype=torch.float64, requires_grad=True)
        state, expected = torch.zeros(2, 5, dtype=torch.float64), []
        for t in range(length):
            state = decay[:, t] * state + inputs[:, t]
            expected.append(state)
        expected = torch.stack(expected, dim=1)
        actual = linear_scan(decay, inputs.float())
        torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)
        (grad_scan,) = torch.autograd.grad(linear_scan(decay, inputs).sum(), inputs)
        (grad_loop,) = torch.autograd.grad(expected.sum(), inputs)
        torch.testing.assert_close(grad_scan.double(), grad_loop, rtol=1e-5, atol=1e-5)


def test_mntp_adaptation_trains_both_directions(tiny_decoder_dirs, tmp_path):
    """The adaptation stage (`adapt`, MNTP) runs on the recurrent encoder and moves the recurrences' weights,
    reverse direction included."""
    model = GemmaEncoderForMaskedLM.from_decoder(
        tiny_decoder_dirs["recurrent_gemma"], recurrence_reverse_weights="separate"
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    texts = ["the cat sat on the mat", "a dog ran far away", "birds sing at dawn", "rain falls on the roof"] * 2
    out = adapt(model, texts, tmp_path / "adapted", tokenizer=char_tokenizer(), steps=3, batch_size=4,
                learning_rate=1e-2, device="cpu")  # fmt: skip
    adapted = GemmaEncoderForMaskedLM.from_pretrained(out).state_dict()
    for name in ("model.layers.0.recurrent_block.rg_lru.recurrent_param",
                 "model.layers.0.recurrent_block.rg_lru_reverse.recurrent_param",
                 "model.layers.1.recurrent_block.conv_1d_reverse.weight"):  # fmt: skip
        assert not torch.equal(adapted[name], before[name]), name

"""Packed (unpadded) execution gives the padded computation's numbers, and caller-flattened batches pool per text.

Packed execution only feeds real tokens through the layers and keeps attention within each text; it must change
no number beyond float rounding, for every Gemma generation, attention mode, sliding-window flavour, attention
backend and pooler. The sliding windows of the tiny configs (5 and 6 tokens) are shorter than the texts here, so a
window bug would show.
"""

import pytest
import torch
from conftest import ENCODER_SOURCES, GENERATIONS, RECURRENT_SOURCES, SOURCES

from gemma_encoder_hf import GemmaEncoderForSequenceClassification, GemmaEncoderModel

TOLERANCE = 1e-4
POOLINGS = [
    {"pooling": "mean"},
    {"pooling": "first", "pooling_k": 2},
    {"pooling": "last", "pooling_k": 2},
    {"pooling": "attention", "attention_pooling_probe": "query"},
    {"pooling": "attention", "attention_pooling_probe": "kv"},
]
ATTENTION_MODES = [
    {"attention": "causal"},
    {"attention": "bidirectional", "bidirectional_window": "split"},
    {"attention": "bidirectional", "bidirectional_window": "full"},
    {"attention": "bidirectional", "bidirectional_window": "global"},
]
LENGTHS = (17, 11, 1, 6)  # one full row, a 1-token text, texts shorter and longer than the windows


def ragged_batch(lengths=LENGTHS, seed: int = 0, left_padded_rows=(1,)):
    """Random texts of the given lengths, right-padded except `left_padded_rows`, plus the texts themselves."""
    generator = torch.Generator().manual_seed(seed)
    texts = [torch.randint(3, 128, (n,), generator=generator) for n in lengths]
    seq = max(lengths)
    input_ids = torch.zeros(len(lengths), seq, dtype=torch.long)
    attention_mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for row, text in enumerate(texts):
        span = slice(seq - len(text), seq) if row in left_padded_rows else slice(0, len(text))
        input_ids[row, span] = text
        attention_mask[row, span] = 1
    return input_ids, attention_mask, texts


def run(model, mode: str, **inputs):
    model.config.packed_execution = mode
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True)


# Redundant combinations are left out: Gemma 1 has no sliding layers (every window flavour is the same model) and
# Gemma 2's soft-capping always takes the eager path (sdpa would run the same code).
PACKED_CASES = [
    (generation, attention, implementation)
    for generation in GENERATIONS
    for attention in ATTENTION_MODES
    for implementation in ("eager", "sdpa")
    if not (generation == "gemma" and attention.get("bidirectional_window", "split") != "split")
    and not (generation == "gemma2" and implementation == "sdpa")
] + [
    # T5Gemma / T5Gemma 2 encoders keep the windows they were trained with (T5Gemma 2's is asymmetric).
    (kind, {"attention": "bidirectional", "bidirectional_window": "native"}, implementation)
    for kind in ENCODER_SOURCES
    for implementation in ("eager", "sdpa")
    if not (kind == "t5gemma" and implementation == "sdpa")  # soft-capping: eager either way
] + [
    # RecurrentGemma: recurrent layers (both directions, or forward only) beside windowed attention.
    (kind, attention, implementation)
    for kind in RECURRENT_SOURCES
    for attention in ({"attention": "bidirectional"}, {"attention": "causal"})
    for implementation in ("eager", "sdpa")
] + [
    # Bidirectional top layers over causal ones: each layer reads its own direction's mask or text starts.
    (kind, {"attention": "bidirectional", "bidirectional_layers": 2}, implementation)
    for kind in ("gemma3", *RECURRENT_SOURCES)
    for implementation in ("eager", "sdpa")
]


@pytest.mark.parametrize(
    ("generation", "attention", "implementation"),
    PACKED_CASES,
    ids=["-".join(map(str, [g, *a.values(), i])) for g, a, i in PACKED_CASES],
)
def test_packed_matches_padded(tiny_decoder_dirs, generation, attention, implementation):
    model = GemmaEncoderModel.from_decoder(tiny_decoder_dirs[generation], **attention).eval()
    model.set_attn_implementation(implementation)
    input_ids, attention_mask, _ = ragged_batch()
    padded = run(model, "never", input_ids=input_ids, attention_mask=attention_mask)
    packed = run(model, "always", input_ids=input_ids, attention_mask=attention_mask)
    real = attention_mask.bool()
    # Each mode really took its path, and both leave exact zeros at padding positions.
    for mode, takes_packed_path in (("never", False), ("always", True)):
        model.config.packed_execution = mode
        assert (model._packed_layout(attention_mask, None) is not None) == takes_packed_path
    for output in (padded, packed):
        assert all(h[~real].abs().max() == 0 for h in (output.last_hidden_state, *output.hidden_states))
    for layer, (a, b) in enumerate(zip(padded.hidden_states, packed.hidden_states)):
        assert (a[real] - b[real]).abs().max() <= TOLERANCE, f"hidden state {layer} differs"
    assert (padded.pooler_output - packed.pooler_output).abs().max() <= TOLERANCE


@pytest.mark.parametrize("pooling", POOLINGS, ids=lambda p: "-".join(str(v) for v in p.values()))
@pytest.mark.parametrize("generation", SOURCES)
def test_every_pooler_and_flattened_batches(tiny_decoder_dirs, generation, pooling):
    """Padded, packed and caller-flattened runs of the same texts give the same pooled vector per text."""
    torch.manual_seed(0)
    model = GemmaEncoderModel.from_decoder(tiny_decoder_dirs[generation], **pooling).eval()
    input_ids, attention_mask, texts = ragged_batch()
    padded = run(model, "never", input_ids=input_ids, attention_mask=attention_mask).pooler_output
    packed = run(model, "always", input_ids=input_ids, attention_mask=attention_mask).pooler_output

    # What transformers' DataCollatorWithFlattening (sentence-transformers under flash attention) sends: one row of
    # all texts back to back, position_ids restarting at 0 at each text, no attention_mask. "never" must not matter.
    flat_ids = torch.cat(texts)[None]
    flat_positions = torch.cat([torch.arange(len(t)) for t in texts])[None]
    flattened = run(model, "never", input_ids=flat_ids, position_ids=flat_positions)

    assert padded.shape == packed.shape == flattened.pooler_output.shape == (len(texts), model.config.hidden_size)
    assert (padded - packed).abs().max() <= TOLERANCE
    assert (padded - flattened.pooler_output).abs().max() <= TOLERANCE
    # Token states of the flattened row are each text's own states: attention never crossed a text boundary.
    padded_states = run(model, "never", input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    flat_states = flattened.last_hidden_state[0].split([len(t) for t in texts])
    for row, states in enumerate(flat_states):
        assert (padded_states[row][attention_mask[row].bool()] - states).abs().max() <= TOLERANCE


def test_flattened_batch_through_a_classifier(tiny_decoder_dirs):
    """The task head pools per text too: one logit row per flattened text, equal to the padded batch's."""
    torch.manual_seed(0)
    model = GemmaEncoderForSequenceClassification.from_decoder(tiny_decoder_dirs["gemma3"], num_labels=3).eval()
    input_ids, attention_mask, texts = ragged_batch()
    with torch.no_grad():
        padded = model(input_ids=input_ids, attention_mask=attention_mask).logits
        flattened = model(
            input_ids=torch.cat(texts)[None],
            position_ids=torch.cat([torch.arange(len(t)) for t in texts])[None],
        ).logits
    assert flattened.shape == (len(texts), 3)
    assert (padded - flattened).abs().max() <= TOLERANCE


@pytest.mark.parametrize("generation", ["gemma2", "gemma3"])
def test_flex_attention_backend(tiny_decoder_dirs, generation):
    """flex_attention (document + window block mask; Gemma 2's soft-capping as score_mod) runs packed, same numbers."""
    model = GemmaEncoderModel.from_decoder(tiny_decoder_dirs[generation]).eval()
    input_ids, attention_mask, _ = ragged_batch()
    padded = run(model, "never", input_ids=input_ids, attention_mask=attention_mask)
    model.set_attn_implementation("flex_attention")
    flex = run(model, "never", input_ids=input_ids, attention_mask=attention_mask)  # flex always packs
    real = attention_mask.bool()
    assert flex.last_hidden_state[~real].abs().max() == 0
    assert (padded.last_hidden_state[real] - flex.last_hidden_state[real]).abs().max() <= TOLERANCE


def test_packed_gradients_match_padded(tiny_decoder_dirs):
    """Training runs packed too: the gradients of every weight equal the padded computation's."""
    model = GemmaEncoderForSequenceClassification.from_decoder(
        tiny_decoder_dirs["gemma2"], num_labels=2, classifier_dropout=0.0
    )
    input_ids, attention_mask, _ = ragged_batch()
    labels = torch.tensor([0, 1, 1, 0])
    grads = {}
    for mode in ("never", "always"):
        model.zero_grad()
        model.config.packed_execution = mode
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["never"].keys() == grads["always"].keys()
    for name, grad in grads["never"].items():
        assert (grad - grads["always"][name]).abs().max() <= TOLERANCE * max(1.0, grad.abs().max().item()), name


def test_auto_mode_packs_only_padded_batches(tiny_decoder_dirs):
    model = GemmaEncoderModel.from_decoder(tiny_decoder_dirs["gemma3"]).eval()
    input_ids, attention_mask, _ = ragged_batch()
    outputs = run(model, "auto", input_ids=input_ids, attention_mask=attention_mask)
    assert outputs.last_hidden_state[~attention_mask.bool()].abs().max() == 0  # 40% padding: packed

    # A mask with a hole inside a row cannot be packed (windows would shift): "always" falls back to padded.
    holed = attention_mask.clone()
    holed[0, 5] = 0
    fallback = run(model, "always", input_ids=input_ids, attention_mask=holed)
    reference = run(model, "never", input_ids=input_ids, attention_mask=holed)
    assert torch.equal(fallback.last_hidden_state, reference.last_hidden_state)

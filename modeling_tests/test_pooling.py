"""Every pooling type gives the same vector for a text alone, left-padded and right-padded in a batch."""

import pytest
import torch
from conftest import SOURCES

from gemma_encoder_hf import GemmaEncoderModel

POOLINGS = [
    {"pooling": "mean"},
    {"pooling": "first", "pooling_k": 1},
    {"pooling": "first", "pooling_k": 3},
    {"pooling": "last", "pooling_k": 1},
    {"pooling": "last", "pooling_k": 3},
    {"pooling": "attention", "attention_pooling_probe": "query"},
    {"pooling": "attention", "attention_pooling_probe": "kv"},
]


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("pooling", POOLINGS, ids=lambda p: "-".join(str(v) for v in p.values()))
@pytest.mark.parametrize("generation", SOURCES)
def test_pooler_output_is_padding_invariant(tiny_decoder_dirs, generation, pooling, implementation):
    torch.manual_seed(0)
    model = GemmaEncoderModel.from_decoder(tiny_decoder_dirs[generation], **pooling).eval()
    model.set_attn_implementation(implementation)
    text = torch.randint(3, 128, (1, 9))
    other = torch.randint(3, 128, (1, 13))  # longer companion: forces 4 padding columns
    pad = torch.zeros(1, 4, dtype=torch.long)
    left = torch.cat([torch.cat([pad, text], 1), other])
    right = torch.cat([torch.cat([text, pad], 1), other])
    left_mask = (torch.arange(13) >= 4).long()[None].repeat(2, 1)
    left_mask[1] = 1
    right_mask = (torch.arange(13) < 9).long()[None].repeat(2, 1)
    right_mask[1] = 1
    with torch.inference_mode():
        alone = model(input_ids=text).pooler_output[0]
        left_pooled = model(input_ids=left, attention_mask=left_mask).pooler_output
        right_pooled = model(input_ids=right, attention_mask=right_mask).pooler_output
    assert (alone - left_pooled[0]).abs().max() <= 1e-4
    assert (alone - right_pooled[0]).abs().max() <= 1e-4
    assert (left_pooled[1] - right_pooled[1]).abs().max() <= 1e-4


def test_pooling_types_differ(tiny_decoder_dirs):
    """Guards against every pooler silently computing the same thing."""
    input_ids = torch.randint(3, 128, (1, 9), generator=torch.Generator().manual_seed(0))
    vectors = []
    for pooling in POOLINGS:
        torch.manual_seed(0)
        model = GemmaEncoderModel.from_decoder(tiny_decoder_dirs["gemma3"], **pooling).eval()
        with torch.inference_mode():
            vectors.append(model(input_ids=input_ids).pooler_output[0])
    for i in range(len(vectors)):
        for j in range(i + 1, len(vectors)):
            assert (vectors[i] - vectors[j]).abs().max() > 1e-4, (POOLINGS[i], POOLINGS[j])

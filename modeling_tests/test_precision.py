"""fp32, bf16 and fp16 forward passes of the real Gemma 3 270M: finite everywhere, and close to fp32.

Gemma's residual stream outgrows fp16 (the first test proves it on this model), so an fp16 GemmaEncoder keeps the
residual stream in fp32 while every matmul runs in fp16 (see `GemmaEncoderModel.forward`). Tolerances, with the
values measured when they were set (docs/reliability.md):
    bf16 vs fp32 pooled cosine >= 0.999   (measured min 0.99989)
    fp16 vs fp32 pooled cosine >= 0.9999  (measured min 0.999999)
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from gemma_encoder_hf import GemmaEncoderForSequenceClassification, GemmaEncoderModel

TEXTS = [
    "it 's a charming and often affecting journey .",
    "Terrible plot, wooden acting, and far too long.",
    "ok",
    "In 1887 construction of the Eiffel Tower began in Paris; for two years engineers argued in the press about "
    "whether the wrought-iron lattice, then the tallest structure on Earth, would survive the wind.",
]
FP16_MAX = torch.finfo(torch.float16).max
MIN_COSINE = {torch.bfloat16: 0.999, torch.float16: 0.9999}


@pytest.fixture(scope="module")
def batch(real_encoder_dir):
    tokenizer = AutoTokenizer.from_pretrained(real_encoder_dir)
    return tokenizer(TEXTS, padding=True, return_tensors="pt")


@pytest.fixture(scope="module")
def fp32_outputs(real_encoder_dir, batch):
    model = GemmaEncoderModel.from_pretrained(real_encoder_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        return model(**batch, output_hidden_states=True)


def test_fp32_residual_stream_exceeds_fp16_range(fp32_outputs):
    """Why fp16 needs care at all: a plain fp16 residual stream would overflow to inf and then NaN."""
    peak = max(h.abs().max().item() for h in fp32_outputs.hidden_states)
    assert peak > FP16_MAX, f"residual stream peaks at {peak:.0f}, within fp16 range"
    assert torch.isfinite(fp32_outputs.last_hidden_state).all()
    assert torch.isfinite(fp32_outputs.pooler_output).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_is_finite_and_close_to_fp32(real_encoder_dir, batch, fp32_outputs, dtype):
    model = GemmaEncoderModel.from_pretrained(real_encoder_dir, dtype=dtype).eval()
    with torch.inference_mode():
        outputs = model(**batch)
    assert outputs.last_hidden_state.dtype == dtype and outputs.pooler_output.dtype == dtype
    assert torch.isfinite(outputs.last_hidden_state).all()
    assert torch.isfinite(outputs.pooler_output).all()
    cosine = F.cosine_similarity(outputs.pooler_output.float(), fp32_outputs.pooler_output, dim=-1)
    assert cosine.min().item() >= MIN_COSINE[dtype], cosine.tolist()


def test_fp16_classifier_logits_are_finite(real_encoder_dir, batch):
    torch.manual_seed(0)
    model = GemmaEncoderForSequenceClassification.from_pretrained(
        real_encoder_dir, num_labels=2, dtype=torch.float16
    ).eval()
    with torch.inference_mode():
        logits = model(**batch).logits
    assert logits.dtype == torch.float16 and torch.isfinite(logits).all()

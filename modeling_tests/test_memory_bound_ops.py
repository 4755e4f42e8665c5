"""The hand-fused memory-bound ops (RMS norm, rotary embedding, feed-forward) against their textbook formulas.

They are written for speed (fewer passes over full-size tensors, in-place updates where no gradient needs the
original, chunked feed-forward at CPU inference); these tests pin that each computes what the plain formula does, in
inference and under autograd.
"""

import pytest
import torch
from conftest import tiny_encoder_config

import gemma_encoder_hf.modeling.modeling_gemma_encoder as modeling
from gemma_encoder_hf.modeling.modeling_gemma_encoder import (
    GemmaEncoderMLP,
    GemmaEncoderRMSNorm,
    apply_rotary,
    rotary_cos_sin,
)


def reference_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (normed * (1.0 + weight.float())).type_as(x)


def reference_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.unsqueeze(1) + torch.cat((-x2, x1), dim=-1) * sin.unsqueeze(1)


def reference_feed_forward(mlp: GemmaEncoderMLP, x: torch.Tensor) -> torch.Tensor:
    return mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))


@pytest.fixture
def norm() -> GemmaEncoderRMSNorm:
    torch.manual_seed(0)
    module = GemmaEncoderRMSNorm(48, eps=1e-6)
    with torch.no_grad():
        module.weight.normal_(0, 0.5)
    return module


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_formula(norm, dtype):
    x = (torch.randn(3, 7, 48) * 40).to(dtype)
    norm = norm.to(dtype)
    expected = reference_rms_norm(x, norm.weight, norm.eps)
    with torch.inference_mode():
        actual = norm(x)
    assert actual.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2  # bf16: the formula's own rounding of the fp32 result
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("residual_dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_with_residual_is_residual_plus_norm(norm, residual_dtype):
    x = torch.randn(2, 5, 48).to(residual_dtype)
    residual = (torch.randn(2, 5, 48) * 100).to(residual_dtype)
    norm = norm.to(residual_dtype)
    expected = residual + reference_rms_norm(x, norm.weight, norm.eps)
    with torch.inference_mode():
        actual = norm(x, residual=residual)
    assert actual.dtype == residual_dtype
    tolerance = 1e-5 if residual_dtype == torch.float32 else 1.0  # bf16 spacing at |100| is 0.5
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance)


def test_rms_norm_gradients_match_formula(norm):
    x = torch.randn(2, 5, 48, requires_grad=True)
    residual = torch.randn(2, 5, 48, requires_grad=True)
    reference = GemmaEncoderRMSNorm(48)
    reference.load_state_dict(norm.state_dict())

    norm(x, residual=residual).square().sum().backward()
    ours = (x.grad.clone(), residual.grad.clone(), norm.weight.grad.clone())
    x.grad = residual.grad = None
    (residual + reference_rms_norm(x, reference.weight, reference.eps)).square().sum().backward()
    for got, want in zip(ours, (x.grad, residual.grad, reference.weight.grad)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _rotary_inputs(requires_grad: bool = False):
    torch.manual_seed(0)
    # (batch, seq, heads, dim) viewed as (batch, heads, seq, dim): the layout the attention projections produce.
    x = torch.randn(2, 9, 3, 16).transpose(1, 2)
    x.requires_grad_(requires_grad)
    position_ids = torch.tensor([list(range(9)), [0, 0, 0, 1, 2, 3, 4, 5, 6]])
    cos, sin = rotary_cos_sin(position_ids, 16, 10_000.0, 1.0, torch.float32)
    return x, cos, sin


def test_rotary_matches_rotate_half_formula():
    x, cos, sin = _rotary_inputs()
    torch.testing.assert_close(apply_rotary(x, cos, sin), reference_rotary(x, cos, sin), rtol=1e-6, atol=1e-6)
    # A rotation keeps each (i, i + d/2) pair's norm: a wrong pairing or sign would not.
    def pair_norms(t):
        return t[..., :8] ** 2 + t[..., 8:] ** 2

    torch.testing.assert_close(pair_norms(apply_rotary(x, cos, sin)), pair_norms(x), rtol=1e-5, atol=1e-5)


def test_rotary_gradients_match_formula():
    x, cos, sin = _rotary_inputs(requires_grad=True)
    weights = torch.randn(2, 3, 9, 16)
    (apply_rotary(x, cos, sin) * weights).sum().backward()
    ours = x.grad.clone()
    x.grad = None
    (reference_rotary(x, cos, sin) * weights).sum().backward()
    torch.testing.assert_close(ours, x.grad, rtol=1e-6, atol=1e-6)


@pytest.fixture
def mlp() -> GemmaEncoderMLP:
    torch.manual_seed(0)
    return GemmaEncoderMLP(tiny_encoder_config()).eval()


def test_feed_forward_in_chunks_matches_whole(mlp, monkeypatch):
    monkeypatch.setattr(modeling, "FEED_FORWARD_CHUNK_TOKENS", 8)
    calls = []
    original = GemmaEncoderMLP._feed_forward
    monkeypatch.setattr(GemmaEncoderMLP, "_feed_forward", lambda self, x: calls.append(len(x)) or original(self, x))
    x = torch.randn(3, 7, mlp.gate_proj.in_features)  # 21 tokens: chunks of 8, 8, 5
    with torch.inference_mode():
        actual = mlp(x)
    assert calls == [8, 8, 5]
    assert actual.shape == x.shape
    torch.testing.assert_close(actual, reference_feed_forward(mlp, x), rtol=1e-5, atol=1e-6)


def test_feed_forward_under_autograd_is_whole_and_differentiable(mlp, monkeypatch):
    monkeypatch.setattr(modeling, "FEED_FORWARD_CHUNK_TOKENS", 8)
    calls = []
    original = GemmaEncoderMLP._feed_forward
    monkeypatch.setattr(GemmaEncoderMLP, "_feed_forward", lambda self, x: calls.append(x.shape) or original(self, x))
    x = torch.randn(3, 7, mlp.gate_proj.in_features, requires_grad=True)
    mlp(x).square().sum().backward()
    assert calls == [x.shape]
    ours = x.grad.clone(), mlp.gate_proj.weight.grad.clone()
    x.grad = None
    mlp.zero_grad()
    reference_feed_forward(mlp, x).square().sum().backward()
    torch.testing.assert_close(ours[0], x.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[1], mlp.gate_proj.weight.grad, rtol=1e-5, atol=1e-6)

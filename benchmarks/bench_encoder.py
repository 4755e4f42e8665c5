# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Speed and memory of GemmaEncoderModel against transformers' own bidirectional Gemma3TextModel.

One run, the same weights and the same tokenized batches for both models, repetitions interleaved (ours, native,
then native, ours, ...) so that load changes on a shared machine hit both alike; medians are reported.

Workloads:
    uniform-BxL   random token ids, no padding (default 8 x 256)
    sst2          SST-2 train sentences in arrival (random) order, batches of 32, padded per batch
    scifact       SciFact (claim, title + abstract) pairs: one query's BM25 top-32 per batch, truncated to 512 tokens
    lora          one LoRA fine-tuning step (forward, backward, AdamW) of backbone + mean pooling + linear head on
                  the SST-2 batches

Reported per workload: real tokens/s (both models are credited with the same real tokens), peak memory above the
weights, ratios ours/native, and FLOP/s as a fraction of a square-matmul peak measured in the same run, both
"useful" (FLOPs of real tokens, attention within each text's window) and "executed" (what the kernels computed,
padding included).

    python benchmarks/bench_encoder.py                        # CPU, fp32, the embedded Gemma 3 270M
    python benchmarks/bench_encoder.py --config 1b --device cuda --dtype bfloat16 --uniform 8x256,16x512

Only Gemma3TextModel is compared for the Gemma 3 checkpoints measured here: transformers' Gemma/Gemma2 models ignore
`use_bidirectional_attention` on their eager and padded-sdpa paths (see DESIGN.md), so no native bidirectional
Gemma 1/2 exists to compare against.
"""

import argparse
import ctypes
import ctypes.util
import functools
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import AutoTokenizer, Gemma3TextConfig, Gemma3TextModel

from gemma_encoder_hf import GemmaEncoderConfig, GemmaEncoderModel
from gemma_encoder_hf.harness.training import encoder_dir
from gemma_encoder_hf.modeling.modeling_gemma_encoder import attends_causally, attention_window

REPO_ROOT = Path(__file__).resolve().parent.parent

# Gemma 3 1B's text tower (random weights): the "1B-class" configuration of GPU runs.
GEMMA3_1B = dict(
    hidden_size=1152,
    intermediate_size=6912,
    num_hidden_layers=26,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=256,
    sliding_window=512,
    layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 4 + ["sliding_attention"] * 2,
)
# Dense bf16 tensor-core peaks from the vendors' data sheets, for MFU against the nominal figure.
NOMINAL_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


# ----------------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------------


def default_model_dir() -> Path:
    """The embedded Gemma 3 270M converted once into the user cache (later runs load it in seconds)."""
    return encoder_dir("embedded", Path.home() / ".cache" / "gemma_encoder_hf" / "bench")


def load_ours(args, device: torch.device, dtype: torch.dtype) -> GemmaEncoderModel:
    if args.config == "1b":
        config = GemmaEncoderConfig.from_pretrained(args.model_dir)  # the 270M's encoder settings and vocabulary
        for name, value in GEMMA3_1B.items():
            setattr(config, name, value)
        torch.manual_seed(0)
        with torch.device(device):
            model = GemmaEncoderModel(config).to(dtype)
    else:
        model = GemmaEncoderModel.from_pretrained(args.model_dir, dtype=dtype).to(device)
    model.set_attn_implementation(args.attn_implementation)
    return model.eval()


def native_twin(ours: GemmaEncoderModel) -> Gemma3TextModel:
    """transformers' Gemma3TextModel(use_bidirectional_attention=True) holding our weights (sdpa attention)."""
    c = ours.config
    if c.decoder_model_type not in (None, "gemma3_text") or c.attention != "bidirectional":
        raise ValueError("The native comparison needs a bidirectional Gemma 3 encoder.")
    if "sliding_attention" in c.layer_types and c.bidirectional_window != "split":
        raise ValueError("Gemma3TextModel's bidirectional sliding window is the 'split' window only.")
    # Passing the flag to the constructor makes Gemma3TextConfig store window // 2 + 1: the same span as "split".
    native_config = Gemma3TextConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        hidden_activation=c.hidden_activation,
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps,
        query_pre_attn_scalar=c.query_pre_attn_scalar,
        sliding_window=c.sliding_window,
        layer_types=list(c.layer_types),
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": c.rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": c.rope_base_for["sliding_attention"]},
        },
        pad_token_id=c.pad_token_id,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        use_bidirectional_attention=True,
        use_cache=False,  # an encoder keeps no key/value cache; with it, native would also pay for filling one
    )
    native_config._attn_implementation = "sdpa"
    parameter = next(ours.parameters())
    with torch.device(parameter.device):
        native = Gemma3TextModel(native_config).to(parameter.dtype)
    state = {k: v for k, v in ours.state_dict().items() if not k.startswith("pooler.")}
    native.load_state_dict(state, strict=True)
    return native.eval()


def check_same_function(ours, native, batch: dict, dtype: torch.dtype) -> float:
    """Max |difference| of the two models' real-token states: the comparison is only fair if they compute the same.

    The gate is the relative error ||ours - native|| / ||native||, which does not grow with the states' scale: in
    bf16 a 26-layer stack of random weights differs by up to 0.16 in absolute terms from rounding alone (0.33 with
    compiled layers, whose fused kernels round differently), while a wrong mask or position moves the states by tens
    of percent.
    """
    with torch.inference_mode():
        a = ours(**batch).last_hidden_state
        b = native(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    a, b = a[real].float(), b[real].float()
    relative = ((a - b).norm() / b.norm()).item()
    limit = 1e-5 if dtype == torch.float32 else 2e-2
    if relative > limit:
        raise RuntimeError(f"ours and native differ by {relative:.3g} relative (> {limit}); the benchmark would be "
                           "meaningless.")  # fmt: skip
    return (a - b).abs().max().item()


# ----------------------------------------------------------------------------------------------------------------------
# Workloads
# ----------------------------------------------------------------------------------------------------------------------


def sst2_batches(data: Path, tokenizer, n_batches: int, batch_size: int, max_length: int, seed: int = 0):
    lines = (data / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    sentences = [line.split("\t")[0] for line in lines]
    labels = [int(line.split("\t")[1]) for line in lines]
    picked = random.Random(seed).sample(range(len(sentences)), n_batches * batch_size)
    batches = []
    for start in range(0, len(picked), batch_size):
        ids = picked[start : start + batch_size]
        batch = tokenizer([sentences[i] for i in ids], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")  # fmt: skip
        batch["labels"] = torch.tensor([labels[i] for i in ids])
        batches.append(dict(batch))
    return batches


def scifact_batches(data: Path, tokenizer, n_batches: int, batch_size: int, max_length: int):
    """One query's BM25 top-`batch_size` passages per batch, as a reranker scores them."""
    root = data / "scifact"
    queries = {q["_id"]: q["text"] for q in map(json.loads, (root / "queries.train.jsonl").open(encoding="utf-8"))}
    corpus = {
        d["_id"]: f"{d['title']} {d['text']}".strip()
        for d in map(json.loads, (root / "corpus.jsonl").open(encoding="utf-8"))
    }
    candidates: dict[str, list[str]] = {}
    for line in (root / "candidates" / "bm25_top100.train.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        query_id, doc_id, *_ = line.split("\t")
        candidates.setdefault(query_id, []).append(doc_id)
    batches = []
    for query_id, doc_ids in candidates.items():
        if len(batches) == n_batches:
            break
        if len(doc_ids) < batch_size:
            continue
        pairs = [(queries[query_id], corpus[d]) for d in doc_ids[:batch_size]]
        batch = tokenizer([p[0] for p in pairs], [p[1] for p in pairs], padding=True, truncation="only_second",
                          max_length=max_length, return_tensors="pt")  # fmt: skip
        batches.append(dict(batch))
    return batches


def uniform_batch(vocab_size: int, batch: int, length: int):
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, vocab_size, (batch, length), generator=generator)
    return [{"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}]


# ----------------------------------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` square matmuls: the machine's practical ceiling for this dtype."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def set_malloc_thresholds(mmap_threshold: int, trim_threshold: int) -> None:
    """Fix glibc's mmap and trim thresholds (bytes) for the blocks allocated from now on (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    libc.mallopt(m_mmap_threshold, mmap_threshold)
    libc.mallopt(m_trim_threshold, trim_threshold)
    libc.malloc_trim(0)


# Timings run with freed blocks kept on the heap for reuse: the state glibc's adaptive thresholds settle in after a
# few forward passes (its mmap threshold climbs to the largest freed block, at most 32 MiB), fixed here so that both
# models are timed under the same allocator whatever ran before.
TIMING_MALLOC = (32 * 2**20, 64 * 2**20)
# Memory is read as resident set size: every tensor-sized block is then its own mapping, returned to the OS on free,
# so RSS follows what is allocated instead of what the heap kept from earlier passes.
MEMORY_MALLOC = (64 * 2**10, 128 * 2**10)


class RssSampler:
    """Peak resident set size above the level at start, sampled every 0.5 ms from /proc (CPU runs)."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.0005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def extra(self) -> int:
        return self.peak - self.base


def forward_pass(model, batches, device) -> None:
    with torch.inference_mode():
        for batch in batches:
            model(**{k: v.to(device) for k, v in batch.items() if k != "labels"})
    synchronize(device)


def peak_memory(run, device: torch.device) -> int:
    """Bytes allocated at peak during `run()` above what was allocated before it (activations, workspaces)."""
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        return torch.cuda.max_memory_allocated(device) - before
    set_malloc_thresholds(*MEMORY_MALLOC)
    try:
        with RssSampler() as sampler:
            run()
    finally:
        set_malloc_thresholds(*TIMING_MALLOC)
    return sampler.extra


@dataclass
class FlopCount:
    useful: float  # real tokens only; attention over the keys each query's window allows within its own text
    executed: float  # what the kernels computed, padding included


def linear_flops_per_token(config) -> float:
    h, i, d = config.hidden_size, config.intermediate_size, config.head_dim
    q, kv = config.num_attention_heads * d, config.num_key_value_heads * d
    return 2.0 * config.num_hidden_layers * (h * q + 2 * h * kv + q * h + 3 * h * i)


def attention_flops(config, length: int, keys_per_query: float) -> float:
    """QK^T and PV of one text for all layers: 4 * heads * head_dim per (query, key) pair."""
    return 4.0 * config.num_attention_heads * config.head_dim * length * keys_per_query


@functools.lru_cache(maxsize=None)
def windowed_keys(length: int, window: tuple[int, int]) -> float:
    """Mean number of keys a query sees in a text of `length` tokens under a (left, right) window."""
    left, right = (length if w < 0 else w for w in window)
    total = sum(min(i, left) + min(length - 1 - i, right) + 1 for i in range(length))
    return total / length


def count_flops(config, batches, packed_ours: list[bool], native: bool) -> FlopCount:
    per_token = linear_flops_per_token(config)
    useful = executed = 0.0
    for batch, packed in zip(batches, packed_ours):
        mask = batch["attention_mask"]
        lengths = [int(n) for n in mask.sum(-1).tolist()]
        padded_length = mask.shape[1]
        for i, layer_type in enumerate(config.layer_types):
            window = attention_window(config, layer_type, attends_causally(config, i))
            for n in lengths:
                layer_linear = per_token / config.num_hidden_layers * n
                useful += layer_linear + attention_flops(config, n, windowed_keys(n, window))
                if packed and not native:
                    executed += layer_linear + attention_flops(config, n, n)
                else:
                    padded_linear = per_token / config.num_hidden_layers * padded_length
                    executed += padded_linear + attention_flops(config, padded_length, padded_length)
    return FlopCount(useful, executed)


def median(values: list[float]) -> float:
    return statistics.median(values)


# ----------------------------------------------------------------------------------------------------------------------
# LoRA step
# ----------------------------------------------------------------------------------------------------------------------


class PooledClassifier(torch.nn.Module):
    """Backbone -> mean over real tokens -> linear: the same head on top of either backbone."""

    def __init__(self, backbone, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(hidden_size, 2)

    def forward(self, input_ids, attention_mask, labels):
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1)
        return torch.nn.functional.cross_entropy(self.head(pooled).float(), labels)


def lora_trainer(backbone, hidden_size: int, device: torch.device):
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    torch.manual_seed(0)
    model = PooledClassifier(backbone, hidden_size).to(device)
    model.backbone = get_peft_model(model.backbone, LoraConfig(r=16, lora_alpha=32, target_modules=targets))
    model.head.to(next(backbone.parameters()).dtype)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def steps(batches):
        for batch in batches:
            loss = model(**{k: v.to(device) for k, v in batch.items()})
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        synchronize(device)

    return steps


# ----------------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    return platform.processor()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="data root (default: %(default)s)",
                        default=Path(os.environ.get("GEMMA_ENCODER_DATA") or REPO_ROOT.parent / "shared" / "data"))
    parser.add_argument("--model-dir", type=Path, default=None, help="converted encoder (default: embedded 270M)")
    parser.add_argument("--config", choices=["270m", "1b"], default="270m", help="1b: random Gemma 3 1B weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="fp32 on CPU, bf16 on GPU")
    parser.add_argument("--attn-implementation", default="sdpa", help="ours: sdpa, eager, flex_attention, ...")
    parser.add_argument("--uniform", default="8x256", help="comma-separated BxL uniform batches")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every layer of both models (fixed shapes: meant for uniform workloads)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sst2-batches", type=int, default=4)
    parser.add_argument("--scifact-batches", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed repetitions per workload")
    parser.add_argument("--lora-batches", type=int, default=2, help="SST-2 batches per timed LoRA repetition; 0 skips")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results", help="JSON/Markdown folder")
    parser.add_argument("--tag", default=None, help="results file suffix (default: device type and config)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float32" if device.type == "cpu" else "bfloat16"))
    args.model_dir = args.model_dir or default_model_dir()
    load_start = os.getloadavg()
    if device.type == "cpu":
        set_malloc_thresholds(*TIMING_MALLOC)

    ours = load_ours(args, device, dtype)
    native = native_twin(ours)
    if args.compile:
        for layer in (*ours.layers, *native.layers):
            layer.compile()
    config = ours.config
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    workloads: dict[str, list[dict]] = {}
    for shape in filter(None, args.uniform.split(",")):
        b, length = (int(x) for x in shape.lower().split("x"))
        workloads[f"uniform-{b}x{length}"] = uniform_batch(config.vocab_size, b, length)
    if args.sst2_batches:
        workloads["sst2"] = sst2_batches(args.data, tokenizer, args.sst2_batches, args.batch_size, args.max_length)
    if args.scifact_batches:
        workloads["scifact"] = scifact_batches(args.data, tokenizer, args.scifact_batches, args.batch_size,
                                               args.max_length)  # fmt: skip
    first_padded = next(iter(b for w in workloads.values() for b in w if not b["attention_mask"].all()), None)
    check = first_padded or next(iter(workloads.values()))[0]
    max_diff = check_same_function(ours, native, {k: v.to(device) for k, v in check.items() if k != "labels"}, dtype)
    print(f"device: {device_name(device)}, dtype {dtype}, torch {torch.__version__}; "
          f"ours == native within {max_diff:.2e}")  # fmt: skip

    peaks = [matmul_peak(device, dtype)]
    models = {"ours": ours, "native": native}
    results = {}
    for name, batches in workloads.items():
        real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        padded_tokens = sum(b["attention_mask"].numel() for b in batches)
        packed = [ours._packed_layout(b["attention_mask"].to(device), None) is not None for b in batches]
        for model in models.values():  # first-call allocations, kernel choice
            forward_pass(model, batches[:1], device)
        times = {m: [] for m in models}
        for rep in range(args.repeats):
            order = list(models) if rep % 2 == 0 else list(models)[::-1]
            for m in order:
                start = time.perf_counter()
                forward_pass(models[m], batches, device)
                times[m].append(time.perf_counter() - start)
        memory = {m: peak_memory(lambda m=m: forward_pass(models[m], batches, device), device) for m in models}
        entry = {"batches": len(batches), "real_tokens": real_tokens, "padded_tokens": padded_tokens,
                 "padding_fraction": 1 - real_tokens / padded_tokens, "ours_packed": all(packed)}  # fmt: skip
        for m in models:
            seconds = median(times[m])
            flops = count_flops(config, batches, packed, native=m == "native")
            entry[m] = {
                "seconds": seconds,
                "seconds_all": times[m],
                "tokens_per_s": real_tokens / seconds,
                "peak_memory_bytes": memory[m],
                "useful_flops_per_s": flops.useful / seconds,
                "executed_flops_per_s": flops.executed / seconds,
            }
        entry["speedup"] = entry["ours"]["tokens_per_s"] / entry["native"]["tokens_per_s"]
        entry["memory_ratio"] = entry["ours"]["peak_memory_bytes"] / max(entry["native"]["peak_memory_bytes"], 1)
        results[name] = entry
        print(f"{name}: ours {entry['ours']['tokens_per_s']:.0f} tok/s, native {entry['native']['tokens_per_s']:.0f} "
              f"tok/s, ratio {entry['speedup']:.2f}", flush=True)  # fmt: skip

    if args.lora_batches and "sst2" in workloads and not args.compile:
        batches = sst2_batches(args.data, tokenizer, args.lora_batches, args.batch_size, args.max_length, seed=1)
        trainers = {"ours": lora_trainer(ours, config.hidden_size, device),
                    "native": lora_trainer(native, config.hidden_size, device)}  # fmt: skip
        for step in trainers.values():
            step(batches[:1])
        times = {m: [] for m in trainers}
        for rep in range(args.repeats):
            for m in list(trainers) if rep % 2 == 0 else list(trainers)[::-1]:
                start = time.perf_counter()
                trainers[m](batches)
                times[m].append(time.perf_counter() - start)
        memory = {m: peak_memory(lambda m=m: trainers[m](batches[:1]), device) for m in trainers}
        entry = {"steps": len(batches), "batch_size": args.batch_size}
        for m in trainers:
            entry[m] = {"steps_per_s": len(batches) / median(times[m]), "seconds_all": times[m],
                        "peak_memory_bytes": memory[m]}  # fmt: skip
        entry["speedup"] = entry["ours"]["steps_per_s"] / entry["native"]["steps_per_s"]
        results["lora-step-sst2"] = entry
        print(f"lora step: ours {entry['ours']['steps_per_s']:.3f} steps/s, native "
              f"{entry['native']['steps_per_s']:.3f}, ratio {entry['speedup']:.2f}", flush=True)  # fmt: skip

    peaks.append(matmul_peak(device, dtype))
    peak = max(peaks)
    name = device_name(device)
    nominal = next((v for k, v in NOMINAL_BF16_PEAK.items() if k in name), None) if dtype == torch.bfloat16 else None
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "device": name,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "model": f"Gemma 3 {'1B-class (random weights)' if args.config == '1b' else '270M (embedded GGUF)'}",
        "attn_implementation": {"ours": args.attn_implementation, "native": "sdpa"},
        "compiled_layers": args.compile,
        "max_abs_diff_ours_vs_native": max_diff,
        "matmul_peak_flops_per_s": peak,
        "matmul_peaks_start_end": peaks,
        "nominal_peak_flops_per_s": nominal,
        "load_average_start_end": [load_start, os.getloadavg()],
        "workloads": results,
    }
    report["targets"] = check_targets(report, device)
    markdown = render(report)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"perf_{args.tag or f'{device.type}_{args.config}'}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown)
    print(f"wrote {args.out / stem}.json and .md")
    return report


def check_targets(report: dict, device: torch.device) -> list[dict]:
    """The issue's targets, evaluated on this run."""
    peak = report["matmul_peak_flops_per_s"]
    targets = []
    for name, entry in report["workloads"].items():
        if name.startswith("lora"):
            continue
        variable = not name.startswith("uniform")
        goal = (1.5 if variable else 1.0) if device.type == "cpu" else (1.3 if variable else None)
        if goal is not None:
            targets.append({"target": f"{name}: tokens/s ours/native >= {goal}", "value": entry["speedup"],
                            "met": entry["speedup"] >= goal})  # fmt: skip
        if device.type == "cpu":
            fraction = entry["ours"]["useful_flops_per_s"] / peak
            targets.append({"target": f"{name}: useful FLOP/s >= 70% of matmul peak", "value": fraction,
                            "met": fraction >= 0.7})  # fmt: skip
        elif name.startswith("uniform") and name.endswith("x512") and report["nominal_peak_flops_per_s"]:
            mfu = entry["ours"]["useful_flops_per_s"] / report["nominal_peak_flops_per_s"]
            targets.append({"target": f"{name}: bf16 MFU (nominal peak) >= 50%", "value": mfu, "met": mfu >= 0.5})
    return targets


def render(report: dict) -> str:
    peak = report["matmul_peak_flops_per_s"]
    gib = 2**30
    lines = [
        f"# {report['model']} — ours vs transformers Gemma3TextModel(use_bidirectional_attention=True)",
        "",
        f"{report['date']} · {report['device']} · {report['dtype']} · torch {report['torch']} · attention: ours "
        f"{report['attn_implementation']['ours']}, native sdpa"
        + (" · layers torch.compiled" if report["compiled_layers"] else "")
        + " · same weights (max |diff| "
        f"{report['max_abs_diff_ours_vs_native']:.1e}) · matmul peak {peak / 1e12:.3f} TFLOP/s"
        + (f" (nominal {report['nominal_peak_flops_per_s'] / 1e12:.0f})" if report["nominal_peak_flops_per_s"] else "")
        + f" · load average start/end {report['load_average_start_end'][0][0]:.1f}/"
        f"{report['load_average_start_end'][1][0]:.1f}",
        "",
        f"`{report['command']}`",
        "",
        "| workload | padding | ours tok/s | native tok/s | ours/native | peak mem ours / native (GiB) "
        "| useful FLOP/s % peak ours / native | executed % peak ours / native |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in report["workloads"].items():
        if name.startswith("lora"):
            continue
        o, n = e["ours"], e["native"]
        lines.append(
            f"| {name} | {e['padding_fraction']:.0%} | {o['tokens_per_s']:.0f} | {n['tokens_per_s']:.0f} | "
            f"**{e['speedup']:.2f}×** | {o['peak_memory_bytes'] / gib:.2f} / {n['peak_memory_bytes'] / gib:.2f} | "
            f"{o['useful_flops_per_s'] / peak:.0%} / {n['useful_flops_per_s'] / peak:.0%} | "
            f"{o['executed_flops_per_s'] / peak:.0%} / {n['executed_flops_per_s'] / peak:.0%} |"
        )
    lora = report["workloads"].get("lora-step-sst2")
    if lora:
        lines += [
            "",
            f"LoRA step (r=16 on all linears, mean pooling + linear head, AdamW; SST-2 batches of {lora['batch_size']}):"
            f" ours {lora['ours']['steps_per_s']:.3f} steps/s, native {lora['native']['steps_per_s']:.3f} steps/s, "
            f"**{lora['speedup']:.2f}×**; peak memory {lora['ours']['peak_memory_bytes'] / gib:.2f} / "
            f"{lora['native']['peak_memory_bytes'] / gib:.2f} GiB.",
        ]
    if report["targets"]:
        lines += ["", "| target | value | met |", "|---|---|---|"]
        for t in report["targets"]:
            value = f"{t['value']:.0%}" if "%" in t["target"] else f"{t['value']:.2f}×"
            lines.append(f"| {t['target']} | {value} | {'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Bulk inference (`gemma-encoder embed`): throughput against SentenceTransformer.encode, peak memory against input
size, and 2 data-parallel processes against 1. All ratios come from one run, on one machine.

Parts:
    throughput  `--model 270m`: the real Gemma 3 270M (converted from the embedded GGUF), or `--model small`: a
                random 4-layer GemmaEncoder with the real Gemma 3 tokenizer, for machines too slow for the 270M.
                SST-2 train sentences in file order (real variable-length text): `run_bulk` file -> file (JSONL
                in, Parquet out, model load included)
                against SentenceTransformer(model folder) load + `encode` of the same texts in memory, same
                batch size, twice: with the model's packed execution (what sentence-transformers runs on a
                GemmaEncoder) and with its padded computation (`packed_execution="never"`: what it runs on an
                encoder that pads each length-sorted batch). Runs interleaved, the order rotated every
                repetition, so load changes on a shared machine hit every path.
    memory      peak resident memory of `gemma-encoder embed` over 10k, 50k and 200k rows (SST-2 sentences cycled),
                each in a fresh process. A tiny random model (2 layers, hidden 32) with the real Gemma tokenizer
                keeps 200k rows affordable on a CPU: what is measured is whether memory grows with the input, which
                depends on the streaming, not on the model.
    processes   `accelerate launch` with 2 ranks against 1 process, one thread per rank, `--model`, SST-2 sentences.

    python benchmarks/bench_bulk.py --throughput-rows 4000 --repeats 3 --process-rows 1000 \
        --out benchmarks/results/bulk_cpu
    python benchmarks/bench_bulk.py --model small --throughput-rows 2000 --out benchmarks/results/bulk_small
"""

import argparse
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"


def sst2_sentences(data: Path, n: int) -> list[str]:
    lines = (data / "sst2" / "train.tsv").read_text().splitlines()[1:]
    sentences = [line.rsplit("\t", 1)[0].strip() for line in lines]
    return [s for s in itertools.islice(itertools.cycle(sentences), n)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    with open(path, "w") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": f"s{i}", "text": text}) + "\n")
    return path


# Random GemmaEncoders with the real Gemma 3 tokenizer: "small" for throughput when the real 270M is too slow for the
# machine, "tiny" for memory against input size (which depends on the streaming, not on the model).
RANDOM_MODELS = {
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, head_dim=64,
                  query_pre_attn_scalar=64, sliding_window=512,
                  layer_types=["sliding_attention"] * 3 + ["full_attention"]),
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, head_dim=16,
                 query_pre_attn_scalar=16, sliding_window=4, layer_types=["sliding_attention", "full_attention"]),
}  # fmt: skip
MODEL_NAMES = {
    "270m": "Gemma 3 270M encoder (embedded GGUF, fp32)",
    "small": "random GemmaEncoder, 4 layers, hidden 256, Gemma 3 tokenizer (262k vocabulary), fp32",
    "tiny": "random GemmaEncoder, 2 layers, hidden 32, Gemma 3 tokenizer, fp32",
}


def model_folder(name: str, work: Path) -> Path:
    from transformers import AutoTokenizer

    from gemma_encoder_hf import GemmaEncoderConfig, GemmaEncoderModel
    from gemma_encoder_hf.harness.training import encoder_dir
    from gemma_encoder_hf.integrations.conversion import load_decoder_tokenizer

    if name == "270m":
        return encoder_dir("embedded", work)  # fp32, converted once (atomically) and reused
    folder = work / f"{name}-encoder"
    if (folder / "config.json").exists():
        return folder
    tokenizer_folder = work / "gemma3-tokenizer"  # converting the GGUF's 262k vocabulary is slow: once
    if not (tokenizer_folder / "tokenizer.json").exists():
        load_decoder_tokenizer("embedded", 512).save_pretrained(tokenizer_folder)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    config = GemmaEncoderConfig(vocab_size=len(tokenizer), num_key_value_heads=1, max_position_embeddings=512,
                                **RANDOM_MODELS[name])  # fmt: skip
    torch.manual_seed(0)
    GemmaEncoderModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def time_bulk(model: Path, source: Path, out: Path, batch_size: int, shard_size: int = 10_000) -> float:
    from gemma_encoder_hf.harness.bulk import Columns, run_bulk

    shutil.rmtree(out.with_name(out.name + ".parts"), ignore_errors=True)
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    run_bulk("embed", model, source, out, Columns(id="id"), batch_size=batch_size, shard_size=shard_size,
             device="cpu", show_progress_bar=False)  # fmt: skip
    return time.perf_counter() - start


def time_sentence_transformers(
    model: Path, texts: list[str], batch_size: int, packed_execution: str = "auto"
) -> tuple[float, torch.Tensor]:
    """SentenceTransformer load + encode. `packed_execution="never"` runs the model's padded computation: what
    sentence-transformers gets from an encoder that pads every batch to its longest text (it sorts by length first)."""
    from sentence_transformers import SentenceTransformer

    start = time.perf_counter()
    st = SentenceTransformer(str(model), device="cpu", config_kwargs={"packed_execution": packed_execution})
    vectors = st.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
    return time.perf_counter() - start, vectors


def throughput(model: Path, texts: list[str], work: Path, batch_size: int, repeats: int) -> dict:
    from transformers import AutoTokenizer

    source = write_jsonl(work / "throughput.jsonl", texts)
    out = work / "throughput.parquet"
    paths = ("bulk", "st", "st_padded")
    times: dict[str, list[float]] = {path: [] for path in paths}
    vectors = {}
    for r in range(repeats):  # interleaved, the order rotated every repetition
        for which in paths[r % len(paths):] + paths[: r % len(paths)]:
            if which == "bulk":
                times[which].append(time_bulk(model, source, out, batch_size))
            else:
                packed = "auto" if which == "st" else "never"
                seconds, vectors[which] = time_sentence_transformers(model, texts, batch_size, packed)
                times[which].append(seconds)
    table = pq.read_table(out)
    bulk_vectors = torch.tensor(table.column("embedding").combine_chunks().flatten().to_numpy()).view(len(texts), -1)
    tokens = sum(len(ids) for ids in AutoTokenizer.from_pretrained(model)(texts)["input_ids"])
    median = {path: statistics.median(seconds) for path, seconds in times.items()}
    return {
        "rows": len(texts),
        "tokens": tokens,
        "batch_size": batch_size,
        "bulk_seconds": [round(t, 1) for t in times["bulk"]],
        "sentence_transformers_seconds": [round(t, 1) for t in times["st"]],
        "sentence_transformers_padded_seconds": [round(t, 1) for t in times["st_padded"]],
        "bulk_rows_per_s": round(len(texts) / median["bulk"], 1),
        "bulk_tokens_per_s": round(tokens / median["bulk"], 1),
        "sentence_transformers_rows_per_s": round(len(texts) / median["st"], 1),
        "sentence_transformers_padded_rows_per_s": round(len(texts) / median["st_padded"], 1),
        "ratio_bulk_over_sentence_transformers": round(median["st"] / median["bulk"], 3),
        "ratio_bulk_over_sentence_transformers_padded": round(median["st_padded"] / median["bulk"], 3),
        "max_abs_difference_of_vectors": max(float((bulk_vectors - v.cpu()).abs().max()) for v in vectors.values()),
    }


def peak_memory_child(model: Path, source: Path, out: Path, shard_size: int, batch_size: int) -> None:
    """Run in a fresh process: one bulk run, then print its peak resident memory (MiB) and time as JSON."""
    seconds = time_bulk(model, source, out, batch_size=batch_size, shard_size=shard_size)
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across execve, so a child started by a parent that
    # once held the converted 270M would report the parent's peak.
    status = Path("/proc/self/status").read_text()
    peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    print(json.dumps({"peak_rss_mib": round(peak_kib / 1024, 1), "seconds": round(seconds, 1)}))


def memory(model: Path, data: Path, work: Path, sizes: list[int], shard_size: int, batch_size: int):
    """Yields one record per input size, as each is measured."""
    for n in sizes:
        source = write_jsonl(work / f"memory-{n}.jsonl", sst2_sentences(data, n))
        out = work / f"memory-{n}.parquet"
        child = ["--memory-child", str(model), str(source), str(out), str(shard_size), str(batch_size)]
        command = [sys.executable, __file__, *child]
        completed = subprocess.run(command, capture_output=True, text=True, env=_env(threads=None), check=True)
        record = json.loads(completed.stdout.strip().splitlines()[-1])
        assert pq.ParquetFile(out).metadata.num_rows == n
        input_mib = round(source.stat().st_size / 2**20, 1)
        out.unlink()
        source.unlink()
        yield {"rows": n, "input_mib": input_mib, **record}


def _env(threads: int | None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    env.update(CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes(model: Path, texts: list[str], work: Path, batch_size: int, shard_size: int) -> dict:
    source = write_jsonl(work / "processes.jsonl", texts)
    cli = ["-m", "gemma_encoder_hf.harness.cli", "embed", str(model), str(source)]
    options = ["--id-column", "id", "--batch-size", str(batch_size), "--shard-size", str(shard_size), "--device", "cpu"]
    timings = {}
    for ranks in (1, 2):
        out = work / f"processes-{ranks}.parquet"
        out.unlink(missing_ok=True)
        launch = [sys.executable] if ranks == 1 else [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()),
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(launch + cli + [str(out)] + options, env=_env(threads=1), check=True, capture_output=True)
        timings[ranks] = time.perf_counter() - start
    equal = pq.read_table(work / "processes-1.parquet").equals(pq.read_table(work / "processes-2.parquet"))
    return {
        "rows": len(texts),
        "shard_size": shard_size,
        "threads_per_rank": 1,
        "one_process_seconds": round(timings[1], 1),
        "two_processes_seconds": round(timings[2], 1),
        "speedup": round(timings[1] / timings[2], 3),
        "outputs_equal": equal,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        model, source, out, shard_size, batch_size = sys.argv[2:]
        peak_memory_child(Path(model), Path(source), Path(out), int(shard_size), int(batch_size))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--work-dir", type=Path, default=Path("/tmp/bench_bulk"), help="converted models and inputs (not the repo)"
    )
    parser.add_argument("--model", choices=("270m", "small"), default="270m", help="model of throughput and processes")
    parser.add_argument("--throughput-rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--memory-rows", default="10000,50000,200000")
    parser.add_argument("--memory-shard-size", type=int, default=10_000)
    parser.add_argument("--memory-batch-size", type=int, default=256)
    parser.add_argument("--process-rows", type=int, default=1000)
    parser.add_argument("--parts", default="throughput,memory,processes")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")

    started = time.perf_counter()
    model = model_folder(args.model, args.work_dir)
    record = {
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads",
        "model": MODEL_NAMES[args.model],
    }
    if "throughput" in parts:
        texts = sst2_sentences(args.data, args.throughput_rows)
        record["throughput"] = throughput(model, texts, args.work_dir, args.batch_size, args.repeats)
        save(record, args.out, started)
    if "memory" in parts:
        sizes = [int(n) for n in args.memory_rows.split(",")]
        record["memory_model"] = MODEL_NAMES["tiny"]
        tiny = model_folder("tiny", args.work_dir)
        record["memory"] = []
        for result in memory(tiny, args.data, args.work_dir, sizes, args.memory_shard_size, args.memory_batch_size):
            record["memory"].append(result)
            save(record, args.out, started)
    if "processes" in parts:
        texts = sst2_sentences(args.data, args.process_rows)
        record["processes"] = processes(model, texts, args.work_dir, args.batch_size, shard_size=100)
        save(record, args.out, started)


def save(record: dict, out: Path | None, started: float) -> None:
    """Print and write the results so far (after every part: a bounded run that is stopped keeps what it measured)."""
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(record), flush=True)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(record))


def markdown(record: dict) -> str:
    lines = ["# Bulk inference on CPU", "", f"`{record['command']}`", "", f"{record['date']}; {record['machine']}.", ""]
    if "throughput" in record:
        t = record["throughput"]
        lines += [
            f"## Throughput: {record['model']}, {t['rows']} SST-2 sentences ({t['tokens']} tokens), "
            f"batch {t['batch_size']}",
            "",
            "| path | rows/s | seconds (each run) |",
            "|---|---|---|",
            f"| `run_bulk` JSONL -> Parquet (load included) | {t['bulk_rows_per_s']} | {t['bulk_seconds']} |",
            f"| SentenceTransformer load + encode (the model's packed execution) | "
            f"{t['sentence_transformers_rows_per_s']} | {t['sentence_transformers_seconds']} |",
            f"| SentenceTransformer load + encode, padded computation (`packed_execution=\"never\"`) | "
            f"{t['sentence_transformers_padded_rows_per_s']} | {t['sentence_transformers_padded_seconds']} |",
            "",
            f"Ratio bulk / sentence-transformers: **{t['ratio_bulk_over_sentence_transformers']}x**; against "
            f"sentence-transformers with the padded computation: **"
            f"{t['ratio_bulk_over_sentence_transformers_padded']}x**; "
            f"bulk tokens/s {t['bulk_tokens_per_s']}; largest difference between bulk's vectors and either "
            f"sentence-transformers path's "
            f"{t['max_abs_difference_of_vectors']:.2e}.",
            "",
        ]
    if "memory" in record:
        lines += [f"## Peak memory against input size ({record['memory_model']})", "",
                  "| rows | input MiB | peak RSS MiB | seconds |", "|---|---|---|---|"]  # fmt: skip
        for m in record["memory"]:
            lines.append(f"| {m['rows']} | {m['input_mib']} | {m['peak_rss_mib']} | {m['seconds']} |")
        lines.append("")
    if "processes" in record:
        p = record["processes"]
        lines += [
            f"## 2 processes against 1 ({record['model']}, {p['rows']} rows, shards of {p['shard_size']}, "
            f"{p['threads_per_rank']} thread per rank, process start and model load included)",
            "",
            f"1 process {p['one_process_seconds']} s, 2 processes {p['two_processes_seconds']} s: "
            f"**{p['speedup']}x**; outputs equal: {p['outputs_equal']}.",
            "",
        ]
    lines.append(f"Wall time of the whole run: {record['wall_seconds']} s.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

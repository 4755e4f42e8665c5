# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Speed of the recurrent encoder (RecurrentGemma converted) against transformers' own RecurrentGemmaModel.

One run, the same random weights and token batches for every model, repetitions interleaved so that load changes on a
shared machine hit all alike; medians are reported, with ratios against transformers measured in the same run.

    transformers   RecurrentGemmaModel (use_cache=False): its RG-LRU loops over time in Python, one step per token
    ours causal    GemmaEncoderModel(attention="causal"): the same function (checked), the recurrence as a parallel
                   scan (`linear_scan`: ceil(log2 L) rounds of elementwise work instead of L sequential steps)
    ours bidir     the bidirectional encoder: both directions per recurrent layer, i.e. twice the convolution and
                   RG-LRU work of the causal one

The model is a narrow RecurrentGemma (`--hidden` wide, `--layers` layers in Griffin's recurrent, recurrent, attention
pattern) with random weights: speed does not depend on the values.

    python benchmarks/bench_recurrent.py                      # CPU, fp32, 4 x 256 and 4 x 1024 tokens
    python benchmarks/bench_recurrent.py --device cuda --dtype bfloat16 --shapes 8x2048
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import RecurrentGemmaConfig, RecurrentGemmaForCausalLM

from gemma_encoder_hf import GemmaEncoderModel

RESULTS = Path(__file__).resolve().parent / "results"


def build_models(args, device: torch.device, dtype: torch.dtype, folder: Path) -> dict[str, torch.nn.Module]:
    """transformers' model and ours, converted from the same random checkpoint the way users convert one."""
    config = RecurrentGemmaConfig(
        vocab_size=4096, hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 128, num_key_value_heads=1, attention_window_size=2048,
        block_types=["recurrent", "recurrent", "attention"],
    )  # fmt: skip
    torch.manual_seed(0)
    RecurrentGemmaForCausalLM(config).save_pretrained(folder)
    models = {"transformers": RecurrentGemmaForCausalLM.from_pretrained(folder).model}
    for attention in ("causal", "bidirectional"):
        models[f"ours {attention}"] = GemmaEncoderModel.from_decoder(folder, attention=attention)
    return {name: model.to(device=device, dtype=dtype).eval() for name, model in models.items()}


def forward(name: str, model, input_ids: torch.Tensor) -> torch.Tensor:
    if name == "transformers":
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        return model(input_ids=input_ids, position_ids=positions, use_cache=False).last_hidden_state
    return model(input_ids=input_ids).last_hidden_state


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(models: dict, input_ids: torch.Tensor, repeats: int, device: torch.device) -> dict[str, float]:
    seconds = {name: [] for name in models}
    with torch.inference_mode():
        outputs = {name: forward(name, model, input_ids) for name, model in models.items()}  # warm-up
        difference = float((outputs["transformers"] - outputs["ours causal"]).abs().max())
        for repeat in range(repeats):
            order = list(models) if repeat % 2 == 0 else list(reversed(models))
            for name in order:
                synchronize(device)
                start = time.perf_counter()
                forward(name, models[name], input_ids)
                synchronize(device)
                seconds[name].append(time.perf_counter() - start)
    return {"median_seconds": {n: statistics.median(s) for n, s in seconds.items()}, "max_abs_diff_causal": difference}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="4x256,4x1024", help="comma-separated BATCHxLENGTH")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", type=Path, default=RESULTS / "recurrent_cpu")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as folder:
        models = build_models(args, device, dtype, Path(folder))
    report = {
        "command": "python benchmarks/bench_recurrent.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "dtype": args.dtype,
        "model": {"hidden": args.hidden, "layers": args.layers, "pattern": "recurrent, recurrent, attention"},
        "shapes": {},
    }  # fmt: skip
    for shape in args.shapes.split(","):
        batch, length = (int(v) for v in shape.split("x"))
        input_ids = torch.randint(3, 4096, (batch, length), generator=torch.Generator().manual_seed(0)).to(device)
        result = measure(models, input_ids, args.repeats, device)
        native = result["median_seconds"]["transformers"]
        result["tokens_per_second"] = {n: batch * length / s for n, s in result["median_seconds"].items()}
        result["speedup_vs_transformers"] = {n: native / s for n, s in result["median_seconds"].items()}
        report["shapes"][shape] = result
        print(shape, json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(render(report))
    print(render(report))
    return report


def render(report: dict) -> str:
    lines = [
        "# Recurrent encoder against transformers' RecurrentGemmaModel (`benchmarks/bench_recurrent.py`)\n",
        f"`{report['command'].strip()}`\n",
        f"{report['date']}; {report['device']}, torch {report['torch']}, {report['threads']} threads, "
        f"{report['dtype']}; "
        f"random RecurrentGemma, hidden {report['model']['hidden']}, {report['model']['layers']} layers "
        f"({report['model']['pattern']}).\n",
        "| batch x length | transformers tokens/s | ours causal tokens/s (x) | ours bidirectional tokens/s (x) | "
        "max abs diff causal vs transformers |",
        "|---|---|---|---|---|",
    ]
    for shape, r in report["shapes"].items():
        tps, speedup = r["tokens_per_second"], r["speedup_vs_transformers"]
        lines.append(
            f"| {shape} | {tps['transformers']:.0f} | {tps['ours causal']:.0f} ({speedup['ours causal']:.2f}x) | "
            f"{tps['ours bidirectional']:.0f} ({speedup['ours bidirectional']:.2f}x) | {r['max_abs_diff_causal']:.1e} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""Ablation on the real Gemma 3 270M: attention x pooling x dropout, against transformers' native classifier.

Grid (per task): attention {bidirectional, causal} x pooling {mean, first, last, attention-query, attention-kv} x
dropout {0, 0.1} (attention, hidden and classifier dropout together), plus `native`: transformers'
`Gemma3TextForSequenceClassification` (causal attention, last-token logits, a single linear head) built from the same
GGUF weights and trained with the same budget, data, optimizer and seeds in the same run. Tasks: SST-2 (accuracy on
our validation split carved from train) and SciFact (nDCG@10 / MRR@10 reranking BM25 candidates of the given test
queries, listwise loss with BM25 hard negatives). The "main" cells run with every seed of the preset, the rest with
the first seed only.

Presets (`--preset`):
    cpu       2 CPU cores, ~45 min in all: SST-2 192 train / 200 validation examples, 64 tokens, frozen token
              embedding; SciFact for `native` and bidirectional-mean-d0.1 only: 24 train queries (groups of 4),
              15 test queries x BM25 top-10, 128 tokens.
    gpu       one H100: full SST-2 (65k train, 2,000 validation), 128 tokens, bf16; SciFact 809 train queries,
              150 test queries x top-100, 256 tokens.
    gpu-glue  one H100: the five other GLUE tasks (cola, mrpc, rte, stsb, qnli; `--tasks sst2` adds SST-2 again)
              for five cells, 2 epochs, one seed.

Runs are keyed by (task, cell, seed) and appended to `benchmarks/results/ablation_<name>.json` as they finish; a rerun
skips what is there, so a long preset can be split over several calls with --tasks / --cells. Every call rewrites the
Markdown table next to the JSON. Examples:

    python benchmarks/ablation.py --preset cpu                                    # everything, CPU budget
    python benchmarks/ablation.py --preset gpu --device cuda --tasks sst2 --cells native bidirectional-mean-d0.1
    python benchmarks/ablation.py --preset gpu-glue --device cuda --tasks cola mrpc rte
    python benchmarks/ablation.py --list-cells
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextForSequenceClassification

from gemma_encoder_hf import GemmaEncoderForRanking, GemmaEncoderForSequenceClassification
from gemma_encoder_hf.integrations.conversion import embedded_gguf_path
from gemma_encoder_hf.harness.data import (
    DATA_ENV_VAR,
    get_task,
    load_glue,
    load_reranking,
    ranking_groups,
    subsample,
    train_validation_split,
)
from gemma_encoder_hf.harness.evaluation import evaluate_reranker
from gemma_encoder_hf.harness.training import (
    TrainingConfig,
    encoder_dir,
    finetune_classifier,
    finetune_reranker,
    load_task_model,
)

# The project's data sits beside a clone of this repository.
DATA_ROOT = Path(os.environ.get(DATA_ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "data")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ATTENTIONS = ("bidirectional", "causal")
POOLINGS = ("mean", "first", "last", "attention-query", "attention-kv")
DROPOUTS = (0.0, 0.1)
GLUE_ALL = ("sst2", "cola", "mrpc", "rte", "stsb", "qnli")


def cell_name(attention: str, pooling: str, dropout: float) -> str:
    return f"{attention}-{pooling}-d{dropout:g}"


GRID = ["native"] + [cell_name(a, p, d) for a in ATTENTIONS for p in POOLINGS for d in DROPOUTS]
# Seeds are repeated on these: the baseline, its own-implementation twin (causal, last token), and bidirectional
# attention with each pooling, all with the paper's fine-tuning dropout.
MAIN_CELLS = ["native", cell_name("causal", "last", 0.1), cell_name("causal", "mean", 0.1)] + [
    cell_name("bidirectional", p, 0.1) for p in POOLINGS
]


@dataclass(frozen=True)
class Budget:
    """One preset's training budget; the same for every cell, the native baseline included."""

    seeds: tuple[int, ...]
    train_examples: int | None
    eval_examples: int | None
    max_length: int
    batch_size: int
    epochs: float
    learning_rate: float
    head_learning_rate: float
    freeze_embeddings: bool
    rank_train_queries: int | None
    rank_group_size: int
    rank_batch_size: int
    rank_max_length: int
    rank_eval_queries: int | None
    rank_top_k: int | None
    rank_cells: tuple[str, ...] | None  # None: the whole grid
    tasks: tuple[str, ...]
    cells: tuple[str, ...] | None = None  # None: the whole grid


PRESETS = {
    "cpu": Budget(
        seeds=(0, 1), train_examples=192, eval_examples=200, max_length=64, batch_size=16, epochs=1.0,
        learning_rate=5e-5, head_learning_rate=1e-3, freeze_embeddings=True,
        rank_train_queries=24, rank_group_size=4, rank_batch_size=2, rank_max_length=128, rank_eval_queries=15,
        rank_top_k=10, rank_cells=("native", cell_name("bidirectional", "mean", 0.1)), tasks=("sst2", "scifact"),
    ),
    "gpu": Budget(
        seeds=(0, 1), train_examples=None, eval_examples=None, max_length=128, batch_size=32, epochs=1.0,
        learning_rate=2e-5, head_learning_rate=2e-4, freeze_embeddings=False,
        rank_train_queries=None, rank_group_size=8, rank_batch_size=4, rank_max_length=256, rank_eval_queries=None,
        rank_top_k=None, rank_cells=tuple(MAIN_CELLS), tasks=("sst2", "scifact"),
    ),
}
PRESETS["gpu-glue"] = replace(
    PRESETS["gpu"], seeds=(0,), epochs=2.0, tasks=GLUE_ALL[1:],
    cells=("native", cell_name("causal", "last", 0.1), cell_name("causal", "mean", 0.1),
           cell_name("bidirectional", "mean", 0.1), cell_name("bidirectional", "attention-kv", 0.1)),
)


def parse_cell(name: str) -> dict:
    """Config overrides of a grid cell name such as `bidirectional-attention-kv-d0.1`."""
    attention, rest = name.split("-", 1)
    pooling, dropout = rest.rsplit("-d", 1)
    knobs = dict(attention=attention, attention_dropout=float(dropout), hidden_dropout=float(dropout),
                 classifier_dropout=float(dropout))
    if pooling.startswith("attention-"):
        knobs.update(pooling="attention", attention_pooling_probe=pooling.removeprefix("attention-"))
    else:
        knobs["pooling"] = pooling
    return knobs


# ----------------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------------


def native_base_dir(cache_dir: Path) -> Path:
    """transformers' own Gemma 3 text classifier backbone from the GGUF, saved once as a plain checkpoint.

    transformers dequantises the GGUF into Gemma3ForCausalLM and refuses to save GGUF-loaded models, so the
    decoder's tensors are moved into a freshly built Gemma3TextForSequenceClassification, which saves normally.
    """
    target = cache_dir / "native-gemma3-270m-seqcls"
    if not (target / "config.json").is_file():
        gguf = embedded_gguf_path()
        decoder = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The GGUF loader records a `quantization_config`; the weights are dequantised fp32 now, and Trainer refuses
        # to fine-tune a model whose config still claims quantisation.
        fields = {k: v for k, v in decoder.config.to_dict().items() if k != "quantization_config"}
        config = type(decoder.config).from_dict(fields)
        config.architectures = ["Gemma3TextForSequenceClassification"]
        model = Gemma3TextForSequenceClassification(config)
        state = {k: v for k, v in decoder.state_dict().items() if k.startswith("model.")}
        missing = model.load_state_dict(state, strict=False).missing_keys
        if [k for k in missing if not k.startswith("score.")]:
            raise RuntimeError(f"native classifier is missing backbone weights: {missing[:3]}")
        # Without the (random) head: each run builds its own, sized by its num_labels and seeded by its seed.
        model.save_pretrained(target, state_dict={k: v for k, v in model.state_dict().items() if k.startswith("model.")})
    return target


def build_model(cell: str, kind: str, num_labels: int, problem_type: str | None, cache_dir: Path, group_size: int,
                seed: int):
    """(model, tokenizer) of a cell for `kind` "classification" or "ranking", head initialised from `seed`."""
    if cell == "native":
        torch.manual_seed(seed)  # the head's init is part of what a seed varies (load_task_model seeds ours)
        # Same tokenizer (and pair template) as the encoder cells.
        tokenizer = AutoTokenizer.from_pretrained(encoder_dir("embedded", cache_dir))
        # The native model numbers positions 0..n-1 regardless of the mask, so it must see right-padded batches.
        tokenizer.padding_side = "right"
        model = Gemma3TextForSequenceClassification.from_pretrained(
            native_base_dir(cache_dir), num_labels=num_labels, problem_type=problem_type
        )
        return model, tokenizer
    knobs = parse_cell(cell)
    if kind == "ranking":
        return load_task_model(GemmaEncoderForRanking, "embedded", cache_dir=cache_dir, seed=seed,
                               ranking_group_size=group_size, **knobs)
    return load_task_model(GemmaEncoderForSequenceClassification, "embedded", cache_dir=cache_dir, seed=seed,
                           num_labels=num_labels, problem_type=problem_type, **knobs)


# ----------------------------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------------------------


def training_config(budget: Budget, args: argparse.Namespace, seed: int, ranking: bool) -> TrainingConfig:
    return TrainingConfig(
        output_dir=args.work_dir / "trainer",
        epochs=budget.epochs,
        batch_size=budget.rank_batch_size if ranking else budget.batch_size,
        eval_batch_size=64 if args.device == "cuda" else 32,
        learning_rate=budget.learning_rate,
        head_learning_rate=budget.head_learning_rate,
        max_length=budget.rank_max_length if ranking else budget.max_length,
        seed=seed,
        checkpoints=False,
        freeze_embeddings=budget.freeze_embeddings,
        device=args.device,
        show_progress_bar=args.show_progress_bar,
        logging_steps=50,
    )


def run_glue(task_name: str, cell: str, seed: int, budget: Budget, args: argparse.Namespace) -> dict:
    task = get_task(task_name)
    pool = load_glue(task, args.data)
    # The validation split never depends on the run's seed: every cell is scored on the same rows.
    train_set, val_set = train_validation_split(pool, task, seed=0)
    train_set = subsample(train_set, budget.train_examples, task, seed=seed)
    val_set = subsample(val_set, budget.eval_examples, task, seed=0)
    model, tokenizer = build_model(cell, "classification", task.num_labels, task.problem_type, args.cache_dir,
                                   budget.rank_group_size, seed)
    result = finetune_classifier(model, tokenizer, task, train_set, val_set, training_config(budget, args, seed, False))
    return {
        "metrics": result.metrics, "main_metric": task.main_metric, "train_examples": len(train_set),
        "eval_examples": len(val_set), "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
    }


def run_scifact(cell: str, seed: int, budget: Budget, args: argparse.Namespace) -> dict:
    directory = args.data / "scifact"
    groups = ranking_groups(load_reranking(directory, "train"), budget.rank_group_size, seed=seed,
                            max_queries=budget.rank_train_queries)
    test = load_reranking(directory, "test").restrict(budget.rank_eval_queries, budget.rank_top_k)
    model, tokenizer = build_model(cell, "ranking", 1, None, args.cache_dir, budget.rank_group_size, seed)
    config = training_config(budget, args, seed, True)
    result = finetune_reranker(model, tokenizer, groups, config)
    started = time.perf_counter()
    metrics = evaluate_reranker(result.model, tokenizer, test, batch_size=config.eval_batch_size,
                                max_length=config.max_length)
    return {
        "metrics": metrics, "main_metric": "ndcg@10", "train_examples": len(groups),
        "eval_examples": int(metrics["num_queries"]), "train_seconds": result.train_seconds,
        "eval_seconds": time.perf_counter() - started,
    }


def planned_runs(budget: Budget, tasks: list[str], cells: list[str] | None) -> list[tuple[str, str, int]]:
    runs = []
    for task in tasks:
        grid = budget.rank_cells if task == "scifact" else budget.cells
        task_cells = [c for c in (grid or GRID) if cells is None or c in cells]
        for cell in task_cells:
            seeds = budget.seeds if cell in MAIN_CELLS else budget.seeds[:1]
            runs.extend((task, cell, seed) for seed in seeds)
    return runs


# ----------------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------------


def markdown_table(results: dict) -> str:
    """One row per (task, cell): main metric mean +- sample std over seeds, then the other metrics' means."""
    by_cell: dict[tuple[str, str], list[dict]] = {}
    for run in results["runs"].values():
        by_cell.setdefault((run["task"], run["cell"]), []).append(run)
    lines = [f"# Ablation `{results['name']}` ({results['device']})", "", f"Command: `{results['command']}`", ""]
    for task in sorted({t for t, _ in by_cell}):
        rows = sorted(
            ((cell, runs) for (t, cell), runs in by_cell.items() if t == task),
            key=lambda item: -statistics.mean(r["metrics"][r["main_metric"]] for r in item[1]),
        )
        main = rows[0][1][0]["main_metric"]
        others = [m for m in rows[0][1][0]["metrics"] if m not in (main, "loss", "num_queries")]
        lines += [f"## {task} ({main}; train {rows[0][1][0]['train_examples']}, eval {rows[0][1][0]['eval_examples']})",
                  "", f"| cell | {main} (mean ± std) | seeds | " + " | ".join(others) + " | train s/run |",
                  "|---|---|---|" + "---|" * len(others) + "---|"]
        for cell, runs in rows:
            values = [r["metrics"][main] for r in runs]
            spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
            extra = " | ".join(f"{statistics.mean(r['metrics'][m] for r in runs):.4f}" for m in others)
            seconds = statistics.mean(r["train_seconds"] for r in runs)
            lines.append(f"| {cell} | {statistics.mean(values):.4f}{spread} | {len(runs)} | {extra} | {seconds:.0f} |")
        lines.append("")
    return "\n".join(lines)


def device_label(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU x{torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--tasks", nargs="+", help="subset of the preset's tasks (sst2 ... qnli, scifact)")
    parser.add_argument("--cells", nargs="+", help="subset of cells (see --list-cells)")
    parser.add_argument("--seeds", nargs="+", type=int, help="override the preset's seeds")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--data", type=Path, default=DATA_ROOT, help="data root (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/ablation_<preset>.json)")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/converted"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--show-progress-bar", action="store_true", help="tqdm bars for each run")
    parser.add_argument("--list-cells", action="store_true")
    parser.add_argument(
        "--time-limit", type=float, help="minutes: start no new run after this (finished runs are kept; rerun resumes)"
    )
    # Tiny smoke-test overrides (CI / checking the script): they change the budget, so use a separate --out.
    parser.add_argument("--train-examples", type=int)
    parser.add_argument("--eval-examples", type=int)
    args = parser.parse_args()
    if args.list_cells:
        print("\n".join(f"{c}{'  (main)' if c in MAIN_CELLS else ''}" for c in GRID))
        return

    budget = PRESETS[args.preset]
    if args.seeds:
        budget = replace(budget, seeds=tuple(args.seeds))
    if args.train_examples or args.eval_examples:
        budget = replace(budget, train_examples=args.train_examples or budget.train_examples,
                         eval_examples=args.eval_examples or budget.eval_examples,
                         rank_train_queries=min(budget.rank_train_queries or 8, 8), rank_eval_queries=2, rank_top_k=5)
    unknown = set(args.cells or []) - set(GRID)
    if unknown:
        raise SystemExit(f"unknown cells {sorted(unknown)}; see --list-cells")
    tasks = args.tasks or list(budget.tasks)
    out = args.out or RESULTS_DIR / f"ablation_{args.preset}.json"
    results = json.loads(out.read_text()) if out.is_file() else {"runs": {}}
    results.update(name=args.preset, device=device_label(args.device),
                   command="python benchmarks/ablation.py " + " ".join(sys.argv[1:]),
                   budget=budget.__dict__)

    started = time.perf_counter()
    for task, cell, seed in planned_runs(budget, tasks, args.cells):
        key = f"{task}/{cell}/seed{seed}"
        if key in results["runs"]:
            continue
        if args.time_limit is not None and time.perf_counter() - started > 60 * args.time_limit:
            print(f"time limit reached before {key}; rerun the same command to continue")
            break
        run_started = time.perf_counter()
        run = run_scifact(cell, seed, budget, args) if task == "scifact" else run_glue(task, cell, seed, budget, args)
        run.update(task=task, cell=cell, seed=seed, wall_seconds=time.perf_counter() - run_started)
        results["runs"][key] = run
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown_table(results) + "\n")
        main = run["main_metric"]
        print(f"[{time.perf_counter() - started:7.0f}s] {key}: {main}={run['metrics'][main]:.4f} "
              f"(train {run['train_seconds']:.0f}s, eval {run['eval_seconds']:.0f}s)", flush=True)
    if results["runs"]:
        out.with_suffix(".md").write_text(markdown_table(results) + "\n")
        print(markdown_table(results))


if __name__ == "__main__":
    main()

"""Bidirectional vs causal attention on the token-level tasks: same head, data, budget and seeds in one run.

Tasks (`--task`):
- `conll2003`: NER, `GemmaEncoderForTokenClassification`; seqeval entity F1 on the shared validation file (all
  3,250 sentences, or a seeded sample with `--eval-examples`); training sentences are a seeded sample of the train file.
- `squad`: extractive QA, `GemmaEncoderForQuestionAnswering`; the shared half of the SQuAD v1.1 dev set split by
  article (`split_by_article`, 80/20): training questions are a seeded sample of the train side, exact match and F1
  (torchmetrics) are scored on every question of the validation side.

Every variant starts from the same backbone and is fine-tuned with the same Trainer recipe
(`gemma_encoder_hf.harness.token_tasks.finetune_ner` / `finetune_qa`); only the attention differs:

- `bidirectional`: the encoder (every token sees the whole input);
- `causal`: the decoder's own mask, which equals transformers' native causal Gemma backbone with the same head;
- `bidirectional+mntp`: bidirectional after `--adapt-steps` masked-next-token adaptation steps on the task's own
  training text, labels dropped (`gemma_encoder_hf.harness.adaptation.adapt`);
- `bidirectional-top`: bidirectional in the top `--bidirectional-layers` K layers only, the decoder's causal mask below
  (`GemmaEncoderConfig.bidirectional_layers`); its rows say `bidirectional-topK`.

Runs are ordered seed by seed (every mode of seed 0 first), and the results files are rewritten after every run, so
an interrupted benchmark keeps what it measured. `--merge` joins the JSON files of separate runs of one task (one per
mode or seed) into one table; a setup field that differs between the files (threads, top layers) is listed on each
row. Commands of the committed results: README, token-level tasks.

    python benchmarks/token_tasks.py --train-examples 1000 4000 --eval-examples 500 --max-length 64 --epochs 1 \
        --seeds 0 --out benchmarks/results/token_tasks_cpu
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from gemma_encoder_hf import GemmaEncoderForQuestionAnswering, GemmaEncoderForTokenClassification
from gemma_encoder_hf.harness.adaptation import adapt
from gemma_encoder_hf.harness.data import DATA_ENV_VAR
from gemma_encoder_hf.harness.finetune import SUBSET_SEED
from gemma_encoder_hf.harness.token_tasks import (
    CONLL_FILES,
    SQUAD_FILE,
    adaptation_texts,
    conll_label_kwargs,
    finetune_ner,
    finetune_qa,
    load_conll,
    load_squad,
    split_by_article,
)
from gemma_encoder_hf.harness.training import TrainingConfig, encoder_dir, load_task_model

RUNS = Path("runs/token_tasks")  # adapted models and Trainer scratch (ignored by git)
MODES = ("bidirectional", "causal", "bidirectional+mntp", "bidirectional-top")
TITLES = {
    "conll2003": "CoNLL-2003 NER: bidirectional vs causal (entity F1, seqeval)",
    "squad": "SQuAD v1.1 extractive QA: bidirectional vs causal (exact match / F1, torchmetrics)",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=tuple(TITLES), default="conll2003")
    parser.add_argument("--model", default="embedded", help="decoder or GemmaEncoder folder (default: embedded 270M)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(DATA_ENV_VAR)
                                                          or Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--train-examples", type=int, nargs="+", default=[1000], help="0: the whole training side")
    parser.add_argument("--eval-examples", type=int, help="score a fixed sample of the validation examples")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=TrainingConfig.learning_rate)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--modes", nargs="+", default=["bidirectional", "causal"], choices=MODES)
    parser.add_argument("--adapt-steps", type=int, default=150, help="MNTP steps of the bidirectional+mntp mode")
    parser.add_argument("--bidirectional-layers", type=int, default=3,
                        help="top layers that attend both ways in the bidirectional-top mode")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/token_tasks_cpu"))
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="join these results files (one task) into --out and exit")  # fmt: skip
    return parser.parse_args()


def load_task(args: argparse.Namespace):
    """(training pool shuffled by SUBSET_SEED, validation)."""
    if args.task == "conll2003":
        pool = load_conll(args.data / CONLL_FILES["train"]).shuffle(seed=SUBSET_SEED)
        validation = load_conll(args.data / CONLL_FILES["validation"])
    else:
        pool, validation = split_by_article(load_squad(args.data / SQUAD_FILE))
        pool = pool.shuffle(seed=SUBSET_SEED)
    if args.eval_examples:
        validation = validation.shuffle(seed=SUBSET_SEED).select(range(args.eval_examples))
    return pool, validation


def main() -> None:
    args = parse_args()
    if args.merge:
        write(args.out, *merge_reports([json.loads(path.read_text()) for path in args.merge]))
        return
    pool, validation = load_task(args)
    source = encoder_dir(args.model)
    model_class = GemmaEncoderForTokenClassification if args.task == "conll2003" else GemmaEncoderForQuestionAnswering
    labels = conll_label_kwargs() if args.task == "conll2003" else {}
    finetune = finetune_ner if args.task == "conll2003" else finetune_qa
    setup = {
        "task": args.task,
        "model": str(args.model),
        "validation_examples": len(validation),
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "head_learning_rate": TrainingConfig.head_learning_rate,
        "adapt_steps": args.adapt_steps if "bidirectional+mntp" in args.modes else None,
        "bidirectional_layers": args.bidirectional_layers if "bidirectional-top" in args.modes else None,
        "device": torch.cuda.get_device_name() if TrainingConfig(device=args.device).resolved_device() == "cuda"
        else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
    }  # fmt: skip
    rows = []
    for n in args.train_examples:
        train = pool.select(range(min(n, len(pool)) if n else len(pool)))
        for seed in args.seeds:
            # Every setting that can differ between two concurrent benchmarks names their scratch folders (adapt()
            # and the Trainer each write into theirs), so no two runs ever share one.
            settings = (f"{len(train)}-{seed}-{args.max_length}-{args.epochs}-bs{args.batch_size}"
                        f"-lr{args.learning_rate}-mntp{args.adapt_steps}-{Path(str(args.model)).name}")  # fmt: skip
            for mode in args.modes:
                knobs = {"attention": "causal" if mode == "causal" else "bidirectional"}
                if mode == "bidirectional-top":
                    knobs["bidirectional_layers"] = args.bidirectional_layers
                    mode = f"{mode}{args.bidirectional_layers}"
                model_source, adapt_seconds = source, 0.0
                if mode == "bidirectional+mntp":
                    started = time.perf_counter()
                    adapted = RUNS / f"{args.task}-adapted-{settings}"
                    model_source = adapt(source, adaptation_texts(args.task, train), adapted, steps=args.adapt_steps,
                                         seed=seed, device=args.device)  # fmt: skip
                    adapt_seconds = time.perf_counter() - started
                model, tokenizer = load_task_model(model_class, model_source, seed=seed, **knobs, **labels)
                config = TrainingConfig(
                    output_dir=RUNS / f"{args.task}-{mode}-{settings}",
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    learning_rate=args.learning_rate,
                    max_length=args.max_length,
                    seed=seed,
                    checkpoints=False,
                    device=args.device,
                    show_progress_bar=False,
                )
                result = finetune(model, tokenizer, train, validation, config)
                row = {
                    "mode": mode, "train_examples": len(train), "seed": seed,
                    **{k: round(v, 4) for k, v in result.metrics.items()},
                    "train_seconds": round(result.train_seconds, 1),
                    "adapt_seconds": round(adapt_seconds, 1),
                    "eval_seconds": round(result.eval_seconds, 1),
                }  # fmt: skip
                print(json.dumps(row), flush=True)
                rows.append(row)
                write(args.out, setup, rows)  # after every run: an interrupted benchmark keeps what it measured
                del model, result


def merge_reports(reports: list[dict]) -> tuple[dict, list[dict]]:
    """(setup, rows) of one table joining the results files of separate runs of one task. The setup keeps the fields
    that every file shares (a field a file lacks counts as None, as in files written before the field existed); a
    field that differs (the thread count, the number of bidirectional top layers) goes with each row of the files
    that set it, as `run_setup`, so that no file's setup is stated for another file's runs."""
    tasks = {report["setup"].get("task", "conll2003") for report in reports}
    if len(tasks) > 1:
        raise SystemExit(f"--merge joins the results of one task; these files hold {sorted(tasks)}.")
    first = reports[0]["setup"]
    keys = dict.fromkeys(key for report in reports for key in report["setup"])
    shared = {key: first.get(key) for key in keys if all(r["setup"].get(key) == first.get(key) for r in reports)}
    rows = []
    for report in reports:
        own = {key: value for key, value in report["setup"].items() if key not in shared and value is not None}
        rows += [{**row, "run_setup": own} if own else row for row in report["runs"]]
    rows.sort(key=lambda r: (r["train_examples"], r["seed"], MODES.index(r["mode"].rstrip("0123456789"))))
    return shared, rows


def write(out: Path, setup: dict, rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"setup": setup, "runs": rows}, indent=2) + "\n")
    conll = setup.get("task", "conll2003") == "conll2003"
    metrics = ("f1", "precision", "recall") if conll else ("f1", "exact_match")
    per_run = any("run_setup" in r for r in rows)  # a merged table whose files' setups differ
    lines = [
        f"# {TITLES[setup.get('task', 'conll2003')]}",
        "",
        f"Setup: {json.dumps(setup)}",
        "",
        f"| mode | train {'sentences' if conll else 'questions'} | seed | "
        + " | ".join("entity F1" if m == "f1" and conll else m.replace("_", " ") for m in metrics)
        + " | adapt s | train s |" + (" run setup |" if per_run else ""),
        "|---|---|---|" + "---|" * len(metrics) + "---|---|" + ("---|" if per_run else ""),
    ]
    for r in rows:
        values = " | ".join(f"{r[m]:.4f}" for m in metrics)
        own = ", ".join(f"{key}: {value}" for key, value in r.get("run_setup", {}).items())
        lines.append(f"| {r['mode']} | {r['train_examples']} | {r['seed']} | {values} | {r['adapt_seconds']} | "
                     f"{r['train_seconds']} |" + (f" {own} |" if per_run else ""))  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Bidirectional vs causal attention on CoNLL-2003 NER: same head, data, budget and seeds; entity F1 on validation.

Every variant is a GemmaEncoderForTokenClassification on the same backbone, fine-tuned with the same Trainer recipe
(`gemma_encoder_hf.harness.token_tasks.finetune_ner`); only the attention differs:

- `bidirectional`: the encoder (every token sees the whole sentence);
- `causal`: the decoder's own mask, which equals transformers' native causal Gemma backbone with the same head;
- `bidirectional+mntp` (optional, `--adapt-steps N`): bidirectional after N masked-next-token adaptation steps on the
  training sentences' own text, labels dropped (`gemma_encoder_hf.harness.adaptation.adapt`).

Scoring: seqeval entity F1 over complete gold sentences (`evaluate_ner`) on a fixed subset of the shared validation
file (`--eval-examples`, a seeded sample independent of the run seed). Small CPU run (what benchmarks/results/
token_tasks_cpu.* holds):

    python benchmarks/token_tasks.py --train-examples 1000 --eval-examples 500 --max-length 64 --epochs 1 \
        --seeds 0 --out benchmarks/results/token_tasks_cpu
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from gemma_encoder_hf import GemmaEncoderForTokenClassification
from gemma_encoder_hf.harness.adaptation import adapt
from gemma_encoder_hf.harness.data import DATA_ENV_VAR
from gemma_encoder_hf.harness.finetune import SUBSET_SEED
from gemma_encoder_hf.harness.token_tasks import (
    CONLL_FILES,
    conll_label_kwargs,
    evaluate_ner,
    finetune_ner,
    load_conll,
)
from gemma_encoder_hf.harness.training import TrainingConfig, encoder_dir, load_task_model

RUNS = Path("runs/token_tasks")  # adapted models and Trainer scratch (ignored by git)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="decoder or GemmaEncoder folder (default: embedded 270M)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(DATA_ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--train-examples", type=int, nargs="+", default=[1000])
    parser.add_argument("--eval-examples", type=int, help="score a fixed sample of the validation sentences")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=TrainingConfig.learning_rate)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--modes", nargs="+", default=["bidirectional", "causal"],
                        choices=["bidirectional", "causal", "bidirectional+mntp"])  # fmt: skip
    parser.add_argument("--adapt-steps", type=int, default=150, help="MNTP steps of the bidirectional+mntp mode")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/token_tasks_cpu"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    train_pool = load_conll(args.data / CONLL_FILES["train"]).shuffle(seed=SUBSET_SEED)
    validation = load_conll(args.data / CONLL_FILES["validation"])
    if args.eval_examples:
        validation = validation.shuffle(seed=SUBSET_SEED).select(range(args.eval_examples))
    source = encoder_dir(args.model)
    rows = []
    for n in args.train_examples:
        train = train_pool.select(range(min(n, len(train_pool))))
        for mode in args.modes:
            for seed in args.seeds:
                model_source, adapt_seconds = source, 0.0
                if mode == "bidirectional+mntp":
                    started = time.perf_counter()
                    texts = [" ".join(tokens) for tokens in train["tokens"]]
                    model_source = adapt(source, texts, RUNS / f"mntp-{n}-{seed}",
                                         steps=args.adapt_steps, seed=seed, device=args.device)  # fmt: skip
                    adapt_seconds = time.perf_counter() - started
                model, tokenizer = load_task_model(
                    GemmaEncoderForTokenClassification, model_source, seed=seed,
                    attention="causal" if mode == "causal" else "bidirectional", **conll_label_kwargs(),
                )  # fmt: skip
                config = TrainingConfig(
                    output_dir=RUNS / f"{mode}-{n}-{seed}",
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    learning_rate=args.learning_rate,
                    max_length=args.max_length,
                    seed=seed,
                    checkpoints=False,
                    device=args.device,
                    show_progress_bar=False,
                )
                result = finetune_ner(model, tokenizer, train, None, config)
                started = time.perf_counter()
                metrics = evaluate_ner(result.model, tokenizer, validation, max_length=args.max_length)
                row = {
                    "mode": mode, "train_examples": len(train), "seed": seed,
                    **{k: round(v, 4) for k, v in metrics.items()},
                    "train_seconds": round(result.train_seconds, 1),
                    "adapt_seconds": round(adapt_seconds, 1),
                    "eval_seconds": round(time.perf_counter() - started, 1),
                }  # fmt: skip
                print(json.dumps(row), flush=True)
                rows.append(row)
                write(args, rows)  # after every run: an interrupted benchmark keeps what it measured
                del model, result


def write(args: argparse.Namespace, rows: list[dict]) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    setup = {
        "model": str(args.model),
        "eval_sentences": rows[0]["num_sentences"] if rows else None,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "head_learning_rate": TrainingConfig.head_learning_rate,
        "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    args.out.with_suffix(".json").write_text(json.dumps({"setup": setup, "runs": rows}, indent=2) + "\n")
    lines = [
        "# CoNLL-2003 NER: bidirectional vs causal (entity F1, seqeval)",
        "",
        f"Setup: {json.dumps(setup)}",
        "",
        "| mode | train sentences | seed | entity F1 | precision | recall | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['train_examples']} | {r['seed']} | {r['f1']:.4f} | {r['precision']:.4f} | "
                     f"{r['recall']:.4f} | {r['train_seconds']} |")  # fmt: skip
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

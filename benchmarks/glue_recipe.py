# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Why do sentence pairs stay at the majority class? Pair template, pooling and head learning rate on MRPC.

Two measurements on the embedded Gemma 3 270M, MRPC, the dev-shaped validation split
(`gemma_encoder_hf.harness.data.dev_shaped_split`: 408 pairs, no sentence on both sides):

    probe     frozen, unadapted encoder; pooled vectors of every (attention, pair template) x pooling, then a
              logistic regression (scikit-learn) trained on the training pairs and scored on the validation pairs.
              Whether a template/pooling makes the pair's relation readable at all, without fine-tuning noise;
              each forward pass serves the three poolings.
    finetune  named fine-tuning settings (`FINETUNE`: native baseline, the current recipe, head learning rate and
              warm-up, pooling, template), one fine-tune each (`finetune_classifier`), 1 epoch.

Results are merged into a JSON file keyed by (part, setting, seed) as they finish, so calls can be split and
interrupted; `--time-limit` stops before starting a run once that many minutes have passed. Every call rewrites the
Markdown table next to the JSON.

    nice -n 10 python benchmarks/glue_recipe.py --probe-train 600 --finetune-train 1000 --time-limit 40
    python benchmarks/glue_recipe.py --report
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer, Gemma3TextForSequenceClassification

from gemma_encoder_hf import GemmaEncoderForSequenceClassification, GemmaEncoderModel
from gemma_encoder_hf.harness.data import DATA_ENV_VAR, get_task, load_glue, subsample, train_validation_split
from gemma_encoder_hf.harness.training import (
    TrainingConfig,
    encoder_dir,
    finetune_classifier,
    load_task_model,
    tokenize_dataset,
)
from gemma_encoder_hf.modeling.modeling_gemma_encoder import (
    GemmaEncoderFirstKPooler,
    GemmaEncoderLastKPooler,
    GemmaEncoderMeanPooler,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import native_base_dir  # noqa: E402  (the native baseline's checkpoint, as the ablation builds it)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COMMAND = "python benchmarks/glue_recipe.py " + " ".join(sys.argv[1:])

# How a pair becomes one sequence. Token templates are the tokenizer's post-processor; "prompt" joins the two texts
# into one string the model can read as text, with no special token between them.
TEMPLATES = {
    "eos": "<bos> $A <eos> $B:1",  # the package's template (PAIR_TEMPLATE_DOC)
    "bos": "<bos> $A <bos> $B:1",  # Gemma's own tokenizer template
    "eos-bos": "<bos> $A <eos> <bos> $B:1",  # end the first text, start the second as a new document
}
PROMPT = "Sentence 1: {}\nSentence 2: {}"
POOLERS = {"mean": GemmaEncoderMeanPooler(), "first": GemmaEncoderFirstKPooler(1), "last": GemmaEncoderLastKPooler(1)}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One fine-tuning setting; fields left at None take TrainingConfig's / the config's defaults."""

    model: str = "bidirectional"  # "native", "bidirectional" or "causal"
    pooling: str = "mean"
    template: str = "eos"
    head_lr: float | None = None
    lr: float | None = None
    warmup_ratio: float | None = None
    epochs: float = 1.0


FINETUNE = {
    "native": Setting(model="native"),
    "bidir-mean": Setting(),  # the current recipe: 5e-5 backbone, 1e-3 head, 10% warm-up
    "bidir-mean-headlr1e-4": Setting(head_lr=1e-4),
    "bidir-mean-headlr1e-4-warmup0.3": Setting(head_lr=1e-4, warmup_ratio=0.3),
    "bidir-first": Setting(pooling="first"),
    "bidir-last": Setting(pooling="last"),
    "bidir-mean-prompt": Setting(template="prompt"),
    "bidir-mean-lr1e-4": Setting(lr=1e-4),
    "bidir-mean-2epochs": Setting(epochs=2.0),
}


# ----------------------------------------------------------------------------------------------------------------------
# Templates
# ----------------------------------------------------------------------------------------------------------------------


def with_template(tokenizer, template: str):
    """A copy of `tokenizer` whose pairs follow `TEMPLATES[template]` (the single-text template is unchanged)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    pair = TEMPLATES[template].replace("<bos>", bos).replace("<eos>", eos)
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=pair, special_tokens=[(bos, tokenizer.bos_token_id), (eos, tokenizer.eos_token_id)]
    )
    return tokenizer


def as_prompt(dataset):
    """Pairs joined into one text (`PROMPT`), so the tokenizer's single-text template applies."""
    joined = dataset.map(lambda row: {"text": PROMPT.format(row["text"], row["text_pair"])})
    return joined.remove_columns("text_pair")


# ----------------------------------------------------------------------------------------------------------------------
# Probe: frozen features + logistic regression
# ----------------------------------------------------------------------------------------------------------------------


def pooled_features(model, tokenizer, dataset, template: str, batch_size: int) -> dict[str, np.ndarray]:
    if template == "prompt":
        texts, pairs = list(as_prompt(dataset)["text"]), None
    else:
        tokenizer, texts, pairs = with_template(tokenizer, template), list(dataset["text"]), list(dataset["text_pair"])
    encoded = tokenizer(texts, pairs, truncation=True, max_length=128)
    order = np.argsort([-len(ids) for ids in encoded["input_ids"]])
    features = {name: [None] * len(texts) for name in POOLERS}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer.pad(
                [{k: encoded[k][i] for k in ("input_ids", "attention_mask")} for i in rows], return_tensors="pt"
            )
            hidden = model(**batch).last_hidden_state
            for name, pooler in POOLERS.items():
                for i, vector in zip(rows, pooler(hidden, batch["attention_mask"]).float().numpy()):
                    features[name][i] = vector
    return {name: np.stack(vectors) for name, vectors in features.items()}


def run_probe(args, task, train, validation, results_file: Path, deadline: float) -> None:
    folder = encoder_dir(args.model, args.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for attention in args.probe_attention:
        for template in args.probe_templates:
            keys = [f"probe/{attention}/{template}/{pooling}" for pooling in POOLERS]
            if all(k in load_results(results_file) for k in keys):
                continue
            if time.time() > deadline:
                print(f"time limit reached before probe {attention}/{template}")
                return
            model = GemmaEncoderModel.from_pretrained(folder, attention=attention, dtype=torch.float32).eval()
            started = time.perf_counter()
            x_train = pooled_features(model, tokenizer, train, template, args.batch_size)
            x_val = pooled_features(model, tokenizer, validation, template, args.batch_size)
            seconds = time.perf_counter() - started
            for key, pooling in zip(keys, POOLERS):
                classifier = make_pipeline(StandardScaler(), LogisticRegression(C=args.probe_c, max_iter=2000))
                classifier.fit(x_train[pooling], train["label"])
                predicted = classifier.predict(x_val[pooling])
                metrics = {"accuracy": accuracy_score(validation["label"], predicted),
                           "f1": f1_score(validation["label"], predicted)}
                save_result(results_file, key, {
                    "part": "probe", "attention": attention, "template": template, "pooling": pooling,
                    "metrics": metrics, "train_examples": len(train), "validation_examples": len(validation),
                    "feature_seconds": round(seconds, 1), "C": args.probe_c,
                })
                print(key, metrics)
            del model


# ----------------------------------------------------------------------------------------------------------------------
# Fine-tuning settings
# ----------------------------------------------------------------------------------------------------------------------


def run_finetune(args, task, train, validation, results_file: Path, deadline: float) -> None:
    for name in args.finetune:
        setting = FINETUNE[name]
        for seed in args.seeds:
            key = f"finetune/{name}/seed{seed}"
            if key in load_results(results_file):
                continue
            if time.time() > deadline:
                print(f"time limit reached before {key}")
                return
            if setting.model == "native":
                torch.manual_seed(seed)  # the head's initialisation (load_task_model seeds ours)
                tokenizer = AutoTokenizer.from_pretrained(encoder_dir(args.model, args.cache_dir))
                tokenizer.padding_side = "right"  # it numbers positions 0..n-1 whatever the mask
                model = Gemma3TextForSequenceClassification.from_pretrained(
                    native_base_dir(args.cache_dir), **task.model_kwargs()
                )
            else:
                model, tokenizer = load_task_model(
                    GemmaEncoderForSequenceClassification, args.model, cache_dir=args.cache_dir, seed=seed,
                    attention=setting.model, pooling=setting.pooling, **task.model_kwargs(),
                )
            run_task, run_train, run_validation = task, train, validation
            if setting.template == "prompt":
                run_task = dataclasses.replace(task, pair_column=None)
                run_train, run_validation = as_prompt(train), as_prompt(validation)
            elif setting.template != "eos":
                tokenizer = with_template(tokenizer, setting.template)
            overrides = {k: v for k, v in (("learning_rate", setting.lr), ("head_learning_rate", setting.head_lr),
                                           ("warmup_ratio", setting.warmup_ratio)) if v is not None}
            config = TrainingConfig(
                output_dir=args.work_dir / key.replace("/", "_"), epochs=setting.epochs, max_length=args.max_length,
                seed=seed, checkpoints=False, eval_strategy="no", device="cpu", show_progress_bar=False,
                logging_steps=10, **overrides,
            )
            result = finetune_classifier(model, tokenizer, run_task, run_train, run_validation, config)
            losses = [round(h["loss"], 4) for h in result.trainer.state.log_history if "loss" in h]
            predictions = result.trainer.predict(
                tokenize_dataset(run_validation, tokenizer, run_task, args.max_length)).predictions
            save_result(results_file, key, {
                "part": "finetune", "setting": name, "seed": seed, **dataclasses.asdict(setting),
                "metrics": result.metrics, "predicted_positive_share": float((predictions.argmax(-1) == 1).mean()),
                "train_losses": losses, "train_examples": result.train_examples,
                "validation_examples": len(validation), "train_minutes": round(result.train_seconds / 60, 2),
                "steps": result.trainer.state.global_step,
            })
            print(key, result.metrics)
            del model, result


# ----------------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------------


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save_result(path: Path, key: str, record: dict) -> None:
    results = load_results(path)
    results[key] = {**record, "command": COMMAND, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def report(results: dict) -> str:
    commands = "\n".join(f"    {c}" for c in dict.fromkeys(r["command"] for r in results.values()))
    lines = [
        "# MRPC pair diagnosis (`benchmarks/glue_recipe.py`)\n",
        f"Commands (2-core CPU, shared with other jobs: the minutes are wall time):\n\n{commands}\n",
        "The validation split holds 408 pairs, 67.4% positive: always answering \"paraphrase\" scores accuracy 0.674, "
        "F1 0.805.\n",
    ]
    probes = [r for r in results.values() if r["part"] == "probe"]
    if probes:
        r0 = probes[0]
        lines.append(
            f"## Linear probe on frozen features ({r0['train_examples']} training pairs, {r0['validation_examples']} "
            f"validation pairs, logistic regression C={r0['C']}): accuracy / F1\n"
        )
        lines.append("| attention | template | " + " | ".join(POOLERS) + " | feature seconds |")
        lines.append("|---" * (len(POOLERS) + 3) + "|")
        for attention, template in dict.fromkeys((r["attention"], r["template"]) for r in probes):
            cells = []
            for pooling in POOLERS:
                r = results.get(f"probe/{attention}/{template}/{pooling}")
                cells.append(f"{r['metrics']['accuracy']:.3f} / {r['metrics']['f1']:.3f}" if r else "")
            seconds = results[f"probe/{attention}/{template}/mean"]["feature_seconds"]
            lines.append(f"| {attention} | {template} | " + " | ".join(cells) + f" | {seconds} |")
    runs = [r for r in results.values() if r["part"] == "finetune"]
    if runs:
        lines.append(f"\n## Fine-tuning, {runs[0]['train_examples']} training pairs, 1 epoch unless stated\n")
        lines.append("| setting | model | pooling | template | lr | head lr | warm-up | epochs | seed | accuracy | F1 | "
                     "predicted positive | minutes |")
        lines.append("|---" * 13 + "|")
        for r in runs:
            lines.append(
                f"| {r['setting']} | {r['model']} | {r['pooling'] if r['model'] != 'native' else 'last token'} | "
                f"{r['template']} | {r['lr'] or TrainingConfig.learning_rate} | "
                f"{r['head_lr'] or TrainingConfig.head_learning_rate} | "
                f"{r['warmup_ratio'] or TrainingConfig.warmup_ratio} | {r['epochs']} | {r['seed']} | "
                f"{r['metrics']['accuracy']:.3f} | {r['metrics']['f1']:.3f} | {r['predicted_positive_share']:.2f} | "
                f"{r['train_minutes']} |"
            )
    missing = [name for name in FINETUNE if not any(r.get("setting") == name for r in runs)]
    if missing:
        lines.append(
            f"\nNot measured yet (fine-tuning settings of `FINETUNE` with no result in this file): {', '.join(missing)}. "
            "Run them with `--finetune NAME ... --finetune-train 1000`."
        )
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get(DATA_ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser.add_argument("--model", default="embedded",
                        help="the encoder: a GemmaEncoder folder, or a decoder converted once under --cache-dir")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/converted"), dest="cache_dir")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/gemma-encoder-glue-recipe"), dest="work_dir")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "glue_recipe_cpu.json")
    parser.add_argument("--probe-train", type=int, default=600, dest="probe_train")
    parser.add_argument("--probe-attention", nargs="*", default=["bidirectional", "causal"], dest="probe_attention")
    parser.add_argument("--probe-templates", nargs="*", default=["eos", "bos", "prompt"], dest="probe_templates",
                        choices=[*TEMPLATES, "prompt"])
    parser.add_argument("--probe-validation", type=int, dest="probe_validation",
                        help="score the probe on a stratified subset of the validation split (default: all of it)")
    parser.add_argument("--probe-c", type=float, default=0.1, dest="probe_c", help="inverse L2 strength")
    parser.add_argument("--finetune-train", type=int, default=1000, dest="finetune_train")
    parser.add_argument("--finetune", nargs="*", default=["native", "bidir-mean", "bidir-mean-headlr1e-4"],
                        choices=list(FINETUNE))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-length", type=int, default=128, dest="max_length")
    parser.add_argument("--batch-size", type=int, default=16, dest="batch_size", help="probe forward batch")
    parser.add_argument("--time-limit", type=float, default=40.0, dest="time_limit", help="minutes")
    parser.add_argument("--report", action="store_true", help="rewrite the Markdown table and exit")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.report:
        deadline = time.time() + 60 * args.time_limit
        task = get_task("mrpc")
        train_pool, validation = train_validation_split(load_glue(task, args.data), task, seed=0)
        if args.probe_attention and args.probe_templates:
            run_probe(args, task, subsample(train_pool, args.probe_train, task, seed=0),
                      subsample(validation, args.probe_validation, task, seed=0), args.out, deadline)
        if args.finetune:
            run_finetune(args, task, subsample(train_pool, args.finetune_train, task, seed=0), validation, args.out,
                         deadline)
    args.out.with_suffix(".md").write_text(report(load_results(args.out)))
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Does a short MNTP/MLM adaptation stage let the bidirectional encoder match the causal classifier at small budgets?

Quality against training-set size on any GLUE task of `--task` (accuracy, and the task's headline metric: MRPC F1,
STS-B Pearson, CoLA MCC), scored on the dev-shaped validation split carved from the official train set (the same for
every size), for seven variants of the embedded Gemma 3 270M:

    native          transformers' Gemma3TextForSequenceClassification (causal, last token, linear head)
    causal          our encoder, attention="causal" (pooling --causal-pooling, default last token)
    bidir           our encoder, bidirectional, no adaptation (pooling --pooling)
    adapted-task    bidirectional after adaptation on the task's own training sentences, labels dropped
    adapted-generic bidirectional after adaptation on a generic corpus (MS MARCO passages from --data)
                    (both: only the top --adapted-bidirectional-layers K layers bidirectional when given, in the
                    adaptation and the fine-tune; recorded as adapted-task-topK)
    contrastive     bidirectional, starting from a contrastively trained encoder (--contrastive-source: a folder that
                    `gemma-encoder train-embeddings` wrote, e.g. the SciFact retriever of benchmarks/embeddings.py)
    bidir-top       bidirectional in the top --bidirectional-layers K layers only, the decoder's causal mask below
                    (recorded as bidir-topK), no adaptation

Every run is one fine-tune (`gemma_encoder_hf.harness.training.finetune_classifier`) with the same optimiser settings;
each result is appended to a JSON file keyed by (task, variant, size, seed), the variant's label carrying its layer
count, any pooling other than its default, any head width, each fine-tuning setting that differs from its default and
the label words and text template if any (bidir-top3, bidir-top3-last, causal-head0, native-warmup0, causal-tpl1a2b3c),
so an interrupted invocation resumes where it stopped, and several invocations (e.g. one per variant, each under ~8
minutes on an H100) fill the same file. Adapted encoders are built once per (corpus, objective, steps) and reused by
every size and seed.

    python benchmarks/adaptation.py --task sst2 --sizes 500 2000 --seeds 0 1               # CPU, small
    python benchmarks/adaptation.py --task sst2 --variants adapted-task --sizes full --device cuda
    python benchmarks/adaptation.py --report                                                # table of all results
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import gemma_encoder_hf
from gemma_encoder_hf.harness.adaptation import adapt, default_corpus
from gemma_encoder_hf.harness.data import (
    DATA_ENV_VAR,
    GLUE_TASKS,
    get_task,
    load_glue,
    subsample,
    train_validation_split,
)
from gemma_encoder_hf.harness.glue import adaptation_texts
from gemma_encoder_hf.harness.training import (
    TrainingConfig,
    encoder_dir,
    finetune_classifier,
    init_head_from_label_words,
)

VARIANTS = ("native", "causal", "bidir", "bidir-top", "adapted-task", "adapted-generic", "contrastive")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# The project's data sits beside a clone of this repository.
DATA_ROOT = Path(os.environ.get(DATA_ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "data")


# ----------------------------------------------------------------------------------------------------------------------
# Models (converted once, cached under --work-dir)
# ----------------------------------------------------------------------------------------------------------------------


def native_dir(work_dir: Path) -> Path:
    """The same GGUF as transformers' own decoder checkpoint (it refuses to save a GGUF-loaded model, so the tensors
    are written directly; the tied LM head is the embedding and is left out). The config loses its GGUF
    `quantization_config`: the tensors are dequantised fp32, and the Trainer refuses to fine-tune a "quantized"
    model."""
    out = work_dir / "native"
    if not (out / "model.safetensors").exists():
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM

        from gemma_encoder_hf.integrations.conversion import resolve_source

        location, gguf_file = resolve_source("embedded")
        decoder = AutoModelForCausalLM.from_pretrained(location, gguf_file=gguf_file, dtype=torch.float32)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in decoder.state_dict().items() if k != "lm_head.weight"}
        save_file(state, out / "model.safetensors", metadata={"format": "pt"})
        config = decoder.config.to_dict()
        config.pop("quantization_config", None)
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def adapted_dir(args: argparse.Namespace, corpus: str, task_texts: list[str]) -> tuple[Path, dict]:
    """An adapted encoder for `corpus` ("task" or "generic"), built on first use; returns (folder, its record)."""
    name = (
        f"adapted-{args.task if corpus == 'task' else 'generic'}-{args.objective}-{args.adapt_steps}steps"
        f"-lr{args.adapt_learning_rate}-mask{args.mask_rate}-bs{args.adapt_batch_size}-len{args.adapt_max_length}"
    )
    if args.adapt_lora_rank:
        name += f"-lora{args.adapt_lora_rank}"
    if args.adapted_bidirectional_layers:
        name += f"-top{args.adapted_bidirectional_layers}"
    out = args.work_dir / name
    if not (out / "adaptation.json").exists():
        texts = task_texts if corpus == "task" else default_corpus(args.data)
        adapt(
            encoder_dir("embedded", args.work_dir),
            texts,
            out,
            objective=args.objective,
            mask_rate=args.mask_rate,
            steps=args.adapt_steps,
            learning_rate=args.adapt_learning_rate,
            batch_size=args.adapt_batch_size,
            max_length=args.adapt_max_length,
            lora=args.adapt_lora_rank,
            bidirectional_layers=args.adapted_bidirectional_layers,
            seed=0,
            device=args.device,
        )
    return out, json.loads((out / "adaptation.json").read_text())


def build_model(args: argparse.Namespace, variant: str, task, task_texts: list[str]):
    """(model, tokenizer, description) of one variant. Every variant uses our tokenizer (pair template
    `<bos> A <eos> B`), so differences come from the model, not from how pairs are joined."""
    enc = encoder_dir("embedded", args.work_dir)
    tokenizer = AutoTokenizer.from_pretrained(enc)
    if variant == "native":
        model = AutoModelForSequenceClassification.from_pretrained(
            native_dir(args.work_dir), dtype=torch.float32, **task.model_kwargs()
        )
        if args.label_words:
            init_head_from_label_words(model, tokenizer, args.label_words)
        return model, tokenizer, {"class": type(model).__name__, "label_words": args.label_words}
    knobs = {"classifier_dropout": args.classifier_dropout}
    if args.classifier_hidden_size is not None:
        knobs["classifier_hidden_size"] = args.classifier_hidden_size
    info: dict = {}
    if variant == "causal":
        knobs.update(attention="causal", pooling=args.causal_pooling)
        source = enc
    else:
        knobs.update(attention="bidirectional", pooling=args.pooling)
        if variant == "bidir-top":
            knobs.update(bidirectional_layers=args.bidirectional_layers)
        source = enc
        if variant.startswith("adapted-"):
            source, info["adaptation"] = adapted_dir(args, variant.removeprefix("adapted-"), task_texts)
            knobs.update(bidirectional_layers=args.adapted_bidirectional_layers)
        elif variant == "contrastive":
            if args.contrastive_source is None:
                raise SystemExit("the contrastive variant needs --contrastive-source FOLDER")
            source = args.contrastive_source
            info["contrastive_source"] = str(source)
            training = source / "embedding_training.json"
            if training.exists():
                record = json.loads(training.read_text())
                keys = ("data", "pair_loss", "steps", "train_seconds")
                info["contrastive_training"] = {key: record.get(key) for key in keys}
    model = gemma_encoder_hf.GemmaEncoderForSequenceClassification.from_pretrained(
        source, dtype=torch.float32, **knobs, **task.model_kwargs()
    )
    info.update(knobs)
    if args.label_words:
        init_head_from_label_words(model, tokenizer, args.label_words)
        info["label_words"] = args.label_words
    return model, tokenizer, info


# ----------------------------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------------------------


# Fine-tuning settings (argparse dest: default, label tag). A run whose setting differs from the default carries
# `-<tag><value>` in its label, so a sweep (warm-up 0, two epochs...) into the same file is filed beside the default
# runs instead of being skipped as done, and is never averaged with them.
FINETUNE_SETTINGS = {
    "epochs": (TrainingConfig.epochs, "epochs"),
    "learning_rate": (TrainingConfig.learning_rate, "lr"),
    "head_learning_rate": (TrainingConfig.head_learning_rate, "headlr"),
    "warmup_ratio": (TrainingConfig.warmup_ratio, "warmup"),
    "batch_size": (TrainingConfig.batch_size, "bs"),
    "layer_lr_decay": (TrainingConfig.layer_lr_decay, "llrd"),
}


def short_hash(text: str) -> str:
    """A short, stable name for a setting too long for a label (a template, label words): 6 hex digits of its sha1."""
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def variant_label(args: argparse.Namespace, variant: str) -> str:
    """The name a variant's results are filed under: bidir-top carries its layer count (bidir-top6); a pooling other
    than the variant's default and a head width other than the config's are appended (bidir-top3-last, causal-mean,
    causal-head0), then each fine-tuning setting that differs from its default (native-warmup0, bidir-top3-epochs2),
    the label words and the text template, if any, each as a hash (causal-head0-words1a2b3c-tpl4d5e6f)."""
    if variant == "native":
        label = variant
    elif variant == "causal":
        label = variant if args.causal_pooling == "last" else f"{variant}-{args.causal_pooling}"
    else:
        label = f"{variant}{args.bidirectional_layers}" if variant == "bidir-top" else variant
        if variant.startswith("adapted-") and args.adapted_bidirectional_layers:
            label = f"{label}-top{args.adapted_bidirectional_layers}"
        label = label if args.pooling == "mean" else f"{label}-{args.pooling}"
    if variant != "native" and args.classifier_hidden_size is not None:
        label = f"{label}-head{args.classifier_hidden_size}"
    for name, (default, tag) in FINETUNE_SETTINGS.items():
        if getattr(args, name) != default:
            label = f"{label}-{tag}{getattr(args, name):g}"
    if args.label_words:
        label = f"{label}-words{short_hash(json.dumps(args.label_words))}"
    return label if args.text_template is None else f"{label}-tpl{short_hash(args.text_template)}"


def variant_order(labels: set[str]) -> list[str]:
    """Labels in VARIANTS order; bidir-topK labels where bidir-top stands, by K; other poolings and heads after the
    default."""
    rank = {variant: i for i, variant in enumerate(VARIANTS)}

    def key(label: str) -> tuple[int, int, str]:
        variant = max((v for v in VARIANTS if label == v or label.startswith(v + ("" if v == "bidir-top" else "-"))),
                      key=len, default=label)
        rest = label.removeprefix(variant)
        layers, _, pooling = rest.partition("-") if variant == "bidir-top" else ("", "", rest.removeprefix("-"))
        return rank.get(variant, len(VARIANTS)), int(layers or 0), pooling

    return sorted(labels, key=key)


def apply_template(dataset: Dataset, template: str) -> Dataset:
    """`dataset` with its `text` column formatted by `template` (which names `{text}`, and nothing else)."""
    return dataset.map(lambda row: {"text": template.format(text=row["text"])})


def results_path(args: argparse.Namespace) -> Path:
    return args.out or RESULTS_DIR / f"adaptation_{args.device}.json"


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save_result(path: Path, key: str, record: dict) -> None:
    """Merge one record into the results file (re-read first: another invocation may have written meanwhile)."""
    results = load_results(path)
    results[key] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> None:
    task = get_task(args.task)
    pool = load_glue(task, args.data)
    train_pool, validation = train_validation_split(
        pool, task, validation_size=args.validation_size, seed=0, max_validation=None
    )
    if args.max_eval and len(validation) > args.max_eval:
        validation = subsample(validation, args.max_eval, task, seed=0)
    if args.text_template is not None:
        validation = apply_template(validation, args.text_template)
    path = results_path(args)
    for size_arg in args.sizes:
        size = None if size_arg == "full" else int(size_arg)
        for variant in args.variants:
            label = variant_label(args, variant)
            for seed in args.seeds:
                key = f"{args.task}/{label}/{size_arg}/seed{seed}"
                if key in load_results(path) and not args.overwrite:
                    print(f"skip {key} (in {path})")
                    continue
                torch.manual_seed(seed)
                model, tokenizer, info = build_model(args, variant, task, adaptation_texts(train_pool))
                train = subsample(train_pool, size, task, seed=seed)
                if args.text_template is not None:
                    train = apply_template(train, args.text_template)
                config = TrainingConfig(
                    output_dir=args.work_dir / "runs" / key.replace("/", "_"),
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    eval_batch_size=args.eval_batch_size,
                    learning_rate=args.learning_rate,
                    head_learning_rate=args.head_learning_rate,
                    warmup_ratio=args.warmup_ratio,
                    layer_lr_decay=args.layer_lr_decay,
                    max_length=args.max_length,
                    seed=seed,
                    eval_strategy="no",
                    checkpoints=False,
                    freeze_embeddings=args.freeze_embeddings,
                    device=args.device,
                    show_progress_bar=True,
                )
                result = finetune_classifier(model, tokenizer, task, train, validation, config)
                record = {
                    "task": args.task,
                    "variant": label,
                    "size": size_arg,
                    "train_examples": result.train_examples,
                    "validation_examples": len(validation),
                    "seed": seed,
                    "metrics": result.metrics,
                    "train_minutes": round(result.train_seconds / 60, 2),
                    "seconds_per_step": round(result.train_seconds / max(1, result.trainer.state.global_step), 3),
                    "model": info,
                    "finetune": {
                        "epochs": args.epochs,
                        "lr": args.learning_rate,
                        "head_lr": args.head_learning_rate,
                        "warmup_ratio": args.warmup_ratio,
                        "layer_lr_decay": args.layer_lr_decay,
                        "batch_size": args.batch_size,
                        "freeze_embeddings": args.freeze_embeddings,
                        "max_length": args.max_length,
                        "text_template": args.text_template,
                    },
                    "device": args.device,
                    "torch_threads": torch.get_num_threads(),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                save_result(path, key, record)
                print(f"{key}: {result.metrics} ({record['train_minutes']} min)")
                del model, result


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


def report(paths: list[Path]) -> str:
    """Markdown tables per task and metric (accuracy, plus the task's main metric when it differs): mean over seeds,
    [min-max] and the number of seeds, per size and variant; then what each adaptation cost."""
    records = [r for p in paths for r in load_results(p).values()]
    lines = []
    for task in sorted({r["task"] for r in records}):
        rows = [r for r in records if r["task"] == task]
        sizes = sorted({r["size"] for r in rows}, key=lambda s: float("inf") if s == "full" else int(s))
        # Accuracy for every classification task, plus the headline metric where it differs (STS-B: Pearson only).
        spec = get_task(task)
        metrics = [m for m in dict.fromkeys(["accuracy", spec.main_metric]) if m in spec.metrics]
        for metric in metrics:
            lines.append(f"\n{task} {metric} (mean over seeds, [min-max], n seeds), by training examples\n")
            lines.append("| variant | " + " | ".join(sizes) + " |")
            lines.append("|---" * (len(sizes) + 1) + "|")
            for variant in variant_order({r["variant"] for r in rows}):
                cells = []
                for size in sizes:
                    values = [r["metrics"][metric] for r in rows if r["variant"] == variant and r["size"] == size]
                    if not values:
                        cells.append("")
                    elif len(values) == 1:
                        cells.append(f"{values[0]:.3f} (1)")
                    else:
                        cells.append(f"{statistics.mean(values):.3f} [{min(values):.3f}-{max(values):.3f}] "
                                     f"({len(values)})")
                if any(cells):
                    lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    adaptations = {(r["task"], r["variant"]): r["model"]["adaptation"] for r in records if "adaptation" in r["model"]}
    if adaptations:
        lines.append("\n| adaptation | texts | steps x batch | minutes | s/step | device | mean MNTP loss |")
        lines.append("|---|---|---|---|---|---|---|")
    for (task, variant), a in sorted(adaptations.items()):
        corpus = f"{task} training split" if variant.startswith("adapted-task") else "MS MARCO passages"
        lines.append(
            f"| {a['objective']} on {corpus} ({task} {variant}) | {a['num_texts']} | {a['steps']} x {a['batch_size']} | "
            f"{a['train_seconds'] / 60:.1f} | {a['seconds_per_step']} | {a['device']} | {a['mean_loss']} |"
        )
    return "\n".join(lines)


# The package's adaptation defaults (the recipe the README recommends), so the benchmark measures what users get.
ADAPT_DEFAULTS = {name: p.default for name, p in inspect.signature(adapt).parameters.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sst2", choices=sorted(GLUE_TASKS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--sizes", nargs="+", default=["500", "2000", "8000"], help="training examples, or 'full'")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--data", type=Path, default=DATA_ROOT, help="data root (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/gemma-encoder-adaptation"), dest="work_dir")
    parser.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/adaptation_<device>.json)")
    parser.add_argument("--overwrite", action="store_true", help="re-run keys already in the results file")
    parser.add_argument("--validation-size", type=float, dest="validation_size",
                        help="fraction (or count, if > 1) of the train pool held out at random; default: the split "
                             "shaped like the official dev set (harness.data.DEV_SHAPES); the same for every size")
    parser.add_argument("--max-eval", type=int, default=1000, dest="max_eval", help="cap on validation examples")
    # fine-tuning
    defaults = {name: default for name, (default, _) in FINETUNE_SETTINGS.items()}
    parser.add_argument("--epochs", type=float, default=defaults["epochs"])
    parser.add_argument("--learning-rate", type=float, default=defaults["learning_rate"], dest="learning_rate")
    parser.add_argument("--head-learning-rate", type=float, default=defaults["head_learning_rate"],
                        dest="head_learning_rate")
    parser.add_argument("--warmup-ratio", type=float, default=defaults["warmup_ratio"], dest="warmup_ratio",
                        help="fraction of the fine-tuning steps spent in linear warm-up (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"], dest="batch_size")
    parser.add_argument("--layer-lr-decay", type=float, default=defaults["layer_lr_decay"], dest="layer_lr_decay",
                        help="scale each decoder layer's learning rate by this per layer above it "
                             "(default: %(default)s, the same rate everywhere)")
    parser.add_argument("--text-template", dest="text_template",
                        help="format the first (or only) text of every example, training and validation, with "
                             "this template before tokenising, e.g. $'Review: {text}\\nSentiment:' in bash (every "
                             "variant alike); the label carries a hash of it")
    parser.add_argument("--label-words", nargs="+", dest="label_words",
                        help="start the linear head (native, or ours with --classifier-hidden-size 0) as the language "
                             "model's output layer for these words, one per label in label order, e.g. ' negative' "
                             "' positive' (`harness.training.init_head_from_label_words`); the label carries a hash")
    parser.add_argument("--eval-batch-size", type=int, default=32, dest="eval_batch_size")
    parser.add_argument("--max-length", type=int, default=128, dest="max_length")
    parser.add_argument("--pooling", default="mean", choices=("mean", "last", "first", "attention"))
    parser.add_argument("--bidirectional-layers", type=int, default=6, dest="bidirectional_layers",
                        help="layers (from the top) that attend both ways in the bidir-top variant")
    parser.add_argument("--causal-pooling", default="last", dest="causal_pooling", choices=("mean", "last"))
    parser.add_argument("--classifier-dropout", type=float, dest="classifier_dropout",
                        default=gemma_encoder_hf.GemmaEncoderConfig.classifier_dropout)
    parser.add_argument("--classifier-hidden-size", type=int, dest="classifier_hidden_size",
                        help="width of our head's hidden layer (0: one linear layer, like native's); default: the "
                             "config's (hidden_size)")
    parser.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction,
                        default=TrainingConfig.freeze_embeddings, dest="freeze_embeddings")
    # adaptation
    parser.add_argument("--objective", default=ADAPT_DEFAULTS["objective"], choices=("mntp", "mlm"))
    parser.add_argument("--adapt-steps", type=int, default=ADAPT_DEFAULTS["steps"], dest="adapt_steps")
    parser.add_argument("--adapt-learning-rate", type=float, default=ADAPT_DEFAULTS["learning_rate"],
                        dest="adapt_learning_rate")
    parser.add_argument("--adapt-batch-size", type=int, default=ADAPT_DEFAULTS["batch_size"], dest="adapt_batch_size")
    parser.add_argument("--adapt-max-length", type=int, default=ADAPT_DEFAULTS["max_length"], dest="adapt_max_length")
    parser.add_argument("--adapt-lora-rank", type=int, default=0, dest="adapt_lora_rank")
    parser.add_argument("--adapted-bidirectional-layers", type=int, dest="adapted_bidirectional_layers",
                        help="adapted-* variants: adapt and fine-tune with only the top K layers bidirectional "
                             "(default: every layer)")
    parser.add_argument("--mask-rate", type=float, default=ADAPT_DEFAULTS["mask_rate"], dest="mask_rate")
    parser.add_argument("--contrastive-source", type=Path, dest="contrastive_source",
                        help="encoder folder the contrastive variant starts from (a train-embeddings output)")
    parser.add_argument("--report", nargs="*", type=Path, help="print the table of these results files and exit")
    args = parser.parse_args(argv)
    if args.text_template is not None:
        try:
            args.text_template.format(text="")
        except (KeyError, IndexError, ValueError) as error:
            parser.error(f"--text-template must name {{text}} and no other field ({error!r}): {args.text_template!r}")
        if "{text}" not in args.text_template:
            parser.error(f"--text-template must contain {{text}}: {args.text_template!r}")
    if args.validation_size is not None and args.validation_size > 1:
        args.validation_size = int(args.validation_size)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        print(report(args.report or sorted(RESULTS_DIR.glob("adaptation_*.json"))))
        return 0
    args.work_dir.mkdir(parents=True, exist_ok=True)
    run(args)
    print(report([results_path(args)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fine-tune a Gemma encoder on a GLUE task (or your own table) with transformers' Trainer, then evaluate it.

Offline demo on 2 CPU cores (the embedded Gemma 3 270M; a few minutes):

    python examples/finetune_glue.py --task sst2 --train-examples 256 --eval-examples 256 --max-length 64 \
        --no-checkpoints

The recommended recipe for a few thousand labelled examples (docs/adaptation.md): adapt the encoder to bidirectional
attention on the task's own texts, labels dropped (150 masked-next-token steps, about 7 minutes on 2 CPU cores), then
fine-tune:

    python examples/finetune_glue.py --task sst2 --train-examples 2000 --max-length 64 --adapt-steps 150 \
        --no-checkpoints

Full task on a GPU (bf16 autocast):

    python examples/finetune_glue.py --task sst2 --epochs 2 --batch-size 32 --device cuda --bf16

Your own data (TSV/CSV/JSONL; a pair column makes it a pair task, `<bos> text <eos> pair`). Labels are class ids
0..N-1, names (with --label-names), or any N distinct integers, e.g. 1-5 stars (classes in ascending order, the
values recorded as the class names in the model's id2label):

    python examples/finetune_glue.py --train-file reviews.csv --text-column review --label-column stars --num-labels 5

A Hub dataset (when online): --hub-dataset nyu-mll/glue --hub-config sst2 --text-column sentence

The validation split is carved from the training pool with --split-seed; for a GLUE task it is shaped like the
official dev set (SST-2: 872 full sentences, none of their sub-phrases left in training; pairs: no sentence on both
sides; harness.data.DEV_SHAPES), for your own data a stratified 10%. So
`gemma-encoder evaluate OUTPUT_DIR/model --task sst2 --split-seed 0 [--max-examples N]` scores the same rows again
(pass the same N as --eval-examples).
The model goes to OUTPUT_DIR/model and the results JSON (the model-card format) to OUTPUT_DIR/results.json
(OUTPUT_DIR defaults to runs/glue-<task>, e.g. runs/glue-sst2). The GLUE data root is --data, else the environment
variable GEMMA_ENCODER_DATA, else ../shared/data beside this repository.
"""

import argparse
import json
import os
from pathlib import Path

from gemma_encoder_hf import GemmaEncoderForSequenceClassification
from gemma_encoder_hf.harness.adaptation import adapt
from gemma_encoder_hf.harness.glue import adaptation_texts
from gemma_encoder_hf.modeling.configuration_gemma_encoder import ATTENTION_POOLING_PROBES, ATTENTION_TYPES, POOLING_TYPES
from gemma_encoder_hf.harness.data import (
    DATA_ENV_VAR,
    GLUE_TASKS,
    custom_task,
    get_task,
    load_glue,
    load_hub,
    load_table,
    subsample,
    train_validation_split,
)
from gemma_encoder_hf.harness.evaluation import results_record, write_results
from gemma_encoder_hf.harness.training import TrainingConfig, encoder_dir, finetune_classifier, load_task_model

# The project's data sits beside a clone of this repository.
DATA_ROOT = Path(os.environ.get(DATA_ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", choices=sorted(GLUE_TASKS), help="a GLUE task read from --data")
    source.add_argument("--train-file", type=Path, help="your own .tsv/.csv/.jsonl training pool")
    source.add_argument("--hub-dataset", help="a Hub dataset id (needs network access)")
    data.add_argument("--data", type=Path, default=DATA_ROOT, help="GLUE data root (default: %(default)s)")
    data.add_argument("--hub-config", help="the Hub dataset's config name")
    data.add_argument("--hub-split", default="train")
    data.add_argument("--text-column", default="text")
    data.add_argument("--pair-column", help="second text of a pair task")
    data.add_argument("--label-column", default="label")
    data.add_argument("--num-labels", type=int, default=2, help="your data: classes (1 = regression)")
    data.add_argument("--label-names", nargs="+", help="your data: class names in id order (labels may be names)")
    data.add_argument("--validation-size", type=float,
                      help="fraction (<1) or count carved at random from train; default: for GLUE tasks a split "
                           "shaped like the official dev set (harness.data.DEV_SHAPES), else 10%%")
    data.add_argument("--split-seed", type=int, default=0)
    data.add_argument("--train-examples", type=int, help="train on a stratified subset of this size")
    data.add_argument("--eval-examples", type=int, help="evaluate on a stratified subset of the validation split")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="embedded", help="decoder (folder, Hub id, .gguf, 'embedded') or encoder")
    model.add_argument("--cache-dir", type=Path, default=Path("runs/converted"), help="converted decoders go here")
    model.add_argument("--attention", choices=ATTENTION_TYPES, default="bidirectional")
    model.add_argument("--bidirectional-layers", type=int,
                       help="only the top N layers attend both ways (default: every layer; the GLUE recipe: 3)")
    model.add_argument("--pooling", choices=POOLING_TYPES, default="mean")
    model.add_argument("--attention-probe", choices=ATTENTION_POOLING_PROBES, default="query")
    model.add_argument("--dropout", type=float, help="attention, hidden and classifier dropout (default: config's)")

    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=float, default=1.0)
    train.add_argument("--max-steps", type=int, default=-1)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--learning-rate", type=float, default=TrainingConfig.learning_rate,
                       help="backbone learning rate")
    train.add_argument("--head-learning-rate", type=float, default=TrainingConfig.head_learning_rate,
                       help="learning rate of the new head (pooler + MLP)")
    train.add_argument("--layer-lr-decay", type=float, default=TrainingConfig.layer_lr_decay,
                       help="scale each decoder layer's learning rate by this per layer above it (SST-2's recipe: "
                            "0.9; default: %(default)s, every layer at --learning-rate)")
    train.add_argument("--max-length", type=int, default=128)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction,
                       default=TrainingConfig.freeze_embeddings, help="keep the token embedding fixed")
    train.add_argument("--no-checkpoints", action="store_true", help="no per-epoch eval/checkpoints; keep final")
    train.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    train.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    train.add_argument("--output-dir", type=Path, help="default: runs/glue-<task>")

    adaptation = parser.add_argument_group("adaptation (gemma_encoder_hf.harness.adaptation.adapt, before fine-tuning)")
    adaptation.add_argument("--adapt-steps", type=int, default=0,
                            help="> 0: first run this many masked-next-token steps on the training split's texts, "
                                 "labels dropped (the adapted encoder goes to OUTPUT_DIR/adapted)")
    adaptation.add_argument("--adapt-batch-size", type=int, default=32, help="texts per adaptation step")
    return parser


def load_data(args: argparse.Namespace):
    if args.task:
        task = get_task(args.task)
        return task, load_glue(task, args.data), str(args.data / task.file)
    task = custom_task(
        args.train_file.stem if args.train_file else args.hub_dataset.replace("/", "_"),
        num_labels=args.num_labels,
        pair=args.pair_column is not None,
        label_names=args.label_names,
    )
    columns = dict(text_column=args.text_column, pair_column=args.pair_column, label_column=args.label_column)
    if args.train_file:
        pool, path = load_table(args.train_file, task, **columns), str(args.train_file)
    else:
        pool = load_hub(args.hub_dataset, task, config_name=args.hub_config, split=args.hub_split, **columns)
        path = f"hf://datasets/{args.hub_dataset}"
    # The class names the file's labels define (e.g. stars "1".."5"), so that id2label maps ids back to them.
    return task.with_labels_of(pool), pool, path


def main() -> None:
    args = build_parser().parse_args()
    task, pool, data_path = load_data(args)
    size = args.validation_size
    if size is not None and size >= 1:
        size = int(size)
    train_pool, val_set = train_validation_split(pool, task, validation_size=size, seed=args.split_seed)
    train_set = subsample(train_pool, args.train_examples, task, seed=args.split_seed)
    val_set = subsample(val_set, args.eval_examples, task, seed=args.split_seed)
    print(f"{task.name}: {len(pool)} rows -> train {len(train_set)}, validation {len(val_set)} "
          f"(split seed {args.split_seed})")

    knobs = dict(attention=args.attention, bidirectional_layers=args.bidirectional_layers, pooling=args.pooling,
                 attention_pooling_probe=args.attention_probe)
    if args.dropout is not None:
        knobs.update(attention_dropout=args.dropout, hidden_dropout=args.dropout, classifier_dropout=args.dropout)
    output_dir = args.output_dir or Path("runs") / f"glue-{task.name}"
    source = args.model
    if args.adapt_steps > 0:
        # Unlabelled text a user has anyway: every text of the training split (not only the labelled subset), never
        # the validation rows.
        texts = adaptation_texts(train_pool)
        source = adapt(encoder_dir(args.model, args.cache_dir), texts, output_dir / "adapted", steps=args.adapt_steps,
                       batch_size=args.adapt_batch_size, attention=args.attention,
                       bidirectional_layers=args.bidirectional_layers, seed=args.seed, device=args.device)
        seen = json.loads((source / "adaptation.json").read_text())["num_texts_seen"]
        print(f"adapted on {seen} of the {len(texts)} unlabelled texts of the training split: {source}")
    model, tokenizer = load_task_model(
        GemmaEncoderForSequenceClassification, source, cache_dir=args.cache_dir, seed=args.seed, **task.model_kwargs(),
        **knobs,
    )
    config = TrainingConfig(
        output_dir=output_dir / "checkpoints",
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        head_learning_rate=args.head_learning_rate,
        layer_lr_decay=args.layer_lr_decay,
        max_length=args.max_length,
        seed=args.seed,
        checkpoints=not args.no_checkpoints,
        freeze_embeddings=args.freeze_embeddings,
        device=args.device,
        bf16=True if args.bf16 else None,
    )
    result = finetune_classifier(model, tokenizer, task, train_set, val_set, config)

    result.model.save_pretrained(output_dir / "model")
    tokenizer.save_pretrained(output_dir / "model")
    details = {"train_examples": len(train_set), "eval_examples": len(val_set), "train_seconds": result.train_seconds}
    record = results_record(
        model=str(output_dir / "model"), task=task.name, dataset_name=task.name,
        split=f"validation(seed={args.split_seed})", path=data_path, metrics=result.metrics, details=details,
        config=result.model.config,
    )
    write_results(output_dir / "results.json", record)
    print(json.dumps({**record["metrics"], **record["details"]}, indent=2))
    print(f"model: {output_dir / 'model'}  results: {output_dir / 'results.json'}")


if __name__ == "__main__":
    main()

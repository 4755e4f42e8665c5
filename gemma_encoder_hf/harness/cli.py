# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""The `gemma-encoder` command. Each subcommand parses its arguments and calls one library function."""

import argparse
import json
import logging
import sys

from ..modeling.configuration_gemma_encoder import ATTENTION_TYPES, POOLING_TYPES


def _parse_value(text: str):
    """CLI override values: JSON when it parses (numbers, booleans, null, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _overrides(args: argparse.Namespace) -> dict:
    overrides = {}
    for name in ("attention", "pooling", "num_labels"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = _parse_value(value)
    return overrides


def _cmd_convert(args: argparse.Namespace) -> None:
    from ..integrations.conversion import convert

    out = convert(args.source, args.output_dir, task=args.task, **_overrides(args))
    print(f"wrote {args.task} encoder to {out}")


def _cmd_card(args: argparse.Namespace) -> None:
    from ..integrations.model_card import write_model_card

    out = write_model_card(
        args.model_dir,
        args.out,
        model_id=args.model_id,
        results_files=args.results,
        base_model=args.base_model,
        training_data=args.training_data,
    )
    print(f"wrote model card to {out}")


def _cmd_adapt(args: argparse.Namespace) -> None:
    from .adaptation import adapt, default_corpus, read_texts

    if args.text:
        texts = [t for path in args.text for t in read_texts(path, args.column)]
    else:
        texts = default_corpus(args.data) if args.data else default_corpus()
    out = adapt(
        args.source,
        texts,
        args.output_dir,
        objective=args.objective,
        masking=args.masking,
        mask_rate=args.mask_rate,
        steps=args.steps,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        lora=args.lora_rank,
        train_embeddings=args.train_embeddings,
        seed=args.seed,
        use_cpu=args.cpu,
    )
    record = json.loads((out / "adaptation.json").read_text())
    print(
        f"adapted on {record['num_texts']} texts in {record['train_seconds'] / 60:.1f} min "
        f"({record['seconds_per_step']} s/step, mean loss {record['mean_loss']}); wrote {out}"
    )


def _cmd_finetune(args: argparse.Namespace) -> None:
    from .glue import run_glue

    kwargs = {"data_root": args.data} if args.data else {}
    record = run_glue(
        args.task, args.source, args.output_dir, args.train_examples, seed=args.seed, device=args.device, **kwargs
    )
    print(json.dumps(record["metrics"], indent=2))
    print(f"wrote {args.output_dir}/model and {args.output_dir}/results.json")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate_saved_classifier, evaluate_saved_reranker, write_results

    if (args.task is None) == (args.rerank is None):
        raise ValueError("pass exactly one of --task TASK (GLUE classification) or --rerank DIR (BEIR folder)")
    common = dict(batch_size=args.batch_size, max_length=args.max_length, device=args.device)
    if args.task is not None:
        record = evaluate_saved_classifier(
            args.model, args.task, data=args.data, split=args.split or "validation", split_seed=args.split_seed,
            max_examples=args.max_examples, **common,
        )
    else:
        record = evaluate_saved_reranker(
            args.model, args.rerank, split=args.split or "test", max_queries=args.max_queries, top_k=args.top_k,
            **common,
        )
    text = json.dumps(record, indent=2)
    if args.out:
        write_results(args.out, record)
    print(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gemma-encoder", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    convert = sub.add_parser("convert", help="convert a Gemma decoder (folder, Hub id, GGUF, 'embedded') to an encoder")
    convert.add_argument("source", help="decoder folder, Hub id, .gguf file, or 'embedded' (Gemma 3 270M from PyPI)")
    convert.add_argument("output_dir")
    convert.add_argument("--task", choices=("base", "classification", "ranking", "masked-lm"), default="base")
    convert.add_argument("--attention", choices=ATTENTION_TYPES)
    convert.add_argument("--pooling", choices=POOLING_TYPES)
    convert.add_argument("--num-labels", type=int, dest="num_labels")
    convert.add_argument("--set", action="append", metavar="KEY=VALUE", help="any GemmaEncoderConfig field")
    convert.set_defaults(func=_cmd_convert)

    card = sub.add_parser("card", help="write the model card (README.md) of a saved GemmaEncoder model")
    card.add_argument("model_dir", help="folder written by save_pretrained / convert")
    card.add_argument("--results", nargs="+", default=[], metavar="JSON", help="`gemma-encoder evaluate` results")
    card.add_argument("--out", help="where to write the card (default: MODEL_DIR/README.md)")
    card.add_argument("--model-id", dest="model_id", help="Hub repo id the usage snippet loads (default: MODEL_DIR)")
    card.add_argument("--base-model", dest="base_model", help="Hub id of the decoder, e.g. google/gemma-3-270m")
    card.add_argument("--training-data", nargs="+", default=[], dest="training_data", metavar="DATASET")
    card.set_defaults(func=_cmd_card)

    # Choices are spelled out rather than imported: the adaptation module pulls in datasets and the Trainer, which
    # `gemma-encoder --help` and `convert` should not pay for.
    adapt = sub.add_parser(
        "adapt",
        help="teach an encoder bidirectional context on unlabelled text (MNTP / MLM) before task fine-tuning",
    )
    adapt.add_argument("source", help="decoder (folder, Hub id, .gguf, 'embedded') or GemmaEncoder folder")
    adapt.add_argument("output_dir")
    adapt.add_argument(
        "--text", nargs="+", metavar="FILE",
        help=".txt (one text per line) or .tsv/.csv/.jsonl (with --column); default: the MS MARCO passages of --data",
    )
    adapt.add_argument("--column", help="column holding the text in a table file")
    adapt.add_argument("--data", help="data root holding the default corpus (default: <repo>/../shared/data)")
    adapt.add_argument("--objective", choices=("mntp", "mlm"), default="mntp")
    adapt.add_argument("--masking", choices=("mask", "bert"), default="mask", help="all <mask>, or 80/10/10")
    adapt.add_argument("--mask-rate", type=float, default=0.2, dest="mask_rate")
    adapt.add_argument("--steps", type=int, default=150)
    adapt.add_argument("--lr", type=float, default=1e-4)
    adapt.add_argument("--batch-size", type=int, default=32, dest="batch_size")
    adapt.add_argument("--max-length", type=int, default=64, dest="max_length")
    adapt.add_argument("--lora-rank", type=int, default=0, dest="lora_rank", help="> 0: LoRA of this rank, merged")
    adapt.add_argument("--train-embeddings", action="store_true", dest="train_embeddings")
    adapt.add_argument("--seed", type=int, default=0)
    adapt.add_argument("--cpu", action="store_true", help="stay on CPU even when a GPU is present")
    adapt.set_defaults(func=_cmd_adapt)

    # Task names spelled out for the same reason as adapt's choices (harness.glue.GLUE_RECIPES holds the same six).
    finetune = sub.add_parser(
        "finetune",
        help="fine-tune on a GLUE task with its measured recipe (adaptation included where it helps), then evaluate "
             "on the dev-shaped validation split",
    )
    finetune.add_argument("--task", required=True, choices=("sst2", "cola", "mrpc", "rte", "stsb", "qnli"))
    finetune.add_argument("source", help="decoder (folder, Hub id, .gguf, 'embedded') or GemmaEncoder folder")
    finetune.add_argument("output_dir")
    finetune.add_argument("--train-examples", type=int, dest="train_examples",
                          help="a stratified subset of the training split (default: all of it)")
    finetune.add_argument("--data", help="data root holding <task>/ (default: <repo>/../shared/data)")
    finetune.add_argument("--seed", type=int, default=0)
    finetune.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    finetune.set_defaults(func=_cmd_finetune)

    evaluate = sub.add_parser(
        "evaluate", help="score a saved model on a GLUE task (--task) or by reranking BM25 candidates (--rerank)"
    )
    evaluate.add_argument("model", help="folder written by save_pretrained (GemmaEncoder or any transformers classifier)")
    evaluate.add_argument("--task", help="GLUE task: sst2, cola, mrpc, rte, stsb, qnli")
    evaluate.add_argument("--data", help="data root (default: <repo>/../shared/data) or the task's TSV itself")
    evaluate.add_argument("--rerank", metavar="DIR", help="BEIR folder with corpus, queries, qrels, BM25 candidates")
    evaluate.add_argument(
        "--split", help="--task: 'validation' (carved from train, default) or 'all'; --rerank: query split (test)"
    )
    evaluate.add_argument("--split-seed", type=int, default=0, dest="split_seed", help="seed of the validation split")
    evaluate.add_argument("--max-examples", type=int, dest="max_examples", help="score a stratified subset")
    evaluate.add_argument("--max-queries", type=int, dest="max_queries", help="rerank only the first N queries")
    evaluate.add_argument("--top-k", type=int, dest="top_k", help="rerank only the top K BM25 candidates")
    evaluate.add_argument("--batch-size", type=int, default=32, dest="batch_size")
    evaluate.add_argument("--max-length", type=int, default=256, dest="max_length")
    evaluate.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    evaluate.add_argument("--out", help="write the results JSON here (read by `gemma-encoder card --results`)")
    evaluate.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError, ImportError) as err:
        print(f"gemma-encoder {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

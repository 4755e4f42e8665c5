# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""The `gemma-encoder` command. Each subcommand parses its arguments and calls one library function.

Adding a subcommand: write `_cmd_<name>(args)` (it calls the library) and `_add_<name>(sub)` (it declares the flags,
`set_defaults(func=_cmd_<name>, flags={...})`), and list `_add_<name>` in `SUBCOMMANDS`. `flags` maps the library
function's parameter names to the command's flags: when the library raises an `InvalidArgumentError` about a
parameter, the error is printed as argparse prints its own, `gemma-encoder <cmd>: error: argument --flag: ...`,
with exit status 2. Every other input error (ValueError, TypeError, OSError, ImportError) is printed the same way
without the `argument` part; tracebacks are for bugs only.
"""

import argparse
import json
import logging
import sys

from ..modeling.configuration_gemma_encoder import ATTENTION_TYPES, POOLING_TYPES
from .errors import InvalidArgumentError

# Input errors the library raises; anything else is a bug and keeps its traceback.
INPUT_ERRORS = (ValueError, TypeError, OSError, ImportError)


def _config_override(item: str) -> tuple[str, object]:
    """`--set KEY=VALUE`: VALUE is JSON when it parses (numbers, booleans, null, lists), else the raw string."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. pooling=mean), got {item!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# ----------------------------------------------------------------------------------------------------------------------
# convert
# ----------------------------------------------------------------------------------------------------------------------


def _cmd_convert(args: argparse.Namespace) -> None:
    from ..integrations.conversion import convert

    overrides = {name: getattr(args, name) for name in ("attention", "pooling", "num_labels")}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    overrides.update(dict(args.set or []))
    out = convert(args.source, args.output_dir, task=args.task, **overrides)
    print(f"wrote {args.task} encoder to {out}")


def _add_convert(sub) -> None:
    convert = sub.add_parser("convert", help="convert a Gemma decoder (folder, Hub id, GGUF, 'embedded') to an encoder")
    convert.add_argument("source", help="decoder folder, Hub id, .gguf file, or 'embedded' (Gemma 3 270M from PyPI)")
    convert.add_argument("output_dir")
    convert.add_argument(
        "--task",
        choices=("base", "classification", "ranking", "masked-lm", "token-classification", "question-answering"),
        default="base",
    )
    convert.add_argument("--attention", choices=ATTENTION_TYPES)
    convert.add_argument("--pooling", choices=POOLING_TYPES)
    convert.add_argument("--num-labels", type=int, dest="num_labels")
    convert.add_argument(
        "--set", action="append", type=_config_override, metavar="KEY=VALUE", help="any GemmaEncoderConfig field"
    )
    convert.set_defaults(func=_cmd_convert, flags={"source": "source", "output_dir": "output_dir"})


# ----------------------------------------------------------------------------------------------------------------------
# card
# ----------------------------------------------------------------------------------------------------------------------


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


def _add_card(sub) -> None:
    card = sub.add_parser("card", help="write the model card (README.md) of a saved GemmaEncoder model")
    card.add_argument("model_dir", help="folder written by save_pretrained / convert")
    card.add_argument("--results", nargs="+", default=[], metavar="JSON", help="`gemma-encoder evaluate` results")
    card.add_argument("--out", help="where to write the card (default: MODEL_DIR/README.md)")
    card.add_argument("--model-id", dest="model_id", help="Hub repo id the usage snippet loads (default: MODEL_DIR)")
    card.add_argument("--base-model", dest="base_model", help="Hub id of the decoder, e.g. google/gemma-3-270m")
    card.add_argument("--training-data", nargs="+", default=[], dest="training_data", metavar="DATASET")
    card.set_defaults(func=_cmd_card, flags={"model_dir": "model_dir"})


# ----------------------------------------------------------------------------------------------------------------------
# adapt
# ----------------------------------------------------------------------------------------------------------------------


def _cmd_adapt(args: argparse.Namespace) -> None:
    from .adaptation import adapt, default_corpus, read_texts

    if args.text:
        texts = [t for path in args.text for t in read_texts(path, args.column)]
    else:
        texts = default_corpus(args.data)
    out = adapt(
        args.source,
        texts,
        args.output_dir,
        objective=args.objective,
        masking=args.masking,
        mask_rate=args.mask_rate,
        steps=args.steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_length=args.max_length,
        lora=args.lora_rank,
        train_embeddings=args.train_embeddings,
        bidirectional_layers=args.bidirectional_layers,
        seed=args.seed,
        device=args.device,
    )
    record = json.loads((out / "adaptation.json").read_text())
    print(
        f"adapted on {record['num_texts_seen']} of {record['num_texts']} texts ({record['steps']} steps x "
        f"{record['batch_size']}) in {record['train_seconds'] / 60:.1f} min ({record['seconds_per_step']} s/step, "
        f"mean loss {record['mean_loss']}); wrote {out}"
    )


def _add_adapt(sub) -> None:
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
    adapt.add_argument(
        "--data", help="data root holding the default corpus (default: the environment variable GEMMA_ENCODER_DATA)"
    )
    adapt.add_argument("--objective", choices=("mntp", "mlm"), default="mntp")
    adapt.add_argument("--masking", choices=("mask", "bert"), default="mask", help="all <mask>, or 80/10/10")
    adapt.add_argument("--mask-rate", type=float, default=0.2, dest="mask_rate")
    adapt.add_argument("--steps", type=int, default=150)
    adapt.add_argument("--learning-rate", type=float, default=1e-4, dest="learning_rate")
    adapt.add_argument("--batch-size", type=int, default=32, dest="batch_size")
    adapt.add_argument("--max-length", type=int, default=64, dest="max_length")
    adapt.add_argument("--lora-rank", type=int, default=0, dest="lora_rank", help="> 0: LoRA of this rank, merged")
    adapt.add_argument("--train-embeddings", action="store_true", dest="train_embeddings")
    adapt.add_argument("--bidirectional-layers", type=int, dest="bidirectional_layers",
                       help="only the top N layers bidirectional, as the fine-tune after it will have them "
                            "(default: every layer)")
    adapt.add_argument("--seed", type=int, default=0)
    adapt.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    adapt.set_defaults(
        func=_cmd_adapt,
        flags={"path": "--text", "column": "--column", "data_root": "--data", "device": "--device", "source": "source"},
    )


# ----------------------------------------------------------------------------------------------------------------------
# finetune
# ----------------------------------------------------------------------------------------------------------------------


def _cmd_finetune(args: argparse.Namespace) -> None:
    from .finetune import finetune_task

    record = finetune_task(
        args.task, args.source, args.output_dir, train_examples=args.train_examples,
        eval_examples=args.eval_examples, data=args.data,
        epochs=args.epochs, learning_rate=args.learning_rate, layer_lr_decay=args.layer_lr_decay,
        batch_size=args.batch_size, max_length=args.max_length,
        attention=args.attention, bidirectional_layers=args.bidirectional_layers, adapt_steps=args.adapt_steps,
        seed=args.seed, device=args.device,
    )  # fmt: skip
    print(json.dumps(record, indent=2))


def _add_finetune(sub) -> None:
    finetune = sub.add_parser(
        "finetune",
        help="fine-tune on CoNLL-2003 NER, SQuAD QA or a GLUE task with the measured recipe; save model + results",
    )
    finetune.add_argument("source", help="decoder (folder, Hub id, .gguf, 'embedded') or GemmaEncoder folder")
    finetune.add_argument("output_dir", help="gets the model, its tokenizer and results.json (the model-card format)")
    finetune.add_argument("--task", required=True, help="conll2003, squad, or a GLUE task (sst2, cola, mrpc, ...)")
    finetune.add_argument("--train-examples", type=int, dest="train_examples", help="train on the first N examples")
    finetune.add_argument("--eval-examples", type=int, dest="eval_examples", help="score the first N validation rows")
    finetune.add_argument(
        "--data", help="data root (default: the environment variable GEMMA_ENCODER_DATA) or the task's training file"
    )
    finetune.add_argument("--epochs", type=float, help="default: the task's recipe")
    finetune.add_argument("--learning-rate", type=float, dest="learning_rate", help="backbone learning rate")
    finetune.add_argument("--layer-lr-decay", type=float, dest="layer_lr_decay",
                          help="scale each layer's learning rate by this per layer above it (default: the task's "
                               "recipe; 1: one rate for every layer)")
    finetune.add_argument("--batch-size", type=int, dest="batch_size")
    finetune.add_argument("--max-length", type=int, dest="max_length")
    finetune.add_argument("--attention", choices=ATTENTION_TYPES, help="default: the task's recipe")
    finetune.add_argument("--bidirectional-layers", type=int, dest="bidirectional_layers",
                          help="only the top N layers attend both ways (default: the task's recipe; 0: every layer)")
    finetune.add_argument("--adapt-steps", type=int, dest="adapt_steps",
                          help="masked-next-token steps on the training text first (default: the task's recipe; 0: none)")
    finetune.add_argument("--seed", type=int, default=0)
    finetune.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    finetune.set_defaults(func=_cmd_finetune)


# ----------------------------------------------------------------------------------------------------------------------
# train-embeddings
# ----------------------------------------------------------------------------------------------------------------------


def _cmd_train_embeddings(args: argparse.Namespace) -> None:
    from .embeddings import train_embeddings

    out = train_embeddings(
        args.source,
        args.output_dir,
        args.data,
        pair_loss=args.pair_loss,
        scored_loss=args.scored_loss,
        temperature=args.temperature,
        mini_batch_size=args.mini_batch_size,
        num_negatives=args.num_negatives,
        matryoshka_dims=args.matryoshka_dims,
        projection_dims=args.projection_dims,
        truncate_dim=args.truncate_dim,
        pooling=args.pooling,
        lora=args.lora_rank,
        steps=args.steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_length=args.max_length,
        save_steps=args.save_steps,
        seed=args.seed,
        device=args.device,
    )
    record = json.loads((out / "embedding_training.json").read_text())
    print(
        f"trained on {record['data']} in {record['train_seconds'] / 60:.1f} min (loss {record['first_logged_loss']} "
        f"-> {record['last_logged_loss']}); wrote {out}"
    )


def _add_train_embeddings(sub) -> None:
    train = sub.add_parser(
        "train-embeddings",
        help="train an embedding model contrastively (in-batch + hard negatives, Matryoshka) with sentence-transformers",
    )
    train.add_argument("source", help="GemmaEncoder folder (converted or adapted), decoder source, or embedding model")
    train.add_argument("output_dir")
    train.add_argument(
        "--data", nargs="+", required=True, metavar="PATH",
        help="(anchor, positive[, negative]) .jsonl/.tsv, scored pairs (sentence1, sentence2, score; STS-B), or a "
        "BEIR folder (BM25-mined hard negatives)",
    )
    train.add_argument("--pair-loss", choices=("mnrl", "cached-mnrl"), default="mnrl", dest="pair_loss")
    train.add_argument("--scored-loss", choices=("cosent", "angle"), default="cosent", dest="scored_loss")
    train.add_argument("--temperature", type=float, default=0.05)
    train.add_argument("--mini-batch-size", type=int, default=8, dest="mini_batch_size", help="cached-mnrl chunk")
    train.add_argument("--num-negatives", type=int, default=1, dest="num_negatives", help="BM25 negatives per pair")
    train.add_argument("--matryoshka-dims", type=int, nargs="*", default=[256, 128], dest="matryoshka_dims")
    train.add_argument("--projection-dims", type=int, nargs="*", default=[], dest="projection_dims")
    train.add_argument("--truncate-dim", type=int, dest="truncate_dim", help="save with this Matryoshka dimension")
    train.add_argument("--pooling", choices=POOLING_TYPES, default="mean")
    train.add_argument("--lora-rank", type=int, default=0, dest="lora_rank", help="> 0: LoRA of this rank, merged")
    # Defaults: the measured CPU search recipe (one pass, batches of 16, lr 5e-5, 160 tokens; README "Embeddings").
    train.add_argument("--steps", type=int, help="optimizer steps (default: one pass in full batches)")
    train.add_argument("--learning-rate", type=float, default=5e-5, dest="learning_rate")
    train.add_argument("--batch-size", type=int, default=16, dest="batch_size")
    train.add_argument("--max-length", type=int, default=160, dest="max_length")
    train.add_argument("--save-steps", type=int, default=0, dest="save_steps", help="checkpoint every N steps")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    train.set_defaults(func=_cmd_train_embeddings, flags={"source": "source", "data": "--data", "device": "--device"})


def _evaluate_retrieval(args: argparse.Namespace) -> dict:
    from .retrieval import evaluate_retrieval

    return evaluate_retrieval(
        args.model, args.retrieve, split=args.split or "test", max_queries=args.max_queries, reranker=args.reranker,
        rerank_top_k=args.top_k or 20, batch_size=args.batch_size, max_length=args.max_length, device=args.device,
        cache_dir=args.cache_dir,
    )


def _evaluate_sts(args: argparse.Namespace) -> dict:
    from .retrieval import evaluate_sts

    return evaluate_sts(
        args.model, args.sts, split=args.split or "validation", split_seed=args.split_seed,
        batch_size=args.batch_size, max_length=args.max_length, device=args.device,
    )


def _add_embedding_evaluation_options(evaluate: argparse.ArgumentParser, what) -> None:
    what.add_argument(
        "--retrieve", metavar="DIR",
        help="embedding model: dense retrieval over the BEIR folder's whole corpus, BM25 fusion (nDCG@10, R@100)",
    )  # fmt: skip
    what.add_argument("--sts", metavar="FILE", help="embedding model: STS Spearman on an STS-B-format file")
    evaluate.add_argument("--reranker", help="--retrieve: also rerank BM25's top --top-k (default 20) with this model")
    evaluate.add_argument(
        "--cache-dir", default="runs/embedding_cache", dest="cache_dir", help="--retrieve: corpus embeddings cache"
    )


# ----------------------------------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------------------------------


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate_saved_classifier, evaluate_saved_reranker, write_results

    common = dict(batch_size=args.batch_size, max_length=args.max_length, device=args.device)
    if args.retrieve is not None:
        record = _evaluate_retrieval(args)
    elif args.sts is not None:
        record = _evaluate_sts(args)
    elif args.task in ("conll2003", "squad"):
        from .token_tasks import evaluate_saved_token_model

        record = evaluate_saved_token_model(
            args.model, args.task, data=args.data, max_examples=args.max_examples, split_seed=args.split_seed,
            batch_size=args.batch_size, max_length=args.max_length, device=args.device,
        )  # fmt: skip
    elif args.task is not None:
        record = evaluate_saved_classifier(
            args.model, args.task, data=args.data, split=args.split or "validation", split_seed=args.split_seed,
            max_examples=args.max_examples, **common,
        )
    else:
        record = evaluate_saved_reranker(
            args.model, args.rerank, split=args.split or "test", max_queries=args.max_queries, top_k=args.top_k,
            **common,
        )
    if args.out:
        write_results(args.out, record)
    print(json.dumps(record, indent=2))


def _add_evaluate(sub) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="score a saved model: a task (--task), BM25 reranking (--rerank), retrieval (--retrieve) or STS (--sts)",
    )
    evaluate.add_argument(
        "model", help="folder written by save_pretrained (GemmaEncoder or any transformers classifier)"
    )
    what = evaluate.add_mutually_exclusive_group(required=True)
    what.add_argument("--task", help="GLUE task (sst2, cola, mrpc, rte, stsb, qnli), conll2003 or squad")
    what.add_argument("--rerank", metavar="DIR", help="BEIR folder with corpus, queries, qrels, BM25 candidates")
    _add_embedding_evaluation_options(evaluate, what)
    evaluate.add_argument(
        "--data", help="data root (default: the environment variable GEMMA_ENCODER_DATA) or the task's TSV itself"
    )
    evaluate.add_argument(
        "--split", help="--task: 'validation' (carved from train, default) or 'all'; --rerank: query split (test)"
    )
    evaluate.add_argument("--split-seed", type=int, default=0, dest="split_seed", help="seed of the validation split")
    evaluate.add_argument("--max-examples", type=int, dest="max_examples", help="score a stratified subset")
    evaluate.add_argument("--max-queries", type=int, dest="max_queries", help="rerank only the first N queries")
    evaluate.add_argument("--top-k", type=int, dest="top_k", help="rerank only the top K BM25 candidates")
    evaluate.add_argument("--batch-size", type=int, default=32, dest="batch_size")
    evaluate.add_argument(
        "--max-length", type=int, dest="max_length",
        help="default: 256 (conll2003: 128, squad: 384)",
    )
    evaluate.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    evaluate.add_argument("--out", help="write the results JSON here (read by `gemma-encoder card --results`)")
    evaluate.set_defaults(
        func=_cmd_evaluate,
        flags={
            "model_path": "model", "data_root": "--data", "directory": "--rerank", "split": "--split",
            "device": "--device",
        },
    )


# ----------------------------------------------------------------------------------------------------------------------
# embed | classify | score: bulk inference over files of any size; resumable, data-parallel under `accelerate launch`
# ----------------------------------------------------------------------------------------------------------------------


def _run_bulk(task: str, args: argparse.Namespace) -> None:
    from .bulk import Columns, run_bulk

    columns = Columns(text=args.text_column, text_pair=getattr(args, "text_pair_column", None), id=args.id_column)
    report = run_bulk(
        task, args.model, args.input, args.output, columns, shard_size=args.shard_size, batch_size=args.batch_size,
        dtype=args.dtype, device=args.device, on_error=args.on_error, max_length=args.max_length,
        normalize_embeddings=getattr(args, "normalize_embeddings", False),
    )  # fmt: skip
    if report.output is None:  # a non-zero rank of a data-parallel run: rank 0 reports
        return
    resumed = f", {report.shards_resumed} resumed from an earlier run" if report.shards_resumed else ""
    print(f"wrote {report.rows} rows to {report.output} ({report.shards} shards{resumed})")
    if report.bad_rows:
        examples = "; ".join(", ".join(f"{k}={v!r}" for k, v in row.items()) for row in report.first_bad_rows)
        print(f"skipped {report.bad_rows} bad rows (kept with null results and their error), e.g. {examples}")


def _cmd_embed(args: argparse.Namespace) -> None:
    _run_bulk("embed", args)


def _cmd_classify(args: argparse.Namespace) -> None:
    _run_bulk("classify", args)


def _cmd_score(args: argparse.Namespace) -> None:
    _run_bulk("score", args)


def _add_bulk_arguments(parser: argparse.ArgumentParser, pairs: str) -> None:
    """The arguments `embed`, `classify` and `score` share; `pairs` is "no", "optional" or "required"."""
    parser.add_argument("model", help="folder written by save_pretrained / convert (with its tokenizer)")
    parser.add_argument("input", help="a .jsonl, .csv, .tsv or .parquet file, read as a stream")
    parser.add_argument("output", help="the .parquet file to write (shards go to OUTPUT.parts/ until the end)")
    parser.add_argument("--text-column", default="text", dest="text_column")
    if pairs != "no":
        parser.add_argument(
            "--text-pair-column", dest="text_pair_column", required=pairs == "required",
            help="column of the second text of each pair (query/document, premise/hypothesis)",
        )  # fmt: skip
    parser.add_argument(
        "--id-column", dest="id_column", help="column copied to the output (default: `row`, the row number)"
    )
    parser.add_argument("--batch-size", type=int, default=32, dest="batch_size")
    parser.add_argument(
        "--shard-size", type=int, default=10_000, dest="shard_size",
        help="rows per shard: the unit of resume and of work between ranks, and the length-sorting window",
    )  # fmt: skip
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: this rank's GPU under accelerate, else CPU)")
    parser.add_argument("--max-length", type=int, dest="max_length", help="truncate texts to this many tokens")
    parser.add_argument(
        "--on-error", choices=("raise", "skip"), default="raise", dest="on_error",
        help="bad rows (empty or missing text, invalid UTF-8): stop, or keep them with null results and the reason",
    )  # fmt: skip


def _add_embed(sub) -> None:
    embed = sub.add_parser("embed", help="pooled embeddings of every row of a JSONL/CSV/TSV/Parquet file, to Parquet")
    _add_bulk_arguments(embed, pairs="no")
    embed.add_argument("--normalize-embeddings", action="store_true", dest="normalize_embeddings")
    embed.set_defaults(func=_cmd_embed)


def _add_classify(sub) -> None:
    classify = sub.add_parser("classify", help="label and label probabilities of every row of a file, to Parquet")
    _add_bulk_arguments(classify, pairs="optional")
    classify.set_defaults(func=_cmd_classify)


def _add_score(sub) -> None:
    score = sub.add_parser("score", help="raw scores of every (text, text_pair) row of a file (reranking), to Parquet")
    _add_bulk_arguments(score, pairs="required")
    score.set_defaults(func=_cmd_score)


# ----------------------------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------------------------

SUBCOMMANDS = (
    _add_convert, _add_card, _add_adapt, _add_finetune, _add_train_embeddings, _add_evaluate, _add_embed, _add_classify, _add_score,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gemma-encoder", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def error_message(err: Exception, flags: dict[str, str]) -> str:
    """The text after `error: `: argparse's `argument FLAG: ` prefix when the error is about one of the command's
    arguments."""
    if isinstance(err, InvalidArgumentError) and err.argument in flags:
        return f"argument {flags[err.argument]}: {err}"
    return str(err)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    parser.set_defaults(flags={})  # a subcommand's own `flags` replace this
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except INPUT_ERRORS as err:
        print(f"gemma-encoder {args.command}: error: {error_message(err, args.flags)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train a Gemma encoder cross-encoder reranker on SciFact with BM25 hard negatives, then rerank BM25's top 100.

Each training group is a query, one relevant abstract and `--group-size - 1` hard negatives drawn from the query's
BM25 candidates; the listwise loss (softmax cross-entropy over the group) is the default. Evaluation reranks the
BM25 top-100 of the test queries given in `../shared/data/scifact` and reports nDCG@10 and MRR@10 (ranx), next to
BM25's own numbers on the same candidates.

Offline CPU demo (small: 32 training queries, 20 test queries x top-20 candidates):

    python examples/finetune_reranker.py --train-queries 32 --group-size 4 --max-length 128 \
        --eval-queries 20 --top-k 20 --freeze-embeddings --head-learning-rate 1e-3

Full run on a GPU (809 training queries, all 150 test queries x 100 candidates):

    python examples/finetune_reranker.py --epochs 2 --batch-size 4 --max-length 384 --device cuda --bf16

The model goes to OUTPUT_DIR/model and the results JSON to OUTPUT_DIR/results.json;
`gemma-encoder evaluate OUTPUT_DIR/model --rerank ../shared/data/scifact` scores it again. The BEIR folder is --data,
else `scifact` in the data root named by the environment variable GEMMA_ENCODER_DATA, else ../shared/data/scifact
beside this repository.
"""

import argparse
import json
import os
from pathlib import Path

from gemma_encoder_hf import GemmaEncoderForRanking
from gemma_encoder_hf.modeling.configuration_gemma_encoder import ATTENTION_TYPES, POOLING_TYPES, RANKING_LOSSES
from gemma_encoder_hf.harness.data import DATA_ENV_VAR, load_reranking, ranking_groups
from gemma_encoder_hf.harness.evaluation import (
    evaluate_reranker,
    results_record,
    split_reranking_metrics,
    write_results,
)
from gemma_encoder_hf.harness.training import TrainingConfig, finetune_reranker, load_task_model

# The project's data sits beside a clone of this repository.
DATA_ROOT = Path(os.environ.get(DATA_ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "scifact", help="BEIR folder (default: %(default)s)")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--eval-split", default="test")
    parser.add_argument("--train-queries", type=int, help="train on this many queries (default: all)")
    parser.add_argument("--group-size", type=int, default=8, help="documents per query group (1 positive)")
    parser.add_argument("--hard-negative-depth", type=int, default=30, help="negatives come from BM25's top N")
    parser.add_argument("--eval-queries", type=int, help="rerank only the first N test queries (by id)")
    parser.add_argument("--top-k", type=int, help="rerank only BM25's top K (default: all 100)")

    parser.add_argument("--model", default="embedded", help="decoder (folder, Hub id, .gguf, 'embedded') or encoder")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/converted"))
    parser.add_argument("--attention", choices=ATTENTION_TYPES, default="bidirectional")
    parser.add_argument("--pooling", choices=POOLING_TYPES, default="mean")
    parser.add_argument("--loss", choices=RANKING_LOSSES, default="listwise")

    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=2, help="query groups per step")
    parser.add_argument("--learning-rate", type=float, default=TrainingConfig.learning_rate)
    parser.add_argument("--head-learning-rate", type=float, default=TrainingConfig.head_learning_rate,
                        help="learning rate of the new head (pooler + MLP)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per (query, document) pair")
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction,
                        default=TrainingConfig.freeze_embeddings)
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--output-dir", type=Path, help="default: runs/rerank-<dataset>")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    train_set = load_reranking(args.data, args.train_split)
    groups = ranking_groups(
        train_set, args.group_size, seed=args.seed, hard_negative_depth=args.hard_negative_depth,
        max_queries=args.train_queries,
    )
    test_set = load_reranking(args.data, args.eval_split).restrict(args.eval_queries, args.top_k)
    print(f"{train_set.name}: {len(groups)} training groups of {args.group_size}; "
          f"reranking {len(test_set.candidates)} {args.eval_split} queries")

    model, tokenizer = load_task_model(
        GemmaEncoderForRanking, args.model, cache_dir=args.cache_dir, attention=args.attention, pooling=args.pooling,
        ranking_loss=args.loss, ranking_group_size=args.group_size, seed=args.seed,
    )
    output_dir = args.output_dir or Path("runs") / f"rerank-{train_set.name}"
    config = TrainingConfig(
        output_dir=output_dir / "checkpoints",
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        learning_rate=args.learning_rate,
        head_learning_rate=args.head_learning_rate,
        max_length=args.max_length,
        seed=args.seed,
        freeze_embeddings=args.freeze_embeddings,
        device=args.device,
        bf16=True if args.bf16 else None,
        logging_steps=5,
    )
    result = finetune_reranker(model, tokenizer, groups, config)
    metrics, details = split_reranking_metrics(evaluate_reranker(
        result.model, tokenizer, test_set, batch_size=args.eval_batch_size, max_length=args.max_length,
    ))
    details.update(train_seconds=result.train_seconds, train_groups=len(groups))
    if args.top_k:
        details["top_k"] = args.top_k

    result.model.save_pretrained(output_dir / "model")
    tokenizer.save_pretrained(output_dir / "model")
    record = results_record(
        model=str(output_dir / "model"), task="rerank", dataset_name=test_set.name, split=args.eval_split,
        path=str(args.data), metrics=metrics, details=details, config=result.model.config,
    )
    write_results(output_dir / "results.json", record)
    print(json.dumps({**record["metrics"], **record["details"]}, indent=2))
    print(f"model: {output_dir / 'model'}  results: {output_dir / 'results.json'}")


if __name__ == "__main__":
    main()

# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Embedding quality of the embedded Gemma 3 270M at a CPU budget: STS-B Spearman (and, when it fits, SciFact dense
retrieval over the whole corpus), mean-pooled without training against a short contrastive run.

Steps, each recorded in the results JSON with its wall time:

1. `timing`: encode a timed sample of SciFact abstracts and extrapolate to the whole 5,183-document corpus, so the
   reader knows whether whole-corpus dense retrieval (`--retrieve`) fits the budget.
2. `untrained`: the converted encoder, mean pooling, no training: STS-B Spearman on our validation split (carved from
   the shared train file by `train_validation_split`, seed 0: the split `gemma-encoder evaluate --sts` scores).
3. `contrastive`: `train_embeddings` on `--train-on`: the NLI triplets (`nli`: MultipleNegativesRankingLoss,
   in-batch + hard negatives), SciFact's 809 train queries (`scifact`: the same loss, one row per judgment with a
   BM25-mined negative that is never a judged positive) and/or STS-B's train part (`stsb`: CoSENT on the scores),
   Matryoshka 640/256/128; then the same evaluation, at every Matryoshka dimension.
4. `--retrieve contrastive|both`: SciFact test queries, dense / BM25 / hybrid (RRF and min-max fusion) over the whole
   corpus for the trained model (and the untrained one with `both`); long on CPU, see the timing stage.

    python benchmarks/embeddings.py --train-on stsb --steps 324 --batch-size 16 --max-length 64 --sample-docs 16 \
        --out benchmarks/results/embeddings_cpu_stsb.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from gemma_encoder_hf.harness.data import DATA_ENV_VAR, get_task, load_glue, read_corpus, train_validation_split
from gemma_encoder_hf.harness.embeddings import TrainingData, read_training_data, train_embeddings, SCORED
from gemma_encoder_hf.harness.retrieval import evaluate_retrieval, evaluate_sts, load_embedding_model
from gemma_encoder_hf.harness.training import encoder_dir
from gemma_encoder_hf.integrations.sentence_transformers import build_sentence_transformer

RESULTS_DIR = Path(__file__).resolve().parent / "results"

DATA_ROOT = Path(os.environ.get(DATA_ENV_VAR) or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - start, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="embedded")
    parser.add_argument("--work-dir", default="runs/embeddings_benchmark")
    parser.add_argument("--data", default=str(DATA_ROOT))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--learning-rate", dest="learning_rate", type=float, default=2e-5)
    parser.add_argument("--train-on", nargs="+", choices=("nli", "scifact", "stsb"), default=["nli"],
                        help="contrastive inputs: NLI triplets and SciFact train queries with BM25-mined negatives "
                             "(MNRL), STS-B's train part (CoSENT)")
    parser.add_argument("--sample-docs", type=int, default=48, help="SciFact abstracts in the timing sample")
    parser.add_argument("--doc-length", type=int, default=256, help="tokens per abstract for retrieval")
    parser.add_argument("--retrieve", choices=("no", "contrastive", "both"), default="no",
                        help="whole-corpus SciFact retrieval for the trained model, or for both models")
    parser.add_argument("--matryoshka-evals", type=int, default=2, help="smaller Matryoshka dims scored on STS")
    parser.add_argument("--out", default=str(RESULTS_DIR / "embeddings_cpu.json"))
    args = parser.parse_args(argv)

    data = Path(args.data)
    work = Path(args.work_dir)
    results: dict = {"command": " ".join(["python", "benchmarks/embeddings.py", *sys.argv[1:]]), "args": vars(args)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        """Written after every stage, so a run stopped by its time limit keeps what it measured."""
        out.write_text(json.dumps(results, indent=2) + "\n")

    base, seconds = timed(lambda: encoder_dir(args.source, work / "converted"))
    untrained_dir = work / "untrained"
    if not (untrained_dir / "modules.json").is_file():
        build_sentence_transformer(base, device="cpu", pooling="mean").save(str(untrained_dir))
    results["convert_seconds"] = seconds

    # 1. How long would the whole corpus take?
    corpus = read_corpus(data / "scifact" / "corpus.jsonl")
    model = load_embedding_model(untrained_dir, "cpu", args.doc_length)
    sample = [corpus[d] for d in sorted(corpus)[: args.sample_docs]]
    tokens = sum(min(len(ids), args.doc_length) for ids in model.tokenizer(sample)["input_ids"])
    _, seconds = timed(lambda: model.encode_document(sample, batch_size=16, show_progress_bar=False))
    total_tokens = sum(min(len(ids), args.doc_length) for ids in model.tokenizer(list(corpus.values()))["input_ids"])
    results["timing"] = {
        "sample_docs": len(sample), "sample_tokens": tokens, "sample_seconds": seconds,
        "tokens_per_second": round(tokens / seconds, 1), "corpus_docs": len(corpus), "corpus_tokens": total_tokens,
        "estimated_corpus_minutes": round(total_tokens / (tokens / seconds) / 60, 1),
    }
    print(json.dumps(results["timing"]), flush=True)
    model = None  # free it before training
    save()

    # 2. Untrained, mean pooled.
    sts_file = data / "stsb" / "train.tsv"
    record, seconds = timed(lambda: evaluate_sts(untrained_dir, sts_file, split="validation"))
    results["untrained"] = {"sts": record["metrics"], "seconds": seconds}
    print("untrained", json.dumps(results["untrained"]), flush=True)
    save()

    # 3. A short contrastive run.
    inputs = [read_training_data(data / "nli" / "triplets.jsonl")] if "nli" in args.train_on else []
    if "scifact" in args.train_on:
        inputs.append(read_training_data(data / "scifact"))  # the train split only; test queries are scored below
    if "stsb" in args.train_on:
        spec = get_task("stsb")
        train_part, _ = train_validation_split(load_glue(spec, data), spec, seed=0)  # never the validation rows
        inputs.append(TrainingData("stsb", SCORED, train_part.rename_columns(
            {"text": "sentence1", "text_pair": "sentence2", "label": "score"})))
    trained_dir = work / "contrastive"
    _, seconds = timed(lambda: train_embeddings(
        base, trained_dir, inputs, steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
        learning_rate=args.learning_rate, matryoshka_dims=(256, 128), device="cpu", cache_dir=work / "converted",
    ))
    training = json.loads((trained_dir / "embedding_training.json").read_text())
    results["contrastive"] = {"train_seconds": seconds, "training": training, "sts": {}}
    save()
    for dim in training["matryoshka_dims"][: 1 + args.matryoshka_evals]:
        record, seconds = timed(lambda: evaluate_sts(trained_dir, sts_file, split="validation", truncate_dim=dim))
        results["contrastive"]["sts"][str(dim)] = {**record["metrics"], "seconds": seconds}
        save()
    print("contrastive", json.dumps(results["contrastive"]["sts"]), flush=True)

    # 4. Whole-corpus retrieval, only when asked (see the timing estimate).
    if args.retrieve != "no":
        models = {"untrained": untrained_dir, "contrastive": trained_dir}
        for name in ("untrained", "contrastive") if args.retrieve == "both" else ("contrastive",):
            folder = models[name]
            record, seconds = timed(lambda: evaluate_retrieval(folder, data / "scifact", max_length=args.doc_length,
                                                               cache_dir=work / "cache"))
            results[name]["retrieval"] = {**record["metrics"], **record["details"], "seconds": seconds}
            save()
            print(name, json.dumps(results[name]["retrieval"]), flush=True)
    else:
        results["not_run"] = (
            f"SciFact dense retrieval over the whole corpus: estimated "
            f"{results['timing']['estimated_corpus_minutes']} min per model for the corpus alone on this machine."
        )
    save()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

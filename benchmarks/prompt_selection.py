# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Which task prompt and label words should prompt-based fine-tuning start from? Zero-shot scores on training rows.

Prompt-based fine-tuning (`benchmarks/adaptation.py --text-template ... --label-words ...`) starts the classifier's
linear head as the decoder's next-word scores for one word per label after a prompt
(`harness.training.init_head_from_label_words`). This script scores every (template, label words) pair of a grid
zero-shot, i.e. at the fine-tune's step 0: the embedded Gemma 3 270M with its causal attention, the last token
pooled, the head holding every candidate word's output row, and each pair's prediction the larger of its two scores.

The rows scored are full sentences from the training side of the dev-shaped split (`harness.data.full_sentence_rows`
over `train_validation_split`'s training part), never the validation split that the fine-tunes are judged on, so a
prompt picked here has not seen the validation set. Two numbers a pair: the raw accuracy, and the accuracy once the
two scores' mean difference over the scored rows is subtracted (the bias a linear head learns in its first steps).

Measured (benchmarks/results/adaptation_cpu_devshaped.md): the best start, `{text}\\nIn short, this movie is` with
" negative" / " positive" (0.877 against 0.826 for `{text}\\nSentiment:`), fine-tunes to the same accuracy as the other
prompts and as our causal classifier without one (0.881 over ten seeds at 2,000 sentences).

    OMP_NUM_THREADS=1 python benchmarks/prompt_selection.py --out benchmarks/results/prompt_selection_sst2.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

import gemma_encoder_hf
from gemma_encoder_hf.harness.data import (
    DATA_ENV_VAR,
    column,
    full_sentence_rows,
    get_task,
    load_glue,
    train_validation_split,
)
from gemma_encoder_hf.harness.training import encoder_dir, init_head_from_label_words

DATA_ROOT = Path(os.environ.get(DATA_ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "data")

# Prompts that end where the label word would come next; each keeps the review first, as a tokenizer suffix would.
TEMPLATES = (
    "{text}\nSentiment:",
    "{text} It was",
    "{text}\nIt was",
    "{text}\nOverall, the movie was",
    "{text}\nIn short, this movie is",
    "{text}\nThis review is",
    "Review: {text}\nSentiment:",
)
# (negative, positive) word pairs, the first the one fine-tuned so far; LM-BFF's SST-2 pair is terrible / great.
LABEL_WORDS = (
    (" negative", " positive"),
    (" bad", " good"),
    (" terrible", " great"),
    (" awful", " great"),
    (" boring", " fun"),
)


def selection_rows(data: Path, rows: int, seed: int) -> tuple[list[str], np.ndarray]:
    """`rows` full sentences of SST-2's training side (stratified by label), and their labels."""
    task = get_task("sst2")
    train, _ = train_validation_split(load_glue(task, data), task, seed=0)
    texts = column(train, "text")
    labels = np.asarray(column(train, "label"))
    full = full_sentence_rows(texts)
    rng = np.random.default_rng(seed)
    picked = np.concatenate([rng.choice(full[labels[full] == c], rows // 2, replace=False) for c in (0, 1)])
    return [texts[i] for i in picked], labels[picked]


@torch.no_grad()
def word_scores(model, tokenizer, texts: list[str], batch_size: int, max_length: int) -> np.ndarray:
    """(rows, words) head scores of the last token, batches sorted by length to pad little."""
    order = np.argsort([len(t) for t in texts])
    scores = np.zeros((len(texts), model.config.num_labels), dtype=np.float64)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        scores[idx] = model(**batch).logits.double().numpy()
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA_ROOT)
    parser.add_argument("--rows", type=int, default=1000, help="training-side full sentences scored (half each label)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32, dest="batch_size")
    parser.add_argument("--max-length", type=int, default=128, dest="max_length")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/gemma-encoder-adaptation"), dest="work_dir")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    texts, labels = selection_rows(args.data, args.rows, args.seed)
    enc = encoder_dir("embedded", args.work_dir)
    tokenizer = AutoTokenizer.from_pretrained(enc)
    words = sorted({word for pair in LABEL_WORDS for word in pair})
    model = gemma_encoder_hf.GemmaEncoderForSequenceClassification.from_pretrained(
        enc, dtype=torch.float32, attention="causal", pooling="last", classifier_hidden_size=0, num_labels=len(words)
    ).eval()
    init_head_from_label_words(model, tokenizer, words)

    results = []
    for template in TEMPLATES:
        started = time.perf_counter()
        scores = word_scores(model, tokenizer, [template.format(text=t) for t in texts], args.batch_size,
                             args.max_length)
        for negative, positive in LABEL_WORDS:
            margin = scores[:, words.index(positive)] - scores[:, words.index(negative)]
            results.append({
                "template": template,
                "label_words": [negative, positive],
                "accuracy": float(np.mean((margin > 0) == labels)),
                "centred_accuracy": float(np.mean((margin - margin.mean() > 0) == labels)),
                "predicted_positive": float(np.mean(margin > 0)),
            })
            print(f"{template!r:36} {negative!r:>12}/{positive!r:<12} accuracy {results[-1]['accuracy']:.3f} "
                  f"centred {results[-1]['centred_accuracy']:.3f} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    results.sort(key=lambda r: r["centred_accuracy"], reverse=True)
    record = {"rows": len(texts), "seed": args.seed, "max_length": args.max_length, "results": results}
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    best = results[0]
    print(f"best (centred): {best['template']!r} with {best['label_words']}: {best['centred_accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

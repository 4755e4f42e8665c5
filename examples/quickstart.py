"""Convert the embedded Gemma 3 270M to a bidirectional encoder and embed real sentences from SST-2.

    python examples/quickstart.py [--data ../shared/data/sst2/train.tsv] [--n 8]

--data defaults to sst2/train.tsv in the data root named by the environment variable GEMMA_ENCODER_DATA, else in
../shared/data beside this repository.
"""

import argparse
import csv
import os
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

import gemma_encoder_hf

# The project's data sits beside a clone of this repository.
DATA_ROOT = Path(os.environ.get("GEMMA_ENCODER_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "sst2" / "train.tsv",
                        help="a TSV with a 'sentence' column (default: %(default)s)")
    parser.add_argument("--encoder-dir", type=Path, default=Path("runs/gemma3-270m-encoder"))
    parser.add_argument("--n", type=int, default=8)
    return parser


def main() -> None:
    args = build_parser().parse_args()

    if not (args.encoder_dir / "config.json").exists():
        gemma_encoder_hf.convert("embedded", args.encoder_dir)
    tokenizer = AutoTokenizer.from_pretrained(args.encoder_dir)
    model = AutoModel.from_pretrained(args.encoder_dir).eval()

    with args.data.open(newline="") as f:
        rows = [row for _, row in zip(range(args.n), csv.DictReader(f, delimiter="\t"))]
    texts = [row["sentence"] for row in rows]
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        pooled = model(**batch).pooler_output
    pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
    print(f"{type(model).__name__}: attention={model.config.attention} pooling={model.config.pooling}")
    print(f"pooled embeddings: {tuple(pooled.shape)}")
    similarity = pooled @ pooled.T
    for i, row in enumerate(rows):
        nearest = similarity[i].clone()
        nearest[i] = -1
        j = int(nearest.argmax())
        print(f"[label {row['label']}] {texts[i][:60]!r:64} nearest: [label {rows[j]['label']}] {texts[j][:40]!r}")


if __name__ == "__main__":
    main()

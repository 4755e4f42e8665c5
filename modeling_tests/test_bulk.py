"""Bulk inference (`gemma_encoder_hf.harness.bulk`, `gemma-encoder embed|classify|score`): streamed shards, resume
after SIGKILL, data-parallel ranks, bad rows; all on tiny random models with a tiny word-level tokenizer (what is
tested here does not depend on Gemma's tokenizer or weights)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import torch
from conftest import tiny_encoder_config
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from gemma_encoder_hf import GemmaEncoderForRanking, GemmaEncoderForSequenceClassification, GemmaEncoderModel
from gemma_encoder_hf.harness import bulk
from gemma_encoder_hf.harness.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
WORDS = [f"w{i}" for i in range(120)]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over WORDS with Gemma's special-token layout: <bos> text <eos> [text_pair <eos>]."""
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=64,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bulk_models")
    tokenizer = tiny_tokenizer()
    built = {
        "base": GemmaEncoderModel(tiny_encoder_config()),
        "classifier": GemmaEncoderForSequenceClassification(
            tiny_encoder_config(num_labels=3, id2label={0: "neg", 1: "neutral", 2: "pos"})
        ),
        "ranker": GemmaEncoderForRanking(tiny_encoder_config()),
    }
    paths = {}
    for name, model in built.items():
        torch.manual_seed(0)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = root / name
    return paths


def random_rows(n: int, seed: int = 0) -> list[dict]:
    """Texts of 1 to 40 words (lengths vary, so sorting matters), ids that are not row numbers."""
    rng = np.random.default_rng(seed)
    return [
        {
            "doc": f"d{i * 7}",
            "text": " ".join(rng.choice(WORDS, rng.integers(1, 40))),
            "query": " ".join(rng.choice(WORDS, rng.integers(1, 8))),
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(*args) -> int:
    return cli_main([str(a) for a in args])

"""One text-classification pipeline with Gemma's real tokenizer (on a tiny random encoder: the shared state under test
is the tokenizer's and the pipeline's, not the weights'), shared by 4 threads over 200 inputs, gives exactly the
outputs of sequential use (scores compared bit for bit), with calls with and without `truncation=True` mixed."""

import itertools
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import AutoTokenizer, pipeline

from gemma_encoder_hf import GemmaEncoderForSequenceClassification

NUM_INPUTS = 200
NUM_THREADS = 4

SUBJECTS = ["the film", "this novel", "the soundtrack", "her debut", "the sequel", "the ending", "the cast", "it"]
VERDICTS = ["is a delight", "drags badly", "never finds its voice", "is quietly moving", "feels overlong",
            "surprised me", "is forgettable", "works far better than it should"]
TAILS = ["", ".", " , honestly .", " from start to finish", " despite a clumsy middle act and a muddled score"]


def inputs() -> list[str]:
    """200 distinct sentences of 2 to ~20 tokens, so padding-free single calls differ in length."""
    sentences = (f"{s} {v}{t}" for s, v, t in itertools.product(SUBJECTS, VERDICTS, TAILS))
    return list(itertools.islice(sentences, NUM_INPUTS))


@pytest.fixture(scope="module")
def classifier_pipeline(tiny_real_vocab_dir):
    torch.manual_seed(0)
    model = GemmaEncoderForSequenceClassification.from_pretrained(tiny_real_vocab_dir, num_labels=3).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_real_vocab_dir)
    return pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None)


def scores(result: list) -> list[float]:
    """Label scores of one pipeline call (a single text gives a one-element list of per-label dicts)."""
    (per_label,) = result
    return [entry["score"] for entry in per_label]


def test_shared_pipeline_across_threads_matches_sequential(classifier_pipeline):
    texts = inputs()
    assert len(set(texts)) == NUM_INPUTS
    sequential = [classifier_pipeline(text) for text in texts]

    # Every other threaded call asks for truncation, so the threads also flip the shared fast tokenizer between
    # truncating and not truncating while other calls are in flight (the texts are short: outputs must not change).
    def classify(indexed_text):
        index, text = indexed_text
        return classifier_pipeline(text, truncation=True) if index % 2 else classifier_pipeline(text)

    with ThreadPoolExecutor(max_workers=NUM_THREADS) as pool:
        threaded = list(pool.map(classify, enumerate(texts)))
    assert threaded == sequential
    # The scores carry information (a constant output would make the comparison trivially true).
    assert len({round(scores(result)[0], 6) for result in sequential}) > NUM_INPUTS // 10

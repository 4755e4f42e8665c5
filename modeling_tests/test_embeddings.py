"""The embedding model format (SentenceTransformer round trip, prompts, projection, Matryoshka truncation) and the
contrastive stage (`train_embeddings`: inputs, hard-negative mining, a short run).

Tiny random backbones with a character-level tokenizer: the equalities and the training mechanics do not depend on real
weights. The hard-negative test reads the shared SciFact files, where BM25 ranks most judged documents in its top 30.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_encoder_config
from sentence_transformers import SentenceTransformer
from tiny_tokenizer import char_tokenizer
from transformers import AutoTokenizer

from gemma_encoder_hf import GemmaEncoderModel, embed
from gemma_encoder_hf.harness.data import DATA_ENV_VAR, load_reranking
from gemma_encoder_hf.harness.embeddings import (
    PAIRS,
    SCORED,
    mine_bm25_negatives,
    read_training_data,
    train_embeddings,
)
from gemma_encoder_hf.integrations.sentence_transformers import DEFAULT_PROMPTS, build_sentence_transformer

DATA_ROOT = Path(os.environ.get(DATA_ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "data")
SCIFACT = DATA_ROOT / "scifact"
QUERIES = ["what do encoders pool over?", "which fruit is yellow"]
DOCUMENTS = ["Pooling runs over the attention mask.", "Bananas are yellow.", "x"]


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A tiny random GemmaEncoderModel saved with a character-level tokenizer."""
    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    config = tiny_encoder_config(vocab_size=len(tokenizer), max_position_embeddings=512)
    path = tmp_path_factory.mktemp("tiny_encoder")
    GemmaEncoderModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def embedding_dir(tiny_encoder_dir, tmp_path_factory) -> Path:
    """An EmbeddingGemma-layout folder: encoder (mean pooling), up/down projections, Normalize, prompts, truncation."""
    torch.manual_seed(1)
    model = build_sentence_transformer(tiny_encoder_dir, projection_dims=(48, 24), truncate_dim=16, device="cpu")
    path = tmp_path_factory.mktemp("embedding_model")
    model.save(str(path))
    return path


def test_saved_embedding_model_loads_with_its_modules_and_prompts(embedding_dir):
    modules = json.loads((embedding_dir / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Dense", "Dense", "Normalize"]
    st = SentenceTransformer(str(embedding_dir), device="cpu")
    assert st.prompts["query"] == DEFAULT_PROMPTS["query"] and st.prompts["document"] == DEFAULT_PROMPTS["document"]
    assert st.truncate_dim == 16 and st.get_embedding_dimension() == 16
    # encode_query applies the `query` prompt: the same as encode(prompt=...) and not the bare text.
    query = st.encode_query(QUERIES, convert_to_tensor=True)
    torch.testing.assert_close(query, st.encode(QUERIES, prompt=DEFAULT_PROMPTS["query"], convert_to_tensor=True))
    assert not torch.allclose(query, st.encode(QUERIES, convert_to_tensor=True), atol=1e-4)


@pytest.mark.parametrize("kind", ["query", "document"])
def test_embed_matches_sentence_transformer_round_trip(embedding_dir, kind):
    st = SentenceTransformer(str(embedding_dir), device="cpu")
    texts = QUERIES if kind == "query" else DOCUMENTS
    encode = st.encode_query if kind == "query" else st.encode_document
    expected = encode(texts, convert_to_tensor=True, batch_size=2)

    model = GemmaEncoderModel.from_pretrained(embedding_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(embedding_dir)
    got = embed(model, tokenizer, texts, prompt_name=kind, batch_size=2, show_progress_bar=False)
    assert got.shape == (len(texts), 16)
    torch.testing.assert_close(got, expected.cpu(), atol=1e-5, rtol=1e-4)
    # Full width: the Normalize module ran (unit vectors) before the truncation.
    full = embed(model, tokenizer, texts, prompt_name=kind, truncate_dim=24, show_progress_bar=False)
    torch.testing.assert_close(full.norm(dim=-1), torch.ones(len(texts)))
    torch.testing.assert_close(full[:, :16], got)
    torch.testing.assert_close(full, encode(texts, convert_to_tensor=True, truncate_dim=24).cpu(), atol=1e-5,
                               rtol=1e-4)


def test_embed_rejects_unknown_prompt_name(embedding_dir, tiny_encoder_dir):
    model = GemmaEncoderModel.from_pretrained(embedding_dir)
    tokenizer = AutoTokenizer.from_pretrained(embedding_dir)
    with pytest.raises(ValueError, match="prompt_name='passage'.*query"):
        embed(model, tokenizer, QUERIES, prompt_name="passage", show_progress_bar=False)
    plain = GemmaEncoderModel.from_pretrained(tiny_encoder_dir)
    with pytest.raises(ValueError, match="not an embedding folder"):
        embed(plain, tokenizer, QUERIES, prompt_name="query", show_progress_bar=False)


# ----------------------------------------------------------------------------------------------------------------------
# Training inputs
# ----------------------------------------------------------------------------------------------------------------------


def test_each_input_format_parses(tmp_path):
    nli = read_training_data(DATA_ROOT / "nli" / "triplets.jsonl")
    assert nli.kind == PAIRS and nli.dataset.column_names == ["anchor", "positive", "negative"]
    assert len(nli.dataset) == 6414

    stsb = read_training_data(DATA_ROOT / "stsb" / "train.tsv")
    assert stsb.kind == SCORED and len(stsb.dataset) == 5749
    assert stsb.dataset[0] == {"sentence1": "A plane is taking off.", "sentence2": "An air plane is taking off.",
                               "score": 5.0}

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("anchor\tpositive\nq one\td one\nq two\td two\n")
    pairs = read_training_data(tsv)
    assert pairs.kind == PAIRS and pairs.dataset.column_names == ["anchor", "positive"] and len(pairs.dataset) == 2

    beir = read_training_data(SCIFACT, num_negatives=2)
    assert beir.dataset.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert len(beir.dataset) == 919  # one row per training judgment

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "b"}\n')
    with pytest.raises(ValueError, match="neither pairs"):
        read_training_data(bad)


def test_mined_negatives_never_include_a_judged_positive():
    reranking = load_reranking(SCIFACT, "train")
    mined = mine_bm25_negatives(reranking, num_negatives=4, depth=30)
    # The check can fail: BM25 puts judged documents among the top 30 for most training queries.
    in_pool = sum(any(d in reranking.qrels[q] for d, _ in reranking.candidates[q][:30]) for q in reranking.qrels)
    assert in_pool > 600
    for qid, positive, negatives in mined:
        assert positive in reranking.qrels[qid]
        assert len(negatives) == 4 and not set(negatives) & set(reranking.qrels[qid])


# ----------------------------------------------------------------------------------------------------------------------
# A short run
# ----------------------------------------------------------------------------------------------------------------------


def test_short_contrastive_run_lowers_the_loss_and_saves_a_loadable_model(tiny_encoder_dir, tmp_path):
    rows = [
        {"anchor": "a cat sits on the mat", "positive": "a kitten rests on a rug", "negative": "stock prices fell"},
        {"anchor": "the rocket launched", "positive": "a spacecraft lifted off", "negative": "she baked bread"},
        {"anchor": "rain is expected", "positive": "the forecast says showers", "negative": "he plays guitar"},
        {"anchor": "a dog barks loudly", "positive": "the puppy is noisy", "negative": "trains run on time"},
    ]
    data = tmp_path / "triplets.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = train_embeddings(
        tiny_encoder_dir, tmp_path / "model", [data], steps=3, batch_size=4, learning_rate=1e-2,
        matryoshka_dims=(16,), device="cpu", show_progress_bar=False, max_length=32,
    )
    record = json.loads((out / "embedding_training.json").read_text())
    # Every batch is the same four rows: the loss on them must fall.
    assert record["last_logged_loss"] < record["first_logged_loss"]
    assert record["matryoshka_dims"] == [32, 16]

    st = SentenceTransformer(str(out), device="cpu")
    assert st.prompts == DEFAULT_PROMPTS
    query = st.encode_query([r["anchor"] for r in rows], convert_to_tensor=True)
    docs = st.encode_document([r["positive"] for r in rows], convert_to_tensor=True)
    model = GemmaEncoderModel.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    got = embed(model, tokenizer, [r["anchor"] for r in rows], prompt_name="query", show_progress_bar=False)
    torch.testing.assert_close(got, query.cpu(), atol=1e-5, rtol=1e-4)
    # The trained weights differ from the start.
    start = build_sentence_transformer(tiny_encoder_dir, device="cpu")
    assert not torch.allclose(start.encode_query(QUERIES, convert_to_tensor=True),
                              st.encode_query(QUERIES, convert_to_tensor=True), atol=1e-4)
    assert docs.shape == (4, 32)


def test_lora_run_merges_adapters_into_the_saved_model(tiny_encoder_dir, tmp_path):
    data = tmp_path / "pairs.tsv"
    data.write_text("anchor\tpositive\n" + "".join(f"query {i}\tdocument number {i}\n" for i in range(7)))
    out = train_embeddings(
        tiny_encoder_dir, tmp_path / "lora", [data], batch_size=3, learning_rate=1e-2, lora=4,
        matryoshka_dims=(), device="cpu", show_progress_bar=False, max_length=16,
    )
    record = json.loads((out / "embedding_training.json").read_text())
    assert record["lora_rank"] == 4
    assert record["steps"] == 2  # no `steps`: one pass over the 7 rows in full batches of 3
    assert not (out / "adapter_config.json").exists()
    weights = GemmaEncoderModel.from_pretrained(out).state_dict()
    assert not any("lora" in name for name in weights)
    reference = GemmaEncoderModel.from_pretrained(tiny_encoder_dir).state_dict()
    assert not torch.equal(weights["layers.0.self_attn.q_proj.weight"], reference["layers.0.self_attn.q_proj.weight"])
    shutil.rmtree(out)


def test_train_embeddings_cli_reports_bad_input(tiny_encoder_dir, tmp_path, capsys):
    from gemma_encoder_hf.harness.cli import main

    missing = tmp_path / "missing.jsonl"
    assert main(["train-embeddings", str(tiny_encoder_dir), str(tmp_path / "out"), "--data", str(missing)]) == 2
    assert f"gemma-encoder train-embeddings: error: {missing} does not exist" in capsys.readouterr().err

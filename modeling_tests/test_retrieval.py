"""Retrieval evaluation: dense search over a whole BEIR corpus with an on-disk embedding cache, fusion with BM25,
STS with sentence-transformers' evaluator, the `evaluate --retrieve / --sts` CLI, and mteb agreeing with our nDCG@10.

A tiny random embedding model over a small BEIR-layout folder written by the test: the cache, fusion and metric
plumbing do not depend on real weights.
"""

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_encoder_config
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer
from tiny_tokenizer import char_tokenizer

from gemma_encoder_hf import GemmaEncoderModel
from gemma_encoder_hf.harness.cli import main
from gemma_encoder_hf.harness.data import load_reranking
from gemma_encoder_hf.harness.evaluation import ranking_metrics
from gemma_encoder_hf.harness.retrieval import dense_run, encode_corpus, evaluate_retrieval, evaluate_sts, fused_run
from gemma_encoder_hf.integrations.model_card import load_results
from gemma_encoder_hf.integrations.sentence_transformers import build_sentence_transformer

TOPICS = ["protein folding", "solar panels", "river floods", "vaccines", "bread baking", "chess openings"]


def write_beir_folder(root: Path, docs: dict[str, str]) -> Path:
    """Six queries, one judged document each, BM25-like candidates (every document, the judged one not always first)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    (root / "candidates").mkdir(exist_ok=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in docs.items())
    )
    queries = {str(i): f"what is known about {topic}?" for i, topic in enumerate(TOPICS)}
    (root / "queries.test.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{100 + int(q)}\t1\n" for q in queries)
    )
    lines = ["query-id\tcorpus-id\trank\tbm25_score"]
    for q in queries:
        ranked = sorted(docs, key=lambda d: (int(d) - 100 - int(q)) % len(docs))[::-1]  # judged doc last but one...
        ranked = ranked[1:] + ranked[:1]
        lines += [f"{q}\t{d}\t{rank + 1}\t{10.0 - rank}" for rank, d in enumerate(ranked)]
    (root / "candidates" / "bm25_top100.test.tsv").write_text("\n".join(lines) + "\n")
    return root


def corpus_texts(variant: str = "") -> dict[str, str]:
    docs = {str(100 + i): f"A study of {topic}: results and methods{variant}." for i, topic in enumerate(TOPICS)}
    docs.update({str(200 + i): f"Unrelated note number {i} about gardening." for i in range(6)})
    return docs


@pytest.fixture(scope="module")
def embedding_dir(tmp_path_factory) -> Path:
    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    encoder = tmp_path_factory.mktemp("encoder")
    GemmaEncoderModel(tiny_encoder_config(vocab_size=len(tokenizer), max_position_embeddings=512)).save_pretrained(
        encoder
    )
    tokenizer.save_pretrained(encoder)
    path = tmp_path_factory.mktemp("embedder")
    build_sentence_transformer(encoder, projection_dims=(24,), device="cpu").save(str(path))
    return path


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory) -> Path:
    return write_beir_folder(tmp_path_factory.mktemp("beir") / "tinyir", corpus_texts())


def count_forward_calls(model: SentenceTransformer) -> list[int]:
    """Texts the encoder module ran on, recorded by a forward hook (the public way to observe a module's calls)."""
    seen = []
    model[0].register_forward_hook(lambda module, args, output: seen.append(args[0]["input_ids"].shape[0]))
    return seen


def test_corpus_embeddings_are_cached_by_model_and_corpus(embedding_dir, beir_dir, tmp_path):
    reranking = load_reranking(beir_dir, "test")
    model = SentenceTransformer(str(embedding_dir), device="cpu")
    seen = count_forward_calls(model)
    kwargs = dict(top_k=5, batch_size=4, cache_dir=tmp_path / "cache", show_progress_bar=False)

    first = dense_run(model, embedding_dir, reranking.queries, reranking.corpus, **kwargs)
    assert sum(seen) == len(reranking.corpus) + len(reranking.queries)
    seen.clear()
    second = dense_run(model, embedding_dir, reranking.queries, reranking.corpus, **kwargs)
    assert sum(seen) == len(reranking.queries)  # the corpus came from the cache
    assert second == first

    seen.clear()
    changed = {**reranking.corpus, "200": "A different note about gardening."}
    dense_run(model, embedding_dir, reranking.queries, changed, **kwargs)
    assert sum(seen) == len(changed) + len(reranking.queries)  # a changed corpus is encoded again
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2

    # Without a cache, the same vectors: the cached run is exact.
    uncached = dense_run(model, embedding_dir, reranking.queries, reranking.corpus, **{**kwargs, "cache_dir": None})
    assert uncached.keys() == first.keys()
    for q in first:
        assert uncached[q].keys() == first[q].keys()
        assert uncached[q] == pytest.approx(first[q], abs=1e-6)


def test_an_interrupted_corpus_encoding_resumes_where_it_stopped(embedding_dir, beir_dir, tmp_path):
    """Pieces of `piece_size` documents are saved as they finish: a run killed in the middle of the corpus loses only
    the piece it was encoding, the next run encodes just the missing ones, and the vectors equal an uncached run."""
    reranking = load_reranking(beir_dir, "test")
    model = SentenceTransformer(str(embedding_dir), device="cpu")
    kwargs = dict(batch_size=4, cache_dir=tmp_path / "cache", show_progress_bar=False, piece_size=4)

    calls = []

    def fail_on_second_batch(module, args, output):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C (or a job scheduler's signal) raises mid-encoding

    handle = model[0].register_forward_hook(fail_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(model, embedding_dir, reranking.corpus, **kwargs)
    handle.remove()
    assert len(list((tmp_path / "cache").glob("*.parts/*.pt"))) == 1 and not list((tmp_path / "cache").glob("*.pt"))

    seen = count_forward_calls(model)
    doc_ids, resumed = encode_corpus(model, embedding_dir, reranking.corpus, **kwargs)
    assert sum(seen) == len(reranking.corpus) - 4  # the first piece came from disk
    assert not list((tmp_path / "cache").glob("*.parts"))  # pieces are gone once the whole file is written
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1

    _, uncached = encode_corpus(model, embedding_dir, reranking.corpus, **{**kwargs, "cache_dir": None})
    torch.testing.assert_close(resumed, uncached, atol=1e-6, rtol=0)
    assert doc_ids == sorted(reranking.corpus, key=int)


def test_fusion_comes_from_ranx_and_mixes_both_runs():
    dense = {"q": {"a": 0.9, "b": 0.5, "c": 0.1}}
    bm25 = {"q": {"c": 12.0, "b": 11.0, "d": 3.0}}
    rrf = fused_run([dense, bm25], "rrf")
    # Reciprocal rank fusion (k = 60): b is second in both runs and beats a (first in one only).
    assert rrf["q"]["b"] == pytest.approx(2 / 62) and rrf["q"]["a"] == pytest.approx(1 / 61)
    minmax = fused_run([dense, bm25], "minmax")
    assert minmax["q"]["c"] == pytest.approx(0.0 + 1.0) and minmax["q"]["a"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="fusion='max'"):
        fused_run([dense, bm25], "max")


def test_evaluate_retrieval_record_and_cli(embedding_dir, beir_dir, tmp_path):
    record = evaluate_retrieval(embedding_dir, beir_dir, cache_dir=tmp_path / "cache", show_progress_bar=False)
    metrics = record["metrics"]
    reranking = load_reranking(beir_dir, "test")
    bm25 = ranking_metrics(reranking.qrels, {q: dict(c) for q, c in reranking.candidates.items()},
                           ("ndcg@10", "recall@100"))
    assert record["details"]["bm25_ndcg@10"] == pytest.approx(bm25["ndcg@10"])
    for name in ("dense", "hybrid_rrf", "hybrid_minmax"):
        assert 0.0 < metrics[f"{name}_ndcg@10"] <= 1.0
    details = record["details"]
    assert details["corpus_size"] == 12 and details["num_queries"] == 6 and "bm25_ndcg@10" in details

    out = tmp_path / "retrieval.json"
    assert main(["evaluate", str(embedding_dir), "--retrieve", str(beir_dir), "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    (saved,) = load_results([out])  # the model card reads it
    assert saved["metrics"]["dense_ndcg@10"] == pytest.approx(metrics["dense_ndcg@10"], abs=1e-6)


def test_evaluate_cli_rejects_two_modes(embedding_dir, beir_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(embedding_dir), "--retrieve", str(beir_dir), "--sts", "x.tsv"])
    assert exit_info.value.code == 2
    assert "argument --sts: not allowed with argument --retrieve" in capsys.readouterr().err


def test_sts_spearman_is_sentence_transformers_evaluator(embedding_dir, tmp_path):
    rows = [("A man plays a guitar.", "A person plays guitar.", 4.6), ("A cat sleeps.", "Stocks rose today.", 0.2),
            ("Kids run in a park.", "Children are running outside.", 4.0), ("It rains.", "The sun is out.", 1.1),
            ("A dog eats.", "A dog is eating food.", 4.8)]
    path = tmp_path / "sts.tsv"
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    path.write_text(header + "".join(f"{i}\tg\tf\ty\t{i}\tn\tn\t{a}\t{b}\t{s}\n" for i, (a, b, s) in enumerate(rows)))
    record = evaluate_sts(embedding_dir, path, split="all")
    model = SentenceTransformer(str(embedding_dir), device="cpu")
    first = model.encode([a for a, _, _ in rows], convert_to_tensor=True)
    second = model.encode([b for _, b, _ in rows], convert_to_tensor=True)
    cosine = torch.nn.functional.cosine_similarity(first, second).tolist()
    assert record["metrics"]["spearman"] == pytest.approx(spearmanr(cosine, [s for _, _, s in rows])[0], abs=1e-6)
    assert record["task"] == "stsb" and record["metrics"]["num_examples"] == 5


def test_mteb_gives_our_ndcg_at_10(embedding_dir, beir_dir, tmp_path):
    pytest.importorskip("mteb")
    from gemma_encoder_hf.harness.mteb_task import mteb_ndcg_at_10

    ours = evaluate_retrieval(embedding_dir, beir_dir, fusion=(), cache_dir=None, show_progress_bar=False)
    model = SentenceTransformer(str(embedding_dir), device="cpu")
    model.max_seq_length = 512
    theirs = mteb_ndcg_at_10(model, beir_dir, "test")
    assert theirs == pytest.approx(ours["metrics"]["dense_ndcg@10"], abs=1e-4)

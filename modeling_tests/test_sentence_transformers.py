"""sentence-transformers: SentenceTransformer gives the model's own pooled vector; CrossEncoder scores like the ranker.

Real weights do not matter for these equalities, so the models are tiny random backbones with the real Gemma
tokenizer (its 262k vocabulary makes the embedding the largest part, ~8M parameters).
"""

import copy
import json
import shutil

import pytest
import torch
from conftest import SOURCES, tiny_encoder_config
from sentence_transformers import CrossEncoder, SentenceTransformer
from transformers import AutoTokenizer

from gemma_encoder_hf import (
    GemmaEncoderConfig,
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderModel,
    embed,
)

TEXTS = [
    "A short one.",
    "a considerably longer sentence, so that the batch needs padding on one side or the other",
    "Gemma encoders pool over real tokens only.",
    "x",
]
QUERY = "what do encoders pool over?"
DOCUMENTS = [
    "Pooling runs over the attention mask.",
    "Bananas are yellow.",
    "Encoders pool token states into one vector per text, over real tokens only.",
]


def tiny_config(tokenizer, **overrides) -> GemmaEncoderConfig:
    return tiny_encoder_config(
        vocab_size=len(tokenizer), max_position_embeddings=512, classifier_dropout=0.0, **overrides
    )


@pytest.fixture(scope="module")
def tokenizer(real_encoder_dir):
    return AutoTokenizer.from_pretrained(real_encoder_dir)


@pytest.fixture(scope="module")
def tokenizer_files(tokenizer, tmp_path_factory):
    """The tokenizer saved once; each model folder gets a copy (serialising its 262k vocabulary is the slow part)."""
    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(path)
    return path


POOLINGS = {
    "mean": dict(pooling="mean"),
    "first-2": dict(pooling="first", pooling_k=2),
    "last-3": dict(pooling="last", pooling_k=3),
    "attention-query": dict(pooling="attention", attention_pooling_probe="query"),
    "attention-kv": dict(pooling="attention", attention_pooling_probe="kv"),
}


@pytest.mark.parametrize("pooling", list(POOLINGS))
def test_sentence_transformer_returns_pooler_output(pooling, tokenizer, tokenizer_files, tmp_path):
    torch.manual_seed(0)
    model = GemmaEncoderModel(tiny_config(tokenizer, **POOLINGS[pooling])).eval()
    model.save_pretrained(tmp_path)
    shutil.copytree(tokenizer_files, tmp_path, dirs_exist_ok=True)
    module_config = json.loads((tmp_path / "sentence_bert_config.json").read_text())
    assert module_config["module_output_name"] == "sentence_embedding"

    st = SentenceTransformer(str(tmp_path), device="cpu")
    # One module, no Pooling module of sentence-transformers' own: the vector is the model's `pooler_output`.
    assert len(st) == 1 and st.get_embedding_dimension() == 32
    got = st.encode(TEXTS, batch_size=3, convert_to_tensor=True)

    # Reference: each text alone, no padding at all.
    with torch.inference_mode():
        expected = torch.cat([model(**tokenizer(t, return_tensors="pt")).pooler_output for t in TEXTS])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(embed(model, tokenizer, TEXTS, batch_size=3, show_progress_bar=False), expected)
    # A different pooling gives a different vector, so the comparison above could fail.
    with torch.inference_mode():
        mean_of_tokens = model(**tokenizer(TEXTS[1], return_tensors="pt")).last_hidden_state.mean(1)
    if pooling != "mean":
        assert not torch.allclose(mean_of_tokens, expected[1:2], atol=1e-3)


def test_base_encoder_without_pooler_writes_no_sentence_transformers_files(tokenizer, tmp_path):
    model = GemmaEncoderModel(tiny_config(tokenizer), add_pooling_layer=False)
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "modules.json").exists()


@pytest.fixture(scope="module")
def saved_ranker(tokenizer, tokenizer_files, tmp_path_factory):
    torch.manual_seed(1)
    ranker = GemmaEncoderForRanking(tiny_config(tokenizer, pooling="attention", ranking_loss="pointwise")).eval()
    path = tmp_path_factory.mktemp("tiny_ranker")
    ranker.save_pretrained(path)
    shutil.copytree(tokenizer_files, path, dirs_exist_ok=True)
    with torch.inference_mode():
        batch = tokenizer([QUERY] * len(DOCUMENTS), DOCUMENTS, padding=True, return_tensors="pt")
        logits = ranker(**batch).logits[:, 0]
    return path, logits


def test_cross_encoder_predict_and_rank_match_ranker(saved_ranker):
    path, logits = saved_ranker
    cross_encoder = CrossEncoder(str(path), device="cpu")
    # CrossEncoder loads through AutoModelForSequenceClassification: the classifier class, same weights.
    assert isinstance(cross_encoder.model, GemmaEncoderForSequenceClassification)

    pairs = [(QUERY, doc) for doc in DOCUMENTS]
    probabilities = torch.as_tensor(cross_encoder.predict(pairs, batch_size=2))
    # One label: CrossEncoder's default activation is the sigmoid.
    torch.testing.assert_close(probabilities, torch.sigmoid(logits), atol=1e-5, rtol=1e-4)
    raw = torch.as_tensor(cross_encoder.predict(pairs, activation_fn=torch.nn.Identity()))
    torch.testing.assert_close(raw, logits, atol=1e-5, rtol=1e-4)

    ranking = cross_encoder.rank(QUERY, DOCUMENTS)
    assert [hit["corpus_id"] for hit in ranking] == torch.argsort(logits, descending=True).tolist()
    for hit in ranking:
        assert hit["score"] == pytest.approx(torch.sigmoid(logits[hit["corpus_id"]]).item(), abs=1e-5)


# KV-probe pooling is left out: with a random head every pair gets the same logit to 1e-6, so agreement could not fail.
@pytest.mark.parametrize("pooling", [p for p in POOLINGS if p != "attention-kv"])
def test_pair_scores_agree_across_pipeline_cross_encoder_and_score_pairs(pooling, tokenizer, tokenizer_files, tmp_path):
    """The same (text, text_pair) gets the same logit from `pipeline("text-classification")`, `CrossEncoder` and
    `score_pairs`, for every pooling: all three join the pair with the tokenizer's `<bos> A <eos> B` template and pool
    over real tokens only, however the batch is padded."""
    from transformers import pipeline

    from gemma_encoder_hf import score_pairs

    torch.manual_seed(0)
    model = GemmaEncoderForSequenceClassification(tiny_config(tokenizer, num_labels=1, **POOLINGS[pooling])).eval()
    with torch.no_grad():  # a random head's logits are ~1e-5, below any tolerance: scale its MLP up
        for name, parameter in model.score.named_parameters():
            if not name.startswith("pooler."):
                parameter.mul_(30.0)
    model.save_pretrained(tmp_path)
    shutil.copytree(tokenizer_files, tmp_path, dirs_exist_ok=True)
    pairs = [(QUERY, doc) for doc in DOCUMENTS]

    # Reference: the template built by hand, each pair alone (no padding).
    def by_hand(text: str, text_pair: str) -> list[int]:
        ids = tokenizer([text, text_pair], add_special_tokens=False)["input_ids"]
        return [tokenizer.bos_token_id, *ids[0], tokenizer.eos_token_id, *ids[1]]

    with torch.inference_mode():
        expected = torch.cat([model(input_ids=torch.tensor([by_hand(*p)])).logits[:, 0] for p in pairs])

    scored = score_pairs(model, tokenizer, pairs, batch_size=2, show_progress_bar=False)
    cross_encoder = CrossEncoder(str(tmp_path), device="cpu")
    crossed = torch.as_tensor(cross_encoder.predict(pairs, batch_size=2, activation_fn=torch.nn.Identity()))
    classifier = pipeline("text-classification", model=str(tmp_path), device="cpu")
    piped = torch.tensor([r["score"] for r in classifier(
        [{"text": a, "text_pair": b} for a, b in pairs], batch_size=2, function_to_apply="none")])
    for got in (scored, crossed, piped):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # The pairs score differently, so an agreement on one constant would not pass.
    assert expected.std() > 1e-3


def test_a_task_prompt_suffix_in_the_tokenizer_reaches_every_caller(tokenizer, tmp_path):
    """`prepare_tokenizer(suffix=...)` puts a task prompt after every input through the tokenizer's template: it is
    saved with the tokenizer, `pipeline("text-classification")`, `CrossEncoder` and `score_pairs` all add it, for
    single texts and pairs, and truncation shortens the text, never the prompt the last-token pooling reads."""
    from transformers import pipeline

    from gemma_encoder_hf import prepare_tokenizer, score_pairs
    from gemma_encoder_hf.integrations.conversion import tokenizer_suffix

    suffix = "\nDoes the second text answer the first?"
    prompted = prepare_tokenizer(copy.deepcopy(tokenizer), tokenizer.model_max_length, suffix=suffix)
    assert tokenizer_suffix(tokenizer) == "" and tokenizer_suffix(prompted) == suffix
    suffix_ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    torch.manual_seed(0)
    model = GemmaEncoderForSequenceClassification(tiny_config(tokenizer, num_labels=1, pooling="last")).eval()
    with torch.no_grad():  # a random head's logits are ~1e-5, below any tolerance: scale its MLP up
        for parameter in model.score.parameters():
            parameter.mul_(30.0)
    model.save_pretrained(tmp_path)
    prompted.save_pretrained(tmp_path)
    pairs = [(QUERY, doc) for doc in DOCUMENTS]

    def by_hand(text: str, text_pair: str | None = None) -> list[int]:
        ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
        if text_pair is not None:
            ids += [tokenizer.eos_token_id, *tokenizer(text_pair, add_special_tokens=False)["input_ids"]]
        return ids + suffix_ids

    def logits(rows: list[list[int]]) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([model(input_ids=torch.tensor([ids])).logits[:, 0] for ids in rows])

    expected_pairs, expected_texts = logits([by_hand(*p) for p in pairs]), logits([by_hand(t) for t in TEXTS])
    scored = score_pairs(model, prompted, pairs, batch_size=2, show_progress_bar=False)
    cross_encoder = CrossEncoder(str(tmp_path), device="cpu")
    assert tokenizer_suffix(cross_encoder.tokenizer) == suffix
    crossed = torch.as_tensor(cross_encoder.predict(pairs, batch_size=2, activation_fn=torch.nn.Identity()))
    classifier = pipeline("text-classification", model=str(tmp_path), device="cpu")
    piped_pairs = torch.tensor([r["score"] for r in classifier(
        [{"text": a, "text_pair": b} for a, b in pairs], batch_size=2, function_to_apply="none")])
    piped_texts = torch.tensor([r["score"] for r in classifier(TEXTS, batch_size=2, function_to_apply="none")])
    for got in (scored, crossed, piped_pairs):
        torch.testing.assert_close(got, expected_pairs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(piped_texts, expected_texts, atol=1e-5, rtol=1e-4)
    # Without the suffix the same model scores otherwise, so the agreement above needs the prompt in every caller.
    assert (logits([by_hand(*p)[: -len(suffix_ids)] for p in pairs]) - expected_pairs).abs().max() > 1e-3

    truncated = prompted(TEXTS[1], truncation=True, max_length=12)["input_ids"]
    assert len(truncated) == 12 and truncated[-len(suffix_ids):] == suffix_ids
    # None keeps the saved suffix (e.g. re-preparing to change max_length); "" takes it away.
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer_suffix(prepare_tokenizer(reloaded, 64)) == suffix and reloaded.model_max_length == 64
    assert reloaded(TEXTS[0])["input_ids"] == by_hand(TEXTS[0])
    assert prepare_tokenizer(reloaded, 64, suffix="")(TEXTS[0])["input_ids"] == by_hand(TEXTS[0])[: -len(suffix_ids)]


@pytest.mark.parametrize("kind", SOURCES)
def test_every_backbone_through_sentence_transformers_and_pipelines(kind, tiny_decoder_dirs, tmp_path):
    """A base encoder converted from each kind of source is a SentenceTransformer giving its pooled vector per text,
    and a classifier converted from it runs in the text-classification pipeline with the model's own probabilities
    (a character tokenizer inside the tiny vocabularies stands in for Gemma's)."""
    from tiny_tokenizer import char_tokenizer
    from transformers import pipeline

    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    base = GemmaEncoderModel.from_decoder(tiny_decoder_dirs[kind]).eval()
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    got = SentenceTransformer(str(tmp_path / "base"), device="cpu").encode(TEXTS, batch_size=3, convert_to_tensor=True)
    with torch.inference_mode():
        expected = torch.cat([base(**tokenizer(t, return_tensors="pt")).pooler_output for t in TEXTS])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)

    classifier = GemmaEncoderForSequenceClassification.from_decoder(tiny_decoder_dirs[kind], num_labels=3).eval()
    classify = pipeline("text-classification", model=classifier, tokenizer=tokenizer, device="cpu", top_k=None)
    for text, scores in zip(TEXTS, classify(TEXTS, batch_size=3)):
        with torch.inference_mode():
            probabilities = classifier(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
        by_label = {s["label"]: s["score"] for s in scores}
        actual = torch.tensor([by_label[classifier.config.id2label[i]] for i in range(3)])
        torch.testing.assert_close(actual, probabilities, atol=1e-5, rtol=1e-4)

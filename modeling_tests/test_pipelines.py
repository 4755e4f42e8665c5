"""transformers pipelines on saved GemmaEncoder classifiers and rankers (real Gemma 3 270M backbone), and the
high-level `embed` / `score_pairs` API.

The heads are randomly initialised (seeded): what is tested is that every path computes the same numbers as the
model's own forward on the documented pair template, not what the numbers mean.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, pipeline

import gemma_encoder_hf
from gemma_encoder_hf import (
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderModel,
    embed,
    score_pairs,
)

SINGLE = ["a gripping, beautifully shot film.", "dull"]
PAIRS = [
    {"text": "Is the film worth watching?", "text_pair": "A gripping, beautifully shot film; see it."},
    {"text": "Is the film worth watching?", "text_pair": "The recipe needs two eggs."},
]


@pytest.fixture(scope="module")
def tokenizer(real_encoder_dir):
    return AutoTokenizer.from_pretrained(real_encoder_dir)


@pytest.fixture(scope="module")
def saved_models(real_encoder_dir, tokenizer, tmp_path_factory) -> dict:
    """A two-label classifier and a ranker on the real backbone, each saved with its tokenizer."""
    torch.manual_seed(0)
    classifier = GemmaEncoderForSequenceClassification.from_pretrained(
        real_encoder_dir, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    )
    ranker = GemmaEncoderForRanking.from_pretrained(real_encoder_dir, pooling="attention")
    saved = {}
    for name, model in (("classifier", classifier), ("ranker", ranker)):
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        saved[name] = (path, model.eval())
    return saved


@pytest.fixture(scope="module")
def pipelines(saved_models) -> dict:
    """`pipeline("text-classification")` loaded from each saved folder (after `import gemma_encoder_hf`)."""
    return {kind: pipeline("text-classification", model=str(path)) for kind, (path, _) in saved_models.items()}


def reference_logits(model, tokenizer, inputs) -> torch.Tensor:
    """The model's own forward, one input at a time (no padding)."""
    rows = []
    with torch.inference_mode():
        for item in inputs:
            item = item if isinstance(item, dict) else {"text": item}
            encoded = tokenizer(**item, return_tensors="pt")
            rows.append(model(**encoded).logits)
    return torch.cat(rows)


def pipeline_scores(results) -> torch.Tensor:
    """Scores of `top_k=None` pipeline results, as a (inputs, labels) tensor in label-id order."""
    return torch.tensor([[r["score"] for r in sorted(result, key=lambda r: r["label"])] for result in results])


def test_pair_template_is_what_the_pipeline_tokenizes(pipelines, tokenizer):
    classifier = pipelines["classifier"]
    pair = PAIRS[0]
    encoded = classifier.preprocess(pair)["input_ids"][0].tolist()
    text = tokenizer(pair["text"], add_special_tokens=False)["input_ids"]
    text_pair = tokenizer(pair["text_pair"], add_special_tokens=False)["input_ids"]
    # `<bos> text <eos> text_pair`, as gemma_encoder_hf.PAIR_TEMPLATE_DOC documents (Gemma's own is <bos>A<bos>B).
    assert gemma_encoder_hf.PAIR_TEMPLATE_DOC == "<bos> text <eos> text_pair"
    assert encoded == [tokenizer.bos_token_id, *text, tokenizer.eos_token_id, *text_pair]
    assert classifier.preprocess(SINGLE[0])["input_ids"][0].tolist() == [
        tokenizer.bos_token_id,
        *tokenizer(SINGLE[0], add_special_tokens=False)["input_ids"],
    ]


@pytest.mark.parametrize("kind", ["classifier", "ranker"])
def test_text_classification_pipeline_matches_model(kind, saved_models, pipelines, tokenizer):
    _, model = saved_models[kind]
    classifier = pipelines[kind]
    # The ranker folder loads as the classifier class (the Auto class' registered model), with the same weights.
    assert isinstance(classifier.model, GemmaEncoderForSequenceClassification)
    for inputs in (SINGLE, PAIRS):
        raw = pipeline_scores(classifier(inputs, top_k=None, function_to_apply="none"))
        torch.testing.assert_close(raw, reference_logits(model, tokenizer, inputs), atol=1e-4, rtol=1e-4)
    # transformers' default activation: softmax over several labels, sigmoid for a single one (a ranker's relevance).
    default = classifier(PAIRS, top_k=None)
    activated = raw.softmax(-1) if kind == "classifier" else raw.sigmoid()
    torch.testing.assert_close(pipeline_scores(default), activated, atol=1e-5, rtol=1e-4)
    if kind == "classifier":
        assert {r["label"] for result in default for r in result} == {"negative", "positive"}


# Runs where `gemma_encoder_hf` cannot be imported: everything must come from the saved folders' own code.
REMOTE_CODE_SCRIPT = """
import json, sys
sys.modules["gemma_encoder_hf"] = None  # any import of the package now raises ImportError
try:
    import gemma_encoder_hf
    raise SystemExit("gemma_encoder_hf was importable")
except ImportError:
    pass
from transformers import pipeline

single, pairs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for path in sys.argv[3:]:
    clf = pipeline("text-classification", model=path, trust_remote_code=True)
    out[path] = {
        "class": type(clf.model).__name__,
        "module": type(clf.model).__module__,
        "single": clf(single, top_k=None, function_to_apply="none"),
        "pairs": clf(pairs, top_k=None, function_to_apply="none"),
    }
print("RESULT" + json.dumps(out))
"""


def test_pipeline_with_trust_remote_code_in_fresh_process(saved_models, tokenizer, tmp_path):
    paths = {kind: str(saved_models[kind][0]) for kind in ("classifier", "ranker")}
    for path in paths.values():
        config = json.loads((Path(path) / "config.json").read_text())
        assert "AutoModelForSequenceClassification" in config["auto_map"], config.get("auto_map")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    completed = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, json.dumps(SINGLE), json.dumps(PAIRS), *paths.values()],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.split("RESULT", 1)[1])
    for kind, path in paths.items():
        result = results[path]
        # The saved auto_map picks the class as saved: the ranker stays a ranker.
        expected_class = {"classifier": "GemmaEncoderForSequenceClassification", "ranker": "GemmaEncoderForRanking"}
        assert result["class"] == expected_class[kind]
        assert result["module"].startswith("transformers_modules."), result["module"]
        model = saved_models[kind][1]
        for key, inputs in (("single", SINGLE), ("pairs", PAIRS)):
            torch.testing.assert_close(
                pipeline_scores(result[key]), reference_logits(model, tokenizer, inputs), atol=1e-4, rtol=1e-4
            )


@pytest.fixture(scope="module")
def base_model(real_encoder_dir) -> GemmaEncoderModel:
    return GemmaEncoderModel.from_pretrained(real_encoder_dir).eval()


def test_feature_extraction_pipeline_returns_token_states(base_model, tokenizer):
    """By transformers convention `feature-extraction` gives one vector per token; `embed` gives the pooled one."""
    extractor = pipeline("feature-extraction", model=base_model, tokenizer=tokenizer)
    model = base_model
    token_states = torch.tensor(extractor(SINGLE[0]))
    encoded = tokenizer(SINGLE[0], return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**encoded)
    assert token_states.shape == (1, encoded["input_ids"].shape[1], model.config.hidden_size)
    torch.testing.assert_close(token_states, outputs.last_hidden_state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        embed(model, tokenizer, SINGLE[:1], show_progress_bar=False), outputs.pooler_output, atol=1e-5, rtol=1e-4
    )


def test_embed_sorts_batches_and_restores_order(base_model, real_encoder_dir, tokenizer):
    model = base_model
    texts = ["short", "a much longer text that needs many more tokens than the others do", "mid length text", "x"]
    with torch.inference_mode():
        expected = torch.cat([model(**tokenizer(t, return_tensors="pt")).pooler_output for t in texts])
    got = embed(model, tokenizer, texts, batch_size=2, show_progress_bar=False)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    normalized = embed(model, tokenizer, texts, batch_size=3, normalize_embeddings=True, show_progress_bar=False)
    torch.testing.assert_close(normalized, torch.nn.functional.normalize(expected, dim=-1), atol=1e-5, rtol=1e-4)
    assert embed(model, tokenizer, [], show_progress_bar=False).shape == (0, model.config.hidden_size)

    # Over-long input is truncated to the tokenizer's limit, not run past it.
    tokenizer_short = AutoTokenizer.from_pretrained(real_encoder_dir, model_max_length=8)
    long_text = " ".join(["word"] * 50)
    with torch.inference_mode():
        first_eight = model(**tokenizer_short(long_text, truncation=True, return_tensors="pt")).pooler_output
    torch.testing.assert_close(embed(model, tokenizer_short, [long_text], show_progress_bar=False), first_eight)


def test_embed_and_score_pairs_on_task_models(saved_models, tokenizer):
    _, ranker = saved_models["ranker"]
    _, classifier = saved_models["classifier"]
    pairs = [(p["text"], p["text_pair"]) for p in PAIRS]
    scores = score_pairs(ranker, tokenizer, pairs, batch_size=1, show_progress_bar=False)
    assert scores.shape == (len(pairs),)
    torch.testing.assert_close(scores, reference_logits(ranker, tokenizer, PAIRS)[:, 0], atol=1e-4, rtol=1e-4)
    logits = score_pairs(classifier, tokenizer, pairs, show_progress_bar=False)
    torch.testing.assert_close(logits, reference_logits(classifier, tokenizer, PAIRS), atol=1e-4, rtol=1e-4)

    # A task model's pooled vector is its head's pooler output (attention pooling for this ranker).
    encoded = tokenizer(SINGLE[0], return_tensors="pt")
    with torch.inference_mode():
        pooled = ranker.score.pooler(ranker.model(**encoded).last_hidden_state, encoded["attention_mask"])
    torch.testing.assert_close(embed(ranker, tokenizer, SINGLE[:1], show_progress_bar=False), pooled)
    assert ranker.training is False


def test_score_pairs_on_a_model_without_a_classification_head_says_what_to_load(base_model, tokenizer):
    """It raised `AttributeError: ... has no attribute 'logits'`."""
    with pytest.raises(TypeError, match=r"GemmaEncoderModel is not a sequence classifier.*"
                                        r"AutoModelForSequenceClassification.*use `embed` for pooled vectors"):
        score_pairs(base_model, tokenizer, [("a query", "a document")], show_progress_bar=False)


def test_bad_inputs_raise_clear_errors(saved_models, tokenizer):
    _, ranker = saved_models["ranker"]
    with pytest.raises(TypeError, match="list of strings"):
        embed(ranker, tokenizer, "not a list")
    with pytest.raises(TypeError, match=r"pairs\[1\] must be a \(text, text_pair\) tuple"):
        score_pairs(ranker, tokenizer, [("q", "d"), ("only one",)])
    with pytest.raises(ValueError, match="batch_size"):
        embed(ranker, tokenizer, ["a"], batch_size=0)
    with pytest.raises(TypeError, match="GemmaEncoder model"):
        embed(torch.nn.Linear(2, 2), tokenizer, ["a"])

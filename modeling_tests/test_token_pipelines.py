"""Token-level pipelines, data preparation and the Hub round trip, with Gemma's real tokenizer.

Gemma's SentencePiece pieces carry the space before a word (`"▁Müller"`) and their offsets include it, so every span
here is checked character for character against the input: an entity or answer off by one character fails.

The models are tiny random backbones on the real vocabulary whose predictions are set through their weights: every
layer's output projections are zero (each layer then adds nothing to the residual stream), so a token's final state is
its normalised embedding, and the embedding rows of chosen pieces are one-hot vectors that the linear head maps to
the label (or answer start / end) we want. Deterministic, and independent of what a random model would predict.
"""

import json
import os
import textwrap

import pytest
import torch
from conftest import tiny_encoder_config
from hub_server import HubServer, client_pointed_at
from test_hub import run_isolated
from transformers import AutoTokenizer, pipeline

from gemma_encoder_hf import (
    GemmaEncoderForQuestionAnswering,
    GemmaEncoderForTokenClassification,
    GemmaEncoderTokenClassificationPipeline,
    push_to_hub,
)
from datasets import Dataset

from gemma_encoder_hf.harness.token_tasks import (
    CONLL_LABELS,
    align_ner_labels,
    conll_label_kwargs,
    evaluate_ner,
    predict_answers,
    qa_features,
)

SENTENCES = [
    "Angela Müller flew to São Paulo, then met Peter-Paul at Gdańsk.",
    "On Monday, Zoë Ångström-Lindqvist (CEO of Nordwind AG) visited Münster.",
]
# (label, text) of each entity, in order of appearance.
ENTITIES = [
    [("PER", "Angela Müller"), ("LOC", "São Paulo"), ("PER", "Peter-Paul"), ("LOC", "Gdańsk")],
    [("PER", "Zoë Ångström-Lindqvist"), ("ORG", "Nordwind AG"), ("LOC", "Münster")],
]
QUESTION = "Where did the engineer finally move to?"
ANSWER = "São Paulo"
CONTEXT = (
    "The engineer grew up in a small village near the coast, where her parents ran a bakery for many years. "
    "After school she studied mechanical engineering, worked on wind turbines, and travelled widely in Europe. "
    "In 2019, after a decade of projects abroad, she finally moved to São Paulo, where she founded a company."
)


@pytest.fixture(scope="module")
def tokenizer(real_encoder_dir):
    return AutoTokenizer.from_pretrained(real_encoder_dir)


def _pieces(tokenizer, text: str) -> list[tuple[int, int, int]]:
    """(token id, start, end) of each non-special piece, with the leading space of `▁` pieces skipped."""
    encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    out = []
    for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        while text[start].isspace():
            start += 1
        out.append((token, start, end))
    return out


def _silence_layers(model) -> None:
    """Zero every layer's output projections and the embedding: a token's final state is then its embedding row."""
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    model.model.embed_tokens.weight.zero_()


def controlled_tagger(tokenizer) -> GemmaEncoderForTokenClassification:
    """A tagger that tags exactly ENTITIES in SENTENCES (IOB2: B- on an entity's first piece, I- on the others)."""
    config = tiny_encoder_config(vocab_size=len(tokenizer), classifier_hidden_size=0, **conll_label_kwargs())
    model = GemmaEncoderForTokenClassification(config).eval()
    label_of: dict[int, int] = {}
    for sentence, entities in zip(SENTENCES, ENTITIES):
        spans, cursor = [], 0
        for label, text in entities:
            start = sentence.index(text, cursor)
            spans.append((label, start, start + len(text)))
            cursor = start + len(text)
        for token, start, end in _pieces(tokenizer, sentence):
            tag = "O"
            for label, first, last in spans:
                if first <= start and end <= last:
                    tag = ("B-" if start == first else "I-") + label
                elif first < end and start < last:
                    raise AssertionError(f"piece {sentence[start:end]!r} crosses an entity boundary: pick other text")
            assert label_of.get(token, CONLL_LABELS.index(tag)) == CONLL_LABELS.index(tag), "a piece needs two tags"
            label_of[token] = CONLL_LABELS.index(tag)
    with torch.no_grad():
        _silence_layers(model)
        for token, label in label_of.items():
            model.model.embed_tokens.weight[token, label] = 1.0
        head = model.classifier.out_proj
        head.weight.copy_(torch.eye(len(CONLL_LABELS), config.hidden_size))
        head.bias.zero_()
        head.bias[0] = 0.5  # all-zero states (every other piece) are tagged O
    return model


def controlled_reader(tokenizer) -> GemmaEncoderForQuestionAnswering:
    """A QA model whose best span is ANSWER: its first piece scores as a start, its last piece as an end."""
    model = GemmaEncoderForQuestionAnswering(
        tiny_encoder_config(vocab_size=len(tokenizer), classifier_hidden_size=0)
    ).eval()
    answer_pieces = [token for token, _, _ in _pieces(tokenizer, " " + ANSWER)]
    assert len(answer_pieces) >= 2 and not set(answer_pieces) & set(tokenizer(QUESTION)["input_ids"])
    with torch.no_grad():
        _silence_layers(model)
        model.model.embed_tokens.weight[answer_pieces[0], 0] = 1.0
        model.model.embed_tokens.weight[answer_pieces[-1], 1] = 1.0
        model.qa_outputs.out_proj.weight.copy_(torch.eye(2, model.config.hidden_size))
        model.qa_outputs.out_proj.bias.zero_()
    return model


@pytest.fixture(scope="module")
def saved_tagger(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("tagger")
    controlled_tagger(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def expected_entities(sentence: str, entities) -> list[tuple[str, str, int, int]]:
    out, cursor = [], 0
    for label, text in entities:
        start = sentence.index(text, cursor)
        out.append((label, text, start, start + len(text)))
        cursor = start + len(text)
    return out


def test_token_classification_pipeline_spans_slice_the_text_exactly(saved_tagger):
    tagger = pipeline(
        "token-classification",
        model=str(saved_tagger),
        aggregation_strategy="simple",
        pipeline_class=GemmaEncoderTokenClassificationPipeline,
    )
    for sentence, entities in zip(SENTENCES, ENTITIES):
        found = [(e["entity_group"], e["word"], e["start"], e["end"]) for e in tagger(sentence)]
        assert found == expected_entities(sentence, entities)
        assert all(sentence[start:end] == word for _, word, start, end in found)

    # transformers' own pipeline on the same model: the same entities, but each span that follows a space starts on
    # that space. The case the pipeline class exists for, and proof the check above can fail.
    plain = pipeline("token-classification", model=str(saved_tagger), aggregation_strategy="simple")
    sentence = SENTENCES[0]
    spans = [(e["start"], e["end"]) for e in plain(sentence)]
    assert spans[1] == (sentence.index("São") - 1, sentence.index(",")) and sentence[spans[1][0]] == " "


def test_extractive_qa_pipeline_reads_long_contexts_in_windows(tokenizer, tmp_path):
    controlled_reader(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reader = pipeline("extractive-question-answering", model=str(tmp_path))
    # A 24-token window fits the question and ~12 context tokens: the context needs many windows, and the answer
    # sits in one of the last.
    context_tokens = len(tokenizer(CONTEXT, add_special_tokens=False)["input_ids"])
    assert context_tokens > 4 * 12
    windows = reader.preprocess({"question": QUESTION, "context": CONTEXT}, doc_stride=4, max_seq_len=24)
    assert windows["model_inputs"]["input_ids"].shape[0] >= 4

    result = reader(question=QUESTION, context=CONTEXT, doc_stride=4, max_seq_len=24)
    assert result["answer"] == ANSWER
    assert CONTEXT[result["start"] : result["end"]] == ANSWER and result["start"] == CONTEXT.index(ANSWER)
    assert 0 < result["score"] <= 1
    # Batched inputs and the tokenizer's own limit (model_max_length) as the window give the same answer.
    reader.tokenizer.model_max_length = 24
    batch = reader([{"question": QUESTION, "context": CONTEXT}] * 2, doc_stride=4)
    assert [r["answer"] for r in batch] == [ANSWER, ANSWER]
    with pytest.raises(ValueError, match="doc_stride"):
        reader(question=QUESTION, context=CONTEXT, doc_stride=30, max_seq_len=24)


def test_ner_labels_go_to_the_first_piece_of_each_word(tokenizer):
    words = ["Zoë", "Ångström-Lindqvist", "visited", "Gdańsk", "."]
    tags = ["B-PER", "I-PER", "O", "B-LOC", "O"]
    encoded = align_ner_labels(words, tags, tokenizer, max_length=64)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert len(pieces) > len(words) + 1  # multi-piece words, so the alignment is tested
    labelled = [(piece, CONLL_LABELS[label]) for piece, label in zip(pieces, encoded["labels"]) if label != -100]
    assert [tag for _, tag in labelled] == tags
    # Each labelled piece is the start of its word.
    for (piece, _), word in zip(labelled, words):
        assert word.startswith(piece.lstrip("▁")), (piece, word)
    assert encoded["labels"][0] == -100  # <bos>
    assert encoded["num_words"] == len(words)
    truncated = align_ner_labels(words, tags, tokenizer, max_length=4)
    assert truncated["num_words"] < len(words) and len(truncated["input_ids"]) == 4


def test_evaluate_ner_reads_each_word_from_its_first_piece(tokenizer):
    """SENTENCES as CoNLL rows (punctuation split off) through `evaluate_ner`: the controlled tagger finds every
    entity, in a padded batch of sentences of different lengths under Gemma's default left padding."""
    rows = {
        "tokens": [
            "Angela Müller flew to São Paulo , then met Peter-Paul at Gdańsk .".split(),
            "On Monday , Zoë Ångström-Lindqvist ( CEO of Nordwind AG ) visited Münster .".split(),
        ],
        "ner_tags": [
            "B-PER I-PER O O B-LOC I-LOC O O O B-PER O B-LOC O".split(),
            "O O O B-PER I-PER O O O B-ORG I-ORG O O B-LOC O".split(),
        ],
    }
    assert tokenizer.padding_side == "left"
    metrics = evaluate_ner(controlled_tagger(tokenizer), tokenizer, Dataset.from_dict(rows), batch_size=2)
    assert metrics["f1"] == 1.0 and metrics["accuracy"] == 1.0
    # Words cut off by max_length count as predicted O: recall drops, precision stays.
    short = evaluate_ner(controlled_tagger(tokenizer), tokenizer, Dataset.from_dict(rows), max_length=8)
    assert short["recall"] < 1.0 and short["precision"] == 1.0


def test_qa_features_mark_answers_inside_their_windows(tokenizer):
    examples = {
        "question": [QUESTION],
        "context": [CONTEXT],
        "answers": [{"text": [ANSWER], "answer_start": [CONTEXT.index(ANSWER)]}],
    }
    features = qa_features(examples, tokenizer, max_length=32, doc_stride=8, with_positions=True)
    inference = qa_features(examples, tokenizer, max_length=32, doc_stride=8, with_positions=False)
    assert len(features["input_ids"]) >= 4
    hits = 0
    for i, (start, end) in enumerate(zip(features["start_positions"], features["end_positions"])):
        if start == 0:
            assert end == 0  # the answer is not inside this window: the <bos> position
            continue
        hits += 1
        offsets = inference["context_offsets"][i]
        assert CONTEXT[offsets[start][0] : offsets[end][1]].strip() == ANSWER
    assert hits >= 1


def test_predict_answers_decodes_every_question_from_its_own_windows(tokenizer):
    """More questions than one `Dataset.map` batch (1,000 rows): each answer comes from its own row's windows.

    Windows used to be tied to their question by the position inside the map batch, which restarts at 0 every 1,000
    rows: questions past the first batch got no answer, and earlier ones were decoded from other rows' windows.
    """
    rows = []
    for i in range(1003):
        context = CONTEXT if i % 2 == 0 else f"Row {i} of the log mentions no city at all, only the number {i}."
        rows.append({"id": str(i), "question": QUESTION, "context": context})
    answers = predict_answers(controlled_reader(tokenizer), tokenizer, Dataset.from_list(rows), max_length=128,
                              batch_size=128)  # fmt: skip
    assert sorted(answers, key=int) == [row["id"] for row in rows]
    for row in rows:
        assert answers[row["id"]] in row["context"]
        if row["context"] == CONTEXT:
            assert answers[row["id"]] == ANSWER


# ----------------------------------------------------------------------------------------------------------------------
# Hub round trip: push both heads, reload and run them where the package cannot be imported
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_env(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("loopback_hub")).start()
    with client_pointed_at(server, tmp_path_factory.mktemp("hub_client")) as env:
        yield server, {**os.environ, **env}
    server.stop()


def test_token_heads_round_trip_through_the_hub_without_the_package(tokenizer, hub_env, tmp_path):
    hub, env = hub_env
    tagger, reader = controlled_tagger(tokenizer), controlled_reader(tokenizer)
    push_to_hub(tagger, "tester/tiny-tagger", tokenizer=tokenizer)
    push_to_hub(reader, "tester/tiny-reader", tokenizer=tokenizer)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = {"tagger": tagger(**batch).logits, "reader": reader(**batch).start_logits}
    torch.save(dict(batch), tmp_path / "batch.pt")
    script = f"""
    import json, torch
    from transformers import AutoModelForQuestionAnswering, AutoModelForTokenClassification, pipeline

    batch = torch.load({str(tmp_path / "batch.pt")!r})
    tagger = AutoModelForTokenClassification.from_pretrained("tester/tiny-tagger", trust_remote_code=True).eval()
    reader = AutoModelForQuestionAnswering.from_pretrained("tester/tiny-reader", trust_remote_code=True).eval()
    with torch.no_grad():
        out = {{"tagger": tagger(**batch).logits, "reader": reader(**batch).start_logits}}
    out["classes"] = [type(m).__module__ + "." + type(m).__name__ for m in (tagger, reader)]
    pipe = pipeline("token-classification", model="tester/tiny-tagger", trust_remote_code=True,
                    aggregation_strategy="simple")
    out["entities"] = [[e["entity_group"] for e in pipe(s)] for s in {SENTENCES!r}]
    out["package_importable"] = PACKAGE_IMPORTABLE
    torch.save(out, {str(tmp_path / "out.pt")!r})
    """
    run_isolated(textwrap.dedent(script), env, tmp_path)
    out = torch.load(tmp_path / "out.pt")
    assert out["package_importable"] is False
    assert out["classes"][0].startswith("transformers_modules.")
    assert out["classes"][0].endswith("GemmaEncoderForTokenClassification")
    assert out["classes"][1].endswith("GemmaEncoderForQuestionAnswering")
    for name in ("tagger", "reader"):
        assert torch.equal(out[name], expected[name])
    assert out["entities"] == [[label for label, _ in entities] for entities in ENTITIES]
    config = json.loads((hub.repos["tester/tiny-tagger"].resolve("main").files["config.json"].content))
    assert config["auto_map"]["AutoModelForTokenClassification"].endswith("GemmaEncoderForTokenClassification")
    assert config["auto_map"]["AutoModelForQuestionAnswering"].endswith("GemmaEncoderForQuestionAnswering")
    card = hub.repos["tester/tiny-reader"].resolve("main").files["README.md"].content.decode()
    assert "pipeline_tag: question-answering" in card

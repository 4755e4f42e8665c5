"""Bad input never yields a silently wrong number: every case raises an error naming the problem and the fix, or has
a documented behaviour that is asserted here (see docs/reliability.md for the table).

Most cases run on a tiny random model (milliseconds); the tokenizer cases use the real Gemma 3 tokenizer and model.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_encoder_config
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForSequenceClassification,
    pipeline,
)

from gemma_encoder_hf import (
    GemmaEncoderConfig,
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderModel,
)

# The sizes these tests reason about (vocabulary bounds, trained positions); the rest is conftest's tiny encoder.
TINY = dict(vocab_size=64, max_position_embeddings=32)


def tiny_config(**overrides) -> GemmaEncoderConfig:
    return tiny_encoder_config(**{**TINY, **overrides})


@pytest.fixture(scope="module")
def classifier() -> GemmaEncoderForSequenceClassification:
    torch.manual_seed(0)
    return GemmaEncoderForSequenceClassification(tiny_config(num_labels=3)).eval()


@pytest.fixture(scope="module")
def tiny_classifier_dir(tmp_path_factory, classifier) -> Path:
    path = tmp_path_factory.mktemp("tiny_classifier")
    classifier.save_pretrained(path)
    return path


def ids(batch: int = 2, seq: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, TINY["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------------------
# Text that is empty, blank or too long (real tokenizer)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_tokenizer(real_encoder_dir):
    return AutoTokenizer.from_pretrained(real_encoder_dir)


def test_empty_and_blank_text_are_valid_short_inputs(real_tokenizer, real_encoder_dir):
    """The prepared tokenizer always emits <bos>, so an empty or blank text is a real (if uninformative) input."""
    texts = ["", "   ", "\n\t"]
    for text in texts:
        encoded = real_tokenizer(text)
        assert encoded.input_ids[0] == real_tokenizer.bos_token_id
        assert len(encoded.input_ids) <= 3 and all(encoded.attention_mask)
    assert real_tokenizer("").input_ids == [real_tokenizer.bos_token_id]
    model = GemmaEncoderForSequenceClassification.from_pretrained(real_encoder_dir, num_labels=2).eval()
    classify = pipeline("text-classification", model=model, tokenizer=real_tokenizer, top_k=None)
    for scores in classify(texts):
        assert len(scores) == 2 and abs(sum(s["score"] for s in scores) - 1.0) < 1e-5
        assert all(np.isfinite(s["score"]) for s in scores)


def test_overlong_text_is_truncated_to_max_position_embeddings(real_tokenizer):
    limit = real_tokenizer.model_max_length
    assert limit == 32_768  # the converted tokenizer's limit is the model's max_position_embeddings
    text = "word " * (limit + 100)
    assert len(real_tokenizer(text, truncation=True).input_ids) == limit
    pair = real_tokenizer("query " * 10, text, truncation="only_second")
    assert len(pair.input_ids) == limit


def test_model_warns_past_max_position_embeddings(classifier):
    """RoPE has no position table, so a longer input cannot raise an index error; it must not pass silently."""
    too_long = ids(seq=TINY["max_position_embeddings"] + 4)
    with pytest.warns(UserWarning, match=r"position 35, past the 32 positions .*truncation=True"):
        logits = classifier(too_long).logits
    assert torch.isfinite(logits).all()
    with pytest.warns(UserWarning, match="max_position_embeddings"):
        classifier(ids(seq=4), position_ids=torch.tensor([[0, 1, 2, 40]] * 2))


def test_no_warning_within_max_position_embeddings(classifier, recwarn):
    classifier(ids(seq=TINY["max_position_embeddings"]))
    assert not [w for w in recwarn if "max_position_embeddings" in str(w.message)]


# ----------------------------------------------------------------------------------------------------------------------
# Masks and ids
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [GemmaEncoderModel, GemmaEncoderForSequenceClassification])
def test_all_padding_row_is_rejected(model_class, classifier):
    model = model_class(tiny_config(num_labels=3)).eval()
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1] = 0
    with pytest.raises(ValueError, match=r"attention_mask rows \[1\] contain no tokens.*Remove empty rows"):
        model(ids(batch=3), attention_mask=mask)
    with pytest.raises(ValueError, match=r"rows \[0, 1, 2\] contain no tokens"):
        model(ids(batch=3), attention_mask=torch.zeros(3, 6, dtype=torch.long))


def test_attention_mask_of_the_wrong_shape_is_rejected(classifier):
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 5\) but the inputs are \(2, 6\)"):
        classifier(ids(), attention_mask=torch.ones(2, 5, dtype=torch.long))


@pytest.mark.parametrize("bad_id", [TINY["vocab_size"], TINY["vocab_size"] + 1000, -1])
def test_token_ids_outside_the_vocabulary_are_rejected(classifier, bad_id):
    input_ids = ids()
    input_ids[1, 2] = bad_id
    with pytest.raises(ValueError, match=r"outside this model's vocabulary \[0, 64\).*resize_token_embeddings"):
        classifier(input_ids)


def test_inputs_embeds_give_the_same_logits_as_input_ids(classifier):
    """`inputs_embeds` are what the embedding layer returns, i.e. already scaled by sqrt(hidden_size)."""
    input_ids, mask = ids(), torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        from_ids = classifier(input_ids, attention_mask=mask).logits
        embeds = classifier.get_input_embeddings()(input_ids)
        from_embeds = classifier(inputs_embeds=embeds, attention_mask=mask).logits
    assert torch.equal(from_ids, from_embeds)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        classifier(input_ids, inputs_embeds=embeds)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        classifier()


# ----------------------------------------------------------------------------------------------------------------------
# Configuration names
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("pooling", "max", "'mean', 'first', 'last', 'attention'"),
        ("attention", "sliding", "'bidirectional', 'causal'"),
        ("ranking_loss", "lambdarank", "'pointwise', 'pairwise', 'listwise'"),
        ("attention_pooling_probe", "both", "'query', 'kv'"),
    ],
)
def test_unknown_names_are_rejected_with_the_allowed_values(field, value, allowed):
    with pytest.raises(ValueError, match=rf"GemmaEncoderConfig\.{field}='{value}' is not supported.*{allowed}"):
        tiny_config(**{field: value})


def test_unknown_names_in_a_saved_config_are_rejected_on_load(tiny_classifier_dir, tmp_path):
    shutil.copytree(tiny_classifier_dir, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["pooling"] = "cls"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"pooling='cls' is not supported"):
        GemmaEncoderForSequenceClassification.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------------------


def test_ranking_batch_must_hold_whole_groups():
    model = GemmaEncoderForRanking(tiny_config(ranking_loss="listwise", ranking_group_size=4)).eval()
    with pytest.raises(ValueError, match=r"whole groups of ranking_group_size=4.*has 6 rows.*multiple of the group"):
        model(ids(batch=6), labels=torch.tensor([1.0, 0, 0, 0, 1, 0]))
    with pytest.raises(ValueError, match=r"one relevance per \(query, document\) row: expected 4"):
        model(ids(batch=4), labels=torch.tensor([1.0, 0, 0]))


@pytest.mark.parametrize(
    "problem_type, labels, message",
    [
        ("single_label_classification", torch.tensor([0.0, 1.0]), r"integer class ids.*got dtype torch.float32"),
        ("single_label_classification", torch.tensor([[0], [1]]), r"shape \(2,\), got \(2, 1\)"),
        ("single_label_classification", torch.tensor([0, 3]), r"Labels \[3\] are outside \[0, 3\)"),
        ("multi_label_classification", torch.tensor([[0.0, 1.0], [1.0, 0.0]]), r"shape \(2, 3\).*got \(2, 2\)"),
        ("regression", torch.tensor([0.5, 0.1, 0.3]), r"3 value\(s\) per example \(6 in all"),
    ],
)
def test_labels_of_the_wrong_dtype_or_shape_are_rejected(problem_type, labels, message):
    model = GemmaEncoderForSequenceClassification(tiny_config(num_labels=3, problem_type=problem_type)).eval()
    with pytest.raises(ValueError, match=message):
        model(ids(), labels=labels)


# ----------------------------------------------------------------------------------------------------------------------
# Files: mismatched heads, corrupt weights, foreign checkpoints
# ----------------------------------------------------------------------------------------------------------------------


def test_num_labels_mismatch_on_load(tiny_classifier_dir, classifier):
    """transformers refuses a head of another size and names the switch; with it, only the head is re-initialised."""
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        GemmaEncoderForSequenceClassification.from_pretrained(tiny_classifier_dir, num_labels=5)
    model = GemmaEncoderForSequenceClassification.from_pretrained(
        tiny_classifier_dir, num_labels=5, ignore_mismatched_sizes=True
    )
    assert model.score.out_proj.weight.shape == (5, model.config.hidden_size)
    assert torch.equal(model.score.dense.weight, classifier.score.dense.weight)
    for (name, loaded), original in zip(model.model.state_dict().items(), classifier.model.state_dict().values()):
        assert torch.equal(loaded, original), name


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors_names_the_file_and_the_fix(tiny_classifier_dir, tmp_path, damage):
    shutil.copytree(tiny_classifier_dir, tmp_path, dirs_exist_ok=True)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00\x01 not safetensors" * 64)
    with pytest.raises(OSError, match=rf"{tmp_path}.*truncated or corrupt.*force_download=True"):
        GemmaEncoderForSequenceClassification.from_pretrained(tmp_path)


def test_from_decoder_rejects_an_unsupported_model_type(tmp_path):
    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match=r"Unsupported decoder model_type 'llama'.*'gemma':.*'gemma2':.*'gemma3_text':"):
        GemmaEncoderModel.from_decoder(tmp_path)


def test_from_pretrained_rejects_a_checkpoint_of_another_model_type(tmp_path):
    """transformers only warns here, and a Llama checkpoint's q_proj/mlp/norm weights would load by name."""
    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"model_type 'llama', not 'gemma_encoder'.*from_decoder"):
        GemmaEncoderForSequenceClassification.from_pretrained(tmp_path)


def write_gguf(path: Path, architecture: str) -> Path:
    """A minimal GGUF file of the given architecture (metadata + one embedding tensor)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_from_decoder_rejects_a_non_gemma_gguf(tmp_path):
    llama = write_gguf(tmp_path / "llama.gguf", "llama")
    with pytest.raises(ValueError, match=r"Unsupported decoder model_type 'llama'.*GemmaEncoder converts"):
        GemmaEncoderModel.from_decoder(llama)
    # An architecture transformers cannot read at all is refused by name too, before the file is parsed.
    bert = write_gguf(tmp_path / "bert.gguf", "bert")
    with pytest.raises(ValueError, match="Unsupported decoder model_type 'bert'"):
        GemmaEncoderModel.from_decoder(bert)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"definitely not gguf" * 8)
    with pytest.raises(ValueError, match="not a GGUF file"):
        GemmaEncoderModel.from_decoder(junk)

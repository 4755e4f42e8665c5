"""What a newcomer hits first: misspelt settings, mistyped paths, truncated GGUF files, unprepared tokenizers and
over-long texts each give a clear error or warning instead of a silent default or a slow failure."""

import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_encoder_config, write_tiny_gemma3_gguf
from huggingface_hub import constants as hub_constants
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

from gemma_encoder_hf import (
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderModel,
    convert,
    embed,
    prepare_tokenizer,
    score_pairs,
)
from gemma_encoder_hf.integrations.conversion import DEFAULT_MAX_LENGTH


def test_misspelt_setting_is_refused_with_the_close_field(tiny_decoder_dirs, tmp_path):
    with pytest.raises(TypeError, match=r"'poolng' \(did you mean 'pooling'\?\)"):
        GemmaEncoderForSequenceClassification.from_decoder(tiny_decoder_dirs["gemma3"], poolng="first")
    with pytest.raises(TypeError, match=r"'atention' \(did you mean 'attention'\?\)"):
        convert(tiny_decoder_dirs["gemma3"], tmp_path / "out", atention="causal")
    assert not (tmp_path / "out").exists()
    # Download options are not config fields, and are still accepted.
    model = GemmaEncoderModel.from_decoder(tiny_decoder_dirs["gemma3"], pooling="first", revision="main")
    assert model.config.pooling == "first" and not hasattr(model.config, "revision")


@pytest.mark.parametrize("source", ["dec_nothere", "./dec_nothere", "runs/a/b/dec_nothere", "dec_nothere.gguf"])
def test_missing_folder_is_reported_without_a_hub_lookup(source, monkeypatch):
    """Offline, any string that is not a folder is a missing folder; a string that cannot be a Hub id is one always."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=r"No such folder"):
        GemmaEncoderModel.from_decoder(source)


def write_gguf(path, architecture: str = "llama"):
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.ones((512, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_truncated_gguf_names_the_file_and_the_fix(tmp_path, keep):
    """Cut in the tensor data or inside the metadata: either way the message names the file, not numpy or struct."""
    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: int(len(whole) * keep)])
    with pytest.raises(ValueError, match=rf"{cut} is truncated.*download or copy it again"):
        GemmaEncoderModel.from_decoder(cut)


def tiny_tokenizer(pair_template: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with Gemma's special tokens; `pair_template` is its post-processor's pair template."""
    words = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"w{i}" for i in range(60)] + ["q", "d"]
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    backend.post_processor = TemplateProcessing(
        single="<bos> $A", pair=pair_template, special_tokens=[("<bos>", 2), ("<eos>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def test_score_pairs_refuses_gemmas_own_pair_template():
    ranker = GemmaEncoderForRanking(tiny_encoder_config(ranking_loss="pointwise"))
    raw = tiny_tokenizer("<bos> $A <bos> $B:1")
    with pytest.raises(ValueError, match=r"not as '<bos> A <eos> B'.*prepare_tokenizer"):
        score_pairs(ranker, raw, [("q", "d")], show_progress_bar=False)
    prepared = prepare_tokenizer(raw)
    assert prepared("q", "")["input_ids"] == [2, 64]  # transformers drops an empty text_pair in a single call
    scores = score_pairs(ranker, prepared, [("q", "d"), ("q", "")], show_progress_bar=False)
    assert scores.shape == (2,)


def test_prepared_tokenizer_has_a_sensible_default_limit_and_truncation_warns():
    tokenizer = prepare_tokenizer(tiny_tokenizer("<bos> $A <bos> $B:1"))
    assert tokenizer.model_max_length == DEFAULT_MAX_LENGTH == 2048
    tokenizer.model_max_length = 16  # a small limit keeps the long input (and the test) short
    model = GemmaEncoderModel(tiny_encoder_config())
    long_text = " ".join(f"w{i % 60}" for i in range(300))
    with pytest.warns(UserWarning, match=r"1 of 2 inputs are longer than max_length=16 tokens \(the longest has 301"):
        vectors = embed(model, tokenizer, [long_text, "w1 w2"], show_progress_bar=False)
    assert vectors.shape == (2, model.config.hidden_size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embed(model, tokenizer, ["w1 w2", " ".join(["w3"] * 15)], show_progress_bar=False)  # 16 tokens: fits
    assert torch.isfinite(vectors).all()


def test_gguf_conversion_parses_the_file_once(tiny_decoder_dirs, tmp_path, monkeypatch):
    """Config, weights and tokenizer from one parse of the GGUF metadata (the slow part on a 262k vocabulary)."""
    import gguf

    decoder = write_tiny_gemma3_gguf(tiny_decoder_dirs["gemma3"], tmp_path / "tiny.gguf")
    parses = []

    class CountingReader(gguf.GGUFReader):
        def __init__(self, *args, **kwargs):
            parses.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    out = convert(tmp_path / "tiny.gguf", tmp_path / "encoder", task="classification", num_labels=2)
    assert len(parses) == 1
    model = GemmaEncoderForSequenceClassification.from_pretrained(out)
    expected = {k: v for k, v in decoder.state_dict().items() if k.startswith("model.")}
    actual = model.state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, atol=1e-6, rtol=0, msg=name)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("w1", "w2")["input_ids"]
    assert ids[0] == 2 and ids.count(2) == 1 and ids.count(1) == 1, ids  # <bos> A <eos> B
    assert tokenizer.model_max_length == 2048


def test_pair_scores_agree_across_pipeline_crossencoder_and_score_pairs(tmp_path):
    from sentence_transformers import CrossEncoder
    from transformers import pipeline

    torch.manual_seed(0)
    ranker = GemmaEncoderForRanking(tiny_encoder_config(ranking_loss="pointwise")).eval()
    tokenizer = prepare_tokenizer(tiny_tokenizer("<bos> $A <bos> $B:1"))
    ranker.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    pairs = [("q w1 w2", "d w3"), ("w4", "w5 w6 w7 w8"), ("q w9", "")]

    ours = score_pairs(ranker, tokenizer, pairs, show_progress_bar=False)
    cross = CrossEncoder(str(tmp_path), activation_fn=torch.nn.Identity())
    theirs = torch.as_tensor(cross.predict(pairs, show_progress_bar=False))
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)  # the empty second text included: both a pair

    classify = pipeline("text-classification", model=str(tmp_path), function_to_apply="none")
    for (text, text_pair), score in zip(pairs, ours):
        piped = classify({"text": text, "text_pair": text_pair})["score"]
        if text_pair:
            assert piped == pytest.approx(score.item(), abs=1e-5)
        else:  # transformers' tokenizer drops an empty text_pair: the pipeline scores the single text (documented)
            single = ranker(**tokenizer(text, return_tensors="pt")).logits.item()
            assert piped == pytest.approx(single, abs=1e-5)

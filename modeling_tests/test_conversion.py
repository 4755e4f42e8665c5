"""Conversion from decoder folders (all generations) and the CLI: weights kept exactly, save/load round trips."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import DECODER_CLASSES, GENERATIONS, SOURCES, random_batch
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from gemma_encoder_hf import (
    GemmaEncoderForMaskedLM,
    GemmaEncoderForQuestionAnswering,
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderForTokenClassification,
    GemmaEncoderModel,
)
from gemma_encoder_hf.integrations.conversion import SUPPORTED_SOURCES


@pytest.mark.parametrize("generation", GENERATIONS)
def test_backbone_weights_are_the_decoders(tiny_decoder_dirs, generation):
    decoder = DECODER_CLASSES[generation].from_pretrained(tiny_decoder_dirs[generation], dtype=torch.float32)
    expected = {k.removeprefix("model."): v for k, v in decoder.state_dict().items() if k.startswith("model.")}
    model = GemmaEncoderModel.from_decoder(tiny_decoder_dirs[generation])
    actual = {k: v for k, v in model.state_dict().items() if not k.startswith("pooler.")}
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


@pytest.mark.parametrize("generation", SOURCES)
@pytest.mark.parametrize(
    "cls, auto_cls, overrides",
    [
        (GemmaEncoderModel, AutoModel, {"pooling": "attention", "attention_pooling_probe": "kv"}),
        (GemmaEncoderForSequenceClassification, AutoModelForSequenceClassification, {"num_labels": 3}),
        (GemmaEncoderForRanking, AutoModelForSequenceClassification, {"pooling": "last"}),
        (GemmaEncoderForTokenClassification, AutoModelForTokenClassification, {"num_labels": 5}),
        (GemmaEncoderForQuestionAnswering, AutoModelForQuestionAnswering, {}),
        (GemmaEncoderForMaskedLM, AutoModelForMaskedLM, {}),
    ],
    ids=["base", "classifier", "ranker", "tagger", "qa", "masked-lm"],
)
def test_save_and_reload_gives_identical_outputs(tiny_decoder_dirs, tmp_path, generation, cls, auto_cls, overrides):
    model = cls.from_decoder(tiny_decoder_dirs[generation], **overrides).eval()
    input_ids, attention_mask = random_batch(128)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    with torch.inference_mode():
        expected = model(input_ids=input_ids, attention_mask=attention_mask)
    for loader in (cls, auto_cls):
        reloaded = loader.from_pretrained(tmp_path).eval()
        with torch.inference_mode():
            actual = reloaded(input_ids=input_ids, attention_mask=attention_mask)
        for field in ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits"):
            if field in expected:
                assert torch.equal(actual[field], expected[field]), (loader.__name__, field)


def test_task_head_is_new_and_backbone_loads_from_a_base_encoder(tiny_decoder_dirs, tmp_path):
    base = GemmaEncoderModel.from_decoder(tiny_decoder_dirs["gemma2"])
    base.save_pretrained(tmp_path)
    classifier = GemmaEncoderForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    assert classifier.score.out_proj.out_features == 4
    for name, tensor in base.state_dict().items():
        if not name.startswith("pooler."):
            assert torch.equal(classifier.model.state_dict()[name], tensor), name


def test_unsupported_decoder_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}))
    with pytest.raises(ValueError, match=r"Unsupported decoder model_type 'llama'") as raised:
        GemmaEncoderModel.from_decoder(tmp_path)
    for model_type in SUPPORTED_SOURCES:  # the error names every kind of checkpoint that is converted
        assert repr(model_type) in str(raised.value)


def test_cli_convert_writes_a_ready_to_use_folder(real_encoder_dir, tmp_path):
    """`gemma-encoder convert` on a decoder folder (with the Gemma tokenizer) writes model + prepared tokenizer."""
    # A native decoder folder with the real tokenizer: the tiny Gemma 3 decoder with the 270M's vocabulary size.
    from conftest import make_tiny_decoder

    decoder_dir = make_tiny_decoder("gemma3", tmp_path / "decoder", vocab_size=262_144, hidden_size=16,
                                    intermediate_size=16, num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(real_encoder_dir).save_pretrained(decoder_dir)
    out = tmp_path / "encoder"
    result = subprocess.run(
        [sys.executable, "-m", "gemma_encoder_hf.harness.cli", "convert", str(decoder_dir), str(out), "--task", "ranking",
         "--pooling", "attention", "--set", "attention_pooling_probe=kv", "--set", "ranking_group_size=4"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GemmaEncoderForRanking"]
    assert (config["pooling"], config["attention_pooling_probe"], config["ranking_group_size"]) == ("attention", "kv", 4)
    weights = load_file(out / "model.safetensors")
    assert any(k.startswith("score.pooler.key_probes") for k in weights)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("query", "document")["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1 and tokenizer.eos_token_id in ids


def test_cli_reports_bad_arguments_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gemma_encoder_hf.harness.cli", "convert", str(tmp_path / "missing.gguf"), str(tmp_path / "o"),
         "--set", "pooling=max"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "error" in result.stderr

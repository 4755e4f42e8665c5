"""Save/load and LoRA save/load reproduce logits bit for bit, and weights are only ever written as safetensors.

The Hub round trip (push_to_hub to a loopback Hub, reload in a fresh process without the package, `torch.equal` on
the logits of a classifier, a ranker and a LoRA adapter) lives in test_hub.py and is not repeated here.
"""

from pathlib import Path

import pytest
import torch
from conftest import tiny_encoder_config
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from gemma_encoder_hf import (
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
)

TEXTS = ["a gripping, beautifully shot thriller", "dull and far too long", "ok"]
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}


def weight_files(folder: Path) -> set[str]:
    """Suffixes of every file that could hold tensors."""
    return {p.suffix for p in folder.rglob("*") if p.is_file() and p.suffix in PICKLE_SUFFIXES | {".safetensors"}}


@pytest.fixture(scope="module")
def real_batch(real_encoder_dir):
    tokenizer = AutoTokenizer.from_pretrained(real_encoder_dir)
    return tokenizer(TEXTS, padding=True, return_tensors="pt")


def logits_of(model, batch) -> torch.Tensor:
    with torch.inference_mode():
        return model(**batch).logits


def test_real_classifier_save_load_is_bit_identical(real_encoder_dir, real_batch, tmp_path):
    torch.manual_seed(0)
    model = GemmaEncoderForSequenceClassification.from_pretrained(real_encoder_dir, num_labels=3).eval()
    before = logits_of(model, real_batch)
    model.save_pretrained(tmp_path)
    assert weight_files(tmp_path) == {".safetensors"}
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is GemmaEncoderForSequenceClassification
    assert torch.equal(logits_of(reloaded, real_batch), before)


@pytest.mark.parametrize(
    "model_class, pooling",
    [
        (GemmaEncoderForSequenceClassification, {"pooling": "mean"}),
        (GemmaEncoderForSequenceClassification, {"pooling": "last", "pooling_k": 2}),
        (GemmaEncoderForSequenceClassification, {"pooling": "attention", "attention_pooling_probe": "query"}),
        (GemmaEncoderForRanking, {"pooling": "attention", "attention_pooling_probe": "kv"}),
    ],
)
def test_sharded_save_load_is_bit_identical_for_every_head(model_class, pooling, tmp_path):
    """Small shards force the index + multi-file path; learned pooling parameters must survive it too."""
    torch.manual_seed(0)
    model = model_class(tiny_encoder_config(num_labels=2, **pooling)).eval()
    input_ids = torch.randint(3, model.config.vocab_size, (3, 9), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    batch["attention_mask"][0, :4] = 0
    before = logits_of(model, batch)
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1 and (tmp_path / "model.safetensors.index.json").exists()
    assert weight_files(tmp_path) == {".safetensors"}
    reloaded = model_class.from_pretrained(tmp_path).eval()
    for (name, saved), loaded in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(saved, loaded), name
    assert torch.equal(logits_of(reloaded, batch), before)


def test_lora_adapter_save_load_is_bit_identical(real_encoder_dir, real_batch, tmp_path):
    """No `target_modules`: the package registers Gemma's projections with PEFT. The head (`score`) travels with the
    adapter, so a base model with a freshly initialised head reproduces the adapted logits exactly."""
    torch.manual_seed(0)
    base = GemmaEncoderForSequenceClassification.from_pretrained(real_encoder_dir, num_labels=2).eval()
    model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8)).eval()
    with torch.no_grad():  # LoRA's B starts at zero; make the adapter change the outputs so the test can fail
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    adapted = logits_of(model, real_batch)
    model.save_pretrained(tmp_path)
    assert weight_files(tmp_path) == {".safetensors"}
    del model, base

    torch.manual_seed(1)  # a different random head: it must be replaced by the saved one
    fresh = GemmaEncoderForSequenceClassification.from_pretrained(real_encoder_dir, num_labels=2).eval()
    assert not torch.equal(logits_of(fresh, real_batch), adapted)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path).eval()
    assert torch.equal(logits_of(reloaded, real_batch), adapted)

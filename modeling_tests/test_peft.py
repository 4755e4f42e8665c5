"""PEFT/LoRA: default target modules, training, adapter save/reload (PeftModel and AutoPeftModel), merge.

Runs on a tiny random Gemma 3 backbone: what is tested is PEFT's bookkeeping (which modules get adapters, what the
adapter file carries, that reloading reproduces the trained model), which real weights would only slow down.
"""

import pytest
import torch
from conftest import random_batch
from peft import (
    AutoPeftModelForSequenceClassification,
    LoraConfig,
    PeftModel,
    get_peft_model,
)
from peft.tuners.lora import LoraLayer

from gemma_encoder_hf import (
    GemmaEncoderForMaskedLM,
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderModel,
)


@pytest.fixture(
    scope="module",
    params=[
        ("gemma3", "query"), ("gemma3", "kv"), ("t5gemma2", "query"), ("gemma4", "query"), ("gemma4_moe", "kv"),
        ("embedding_gemma2", "query"), ("recurrent_gemma", "kv"),
    ],
    ids=lambda p: "-".join(p),
)
def base_dir(request, tiny_decoder_dirs, tmp_path_factory):
    """A tiny classifier with attention pooling (query- or KV-probe), saved as the adapter's base model; from a
    Gemma 3 decoder, a T5Gemma 2 encoder, Gemma 4 decoders (whose shared and k=v layers have no v_proj), dense
    and mixture-of-experts, an EmbeddingGemma 2 text tower and a RecurrentGemma decoder (adapters on its attention
    layers' q/v)."""
    source, probe = request.param
    torch.manual_seed(0)
    model = GemmaEncoderForSequenceClassification.from_decoder(
        tiny_decoder_dirs[source],
        num_labels=2,
        pooling="attention",
        attention_pooling_probe=probe,
        classifier_dropout=0.0,
    )
    path = tmp_path_factory.mktemp(f"peft_base_{source}_{probe}")
    model.save_pretrained(path)
    return path


def eval_logits(model, input_ids, attention_mask) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).logits


def head_state(model) -> dict[str, torch.Tensor]:
    """The trained head (pooler included) as PEFT keeps it: the `modules_to_save` copy of `score`."""
    prefix = "modules_to_save.default."
    return {k.split(prefix)[1]: v.clone() for k, v in model.state_dict().items() if prefix in k}


def test_lora_without_target_modules_adapts_the_backbone_only(base_dir):
    model = GemmaEncoderForSequenceClassification.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16))
    adapted = sorted(name for name, module in peft_model.named_modules() if isinstance(module, LoraLayer))
    # Every q_proj / v_proj of the backbone's attention (Gemma 4 layers that reuse keys and values, or read values off
    # the key projection, have no v_proj), and the input projections of RecurrentGemma's recurrent blocks.
    targets = ("self_attn.q_proj", "self_attn.v_proj", "recurrent_block.linear_x", "recurrent_block.linear_y")
    expected = sorted(
        f"base_model.model.{name}"
        for name, _ in model.named_modules()
        if name.startswith("model.layers.") and name.endswith(targets)
    )
    assert len(expected) >= model.config.num_hidden_layers + 1
    assert {name.split(".layers.")[1].split(".")[0] for name in expected} == {
        str(i) for i in range(model.config.num_hidden_layers)
    }  # every layer adapted
    # The head's pooler has its own q_proj/v_proj: it is trained whole (modules_to_save), never adapted.
    assert adapted == expected
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any(".score.modules_to_save.default.pooler." in name for name in trainable)
    assert all("lora_" in name or "modules_to_save" in name for name in trainable)


def test_trained_adapter_reloads_and_merges(base_dir, tmp_path):
    input_ids, attention_mask = random_batch(128, batch=4, seq=12, seed=1)
    labels = torch.tensor([0, 1, 1, 0])
    model = GemmaEncoderForSequenceClassification.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16))
    head_before = head_state(peft_model)

    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    for _ in range(3):
        loss = peft_model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    trained_head = head_state(peft_model)
    pooler_keys = [k for k in trained_head if k.startswith("pooler.")]
    assert pooler_keys, "attention pooling parameters must be part of the trained head"
    # Training moved the pooler and the LoRA weights, so reproducing them below is not vacuous.
    assert all(not torch.equal(trained_head[k], head_before[k]) for k in pooler_keys)
    assert all(p.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)
    expected = eval_logits(peft_model, input_ids, attention_mask)

    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)

    reloaded = PeftModel.from_pretrained(GemmaEncoderForSequenceClassification.from_pretrained(base_dir), adapter_dir)
    torch.testing.assert_close(eval_logits(reloaded, input_ids, attention_mask), expected, atol=1e-6, rtol=1e-6)
    for key, value in head_state(reloaded).items():
        torch.testing.assert_close(value, trained_head[key], atol=0, rtol=0)

    auto = AutoPeftModelForSequenceClassification.from_pretrained(adapter_dir)
    assert isinstance(auto.get_base_model(), GemmaEncoderForSequenceClassification)
    torch.testing.assert_close(eval_logits(auto, input_ids, attention_mask), expected, atol=1e-6, rtol=1e-6)

    merged = auto.merge_and_unload()
    assert isinstance(merged, GemmaEncoderForSequenceClassification)
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    torch.testing.assert_close(eval_logits(merged, input_ids, attention_mask), expected, atol=1e-5, rtol=0)


def test_adapter_on_a_base_encoder_reloads_with_the_head_settings(tiny_decoder_dirs, tmp_path):
    """The usual workflow: the adapter's base is a plain encoder folder and the head settings were passed to
    `from_pretrained`; AutoPeftModel needs the same settings again, and without them it fails loudly."""
    GemmaEncoderModel.from_decoder(tiny_decoder_dirs["gemma3"]).save_pretrained(tmp_path / "base")
    head_settings = dict(num_labels=3, pooling="attention", attention_pooling_probe="kv")
    model = GemmaEncoderForSequenceClassification.from_pretrained(tmp_path / "base", **head_settings)
    peft_model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16))
    with torch.no_grad():  # stand-in for training: move the head's pooler and one adapter away from their init
        peft_model.base_model.model.score.modules_to_save["default"].pooler.key_probes.add_(0.5)
        next(p for n, p in peft_model.named_parameters() if "lora_B" in n).add_(0.1)
    input_ids, attention_mask = random_batch(128, batch=3, seq=10, seed=3)
    expected = eval_logits(peft_model, input_ids, attention_mask)
    peft_model.save_pretrained(tmp_path / "adapter")

    auto = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "adapter", **head_settings)
    torch.testing.assert_close(eval_logits(auto, input_ids, attention_mask), expected, atol=1e-6, rtol=1e-6)
    with pytest.raises(RuntimeError, match="Error"):
        AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "adapter")


# ----------------------------------------------------------------------------------------------------------------------
# The headline flow, in the order a newcomer runs it: from_decoder -> get_peft_model -> Trainer -> save -> reload
# ----------------------------------------------------------------------------------------------------------------------


def _flow_dataset(head: str, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[dict]:
    """Labelled rows in the form each head's loss takes (the ranker: one listwise group of 8 per step)."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(len(input_ids)):
        row = {"input_ids": input_ids[i], "attention_mask": attention_mask[i]}
        if head == "classifier":
            row["labels"] = torch.tensor(i % 2)
        elif head == "ranker":
            row["labels"] = torch.tensor(float(i % 8 == 0))
        elif head == "masked-lm":
            row["labels"] = torch.where(torch.rand(len(input_ids[i]), generator=generator) < 0.3, input_ids[i], -100)
            row["labels"][attention_mask[i] == 0] = -100
        else:  # base model: regress the first pooled feature on a target
            row["labels"] = torch.randn(1, generator=generator)
        rows.append(row)
    return rows


def _pooled_feature_loss(outputs, labels, num_items_in_batch=None):
    return torch.nn.functional.mse_loss(outputs.pooler_output[:, :1], labels)


FLOW_HEADS = {
    # head: (class, LoraConfig task_type, AutoPeft class name, config overrides)
    "classifier": (GemmaEncoderForSequenceClassification, "SEQ_CLS", "AutoPeftModelForSequenceClassification",
                   {"num_labels": 2, "pooling": "attention"}),
    "ranker": (GemmaEncoderForRanking, "SEQ_CLS", "AutoPeftModelForSequenceClassification", {"pooling": "last"}),
    "base": (GemmaEncoderModel, "FEATURE_EXTRACTION", "AutoPeftModelForFeatureExtraction", {"pooling": "attention"}),
    # PEFT has no masked-LM task type: without one, the adapter records the base class and AutoPeftModel imports it
    # (from an allowed package).
    "masked-lm": (GemmaEncoderForMaskedLM, None, "AutoPeftModel", {}),
}


def _outputs(model, input_ids, attention_mask) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask)
    return out.pooler_output if "pooler_output" in out else out.logits


@pytest.mark.parametrize(
    "generation, head",
    [("gemma3", head) for head in FLOW_HEADS] + [("gemma", "classifier"), ("gemma2", "ranker")],
)
def test_lora_flow_from_a_decoder_folder_saves_and_reloads(tiny_decoder_dirs, tmp_path, generation, head):
    import peft
    from transformers import Trainer, TrainingArguments

    model_class, task_type, auto_name, overrides = FLOW_HEADS[head]
    decoder_dir = tiny_decoder_dirs[generation]
    model = model_class.from_decoder(decoder_dir, **overrides)
    model = get_peft_model(model, LoraConfig(task_type=task_type, r=4, lora_alpha=8))

    input_ids, attention_mask = random_batch(128, batch=8, seq=12, seed=4)
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=8, max_steps=2, learning_rate=5e-2,
        use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
        # The base model's forward takes no labels: keep them for compute_loss_func.
        remove_unused_columns=head != "base", label_names=["labels"],
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=_flow_dataset(head, input_ids, attention_mask),
        compute_loss_func=_pooled_feature_loss if head == "base" else None,
    )
    trainer.train()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b), "training must move the adapters"
    expected = _outputs(model, input_ids, attention_mask)

    adapter_dir = tmp_path / "adapter"
    model.save_pretrained(adapter_dir)

    auto_class = getattr(peft, auto_name)
    extra = {"import_allowlist": ["gemma_encoder_hf"]} if auto_name == "AutoPeftModel" else {}
    auto = auto_class.from_pretrained(adapter_dir, **extra)
    # The Auto class serves a ranker as GemmaEncoderForSequenceClassification (same modules, same scores).
    expected_class = GemmaEncoderForSequenceClassification if head == "ranker" else model_class
    assert type(auto.get_base_model()) is expected_class
    torch.testing.assert_close(_outputs(auto, input_ids, attention_mask), expected, atol=1e-6, rtol=1e-6)

    base = model_class.from_decoder(decoder_dir, **overrides)
    reloaded = PeftModel.from_pretrained(base, adapter_dir)
    torch.testing.assert_close(_outputs(reloaded, input_ids, attention_mask), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("probe", ["query", "kv"])
def test_adapter_with_attention_pooling_refuses_a_base_without_it(tiny_decoder_dirs, tmp_path, probe):
    """The docs' head (attention pooling) on a plain encoder folder, reloaded without the head settings: the trained
    pooler cannot fit a mean-pooling model, and the reload says so instead of scoring with mean pooling."""
    GemmaEncoderModel.from_decoder(tiny_decoder_dirs["gemma3"]).save_pretrained(tmp_path / "base")
    head = dict(num_labels=2, pooling="attention", attention_pooling_probe=probe)
    model = GemmaEncoderForSequenceClassification.from_pretrained(tmp_path / "base", **head)
    get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8)).save_pretrained(tmp_path / "adapter")

    with pytest.raises(RuntimeError, match=rf"trained with attention \({probe} probes\) pooling.*pooling='attention'"):
        AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "adapter")
    with pytest.raises(RuntimeError, match="GemmaEncoderMeanPooler"):
        PeftModel.from_pretrained(GemmaEncoderForSequenceClassification.from_pretrained(tmp_path / "base"),
                                  tmp_path / "adapter")
    reloaded = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "adapter", **head)
    assert reloaded.get_base_model().config.pooling == "attention"


def test_lora_flow_from_a_gguf_file_reloads(tiny_decoder_dirs, tmp_path):
    """A GGUF source is recorded too: the adapter's base is converted from the same file again, same new head."""
    from conftest import write_tiny_gemma3_gguf

    gguf_path = tmp_path / "decoder" / "tiny.gguf"
    gguf_path.parent.mkdir()
    write_tiny_gemma3_gguf(tiny_decoder_dirs["gemma3"], gguf_path)
    model = GemmaEncoderModel.from_decoder(gguf_path, pooling="attention", attention_pooling_probe="kv")
    model = get_peft_model(model, LoraConfig(task_type="FEATURE_EXTRACTION", r=4, lora_alpha=8))
    with torch.no_grad():  # stand-in for training
        next(p for n, p in model.named_parameters() if "lora_B" in n).add_(0.1)
    input_ids, attention_mask = random_batch(128, batch=3, seq=10, seed=5)
    expected = _outputs(model, input_ids, attention_mask)
    model.save_pretrained(tmp_path / "adapter")

    from peft import AutoPeftModelForFeatureExtraction

    # The pooler is not part of a FEATURE_EXTRACTION adapter: it comes back equal because conversion is seeded.
    reloaded = AutoPeftModelForFeatureExtraction.from_pretrained(tmp_path / "adapter")
    torch.testing.assert_close(_outputs(reloaded, input_ids, attention_mask), expected, atol=1e-6, rtol=1e-6)

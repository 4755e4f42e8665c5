"""Token-level heads: GemmaEncoderForTokenClassification and GemmaEncoderForQuestionAnswering.

Tiny random backbones: what is tested is transformers' conventions (output types, -100 labels, BERT's clamped answer
positions), the attention switch, every execution path giving the same numbers, save/load, the Auto classes, the
Trainer contract and PEFT's TOKEN_CLS / QUESTION_ANS bookkeeping.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import GENERATIONS, tiny_encoder_config
from peft import AutoPeftModelForQuestionAnswering, AutoPeftModelForTokenClassification, LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from test_packed import ATTENTION_MODES, ragged_batch
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForTokenClassification,
    Trainer,
    TrainingArguments,
)
from transformers.modeling_outputs import QuestionAnsweringModelOutput, TokenClassifierOutput

from gemma_encoder_hf import GemmaEncoderForQuestionAnswering, GemmaEncoderForTokenClassification

TOLERANCE = 1e-4
NUM_LABELS = 5


def token_classifier(**overrides) -> GemmaEncoderForTokenClassification:
    torch.manual_seed(0)
    return GemmaEncoderForTokenClassification(tiny_encoder_config(num_labels=NUM_LABELS, **overrides)).eval()


def qa_model(**overrides) -> GemmaEncoderForQuestionAnswering:
    torch.manual_seed(0)
    return GemmaEncoderForQuestionAnswering(tiny_encoder_config(**overrides)).eval()


def token_labels(attention_mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Random labels on real tokens, with some -100 (ignored) among them and -100 on padding."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_LABELS, attention_mask.shape, generator=generator)
    labels[torch.rand(attention_mask.shape, generator=generator) < 0.3] = -100
    return labels.masked_fill(attention_mask == 0, -100)


# ----------------------------------------------------------------------------------------------------------------------
# Conventions
# ----------------------------------------------------------------------------------------------------------------------


def test_token_classification_output_and_ignored_labels():
    model = token_classifier()
    input_ids, attention_mask, _ = ragged_batch()
    labels = token_labels(attention_mask)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert isinstance(out, TokenClassifierOutput)
    assert out.logits.shape == (*input_ids.shape, NUM_LABELS)
    # transformers' convention: cross-entropy over the tokens whose label is not -100.
    expected = F.cross_entropy(out.logits.reshape(-1, NUM_LABELS), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)

    # A label on a padding position is no target: padding is never part of the loss.
    on_padding = labels.clone()
    on_padding[attention_mask == 0] = 1
    again = model(input_ids=input_ids, attention_mask=attention_mask, labels=on_padding).loss
    torch.testing.assert_close(again, expected)

    as_tuple = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, return_dict=False)
    assert len(as_tuple) == 2 and torch.equal(as_tuple[1], out.logits)


def test_token_classification_rejects_bad_labels():
    model = token_classifier()
    input_ids, attention_mask, _ = ragged_batch()
    labels = token_labels(attention_mask)
    labels[0, -1] = NUM_LABELS
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    with pytest.raises(ValueError, match="shape of input_ids"):
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels[:, :-1])
    # No target in the batch: a zero loss with a graph, not NaN.
    empty = model(input_ids=input_ids, attention_mask=attention_mask, labels=torch.full_like(labels, -100)).loss
    assert empty.item() == 0.0 and empty.requires_grad


def test_question_answering_output_and_bert_position_conventions():
    model = qa_model()
    input_ids, attention_mask, _ = ragged_batch(left_padded_rows=())  # right padding, as QA features are built
    seq = input_ids.shape[1]
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    assert isinstance(out, QuestionAnsweringModelOutput)
    assert out.start_logits.shape == out.end_logits.shape == input_ids.shape
    # No span can start or end on padding.
    padding = attention_mask == 0
    assert (out.start_logits[padding] == torch.finfo(out.start_logits.dtype).min).all()
    assert (out.start_logits[~padding] > -1e4).all()

    # Row 3 has an answer past the sequence (truncated away): clamped to `seq`, then ignored, as BERT does.
    start = torch.tensor([3, 2, 0, seq + 5])
    end = torch.tensor([5, 4, 0, seq + 9])
    loss = model(input_ids=input_ids, attention_mask=attention_mask, start_positions=start, end_positions=end).loss
    keep = slice(0, 3)
    expected = (
        F.cross_entropy(out.start_logits[keep], start[keep]) + F.cross_entropy(out.end_logits[keep], end[keep])
    ) / 2
    torch.testing.assert_close(loss, expected)
    # (batch, 1) positions, as some collators produce, are the same targets.
    loss_2d = model(
        input_ids=input_ids, attention_mask=attention_mask, start_positions=start[:, None], end_positions=end[:, None]
    ).loss
    torch.testing.assert_close(loss_2d, expected)


def test_question_answering_rejects_positions_on_padding():
    model = qa_model()
    input_ids, attention_mask, _ = ragged_batch(left_padded_rows=())
    start = torch.tensor([0, 0, 0, 10])  # row 3 holds 6 tokens: index 10 is padding
    with pytest.raises(ValueError, match="padding"):
        model(input_ids=input_ids, attention_mask=attention_mask, start_positions=start, end_positions=start)
    with pytest.raises(ValueError, match="both"):
        model(input_ids=input_ids, attention_mask=attention_mask, start_positions=start)


@pytest.mark.parametrize("model_class", [GemmaEncoderForTokenClassification, GemmaEncoderForQuestionAnswering])
def test_forward_rejects_unknown_arguments_and_declares_its_loss_contract(model_class, tmp_path):
    model = model_class(tiny_encoder_config(num_labels=NUM_LABELS))
    input_ids, attention_mask, _ = ragged_batch()
    with pytest.raises(TypeError, match="token_type_idz"):
        model(input_ids=input_ids, attention_mask=attention_mask, token_type_idz=input_ids)
    # Token classification divides by the Trainer's count of labelled tokens (which varies between micro-batches);
    # question answering has one start and one end per example, a mean the Trainer's own scaling keeps exact.
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    expected = model_class is GemmaEncoderForTokenClassification
    assert Trainer(model=model, args=args).model_accepts_loss_kwargs is expected


# ----------------------------------------------------------------------------------------------------------------------
# Attention switch and dropout
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_attention_switch_decides_whether_tokens_see_the_future(attention):
    model = token_classifier(attention=attention)
    input_ids = torch.randint(3, 128, (1, 12), generator=torch.Generator().manual_seed(1))
    changed = input_ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 125 + 3
    with torch.no_grad():
        before, after = model(input_ids=input_ids).logits, model(input_ids=changed).logits
    earlier_moved = (before[0, :-1] - after[0, :-1]).abs().max()
    if attention == "causal":
        assert earlier_moved == 0  # a token's tag never depends on the tokens after it
    else:
        assert earlier_moved > 1e-4


def test_classifier_dropout_applies_in_training_only():
    model = token_classifier(classifier_dropout=0.5)
    input_ids, attention_mask, _ = ragged_batch()
    with torch.no_grad():
        eval_a, eval_b = (model(input_ids=input_ids, attention_mask=attention_mask).logits for _ in range(2))
        model.train()
        train_a, train_b = (model(input_ids=input_ids, attention_mask=attention_mask).logits for _ in range(2))
    assert torch.equal(eval_a, eval_b)
    assert not torch.equal(train_a, train_b)
    assert model.classifier.dropout.p == 0.5


# ----------------------------------------------------------------------------------------------------------------------
# Padded, packed and flattened batches; attention backends
# ----------------------------------------------------------------------------------------------------------------------

PATH_CASES = [
    (generation, attention, implementation)
    for generation in GENERATIONS
    for attention in ATTENTION_MODES
    for implementation in ("eager", "sdpa", "flex_attention")
    if not (generation == "gemma" and attention.get("bidirectional_window", "split") != "split")
    and not (generation == "gemma2" and implementation == "sdpa")
]


def _run(model, mode: str, **inputs):
    model.config.packed_execution = mode
    with torch.no_grad():
        return model(**inputs)


@pytest.mark.parametrize(
    ("generation", "attention", "implementation"),
    PATH_CASES,
    ids=["-".join([g, *a.values(), i]) for g, a, i in PATH_CASES],
)
def test_every_path_gives_the_same_token_outputs(tiny_decoder_dirs, generation, attention, implementation):
    """Padded (eager/sdpa), packed and caller-flattened runs give the same logits on real tokens and the same loss."""
    torch.manual_seed(0)
    tagger = GemmaEncoderForTokenClassification.from_decoder(
        tiny_decoder_dirs[generation], num_labels=NUM_LABELS, **attention
    ).eval()
    torch.manual_seed(0)
    reader = GemmaEncoderForQuestionAnswering.from_decoder(tiny_decoder_dirs[generation], **attention).eval()
    input_ids, attention_mask, texts = ragged_batch()
    real = attention_mask.bool()
    labels = token_labels(attention_mask)
    lengths = real.sum(-1)
    # Left-padded row 1 has its real tokens at the end: positions are indices into the padded row.
    first_real = real.float().argmax(-1)
    start, end = first_real + lengths // 3, first_real + lengths // 2

    reference = {}
    for model in (tagger, reader):
        model.set_attn_implementation("sdpa" if implementation == "flex_attention" else implementation)
    reference["tags"] = _run(tagger, "never", input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    reference["qa"] = _run(
        reader, "never", input_ids=input_ids, attention_mask=attention_mask, start_positions=start, end_positions=end
    )
    for model in (tagger, reader):
        model.set_attn_implementation(implementation)
    tags = _run(tagger, "always", input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    qa = _run(reader, "always", input_ids=input_ids, attention_mask=attention_mask, start_positions=start,
              end_positions=end)  # fmt: skip

    assert (tags.logits[real] - reference["tags"].logits[real]).abs().max() <= TOLERANCE
    assert (tags.loss - reference["tags"].loss).abs() <= TOLERANCE
    for name in ("start_logits", "end_logits"):
        assert (getattr(qa, name)[real] - getattr(reference["qa"], name)[real]).abs().max() <= TOLERANCE
    assert (qa.loss - reference["qa"].loss).abs() <= TOLERANCE

    # One row of all texts back to back, position_ids restarting per text (DataCollatorWithFlattening).
    flat = {
        "input_ids": torch.cat(texts)[None],
        "position_ids": torch.cat([torch.arange(len(t)) for t in texts])[None],
    }
    flat_logits = _run(tagger, "never", **flat).logits[0].split([len(t) for t in texts])
    for row, logits in enumerate(flat_logits):
        assert (logits - reference["tags"].logits[row][real[row]]).abs().max() <= TOLERANCE


def test_packed_training_gradients_match_padded(tiny_decoder_dirs):
    model = GemmaEncoderForQuestionAnswering.from_decoder(tiny_decoder_dirs["gemma3"])
    input_ids, attention_mask, _ = ragged_batch(left_padded_rows=())
    start, end = torch.tensor([2, 3, 0, 1]), torch.tensor([4, 9, 0, 5])
    grads = {}
    for mode in ("never", "always"):
        model.zero_grad()
        model.config.packed_execution = mode
        model(input_ids=input_ids, attention_mask=attention_mask, start_positions=start, end_positions=end).loss.backward()
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["never"].keys() == grads["always"].keys()
    for name, grad in grads["never"].items():
        assert (grad - grads["always"][name]).abs().max() <= TOLERANCE * max(1.0, grad.abs().max().item()), name


# ----------------------------------------------------------------------------------------------------------------------
# from_decoder, save/load, Auto classes
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_class", "auto_class"),
    [
        (GemmaEncoderForTokenClassification, AutoModelForTokenClassification),
        (GemmaEncoderForQuestionAnswering, AutoModelForQuestionAnswering),
    ],
)
def test_from_decoder_save_and_auto_load(tiny_decoder_dirs, tmp_path, model_class, auto_class):
    from transformers import Gemma3ForCausalLM

    model = model_class.from_decoder(tiny_decoder_dirs["gemma3"], num_labels=NUM_LABELS).eval()
    decoder = Gemma3ForCausalLM.from_pretrained(tiny_decoder_dirs["gemma3"])
    # The backbone is the decoder's, unchanged; the head is new.
    torch.testing.assert_close(
        model.model.layers[1].self_attn.q_proj.weight, decoder.model.layers[1].self_attn.q_proj.weight, rtol=0, atol=0
    )
    head = model.classifier if model_class is GemmaEncoderForTokenClassification else model.qa_outputs
    with torch.no_grad():
        head.out_proj.bias.add_(0.25)  # a "trained" head, so reloading it is not vacuous
    input_ids, attention_mask, _ = ragged_batch()
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=attention_mask)
    model.save_pretrained(tmp_path)
    reloaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(reloaded) is model_class
    with torch.no_grad():
        got = reloaded(input_ids=input_ids, attention_mask=attention_mask)
    for key in expected.keys():
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------------
# PEFT
# ----------------------------------------------------------------------------------------------------------------------

PEFT_CASES = {
    "TOKEN_CLS": (GemmaEncoderForTokenClassification, AutoPeftModelForTokenClassification, "classifier"),
    "QUESTION_ANS": (GemmaEncoderForQuestionAnswering, AutoPeftModelForQuestionAnswering, "qa_outputs"),
}


def _outputs(model, input_ids, attention_mask) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask)
    return out.logits if "logits" in out else torch.stack([out.start_logits, out.end_logits])


@pytest.mark.parametrize("task_type", list(PEFT_CASES))
def test_peft_without_target_modules_trains_and_saves_the_head(task_type, tiny_decoder_dirs, tmp_path):
    model_class, auto_peft_class, head_name = PEFT_CASES[task_type]
    torch.manual_seed(0)
    model_class.from_decoder(tiny_decoder_dirs["gemma3"], num_labels=NUM_LABELS).save_pretrained(tmp_path / "base")
    model = model_class.from_pretrained(tmp_path / "base")
    peft_model = get_peft_model(model, LoraConfig(task_type=task_type, r=4, lora_alpha=8))

    adapted = sorted(name for name, module in peft_model.named_modules() if isinstance(module, LoraLayer))
    assert adapted == sorted(
        f"base_model.model.model.layers.{i}.self_attn.{proj}"
        for i in range(model.config.num_hidden_layers)
        for proj in ("q_proj", "v_proj")
    )
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any(f".{head_name}.modules_to_save.default.out_proj." in name for name in trainable)
    assert all("lora_" in name or "modules_to_save" in name for name in trainable)

    input_ids, attention_mask, _ = ragged_batch(left_padded_rows=())
    if task_type == "TOKEN_CLS":
        targets = {"labels": token_labels(attention_mask)}
    else:
        targets = {"start_positions": torch.tensor([1, 2, 0, 3]), "end_positions": torch.tensor([4, 5, 0, 3])}
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    for _ in range(3):  # through PeftModelFor<Task>.forward, which passes output_attentions=None
        peft_model(input_ids=input_ids, attention_mask=attention_mask, **targets).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    expected = _outputs(peft_model, input_ids, attention_mask)
    assert not torch.allclose(expected, _outputs(model_class.from_pretrained(tmp_path / "base"), input_ids,
                                                 attention_mask))  # fmt: skip
    peft_model.save_pretrained(tmp_path / "adapter")

    reloaded = auto_peft_class.from_pretrained(tmp_path / "adapter")
    assert isinstance(reloaded.get_base_model(), model_class)
    torch.testing.assert_close(_outputs(reloaded, input_ids, attention_mask), expected, atol=1e-6, rtol=1e-6)
    merged = reloaded.merge_and_unload()
    torch.testing.assert_close(_outputs(merged, input_ids, attention_mask), expected, atol=1e-5, rtol=0)

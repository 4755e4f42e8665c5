"""transformers' conventions in forward and config, and inputs that used to give silently wrong results: each must
now give the right answer or a clear error."""

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from conftest import random_batch, tiny_encoder_config

import gemma_encoder_hf.modeling
from gemma_encoder_hf import (
    GemmaEncoderConfig,
    GemmaEncoderForMaskedLM,
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderModel,
)

MODEL_CLASSES = [
    GemmaEncoderModel,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderForRanking,
    GemmaEncoderForMaskedLM,
]


def _model(model_class, **overrides):
    torch.manual_seed(0)
    return model_class(tiny_encoder_config(**overrides)).eval()


# ----------------------------------------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_unknown_keyword_argument_raises_naming_it(model_class):
    input_ids, attention_mask = random_batch(128)
    with pytest.raises(TypeError, match="attention_masks"):
        _model(model_class)(input_ids=input_ids, attention_masks=attention_mask)


@pytest.mark.parametrize("packed_execution", ["auto", "always"])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_output_attentions_returns_each_layers_attention_probabilities(model_class, implementation, packed_execution):
    model = _model(model_class, packed_execution=packed_execution)
    model.set_attn_implementation(implementation)
    input_ids, attention_mask = random_batch(128, seq=14)
    with torch.no_grad():
        plain = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        with_attentions = model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, output_attentions=True
        )
    config = model.config
    assert plain.attentions is None
    assert len(with_attentions.attentions) == config.num_hidden_layers
    for layer_type, weights in zip(config.layer_types, with_attentions.attentions):
        assert weights.shape == (3, config.num_attention_heads, 14, 14)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, config.num_attention_heads, 14))
        real = attention_mask.bool()
        # No real token attends to padding; a sliding layer attends within sliding_window // 2 on each side.
        assert weights[:, :, :, ~real[0]][0][:, real[0]].abs().max() == 0
        if layer_type == "sliding_attention":
            far = torch.arange(14)[:, None] - torch.arange(14)[None, :]
            assert weights[2][:, far.abs() > config.sliding_window // 2].abs().max() == 0
    # Returning the weights changes no output.
    torch.testing.assert_close(with_attentions.hidden_states, plain.hidden_states, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_return_dict_false_is_the_output_as_a_tuple(model_class):
    model = _model(model_class)
    input_ids, attention_mask = random_batch(128)
    labels = {
        GemmaEncoderModel: None,
        GemmaEncoderForSequenceClassification: torch.tensor([0, 1, 1]),
        GemmaEncoderForRanking: torch.tensor([1.0, 0.0, 0.0]),
        GemmaEncoderForMaskedLM: torch.where(attention_mask.bool(), input_ids, -100),
    }[model_class]
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, output_attentions=True)
    if labels is not None:
        model.config.ranking_loss = "pointwise"
        kwargs["labels"] = labels
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MNTP's first-token labels of the left-padded row
        as_dict = model(**kwargs)
        as_tuple = model(**kwargs, return_dict=False)
    # The ModelOutput's own order, every field that is set: (loss,) logits / states, hidden_states, attentions.
    expected = as_dict.to_tuple()
    assert len(as_tuple) == len(expected) == len(as_dict.keys())
    for actual, reference in zip(as_tuple, expected):
        if isinstance(reference, tuple):
            for a, r in zip(actual, reference):
                torch.testing.assert_close(a, r)
        else:
            torch.testing.assert_close(actual, reference)


def test_padding_positions_hold_zeros_on_both_paths():
    input_ids, attention_mask = random_batch(128, seq=14)
    outputs = {}
    for mode in ("never", "always"):
        model = _model(GemmaEncoderModel, packed_execution=mode)
        with torch.no_grad():
            outputs[mode] = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    for states in zip(
        (outputs["never"].last_hidden_state, *outputs["never"].hidden_states),
        (outputs["always"].last_hidden_state, *outputs["always"].hidden_states),
    ):
        padding = ~attention_mask.bool()
        assert states[0][padding].abs().max() == 0 and states[1][padding].abs().max() == 0
        torch.testing.assert_close(states[0], states[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mask_value", [2, -1])
def test_attention_mask_values_other_than_0_and_1_raise(mask_value):
    input_ids, attention_mask = random_batch(128)
    attention_mask[2, 3] = mask_value
    with pytest.raises(ValueError, match="only 0 .padding. and 1"):
        _model(GemmaEncoderModel)(input_ids=input_ids, attention_mask=attention_mask)


def test_boolean_and_float_attention_masks_are_the_integer_mask():
    model = _model(GemmaEncoderModel)
    input_ids, attention_mask = random_batch(128)
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        for mask in (attention_mask.bool(), attention_mask.float()):
            torch.testing.assert_close(model(input_ids=input_ids, attention_mask=mask).pooler_output, expected)


@pytest.mark.parametrize("model_class", [GemmaEncoderForSequenceClassification, GemmaEncoderForMaskedLM])
def test_labels_as_a_python_list_raise_a_type_error(model_class):
    input_ids, attention_mask = random_batch(128)
    with pytest.raises(TypeError, match="labels must be a torch.Tensor"):
        _model(model_class)(input_ids=input_ids, attention_mask=attention_mask, labels=[0, 1, 0])


def test_one_dimensional_input_ids_raise_naming_the_fix():
    with pytest.raises(ValueError, match=r"input_ids must have shape \(batch, sequence\).*input_ids\[None\]"):
        _model(GemmaEncoderModel)(input_ids=torch.tensor([2, 5, 6]))


# ----------------------------------------------------------------------------------------------------------------------
# Sequence classification: problem_type
# ----------------------------------------------------------------------------------------------------------------------


def test_float_labels_do_not_switch_the_config_to_multi_label():
    model = _model(GemmaEncoderForSequenceClassification, num_labels=2)
    input_ids, attention_mask = random_batch(128)
    multi_hot = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=multi_hot).loss
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    torch.testing.assert_close(loss, torch.nn.functional.binary_cross_entropy_with_logits(logits, multi_hot))
    assert model.config.problem_type is None
    # The next call with class ids is single-label classification, as before the float call.
    class_ids = torch.tensor([0, 1, 1])
    loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=class_ids).loss
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, class_ids))


@pytest.mark.parametrize("labels", [torch.tensor([True, False, True]), torch.tensor([1.0, 0.0, 1.0])])
def test_bool_or_float_class_ids_get_the_dtype_error(labels):
    model = _model(GemmaEncoderForSequenceClassification, num_labels=2)
    input_ids, attention_mask = random_batch(128)
    with pytest.raises(ValueError, match="needs integer class ids"):
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


# ----------------------------------------------------------------------------------------------------------------------
# Ranking
# ----------------------------------------------------------------------------------------------------------------------


def test_ranking_does_not_change_the_callers_config():
    config = tiny_encoder_config()
    ranker = GemmaEncoderForRanking(config)
    assert ranker.config.num_labels == 1 and ranker.score.out_proj.out_features == 1
    assert config.num_labels == 2
    assert GemmaEncoderForSequenceClassification(config).score.out_proj.out_features == 2


def test_ranking_refuses_several_labels(tiny_decoder_dirs):
    with pytest.raises(ValueError, match="one output, but the config asks for num_labels=3"):
        GemmaEncoderForRanking(tiny_encoder_config(num_labels=3))
    with pytest.raises(ValueError, match="num_labels=3"):
        GemmaEncoderForRanking.from_decoder(tiny_decoder_dirs["gemma3"], num_labels=3)
    assert GemmaEncoderForRanking(tiny_encoder_config(num_labels=1)).config.num_labels == 1


def test_listwise_negative_label_is_reported_as_such():
    model = _model(GemmaEncoderForRanking, ranking_loss="listwise", ranking_group_size=2)
    input_ids, attention_mask = random_batch(128, batch=4)
    # The group (1, -1) has a relevant document: the problem is the -1, not a missing relevant document.
    with pytest.raises(ValueError, match=r"graded relevances >= 0.*got \[-1.0\]"):
        model(input_ids=input_ids, attention_mask=attention_mask, labels=torch.tensor([1.0, -1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match=r"group\(s\) \[1\]"):
        model(input_ids=input_ids, attention_mask=attention_mask, labels=torch.tensor([1.0, 0.0, 0.0, 0.0]))


# ----------------------------------------------------------------------------------------------------------------------
# Masked LM (MNTP)
# ----------------------------------------------------------------------------------------------------------------------


def test_mntp_label_on_the_first_token_warns_instead_of_a_silent_zero_loss():
    model = _model(GemmaEncoderForMaskedLM)
    input_ids = torch.randint(3, 128, (1, 6), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(input_ids, -100)
    labels[0, 0] = input_ids[0, 0]
    with pytest.warns(UserWarning, match="first token of a text.*no previous token"):
        model(input_ids=input_ids, labels=labels)
    # The MLM objective predicts the token from its own position: the same label is a real target there.
    model.config.masked_lm_objective = "mlm"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output = model(input_ids=input_ids, labels=labels)
    assert output.logits.shape == (1, 128) and output.loss > 0


def test_mntp_first_real_token_of_a_left_padded_row_is_not_predicted_from_padding():
    model = _model(GemmaEncoderForMaskedLM)
    input_ids, attention_mask = random_batch(128)  # row 0 is left-padded: its first real token is at position 4
    first = int(attention_mask[0].argmax())
    labels = torch.full_like(input_ids, -100)
    labels[0, first] = input_ids[0, first]
    labels[0, first + 2] = input_ids[0, first + 2]
    with pytest.warns(UserWarning, match="1 masked-LM label"):
        output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert output.logits.shape == (1, 128)


# ----------------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "field"), [("atention", "attention"), ("poolng", "pooling"), ("num_hidden_layer", "num_hidden_layers")]
)
def test_misspelt_config_key_raises_naming_the_field(key, field):
    with pytest.raises(TypeError, match=f"unknown argument '{key}'; did you mean '{field}'"):
        GemmaEncoderConfig(**{key: "causal"})


def test_saved_config_with_keys_from_transformers_and_older_versions_loads(tmp_path):
    config = tiny_encoder_config(pooling="first")
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    # Keys transformers and other libraries write into config.json, or wrote in earlier versions.
    saved.update(
        architectures=["GemmaEncoderForSequenceClassification"],
        auto_map={"AutoConfig": "configuration_gemma_encoder.GemmaEncoderConfig"},
        transformers_version="4.57.0",
        torch_dtype="float32",
        use_cache=False,
        _name_or_path="somewhere",
        _commit_hash="abc",
        rope_scaling=None,
        norm_eps=1e-6,
        sliding_window_pattern=6,
        max_length=20,
    )
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = GemmaEncoderConfig.from_pretrained(tmp_path)
    assert loaded.pooling == "first" and loaded.hidden_size == 32

    saved["poolng"] = "last"
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(TypeError, match="did you mean 'pooling'"):
        GemmaEncoderConfig.from_pretrained(tmp_path)


def test_attention_pooling_heads_are_checked_only_for_attention_pooling():
    assert GemmaEncoderConfig(hidden_size=37, pooling="mean").hidden_size == 37
    with pytest.raises(ValueError, match="must divide hidden_size=37 for pooling='attention'"):
        GemmaEncoderConfig(hidden_size=37, pooling="attention")
    # A config switched to attention pooling after it was built is checked when the pooler is built.
    config = tiny_encoder_config(hidden_size=36, attention_pooling_num_heads=5)
    config.pooling = "attention"
    with pytest.raises(ValueError, match="must divide it"):
        GemmaEncoderForSequenceClassification(config)


def test_model_code_errors_speak_in_library_terms():
    """The shipped model code is used from Python (and from Hub repos): its messages name arguments and config
    fields, never the package's command-line interface."""
    for path in Path(gemma_encoder_hf.modeling.__file__).parent.glob("*.py"):
        cli_terms = re.findall(r"gemma-encoder [a-z]+|\s--[a-z][\w-]*", path.read_text())
        assert not cli_terms, (path.name, cli_terms)

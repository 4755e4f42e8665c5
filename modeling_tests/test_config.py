"""GemmaEncoderConfig: defaults, validation messages, serialisation."""

import pytest

from gemma_encoder_hf import GemmaEncoderConfig


def test_defaults_are_the_documented_encoder_knobs():
    config = GemmaEncoderConfig()
    assert config.model_type == "gemma_encoder"
    assert (config.attention, config.pooling, config.bidirectional_window) == ("bidirectional", "mean", "split")
    assert config.layer_types == ["full_attention"] * config.num_hidden_layers


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("attention", "sideways", "bidirectional"),
        ("pooling", "max", "attention"),
        ("attention_pooling_probe", "both", "kv"),
        ("ranking_loss", "lambdarank", "listwise"),
        ("bidirectional_window", "half", "split"),
        ("recurrence_combine", "max", "gate"),
        ("recurrence_reverse_weights", "shared", "separate"),
    ],
)
def test_unknown_choice_names_field_and_allowed_values(field, value, allowed):
    with pytest.raises(ValueError, match=rf"GemmaEncoderConfig\.{field}=.*{value}.*allowed values:.*{allowed}"):
        GemmaEncoderConfig(**{field: value})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pooling_k": 0}, "pooling_k"),
        ({"classifier_dropout": 1.5}, "classifier_dropout"),
        ({"hidden_dropout": -0.1}, "hidden_dropout"),
        ({"pooling": "attention", "attention_pooling_num_heads": 3}, "must divide hidden_size"),
        ({"ranking_loss": "listwise", "ranking_group_size": 1}, "ranking_group_size must be >= 2"),
        ({"num_hidden_layers": 2, "layer_types": ["full_attention"]}, "one entry per layer"),
        ({"num_hidden_layers": 1, "layer_types": ["local"]}, "layer_types"),
        ({"num_hidden_layers": 1, "layer_types": ["sliding_attention"], "sliding_window": None}, "sliding_window"),
        ({"num_experts": 4}, "top_k_experts and moe_intermediate_size"),
        ({"num_experts": 4, "top_k_experts": 5, "moe_intermediate_size": 8}, r"top_k_experts=5 .*\[1, 4\]"),
        ({"num_hidden_layers": 1, "layer_types": ["linear_attention"]}, "lru_width must be a number"),
        ({"num_hidden_layers": 1, "layer_types": ["linear_attention"], "lru_width": 6}, "multiple of num_attention"),
        ({"rope_rotary_dim": 7}, "must be even"),
        ({"vocab_size_per_layer_input": 0}, "vocab_size_per_layer_input"),
        ({"num_hidden_layers": 2, "bidirectional_layers": 0}, r"bidirectional_layers=0 .*\[1, 2\]"),
        ({"num_hidden_layers": 2, "bidirectional_layers": 3}, r"bidirectional_layers=3 .*\[1, 2\]"),
        ({"num_hidden_layers": 2, "bidirectional_layers": 1.5}, "whole number of layers"),
    ],
)
def test_invalid_values_raise_value_error_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GemmaEncoderConfig(**kwargs)


def test_round_trip_through_dict_keeps_every_knob(tmp_path):
    config = GemmaEncoderConfig(
        attention="causal", pooling="attention", attention_pooling_probe="kv", pooling_k=3, hidden_dropout=0.1,
        ranking_loss="pairwise", ranking_group_size=4, num_labels=3,
    )
    config.save_pretrained(tmp_path)
    loaded = GemmaEncoderConfig.from_pretrained(tmp_path)
    for name in ("attention", "pooling", "attention_pooling_probe", "pooling_k", "hidden_dropout", "ranking_loss",
                 "ranking_group_size", "num_labels", "layer_types"):
        assert getattr(loaded, name) == getattr(config, name), name


@pytest.mark.parametrize(
    "override, error, message",
    [
        ({"attention": "sideways"}, ValueError, r"GemmaEncoderConfig\.attention='sideways'"),
        ({"pooling": "max"}, ValueError, r"GemmaEncoderConfig\.pooling='max'"),
        ({"bidirectional_layers": 3}, ValueError, r"bidirectional_layers=3 .*\[1, 2\]"),
        ({"pooling": "attention", "attention_pooling_num_heads": 3}, ValueError, "must divide hidden_size"),
        ({"poolng": "last"}, TypeError, r"'poolng'; did you mean 'pooling'"),
    ],
)
def test_from_pretrained_overrides_are_checked_like_constructor_arguments(tmp_path, override, error, message):
    """transformers applies `from_pretrained(path, **overrides)` with setattr after the config is built, past the
    constructor's checks; a bad override must still be refused, not saved and run."""
    GemmaEncoderConfig(num_hidden_layers=2).save_pretrained(tmp_path)
    with pytest.raises(error, match=message):
        GemmaEncoderConfig.from_pretrained(tmp_path, **override)
    loaded, unused = GemmaEncoderConfig.from_pretrained(
        tmp_path, pooling="last", bidirectional_layers=1, device_map="cpu", return_unused_kwargs=True
    )
    assert (loaded.pooling, loaded.bidirectional_layers, unused) == ("last", 1, {"device_map": "cpu"})

"""Stand-in for transformers' `tests/utils/test_configuration_utils.py`, which the 5.25.0 sdist does not ship.

`ConfigTester.check_config_arguments_init` builds a config from `config_common_kwargs` and checks that every one of
them is stored. These are the attributes every `PreTrainedConfig` of transformers 5.25 accepts, each set to a value
other than its default.
"""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}

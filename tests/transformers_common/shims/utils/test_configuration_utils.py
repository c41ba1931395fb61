"""Stand-in for transformers' `tests/utils/test_configuration_utils.py`, which the PyPI sdist does not ship.

`ConfigTester.check_config_arguments_init` builds a config from these kwargs (every one a non-default value of a
`PreTrainedConfig` field) and checks that each is stored.
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

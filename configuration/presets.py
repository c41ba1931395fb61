"""Named configurations: the four architectures (the records of `fourfold.training.architectures`) at named sizes.

`get_config("decoder-small", vocab_size=8000)` returns a `FourfoldDecoderConfig`; any config field can be overridden.
Sizes follow the usual ladder (tiny is for tests and CI; small/base match BERT/GPT-2-small/T5-small proportions).
"""

from fourfold.modeling import FourfoldConfig
from fourfold.training.architectures import ARCHITECTURES

SIZES: dict[str, dict] = {
    # ~0.1M parameters: unit tests, CI, the README's two-minute demo.
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        vocab_size=1024,
    ),
    # ~5M parameters (+ embeddings): trains on a laptop CPU in minutes.
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=512),
    # BERT-base / GPT-2-small width and depth (~85M parameters + embeddings).
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=1024),
    # BERT-large / GPT-2-medium width and depth (~300M parameters + embeddings).
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, max_position_embeddings=1024),
}


def get_config(name: str, **overrides) -> FourfoldConfig:
    """The named configuration `"<architecture>-<size>"`, e.g. `"seq2seq-tiny"`, with `overrides` applied."""
    architecture, _, size = name.rpartition("-")
    if architecture not in ARCHITECTURES or size not in SIZES:
        raise ValueError(f"Unknown configuration {name!r}; choose one of {', '.join(preset_names())}.")
    return ARCHITECTURES[architecture].config_class(**{**SIZES[size], **overrides})


def preset_names() -> list[str]:
    return [f"{architecture}-{size}" for architecture in ARCHITECTURES for size in SIZES]

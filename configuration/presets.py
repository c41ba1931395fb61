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


# --------------------------------------------------------------------------------------------------------------------
# Flavours: the options under which a fourfold model computes what BERT, GPT-2, Llama or BART computes
# --------------------------------------------------------------------------------------------------------------------
#
# A flavour returns config keyword arguments, not a config: one flavour serves several architectures (`llama_like()`
# makes a decoder or a prefix LM) and combines with the sized presets, e.g.
#
#     get_config("decoder-small", **gpt2_like())
#     ARCHITECTURES["prefix-lm"].config_class(**llama_like(hidden_size=256, num_hidden_layers=4))
#
# Each spells out every option of `ARCHITECTURE_OPTIONS`, fourfold's defaults included, so a flavour does not drift
# when a default changes (`rope_parameters=None` means no rotary positions; the config class still records
# transformers' default there, unused). Sizes, dropout and token ids are left to the caller; `overrides` (any
# config field) win.

# The options that decide what a model computes (not how large it is): the ones a flavour sets and `fourfold
# convert` must agree with.
ARCHITECTURE_OPTIONS: tuple[str, ...] = (
    "norm_position",
    "norm_type",
    "norm_eps",
    "hidden_act",
    "mlp_type",
    "attention_bias",
    "mlp_bias",
    "position_embedding_type",
    "rope_parameters",
    "position_offset",
    "padding_aware_positions",
    "type_vocab_size",
    "embedding_norm",
    "scale_embeddings",
    "lm_head_bias",
    "tie_word_embeddings",
)


def _flavour(options: dict, overrides: dict) -> dict:
    """`options` with `overrides` applied; an override that is no config field is an error (a typo would be lost)."""
    from dataclasses import fields

    known = {f.name for record in ARCHITECTURES.values() for f in fields(record.config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a fourfold config field; see FourfoldConfig for the options.")
    return {**options, **overrides}


def bert_like(**overrides) -> dict:
    """BERT (`BertForMaskedLM`): post-norm LayerNorm (eps 1e-12), learned positions, two token types, a norm after
    the embeddings, a plain GELU MLP, biases everywhere, tied output embedding. (RoBERTa: add `position_offset=
    pad_token_id + 1, padding_aware_positions=True`.)"""
    return _flavour(
        dict(
            norm_position="post",
            norm_type="layernorm",
            norm_eps=1e-12,
            hidden_act="gelu",
            mlp_type="plain",
            attention_bias=True,
            mlp_bias=True,
            position_embedding_type="absolute",
            rope_parameters=None,
            position_offset=0,
            padding_aware_positions=False,
            type_vocab_size=2,
            embedding_norm=True,
            scale_embeddings=False,
            lm_head_bias=False,  # the causal / seq2seq projection's; the masked-LM head's decoder always has a bias
            tie_word_embeddings=True,
        ),
        overrides,
    )


def gpt2_like(**overrides) -> dict:
    """GPT-2 (`GPT2LMHeadModel`): pre-norm LayerNorm (eps 1e-5) with a final norm, learned positions, a plain
    `gelu_new` MLP, biases on every projection but the LM head, tied output embedding."""
    return _flavour(
        dict(
            norm_position="pre",
            norm_type="layernorm",
            norm_eps=1e-5,
            hidden_act="gelu_new",
            mlp_type="plain",
            attention_bias=True,
            mlp_bias=True,
            position_embedding_type="absolute",
            rope_parameters=None,
            position_offset=0,
            padding_aware_positions=False,
            type_vocab_size=0,
            embedding_norm=False,
            scale_embeddings=False,
            lm_head_bias=False,
            tie_word_embeddings=True,
        ),
        overrides,
    )


def llama_like(**overrides) -> dict:
    """Llama (`LlamaForCausalLM`, and fourfold's own defaults): pre-norm RMSNorm (eps 1e-6), rotary positions (theta
    10,000), a SwiGLU MLP, no biases, and, as `LlamaConfig` defaults to, an untied LM head."""
    return _flavour(
        dict(
            norm_position="pre",
            norm_type="rmsnorm",
            norm_eps=1e-6,
            hidden_act="silu",
            mlp_type="gated",
            attention_bias=False,
            mlp_bias=False,
            position_embedding_type="rope",
            rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
            position_offset=0,
            padding_aware_positions=False,
            type_vocab_size=0,
            embedding_norm=False,
            scale_embeddings=False,
            lm_head_bias=False,
            tie_word_embeddings=False,
        ),
        overrides,
    )


def bart_like(**overrides) -> dict:
    """BART (`BartForConditionalGeneration`): post-norm LayerNorm (eps 1e-5), learned positions offset by BART's two
    reserved rows, a norm after the embeddings, a plain GELU MLP, biases everywhere, unscaled embeddings, a bias on
    the tied LM head (`final_logits_bias`). For the seq2seq architecture."""
    return _flavour(
        dict(
            norm_position="post",
            norm_type="layernorm",
            norm_eps=1e-5,
            hidden_act="gelu",
            mlp_type="plain",
            attention_bias=True,
            mlp_bias=True,
            position_embedding_type="absolute",
            rope_parameters=None,
            position_offset=2,
            padding_aware_positions=False,
            type_vocab_size=0,
            embedding_norm=True,
            scale_embeddings=False,
            lm_head_bias=True,
            tie_word_embeddings=True,
        ),
        overrides,
    )

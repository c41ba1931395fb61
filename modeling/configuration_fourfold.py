"""Configuration classes for the four fourfold model types.

One typed base config, `FourfoldConfig`, holds every architecture option; the four subclasses only name the
model type (and the seq2seq one adds its decoder depth). The options are chosen so that BERT/RoBERTa, GPT-2,
Llama-family and BART checkpoints map onto a fourfold model by renaming weights alone.

Defaults are modern (pre-norm, RMSNorm, RoPE, SwiGLU, no biases); the `fourfold.configuration` presets pick sizes.
`validate_architecture` runs at construction and raises with the argument name and the fix.
"""

import copy
from typing import ClassVar, Literal, get_args

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

# The enumerated options: the field types below, and the choices their validators accept.
NormPosition = Literal["pre", "post"]
NormType = Literal["rmsnorm", "layernorm"]
MlpType = Literal["gated", "plain"]
PositionEmbeddingType = Literal["rope", "absolute"]
ClassifierPooling = Literal["cls", "mean"]
_NORM_POSITIONS: tuple[str, ...] = get_args(NormPosition)
_NORM_TYPES: tuple[str, ...] = get_args(NormType)
_MLP_TYPES: tuple[str, ...] = get_args(MlpType)
_POSITION_TYPES: tuple[str, ...] = get_args(PositionEmbeddingType)
_CLASSIFIER_POOLINGS: tuple[str, ...] = get_args(ClassifierPooling)


class FourfoldConfig(PreTrainedConfig):
    r"""Shared configuration of the four fourfold model types. Use a subclass, e.g. `FourfoldDecoderConfig`.

    Sizes:
        vocab_size: number of token ids; follows the tokenizer.
        hidden_size / num_hidden_layers / num_attention_heads: width, depth and heads of the (encoder) stack.
        num_key_value_heads: key/value heads; `None` means one per query head, fewer means grouped-query attention.
        head_dim: per-head width; `None` means `hidden_size // num_attention_heads`.
        intermediate_size: MLP width; `None` means 4 x hidden (plain MLP) or 8/3 x hidden rounded up to 64 (gated).
        max_position_embeddings: longest sequence; a hard limit with learned positions, a guide with RoPE.

    Block:
        norm_position: `"pre"` (x + f(norm(x)), GPT-2/Llama; adds a final norm) or `"post"` (norm(x + f(x)), BERT/BART).
        norm_type / norm_eps: `"rmsnorm"` or `"layernorm"`, and its epsilon.
        hidden_act / mlp_type: activation, and `"gated"` (act(gate(x)) * up(x): SwiGLU with silu, GeGLU with gelu)
            or `"plain"` (act(up(x))).
        attention_bias / mlp_bias: biases on the attention and MLP projections.
        qk_norm: an RMSNorm (eps `norm_eps`, a learned weight per channel) over each head's query and key, before
            the rotary embedding (OLMo 2, Qwen3; `q_norm` / `k_norm` in every attention, cross-attention included).

    Embeddings:
        position_embedding_type: `"rope"` (rotary, via transformers' rope utilities; see `rope_parameters`) or
            `"absolute"` (learned, like BERT/GPT-2/BART).
        position_offset: learned position `p` reads row `p + position_offset` (RoBERTa and BART reserve 2 rows).
        padding_aware_positions: when no `position_ids` are given, count positions over non-pad tokens only
            (`input_ids != pad_token_id`) and give pad tokens position -1, as RoBERTa does; `False`: 0, 1, 2, ...
        type_vocab_size: > 0 adds token-type (segment) embeddings, as in BERT.
        embedding_norm: a norm right after the embedding sum (BERT, BART).
        scale_embeddings: multiply token embeddings by sqrt(hidden_size).
        tie_word_embeddings: share the input embedding with the output projection.
        lm_head_bias: the language-modeling output projection has a bias (BART's `final_logits_bias`).

    Regularisation and init:
        hidden_dropout / attention_dropout / classifier_dropout: dropout on sublayer outputs, attention
            probabilities and classifier inputs (`None`: use `hidden_dropout`).
        initializer_range: std of the normal init of every linear and embedding weight.
        zero_init_residual: start each residual branch's output projection (attention `o_proj`, MLP `down_proj`) at
            zero, so every block starts as the identity (modded-nanogpt); `False`: the normal init like the rest.

    Training:
        loss_chunk_size: in training (labels given, gradients on) the language-modeling heads compute the output
            projection and cross-entropy this many tokens at a time and never hold full (tokens, vocab) logits;
            the masked-LM head also projects only the masked positions. The output's `logits` is then `None`.
            0 turns this off (full logits, as transformers' models return them). See `modeling/loss.py`.
    """

    # Output keys the Trainer drops in evaluation: the cache, under its name since transformers 5.24 and before.
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["cache", "past_key_values"]
    # HF tensor-parallel plan: column-split the input projections, row-split the output ones.
    base_model_tp_plan: ClassVar[dict[str, str]] = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }

    # Sizes
    vocab_size: int = 32000
    hidden_size: int = 512
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int = 2048

    # Block
    norm_position: NormPosition = "pre"
    norm_type: NormType = "rmsnorm"
    norm_eps: float = 1e-6
    hidden_act: str = "silu"
    mlp_type: MlpType = "gated"
    attention_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False

    # Embeddings
    position_embedding_type: PositionEmbeddingType = "rope"
    rope_parameters: dict | None = None
    position_offset: int = 0
    padding_aware_positions: bool = False
    type_vocab_size: int = 0
    embedding_norm: bool = False
    scale_embeddings: bool = False
    tie_word_embeddings: bool = True
    lm_head_bias: bool = False

    # Regularisation and init
    hidden_dropout: float | int = 0.0
    attention_dropout: float | int = 0.0
    classifier_dropout: float | int | None = None
    initializer_range: float = 0.02
    zero_init_residual: bool = False

    # Training
    loss_chunk_size: int = 512

    # Special tokens and generation
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    use_cache: bool = True

    def __post_init__(self, **kwargs):
        # Derived values live here and nowhere else.
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and self.num_attention_heads and self.hidden_size % self.num_attention_heads == 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.intermediate_size is None:
            if self.mlp_type == "gated":  # 8/3 x hidden keeps the parameter count of a 4 x plain MLP
                self.intermediate_size = 64 * -(-8 * self.hidden_size // (3 * 64))
            else:
                self.intermediate_size = 4 * self.hidden_size
        if self.position_embedding_type == "rope" and self.rope_parameters is None and "rope_theta" not in kwargs:
            self.rope_parameters = {"rope_type": "default", "rope_theta": 10_000.0}
        if self.mlp_type == "plain":  # no gate_proj to shard (the plan is not serialised)
            self.base_model_tp_plan = {k: v for k, v in self.base_model_tp_plan.items() if "gate_proj" not in k}
        super().__post_init__(**kwargs)
        # transformers runs `validate_*` methods only on configs decorated with huggingface_hub's `@strict`, which
        # this Hub-portable module may not import; so we run ours explicitly.
        self.validate_architecture()

    @property
    def final_norm(self) -> bool:
        """Pre-norm stacks end with a norm (the residual stream is never normalised otherwise); post-norm do not."""
        return self.norm_position == "pre"

    def validate_architecture(self):
        """Checks every architecture option; each error names the argument and the fix."""
        for name in _SIZES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a whole number >= 1 (a size of the model).")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps={self.norm_eps!r} must be > 0 (it keeps the norm's division finite).")
        if self.hidden_act not in ACT2FN:
            raise ValueError(
                f"hidden_act={self.hidden_act!r} is not an activation transformers knows; choose one of ACT2FN's, "
                "e.g. 'silu' (SwiGLU with mlp_type='gated'), 'gelu', 'gelu_new', 'relu'."
            )
        _choose("norm_position", self.norm_position, _NORM_POSITIONS)
        _choose("norm_type", self.norm_type, _NORM_TYPES)
        _choose("mlp_type", self.mlp_type, _MLP_TYPES)
        _choose("position_embedding_type", self.position_embedding_type, _POSITION_TYPES)
        if self.head_dim is None:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}: "
                "change one of them, or set head_dim explicitly."
            )
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads={self.num_key_value_heads} (grouped-query attention shares each key/value head "
                "among a whole number of query heads)."
            )
        if self.padding_aware_positions and (
            self.position_embedding_type != "absolute" or self.position_offset < 1 or self.pad_token_id is None
        ):
            raise ValueError(
                "padding_aware_positions=True gives pad tokens position -1: it needs position_embedding_type="
                "'absolute', position_offset >= 1 and a pad_token_id. Set those, or padding_aware_positions=False."
            )
        if self.head_dim < 1:
            raise ValueError(f"head_dim={self.head_dim} must be >= 1: raise hidden_size or set head_dim.")
        if self.position_embedding_type == "rope" and self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary position embeddings.")
        if not isinstance(self.loss_chunk_size, int) or self.loss_chunk_size < 0:
            raise ValueError(
                f"loss_chunk_size={self.loss_chunk_size!r} must be an int >= 0 (tokens per chunk of the training "
                "loss; 0 turns chunking off)."
            )
        for name in ("qk_norm", "zero_init_residual"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False.")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1).")


class FourfoldEncoderConfig(FourfoldConfig):
    """A bidirectional encoder (BERT-style), pretrained with masked LM. See `FourfoldConfig` for the options.

    Args:
        classifier_pooling: how the sequence-classification and multiple-choice heads summarise the final states:
            `"cls"`, the first token through a dense layer and tanh (BERT's pooler; a fresh layer on a token masked
            LM never trains), or `"mean"`, the mean over non-padding tokens with no weights (ModernBERT's option;
            the encoder recipe's choice, as it transfers better from a masked-LM checkpoint; fourfold's README,
            "Two commands", has the measurement).
    """

    model_type = "fourfold-encoder"

    classifier_pooling: ClassifierPooling = "cls"

    def validate_architecture(self):
        super().validate_architecture()
        _choose("classifier_pooling", self.classifier_pooling, _CLASSIFIER_POOLINGS)


class FourfoldDecoderConfig(FourfoldConfig):
    """A causal decoder (GPT-style), pretrained with causal LM. See `FourfoldConfig` for the options."""

    model_type = "fourfold-decoder"


class FourfoldPrefixLMConfig(FourfoldConfig):
    """One causal stack whose prefix (the prompt) attends bidirectionally. See `FourfoldConfig` for the options."""

    model_type = "fourfold-prefix-lm"


class FourfoldSeq2SeqConfig(FourfoldConfig):
    """An encoder-decoder (T5/BART-style). `num_hidden_layers` is the encoder depth.

    Args:
        num_decoder_layers: decoder depth; `None` means the same as the encoder.
        decoder_start_token_id: first decoder input; `None` means `pad_token_id` (T5's convention).

    The encoder, the decoder and the output projection always share one embedding matrix, so
    `tie_word_embeddings` must stay `True`.
    """

    model_type = "fourfold-seq2seq"
    attribute_map: ClassVar[dict[str, str]] = {"num_layers": "num_hidden_layers"}

    num_decoder_layers: int | None = None
    decoder_start_token_id: int | None = None
    is_encoder_decoder: bool = True

    def __post_init__(self, **kwargs):
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_hidden_layers
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = self.pad_token_id
        super().__post_init__(**kwargs)

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> PreTrainedConfig:
        """As transformers' (the KV cache sizes itself from `get_text_config(decoder=True)`), with the decoder's
        `num_hidden_layers` set to `num_decoder_layers`."""
        config = super().get_text_config(decoder=decoder, encoder=encoder)
        if decoder and not encoder and config.num_hidden_layers != self.num_decoder_layers:
            config = copy.deepcopy(config) if config is self else config
            config.num_hidden_layers = self.num_decoder_layers
        return config

    def validate_architecture(self):
        super().validate_architecture()
        if isinstance(self.num_decoder_layers, bool) or not isinstance(self.num_decoder_layers, int):
            raise ValueError(f"num_decoder_layers={self.num_decoder_layers!r} must be a whole number >= 1.")
        if self.num_decoder_layers < 1:
            raise ValueError(f"num_decoder_layers={self.num_decoder_layers} must be >= 1 (the decoder's depth).")
        if not self.tie_word_embeddings:
            raise ValueError(
                "fourfold-seq2seq shares one embedding between encoder, decoder and output projection: "
                "tie_word_embeddings must be True."
            )


# Sizes that must be whole numbers >= 1 (head_dim and intermediate_size once derived).
_SIZES = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "max_position_embeddings",
)


def _choose(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}.")

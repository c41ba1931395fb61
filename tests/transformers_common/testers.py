"""Tiny model testers for transformers' `ModelTesterMixin`, one per fourfold model type.

A tester builds a config and a batch of common inputs, as the testers in transformers' `tests/models/*` do. Each
model type is tested on a different block recipe, so the common tests cover every architecture option:
    encoder     BERT-like: post-norm LayerNorm, plain GELU MLP, learned positions, token types, embedding norm
    decoder     Llama-like: pre-norm RMSNorm, SwiGLU, RoPE, grouped-query attention
    prefix LM   Llama-like, with biases on the projections
    seq2seq     BART-like: post-norm LayerNorm, learned positions offset by 2, scaled embeddings, GQA
"""

import torch

from fourfold.modeling import (
    FourfoldDecoderConfig,
    FourfoldEncoderConfig,
    FourfoldPrefixLMConfig,
    FourfoldSeq2SeqConfig,
)

SIZES = {
    "vocab_size": 99,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
}
BERT_LIKE = {
    "norm_position": "post",
    "norm_type": "layernorm",
    "norm_eps": 1e-12,
    "mlp_type": "plain",
    "hidden_act": "gelu",
    "attention_bias": True,
    "mlp_bias": True,
    "position_embedding_type": "absolute",
    "embedding_norm": True,
}
RECIPES = {
    FourfoldEncoderConfig: {**BERT_LIKE, "num_key_value_heads": 4, "type_vocab_size": 2},
    FourfoldDecoderConfig: {},
    FourfoldPrefixLMConfig: {"attention_bias": True, "mlp_bias": True},
    FourfoldSeq2SeqConfig: {**BERT_LIKE, "position_offset": 2, "scale_embeddings": True, "num_decoder_layers": 2},
}


def ids_tensor(shape: tuple[int, ...], low: int, high: int) -> torch.Tensor:
    return torch.randint(low, high, shape, dtype=torch.long)


def attention_mask(batch_size: int, length: int) -> torch.Tensor:
    """Left padding on one row: the pattern batched generation produces."""
    mask = torch.ones(batch_size, length, dtype=torch.long)
    mask[0, :2] = 0
    return mask


class FourfoldModelTester:
    """Config + inputs for one fourfold model type.

    Args:
        decoder_inputs: add seq2seq decoder inputs.
        encoder_only: a seq2seq config for the classes that run only its encoder (`is_encoder_decoder=False`, as
            transformers' tester of T5EncoderModel sets it, so the common tests expect encoder-only outputs).
    """

    batch_size = 3
    seq_length = 7
    num_choices = 2
    num_labels = 3
    is_training = True

    def __init__(self, parent, config_class, decoder_inputs: bool = False, encoder_only: bool = False):
        self.parent = parent
        self.config_class = config_class
        self.config_kwargs = {**SIZES, **RECIPES[config_class]}
        if encoder_only:
            self.config_kwargs["is_encoder_decoder"] = False
        self.decoder_inputs = decoder_inputs
        for name, value in SIZES.items():
            setattr(self, name, value)
        self.encoder_seq_length = self.decoder_seq_length = self.key_length = self.seq_length

    def get_config(self):
        return self.config_class(**self.config_kwargs, num_labels=self.num_labels)

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        # ids >= 3 keep pad (0), bos (1) and eos (2) out of the inputs
        inputs = {
            "input_ids": ids_tensor((self.batch_size, self.seq_length), 3, self.vocab_size),
            "attention_mask": attention_mask(self.batch_size, self.seq_length),
        }
        if config.type_vocab_size:
            inputs["token_type_ids"] = ids_tensor((self.batch_size, self.seq_length), 0, config.type_vocab_size)
        if self.decoder_inputs:
            inputs["decoder_input_ids"] = ids_tensor((self.batch_size, self.seq_length), 3, self.vocab_size)
            inputs["decoder_attention_mask"] = torch.ones(self.batch_size, self.seq_length, dtype=torch.long)
        return config, inputs

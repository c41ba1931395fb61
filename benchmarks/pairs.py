"""The comparisons: each a fourfold model next to the transformers model it is meant to match, built at one `Size`.

Ours comes from the named flavours of `fourfold.configuration.presets` (`bert_like`, `gpt2_like`, `llama_like`,
`bart_like`: the options `fourfold convert` maps those checkpoints to) and the architecture records; the peer from
its own config class with the same numbers. T5 has no flavour (fourfold has no relative position bias, so `convert`
refuses T5): its closest options are spelled out here. `PAIRS` holds the six comparisons (`Pair`: the two builders,
the `Task` that decides the inputs, notes); `EXTRA_COMPARISONS` names the ours-vs-ours ones; `build_model` seeds
and places one side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from inputs import CAUSAL, MLM, PREFIX, SEQ2SEQ, Task
from settings import Settings, Size
from torch import nn
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from fourfold.configuration.presets import bart_like, bert_like, gpt2_like, llama_like
from fourfold.training.architectures import ARCHITECTURES

PAD, BOS, EOS = 0, 1, 2  # BART's own ids (0 bos, 1 pad, 2 eos) are in BART_IDS
BART_IDS = dict(bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2)


def _sizes(size: Size) -> dict:
    """The numbers both sides share, as fourfold config fields; dropout off on both sides."""
    return dict(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        max_position_embeddings=size.max_positions,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )


def _gated_ffn(hidden: int) -> int:
    """A gated MLP's width: 8/3 x hidden rounded up to 64 (the parameters of a 4 x plain MLP; fourfold's default)."""
    return 64 * -(-8 * hidden // (3 * 64))


def _ours(architecture: str, config_kwargs: dict) -> nn.Module:
    """The architecture's pretraining head (masked LM, causal LM or seq2seq LM) with this config."""
    record = ARCHITECTURES[architecture]
    return record.pretraining_head(record.config_class(**config_kwargs))


def ours_encoder(size: Size) -> nn.Module:
    return _ours("encoder", bert_like(**_sizes(size), intermediate_size=4 * size.hidden, pad_token_id=PAD))


def peer_bert(size: Size) -> nn.Module:
    config = BertConfig(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=4 * size.hidden,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=size.max_positions,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=PAD,
        tie_word_embeddings=True,
    )
    return BertForMaskedLM(config)


def ours_gpt2(size: Size) -> nn.Module:
    ids = dict(pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
    return _ours("decoder", gpt2_like(**_sizes(size), intermediate_size=4 * size.hidden, **ids))


def peer_gpt2(size: Size) -> nn.Module:
    config = GPT2Config(
        vocab_size=size.vocab,
        n_embd=size.hidden,
        n_layer=size.layers,
        n_head=size.heads,
        n_inner=4 * size.hidden,
        n_positions=size.max_positions,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    return GPT2LMHeadModel(config)


def _llama_kwargs(size: Size) -> dict:
    """Llama's options (fourfold's defaults), with the head tied on both sides of the comparison."""
    return llama_like(
        **_sizes(size),
        intermediate_size=_gated_ffn(size.hidden),
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )


def ours_llama(size: Size) -> nn.Module:
    return _ours("decoder", _llama_kwargs(size))


def peer_llama(size: Size) -> nn.Module:
    config = LlamaConfig(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        intermediate_size=_gated_ffn(size.hidden),
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=size.max_positions,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    return LlamaForCausalLM(config)


def ours_prefix_lm(size: Size) -> nn.Module:
    return _ours("prefix-lm", _llama_kwargs(size))


def ours_t5(size: Size) -> nn.Module:
    config = dict(
        **_sizes(size),
        norm_position="pre",
        norm_type="rmsnorm",
        norm_eps=1e-6,
        position_embedding_type="rope",  # T5: a learned relative position bias per head (no fourfold option)
        hidden_act="relu",
        mlp_type="plain",
        intermediate_size=4 * size.hidden,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        eos_token_id=1,
        decoder_start_token_id=PAD,
    )
    return _ours("seq2seq", config)


def peer_t5(size: Size) -> nn.Module:
    config = T5Config(
        vocab_size=size.vocab,
        d_model=size.hidden,
        d_kv=size.hidden // size.heads,
        d_ff=4 * size.hidden,
        num_layers=size.layers,
        num_decoder_layers=size.layers,
        num_heads=size.heads,
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        pad_token_id=PAD,
        eos_token_id=1,
        decoder_start_token_id=PAD,
    )
    return T5ForConditionalGeneration(config)


def ours_bart(size: Size) -> nn.Module:
    return _ours("seq2seq", bart_like(**_sizes(size), intermediate_size=4 * size.hidden, **BART_IDS))


def peer_bart(size: Size) -> nn.Module:
    config = BartConfig(
        vocab_size=size.vocab,
        d_model=size.hidden,
        encoder_layers=size.layers,
        decoder_layers=size.layers,
        encoder_attention_heads=size.heads,
        decoder_attention_heads=size.heads,
        encoder_ffn_dim=4 * size.hidden,
        decoder_ffn_dim=4 * size.hidden,
        activation_function="gelu",
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        max_position_embeddings=size.max_positions,
        scale_embedding=False,
        tie_word_embeddings=True,
        forced_eos_token_id=None,
        **BART_IDS,
    )
    return BartForConditionalGeneration(config)


@dataclass(frozen=True)
class Pair:
    """A comparison: our model and its peer, and the task that decides their inputs."""

    name: str
    ours: Callable[[Size], nn.Module]
    peer: Callable[[Size], nn.Module]
    peer_name: str
    task: Task
    generates: bool = True
    notes: str = ""


PAIRS: dict[str, Pair] = {
    pair.name: pair
    for pair in (
        Pair(
            "encoder",
            ours_encoder,
            peer_bert,
            "BertForMaskedLM",
            MLM,
            generates=False,
            notes="same architecture; BERT's MLM head (dense, GELU, LayerNorm, tied decoder with bias) on both",
        ),
        Pair(
            "gpt2",
            ours_gpt2,
            peer_gpt2,
            "GPT2LMHeadModel",
            CAUSAL,
            notes="same architecture (GPT-2 uses Conv1D = transposed linear)",
        ),
        Pair("llama", ours_llama, peer_llama, "LlamaForCausalLM", CAUSAL, notes="same architecture"),
        Pair(
            "prefix-lm",
            ours_prefix_lm,
            ours_llama,
            "fourfold decoder (llama-like)",
            PREFIX,
            notes="prefix_mask over the first half of every sequence (generation: the prompt); labels -100 there, "
            "for both sides",
        ),
        Pair(
            "t5",
            ours_t5,
            peer_t5,
            "T5ForConditionalGeneration",
            SEQ2SEQ,
            notes="T5 has a relative position bias (a float mask in every layer, computed in the first) and scales "
            "the tied LM head input by d**-0.5; ours uses RoPE; T5's attention is unscaled (folded into init)",
        ),
        Pair(
            "bart",
            ours_bart,
            peer_bart,
            "BartForConditionalGeneration",
            SEQ2SEQ,
            notes="same architecture (BART's final_logits_bias is a buffer, ours a parameter)",
        ),
    )
}

# Our llama-like decoder against itself, in another mode: the comparison's name -> what the tables call it.
EXTRA_COMPARISONS: dict[str, str] = {
    "bf16-vs-fp32": "ours llama: bf16 autocast vs fp32",
    "compile-vs-eager": "ours llama: compiled vs eager",
    "packing": "ours llama: packed vs padded (Moby-Dick paragraphs)",
}


def build_model(builder: Callable[[Size], nn.Module], size: Size, settings: Settings) -> nn.Module:
    """The model, seeded, in fp32 on the device, with the requested attention implementation on both sides."""
    torch.manual_seed(settings.seed)
    model = builder(size)
    model.set_attn_implementation(settings.attn)
    return model.to(settings.device)

"""The named flavours (`bert_like`, `gpt2_like`, `llama_like`, `bart_like`) compute what their transformers peers do.

For each, a tiny randomly initialised peer (BertForMaskedLM, GPT2LMHeadModel, LlamaForCausalLM,
BartForConditionalGeneration) is converted by `fourfold convert` (which checks logit parity itself). A model built
from the flavour alone (sizes and token ids from the test, none of convert's config) takes the converted weights and
must match the peer's logits on a padded random batch, and its config must agree with convert's on every option of
`ARCHITECTURE_OPTIONS`: that agreement is what lets `convert` build its configs from the flavours.
"""

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from fourfold.configuration import get_config
from fourfold.configuration.presets import ARCHITECTURE_OPTIONS, bart_like, bert_like, gpt2_like, llama_like
from fourfold.training.architectures import ARCHITECTURES
from fourfold.training.convert import convert

VOCAB, HIDDEN, LAYERS, HEADS, FFN, POSITIONS = 99, 32, 2, 4, 37, 64
TOLERANCE = 1e-5
# The same numbers in fourfold's spelling; each case adds its token ids (and any size its peer has beyond these).
SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    intermediate_size=FFN,
    max_position_embeddings=POSITIONS,
)


@dataclass(frozen=True)
class Case:
    """A flavour, the architecture it is built as, its peer, and what the fourfold config needs beyond `SIZES`."""

    flavour: Callable[..., dict]
    architecture: str
    peer: Callable[[], PreTrainedModel]
    extra: dict


def _bert() -> PreTrainedModel:
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=POSITIONS,
    )
    return BertForMaskedLM(config)


def _gpt2() -> PreTrainedModel:
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=HIDDEN,
        n_layer=LAYERS,
        n_head=HEADS,
        n_inner=FFN,
        n_positions=POSITIONS,
        bos_token_id=1,
        eos_token_id=2,
    )
    return GPT2LMHeadModel(config)


def _llama() -> PreTrainedModel:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        intermediate_size=FFN,
        max_position_embeddings=POSITIONS,
    )
    return LlamaForCausalLM(config)


def _bart() -> PreTrainedModel:
    config = BartConfig(
        vocab_size=VOCAB,
        d_model=HIDDEN,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=FFN,
        decoder_ffn_dim=FFN,
        max_position_embeddings=POSITIONS,
    )
    return BartForConditionalGeneration(config)


CASES = {
    "bert": Case(bert_like, "encoder", _bert, dict(pad_token_id=0)),
    "gpt2": Case(gpt2_like, "decoder", _gpt2, dict(pad_token_id=None, bos_token_id=1, eos_token_id=2)),
    "llama": Case(llama_like, "decoder", _llama, dict(num_key_value_heads=2, pad_token_id=None)),
    "bart": Case(
        bart_like, "seq2seq", _bart, dict(bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2)
    ),
}


@pytest.fixture(params=list(CASES))
def case(request) -> Case:
    return CASES[request.param]


def _inputs(peer: PreTrainedModel) -> dict:
    """Two rows of 9 tokens, the second with 3 pads (right); no real token is the pad id."""
    pad = peer.config.pad_token_id if peer.config.pad_token_id is not None else 0
    input_ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    inputs = dict(input_ids=input_ids.masked_fill(attention_mask == 0, pad), attention_mask=attention_mask)
    if peer.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = input_ids[:, :5]
    return inputs


def test_flavour_matches_its_peer_and_convert(case):
    torch.manual_seed(0)
    peer = case.peer().eval()
    converted = convert(peer)  # raises unless its own logits match the peer's
    record = ARCHITECTURES[case.architecture]
    ours = record.pretraining_head(record.config_class(**case.flavour(**SIZES, **case.extra))).eval()
    ours.load_state_dict(converted.state_dict())  # strict: the flavour builds exactly the converted model's weights

    inputs = _inputs(peer)
    with torch.no_grad():
        expected, actual = peer(**inputs).logits, ours(**inputs).logits
    real = inputs["attention_mask"].bool() if not peer.config.is_encoder_decoder else slice(None)
    assert (expected - actual)[real].abs().max().item() <= TOLERANCE

    for option in ARCHITECTURE_OPTIONS:
        assert getattr(ours.config, option) == getattr(converted.config, option), option


def test_flavour_spells_out_every_architecture_option(case):
    assert set(ARCHITECTURE_OPTIONS) <= set(case.flavour())


def test_overrides_win_and_typos_are_refused():
    assert llama_like(tie_word_embeddings=True)["tie_word_embeddings"] is True
    assert bert_like(hidden_size=48)["hidden_size"] == 48
    with pytest.raises(ValueError, match="norm_postion"):
        gpt2_like(norm_postion="post")


def test_flavours_compose_with_the_sized_presets():
    config = get_config("prefix-lm-tiny", **gpt2_like())
    assert config.model_type == "fourfold-prefix-lm" and config.position_embedding_type == "absolute"
    assert config.hidden_size == 64 and config.hidden_act == "gelu_new"


def test_each_call_returns_fresh_options():
    first = llama_like()
    first["rope_parameters"]["rope_theta"] = 1.0
    assert llama_like()["rope_parameters"]["rope_theta"] == 10_000.0

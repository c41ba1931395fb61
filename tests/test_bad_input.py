"""Misuse fails early with an error that names the argument and says what to do."""

import pytest
import torch
from conftest import tiny_config

from fourfold import modeling
from fourfold.modeling import (
    FourfoldDecoderConfig,
    FourfoldEncoderConfig,
    FourfoldPrefixLMConfig,
    FourfoldSeq2SeqConfig,
)

IDS = torch.tensor([[5, 6, 7, 8, 9]])


@pytest.mark.parametrize(
    ("model_class", "wrong_config", "expected_config"),
    [
        (modeling.FourfoldEncoderForMaskedLM, "decoder", "FourfoldEncoderConfig"),
        (modeling.FourfoldDecoderForCausalLM, "encoder", "FourfoldDecoderConfig"),
        (modeling.FourfoldPrefixLMForCausalLM, "decoder", "FourfoldPrefixLMConfig"),
        (modeling.FourfoldSeq2SeqForConditionalGeneration, "prefix-lm", "FourfoldSeq2SeqConfig"),
        (modeling.FourfoldDecoderModel, "seq2seq", "FourfoldDecoderConfig"),
    ],
)
def test_head_refuses_another_model_types_config(model_class, wrong_config, expected_config):
    with pytest.raises(ValueError, match=expected_config):
        model_class(tiny_config(wrong_config))


def test_prefix_mask_of_the_wrong_shape():
    model = modeling.FourfoldPrefixLMForCausalLM(tiny_config("prefix-lm"))
    for prefix_mask in (torch.ones(2, 5), torch.ones(1, 6), torch.ones(5)):
        with pytest.raises(ValueError, match=r"prefix_mask has shape .*expected \(batch=1, length <= 5\)"):
            model(input_ids=IDS, prefix_mask=prefix_mask)


@pytest.mark.parametrize("architecture", ["decoder", "encoder"])
def test_prefix_mask_given_to_a_stack_without_a_prefix(architecture):
    model = modeling.FourfoldDecoderModel if architecture == "decoder" else modeling.FourfoldEncoderModel
    with pytest.raises(ValueError, match="prefix_mask is only for the prefix LM"):
        model(tiny_config(architecture))(input_ids=IDS, prefix_mask=torch.ones_like(IDS))


@pytest.mark.parametrize("bad_id", [101, 5000, -1])
def test_token_ids_outside_the_vocabulary(architecture, bad_id):
    model = modeling.FourfoldEncoderModel if architecture == "encoder" else modeling.FourfoldDecoderModel
    if architecture in ("prefix-lm", "seq2seq"):
        model = {"prefix-lm": modeling.FourfoldPrefixLMModel, "seq2seq": modeling.FourfoldSeq2SeqModel}[architecture]
    inputs = {"input_ids": torch.tensor([[5, bad_id, 7]])}
    if architecture == "seq2seq":
        inputs["decoder_input_ids"] = torch.tensor([[0, 4]])
    with pytest.raises(ValueError, match=r"input_ids .*outside the vocabulary \[0, 101\).*resize_token_embeddings"):
        model(tiny_config(architecture))(**inputs)


def test_seq2seq_decoder_ids_outside_the_vocabulary():
    model = modeling.FourfoldSeq2SeqForConditionalGeneration(tiny_config("seq2seq"))
    with pytest.raises(ValueError, match="resize_token_embeddings"):
        model(input_ids=IDS, decoder_input_ids=torch.tensor([[0, 101]]))


def test_sequence_longer_than_learned_positions():
    config = tiny_config("decoder", position_embedding_type="absolute", max_position_embeddings=8)
    model = modeling.FourfoldDecoderForCausalLM(config)
    model(input_ids=torch.full((1, 8), 5))  # exactly at the limit is fine
    with pytest.raises(ValueError, match="Sequence length 9 exceeds max_position_embeddings=8"):
        model(input_ids=torch.full((1, 9), 5))


def test_sequence_longer_than_learned_positions_during_generation():
    config = tiny_config("decoder", position_embedding_type="absolute", max_position_embeddings=8)
    model = modeling.FourfoldDecoderForCausalLM(config)
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        model.generate(input_ids=torch.full((1, 6), 5), max_new_tokens=5, do_sample=False)


def test_flash_attention_cannot_apply_the_prefix_mask():
    config = tiny_config("prefix-lm")
    model = modeling.FourfoldPrefixLMForCausalLM(config)
    model.config._attn_implementation = "flash_attention_2"  # flash-attn is not installed; set it directly
    with pytest.raises(ValueError, match=r"attn_implementation='flash_attention_2'.*prefix-LM mask.*'sdpa'"):
        model(input_ids=IDS, prefix_mask=torch.tensor([[1, 1, 0, 0, 0]]))


@pytest.mark.parametrize(
    ("config_class", "options", "message"),
    [
        (FourfoldDecoderConfig, {"norm_type": "foo"}, r"norm_type='foo' is not supported; choose one of 'rmsnorm'"),
        (FourfoldEncoderConfig, {"norm_position": "middle"}, "norm_position='middle'"),
        (FourfoldDecoderConfig, {"mlp_type": "moe"}, "mlp_type='moe'"),
        (FourfoldPrefixLMConfig, {"position_embedding_type": "alibi"}, "position_embedding_type='alibi'"),
        (
            FourfoldDecoderConfig,
            {"num_attention_heads": 4, "num_key_value_heads": 3},
            "num_attention_heads=4 must be a multiple of num_key_value_heads=3",
        ),
        (
            FourfoldEncoderConfig,
            {"hidden_size": 65, "num_attention_heads": 4},
            "hidden_size=65 is not divisible by num_attention_heads=4.*head_dim",
        ),
        (FourfoldDecoderConfig, {"hidden_size": 12, "num_attention_heads": 4}, "head_dim=3 must be even"),
        (FourfoldDecoderConfig, {"hidden_dropout": 1.0}, r"hidden_dropout=1.0 must be in \[0, 1\)"),
        (FourfoldSeq2SeqConfig, {"tie_word_embeddings": False}, "tie_word_embeddings must be True"),
    ],
)
def test_invalid_config_options(config_class, options, message):
    with pytest.raises(ValueError, match=message):
        config_class(**options)


def test_labels_inside_the_prefix():
    model = modeling.FourfoldPrefixLMForCausalLM(tiny_config("prefix-lm"))
    prefix_mask = torch.tensor([[1, 1, 1, 0, 0]])
    with pytest.raises(ValueError, match=r"labels mark tokens inside the prefix \(prefix_mask == 1\).*-100"):
        model(input_ids=IDS, prefix_mask=prefix_mask, labels=IDS)
    allowed = IDS.masked_fill(prefix_mask == 1, -100)
    assert torch.isfinite(model(input_ids=IDS, prefix_mask=prefix_mask, labels=allowed).loss)


def test_seq2seq_forward_needs_labels_or_decoder_input_ids():
    for model_class in (modeling.FourfoldSeq2SeqForConditionalGeneration, modeling.FourfoldSeq2SeqModel):
        with pytest.raises(ValueError, match=r"decoder_input_ids.*labels"):
            model_class(tiny_config("seq2seq"))(input_ids=IDS)


def test_token_type_ids_without_token_type_embeddings():
    model = modeling.FourfoldEncoderModel(tiny_config("encoder"))
    with pytest.raises(ValueError, match=r"token_type_ids .*type_vocab_size"):
        model(input_ids=IDS, token_type_ids=torch.zeros_like(IDS))


def test_input_ids_and_inputs_embeds_together():
    model = modeling.FourfoldDecoderModel(tiny_config("decoder"))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(input_ids=IDS, inputs_embeds=torch.zeros(1, 5, 64))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()


# --------------------------------------------------------------------------------------------------------------------
# Labels and config sizes: a ValueError naming the argument (not an index error deep in a loss or an embedding)
# --------------------------------------------------------------------------------------------------------------------

LABEL_CASES = [
    ("decoder", "FourfoldDecoderForCausalLM", {"labels": torch.tensor([[5, 6, 7, 8, 101]])}, r"labels contain \[101\]"),
    ("decoder", "FourfoldDecoderForCausalLM", {"labels": torch.tensor([[5, 6, 7]])}, r"labels have shape \(1, 3\)"),
    ("encoder", "FourfoldEncoderForMaskedLM", {"labels": torch.tensor([[-100, 500, -100, -100, 5]])}, r"\[500\]"),
    ("encoder", "FourfoldEncoderForTokenClassification", {"labels": torch.tensor([[0, 1, 2, 3, -5]])}, r"\[-5, 3\]"),
    ("encoder", "FourfoldEncoderForSequenceClassification", {"labels": torch.tensor([7])}, r"outside \[0, 3\)"),
    ("encoder", "FourfoldEncoderForSequenceClassification", {"labels": torch.tensor([0, 1])}, "one label per sequence"),
    ("decoder", "FourfoldDecoderForSequenceClassification", {"labels": torch.tensor([3])}, r"\[3\]"),
    # Shifted into decoder_input_ids, an out-of-range label used to be reported as a bad input id.
    ("seq2seq", "FourfoldSeq2SeqForConditionalGeneration", {"labels": torch.tensor([[5, 999]])}, "labels contain"),
]


@pytest.mark.parametrize(("architecture", "head", "kwargs", "message"), LABEL_CASES, ids=[c[1] for c in LABEL_CASES])
def test_bad_labels_are_named(architecture, head, kwargs, message):
    model = getattr(modeling, head)(tiny_config(architecture, num_labels=3))
    for mode in ("eval", "train"):  # the plain path and the training fast path (chunked loss, sparse MLM head)
        getattr(model, mode)()
        with pytest.raises(ValueError, match=message):
            model(input_ids=IDS, **kwargs)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 0}, "hidden_size=0 must be a whole number >= 1"),
        ({"num_key_value_heads": 0}, "num_key_value_heads=0 must be a whole number >= 1"),
        ({"num_hidden_layers": -1}, "num_hidden_layers=-1"),
        ({"intermediate_size": 2.5}, "intermediate_size=2.5"),
        ({"hidden_act": "nope"}, "hidden_act='nope' is not an activation"),
        ({"norm_eps": 0}, "norm_eps=0 must be > 0"),
        ({"head_dim": 0}, "head_dim=0 must be >= 1"),
    ],
)
def test_config_sizes_and_activation_are_checked(overrides, message):
    for architecture in ("encoder", "seq2seq"):
        with pytest.raises(ValueError, match=message):
            tiny_config(architecture, **overrides)
    with pytest.raises(ValueError, match="num_decoder_layers=0 must be >= 1"):
        tiny_config("seq2seq", num_decoder_layers=0)

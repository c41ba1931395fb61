"""`fourfold convert`: logit, hidden-state and generation parity with the transformers originals.

Every source model is a tiny randomly initialised transformers model built here (no Hub access). Parity is checked
in float32, eval mode, on padded batches: max abs difference <= 1e-5 for logits and every hidden state, identical
greedy and beam-search output with the KV cache.
"""

import json

import pytest
import torch
import transformers
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    BertTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    RobertaConfig,
    RobertaForMaskedLM,
    T5Config,
    T5ForConditionalGeneration,
)

from fourfold.modeling import (
    FourfoldDecoderForCausalLM,
    FourfoldEncoderForMaskedLM,
    FourfoldEncoderModel,
    FourfoldPrefixLMForCausalLM,
    FourfoldSeq2SeqForConditionalGeneration,
)
from fourfold.training.cli import main as cli_main
from fourfold.training.convert import ConversionError, convert, main

TOLERANCE = 1e-5
VOCAB = 99
SIZES = dict(vocab_size=VOCAB, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)


def max_diff(expected, actual, keep: torch.Tensor | None = None) -> float:
    """Max abs difference of logits and every hidden state; `keep` selects positions (B, T)."""
    pairs = [(expected.logits, actual.logits)]
    for name in ("hidden_states", "encoder_hidden_states", "decoder_hidden_states"):
        if getattr(expected, name, None) is not None:
            assert len(getattr(expected, name)) == len(getattr(actual, name)), name
            pairs += list(zip(getattr(expected, name), getattr(actual, name), strict=True))
    return max(((e - a)[keep] if keep is not None else e - a).abs().max().item() for e, a in pairs)


def batch(pad_token_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of 9 tokens; the second has 3 pads (right, or left with `left`). No real token is the pad id."""
    input_ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(input_ids)
    if left:
        attention_mask[1, :3] = 0
    else:
        attention_mask[1, 6:] = 0
    return input_ids.masked_fill(attention_mask == 0, pad_token_id), attention_mask


def check_generate(source, converted, **inputs) -> None:
    for options in (dict(do_sample=False), dict(do_sample=False, num_beams=3)):
        expected = source.generate(**inputs, **options, max_new_tokens=6, use_cache=True)
        actual = converted.generate(**inputs, **options, max_new_tokens=6, use_cache=True)
        assert torch.equal(expected, actual), options


def tiny_bert(**overrides) -> BertForMaskedLM:
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(hidden_size=32, max_position_embeddings=64, **SIZES, **overrides)).eval()


def tiny_roberta() -> RobertaForMaskedLM:
    torch.manual_seed(0)
    config = RobertaConfig(hidden_size=32, max_position_embeddings=66, pad_token_id=1, type_vocab_size=1, **SIZES)
    return RobertaForMaskedLM(config).eval()


def tiny_gpt2(**overrides) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=32, n_layer=2, n_head=4, n_inner=37, vocab_size=VOCAB, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return GPT2LMHeadModel(config).eval()


def tiny_llama(tie: bool = True, kv_heads: int = 2, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        num_key_value_heads=kv_heads,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **{"rope_parameters": {"rope_type": "default", "rope_theta": 500.0}, **overrides},
        **SIZES,
    )
    return LlamaForCausalLM(config).eval()


def tiny_bart(scale_embedding: bool = False, **overrides) -> BartForConditionalGeneration:
    torch.manual_seed(0)
    sizes = dict(encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37)
    config = BartConfig(
        d_model=32,
        encoder_layers=2,
        decoder_layers=3,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        scale_embedding=scale_embedding,
        **{**sizes, **overrides},
    )
    model = BartForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_()  # zero at init: make it count
    return model


# --------------------------------------------------------------------------------------------------------------------
# Parity per source architecture
# --------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_bert_masked_lm_parity():
    source = tiny_bert()
    converted = convert(source)
    assert isinstance(converted, FourfoldEncoderForMaskedLM)
    input_ids, attention_mask = batch(pad_token_id=0)
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 4:] = 1
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    diff = max_diff(source(**inputs, output_hidden_states=True), converted(**inputs, output_hidden_states=True))
    print(f"bert max abs diff {diff:.2e}")
    assert diff <= TOLERANCE


@torch.no_grad()
def test_bert_base_model_becomes_encoder_model(tmp_path):
    torch.manual_seed(0)
    source = BertModel(BertConfig(hidden_size=32, max_position_embeddings=64, **SIZES)).eval()
    converted = convert(source, str(tmp_path))
    assert isinstance(converted, FourfoldEncoderModel)
    # fourfold's pooler belongs to the classification head: BertModel's is dropped, and the record says so
    dropped = json.loads((tmp_path / "conversion.json").read_text())["dropped_weights"]
    assert dropped == ["pooler.dense.weight", "pooler.dense.bias"]
    input_ids, attention_mask = batch(pad_token_id=0)
    expected = source(input_ids, attention_mask=attention_mask).last_hidden_state
    actual = converted(input_ids, attention_mask=attention_mask).last_hidden_state
    assert (expected - actual).abs().max() <= TOLERANCE


@torch.no_grad()
@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_roberta_masked_lm_parity_with_padding_aware_positions(left):
    source = tiny_roberta()
    converted = convert(source)
    assert converted.config.padding_aware_positions and converted.config.position_offset == 2
    input_ids, attention_mask = batch(pad_token_id=1, left=left)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    # every position, pads included: RoBERTa's positions (pads at padding_idx) are reproduced exactly
    diff = max_diff(source(**inputs, output_hidden_states=True), converted(**inputs, output_hidden_states=True))
    print(f"roberta max abs diff {diff:.2e}")
    assert diff <= TOLERANCE


@torch.no_grad()
def test_gpt2_parity_and_generation():
    source = tiny_gpt2()
    converted = convert(source)
    assert isinstance(converted, FourfoldDecoderForCausalLM)
    input_ids, attention_mask = batch(pad_token_id=0, left=True)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    diff = max_diff(
        source(**inputs, output_hidden_states=True),
        converted(**inputs, output_hidden_states=True),
        keep=attention_mask.bool(),
    )
    print(f"gpt2 max abs diff {diff:.2e}")
    assert diff <= TOLERANCE
    check_generate(source, converted, **inputs)


@torch.no_grad()
def test_gpt2_as_prefix_lm_equals_gpt2_without_prefix():
    source = tiny_gpt2()
    converted = convert(source, architecture="prefix-lm")
    assert isinstance(converted, FourfoldPrefixLMForCausalLM)
    input_ids, attention_mask = batch(pad_token_id=0, left=True)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    diff = max_diff(
        source(**inputs, output_hidden_states=True),
        converted(**inputs, prefix_mask=None, output_hidden_states=True),
        keep=attention_mask.bool(),
    )
    assert diff <= TOLERANCE
    # generate() makes the prompt the prefix by default; an empty prefix is GPT-2's causal decoding
    expected = source.generate(**inputs, do_sample=False, max_new_tokens=6)
    actual = converted.generate(**inputs, prefix_mask=torch.zeros_like(input_ids), do_sample=False, max_new_tokens=6)
    assert torch.equal(expected, actual)


@torch.no_grad()
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_llama_parity_and_generation(tie, kv_heads):
    source = tiny_llama(tie=tie, kv_heads=kv_heads)
    converted = convert(source)
    assert converted.config.num_key_value_heads == kv_heads
    assert (converted.lm_head.weight is converted.model.embed_tokens.weight) == tie
    input_ids, attention_mask = batch(pad_token_id=0, left=True)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    diff = max_diff(
        source(**inputs, output_hidden_states=True),
        converted(**inputs, output_hidden_states=True),
        keep=attention_mask.bool(),
    )
    print(f"llama tie={tie} kv_heads={kv_heads} max abs diff {diff:.2e}")
    assert diff <= TOLERANCE
    check_generate(source, converted, **inputs)
    prefix_lm = convert(source, architecture="prefix-lm")
    assert max_diff(source(**inputs), prefix_lm(**inputs, prefix_mask=None), keep=attention_mask.bool()) <= TOLERANCE


@torch.no_grad()
def test_llama3_scaled_rope_and_explicit_head_dim():
    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    }
    source = tiny_llama(kv_heads=1, head_dim=16, rope_parameters=rope)
    converted = convert(source)
    assert converted.config.rope_parameters == rope and converted.config.head_dim == 16
    input_ids, attention_mask = batch(pad_token_id=0, left=True)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    assert max_diff(source(**inputs), converted(**inputs), keep=attention_mask.bool()) <= TOLERANCE


@torch.no_grad()
def test_mistral_without_sliding_window_converts_and_with_it_is_refused():
    torch.manual_seed(0)
    config = MistralConfig(
        hidden_size=32, num_key_value_heads=2, max_position_embeddings=64, sliding_window=None, **SIZES
    )
    source = MistralForCausalLM(config).eval()
    input_ids, attention_mask = batch(pad_token_id=0, left=True)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    assert max_diff(source(**inputs), convert(source)(**inputs), keep=attention_mask.bool()) <= TOLERANCE
    source.config.sliding_window = 4
    with pytest.raises(ConversionError, match="sliding_window=4"):
        convert(source)


@torch.no_grad()
@pytest.mark.parametrize("scale_embedding", [False, True], ids=["unscaled", "scaled"])
def test_bart_parity_and_generation(scale_embedding):
    source = tiny_bart(scale_embedding=scale_embedding)
    converted = convert(source)
    assert isinstance(converted, FourfoldSeq2SeqForConditionalGeneration)
    assert converted.config.num_decoder_layers == 3 and converted.config.lm_head_bias
    input_ids, attention_mask = batch(pad_token_id=1)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=input_ids[:, :5])
    diff = max_diff(source(**inputs, output_hidden_states=True), converted(**inputs, output_hidden_states=True))
    print(f"bart scale_embedding={scale_embedding} max abs diff {diff:.2e}")
    assert diff <= TOLERANCE
    check_generate(source, converted, input_ids=input_ids, attention_mask=attention_mask)


# --------------------------------------------------------------------------------------------------------------------
# Saving, loading and the command line
# --------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize(
    "make_source, auto_class",
    [(tiny_roberta, AutoModelForMaskedLM), (tiny_llama, AutoModelForCausalLM), (tiny_bart, AutoModelForSeq2SeqLM)],
    ids=["roberta", "llama", "bart"],
)
def test_round_trip_through_save_and_load(tmp_path, make_source, auto_class):
    source = make_source()
    converted = convert(source, str(tmp_path))
    record = json.loads((tmp_path / "conversion.json").read_text())
    assert record["source_class"] == type(source).__name__ and record["verified_max_abs_diff"] <= TOLERANCE
    reloaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(reloaded).__name__ == type(converted).__name__
    input_ids, attention_mask = batch(pad_token_id=1)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    if source.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = input_ids[:, :4]
    assert torch.equal(reloaded(**inputs).logits, converted(**inputs).logits)


def test_cli_saves_the_source_tokenizer(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]))
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path / "bert")
    tiny_bert().save_pretrained(tmp_path / "bert")
    assert main([str(tmp_path / "bert"), str(tmp_path / "out")]) == 0
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer("hello world")["input_ids"] == [2, 5, 6, 3]
    converted = AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    assert converted.config.pad_token_id == 0 and converted.config.type_vocab_size == 2


@torch.no_grad()
def test_cli_converts_a_local_folder(tmp_path):
    source = tiny_gpt2()
    source.save_pretrained(tmp_path / "gpt2")
    assert cli_main(["convert", str(tmp_path / "gpt2"), str(tmp_path / "out"), "--as", "prefix-lm"]) == 0
    record = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert record["base_model"] == str(tmp_path / "gpt2") and record["architecture"] == "prefix-lm"
    converted = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(converted).__name__ == "FourfoldPrefixLMForCausalLM"
    assert (tmp_path / "out" / "modeling_fourfold.py").exists()  # the Hub code travels with the checkpoint
    card = ModelCard.load(tmp_path / "out" / "README.md")  # the card names what the weights came from
    assert "fourfold-prefix-lm" in card.data.tags and "gpt2" in card.text.lower()
    input_ids, attention_mask = batch(pad_token_id=0, left=True)
    expected = source(input_ids, attention_mask=attention_mask).logits
    actual = converted(input_ids, attention_mask=attention_mask).logits
    assert (expected - actual)[attention_mask.bool()].abs().max() <= TOLERANCE


# --------------------------------------------------------------------------------------------------------------------
# Bad input: a clear error listing what is unsupported
# --------------------------------------------------------------------------------------------------------------------


def test_unsupported_architecture_is_refused(tmp_path, capsys):
    t5 = T5ForConditionalGeneration(T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, vocab_size=VOCAB))
    with pytest.raises(ConversionError, match="relative position bias"):
        convert(t5)
    t5.save_pretrained(tmp_path / "t5")
    assert cli_main(["convert", str(tmp_path / "t5"), str(tmp_path / "out")]) == 2  # one line, not a traceback
    err = capsys.readouterr().err
    assert "\nfourfold convert: error: " in "\n" + err.replace("\r", "\n") and "relative position bias" in err
    assert "Traceback" not in err
    assert cli_main(["convert", str(tmp_path / "no-such-folder"), str(tmp_path / "out")]) == 2
    assert "could not be loaded" in capsys.readouterr().err
    with pytest.raises(ConversionError, match="not 'decoder'"):
        convert(tiny_bert(), architecture="decoder")


def test_unexpressible_options_are_all_listed():
    source = tiny_gpt2(scale_attn_by_inverse_layer_idx=True, scale_attn_weights=False)
    with pytest.raises(ConversionError) as error:
        convert(source)
    assert "scale_attn_by_inverse_layer_idx" in str(error.value) and "scale_attn_weights" in str(error.value)
    with pytest.raises(ConversionError, match="encoder_attention_heads=4 != decoder_attention_heads=2"):
        convert(tiny_bart(decoder_attention_heads=2))
    source = tiny_bert()
    source.config.hidden_act = "no-such-activation"
    with pytest.raises(ConversionError, match="no-such-activation"):
        convert(source)


HEADLESS = {  # the base-model class each supported family saves without a head, and its config
    "bert": lambda: BertModel(BertConfig(hidden_size=32, max_position_embeddings=64, **SIZES)),
    "gpt2": lambda: transformers.GPT2Model(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB)),
    "llama": lambda: transformers.LlamaModel(tiny_llama().config),
    "bart": lambda: transformers.BartModel(tiny_bart().config),
}


@torch.no_grad()
@pytest.mark.parametrize("family", HEADLESS)
@pytest.mark.parametrize("architectures_saved", [True, False], ids=["named", "unnamed"])
def test_headless_checkpoints_convert_to_the_base_model(family, architectures_saved, tmp_path):
    """A checkpoint without a head (the usual form of sentence-transformers and many Hub encoders) becomes the base
    fourfold model with the same outputs, whether or not its config.json names its class; the record and the card
    say that a head loaded on it starts fresh."""
    torch.manual_seed(0)
    source = HEADLESS[family]().eval()
    source.save_pretrained(tmp_path / "source")
    if not architectures_saved:
        config = json.loads((tmp_path / "source" / "config.json").read_text())
        config.pop("architectures")
        (tmp_path / "source" / "config.json").write_text(json.dumps(config))
    converted = convert(str(tmp_path / "source"), str(tmp_path / "out"))
    if not architectures_saved and family in ("gpt2", "llama", "bart"):
        # A tied LM head is the embedding itself: loaded as the LM class, nothing is missing and nothing is fresh.
        assert type(converted).__name__.endswith(("ForCausalLM", "ForConditionalGeneration"))
        converted = converted.model
    else:
        assert type(converted).__name__.endswith("Model") and "For" not in type(converted).__name__
        assert json.loads((tmp_path / "out" / "conversion.json").read_text())["source_has_head"] is False
        assert "a task head loaded on it" in (tmp_path / "out" / "README.md").read_text()
    input_ids, attention_mask = batch(pad_token_id=source.config.pad_token_id or 0)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    if family == "bart":
        inputs["decoder_input_ids"] = input_ids[:, :5]
    expected, actual = source(**inputs).last_hidden_state, converted(**inputs).last_hidden_state
    real = attention_mask.bool() if family != "bart" else slice(None)
    assert (expected - actual)[real].abs().max() <= TOLERANCE


def test_missing_base_weights_are_still_an_error(tmp_path):
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, max_position_embeddings=64, **SIZES)).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["encoder.layer.0.attention.self.query.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConversionError, match=r"lacks weights of BertModel: \['encoder\.layer\.0\.attention"):
        convert(str(tmp_path))


def test_unconsumed_source_weights_are_an_error():
    source = tiny_llama()
    source.model.register_buffer("extra_scale", torch.ones(3))  # a weight the table does not know
    with pytest.raises(ConversionError, match=r"no fourfold counterpart: \['model\.extra_scale'\]"):
        convert(source)

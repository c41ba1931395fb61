"""`fourfold export`: a fourfold checkpoint as transformers' own classes, checked against fourfold itself.

Each (architecture, native target, head) pair is exported to a folder, loaded back with the plain transformers class
its config names, and run next to the fourfold model on a padded random batch: logits equal to <= 1e-5. Tiny native
checkpoints (tests/test_convert.py builds them) survive `convert` then `export` bit for bit. Refusals name every
blocking option; an option export does not know blocks unless it has its default; the prefix LM exports only with
`allow_causal_prefix`, and then computes what the fourfold model computes without a prefix.
"""

import dataclasses
import json

import pytest
import torch
import transformers
from test_convert import tiny_bart, tiny_bert, tiny_gpt2, tiny_llama, tiny_roberta

import fourfold.modeling as fm
from fourfold.configuration import get_config
from fourfold.configuration.presets import bart_like, bert_like, gpt2_like, llama_like
from fourfold.training.cli import main as cli_main
from fourfold.training.convert import convert
from fourfold.training.export import ExportError, choose_target, export_checkpoint, export_model
from fourfold.training.sentence_transformers_files import write_sentence_transformers_files
from fourfold.training.tokenizer import train_tokenizer

TOLERANCE = 1e-5
TEXT = "call me ishmael some years ago never mind how long precisely having little or no money"
VOCAB = 99
SIZES = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40)
ROBERTA = bert_like(position_offset=2, padding_aware_positions=True, pad_token_id=1, type_vocab_size=1)
ENCODER_HEADS = ("MaskedLM", "SequenceClassification", "TokenClassification", "QuestionAnswering", "MultipleChoice")

# (architecture, config options, fourfold classes, the target export picks by itself)
CASES = [
    ("encoder", bert_like(), [f"FourfoldEncoderFor{h}" for h in ENCODER_HEADS] + ["FourfoldEncoderModel"], "bert"),
    (
        "encoder",
        bert_like(attention_bias=False, mlp_bias=False, type_vocab_size=0),
        ["FourfoldEncoderForMaskedLM"],
        "bert",
    ),
    ("encoder", ROBERTA, [f"FourfoldEncoderFor{h}" for h in ENCODER_HEADS] + ["FourfoldEncoderModel"], "roberta"),
    (
        "decoder",
        dict(num_key_value_heads=2),  # fourfold's default decoder: tied, GQA
        [
            "FourfoldDecoderForCausalLM",
            "FourfoldDecoderForSequenceClassification",
            "FourfoldDecoderForTokenClassification",
            "FourfoldDecoderModel",
        ],
        "llama",
    ),
    ("decoder", llama_like(attention_bias=True, num_key_value_heads=1), ["FourfoldDecoderForCausalLM"], "llama"),
    (
        "decoder",
        dict(qk_norm=True, num_key_value_heads=2),  # per-head query/key RMSNorm: Qwen3
        ["FourfoldDecoderForCausalLM", "FourfoldDecoderForSequenceClassification", "FourfoldDecoderModel"],
        "qwen3",
    ),
    (
        "decoder",
        gpt2_like(),
        [
            "FourfoldDecoderForCausalLM",
            "FourfoldDecoderForSequenceClassification",
            "FourfoldDecoderForTokenClassification",
            "FourfoldDecoderModel",
        ],
        "gpt2",
    ),
    ("decoder", gpt2_like(attention_bias=False, tie_word_embeddings=False), ["FourfoldDecoderForCausalLM"], "gpt2"),
    (
        "seq2seq",
        bart_like(num_decoder_layers=3),
        ["FourfoldSeq2SeqForConditionalGeneration", "FourfoldSeq2SeqModel"],
        "bart",
    ),
    (
        "seq2seq",
        bart_like(lm_head_bias=False, scale_embeddings=True, mlp_bias=False),
        ["FourfoldSeq2SeqForConditionalGeneration"],
        "bart",
    ),
    (
        "prefix-lm",
        dict(num_key_value_heads=2),
        ["FourfoldPrefixLMForCausalLM", "FourfoldPrefixLMForSequenceClassification"],
        "llama",
    ),
    ("prefix-lm", gpt2_like(), ["FourfoldPrefixLMForCausalLM"], "gpt2"),
]
OPTIONS = {f.name for config in fm.CONFIG_CLASSES.values() for f in dataclasses.fields(config)}
PAIRS = [
    pytest.param(
        arch,
        options,
        name,
        target,
        id=f"{arch}-{target}-{name.removeprefix('Fourfold')}-{i}",
        marks=pytest.mark.skipif(not set(options) <= OPTIONS, reason="this fourfold version lacks the option"),
    )
    for i, (arch, options, names, target) in enumerate(CASES)
    for name in names
]


def tiny_fourfold(architecture: str, class_name: str, **options) -> fm.FourfoldPreTrainedModel:
    """A tiny fourfold model whose biases and norm weights are random too (zero / one at init would hide them)."""
    kwargs = {"num_key_value_heads": 4, **SIZES, **options}
    if class_name.endswith("Classification"):
        kwargs["num_labels"] = 3
    torch.manual_seed(0)
    model = getattr(fm, class_name)(get_config(f"{architecture}-tiny", **kwargs)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.normal_(0.0, 0.5)
    return model


def padded_batch(pad_token_id: int | None) -> dict[str, torch.Tensor]:
    """Two rows of 9 tokens, the second with 3 right pads; no real token is the pad id."""
    input_ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    return dict(input_ids=input_ids.masked_fill(attention_mask == 0, pad_token_id or 0), attention_mask=attention_mask)


def outputs_differ(model, native, class_name: str) -> float:
    """Max abs difference of every output tensor (logits, spans, hidden states), over real tokens only."""
    inputs = padded_batch(model.config.pad_token_id)
    real = inputs["attention_mask"].bool()
    ours = dict(inputs)
    if class_name.startswith("FourfoldPrefixLM"):
        ours["prefix_mask"] = torch.zeros_like(real, dtype=torch.long)  # exported causally: compare with no prefix
    if class_name.endswith("MultipleChoice"):
        inputs = ours = {k: v[None] for k, v in inputs.items()}  # (1 question, 2 choices, T)
    if model.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = ours["decoder_input_ids"] = inputs["input_ids"][:, :5]
        real = slice(None)
    with torch.no_grad():
        expected, actual = model(**ours), native(**inputs)
    diffs = []
    for name in ("logits", "start_logits", "end_logits", "last_hidden_state"):
        if expected.get(name) is None:
            continue
        difference = (expected[name] - actual[name]).abs()
        per_token = difference.dim() == 3 or name.endswith("_logits")
        diffs.append((difference[real] if per_token else difference).max().item())
    assert diffs, f"{class_name}: no output compared"
    return max(diffs)


@pytest.mark.parametrize(("architecture", "options", "class_name", "target"), PAIRS)
def test_exported_model_computes_what_fourfold_computes(tmp_path, architecture, options, class_name, target):
    model = tiny_fourfold(architecture, class_name, **options)
    if model.can_generate():
        model.generation_config.max_new_tokens = 4
    export_checkpoint(model, tmp_path, allow_causal_prefix=architecture == "prefix-lm")

    config = json.loads((tmp_path / "config.json").read_text())
    assert "auto_map" not in config and not list(tmp_path.glob("*.py"))
    assert config["model_type"] == target
    native = getattr(transformers, config["architectures"][0]).from_pretrained(tmp_path).eval()
    assert not type(native).__module__.startswith(("fourfold", "transformers_modules"))
    assert outputs_differ(model, native, class_name) <= TOLERANCE

    if model.can_generate():  # greedy decoding with the cache agrees token for token; the generation config came along
        assert native.generation_config.max_new_tokens == 4
        inputs = padded_batch(model.config.pad_token_id)
        inputs = {k: v[:1] for k, v in inputs.items()}
        extra = dict(prefix_mask=torch.zeros_like(inputs["input_ids"])) if architecture == "prefix-lm" else {}
        expected = model.generate(**inputs, **extra, do_sample=False, max_new_tokens=5)
        assert torch.equal(native.generate(**inputs, do_sample=False, max_new_tokens=5), expected)


# --------------------------------------------------------------------------------------------------------------------
# convert -> export: bit for bit
# --------------------------------------------------------------------------------------------------------------------

IGNORED_CONFIG_KEYS = {"architectures", "transformers_version", "_name_or_path", "dtype", "torch_dtype"}


@pytest.mark.parametrize(
    "build",
    [
        tiny_bert,
        tiny_roberta,
        tiny_gpt2,
        tiny_llama,
        lambda: tiny_llama(tie=False, kv_heads=4, attention_bias=True),
        tiny_bart,
        lambda: transformers.LlamaModel(tiny_llama().config).eval(),
        lambda: transformers.BartModel(tiny_bart().config).eval(),
    ],
    ids=["bert", "roberta", "gpt2", "llama", "llama-untied-bias", "bart", "llama-base", "bart-base"],
)
def test_convert_then_export_is_a_bitwise_round_trip(build):
    source = build()
    native, _, fresh = export_model(convert(source))
    assert type(native) is type(source) and not fresh
    expected, actual = source.state_dict(), native.state_dict()
    assert expected.keys() == actual.keys()
    for key, tensor in expected.items():
        assert torch.equal(tensor, actual[key]), key
    original, exported = source.config.to_dict(), native.config.to_dict()
    differing = {
        k: (original.get(k), exported.get(k))
        for k in original.keys() | exported.keys()
        if k not in IGNORED_CONFIG_KEYS and original.get(k) != exported.get(k)
    }
    if isinstance(source, transformers.BartModel):  # a generation setting; convert keeps it for generating heads only
        differing.pop("forced_eos_token_id")
    assert not differing


# --------------------------------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "expected"),
    [
        (
            "encoder",
            [
                "norm_position='pre'",
                "norm_type='rmsnorm'",
                "mlp_type='gated'",
                "position_embedding_type='rope'",
                "embedding_norm=False",
                "num_key_value_heads=2",
                "bert",
                "roberta",
            ],
        ),
        (
            "seq2seq",
            [
                "norm_position='pre'",
                "norm_type='rmsnorm'",
                "mlp_type='gated'",
                "position_embedding_type='rope'",
                "embedding_norm=False",
                "position_offset=0",
                "norm_eps=1e-06",
                "num_key_value_heads=2",
                "bart",
            ],
        ),
    ],
)
def test_default_presets_without_a_native_home_are_refused_naming_every_blocker(architecture, expected):
    model = fm.FourfoldEncoderForMaskedLM if architecture == "encoder" else fm.FourfoldSeq2SeqForConditionalGeneration
    options = {"qk_norm": True} if "qk_norm" in OPTIONS else {}  # the shipped recipes' QK-norm blocks too
    model = model(get_config(f"{architecture}-tiny", **options))
    with pytest.raises(ExportError) as error:
        choose_target(model)
    message = str(error.value)
    for blocker in expected:
        assert blocker in message
    overrides = json.loads(error.value.fix.split("--config_overrides '")[1].split("'")[0])
    fixed = type(model)(get_config(f"{architecture}-tiny", **overrides))
    assert choose_target(fixed).name == ("bert" if architecture == "encoder" else "bart")  # the advice is enough


def test_a_named_target_that_does_not_fit_is_refused():
    model = fm.FourfoldDecoderForCausalLM(get_config("decoder-tiny"))  # exports as llama
    with pytest.raises(ExportError, match=r"gpt2 is blocked by .*norm_type='rmsnorm'.*num_key_value_heads=2"):
        export_model(model, "gpt2")
    with pytest.raises(ExportError, match="FourfoldSeq2SeqForSequenceClassification has no native bart"):
        export_model(fm.FourfoldSeq2SeqForSequenceClassification(get_config("seq2seq-tiny", **bart_like())))
    with pytest.raises(ExportError, match="lm_head_bias=True"):
        export_model(fm.FourfoldDecoderForCausalLM(get_config("decoder-tiny", lm_head_bias=True)))


def test_mean_pooling_blocks_only_the_heads_that_pool():
    """BERT's classifiers read the first token: a mean-pooled classifier has no native home, while the masked-LM
    checkpoint it is fine-tuned from (whose config carries classifier_pooling="mean") exports and computes the same."""
    options = dict(bert_like(), classifier_pooling="mean")
    for head in ("SequenceClassification", "MultipleChoice"):
        with pytest.raises(ExportError, match=r"classifier_pooling='mean' \(needs 'cls': BERT's classifier reads"):
            export_model(tiny_fourfold("encoder", f"FourfoldEncoderFor{head}", **options), "bert")
    model = tiny_fourfold("encoder", "FourfoldEncoderForMaskedLM", **options)
    native, target, _ = export_model(model)
    assert target.name == "bert"
    assert outputs_differ(model, native.eval(), "FourfoldEncoderForMaskedLM") <= TOLERANCE


class ConfigWithANewOption(fm.FourfoldDecoderConfig):
    """A fourfold config grown an option export has never heard of."""

    model_type = "fourfold-decoder"
    qk_layernorm_for_this_test: bool = False


def test_an_option_export_does_not_know_blocks_unless_it_is_at_its_default():
    assert export_model(fm.FourfoldDecoderForCausalLM(ConfigWithANewOption(**SIZES)))[1].name == "llama"
    model = fm.FourfoldDecoderForCausalLM(ConfigWithANewOption(qk_layernorm_for_this_test=True, **SIZES))
    with pytest.raises(ExportError, match=r"qk_layernorm_for_this_test=True \(export does not know this option"):
        export_model(model)


@pytest.mark.skipif("zero_init_residual" not in OPTIONS, reason="this fourfold version lacks the option")
def test_an_init_only_option_does_not_block():
    model = tiny_fourfold("decoder", "FourfoldDecoderForCausalLM", zero_init_residual=True)
    assert export_model(model)[1].name == "llama"


# --------------------------------------------------------------------------------------------------------------------
# The command line, the prefix LM's flag, the folder's other files
# --------------------------------------------------------------------------------------------------------------------


def saved_checkpoint(path, architecture: str, **options):
    head = {"decoder": "FourfoldDecoderForCausalLM", "prefix-lm": "FourfoldPrefixLMForCausalLM"}[architecture]
    model = tiny_fourfold(architecture, head, **options)
    tokenizer = train_tokenizer([TEXT] * 4, architecture, VOCAB)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    model.generation_config.max_new_tokens = 3
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def test_cli_exports_a_folder_with_its_tokenizer(tmp_path, capsys):
    saved_checkpoint(tmp_path / "src", "decoder", num_key_value_heads=2)
    assert cli_main(["export", str(tmp_path / "src"), str(tmp_path / "out")]) == 0
    assert "LlamaForCausalLM, target llama" in capsys.readouterr().out
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer.chat_template and tokenizer("call me")["input_ids"]
    assert transformers.GenerationConfig.from_pretrained(tmp_path / "out").max_new_tokens == 3
    assert json.loads((tmp_path / "out" / "export.json").read_text())["verified_max_abs_diff"] <= TOLERANCE


def test_the_prefix_lm_exports_only_with_the_flag_and_says_the_prefix_becomes_causal(tmp_path, capsys):
    model = saved_checkpoint(tmp_path / "src", "prefix-lm", num_key_value_heads=2)
    assert cli_main(["export", str(tmp_path / "src"), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # the one line after transformers' progress bars
    assert error.startswith("fourfold export: error: ") and "prefix LM" in error and "--allow_causal_prefix" in error

    assert cli_main(["export", str(tmp_path / "src"), str(tmp_path / "out"), "--allow_causal_prefix"]) == 0
    assert "prefix became causal" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "export.json").read_text())["prefix_becomes_causal"] is True
    assert "The prefix became causal" in (tmp_path / "out" / "README.md").read_text()
    # The change is real: with its prompt as a bidirectional prefix the fourfold model computes something else.
    native = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    inputs = padded_batch(model.config.pad_token_id)
    with torch.no_grad():
        causal, prefixed = native(**inputs).logits, model(**inputs, prefix_mask=inputs["attention_mask"]).logits
    assert (causal - prefixed)[inputs["attention_mask"].bool()].abs().max() > 1e-3


def test_an_exported_encoder_embeds_in_sentence_transformers_as_fourfold_does(tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model = tiny_fourfold("encoder", "FourfoldEncoderForMaskedLM", **bert_like())
    model.save_pretrained(tmp_path / "src")
    train_tokenizer([TEXT] * 4, "encoder", VOCAB).save_pretrained(tmp_path / "src")
    write_sentence_transformers_files(tmp_path / "src")  # as pretrain writes them
    export_checkpoint(tmp_path / "src", tmp_path / "out")
    assert (tmp_path / "out" / "1_Pooling" / "config.json").is_file()

    sentences = ["call me ishmael", "some years ago never mind how long precisely"]
    embeddings = sentence_transformers.SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(
        sentences, convert_to_tensor=True
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "src")
    inputs = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model.model(**inputs).last_hidden_state  # (B, T, hidden)
    mask = inputs["attention_mask"][..., None].float()
    expected = (states * mask).sum(1) / mask.sum(1)  # mean over real tokens, by hand
    assert (embeddings - expected).abs().max() <= TOLERANCE

"""`fourfold export`: a fourfold checkpoint as the transformers class whose math it matches, with logit parity.

    fourfold export SRC DST [--target bert|roberta|llama|qwen3|gpt2|bart] [--allow_causal_prefix]

The reverse of `fourfold convert`. The output folder loads with plain transformers (no fourfold, no remote code, no
`auto_map`), so tools that dispatch on a native architecture name (`transformers serve`, llama.cpp's GGUF converter,
vLLM's native models, ...) take it. Python: `export_checkpoint(src, dst, target=None, allow_causal_prefix=False)`.

| target  | fourfold architecture | native classes (by fourfold head)                                           |
|---------|-----------------------|-----------------------------------------------------------------------------|
| bert    | encoder               | BertForMaskedLM, ...ForSequenceClassification, ...ForTokenClassification,   |
|         |                       | ...ForQuestionAnswering, ...ForMultipleChoice, BertModel                    |
| roberta | encoder               | RobertaForMaskedLM and the same heads, RobertaModel                         |
| llama   | decoder (prefix LM*)  | LlamaForCausalLM, ...ForSequenceClassification, ...ForTokenClassification   |
| qwen3   | decoder (prefix LM*)  | Qwen3ForCausalLM and the same heads: Llama with `qk_norm=True`              |
| gpt2    | decoder (prefix LM*)  | GPT2LMHeadModel, GPT2ForSequenceClassification, GPT2ForTokenClassification |
| bart    | seq2seq               | BartForConditionalGeneration, BartModel                                     |

(*) only with `--allow_causal_prefix`: no native text model has a bidirectional prefix, so the exported model reads
the prompt causally; the output and the card say so.

How the target is chosen: each target states the option values its native class hard-codes (`required`) and the
options its config expresses (`native_config`). Every other fourfold config field blocks the export unless it has
its default value, so an option added to fourfold later can never export silently wrong. Without `--target` the
first target of the architecture with no blockers wins; with none, the error lists every blocking option
(`field=value`) of each target and the `--config_overrides` that would have made the model exportable.

Weights go through `fourfold convert`'s own tables, read backwards (native key -> fourfold key), so `convert` then
`export` is a bitwise round trip. A native weight fourfold has no counterpart for is exported as the zeros that
compute the same function (biases of a bias-free fourfold model, BART's `final_logits_bias`, BERT's token types).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedModel

import fourfold.modeling as fourfold_modeling
from fourfold.modeling import FourfoldConfig, FourfoldPreTrainedModel
from fourfold.training.architectures import architecture_of
from fourfold.training.convert import RECIPES, Rule
from fourfold.training.errors import UsageError, one_line
from fourfold.training.sentence_transformers_files import sentence_transformers_upload

logger = logging.getLogger(__name__)

VERIFY_TOLERANCE = 1e-4  # max abs difference accepted by the built-in check (float32 models only)

# Fourfold config fields that change no computed value (training-time settings, token ids copied as they are).
# `zero_init_residual` changes the initial weights only, never how weights are used.
NEUTRAL_OPTIONS = frozenset(
    {"loss_chunk_size", "initializer_range", "zero_init_residual", "use_cache"}
    | {"pad_token_id", "bos_token_id", "eos_token_id"}
)


class ExportError(UsageError):
    """No native class computes what this checkpoint computes; the message names every blocking option."""


# ----------------------------------------------------------------------------------------------------------------
# Native configs: one function per target; each appends what its class cannot express to `blockers`
# ----------------------------------------------------------------------------------------------------------------


def _same(name: str, value: Any, wanted: Any, blockers: list[str], why: str) -> None:
    if value != wanted:
        blockers.append(f"{name}={value!r} (needs {wanted!r}: {why})")


def _no_gqa(c: FourfoldConfig, blockers: list[str], native: str) -> None:
    _same("num_key_value_heads", c.num_key_value_heads, c.num_attention_heads, blockers, f"{native} has no GQA")
    _same("head_dim", c.head_dim, c.hidden_size // c.num_attention_heads, blockers, f"{native}: hidden / heads")


def _common(c: FourfoldConfig) -> dict:
    return dict(
        vocab_size=c.vocab_size,
        initializer_range=c.initializer_range,
        pad_token_id=c.pad_token_id,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        tie_word_embeddings=c.tie_word_embeddings,
    )


def _first_token_pooling(c: FourfoldConfig, head: str, blockers: list[str], native: str) -> None:
    """BERT's and RoBERTa's classifiers read the first token; the other heads do not pool (their export keeps no
    `classifier_pooling`: the native config has none)."""
    if head in ("FourfoldEncoderForSequenceClassification", "FourfoldEncoderForMultipleChoice"):
        _same(
            "classifier_pooling", c.classifier_pooling, "cls", blockers, f"{native}'s classifier reads the first token"
        )


def _bert_config(c: FourfoldConfig, head: str, blockers: list[str]) -> dict:
    _no_gqa(c, blockers, "BERT")
    _first_token_pooling(c, head, blockers, "BERT")
    _same("position_offset", c.position_offset, 0, blockers, "BERT's positions start at row 0")
    _same("padding_aware_positions", c.padding_aware_positions, False, blockers, "BERT counts pads as positions")
    return dict(
        **_common(c),
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        intermediate_size=c.intermediate_size,
        hidden_act=c.hidden_act,
        hidden_dropout_prob=c.hidden_dropout,
        attention_probs_dropout_prob=c.attention_dropout,
        classifier_dropout=c.classifier_dropout,
        max_position_embeddings=c.max_position_embeddings,
        type_vocab_size=max(c.type_vocab_size, 1),  # no token types: one all-zero row adds nothing
        layer_norm_eps=c.norm_eps,
        use_cache=c.use_cache,
    )


def _roberta_config(c: FourfoldConfig, head: str, blockers: list[str]) -> dict:
    _no_gqa(c, blockers, "RoBERTa")
    _first_token_pooling(c, head, blockers, "RoBERTa")
    _same("padding_aware_positions", c.padding_aware_positions, True, blockers, "RoBERTa skips pads when counting")
    offset = (c.pad_token_id or 0) + 1
    _same("position_offset", c.position_offset, offset, blockers, "RoBERTa's positions start at pad_token_id + 1")
    if head == "FourfoldEncoderForMaskedLM":
        _same("hidden_act", c.hidden_act, "gelu", blockers, "RobertaLMHead always uses gelu")
    kwargs = _bert_config(c, head, [])
    kwargs["max_position_embeddings"] = c.max_position_embeddings + c.position_offset
    return kwargs


def _gpt2_config(c: FourfoldConfig, head: str, blockers: list[str]) -> dict:
    _no_gqa(c, blockers, "GPT-2")
    return dict(
        **_common(c),
        n_embd=c.hidden_size,
        n_layer=c.num_hidden_layers,
        n_head=c.num_attention_heads,
        n_inner=c.intermediate_size,
        n_positions=c.max_position_embeddings,
        activation_function=c.hidden_act,
        resid_pdrop=c.hidden_dropout,
        embd_pdrop=c.hidden_dropout,
        attn_pdrop=c.attention_dropout,
        classifier_dropout=c.classifier_dropout,
        layer_norm_epsilon=c.norm_eps,
        use_cache=c.use_cache,
    )


def _llama_config(c: FourfoldConfig, head: str, blockers: list[str]) -> dict:
    return dict(
        **_common(c),
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        intermediate_size=c.intermediate_size,
        hidden_act=c.hidden_act,
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.norm_eps,
        rope_parameters=copy.deepcopy(c.rope_parameters),
        attention_bias=c.attention_bias,
        mlp_bias=c.mlp_bias,
        attention_dropout=c.attention_dropout,
        use_cache=c.use_cache,
    )


def _qwen3_config(c: FourfoldConfig, head: str, blockers: list[str]) -> dict:
    kwargs = _llama_config(c, head, blockers)
    kwargs.pop("mlp_bias")  # Qwen3's MLP has no biases (required below)
    return kwargs


def _bart_config(c: FourfoldConfig, head: str, blockers: list[str]) -> dict:
    _no_gqa(c, blockers, "BART")
    kwargs = _common(c)
    kwargs.pop("tie_word_embeddings")  # fourfold-seq2seq always ties, as BART does
    kwargs.pop("initializer_range")  # BART calls it init_std
    return dict(
        **kwargs,
        d_model=c.hidden_size,
        encoder_layers=c.num_hidden_layers,
        decoder_layers=c.num_decoder_layers,
        encoder_attention_heads=c.num_attention_heads,
        decoder_attention_heads=c.num_attention_heads,
        encoder_ffn_dim=c.intermediate_size,
        decoder_ffn_dim=c.intermediate_size,
        activation_function=c.hidden_act,
        max_position_embeddings=c.max_position_embeddings,
        dropout=c.hidden_dropout,
        attention_dropout=c.attention_dropout,
        activation_dropout=0.0,
        classifier_dropout=c.classifier_dropout or 0.0,
        init_std=c.initializer_range,
        scale_embedding=c.scale_embeddings,
        decoder_start_token_id=c.decoder_start_token_id,
        forced_eos_token_id=None,  # BartConfig's default forces eos; fourfold's generation config decides (below)
        use_cache=c.use_cache,
    )


# ----------------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------------

_POST_LAYERNORM = dict(norm_position="post", norm_type="layernorm", mlp_type="plain")
_POST_LAYERNORM.update(position_embedding_type="absolute")
_PRE = dict(norm_position="pre", embedding_norm=False, scale_embeddings=False, type_vocab_size=0)
_PRE.update(position_offset=0, padding_aware_positions=False, lm_head_bias=False)


@dataclass(frozen=True)
class Target:
    """One native model family fourfold checkpoints export to."""

    name: str
    model_type: str  # `fourfold convert`'s recipe (the weight table read backwards)
    architectures: tuple[str, ...]  # fourfold architectures it takes (the prefix LM only with the causal flag)
    config_class: type[PretrainedConfig]
    classes: dict[str, str]  # fourfold class name -> native class name
    required: dict[str, Any]  # option -> the value the native classes hard-code
    native_config: Callable[[FourfoldConfig, str, list[str]], dict]
    expressed: frozenset[str]  # options `native_config` carries over (or checks) and the weights' zeros absorb
    head_rules: list[Rule] = field(default_factory=list)  # native heads convert does not import: tried first
    zeros: str = r"$^"  # native weights exported as zeros when fourfold has none (same function)
    notes: str = ""


_ENCODER_HEADS = ("MaskedLM", "SequenceClassification", "TokenClassification", "QuestionAnswering", "MultipleChoice")
_SPAN_RULES: list[Rule] = [(r"qa_outputs\.(\w+)", r"qa_outputs.\1")]
_BIASES = r".*\.(?:query|key|value|dense|c_attn|c_proj|c_fc|[qkv]_proj|out_proj|fc1|fc2)\.bias"
_ENCODER_EXPRESSED = frozenset(
    {"attention_bias", "mlp_bias", "type_vocab_size", "hidden_act", "norm_eps", "lm_head_bias", "tie_word_embeddings"}
    | {"classifier_pooling"}  # checked per head (_first_token_pooling)
)


def _encoder_classes(native: str) -> dict[str, str]:
    classes = {f"FourfoldEncoderFor{h}": f"{native}For{h}" for h in _ENCODER_HEADS}
    return {**classes, "FourfoldEncoderModel": f"{native}Model"}


def _decoder_classes(causal_lm: str, native: str) -> dict[str, str]:
    classes = {"FourfoldDecoderForCausalLM": causal_lm, "FourfoldPrefixLMForCausalLM": causal_lm}
    for kind in ("Decoder", "PrefixLM"):
        classes[f"Fourfold{kind}ForSequenceClassification"] = f"{native}ForSequenceClassification"
        classes[f"Fourfold{kind}Model"] = f"{native}Model"
    return {**classes, "FourfoldDecoderForTokenClassification": f"{native}ForTokenClassification"}


# fmt: off
TARGETS: dict[str, Target] = {t.name: t for t in (
    Target(
        "bert", "bert", ("encoder",), transformers.BertConfig, _encoder_classes("Bert"),
        dict(_POST_LAYERNORM, embedding_norm=True, scale_embeddings=False),
        _bert_config, _ENCODER_EXPRESSED | {"position_offset", "padding_aware_positions"},
        head_rules=[(r"bert\.pooler\.dense\.(\w+)", r"pooler.dense.\1"), (r"classifier\.(\w+)", r"classifier.\1"),
                    *_SPAN_RULES],
        zeros=rf"{_BIASES}|.*token_type_embeddings\.weight",
    ),
    Target(
        "roberta", "roberta", ("encoder",), transformers.RobertaConfig, _encoder_classes("Roberta"),
        dict(_POST_LAYERNORM, embedding_norm=True, scale_embeddings=False),
        _roberta_config, _ENCODER_EXPRESSED | {"position_offset", "padding_aware_positions"},
        head_rules=[(r"classifier\.dense\.(\w+)", r"pooler.dense.\1"),  # RobertaClassificationHead = pooler + linear
                    (r"classifier\.out_proj\.(\w+)", r"classifier.\1"),
                    (r"roberta\.pooler\.dense\.(\w+)", r"pooler.dense.\1"), (r"classifier\.(\w+)", r"classifier.\1"),
                    *_SPAN_RULES],
        zeros=rf"{_BIASES}|.*token_type_embeddings\.weight",
    ),
    Target(
        "llama", "llama", ("decoder", "prefix-lm"), transformers.LlamaConfig,
        _decoder_classes("LlamaForCausalLM", "Llama"),
        dict(_PRE, norm_type="rmsnorm", mlp_type="gated", position_embedding_type="rope"),
        _llama_config, frozenset({"attention_bias", "mlp_bias", "hidden_act", "norm_eps", "rope_parameters",
                                  "num_key_value_heads", "head_dim", "tie_word_embeddings"}),
        head_rules=[(r"score\.(\w+)", r"score.\1")],
    ),
    Target(
        "qwen3", "llama", ("decoder", "prefix-lm"), transformers.Qwen3Config,
        _decoder_classes("Qwen3ForCausalLM", "Qwen3"),
        dict(_PRE, norm_type="rmsnorm", mlp_type="gated", position_embedding_type="rope", qk_norm=True, mlp_bias=False),
        _qwen3_config, frozenset({"attention_bias", "hidden_act", "norm_eps", "rope_parameters", "num_key_value_heads",
                                  "head_dim", "tie_word_embeddings"}),
        head_rules=[(r"score\.(\w+)", r"score.\1"),  # Llama's table, plus the per-head query/key RMSNorms
                    (r"((?:model\.)?layers\.\d+\.self_attn\.[qk]_norm\.weight)", r"\1")],
    ),
    Target(
        "gpt2", "gpt2", ("decoder", "prefix-lm"), transformers.GPT2Config,
        _decoder_classes("GPT2LMHeadModel", "GPT2"),
        dict(_PRE, norm_type="layernorm", mlp_type="plain", position_embedding_type="absolute"),
        _gpt2_config, frozenset({"attention_bias", "mlp_bias", "hidden_act", "norm_eps", "tie_word_embeddings"}),
        head_rules=[(r"score\.weight", r"score.weight"), (r"classifier\.(\w+)", r"score.\1")],
        zeros=_BIASES,
    ),
    Target(
        "bart", "bart", ("seq2seq",), transformers.BartConfig,
        {"FourfoldSeq2SeqForConditionalGeneration": "BartForConditionalGeneration",
         "FourfoldSeq2SeqModel": "BartModel"},
        dict(_POST_LAYERNORM, embedding_norm=True, position_offset=2, padding_aware_positions=False,
             type_vocab_size=0, norm_eps=1e-5),
        _bart_config, frozenset({"attention_bias", "mlp_bias", "hidden_act", "scale_embeddings", "lm_head_bias",
                                 "tie_word_embeddings", "num_decoder_layers", "decoder_start_token_id"}),
        zeros=rf"{_BIASES}|final_logits_bias",
        notes="FourfoldSeq2SeqForSequenceClassification mean-pools the encoder; BART's classifier reads the decoder.",
    ),
)}
# fmt: on

# Options every target handles: sizes (checked where a native class constrains them) and dropout.
_SIZES_AND_DROPOUT = frozenset(
    {
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "intermediate_size",
        "max_position_embeddings",
        "rope_parameters",  # recorded even when unused; the rotary target copies it, the others need absolute positions
        "hidden_dropout",
        "attention_dropout",
        "classifier_dropout",
    }
)


def blockers(model: FourfoldPreTrainedModel, target: Target) -> list[str]:
    """Every reason `target` cannot express `model` (empty: it can). Each names the option as `field=value`."""
    config, head = model.config, type(model).__name__
    record = architecture_of(config.model_type)
    problems: list[str] = []
    if record is None or record.name not in target.architectures:
        return [f"model_type={config.model_type!r} (the {target.name} target takes {', '.join(target.architectures)})"]
    if head not in target.classes:
        problems.append(f"{head} has no native {target.name} counterpart. {target.notes}".strip())
    for name, wanted in target.required.items():  # (an option this fourfold version lacks reads as None)
        _same(name, getattr(config, name, None), wanted, problems, f"{target.name} hard-codes it")
    target.native_config(config, head, problems)
    for name, default in _unknown_options(config, target).items():
        problems.append(
            f"{name}={getattr(config, name)!r} (export does not know this option; only its default {default!r} exports)"
        )
    return problems


def _unknown_options(config: FourfoldConfig, target: Target) -> dict[str, Any]:
    """Options `target` neither requires nor expresses that are not at their default: name -> the default."""
    known = NEUTRAL_OPTIONS | _SIZES_AND_DROPOUT | target.expressed | set(target.required)
    options = [o for o in _own_options(type(config)) if o.name not in known]
    return {o.name: _default(o) for o in options if getattr(config, o.name) != _default(o)}


def _own_options(config_class: type[FourfoldConfig]) -> list[dataclasses.Field]:
    """The fields fourfold's configs add to transformers' `PreTrainedConfig` (and the seq2seq subclass to those)."""
    base = {f.name for f in dataclasses.fields(transformers.PreTrainedConfig)} | {"is_encoder_decoder"}
    return [f for f in dataclasses.fields(config_class) if f.name not in base]


def _default(option: dataclasses.Field) -> Any:
    if option.default is not dataclasses.MISSING:
        return option.default
    return option.default_factory() if option.default_factory is not dataclasses.MISSING else None


def choose_target(model: FourfoldPreTrainedModel, target: str | None = None) -> Target:
    """The named target if it can express `model`, else the first of its architecture that can; `ExportError`
    naming every blocker (and the overrides that would fix them) otherwise."""
    if target is not None and target not in TARGETS:
        raise ExportError(f"--target {target!r} is not a target", f"choose one of {', '.join(TARGETS)}")
    record = architecture_of(model.config.model_type)
    name = record.name if record else model.config.model_type
    candidates = [TARGETS[target]] if target else [t for t in TARGETS.values() if name in t.architectures]
    found = {t.name: blockers(model, t) for t in candidates}
    for t in candidates:
        if not found[t.name]:
            return t
    if not candidates:
        raise ExportError(f"{type(model).__name__} is not a fourfold model", "export a fourfold checkpoint")
    what = f"{type(model).__name__} ({name}) has no native transformers class: " + "; ".join(
        f"{t} is blocked by {', '.join(problems)}" for t, problems in found.items()
    )
    raise ExportError(what, _fix(model, candidates, found))


def _fix(model: FourfoldPreTrainedModel, candidates: list[Target], found: dict[str, list[str]]) -> str:
    """What to change: the pretraining overrides that give the closest target's options."""
    best = min(candidates, key=lambda t: len(found[t.name]))
    record = architecture_of(model.config.model_type)
    config = model.config
    overrides = {k: v for k, v in best.required.items() if getattr(config, k, None) != v}
    if "num_key_value_heads" not in best.expressed and config.num_key_value_heads != config.num_attention_heads:
        overrides["num_key_value_heads"] = config.num_attention_heads  # no GQA
    overrides |= _unknown_options(config, best)
    preset = f"{record.name}-<size>" if record else "<preset>"
    flavour = (
        f" (see the `{best.name}_like()` flavour in fourfold.configuration.presets)" if best.name in _FLAVOURS else ""
    )
    return (
        f"pretrain with --config_name {preset} --config_overrides '{json.dumps(overrides)}' to export as "
        f"{best.name}{flavour}, or keep the checkpoint fourfold-only (trust_remote_code=True)"
    )


_FLAVOURS = ("bert", "gpt2", "llama", "bart")  # configuration.presets' `<name>_like()`


# ----------------------------------------------------------------------------------------------------------------
# Weights: convert's tables, read backwards
# ----------------------------------------------------------------------------------------------------------------


def _fourfold_keys(target: Target, native_key: str, native_is_base: bool) -> tuple[list[str] | None, bool]:
    """(the fourfold keys a native weight is made of, whether it is stored transposed); `None` keys: the weight has
    no fourfold counterpart (convert drops it)."""
    for pattern, template in target.head_rules:
        if match := re.fullmatch(pattern, native_key):
            return [match.expand(template)], False
    recipe = RECIPES[target.model_type]
    full_key = f"{recipe.base_prefix}.{native_key}" if native_is_base else native_key
    for pattern, template in recipe.rules:
        if match := re.fullmatch(pattern, full_key):
            if template is None:
                return None, False
            templates = (template,) if isinstance(template, str) else template
            names = [match.expand(t) for t in templates]
            if native_is_base:  # a base-model target has no `model.` wrapper
                names = [n.removeprefix("model.") for n in names]
            return names, bool(recipe.transposed and re.fullmatch(recipe.transposed, full_key))
    raise ExportError(f"{native_key}: no fourfold counterpart known", "report this: the export tables are incomplete")


def native_state_dict(model: FourfoldPreTrainedModel, native: PreTrainedModel, target: Target) -> tuple[dict, list]:
    """Every native weight from fourfold's; returns (state dict, native keys left as initialised)."""
    source = model.state_dict()
    native_is_base = native.base_model is native
    mapped, fresh = {}, []
    for key, like in native.state_dict().items():
        names, transposed = _fourfold_keys(target, key, native_is_base)
        if names is None:
            fresh.append(key)
            continue
        if not all(n in source for n in names):
            if not re.fullmatch(target.zeros, key):
                raise ExportError(f"{key}: fourfold weights {names} are missing", "export a complete checkpoint")
            mapped[key] = torch.zeros_like(like)  # an absent bias / token type: zeros compute the same
            continue
        tensor = torch.cat([source[n] for n in names], dim=0) if len(names) > 1 else source[names[0]]  # fused qkv
        if transposed:
            tensor = tensor.t()  # GPT-2's Conv1D: (in, out)
        mapped[key] = tensor.reshape(like.shape).contiguous()  # BART's final_logits_bias: (vocab,) -> (1, vocab)
    return mapped, fresh


# ----------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------


def export_model(
    model: FourfoldPreTrainedModel, target: str | None = None, *, allow_causal_prefix: bool = False
) -> tuple[PreTrainedModel, Target, list[str]]:
    """The native transformers model computing what `model` computes: (native model, target, fresh keys).

    Raises:
        ExportError: no target expresses the model (every blocker named), or a prefix LM without
            `allow_causal_prefix`.
    """
    record = architecture_of(model.config.model_type)
    if record is not None and record.name == "prefix-lm" and not allow_causal_prefix:
        raise ExportError(
            f"{type(model).__name__} is a prefix LM: no native transformers class attends bidirectionally over the "
            "prompt, so an export would read the prefix causally (different outputs)",
            "pass --allow_causal_prefix (allow_causal_prefix=True) to export it as a causal decoder anyway, or "
            "pretrain --config_name decoder-<size> for a model that exports exactly",
        )
    chosen = choose_target(model, target)
    config = model.config
    kwargs = chosen.native_config(config, type(model).__name__, [])
    if config.id2label and getattr(model, "num_labels", None):
        kwargs.update(id2label=dict(config.id2label), label2id=dict(config.label2id), problem_type=config.problem_type)
    native_config = chosen.config_class(**kwargs)
    native_config.architectures = [chosen.classes[type(model).__name__]]
    if model.can_generate():  # generation settings a native config still carries come from fourfold's
        for key in ("forced_bos_token_id", "forced_eos_token_id"):
            if hasattr(native_config, key):
                setattr(native_config, key, getattr(model.generation_config, key, None))
    native_class = getattr(transformers, native_config.architectures[0])
    native = native_class(native_config).to(model.dtype)
    state_dict, fresh = native_state_dict(model, native, chosen)
    native.load_state_dict(state_dict, strict=False)
    if chosen.name == "llama" and config.hidden_dropout:
        logger.warning("hidden_dropout=%s not kept: LlamaConfig has none (outputs unaffected)", config.hidden_dropout)
    if fresh:
        logger.warning("%s weights have no fourfold counterpart and keep their fresh init: %s", chosen.name, fresh)
    if model.can_generate() and native.can_generate():
        native.generation_config = copy.deepcopy(model.generation_config)
    return native.eval(), chosen, fresh


def export_checkpoint(
    src: str | Path | FourfoldPreTrainedModel,
    dst: str | Path,
    target: str | None = None,
    allow_causal_prefix: bool = False,
    *,
    verify: bool = True,
) -> Path:
    """Writes `src` (a fourfold checkpoint folder or model) to `dst` as a native transformers checkpoint.

    Args:
        src: a fourfold output folder (as `fourfold pretrain`, `finetune` or `convert` write) or a loaded model.
        dst: the output folder: native weights and config (no `auto_map`), generation config, the source's
            tokenizer and sentence-transformers files (an encoder's pooling), `export.json` and a README card.
        target: "bert", "roberta", "llama", "qwen3", "gpt2" or "bart"; default: the first that expresses the checkpoint.
        allow_causal_prefix: export a prefix LM as a causal decoder (its prefix becomes causal).
        verify: run both models on a short padded random batch and raise if their outputs differ (float32).

    Returns:
        `dst` as a Path.
    """
    model = _load(src) if isinstance(src, (str, Path)) else src
    native, chosen, fresh = export_model(model.eval(), target, allow_causal_prefix=allow_causal_prefix)
    max_diff = _verify(model, native) if verify and model.dtype == torch.float32 else None
    dst = Path(dst)
    native.save_pretrained(dst)
    if isinstance(src, (str, Path)):
        try:
            AutoTokenizer.from_pretrained(src).save_pretrained(dst)
        except (OSError, ValueError, TypeError) as error:
            logger.warning("No tokenizer saved: %s has none that loads (%s).", src, one_line(error))
        for name, content in sentence_transformers_upload(src).items():  # an encoder's modules.json, 1_Pooling/...
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            (dst / name).write_bytes(content if isinstance(content, bytes) else content.read_bytes())
    causal_prefix = architecture_of(model.config.model_type).name == "prefix-lm"
    record = {
        "source": str(src) if isinstance(src, (str, Path)) else model.name_or_path or None,
        "fourfold_class": type(model).__name__,
        "target": chosen.name,
        "native_class": type(native).__name__,
        "fresh_weights": fresh,
        "prefix_becomes_causal": causal_prefix,
        "verified_max_abs_diff": max_diff,
    }
    (dst / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    (dst / "README.md").write_text(_card(record))
    return dst


def _load(src: str | Path) -> FourfoldPreTrainedModel:
    path = Path(src) / "config.json"
    if not path.is_file():
        raise UsageError(f"{src} has no config.json", "pass a fourfold checkpoint folder (an output folder)")
    names = json.loads(path.read_text()).get("architectures") or []
    model_class = getattr(fourfold_modeling, names[0], None) if names else None
    if model_class is None:
        raise UsageError(
            f"{src} is not a fourfold checkpoint (architectures={names})",
            "pass a folder `fourfold pretrain`, `finetune` or `convert` wrote",
        )
    return model_class.from_pretrained(src)


@torch.no_grad()
def _verify(model: FourfoldPreTrainedModel, native: PreTrainedModel) -> float:
    """Max abs difference of the main outputs on 2 x 8 random tokens, the second row padded (no real token is the
    pad id, which native classifiers use to find the last token)."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, config.vocab_size, (2, 8), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    pad = config.pad_token_id
    if pad is not None:
        input_ids = input_ids.masked_fill(input_ids == pad, (pad + 1) % config.vocab_size)
        input_ids = input_ids.masked_fill(attention_mask == 0, pad)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    ours = dict(inputs)
    if type(model).__name__.startswith("FourfoldPrefixLM"):
        ours["prefix_mask"] = torch.zeros_like(input_ids)  # what the export computes: no prefix
    if type(model).__name__.endswith("MultipleChoice"):
        inputs = ours = {k: v[None] for k, v in inputs.items()}  # (1 question, 2 choices, T)
    if config.is_encoder_decoder:
        ours["decoder_input_ids"] = inputs["decoder_input_ids"] = input_ids[:, :5]
    expected, actual = model(**ours), native(**inputs)
    diffs = []
    for name in ("logits", "start_logits", "end_logits", "last_hidden_state"):
        if expected.get(name) is not None:
            difference = (expected[name] - actual[name]).abs()
            per_token = difference.dim() == 3 or name in ("start_logits", "end_logits")
            if per_token and not config.is_encoder_decoder:
                difference = difference[attention_mask.bool()]  # padded positions may differ
            diffs.append(difference.max().item())
    diff = max(diffs)
    if diff > VERIFY_TOLERANCE:
        raise ExportError(
            f"the exported {type(native).__name__} differs from the fourfold model by {diff:.2e}",
            "report this: the export tables disagree with the model",
        )
    return diff


def _card(record: dict) -> str:
    causal = (
        "\n**The prefix became causal.** This checkpoint was a fourfold prefix LM, whose prompt attends "
        "bidirectionally; no native transformers class does that, so this export reads every token causally and "
        "its outputs differ from the original's on the prompt.\n"
        if record["prefix_becomes_causal"]
        else ""
    )
    return (
        f"---\nlibrary_name: transformers\n---\n\n# {record['native_class']}, exported from fourfold\n\n"
        f"Exported from `{record['fourfold_class']}` by `fourfold export` (target `{record['target']}`); it loads "
        f"with plain transformers:\n\n```python\nfrom transformers import {record['native_class']}\n\n"
        f'model = {record["native_class"]}.from_pretrained("PATH")\n```\n{causal}'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fourfold export",
        description="Export a fourfold checkpoint as transformers' own BERT/RoBERTa, Llama/GPT-2 or BART class, "
        "with logit parity; refuses (naming every blocking option) where no native class matches.",
    )
    parser.add_argument("src", help="a fourfold checkpoint folder (pretrain, finetune or convert output)")
    parser.add_argument("dst", help="output folder: a native transformers checkpoint with the tokenizer")
    parser.add_argument("--target", choices=sorted(TARGETS), help="native family (default: chosen from the config)")
    parser.add_argument(
        "--allow_causal_prefix",
        action="store_true",
        help="export a prefix LM as a causal decoder: its bidirectional prefix becomes causal (outputs change)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the parity check on a random batch")
    args = parser.parse_args(argv)
    try:
        dst = export_checkpoint(
            args.src, args.dst, args.target, allow_causal_prefix=args.allow_causal_prefix, verify=not args.no_verify
        )
    except OSError as error:
        raise UsageError(f"{args.src} could not be loaded ({one_line(error)})", "pass a checkpoint folder") from error
    record = json.loads((dst / "export.json").read_text())
    print(f"Exported {args.src} -> {dst} ({record['native_class']}, target {record['target']}).")
    if record["prefix_becomes_causal"]:
        print("The prefix LM's prefix became causal: the exported model reads the prompt left to right.")
    if record["fresh_weights"]:
        print(f"Weights with no fourfold counterpart keep a fresh init: {', '.join(record['fresh_weights'])}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

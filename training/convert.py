"""`fourfold convert`: import a pretrained BERT/RoBERTa, GPT-2, Llama-family or BART checkpoint, with logit parity.

    fourfold convert SRC DST [--as prefix-lm]         SRC: a local folder or a Hub name (honours HF_HUB_OFFLINE)

How it works: transformers loads the source model (so its own legacy-checkpoint fixes in `conversion_mapping.py`
apply), one table per source architecture renames every source weight to its fourfold name, and the weights are
checked both ways: every source weight must land somewhere (or be listed as dropped, e.g. BertModel's pooler) and
every fourfold weight must be filled. Options fourfold cannot express raise a `ConversionError` that lists them all;
we never build a silently different model. The converted model is then run next to the source on a short random
batch, and a difference above `VERIFY_TOLERANCE` (float32) is an error too.

Why tables over the state dict rather than `from_pretrained(..., key_mapping=...)`: GPT-2 stores its projections as
`Conv1D` (transposed) and fuses q/k/v into one `c_attn`, which renaming alone cannot express; and one code path for
all sources lets us check that every weight was consumed.

| source (model_type) | classes                                 | fourfold             | notable                |
|---------------------|-----------------------------------------|----------------------|------------------------|
| bert                | BertForMaskedLM, BertModel              | encoder              | post-norm, token types |
| roberta             | RobertaForMaskedLM, RobertaModel        | encoder              | padding-aware pos., +2 |
| gpt2                | GPT2LMHeadModel, GPT2Model              | decoder or prefix LM | Conv1D, fused qkv      |
| llama               | LlamaForCausalLM, LlamaModel            | decoder or prefix LM | RMSNorm, RoPE, GQA     |
| mistral             | MistralForCausalLM, MistralModel        | decoder or prefix LM | as Llama, no window   |
| bart                | BartForConditionalGeneration, BartModel | seq2seq              | pos. +2, logits bias   |

T5 does not fit without distorting the core: it uses a learned relative position bias (bucketed, shared across
layers) instead of absolute or rotary positions, unscaled attention logits and a bias-free RMSNorm variant; adding
it would mean a third position scheme in the attention module. It is refused with that explanation.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoTokenizer,
    BartForConditionalGeneration,
    BertForMaskedLM,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    RobertaForMaskedLM,
)
from transformers.activations import ACT2FN

from fourfold.configuration.presets import bart_like, bert_like, gpt2_like, llama_like
from fourfold.hub_cards import write_model_card
from fourfold.modeling import FourfoldPreTrainedModel
from fourfold.training.architectures import ARCHITECTURES, architecture_of
from fourfold.training.errors import UsageError, one_line

logger = logging.getLogger(__name__)

VERIFY_TOLERANCE = 1e-4  # max abs logit difference accepted by the built-in check (float32 sources only)

# A rule: regex over the full source key (head classes' names; base-model keys get the base prefix first) -> the
# fourfold key (regex template), several keys (the tensor is split evenly along dim 0), or None (dropped, recorded).
Rule = tuple[str, str | tuple[str, ...] | None]


class ConversionError(UsageError):
    """The source cannot be converted exactly; the message lists every reason."""

    def __init__(self, what: str, fix: str = "see `fourfold convert --help` for the checkpoints it converts exactly"):
        super().__init__(what, fix)


# ----------------------------------------------------------------------------------------------------------------
# Mapping tables: one per source architecture
# ----------------------------------------------------------------------------------------------------------------

_BERT_LAYER = r"(?:bert|roberta)\.encoder\.layer\.(\d+)\."
BERT_RULES: list[Rule] = [
    (r"(?:bert|roberta)\.embeddings\.word_embeddings\.(\w+)", r"model.embed_tokens.\1"),
    (r"(?:bert|roberta)\.embeddings\.position_embeddings\.(\w+)", r"model.embed_positions.\1"),
    (r"(?:bert|roberta)\.embeddings\.token_type_embeddings\.(\w+)", r"model.embed_token_types.\1"),
    (r"(?:bert|roberta)\.embeddings\.LayerNorm\.(\w+)", r"model.embedding_norm.\1"),
    (_BERT_LAYER + r"attention\.self\.query\.(\w+)", r"model.layers.\1.self_attn.q_proj.\2"),
    (_BERT_LAYER + r"attention\.self\.key\.(\w+)", r"model.layers.\1.self_attn.k_proj.\2"),
    (_BERT_LAYER + r"attention\.self\.value\.(\w+)", r"model.layers.\1.self_attn.v_proj.\2"),
    (_BERT_LAYER + r"attention\.output\.dense\.(\w+)", r"model.layers.\1.self_attn.o_proj.\2"),
    (_BERT_LAYER + r"attention\.output\.LayerNorm\.(\w+)", r"model.layers.\1.self_attn_norm.\2"),
    (_BERT_LAYER + r"intermediate\.dense\.(\w+)", r"model.layers.\1.mlp.up_proj.\2"),
    (_BERT_LAYER + r"output\.dense\.(\w+)", r"model.layers.\1.mlp.down_proj.\2"),
    (_BERT_LAYER + r"output\.LayerNorm\.(\w+)", r"model.layers.\1.mlp_norm.\2"),
    (r"(?:bert|roberta)\.pooler\.dense\.\w+", None),  # BertModel's pooler: fourfold's lives in the seqcls head
    # BERT's masked-LM head (`cls.predictions.bias` is the same parameter as `cls.predictions.decoder.bias`)
    (r"cls\.predictions\.transform\.dense\.(\w+)", r"lm_head.dense.\1"),
    (r"cls\.predictions\.transform\.LayerNorm\.(\w+)", r"lm_head.norm.\1"),
    (r"cls\.predictions\.decoder\.weight", r"lm_head.decoder.weight"),
    (r"cls\.predictions\.(?:decoder\.)?bias", r"lm_head.decoder.bias"),
    # RoBERTa's masked-LM head (`lm_head.bias` is `lm_head.decoder.bias`)
    (r"lm_head\.dense\.(\w+)", r"lm_head.dense.\1"),
    (r"lm_head\.layer_norm\.(\w+)", r"lm_head.norm.\1"),
    (r"lm_head\.decoder\.weight", r"lm_head.decoder.weight"),
    (r"lm_head\.(?:decoder\.)?bias", r"lm_head.decoder.bias"),
]

GPT2_RULES: list[Rule] = [
    (r"transformer\.wte\.weight", "model.embed_tokens.weight"),
    (r"transformer\.wpe\.weight", "model.embed_positions.weight"),
    (r"transformer\.h\.(\d+)\.ln_1\.(\w+)", r"model.layers.\1.self_attn_norm.\2"),
    (
        r"transformer\.h\.(\d+)\.attn\.c_attn\.(\w+)",
        (
            r"model.layers.\1.self_attn.q_proj.\2",
            r"model.layers.\1.self_attn.k_proj.\2",
            r"model.layers.\1.self_attn.v_proj.\2",
        ),
    ),
    (r"transformer\.h\.(\d+)\.attn\.c_proj\.(\w+)", r"model.layers.\1.self_attn.o_proj.\2"),
    (r"transformer\.h\.(\d+)\.ln_2\.(\w+)", r"model.layers.\1.mlp_norm.\2"),
    (r"transformer\.h\.(\d+)\.mlp\.c_fc\.(\w+)", r"model.layers.\1.mlp.up_proj.\2"),
    (r"transformer\.h\.(\d+)\.mlp\.c_proj\.(\w+)", r"model.layers.\1.mlp.down_proj.\2"),
    (r"transformer\.ln_f\.(\w+)", r"model.norm.\1"),
    (r"lm_head\.weight", "lm_head.weight"),
]
# GPT-2's Conv1D stores weights as (in, out), the transpose of nn.Linear's (out, in): hand-written, since no
# renaming can transpose.
GPT2_TRANSPOSED = r".*\.(?:c_attn|c_proj|c_fc)\.weight"

LLAMA_RULES: list[Rule] = [
    (r"model\.embed_tokens\.weight", "model.embed_tokens.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.([qkvo]_proj)\.(\w+)", r"model.layers.\1.self_attn.\2.\3"),
    (r"model\.layers\.(\d+)\.mlp\.((?:gate|up|down)_proj)\.(\w+)", r"model.layers.\1.mlp.\2.\3"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"model.layers.\1.self_attn_norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"model.layers.\1.mlp_norm.weight"),
    (r"model\.norm\.weight", "model.norm.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
]

_BART_LAYER = r"model\.(encoder|decoder)\.layers\.(\d+)\."
BART_RULES: list[Rule] = [
    (r"model\.shared\.weight", "model.shared.weight"),
    (r"model\.(encoder|decoder)\.embed_tokens\.weight", r"model.\1.embed_tokens.weight"),
    (r"model\.(encoder|decoder)\.embed_positions\.weight", r"model.\1.embed_positions.weight"),
    (r"model\.(encoder|decoder)\.layernorm_embedding\.(\w+)", r"model.\1.embedding_norm.\2"),
    (_BART_LAYER + r"self_attn\.([qkv]_proj)\.(\w+)", r"model.\1.layers.\2.self_attn.\3.\4"),
    (_BART_LAYER + r"self_attn\.out_proj\.(\w+)", r"model.\1.layers.\2.self_attn.o_proj.\3"),
    (_BART_LAYER + r"self_attn_layer_norm\.(\w+)", r"model.\1.layers.\2.self_attn_norm.\3"),
    (_BART_LAYER + r"encoder_attn\.([qkv]_proj)\.(\w+)", r"model.\1.layers.\2.cross_attn.\3.\4"),
    (_BART_LAYER + r"encoder_attn\.out_proj\.(\w+)", r"model.\1.layers.\2.cross_attn.o_proj.\3"),
    (_BART_LAYER + r"encoder_attn_layer_norm\.(\w+)", r"model.\1.layers.\2.cross_attn_norm.\3"),
    (_BART_LAYER + r"fc1\.(\w+)", r"model.\1.layers.\2.mlp.up_proj.\3"),
    (_BART_LAYER + r"fc2\.(\w+)", r"model.\1.layers.\2.mlp.down_proj.\3"),
    (_BART_LAYER + r"final_layer_norm\.(\w+)", r"model.\1.layers.\2.mlp_norm.\3"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"final_logits_bias", "lm_head.bias"),  # a (1, vocab) buffer in BART; reshaped below
]


# ----------------------------------------------------------------------------------------------------------------
# Config translation: one function per source architecture; each appends what it cannot express to `problems`
# ----------------------------------------------------------------------------------------------------------------


def _check_activation(name: str, value: str, problems: list[str]) -> None:
    if value not in ACT2FN:
        problems.append(f"{name}={value!r} is not an activation fourfold knows (transformers' ACT2FN).")


def _bert_config(c: PretrainedConfig, has_head: bool, problems: list[str]) -> dict:
    _check_activation("hidden_act", c.hidden_act, problems)
    if getattr(c, "position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type={c.position_embedding_type!r}: only learned absolute positions.")
    if getattr(c, "is_decoder", False) or getattr(c, "add_cross_attention", False):
        problems.append("is_decoder/add_cross_attention: BERT used as a decoder has no fourfold equivalent.")
    kwargs = bert_like(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        intermediate_size=c.intermediate_size,
        max_position_embeddings=c.max_position_embeddings,
        norm_eps=c.layer_norm_eps,
        hidden_act=c.hidden_act,
        type_vocab_size=c.type_vocab_size,
        tie_word_embeddings=getattr(c, "tie_word_embeddings", True),
        hidden_dropout=c.hidden_dropout_prob,
        attention_dropout=c.attention_probs_dropout_prob,
        classifier_dropout=c.classifier_dropout,
    )
    if c.model_type == "roberta":
        # RoBERTa: positions count non-pad tokens from padding_idx + 1; pads read row padding_idx.
        offset = c.pad_token_id + 1
        kwargs.update(
            position_offset=offset,
            max_position_embeddings=c.max_position_embeddings - offset,
            padding_aware_positions=True,
        )
        if has_head and c.hidden_act != "gelu":
            problems.append(f"hidden_act={c.hidden_act!r}: RobertaLMHead always uses gelu, fourfold's uses hidden_act.")
    return kwargs


def _gpt2_config(c: PretrainedConfig, has_head: bool, problems: list[str]) -> dict:
    _check_activation("activation_function", c.activation_function, problems)
    if not c.scale_attn_weights:
        problems.append("scale_attn_weights=False: fourfold always scales attention by 1/sqrt(head_dim).")
    if c.scale_attn_by_inverse_layer_idx:
        problems.append("scale_attn_by_inverse_layer_idx=True: fourfold has no per-layer attention scaling.")
    if c.add_cross_attention:
        problems.append("add_cross_attention=True: a GPT-2 decoder with cross-attention has no fourfold equivalent.")
    return gpt2_like(
        vocab_size=c.vocab_size,
        hidden_size=c.n_embd,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        intermediate_size=c.n_inner or 4 * c.n_embd,
        max_position_embeddings=c.n_positions,
        norm_eps=c.layer_norm_epsilon,
        hidden_act=c.activation_function,
        tie_word_embeddings=getattr(c, "tie_word_embeddings", True),
        hidden_dropout=c.resid_pdrop,
        attention_dropout=c.attn_pdrop,
    )


def _llama_config(c: PretrainedConfig, has_head: bool, problems: list[str]) -> dict:
    _check_activation("hidden_act", c.hidden_act, problems)
    if getattr(c, "sliding_window", None) is not None:  # Mistral
        problems.append(f"sliding_window={c.sliding_window}: fourfold has no sliding-window attention.")
    if (getattr(c, "pretraining_tp", 1) or 1) > 1:
        problems.append(f"pretraining_tp={c.pretraining_tp}: sliced tensor-parallel projections are not supported.")
    return llama_like(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        intermediate_size=c.intermediate_size,
        max_position_embeddings=c.max_position_embeddings,
        norm_eps=c.rms_norm_eps,
        hidden_act=c.hidden_act,
        attention_bias=getattr(c, "attention_bias", False),  # Mistral has no bias options
        mlp_bias=getattr(c, "mlp_bias", False),
        rope_parameters=copy.deepcopy(c.rope_parameters),
        tie_word_embeddings=getattr(c, "tie_word_embeddings", False),
        attention_dropout=c.attention_dropout,
    )


def _bart_config(c: PretrainedConfig, has_head: bool, problems: list[str]) -> dict:
    _check_activation("activation_function", c.activation_function, problems)
    for encoder_field, decoder_field in (
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ):
        if getattr(c, encoder_field) != getattr(c, decoder_field):
            problems.append(
                f"{encoder_field}={getattr(c, encoder_field)} != {decoder_field}={getattr(c, decoder_field)}: "
                "fourfold's encoder and decoder share these sizes."
            )
    if not c.tie_word_embeddings:
        problems.append("tie_word_embeddings=False: fourfold-seq2seq always ties the output projection.")
    return bart_like(
        vocab_size=c.vocab_size,
        hidden_size=c.d_model,
        num_hidden_layers=c.encoder_layers,
        num_decoder_layers=c.decoder_layers,
        num_attention_heads=c.encoder_attention_heads,
        intermediate_size=c.encoder_ffn_dim,
        max_position_embeddings=c.max_position_embeddings,
        hidden_act=c.activation_function,
        scale_embeddings=c.scale_embedding,
        lm_head_bias=has_head,  # BART's final_logits_bias lives in the generation head only
        hidden_dropout=c.dropout,
        attention_dropout=c.attention_dropout,
        classifier_dropout=c.classifier_dropout,
        decoder_start_token_id=c.decoder_start_token_id,
    )


@dataclass(frozen=True)
class Recipe:
    """How to convert one source architecture."""

    load_class: type[PreTrainedModel]  # what a name or folder is loaded as
    classes: dict[str, bool]  # supported source class -> has a head
    base_prefix: str  # the base model's attribute name inside the head classes
    architectures: tuple[str, ...]  # fourfold architectures it may become; the first is the default
    config: Callable[[PretrainedConfig, bool, list[str]], dict]
    rules: list[Rule]
    transposed: str | None = None  # regex of weights stored transposed (GPT-2's Conv1D)


# fmt: off
RECIPES: dict[str, Recipe] = {
    "bert": Recipe(BertForMaskedLM, {"BertForMaskedLM": True, "BertModel": False}, "bert", ("encoder",),
                   _bert_config, BERT_RULES),
    "roberta": Recipe(RobertaForMaskedLM, {"RobertaForMaskedLM": True, "RobertaModel": False}, "roberta",
                      ("encoder",), _bert_config, BERT_RULES),
    "gpt2": Recipe(GPT2LMHeadModel, {"GPT2LMHeadModel": True, "GPT2Model": False}, "transformer",
                   ("decoder", "prefix-lm"), _gpt2_config, GPT2_RULES, transposed=GPT2_TRANSPOSED),
    "llama": Recipe(LlamaForCausalLM, {"LlamaForCausalLM": True, "LlamaModel": False}, "model",
                    ("decoder", "prefix-lm"), _llama_config, LLAMA_RULES),
    "mistral": Recipe(MistralForCausalLM, {"MistralForCausalLM": True, "MistralModel": False}, "model",
                      ("decoder", "prefix-lm"), _llama_config, LLAMA_RULES),
    "bart": Recipe(BartForConditionalGeneration, {"BartForConditionalGeneration": True, "BartModel": False}, "model",
                   ("seq2seq",), _bart_config, BART_RULES),
}
# fmt: on

NOT_SUPPORTED = {
    "t5": "T5 uses a learned relative position bias and unscaled attention, which fourfold's core does not have.",
    "mt5": "mT5 uses T5's relative position bias and unscaled attention, which fourfold's core does not have.",
}


# ----------------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------------


def convert(
    src: str | PreTrainedModel,
    dst: str | None = None,
    architecture: str | None = None,
    *,
    verify: bool = True,
) -> FourfoldPreTrainedModel:
    """Converts a transformers model (or a folder / Hub name it loads from) into the equivalent fourfold model.

    Args:
        src: a supported model instance, a local folder, or a Hub name (offline if `HF_HUB_OFFLINE=1`).
        dst: if given, save the fourfold checkpoint there with the source tokenizer and a `conversion.json`.
        architecture: the fourfold configuration: "encoder", "decoder", "prefix-lm" or "seq2seq"; default: the
            source's own ("prefix-lm" turns a causal LM into a prefix LM with the same weights).
        verify: run both models on a short random batch and raise if their outputs differ (float32 sources).

    Raises:
        ConversionError: unsupported architecture or options (all listed), or weights that do not match.
    """
    source = _load(src) if isinstance(src, str) else src
    model_type = getattr(source.config, "model_type", None)
    if model_type in NOT_SUPPORTED:
        raise ConversionError(NOT_SUPPORTED[model_type])
    recipe = RECIPES.get(model_type)
    if recipe is None or type(source).__name__ not in recipe.classes:
        supported = ", ".join(name for r in RECIPES.values() for name in r.classes)
        raise ConversionError(
            f"Cannot convert {type(source).__name__} (model_type {model_type!r}); supported: {supported}."
        )
    has_head = recipe.classes[type(source).__name__]
    architecture = architecture or recipe.architectures[0]
    if architecture not in recipe.architectures:
        raise ConversionError(
            f"A {model_type} checkpoint converts to {' or '.join(recipe.architectures)}, not {architecture!r}."
        )

    problems: list[str] = []
    kwargs = recipe.config(source.config, has_head, problems)
    if problems:
        raise ConversionError(
            f"{type(source).__name__} has options fourfold cannot express:\n- " + "\n- ".join(problems)
        )
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        kwargs[name] = getattr(source.config, name, None)
    record = ARCHITECTURES[architecture]
    config = record.config_class(
        initializer_range=getattr(source.config, "initializer_range", getattr(source.config, "init_std", 0.02)),
        **kwargs,
    )
    model = (record.pretraining_head if has_head else record.base_model)(config)
    dropped = _load_weights(model, source, recipe, has_head)
    model.to(source.dtype).eval()
    if has_head and getattr(source, "generation_config", None) is not None and model.can_generate():
        model.generation_config = copy.deepcopy(source.generation_config)

    max_diff = _verify(source, model) if verify and source.dtype == torch.float32 else None
    if dst is not None:
        _save(model, source, src, dst, architecture, dropped, max_diff)
    return model


def _load(name: str) -> PreTrainedModel:
    """Loads a name or folder as its recipe's class: the head class, or the base class for a checkpoint that has no
    head (a `BertModel`, as sentence-transformers and many Hub encoders save). Only missing head weights make a
    base model; any other missing weight is an error."""
    config = AutoConfig.from_pretrained(name)
    model_type = getattr(config, "model_type", None)
    if model_type in NOT_SUPPORTED:
        raise ConversionError(NOT_SUPPORTED[model_type])
    if model_type not in RECIPES:
        raise ConversionError(f"Cannot convert model_type {model_type!r} ({name}); supported: {', '.join(RECIPES)}.")
    recipe = RECIPES[model_type]
    base_class = getattr(transformers, next(c for c, has_head in recipe.classes.items() if not has_head))
    saved_as = (getattr(config, "architectures", None) or [None])[0]
    load_class = base_class if saved_as == base_class.__name__ else recipe.load_class
    source, info = load_class.from_pretrained(name, output_loading_info=True)
    missing = sorted(info["missing_keys"])
    if missing and load_class is recipe.load_class and all(not k.startswith(f"{recipe.base_prefix}.") for k in missing):
        source, info = base_class.from_pretrained(name, output_loading_info=True)  # the weights hold no head
        missing = sorted(info["missing_keys"])
    if missing:
        raise ConversionError(
            f"{name} lacks weights of {type(source).__name__}: {missing}",
            "convert a complete checkpoint (the source's own from_pretrained should load it without missing weights)",
        )
    return source.eval()


def _load_weights(model: FourfoldPreTrainedModel, source: PreTrainedModel, recipe: Recipe, has_head: bool) -> list[str]:
    """Fills every fourfold weight from the source through the recipe's table; returns the dropped source keys."""
    mapped: dict[str, torch.Tensor] = {}
    unmatched, dropped = [], []
    for key, tensor in source.state_dict().items():
        full_key = key if has_head else f"{recipe.base_prefix}.{key}"
        rule = next(((m, target) for pattern, target in recipe.rules if (m := re.fullmatch(pattern, full_key))), None)
        if rule is None:
            unmatched.append(key)
            continue
        match, target = rule
        if target is None:
            dropped.append(key)
            continue
        if recipe.transposed and re.fullmatch(recipe.transposed, full_key):
            tensor = tensor.t()
        if full_key == "final_logits_bias":
            tensor = tensor.reshape(-1)  # (1, vocab) -> (vocab,)
        targets = (target,) if isinstance(target, str) else target
        for template, piece in zip(targets, tensor.chunk(len(targets), dim=0), strict=True):  # fused qkv: split
            name = match.expand(template)
            if not has_head:  # a base-model target has no `model.` wrapper
                name = name.removeprefix("model.")
            mapped[name] = piece.contiguous()

    expected = model.state_dict()
    aliases = _tied_aliases(model)
    missing = [k for k in expected if k not in mapped and not any(a in mapped for a in aliases.get(k, ()))]
    unexpected = [k for k in mapped if k not in expected]
    mismatched = [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in mapped.items()
        if k in expected and v.shape != expected[k].shape
    ]
    errors = []
    if unmatched:
        errors.append(f"source weights with no fourfold counterpart: {unmatched}")
    if unexpected:
        errors.append(f"mapped names the fourfold model does not have: {unexpected}")
    if missing:
        errors.append(f"fourfold weights left unfilled: {missing}")
    if mismatched:
        errors.append(f"shape mismatches: {mismatched}")
    if errors:
        raise ConversionError(f"Converting {type(source).__name__} failed:\n- " + "\n- ".join(errors))
    model.load_state_dict(mapped, strict=False)
    if dropped:
        logger.warning("Dropped source weights with no fourfold counterpart (outputs unaffected): %s", dropped)
    return dropped


def _tied_aliases(model: torch.nn.Module) -> dict[str, set[str]]:
    """State-dict keys that share storage with other keys (tied embeddings)."""
    by_pointer: dict[int, set[str]] = {}
    for name, tensor in model.state_dict().items():
        by_pointer.setdefault(tensor.data_ptr(), set()).add(name)
    return {name: names - {name} for names in by_pointer.values() for name in names}


@torch.no_grad()
def _verify(source: PreTrainedModel, model: FourfoldPreTrainedModel) -> float:
    """Max abs difference of the two models' main outputs on a short random batch (2 x 8 tokens, one padded)."""
    generator = torch.Generator().manual_seed(0)
    vocab = source.config.vocab_size
    input_ids = torch.randint(0, vocab, (2, 8), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    pad = source.config.pad_token_id
    if pad is not None:
        input_ids = input_ids.masked_fill(input_ids == pad, (pad + 1) % vocab).masked_fill(attention_mask == 0, pad)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    if source.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = input_ids[:, :5]
    was_training = source.training
    source.eval()
    expected, actual = source(**inputs), model(**inputs)
    source.train(was_training)
    name = "logits" if "logits" in expected else "last_hidden_state"
    real = attention_mask.bool() if not source.config.is_encoder_decoder else slice(None)
    diff = (expected[name] - actual[name])[real].abs().max().item()
    if diff > VERIFY_TOLERANCE:
        raise ConversionError(f"The converted model's {name} differ from the source's by {diff:.2e}.")
    return diff


def _save(
    model: FourfoldPreTrainedModel,
    source: PreTrainedModel,
    src: str | PreTrainedModel,
    dst: str,
    architecture: str,
    dropped: list[str],
    max_diff: float | None,
) -> None:
    """Fourfold checkpoint (with its Hub code), the source tokenizer if it loads, `conversion.json` and a model
    card."""
    model.save_pretrained(dst)
    name = src if isinstance(src, str) else source.name_or_path
    if name:
        try:
            AutoTokenizer.from_pretrained(name).save_pretrained(dst)
        except (OSError, ValueError, TypeError) as error:
            logger.warning("No tokenizer saved: %s could not be loaded as one (%s).", name, error)
    record = {
        "base_model": name or None,
        "source_class": type(source).__name__,
        "source_model_type": source.config.model_type,
        "architecture": architecture,
        "fourfold_class": type(model).__name__,
        "dropped_weights": dropped,
        "source_has_head": model.__class__ is not ARCHITECTURES[architecture].base_model,
        "verified_max_abs_diff": max_diff,
    }
    (Path(dst) / "conversion.json").write_text(json.dumps(record, indent=2) + "\n")
    write_model_card(dst)  # names the source as `base_model` (read from conversion.json)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fourfold convert",
        description="Import a BERT/RoBERTa, GPT-2, Llama or BART checkpoint as a fourfold model, with logit parity.",
    )
    parser.add_argument("src", help="source: a local folder or a Hub name (set HF_HUB_OFFLINE=1 to stay offline)")
    parser.add_argument("dst", help="output folder: fourfold checkpoint, tokenizer and conversion.json")
    parser.add_argument(
        "--as",
        dest="architecture",
        choices=sorted(ARCHITECTURES),
        help="fourfold configuration (default: the source's own; 'prefix-lm' for a GPT-2 or Llama causal LM)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the parity check on a random batch")
    args = parser.parse_args(argv)
    try:
        model = convert(args.src, args.dst, args.architecture, verify=not args.no_verify)
    except OSError as error:  # transformers could not find or read SRC
        raise UsageError(
            f"{args.src} could not be loaded ({one_line(error)})", "pass a checkpoint folder or a Hub name"
        ) from error
    print(f"Converted {args.src} -> {args.dst} ({type(model).__name__}).")
    if type(model) is architecture_of(model.config.model_type).base_model:
        print("The source has no head: the checkpoint is the base model, and a head loaded on it starts fresh.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

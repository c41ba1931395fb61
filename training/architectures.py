"""The four configurations as records: everything the training side needs to know about each, in one place.

    name        model_type            pretraining head                       objectives (default first)
    encoder     fourfold-encoder      FourfoldEncoderForMaskedLM             mlm, electra
    decoder     fourfold-decoder      FourfoldDecoderForCausalLM             clm
    prefix-lm   fourfold-prefix-lm    FourfoldPrefixLMForCausalLM            prefix-lm, ul2
    seq2seq     fourfold-seq2seq      FourfoldSeq2SeqForConditionalGeneration span-corruption, ul2

An `Architecture` names its classes, its objectives (`Objective`: the collator, how long a raw row is cut, which
`ObjectiveArguments` it reads, the sample writer), its tokenizer (`TokenizerSpec`: algorithm, special tokens and
template), how a pretraining document is framed, what fine-tuning needs to know (a prompt is a prefix; where PEFT's
prompt methods work), and what a model card says about it (`CardText`). The scripts look a record up
(`ARCHITECTURES[name]`, `architecture_of(model_type)`) and call its fields; nothing outside `modeling/` branches on
an architecture's name. `model_type` comes from the config class, so there is one spelling of each; a test checks
that this registry and the model types `modeling/` registers are the same four.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fourfold.modeling import (
    FourfoldConfig,
    FourfoldDecoderConfig,
    FourfoldDecoderForCausalLM,
    FourfoldDecoderModel,
    FourfoldEncoderConfig,
    FourfoldEncoderForMaskedLM,
    FourfoldEncoderModel,
    FourfoldPrefixLMConfig,
    FourfoldPrefixLMForCausalLM,
    FourfoldPrefixLMModel,
    FourfoldPreTrainedModel,
    FourfoldSeq2SeqConfig,
    FourfoldSeq2SeqForConditionalGeneration,
    FourfoldSeq2SeqModel,
)
from fourfold.training import samples
from fourfold.training.chat_template import DEFAULT_CHAT_TEMPLATE
from fourfold.training.collators import (
    CausalLMCollator,
    MaskedLMCollator,
    MixtureOfDenoisersCollator,
    PrefixLMCollator,
    PrefixLMMixtureOfDenoisersCollator,
    SpanCorruptionCollator,
    compute_input_and_target_lengths,
    prefix_lm_raw_length,
)
from fourfold.training.electra import ReplacedTokenDetection, save_electra
from fourfold.training.errors import UsageError, closest
from fourfold.training.outputs import save_atomically

# A collator factory: (tokenizer, objective arguments, seed, block size) -> collator. The arguments are
# `pretrain.ObjectiveArguments` (any object with its fields).
CollatorFactory = Callable[[PreTrainedTokenizerBase, Any, int | None, int], Callable]


def _frozen(mapping: dict) -> Mapping:
    return MappingProxyType(mapping)


# --------------------------------------------------------------------------------------------------------------------
# The record types
# --------------------------------------------------------------------------------------------------------------------


def _build_head(head: type[PreTrainedModel], config: FourfoldConfig, args) -> nn.Module:
    return head(config)


def _save_with_trainer(trainer, model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> nn.Module:
    # On every process: sharded (FSDP, DeepSpeed) models gather their weights here. `_internal_call`: the Trainer
    # would upload the temporary folder under --push_to_hub; pretrain pushes once the files are in place.
    def save(folder: str) -> None:
        trainer.save_model(folder, _internal_call=True)

    save_atomically(save, trainer.args.output_dir, trainer.is_world_process_zero())
    return model


@dataclass(frozen=True)
class Objective:
    """A pretraining objective of one architecture.

    Args:
        name: the `--objective` value.
        options: the `ObjectiveArguments` fields it reads; setting any other objective option is an error.
        collator: builds the batch collator, which turns rows into the objective's inputs and labels.
        sample_writer: writes one sample from a prompt after training (`samples.py`).
        raw_length: tokens a raw row is cut to for `block_size` (corruption shortens or lengthens rows).
        model_length: the longest sequence the model then reads, checked against its positions.
        mode_tokens: UL2: the denoisers' mode tokens (and sentinels) join the tokenizer.
        build_model: the model to train, from the head class and the config; default: the head itself.
        save_model: saves the trained model (trainer, model, tokenizer) and returns the one to write samples with;
            default: `Trainer.save_model`.
        reports_perplexity: the evaluation loss is a per-token cross-entropy (ELECTRA's is a sum of two losses).
    """

    name: str
    options: tuple[str, ...]
    collator: CollatorFactory
    sample_writer: samples.SampleWriter
    raw_length: Callable[[int, Any], int] = lambda block_size, args: block_size
    model_length: Callable[[int, Any], int] = lambda block_size, args: block_size
    mode_tokens: bool = False
    build_model: Callable[[type[PreTrainedModel], FourfoldConfig, Any], nn.Module] = _build_head
    save_model: Callable[[Any, nn.Module, PreTrainedTokenizerBase], nn.Module] = _save_with_trainer
    reports_perplexity: bool = True


@dataclass(frozen=True)
class TokenizerSpec:
    """An architecture's tokenizer: what `train_tokenizer` builds and what a loaded one must have.

    Args:
        algorithm: the default algorithm of a trained tokenizer ("wordpiece", "bpe" or "unigram").
        special_tokens: `PreTrainedTokenizerFast` keyword arguments (pad first: it gets id 0).
        first / last: the tokens the template puts before / after a text (`None`: nothing).
        sentinels: span corruption's `<extra_id_i>` tokens are added (`--num_sentinels`).
        required: token attribute -> what needs it; a loaded tokenizer without one is refused.
        pad_unlike_eos: pad must differ from eos, or the loss would ignore every end of text.
        decoder_starts_with_pad: the decoder's first input is the pad token (T5's convention).
        chat_template: the Jinja chat template a tokenizer without one gets (`chat_template.py`); `None`: none.
    """

    algorithm: str
    special_tokens: Mapping[str, str]
    first: str | None
    last: str | None
    required: Mapping[str, str]
    sentinels: bool = False
    pad_unlike_eos: bool = True
    decoder_starts_with_pad: bool = False
    chat_template: str | None = None


@dataclass(frozen=True)
class CardText:
    """What a model card says about a configuration."""

    name: str
    attention: str
    objective: str
    like: str
    intended_use: str
    limitations: str


@dataclass(frozen=True)
class Architecture:
    """One of the four configurations (see the module docstring).

    Args:
        name: the preset and recipe spelling ("prefix-lm"); `model_type` is the config class's ("fourfold-prefix-lm").
        config_class / base_model / pretraining_head: its classes in `fourfold.modeling`.
        objectives: its pretraining objectives; the first is the default.
        tokenizer: its tokenizer (`TokenizerSpec`).
        framing: how a pretraining document is framed (`data.FRAMINGS`): the tokenizer's template, the template
            and an appended eos (causal LMs: a prompt must not end in eos), or bare tokens (span corruption adds eos).
        prompt_is_prefix: prompt -> completion fine-tuning marks the prompt as the bidirectional prefix.
        prompt_tuning_tasks: the fine-tuning tasks PEFT's prompt and prefix tuning support here (tested).
        card: the model card's description.
        sentence_pooling: how sentence-transformers pools its token states into one embedding ("mean"), written
            beside each saved checkpoint (`sentence_transformers_files.py`); `None`: no sentence-transformers files.
    """

    name: str
    config_class: type[FourfoldConfig]
    base_model: type[FourfoldPreTrainedModel]
    pretraining_head: type[FourfoldPreTrainedModel]
    objectives: tuple[Objective, ...]
    tokenizer: TokenizerSpec
    framing: str
    card: CardText
    prompt_is_prefix: bool = False
    prompt_tuning_tasks: tuple[str, ...] = field(default=())
    sentence_pooling: str | None = None

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    @property
    def generates(self) -> bool:
        return self.pretraining_head.can_generate()

    def objective(self, name: str | None = None) -> Objective:
        """The objective called `name` (`None`: the default); raises naming the ones that fit."""
        if name is None:
            return self.objectives[0]
        for objective in self.objectives:
            if objective.name == name:
                return objective
        others = "; ".join(f"{a.name}: {' or '.join(o.name for o in a.objectives)}" for a in ARCHITECTURES.values())
        raise UsageError(
            f"--objective {name} does not fit the {self.name} architecture, which trains with "
            f"{' or '.join(repr(o.name) for o in self.objectives)}",
            f"drop --objective or pick the architecture of that objective ({others})",
        )


# --------------------------------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------------------------------


def _build_electra(head: type[PreTrainedModel], config: FourfoldConfig, args) -> nn.Module:
    """A generator and a discriminator, trained together (the head class is not used)."""
    return ReplacedTokenDetection.from_config(
        config, args.electra_generator_fraction, args.electra_discriminator_weight
    )


def _span_corruption_raw_length(block_size: int, args) -> int:
    return compute_input_and_target_lengths(block_size, args.noise_density, args.mean_noise_span_length)[0]


def _masked_lm(tokenizer, args, seed, block_size):
    return MaskedLMCollator(tokenizer, args.mlm_probability, whole_word_mask=args.whole_word_mask, seed=seed)


_MASKED_LM_OPTIONS = ("mlm_probability", "whole_word_mask")
_SPAN_OPTIONS = ("noise_density", "mean_noise_span_length")

MLM = Objective("mlm", _MASKED_LM_OPTIONS, _masked_lm, samples.fill_mask)
ELECTRA = Objective(
    "electra",
    (*_MASKED_LM_OPTIONS, "electra_generator_fraction", "electra_discriminator_weight"),
    _masked_lm,
    samples.fill_mask,  # with the generator: the discriminator does not fill in tokens
    build_model=_build_electra,
    save_model=save_electra,
    reports_perplexity=False,
)
CLM = Objective("clm", (), lambda tokenizer, args, seed, block_size: CausalLMCollator(tokenizer), samples.continue_text)
PREFIX = Objective(
    "prefix-lm",
    ("prefix_fraction",),
    lambda tokenizer, args, seed, block_size: PrefixLMCollator(tokenizer, args.prefix_fraction, seed=seed),
    samples.continue_text,
)
PREFIX_UL2 = Objective(
    "ul2",
    _SPAN_OPTIONS,
    # `max_length`: a document laid out longer than the block is an error, never a cut.
    lambda tokenizer, args, seed, block_size: PrefixLMMixtureOfDenoisersCollator(
        tokenizer, args.noise_density, args.mean_noise_span_length, seed=seed, max_length=block_size
    ),
    samples.ul2_continue_text,
    # [mode] input target in one row grows: rows are cut shorter.
    raw_length=lambda block_size, args: prefix_lm_raw_length(
        block_size, noise_density=args.noise_density, mean_noise_span_length=args.mean_noise_span_length
    ),
    mode_tokens=True,
)
SPAN_CORRUPTION = Objective(
    "span-corruption",
    _SPAN_OPTIONS,
    lambda tokenizer, args, seed, block_size: SpanCorruptionCollator(
        tokenizer, args.noise_density, args.mean_noise_span_length, seed=seed
    ),
    samples.denoise,
    raw_length=_span_corruption_raw_length,  # corruption shortens a row: cut it longer
)
SEQ2SEQ_UL2 = Objective(
    "ul2",
    _SPAN_OPTIONS,
    lambda tokenizer, args, seed, block_size: MixtureOfDenoisersCollator(
        tokenizer, args.noise_density, args.mean_noise_span_length, seed=seed
    ),
    samples.ul2_denoise,
    raw_length=_span_corruption_raw_length,
    # The S-denoiser's input is a whole row's prefix with its mode token and eos.
    model_length=lambda block_size, args: _span_corruption_raw_length(block_size, args) + 2,
    mode_tokens=True,
)

# --------------------------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------------------------

# bos/eos alias cls/sep, as in RoBERTa, so every tokenizer has all four ids.
_BERT_TOKENS = _frozen(
    dict(
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[CLS]",
        eos_token="[SEP]",
    )
)
_TEXT_TOKENS = _frozen(
    dict(pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>", mask_token="<mask>")
)
_PADDING = {"pad_token": "padding"}
_END = {**_PADDING, "eos_token": "marking the end of a text"}

# BERT: [CLS] text [SEP], [MASK] for masked LM.
ENCODER_TOKENIZER = TokenizerSpec(
    "wordpiece",
    _BERT_TOKENS,
    "[CLS]",
    "[SEP]",
    _frozen({**_PADDING, "mask_token": "masked-LM corruption"}),
    pad_unlike_eos=False,
)
# Llama: <s> text, no </s>: a prompt must be ready to continue (pretraining documents get </s> from their framing).
CAUSAL_TOKENIZER = TokenizerSpec("bpe", _TEXT_TOKENS, "<s>", None, _frozen(_END), chat_template=DEFAULT_CHAT_TEMPLATE)
# T5: text </s>, no bos (the decoder starts from pad), and sentinels <extra_id_0>, ... for span corruption.
SEQ2SEQ_TOKENIZER = TokenizerSpec(
    "unigram", _TEXT_TOKENS, None, "</s>", _frozen(_END), sentinels=True, decoder_starts_with_pad=True
)

# --------------------------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------------------------

ENCODER = Architecture(
    name="encoder",
    config_class=FourfoldEncoderConfig,
    base_model=FourfoldEncoderModel,
    pretraining_head=FourfoldEncoderForMaskedLM,
    objectives=(MLM, ELECTRA),
    tokenizer=ENCODER_TOKENIZER,
    framing="template",
    prompt_tuning_tasks=("sequence-classification",),
    sentence_pooling="mean",
    card=CardText(
        name="bidirectional encoder",
        attention="bidirectional: every token attends to every non-padding token",
        objective="masked language modelling: predict masked-out tokens from the context on both sides",
        like="BERT / RoBERTa",
        intended_use="text representations for classification, token tagging, extractive QA and retrieval; "
        "filling in masked tokens",
        limitations="it does not generate text left to right",
    ),
)
DECODER = Architecture(
    name="decoder",
    config_class=FourfoldDecoderConfig,
    base_model=FourfoldDecoderModel,
    pretraining_head=FourfoldDecoderForCausalLM,
    objectives=(CLM,),
    tokenizer=CAUSAL_TOKENIZER,
    framing="template+eos",
    prompt_tuning_tasks=("sequence-classification", "causal-lm"),
    card=CardText(
        name="causal decoder",
        attention="causal: every token attends to itself and earlier tokens",
        objective="causal language modelling: predict each next token",
        like="GPT-2 / Llama",
        intended_use="text continuation; classification from the last token",
        limitations="each token sees only its left context, so representations of early tokens are one-sided",
    ),
)
PREFIX_LM = Architecture(
    name="prefix-lm",
    config_class=FourfoldPrefixLMConfig,
    base_model=FourfoldPrefixLMModel,
    pretraining_head=FourfoldPrefixLMForCausalLM,
    objectives=(PREFIX, PREFIX_UL2),
    tokenizer=CAUSAL_TOKENIZER,
    framing="template+eos",
    prompt_is_prefix=True,
    card=CardText(
        name="prefix language model",
        attention="prefix: the prompt (prefix) attends bidirectionally within itself, the continuation is causal",
        objective="prefix language modelling: predict the continuation of a bidirectionally read prefix",
        like="T5's prefix LM / UniLM",
        intended_use="conditional generation where the whole prompt should be read at once "
        "(`generate()` takes the prompt as the prefix)",
        limitations="the prefix must be marked (`prefix_mask`) whenever the model is called outside `generate()`",
    ),
)
SEQ2SEQ = Architecture(
    name="seq2seq",
    config_class=FourfoldSeq2SeqConfig,
    base_model=FourfoldSeq2SeqModel,
    pretraining_head=FourfoldSeq2SeqForConditionalGeneration,
    objectives=(SPAN_CORRUPTION, SEQ2SEQ_UL2),
    tokenizer=SEQ2SEQ_TOKENIZER,
    framing="bare",
    card=CardText(
        name="encoder-decoder",
        attention="a bidirectional encoder, and a causal decoder that cross-attends to the encoder's final layer",
        objective="span corruption: reconstruct masked-out spans of the input (T5)",
        like="T5 / BART",
        intended_use="text-to-text tasks: summarisation, translation, rewriting; encoder features",
        limitations="a pretrained-only checkpoint fills in spans; it follows instructions only after fine-tuning",
    ),
)

# The one list of the four, in the order the README and the demo use.
ARCHITECTURES: Mapping[str, Architecture] = _frozen({a.name: a for a in (ENCODER, DECODER, PREFIX_LM, SEQ2SEQ)})
BY_MODEL_TYPE: Mapping[str, Architecture] = _frozen({a.model_type: a for a in ARCHITECTURES.values()})
# The pretraining arguments some objective reads (`pretrain.ObjectiveArguments` fields): a run records all of them,
# and setting one its objective does not read is an error.
OBJECTIVE_OPTIONS: tuple[str, ...] = tuple(
    sorted({option for a in ARCHITECTURES.values() for o in a.objectives for option in o.options})
)


def get_architecture(name: str) -> Architecture:
    """The record called `name` ("encoder", ...); raises naming the four."""
    if name not in ARCHITECTURES:
        raise UsageError(
            f"architecture {name!r} is not one of the four{closest(name, ARCHITECTURES)}",
            f"choose {', '.join(ARCHITECTURES)}",
        )
    return ARCHITECTURES[name]


def architecture_of(model_type: str | None) -> Architecture | None:
    """The record of a fourfold `model_type` ("fourfold-encoder"), or `None` for any other model."""
    return BY_MODEL_TYPE.get(model_type)

"""The four configurations: one stack, four attention patterns.

`FourfoldStack` is embeddings -> N x `FourfoldBlock` -> final norm. Its `attention_pattern` names its self-attention
mask builder in `masks.SELF_ATTENTION_MASKS` (looked up once, at construction); each forward builds the mask once and
every layer consumes it:

    encoder    "bidirectional"   every token sees every token              (FourfoldEncoderModel)
    decoder    "causal"          every token sees itself and the past      (FourfoldDecoderModel)
    prefix LM  "prefix"          causal, but the prefix sees all of itself (FourfoldPrefixLMModel)
    seq2seq    a "bidirectional" encoder stack, and a "causal" decoder stack whose blocks add cross-attention over
               the encoder's final layer                                  (FourfoldSeq2SeqModel)

Task heads live in `heads.py`; the pipelines transformers 5 dropped in `pipelines.py`, with extractive QA's windows and
answer decoding in `question_answering.py`. Reading order: configuration_fourfold -> masks -> layers -> this file ->
heads.
"""

import inspect
import os
import sys
from typing import ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPastAndCrossAttentions, Seq2SeqModelOutput
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .compat import (
    CACHE_NAMES,
    FOURFOLD_VERSION,
    TRANSFORMERS_REQUIREMENT,
    output_cache,
    resolve_cache,
    with_cache,
)
from .configuration_fourfold import (
    FourfoldConfig,
    FourfoldDecoderConfig,
    FourfoldEncoderConfig,
    FourfoldPrefixLMConfig,
    FourfoldSeq2SeqConfig,
)
from .layers import FourfoldAttention, FourfoldBlock, FourfoldRotaryEmbedding, make_norm
from .masks import SELF_ATTENTION_MASKS, cross_attention_mask

ATTENTION_PATTERNS = tuple(SELF_ATTENTION_MASKS)  # "bidirectional", "causal", "prefix"

# Every Auto class that applies to each model type, as `module.Class` inside a saved checkpoint folder: written into
# config.json on save so that `AutoModel*.from_pretrained(folder, trust_remote_code=True)` works without fourfold.
AUTO_MAP: dict[str, dict[str, str]] = {
    "fourfold-encoder": {
        "AutoConfig": "configuration_fourfold.FourfoldEncoderConfig",
        "AutoModel": "modeling_fourfold.FourfoldEncoderModel",
        "AutoModelForMaskedLM": "heads.FourfoldEncoderForMaskedLM",
        "AutoModelForSequenceClassification": "heads.FourfoldEncoderForSequenceClassification",
        "AutoModelForTokenClassification": "heads.FourfoldEncoderForTokenClassification",
        "AutoModelForQuestionAnswering": "heads.FourfoldEncoderForQuestionAnswering",
        "AutoModelForMultipleChoice": "heads.FourfoldEncoderForMultipleChoice",
    },
    "fourfold-decoder": {
        "AutoConfig": "configuration_fourfold.FourfoldDecoderConfig",
        "AutoModel": "modeling_fourfold.FourfoldDecoderModel",
        "AutoModelForCausalLM": "heads.FourfoldDecoderForCausalLM",
        "AutoModelForSequenceClassification": "heads.FourfoldDecoderForSequenceClassification",
        "AutoModelForTokenClassification": "heads.FourfoldDecoderForTokenClassification",
    },
    "fourfold-prefix-lm": {
        "AutoConfig": "configuration_fourfold.FourfoldPrefixLMConfig",
        "AutoModel": "modeling_fourfold.FourfoldPrefixLMModel",
        "AutoModelForCausalLM": "heads.FourfoldPrefixLMForCausalLM",
        "AutoModelForSequenceClassification": "heads.FourfoldPrefixLMForSequenceClassification",
    },
    "fourfold-seq2seq": {
        "AutoConfig": "configuration_fourfold.FourfoldSeq2SeqConfig",
        "AutoModel": "modeling_fourfold.FourfoldSeq2SeqModel",
        "AutoModelForSeq2SeqLM": "heads.FourfoldSeq2SeqForConditionalGeneration",
        "AutoModelForSequenceClassification": "heads.FourfoldSeq2SeqForSequenceClassification",
        "AutoModelForTextEncoding": "heads.FourfoldSeq2SeqEncoderModel",
    },
}


# PEFT's default target modules for the four model types, as PEFT ships them for Llama: LoRA and its kin adapt the
# attention and MLP projections (in the seq2seq decoder the names also match cross-attention, as intended; a plain
# MLP has no gate_proj, which PEFT skips), IA3 rescales keys, values and the MLP output.
PEFT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PEFT_IA3_TARGET_MODULES = ["k_proj", "v_proj", "down_proj"]
PEFT_IA3_FEEDFORWARD_MODULES = ["down_proj"]  # IA3 scales a feed-forward layer's input rather than its output


def register_peft_defaults() -> bool:
    """Adds fourfold's model types to PEFT's default target-module tables, if PEFT is imported (the Hub code never
    imports it): then `LoraConfig(task_type=...)` without `target_modules` works on a fourfold model in any script.
    `import fourfold` calls it, and so does loading a model class, so a checkpoint loaded with `trust_remote_code`
    after `import peft` gets the defaults too. Idempotent; user entries are kept. Returns whether PEFT was there.

    PEFT copies its LoRA table for each LoRA-like tuner (LoHa, LoKr, VeRA, ...) at import time, so every table named
    `TRANSFORMERS_MODELS_TO_*_TARGET_MODULES_MAPPING` gets the entry.
    """
    constants = sys.modules.get("peft.utils.constants")
    if constants is None:
        return False
    for name in dir(constants):
        if name.startswith("TRANSFORMERS_MODELS_TO_") and name.endswith("_TARGET_MODULES_MAPPING"):
            defaults = PEFT_IA3_TARGET_MODULES if "_IA3_" in name else PEFT_TARGET_MODULES
            for model_type in AUTO_MAP:
                getattr(constants, name).setdefault(model_type, list(defaults))
    feedforward = getattr(constants, "TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING", None)
    for model_type in AUTO_MAP if feedforward is not None else ():
        feedforward.setdefault(model_type, list(PEFT_IA3_FEEDFORWARD_MODULES))
    return True


register_peft_defaults()  # a script that imported peft before loading a (remote-code) fourfold model


class FourfoldPreTrainedModel(PreTrainedModel):
    """Shared HF plumbing: backend support flags, output recording, Hub-portable saving, and the config check of
    every head. Initialisation is transformers' default: normal(0, initializer_range) for linear and embedding
    weights, zero biases, unit norms, recomputed rotary buffers; with `zero_init_residual`, each block's output
    projections (`o_proj`, `down_proj`) start at zero."""

    config_class = FourfoldConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["FourfoldBlock"]
    _skip_keys_device_placement: ClassVar[list[str]] = CACHE_NAMES
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = True  # refused at mask-building time where flash cannot honour the pattern (prefix LM)
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs: ClassVar[dict] = {
        "hidden_states": FourfoldBlock,
        "attentions": OutputRecorder(FourfoldAttention, index=1, layer_name="self_attn"),
        "cross_attentions": OutputRecorder(FourfoldAttention, index=1, layer_name="cross_attn"),
    }

    def __init__(self, config: FourfoldConfig, *args, **kwargs):
        expected = self.config_class.model_type
        if expected and getattr(config, "model_type", None) != expected:
            raise ValueError(
                f"{type(self).__name__} needs a {self.config_class.__name__} (model_type {expected!r}), got "
                f"{type(config).__name__} (model_type {getattr(config, 'model_type', None)!r}). Build the config "
                f"with {self.config_class.__name__}(...)."
            )
        super().__init__(config, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if self.config.zero_init_residual and isinstance(module, nn.Linear) and _is_residual_output(self, module):
            # transformers' init functions leave weights loaded from a checkpoint alone (`_is_hf_initialized`).
            init.zeros_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
            return
        super()._init_weights(module)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, plus the Hub code: a complete `auto_map` in config.json and this
        folder's modules next to the weights, so the checkpoint loads with `trust_remote_code=True` anywhere; and
        which fourfold code that is, with the transformers releases it was tested with (`compat.py`)."""
        self.config.auto_map = AUTO_MAP[self.config.model_type]
        self.config.fourfold = {"version": FOURFOLD_VERSION, "transformers": TRANSFORMERS_REQUIREMENT}
        push_to_hub = kwargs.pop("push_to_hub", False)  # upload only once the code files are in place
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            for path in hub_module_files():
                with open(path, "rb") as source:
                    code = source.read()
                with open(os.path.join(save_directory, os.path.basename(path)), "wb") as target:
                    target.write(code)
        if push_to_hub:
            repo_id = kwargs.get("repo_id", os.path.basename(os.path.normpath(save_directory)))
            self.push_to_hub(repo_id, token=kwargs.get("token"), commit_message=kwargs.get("commit_message"))


def _is_residual_output(model: nn.Module, linear: nn.Linear) -> bool:
    """Whether `linear` ends a residual branch of a block: an attention's `o_proj` or an MLP's `down_proj`."""
    for block in model.modules():
        if isinstance(block, FourfoldBlock):
            attentions = (block.self_attn, block.cross_attn) if block.cross_attn is not None else (block.self_attn,)
            if any(linear is projection for projection in (*(a.o_proj for a in attentions), block.mlp.down_proj)):
                return True
    return False


def hub_module_files() -> list[str]:
    """The files of every module that travels with a checkpoint: this folder but its `__init__`.

    Named here by relative imports, on purpose: a checkpoint loaded with `trust_remote_code=True` runs from a copy
    that transformers makes of the class's module and of every module it imports relatively, recursively. These lazy
    imports make that copy the whole set whichever class was loaded, so a model loaded that way and saved again (by
    `save_pretrained`, sentence-transformers, TRL) still carries every module its config's `auto_map` names.
    """
    from .heads import FourfoldPooler
    from .loss import chunked_lm_loss
    from .pipelines import register_pipelines
    from .question_answering import decode_answers

    members = (FourfoldConfig, with_cache, FourfoldBlock, cross_attention_mask, FourfoldStack, FourfoldPooler)
    members += (chunked_lm_loss, register_pipelines, decode_answers)
    return sorted({inspect.getfile(member) for member in members})


class FourfoldStack(FourfoldPreTrainedModel):
    """Embeddings -> blocks -> final norm, with its self-attention pattern fixed at construction.

    Args:
        config: the model config.
        attention_pattern: "bidirectional", "causal" or "prefix" (see the module docstring); subclasses set it.
        has_cross_attention: blocks attend to `encoder_hidden_states` (the seq2seq decoder).
        num_layers: depth; defaults to `config.num_hidden_layers`.
    """

    attention_pattern: ClassVar[str] = ""

    def __init__(
        self,
        config: FourfoldConfig,
        attention_pattern: str | None = None,
        has_cross_attention: bool = False,
        num_layers: int | None = None,
    ):
        super().__init__(config)
        self.attention_pattern = attention_pattern or self.attention_pattern
        if self.attention_pattern not in ATTENTION_PATTERNS:
            raise ValueError(f"attention_pattern={self.attention_pattern!r}; choose one of {ATTENTION_PATTERNS}.")
        self.self_attention_mask = SELF_ATTENTION_MASKS[self.attention_pattern]  # who sees whom: looked up once
        self.has_cross_attention = has_cross_attention
        is_causal = self.attention_pattern != "bidirectional"

        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = None
        if config.position_embedding_type == "absolute":
            num_positions = config.max_position_embeddings + config.position_offset
            self.embed_positions = nn.Embedding(num_positions, config.hidden_size)
        self.embed_token_types = None
        if config.type_vocab_size > 0:
            self.embed_token_types = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.embedding_norm = make_norm(config) if config.embedding_norm else None
        self.embedding_dropout = nn.Dropout(config.hidden_dropout)
        self.rotary_emb = FourfoldRotaryEmbedding(config) if config.position_embedding_type == "rope" else None

        self.layers = nn.ModuleList(
            FourfoldBlock(config, i, is_causal=is_causal, has_cross_attention=has_cross_attention)
            for i in range(num_layers or config.num_hidden_layers)
        )
        self.norm = make_norm(config) if config.final_norm else None
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        encoder_position_ids: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        r"""
        Args:
            input_ids / inputs_embeds: the tokens, (batch, length); exactly one of the two.
            attention_mask: (batch, past + length), 1 for real tokens, 0 for padding.
            position_ids: (batch, length); defaults to past + arange. In a packed batch they restart at 0 at every
                document start, and no token then attends across a document boundary.
            token_type_ids: (batch, length) segment ids, when `config.type_vocab_size > 0`.
            cache: the KV cache (`DynamicCache`; `EncoderDecoderCache` for the seq2seq decoder); also accepted as
                `past_key_values`, its name before transformers 5.24.
            prefix_mask: prefix LM only: (batch, <= past + length), 1 = token in the bidirectional prefix.
            encoder_hidden_states / encoder_attention_mask / encoder_position_ids: seq2seq decoder only: the final
                encoder layer, its padding mask and (packed batches) its position ids.
            use_cache: return the cache for the next step (causal stacks only).
        """
        self._check_inputs(input_ids, inputs_embeds, prefix_mask)
        batch_size, length = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        cache, self_attention_cache, past_length = self._prepare_cache(resolve_cache(cache, past_key_values), use_cache)
        self._check_length(past_length + length)
        if prefix_mask is not None:
            check_prefix_mask(prefix_mask, batch_size, past_length + length)

        packed_position_ids = position_ids  # only positions the caller gave can mark document boundaries
        position_ids = self._default_position_ids(input_ids, position_ids, length, past_length)
        hidden_states = self.embed(input_ids, inputs_embeds, position_ids, token_type_ids)

        # Who sees whom: built once here, consumed by every layer.
        self_attention_mask = self.self_attention_mask(
            self.config,
            hidden_states,
            attention_mask=attention_mask,
            cache=self_attention_cache,
            position_ids=packed_position_ids,
            prefix_mask=prefix_mask,
        )
        cross_mask = None
        if self.has_cross_attention:
            cross_mask = cross_attention_mask(
                self.config,
                hidden_states,
                encoder_hidden_states,
                encoder_attention_mask,
                packed_position_ids,
                encoder_position_ids,
            )

        position_embeddings = self.rotary_emb(hidden_states, position_ids) if self.rotary_emb is not None else None
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                encoder_hidden_states,
                attention_mask=self_attention_mask,
                cross_attention_mask=cross_mask,
                position_embeddings=position_embeddings,
                cache=cache,
                position_ids=position_ids,
                **kwargs,
            )
        if self.norm is not None:
            hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden_states, **with_cache(cache if use_cache else None)
        )

    def _check_inputs(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor | None, prefix_mask: torch.Tensor | None
    ) -> None:
        """Exactly one of ids and embeddings, ids inside the vocabulary, and a prefix only for the prefix LM."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if input_ids is not None:
            check_token_ids(input_ids, self.config.vocab_size)
        if prefix_mask is not None and self.attention_pattern != "prefix":
            raise ValueError(
                f"prefix_mask is only for the prefix LM (fourfold-prefix-lm); this stack's attention is "
                f"{self.attention_pattern!r}. Drop prefix_mask or use a FourfoldPrefixLM model."
            )

    def _prepare_cache(
        self, cache: Cache | None, use_cache: bool | None
    ) -> tuple[Cache | None, Cache | None, int | torch.Tensor]:
        """(cache, its self-attention part, the number of tokens it holds). The cache is the given one, or with
        `use_cache` a new empty one for a causal stack (an `EncoderDecoderCache` when the blocks cross-attend);
        bidirectional stacks never cache. The count is an int, or for a static cache a 0-dim tensor (so that
        compiled decoding does not recompile at every step)."""
        if use_cache and cache is None and self.attention_pattern != "bidirectional":
            cache = DynamicCache(config=self.config)
            if self.has_cross_attention:
                cache = EncoderDecoderCache(cache, DynamicCache(config=self.config))
        self_attention_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        past_length = self_attention_cache.get_seq_length() if self_attention_cache is not None else 0
        return cache, self_attention_cache, past_length

    def _default_position_ids(
        self,
        input_ids: torch.LongTensor | None,
        position_ids: torch.LongTensor | None,
        length: int,
        past_length: int | torch.Tensor,
    ) -> torch.LongTensor:
        """The caller's position ids, else past + 0, 1, 2, ...; with `config.padding_aware_positions` (RoBERTa) the
        count runs over non-pad tokens only and pads get -1:

            input_ids [5, 6, pad, pad], past 0 -> positions [0, 1, -1, -1]
        """
        if position_ids is not None:
            return position_ids
        if self.config.padding_aware_positions and input_ids is not None:
            real = (input_ids != self.config.pad_token_id).long()
            return (torch.cumsum(real, dim=1) + past_length) * real - 1
        return (torch.arange(length, device=self.device) + past_length).unsqueeze(0)

    def embed(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor | None,
        position_ids: torch.LongTensor,
        token_type_ids: torch.LongTensor | None,
    ) -> torch.Tensor:
        """Token (+ learned position) (+ token type) embeddings, optionally normalised."""
        hidden_states = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if self.config.scale_embeddings:
            hidden_states = hidden_states * self.config.hidden_size**0.5
        if self.embed_positions is not None:
            hidden_states = hidden_states + self.embed_positions(position_ids + self.config.position_offset)
        if self.embed_token_types is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros(hidden_states.shape[:2], dtype=torch.long, device=hidden_states.device)
            hidden_states = hidden_states + self.embed_token_types(token_type_ids)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids were given but config.type_vocab_size is 0: set type_vocab_size > 0.")
        if self.embedding_norm is not None:
            hidden_states = self.embedding_norm(hidden_states)
        return self.embedding_dropout(hidden_states)

    def _check_length(self, total_length: int | torch.Tensor) -> None:
        limit = self.config.max_position_embeddings
        if self.embed_positions is None:
            return
        if isinstance(total_length, torch.Tensor):  # a static cache's count: checked on the device, without a sync
            torch._assert_async(total_length <= limit, f"sequence length exceeds max_position_embeddings={limit}")
        elif total_length > limit:
            raise ValueError(
                f"Sequence length {total_length} exceeds max_position_embeddings={limit} (learned positions). "
                "Truncate the input (tokenizer truncation=True, max_length) or use a config with more positions."
            )


def check_token_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """Token ids must index the embedding. On CPU: a clear error. On accelerators: an asynchronous device assert, so
    no host sync is added to the forward."""
    if input_ids.device.type == "cpu" and not torch.compiler.is_compiling():
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab_size):
            bad = input_ids[(input_ids < 0) | (input_ids >= vocab_size)].unique()[:5].tolist()
            raise ValueError(
                f"input_ids contain ids {bad} outside the vocabulary [0, {vocab_size}). The tokenizer and the model "
                "disagree: use the model's tokenizer, or model.resize_token_embeddings(len(tokenizer))."
            )
    else:
        torch._assert_async(
            ((input_ids >= 0) & (input_ids < vocab_size)).all(), f"input_ids outside the vocabulary [0, {vocab_size})"
        )


def check_labels(
    labels: torch.Tensor, num_classes: int, shape: tuple[int, ...] | torch.Size | None = None, what: str = "token"
) -> None:
    """Class-id labels (token ids for the LM heads, classes for the classifiers) must be -100 (ignored) or in
    [0, num_classes), and have the outputs' `shape` (one per `what`). Shapes are checked everywhere; values on the
    CPU with a clear error, on accelerators with an asynchronous device assert (no host sync)."""
    if shape is not None and tuple(labels.shape) != tuple(shape):
        raise ValueError(
            f"labels have shape {tuple(labels.shape)}; expected {tuple(shape)}, one label per {what} (-100 to "
            "ignore one). Build them with the inputs they belong to (the collator pads both alike)."
        )
    if labels.is_floating_point():  # regression / multi-label targets: not class ids
        return
    valid = (labels == -100) | ((labels >= 0) & (labels < num_classes))
    if labels.device.type == "cpu" and not torch.compiler.is_compiling():
        if labels.numel() and not valid.all():
            bad = labels[~valid].unique()[:5].tolist()
            raise ValueError(
                f"labels contain {bad}, outside [0, {num_classes}) and not -100 (ignored): each label is a class id "
                f"below {num_classes}. Check the label vocabulary (num_labels, or the tokenizer for an LM head)."
            )
    else:
        torch._assert_async(valid.all(), f"labels outside [0, {num_classes}) and not -100")


def check_prefix_mask(prefix_mask: torch.Tensor, batch_size: int, total_length: int | torch.Tensor) -> None:
    static_cache = isinstance(total_length, torch.Tensor)  # its count is checked on the device, without a sync
    if (
        prefix_mask.dim() != 2
        or prefix_mask.shape[0] != batch_size
        or (not static_cache and prefix_mask.shape[1] > total_length)
    ):
        raise ValueError(
            f"prefix_mask has shape {tuple(prefix_mask.shape)}; expected (batch={batch_size}, length <= "
            f"{total_length}): one row per sequence, 1 for prefix tokens, covering the sequence from its start."
        )
    if static_cache:
        torch._assert_async(total_length >= prefix_mask.shape[1], "prefix_mask is longer than the sequence")


class FourfoldEncoderModel(FourfoldStack):
    """Bidirectional encoder (BERT-style): every token attends to every non-padding token."""

    config_class = FourfoldEncoderConfig
    attention_pattern = "bidirectional"


class FourfoldDecoderModel(FourfoldStack):
    """Causal decoder (GPT-style): every token attends to itself and earlier tokens."""

    config_class = FourfoldDecoderConfig
    attention_pattern = "causal"


class FourfoldPrefixLMModel(FourfoldStack):
    """Prefix LM: one causal stack whose prefix (`prefix_mask == 1`) attends bidirectionally within itself."""

    config_class = FourfoldPrefixLMConfig
    attention_pattern = "prefix"


class FourfoldSeq2SeqModel(FourfoldPreTrainedModel):
    """Encoder-decoder: a bidirectional encoder stack and a causal decoder stack whose cross-attention reads the
    final encoder layer. Both stacks and the output projection share one embedding, `shared`."""

    config_class = FourfoldSeq2SeqConfig
    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
    }

    def __init__(self, config: FourfoldSeq2SeqConfig):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.hidden_size)
        self.encoder = FourfoldStack(config, attention_pattern="bidirectional")
        self.decoder = FourfoldStack(
            config, attention_pattern="causal", has_cross_attention=True, num_layers=config.num_decoder_layers
        )
        # Tied by `_tied_weights_keys` (parameter tying), not by sharing the module: transformers' loader tracks
        # missing keys per parameter name, and a shared module would hide a missing `shared.weight`.
        self.post_init()

    def init_parallel_plans(self) -> None:
        """transformers' plan merge, less the config's one-stack entries ("layers.*"), which name nothing at this
        level: the stacks `encoder` and `decoder` contribute them under their own prefixes. `shared` is the tied
        embedding of both stacks and the LM head, so it is sharded as they are."""
        super().init_parallel_plans()
        stacks = ("encoder.", "decoder.")
        plan = {name: style for name, style in self._tp_plan.items() if name.startswith(stacks)}
        self._tp_plan = {"shared": "embedding_rowwise", **plan}

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = self.encoder.embed_tokens = self.decoder.embed_tokens = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        decoder_position_ids: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> Seq2SeqModelOutput:
        r"""
        Args:
            input_ids / inputs_embeds / attention_mask / position_ids: the encoder input.
            decoder_input_ids / decoder_inputs_embeds / decoder_attention_mask / decoder_position_ids: the decoder
                input (for training, `labels` shifted right; see `prepare_decoder_input_ids_from_labels`).
            encoder_outputs: a precomputed encoder output (as in `generate()`), skipping the encoder.
            cache: an `EncoderDecoderCache` (or `past_key_values`, its name before transformers 5.24).
        """
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
                **kwargs,
            )
        elif isinstance(encoder_outputs, (tuple, list)):  # return_dict=False output of the encoder
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError(
                "The seq2seq decoder needs decoder_input_ids (or labels, from which the heads derive them)."
            )
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            position_ids=decoder_position_ids,
            inputs_embeds=decoder_inputs_embeds,
            cache=resolve_cache(cache, past_key_values),
            encoder_hidden_states=encoder_outputs.last_hidden_state,  # the final encoder layer, always
            encoder_attention_mask=attention_mask,
            encoder_position_ids=position_ids,
            use_cache=use_cache,
            **kwargs,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            **with_cache(output_cache(decoder_outputs)),
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )

"""Task heads of the four configurations, named as transformers names them (`Fourfold<Arch><Head>`).

Every head wraps its configuration's base model as `self.model` and computes its loss through
`self.loss_function`, so the Trainer's `num_items_in_batch` (correct loss scaling under gradient accumulation)
is honoured. Pooling for sequence classification:
    encoder      `config.classifier_pooling`: the first token ([CLS]) through a tanh pooler, as in BERT, or the
                 mean over non-padding tokens (multiple choice likewise)
    decoder      the last non-padding token (it is the only one that has seen the whole input)
    prefix LM    the last non-padding token, with the whole input as the bidirectional prefix
    seq2seq      the mean of the final encoder layer over non-padding tokens (the decoder is not used)
"""

from typing import ClassVar

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import (
    BaseModelOutput,
    CausalLMOutputWithPast,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    Seq2SeqLMOutput,
    SequenceClassifierOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import logging
from transformers.utils.generic import can_return_tuple

from .compat import CACHE_NAME, output_cache, resolve_cache, with_cache
from .configuration_fourfold import (
    FourfoldConfig,
    FourfoldDecoderConfig,
    FourfoldEncoderConfig,
    FourfoldPrefixLMConfig,
    FourfoldSeq2SeqConfig,
)
from .layers import make_norm, training_fast_path
from .loss import chunked_lm_loss, use_chunked_loss
from .masks import prefix_lm_mask
from .modeling_fourfold import (
    FourfoldDecoderModel,
    FourfoldEncoderModel,
    FourfoldPrefixLMModel,
    FourfoldPreTrainedModel,
    FourfoldSeq2SeqModel,
    FourfoldStack,
    check_labels,
)

logger = logging.get_logger(__name__)

# --------------------------------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------------------------------


class FourfoldPooler(nn.Module):
    """The encoder classifiers' summary of a sequence, by `config.classifier_pooling`: "cls" is BERT's pooler (the
    first token's final state through a dense layer and tanh); "mean" averages the final states over non-padding
    tokens and has no weights."""

    def __init__(self, config: FourfoldEncoderConfig):
        super().__init__()
        self.pooling = config.classifier_pooling
        if self.pooling == "cls":
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pooling == "mean":
            return masked_mean(hidden_states, attention_mask)
        return self.activation(self.dense(hidden_states[:, 0]))


def masked_mean(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, H) -> (B, H): the mean over the tokens the attention mask keeps. A mask longer than T (prefix tuning's
    virtual keys come first) is read for its last T positions."""
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    weights = attention_mask[:, -hidden_states.shape[1] :, None].to(hidden_states.dtype)  # (B, T, 1)
    return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class FourfoldMaskedLMHead(nn.Module):
    """BERT's prediction head: `transform` (dense -> activation -> norm), then the vocabulary projection `decoder`
    (with bias). The masked-LM training path calls `transform` on the masked positions alone."""

    def __init__(self, config: FourfoldConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act_fn = ACT2FN[config.hidden_act]
        self.norm = make_norm(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def transform(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """dense -> activation -> norm: the hidden states the vocabulary projection reads, (..., hidden)."""
        return self.norm(self.act_fn(self.dense(hidden_states)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


def classifier_dropout(config: FourfoldConfig) -> nn.Dropout:
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout
    return nn.Dropout(p)


def last_token_index(
    input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, pad_token_id: int | None, length: int
) -> torch.Tensor | int:
    """Index of each row's last real token: the rightmost 1 of the attention mask (left or right padding), else the
    rightmost non-pad id, else the last position."""
    if attention_mask is not None:
        real = attention_mask[:, -length:]  # prefix tuning prepends virtual tokens to the mask
    elif input_ids is not None and pad_token_id is not None:
        real = input_ids != pad_token_id
    else:
        return length - 1
    positions = torch.arange(length, device=real.device)
    return (positions * real.to(positions.dtype)).argmax(-1)


def default_prefix_mask(
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    pad_token_id: int | None,
) -> torch.Tensor | None:
    """The prefix LM's prefix when none is given: the whole input less its padding. The attention mask, else the
    non-pad tokens (ids and a pad id known), else every token; `None` without any input.

        input_ids [pad, 5, 6, 7], no attention mask, pad id known -> prefix_mask [0, 1, 1, 1]
    """
    if attention_mask is not None:
        return attention_mask
    if input_ids is not None and pad_token_id is not None:
        return (input_ids != pad_token_id).long()  # pads stay out, so no real token sees them
    tokens = input_ids if input_ids is not None else inputs_embeds
    if tokens is None:
        return None
    # (B, T) ids or (B, T, hidden) embeddings: the whole input is the prefix
    return torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)


def sequence_classification_loss(model: FourfoldPreTrainedModel, logits, labels, **kwargs):
    if labels is None:
        return None
    if not labels.is_floating_point():  # single-label classes; regression and multi-label targets are floats
        check_labels(labels, model.config.num_labels, logits.shape[:1], what="sequence")
    return model.loss_function(logits=logits, labels=labels, pooled_logits=logits, config=model.config, **kwargs)


def lm_loss_and_logits(
    model: FourfoldPreTrainedModel, hidden_states, labels, logits_to_keep, *, shift: bool, **kwargs
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """`model.lm_head` over the final hidden states and the loss: chunked in training (no logits, see `loss.py`),
    else full logits and `model.loss_function` (the causal loss shifts; the seq2seq loss does not)."""
    if labels is not None:
        check_labels(labels, model.config.vocab_size, hidden_states.shape[:-1])
    if use_chunked_loss(model, model.lm_head, labels, logits_to_keep):
        chunk_size = model.config.loss_chunk_size
        return chunked_lm_loss(hidden_states, model.lm_head, labels, shift=shift, chunk_size=chunk_size, **kwargs), None
    logits = model.lm_head(slice_logits_to_keep(hidden_states, logits_to_keep))
    loss = None
    if labels is not None:
        loss = model.loss_function(logits, labels, vocab_size=model.config.vocab_size, **kwargs)
    return loss, logits


def shift_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher forcing input for the seq2seq decoder: [start] + labels[:-1], with -100 replaced by pad."""
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


def prefix_from_labels(
    labels: torch.Tensor, attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """The prompt as a prefix mask (batch, length): the tokens before each row's first labelled token (label !=
    -100), restarting at every packed document (`position_ids` back at 0), padding left out.

        labels        [-100 -100 -100   c    d   -100]    attention_mask [1 1 1 1 1 0]
        prefix_mask   [  1    1    1    0    0    0  ]
    """
    labelled = (labels != -100).long()
    seen = labelled.cumsum(-1)  # labelled tokens up to and including t
    if position_ids is not None:  # packed: count from each document's start
        starts = (position_ids == 0).expand_as(labels).clone()
        starts[..., 0] = True
        before_document = torch.where(starts, seen - labelled, torch.zeros_like(seen)).cummax(-1).values
        seen = seen - before_document
    prefix = (seen == 0).long()
    if attention_mask is not None:
        prefix = prefix * attention_mask[:, -labels.shape[-1] :].to(prefix.dtype)
    return prefix


def check_labels_outside_prefix(labels: torch.Tensor, prefix_mask: torch.Tensor) -> None:
    """A labelled token must not be in the prefix: prefix tokens see later prefix tokens, so the position predicting
    it would see it. Labels are unshifted (transformers' convention): label t is predicted at position t - 1."""
    prefix = prefix_mask.bool()
    labelled_in_prefix = (labels[:, : prefix.shape[1]] != -100) & prefix
    if labels.device.type == "cpu" and not torch.compiler.is_compiling():
        if labelled_in_prefix.any():
            raise ValueError(
                "labels mark tokens inside the prefix (prefix_mask == 1). Prefix tokens attend to later prefix "
                "tokens, so their prediction would see the answer: set labels to -100 wherever prefix_mask is 1."
            )
    else:
        torch._assert_async(~labelled_in_prefix.any(), "labels must be -100 wherever prefix_mask is 1")


# --------------------------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------------------------


class FourfoldEncoderForMaskedLM(FourfoldPreTrainedModel):
    """Encoder with BERT's masked-LM head. `labels`: the original ids at masked positions, -100 elsewhere."""

    config_class = FourfoldEncoderConfig
    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.decoder.weight": "model.embed_tokens.weight"}
    # The tied vocabulary projection is sharded as its embedding is (transformers shards `embed_tokens` by default).
    _tp_plan: ClassVar[dict[str, str]] = {"lm_head.decoder": "colwise_gather_output"}

    def __init__(self, config: FourfoldEncoderConfig):
        super().__init__(config)
        self.model = FourfoldEncoderModel(config)
        self.lm_head = FourfoldMaskedLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if labels is not None:
            check_labels(labels, self.config.vocab_size, hidden_states.shape[:2])
        head = self.lm_head
        # The sparse path bypasses the head's own call (a PEFT-wrapped or hooked head keeps it) and its decoder's.
        if training_fast_path(self, head, FourfoldMaskedLMHead) and use_chunked_loss(self, head.decoder, labels):
            # Only the ~15% masked positions have a label: predict those alone. (N, d) from (B, T, d).
            labels = labels.to(hidden_states.device)
            masked = labels != -100  # (B, T)
            loss = chunked_lm_loss(
                head.transform(hidden_states[masked]),
                head.decoder,
                labels[masked],
                shift=False,
                chunk_size=self.config.loss_chunk_size,
                **kwargs,
            )
            logits = None
        else:
            logits = self.lm_head(hidden_states)
            loss = None
            if labels is not None:
                loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class FourfoldEncoderForSequenceClassification(FourfoldPreTrainedModel):
    """Encoder + pooler (`config.classifier_pooling`) + linear classifier. Single-/multi-label or regression
    (`config.problem_type`, inferred from `num_labels` and the label dtype when unset)."""

    config_class = FourfoldEncoderConfig

    def __init__(self, config: FourfoldEncoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = FourfoldEncoderModel(config)
        self.pooler = FourfoldPooler(config)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        # `cache` (or `past_key_values`, its name before transformers 5.24): keys/values prepended to every layer's
        # own (PEFT prefix tuning; the attention mask then covers them too). `past_key_values` stays a named
        # argument, because PEFT looks for it in the signature.
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            cache=resolve_cache(cache, past_key_values),
            **kwargs,
        )
        logits = self.classifier(self.dropout(self.pooler(outputs.last_hidden_state, attention_mask)))
        return SequenceClassifierOutput(
            loss=sequence_classification_loss(self, logits, labels, **kwargs),
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class FourfoldEncoderForTokenClassification(FourfoldPreTrainedModel):
    """Encoder + per-token linear classifier (NER, POS). `labels`: one per token, -100 to ignore."""

    config_class = FourfoldEncoderConfig

    def __init__(self, config: FourfoldEncoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = FourfoldEncoderModel(config)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            check_labels(labels, self.config.num_labels, logits.shape[:2])
            loss = self.loss_function(logits, labels, self.config, **kwargs)
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class FourfoldEncoderForQuestionAnswering(FourfoldPreTrainedModel):
    """Encoder + span head (`qa_outputs`): start and end logits per token for extractive QA."""

    config_class = FourfoldEncoderConfig

    def __init__(self, config: FourfoldEncoderConfig):
        super().__init__(config)
        self.model = FourfoldEncoderModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        **kwargs,
    ) -> QuestionAnsweringModelOutput:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).unbind(dim=-1)  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = self.loss_function(start_logits, end_logits, start_positions, end_positions, **kwargs)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits.contiguous(),
            end_logits=end_logits.contiguous(),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class FourfoldEncoderForMultipleChoice(FourfoldPreTrainedModel):
    """Encoder + pooler + one score per choice. Inputs are (batch, num_choices, length); `labels` the right choice."""

    config_class = FourfoldEncoderConfig

    def __init__(self, config: FourfoldEncoderConfig):
        super().__init__(config)
        self.model = FourfoldEncoderModel(config)
        self.pooler = FourfoldPooler(config)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> MultipleChoiceModelOutput:
        num_choices = (input_ids if input_ids is not None else inputs_embeds).shape[1]

        def flat(x):  # (B, C, T, ...) -> (B*C, T, ...)
            return None if x is None else x.reshape(-1, *x.shape[2:])

        outputs = self.model(
            input_ids=flat(input_ids),
            attention_mask=flat(attention_mask),
            token_type_ids=flat(token_type_ids),
            position_ids=flat(position_ids),
            inputs_embeds=flat(inputs_embeds),
            **kwargs,
        )
        scores = self.classifier(self.dropout(self.pooler(outputs.last_hidden_state, flat(attention_mask))))  # (B*C, 1)
        logits = scores.view(-1, num_choices)  # (B, C)
        # No "ForMultipleChoice" entry in transformers' loss mapping: plain cross-entropy over the choices.
        loss = None
        if labels is not None:
            check_labels(labels, num_choices, logits.shape[:1], what="question")
            loss = nn.functional.cross_entropy(logits, labels.to(logits.device))
        return MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


# --------------------------------------------------------------------------------------------------------------------
# Decoder and prefix LM
# --------------------------------------------------------------------------------------------------------------------


class FourfoldDecoderForCausalLM(FourfoldPreTrainedModel, GenerationMixin):
    """Decoder + language-modeling head. `labels` are the input ids (shifted inside the loss), -100 to ignore."""

    config_class = FourfoldDecoderConfig
    model_class: ClassVar[type[FourfoldStack]] = FourfoldDecoderModel
    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan: ClassVar[dict[str, str]] = {"lm_head": "colwise_gather_output"}  # the tied head reads a sharded embedding

    def __init__(self, config: FourfoldConfig):
        super().__init__(config)
        self.model = self.model_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=config.lm_head_bias)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=resolve_cache(cache, past_key_values),  # `past_key_values`: the name before transformers 5.24
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        loss, logits = lm_loss_and_logits(self, outputs.last_hidden_state, labels, logits_to_keep, shift=True, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **with_cache(output_cache(outputs)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class FourfoldPrefixLMForCausalLM(FourfoldDecoderForCausalLM, GenerationMixin):
    """Prefix LM + language-modeling head.

    `prefix_mask` (batch, length): 1 = bidirectional prefix (the prompt). `labels` must be -100 inside the prefix
    (checked). Without a `prefix_mask` the prompt is the prefix everywhere, by one rule:
        training and evaluation (labels given): the tokens before each row's (each packed document's) first
            labelled token, less padding (`prefix_from_labels`): what a prompt -> completion collator marks with
            -100, as TRL's SFT does, so such trainers need not know about prefixes;
        generation: the prompt less its padding (`default_prefix_mask`); generated tokens are causal;
        a forward with neither (e.g. lm-eval's scoring) cannot tell the prompt: it reads the input causally, and
            says so once.
    """

    config_class = FourfoldPrefixLMConfig
    model_class = FourfoldPrefixLMModel

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if labels is not None and prefix_mask is None:
            prefix_mask = prefix_from_labels(labels, attention_mask, position_ids)
        elif labels is not None:
            check_labels_outside_prefix(labels, prefix_mask)
        elif prefix_mask is None and not torch.compiler.is_compiling():
            logger.warning_once(
                "FourfoldPrefixLMForCausalLM got neither prefix_mask nor labels, so it reads the whole input causally "
                "(no prefix). Pass prefix_mask (1 on the prompt) to read a prompt bidirectionally, as generate() and "
                "training with prompt labels (-100) do."
            )
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            prefix_mask=prefix_mask,
            position_ids=position_ids,
            cache=resolve_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def generate(self, inputs: torch.Tensor | None = None, *args, prefix_mask: torch.Tensor | None = None, **kwargs):
        """`GenerationMixin.generate` (every argument passes through), with the prompt as the bidirectional prefix
        by default: its attention mask, else its non-pad tokens, else all of it (`default_prefix_mask`)."""
        if prefix_mask is None:
            prompt = inputs if inputs is not None else kwargs.get("input_ids")
            if prompt is not None and (prompt.dim() != 2 or prompt.is_floating_point()):
                prompt = None  # not token ids (e.g. embeddings as `inputs`): only an attention mask can tell
            prefix_mask = default_prefix_mask(
                prompt, kwargs.get("inputs_embeds"), kwargs.get("attention_mask"), self.config.pad_token_id
            )
        return super().generate(inputs, *args, prefix_mask=prefix_mask, **kwargs)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        *args,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> dict:
        """`GenerationMixin`'s (every argument passes through; generate() passes them by keyword), but with a static
        (compileable) cache the 4D mask it builds ahead of the forward also carries the prefix: transformers' builder
        knows only causal and padding masks, and the stack takes a 4D mask as it is. The cache arrives under
        transformers' own name (`compat.CACHE_NAME`), so it is read from the prepared inputs. (`inputs_embeds` is
        named because generate() looks for it in this signature.)"""
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            *args,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            prefix_mask=prefix_mask,
            **kwargs,
        )
        cache = model_inputs.get(CACHE_NAME)
        prebuilt = getattr(cache, "is_compileable", False) and (attention_mask is None or attention_mask.dim() == 2)
        if prebuilt and prefix_mask is not None:
            tokens = model_inputs.get("input_ids")
            tokens = tokens if tokens is not None else model_inputs["inputs_embeds"]
            metadata = torch.empty((*tokens.shape[:2], 0), dtype=self.dtype, device=tokens.device)  # (B, T, 0)
            model_inputs["attention_mask"] = prefix_lm_mask(
                self.config,
                metadata,
                attention_mask=attention_mask,
                cache=cache,
                position_ids=model_inputs.get("position_ids"),
                prefix_mask=prefix_mask,
            )
        return model_inputs


class FourfoldDecoderForSequenceClassification(FourfoldPreTrainedModel):
    """Decoder + linear `score` on the last non-padding token."""

    config_class = FourfoldDecoderConfig
    model_class: ClassVar[type[FourfoldStack]] = FourfoldDecoderModel

    def __init__(self, config: FourfoldConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = self.model_class(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=resolve_cache(cache, past_key_values),  # `past_key_values`: the name before transformers 5.24
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        batch, length = hidden_states.shape[:2]
        last = last_token_index(input_ids, attention_mask, self.config.pad_token_id, length)
        logits = self.score(hidden_states[torch.arange(batch, device=hidden_states.device), last])
        return SequenceClassifierOutputWithPast(
            loss=sequence_classification_loss(self, logits, labels, **kwargs),
            logits=logits,
            **with_cache(output_cache(outputs)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class FourfoldPrefixLMForSequenceClassification(FourfoldDecoderForSequenceClassification):
    """Prefix LM + `score` on the last non-padding token. By default the whole input less its padding is the
    bidirectional prefix (`default_prefix_mask`), so every token sees every other; pass `prefix_mask` to change that."""

    config_class = FourfoldPrefixLMConfig
    model_class = FourfoldPrefixLMModel

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        if prefix_mask is None:
            prefix_mask = default_prefix_mask(
                input_ids, kwargs.get("inputs_embeds"), attention_mask, self.config.pad_token_id
            )
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, prefix_mask=prefix_mask, labels=labels, **kwargs
        )


class FourfoldDecoderForTokenClassification(FourfoldPreTrainedModel):
    """Decoder + per-token linear `score`. Each token sees only its left context."""

    config_class = FourfoldDecoderConfig

    def __init__(self, config: FourfoldDecoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = FourfoldDecoderModel(config)
        self.dropout = classifier_dropout(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        logits = self.score(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            check_labels(labels, self.config.num_labels, logits.shape[:2])
            loss = self.loss_function(logits, labels, self.config, **kwargs)
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


# --------------------------------------------------------------------------------------------------------------------
# Seq2seq
# --------------------------------------------------------------------------------------------------------------------


class FourfoldSeq2SeqForConditionalGeneration(FourfoldPreTrainedModel, GenerationMixin):
    """Encoder-decoder + language-modeling head (text-to-text). `labels` are the target ids, -100 to ignore; the
    decoder input is `labels` shifted right, and the loss is not shifted again."""

    config_class = FourfoldSeq2SeqConfig
    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "model.encoder.embed_tokens.weight": "model.shared.weight",
        "model.decoder.embed_tokens.weight": "model.shared.weight",
        "lm_head.weight": "model.shared.weight",
    }
    _tp_plan: ClassVar[dict[str, str]] = {"lm_head": "colwise_gather_output"}  # the tied head reads a sharded embedding

    def __init__(self, config: FourfoldSeq2SeqConfig):
        super().__init__(config)
        self.model = FourfoldSeq2SeqModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=config.lm_head_bias)
        self.post_init()
        # The default for a "ForConditionalGeneration" class is the causal (shifting) loss; ours is aligned already.
        self.loss_type = "ForMaskedLM"

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

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
        labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        decoder_position_ids: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        if labels is not None:  # checked here: shifted into decoder_input_ids, a bad label would read as a bad id
            check_labels(labels, self.config.vocab_size)
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=resolve_cache(cache, past_key_values),  # `past_key_values`: the name before transformers 5.24
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            position_ids=position_ids,
            decoder_position_ids=decoder_position_ids,
            use_cache=use_cache,
            **kwargs,
        )
        loss, logits = lm_loss_and_logits(
            self, outputs.last_hidden_state, labels, logits_to_keep, shift=False, **kwargs
        )
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            **with_cache(output_cache(outputs)),
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
        )


class FourfoldSeq2SeqEncoderModel(FourfoldPreTrainedModel):
    """The seq2seq encoder alone (`AutoModelForTextEncoding`, like T5EncoderModel): embeddings + bidirectional
    stack. Loads the encoder half of any fourfold-seq2seq checkpoint."""

    config_class = FourfoldSeq2SeqConfig
    _tied_weights_keys: ClassVar[dict[str, str]] = {"encoder.embed_tokens.weight": "shared.weight"}
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"decoder\.", r"lm_head\."]

    def __init__(self, config: FourfoldSeq2SeqConfig):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.hidden_size)
        self.encoder = FourfoldStack(config, attention_pattern="bidirectional")  # embed_tokens tied to `shared`
        self.post_init()

    def init_parallel_plans(self) -> None:
        """As `FourfoldSeq2SeqModel.init_parallel_plans`: the stack contributes its plan as `encoder.*`, and the
        tied `shared` embedding is sharded as the stack's."""
        super().init_parallel_plans()
        plan = {name: style for name, style in self._tp_plan.items() if name.startswith("encoder.")}
        self._tp_plan = {"shared": "embedding_rowwise", **plan}

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = self.encoder.embed_tokens = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutput:
        outputs = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        return BaseModelOutput(
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class FourfoldSeq2SeqForSequenceClassification(FourfoldPreTrainedModel):
    """Seq2seq encoder + mean pooling over non-padding tokens + linear classifier (the decoder is not used)."""

    config_class = FourfoldSeq2SeqConfig
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"model\.decoder\.", r"lm_head\."]

    def __init__(self, config: FourfoldSeq2SeqConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = FourfoldSeq2SeqEncoderModel(config)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        logits = self.classifier(self.dropout(masked_mean(outputs.last_hidden_state, attention_mask)))
        return SequenceClassifierOutput(
            loss=sequence_classification_loss(self, logits, labels, **kwargs),
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

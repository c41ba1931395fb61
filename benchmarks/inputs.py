"""The task of each comparison as a `Task` record, and its inputs: one seeded batch, the same tensors for both sides.

A `Task` says how a batch is labelled (masked LM: 15 % of positions; causal; prefix: the first half is the prefix and
unlabelled; seq2seq: random targets of the source's length) and what that means elsewhere (decoder inputs, the KV
cache, the FLOPs of the prediction head). `make_batch` builds training inputs; `inputs_for` drops `prefix_mask` for
the side that does not take it; `forward_inputs` turns a training batch into inference inputs (no labels, no cache).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from settings import Settings, Size
from torch import nn

from fourfold.modeling import FourfoldPrefixLMForCausalLM

MASKED_FRACTION = 0.15  # MLM: the share of positions that carry a label


@dataclass(frozen=True)
class Task:
    """What a comparison's models are trained on.

    Args:
        name: for messages.
        label: (input_ids (B, T), the batch's generator, vocabulary size) -> the labels and any extra inputs.
        encoder_decoder: the labels are the decoder's targets; generation output starts with the decoder start token.
        takes_cache: the model has a KV cache, switched off for an inference forward.
        head_fraction: the share of positions the prediction head is needed at (masked LM: the masked ones).
    """

    name: str
    label: Callable[[torch.Tensor, torch.Generator, int], dict]
    encoder_decoder: bool = False
    takes_cache: bool = True
    head_fraction: float = 1.0


def _masked(input_ids: torch.Tensor, generator: torch.Generator, vocab: int) -> dict:
    chosen = torch.rand(input_ids.shape, generator=generator) < MASKED_FRACTION
    return {"labels": input_ids.masked_fill(~chosen, -100)}


def _causal(input_ids: torch.Tensor, generator: torch.Generator, vocab: int) -> dict:
    return {"labels": input_ids.clone()}


def _prefix(input_ids: torch.Tensor, generator: torch.Generator, vocab: int) -> dict:
    prefix = torch.zeros_like(input_ids)  # (B, T): 1 on the first half
    prefix[:, : input_ids.shape[1] // 2] = 1
    return {"labels": input_ids.masked_fill(prefix.bool(), -100), "prefix_mask": prefix}


def _seq2seq(input_ids: torch.Tensor, generator: torch.Generator, vocab: int) -> dict:
    return {"labels": torch.randint(3, vocab, input_ids.shape, generator=generator)}


MLM = Task("mlm", _masked, takes_cache=False, head_fraction=MASKED_FRACTION)
CAUSAL = Task("causal", _causal)
PREFIX = Task("prefix", _prefix)
SEQ2SEQ = Task("seq2seq", _seq2seq, encoder_decoder=True)


def make_batch(task: Task, size: Size, settings: Settings, *, batch: int | None = None, length: int | None = None):
    """Training inputs (with labels) for the task; the same tensors go to both sides."""
    batch, length = batch or size.batch, length or size.seq
    generator = torch.Generator().manual_seed(settings.seed)
    input_ids = torch.randint(3, size.vocab, (batch, length), generator=generator)  # (B, T), no special ids
    inputs = {"input_ids": input_ids, **task.label(input_ids, generator, size.vocab)}
    return {name: tensor.to(settings.device) for name, tensor in inputs.items()}


def inputs_for(model: nn.Module, inputs: dict) -> dict:
    """Drop `prefix_mask` for models that do not take it (the prefix-LM comparison's decoder side)."""
    if "prefix_mask" in inputs and not isinstance(model, FourfoldPrefixLMForCausalLM):
        return {name: tensor for name, tensor in inputs.items() if name != "prefix_mask"}
    return inputs


def forward_inputs(task: Task, inputs: dict, model: nn.Module) -> dict:
    """Inference inputs: no labels, no cache; the seq2seq decoder reads the (shifted) labels."""
    inputs = dict(inputs_for(model, inputs))
    labels = inputs.pop("labels")
    if task.encoder_decoder:
        inputs["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels)
    if task.takes_cache:
        inputs["use_cache"] = False
    return inputs

"""Who may attend to whom: the attention masks of the four configurations, as data.

Every stack builds its masks once, here, and hands them to all its layers. The builders are thin wrappers over
transformers' `masking_utils`, so each attention backend gets the form it understands (a float mask for eager, a
boolean mask or `None` for sdpa, a BlockMask for flex attention). `None` means "nothing to mask beyond what the
module's `is_causal` flag says": sdpa then runs its fast unmasked or causal kernel.

The three self-attention builders share one keyword signature (`SelfAttentionMaskBuilder`; a builder ignores the
arguments its pattern does not use), and `SELF_ATTENTION_MASKS` maps each attention pattern to its builder: a stack
looks its builder up once, by its pattern.

Legend for the worked examples below: row = query position, column = key position, ■ = may attend.
Packed batches: `position_ids` that restart at 0 mark document starts; no token attends across a document boundary.
"""

from collections.abc import Callable
from typing import Protocol

import torch
from transformers import PreTrainedConfig
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import (
    create_bidirectional_mask,
    create_causal_mask,
    find_packed_sequence_indices,
)

from .compat import document_mask

MaskFunction = Callable[[int, int, int, int], bool]


class SelfAttentionMaskBuilder(Protocol):
    """The signature of every self-attention mask builder (the values of `SELF_ATTENTION_MASKS`).

    Args:
        config: the model config (its `_attn_implementation` decides the mask's form).
        inputs_embeds: (batch, length, ...): only its shape, dtype and device are read.
        attention_mask: (batch, past + length) padding mask, 1 = real token; or a prepared 4D mask, used as is.
        cache: the self-attention KV cache (sets the key length and the query offset).
        position_ids: the caller's position ids, only to find packed documents (`None` when it gave none).
        prefix_mask: (batch, <= past + length), 1 = bidirectional prefix token (prefix LM only).
    """

    def __call__(
        self,
        config: PreTrainedConfig,
        inputs_embeds: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        position_ids: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | None: ...


def document_ids(position_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
    """Document index of every token in a packed batch, or `None` when nothing is packed.

    position_ids [[0, 1, 2, 0, 1]] -> [[0, 0, 0, 1, 1]]
    """
    if position_ids is None:
        return None
    return find_packed_sequence_indices(position_ids.expand(batch_size, -1))


def same_document(query_documents: torch.Tensor, key_documents: torch.Tensor) -> MaskFunction:
    """Mask function: a query sees a key only inside its own document."""

    def inner(batch_idx, head_idx, q_idx, kv_idx):
        return query_documents[batch_idx, q_idx] == key_documents[batch_idx, kv_idx]

    return inner


def bidirectional_mask(
    config: PreTrainedConfig,
    inputs_embeds: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    cache: Cache | None = None,
    position_ids: torch.Tensor | None = None,
    prefix_mask: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Encoder self-attention: every token sees every non-padding token of its document. (No cache, no prefix: the
    encoder ignores `cache` and `prefix_mask`.)

    attention_mask [1, 1, 1, 0]          packed, position_ids [0, 1, 0, 1]
        0 ■ ■ ■ ⬚                            0 ■ ■ ⬚ ⬚
        1 ■ ■ ■ ⬚                            1 ■ ■ ⬚ ⬚
        2 ■ ■ ■ ⬚                            2 ⬚ ⬚ ■ ■
        3 ■ ■ ■ ⬚                            3 ⬚ ⬚ ■ ■
    """
    documents = document_ids(position_ids, inputs_embeds.shape[0]) if attention_mask is None else None
    if documents is not None:
        return document_mask(config, inputs_embeds, same_document(documents, documents))
    return create_bidirectional_mask(config=config, inputs_embeds=inputs_embeds, attention_mask=attention_mask)


def causal_mask(
    config: PreTrainedConfig,
    inputs_embeds: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    cache: Cache | None = None,
    position_ids: torch.Tensor | None = None,
    prefix_mask: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Decoder self-attention: a token sees itself and earlier non-padding tokens of its document (`prefix_mask` is
    ignored).

    left padding [0, 1, 1, 1]            one new token after 3 cached ones (q_offset 3)
        0 ⬚ ⬚ ⬚ ⬚                            3 ■ ■ ■ ■
        1 ⬚ ■ ⬚ ⬚
        2 ⬚ ■ ■ ⬚
        3 ⬚ ■ ■ ■
    (masking_utils detects packed documents from `position_ids` itself when there is no padding mask and no cache.)
    """
    # The cache goes in by position: transformers 5.24 renamed that argument (`past_key_values` -> `cache`).
    return create_causal_mask(config, inputs_embeds, attention_mask, _unless_empty(cache), position_ids=position_ids)


def prefix_lm_mask(
    config: PreTrainedConfig,
    inputs_embeds: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    cache: Cache | None = None,
    position_ids: torch.Tensor | None = None,
    prefix_mask: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Prefix-LM self-attention: causal, except that prefix tokens (`prefix_mask == 1`) see the whole prefix.

    prefix_mask [1, 1, 1, 0, 0]
        0 ■ ■ ■ ⬚ ⬚      the prefix (rows 0-2) is bidirectional: each prefix token sees all three
        1 ■ ■ ■ ⬚ ⬚
        2 ■ ■ ■ ⬚ ⬚
        3 ■ ■ ■ ■ ⬚      the continuation is causal: it sees the prefix and what came before it
        4 ■ ■ ■ ■ ■

    The prefix is a block of tokens that attend to each other (masking_utils' `block_sequence_ids`: prefix tokens
    carry their document's index, continuation tokens -1). `prefix_mask` may be shorter than the sequence seen so far
    (e.g. the prompt's mask during cached generation): positions past its end are continuation. Without a prefix the
    mask is exactly the decoder's.
    """
    if prefix_mask is None:
        return causal_mask(config, inputs_embeds, attention_mask=attention_mask, cache=cache, position_ids=position_ids)
    if config._attn_implementation is not None and config._attn_implementation.startswith("flash_attention"):
        raise ValueError(
            f"attn_implementation={config._attn_implementation!r} can only apply causal and padding masks, not the "
            "prefix-LM mask; load the model with attn_implementation='sdpa', 'eager' or 'flex_attention'."
        )
    prefix = prefix_mask.to(device=inputs_embeds.device, dtype=torch.bool)
    cache = _unless_empty(cache)
    documents = None
    if attention_mask is None and cache is None:
        documents = document_ids(position_ids, inputs_embeds.shape[0])
    block_ids = torch.zeros_like(prefix, dtype=torch.long) if documents is None else documents
    return create_causal_mask(
        config,
        inputs_embeds,
        attention_mask,
        cache,  # by position, as in `causal_mask`
        position_ids=position_ids,
        block_sequence_ids=block_ids.masked_fill(~prefix, -1),
    )


# Attention pattern -> its self-attention mask builder (see the module docstring of modeling_fourfold.py).
SELF_ATTENTION_MASKS: dict[str, SelfAttentionMaskBuilder] = {
    "bidirectional": bidirectional_mask,
    "causal": causal_mask,
    "prefix": prefix_lm_mask,
}


def cross_attention_mask(
    config: PreTrainedConfig,
    inputs_embeds: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None = None,
    encoder_position_ids: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Seq2seq cross-attention: every decoder token sees every non-padding token of the final encoder layer.

    3 decoder tokens, encoder_attention_mask [1, 1, 0]
        0 ■ ■ ⬚
        1 ■ ■ ⬚
        2 ■ ■ ⬚
    In a packed batch (both position ids given), decoder document d sees only encoder document d.
    """
    if encoder_attention_mask is None and position_ids is not None and encoder_position_ids is not None:
        batch_size = inputs_embeds.shape[0]
        decoder_documents = document_ids(position_ids, batch_size)
        encoder_documents = document_ids(encoder_position_ids, batch_size)
        if decoder_documents is not None or encoder_documents is not None:
            decoder_documents = _zeros_if_none(decoder_documents, position_ids, batch_size)
            encoder_documents = _zeros_if_none(encoder_documents, encoder_position_ids, batch_size)
            return document_mask(
                config, inputs_embeds, same_document(decoder_documents, encoder_documents), encoder_hidden_states
            )
    return create_bidirectional_mask(
        config=config,
        inputs_embeds=inputs_embeds,
        attention_mask=encoder_attention_mask,
        encoder_hidden_states=encoder_hidden_states,
    )


def _unless_empty(cache: Cache | None) -> Cache | None:
    """An empty dynamic cache changes nothing in the mask, but would hide packed documents from masking_utils (the
    stacks create one whenever `use_cache` is on, e.g. in a plain forward): drop it. Static caches set the key length,
    so they stay."""
    if isinstance(cache, DynamicCache) and cache.get_seq_length() == 0:
        return None
    return cache


def _zeros_if_none(documents: torch.Tensor | None, position_ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    if documents is not None:
        return documents
    return torch.zeros(batch_size, position_ids.shape[-1], dtype=torch.long, device=position_ids.device)

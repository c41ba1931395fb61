"""The one place where fourfold's models meet an API that differs between the transformers releases they support.

transformers 5.24 renamed the key/value cache from `past_key_values` to `cache`: the field of every `ModelOutput`,
the keyword `generate()` passes to `prepare_inputs_for_generation` and `forward`, and the `masking_utils` argument
(the old names still work there, with a deprecation notice, until 5.40). fourfold's modules say `cache` throughout
and translate here, at the boundary, by looking at what the installed release does rather than at its version:

    CACHE_NAME                 "cache" (5.24+) or "past_key_values" (5.23): the output field and generate's keyword
    with_cache(cache)          {CACHE_NAME: cache}, to build a transformers output without a deprecation notice
    output_cache(outputs)      the cache of a transformers output, under whichever name it has
    resolve_cache(cache, pkv)  a forward's cache from `cache=` or `past_key_values=`: generate() of 5.23, PEFT's
                               prefix tuning and older scripts pass the old name, generate() of 5.24 the new one
                               (on 5.24+ the old name gets transformers' deprecation notice, as Llama's does)

One more meeting point is not a rename but a cost: masking_utils builds every mask that carries a caller's
`and_mask_function` through four nested `torch.vmap`s, because it cannot know that the function is index-based; for a
packed batch's document mask (8 rows of 130 tokens) that is 8 ms, against 0.7 ms on masking_utils' own broadcast path
(`use_vmap=False`), which its built-in packed-sequence masks use. fourfold's document masks are index-based, so

    document_mask(...)         `create_bidirectional_mask(..., and_mask_function=f)`, built on the broadcast path
                               by the sdpa / eager mask functions of masking_utils' registry (the same functions, the
                               same result); other attention implementations go through create_bidirectional_mask

This module ships with every checkpoint (modeling/ travels to the Hub), so a saved model keeps loading on both sides
of the rename. Everything else fourfold uses from transformers is the same in every supported release; a test
(tests/test_compat.py) compares each overridden method's signature with the base class's, so that the next rename
fails a test rather than a user.
"""

import warnings
from collections.abc import Callable
from dataclasses import fields

import torch
from transformers import PreTrainedConfig
from transformers.cache_utils import Cache
from transformers.masking_utils import (
    ALL_MASK_ATTENTION_FUNCTIONS,
    and_masks,
    bidirectional_mask_function,
    create_bidirectional_mask,
    eager_mask,
    sdpa_mask,
)
from transformers.modeling_outputs import BaseModelOutputWithPast

# What this code is, and the transformers releases it is tested with (CI runs the oldest and the newest of the range;
# setup.cfg declares the same range). `save_pretrained` writes both into config.json (`"fourfold"`), and the model
# card states them, so a checkpoint says what its copy of this code was tested with.
FOURFOLD_VERSION = "0.2.0"
TRANSFORMERS_REQUIREMENT = ">=5.23,<6"

CACHE_NAME: str = "cache" if "cache" in {f.name for f in fields(BaseModelOutputWithPast)} else "past_key_values"
# Both spellings, for the lists transformers matches output keys or keyword names against (Trainer's
# `keys_to_ignore_at_inference`, accelerate's `_skip_keys_device_placement`): right on every release.
CACHE_NAMES: list[str] = ["cache", "past_key_values"]


def with_cache(cache: Cache | None) -> dict[str, Cache | None]:
    """`{CACHE_NAME: cache}`: spread into a transformers output, e.g. `CausalLMOutputWithPast(**with_cache(c))`."""
    return {CACHE_NAME: cache}


def output_cache(outputs) -> Cache | None:
    """The cache a transformers `ModelOutput` carries (`outputs.cache` on 5.24+, `outputs.past_key_values` before)."""
    return getattr(outputs, CACHE_NAME, None)


def resolve_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache a forward was given, under either name; both at once (two different caches) is an error. Where
    transformers itself says `cache` (5.24+), the old name gets its deprecation notice, as transformers' own models
    give it (fourfold never passes the old name itself, so the notice always points at the caller)."""
    if past_key_values is None:
        return cache
    if cache is not None and cache is not past_key_values:
        raise ValueError(
            "Got both cache= and past_key_values=: they are one argument under its new and its old name "
            "(transformers renamed it in 5.24). Pass only cache=."
        )
    if CACHE_NAME == "cache" and not is_tracing():
        warnings.warn(
            "`past_key_values` is deprecated since transformers 5.24, which calls it `cache`; fourfold models still "
            "take the old name. Pass cache= instead.",
            FutureWarning,
            stacklevel=3,
        )
    return past_key_values


def is_tracing() -> bool:
    """torch.compile / export trace the forward: no Python warnings there (they would break the graph)."""
    return torch.compiler.is_compiling()


def document_mask(
    config: PreTrainedConfig,
    inputs_embeds: torch.Tensor,
    and_mask_function: Callable,
    encoder_hidden_states: torch.Tensor | None = None,
):
    """`create_bidirectional_mask(config, inputs_embeds, None, encoder_hidden_states, and_mask_function=...)` for
    an index-based `and_mask_function` (one that indexes tensors with the broadcast index tensors it is given, as
    `masks.same_document` does), without torch.vmap where the attention implementation's mask is sdpa's or eager's.
    No padding mask, no cache: the case of a packed batch."""
    interface = ALL_MASK_ATTENTION_FUNCTIONS.get(config._attn_implementation)
    if interface not in (sdpa_mask, eager_mask):
        return create_bidirectional_mask(
            config=config,
            inputs_embeds=inputs_embeds,
            attention_mask=None,
            encoder_hidden_states=encoder_hidden_states,
            and_mask_function=and_mask_function,
        )
    keys = inputs_embeds if encoder_hidden_states is None else encoder_hidden_states
    return interface(
        batch_size=keys.shape[0],
        q_length=inputs_embeds.shape[1],
        kv_length=keys.shape[1],
        mask_function=and_masks(bidirectional_mask_function, and_mask_function),
        attention_mask=None,
        allow_is_causal_skip=False,
        allow_is_bidirectional_skip=False,
        dtype=keys.dtype,
        use_vmap=False,
        device=inputs_embeds.device,
        config=config,
    )

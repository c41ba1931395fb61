"""The mask builders of `modeling/masks.py` against hand-written matrices.

Every case is checked for the two backends that get a materialised mask: sdpa (a boolean mask, or `None` when the
module's `is_causal` flag or no mask at all suffices) and eager (a float mask, 0 = attend, a huge negative = masked).
Matrices: row = query, column = key, 1 = may attend. They are shaped (batch, query, key).
"""

import pytest
import torch
from transformers.cache_utils import DynamicCache

from fourfold.modeling.masks import (
    SELF_ATTENTION_MASKS,
    bidirectional_mask,
    causal_mask,
    cross_attention_mask,
    prefix_lm_mask,
)
from tests.conftest import tiny_config

HIDDEN = 8  # the mask builders only read the batch size, length, dtype and device of `inputs_embeds`


@pytest.fixture(params=("sdpa", "eager"))
def config(request):
    config = tiny_config("decoder")
    config._attn_implementation = request.param
    return config


def embeds(batch: int, length: int) -> torch.Tensor:
    return torch.zeros(batch, length, HIDDEN)


def cache_holding(config, batch: int, length: int) -> DynamicCache:
    """A cache that already holds `length` tokens in every layer."""
    cache = DynamicCache(config=config)
    shape = (batch, config.num_key_value_heads, length, config.head_dim)
    for layer in range(config.num_hidden_layers):
        cache.update(torch.zeros(shape), torch.zeros(shape), layer)
    return cache


def as_bool(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, Q, K) boolean or additive float mask -> (B, Q, K) boolean, True = may attend."""
    assert mask.dim() == 4 and mask.shape[1] == 1
    if mask.dtype != torch.bool:
        masked = mask <= torch.finfo(mask.dtype).min / 2
        assert ((mask == 0) | masked).all(), "an additive mask holds only 0 and the dtype's minimum"
        mask = ~masked
    return mask[:, 0]


def assert_mask(mask: torch.Tensor | None, expected: list) -> None:
    assert mask is not None, "a mask was needed but the builder returned None"
    torch.testing.assert_close(as_bool(mask), torch.tensor(expected, dtype=torch.bool), rtol=0, atol=0)


def tensor(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


CAUSAL_4 = [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]


# ---------------------------------------------------------------------------------------------------------------------
# Bidirectional (encoder)
# ---------------------------------------------------------------------------------------------------------------------


def test_bidirectional_without_padding_needs_no_mask(config):
    assert bidirectional_mask(config, embeds(2, 4)) is None
    assert bidirectional_mask(config, embeds(2, 4), attention_mask=torch.ones(2, 4, dtype=torch.long)) is None


def test_bidirectional_right_and_left_padding(config):
    mask = bidirectional_mask(config, embeds(3, 4), attention_mask=tensor([[1, 1, 1, 0], [0, 1, 1, 1], [1, 1, 1, 1]]))
    right = [[1, 1, 1, 0]] * 4  # padding rows still get a (harmless) row, padding columns are never seen
    left = [[0, 1, 1, 1]] * 4
    assert_mask(mask, [right, left, [[1, 1, 1, 1]] * 4])


def test_bidirectional_packed_documents(config):
    mask = bidirectional_mask(config, embeds(1, 5), position_ids=tensor([[0, 1, 2, 0, 1]]))
    assert_mask(
        mask,
        [
            [
                [1, 1, 1, 0, 0],
                [1, 1, 1, 0, 0],
                [1, 1, 1, 0, 0],
                [0, 0, 0, 1, 1],
                [0, 0, 0, 1, 1],
            ]
        ],
    )


def test_bidirectional_unpacked_position_ids_need_no_mask(config):
    assert bidirectional_mask(config, embeds(1, 4), position_ids=tensor([[0, 1, 2, 3]])) is None


# ---------------------------------------------------------------------------------------------------------------------
# Causal (decoder)
# ---------------------------------------------------------------------------------------------------------------------


def test_causal_without_padding(config):
    for attention_mask in (None, torch.ones(2, 4, dtype=torch.long)):
        mask = causal_mask(config, embeds(2, 4), attention_mask=attention_mask)
        if config._attn_implementation == "sdpa":
            assert mask is None, "sdpa should take its is_causal fast path"
        else:
            assert_mask(mask, [CAUSAL_4, CAUSAL_4])


def test_causal_left_and_right_padding(config):
    mask = causal_mask(config, embeds(2, 4), attention_mask=tensor([[0, 1, 1, 1], [1, 1, 1, 0]]))
    left = [[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]]
    right = [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]
    assert_mask(mask, [left, right])


def test_causal_cache_offset_one_query(config):
    """One new token after 3 cached ones sees all 4; sdpa needs no mask for a single query."""
    cache = cache_holding(config, batch=1, length=3)
    mask = causal_mask(config, embeds(1, 1), cache=cache)
    if config._attn_implementation == "sdpa":
        assert mask is None
    else:
        assert_mask(mask, [[[1, 1, 1, 1]]])


def test_causal_cache_offset_with_left_padding(config):
    cache = cache_holding(config, batch=2, length=3)
    mask = causal_mask(config, embeds(2, 1), attention_mask=tensor([[0, 1, 1, 1], [1, 1, 1, 1]]), cache=cache)
    assert_mask(mask, [[[0, 1, 1, 1]], [[1, 1, 1, 1]]])


def test_causal_cache_offset_two_queries(config):
    """Two new tokens after 3 cached ones: the causal diagonal is offset by 3 (bottom-right aligned). sdpa's own
    `is_causal` is top-left aligned, so it must get a materialised mask here."""
    cache = cache_holding(config, batch=1, length=3)
    mask = causal_mask(config, embeds(1, 2), cache=cache)
    assert_mask(mask, [[[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]])


def test_causal_packed_documents(config):
    mask = causal_mask(config, embeds(1, 5), position_ids=tensor([[0, 1, 2, 0, 1]]))
    assert_mask(
        mask,
        [
            [
                [1, 0, 0, 0, 0],
                [1, 1, 0, 0, 0],
                [1, 1, 1, 0, 0],
                [0, 0, 0, 1, 0],
                [0, 0, 0, 1, 1],
            ]
        ],
    )


def test_causal_packed_documents_with_an_empty_cache(config):
    """A plain forward with `use_cache` on starts from an empty cache: packing must still be honoured."""
    mask = causal_mask(config, embeds(1, 4), cache=DynamicCache(config=config), position_ids=tensor([[0, 1, 0, 1]]))
    assert_mask(mask, [[[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]])


# ---------------------------------------------------------------------------------------------------------------------
# Prefix LM
# ---------------------------------------------------------------------------------------------------------------------


def test_prefix_lm_without_prefix_is_causal(config):
    mask = prefix_lm_mask(config, embeds(1, 4))
    if config._attn_implementation == "sdpa":
        assert mask is None
    else:
        assert_mask(mask, [CAUSAL_4])


def test_prefix_lm_prefix_per_row(config):
    mask = prefix_lm_mask(config, embeds(2, 5), prefix_mask=tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]))
    row0 = [
        [1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
    ]
    row1 = [
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
    ]
    assert_mask(mask, [row0, row1])


def test_prefix_lm_whole_sequence_prefix_is_bidirectional(config):
    mask = prefix_lm_mask(config, embeds(1, 4), prefix_mask=torch.ones(1, 4, dtype=torch.long))
    assert_mask(mask, [[[1, 1, 1, 1]] * 4])


def test_prefix_lm_left_padding(config):
    """Left padding with the prompt (attention_mask) as prefix, as `generate()` does."""
    attention_mask = tensor([[0, 1, 1, 1, 1]])
    mask = prefix_lm_mask(config, embeds(1, 5), attention_mask=attention_mask, prefix_mask=tensor([[0, 1, 1, 0, 0]]))
    assert_mask(
        mask,
        [
            [
                [0, 0, 0, 0, 0],
                [0, 1, 1, 0, 0],
                [0, 1, 1, 0, 0],
                [0, 1, 1, 1, 0],
                [0, 1, 1, 1, 1],
            ]
        ],
    )


def test_prefix_lm_right_padding(config):
    mask = prefix_lm_mask(
        config, embeds(1, 4), attention_mask=tensor([[1, 1, 1, 0]]), prefix_mask=tensor([[1, 1, 0, 0]])
    )
    assert_mask(mask, [[[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]])


def test_prefix_lm_cache_offset(config):
    """3 cached tokens, 2 new ones. Row 0's prefix covers 4 tokens (new token 3 is in it, so it must not see token 4);
    row 1's prefix (the 2-token prompt) is shorter than the sequence: everything after it is continuation."""
    cache = cache_holding(config, batch=2, length=3)
    mask = prefix_lm_mask(config, embeds(2, 2), cache=cache, prefix_mask=tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))
    assert_mask(mask, [[[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]])


def test_prefix_lm_cache_offset_one_query_whole_prefix(config):
    """A new token inside a 5-token prefix after 4 cached: it sees all 5, including itself."""
    cache = cache_holding(config, batch=1, length=4)
    mask = prefix_lm_mask(config, embeds(1, 1), cache=cache, prefix_mask=torch.ones(1, 5, dtype=torch.long))
    assert_mask(mask, [[[1, 1, 1, 1, 1]]])


def test_prefix_lm_packed_documents(config):
    """Two documents of 3; document 1's prefix is 2 tokens, document 2's is 1. Nothing crosses the boundary."""
    mask = prefix_lm_mask(
        config,
        embeds(1, 6),
        prefix_mask=tensor([[1, 1, 0, 1, 0, 0]]),
        position_ids=tensor([[0, 1, 2, 0, 1, 2]]),
    )
    assert_mask(
        mask,
        [
            [
                [1, 1, 0, 0, 0, 0],
                [1, 1, 0, 0, 0, 0],
                [1, 1, 1, 0, 0, 0],
                [0, 0, 0, 1, 0, 0],
                [0, 0, 0, 1, 1, 0],
                [0, 0, 0, 1, 1, 1],
            ]
        ],
    )


def test_prefix_lm_packed_documents_with_an_empty_cache(config):
    mask = prefix_lm_mask(
        config,
        embeds(1, 4),
        cache=DynamicCache(config=config),
        prefix_mask=tensor([[1, 1, 1, 0]]),
        position_ids=tensor([[0, 1, 0, 1]]),
    )
    assert_mask(mask, [[[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]])


def test_prefix_lm_packed_prefixes_do_not_merge(config):
    """Adjacent prefixes of two documents stay separate blocks."""
    mask = prefix_lm_mask(config, embeds(1, 4), prefix_mask=tensor([[1, 1, 1, 1]]), position_ids=tensor([[0, 1, 0, 1]]))
    assert_mask(mask, [[[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]])


def test_prefix_lm_refuses_flash_attention():
    config = tiny_config("prefix-lm")
    config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="prefix-LM mask"):
        prefix_lm_mask(config, embeds(1, 4), prefix_mask=tensor([[1, 1, 0, 0]]))
    prefix_lm_mask(config, embeds(1, 4))  # without a prefix it is a decoder: flash can do that


# ---------------------------------------------------------------------------------------------------------------------
# The table: one keyword signature, one builder per attention pattern
# ---------------------------------------------------------------------------------------------------------------------


def test_every_pattern_has_a_builder_and_every_stack_uses_its_own():
    from fourfold.modeling import FourfoldEncoderModel, FourfoldPrefixLMModel, FourfoldSeq2SeqModel

    assert SELF_ATTENTION_MASKS == {
        "bidirectional": bidirectional_mask,
        "causal": causal_mask,
        "prefix": prefix_lm_mask,
    }
    assert FourfoldEncoderModel(tiny_config("encoder")).self_attention_mask is bidirectional_mask
    assert FourfoldPrefixLMModel(tiny_config("prefix-lm")).self_attention_mask is prefix_lm_mask
    seq2seq = FourfoldSeq2SeqModel(tiny_config("seq2seq"))
    assert (seq2seq.encoder.self_attention_mask, seq2seq.decoder.self_attention_mask) == (
        bidirectional_mask,
        causal_mask,
    )


def test_builders_take_one_keyword_signature_and_ignore_what_their_pattern_does_not_use(config):
    """All three get the same keywords; the encoder ignores the cache and the prefix, the decoder the prefix."""
    padding = tensor([[1, 1, 1, 0]])
    everything = {
        "attention_mask": padding,
        "cache": cache_holding(config, batch=1, length=0),
        "position_ids": None,
        "prefix_mask": tensor([[1, 1, 0, 0]]),
    }
    bidirectional = SELF_ATTENTION_MASKS["bidirectional"](config, embeds(1, 4), **everything)
    assert_mask(bidirectional, [[[1, 1, 1, 0]] * 4])
    causal = SELF_ATTENTION_MASKS["causal"](config, embeds(1, 4), **everything)
    assert_mask(causal, [[[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]])
    prefix = SELF_ATTENTION_MASKS["prefix"](config, embeds(1, 4), **everything)
    assert_mask(prefix, [[[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]])
    with pytest.raises(TypeError):
        causal_mask(config, embeds(1, 4), padding)  # keywords only: no positional mix-ups


# ---------------------------------------------------------------------------------------------------------------------
# Cross-attention (seq2seq decoder -> final encoder layer)
# ---------------------------------------------------------------------------------------------------------------------


def test_cross_attention_without_encoder_padding_needs_no_mask(config):
    assert cross_attention_mask(config, embeds(2, 3), embeds(2, 4), None) is None
    assert cross_attention_mask(config, embeds(2, 3), embeds(2, 4), torch.ones(2, 4, dtype=torch.long)) is None


def test_cross_attention_encoder_padding(config):
    mask = cross_attention_mask(config, embeds(2, 3), embeds(2, 4), tensor([[1, 1, 1, 0], [0, 0, 1, 1]]))
    assert_mask(mask, [[[1, 1, 1, 0]] * 3, [[0, 0, 1, 1]] * 3])


def test_cross_attention_packed_documents(config):
    """Decoder documents [0, 1 | 0 | 0, 1] read encoder documents [0, 1, 2 | 0 | 0, 1] of the same index."""
    mask = cross_attention_mask(
        config,
        embeds(1, 5),
        embeds(1, 6),
        None,
        position_ids=tensor([[0, 1, 0, 0, 1]]),
        encoder_position_ids=tensor([[0, 1, 2, 0, 0, 1]]),
    )
    assert_mask(
        mask,
        [
            [
                [1, 1, 1, 0, 0, 0],
                [1, 1, 1, 0, 0, 0],
                [0, 0, 0, 1, 0, 0],
                [0, 0, 0, 0, 1, 1],
                [0, 0, 0, 0, 1, 1],
            ]
        ],
    )


def test_cross_attention_needs_both_position_ids_to_unpack(config):
    """Only the decoder's positions given (packing needs both): no mask."""
    mask = cross_attention_mask(config, embeds(1, 3), embeds(1, 4), None, position_ids=tensor([[0, 1, 2]]))
    assert mask is None

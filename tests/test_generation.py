"""`generate()` and the KV cache for the three generative configurations, checked against no-cache references.

The models are tiny and random, initialised with a large `initializer_range` so that their next-token distributions
are far from uniform and greedy decoding does not collapse into repeating one token (which would make cache and
no-cache agree trivially). `min_new_tokens` keeps end-of-sequence from cutting generations short.
"""

import pytest
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from fourfold.modeling import (
    FourfoldDecoderForCausalLM,
    FourfoldPrefixLMForCausalLM,
    FourfoldSeq2SeqForConditionalGeneration,
)
from fourfold.modeling.compat import output_cache
from tests.conftest import tiny_config

GENERATORS = {
    "decoder": FourfoldDecoderForCausalLM,
    "prefix-lm": FourfoldPrefixLMForCausalLM,
    "seq2seq": FourfoldSeq2SeqForConditionalGeneration,
}
NEW_TOKENS = 6
GREEDY = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}


def build(architecture: str, seed: int = 0):
    torch.manual_seed(seed)
    return GENERATORS[architecture](tiny_config(architecture, initializer_range=0.3)).eval()


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 101, (batch, length), generator=torch.Generator().manual_seed(seed))


def continuation(model, output: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """The generated tokens: decoder-only models echo the prompt first, seq2seq models start a new sequence."""
    return output if model.config.is_encoder_decoder else output[:, prompt.shape[1] :]


@pytest.fixture
def model(generative_architecture):
    return build(generative_architecture)


# ---------------------------------------------------------------------------------------------------------------------
# generate(): cache vs no cache, padding, sampling
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_beams", [1, 3], ids=["greedy", "beam"])
def test_generate_same_with_and_without_cache(model, num_beams):
    prompt = random_ids(2, 5)
    cached = model.generate(prompt, num_beams=num_beams, use_cache=True, **GREEDY)
    uncached = model.generate(prompt, num_beams=num_beams, use_cache=False, **GREEDY)
    assert continuation(model, cached, prompt).shape[1] >= NEW_TOKENS
    assert len(set(continuation(model, cached, prompt)[0].tolist())) > 1, "degenerate model: tokens all equal"
    torch.testing.assert_close(cached, uncached, rtol=0, atol=0)


def test_generate_logits_match_a_full_forward(model):
    """The logits of every cached greedy step equal those of one no-cache forward over the final sequence."""
    prompt = random_ids(2, 5)
    out = model.generate(prompt, output_logits=True, return_dict_in_generate=True, **GREEDY)
    step_logits = torch.stack(out.logits, dim=1)  # (B, new, V)
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            full = model(prompt, decoder_input_ids=out.sequences[:, :-1]).logits
        else:
            kwargs = {}
            if isinstance(model, FourfoldPrefixLMForCausalLM):  # the prompt was the prefix
                kwargs["prefix_mask"] = torch.ones_like(prompt)
            full = model(out.sequences[:, :-1], **kwargs).logits[:, prompt.shape[1] - 1 :]
    torch.testing.assert_close(step_logits, full, rtol=1e-4, atol=1e-4)


def test_left_padded_batch_generates_each_row_as_alone(model):
    """Decoder-only models pad the prompt on the left; the seq2seq model pads the source (on the right)."""
    long, short = random_ids(1, 6, seed=1), random_ids(1, 3, seed=2)
    pad = torch.full((1, 3), model.config.pad_token_id)
    if model.config.is_encoder_decoder:
        batch = torch.cat([long, torch.cat([short, pad], dim=1)])
        attention_mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    else:
        batch = torch.cat([long, torch.cat([pad, short], dim=1)])
        attention_mask = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    for num_beams in (1, 3):
        together = model.generate(batch, attention_mask=attention_mask, num_beams=num_beams, **GREEDY)
        together = continuation(model, together, batch)
        for row, alone_prompt in enumerate((long, short)):
            alone = continuation(model, model.generate(alone_prompt, num_beams=num_beams, **GREEDY), alone_prompt)
            torch.testing.assert_close(together[row : row + 1], alone, rtol=0, atol=0)


def test_sampling_is_reproducible_with_a_seed(model):
    prompt = random_ids(2, 4)

    def sample(seed):
        torch.manual_seed(seed)
        return model.generate(prompt, do_sample=True, top_k=0, max_new_tokens=8, min_new_tokens=8)

    torch.testing.assert_close(sample(7), sample(7), rtol=0, atol=0)
    assert not torch.equal(sample(7), sample(8)), "sampling ignores the random state"


# ---------------------------------------------------------------------------------------------------------------------
# Prefix LM: the prompt is the prefix
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_prefix_lm_generate_uses_the_prompt_as_prefix():
    model = build("prefix-lm")
    prompt = random_ids(2, 6)
    out = model.generate(prompt, max_new_tokens=1, do_sample=False, output_logits=True, return_dict_in_generate=True)
    first_logits = out.logits[0]  # (B, V)
    as_prefix = model(prompt, prefix_mask=torch.ones_like(prompt)).logits[:, -1]
    causal = model(prompt).logits[:, -1]
    torch.testing.assert_close(first_logits, as_prefix, rtol=1e-5, atol=1e-5)
    assert (first_logits - causal).abs().max() > 1e-2, "generate() treated the prompt causally"
    torch.testing.assert_close(out.sequences[:, -1], as_prefix.argmax(-1), rtol=0, atol=0)


@torch.no_grad()
def test_prefix_lm_generate_leaves_padding_out_of_the_default_prefix():
    """Without an attention mask the default prefix is the prompt's non-pad tokens (`default_prefix_mask`, the same
    rule as the prefix LM's sequence classification), not the padding too."""
    model = build("prefix-lm")
    pad = model.config.pad_token_id
    prompt = torch.cat([torch.full((1, 2), pad), random_ids(1, 4)], dim=1)  # left padding
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["prefix_mask"]), with_kwargs=True)
    model.generate(prompt, max_new_tokens=2, min_new_tokens=2, do_sample=False, pad_token_id=pad)
    assert seen and all(torch.equal(mask, torch.tensor([[0, 0, 1, 1, 1, 1]])) for mask in seen)
    seen.clear()
    embeds = model.get_input_embeddings()(random_ids(1, 4))
    model.generate(inputs_embeds=embeds, max_new_tokens=1, do_sample=False)
    assert torch.equal(seen[0], torch.ones(1, 4, dtype=torch.long))  # embeddings alone: the whole prompt


@torch.no_grad()
def test_prefix_lm_generate_honours_an_explicit_prefix_mask():
    model = build("prefix-lm")
    prompt = random_ids(1, 6)
    prefix_mask = torch.tensor([[1, 1, 1, 0, 0, 0]])
    out = model.generate(
        prompt,
        prefix_mask=prefix_mask,
        max_new_tokens=1,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    torch.testing.assert_close(
        out.logits[0], model(prompt, prefix_mask=prefix_mask).logits[:, -1], rtol=1e-5, atol=1e-5
    )


# ---------------------------------------------------------------------------------------------------------------------
# Forward with a cache, chunk by chunk
# ---------------------------------------------------------------------------------------------------------------------

CHUNKS = (4, 1, 2, 1)  # prompt, then single tokens and a two-token chunk (the causal diagonal is offset there)


@torch.no_grad()
def test_decoder_cache_continuation_matches_full_forward():
    model = build("decoder")
    ids = random_ids(2, sum(CHUNKS))
    attention_mask = torch.ones_like(ids)
    attention_mask[1, :2] = 0  # row 1 is left-padded
    full = model(ids, attention_mask=attention_mask, use_cache=False).logits

    cache, start, pieces = None, 0, []
    for size in CHUNKS:
        end = start + size
        out = model(ids[:, start:end], attention_mask=attention_mask[:, :end], cache=cache, use_cache=True)
        cache, start = output_cache(out), end
        pieces.append(out.logits)
    assert isinstance(cache, DynamicCache) and cache.get_seq_length() == ids.shape[1]
    torch.testing.assert_close(torch.cat(pieces, dim=1)[1, 2:], full[1, 2:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat(pieces, dim=1)[0], full[0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_prefix_lm_cache_continuation_matches_full_forward():
    """The first chunk is the bidirectional prefix; later chunks pass the same (now shorter) prefix mask."""
    model = build("prefix-lm")
    ids = random_ids(2, sum(CHUNKS))
    prompt_prefix = torch.ones(2, CHUNKS[0], dtype=torch.long)
    full_prefix = torch.zeros_like(ids)
    full_prefix[:, : CHUNKS[0]] = 1
    full = model(ids, prefix_mask=full_prefix, use_cache=False).logits
    causal = model(ids, use_cache=False).logits

    cache, start, pieces = None, 0, []
    for size in CHUNKS:
        end = start + size
        out = model(ids[:, start:end], prefix_mask=prompt_prefix, cache=cache, use_cache=True)
        cache, start = output_cache(out), end
        pieces.append(out.logits)
    stepped = torch.cat(pieces, dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)
    assert (stepped - causal).abs().max() > 1e-2  # the prefix did matter


@torch.no_grad()
def test_seq2seq_cache_continuation_matches_full_forward():
    model = build("seq2seq")
    source = random_ids(2, 7, seed=3)
    source_mask = torch.ones_like(source)
    source_mask[1, 5:] = 0
    target = random_ids(2, sum(CHUNKS), seed=4)
    full = model(source, attention_mask=source_mask, decoder_input_ids=target, use_cache=False).logits

    encoder_outputs = model.get_encoder()(input_ids=source, attention_mask=source_mask)
    cache, start, pieces = None, 0, []
    for size in CHUNKS:
        end = start + size
        out = model(
            attention_mask=source_mask,
            encoder_outputs=encoder_outputs,
            decoder_input_ids=target[:, start:end],
            cache=cache,
            use_cache=True,
        )
        cache, start = output_cache(out), end
        pieces.append(out.logits)
    assert isinstance(cache, EncoderDecoderCache)
    assert cache.self_attention_cache.get_seq_length() == target.shape[1]
    assert cache.cross_attention_cache.get_seq_length() == source.shape[1]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)

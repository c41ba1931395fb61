"""Pretraining collators and packing against hand-worked examples and rates over many draws.

A word-level tokenizer with known ids makes the examples readable: [PAD]=0 <s>=1 </s>=2 [UNK]=3 [MASK]=4,
sentinels <extra_id_0..9> = 5..14, then the letters a..z = 15..40.
"""

import string

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from fourfold.training.collators import (
    CausalLMCollator,
    MaskedLMCollator,
    PrefixLMCollator,
    SpanCorruptionCollator,
    apply_noise_mask,
    compute_input_and_target_lengths,
    noise_counts,
    random_spans_noise_mask,
)
from fourfold.training.data import group_texts, restart_at_block_start

SPECIALS = ["[PAD]", "<s>", "</s>", "[UNK]", "[MASK]"] + [f"<extra_id_{i}>" for i in range(10)]
LETTERS = list(string.ascii_lowercase)
A = 15  # id of "a"


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIALS + LETTERS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="[UNK]",
        mask_token="[MASK]",
        extra_special_tokens=SPECIALS[5:],
    )


def ids(letters: str) -> list[int]:
    return [A + LETTERS.index(c) for c in letters.replace(" ", "")]


# Packing ---------------------------------------------------------------------------------------------------------


def test_group_texts_packing_restarts_positions_at_document_starts():
    # The module docstring's example: documents [a a a] [b b b b b] [c c], block size 4.
    batch = {"input_ids": [[1, 1, 1], [2, 2, 2, 2, 2], [3, 3]]}
    rows = group_texts(batch, block_size=4, packing=True)
    assert rows["input_ids"] == [[1, 1, 1, 2], [2, 2, 2, 2]]
    assert rows["position_ids"] == [[0, 1, 2, 0], [0, 1, 2, 3]]  # row 2 starts mid-document: restarts at 0
    assert "position_ids" not in group_texts(batch, block_size=4, packing=False)


def test_restart_at_block_start():
    assert restart_at_block_start([5, 6, 7, 0, 1]) == [0, 1, 2, 0, 1]
    assert restart_at_block_start([0, 1, 0, 0, 1]) == [0, 1, 0, 0, 1]


# Masked LM -------------------------------------------------------------------------------------------------------


def test_masked_lm_rate_and_80_10_10_split(tokenizer):
    collator = MaskedLMCollator(tokenizer, seed=0)
    rows, length = 256, 128
    generator = torch.Generator().manual_seed(0)
    original = torch.randint(A, A + 26, (rows, length), generator=generator)
    original[:, 0], original[:, -1] = tokenizer.bos_token_id, tokenizer.eos_token_id  # special: never masked
    positions = torch.arange(length).repeat(rows, 1)
    examples = [{"input_ids": r.tolist(), "position_ids": p.tolist()} for r, p in zip(original, positions, strict=True)]
    batch = collator(examples)

    assert "attention_mask" not in batch and torch.equal(batch["position_ids"], positions)
    selected = batch["labels"] != -100
    assert not selected[:, [0, -1]].any()
    assert torch.equal(batch["labels"][selected], original[selected])  # labels are the original tokens
    assert abs(selected[:, 1:-1].float().mean().item() - 0.15) < 0.01
    inputs = batch["input_ids"][selected]
    masked = (inputs == tokenizer.mask_token_id).float().mean().item()
    unchanged = (inputs == original[selected]).float().mean().item()
    # A random replacement draws the original token 1 time in ~41 (it draws from the whole vocabulary).
    assert abs(masked - 0.8) < 0.02 and abs(unchanged - 0.1) < 0.02 and abs(1 - masked - unchanged - 0.1) < 0.02
    assert torch.equal(batch["input_ids"][~selected], original[~selected])


# Causal LM and prefix LM -----------------------------------------------------------------------------------------


def test_causal_lm_labels_skip_document_starts(tokenizer):
    row = {"input_ids": ids("abcde"), "position_ids": [0, 1, 2, 0, 1]}
    batch = CausalLMCollator(tokenizer)([row])
    # "d" starts a document: it cannot be predicted from "c", which it does not see.
    assert batch["labels"].tolist() == [[A, A + 1, A + 2, -100, A + 4]]
    assert "attention_mask" not in batch


def test_prefix_lm_fixed_split(tokenizer):
    batch = PrefixLMCollator(tokenizer, prefix_fraction=0.4)([{"input_ids": ids("abcde")}])
    assert batch["prefix_mask"].tolist() == [[1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, A + 2, A + 3, A + 4]]


def test_prefix_lm_random_splits(tokenizer):
    collator = PrefixLMCollator(tokenizer, seed=0)
    length = 8
    batch = collator([{"input_ids": ids("abcdefgh")} for _ in range(2000)])
    split = batch["prefix_mask"].sum(-1)
    # The prefix is a contiguous block from the start, 1..length-1 tokens, every length drawn.
    assert torch.equal(batch["prefix_mask"], (torch.arange(length) < split[:, None]).long())
    assert set(split.tolist()) == set(range(1, length))
    assert torch.equal(batch["labels"] == -100, batch["prefix_mask"].bool())


# Span corruption -------------------------------------------------------------------------------------------------


def test_apply_noise_mask_hand_worked():
    tokens = ids("abcdefgh")
    noise = np.array([0, 0, 1, 1, 0, 0, 1, 0], dtype=bool)
    inputs, targets = apply_noise_mask(tokens, noise, sentinels=[5, 6], eos=2)
    a, b, c, d, e, f, g, h = tokens
    assert inputs == [a, b, 5, e, f, 6, h, 2]
    assert targets == [5, c, d, 6, g, 2]


def test_compute_input_and_target_lengths_matches_t5():
    # T5 / transformers' run_t5_mlm_flax: 512 model inputs need 568 raw tokens and 114 target tokens.
    assert compute_input_and_target_lengths(512, 0.15, 3.0) == (568, 114)


@pytest.mark.parametrize("length", [2, 5, 20, 100])
def test_random_spans_noise_mask_structure(length):
    rng = np.random.default_rng(0)
    num_noise, num_spans = noise_counts(length, 0.15, 3.0)
    for _ in range(50):
        noise = random_spans_noise_mask(length, 0.15, 3.0, rng)
        starts = noise & ~np.concatenate([[False], noise[:-1]])
        assert noise.sum() == num_noise and starts.sum() == num_spans
        assert not noise[0] and noise[-1]  # clean first, noise last (T5)


def reconstruct(inputs: list[int], targets: list[int], sentinels: list[int]) -> list[int]:
    """Replaces each sentinel in the input by the tokens that follow it in the target."""
    spans, current = {}, None
    for token in targets[:-1]:  # without eos
        if token in sentinels:
            current = token
            spans[current] = []
        else:
            spans[current].append(token)
    return [x for token in inputs[:-1] for x in (spans[token] if token in sentinels else [token])]


def test_span_corruption_reconstructs_and_fits(tokenizer):
    raw_length, target_length = compute_input_and_target_lengths(32, 0.15, 3.0)
    collator = SpanCorruptionCollator(tokenizer, seed=0)
    rng = np.random.default_rng(1)
    rows = [rng.integers(A, A + 26, raw_length).tolist() for _ in range(64)]
    batch = collator([{"input_ids": r} for r in rows])
    assert batch["input_ids"].shape == (64, 32) and batch["labels"].shape == (64, target_length)
    sentinels = list(range(5, 15))
    for row, inputs, labels in zip(rows, batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True):
        assert inputs[-1] == labels[-1] == tokenizer.eos_token_id  # nothing truncated, no padding needed
        in_sentinels = [t for t in inputs if t in sentinels]
        assert in_sentinels == [t for t in labels if t in sentinels] == sentinels[: len(in_sentinels)]
        assert labels[0] == sentinels[0]  # the target starts with the first sentinel
        assert reconstruct(inputs, labels, sentinels) == row


def test_packed_span_corruption_keeps_documents_apart(tokenizer):
    collator = SpanCorruptionCollator(tokenizer, seed=0)
    documents = [ids("abcdefghij"), ids("klmnopq"), ids("rstuvwxyz")]
    row = {"input_ids": [t for d in documents for t in d]}
    row["position_ids"] = [p for d in documents for p in range(len(d))]
    batch = collator([row, {"input_ids": ids("abcdefghijklmnopqrstuvwxyz"), "position_ids": list(range(26))}])
    sentinels = list(range(5, 15))
    inputs, positions = batch["input_ids"][0].tolist(), batch["position_ids"][0].tolist()
    labels, decoder_positions = batch["labels"][0].tolist(), batch["decoder_position_ids"][0].tolist()
    encoder_starts = [i for i, p in enumerate(positions) if p == 0]
    decoder_starts = [i for i, p in enumerate(decoder_positions) if p == 0]
    # Three documents and a padding document on each side, paired by index for cross-attention.
    assert len(encoder_starts) == len(decoder_starts) == 4
    for d, document in enumerate(documents):
        enc = inputs[encoder_starts[d] : encoder_starts[d + 1]]
        dec = labels[decoder_starts[d] : decoder_starts[d + 1]]
        assert enc[-1] == dec[-1] == tokenizer.eos_token_id
        assert reconstruct(enc, dec, sentinels) == document
        # Each document's decoder starts from the start token and reads its own target shifted right.
        decoder_inputs = batch["decoder_input_ids"][0, decoder_starts[d] : decoder_starts[d + 1]].tolist()
        assert decoder_inputs == [tokenizer.pad_token_id, *dec[:-1]]
    assert set(labels[decoder_starts[3] :]) == {-100}
    assert set(inputs[encoder_starts[3] :]) == {tokenizer.pad_token_id}

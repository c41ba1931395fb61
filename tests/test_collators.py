"""Pretraining collators and packing against hand-worked examples and rates over many draws.

A word-level tokenizer with known ids makes the examples readable: [PAD]=0 <s>=1 </s>=2 [UNK]=3 [MASK]=4,
sentinels <extra_id_0..9> = 5..14, then the letters a..z = 15..40.
"""

import copy
import itertools
import string

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from fourfold.training.architectures import ARCHITECTURES
from fourfold.training.collators import (
    MODE_TOKENS,
    CausalLMCollator,
    MaskedLMCollator,
    MixtureOfDenoisersCollator,
    PrefixLMCollator,
    PrefixLMMixtureOfDenoisersCollator,
    SpanCorruptionCollator,
    apply_noise_mask,
    compute_input_and_target_lengths,
    noise_counts,
    prefix_lm_denoised_length,
    prefix_lm_raw_length,
    random_spans_noise_mask,
)
from fourfold.training.data import append_eos, group_texts, restart_at_block_start, tokenize_and_group
from fourfold.training.tokenizer import train_tokenizer

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


def test_append_eos_once():
    batch = {
        "input_ids": [[1, 7, 8], [1, 9, 2], []],
        "offset_mapping": [[(0, 0), (0, 3), (4, 6)], [(0, 0), (0, 2), (0, 0)], []],
    }
    out = append_eos(batch, eos_token_id=2)
    assert out["input_ids"] == [[1, 7, 8, 2], [1, 9, 2], [2]]  # a document already ending in eos keeps one
    assert out["offset_mapping"][0][-1] == (0, 0) and len(out["offset_mapping"][1]) == 3


TEXTS = ["call me ishmael some years ago never mind how long precisely"] * 40


@pytest.mark.parametrize("architecture", ["decoder", "prefix-lm"])
def test_causal_prompts_end_without_eos_but_documents_end_with_it(architecture):
    """A prompt tokenized as the text-generation pipeline does (with special tokens) is `<s> text`, ready to continue;
    a pretraining document is `<s> text </s>`, so the model learns to stop."""
    tokenizer = train_tokenizer(TEXTS, architecture, vocab_size=300)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    prompt = tokenizer("call me ishmael").input_ids
    assert prompt[0] == bos and eos not in prompt
    assert tokenizer.decode(prompt, skip_special_tokens=True) == "call me ishmael"

    documents = ["call me ishmael", "some years ago", "never mind how long"]
    raw = DatasetDict(train=Dataset.from_dict({"text": documents}), validation=Dataset.from_dict({"text": documents}))
    rows = tokenize_and_group(raw, tokenizer, block_size=8, framing=ARCHITECTURES[architecture].framing)["train"]
    ids = [t for row in rows["input_ids"] for t in row]
    positions = [p for row in rows["position_ids"] for p in row]
    expected = [t for d in documents for t in [bos, *tokenizer(d, add_special_tokens=False).input_ids, eos]]
    assert ids == expected[: len(ids)] and len(ids) > len(expected) - 8  # only the ragged tail is dropped
    # Every document starts with <s> and the token before it is the previous document's </s>.
    starts = [i for i, t in enumerate(expected) if t == bos]
    assert all(expected[i - 1] == eos for i in starts[1:]) and expected[-1] == eos
    assert [positions[i] for i in starts if i < len(ids)] == [0] * len([i for i in starts if i < len(ids)])


def test_encoder_and_seq2seq_framing():
    """Encoder documents are [CLS] text [SEP] (the template); seq2seq documents are bare text, since span corruption
    ends each corrupted input and target with </s> itself (an eos in the text would land in the last noise span)."""
    documents = ["call me ishmael", "some years ago"]
    raw = DatasetDict(train=Dataset.from_dict({"text": documents}), validation=Dataset.from_dict({"text": documents}))
    for architecture, framing in (("encoder", "[CLS] {} [SEP]"), ("seq2seq", "{}")):
        tokenizer = train_tokenizer(TEXTS, architecture, vocab_size=300, num_sentinels=4)
        framing_of = ARCHITECTURES[architecture].framing
        rows = tokenize_and_group(raw, tokenizer, block_size=2, packing=False, framing=framing_of)
        ids = [t for row in rows["train"]["input_ids"] for t in row]
        expected = [t for d in documents for t in tokenizer(framing.format(d), add_special_tokens=False).input_ids]
        assert ids == expected[: len(ids)] and len(ids) >= len(expected) - 1, architecture
        if architecture == "seq2seq":
            assert tokenizer.eos_token_id not in ids
            assert tokenizer("call me").input_ids[-1] == tokenizer.eos_token_id  # task inputs keep T5's </s>


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


# UL2 mixture of denoisers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ul2_tokenizer(tokenizer) -> PreTrainedTokenizerFast:
    ul2 = copy.deepcopy(tokenizer)
    ul2.add_tokens(list(MODE_TOKENS), special_tokens=True)  # [NLU]=41 [NLG]=42 [S2S]=43
    return ul2


def packed(*documents: str) -> dict:
    return {
        "input_ids": [t for d in documents for t in ids(d)],
        "position_ids": [p for d in documents for p in range(len(d))],
    }


def documents_of(batch: dict, row: int) -> list[tuple[list[int], list[int]]]:
    """(input, target) per document of a packed batch row, the trailing padding document left out."""
    inputs, positions = batch["input_ids"][row].tolist(), batch["position_ids"][row].tolist()
    labels, decoder_positions = batch["labels"][row].tolist(), batch["decoder_position_ids"][row].tolist()
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(inputs)]
    decoder_starts = [i for i, p in enumerate(decoder_positions) if p == 0] + [len(labels)]
    return [
        (inputs[a:b], labels[c:d])
        for a, b, c, d in zip(starts[:-2], starts[1:-1], decoder_starts[:-2], decoder_starts[1:-1], strict=True)
    ]


def test_ul2_sequential_denoiser_hand_worked(ul2_tokenizer):
    collator = MixtureOfDenoisersCollator(ul2_tokenizer, probabilities=(0, 0, 1), seed=0)
    (inputs, targets), *_ = documents_of(collator([packed("abcdef")]), 0)
    split = len(inputs) - 2  # [S2S] prefix </s>
    assert inputs == [43, *ids("abcdef")[:split], 2] and targets == [*ids("abcdef")[split:], 2]
    assert 1 <= split <= 5


@pytest.mark.parametrize("kind, mode, density, span", [(0, 41, 0.15, 3.0), (1, 42, 0.5, 8.0)])
def test_ul2_span_denoisers_reconstruct(ul2_tokenizer, kind, mode, density, span):
    probabilities = tuple(float(k == kind) for k in range(3))
    collator = MixtureOfDenoisersCollator(ul2_tokenizer, probabilities=probabilities, seed=0)
    long, short = "abcdefghijklmnopqrstuvwxyz" * 2, "klmnopqrst"
    (long_inputs, long_targets), (short_inputs, short_targets) = documents_of(collator([packed(long, short)]), 0)
    sentinels = list(range(5, 15))
    assert long_inputs[0] == short_inputs[0] == mode
    assert reconstruct(long_inputs[1:], long_targets, sentinels) == ids(long)
    assert reconstruct(short_inputs[1:], short_targets, sentinels) == ids(short)
    noise = [t for t in long_targets[:-1] if t not in sentinels]
    assert len(noise) == noise_counts(len(long), density, span)[0]  # 8 of 52 (R), 26 of 52 (X)


def test_ul2_mixture_rates_and_packed_only(tokenizer, ul2_tokenizer):
    collator = MixtureOfDenoisersCollator(ul2_tokenizer, seed=0)
    batch = collator([packed("abcdefgh", "ijklmnop", "qrstuvwx") for _ in range(400)])
    modes = [inputs[0] for row in range(400) for inputs, _ in documents_of(batch, row)]
    rates = [modes.count(m) / len(modes) for m in (41, 42, 43)]
    assert rates == pytest.approx([0.4, 0.4, 0.2], abs=0.03)
    with pytest.raises(ValueError, match="packed rows"):
        collator([{"input_ids": ids("abcdefgh")}])
    with pytest.raises(ValueError, match="mode tokens"):
        MixtureOfDenoisersCollator(tokenizer)


# UL2 for the prefix LM: [mode] corrupted input (bidirectional prefix), then the targets, in one sequence -------------


@pytest.mark.parametrize("kind, mode, density, span", [(0, 41, 0.15, 3.0), (1, 42, 0.5, 8.0)])
def test_prefix_lm_ul2_span_denoisers_hand_worked(monkeypatch, ul2_tokenizer, kind, mode, density, span):
    from fourfold.training import collators

    drawn = []

    def fixed_mask(length, noise_density, mean_noise_span_length, rng):
        drawn.append((noise_density, mean_noise_span_length))
        return np.array({5: [0, 0, 1, 1, 0], 4: [0, 1, 1, 0]}[length], dtype=bool)

    monkeypatch.setattr(collators, "random_spans_noise_mask", fixed_mask)
    probabilities = tuple(float(k == kind) for k in range(3))
    collator = PrefixLMMixtureOfDenoisersCollator(ul2_tokenizer, probabilities=probabilities, seed=0)
    # Row 0: one document "abcde". Row 1: "<s> f g h </s>"; its eos is stripped (the denoisers end each side in one).
    batch = collator([packed("abcde"), {"input_ids": [1, *ids("fgh"), 2], "position_ids": [0, 1, 2, 3, 4]}])
    assert drawn == [(density, span)] * 2
    a, b, c, d, e = ids("abcde")
    f, g, h = ids("fgh")
    x0, pad, eos = 5, 0, 2
    assert batch["input_ids"].tolist() == [
        [mode, a, b, x0, e, eos, x0, c, d, eos],  # [mode] a b X0 e </s> | X0 c d </s>
        [mode, 1, x0, h, eos, x0, f, g, eos, pad],  # [mode] <s> X0 h </s> | X0 f g </s>, then a padding document
    ]
    assert batch["prefix_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [
        [-100, -100, -100, -100, -100, -100, x0, c, d, eos],
        [-100, -100, -100, -100, -100, x0, f, g, eos, -100],
    ]
    assert batch["position_ids"].tolist() == [list(range(10)), [*range(9), 0]]
    assert "attention_mask" not in batch


def test_prefix_lm_ul2_sequential_denoiser_hand_worked(ul2_tokenizer):
    collator = PrefixLMMixtureOfDenoisersCollator(ul2_tokenizer, probabilities=(0, 0, 1), seed=0)
    batch = collator([packed("abcdef", "ghi")])
    first, second = ids("abcdef"), ids("ghi")
    prefix = batch["prefix_mask"][0].tolist()
    split = prefix[:9].count(1) - 2  # [S2S] a.. </s> of the first document (9 = 6 tokens + mode + two eos)
    k = prefix[9:].count(1) - 2
    assert 1 <= split <= 5 and 1 <= k <= 2
    assert (
        batch["input_ids"][0].tolist()
        == [
            *[43, *first[:split], 2, *first[split:], 2],  # [S2S] prefix </s> | continuation </s>
            *[43, *second[:k], 2, *second[k:], 2],
        ]
    )
    assert prefix == [1] * (split + 2) + [0] * (7 - split) + [1] * (k + 2) + [0] * (4 - k)
    assert batch["labels"][0].tolist() == [
        *[-100] * (split + 2), *first[split:], 2, *[-100] * (k + 2), *second[k:], 2,
    ]  # fmt: skip
    assert batch["position_ids"][0].tolist() == [*range(9), *range(6)]


def test_prefix_lm_ul2_labels_never_in_prefix_and_rows_fit(ul2_tokenizer):
    block = 40
    raw = prefix_lm_raw_length(block)
    assert prefix_lm_denoised_length(raw) <= block < prefix_lm_denoised_length(raw + 1)
    collator = PrefixLMMixtureOfDenoisersCollator(ul2_tokenizer, seed=0, max_length=block)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(300):  # rows of `raw` tokens, cut into 1-3 documents
        cuts = sorted(rng.choice(np.arange(1, raw), rng.integers(0, 3), replace=False).tolist())
        bounds = [0, *cuts, raw]
        rows.append(
            {
                "input_ids": rng.integers(A, A + 26, raw).tolist(),
                "position_ids": [p for a, b in itertools.pairwise(bounds) for p in range(b - a)],
            }
        )
    batch = collator(rows)
    labelled = batch["labels"] != -100
    assert not (labelled & batch["prefix_mask"].bool()).any()  # never a label inside the prefix
    assert torch.equal(batch["labels"][labelled], batch["input_ids"][labelled])  # the targets are what follows
    assert batch["position_ids"].max() < block  # every document fits the block: nothing was cut
    modes = batch["input_ids"][batch["position_ids"] == 0]
    modes = modes[modes != ul2_tokenizer.pad_token_id]
    rates = [(modes == m).float().mean().item() for m in (41, 42, 43)]
    assert rates == pytest.approx([0.4, 0.4, 0.2], abs=0.05)
    # Each document's prefix is contiguous from its start, and its targets follow to its end.
    for row in range(20):
        positions, prefix = batch["position_ids"][row].tolist(), batch["prefix_mask"][row].tolist()
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
        for a, b in itertools.pairwise(starts):
            n = sum(prefix[a:b])
            assert prefix[a:b] == [1] * n + [0] * (b - a - n)
    with pytest.raises(ValueError, match="max_length=5"):
        PrefixLMMixtureOfDenoisersCollator(ul2_tokenizer, seed=0, max_length=5)([packed("abcdefgh")])
    with pytest.raises(ValueError, match="packed rows"):
        collator([{"input_ids": ids("abcdefgh")}])

"""Batch collators: turn rows of token ids into a pretraining objective's inputs and labels.

    MaskedLMCollator         masked LM: transformers' DataCollatorForLanguageModeling (15% of tokens, 80/10/10),
                             kept packing-aware (encoder: mlm, electra)
    CausalLMCollator         causal LM: labels = input ids (the model shifts them); -100 where a new document starts
    PrefixLMCollator         prefix LM: a random split point per row; prefix_mask = 1 before it, labels -100 on it
    PrefixLMMixtureOf...     UL2's mixture of denoisers in one sequence: [mode] corrupted input (the prefix), then
                             the target (prefix-lm: ul2)
    SpanCorruptionCollator   T5 span corruption: noise spans -> sentinels in the input; the target lists the spans
    MixtureOfDenoisers...    UL2's mixture of denoisers (span corruption, regular and extreme, and prefix ->
                             continuation) (seq2seq: ul2)
Which architecture trains with which is its record's business (`architectures.py`, `Objective.collator`).

Every collator accepts rows with `position_ids` (packed rows, see data.py) and then returns no attention_mask, so
the models keep documents apart; rows without them are fixed-length blocks that need no padding.
Randomness: with a `seed` (what `fourfold pretrain` passes), each batch's draws are a function of the seed and the
batch's tokens, not of a generator's history; so a run resumed from a checkpoint (or a rerun) draws exactly what the
uninterrupted run drew, and reshuffled epochs still draw afresh. `seed=None` draws from torch's global generator.
"""

import itertools
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase


def _stack(examples: list[dict], key: str) -> torch.Tensor:
    return torch.tensor([list(e[key]) for e in examples], dtype=torch.long)


def batch_seed(seed: int | None, examples: list[dict]) -> int:
    """A seed fixed by `seed` and the batch's tokens (crc32); drawn from torch's global generator if `seed` is None."""
    if seed is None:
        return int(torch.randint(0, 2**62, ()))
    tokens = np.concatenate([np.asarray(e["input_ids"], dtype=np.int64) for e in examples])
    return (seed << 32) + zlib.crc32(tokens.tobytes())


def document_starts(position_ids: torch.Tensor) -> torch.Tensor:
    """True where a document starts (position 0), except the row's first token."""
    starts = position_ids == 0
    starts[..., 0] = False
    return starts


def documents_of_row(example: dict) -> list[np.ndarray]:
    """The documents of a packed row (split where `position_ids` restart); a row without them is one document."""
    tokens = np.asarray(example["input_ids"])
    if "position_ids" not in example:
        return [tokens]
    bounds = [*np.flatnonzero(np.asarray(example["position_ids"]) == 0).tolist(), len(tokens)]
    return [tokens[a:b] for a, b in itertools.pairwise(bounds)]


@dataclass
class MaskedLMCollator:
    """Masked LM (BERT): transformers' collator, with `position_ids` carried through for packed rows.

    Args:
        tokenizer: supplies the mask token, the vocabulary for random replacements, and the special tokens never masked.
        mlm_probability: fraction of tokens selected for prediction (15%).
        mask_replace_prob / random_replace_prob: of the selected, replaced by [MASK] (80%) / a random token (10%);
            the rest stay unchanged.
        whole_word_mask: select whole words (needs `offset_mapping` in the rows:
            `tokenize_and_group(return_offsets=True)`).
        seed: draws follow the seed and the batch's tokens (see the module docstring); `None`: torch's generator.
    """

    tokenizer: PreTrainedTokenizerBase
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    whole_word_mask: bool = False
    seed: int | None = None
    _inner: DataCollatorForLanguageModeling = field(init=False, repr=False)

    def __post_init__(self):
        self._inner = DataCollatorForLanguageModeling(
            self.tokenizer,
            mlm=True,
            mlm_probability=self.mlm_probability,
            mask_replace_prob=self.mask_replace_prob,
            random_replace_prob=self.random_replace_prob,
            whole_word_mask=self.whole_word_mask,
        )

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        rows = [{k: v for k, v in e.items() if k in ("input_ids", "offset_mapping")} for e in examples]
        self._inner.generator = torch.Generator().manual_seed(batch_seed(self.seed, examples))
        batch = self._inner(rows)
        if "position_ids" in examples[0]:
            batch.pop("attention_mask", None)  # packed: the restarting positions are the mask
            batch["position_ids"] = _stack(examples, "position_ids")
        return dict(batch)


@dataclass
class CausalLMCollator:
    """Causal LM (GPT): labels are the input ids (the model shifts them); padding and document starts are -100.

    A document's first token is not predicted from the previous document, which it cannot see in a packed row.
    """

    tokenizer: PreTrainedTokenizerBase

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        input_ids = _stack(examples, "input_ids")
        labels = input_ids.masked_fill(input_ids == self.tokenizer.pad_token_id, -100)
        batch = {"input_ids": input_ids, "labels": labels}
        if "position_ids" in examples[0]:
            batch["position_ids"] = _stack(examples, "position_ids")
            labels[document_starts(batch["position_ids"])] = -100
        return batch


@dataclass
class PrefixLMCollator:
    """Prefix LM: each row is split into a bidirectional prefix and a causal continuation that is the target.

        input_ids    [a b c d e]     split at 2
        prefix_mask  [1 1 0 0 0]
        labels       [- - c d e]     (-100 on the prefix; the model predicts c from position 1, which sees a b only)

    Args:
        tokenizer: supplies the pad id (padding is never a target).
        prefix_fraction: a fixed split at this fraction of the row; `None` draws the split uniformly from
            [1, length - 1] per row, so the model learns every prefix length.
    """

    tokenizer: PreTrainedTokenizerBase
    prefix_fraction: float | None = None
    seed: int | None = None

    def split_points(self, batch_size: int, length: int, rng: np.random.Generator) -> np.ndarray:
        if self.prefix_fraction is not None:
            return np.full(batch_size, min(max(round(length * self.prefix_fraction), 1), length - 1))
        return rng.integers(1, length, size=batch_size)  # 1 .. length-1: both parts non-empty

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        input_ids = _stack(examples, "input_ids")
        batch_size, length = input_ids.shape
        rng = np.random.default_rng(batch_seed(self.seed, examples))
        split = torch.as_tensor(self.split_points(batch_size, length, rng))
        prefix_mask = (torch.arange(length)[None, :] < split[:, None]).long()  # (B, T)
        labels = input_ids.masked_fill(prefix_mask.bool() | (input_ids == self.tokenizer.pad_token_id), -100)
        batch = {"input_ids": input_ids, "prefix_mask": prefix_mask, "labels": labels}
        if "position_ids" in examples[0]:
            batch["position_ids"] = _stack(examples, "position_ids")
            labels[document_starts(batch["position_ids"])] = -100
        return batch


def noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) that span corruption draws in a sequence of `length` tokens (T5's rounding).

    At least one noise token and one span, and at least one token left clean, so both input and target are non-empty.
    """
    num_noise = min(max(int(np.round(length * noise_density)), 1), length - 1)
    num_spans = max(int(np.round(min(num_noise, length - num_noise) / mean_noise_span_length)), 1)
    return num_noise, num_spans


def random_spans_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """T5's noise mask: `noise_density` of `length` tokens, in spans averaging `mean_noise_span_length`.

    Clean and noise spans alternate, clean first and noise last; each kind is a random partition of its tokens into
    `num_spans` non-empty parts. E.g. length 10, 3 noise tokens in 2 spans: [0 0 1 0 0 0 0 0 1 1] (clean 2, noise 1,
    clean 5, noise 2).
    """
    num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
    num_clean = length - num_noise
    num_spans = min(num_spans, num_clean, num_noise)  # each span needs a token

    def random_segmentation(num_items: int, num_segments: int) -> np.ndarray:
        # Choose num_segments - 1 cut points among the num_items - 1 gaps; segment lengths follow.
        first_in_segment = np.zeros(num_items, dtype=bool)
        first_in_segment[1 + rng.choice(num_items - 1, num_segments - 1, replace=False)] = True
        return np.bincount(np.cumsum(first_in_segment), minlength=num_segments)

    clean_lengths = random_segmentation(num_clean, num_spans)
    noise_lengths = random_segmentation(num_noise, num_spans)
    interleaved = np.stack([clean_lengths, noise_lengths], axis=1).reshape(-1)  # clean, noise, clean, noise, ...
    span_index = np.repeat(np.arange(2 * num_spans), interleaved)
    return span_index % 2 == 1


def compute_input_and_target_lengths(
    inputs_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """(raw tokens per row, target length) such that a corrupted row is at most `inputs_length` tokens, eos included.

    Corruption shrinks a row: each noise span becomes one sentinel. So rows are cut longer than the model's input
    (T5's `compute_input_and_target_lengths`), and nothing is truncated later.
    """

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise, num_spans = noise_counts(tokens_length, noise_density, mean_noise_span_length)
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1  # +1: eos

    tokens_length = inputs_length
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, lengths(tokens_length)[1]


def apply_noise_mask(
    tokens: list[int], noise: np.ndarray, sentinels: list[int], eos: int
) -> tuple[list[int], list[int]]:
    """(input, target): each noise span becomes sentinel i in the input; the target is sentinel i + the span.

    tokens [a b c d e f g h], noise [0 0 1 1 0 0 1 0] -> input [a b X0 e f X1 h eos], target [X0 c d X1 g eos]
    """
    inputs, targets = [], []
    span = -1
    previous = False
    for token, is_noise in zip(tokens, noise, strict=True):
        if is_noise and not previous:  # a span starts
            span += 1
            inputs.append(sentinels[span])
            targets.append(sentinels[span])
        (targets if is_noise else inputs).append(token)
        previous = is_noise
    # eos ends both sides (T5 closes the target with a last sentinel only when text follows the last span).
    return [*inputs, eos], [*targets, eos]


@dataclass
class SpanCorruptionCollator:
    """T5 span corruption: noise spans are replaced by sentinels in the input; the target lists them after their
    sentinels. Interleaving input and target at the sentinels gives back the original.

        original  [a b c d e f g h]      noise mask [0 0 1 1 0 0 1 0]
        input     [a b <X0> e f <X1> h </s>]
        labels    [<X0> c d <X1> g </s>]

    Rows with `position_ids` (packed) are corrupted document by document; inputs get `position_ids`, targets
    `decoder_position_ids` and per-document `decoder_input_ids` (each document's decoder starts from the start token),
    and every row ends in a padding "document" so that rows of different lengths stack without an attention mask.

    Args:
        tokenizer: supplies eos, pad and the sentinels `<extra_id_i>`.
        noise_density: fraction of tokens corrupted (0.15).
        mean_noise_span_length: average span length (3.0).
        decoder_start_token_id: first decoder input of each document; `None` means the pad id (T5).
    """

    tokenizer: PreTrainedTokenizerBase
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    decoder_start_token_id: int | None = None
    seed: int | None = None
    _sentinels: list[int] = field(init=False, repr=False)

    def __post_init__(self):
        from fourfold.training.tokenizer import sentinel_ids

        self._sentinels = sentinel_ids(self.tokenizer)
        if not self._sentinels:
            raise ValueError("Span corruption needs sentinel tokens <extra_id_0>, ...: train a seq2seq tokenizer.")
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = self.tokenizer.pad_token_id

    def corrupt(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        """(input, target) of one document, each ending in eos."""
        return self.span_corrupt(tokens, rng, self.noise_density, self.mean_noise_span_length)

    def span_corrupt(
        self, tokens: np.ndarray, rng: np.random.Generator, noise_density: float, mean_noise_span_length: float
    ) -> tuple[list[int], list[int]]:
        eos = self.tokenizer.eos_token_id
        if len(tokens) < 2:  # nothing to corrupt and keep: the target is just eos
            return [*tokens.tolist(), eos], [eos]
        noise = random_spans_noise_mask(len(tokens), noise_density, mean_noise_span_length, rng)
        span_starts = noise & ~np.concatenate([[False], noise[:-1]])
        num_spans = int(span_starts.sum())
        if num_spans > len(self._sentinels):
            raise ValueError(
                f"A row has {num_spans} noise spans but the tokenizer has {len(self._sentinels)} sentinels: train the "
                "tokenizer with more (--num_sentinels), or lower --block_size or --noise_density."
            )
        return apply_noise_mask(tokens.tolist(), noise, self._sentinels, eos)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        packed = "position_ids" in examples[0]
        rng = np.random.default_rng(batch_seed(self.seed, examples))
        rows = [[self.corrupt(d, rng) for d in documents_of_row(example)] for example in examples]
        if not packed:
            # Fixed-length rows (block cut by compute_input_and_target_lengths) all corrupt to the same lengths.
            return {"input_ids": self._pad([r[0][0] for r in rows]), "labels": self._pad([r[0][1] for r in rows], -100)}
        return self._pack(rows)

    def _pad(self, sequences: list[list[int]], value: int | None = None) -> torch.Tensor:
        value = self.tokenizer.pad_token_id if value is None else value
        width = max(map(len, sequences))
        return torch.tensor([s + [value] * (width - len(s)) for s in sequences], dtype=torch.long)

    def _pack(self, rows: list[list[tuple[list[int], list[int]]]]) -> dict[str, torch.Tensor]:
        # +1: every row ends in a padding document on both sides, so encoder and decoder have the same number of
        # documents and cross-attention pairs document d with document d (an unpaired one would see nothing).
        input_width = max(sum(len(i) for i, _ in row) for row in rows) + 1
        target_width = max(sum(len(t) for _, t in row) for row in rows) + 1
        batch = {k: [] for k in ("input_ids", "position_ids", "labels", "decoder_input_ids", "decoder_position_ids")}
        pad = self.tokenizer.pad_token_id
        for row in rows:
            input_ids, position_ids, labels, decoder_input_ids, decoder_position_ids = [], [], [], [], []
            for inputs, targets in row:
                input_ids += inputs
                position_ids += range(len(inputs))
                labels += targets
                decoder_input_ids += [self.decoder_start_token_id, *targets[:-1]]  # shifted right per document
                decoder_position_ids += range(len(targets))
            input_padding, target_padding = input_width - len(input_ids), target_width - len(labels)
            batch["input_ids"].append(input_ids + [pad] * input_padding)
            batch["position_ids"].append(position_ids + list(range(input_padding)))
            batch["labels"].append(labels + [-100] * target_padding)
            batch["decoder_input_ids"].append(decoder_input_ids + [pad] * target_padding)
            batch["decoder_position_ids"].append(decoder_position_ids + list(range(target_padding)))
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


# UL2's mode tokens, one per kind of denoiser (R, X, S); `fourfold pretrain --objective ul2` adds them to the tokenizer.
MODE_TOKENS = ("[NLU]", "[NLG]", "[S2S]")


@dataclass
class MixtureOfDenoisersCollator(SpanCorruptionCollator):
    """UL2's mixture of denoisers (Tay et al., 2022), one of each kind, drawn per document with `probabilities`:

        R  [NLU]  regular span corruption: `noise_density` 0.15, spans of 3 (T5's)
        X  [NLG]  extreme span corruption: `x_noise_density` 0.5, spans of `x_mean_noise_span_length` 8
        S  [S2S]  sequential: the input is a prefix of the document (split uniformly), the target the rest

    The mode token starts the input, so the model knows the task (and a user picks one at inference):
        document  [a b c d e f]
        S, split at 2           input [S2S a b </s>]            target [c d e f </s>]
        R, noise [0 0 0 0 1 1]  input [NLU a b c d X0 </s>]     target [X0 e f </s>]
    Packed rows only (`position_ids`): the denoisers give inputs and targets of different lengths, which packing
    lines up without an attention mask.
    """

    probabilities: tuple[float, float, float] = (0.4, 0.4, 0.2)
    x_noise_density: float = 0.5
    x_mean_noise_span_length: float = 8.0
    _modes: list[int] = field(init=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        self._modes = [self.tokenizer.convert_tokens_to_ids(t) for t in MODE_TOKENS]
        if None in self._modes or self.tokenizer.unk_token_id in self._modes:
            raise ValueError(f"UL2 needs the mode tokens {MODE_TOKENS}: `tokenizer.add_tokens(MODE_TOKENS, True)`.")
        if not np.isclose(sum(self.probabilities), 1.0) or min(self.probabilities) < 0:
            raise ValueError(f"probabilities={self.probabilities} must be three non-negative numbers summing to 1.")

    def corrupt(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        """([mode] + input, target) of one document under a denoiser drawn with `probabilities`."""
        kind = int(rng.choice(3, p=self.probabilities))
        if kind == 2:  # S: prefix -> continuation
            split = int(rng.integers(1, len(tokens))) if len(tokens) >= 2 else len(tokens)
            inputs, targets = [*tokens[:split].tolist(), self.tokenizer.eos_token_id], [*tokens[split:].tolist()]
            targets.append(self.tokenizer.eos_token_id)
        elif kind == 1:
            inputs, targets = self.span_corrupt(tokens, rng, self.x_noise_density, self.x_mean_noise_span_length)
        else:
            inputs, targets = self.span_corrupt(tokens, rng, self.noise_density, self.mean_noise_span_length)
        return [self._modes[kind], *inputs], targets

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if "position_ids" not in examples[0]:
            raise ValueError("The UL2 mixture needs packed rows (--packing true): its inputs differ in length.")
        return super().__call__(examples)


def prefix_lm_denoised_length(
    length: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    x_noise_density: float = 0.5,
    x_mean_noise_span_length: float = 8.0,
) -> int:
    """The most tokens a document of `length` tokens takes in `PrefixLMMixtureOfDenoisersCollator`'s layout.

    [mode] input eos target eos: `length` + 3, plus 2 per noise span (a sentinel on each side) for R and X.
    """
    spans = max(
        noise_counts(length, noise_density, mean_noise_span_length)[1] if length >= 2 else 0,
        noise_counts(length, x_noise_density, x_mean_noise_span_length)[1] if length >= 2 else 0,
    )
    return length + 3 + 2 * spans


def prefix_lm_raw_length(block_size: int, **densities: float) -> int:
    """The longest raw row whose every document (of any length up to it) lays out in at most `block_size` tokens."""
    length = 0
    while prefix_lm_denoised_length(length + 1, **densities) <= block_size:
        length += 1
    if length < 2:
        raise ValueError(f"block_size={block_size} is too short for UL2's prefix-LM layout.")
    return length


@dataclass
class PrefixLMMixtureOfDenoisersCollator(MixtureOfDenoisersCollator):
    """UL2's mixture of denoisers for a prefix LM: the seq2seq mixture's (input, target) pairs, drawn per document
    exactly as `MixtureOfDenoisersCollator` draws them, laid out in one sequence: `[mode] input` is the
    bidirectional prefix (prefix_mask = 1), the target follows it, causal, and is all the labels.

        document (eos stripped, the denoisers add it)   [<s> a b c d </s>]
        S, split at 3   input_ids    [S2S <s> a b </s> c d </s>]
                        prefix_mask  [ 1   1  1 1  1  0 0  0 ]
                        labels       [ -   -  - -  -  c d </s>]
        R, noise [0 0 1 1 0]   input_ids    [NLU <s> a X0 d </s> X0 b c </s>]
                               prefix_mask  [ 1   1  1 1  1  1  0  0 0  0 ]
                               labels       [ -   -  - -  -  -  X0 b c </s>]

    A document of n tokens grows to at most `prefix_lm_denoised_length(n)`; `max_length` (the model's block) makes a
    longer one an error, never a silent cut (`prefix_lm_raw_length` gives rows that always fit). Packed rows only;
    each row ends in a padding document (positions restarting, prefix_mask 0, labels -100) up to the batch's longest.
    """

    max_length: int | None = None

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if "position_ids" not in examples[0]:
            raise ValueError("The UL2 mixture needs packed rows (--packing true): its inputs differ in length.")
        rng = np.random.default_rng(batch_seed(self.seed, examples))
        eos = self.tokenizer.eos_token_id
        rows = []
        for example in examples:
            row = {"input_ids": [], "position_ids": [], "prefix_mask": [], "labels": []}
            for document in documents_of_row(example):
                if len(document) > 1 and document[-1] == eos:  # the denoisers end input and target in eos
                    document = document[:-1]
                prefix, targets = self.corrupt(document, rng)
                length = len(prefix) + len(targets)
                if self.max_length is not None and length > self.max_length:
                    raise ValueError(
                        f"A document of {len(document)} tokens lays out in {length} > max_length={self.max_length}: "
                        "cut rows with prefix_lm_raw_length(block_size)."
                    )
                row["input_ids"] += prefix + targets
                row["position_ids"] += range(length)
                row["prefix_mask"] += [1] * len(prefix) + [0] * len(targets)
                row["labels"] += [-100] * len(prefix) + targets
            rows.append(row)
        width = max(len(r["input_ids"]) for r in rows)
        block = self.max_length or width
        batch = {k: [] for k in rows[0]}
        for row in rows:
            padding = width - len(row["input_ids"])
            batch["input_ids"].append(row["input_ids"] + [self.tokenizer.pad_token_id] * padding)
            batch["position_ids"].append(row["position_ids"] + [p % block for p in range(padding)])
            batch["prefix_mask"].append(row["prefix_mask"] + [0] * padding)
            batch["labels"].append(row["labels"] + [-100] * padding)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}

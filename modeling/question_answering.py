"""Extractive question answering: contexts into overlapping windows, and answers out of start/end logits.

The one implementation of both halves, used by the `fourfold-question-answering` pipeline (pipelines.py) and by
the training code's QA features and evaluation, so that what users run and what we report decode alike. It ships
to the Hub with the pipeline (torch, transformers and the standard library only).

Windows: a context longer than a window is read in overlapping windows, `doc_stride` tokens of overlap, as
transformers' run_qa.py does; `check_doc_stride` is the one rule for the stride (it raises, never clamps).
Answers: every span (start <= end < start + max_answer_length, both context tokens) of every window is scored by
start logit + end logit (run_qa's rule, comparable across windows); SQuAD v2's "no answer" competes when asked for.

API for evaluation:
    question_windows(tokenizer, question, context, *, max_length, doc_stride, argument_names=..., **tokenizer_kwargs)
        -> QuestionWindows(encoding, example_ids, offsets): the tokenizer's output (one row per window), each
        window's question index, and each window's per-token (char start, char end) in its context, None outside it
    check_doc_stride(doc_stride, max_length, *, tokenizer=None, questions=(), argument_names=...) -> None
    decode_answers(start_logits, end_logits, offsets, context, *, max_answer_length=30, top_k=1,
                   null_score_diff_threshold=None) -> list[Answer(text, start, end, score)], best first, never empty
        start_logits / end_logits: one row per window of ONE example, (windows, length) or a list of rows, padded
        rows welcome (positions past a window's offsets are ignored); offsets: `QuestionWindows.offsets` of those
        windows. `score` is a probability (see `decode_answers`); `answers[0].text` is the prediction ("" = none).
"""

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

Offsets = list[tuple[int, int] | None]  # per token of a window: its characters in the context, None outside it
DEFAULT_ARGUMENT_NAMES = ("doc_stride", "max_length")  # how errors name the two lengths (the caller's spelling)


class Answer(NamedTuple):
    """One answer: `context[start:end] == text`; "" with start = end = 0 is "no answer"."""

    text: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class QuestionWindows:
    """Question + context pairs as windows (`question_windows`).

    Attributes:
        encoding: the tokenizer's output, one row per window: input_ids, attention_mask (token_type_ids when the
            tokenizer makes them), offset_mapping, overflow_to_sample_mapping; tensors if asked for.
        example_ids: window -> index of its question in the call.
        offsets: window -> per token, its (start, end) characters in the context; None for question, special and
            padding tokens. The only tokens an answer may use.
    """

    encoding: BatchEncoding
    example_ids: list[int]
    offsets: list[Offsets]


# --------------------------------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------------------------------


def context_room(tokenizer: PreTrainedTokenizerBase, question: str, max_length: int) -> int:
    """Tokens a window of `max_length` has for the context beside `question` and the pair's special tokens."""
    question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    return max_length - question_tokens - tokenizer.num_special_tokens_to_add(pair=True)


def check_doc_stride(
    doc_stride: Any,
    max_length: int,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    questions: Sequence[str] = (),
    argument_names: tuple[str, str] = DEFAULT_ARGUMENT_NAMES,
) -> None:
    """The one rule for `doc_stride`, the overlap of consecutive windows: a whole number of tokens >= 0, below
    `max_length`, and (given a tokenizer) below the room each question leaves for the context, or no window could
    advance. Raises ValueError naming the argument and the fix; never clamps.

    Args:
        argument_names: how the errors spell the stride and the window length: ("--doc_stride", "--max_length") for
            a command line, ("doc_stride", "max_seq_len") for the pipeline's keywords.
    """
    stride_name, length_name = argument_names
    if isinstance(doc_stride, bool) or not isinstance(doc_stride, numbers.Integral) or doc_stride < 0:
        raise ValueError(
            f"{_named(stride_name, doc_stride)}: the overlap between the windows of a long context is a number of "
            f"tokens, an integer >= 0; pass e.g. {_named(stride_name, 32)} (a quarter of {length_name} is usual)."
        )
    if doc_stride >= max_length:
        raise ValueError(
            f"{_named(stride_name, doc_stride)} must be smaller than {_named(length_name, max_length)}: the overlap is "
            f"part of each window, beside the question. Lower {stride_name} (a quarter of {length_name} is usual) or "
            f"raise {length_name}."
        )
    if tokenizer is None or not questions:
        return
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    for question, ids in zip(questions, tokenizer(list(questions), add_special_tokens=False)["input_ids"], strict=True):
        room, needed = max_length - len(ids) - specials, len(ids) + specials + doc_stride
        shown = question if len(question) <= 80 else question[:77] + "..."
        if room < 1:
            raise ValueError(
                f"The question {shown!r} is {len(ids)} tokens, which with {specials} special tokens leaves no room "
                f"for the context in {_named(length_name, max_length)}. Raise {length_name} above {needed}, or "
                "shorten or drop such questions."
            )
        if doc_stride >= room:
            raise ValueError(
                f"{_named(stride_name, doc_stride)} must be smaller than the {room} tokens that the question "
                f"{shown!r} ({len(ids)} tokens) leaves for the context in {_named(length_name, max_length)}: lower "
                f"{stride_name} below {room}, or raise {length_name} above {needed}."
            )


def _named(name: str, value: Any) -> str:
    """`--flag value` for a command-line flag, `keyword=value` for a Python argument."""
    return f"{name} {value!r}" if name.startswith("-") else f"{name}={value!r}"


def question_windows(
    tokenizer: PreTrainedTokenizerBase,
    question: str | list[str],
    context: str | list[str],
    *,
    max_length: int,
    doc_stride: int,
    argument_names: tuple[str, str] = DEFAULT_ARGUMENT_NAMES,
    **tokenizer_kwargs,
) -> QuestionWindows:
    """[CLS] question [SEP] window of the context [SEP], for every window of each context; nothing is cut away.

    Consecutive windows of one context share `doc_stride` context tokens (checked first, `check_doc_stride`).
    A 10-token context, 4 tokens of room per window, doc_stride 1: windows hold tokens 0-3, 3-6, 6-9.

    Args:
        tokenizer: a fast tokenizer (the offsets map tokens back to characters).
        question / context: one pair, or lists of pairs.
        tokenizer_kwargs: passed on, e.g. padding="longest", return_tensors="pt".
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("Question answering needs a fast tokenizer: it maps tokens back to characters.")
    questions = [question] if isinstance(question, str) else list(question)
    check_doc_stride(doc_stride, max_length, tokenizer=tokenizer, questions=questions, argument_names=argument_names)
    encoding = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        **tokenizer_kwargs,
    )
    example_ids = torch.as_tensor(encoding["overflow_to_sample_mapping"]).tolist()
    offsets = []
    for window, offset_mapping in enumerate(encoding["offset_mapping"]):
        spans = offset_mapping.tolist() if isinstance(offset_mapping, torch.Tensor) else offset_mapping
        sequence_ids = encoding.sequence_ids(window)
        offsets.append([tuple(span) if part == 1 else None for span, part in zip(spans, sequence_ids, strict=True)])
    return QuestionWindows(encoding=encoding, example_ids=example_ids, offsets=offsets)


# --------------------------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------------------------


def decode_answers(
    start_logits: torch.Tensor | Sequence,
    end_logits: torch.Tensor | Sequence,
    offsets: Sequence[Offsets],
    context: str,
    *,
    max_answer_length: int = 30,
    top_k: int = 1,
    null_score_diff_threshold: float | None = None,
) -> list[Answer]:
    """The `top_k` best answers of one example over all of its windows, best first.

    Candidates: every span (i, j) of every window with i <= j < i + max_answer_length and both tokens in the
    context (`offsets` not None), scored start_logits[i] + end_logits[j]; windows overlap, so a stretch of the
    context met in several windows counts once, with its best score. For one window of 4 tokens, context = tokens
    1..3 and max_answer_length = 2, the candidate (i, j) are marked 1:

                j=0 j=1 j=2 j=3
        i=0      0   0   0   0      token 0 is not context
        i=1      0   1   1   0      j < i + 2
        i=2      0   0   1   1
        i=3      0   0   0   1

    Ties go to the shorter answer, then the earlier one. With `null_score_diff_threshold` (SQuAD v2) "no answer"
    ("", 0, 0) competes too: its score is the lowest first-token start + end logit over the windows (a window that
    does not hold the answer points at its first token, so only the most confident "no answer" counts), and it ranks
    above every span it beats by more than the threshold; so it is the answer when null - best > threshold.

    `score` is a probability: the softmax of the candidates' scores over all distinct candidates of the example
    ("no answer" included when it competes). The scores of all candidates sum to 1; with a threshold other than 0
    the list's order (by the rule above) may differ from the order of the scores.

    Args:
        start_logits / end_logits: (windows, length), or one 1-D row per window; a row may be longer than its
            window's offsets (padding), and positions past them are ignored.
        offsets: per window, per token, the (start, end) characters in `context`, None outside it
            (`QuestionWindows.offsets`).
        context: the example's context.
        null_score_diff_threshold: None: never "no answer" while any span exists (SQuAD v1.1); a number: see above
            (0.0 is run_qa.py's default; raise it to answer more often).

    Returns:
        At least one answer: when no window has a context token (and "no answer" does not compete), ("", 0, 0, 0.0).
    """
    start, end, context_mask, char_starts, char_ends = _stack_windows(start_logits, end_logits, offsets)
    scores, spans = _distinct_spans(start, end, context_mask, char_starts, char_ends, max_answer_length)
    null_score = None
    if null_score_diff_threshold is not None and len(offsets):
        null_score = float((start[:, 0] + end[:, 0]).min())
    if not len(scores) and null_score is None:
        return [Answer("", 0, 0, 0.0)]
    log_z = torch.logsumexp(torch.cat([scores, scores.new_tensor([null_score] if null_score is not None else [])]), 0)
    order = _ranked(scores, spans, count=top_k)
    answers = [
        Answer(context[s:e], s, e, math.exp(float(scores[i] - log_z)))
        for i, (s, e) in zip(order.tolist(), spans[order].tolist(), strict=True)
    ]
    if null_score is not None:
        above = int((scores >= null_score - null_score_diff_threshold).sum())  # spans the null does not beat
        if above < top_k:
            answers.insert(above, Answer("", 0, 0, math.exp(null_score - float(log_z))))
    return answers[:top_k]


def _stack_windows(start_logits, end_logits, offsets: Sequence[Offsets]) -> tuple[torch.Tensor, ...]:
    """(W, L) start and end logits (float64), context mask and character bounds, L = the longest window's offsets."""
    width = max((len(row) for row in offsets), default=0)

    def rows(logits) -> torch.Tensor:
        stacked = torch.zeros(len(offsets), max(width, 1), dtype=torch.float64)
        for window, row in enumerate(list(logits)[: len(offsets)]):
            row = torch.as_tensor(row).detach().to("cpu", torch.float64).flatten()[: max(width, 1)]
            stacked[window, : len(row)] = row
        return stacked

    padded = [list(row) + [None] * (width - len(row)) for row in offsets]
    context_mask = torch.tensor([[span is not None for span in row] for row in padded], dtype=torch.bool)
    char_starts = torch.tensor([[span[0] if span else 0 for span in row] for row in padded], dtype=torch.long)
    char_ends = torch.tensor([[span[1] if span else 0 for span in row] for row in padded], dtype=torch.long)
    return rows(start_logits), rows(end_logits), context_mask.view(len(offsets), width), char_starts, char_ends


def _distinct_spans(
    start: torch.Tensor,
    end: torch.Tensor,
    context_mask: torch.Tensor,
    char_starts: torch.Tensor,
    char_ends: torch.Tensor,
    max_answer_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every candidate span, vectorised over windows, starts and lengths: (N,) best score per distinct character
    span and (N, 2) its (start char, end char)."""
    windows, length = context_mask.shape
    if windows == 0 or length == 0:
        return torch.empty(0, dtype=torch.float64), torch.empty(0, 2, dtype=torch.long)
    band = min(max_answer_length, length)
    first = torch.arange(length)[:, None]  # (L, 1): the span's first token i
    last = first + torch.arange(band)[None, :]  # (L, K): its last token j = i + k, k < max_answer_length
    inside = last < length
    last = last.clamp(max=length - 1)
    valid = inside & context_mask[:, :, None] & context_mask[:, last]  # (W, L, K)
    scores = (start[:, :, None] + end[:, last])[valid]  # (N_all,)
    span_starts = char_starts[:, :, None].expand(windows, length, band)[valid]
    span_ends = char_ends[:, last][valid]
    # One candidate per stretch of characters, with its best score over the windows that hold it.
    keys = span_starts * (int(char_ends.max()) + 1) + span_ends
    distinct, index = torch.unique(keys, return_inverse=True)
    best = torch.full((len(distinct),), -math.inf, dtype=torch.float64).scatter_reduce(0, index, scores, "amax")
    first_of = torch.zeros(len(distinct), dtype=torch.long).scatter_(0, index, torch.arange(len(keys)))
    return best, torch.stack([span_starts[first_of], span_ends[first_of]], dim=1)


def _ranked(scores: torch.Tensor, spans: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` best spans: higher score first, then shorter, then earlier (stable sorts, last key
    first)."""
    order = torch.sort(spans[:, 0], stable=True).indices
    order = order[torch.sort(spans[order, 1] - spans[order, 0], stable=True).indices]
    order = order[torch.sort(scores[order], descending=True, stable=True).indices]
    return order[:count]

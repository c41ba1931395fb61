"""question-answering: extractive QA (SQuAD), through `AutoModelForQuestionAnswering`; scored by squad / squad_v2.

A context longer than `max_length` is split into overlapping windows (`doc_stride` tokens of overlap), one feature
each, as transformers' run_qa.py does; a window points at the answer only when it holds the whole answer, else at the
first token (SQuAD v2's "no answer"), and so does every window of a question with no answer (empty `answers` lists).
Scoring takes, per example, the best span over all of its windows; when the data has questions with no answer (or
--version_2_with_negative), "no answer" competes as in run_qa.py and the SQuAD v2 metric scores it:

    example 0:  [CLS] question [SEP] context tokens 0 ... 9            [SEP]   answer not here -> (0, 0)
                [CLS] question [SEP]       context tokens 6 ... 15     [SEP]   answer here     -> its tokens
                                            '-- doc_stride = 4 tokens seen twice

The windowing (`qa_features`, `check_doc_stride`, `check_context_room`) and the span decoding (`window_best_span`,
`best_span`) stay together here, so that one Hub-safe implementation can replace them in one place.
"""

import collections
from dataclasses import replace

import numpy as np
from datasets import DatasetDict
from peft import TaskType
from transformers import AutoModelForQuestionAnswering, EvalPrediction

from fourfold.training.metrics import load_metric
from fourfold.training.tasks.base import Task, TaskOptions, model_input_names, no_baseline, padding_collator
from fourfold.training.tasks.columns import Columns

# --------------------------------------------------------------------------------------------------------------------
# Checks on the options and the raw answers
# --------------------------------------------------------------------------------------------------------------------


def check_doc_stride(doc_stride, max_length: int) -> None:
    """`doc_stride` (question answering) is a whole number of tokens, >= 0 and below `max_length`."""
    if isinstance(doc_stride, bool) or not isinstance(doc_stride, int | np.integer) or doc_stride < 0:
        raise ValueError(
            f"--doc_stride {doc_stride!r}: the overlap between the windows of a long context is a number of tokens, "
            "an integer >= 0; pass e.g. --doc_stride 32 (a quarter of --max_length is usual)."
        )
    if doc_stride >= max_length:
        raise ValueError(
            f"--doc_stride {doc_stride} must be smaller than --max_length {max_length}: the overlap is part of each "
            "window, beside the question. Lower --doc_stride (a quarter of --max_length is usual) or raise "
            "--max_length."
        )


def check_answer(where: str, context: str, text, start, context_column: str) -> None:
    """One answer is a non-empty string found at its character offset `start` in `context`."""
    if isinstance(start, bool) or not isinstance(start, int | np.integer) or not isinstance(text, str):
        raise ValueError(
            f"{where}: each answer is a string with an integer answer_start (its character offset in "
            f"column {context_column!r}). Fix the row or drop it."
        )
    if not text:
        raise ValueError(
            f"{where}: an empty answer text. For a question with no answer use empty lists, "
            "{'text': [], 'answer_start': []}; otherwise fill in the answer or drop the row."
        )
    if not 0 <= start <= len(context) - len(text) or context[start : start + len(text)] != text:
        found = context[max(start, 0) : max(start, 0) + len(text)] if 0 <= start < len(context) else ""
        raise ValueError(
            f"{where}: answer {text!r} is not at answer_start {start} of the {len(context)}-character "
            f"context (there: {found!r}). answer_start must be the character offset of the answer in "
            f"column {context_column!r}"
            + (f" (the text first appears at {context.find(text)})" if text in context else "")
            + ". Fix answer_start or drop the row; for a question with no answer use empty lists, "
            "{'text': [], 'answer_start': []}."
        )


def check_qa_answers(raw: DatasetDict, columns: Columns) -> bool:
    """Every answer of every split sits where it says: `answer_start` is a character offset into the context and
    `context[answer_start:answer_start + len(text)] == text`, else training would point at the wrong tokens. A row
    with empty lists (`{"text": [], "answer_start": []}`) is a question with no answer (SQuAD v2). Returns whether
    any row has no answer; raises naming the split, row and column, and the fix, on a malformed one."""
    unanswerable = False
    for split, dataset in raw.items():
        for row, (context, answers) in enumerate(zip(dataset[columns.context], dataset[columns.answers], strict=True)):
            where = f"{split} row {row}: column {columns.answers!r} holds {answers!r}"
            texts = answers.get("text") if isinstance(answers, dict) else None
            starts = answers.get("answer_start") if isinstance(answers, dict) else None
            if not isinstance(texts, list | tuple) or not isinstance(starts, list | tuple) or len(texts) != len(starts):
                raise ValueError(
                    f"{where}. Question answering needs SQuAD-style answers, {{'text': [...], 'answer_start': [...]}} "
                    "with one character offset per answer text, e.g. {'text': ['Ahab'], 'answer_start': [17]}; "
                    "empty lists for a question with no answer."
                )
            unanswerable |= not texts
            for text, start in zip(texts, starts, strict=True):
                check_answer(where, context, text, start, columns.context)
    return unanswerable


def check_answers(raw: DatasetDict, options: TaskOptions) -> TaskOptions:
    """The answers checked; questions without one turn SQuAD v2 on (training and scoring)."""
    if check_qa_answers(raw, options.columns) and not options.version_2_with_negative:
        print("Some questions have no answer: training and scoring as SQuAD v2 (--version_2_with_negative).")
        return replace(options, version_2_with_negative=True)
    return options


# --------------------------------------------------------------------------------------------------------------------
# Windows: question + one window of the context per feature
# --------------------------------------------------------------------------------------------------------------------


def check_context_room(questions: list[str], tokenizer, max_length: int, doc_stride: int) -> None:
    """Each question must leave room for the context in `max_length` (after the special tokens), and that room must
    exceed `doc_stride`, or no window could advance (the tokenizer would panic rather than raise)."""
    check_doc_stride(doc_stride, max_length)
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    for question, ids in zip(questions, tokenizer(questions, add_special_tokens=False)["input_ids"], strict=True):
        room = max_length - len(ids) - specials
        shown = question if len(question) <= 80 else question[:77] + "..."
        if room < 1:
            raise ValueError(
                f"The question {shown!r} is {len(ids)} tokens, which with {specials} special tokens leaves no room "
                f"for the context in --max_length {max_length}. Raise --max_length above "
                f"{len(ids) + specials + doc_stride}, or shorten or drop such questions."
            )
        if doc_stride >= room:
            raise ValueError(
                f"--doc_stride {doc_stride} must be smaller than the {room} tokens that the question {shown!r} "
                f"({len(ids)} tokens) leaves for the context in --max_length {max_length}: lower --doc_stride below "
                f"{room}, or raise --max_length above {len(ids) + specials + doc_stride}."
            )


def answer_tokens(answers: dict, row_offsets: list) -> tuple[int, int]:
    """The (start, end) tokens of the first answer in one window, or (0, 0) when the window does not hold all of it
    (or the question has no answer)."""
    if not answers["text"]:  # no answer (SQuAD v2): every window of the example points at (0, 0)
        return 0, 0
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    context_tokens = [t for t, o in enumerate(row_offsets) if o is not None]
    if (
        context_tokens
        and row_offsets[context_tokens[0]][0] <= start_char
        and end_char <= row_offsets[context_tokens[-1]][1]
    ):
        start = next(t for t in context_tokens if row_offsets[t][1] > start_char)
        end = next(t for t in reversed(context_tokens) if row_offsets[t][0] < end_char)
        return start, end
    return 0, 0


def qa_features(
    batch, tokenizer, columns: Columns, max_length: int, keep: set[str], with_offsets: bool, doc_stride: int = 32
) -> dict:
    """SQuAD-style features: question + one window of the context, and the answer's start/end token in it.

    A context longer than `max_length` (after the question and special tokens) is split into overlapping windows,
    `doc_stride` tokens of overlap, each one feature: nothing is cut away. A window points at the answer when it holds
    the whole answer, and at the first token (0, 0: SQuAD v2's "no answer") when it does not; every window of a
    question with no answer (empty `answers` lists) points at (0, 0). With `with_offsets`,
    each feature also carries `offset_mapping` (character spans of its context tokens, None elsewhere) and
    `example_id` (the index of its example in `batch`): what scoring needs to map windows back to examples. Neither
    is a model input, so the tokenized datasets leave them out.
    """
    questions, contexts = batch[columns.question], batch[columns.context]
    check_context_room(questions, tokenizer, max_length, doc_stride)
    encoded = tokenizer(
        questions,
        contexts,
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    example_ids = encoded["overflow_to_sample_mapping"]  # feature -> its example's index in the batch
    rows = {k: v for k, v in encoded.items() if k in keep}
    rows["start_positions"], rows["end_positions"], offsets = [], [], []
    for i, example in enumerate(example_ids):
        sequence_ids = encoded.sequence_ids(i)
        row_offsets = [o if s == 1 else None for o, s in zip(encoded["offset_mapping"][i], sequence_ids, strict=True)]
        offsets.append(row_offsets)
        start, end = answer_tokens(batch[columns.answers][example], row_offsets)
        rows["start_positions"].append(start)
        rows["end_positions"].append(end)
    if with_offsets:
        rows["offset_mapping"] = offsets
        rows["example_id"] = list(example_ids)
    return rows


def tokenize_windows(tokenizer, config, options: TaskOptions):
    keep = model_input_names(config)

    def tokenize(batch: dict) -> dict:
        return qa_features(
            batch,
            tokenizer,
            options.columns,
            options.max_length,
            keep,
            with_offsets=False,
            doc_stride=options.doc_stride,
        )

    return tokenize


# --------------------------------------------------------------------------------------------------------------------
# Span decoding and scoring
# --------------------------------------------------------------------------------------------------------------------


def window_best_span(start_logits, end_logits, offsets, max_answer_tokens: int = 30) -> tuple[float, int, int]:
    """One window's highest-scoring span (start <= end, inside the context, at most `max_answer_tokens`) as
    (start logit + end logit, start char, end char); (-inf, 0, 0) when no span qualifies."""
    inside = [o is not None for o in offsets]
    best, best_score = (0, 0), -np.inf
    for start in np.argsort(start_logits)[::-1][:20]:
        for end in np.argsort(end_logits)[::-1][:20]:
            if start < len(inside) and end < len(inside) and inside[start] and inside[end]:
                if start <= end < start + max_answer_tokens and start_logits[start] + end_logits[end] > best_score:
                    best, best_score = (offsets[start][0], offsets[end][1]), start_logits[start] + end_logits[end]
    return float(best_score), best[0], best[1]


def best_span(
    windows, context: str, max_answer_tokens: int = 30, null_score_diff_threshold: float | None = None
) -> str:
    """The highest-scoring span over an example's windows, as context text ("" when no window has a valid span).

    With `null_score_diff_threshold` (SQuAD v2), "no answer" competes too, as in transformers' run_qa.py: its score
    is the first token's (start_logits[0] + end_logits[0]), the lowest over the windows (a window that does not hold
    the answer also points at the first token, so only the most confident "no answer" counts), and it wins, giving
    "", when it beats the best span's score by more than the threshold.

    Args:
        windows: one (start_logits, end_logits, offsets) per feature of the example; offsets are character spans
            into `context` for context tokens and None elsewhere (question, special tokens, padding).
        context: the example's full context.
        max_answer_tokens: the longest span considered.
        null_score_diff_threshold: None never answers "" when a span exists (SQuAD v1.1); a number lets "no
            answer" win when null score - best span score > it (0.0 is run_qa.py's default; raise it to answer more).
    """
    spans = [window_best_span(s, e, o, max_answer_tokens) for s, e, o in windows]
    score, start, end = max(spans, key=lambda span: span[0], default=(-np.inf, 0, 0))
    if null_score_diff_threshold is not None and windows:
        null_score = min(float(s[0] + e[0]) for s, e, _ in windows)
        if null_score - score > null_score_diff_threshold:
            return ""
    return context[start:end] if score > -np.inf else ""


def span_metrics(raw_validation, validation_features: dict, options: TaskOptions):
    """The Trainer's `compute_metrics`: each example's answer is the best span over its windows, scored by squad
    (or, with `options.version_2_with_negative`, squad_v2, where "no answer" ("") is a prediction too: exact and f1
    over all questions, split into HasAns_* and NoAns_*).

    Args:
        raw_validation: the examples (contexts and answers).
        validation_features: `qa_features(..., with_offsets=True)` of those examples, in the evaluation data's
            order: their `example_id` and `offset_mapping` map each prediction (one per window) to its context.
        options: the columns, `version_2_with_negative` and `null_score_diff_threshold`.
    """
    columns, version_2 = options.columns, options.version_2_with_negative
    offsets, example_ids = validation_features["offset_mapping"], validation_features["example_id"]

    def compute_metrics(p: EvalPrediction) -> dict:
        start_logits, end_logits = p.predictions[:2]
        if len(start_logits) != len(example_ids):
            raise RuntimeError(
                f"{len(start_logits)} predictions for {len(example_ids)} validation features: the evaluation "
                "data and the features used for scoring must come from the same tokenization."
            )
        windows = collections.defaultdict(list)  # example -> its features, in context order
        for feature, example in enumerate(example_ids):
            windows[example].append((start_logits[feature], end_logits[feature], offsets[feature]))
        predictions, references = [], []
        threshold = options.null_score_diff_threshold if version_2 else None
        for i, example in enumerate(raw_validation):
            text = best_span(windows[i], example[columns.context], null_score_diff_threshold=threshold)
            predictions.append({"id": str(i), "prediction_text": text})
            if version_2:
                predictions[-1]["no_answer_probability"] = 0.0  # the decision is made above, by score
            answers = example[columns.answers]
            references.append(
                {"id": str(i), "answers": {"text": answers["text"], "answer_start": answers["answer_start"]}}
            )
        return load_metric("squad_v2" if version_2 else "squad").compute(predictions=predictions, references=references)

    return compute_metrics


def window_metrics(tokenizer, raw: DatasetDict, options: TaskOptions):
    """`span_metrics` over the validation windows' offsets and example ids (for scoring only, not model inputs)."""
    features = qa_features(
        raw["validation"][:],
        tokenizer,
        options.columns,
        options.max_length,
        set(),
        with_offsets=True,
        doc_stride=options.doc_stride,
    )
    return span_metrics(raw["validation"], features, options)


def columns(c: Columns) -> list[str]:
    return [c.question, c.context, c.answers]


QUESTION_ANSWERING = Task(
    name="question-answering",
    auto_class=AutoModelForQuestionAnswering,
    columns=columns,
    check_data=check_answers,
    tokenize=tokenize_windows,
    collator=padding_collator,
    metrics=window_metrics,
    baseline=no_baseline,
    headline_metric="f1",
    hub_task="question-answering",
    peft_task_type=TaskType.QUESTION_ANS,
    label_names=("start_positions", "end_positions"),
    check_options=lambda options: check_doc_stride(options.doc_stride, options.max_length),
)

"""question-answering: extractive QA (SQuAD), through `AutoModelForQuestionAnswering`; scored by squad / squad_v2.

A context longer than `max_length` is split into overlapping windows (`doc_stride` tokens of overlap), one feature
each, as transformers' run_qa.py does; a window points at the answer only when it holds the whole answer, else at the
first token (SQuAD v2's "no answer"), and so does every window of a question with no answer (empty `answers` lists).
Scoring takes, per example, the best span over all of its windows; when the data has questions with no answer (or
--version_2_with_negative), "no answer" competes as in run_qa.py and the SQuAD v2 metric scores it:

    example 0:  [CLS] question [SEP] context tokens 0 ... 9            [SEP]   answer not here -> (0, 0)
                [CLS] question [SEP]       context tokens 6 ... 15     [SEP]   answer here     -> its tokens
                                            '-- doc_stride = 4 tokens seen twice

The windows, the `doc_stride` rule and the span decoder are the Hub-safe ones in modeling/question_answering.py
(`question_windows`, `check_doc_stride`, `decode_answers`), the same the `fourfold-question-answering` pipeline runs:
the answer evaluation reports is the answer users get from the same logits.
"""

import collections
from dataclasses import replace

import numpy as np
from datasets import DatasetDict
from peft import TaskType
from transformers import AutoModelForQuestionAnswering, EvalPrediction

from fourfold.modeling.question_answering import check_doc_stride as shared_check_doc_stride
from fourfold.modeling.question_answering import decode_answers, question_windows
from fourfold.training.metrics import load_metric
from fourfold.training.tasks.base import Task, TaskOptions, model_input_names, no_baseline, padding_collator
from fourfold.training.tasks.columns import Columns

# --------------------------------------------------------------------------------------------------------------------
# Checks on the options and the raw answers
# --------------------------------------------------------------------------------------------------------------------


CLI_NAMES = ("--doc_stride", "--max_length")  # how the shared checks spell the two lengths here


def check_doc_stride(doc_stride, max_length: int) -> None:
    """`doc_stride` (question answering) is a whole number of tokens, >= 0 and below `max_length` (the one rule)."""
    shared_check_doc_stride(doc_stride, max_length, argument_names=CLI_NAMES)


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
    """SQuAD-style features: question + one window of the context (`question_windows`), and the answer's start/end
    token in it.

    A context longer than `max_length` (after the question and special tokens) is split into overlapping windows,
    `doc_stride` tokens of overlap, each one feature: nothing is cut away. A window points at the answer when it holds
    the whole answer, and at the first token (0, 0: SQuAD v2's "no answer") when it does not; every window of a
    question with no answer (empty `answers` lists) points at (0, 0). With `with_offsets`,
    each feature also carries `offset_mapping` (character spans of its context tokens, None elsewhere) and
    `example_id` (the index of its example in `batch`): what scoring needs to map windows back to examples. Neither
    is a model input, so the tokenized datasets leave them out.
    """
    windows = question_windows(
        tokenizer,
        batch[columns.question],
        batch[columns.context],
        max_length=max_length,
        doc_stride=doc_stride,
        argument_names=CLI_NAMES,
    )
    rows = {k: v for k, v in windows.encoding.items() if k in keep}
    targets = [
        answer_tokens(batch[columns.answers][example], offsets)
        for example, offsets in zip(windows.example_ids, windows.offsets, strict=True)
    ]
    rows["start_positions"] = [start for start, _ in targets]
    rows["end_positions"] = [end for _, end in targets]
    if with_offsets:
        rows["offset_mapping"] = windows.offsets
        rows["example_id"] = windows.example_ids
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


def best_span(
    windows, context: str, max_answer_tokens: int = 30, null_score_diff_threshold: float | None = None
) -> str:
    """The answer to one example from the logits of its windows, as context text: `decode_answers`'s best.

    Args:
        windows: one (start_logits, end_logits, offsets) per feature of the example; offsets are character spans
            into `context` for context tokens and None elsewhere (question, special tokens, padding).
        context: the example's full context.
        max_answer_tokens: the longest span considered.
        null_score_diff_threshold: None never answers "" when a span exists (SQuAD v1.1); a number lets "no
            answer" win when null score - best span score > it (0.0 is run_qa.py's default; raise it to answer more).
    """
    starts, ends, offsets = ([window[part] for window in windows] for part in range(3))
    answers = decode_answers(
        starts,
        ends,
        offsets,
        context,
        max_answer_length=max_answer_tokens,
        null_score_diff_threshold=null_score_diff_threshold,
    )
    return answers[0].text


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

"""sequence-classification: a class per text (or text pair), through `AutoModelForSequenceClassification`.

Three problem types (`--problem_type`), each a record of its own that differs in how labels are read, encoded,
scored and beaten by a constant predictor:

    problem type                 label per row                         target        scored by           baseline
    single_label_classification  a class name or id                    class id      accuracy, f1        majority
    multi_label_classification   a list of names/ids (or a string      multi-hot     micro/macro f1,     most frequent
                                 split on --label_separator)           floats        subset accuracy     label set
    regression                   a finite number                       float         mse, mae, pearson,  the mean
                                                                                     spearman

Multi-label predictions are sigmoid(logit) > 0.5; F1 is binary (class 1) with two classes, macro otherwise.
"""

import collections
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType

import numpy as np
from datasets import DatasetDict
from peft import TaskType
from transformers import AutoModelForSequenceClassification, EvalPrediction

from fourfold.training.errors import UsageError
from fourfold.training.tasks.base import Task, TaskOptions, model_input_names, padding_collator
from fourfold.training.tasks.columns import Columns
from fourfold.training.tasks.labels import (
    check_regression_labels,
    class_id,
    label_ids,
    label_items,
    multi_hot,
    resolve_labels,
)
from fourfold.training.tasks.scores import (
    as_baseline,
    classification_scores,
    logits_of,
    multi_label_scores,
    regression_scores,
)

NAME = "sequence-classification"


def columns(c: Columns) -> list[str]:
    return [c.text, c.label] + ([c.text_pair] if c.text_pair else [])


# A row's label value -> its training target: (value, label2id, options) -> class id, multi-hot vector or number.
EncodeLabel = Callable[[object, dict[str, int], TaskOptions], object]


def tokenize_with(encode: EncodeLabel):
    """The tokenizer of (text [, text_pair], label) rows, the label encoded by `encode`."""

    def build(tokenizer, config, options: TaskOptions):
        keep, c, label2id = model_input_names(config), options.columns, label_ids(options.labels)

        def tokenize(batch: dict) -> dict:
            pairs = batch[c.text_pair] if c.text_pair else None
            encoded = tokenizer(batch[c.text], pairs, truncation=True, max_length=options.max_length)
            rows = {k: v for k, v in encoded.items() if k in keep}
            rows["labels"] = [encode(v, label2id, options) for v in batch[c.label]]
            return rows

        return tokenize

    return build


# --------------------------------------------------------------------------------------------------------------------
# single_label_classification
# --------------------------------------------------------------------------------------------------------------------


def check_single_label(raw: DatasetDict, options: TaskOptions) -> TaskOptions:
    labels = resolve_labels(raw, options.columns.label, NAME, num_labels=options.num_labels)
    return replace(options, labels=labels)


def single_label_metrics(tokenizer, raw: DatasetDict, options: TaskOptions):
    def compute_metrics(p: EvalPrediction) -> dict:
        return classification_scores(logits_of(p).argmax(-1), p.label_ids, len(options.labels))

    return compute_metrics


def majority_class(raw: DatasetDict, options: TaskOptions) -> dict[str, float]:
    """The most common training class, scored on the validation split."""
    label2id, column = label_ids(options.labels), options.columns.label
    majority = collections.Counter(class_id(v, label2id) for v in raw["train"][column]).most_common(1)[0][0]
    references = [class_id(v, label2id) for v in raw["validation"][column]]
    return as_baseline(classification_scores([majority] * len(references), references, len(options.labels)))


SINGLE_LABEL = Task(
    name=NAME,
    auto_class=AutoModelForSequenceClassification,
    columns=columns,
    check_data=check_single_label,
    tokenize=tokenize_with(lambda value, label2id, options: class_id(value, label2id)),
    collator=padding_collator,
    metrics=single_label_metrics,
    baseline=majority_class,
    headline_metric="accuracy",
    hub_task="text-classification",
    peft_task_type=TaskType.SEQ_CLS,
    problem_type="single_label_classification",
)

# --------------------------------------------------------------------------------------------------------------------
# multi_label_classification
# --------------------------------------------------------------------------------------------------------------------


def multi_label_items(separator: str | None, label_column: str):
    """A multi-label row's items; refuses a row that is neither a list nor (with a separator) a string."""

    def row_items(split: str, row: int, value) -> list:
        if not (isinstance(value, list | tuple) or (isinstance(value, str) and separator is not None)):
            hint = " or a string with --label_separator" if isinstance(value, str) else ""
            raise UsageError(
                f"{split} row {row}: label {value!r} ({type(value).__name__}) in column {label_column!r}",
                "--problem_type multi_label_classification needs a list of label names or ids in every row "
                f"(an empty list for none), e.g. ['sports', 'politics']{hint}",
            )
        return label_items(value, separator)

    return row_items


def check_multi_label(raw: DatasetDict, options: TaskOptions) -> TaskOptions:
    column = options.columns.label
    row_items = multi_label_items(options.label_separator, column)
    labels = resolve_labels(raw, column, NAME, row_items, options.num_labels, multi_label=True)
    return replace(options, labels=labels)


def encode_multi_hot(value, label2id: dict[str, int], options: TaskOptions) -> list[float]:
    return multi_hot(label_items(value, options.label_separator), label2id, len(options.labels))


def multi_label_metrics(tokenizer, raw: DatasetDict, options: TaskOptions):
    def compute_metrics(p: EvalPrediction) -> dict:
        return multi_label_scores(logits_of(p) > 0, p.label_ids > 0.5)  # sigmoid(logit) > 0.5  <=>  logit > 0

    return compute_metrics


def most_frequent_label_set(raw: DatasetDict, options: TaskOptions) -> dict[str, float]:
    """The most common training label set, scored on the validation split."""
    label2id, num_labels = label_ids(options.labels), len(options.labels)

    def label_sets(split: str) -> list[frozenset[int]]:
        rows = raw[split][options.columns.label]
        return [frozenset(class_id(v, label2id) for v in label_items(row, options.label_separator)) for row in rows]

    def hot(ids: frozenset[int]) -> list[int]:
        return [int(i in ids) for i in range(num_labels)]

    majority = collections.Counter(label_sets("train")).most_common(1)[0][0]
    references = [hot(ids) for ids in label_sets("validation")]
    return as_baseline(multi_label_scores([hot(majority)] * len(references), references))


MULTI_LABEL = replace(
    SINGLE_LABEL,
    check_data=check_multi_label,
    tokenize=tokenize_with(encode_multi_hot),
    metrics=multi_label_metrics,
    baseline=most_frequent_label_set,
    headline_metric="micro_f1",
    baseline_name="most frequent label set",
    problem_type="multi_label_classification",
)

# --------------------------------------------------------------------------------------------------------------------
# regression
# --------------------------------------------------------------------------------------------------------------------


def check_regression(raw: DatasetDict, options: TaskOptions) -> TaskOptions:
    return replace(options, labels=check_regression_labels(raw, options.columns.label, options.num_labels))


def regression_metrics(tokenizer, raw: DatasetDict, options: TaskOptions):
    def compute_metrics(p: EvalPrediction) -> dict:
        return regression_scores(logits_of(p), p.label_ids)

    return compute_metrics


def training_mean(raw: DatasetDict, options: TaskOptions) -> dict[str, float]:
    """The mean training target, scored (MSE, MAE) on the validation split."""
    mean = float(np.mean(raw["train"][options.columns.label]))
    references = raw["validation"][options.columns.label]
    scores = regression_scores([mean] * len(references), references)
    return as_baseline({k: v for k, v in scores.items() if k in ("mse", "mae")})


REGRESSION = replace(
    SINGLE_LABEL,
    check_data=check_regression,
    tokenize=tokenize_with(lambda value, label2id, options: float(value)),
    metrics=regression_metrics,
    baseline=training_mean,
    headline_metric="mse",
    baseline_name="mean",
    problem_type="regression",
)

SEQUENCE_CLASSIFICATION = replace(
    SINGLE_LABEL,
    problem_types=MappingProxyType({"multi_label_classification": MULTI_LABEL, "regression": REGRESSION}),
)

"""Label vocabularies of the classification tasks: every label value of every split checked, names resolved to ids.

`resolve_labels` is the one rule for class labels (names, sorted, or integer ids in [0, num_labels), each seen in the
training split: a class only the validation data has would be a head output that never trained); the tasks pass
how a row's value becomes label items (`one_label`, a tag list, a multi-label list). `check_regression_labels` is
regression's (a finite number per row). `label_ids` / `class_id` / `multi_hot` turn labels into training targets.
"""

from collections.abc import Callable

import numpy as np
from datasets import DatasetDict

from fourfold.training.errors import UsageError

# A row's label value -> its label items; raises (naming the split and row) when the value has the wrong shape.
RowItems = Callable[[str, int, object], list]


def one_label(split: str, row: int, value) -> list:
    """Single-label classification: the value is the label."""
    return [value]


def label_items(value, separator: str | None) -> list:
    """A multi-label row as a list of names/ids: a list as is, a string split on `separator` (blanks dropped)."""
    if isinstance(value, str) and separator is not None:
        return [item.strip() for item in value.split(separator) if item.strip()]
    return list(value)


def resolve_labels(
    raw: DatasetDict,
    label_column: str,
    task_name: str,
    row_items: RowItems = one_label,
    num_labels: int | None = None,
    multi_label: bool = False,
    noun: str = "label",
) -> list[str]:
    """The label names of a classification task, index = class id; checks every label value of every split.

    Labels may be names (strings: sorted, so the ids are stable) or class ids (ints in [0, num_labels)). Missing
    labels, floats, ids outside [0, num_labels), a single class, and a label that only a validation (or test) split
    has raise a `UsageError` naming the rows or labels and the fix. `row_items` gives a row's labels (one, or a list:
    token tags, a multi-label set) and refuses a value of the wrong shape. `noun` is what the errors call a label.
    """
    by_split = checked_label_items(raw, label_column, task_name, row_items)
    values = [v for items in by_split.values() for v in items]
    if not values:
        raise UsageError(f"column {label_column!r} holds no labels", "give every row a label")
    kinds = {type(v) is str for v in values}
    if len(kinds) > 1:
        raise UsageError(
            f"column {label_column!r} mixes names and integer ids", "write every label one way: names or ids"
        )
    if kinds == {True}:
        labels = names = sorted(set(values))
        if num_labels is not None and num_labels != len(names):
            raise UsageError(
                f"--num_labels {num_labels}, but the data has {len(names)} label names: {names}",
                "drop --num_labels (it is inferred from the names)",
            )
        single = len(names) < 2
    else:
        ids = [int(v) for v in values]
        count = num_labels if num_labels is not None else max(ids) + 1
        bad = sorted({i for i in ids if not 0 <= i < count})
        if bad:
            raise UsageError(
                f"Labels {bad[:5]} in column {label_column!r} are outside [0, num_labels={count}): class ids must be "
                f"0 ... {count - 1}",
                "Raise --num_labels, or map the labels to ids first",
            )
        labels, single = [f"LABEL_{i}" for i in range(count)], count < 2
    if single and not multi_label:
        raise UsageError(
            f"column {label_column!r} has a single class {labels}", "classification needs at least two classes"
        )
    check_seen_in_training(by_split, label_column, noun)
    return labels


def check_seen_in_training(by_split: dict[str, list], label_column: str, noun: str = "label") -> None:
    """Every label of a validation (or test) split is one the training split has: the head would otherwise be scored
    on a class it never saw trained."""
    seen = set(by_split.get("train", ()))
    for split, items in by_split.items():
        unseen = sorted(set(items) - seen, key=str)
        if split != "train" and unseen:
            shown = ", ".join(map(repr, unseen[:5])) + (f" and {len(unseen) - 5} more" if len(unseen) > 5 else "")
            raise UsageError(
                f"{noun}(s) {shown} of column {label_column!r} appear only in the {split} split, not in the "
                "training data: the model would be scored on a class it never trained on",
                f"add training examples of them, or drop those rows from the {split} data",
            )


def checked_label_items(raw: DatasetDict, label_column: str, task_name: str, row_items: RowItems) -> dict[str, list]:
    """Every label item of each split (split -> items), each a class name or an integer id; raises naming the row
    otherwise."""
    values = {}
    for split, dataset in raw.items():
        values[split] = []
        for row, value in enumerate(dataset[label_column]):
            for item in row_items(split, row, value):
                if item is None or isinstance(item, float | bool) or not isinstance(item, int | str | np.integer):
                    raise UsageError(
                        f"{split} row {row}: label {item!r} ({type(item).__name__}) in column {label_column!r}; "
                        f"{task_name} needs class names (strings) or class ids (integers) in every row",
                        "fill in or drop rows without a label, and write classes as names or integer ids (for "
                        "numeric targets pass --problem_type regression)",
                    )
                values[split].append(item)
    return values


def check_regression_labels(raw: DatasetDict, label_column: str, num_labels: int | None = None) -> list[str]:
    """Regression: every label a finite number (int or float); one output, named 'LABEL_0'."""
    if num_labels not in (None, 1):
        raise UsageError(f"--num_labels {num_labels}: regression has one output", "drop --num_labels")
    for split, dataset in raw.items():
        for row, value in enumerate(dataset[label_column]):
            number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
            if not number or not np.isfinite(value):
                raise UsageError(
                    f"{split} row {row}: label {value!r} ({type(value).__name__}) in column {label_column!r}; "
                    "--problem_type regression needs a finite number in every row",
                    "fill in or drop rows without a label, and write the targets as numbers (not strings)",
                )
    return ["LABEL_0"]


def label_ids(labels: list[str] | None) -> dict[str, int]:
    """Label name -> class id (empty without labels)."""
    return {name: i for i, name in enumerate(labels)} if labels else {}


def class_id(value, label2id: dict[str, int]) -> int:
    """A label name or integer id as the class id."""
    return label2id[value] if isinstance(value, str) else int(value)


def multi_hot(items: list, label2id: dict[str, int], num_labels: int) -> list[float]:
    """A multi-label row's items as a 0/1 float vector over the labels (BCE's target)."""
    row = [0.0] * num_labels
    for item in items:
        row[class_id(item, label2id)] = 1.0
    return row

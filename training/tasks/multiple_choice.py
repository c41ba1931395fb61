"""multiple-choice: pick the right choice for a question, through `AutoModelForMultipleChoice`; scored by accuracy.

Each row is the question paired with every choice, so a batch is (batch, choices, tokens); the label is the index of
the right choice. The baseline is the most common right index of the training split.
"""

import collections
from dataclasses import dataclass

import torch
from datasets import DatasetDict
from transformers import AutoModelForMultipleChoice, EvalPrediction, PreTrainedTokenizerBase

from fourfold.training.errors import UsageError
from fourfold.training.metrics import load_metric
from fourfold.training.tasks.base import Task, TaskOptions, model_input_names
from fourfold.training.tasks.columns import Columns
from fourfold.training.tasks.scores import as_baseline, logits_of


def check_choice_labels(raw: DatasetDict, options: TaskOptions) -> TaskOptions:
    """Every label is the index of a choice of its row."""
    c = options.columns
    for split, dataset in raw.items():
        for row, (label, choices) in enumerate(zip(dataset[c.label], dataset[c.choices], strict=True)):
            if not isinstance(choices, list) or not all(isinstance(choice, str) for choice in choices):
                raise UsageError(
                    f"{split} row {row}: column {c.choices!r} holds {choices!r}", "give a list of choices (texts)"
                )
            if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
                raise UsageError(
                    f"{split} row {row}: label {label!r} must be the index (an integer in [0, {len(choices)})) of "
                    f"the right choice in column {c.choices!r}",
                    "fix the label, or drop the row",
                )
    return options


def tokenize_choices(tokenizer, config, options: TaskOptions):
    keep, c = model_input_names(config), options.columns

    def tokenize(batch: dict) -> dict:
        rows = {k: [] for k in keep}
        for question, choices in zip(batch[c.text], batch[c.choices], strict=True):
            encoded = tokenizer([question] * len(choices), choices, truncation=True, max_length=options.max_length)
            for k in keep:
                rows[k].append(encoded[k])  # (choices, tokens)
        rows["labels"] = [int(v) for v in batch[c.label]]
        return rows

    return tokenize


@dataclass
class MultipleChoiceCollator:
    """Pads (choices, tokens) rows into (batch, choices, tokens) tensors."""

    tokenizer: PreTrainedTokenizerBase

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        num_choices = len(rows[0]["input_ids"])
        flat = [{k: r[k][c] for k in r if k != "labels"} for r in rows for c in range(num_choices)]
        batch = self.tokenizer.pad(flat, return_tensors="pt")
        batch = {k: v.view(len(rows), num_choices, -1) for k, v in batch.items()}
        batch["labels"] = torch.tensor([r["labels"] for r in rows], dtype=torch.long)
        return batch


def choice_metrics(tokenizer, raw: DatasetDict, options: TaskOptions):
    def compute_metrics(p: EvalPrediction) -> dict:
        return load_metric("accuracy").compute(predictions=logits_of(p).argmax(-1), references=p.label_ids)

    return compute_metrics


def majority_choice(raw: DatasetDict, options: TaskOptions) -> dict[str, float]:
    """The most common right index of the training split, scored (accuracy) on the validation split."""
    column = options.columns.label
    majority = collections.Counter(int(v) for v in raw["train"][column]).most_common(1)[0][0]
    references = [int(v) for v in raw["validation"][column]]
    return as_baseline(load_metric("accuracy").compute(predictions=[majority] * len(references), references=references))


def columns(c: Columns) -> list[str]:
    return [c.text, c.choices, c.label]


MULTIPLE_CHOICE = Task(
    name="multiple-choice",
    auto_class=AutoModelForMultipleChoice,
    columns=columns,
    check_data=check_choice_labels,
    tokenize=tokenize_choices,
    collator=lambda tokenizer, model: MultipleChoiceCollator(tokenizer),
    metrics=choice_metrics,
    baseline=majority_choice,
    headline_metric="accuracy",
    hub_task="multiple-choice",
    peft_task_type=None,  # PEFT has no multiple-choice task type; the base PeftModel wraps the layers
)

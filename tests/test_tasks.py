"""The task registry (training/tasks/) is the one list of the fine-tuning tasks, and every record fills every role.

Each record (and each problem type of sequence classification) names its classes, checks, tokenizer, collator,
metrics, baseline and reporting; the registry's names are the `--task` choices; and on a tiny model of an
architecture that has its head, every record's rows tokenize, collate and train (a finite loss on its label names).
"""

import dataclasses
import math

import pytest
import torch
from datasets import Dataset, DatasetDict
from finetune_helpers import (
    multiple_choice_rows,
    prompt_completion_rows,
    question_answering_rows,
    sequence_classification_rows,
    text_to_text_rows,
    tiny_checkpoints,  # noqa: F401  (session fixture)
    token_classification_rows,
)
from transformers import AutoConfig, AutoTokenizer, Seq2SeqTrainingArguments, Trainer

from fourfold.hub_cards.cards import head_of
from fourfold.training.architectures import ARCHITECTURES
from fourfold.training.finetune import DataArguments, EvaluationArguments, ModelArguments, head_config, task_options
from fourfold.training.tasks import DEFAULT_PROBLEM_TYPE, PROBLEM_TYPES, TASKS, Columns, Task, TaskOptions, get_task

# Every record: the six tasks and the other problem types of the ones that have them.
RECORDS = [record for task in TASKS.values() for record in (task, *task.problem_types.values())]
IDS = [f"{r.name}[{r.problem_type}]" if r.problem_type else r.name for r in RECORDS]
# Roles a record may leave empty, and why.
OPTIONAL = {
    "peft_task_type": "PEFT has no multiple-choice task type (the base PeftModel wraps the layers)",
    "problem_type": "only sequence classification sets the model config's problem_type",
    "problem_types": "a task without other problem types",
    "unfit_hint": "no hint beyond the architectures that can",
}


def test_the_registry_is_the_task_choices():
    assert all(name == task.name for name, task in TASKS.items())
    help_text = dataclasses.fields(ModelArguments)[1].metadata["help"]
    assert help_text == f"One of: {', '.join(TASKS)}."
    for name in TASKS:
        assert get_task(name) is TASKS[name]
    with pytest.raises(ValueError, match=f"--task 'summarization' is not a task — choose one of {', '.join(TASKS)}"):
        get_task("summarization")
    # The architectures' records name tasks by the registry's spelling.
    assert {t for a in ARCHITECTURES.values() for t in a.prompt_tuning_tasks} <= set(TASKS)


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_every_record_fills_every_role(record):
    for f in dataclasses.fields(Task):
        value = getattr(record, f.name)
        assert f.name in OPTIONAL or value not in (None, "", ()), f"{f.name} of {record.name} is empty"
    assert record.label_names and all(isinstance(n, str) for n in record.label_names)
    assert issubclass(record.trainer_class, Trainer)
    assert not record.loss_only_evaluation or record.reports_perplexity  # a loss-only report is its perplexity
    # The first column is the one a dataset must have (it is read as the text); the label column is never it.
    columns = record.columns(Columns())
    assert columns and len(set(columns)) == len(columns)


def test_problem_types_are_records_of_sequence_classification():
    assert PROBLEM_TYPES == ("single_label_classification", "multi_label_classification", "regression")
    sequence = TASKS["sequence-classification"]
    assert get_task(sequence.name, DEFAULT_PROBLEM_TYPE) is sequence is get_task(sequence.name, None)
    for name in PROBLEM_TYPES[1:]:
        record = get_task(sequence.name, name)
        assert record.name == sequence.name and record.problem_type == name and not record.problem_types
        assert record.headline_metric != sequence.headline_metric and record.baseline_name != "majority"
    assert get_task("text-to-text", DEFAULT_PROBLEM_TYPE) is TASKS["text-to-text"]
    with pytest.raises(ValueError, match="--problem_type 'ordinal' is not a problem type — choose one of single_label"):
        get_task(sequence.name, "ordinal")
    with pytest.raises(ValueError, match="--problem_type regression needs --task sequence-classification, not text"):
        get_task("text-to-text", "regression")


def test_task_options_defaults_are_the_command_line_defaults():
    assert task_options(ModelArguments(), DataArguments(), EvaluationArguments()) == TaskOptions()


# --------------------------------------------------------------------------------------------------------------------
# The contract: rows -> checked -> tokenized -> collated -> a loss, on an architecture with the head
# --------------------------------------------------------------------------------------------------------------------

REGRESSION_ROWS = [
    {"text": row["text"], "label": float(i % 3)} for i, row in enumerate(sequence_classification_rows(16))
]
# Multi-label: the sentence's class, or no label at all in every other row.
MULTI_LABEL_ROWS = [
    {"text": row["text"], "label": [row["label"]] * (i % 2)} for i, row in enumerate(sequence_classification_rows(16))
]
# (rows, columns) for every record; adding a task adds its sample here.
SAMPLES = {
    ("sequence-classification", "single_label_classification"): (sequence_classification_rows(16), Columns()),
    ("sequence-classification", "multi_label_classification"): (MULTI_LABEL_ROWS, Columns()),
    ("sequence-classification", "regression"): (REGRESSION_ROWS, Columns()),
    ("token-classification", None): (token_classification_rows(16), Columns(text="tokens", label="tags")),
    ("question-answering", None): (question_answering_rows(16), Columns()),
    ("multiple-choice", None): (multiple_choice_rows(16), Columns(text="question")),
    ("causal-lm", None): (prompt_completion_rows(16), Columns()),
    ("text-to-text", None): (text_to_text_rows(16), Columns()),
}


def test_every_record_has_a_sample():
    assert set(SAMPLES) == {(r.name, r.problem_type) for r in RECORDS}


def architectures_with_head(record: Task) -> list[str]:
    return [a.name for a in ARCHITECTURES.values() if a.config_class in record.auto_class._model_mapping]


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_every_record_tokenizes_collates_and_trains(tiny_checkpoints, record):  # noqa: F811
    rows, columns = SAMPLES[(record.name, record.problem_type)]
    raw = DatasetDict(train=Dataset.from_list(rows[:12]), validation=Dataset.from_list(rows[12:]))
    able = architectures_with_head(record)
    assert able, f"no architecture has a head for {record.name}"
    checkpoint = tiny_checkpoints[able[0]]
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    record.check_columns(raw, columns)
    options = TaskOptions(columns=columns, max_length=48, doc_stride=8)
    record.check_options(options)
    options = record.check_data(raw, options)
    config = AutoConfig.from_pretrained(checkpoint, **head_config(record, options.labels))
    torch.manual_seed(0)
    model = record.auto_class.from_config(config)
    # The Hub task a card gives this head is the record's, and so is the Auto class that loads it.
    assert head_of(type(model).__name__) == (record.hub_task, record.auto_class.__name__)

    features = record.tokenize_splits(raw, tokenizer, model.config, options)
    assert set(record.label_names) <= set(features["train"].column_names)
    batch = record.collator(tokenizer, model)([features["train"][i] for i in range(4)])
    assert set(record.label_names) <= set(batch)
    loss = model(**batch).loss
    assert loss is not None and math.isfinite(loss.item())

    # Evaluation needs only the loss exactly where there are no metrics to compute.
    assert (record.metrics(tokenizer, raw, options) is None) == record.loss_only_evaluation
    baseline = record.baseline(raw, options)
    assert all(k.startswith("baseline_") for k in baseline)
    assert not baseline or f"baseline_{record.headline_metric}" in baseline  # what summary_line shows
    arguments = Seq2SeqTrainingArguments(output_dir="unused", report_to="none")
    record.configure_training(arguments, options)  # never fails on the parsed defaults

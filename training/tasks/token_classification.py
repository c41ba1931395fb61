"""token-classification: a tag per word (NER), through `AutoModelForTokenClassification`; scored by seqeval.

The text column holds a list of words and the label column a tag per word. The first sub-token of each word carries
the word's tag; its other sub-tokens and the special tokens get -100 (no loss, not scored):

    words        Call    me   Ishmael
    tokens  [CLS] Call   me   Ish  ##mael  [SEP]
    labels  -100  O      O    B-PER -100   -100
"""

from dataclasses import replace

from datasets import DatasetDict
from peft import TaskType
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, EvalPrediction

from fourfold.training.errors import UsageError
from fourfold.training.metrics import load_metric
from fourfold.training.tasks.base import Task, TaskOptions, model_input_names, no_baseline
from fourfold.training.tasks.columns import Columns
from fourfold.training.tasks.labels import class_id, label_ids, resolve_labels
from fourfold.training.tasks.scores import logits_of

NAME = "token-classification"


def tag_lists(label_column: str):
    """A row's tags; refuses a row that is not a list of them."""

    def row_items(split: str, row: int, value) -> list:
        if not isinstance(value, list | tuple):
            raise UsageError(
                f"{split} row {row}: --label_column {label_column!r} holds {value!r}",
                "token classification needs one tag per word (a list), e.g. ['B-PER', 'I-PER', 'O']",
            )
        return value

    return row_items


def check_tags(raw: DatasetDict, options: TaskOptions) -> TaskOptions:
    column = options.columns.label
    labels = resolve_labels(raw, column, NAME, tag_lists(column), options.num_labels, noun="tag")
    text = options.columns.text
    for split, dataset in raw.items():  # one tag per word: a row whose lists differ cannot be aligned
        for row, (words, tags) in enumerate(zip(dataset[text], dataset[column], strict=True)):
            if not isinstance(words, list) or len(words) != len(tags):
                what = f"{len(words)} words" if isinstance(words, list) else f"a {type(words).__name__}, not words"
                raise UsageError(
                    f"{split} row {row}: --text_column {text!r} holds {what} but {len(tags)} tags",
                    "give a list of words and exactly one tag per word",
                )
    return replace(options, labels=labels)


def tokenize_words(tokenizer, config, options: TaskOptions):
    keep, c, label2id = model_input_names(config), options.columns, label_ids(options.labels)

    def tokenize(batch: dict) -> dict:
        encoded = tokenizer(batch[c.text], is_split_into_words=True, truncation=True, max_length=options.max_length)
        rows = {k: v for k, v in encoded.items() if k in keep}
        rows["labels"] = []
        for i, tags in enumerate(batch[c.label]):
            # The first sub-token of each word carries the word's tag; the rest and special tokens are ignored.
            word_ids, previous, row = encoded.word_ids(i), None, []
            for word in word_ids:
                row.append(-100 if word is None or word == previous else class_id(tags[word], label2id))
                previous = word
            rows["labels"].append(row)
        return rows

    return tokenize


def entity_metrics(tokenizer, raw: DatasetDict, options: TaskOptions):
    labels = options.labels

    def compute_metrics(p: EvalPrediction) -> dict:
        predicted = logits_of(p).argmax(-1)

        def tags(rows):  # class ids -> tag names, at the labelled positions (first sub-token of each word)
            return [
                [labels[t] for t, k in zip(row, mask, strict=True) if k]
                for row, mask in zip(rows, p.label_ids != -100, strict=True)
            ]

        scores = load_metric("seqeval").compute(predictions=tags(predicted), references=tags(p.label_ids))
        return {k: v for k, v in scores.items() if k.startswith("overall_")}

    return compute_metrics


def columns(c: Columns) -> list[str]:
    return [c.text, c.label]


TOKEN_CLASSIFICATION = Task(
    name=NAME,
    auto_class=AutoModelForTokenClassification,
    columns=columns,
    check_data=check_tags,
    tokenize=tokenize_words,
    collator=lambda tokenizer, model: DataCollatorForTokenClassification(tokenizer),
    metrics=entity_metrics,
    baseline=no_baseline,
    headline_metric="overall_f1",
    hub_task="token-classification",
    peft_task_type=TaskType.TOKEN_CLS,
)

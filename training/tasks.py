"""The fine-tuning tasks: which model class each needs, how its rows are tokenized and batched, and how it is scored.

    task                      Auto class                           columns (flags)                      metrics
    sequence-classification   AutoModelForSequenceClassification   text [, text_pair], label            accuracy, f1
      (--problem_type regression: label a number; mse, mae, pearson, spearman. --problem_type
      multi_label_classification: label a list of names/ids, or a string split on --label_separator;
      micro/macro f1, subset accuracy at sigmoid > 0.5)
    token-classification      AutoModelForTokenClassification      text (list of words), label (tags)   seqeval F1
    question-answering        AutoModelForQuestionAnswering        question, context, answers (SQuAD)   squad EM/F1
      (questions with no answer, empty `answers` lists: SQuAD v2, squad_v2 EM/F1)
    multiple-choice           AutoModelForMultipleChoice           text (question), choices, label      accuracy
    causal-lm                 AutoModelForCausalLM                 prompt, completion                   perplexity
    text-to-text              AutoModelForSeq2SeqLM                text (source), target                rouge, bleu

causal-lm trains prompt -> completion with the loss on the completion only; on a prefix LM the prompt is the
bidirectional prefix (`prefix_mask`), so labels are -100 exactly where the prefix is:

    tokens       <s>  Q    Q    A    A   </s>
    labels      -100 -100 -100  A    A   </s>
    prefix_mask   1    1    1   0    0    0

question-answering splits a context longer than `max_length` into overlapping windows (`doc_stride` tokens of
overlap), one feature each, as transformers' run_qa.py does; a window points at the answer only when it holds the
whole answer, else at the first token (SQuAD v2's "no answer"), and so does every window of a question with no
answer (empty `answers` lists). Scoring takes, per example, the best span over all of its windows; when the data has
questions with no answer (or --version_2_with_negative), "no answer" competes as in run_qa.py and the SQuAD v2 metric
scores it:

    example 0:  [CLS] question [SEP] context tokens 0 ... 9            [SEP]   answer not here -> (0, 0)
                [CLS] question [SEP]       context tokens 6 ... 15     [SEP]   answer here     -> its tokens
                                            '-- doc_stride = 4 tokens seen twice

Every task's label checks run on the raw data before a model is built, so bad labels fail in seconds.
"""

import collections
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from datasets import DatasetDict
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForSeq2Seq,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    EvalPrediction,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from fourfold.training.metrics import load_metric

AUTO_CLASSES = {
    "sequence-classification": AutoModelForSequenceClassification,
    "token-classification": AutoModelForTokenClassification,
    "question-answering": AutoModelForQuestionAnswering,
    "multiple-choice": AutoModelForMultipleChoice,
    "causal-lm": AutoModelForCausalLM,
    "text-to-text": AutoModelForSeq2SeqLM,
}
TASKS = tuple(AUTO_CLASSES)
CLASSIFICATION_TASKS = ("sequence-classification", "token-classification")  # tasks with a label vocabulary
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")  # sequence-cls only


@dataclass
class Columns:
    """Column names of the raw data (the command line's `--*_column` flags)."""

    text: str = "text"
    text_pair: str | None = None
    label: str = "label"
    question: str = "question"
    context: str = "context"
    answers: str = "answers"
    choices: str = "choices"
    prompt: str = "prompt"
    completion: str = "completion"
    target: str = "target"

    def needed(self, task: str) -> list[str]:
        return {
            "sequence-classification": [self.text, self.label] + ([self.text_pair] if self.text_pair else []),
            "token-classification": [self.text, self.label],
            "question-answering": [self.question, self.context, self.answers],
            "multiple-choice": [self.text, self.choices, self.label],
            "causal-lm": [self.prompt, self.completion],
            "text-to-text": [self.text, self.target],
        }[task]


# --------------------------------------------------------------------------------------------------------------------
# Checks that run before training
# --------------------------------------------------------------------------------------------------------------------


def check_task_fits(task: str, config: PretrainedConfig) -> None:
    """Raises, naming the architectures that can, when the checkpoint's architecture has no head for `task`."""
    if task not in AUTO_CLASSES:
        raise ValueError(f"task={task!r}: choose one of {', '.join(TASKS)}.")
    mapping = AUTO_CLASSES[task]._model_mapping
    if type(config) in mapping:
        return
    from fourfold.modeling import CONFIG_CLASSES

    able = [model_type for model_type, config_class in CONFIG_CLASSES.items() if config_class in mapping]
    hint = {"causal-lm": " (a seq2seq model generates through --task text-to-text)"}.get(task, "")
    raise ValueError(
        f"A {config.model_type} checkpoint cannot do {task}: transformers has no {AUTO_CLASSES[task].__name__} for "
        f"it. Use a checkpoint of an architecture that can ({', '.join(able) or 'none of fourfold'}){hint}."
    )


def check_columns(raw: DatasetDict, task: str, columns: Columns) -> None:
    for split, dataset in raw.items():
        missing = [c for c in columns.needed(task) if c not in dataset.column_names]
        if missing:
            raise ValueError(
                f"The {split} data has no column {missing} needed for {task}; its columns are "
                f"{dataset.column_names}. Name the right ones with --text_column / --label_column / ... ."
            )


def check_problem_type(task: str, problem_type: str) -> None:
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"--problem_type {problem_type!r}: choose one of {', '.join(PROBLEM_TYPES)}.")
    if problem_type != "single_label_classification" and task != "sequence-classification":
        raise ValueError(f"--problem_type {problem_type} needs --task sequence-classification, not {task}.")


def label_items(value, separator: str | None) -> list:
    """A multi-label row as a list of names/ids: a list as is, a string split on `separator` (blanks dropped)."""
    if isinstance(value, str) and separator is not None:
        return [item.strip() for item in value.split(separator) if item.strip()]
    return list(value)


def check_regression_labels(raw: DatasetDict, label_column: str, num_labels: int | None = None) -> list[str]:
    """Regression: every label a finite number (int or float); one output, named 'LABEL_0'."""
    if num_labels not in (None, 1):
        raise ValueError(f"--num_labels {num_labels}: regression has one output; drop --num_labels.")
    for split, dataset in raw.items():
        for row, value in enumerate(dataset[label_column]):
            number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
            if not number or not np.isfinite(value):
                raise ValueError(
                    f"{split} row {row}: label {value!r} ({type(value).__name__}) in column {label_column!r}. "
                    "--problem_type regression needs a finite number in every row: fill in or drop rows without a "
                    "label, and write the targets as numbers (not strings)."
                )
    return ["LABEL_0"]


def resolve_labels(
    raw: DatasetDict,
    task: str,
    label_column: str,
    num_labels: int | None = None,
    problem_type: str = "single_label_classification",
    label_separator: str | None = None,
) -> list[str]:
    """The label names of a classification task, index = class id; checks every label value of every split.

    Labels may be names (strings: sorted, so the ids are stable) or class ids (ints in [0, num_labels)). Missing
    labels, floats, and ids outside [0, num_labels) raise, naming the row and the fix. Multi-label rows hold a list
    of names or ids (or a string split on `label_separator`); regression rows a number (one output, 'LABEL_0').
    """
    if problem_type == "regression":
        return check_regression_labels(raw, label_column, num_labels)
    multi_label = problem_type == "multi_label_classification"
    values = []
    for split, dataset in raw.items():
        for row, value in enumerate(dataset[label_column]):
            items = value if task == "token-classification" else [value]
            if task == "token-classification" and not isinstance(value, list | tuple):
                raise ValueError(
                    f"{split} row {row}: --label_column {label_column!r} holds {value!r}; token classification "
                    "needs one tag per word (a list), e.g. ['B-PER', 'I-PER', 'O']."
                )
            if multi_label:
                if not (isinstance(value, list | tuple) or (isinstance(value, str) and label_separator is not None)):
                    hint = " or a string with --label_separator" if isinstance(value, str) else ""
                    raise ValueError(
                        f"{split} row {row}: label {value!r} ({type(value).__name__}) in column {label_column!r}. "
                        "--problem_type multi_label_classification needs a list of label names or ids in every row "
                        f"(an empty list for none), e.g. ['sports', 'politics']{hint}."
                    )
                items = label_items(value, label_separator)
            for item in items:
                if item is None or isinstance(item, float | bool) or not isinstance(item, int | str | np.integer):
                    raise ValueError(
                        f"{split} row {row}: label {item!r} ({type(item).__name__}) in column {label_column!r}. "
                        f"{task} needs class names (strings) or class ids (integers) in every row: fill in or drop "
                        "rows without a label, and write classes as names or integer ids (for numeric targets pass "
                        "--problem_type regression)."
                    )
                values.append(item)
    if not values:
        raise ValueError(f"Column {label_column!r} holds no labels.")
    kinds = {type(v) is str for v in values}
    if len(kinds) > 1:
        raise ValueError(f"Column {label_column!r} mixes names and integer ids; use one or the other.")
    if kinds == {True}:
        names = sorted(set(values))
        if num_labels is not None and num_labels != len(names):
            raise ValueError(f"--num_labels {num_labels}, but the data has {len(names)} label names: {names}.")
        return names
    ids = [int(v) for v in values]
    count = num_labels if num_labels is not None else max(ids) + 1
    bad = sorted({i for i in ids if not 0 <= i < count})
    if bad:
        raise ValueError(
            f"Labels {bad[:5]} in column {label_column!r} are outside [0, num_labels={count}): class ids must be "
            f"0 ... {count - 1}. Raise --num_labels, or map the labels to ids first."
        )
    if count < 2 and not multi_label:
        raise ValueError(f"Column {label_column!r} has a single class; classification needs at least two.")
    return [f"LABEL_{i}" for i in range(count)]


def check_mc_labels(raw: DatasetDict, columns: Columns) -> None:
    for split, dataset in raw.items():
        for row, (label, choices) in enumerate(zip(dataset[columns.label], dataset[columns.choices], strict=True)):
            if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
                raise ValueError(
                    f"{split} row {row}: label {label!r} must be the index (an integer in [0, {len(choices)})) of "
                    f"the right choice in column {columns.choices!r}."
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
                if isinstance(start, bool) or not isinstance(start, int | np.integer) or not isinstance(text, str):
                    raise ValueError(
                        f"{where}: each answer is a string with an integer answer_start (its character offset in "
                        f"column {columns.context!r}). Fix the row or drop it."
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
                        f"column {columns.context!r}"
                        + (f" (the text first appears at {context.find(text)})" if text in context else "")
                        + ". Fix answer_start or drop the row; for a question with no answer use empty lists, "
                        "{'text': [], 'answer_start': []}."
                    )
    return unanswerable


# --------------------------------------------------------------------------------------------------------------------
# Tokenization: raw rows -> model inputs
# --------------------------------------------------------------------------------------------------------------------


def model_input_names(config: PretrainedConfig) -> set[str]:
    """Inputs to keep: token_type_ids only where the model has segment embeddings (fourfold's default is none)."""
    names = {"input_ids", "attention_mask"}
    if getattr(config, "type_vocab_size", 0):
        names.add("token_type_ids")
    return names


def tokenize(
    raw: DatasetDict,
    task: str,
    tokenizer: PreTrainedTokenizerBase,
    config: PretrainedConfig,
    columns: Columns,
    labels: list[str] | None,
    max_length: int,
    max_target_length: int,
    problem_type: str = "single_label_classification",
    label_separator: str | None = None,
    doc_stride: int = 32,
) -> DatasetDict:
    """Tokenized splits for `task`, keeping only what the model and collator read. Sequence-classification labels:
    a class id, a float (regression), or a multi-hot float vector (multi-label). Question answering: one row per
    window of a long context (`qa_features`), so a split may hold more rows than examples."""
    keep = model_input_names(config)
    label2id = {name: i for i, name in enumerate(labels)} if labels else {}

    def as_id(value):
        return label2id[value] if isinstance(value, str) else int(value)

    def multi_hot(value):
        row = [0.0] * len(labels)
        for item in label_items(value, label_separator):
            row[as_id(item)] = 1.0
        return row

    def as_label(value):
        if problem_type == "regression":
            return float(value)
        if problem_type == "multi_label_classification":
            return multi_hot(value)
        return as_id(value)

    def sequence_classification(batch):
        pairs = batch[columns.text_pair] if columns.text_pair else None
        encoded = tokenizer(batch[columns.text], pairs, truncation=True, max_length=max_length)
        rows = {k: v for k, v in encoded.items() if k in keep}
        rows["labels"] = [as_label(v) for v in batch[columns.label]]
        return rows

    def token_classification(batch):
        encoded = tokenizer(batch[columns.text], is_split_into_words=True, truncation=True, max_length=max_length)
        rows = {k: v for k, v in encoded.items() if k in keep}
        rows["labels"] = []
        for i, tags in enumerate(batch[columns.label]):
            # The first sub-token of each word carries the word's tag; the rest and special tokens are ignored.
            word_ids, previous, row = encoded.word_ids(i), None, []
            for word in word_ids:
                row.append(-100 if word is None or word == previous else as_id(tags[word]))
                previous = word
            rows["labels"].append(row)
        return rows

    def question_answering(batch):
        return qa_features(batch, tokenizer, columns, max_length, keep, with_offsets=False, doc_stride=doc_stride)

    def multiple_choice(batch):
        rows = {k: [] for k in keep}
        for question, choices in zip(batch[columns.text], batch[columns.choices], strict=True):
            encoded = tokenizer([question] * len(choices), choices, truncation=True, max_length=max_length)
            for k in keep:
                rows[k].append(encoded[k])  # (choices, tokens)
        rows["labels"] = [int(v) for v in batch[columns.label]]
        return rows

    def causal_lm(batch):
        rows = {"input_ids": [], "attention_mask": [], "labels": []}
        if config.model_type == "fourfold-prefix-lm":
            rows["prefix_mask"] = []
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        for prompt, completion in zip(batch[columns.prompt], batch[columns.completion], strict=True):
            prompt_ids = bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
            completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + eos
            # Keep the start of the completion when cutting: the prompt loses its beginning first.
            prompt_ids = prompt_ids[-max(1, max_length - len(completion_ids)) :]
            input_ids = (prompt_ids + completion_ids)[:max_length]
            prompt_length = len(prompt_ids)
            rows["input_ids"].append(input_ids)
            rows["attention_mask"].append([1] * len(input_ids))
            rows["labels"].append([-100] * prompt_length + input_ids[prompt_length:])
            if "prefix_mask" in rows:
                rows["prefix_mask"].append([1] * prompt_length + [0] * (len(input_ids) - prompt_length))
        return rows

    def text_to_text(batch):
        encoded = tokenizer(batch[columns.text], truncation=True, max_length=max_length)
        rows = {k: v for k, v in encoded.items() if k in keep}
        rows["labels"] = tokenizer(text_target=batch[columns.target], truncation=True, max_length=max_target_length)[
            "input_ids"
        ]
        return rows

    function = {
        "sequence-classification": sequence_classification,
        "token-classification": token_classification,
        "question-answering": question_answering,
        "multiple-choice": multiple_choice,
        "causal-lm": causal_lm,
        "text-to-text": text_to_text,
    }[task]
    return DatasetDict(
        {
            split: dataset.map(function, batched=True, remove_columns=dataset.column_names, desc=f"tokenizing {split}")
            for split, dataset in raw.items()
        }
    )


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
        answers = batch[columns.answers][example]
        start = end = 0
        if not answers["text"]:  # no answer (SQuAD v2): every window of the example points at (0, 0)
            rows["start_positions"].append(start)
            rows["end_positions"].append(end)
            continue
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
        rows["start_positions"].append(start)
        rows["end_positions"].append(end)
    if with_offsets:
        rows["offset_mapping"] = offsets
        rows["example_id"] = list(example_ids)
    return rows


# --------------------------------------------------------------------------------------------------------------------
# Collators: lists of rows -> padded batches
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class PromptCompletionCollator:
    """Pads prompt -> completion rows on the right: input ids with pad, labels with -100, masks with 0."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(r["input_ids"]) for r in rows)
        fill = {"input_ids": self.pad_token_id, "labels": -100, "attention_mask": 0, "prefix_mask": 0}
        return {
            key: torch.tensor([list(r[key]) + [fill[key]] * (length - len(r[key])) for r in rows], dtype=torch.long)
            for key in rows[0]
            if key in fill
        }


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


def collator_for(task: str, tokenizer: PreTrainedTokenizerBase, model=None) -> Callable:
    if task in ("sequence-classification", "question-answering"):
        return DataCollatorWithPadding(tokenizer)
    if task == "token-classification":
        return DataCollatorForTokenClassification(tokenizer)
    if task == "multiple-choice":
        return MultipleChoiceCollator(tokenizer)
    if task == "causal-lm":
        return PromptCompletionCollator(tokenizer.pad_token_id)
    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)


# --------------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------------


def classification_scores(predictions, references, num_labels: int) -> dict[str, float]:
    """Accuracy and F1 (binary F1 of class 1 with two classes; macro F1 otherwise)."""
    f1_kwargs = {} if num_labels == 2 else {"average": "macro"}
    return {
        **load_metric("accuracy").compute(predictions=predictions, references=references),
        **load_metric("f1").compute(predictions=predictions, references=references, **f1_kwargs),
    }


def regression_scores(predictions, references) -> dict[str, float]:
    """MSE, MAE, and Pearson / Spearman correlation (NaN when either side is constant)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    references = np.asarray(references, dtype=np.float64).reshape(-1)
    constant = predictions.std() == 0 or references.std() == 0
    with warnings.catch_warnings():  # a nearly constant prediction (an untrained head) makes scipy warn
        warnings.simplefilter("ignore")
        return {
            "mse": float(mean_squared_error(references, predictions)),
            "mae": float(mean_absolute_error(references, predictions)),
            "pearson": float("nan") if constant else float(pearsonr(predictions, references)[0]),
            "spearman": float("nan") if constant else float(spearmanr(predictions, references)[0]),
        }


def multi_label_scores(predictions, references) -> dict[str, float]:
    """Micro / macro F1 over the labels and subset accuracy (every label of a row right), from 0/1 matrices."""
    from sklearn.metrics import accuracy_score, f1_score

    predictions, references = np.asarray(predictions).astype(int), np.asarray(references).astype(int)
    return {
        "micro_f1": float(f1_score(references, predictions, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(references, predictions, average="macro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(references, predictions)),
    }


def majority_baseline(
    raw: DatasetDict,
    task: str,
    columns: Columns,
    labels: list[str] | None,
    problem_type: str = "single_label_classification",
    label_separator: str | None = None,
) -> dict[str, float]:
    """What a constant predictor fitted on the training split scores on the validation split: the most common label
    (classification), the mean target (regression), the most common label set (multi-label)."""
    if task not in ("sequence-classification", "multiple-choice"):
        return {}
    if problem_type == "regression":
        mean = float(np.mean(raw["train"][columns.label]))
        references = raw["validation"][columns.label]
        scores = regression_scores([mean] * len(references), references)
        return {f"baseline_{k}": v for k, v in scores.items() if k in ("mse", "mae")}
    label2id = {name: i for i, name in enumerate(labels or [])}
    if problem_type == "multi_label_classification":

        def label_sets(split):
            return [
                frozenset(label2id[v] if isinstance(v, str) else int(v) for v in label_items(row, label_separator))
                for row in raw[split][columns.label]
            ]

        def hot(ids):
            return [int(i in ids) for i in range(len(labels))]

        majority = collections.Counter(label_sets("train")).most_common(1)[0][0]
        references = [hot(ids) for ids in label_sets("validation")]
        scores = multi_label_scores([hot(majority)] * len(references), references)
        return {f"baseline_{k}": v for k, v in scores.items()}

    def ids(split):
        return [label2id[v] if isinstance(v, str) else int(v) for v in raw[split][columns.label]]

    majority = collections.Counter(ids("train")).most_common(1)[0][0]
    references = ids("validation")
    num_labels = len(labels) if labels else max(len(c) for c in raw["train"][columns.choices])
    scores = classification_scores([majority] * len(references), references, num_labels)
    if task == "multiple-choice":
        scores.pop("f1")
    return {f"baseline_{k}": v for k, v in scores.items()}


def compute_metrics_for(
    task: str,
    tokenizer: PreTrainedTokenizerBase,
    labels: list[str] | None,
    raw_validation=None,
    validation_features=None,
    columns: Columns | None = None,
    problem_type: str = "single_label_classification",
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> Callable[[EvalPrediction], dict] | None:
    """The Trainer's `compute_metrics` for `task` (None for causal-lm: perplexity comes from the loss).

    Question answering needs `raw_validation` (the examples: contexts and answers) and `validation_features`: the
    `qa_features(..., with_offsets=True)` of those examples, in the evaluation data's order, whose `example_id` and
    `offset_mapping` map each prediction (one per window) back to its example's context. With
    `version_2_with_negative` "no answer" ("") is a prediction too (see `best_span`, `null_score_diff_threshold`),
    scored by the SQuAD v2 metric: exact and f1 over all questions, and split into HasAns_* and NoAns_*.
    """
    if task == "sequence-classification" and problem_type == "regression":

        def regression_metrics(p: EvalPrediction) -> dict:
            logits = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
            return regression_scores(logits, p.label_ids)

        return regression_metrics
    if task == "sequence-classification" and problem_type == "multi_label_classification":

        def multi_label_metrics(p: EvalPrediction) -> dict:
            logits = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
            return multi_label_scores(logits > 0, p.label_ids > 0.5)  # sigmoid(logit) > 0.5  <=>  logit > 0

        return multi_label_metrics
    if task == "sequence-classification":

        def sequence_metrics(p: EvalPrediction) -> dict:
            logits = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
            return classification_scores(logits.argmax(-1), p.label_ids, len(labels))

        return sequence_metrics
    if task == "multiple-choice":

        def choice_metrics(p: EvalPrediction) -> dict:
            logits = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
            return load_metric("accuracy").compute(predictions=logits.argmax(-1), references=p.label_ids)

        return choice_metrics
    if task == "token-classification":

        def entity_metrics(p: EvalPrediction) -> dict:
            logits = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
            predicted = logits.argmax(-1)

            def tags(rows):  # class ids -> tag names, at the labelled positions (first sub-token of each word)
                return [
                    [labels[t] for t, k in zip(row, mask, strict=True) if k]
                    for row, mask in zip(rows, p.label_ids != -100, strict=True)
                ]

            predictions, references = tags(predicted), tags(p.label_ids)
            scores = load_metric("seqeval").compute(predictions=predictions, references=references)
            return {k: v for k, v in scores.items() if k.startswith("overall_")}

        return entity_metrics
    if task == "question-answering":

        def span_metrics(p: EvalPrediction) -> dict:
            # One prediction per feature (window); an example's answer is the best span over its windows.
            start_logits, end_logits = p.predictions[:2]
            offsets, example_ids = validation_features["offset_mapping"], validation_features["example_id"]
            if len(start_logits) != len(example_ids):
                raise RuntimeError(
                    f"{len(start_logits)} predictions for {len(example_ids)} validation features: the evaluation "
                    "data and the features used for scoring must come from the same tokenization."
                )
            windows = collections.defaultdict(list)  # example -> its features, in context order
            for feature, example in enumerate(example_ids):
                windows[example].append((start_logits[feature], end_logits[feature], offsets[feature]))
            predictions, references = [], []
            threshold = null_score_diff_threshold if version_2_with_negative else None
            for i, example in enumerate(raw_validation):
                text = best_span(windows[i], example[columns.context], null_score_diff_threshold=threshold)
                predictions.append({"id": str(i), "prediction_text": text})
                if version_2_with_negative:
                    predictions[-1]["no_answer_probability"] = 0.0  # the decision is made above, by score
                answers = example[columns.answers]
                references.append(
                    {"id": str(i), "answers": {"text": answers["text"], "answer_start": answers["answer_start"]}}
                )
            metric = load_metric("squad_v2" if version_2_with_negative else "squad")
            return metric.compute(predictions=predictions, references=references)

        return span_metrics
    if task == "text-to-text":

        def generation_metrics(p: EvalPrediction) -> dict:
            predictions = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
            predictions = np.where(predictions != -100, predictions, tokenizer.pad_token_id)
            references = np.where(p.label_ids != -100, p.label_ids, tokenizer.pad_token_id)
            predicted = [t.strip() for t in tokenizer.batch_decode(predictions, skip_special_tokens=True)]
            expected = [t.strip() for t in tokenizer.batch_decode(references, skip_special_tokens=True)]
            rouge = load_metric("rouge").compute(predictions=predicted, references=expected)
            bleu = load_metric("sacrebleu").compute(predictions=predicted, references=[[t] for t in expected])
            return {**rouge, "bleu": bleu["score"]}

        return generation_metrics
    return None


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

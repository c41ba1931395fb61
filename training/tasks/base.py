"""The record every fine-tuning task fills (`Task`), and the settings its functions read (`TaskOptions`).

A task module (`sequence_classification.py`, ...) builds one `Task`; `fourfold finetune` looks it up by `--task` and
calls its fields at each step: the checks before any model is built, the Auto class, tokenization, the collator,
`compute_metrics`, the constant-predictor baseline, the Trainer class and its arguments, and what results.json and
the model card report. Nothing outside a task's module branches on its name. The shared pieces every record may
use live here too: `model_input_names`, the padding collator, "no metrics", "no baseline".
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from datasets import DatasetDict
from peft import TaskType
from transformers import (
    DataCollatorWithPadding,
    EvalPrediction,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from fourfold.training.errors import UsageError, closest
from fourfold.training.tasks.columns import Columns
from fourfold.training.trainer import FourfoldTrainer


@dataclass(frozen=True)
class TaskOptions:
    """What a task's functions read: the flags that concern tasks, and the labels its data check resolved.

    The defaults are `fourfold finetune`'s (a test holds them equal).

    Args:
        columns: the raw data's column names (the `--*_column` flags).
        max_length: the longest input in tokens (question answering: the window length).
        max_target_length: text-to-text: the longest target in tokens.
        num_labels: the number of classes; `None`: inferred from the labels.
        label_separator: multi-label: string labels are split on it.
        doc_stride: question answering: tokens of overlap between the windows of a long context.
        version_2_with_negative: question answering: "no answer" is a prediction too (SQuAD v2).
        null_score_diff_threshold: question answering, SQuAD v2: how much the null score must win by.
        labels: the label names, index = class id, as `Task.check_data` resolved them (`None`: the task has none).
    """

    columns: Columns = field(default_factory=Columns)
    max_length: int = 128
    max_target_length: int = 64
    num_labels: int | None = None
    label_separator: str | None = None
    doc_stride: int = 32
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0
    labels: list[str] | None = None


# (tokenizer, model config, options) -> a batched `Dataset.map` function: raw rows -> model inputs and labels.
Tokenize = Callable[[PreTrainedTokenizerBase, PretrainedConfig, TaskOptions], Callable[[dict], dict]]
# (tokenizer, model) -> the collator that pads a list of tokenized rows into a batch.
CollatorFactory = Callable[[PreTrainedTokenizerBase, PreTrainedModel], Callable]
# (tokenizer, raw splits, options) -> the Trainer's `compute_metrics` (None: the evaluation loss says it all).
MetricsFactory = Callable[[PreTrainedTokenizerBase, DatasetDict, TaskOptions], Callable[[EvalPrediction], dict] | None]


def model_input_names(config: PretrainedConfig) -> set[str]:
    """Inputs to keep: token_type_ids only where the model has segment embeddings (fourfold's default is none)."""
    names = {"input_ids", "attention_mask"}
    if getattr(config, "type_vocab_size", 0):
        names.add("token_type_ids")
    return names


def padding_collator(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> Callable:
    """Pads inputs to the longest row of the batch; the labels are one value (or a fixed pair) per row."""
    return DataCollatorWithPadding(tokenizer)


def no_metrics(tokenizer: PreTrainedTokenizerBase, raw: DatasetDict, options: TaskOptions) -> None:
    """The evaluation loss (and the perplexity from it) is the whole report."""
    return None


def no_baseline(raw: DatasetDict, options: TaskOptions) -> dict[str, float]:
    """No constant predictor is worth reporting."""
    return {}


def no_option_checks(options: TaskOptions) -> None:
    """The task reads no option that could be wrong on its own."""


def keep_training_arguments(training_args: TrainingArguments, options: TaskOptions) -> None:
    """The Trainer's arguments need nothing from the task beyond `label_names` and `loss_only_evaluation`."""


@dataclass(frozen=True)
class Task:
    """A fine-tuning task: everything `fourfold finetune` needs to know about it.

    Args:
        name: the `--task` value.
        auto_class: the transformers Auto class of its head (which architectures can do it, and how to load one).
        columns: the raw columns it reads, from the `--*_column` flags; the first is the text that must be there.
        check_data: checks the raw labels (answers, choices) of every split before any model is built; returns the
            options with what the data decides: the label names (`labels`), SQuAD v2 when questions lack answers.
        tokenize: builds the batched map function that turns raw rows into model inputs and labels.
        collator: builds the collator that pads tokenized rows into batches.
        metrics: builds the Trainer's `compute_metrics` (`no_metrics`: the loss only).
        baseline: what a constant predictor fitted on the training split scores on the validation split,
            as `baseline_<metric>` (`no_baseline`: none).
        headline_metric: the metric `summary_line` shows (without `eval_`).
        hub_task: the Hub pipeline tag of a fine-tuned model.
        peft_task_type: PEFT's task type; `None` where PEFT has none (the base PeftModel wraps the layers).
        trainer_class: the Trainer class (text-to-text generates in evaluation).
        label_names: the batch keys that hold the targets (`TrainingArguments.label_names`).
        loss_only_evaluation: evaluation gathers the loss only (`prediction_loss_only`): logits would fill memory.
        reports_perplexity: the evaluation loss is a per-token cross-entropy: results report exp(loss).
        configure_training: adjusts the parsed `TrainingArguments` (text-to-text: the generation length).
        check_options: checks the options before the data is read (question answering: `--doc_stride`).
        baseline_name: what the baseline predicts, as `summary_line` names it.
        problem_type: the model config's `problem_type` (sequence classification), `None` for the others.
        problem_types: the task's other problem types (`--problem_type`), each a record of its own.
        unfit_hint: appended to the error for an architecture that has no head for the task.
    """

    name: str
    auto_class: type
    columns: Callable[[Columns], list[str]]
    check_data: Callable[[DatasetDict, TaskOptions], TaskOptions]
    tokenize: Tokenize
    collator: CollatorFactory
    metrics: MetricsFactory
    baseline: Callable[[DatasetDict, TaskOptions], dict[str, float]]
    headline_metric: str
    hub_task: str
    peft_task_type: TaskType | None
    trainer_class: type[Trainer] = FourfoldTrainer
    label_names: tuple[str, ...] = ("labels",)
    loss_only_evaluation: bool = False
    reports_perplexity: bool = False
    configure_training: Callable[[TrainingArguments, TaskOptions], None] = keep_training_arguments
    check_options: Callable[[TaskOptions], None] = no_option_checks
    baseline_name: str = "majority"
    problem_type: str | None = None
    problem_types: Mapping[str, "Task"] = field(default_factory=lambda: MappingProxyType({}))
    unfit_hint: str = ""

    def check_fits(self, config: PretrainedConfig) -> None:
        """Raises, naming the architectures that can, when the checkpoint's architecture has no head for the task."""
        mapping = self.auto_class._model_mapping
        if type(config) in mapping:
            return
        from fourfold.modeling import CONFIG_CLASSES

        able = [model_type for model_type, config_class in CONFIG_CLASSES.items() if config_class in mapping]
        raise UsageError(
            f"A {config.model_type} checkpoint cannot do {self.name}: transformers has no "
            f"{self.auto_class.__name__} for it",
            f"use a checkpoint of an architecture that can ({', '.join(able) or 'none of fourfold'}){self.unfit_hint}",
        )

    def check_columns(self, raw: DatasetDict, columns: Columns) -> None:
        """Raises, naming the flags, when a split lacks a column the task reads."""
        for split, dataset in raw.items():
            missing = [c for c in self.columns(columns) if c not in dataset.column_names]
            if missing:
                raise UsageError(
                    f"The {split} data has no column {missing} needed for {self.name}"
                    f"{closest(missing[0], dataset.column_names)}; its columns are {dataset.column_names}",
                    "name the right ones with --text_column / --label_column / ...",
                )

    def tokenize_splits(
        self, raw: DatasetDict, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig, options: TaskOptions
    ) -> DatasetDict:
        """Every split tokenized, holding only what the model and collator read (question answering: one row per
        window of a long context, so a split may hold more rows than examples)."""
        function = self.tokenize(tokenizer, config, options)
        return DatasetDict(
            {
                split: dataset.map(
                    function, batched=True, remove_columns=dataset.column_names, desc=f"tokenizing {split}"
                )
                for split, dataset in raw.items()
            }
        )

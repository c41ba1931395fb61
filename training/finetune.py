"""`fourfold finetune RECIPE.yaml [--flag value ...]`: fine-tune a checkpoint on a labelled dataset, full or PEFT.

Reads top to bottom: parse -> data (checked) -> tokenizer -> model for the task -> PEFT adapter -> tokenized data ->
collator -> Trainer -> evaluate -> save. Tasks (see tasks/): sequence-classification, token-classification,
question-answering (a context longer than --max_length becomes windows that overlap by --doc_stride tokens; scored by
the best span over an example's windows; questions with no answer, SQuAD v2, train towards the first token and are
answered "" when its score wins, see --null_score_diff_threshold), multiple-choice, causal-lm (prompt -> completion;
the loss on the completion only; on a prefix LM the prompt is the prefix) and text-to-text (seq2seq, scored on
generated text).
sequence-classification also takes `--problem_type regression` (a number per row, one output, MSE loss; scored by MSE,
MAE, Pearson, Spearman) and `--problem_type multi_label_classification` (a list of label names or ids per row, or a
string split on `--label_separator`; multi-hot targets, BCE loss; scored by micro/macro F1 and subset accuracy at
sigmoid > 0.5).

Methods (see peft_support.py): full (every weight), lora, dora, ia3, prompt-tuning, prefix-tuning. The adapters
target the attention and MLP projections by default, and the task head is trained in full beside them; `--merge`
also writes the adapter folded into a plain checkpoint (`output_dir/merged`) whose outputs equal the adapter model's.

--model_name_or_path is a local folder, a Hub name, or a fourfold preset ("encoder-tiny": a fresh model, with a
tokenizer trained on the training text unless --tokenizer_name is given). The flags are the dataclasses below plus
every `transformers.Seq2SeqTrainingArguments` flag (TrainingArguments + the generation flags text-to-text uses).
A YAML recipe gives the defaults, flags after it win. Bad input (a flag out of range, missing columns or empty cells,
labels of the wrong type or out of range, a label only the validation data has, inputs cut so short that no label is
left to learn, a LoRA target that matches nothing, a method or task the architecture cannot do) fails before training,
as one line naming the fix (`UsageError`). An --output_dir that holds another run is refused unless
--overwrite_output_dir true replaces it or --resume_from_checkpoint (a checkpoint-N folder, or last) continues it; the
model, adapter, merged model and results.json are written atomically (training/outputs.py).
The output folder gets the model or adapter and the tokenizer, and `results.json`: final metrics, the metrics before
training, a constant-predictor baseline (classification: the majority class; regression: the training mean;
multi-label: the most frequent training label set), trainable vs total parameters, peak memory and run time.
"""

import contextlib
import json
import math
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import DatasetDict
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Seq2SeqTrainingArguments,
    Trainer,
)

from fourfold.configuration import get_config, preset_names
from fourfold.hub_cards import write_model_card
from fourfold.training.architectures import architecture_of
from fourfold.training.arguments import (
    ArgumentParser,
    RunArguments,
    check_training_arguments,
    parse_recipe_and_flags,
)
from fourfold.training.chat_template import set_chat_template
from fourfold.training.data import check_texts, load_text_dataset
from fourfold.training.errors import UsageError, check_between, closest, one_line, require
from fourfold.training.metrics import with_perplexity
from fourfold.training.outputs import prepare_output_dir, save_atomically
from fourfold.training.peft_support import METHODS, apply_peft, build_peft_config, check_method, count_parameters
from fourfold.training.sentence_transformers_files import write_sentence_transformers_files
from fourfold.training.tasks import TASKS, Columns, Task, TaskOptions, get_task
from fourfold.training.tokenizer import default_chat_template, load_or_train_tokenizer, model_special_ids
from fourfold.training.trainer import first_evaluation


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="encoder-tiny",
        metadata={"help": "A checkpoint folder, a Hub name, or a fourfold preset such as 'encoder-tiny' (fresh)."},
    )
    task: str = field(default="sequence-classification", metadata={"help": f"One of: {', '.join(TASKS)}."})
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub name; default: the checkpoint's own."}
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "The tokenizer's chat template: a path to a Jinja file, or the template itself; empty: keep the "
            "tokenizer's, or (fourfold decoder, prefix-lm) fourfold's default (training/chat_template.py)."
        },
    )
    num_labels: int | None = field(
        default=None, metadata={"help": "Number of classes; default: inferred from the training labels."}
    )
    problem_type: str = field(
        default="single_label_classification",
        metadata={
            "help": "sequence-classification only: single_label_classification (one class per row), "
            "multi_label_classification (a list of classes per row; sigmoid + BCE), or regression (a number per "
            "row; one output, MSE)."
        },
    )
    vocab_size: int = field(
        default=2000, metadata={"help": "Preset models only: vocabulary of the tokenizer trained on the data."}
    )

    def __post_init__(self):
        get_task(self.task, self.problem_type)  # a UsageError naming the choices, and the nearest one
        require(
            self.num_labels is None or self.num_labels >= 1,
            f"--num_labels {self.num_labels} must be >= 1",
            "leave it empty to infer it from the training labels",
        )
        require(self.vocab_size > 0, f"--vocab_size {self.vocab_size} must be > 0", "2000 suits the bundled data")


@dataclass
class DataArguments:
    train_files: list[str] | None = field(
        default=None, metadata={"help": "Local .csv/.json/.jsonl/.parquet files with the labelled training rows."}
    )
    validation_files: list[str] | None = field(
        default=None, metadata={"help": "Held-out files; without them --validation_split_percentage is held out."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A Hub dataset, or a local folder (save_to_disk, or data files), instead of --train_files."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    validation_split_percentage: float = field(
        default=20.0, metadata={"help": "Percent of the training rows held out when there is no validation split."}
    )
    text_column: str = field(
        default="text",
        metadata={
            "help": "Input text (sequence-cls, text-to-text source, multiple-choice question; token-cls: words)."
        },
    )
    text_pair_column: str | None = field(default=None, metadata={"help": "Second text of sentence-pair tasks."})
    label_column: str = field(
        default="label", metadata={"help": "Class name or id (token-cls: tags per word; multiple-choice: index)."}
    )
    label_separator: str | None = field(
        default=None,
        metadata={"help": "multi_label_classification: split string labels on this, e.g. ',' ('a,b' -> a and b)."},
    )
    question_column: str = field(default="question", metadata={"help": "Question answering: the question."})
    context_column: str = field(default="context", metadata={"help": "Question answering: the passage."})
    answers_column: str = field(
        default="answers", metadata={"help": "Question answering: SQuAD-style {'text': [...], 'answer_start': [...]}."}
    )
    choices_column: str = field(default="choices", metadata={"help": "Multiple choice: the list of choices."})
    prompt_column: str = field(default="prompt", metadata={"help": "causal-lm: the prompt (no loss on it)."})
    completion_column: str = field(default="completion", metadata={"help": "causal-lm: the completion to learn."})
    target_column: str = field(default="target", metadata={"help": "text-to-text: the target text."})
    max_length: int = field(
        default=128,
        metadata={
            "help": "Longest input in tokens (longer inputs are cut; question-answering splits a long context into "
            "overlapping windows instead, see --doc_stride)."
        },
    )
    # run_qa.py's 128 assumes max_length 384; a quarter of our default max_length keeps the same overlap ratio.
    doc_stride: int = field(
        default=32,
        metadata={
            "help": "Question answering: a context longer than --max_length is split into overlapping windows, one "
            "feature each; this many tokens overlap. An integer >= 0, below the room the question leaves."
        },
    )
    version_2_with_negative: bool = field(
        default=False,
        metadata={
            "help": "Question answering: some questions have no answer (SQuAD v2: empty 'text' and 'answer_start' "
            "lists); evaluation may then predict no answer and is scored by squad_v2. Turned on by itself when any "
            "split has such a question."
        },
    )
    max_target_length: int = field(default=64, metadata={"help": "text-to-text: longest target in tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N validation rows."})

    def __post_init__(self):
        # --doc_stride is question answering's, checked against --max_length by its rule (Task.check_options).
        counts = {
            "max_length": "the longest input, in tokens (128 is usual)",
            "max_target_length": "the longest target, in tokens (64 is usual)",
            "max_train_samples": "a number of rows, or leave it empty for all",
            "max_eval_samples": "a number of rows, or leave it empty for all",
        }
        for flag, fix in counts.items():
            value = getattr(self, flag)
            require(value is None or value >= 1, f"--{flag} {value} must be >= 1", f"pass {fix}")
        check_between(
            "validation_split_percentage", self.validation_split_percentage, 0, 100, "it is a percentage of rows"
        )
        require(
            self.label_separator is None or self.label_separator != "",
            "--label_separator is empty",
            "pass the character between labels, e.g. ',', or drop the flag",
        )

    def columns(self) -> Columns:
        return Columns(
            text=self.text_column,
            text_pair=self.text_pair_column,
            label=self.label_column,
            question=self.question_column,
            context=self.context_column,
            answers=self.answers_column,
            choices=self.choices_column,
            prompt=self.prompt_column,
            completion=self.completion_column,
            target=self.target_column,
        )


@dataclass
class PeftArguments:
    method: str = field(default="full", metadata={"help": "full, lora, dora, ia3, prompt-tuning or prefix-tuning."})
    lora_r: int = field(default=8, metadata={"help": "LoRA/DoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA/DoRA scale numerator (the update is alpha/r * BA)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA/DoRA input."})
    target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names to adapt; default: attention + MLP projections (ia3: k, v, down_proj)."},
    )
    num_virtual_tokens: int = field(default=8, metadata={"help": "Prompt/prefix tuning: number of virtual tokens."})
    merge: bool = field(
        default=False, metadata={"help": "Also write the adapter merged into the weights to output_dir/merged."}
    )

    def __post_init__(self):
        require(
            self.method in METHODS,
            f"--method {self.method!r} is not a method fourfold knows{closest(self.method, METHODS)}",
            f"choose one of {', '.join(METHODS)}",
        )
        require(self.lora_r >= 1, f"--lora_r {self.lora_r} must be >= 1", "it is the update's rank (8 is usual)")
        require(
            self.lora_alpha > 0,
            f"--lora_alpha {self.lora_alpha} must be > 0",
            "the update is scaled by alpha / r (16, twice the rank, is usual)",
        )
        check_between("lora_dropout", self.lora_dropout, 0, 1, "it is a dropout probability (0.05)", closed="low")
        require(
            self.num_virtual_tokens >= 1,
            f"--num_virtual_tokens {self.num_virtual_tokens} must be >= 1",
            "prompt and prefix tuning learn at least one virtual token (8 is usual)",
        )


@dataclass
class EvaluationArguments:
    evaluate_before: bool = field(
        default=True, metadata={"help": "Evaluate once before training too, so results.json shows the change."}
    )
    null_score_diff_threshold: float = field(
        default=0.0,
        metadata={
            "help": "Question answering with --version_2_with_negative: predict no answer when the null score "
            "(first token's start + end logit) beats the best span's score by more than this; raise it to answer "
            "more often."
        },
    )

    def __post_init__(self):
        require(
            math.isfinite(self.null_score_diff_threshold),
            f"--null_score_diff_threshold {self.null_score_diff_threshold} must be a finite number",
            "pass a finite score margin (0 by default; higher answers more often)",
        )


def main(argv: list[str] | None = None) -> int:
    results = run_finetune(argv)
    print(json.dumps({"metrics": results["metrics"], "baseline": results["baseline"]}, indent=2))
    print(summary_line(results))
    return 1 if results.get("warnings") else 0  # a loss that is not a number (printed as a warning): no success


def run_finetune(argv: list[str] | None = None) -> dict:
    """Runs one fine-tuning job from command-line style arguments and returns what it writes to results.json:
    final and before-training metrics, the majority-class baseline, parameter counts, peak memory, run time."""
    results, _ = finetune_job(argv)
    return results


def finetune_job(argv: list[str] | None = None) -> tuple[dict, Trainer]:
    """`run_finetune`, also returning the Trainer (its `model` is the trained model: a PeftModel for PEFT methods,
    the merged model after --merge). Every step asks the task's record (`tasks/`); none knows a task by name."""
    start = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    # 1. Parse: the recipe's keys first, then the flags, so later flags win; each flag's range is checked there. Then
    # what needs no data: the architecture has the task's head, the problem type is the task's, the lengths fit the
    # model's positions, the method fits, the task's options hold.
    arguments = parse_arguments(argv)
    model_args, data_args, peft_args, eval_args, _, training_args = arguments
    preset = is_preset(model_args.model_name_or_path)
    config = load_config(model_args.model_name_or_path, preset)
    task = resolve_task(model_args, config)
    options = task_options(model_args, data_args, eval_args)
    check_before_data(arguments, config, task, options)

    # 2. Data, raw, with its labels (answers, choices) checked before anything is built. The check resolves the label
    # names, and questions without an answer turn SQuAD v2 on: the arguments in results.json record what ran. Then
    # the output folder: another run's is refused (unless overwritten, then emptied, or resumed).
    raw = load_raw_data(data_args, task, training_args.seed)
    with refused_input("fix those rows, or drop them"):
        options = task.check_data(raw, options)
    data_args.version_2_with_negative = options.version_2_with_negative
    checkpoint, preset = output_folder(arguments, preset)

    # 3. Tokenizer: the checkpoint's, or (fresh preset) one trained on the training text.
    tokenizer = load_tokenizer(model_args, raw, text_columns(task, options.columns), config, preset)

    # 4. Model with the task head (sized to the labels), checked against the tokenizer.
    model = load_model(model_args, task, options.labels, tokenizer, config, preset)
    print(f"{model_args.model_name_or_path}: {type(model).__name__}, {model.num_parameters():,} parameters")

    # 5. PEFT: the adapter; every other weight is frozen. A fresh base is saved, so the adapter can find it.
    with refused_input("see --target_modules and the PEFT flags in `fourfold finetune --help`"):
        model = add_adapter(model, tokenizer, task, peft_args, preset, training_args.output_dir)
    trainable, total = count_parameters(model)
    print(
        f"method {peft_args.method}: {trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)"
    )

    # 6. Data, tokenized for the task (question answering: one row per window of a long context).
    features = task.tokenize_splits(raw, tokenizer, model.config, options)
    check_labels_left(features, options.max_length)

    # 7. Collator and metrics (None: the evaluation loss, and its perplexity, is the report).
    collator = task.collator(tokenizer, model)
    compute_metrics = task.metrics(tokenizer, raw, options)

    # 8. Train, with the task's Trainer class. The evaluation before training runs inside `train()` (`eval_on_start`),
    # as in pretrain.py: a `trainer.evaluate()` ahead of `train()` would leave the model unwrapped for distributed runs.
    training_args.eval_on_start = eval_args.evaluate_before
    trainer = task.trainer_class(
        model=model,
        args=training_args,
        train_dataset=features["train"],
        eval_dataset=features["validation"],
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    train_result = trainer.train(resume_from_checkpoint=checkpoint)

    # 9. Evaluate after training; the evaluation before it is read back from the log.
    metrics_before, metrics = evaluations(trainer, task, eval_args.evaluate_before)
    trainer.log_metrics("eval", metrics)

    # 10. Save: the model (PEFT: the adapter only) and tokenizer, the merged model on request, results.json.
    results = {
        "task": task.name,
        "problem_type": task.problem_type,
        "method": peft_args.method,
        "model_name_or_path": model_args.model_name_or_path,
        "model_type": config.model_type,
        "labels": options.labels,
        "num_train_rows": len(features["train"]),
        "num_validation_rows": len(features["validation"]),
        "parameters": {"trainable": trainable, "total": total, "trainable_percent": 100 * trainable / total},
        "metrics": metrics,
        "metrics_before": metrics_before,
        "baseline": task.baseline(raw, options),
        "train_runtime_s": train_result.metrics["train_runtime"],
        "train_loss": train_result.metrics.get("train_loss"),
    }
    results |= loss_warnings(results)
    save_outputs(trainer, results, tokenizer, arguments, start)
    return results, trainer


def summary_line(results: dict) -> str:
    """One line for a console summary: the task's headline metric before -> after (and the majority baseline),
    the trainable share, run time and peak memory. E.g.
    `lora: accuracy 0.53 -> 0.91 (majority baseline 0.53); 9.32% of 254,660 parameters trained; 16 s; 610 MB peak`"""
    task = get_task(results["task"], results.get("problem_type"))
    name = task.headline_metric
    after = results["metrics"].get(f"eval_{name}")
    before = results["metrics_before"].get(f"eval_before_{name}")
    baseline = results["baseline"].get(f"baseline_{name}")
    parameters, memory = results["parameters"], results["peak_memory"]
    text = f"{results['method']}: {name} " + (f"{before:.2f} -> " if before is not None else "") + f"{after:.2f}"
    text += f" ({task.baseline_name} baseline {baseline:.2f})" if baseline is not None else ""
    text += f"; {parameters['trainable_percent']:.2f}% of {parameters['total']:,} parameters trained"
    peak = memory["cuda_allocated_mb"] if memory["cuda_allocated_mb"] is not None else memory["rss_mb"]
    return text + f"; {results['runtime_s']:.0f} s; {peak:,.0f} MB peak"


def parse_arguments(argv: list[str] | None = None) -> tuple:
    """(model, data, peft, evaluation, run, training) arguments from an optional YAML recipe followed by flags, each
    range-checked; the training arguments as the task needs them (label names, loss-only evaluation, generation
    length)."""
    parser = ArgumentParser(
        (ModelArguments, DataArguments, PeftArguments, EvaluationArguments, RunArguments, Seq2SeqTrainingArguments),
        prog="fourfold finetune",
        description=__doc__,
    )
    model_args, data_args, peft_args, eval_args, run_args, training_args = parse_recipe_and_flags(parser, argv)
    check_training_arguments(training_args)
    task = get_task(model_args.task)
    # The tokenized data holds exactly the model inputs (prefix_mask included), so nothing is dropped by name.
    training_args.remove_unused_columns = False
    training_args.label_names = list(task.label_names)
    training_args.prediction_loss_only |= task.loss_only_evaluation
    task.configure_training(training_args, task_options(model_args, data_args, eval_args))
    return model_args, data_args, peft_args, eval_args, run_args, training_args


def task_options(model_args: ModelArguments, data_args: DataArguments, eval_args: EvaluationArguments) -> TaskOptions:
    """The flags the task's functions read; the task's data check adds the labels."""
    return TaskOptions(
        columns=data_args.columns(),
        max_length=data_args.max_length,
        max_target_length=data_args.max_target_length,
        num_labels=model_args.num_labels,
        label_separator=data_args.label_separator,
        doc_stride=data_args.doc_stride,
        version_2_with_negative=data_args.version_2_with_negative,
        null_score_diff_threshold=eval_args.null_score_diff_threshold,
    )


def is_preset(name_or_path: str) -> bool:
    """A fourfold preset name ("encoder-tiny": a fresh model) that is not also a local folder."""
    return name_or_path in preset_names() and not Path(name_or_path).exists()


def load_config(name_or_path: str, preset: bool) -> PretrainedConfig:
    """The checkpoint's config; for a preset, its default config (the tokenizer fills in vocabulary and ids later)."""
    if preset:
        return get_config(name_or_path)
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise UsageError(
            f"--model_name_or_path {name_or_path!r} is neither a checkpoint folder nor a loadable Hub model "
            f"({one_line(error)}){closest(name_or_path, preset_names())}",
            f"pass a folder written by `fourfold pretrain` / save_pretrained, a Hub name, or a preset to start fresh: "
            f"{', '.join(n for n in preset_names() if n.endswith('-tiny'))}, ...",
        ) from error


@contextlib.contextmanager
def refused_input(fix: str):
    """A `ValueError` that a check of the user's input raises (PEFT's method and target rules, question answering's
    stride and answers, which the Hub code shares) becomes a `UsageError` with `fix`: one line, not a traceback."""
    try:
        yield
    except UsageError:
        raise
    except ValueError as error:
        raise UsageError(one_line(error).rstrip("."), fix) from error


def check_lengths(data_args: DataArguments, training_args: Seq2SeqTrainingArguments, config: PretrainedConfig) -> None:
    """The longest input (--max_length), target (--max_target_length) and generation (--generation_max_length) fit
    the model's positions: checked on the config, before the model is built."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:  # e.g. relative positions: no limit to check
        return
    lengths = {
        "max_length": data_args.max_length,
        "max_target_length": data_args.max_target_length,
        "generation_max_length": training_args.generation_max_length,
    }
    for flag, length in lengths.items():
        require(
            length is None or length <= positions,
            f"--{flag} {length} is beyond the model's max_position_embeddings={positions}",
            f"pass --{flag} {positions} or less",
        )


def check_before_data(arguments: tuple, config: PretrainedConfig, task: Task, options: TaskOptions) -> None:
    """What needs no data: the lengths fit the model's positions, the method fits the task and architecture, the
    task's options hold (question answering: --doc_stride)."""
    _, data_args, peft_args, _, _, training_args = arguments
    check_lengths(data_args, training_args, config)
    with refused_input("see --method in `fourfold finetune --help`"):
        check_method(peft_args.method, task.name, config.model_type, peft_args.merge)
    with refused_input("change the flags it names"):
        task.check_options(options)


def output_folder(arguments: tuple, preset: bool) -> tuple[str | None, bool]:
    """(the checkpoint to resume from, whether the model is built fresh). Refuses an --output_dir of another run
    unless overwritten (then emptied) or resumed. A resumed run of a fresh preset reads the tokenizer its checkpoint
    saved (a trained one differs run to run) and, for an adapter, the base model the run saved (a fresh base would
    be other random weights)."""
    model_args, _, peft_args, _, run_args, training_args = arguments
    with training_args.main_process_first(desc="output folder"):
        checkpoint = prepare_output_dir(
            training_args.output_dir,
            run_args.overwrite_output_dir,
            training_args.resume_from_checkpoint,
            training_args.save_only_model,
        )
    if checkpoint is None or not preset:
        return checkpoint, preset
    model_args.tokenizer_name = model_args.tokenizer_name or checkpoint
    base = Path(training_args.output_dir) / "base_model"
    if peft_args.method != "full" and (base / "config.json").is_file():
        model_args.model_name_or_path = str(base)
        return checkpoint, False
    return checkpoint, preset


def resolve_task(model_args: ModelArguments, config: PretrainedConfig) -> Task:
    """The record of --task and --problem_type, once the checkpoint's architecture is known to have its head."""
    get_task(model_args.task).check_fits(config)
    return get_task(model_args.task, model_args.problem_type)


def load_raw_data(data_args: DataArguments, task: Task, seed: int) -> DatasetDict:
    """The train and validation splits (--max_train_samples / --max_eval_samples rows), holding the task's columns."""
    columns = data_args.columns()
    raw = load_text_dataset(
        data_args.train_files if not data_args.dataset_name else None,
        data_args.dataset_name,
        data_args.dataset_config_name,
        task.columns(columns)[0],
        data_args.validation_files,
        data_args.validation_split_percentage,
        streaming=False,
        seed=seed,
    )
    for split, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples)):
        if limit is not None:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    task.check_columns(raw, columns)
    for split, dataset in raw.items():
        require(len(dataset) > 0, f"the {split} data has no rows", "give it labelled rows (a header is not a row)")
        for column in task.columns(columns):
            if column in columns.texts():  # every text cell filled, with text (the label check reads the labels)
                check_texts(dataset, column, split)
    return raw


def text_columns(task: Task, columns: Columns) -> list[str]:
    """The task's columns that hold text (all but the label), which a fresh tokenizer is trained on."""
    return [c for c in task.columns(columns) if c != columns.label]


def load_tokenizer(
    model_args: ModelArguments, raw: DatasetDict, text_columns: list[str], config: PretrainedConfig, preset: bool
) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer (or --tokenizer_name); for a fresh preset, one trained on the training text."""
    if preset and not model_args.tokenizer_name:
        architecture = architecture_of(config.model_type).name
        texts = (" ".join(t for c in text_columns for t in flatten_text(row[c])) for row in raw["train"])
        tokenizer = load_or_train_tokenizer(None, architecture, texts, model_args.vocab_size)
    else:
        name = model_args.tokenizer_name or model_args.model_name_or_path
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as error:
            flag = "--tokenizer_name" if model_args.tokenizer_name else "--model_name_or_path"
            raise UsageError(
                f"{flag} {name!r} has no tokenizer that loads ({one_line(error)})",
                "pass --tokenizer_name with a folder or Hub name that has one",
            ) from error
    set_chat_template(tokenizer, model_args.chat_template, default_chat_template(config.model_type))  # TRL chat rows
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UsageError(
                "The tokenizer has neither a pad nor an eos token, so batches cannot be padded",
                "add one with tokenizer.add_special_tokens({'pad_token': '<pad>'}) and save it, or pass "
                "--tokenizer_name",
            )
        tokenizer.pad_token = tokenizer.eos_token  # the masks, not the pad id, tell the model what is padding
    return tokenizer


def flatten_text(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in flatten_text(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in flatten_text(v)]
    return []


def head_config(task: Task, labels: list[str] | None) -> dict:
    """Config fields that size the task head to the labels, and its problem type; none for tasks without labels."""
    if labels is None:
        return {}
    fields = dict(
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
    )
    return fields | ({"problem_type": task.problem_type} if task.problem_type is not None else {})


def load_model(
    model_args: ModelArguments,
    task: Task,
    labels: list[str] | None,
    tokenizer: PreTrainedTokenizerBase,
    config: PretrainedConfig,
    preset: bool,
) -> PreTrainedModel:
    """The checkpoint (or a fresh preset, whose default `config` is given) with the task's head, sized to `labels`;
    the head is new when the checkpoint was pretrained for another task."""
    label_kwargs = head_config(task, labels)
    if preset:  # fresh weights; vocabulary and special ids from the tokenizer
        special_ids = model_special_ids(tokenizer, architecture_of(config.model_type).name)
        model = task.auto_class.from_config(get_config(model_args.model_name_or_path, **special_ids, **label_kwargs))
    else:
        # ignore_mismatched_sizes: a checkpoint fine-tuned before may carry a head of another size; it is replaced.
        model = task.auto_class.from_pretrained(
            model_args.model_name_or_path, ignore_mismatched_sizes=bool(label_kwargs), **label_kwargs
        )
    vocab_size = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab_size:
        raise UsageError(
            f"The tokenizer has {len(tokenizer):,} tokens but the model's embedding only {vocab_size:,}",
            "use the checkpoint's own tokenizer (drop --tokenizer_name), or resize the model's embeddings first",
        )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False  # no KV cache while training; generation turns it on itself
    return model


def add_adapter(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    peft_args: PeftArguments,
    preset: bool,
    output_dir: str,
) -> torch.nn.Module:
    """`--method full`: the model itself. Otherwise the PEFT adapter around it (every base weight frozen); a fresh
    preset's base is saved to `output_dir/base_model` first, so the saved adapter can find it."""
    if peft_args.method == "full":
        return model
    if preset:
        base_dir = Path(output_dir) / "base_model"
        model.save_pretrained(base_dir)
        tokenizer.save_pretrained(base_dir)
        model.name_or_path = str(base_dir)
    peft_config = build_peft_config(
        peft_args.method,
        task.name,
        model,
        peft_args.lora_r,
        peft_args.lora_alpha,
        peft_args.lora_dropout,
        peft_args.target_modules,
        peft_args.num_virtual_tokens,
    )
    return apply_peft(model, peft_config)


def evaluations(trainer: Trainer, task: Task, evaluate_before: bool) -> tuple[dict, dict]:
    """(before training, after training) metrics, with `<prefix>_perplexity` where the task's loss is per token."""
    perplexity = with_perplexity if task.reports_perplexity else lambda metrics, prefix: metrics
    before = {}
    if evaluate_before:
        before = perplexity(first_evaluation(trainer.state.log_history, "eval_before"), "eval_before")
    return before, perplexity(trainer.evaluate(), "eval")


def save_outputs(trainer: Trainer, results: dict, tokenizer: PreTrainedTokenizerBase, arguments: tuple, start: float):
    """Saves the model (PEFT: the adapter only) and tokenizer, the merged model on --merge, results.json and the
    model card; adds to `results` what it learns on the way (merge check, peak memory, run time, the arguments)."""
    model_args, data_args, peft_args, eval_args, run_args, training_args = arguments
    output_dir = Path(training_args.output_dir)
    main_process = trainer.is_world_process_zero()
    trainer.model.config.use_cache = True  # the saved model generates with its cache
    # Every process saves (sharded weights gather); the main one moves the files into place, so a failed save leaves
    # the earlier files whole. --push_to_hub uploads the folder once they are in place, not the temporary one.
    save_atomically(lambda folder: trainer.save_model(folder, _internal_call=True), str(output_dir), main_process)
    if training_args.push_to_hub:
        trainer.push_to_hub()  # as `save_model` did: before --merge replaces the trainer's model
    if main_process:
        write_sentence_transformers_files(output_dir)  # an encoder's pooling (a PEFT adapter's folder gets none)
        if peft_args.merge:
            results["merged"] = save_merged(trainer, output_dir / "merged", tokenizer)
    results["peak_memory"] = peak_memory()
    results["runtime_s"] = time.perf_counter() - start
    results["arguments"] = {
        "model": asdict(model_args),
        "data": asdict(data_args),
        "peft": asdict(peft_args),
        "evaluation": asdict(eval_args),
        "run": asdict(run_args),
        "training": {k: str(v) for k, v in training_args.to_dict().items() if not k.startswith("_")},
    }
    if main_process:
        save_atomically(lambda folder: write_results(results, Path(folder)), str(output_dir))
        write_model_card(training_args.output_dir)  # after save_model: PEFT writes a README.md of its own there


def save_merged(trainer: Trainer, path: Path, tokenizer: PreTrainedTokenizerBase) -> dict:
    """Folds the adapter into the weights, checks that the outputs did not change, and saves a plain checkpoint."""
    model = trainer.model
    model.eval()
    batch = next(iter(trainer.get_eval_dataloader()))
    batch = {k: v.to(model.device) for k, v in batch.items() if k not in trainer.args.label_names}
    with torch.no_grad():
        before = first_output(model(**batch))
        merged = model.merge_and_unload()
        after = first_output(merged(**batch))
    max_abs_diff = float((before - after).abs().max())
    if not torch.allclose(before, after, atol=1e-4, rtol=1e-4):
        raise RuntimeError(f"The merged model's outputs differ from the adapter model's by {max_abs_diff:.2e}.")
    merged.config.use_cache = True

    def save(folder: str) -> None:
        merged.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    save_atomically(save, str(path))
    trainer.model = merged  # the adapter model no longer exists: its layers were folded in
    return {"path": str(path), "max_abs_diff": max_abs_diff}


def write_results(results: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2, default=str))


def check_labels_left(features: DatasetDict, max_length: int) -> None:
    """Some token label of every split survives tokenizing: a split whose labels are all -100 (causal-lm rows whose
    completions --max_length cuts off, say) trains nothing, or evaluates to a NaN loss. Rows left without any label
    are counted aloud."""
    for split, dataset in features.items():
        if "labels" not in dataset.column_names:
            continue
        column = dataset.with_format("arrow")["labels"]
        if not (pa.types.is_list(column.type) and pa.types.is_integer(column.type.value_type)):
            continue  # one class id (or multi-hot floats) per row: nothing is ignored
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        kept = pc.not_equal(pc.list_flatten(column), -100)
        labelled = len(pc.unique(pc.filter(pc.list_parent_indices(column), kept)))
        require(
            labelled > 0,
            f"every label of the {split} split is ignored (-100) after tokenizing with --max_length {max_length}, so "
            + ("training has no loss to learn from" if split == "train" else "its loss would be NaN"),
            "raise --max_length, or give rows whose targets (completion, target text, tagged words) survive the cut",
        )
        if labelled < len(column):
            print(
                f"{split}: {len(column) - labelled} of {len(column)} rows keep no label within --max_length "
                f"{max_length} (they add no loss)"
            )


def loss_warnings(results: dict) -> dict:
    """`loss_is_finite` for results.json and, when the final evaluation or training loss is not a number (training
    diverged), a `warnings` entry, also printed on stderr: a NaN is never a silent result."""
    losses = {"eval_loss": results["metrics"].get("eval_loss"), "train_loss": results.get("train_loss")}
    bad = [f"{name} is {value}" for name, value in losses.items() if value is not None and not math.isfinite(value)]
    if not bad:
        return {"loss_is_finite": True}
    warning = (
        f"{', '.join(bad)}: training diverged, so the saved model is no result (results.json says "
        '"loss_is_finite": false) — lower --learning_rate, keep --max_grad_norm 1, or check the data'
    )
    print(f"fourfold finetune: warning: {warning}", file=sys.stderr)
    return {"loss_is_finite": False, "warnings": [warning]}


def first_output(outputs) -> torch.Tensor:
    return outputs.logits if getattr(outputs, "logits", None) is not None else outputs.start_logits


def peak_memory() -> dict[str, float | None]:
    """Peak resident memory of this process (MB; over its whole life), and peak CUDA memory allocated (MB)."""
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"rss_mb": rss_mb, "cuda_allocated_mb": cuda_mb}


if __name__ == "__main__":
    sys.exit(main())

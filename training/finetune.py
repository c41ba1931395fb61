"""`fourfold finetune RECIPE.yaml [--flag value ...]`: fine-tune a checkpoint on a labelled dataset, full or PEFT.

Reads top to bottom: parse -> data (checked) -> tokenizer -> model for the task -> PEFT adapter -> tokenized data ->
collator -> Trainer -> evaluate -> save. Tasks (see tasks.py): sequence-classification, token-classification,
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
A YAML recipe gives the defaults, flags after it win. Bad input (missing columns, labels of the wrong type or out of
range, a LoRA target that matches nothing, a method or task the architecture cannot do) fails before training.
The output folder gets the model or adapter and the tokenizer, and `results.json`: final metrics, the metrics before
training, a constant-predictor baseline (classification: the majority class; regression: the training mean;
multi-label: the most frequent training label set), trainable vs total parameters, peak memory and run time.
"""

import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from datasets import DatasetDict
from transformers import (
    AutoConfig,
    AutoTokenizer,
    HfArgumentParser,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Seq2SeqTrainingArguments,
    Trainer,
)

from fourfold.configuration import get_config, preset_names
from fourfold.hub_cards import write_model_card
from fourfold.training.arguments import parse_recipe_and_flags
from fourfold.training.data import load_text_dataset
from fourfold.training.metrics import perplexity
from fourfold.training.peft_support import (
    apply_peft,
    build_peft_config,
    check_method,
    count_parameters,
)
from fourfold.training.tasks import (
    AUTO_CLASSES,
    CLASSIFICATION_TASKS,
    TASKS,
    Columns,
    check_columns,
    check_doc_stride,
    check_mc_labels,
    check_problem_type,
    check_qa_answers,
    check_task_fits,
    collator_for,
    compute_metrics_for,
    majority_baseline,
    qa_features,
    resolve_labels,
    tokenize,
)
from fourfold.training.tokenizer import load_or_train_tokenizer, model_special_ids
from fourfold.training.trainer import FourfoldSeq2SeqTrainer, FourfoldTrainer, first_evaluation


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


def main(argv: list[str] | None = None) -> int:
    results = run_finetune(argv)
    print(json.dumps({"metrics": results["metrics"], "baseline": results["baseline"]}, indent=2))
    print(summary_line(results))
    return 0


def run_finetune(argv: list[str] | None = None) -> dict:
    """Runs one fine-tuning job from command-line style arguments and returns what it writes to results.json:
    final and before-training metrics, the majority-class baseline, parameter counts, peak memory, run time."""
    results, _ = finetune_job(argv)
    return results


def finetune_job(argv: list[str] | None = None) -> tuple[dict, Trainer]:
    """`run_finetune`, also returning the Trainer (its `model` is the trained model: a PeftModel for PEFT methods,
    the merged model after --merge)."""
    start = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    # 1. Parse: the recipe's keys first, then the flags, so later flags win.
    model_args, data_args, peft_args, eval_args, training_args = parse_arguments(argv)
    task, columns = model_args.task, data_args.columns()
    if task not in TASKS:
        raise ValueError(f"--task {task!r}: choose one of {', '.join(TASKS)}.")
    preset = model_args.model_name_or_path in preset_names() and not Path(model_args.model_name_or_path).exists()
    config = load_config(model_args.model_name_or_path, preset)
    check_task_fits(task, config)
    problem_type = model_args.problem_type
    check_problem_type(task, problem_type)
    model_type = config.model_type
    check_method(peft_args.method, task, model_type, peft_args.merge)
    if task == "question-answering":
        check_doc_stride(data_args.doc_stride, data_args.max_length)

    # 2. Data, raw, with its labels checked before anything is built.
    raw = load_text_dataset(
        data_args.train_files if not data_args.dataset_name else None,
        data_args.dataset_name,
        data_args.dataset_config_name,
        columns.needed(task)[0],
        data_args.validation_files,
        data_args.validation_split_percentage,
        streaming=False,
        seed=training_args.seed,
    )
    for split, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples)):
        if limit is not None:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    check_columns(raw, task, columns)
    labels = None
    if task in CLASSIFICATION_TASKS:
        labels = resolve_labels(
            raw, task, columns.label, model_args.num_labels, problem_type, data_args.label_separator
        )
    if task == "multiple-choice":
        check_mc_labels(raw, columns)
    if task == "question-answering" and check_qa_answers(raw, columns) and not data_args.version_2_with_negative:
        print("Some questions have no answer: training and scoring as SQuAD v2 (--version_2_with_negative).")
        data_args.version_2_with_negative = True

    # 3. Tokenizer: the checkpoint's, or (fresh preset) one trained on the training text.
    tokenizer = load_tokenizer(model_args, raw, columns, task, preset)

    # 4. Model with the task head (sized to the labels), checked against the tokenizer.
    model = load_model(model_args, task, labels, tokenizer, preset)
    print(f"{model_args.model_name_or_path}: {type(model).__name__}, {model.num_parameters():,} parameters")

    # 5. PEFT: the adapter; every other weight is frozen. A fresh base is saved, so the adapter can find it.
    if peft_args.method != "full":
        if preset:
            base_dir = Path(training_args.output_dir) / "base_model"
            model.save_pretrained(base_dir)
            tokenizer.save_pretrained(base_dir)
            model.name_or_path = str(base_dir)
        peft_config = build_peft_config(
            peft_args.method,
            task,
            model,
            peft_args.lora_r,
            peft_args.lora_alpha,
            peft_args.lora_dropout,
            peft_args.target_modules,
            peft_args.num_virtual_tokens,
        )
        model = apply_peft(model, peft_config)
    trainable, total = count_parameters(model)
    print(
        f"method {peft_args.method}: {trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)"
    )

    # 6. Data, tokenized for the task.
    features = tokenize(
        raw,
        task,
        tokenizer,
        model.config,
        columns,
        labels,
        data_args.max_length,
        data_args.max_target_length,
        problem_type,
        data_args.label_separator,
        data_args.doc_stride,
    )

    # 7. Collator and metrics.
    collator = collator_for(task, tokenizer, model if task == "text-to-text" else None)
    validation_features = None
    if task == "question-answering":  # the windows' offsets and example ids, for scoring only (not model inputs)
        validation_features = qa_features(
            raw["validation"][:],
            tokenizer,
            columns,
            data_args.max_length,
            set(),
            with_offsets=True,
            doc_stride=data_args.doc_stride,
        )
    compute_metrics = compute_metrics_for(
        task,
        tokenizer,
        labels,
        raw["validation"],
        validation_features,
        columns,
        problem_type,
        data_args.version_2_with_negative,
        eval_args.null_score_diff_threshold,
    )

    # 8. Train, with an evaluation before and after. The one before runs inside `train()` (`eval_on_start`), as in
    # pretrain.py: a `trainer.evaluate()` ahead of `train()` would leave the model unwrapped for distributed training.
    training_args.eval_on_start = eval_args.evaluate_before
    # FourfoldTrainer / FourfoldSeq2SeqTrainer: `--push_to_hub` uploads fourfold's model card, not Trainer's.
    trainer_class = FourfoldSeq2SeqTrainer if task == "text-to-text" else FourfoldTrainer
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=features["train"],
        eval_dataset=features["validation"],
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics_before = {}
    if eval_args.evaluate_before:
        metrics_before = with_perplexity(
            first_evaluation(trainer.state.log_history, "eval_before"), "eval_before", task
        )
    metrics = with_perplexity(trainer.evaluate(), "eval", task)
    trainer.log_metrics("eval", metrics)

    # 9. Save: the model (PEFT: the adapter only) and tokenizer, the merged model on request, results.json.
    results = {
        "task": task,
        "problem_type": problem_type if task == "sequence-classification" else None,
        "method": peft_args.method,
        "model_name_or_path": model_args.model_name_or_path,
        "model_type": model_type,
        "labels": labels,
        "num_train_rows": len(features["train"]),
        "num_validation_rows": len(features["validation"]),
        "parameters": {"trainable": trainable, "total": total, "trainable_percent": 100 * trainable / total},
        "metrics": metrics,
        "metrics_before": metrics_before,
        "baseline": majority_baseline(raw, task, columns, labels, problem_type, data_args.label_separator),
        "train_runtime_s": train_result.metrics["train_runtime"],
        "train_loss": train_result.metrics.get("train_loss"),
    }
    if trainer.is_world_process_zero():
        trainer.model.config.use_cache = True  # the saved model generates with its cache
        trainer.save_model()
        if peft_args.merge:
            results["merged"] = save_merged(trainer, Path(training_args.output_dir) / "merged", tokenizer)
    results["peak_memory"] = peak_memory()
    results["runtime_s"] = time.perf_counter() - start
    results["arguments"] = {
        "model": asdict(model_args),
        "data": asdict(data_args),
        "peft": asdict(peft_args),
        "evaluation": asdict(eval_args),
        "training": {k: str(v) for k, v in training_args.to_dict().items() if not k.startswith("_")},
    }
    if trainer.is_world_process_zero():
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(training_args.output_dir) / "results.json").write_text(json.dumps(results, indent=2, default=str))
        write_model_card(training_args.output_dir)  # after save_model: PEFT writes a README.md of its own there
    return results, trainer


HEADLINE_METRICS = {
    "sequence-classification": "accuracy",
    "token-classification": "overall_f1",
    "question-answering": "f1",
    "multiple-choice": "accuracy",
    "causal-lm": "perplexity",
    "text-to-text": "rougeL",
    "regression": "mse",  # sequence-classification with these problem types
    "multi_label_classification": "micro_f1",
}


def summary_line(results: dict) -> str:
    """One line for a console summary: the task's headline metric before -> after (and the majority baseline),
    the trainable share, run time and peak memory. E.g.
    `lora: accuracy 0.53 -> 0.91 (majority baseline 0.53); 9.32% of 254,660 parameters trained; 16 s; 610 MB peak`"""
    name = HEADLINE_METRICS.get(results.get("problem_type"), HEADLINE_METRICS[results["task"]])
    kind = {"regression": "mean", "multi_label_classification": "most frequent label set"}
    after = results["metrics"].get(f"eval_{name}")
    before = results["metrics_before"].get(f"eval_before_{name}")
    baseline = results["baseline"].get(f"baseline_{name}")
    parameters, memory = results["parameters"], results["peak_memory"]
    text = f"{results['method']}: {name} " + (f"{before:.2f} -> " if before is not None else "") + f"{after:.2f}"
    text += (
        f" ({kind.get(results.get('problem_type'), 'majority')} baseline {baseline:.2f})"
        if baseline is not None
        else ""
    )
    text += f"; {parameters['trainable_percent']:.2f}% of {parameters['total']:,} parameters trained"
    peak = memory["cuda_allocated_mb"] if memory["cuda_allocated_mb"] is not None else memory["rss_mb"]
    return text + f"; {results['runtime_s']:.0f} s; {peak:,.0f} MB peak"


def parse_arguments(argv: list[str] | None = None) -> tuple:
    """(model, data, peft, evaluation, training) arguments from an optional YAML recipe followed by flags."""
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, PeftArguments, EvaluationArguments, Seq2SeqTrainingArguments),
        prog="fourfold finetune",
        description=__doc__,
    )
    model_args, data_args, peft_args, eval_args, training_args = parse_recipe_and_flags(parser, argv)
    # The tokenized data holds exactly the model inputs (prefix_mask included), so nothing is dropped by name.
    training_args.remove_unused_columns = False
    training_args.label_names = (
        ["start_positions", "end_positions"] if model_args.task == "question-answering" else ["labels"]
    )
    if model_args.task == "causal-lm":
        training_args.prediction_loss_only = True  # perplexity needs only the loss; logits would fill memory
    if model_args.task == "text-to-text" and training_args.generation_max_length is None:
        training_args.generation_max_length = data_args.max_target_length
    return model_args, data_args, peft_args, eval_args, training_args


def load_config(name_or_path: str, preset: bool) -> PretrainedConfig:
    """The checkpoint's config; for a preset, its default config (the tokenizer fills in vocabulary and ids later)."""
    if preset:
        return get_config(name_or_path)
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--model_name_or_path {name_or_path!r} is neither a checkpoint folder nor a loadable Hub model ({error}). "
            f"Pass a folder written by `fourfold pretrain` / save_pretrained, a Hub name, or a preset to start fresh: "
            f"{', '.join(n for n in preset_names() if n.endswith('-tiny'))}, ... ."
        ) from error


def load_tokenizer(
    model_args: ModelArguments, raw: DatasetDict, columns: Columns, task: str, preset: bool
) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer (or --tokenizer_name); for a fresh preset, one trained on the training text."""
    if preset and not model_args.tokenizer_name:
        architecture = model_args.model_name_or_path.rpartition("-")[0]
        text_columns = [c for c in columns.needed(task) if c != columns.label]
        texts = (" ".join(t for c in text_columns for t in flatten_text(row[c])) for row in raw["train"])
        tokenizer = load_or_train_tokenizer(None, architecture, texts, model_args.vocab_size)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                "The tokenizer has neither a pad nor an eos token, so batches cannot be padded: add one with "
                "tokenizer.add_special_tokens({'pad_token': '<pad>'}) and save it, or pass --tokenizer_name."
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


def load_model(
    model_args: ModelArguments, task: str, labels: list[str] | None, tokenizer: PreTrainedTokenizerBase, preset: bool
) -> PreTrainedModel:
    """The checkpoint (or a fresh preset) with `task`'s head, sized to `labels`; the head is new when the checkpoint
    was pretrained for another task."""
    label_kwargs = {}
    if labels is not None:
        label_kwargs = dict(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
        if task == "sequence-classification":
            label_kwargs["problem_type"] = model_args.problem_type
    auto_class = AUTO_CLASSES[task]
    if preset:  # fresh weights; vocabulary and special ids from the tokenizer
        architecture = model_args.model_name_or_path.rpartition("-")[0]
        config = get_config(model_args.model_name_or_path, **model_special_ids(tokenizer, architecture), **label_kwargs)
        model = auto_class.from_config(config)
    else:
        # ignore_mismatched_sizes: a checkpoint fine-tuned before may carry a head of another size; it is replaced.
        model = auto_class.from_pretrained(
            model_args.model_name_or_path, ignore_mismatched_sizes=bool(label_kwargs), **label_kwargs
        )
    vocab_size = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer):,} tokens but the model's embedding only {vocab_size:,}: use the "
            "checkpoint's own tokenizer (drop --tokenizer_name), or resize the model's embeddings first."
        )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False  # no KV cache while training; generation turns it on itself
    return model


def with_perplexity(metrics: dict[str, float], prefix: str, task: str) -> dict[str, float]:
    """Adds `<prefix>_perplexity` = exp(loss per target token) for the generative tasks."""
    loss = metrics.get(f"{prefix}_loss")
    if loss is not None and task in ("causal-lm", "text-to-text"):
        metrics[f"{prefix}_perplexity"] = perplexity(loss)
    return metrics


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
    merged.save_pretrained(path)
    tokenizer.save_pretrained(path)
    trainer.model = merged  # the adapter model no longer exists: its layers were folded in
    return {"path": str(path), "max_abs_diff": max_abs_diff}


def first_output(outputs) -> torch.Tensor:
    return outputs.logits if getattr(outputs, "logits", None) is not None else outputs.start_logits


def peak_memory() -> dict[str, float | None]:
    """Peak resident memory of this process (MB; over its whole life), and peak CUDA memory allocated (MB)."""
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"rss_mb": rss_mb, "cuda_allocated_mb": cuda_mb}


if __name__ == "__main__":
    sys.exit(main())

"""text-to-text: source -> target, through `AutoModelForSeq2SeqLM`; scored on generated text (rouge, bleu).

The seq2seq Trainer generates in evaluation (`--predict_with_generate`), up to `--generation_max_length` tokens,
by default `--max_target_length`; the evaluation loss is per target token, so results report its perplexity too.
"""

import numpy as np
from datasets import DatasetDict
from peft import TaskType
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, EvalPrediction, TrainingArguments

from fourfold.training.metrics import load_metric
from fourfold.training.tasks.base import Task, TaskOptions, model_input_names, no_baseline
from fourfold.training.tasks.columns import Columns
from fourfold.training.trainer import FourfoldSeq2SeqTrainer


def tokenize_source_target(tokenizer, config, options: TaskOptions):
    keep, c = model_input_names(config), options.columns

    def tokenize(batch: dict) -> dict:
        encoded = tokenizer(batch[c.text], truncation=True, max_length=options.max_length)
        rows = {k: v for k, v in encoded.items() if k in keep}
        targets = tokenizer(text_target=batch[c.target], truncation=True, max_length=options.max_target_length)
        rows["labels"] = targets["input_ids"]
        return rows

    return tokenize


def generation_metrics(tokenizer, raw: DatasetDict, options: TaskOptions):
    def compute_metrics(p: EvalPrediction) -> dict:
        predictions = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        predictions = np.where(predictions != -100, predictions, tokenizer.pad_token_id)
        references = np.where(p.label_ids != -100, p.label_ids, tokenizer.pad_token_id)
        predicted = [t.strip() for t in tokenizer.batch_decode(predictions, skip_special_tokens=True)]
        expected = [t.strip() for t in tokenizer.batch_decode(references, skip_special_tokens=True)]
        rouge = load_metric("rouge").compute(predictions=predicted, references=expected)
        bleu = load_metric("sacrebleu").compute(predictions=predicted, references=[[t] for t in expected])
        return {**rouge, "bleu": bleu["score"]}

    return compute_metrics


def generate_up_to_target_length(training_args: TrainingArguments, options: TaskOptions) -> None:
    if training_args.generation_max_length is None:
        training_args.generation_max_length = options.max_target_length


def columns(c: Columns) -> list[str]:
    return [c.text, c.target]


TEXT_TO_TEXT = Task(
    name="text-to-text",
    auto_class=AutoModelForSeq2SeqLM,
    columns=columns,
    check_data=lambda raw, options: options,  # any text is a source or a target
    tokenize=tokenize_source_target,
    # The model builds decoder_input_ids from the padded labels (shifted right).
    collator=lambda tokenizer, model: DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
    metrics=generation_metrics,
    baseline=no_baseline,
    headline_metric="rougeL",
    hub_task="text2text-generation",
    peft_task_type=TaskType.SEQ_2_SEQ_LM,
    trainer_class=FourfoldSeq2SeqTrainer,
    reports_perplexity=True,
    configure_training=generate_up_to_target_length,
)

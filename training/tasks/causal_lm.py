"""causal-lm: prompt -> completion, through `AutoModelForCausalLM`; the loss on the completion only; perplexity.

On an architecture whose record says `prompt_is_prefix` (the prefix LM) the prompt is the bidirectional prefix
(`prefix_mask`), so labels are -100 exactly where the prefix is:

    tokens       <s>  Q    Q    A    A   </s>
    labels      -100 -100 -100  A    A   </s>
    prefix_mask   1    1    1   0    0    0

A row longer than `max_length` loses the beginning of its prompt first, so the completion's start is kept.
Evaluation gathers the loss only (the logits of every token would fill memory): the report is its perplexity.
"""

from dataclasses import dataclass

import torch
from peft import TaskType
from transformers import AutoModelForCausalLM, PretrainedConfig

from fourfold.training.architectures import architecture_of
from fourfold.training.tasks.base import Task, TaskOptions, no_baseline, no_metrics
from fourfold.training.tasks.columns import Columns


def prompt_is_prefix(config: PretrainedConfig) -> bool:
    """The model reads the prompt as its bidirectional prefix (the architecture's record says so)."""
    architecture = architecture_of(getattr(config, "model_type", None))
    return architecture is not None and architecture.prompt_is_prefix


def tokenize_prompt_completion(tokenizer, config, options: TaskOptions):
    c, max_length, with_prefix = options.columns, options.max_length, prompt_is_prefix(config)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def tokenize(batch: dict) -> dict:
        rows = {"input_ids": [], "attention_mask": [], "labels": []} | ({"prefix_mask": []} if with_prefix else {})
        for prompt, completion in zip(batch[c.prompt], batch[c.completion], strict=True):
            prompt_ids = bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
            completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + eos
            # Keep the start of the completion when cutting: the prompt loses its beginning first.
            prompt_ids = prompt_ids[-max(1, max_length - len(completion_ids)) :]
            input_ids = (prompt_ids + completion_ids)[:max_length]
            prompt_length = len(prompt_ids)
            rows["input_ids"].append(input_ids)
            rows["attention_mask"].append([1] * len(input_ids))
            rows["labels"].append([-100] * prompt_length + input_ids[prompt_length:])
            if with_prefix:
                rows["prefix_mask"].append([1] * prompt_length + [0] * (len(input_ids) - prompt_length))
        return rows

    return tokenize


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


def columns(c: Columns) -> list[str]:
    return [c.prompt, c.completion]


CAUSAL_LM = Task(
    name="causal-lm",
    auto_class=AutoModelForCausalLM,
    columns=columns,
    check_data=lambda raw, options: options,  # any text is a prompt or a completion
    tokenize=tokenize_prompt_completion,
    collator=lambda tokenizer, model: PromptCompletionCollator(tokenizer.pad_token_id),
    metrics=no_metrics,
    baseline=no_baseline,
    headline_metric="perplexity",
    hub_task="text-generation",
    peft_task_type=TaskType.CAUSAL_LM,
    loss_only_evaluation=True,
    reports_perplexity=True,
    unfit_hint=" (a seq2seq model generates through --task text-to-text)",
)

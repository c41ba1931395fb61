"""Parameter-efficient fine-tuning (PEFT) for the four configurations.

`register_peft_defaults()` (in modeling/modeling_fourfold.py; `import fourfold` runs it) tells PEFT which modules to
adapt in a fourfold model when the user names none, keyed by `model_type` in PEFT's own tables (as PEFT ships them
for Llama or BERT), so `LoraConfig()` with no `target_modules` works on a fourfold checkpoint in any script, not
only in `fourfold finetune`:

    lora, dora (and PEFT's other LoRA-like tuners)   attention + MLP projections   q/k/v/o_proj, gate/up/down_proj
    ia3                                             keys, values, MLP output       k_proj, v_proj, down_proj

The task head (`classifier`, `score`, `qa_outputs`, and the encoder's `pooler`) is freshly initialised when a
pretrained checkpoint is loaded for a task, so it is trained in full through `modules_to_save` and saved with the
adapter. `build_peft_config` turns the command-line method into a PEFT config; `check_method` refuses, before any
training, a method that cannot work for the architecture and task. This module is training-only: `modeling/` never
imports peft.
"""

import peft
import peft.utils.constants as peft_constants
from peft import IA3Config, LoraConfig, PeftConfig, PrefixTuningConfig, PromptTuningConfig
from torch import nn
from transformers.pytorch_utils import Conv1D

from fourfold.modeling.modeling_fourfold import (
    PEFT_IA3_FEEDFORWARD_MODULES,
    PEFT_IA3_TARGET_MODULES,
    PEFT_TARGET_MODULES,
    register_peft_defaults,
)
from fourfold.training.architectures import BY_MODEL_TYPE, architecture_of
from fourfold.training.tasks import get_task

FOURFOLD_MODEL_TYPES = tuple(BY_MODEL_TYPE)
# PEFT's defaults for our model types: one definition, in modeling/ (the Hub code registers them too). In the
# seq2seq model the attention names also match the decoder's cross-attention projections, which is what we want;
# a non-gated MLP has no gate_proj, and PEFT skips absent names.
LORA_TARGET_MODULES = PEFT_TARGET_MODULES
IA3_TARGET_MODULES, IA3_FEEDFORWARD_MODULES = PEFT_IA3_TARGET_MODULES, PEFT_IA3_FEEDFORWARD_MODULES

METHODS = ("full", "lora", "dora", "ia3", "prompt-tuning", "prefix-tuning")
PROMPT_METHODS = ("prompt-tuning", "prefix-tuning")
MERGEABLE_METHODS = ("lora", "dora", "ia3")
# Modules trained in full beside the adapter: the task heads (fresh when a pretrained checkpoint gets a task).
HEAD_MODULES = ("classifier", "score", "qa_outputs", "pooler")


def head_modules(model: nn.Module) -> list[str]:
    """The task-head modules of `model` that have weights (trained in full and saved with the adapter); a mean
    pooler has none."""
    modules = [(name, getattr(model, name, None)) for name in HEAD_MODULES]
    return [
        name
        for name, module in modules
        if isinstance(module, nn.Module) and next(module.parameters(), None) is not None
    ]


def check_method(method: str, task: str, model_type: str, merge: bool = False) -> None:
    """Raises, naming the fix, when `method` cannot fine-tune `model_type` for `task`."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: choose one of {', '.join(METHODS)}.")
    if merge and method not in MERGEABLE_METHODS:
        raise ValueError(
            f"--merge folds an adapter into the weights, which {method!r} does not have (it learns virtual tokens or "
            f"trains the model itself): drop --merge, or use --method {' / '.join(MERGEABLE_METHODS)}."
        )
    architecture = architecture_of(model_type)
    # Prompt learning prepends virtual tokens or a key/value prefix, which the prefix LM's prefix_mask and the seq2seq
    # cache layout do not know about, and which the per-token and span heads would have to cut off again: each
    # record lists where it is supported (tested). Other models: as PEFT supports them.
    if method in PROMPT_METHODS and architecture is not None:
        if task not in architecture.prompt_tuning_tasks:
            where = "; ".join(
                f"{a.model_type}: {', '.join(a.prompt_tuning_tasks)}"
                for a in BY_MODEL_TYPE.values()
                if a.prompt_tuning_tasks
            )
            raise ValueError(
                f"--method {method} is not supported for {task} on a {model_type} model (supported: {where}). "
                "Use --method lora, dora or ia3, which work for every architecture and task."
            )


def build_peft_config(
    method: str,
    task: str,
    model: nn.Module,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    target_modules: list[str] | None = None,
    num_virtual_tokens: int = 8,
) -> PeftConfig:
    """The PEFT config for `method` ("lora", "dora", "ia3", "prompt-tuning", "prefix-tuning") on `task` (its
    record's `peft_task_type`).

    `target_modules=None` takes the defaults registered for the model type (`register_peft_defaults`); names that
    match no module of the model raise here, before training.
    """
    register_peft_defaults()
    task_type = get_task(task).peft_task_type  # None (multiple choice): the base PeftModel wraps the layers
    model_type = getattr(model.config, "model_type", None)
    if target_modules is not None:
        check_target_modules(model, target_modules)
    elif (
        method in ("lora", "dora", "ia3")
        and model_type not in peft_constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    ):
        raise ValueError(
            f"PEFT has no default target modules for model_type {model_type!r}: name them with --target_modules "
            "(e.g. the attention projections' names)."
        )
    modules_to_save = head_modules(model) or None
    if method in ("lora", "dora"):
        return LoraConfig(
            task_type=task_type,
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=target_modules,
            use_dora=method == "dora",
            modules_to_save=modules_to_save,
        )
    if method == "ia3":
        feedforward = None
        if target_modules is not None:  # IA3 needs to know which of the named modules are feed-forward layers
            feedforward = [m for m in target_modules if m in [*IA3_FEEDFORWARD_MODULES, "up_proj", "gate_proj"]]
        return IA3Config(
            task_type=task_type,
            target_modules=target_modules,
            feedforward_modules=feedforward,
            modules_to_save=modules_to_save,
        )
    if method == "prompt-tuning":
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=num_virtual_tokens)
    if method == "prefix-tuning":
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=num_virtual_tokens)
    raise ValueError(f"method={method!r} is not a PEFT method; PEFT methods: {', '.join(METHODS[1:])}.")


def check_target_modules(model: nn.Module, target_modules: list[str]) -> None:
    """Every name in `target_modules` must match (as a module-name suffix, PEFT's rule) at least one layer that the
    adapters can wrap (linear and embedding layers)."""
    adaptable = (nn.Linear, nn.Embedding, Conv1D)
    names = [name for name, module in model.named_modules() if isinstance(module, adaptable)]
    unmatched = [t for t in target_modules if not any(n == t or n.endswith(f".{t}") for n in names)]
    if unmatched:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ValueError(
            f"--target_modules {unmatched} match no linear or embedding layer of this model. Its layers are named "
            f"{', '.join(leaves)}; leave --target_modules empty for the defaults (attention and MLP projections)."
        )


def apply_peft(model: nn.Module, config: PeftConfig) -> peft.PeftModel:
    """Wraps `model` with the adapter of `config`; only the adapter (and `modules_to_save`) stay trainable."""
    return peft.get_peft_model(model, config)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, each tensor counted once (tied embeddings are one tensor)."""
    seen: set[int] = set()
    trainable = total = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return trainable, total

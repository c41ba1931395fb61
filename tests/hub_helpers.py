"""Tiny checkpoints as training writes them (model + tokenizer in a folder), for the pipeline, card and push tests.

The tokenizer is trained on a few sentences with fourfold's own `train_tokenizer`, so nothing comes from the Hub.
"""

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from fourfold.configuration import get_config
from fourfold.modeling import FourfoldDecoderForCausalLM
from fourfold.training.tokenizer import model_special_ids, train_tokenizer

TEXTS = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog met on the road",
    "the quick brown fox jumps over the lazy dog",
    "where did the cat sit ? the cat sat on the mat .",
] * 4

_TOKENIZERS: dict[str, PreTrainedTokenizerFast] = {}


def tokenizer_for(architecture: str) -> PreTrainedTokenizerFast:
    """A small trained tokenizer for `architecture` (cached: training is deterministic)."""
    if architecture not in _TOKENIZERS:
        _TOKENIZERS[architecture] = train_tokenizer(
            TEXTS, architecture, vocab_size=400, num_sentinels=4, min_frequency=1, model_max_length=64
        )
    return _TOKENIZERS[architecture]


def save_checkpoint(
    folder: str | Path, architecture: str, head: type[PreTrainedModel], seed: int = 0, **config_overrides
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Builds a tiny `head` model whose vocabulary follows the tokenizer, and saves both into `folder`."""
    tokenizer = tokenizer_for(architecture)
    config = get_config(f"{architecture}-tiny", **{**model_special_ids(tokenizer, architecture), **config_overrides})
    torch.manual_seed(seed)
    model = head(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def train_tiny_decoder(output_dir: str | Path, steps: int = 4) -> tuple[PreTrainedModel, PreTrainedTokenizerFast, Any]:
    """A few real Trainer steps on `TEXTS`, then what `fourfold pretrain` saves: model, tokenizer, metrics, trainer
    state, loss curve, and the card (through `FourfoldTrainer` and `write_model_card(run_arguments=...)`)."""
    from transformers import DataCollatorForLanguageModeling, TrainingArguments

    from fourfold.hub_cards import write_model_card
    from fourfold.training.pretrain import DataArguments, ModelArguments, ObjectiveArguments, plot_loss_curve
    from fourfold.training.trainer import FourfoldTrainer

    tokenizer = tokenizer_for("decoder")
    config = get_config("decoder-tiny", **model_special_ids(tokenizer, "decoder"))
    torch.manual_seed(0)
    model = FourfoldDecoderForCausalLM(config)
    rows = [{"input_ids": tokenizer(text).input_ids} for text in TEXTS]
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        lr_scheduler_type="cosine",
        warmup_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        use_cpu=True,
    )
    trainer = FourfoldTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        eval_dataset=rows[:4],
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
    )
    result = trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model()
    trainer.save_metrics("all", {**result.metrics, **metrics})
    trainer.save_state()
    plot_loss_curve(trainer.state.log_history, Path(output_dir) / "loss_curve.png")
    data_args = DataArguments(train_files=["data/tiny.jsonl"], block_size=32)
    run_arguments = (ModelArguments(architecture="decoder"), data_args, ObjectiveArguments(objective="clm"), args)
    write_model_card(output_dir, run_arguments=run_arguments)
    return model, tokenizer, trainer

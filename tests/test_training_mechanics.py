"""Training mechanics: gradient checkpointing changes nothing but memory, and gradient accumulation through the
transformers Trainer equals one big batch (the `num_items_in_batch` loss scaling), for the four configurations."""

import pytest
import torch
from conftest import tiny_config
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainingArguments, default_data_collator
from transformers.modeling_layers import GradientCheckpointingLayer

from fourfold import modeling

LM_CLASSES = {
    "encoder": modeling.FourfoldEncoderForMaskedLM,
    "decoder": modeling.FourfoldDecoderForCausalLM,
    "prefix-lm": modeling.FourfoldPrefixLMForCausalLM,
    "seq2seq": modeling.FourfoldSeq2SeqForConditionalGeneration,
}


def lm_batch(architecture: str, batch_size: int = 3, length: int = 8) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 101, (batch_size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, -3:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if architecture == "encoder":
        batch["labels"] = labels.masked_fill(torch.rand(labels.shape, generator=generator) < 0.5, -100)
    elif architecture == "prefix-lm":
        prefix_mask = torch.zeros_like(input_ids)
        prefix_mask[:, :3] = 1
        batch["prefix_mask"] = prefix_mask
        batch["labels"] = labels.masked_fill(prefix_mask == 1, -100)
    elif architecture == "seq2seq":
        batch["labels"] = torch.randint(3, 101, (batch_size, 5), generator=generator)
        batch["labels"][0, -2:] = -100
    return batch


def loss_and_gradients(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated:FutureWarning")
@pytest.mark.parametrize(
    ("enable", "use_reentrant"),
    [
        ("activation_checkpointing_enable", False),
        ("activation_checkpointing_enable", True),  # only positional inputs get gradients: encoder_hidden_states is
        ("gradient_checkpointing_enable", False),  # the older alias that PEFT and user code still call
    ],
)
def test_gradient_checkpointing_changes_nothing(architecture, enable, use_reentrant):
    torch.manual_seed(0)
    model = LM_CLASSES[architecture](tiny_config(architecture, hidden_dropout=0.0, attention_dropout=0.0)).train()
    batch = lm_batch(architecture)
    loss, gradients = loss_and_gradients(model, batch)

    getattr(model, enable)({"use_reentrant": use_reentrant})
    block_calls = []
    blocks = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    for block in blocks:  # transformers checkpoints `forward`, so hook a submodule, not the block itself
        block.self_attn.register_forward_hook(lambda *_: block_calls.append(1))
    checkpointed_loss, checkpointed_gradients = loss_and_gradients(model, batch)
    assert len(block_calls) == 2 * len(blocks)  # every block ran again during backward: checkpointing is on

    torch.testing.assert_close(checkpointed_loss, loss)
    assert checkpointed_gradients.keys() == gradients.keys()
    assert len(gradients) == len([p for p in model.parameters() if p.requires_grad])  # every weight learns
    for name, gradient in gradients.items():
        torch.testing.assert_close(checkpointed_gradients[name], gradient, msg=name)


# --------------------------------------------------------------------------------------------------------------------
# Gradient accumulation through the Trainer
# --------------------------------------------------------------------------------------------------------------------


class SequentialTrainer(Trainer):
    """Fixed data order, so that the two runs see the same examples in the same steps."""

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)


def accumulation_dataset(architecture: str, size: int = 8, length: int = 10) -> list[dict[str, torch.Tensor]]:
    """Examples with very different numbers of labelled tokens (1 to 10), so per-micro-batch mean losses would
    weight tokens differently from one big batch."""
    generator = torch.Generator().manual_seed(1)
    examples = []
    for i in range(size):
        input_ids = torch.randint(3, 101, (length,), generator=generator)
        labelled = [1, 2, 10, 9, 3, 4, 8, 7][i]  # unequal label counts per micro-batch
        target = input_ids if architecture == "decoder" else torch.randint(3, 101, (length,), generator=generator)
        labels = target.clone()
        labels[labelled:] = -100
        examples.append({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels})
    return examples


def train(architecture, initial_state, tmp_path, batch_size, accumulation, accepts_loss_kwargs=True):
    model = LM_CLASSES[architecture](tiny_config(architecture, hidden_dropout=0.0, attention_dropout=0.0))
    model.load_state_dict(initial_state)
    args = TrainingArguments(
        output_dir=str(tmp_path / f"run_{batch_size}x{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        report_to=[],
        max_steps=2,
        learning_rate=1e-3,
        optim="sgd",  # Adam's first steps are ~lr * sign(gradient), which would hide a loss-scaling error
        seed=0,
        dataloader_num_workers=0,
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        train_sampling_strategy="sequential",
    )
    trainer = SequentialTrainer(
        model=model,
        args=args,
        train_dataset=accumulation_dataset(architecture),
        data_collator=default_data_collator,
    )
    trainer.model_accepts_loss_kwargs = accepts_loss_kwargs
    trainer.train()
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize("architecture", ["decoder", "seq2seq"])
def test_gradient_accumulation_matches_one_big_batch(architecture, tmp_path):
    torch.manual_seed(0)
    initial = LM_CLASSES[architecture](tiny_config(architecture)).state_dict()
    accumulated = train(architecture, initial, tmp_path, batch_size=2, accumulation=2)
    big_batch = train(architecture, initial, tmp_path, batch_size=4, accumulation=1)
    moved = [name for name, tensor in big_batch.items() if not torch.equal(tensor, initial[name])]
    assert len(moved) > len(big_batch) // 2, "training did not change the weights"
    for name, tensor in big_batch.items():
        torch.testing.assert_close(accumulated[name], tensor, rtol=1e-4, atol=1e-6, msg=name)

    # The check has teeth: averaging each micro-batch separately (no num_items_in_batch) lands elsewhere.
    naive = train(architecture, initial, tmp_path, batch_size=2, accumulation=2, accepts_loss_kwargs=False)

    def largest_gap(run):
        return max((run[name] - tensor).abs().max().item() for name, tensor in big_batch.items())

    assert largest_gap(naive) > 100 * max(largest_gap(accumulated), 1e-8)

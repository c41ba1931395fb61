"""The prefix LM reads the prompt as its bidirectional prefix by one rule, whoever calls it.

Training and evaluation with prompt labels (-100 before the completion, as TRL's SFT prepares prompt -> completion
rows) derive the prefix from the labels, so the loss equals the one with an explicit `prefix_mask`; generation takes
the prompt; a forward with neither reads causally and says so once.
"""

import logging

import pytest
import torch
from conftest import tiny_config
from transformers.utils import logging as hf_logging

from fourfold.configuration import get_config
from fourfold.modeling import FourfoldPrefixLMForCausalLM
from fourfold.modeling.heads import prefix_from_labels


def test_prefix_from_labels_matches_hand_written_masks():
    labels = torch.tensor([[-100, -100, -100, 5, 6, -100], [-100, 7, 8, 9, -100, -100]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]])  # right and left padding
    assert prefix_from_labels(labels, attention_mask).tolist() == [[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]]
    packed = torch.tensor([[-100, -100, 5, 6, -100, -100, -100, 7]])
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]])  # two documents
    assert prefix_from_labels(packed, None, positions).tolist() == [[1, 1, 0, 0, 1, 1, 1, 0]]
    assert prefix_from_labels(torch.full((1, 3), -100)).tolist() == [[1, 1, 1]]  # nothing to predict: all prompt


@torch.no_grad()
def test_prompt_labels_give_the_explicit_prefix_loss():
    torch.manual_seed(0)
    model = FourfoldPrefixLMForCausalLM(tiny_config("prefix-lm")).eval()
    ids = torch.randint(3, 101, (2, 8))
    labels = ids.clone()
    labels[:, :4] = -100  # a four-token prompt
    prompt = torch.zeros_like(ids)
    prompt[:, :4] = 1
    derived = model(ids, labels=labels)
    explicit = model(ids, labels=labels, prefix_mask=prompt)
    causal = model(ids, labels=labels, prefix_mask=torch.zeros_like(ids))
    torch.testing.assert_close(derived.loss, explicit.loss)
    torch.testing.assert_close(derived.logits, explicit.logits)
    assert (derived.logits - causal.logits).abs().max() > 1e-3  # the prefix did matter


def test_trl_sft_prompt_completion_rows_train_with_the_prompt_as_prefix(tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    from fourfold.training.tokenizer import model_special_ids, train_tokenizer

    rows = [{"prompt": f"Call me {name}.", "completion": f" Some years ago {name} sailed."} for name in "ABCDEFGH"]
    tokenizer = train_tokenizer([r["prompt"] + r["completion"] for r in rows] * 20, "prefix-lm", vocab_size=200)
    torch.manual_seed(0)
    config = get_config("prefix-lm-tiny", **model_special_ids(tokenizer, "prefix-lm"))
    model = FourfoldPrefixLMForCausalLM(config)
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        report_to="none",
        save_strategy="no",
        completion_only_loss=True,
        bf16=False,  # SFTConfig defaults to bf16, which this CPU run cannot do
    )
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "prefix_mask" not in batch and (batch["labels"][:, :2] == -100).all()  # TRL knows nothing of prefixes
    model.eval()
    with torch.no_grad():
        prompt = prefix_from_labels(batch["labels"], batch["attention_mask"])
        assert prompt.sum() > 0
        derived = model(**batch).loss
        explicit = model(**batch, prefix_mask=prompt).loss
        causal = model(**batch, prefix_mask=torch.zeros_like(prompt)).loss
    torch.testing.assert_close(derived, explicit)
    assert not torch.isclose(derived, causal)
    model.train()
    assert torch.isfinite(torch.tensor(trainer.train().training_loss))


def test_a_forward_without_prefix_or_labels_reads_causally_and_says_so(caplog):
    torch.manual_seed(0)
    model = FourfoldPrefixLMForCausalLM(tiny_config("prefix-lm")).eval()
    ids = torch.randint(3, 101, (1, 6))
    logging.Logger.warning_once.cache_clear()
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING), torch.no_grad():
            plain = model(ids).logits
            model(ids)
    finally:
        hf_logging.disable_propagation()
    assert sum("neither prefix_mask nor labels" in r.getMessage() for r in caplog.records) == 1
    with torch.no_grad():
        torch.testing.assert_close(plain, model(ids, prefix_mask=torch.zeros_like(ids)).logits)

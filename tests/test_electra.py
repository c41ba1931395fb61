"""ELECTRA replaced-token detection: the corruption against a hand-worked example, the generator's shape, and a short
`fourfold pretrain --objective electra` run whose losses fall and whose discriminator loads as a plain encoder."""

import json

import pytest
import torch

from fourfold.configuration import get_config
from fourfold.modeling import FourfoldEncoderForSequenceClassification, FourfoldEncoderForTokenClassification
from fourfold.training.collators import MaskedLMCollator
from fourfold.training.data import BUNDLED_CORPUS
from fourfold.training.electra import ReplacedTokenDetection, generator_config, replace_tokens
from fourfold.training.pretrain import main
from fourfold.training.tokenizer import train_tokenizer


def test_replace_tokens_hand_worked():
    # [CLS]=1 the=10 cat=11 sat=12 on=13 mat=14 dog=15 [SEP]=2 [MASK]=4; "cat" and "on" are masked.
    input_ids = torch.tensor([[1, 10, 4, 12, 4, 10, 14, 2]])
    labels = torch.tensor([[-100, -100, 11, -100, 13, -100, -100, -100]])
    corrupted, replaced = replace_tokens(input_ids, labels, sampled=torch.tensor([15, 13]))  # dog; on (the original)
    assert corrupted.tolist() == [[1, 10, 15, 12, 13, 10, 14, 2]]
    assert replaced.int().tolist() == [[0, 0, 1, 0, 0, 0, 0, 0]]  # a sample equal to the original is not "replaced"


def test_generator_config_is_narrower_with_the_same_heads():
    config = get_config("encoder-tiny", hidden_size=128, num_attention_heads=4, num_key_value_heads=2)
    generator = generator_config(config, 0.5)
    assert (generator.hidden_size, generator.num_attention_heads, generator.head_dim) == (64, 2, config.head_dim)
    assert generator.num_hidden_layers == config.num_hidden_layers and generator.vocab_size == config.vocab_size
    assert generator.intermediate_size < config.intermediate_size
    with pytest.raises(ValueError, match="electra_generator_fraction"):
        generator_config(config, 0)


def test_discriminator_loss_counts_every_non_padding_token():
    config = get_config("encoder-tiny", vocab_size=50)
    model = ReplacedTokenDetection.from_config(config, discriminator_weight=1.0)
    torch.manual_seed(0)
    input_ids = torch.randint(5, 50, (2, 10))
    input_ids[1, 7:] = config.pad_token_id
    labels = torch.full_like(input_ids, -100)
    labels[:, 2] = input_ids[:, 2]
    output = model(input_ids=input_ids, labels=labels, attention_mask=(input_ids != config.pad_token_id).long())
    counted = input_ids != config.pad_token_id
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        output.logits[counted], output.replaced[counted].float()
    )
    torch.testing.assert_close(output.discriminator_loss, expected)
    torch.testing.assert_close(output.loss, output.generator_loss + expected)
    assert not output.replaced[labels == -100].any()


def test_electra_pretraining_learns_and_saves_a_plain_encoder(tmp_path):
    flags = [
        "--architecture", "encoder", "--objective", "electra", "--size", "tiny", "--block_size", "64",
        "--vocab_size", "1000", "--max_steps", "150", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
        "--warmup_steps", "5", "--logging_steps", "10", "--eval_strategy", "no", "--save_strategy", "no",
        "--report_to", "none", "--num_samples", "1", "--seed", "0", "--output_dir", str(tmp_path),
    ]  # fmt: skip
    assert main(flags) == 0
    results = json.loads((tmp_path / "all_results.json").read_text())
    # Generator MLM (~6.9 at init) + 50 x discriminator BCE (~0.69 at init; ~0.4, the replaced/original prior,
    # after 150 steps): both terms fall.
    assert results["eval_loss"] < results["eval_before_loss"] - 5
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "fourfold-encoder" and config["architectures"] == [
        "FourfoldEncoderForTokenClassification"
    ]
    discriminator = FourfoldEncoderForTokenClassification.from_pretrained(tmp_path)
    assert discriminator.config.num_labels == 1
    # The discriminator's encoder starts any encoder task; its 1-logit head is replaced, as `fourfold finetune` does.
    classifier = FourfoldEncoderForSequenceClassification.from_pretrained(
        tmp_path, num_labels=3, ignore_mismatched_sizes=True
    )
    torch.testing.assert_close(
        classifier.model.embed_tokens.weight, discriminator.model.embed_tokens.weight, rtol=0, atol=0
    )
    assert (tmp_path / "generator" / "model.safetensors").is_file() and (tmp_path / "tokenizer.json").is_file()


def test_discriminator_learns_to_detect_easy_replacements(monkeypatch):
    """With replacements drawn uniformly from the vocabulary (easy to spot: they seldom fit their context), the
    discriminator's loss falls below the entropy of the replaced/original prior, which no constant prediction can beat:
    it sees the tokens, and labels and positions line up. (With the generator's own samples a discriminator this small
    first learns only that prior; detection starts after ~1000 steps, more than a test should run.)"""
    texts = [json.loads(line)["text"] for line in BUNDLED_CORPUS.read_text().splitlines()][:8]
    tokenizer = train_tokenizer(texts, "encoder", vocab_size=1000)
    ids = [t for text in texts for t in tokenizer(text, verbose=False).input_ids]
    rows = [ids[i : i + 32] for i in range(0, len(ids) - 32, 32)]
    torch.manual_seed(0)
    config = get_config("encoder-tiny", vocab_size=len(tokenizer))
    model = ReplacedTokenDetection.from_config(config)
    monkeypatch.setattr(model, "sample", lambda logits: torch.randint(5, logits.shape[-1], logits.shape[:1]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    collator = MaskedLMCollator(tokenizer, seed=0)
    gaps = []
    for _ in range(250):
        batch = collator([{"input_ids": rows[i]} for i in torch.randint(0, len(rows), (16,)).tolist()])
        output = model(**batch)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        p = output.replaced.float().mean()
        prior_entropy = -(p * p.log() + (1 - p) * (1 - p).log())
        gaps.append((prior_entropy - output.discriminator_loss).item())
    assert sum(gaps[-20:]) / 20 > 0.03  # nats per token below the prior; a constant prediction cannot beat it (<= 0)

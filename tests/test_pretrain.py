"""`fourfold pretrain` end to end: a short run per architecture learns; bad input fails before training; packed
rows from our data and collators keep documents apart inside the models."""

import json

import pytest
import torch
from huggingface_hub import ModelCard

from fourfold.configuration import get_config
from fourfold.training.architectures import ARCHITECTURES
from fourfold.training.data import group_texts
from fourfold.training.pretrain import ObjectiveArguments, main
from fourfold.training.tokenizer import train_tokenizer

FAST = [
    "--size", "tiny", "--block_size", "64", "--vocab_size", "1000", "--max_steps", "150",
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32", "--learning_rate", "3e-3",
    "--warmup_steps", "5", "--logging_steps", "10", "--eval_strategy", "no", "--save_strategy", "no",
    "--report_to", "none", "--num_samples", "1", "--seed", "0",
]  # fmt: skip


def test_pretraining_lowers_eval_loss(architecture, tmp_path):
    assert main(["--architecture", architecture, "--output_dir", str(tmp_path), *FAST]) == 0
    results = json.loads((tmp_path / "all_results.json").read_text())
    # From ~ln(1000) = 6.9 at random init; 150 steps (a few seconds) on Moby-Dick take it down by 0.9 (masked LM) to
    # 2+ nats (the others); an untrained model's eval loss moves by hundredths.
    assert results["eval_loss"] < results["eval_before_loss"] - 0.5
    assert results["eval_perplexity"] == pytest.approx(torch.tensor(results["eval_loss"]).exp().item(), rel=1e-4)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "loss_curve.png", "samples.txt", "README.md"):
        assert (tmp_path / name).is_file(), name
    card = ModelCard.load(tmp_path / "README.md")  # the model card, filled from the run's own files
    assert f"fourfold-{architecture}" in card.data.tags and card.data.library_name == "transformers"
    config = json.loads((tmp_path / "config.json").read_text())
    tokenizer_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["vocab_size"] == 1000 and config["pad_token_id"] == 0 != config["eos_token_id"]
    assert tokenizer_config["pad_token"] != tokenizer_config["eos_token"]


def test_ul2_pretraining_lowers_eval_loss(tmp_path):
    flags = ["--architecture", "seq2seq", "--objective", "ul2", "--output_dir", str(tmp_path), *FAST]
    assert main(flags) == 0
    results = json.loads((tmp_path / "all_results.json").read_text())
    assert results["eval_loss"] < results["eval_before_loss"] - 1.0  # measured: 6.9 -> 5.4
    tokenizer_config = json.loads((tmp_path / "tokenizer.json").read_text())
    added = {t["content"] for t in tokenizer_config["added_tokens"]}
    assert {"[NLU]", "[NLG]", "[S2S]"} <= added  # the mode tokens travel with the model
    assert json.loads((tmp_path / "config.json").read_text())["vocab_size"] == 1003


def test_prefix_lm_ul2_pretraining_lowers_eval_loss(tmp_path):
    flags = ["--architecture", "prefix-lm", "--objective", "ul2", "--output_dir", str(tmp_path), *FAST]
    assert main([*flags, "--max_steps", "100"]) == 0
    results = json.loads((tmp_path / "all_results.json").read_text())
    assert results["eval_loss"] < results["eval_before_loss"] - 1.0  # measured: 7.0 -> 5.5 in 100 steps
    tokenizer_config = json.loads((tmp_path / "tokenizer.json").read_text())
    added = {t["content"] for t in tokenizer_config["added_tokens"]}
    assert {"[NLU]", "[NLG]", "[S2S]", "<extra_id_0>"} <= added  # mode tokens, and sentinels for span corruption
    assert json.loads((tmp_path / "config.json").read_text())["vocab_size"] == 1000 + 3 + 100


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--train_files", "nowhere.txt"], "does not exist"),
        (["--text_column", "body"], "--text_column 'body' is not a column"),
        (["--block_size", "4096"], "beyond the model's max_position_embeddings"),
        (["--objective", "mlm"], "does not fit the decoder architecture"),
        (["--objective", "electra"], "which trains with 'clm'"),
        (["--architecture", "seq2seq", "--objective", "ul2", "--packing", "false"], "use --packing true"),
        (["--architecture", "prefix-lm", "--objective", "ul2", "--packing", "false"], "use --packing true"),
        (
            ["--whole_word_mask", "true"],
            "whole_word_mask is an option of encoder electra, encoder mlm, not of decoder clm",
        ),
        (["--mlm_probability", "0.3"], "mlm_probability is an option of encoder"),
        (
            ["--architecture", "seq2seq", "--prefix_fraction", "0.5"],
            "prefix_fraction is an option of prefix-lm prefix-lm",
        ),
    ],
)
def test_bad_input_fails_before_training(flags, message, tmp_path):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        main(["--architecture", "decoder", "--output_dir", str(tmp_path / "out"), *FAST, *flags])
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_empty_file_and_tokenizer_without_sentinels(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        main(["--architecture", "decoder", "--output_dir", str(tmp_path), *FAST, "--train_files", str(empty)])
    decoder_tokenizer = train_tokenizer(["call me ishmael some years ago"] * 50, "decoder", vocab_size=300)
    decoder_tokenizer.save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match="sentinel tokens"):
        flags = ["--tokenizer_name", str(tmp_path / "tok")]
        main(["--architecture", "seq2seq", "--output_dir", str(tmp_path), *FAST, *flags])


def test_packed_rows_keep_documents_apart(architecture):
    """A packed row [doc 1, doc 2] gives doc 2 the same logits as doc 2 alone: nothing crosses the boundary."""
    texts = ["call me ishmael some years ago never mind how long"] * 50
    tokenizer = train_tokenizer(texts, architecture, vocab_size=200, num_sentinels=10)
    torch.manual_seed(0)
    documents = [torch.randint(20, len(tokenizer), (n,)).tolist() for n in (9, 12)]
    row = {k: v[0] for k, v in group_texts({"input_ids": documents}, block_size=21, packing=True).items()}
    record = ARCHITECTURES[architecture]
    arguments = ObjectiveArguments(prefix_fraction=0.3 if architecture == "prefix-lm" else None)
    batch = record.objective().collator(tokenizer, arguments, 0, 21)([row])
    config = get_config(f"{architecture}-tiny", vocab_size=len(tokenizer), use_cache=False)
    model = record.pretraining_head(config)
    packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    if architecture == "seq2seq":
        start = (batch["position_ids"][0] == 0).nonzero()[1].item()
        end = (batch["position_ids"][0] == 0).nonzero()[2].item()
        decoder_start = (batch["decoder_position_ids"][0] == 0).nonzero()[1].item()
        decoder_end = (batch["decoder_position_ids"][0] == 0).nonzero()[2].item()
        alone = model(
            input_ids=batch["input_ids"][:, start:end],
            decoder_input_ids=batch["decoder_input_ids"][:, decoder_start:decoder_end],
        ).logits
        torch.testing.assert_close(packed[:, decoder_start:decoder_end], alone)
        return
    alone_inputs = {"input_ids": batch["input_ids"][:, 9:]}
    if architecture == "prefix-lm":
        alone_inputs["prefix_mask"] = batch["prefix_mask"][:, 9:]
    torch.testing.assert_close(packed[:, 9:], model(**alone_inputs).logits)

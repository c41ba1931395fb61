"""`fourfold pretrain` reads the same documents from every source: local files in memory or streamed (`--streaming`),
and `--dataset_name` given a local folder (written by `save_to_disk`, or of JSON-lines files). The same documents and
seed give the same held-out rows, so the untrained model's eval loss must match to float precision across sources:
a wrong split, a dropped column or a different cut would move it. Bad combinations fail before training."""

import json

import datasets
import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file

from fourfold.training.architectures import ARCHITECTURES
from fourfold.training.data import BUNDLED_CORPUS, load_text_dataset
from fourfold.training.pretrain import main
from fourfold.training.tokenizer import train_tokenizer

STEPS = 40
FAST = [
    "--size", "tiny", "--block_size", "64", "--vocab_size", "1000", "--max_steps", str(STEPS),
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32", "--learning_rate", "3e-3",
    "--warmup_steps", "5", "--logging_steps", "10", "--eval_strategy", "no", "--save_strategy", "no",
    "--report_to", "none", "--num_samples", "1", "--seed", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Moby-Dick's chapters as 28 training and 3 held-out documents, written as JSON lines, as text (one chapter a
    line), as a folder `load_dataset` reads by name, and as a `save_to_disk` DatasetDict."""
    root = tmp_path_factory.mktemp("corpus")
    documents = [json.loads(line)["text"] for line in BUNDLED_CORPUS.read_text().splitlines()]
    splits = {"train": documents[:-3], "validation": documents[-3:]}
    (root / "jsonl").mkdir()
    (root / "txt").mkdir()
    for split, texts in splits.items():
        (root / "jsonl" / f"{split}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        (root / "txt" / f"{split}.txt").write_text("".join(" ".join(t.split()) + "\n" for t in texts))
    disk = datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": t}) for s, t in splits.items()})
    disk.save_to_disk(root / "disk")
    # WordPiece and Unigram training break ties differently from run to run (BPE does not): runs that must match
    # load one tokenizer instead of training their own.
    for architecture in ("encoder", "seq2seq"):
        train_tokenizer(splits["train"], architecture, vocab_size=1000).save_pretrained(root / architecture)
    return {
        "encoder tokenizer": ["--tokenizer_name", str(root / "encoder")],
        "seq2seq tokenizer": ["--tokenizer_name", str(root / "seq2seq")],
        **{
            kind: [
                "--train_files",
                str(root / kind / f"train.{kind}"),
                "--validation_files",
                str(root / kind / f"validation.{kind}"),
            ]
            for kind in ("jsonl", "txt")
        },
        "jsonl folder": ["--dataset_name", str(root / "jsonl")],
        "save_to_disk": ["--dataset_name", str(root / "disk")],
    }


def pretrain(output_dir, architecture: str, *flags: str) -> dict:
    assert main(["--architecture", architecture, "--output_dir", str(output_dir), *FAST, *flags]) == 0
    return json.loads((output_dir / "all_results.json").read_text())


@pytest.mark.parametrize(
    "architecture, source", [("decoder", "jsonl"), ("encoder", "txt"), ("seq2seq", "jsonl")]
)  # causal LM, masked LM (a text stream, whose columns are unknown until read), span corruption
def test_streaming_trains_on_the_same_rows_as_in_memory(architecture, source, corpus, tmp_path):
    data = [*corpus[source], *corpus.get(f"{architecture} tokenizer", [])]  # the decoder trains its own on the stream
    in_memory = pretrain(tmp_path / "memory", architecture, *data)
    out = tmp_path / "stream"
    flags = ["--streaming", "true", "--save_strategy", "steps", "--save_steps", str(STEPS // 2)]
    streamed = pretrain(out, architecture, *data, *flags)
    # The same held-out rows and the same initial weights: the same loss, to float precision (~6.9 = ln 1000).
    assert streamed["eval_before_loss"] == pytest.approx(in_memory["eval_before_loss"], rel=1e-5)
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == STEPS
    # Measured after 40 steps: decoder 6.9 -> 5.95, encoder 6.9 -> 6.1, seq2seq 6.9 -> 5.0, streamed or not; the rows
    # come in file order rather than shuffled, so the two runs end near each other, not equal.
    assert streamed["eval_loss"] < streamed["eval_before_loss"] - 0.3
    assert streamed["eval_loss"] == pytest.approx(in_memory["eval_loss"], abs=0.3)
    # Checkpoints are written as the stream goes, and the final model is the last one, reloadable.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{STEPS // 2}", f"checkpoint-{STEPS}"]
    last = load_file(out / f"checkpoint-{STEPS}" / "model.safetensors")
    model = ARCHITECTURES[architecture].pretraining_head.from_pretrained(out)
    for name, tensor in model.state_dict().items():
        if name in last:  # tied weights are stored once
            torch.testing.assert_close(tensor, last[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("source", ["save_to_disk", "jsonl folder"])
def test_dataset_name_reads_a_local_folder(source, corpus, tmp_path):
    """A folder's own train/validation splits are used (not 5% held out of train); in memory, Trainer shuffles the
    same rows with the same seed, so the whole run repeats the one on the files exactly."""
    files = pretrain(tmp_path / "files", "decoder", *corpus["jsonl"])
    folder = pretrain(tmp_path / "folder", "decoder", *corpus[source])
    assert folder["eval_before_loss"] == pytest.approx(files["eval_before_loss"], rel=1e-5)
    assert folder["eval_loss"] == pytest.approx(files["eval_loss"], rel=1e-4)
    assert folder["eval_loss"] < folder["eval_before_loss"] - 0.5
    streamed = pretrain(tmp_path / "stream", "decoder", *corpus[source], "--streaming", "true")
    assert streamed["eval_before_loss"] == pytest.approx(files["eval_before_loss"], rel=1e-5)


@pytest.mark.parametrize(
    "source, flags, message",
    [
        ("jsonl", ["--streaming", "true", "--max_steps", "-1"], "--streaming true without --max_steps"),
        ("jsonl", ["--streaming", "true", "--shuffle_buffer_size", "0"], "--shuffle_buffer_size 0 must be >= 1"),
        ("txt", ["--streaming", "true", "--text_column", "body"], r"--text_column 'body' is not a column .*\['text'\]"),
        (None, ["--streaming", "true"], "cannot hold out a validation split — pass --validation_files"),
        ("short validation", ["--streaming", "true"], "validation split has fewer than --block_size 64 tokens"),
        ("missing folder", [], "--dataset_name '.*no-such-folder' could not be loaded"),
    ],
)
def test_bad_data_sources_fail_before_training(source, flags, message, corpus, tmp_path):
    if source == "short validation":
        (tmp_path / "short.txt").write_text("Call me Ishmael.\n")
        source_flags = [*corpus["txt"][:2], "--validation_files", str(tmp_path / "short.txt")]
    elif source == "missing folder":
        source_flags = ["--dataset_name", str(tmp_path / "no-such-folder")]
    else:
        source_flags = corpus[source] if source else []
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        main(["--architecture", "decoder", "--output_dir", str(tmp_path / "out"), *FAST, *source_flags, *flags])
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_unknown_hub_dataset_offline_names_the_flag(monkeypatch):
    """Under HF_HUB_OFFLINE=1 a Hub name that is not cached fails at once, with the flag to fix in the message."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="--dataset_name 'fourfold-nobody/no-such-corpus' could not be loaded"):
        load_text_dataset(dataset_name="fourfold-nobody/no-such-corpus")

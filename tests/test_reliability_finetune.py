"""`fourfold finetune` keeps the command line's contract (tests/test_reliability.py holds pretrain's): a bad input is
one line on stderr, `fourfold finetune: error: <what> — <fix>`, exit status 2, before any model is trained; another
run's output folder is refused unless overwritten (then nothing of it is left) or resumed (from the newest complete
checkpoint); a loss that is not a number is never a silent result.

Tiny throughout: 40 rows of the bundled spam data (or a handful written here), encoder-tiny, one or two steps.
"""

import json
from pathlib import Path

import pytest
from test_reliability import assert_one_line_error, run_cli

SPAM = Path(__file__).resolve().parents[1] / "training" / "data" / "spam_assassin.csv"
FAST = ["--max_steps", "1", "--max_length", "32", "--vocab_size", "300", "--report_to", "none"]
FAST += ["--disable_tqdm", "true", "--save_strategy", "no", "--per_device_train_batch_size", "8"]
FAST += ["--dataloader_pin_memory", "false"]


def finetune(tmp_path: Path, *flags: str, data: tuple[str, ...] | None = None) -> list[str]:
    """`fourfold finetune` on 40 spam rows (or `data`, flags naming the files) into tmp_path/out."""
    data = data or ("--train_files", str(SPAM), "--max_train_samples", "40", "--max_eval_samples", "10")
    return ["finetune", *data, "--output_dir", str(tmp_path / "out"), *FAST, *flags]


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def jsonl(path: Path, rows: list[dict]) -> str:
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


# --------------------------------------------------------------------------------------------------------------------
# Bad flags: one line, exit 2, before the tokenizer is trained
# --------------------------------------------------------------------------------------------------------------------

BAD_FLAGS = [
    (["--max_length", "0"], "--max_length 0 must be >= 1"),
    (["--max_length", "4096"], "--max_length 4096 is beyond the model's max_position_embeddings=256"),
    (["--task", "text-to-text", "--model_name_or_path", "seq2seq-tiny", "--max_target_length", "999"], "beyond"),
    (["--max_target_length", "0"], "--max_target_length 0 must be >= 1"),
    (["--max_train_samples", "0"], "--max_train_samples 0 must be >= 1"),
    (["--validation_split_percentage", "100"], "--validation_split_percentage 100 must be in (0, 100)"),
    (["--num_labels", "0"], "--num_labels 0 must be >= 1"),
    (["--vocab_size", "0"], "--vocab_size 0 must be > 0"),
    (["--label_separator="], "--label_separator is empty"),
    (["--method", "lora", "--lora_r", "0"], "--lora_r 0 must be >= 1"),
    (["--method", "lora", "--lora_alpha", "0"], "--lora_alpha 0 must be > 0"),
    (["--method", "lora", "--lora_dropout", "1"], "--lora_dropout 1 must be in [0, 1)"),
    (["--method", "prompt-tuning", "--num_virtual_tokens", "0"], "--num_virtual_tokens 0 must be >= 1"),
    (["--method", "lorra"], "--method 'lorra' is not a method fourfold knows (did you mean 'lora'?)"),
    (["--task", "seq-classification"], "(did you mean 'sequence-classification'?)"),
    (["--problem_type", "regresion"], "(did you mean 'regression'?)"),
    (["--problem_type", "regression", "--task", "causal-lm"], "needs --task sequence-classification"),
    (["--task", "question-answering", "--doc_stride", "-1"], "--doc_stride -1: the overlap"),
    (["--task", "question-answering", "--doc_stride", "32", "--max_length", "16"], "must be smaller than"),
    (["--learning_rate", "0"], "--learning_rate 0 must be > 0"),
    (["--max_grad_norm", "-1"], "--max_grad_norm -1 must be >= 0"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0 must be >= 1"),
    (["--max_steps", "0"], "--max_steps 0 must be > 0, or -1"),
    (["--max_steps", "-3", "--num_train_epochs", "0"], "--max_steps -3 must be > 0"),
    (["--max_steps", "-1", "--num_train_epochs", "0"], "trains nothing"),
    (["--learning_rat", "0.1"], "unknown argument '--learning_rat' (did you mean '--learning_rate'?)"),
    (["--model_name_or_path", "encoder-tiyn"], "(did you mean 'encoder-tiny'?)"),
    (["--model_name_or_path", "decoder-tiny", "--task", "question-answering"], "cannot do question-answering"),
    (["--resume_from_checkpoint", "last"], "has no complete checkpoint"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_FLAGS, ids=[m for _, m in BAD_FLAGS])
def test_bad_finetune_flags_are_one_line_errors(flags, message, tmp_path, capsys):
    status, _, err = run_cli(finetune(tmp_path, *flags), capsys)
    assert_one_line_error(status, err, "finetune", message)
    assert not (tmp_path / "out" / "tokenizer.json").exists()  # refused before anything was built or written


# --------------------------------------------------------------------------------------------------------------------
# Bad data: labels only the validation split has, an all-ignored loss, empty cells, too few rows
# --------------------------------------------------------------------------------------------------------------------


def test_a_label_only_the_validation_data_has(tmp_path, capsys):
    train = write(tmp_path / "train.csv", "text,label\nfree money,spam\nhello friend,ham\nwin now,spam\nlunch,ham\n")
    validation = write(tmp_path / "validation.csv", "text,label\ncheap pills,spam\nbuy now,eggs\nnotes,ham\n")
    files = ("--train_files", train, "--validation_files", validation)
    status, _, err = run_cli(finetune(tmp_path, data=files), capsys)
    assert_one_line_error(status, err, "finetune", "label(s) 'eggs'", "only in the validation split", "add training")

    tags = [{"words": ["Ahab", "sails"], "tags": ["B-PER", "O"]}] * 4
    files = ("--train_files", jsonl(tmp_path / "t.jsonl", tags))
    files += ("--validation_files", jsonl(tmp_path / "v.jsonl", [{"words": ["Boston"], "tags": ["B-LOC"]}]))
    flags = ["--task", "token-classification", "--text_column", "words", "--label_column", "tags"]
    status, _, err = run_cli(finetune(tmp_path, *flags, data=files), capsys)
    assert_one_line_error(status, err, "finetune", "tag(s) 'B-LOC' of column 'tags' appear only in the validation")

    files = ("--train_files", jsonl(tmp_path / "r.jsonl", [*tags, {"words": ["a", "b", "c"], "tags": ["O"]}]))
    status, _, err = run_cli(finetune(tmp_path, *flags, data=files), capsys)
    assert_one_line_error(status, err, "finetune", "holds 3 words but 1 tags")

    single = write(tmp_path / "single.csv", "text,label\na b,spam\nc d,spam\ne f,spam\n")
    status, _, err = run_cli(finetune(tmp_path, data=("--train_files", single)), capsys)
    assert_one_line_error(status, err, "finetune", "has a single class", "at least two")


def test_a_loss_with_nothing_to_learn_is_refused(tmp_path, capsys):
    rows = [{"prompt": "repeat: whale sea ->", "completion": " whale sea"}] * 8
    files = ("--train_files", jsonl(tmp_path / "pc.jsonl", rows))
    flags = ["--task", "causal-lm", "--model_name_or_path", "decoder-tiny", "--max_length", "1"]
    status, _, err = run_cli(finetune(tmp_path, *flags, data=files), capsys)
    assert_one_line_error(status, err, "finetune", "every label of the train split is ignored (-100)", "--max_length")
    assert not (tmp_path / "out" / "results.json").exists()


def test_bad_data_files(tmp_path, capsys):
    holes = write(tmp_path / "holes.csv", "prompt,completion\nrepeat a,b\nrepeat c,\nrepeat d,e\nrepeat f,g\n")
    flags = ["--task", "causal-lm", "--model_name_or_path", "decoder-tiny", "--validation_files", holes]
    status, _, err = run_cli(finetune(tmp_path, *flags, data=("--train_files", holes)), capsys)
    assert_one_line_error(status, err, "finetune", "no text in column 'completion' at row(s) [1]")

    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text,label\nCafé au lait,ham\nplaît,spam\n".encode("latin-1"))
    status, _, err = run_cli(finetune(tmp_path, data=("--train_files", str(latin1))), capsys)
    assert_one_line_error(status, err, "finetune", "is not UTF-8 text", "iconv")

    status, _, err = run_cli(finetune(tmp_path, "--label_column", "lable"), capsys)
    assert_one_line_error(status, err, "finetune", "no column ['lable']", "(did you mean 'label'?)")

    header = write(tmp_path / "header.csv", "text,label\n")
    status, _, err = run_cli(finetune(tmp_path, "--validation_files", header), capsys)
    assert_one_line_error(status, err, "finetune", "a split has no rows", "a CSV header is not a row")

    one = write(tmp_path / "one.csv", "text,label\nfree money,spam\n")
    status, _, err = run_cli(finetune(tmp_path, data=("--train_files", one)), capsys)
    assert_one_line_error(status, err, "finetune", "has 1 document(s): holding out 20% leaves none to train on")

    status, _, err = run_cli(finetune(tmp_path, "--model_name_or_path", str(tmp_path / "nowhere")), capsys)
    assert_one_line_error(status, err, "finetune", "is neither a checkpoint folder nor a loadable Hub model")


# --------------------------------------------------------------------------------------------------------------------
# No lost work: another run's folder, resuming, and no NaN result
# --------------------------------------------------------------------------------------------------------------------


def tokenizer_pipeline(folder) -> dict:
    """A saved tokenizer.json without its runtime settings: vocabulary, normalizer, pre-tokenizer, template."""
    saved = json.loads((folder / "tokenizer.json").read_text())
    return {key: value for key, value in saved.items() if key not in ("truncation", "padding")}


def test_output_dir_is_refused_resumed_then_replaced(tmp_path, capsys):
    out = tmp_path / "out"
    checkpoints = ["--save_strategy", "steps", "--save_steps", "1", "--max_steps", "2"]
    assert run_cli(finetune(tmp_path, *checkpoints), capsys)[0] == 0
    weights = (out / "model.safetensors").read_bytes()
    assert json.loads((out / "results.json").read_text())["loss_is_finite"] is True
    assert not (out / ".saving").exists()  # the atomic save's temporary folder is gone

    status, _, err = run_cli(finetune(tmp_path), capsys)
    assert_one_line_error(status, err, "finetune", "holds another run", "--overwrite_output_dir true")
    assert (out / "model.safetensors").read_bytes() == weights  # untouched

    # The last save was killed half-way: resuming skips (and names) it, and continues from the one before.
    (out / "checkpoint-2" / "optimizer.pt").unlink()
    status, printed, err = run_cli(finetune(tmp_path, *checkpoints, "--resume_from_checkpoint", "last"), capsys)
    assert status == 0, err
    assert "Skipping incomplete checkpoints" in printed and "checkpoint-2 (no optimizer.pt)" in printed
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2  # step 2 trained again, from checkpoint-1
    # A fresh preset resumes with the tokenizer its run trained (a new one could number the tokens otherwise).
    # (Compared without `truncation` / `padding`: the backend's last call settings, which transformers writes as it
    # finds them; they differ between the run that trained the tokenizer and the one that loaded it.)
    assert tokenizer_pipeline(out) == tokenizer_pipeline(out / "checkpoint-1")

    (out / "notes.txt").write_text("mine")  # not something a run writes: kept
    status, _, err = run_cli(finetune(tmp_path, "--overwrite_output_dir", "true", "--seed", "7"), capsys)
    assert status == 0, err
    assert not list(out.glob("checkpoint-*"))  # nothing of the earlier run is left beside the new one
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.safetensors").read_bytes() != weights


def test_a_loss_that_is_not_a_number_is_marked_and_fails(tmp_path, capsys):
    # A rate of 1e30 without clipping overflows the weights after one step: the evaluation loss is NaN.
    flags = ["--learning_rate", "1e30", "--max_grad_norm", "0", "--evaluate_before", "false"]
    status, _, err = run_cli(finetune(tmp_path, *flags), capsys)
    assert status == 1
    assert "fourfold finetune: warning: eval_loss is nan" in err and "--learning_rate" in err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["loss_is_finite"] is False and "eval_loss is nan" in results["warnings"][0]
    assert (tmp_path / "out" / "model.safetensors").is_file()  # the work is kept, for a look

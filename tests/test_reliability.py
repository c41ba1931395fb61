"""No silent wrong result, no lost work, and no traceback for a user's mistake (the command line's contract).

Each bad input is run through `fourfold <command>` as a user would and must give one line on stderr,
`fourfold <command>: error: <what> — <fix>`, exit status 2, and nothing written; the output folder of another run is
refused unless overwritten or resumed; resuming skips incomplete checkpoints; the final save is atomic.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from fourfold.training import cli
from fourfold.training.errors import UsageError
from fourfold.training.outputs import (
    latest_complete_checkpoint,
    prepare_output_dir,
    remove_earlier_run,
    resolve_resume,
    save_atomically,
)

CORPUS = Path(__file__).resolve().parents[1] / "training" / "data" / "moby_dick.jsonl"
PROGRESS = re.compile(r"examples/s\]|it/s\]|\d+%\|")  # datasets' and tqdm's progress bars, also on stderr
FAST = ["--max_steps", "2", "--vocab_size", "300", "--block_size", "32", "--eval_strategy", "no", "--report_to", "none"]
FAST += ["--per_device_train_batch_size", "4", "--num_samples", "0", "--save_strategy", "no"]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status: int, err: str, command: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.search(line)]
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"fourfold {command}: error: "), err
    assert " — " in lines[0] and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def pretrain(tmp_path: Path, *flags: str) -> list[str]:
    return ["pretrain", "--train_files", str(CORPUS), "--output_dir", str(tmp_path / "out"), *FAST, *flags]


# --------------------------------------------------------------------------------------------------------------------
# Bad flags: one line, exit 2, before anything is built
# --------------------------------------------------------------------------------------------------------------------

BAD_PRETRAIN_FLAGS = [
    (["--mlm_probability", "0", "--architecture", "encoder"], "--mlm_probability 0 must be in (0, 1)"),
    (["--architecture", "prefix-lm", "--prefix_fraction", "1.5"], "--prefix_fraction 1.5 must be in (0, 1)"),
    (["--architecture", "seq2seq", "--noise_density", "0"], "--noise_density 0 must be in (0, 1)"),
    (["--architecture", "seq2seq", "--mean_noise_span_length", "0"], "--mean_noise_span_length 0 must be >= 1"),
    (["--block_size", "0"], "--block_size 0 is too short"),
    (["--block_size", "4096"], "beyond the model's max_position_embeddings=256"),
    (["--max_steps", "0"], "--max_steps 0 must be > 0, or -1"),
    (["--max_steps", "-3", "--num_train_epochs", "0"], "--max_steps -3 must be > 0"),
    (["--max_steps", "-1", "--num_train_epochs", "0"], "trains nothing"),
    (["--config_overrides", '{"hidden_sise": 32}'], "has no option 'hidden_sise' (did you mean 'hidden_size'?)"),
    (["--config_overrides", '{"vocab_size": 50}'], "sets 'vocab_size', which follows the tokenizer"),
    (["--config_overrides", "{hidden_size: 32}"], "--config_overrides '{hidden_size: 32}' is not JSON"),
    (["--config_overrides", '{"hidden_size": 0}'], "--config_overrides"),
    (["--config_overrides", '{"num_key_value_heads": 0}'], "num_key_value_heads"),
    (["--config_overrides", '{"hidden_act": "nope"}'], "hidden_act"),
    (["--architecture", "decodr"], "did you mean 'decoder'?"),
    (["--objective", "mlm"], "does not fit the decoder architecture"),
    (["--learning_rat", "0.1"], "unknown argument '--learning_rat' (did you mean '--learning_rate'?)"),
    (["--max_steps", "many"], "invalid int value"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_PRETRAIN_FLAGS, ids=[m for _, m in BAD_PRETRAIN_FLAGS])
def test_bad_pretrain_flags_are_one_line_errors(flags, message, tmp_path, capsys):
    status, _, err = run_cli(pretrain(tmp_path, *flags), capsys)
    assert_one_line_error(status, err, "pretrain", message)
    assert not (tmp_path / "out" / "tokenizer.json").exists()  # refused before the tokenizer was trained


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    with pytest.raises(UsageError, match="--block_size 0"):
        cli.main(["--debug", *pretrain(tmp_path, "--block_size", "0")])
    monkeypatch.setenv("FOURFOLD_DEBUG", "1")
    with pytest.raises(UsageError):
        cli.main(pretrain(tmp_path, "--block_size", "0"))


def test_unknown_command(capsys):
    status, _, err = run_cli(["pretrian"], capsys)
    assert status == 2 and "unknown command 'pretrian'" in err


# --------------------------------------------------------------------------------------------------------------------
# Bad files and recipes
# --------------------------------------------------------------------------------------------------------------------


def test_bad_data_files(tmp_path, capsys):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Café au lait, s'il vous plaît.\n".encode("latin-1") * 20)
    status, _, err = run_cli(pretrain(tmp_path, "--train_files", str(latin1)), capsys)
    assert_one_line_error(status, err, "pretrain", "is not UTF-8 text (byte 3", "iconv")

    binary = tmp_path / "weights.txt"
    binary.write_bytes(bytes(range(256)) * 8)
    status, _, err = run_cli(pretrain(tmp_path, "--train_files", str(binary)), capsys)
    assert_one_line_error(status, err, "pretrain", "is not UTF-8 text")

    holes = tmp_path / "holes.csv"
    holes.write_text("id,text\n1,Call me Ishmael.\n2,\n3,Some years ago.\n4,never mind how long\n5,\n")
    status, _, err = run_cli(pretrain(tmp_path, "--train_files", str(holes), "--validation_files", str(holes)), capsys)
    assert_one_line_error(status, err, "pretrain", "no text in column 'text' at row(s) [1, 4]")

    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text\nCall me Ishmael.\nSome years ago, never mind how long\n")
    status, _, err = run_cli(pretrain(tmp_path, "--train_files", str(ragged)), capsys)
    assert_one_line_error(status, err, "pretrain", "could not be read as csv", "Expected 1 fields in line 3, saw 2")

    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"text": "Call me Ishmael."}) + "\n")
    status, _, err = run_cli(pretrain(tmp_path, "--train_files", str(one)), capsys)
    assert_one_line_error(status, err, "pretrain", "has 1 document(s): holding out 5% leaves none to train on")


def test_bad_recipes(tmp_path, capsys):
    listed = tmp_path / "list.yaml"
    listed.write_text("- max_steps: 3\n- block_size: 64\n")
    status, _, err = run_cli(["pretrain", str(listed)], capsys)
    assert_one_line_error(status, err, "pretrain", "holds a list, not a mapping")
    broken = tmp_path / "broken.yaml"
    broken.write_text("max_steps: [3\n")
    status, _, err = run_cli(["pretrain", str(broken)], capsys)
    assert_one_line_error(status, err, "pretrain", "is not valid YAML")
    typo = tmp_path / "typo.yaml"
    typo.write_text("max_step: 3\n")
    status, _, err = run_cli(["pretrain", str(typo)], capsys)
    assert_one_line_error(status, err, "pretrain", "unknown argument '--max_step' (did you mean '--max_steps'?)")


def test_config_overrides_flag_merges_into_the_recipes(tmp_path):
    from fourfold.training.pretrain import parse_arguments

    recipe = Path(__file__).resolve().parents[1] / "configuration" / "pretrain-decoder-tiny.yaml"
    model_args, *_ = parse_arguments([str(recipe), "--config_overrides", '{"num_hidden_layers": 3}'])
    merged = json.loads(model_args.config_overrides)
    in_recipe = yaml.safe_load(recipe.read_text())["config_overrides"]
    assert in_recipe["num_hidden_layers"] != 3 and len(in_recipe) > 1  # the flag changes one key, the rest stay
    assert merged == {**in_recipe, "num_hidden_layers": 3}


# --------------------------------------------------------------------------------------------------------------------
# No lost work: the output folder, resuming, atomic saves
# --------------------------------------------------------------------------------------------------------------------


def test_output_dir_of_another_run_is_refused_then_replaced(tmp_path, capsys):
    assert run_cli(pretrain(tmp_path), capsys)[0] == 0
    out = tmp_path / "out"
    (out / "loss_curve.png").write_bytes(b"the earlier run's")
    weights = (out / "model.safetensors").read_bytes()
    status, _, err = run_cli(pretrain(tmp_path), capsys)
    assert_one_line_error(status, err, "pretrain", "holds another run", "--overwrite_output_dir true")
    assert (out / "model.safetensors").read_bytes() == weights  # untouched

    (out / "notes.txt").write_text("mine")  # not something a run writes: kept
    status, _, _ = run_cli(pretrain(tmp_path, "--overwrite_output_dir", "true", "--seed", "7"), capsys)
    assert status == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "loss_curve.png").read_bytes() != b"the earlier run's"
    assert (out / "model.safetensors").read_bytes() != weights


def test_overwriting_removes_every_file_and_folder_a_run_writes_and_nothing_else(tmp_path):
    written = ["model.safetensors", "config.json", "README.md", "modules.json", "1_Pooling/config.json", "merged/x"]
    for name in [*written, "notes.txt", "data/corpus.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("earlier")
    remove_earlier_run(tmp_path)
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == [
        "data",
        "data/corpus.txt",
        "notes.txt",
    ]


def fake_checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"w")
    if complete:
        for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt"):
            (checkpoint / name).write_text("{}")
    return checkpoint


def test_resume_last_skips_and_names_incomplete_checkpoints(tmp_path, capsys):
    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 20, complete=False)  # killed while saving
    assert latest_complete_checkpoint(tmp_path).name == "checkpoint-10"
    assert "checkpoint-20 (no trainer_state.json, optimizer.pt, scheduler.pt)" in capsys.readouterr().out
    assert resolve_resume(tmp_path, "true") == resolve_resume(tmp_path, "last") == str(tmp_path / "checkpoint-10")
    with pytest.raises(UsageError, match=r"is incomplete .* resume from an earlier complete one \(checkpoint-10\)"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-20"))
    assert prepare_output_dir(str(tmp_path), overwrite=False, resume="last") == str(tmp_path / "checkpoint-10")
    shutil.rmtree(tmp_path / "checkpoint-10")
    with pytest.raises(UsageError, match="no complete checkpoint; incomplete: checkpoint-20"):
        resolve_resume(tmp_path, "last")


def test_resume_last_continues_a_real_run(tmp_path, capsys):
    flags = ["--save_strategy", "steps", "--save_steps", "2", "--max_steps", "4"]
    assert run_cli(pretrain(tmp_path, *flags), capsys)[0] == 0
    out = tmp_path / "out"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    (out / "checkpoint-4" / "optimizer.pt").unlink()  # as if the last save had been killed
    status, captured, err = run_cli(pretrain(tmp_path, *flags, "--resume_from_checkpoint", "last"), capsys)
    assert status == 0, err
    assert "Skipping incomplete checkpoints" in captured and "checkpoint-4" in captured


def test_failed_final_save_leaves_the_earlier_model_whole(tmp_path):
    (tmp_path / "config.json").write_text('{"old": true}')
    (tmp_path / "model.safetensors").write_bytes(b"old weights")

    def full_disk(folder: str) -> None:
        Path(folder).mkdir()
        (Path(folder) / "config.json").write_text('{"new": true}')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        save_atomically(full_disk, str(tmp_path))
    assert (tmp_path / "config.json").read_text() == '{"old": true}'
    assert (tmp_path / "model.safetensors").read_bytes() == b"old weights"
    assert not (tmp_path / ".saving").exists()

    def good(folder: str) -> None:
        Path(folder).mkdir()
        (Path(folder) / "config.json").write_text('{"new": true}')
        torch.save({}, Path(folder) / "extra.bin")

    save_atomically(good, str(tmp_path))
    assert (tmp_path / "config.json").read_text() == '{"new": true}' and (tmp_path / "extra.bin").is_file()


def test_pretrain_final_save_never_lets_the_trainer_upload_the_temporary_folder(tmp_path):
    """transformers' `Trainer.save_model(folder)` pushes `folder` under --push_to_hub unless `_internal_call=True`;
    the atomic save writes to a temporary folder first, so it must pass it (pretrain pushes once the files are in
    place)."""
    import inspect

    from transformers import Trainer

    from fourfold.training.architectures import _save_with_trainer

    assert "_internal_call" in inspect.signature(Trainer.save_model).parameters  # the flag we rely on still exists
    calls = []

    class RecordingTrainer:
        args = type("Args", (), {"output_dir": str(tmp_path)})

        def is_world_process_zero(self) -> bool:
            return True

        def save_model(self, folder: str, _internal_call: bool = False) -> None:
            calls.append((Path(folder).name, _internal_call))
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "model.safetensors").write_bytes(b"w")

    _save_with_trainer(RecordingTrainer(), None, None)
    assert calls == [(".saving", True)] and (tmp_path / "model.safetensors").is_file()

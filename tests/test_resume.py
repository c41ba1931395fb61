"""Resuming after a hard kill: SIGKILL a pretraining run after its first checkpoint, resume it, and get the same final
weights as a run that was never interrupted (same seed). Prefix LM, so the random prefix splits must repeat too."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

FLAGS = [
    "--architecture", "prefix-lm", "--size", "tiny", "--block_size", "32", "--vocab_size", "500",
    "--max_steps", "60", "--per_device_train_batch_size", "4", "--learning_rate", "3e-3", "--warmup_steps", "0",
    "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "10", "--logging_steps", "10",
    "--report_to", "none", "--num_samples", "0", "--seed", "7", "--disable_tqdm", "true",
]  # fmt: skip


def pretrain(output_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "fourfold.training.pretrain", "--output_dir", str(output_dir), *FLAGS, *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    uninterrupted = pretrain(tmp_path / "uninterrupted")
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read()

    killed_dir = tmp_path / "killed"
    killed = pretrain(killed_dir)
    first_checkpoint = killed_dir / "checkpoint-10" / "trainer_state.json"  # written last: the checkpoint is whole
    deadline = time.monotonic() + 300
    while not first_checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed_dir / "model.safetensors").exists()
    checkpoints = sorted(killed_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    latest = next(c for c in reversed(checkpoints) if (c / "trainer_state.json").exists())
    assert latest.name != "checkpoint-60"

    resumed = pretrain(killed_dir, "--resume_from_checkpoint", str(latest))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    expected = load_file(tmp_path / "uninterrupted" / "model.safetensors")
    actual = load_file(killed_dir / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)

"""Data parallelism: two CPU processes (gloo, via torchrun) with half the per-device batch follow the same loss
trajectory, and end with the same weights, as one process with the whole batch.

Why they should: accelerate shards each global batch of the one sampler between the processes (process r takes the
r-th per-device slice of the same shuffled order), Trainer normalises each process's summed loss by the global count
of target tokens (`average_tokens_across_devices`) and DistributedDataParallel averages the gradients. The models'
losses are sums over tokens divided by that count, so the two runs differ only in the order of float additions (~1e-7).
A control run with a 1% different learning rate shows that the tolerances catch a far smaller difference in the
updates than the regression this guards against (processes training unsynchronised replicas: `pretrain.py`, step 7).
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed
from safetensors.torch import load_file

FLAGS = [
    "--architecture", "decoder", "--size", "tiny", "--block_size", "32", "--vocab_size", "500", "--max_steps", "8",
    "--warmup_steps", "0", "--logging_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
    "--report_to", "none", "--num_samples", "0", "--seed", "3", "--disable_tqdm", "true", "--use_cpu", "true",
    "--dataloader_pin_memory", "false",
]  # fmt: skip
LEARNING_RATE = 3e-3
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-5  # observed: 1e-7 relative in the losses, 1.4e-7 absolute in the weights


def losses(output_dir) -> list[float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def same_run(a, b) -> bool:
    """Same loss at every step (relative `LOSS_RTOL`) and the same final weights (absolute `WEIGHT_ATOL`)."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    weight_gap = max((wa[name] - wb[name]).abs().max().item() for name in wa)
    return losses(a) == pytest.approx(losses(b), rel=LOSS_RTOL, abs=0) and weight_gap < WEIGHT_ATOL


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one = [sys.executable, "-m", "fourfold.training.pretrain"]
    # --standalone: torchrun picks a free port, so concurrent test sessions do not collide.
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *one[1:]]
    runs = {"one": (one, 8, LEARNING_RATE), "two": (two, 4, LEARNING_RATE), "control": (one, 8, LEARNING_RATE * 0.99)}
    for name, (command, per_device_batch, learning_rate) in runs.items():
        flags = ["--per_device_train_batch_size", str(per_device_batch), "--learning_rate", str(learning_rate)]
        flags += ["--output_dir", str(tmp_path / name)]
        result = subprocess.run([*command, *FLAGS, *flags], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
    single = losses(tmp_path / "one")
    assert len(single) == len(losses(tmp_path / "two")) == 8
    assert single[-1] < single[0] - 0.3  # the runs learn, so matching trajectories is not matching constants
    assert same_run(tmp_path / "two", tmp_path / "one")
    # The control shares the first step's loss (same data and weights) and then parts by 1e-4 relative and more.
    assert losses(tmp_path / "control")[0] == pytest.approx(single[0], rel=LOSS_RTOL)
    assert not same_run(tmp_path / "control", tmp_path / "one")

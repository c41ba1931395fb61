"""FSDP2 (torch's `fully_shard` on every `FourfoldBlock`, gloo, two CPU processes) follows the same loss trajectory
and ends with the same weights as one process on the whole batch (see fsdp_script.py), as DDP does (test_ddp.py).

The Trainer does not shard on CPU (accelerate refuses `--cpu --use_fsdp`), so the parity is checked with plain torch;
on GPUs `accelerate launch --use_fsdp --fsdp_transformer_layer_cls_to_wrap FourfoldBlock` wraps the same blocks.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed

SCRIPT = Path(__file__).with_name("fsdp_script.py")
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-5


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")
def test_fsdp2_on_two_processes_matches_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one = [sys.executable, str(SCRIPT), str(tmp_path / "one")]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT)]
    for command in (one, [*two, str(tmp_path / "two")]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    single, sharded = (json.loads((tmp_path / run / "losses.json").read_text()) for run in ("one", "two"))
    assert single[-1] < single[0]  # it learns, so equal trajectories are not equal constants
    assert sharded == pytest.approx(single, rel=LOSS_RTOL, abs=0)
    expected, got = (torch.load(tmp_path / run / "weights.pt") for run in ("one", "two"))
    assert expected.keys() == got.keys()
    assert max((expected[name] - got[name]).abs().max().item() for name in expected) < WEIGHT_ATOL

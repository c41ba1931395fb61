"""Model FLOPs utilisation: the FLOPs of a training step against the FLOP/s of a large matmul timed in the same run.

FLOPs follow PaLM: per training step 6 * N * B * T + 12 * d * T_q * T_k * B per attention layer, N = the weights of
every matmul (linear layers and the LM head, each shared weight once; not embedding lookups), not discounted for
causal masking; masked LM: the prediction head counted at the masked positions only, on both sides. `matmul_peak`
times a 2048 (CPU) or 8192 (CUDA) square matmul; `recompute_mfu` re-judges every MFU row against the run's best peak.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from inputs import Task
from settings import Settings, Size
from targets import judge, target_for
from timing import Samples, sync, timed_sample
from torch import nn
from transformers.pytorch_utils import Conv1D

FLOPS_FORMULA = (
    "6 * N_matmul * B * T + 12 * d * T^2 * B per attention layer (seq2seq: encoder self, decoder self and cross); "
    "N_matmul = weights of every linear layer and the LM head (masked LM: the prediction head counted at the masked "
    "15% of positions only)"
)


def matmul_parameters(model: nn.Module) -> int:
    """Weights of every matmul (linear layers and the LM head; each shared weight once), not embedding lookups."""
    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, (nn.Linear, Conv1D)) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            total += module.weight.numel()
    return total


def training_flops(model: nn.Module, task: Task, size: Size) -> float:
    """PaLM-style model FLOPs of one training step (see the module docstring)."""
    tokens = size.batch * size.seq  # seq2seq: every weight sees `seq` tokens (source = target length)
    layers = size.layers * (3 if task.encoder_decoder else 1)  # seq2seq: encoder self, decoder self and cross
    weights = matmul_parameters(model)
    if task.head_fraction < 1:  # the prediction head is needed at the masked positions only, whichever side computes
        head = model.lm_head if hasattr(model, "lm_head") else model.cls
        weights -= (1 - task.head_fraction) * matmul_parameters(head)
    return 6 * weights * tokens + 12 * size.hidden * size.seq**2 * size.batch * layers


def matmul_peak(settings: Settings, repeats: int = 5) -> dict:
    """Achieved FLOP/s of a large square matmul (2048 on CPU, 8192 on CUDA) at this run's threads and dtype."""
    n = 8192 if settings.device.startswith("cuda") else 2048
    dtype = torch.bfloat16 if settings.bf16 else torch.float32
    a = torch.randn(n, n, device=settings.device, dtype=dtype)
    b = torch.randn(n, n, device=settings.device, dtype=dtype)
    samples = Samples()
    calls = None
    for _ in range(2):  # warm-up, then calibrate
        sync(settings)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(settings)
        calls = max(1, math.ceil(settings.min_sample_s / (time.perf_counter() - start)))
    for _ in range(repeats):
        timed_sample(lambda: torch.mm(a, b), calls, settings, samples)
    return {
        "n": n,
        "dtype": str(dtype).removeprefix("torch."),
        "flops_per_s": 2 * n**3 / samples.median,
        "foreign_load_max": max(samples.foreign_load),
        "discarded": samples.discarded,
    }


def utilisation(flops_per_step: float, seconds_per_step: float, peak_flops: float) -> float:
    """MFU: achieved model FLOP/s over the matmul peak."""
    return flops_per_step / seconds_per_step / peak_flops


def recompute_mfu(result: dict) -> None:
    """MFU rows against the best matmul peak of the run (a later, quieter measurement may beat the first)."""
    peak = result["matmul_peak"]["flops_per_s"]
    device = result["settings"]["device"]
    for size_name, block in result["sizes"].items():
        train = {row["pair"]: row for row in block["rows"] if row["metric"] == "train"}
        for row in block["rows"]:
            if row["metric"] == "mfu":
                for side in ("ours", "peer"):
                    seconds = statistics.median(train[row["pair"]][f"{side}_seconds"])
                    row[side] = utilisation(row[f"{side}_flops_per_step"], seconds, peak)
                judge(row, target_for(row["pair"], "mfu", size_name, device))

"""Peak training memory: each model in a fresh subprocess, so that nothing another model left behind counts.

`bench_memory` runs `bench.py --memory-worker SPEC` once per side of each comparison; the worker (`worker`) builds the
model and its inputs, then measures the growth over two training steps: VmHWM on CPU (reset through
/proc/self/clear_refs after building, so it covers activations, gradients and AdamW state), `max_memory_allocated`
on CUDA (`peak_training_memory`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from inputs import inputs_for, make_batch
from pairs import PAIRS, build_model
from rows import result_row
from settings import Settings, Size, size_for
from targets import target_for
from timing import train_step_fn

BENCH_SCRIPT = Path(__file__).with_name("bench.py")  # the entry point, which hands `--memory-worker` to `worker`


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_training_memory(pair_name: str, side: str, size: Size, settings: Settings) -> dict:
    """Peak memory growth (MiB) over two training steps of one model, measured in this process: VmHWM on CPU (reset
    through /proc/self/clear_refs after building), `max_memory_allocated` on CUDA. Run it in a fresh process."""
    pair = PAIRS[pair_name]
    model = build_model(pair.ours if side == "ours" else pair.peer, size, settings)
    step = train_step_fn(model, inputs_for(model, make_batch(pair.task, size, settings)), settings)
    if settings.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        step()
        torch.cuda.synchronize()
        return {"peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20, "method": "cuda max_memory_allocated"}
    base = _proc_status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        method = "VmHWM - VmRSS after build (clear_refs)"
    except OSError:
        method = "VmHWM - VmRSS after build (no clear_refs: may include import peak)"
    step()
    step()
    return {"peak_mib": (_proc_status_kib("VmHWM") - base) / 1024, "method": method}


def worker(spec: str) -> dict:
    """The subprocess's side: `spec` is the JSON `memory_in_subprocess` passes (pair, side, size name, settings)."""
    spec = json.loads(spec)
    settings = Settings(**spec["settings"])
    if settings.threads:
        torch.set_num_threads(settings.threads)
    return peak_training_memory(spec["pair"], spec["side"], size_for(spec["size"], settings), settings)


def memory_in_subprocess(pair_name: str, side: str, size_name: str, settings: Settings) -> dict:
    """One side's peak training memory, measured by a fresh `bench.py --memory-worker` process."""
    spec = json.dumps({"pair": pair_name, "side": side, "size": size_name, "settings": asdict(settings)})
    result = subprocess.run(
        [sys.executable, str(BENCH_SCRIPT), "--memory-worker", spec], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        return {"peak_mib": float("nan"), "method": "failed", "error": result.stderr[-2000:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_memory(pair_names: list[str], size_name: str, settings: Settings, log: Callable[[str], None]) -> list[dict]:
    """A peak-training-memory row per comparison: both sides, each in its own subprocess."""
    rows = []
    for name in pair_names:
        log(f"  {name}: peak training memory (subprocesses)")
        mem = {side: memory_in_subprocess(name, side, size_name, settings) for side in ("ours", "peer")}
        rows.append(
            result_row(
                name,
                "memory",
                "MiB",
                mem["ours"]["peak_mib"],
                mem["peer"]["peak_mib"],
                target=target_for(name, "memory", size_name, settings.device),
                lower_is_better=True,
                method=mem["ours"]["method"],
                errors={k: v.get("error") for k, v in mem.items()},
            )
        )
    return rows

"""Timing: ours and the peer alternate sample by sample, and every sample is checked for other processes' CPU load.

Fairness: one process, the same threads, dtype, attention implementation and inputs on both sides. `interleaved`
warms both up, picks one per-sample call count for both, then alternates ours, peer, ours, ... `repeats` times; each
side's median is reported. `timed_sample` measures the CPU time other processes took meanwhile (/proc/stat minus our
own) and retakes a sample taken under more than `--max-foreign-load` cores (up to `--retries` times, counted).
The timed callables: `train_step_fn` (forward with labels, backward, AdamW step), `forward_fn` (inference, no cache),
`generate_fn` (greedy with the KV cache, exactly `new_tokens` new tokens).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from inputs import Task
from settings import Settings, Size
from torch import nn
from transformers import GenerationConfig


def cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process), or None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    busy = sum(fields[:3]) + sum(fields[5:8])  # user nice system . . irq softirq steal
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def sync(settings: Settings) -> None:
    """Waits for queued GPU work, so that wall-clock time covers it."""
    if settings.device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Samples:
    """Timed samples of one side of one metric (seconds per call), and what was discarded."""

    seconds: list[float] = field(default_factory=list)
    foreign_load: list[float] = field(default_factory=list)
    discarded: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed_sample(fn: Callable[[], object], calls: int, settings: Settings, samples: Samples) -> None:
    """Time `calls` calls of `fn` as one sample; retake it while other processes used too much CPU meanwhile."""
    for attempt in range(settings.retries + 1):
        before = cpu_seconds()
        sync(settings)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(settings)
        wall = time.perf_counter() - start
        after = cpu_seconds()
        foreign = 0.0
        if before is not None and after is not None:
            foreign = max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall)
        if foreign <= settings.max_foreign_load or attempt == settings.retries:
            samples.seconds.append(wall / calls)
            samples.foreign_load.append(round(foreign, 3))
            return
        samples.discarded += 1


def interleaved(ours: Callable[[], object], peer: Callable[[], object], settings: Settings) -> tuple[Samples, Samples]:
    """Warm both up, pick a per-sample call count, then alternate ours, peer, ours, peer, ... `repeats` times."""
    calls = {}
    for side, fn in (("ours", ours), ("peer", peer)):
        for _ in range(2):  # warm-up (lazy initialisation, allocator, optimizer state), then calibrate
            sync(settings)
            start = time.perf_counter()
            fn()
            sync(settings)
            seconds = time.perf_counter() - start
            calls[side] = max(1, math.ceil(settings.min_sample_s / max(seconds, 1e-6)))
            if seconds > 2 * settings.min_sample_s:  # a long call needs one warm-up only: saves minutes
                break
    n = max(calls.values())  # the same count on both sides
    result = (Samples(), Samples())
    for _ in range(settings.repeats):
        timed_sample(ours, n, settings, result[0])
        timed_sample(peer, n, settings, result[1])
    return result


def autocast(settings: Settings, enabled: bool | None = None):
    """bf16 autocast on the run's device, on with `--bf16` unless `enabled` says otherwise."""
    device_type = "cuda" if settings.device.startswith("cuda") else "cpu"
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=settings.bf16 if enabled is None else enabled)


def train_step_fn(model: nn.Module, inputs: dict, settings: Settings, bf16: bool | None = None) -> Callable[[], None]:
    """One training step: forward with labels, backward, AdamW step."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_model = torch.compile(model) if settings.compile else model

    def step():
        with autocast(settings, bf16):
            loss = step_model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def forward_fn(model: nn.Module, inputs: dict, settings: Settings, bf16: bool | None = None) -> Callable[[], None]:
    """One inference forward (`eval()`, `inference_mode`)."""
    model.eval()
    forward_model = torch.compile(model) if settings.compile else model

    def forward():
        with torch.inference_mode(), autocast(settings, bf16):
            forward_model(**inputs)

    return forward


def generate_fn(model: nn.Module, task: Task, size: Size, batch: int, settings: Settings) -> Callable[[], None]:
    """Greedy generation of exactly `size.new_tokens` tokens with the KV cache (eos suppressed by min_new_tokens)."""
    model.eval()
    config = model.config
    model.generation_config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=size.new_tokens,
        min_new_tokens=size.new_tokens,
        use_cache=True,
        pad_token_id=config.pad_token_id,
        eos_token_id=config.eos_token_id,
        bos_token_id=getattr(config, "bos_token_id", None),
        decoder_start_token_id=getattr(config, "decoder_start_token_id", None),
    )
    generator = torch.Generator().manual_seed(settings.seed + 1)
    prompt = torch.randint(3, size.vocab, (batch, size.prompt), generator=generator).to(settings.device)
    attention_mask = torch.ones_like(prompt)
    # A decoder-only model returns the prompt too; an encoder-decoder the decoder start token.
    not_new = 1 if task.encoder_decoder else size.prompt

    def generate():
        with torch.inference_mode(), autocast(settings):
            out = model.generate(prompt, attention_mask=attention_mask)
        produced = out.shape[1] - not_new
        if produced != size.new_tokens:
            raise RuntimeError(f"{type(model).__name__} generated {produced} tokens, expected {size.new_tokens}")

    return generate

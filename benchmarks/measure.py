"""The timed measurements of one size: each comparison's metrics, bf16 vs fp32, and torch.compile.

`bench_pair` builds one comparison's two models and runs its metrics, ours and the peer interleaved: training step
(and its MFU), inference forward, generation at each of the size's batch sizes. `bench_bf16` and `bench_compile`
compare our llama-like decoder with itself (bf16 autocast vs fp32; compiled vs eager), and `bench_compile` also
counts the graph breaks of our models' training forward. Every row's target comes from `targets.target_for`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict

import torch
from inputs import CAUSAL, forward_inputs, inputs_for, make_batch
from mfu import training_flops, utilisation
from pairs import PAIRS, Pair, build_model, ours_llama
from rows import count_row, result_row
from settings import Settings, Size
from targets import GRAPH_BREAK_MODELS, target_for
from timing import forward_fn, generate_fn, interleaved, train_step_fn
from torch import nn

Log = Callable[[str], None]


def bench_pair(pair: Pair, size: Size, size_name: str, settings: Settings, peak: float, log: Log) -> list[dict]:
    """All metrics of one comparison, ours and peer interleaved."""
    rows = []
    ours, peer = build_model(pair.ours, size, settings), build_model(pair.peer, size, settings)
    batch = make_batch(pair.task, size, settings)
    info = {
        "ours_class": type(ours).__name__,
        "peer_class": type(peer).__name__,
        "ours_params": sum(p.numel() for p in ours.parameters()),
        "peer_params": sum(p.numel() for p in peer.parameters()),
        "ours_attn": ours.config._attn_implementation,
        "peer_attn": peer.config._attn_implementation,
        "load_avg_1m": os.getloadavg()[0],
    }
    if "train" in settings.metrics:
        rows += bench_training(pair, (ours, peer), batch, size, size_name, settings, peak, info, log)
    if "forward" in settings.metrics:
        rows += bench_forward(pair, (ours, peer), batch, size, size_name, settings, log)
    if pair.generates and "generate" in settings.metrics:
        rows += bench_generation(pair, (ours, peer), size, size_name, settings, log)
    return rows


def bench_training(
    pair: Pair,
    models: tuple[nn.Module, nn.Module],
    batch: dict,
    size: Size,
    size_name: str,
    settings: Settings,
    peak: float,
    info: dict,
    log: Log,
) -> list[dict]:
    """The training step in tokens/s, and each side's MFU from the same timings (`info` joins the training row)."""
    log(f"  {pair.name}: training step")
    o, p = interleaved(*(train_step_fn(model, inputs_for(model, batch), settings) for model in models), settings)
    target = target_for(pair.name, "train", size_name, settings.device)
    train = result_row(pair.name, "train", "tokens/s", o, p, tokens=size.batch * size.seq, target=target, **info)
    flops = [training_flops(model, pair.task, size) for model in models]
    mfu = result_row(
        pair.name,
        "mfu",
        "fraction of matmul peak",
        utilisation(flops[0], o.median, peak),
        utilisation(flops[1], p.median, peak),
        target=target_for(pair.name, "mfu", size_name, settings.device),
        ours_flops_per_step=flops[0],
        peer_flops_per_step=flops[1],
    )
    return [train, mfu]


def bench_forward(
    pair: Pair,
    models: tuple[nn.Module, nn.Module],
    batch: dict,
    size: Size,
    size_name: str,
    settings: Settings,
    log: Log,
) -> list[dict]:
    """The inference forward (no cache) in tokens/s."""
    log(f"  {pair.name}: inference forward")
    o, p = interleaved(*(forward_fn(m, forward_inputs(pair.task, batch, m), settings) for m in models), settings)
    target = target_for(pair.name, "forward", size_name, settings.device)
    return [result_row(pair.name, "forward", "tokens/s", o, p, tokens=size.batch * size.seq, target=target)]


def bench_generation(
    pair: Pair, models: tuple[nn.Module, nn.Module], size: Size, size_name: str, settings: Settings, log: Log
) -> list[dict]:
    """Greedy generation with the KV cache at each of the size's batch sizes, in new tokens/s."""
    rows = []
    for gen_batch in size.gen_batches:
        log(f"  {pair.name}: generation, batch {gen_batch}")
        o, p = interleaved(*(generate_fn(m, pair.task, size, gen_batch, settings) for m in models), settings)
        metric, tokens = f"generate_b{gen_batch}", gen_batch * size.new_tokens
        target = target_for(pair.name, metric, size_name, settings.device)
        rows.append(result_row(pair.name, metric, "new tokens/s", o, p, tokens=tokens, target=target))
    return rows


def _bf16_supported(settings: Settings) -> bool:
    if settings.device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def bench_bf16(size: Size, size_name: str, settings: Settings, log: Log) -> list[dict]:
    """Ours (the llama-like decoder) under bf16 autocast vs fp32: 'ours' is bf16, 'peer' is fp32."""
    if not _bf16_supported(settings):
        return []
    log("  bf16 autocast vs fp32 (ours, llama-like decoder)")
    model = build_model(ours_llama, size, settings)
    reference = build_model(ours_llama, size, settings)
    batch = make_batch(CAUSAL, size, settings)
    tokens = size.batch * size.seq
    o, p = interleaved(
        train_step_fn(model, batch, settings, bf16=True),
        train_step_fn(reference, batch, settings, bf16=False),
        settings,
    )
    target = target_for("bf16-vs-fp32", "train", size_name, settings.device)
    rows = [result_row("bf16-vs-fp32", "train", "tokens/s", o, p, tokens=tokens, target=target)]
    fwd = forward_inputs(CAUSAL, batch, model)
    o, p = interleaved(
        forward_fn(model, fwd, settings, bf16=True), forward_fn(reference, fwd, settings, bf16=False), settings
    )
    target = target_for("bf16-vs-fp32", "forward", size_name, settings.device)
    rows.append(result_row("bf16-vs-fp32", "forward", "tokens/s", o, p, tokens=tokens, target=target))
    return rows


def count_graph_breaks(model: nn.Module, inputs: dict) -> int | str:
    """torch._dynamo.explain over a training-mode forward with labels (tracing only, no code generation)."""
    torch._dynamo.reset()
    try:
        explanation = torch._dynamo.explain(model)(**inputs)
    except Exception as error:  # report, do not abort the benchmark
        return f"error: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    finally:
        torch._dynamo.reset()
    return explanation.graph_break_count


def bench_compile(size: Size, size_name: str, settings: Settings, log: Log) -> list[dict]:
    """Graph breaks of our four models, and our compiled vs eager training step (both unless --no-graph-breaks)."""
    if not settings.graph_breaks:
        return []
    rows = []
    for name in GRAPH_BREAK_MODELS:
        pair = PAIRS[name]
        log(f"  graph breaks: {pair.ours.__name__}")
        model = build_model(pair.ours, size, settings).train()
        breaks = count_graph_breaks(model, make_batch(pair.task, size, settings))
        comparison = f"compile-{name}"
        target = target_for(comparison, "graph_breaks", size_name, settings.device)
        rows.append(count_row(comparison, "graph_breaks", breaks, target))
    log("  torch.compile vs eager (ours, llama-like decoder, training step)")
    eager_settings = Settings(**{**asdict(settings), "compile": False})
    settings = Settings(**{**asdict(settings), "compile": True})
    compiled, eager = build_model(ours_llama, size, settings), build_model(ours_llama, size, settings)
    batch = make_batch(CAUSAL, size, settings)
    o, p = interleaved(train_step_fn(compiled, batch, settings), train_step_fn(eager, batch, eager_settings), settings)
    target = target_for("compile-vs-eager", "train", size_name, settings.device)
    rows.append(result_row("compile-vs-eager", "train", "tokens/s", o, p, tokens=size.batch * size.seq, target=target))
    return rows

"""fourfold against transformers' own models, at identical sizes, in one interleaved run.

    python benchmarks/bench.py --size all --repeats 5 --out benchmarks/results

Six comparisons (pairs.py), each a fourfold model configured as close to its peer as the options allow, timed
interleaved (timing.py): training step and its MFU (mfu.py), inference forward, generation with the KV cache
(measure.py), peak training memory in subprocesses (memory.py); plus bf16 vs fp32, torch.compile, and packing vs
padding (packing.py). Targets: targets.py; tables and the README: report.py. This file: parse, run, write.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import transformers

# The sibling modules import each other by name, as when this file runs as a script; also when it is imported.
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from measure import bench_bf16, bench_compile, bench_pair  # noqa: E402
from memory import bench_memory, worker  # noqa: E402
from mfu import FLOPS_FORMULA, matmul_peak, recompute_mfu  # noqa: E402
from packing import bench_packing  # noqa: E402
from pairs import PAIRS  # noqa: E402
from report import update_readme, write_outputs  # noqa: E402
from settings import SIZES, Settings, size_for  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", choices=[*SIZES, "all"], default="tiny", help="all = tiny and small")
    parser.add_argument("--repeats", type=int, default=5, help="timed samples per side (median reported)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for results.{json,md}")
    parser.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=None, help="a subset of the comparisons")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--bf16", action="store_true", help="run every comparison under bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides; add compiled vs eager")
    parser.add_argument("--attn", default="sdpa", help="attn_implementation on both sides (sdpa, flex_attention, ...)")
    parser.add_argument("--max-foreign-load", type=float, default=0.3, help="cores others may use during a sample")
    parser.add_argument("--retries", type=int, default=3, help="retakes of a sample taken under foreign load")
    parser.add_argument("--update-readme", type=Path, help="write the tables into this README (between markers)")
    parser.add_argument("--readme-note", default="", help="a line put above the tables in the README")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--no-graph-breaks", action="store_true", help="skip the torch.compile checks (graph breaks, compiled vs eager)"
    )
    parser.add_argument("--no-packing", action="store_true", help="skip packing vs padding (Moby-Dick paragraphs)")
    parser.add_argument("--vocab", type=int, default=0, help="vocabulary size at every size (0: the size's own)")
    parser.add_argument(
        "--metrics", nargs="+", choices=Settings.metrics, default=Settings.metrics, help="of each comparison"
    )
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def machine_info(settings: Settings) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": settings.device,
    }
    if settings.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run_benchmark(
    sizes: list[str],
    settings: Settings,
    pairs: list[str] | None = None,
    log=print,
    checkpoint: Callable[[dict], None] | None = None,
) -> dict:
    """Runs every comparison at every size; returns the JSON-ready result (also handed to `checkpoint` after each
    size, so a long run that is cut short keeps what it measured)."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    pairs = pairs or list(PAIRS)
    result = {
        "machine": machine_info(settings),
        "settings": asdict(settings),
        "load_avg_start": list(os.getloadavg()),
        "flops_formula": FLOPS_FORMULA,
        "sizes": {},
    }
    started = time.perf_counter()
    result["matmul_peaks"] = []
    for size_name in sizes:
        size = size_for(size_name, settings)
        # Re-measured per size, and the best kept: foreign load can only lower it, and a low peak inflates MFU.
        result["matmul_peaks"].append(matmul_peak(settings))
        peak = result["matmul_peak"] = max(result["matmul_peaks"], key=lambda p: p["flops_per_s"])
        log(f"matmul peak {peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['n']}x{peak['n']} {peak['dtype']})")
        log(f"size {size_name}: {size}")
        rows = []
        for name in pairs:
            rows += bench_pair(PAIRS[name], size, size_name, settings, peak["flops_per_s"], log)
        rows += bench_bf16(size, size_name, settings, log)
        rows += bench_compile(size, size_name, settings, log)
        if settings.packing:
            rows += bench_packing(size, size_name, settings, log)
        if settings.memory:
            rows += bench_memory(pairs, size_name, settings, log)
        result["sizes"][size_name] = {"dims": asdict(size), "pairs": {n: PAIRS[n].notes for n in pairs}, "rows": rows}
        result["load_avg_end"] = list(os.getloadavg())
        result["wall_seconds"] = time.perf_counter() - started
        recompute_mfu(result)
        if checkpoint is not None:
            checkpoint(result)
    return result


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        device=args.device,
        threads=args.threads,
        bf16=args.bf16,
        compile=args.compile,
        attn=args.attn,
        repeats=args.repeats,
        max_foreign_load=args.max_foreign_load,
        retries=args.retries,
        memory=not args.no_memory,
        graph_breaks=not args.no_graph_breaks,
        packing=not args.no_packing,
        metrics=tuple(args.metrics),
        vocab=args.vocab,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_worker:  # a fresh process measuring one model's peak training memory (memory.py)
        print(json.dumps(worker(args.memory_worker)))
        return
    settings = settings_from(args)
    sizes = ["tiny", "small"] if args.size == "all" else [args.size]
    print(f"load average {os.getloadavg()}", flush=True)
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s, load {os.getloadavg()[0]:.2f}] {message}", flush=True)

    result = run_benchmark(
        sizes, settings, args.pairs, log=log, checkpoint=lambda partial: write_outputs(partial, args.out)
    )
    json_path, md_path = write_outputs(result, args.out)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    if args.update_readme:
        update_readme(result, args.update_readme, args.readme_note)
        print(f"updated {args.update_readme}")


if __name__ == "__main__":
    main()

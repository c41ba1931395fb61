"""Transfer, measured: what pretraining buys on a task with few labels, for each of the four configurations.

    python benchmarks/transfer.py [--architectures encoder decoder prefix-lm seq2seq] [--seeds 42 1]
                                  [--train_files training/data/sotu_addresses.parquet] [--out benchmarks/results]

Per architecture and seed, the demo's path (`fourfold.training.demo`): pretrain the tiny recipe
(configuration/pretrain-<architecture>-tiny.yaml) on the State of the Union corpus (default: the bundled sample;
`python benchmarks/sotu_corpus.py --full outputs/sotu` writes the whole one), then fine-tune the era task
(configuration/finetune-sotu-era-full.yaml: 50 labelled passages, 500 held out, from addresses outside the
pretraining text) with the same recipe from the pretrained checkpoint and from a copy with fresh random weights (same
config, same tokenizer), at --finetune_seeds seeds (3: seed, seed + 1, ...; each seeds the fresh weights and the
fine-tuning), as `fourfold demo` does. The seed seeds pretraining and the first fine-tuning run. Writes
`<out>/transfer.json` (held-out accuracies per fine-tuning seed and their means, majority baseline, pretraining loss,
run times, the machine's load average before and after) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from fourfold.training import demo
from fourfold.training.architectures import ARCHITECTURES


def measure(architecture: str, seed: int, args: argparse.Namespace, root: Path) -> dict:
    """One (architecture, seed): pretrain, then the fresh-vs-pretrained fine-tuning; the row of transfer.json."""
    run = argparse.Namespace(train_files=args.train_files, seed=seed)
    pretrained_dir = root / f"{architecture}-seed{seed}"
    flags, seconds = demo.pretrain_one(architecture, pretrained_dir, run, args.max_steps)
    print(demo.summarize(architecture, pretrained_dir, flags, seconds), flush=True)
    state = json.loads((pretrained_dir / "trainer_state.json").read_text())
    extra = ["--max_steps", str(args.finetune_max_steps)] if args.finetune_max_steps else []
    seeds = [seed + i for i in range(args.finetune_seeds)]
    runs = [demo.transfer(pretrained_dir, root / f"seed{seed}", s, architecture, extra) for s in seeds]
    for line in [demo.seed_line(run) for run in runs] + demo.transfer_lines(runs):
        print(f"  {line}", flush=True)
    scores = demo.mean_accuracies(runs)
    return {
        "architecture": architecture,
        "seed": seed,
        **scores,
        "gain_points": 100 * (scores["pretrained"] - scores["fresh"]),
        "per_finetune_seed": [{"seed": run["seed"], **demo.accuracies(run)} for run in runs],
        "pretrain_steps": state["global_step"],
        "pretrain_eval_loss": next(e["eval_loss"] for e in reversed(state["log_history"]) if "eval_loss" in e),
        "pretrain_seconds": seconds,
        "finetune_seconds": [{side: run[side]["runtime_s"] for side in ("fresh", "pretrained")} for run in runs],
    }


def table(rows: list[dict]) -> str:
    """Markdown: one line per (architecture, pretraining seed); accuracies are means over the fine-tuning seeds."""
    lines = [
        "| configuration | seed | majority | fresh weights | pretrained | gain (points) | gain per fine-tuning seed "
        "| pretraining steps, loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_seed = " / ".join(f"{100 * (s['pretrained'] - s['fresh']):+.1f}" for s in r["per_finetune_seed"])
        lines.append(
            f"| {r['architecture']} | {r['seed']} | {r['majority']:.3f} | {r['fresh']:.3f} | {r['pretrained']:.3f} | "
            f"{r['gain_points']:+.1f} | {per_seed} | {r['pretrain_steps']}, {r['pretrain_eval_loss']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architectures", nargs="+", choices=list(ARCHITECTURES), default=list(ARCHITECTURES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1])
    parser.add_argument("--train_files", nargs="+", default=[str(demo.CORPUS)])
    parser.add_argument("--max_steps", type=int, default=None, help="Override the pretraining recipes' steps.")
    parser.add_argument(
        "--finetune_seeds", type=int, default=3, help="Fine-tuning seeds per pretraining seed (seed, seed + 1, ...)."
    )
    parser.add_argument("--finetune_max_steps", type=int, default=None, help="Override the fine-tuning epochs.")
    parser.add_argument("--work_dir", type=Path, default=Path("outputs/transfer"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    demo.quiet_libraries()
    load_before, start = os.getloadavg(), time.perf_counter()
    rows = [measure(a, seed, args, args.work_dir) for a in args.architectures for seed in args.seeds]
    report = {
        "rows": rows,
        "train_files": args.train_files,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "seconds": time.perf_counter() - start,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transfer.json").write_text(json.dumps(report, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

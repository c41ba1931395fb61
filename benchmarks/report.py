"""Reporting: the result as markdown tables, the targets summary, and the benchmarks README's generated sections.

`to_markdown` renders every row per size; `targets_summary` gives one line per target of `targets.TARGETS` (the worst
measured value per size, and whether it is met); `targets_list` lists the targets themselves (bound, scope,
rationale). `write_outputs` writes results.json and results.md; `update_readme` rewrites the README between its
markers: the measured section (`README_START`/`README_END`) and the list of targets (`TARGETS_START`/`TARGETS_END`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pairs import EXTRA_COMPARISONS, PAIRS
from targets import TARGETS, Target, in_words

METRIC_LABELS = {
    "train": "training step",
    "mfu": "training MFU",
    "forward": "inference forward",
    "memory": "peak training memory",
    "graph_breaks": "torch.compile graph breaks",
}
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
TARGETS_START, TARGETS_END = "<!-- targets:start -->", "<!-- targets:end -->"


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("generate_b", "generation, batch "))


def _fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "n/a"
    if unit.startswith("fraction"):
        return f"{100 * value:.1f}%"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "count":
        return str(value)
    return f"{value:,.0f}"


def _verdict(row: dict) -> str:
    if row["met"] is None:
        return ""
    return "yes" if row["met"] else "**no**"


def _comparison(pair: str) -> str:
    if pair in PAIRS:
        return f"{pair} vs {PAIRS[pair].peer_name}"
    if pair in EXTRA_COMPARISONS:
        return EXTRA_COMPARISONS[pair]
    return f"ours {pair.removeprefix('compile-')}"  # the graph-break rows


# --------------------------------------------------------------------------------------------------------------------
# All measurements
# --------------------------------------------------------------------------------------------------------------------


def _target_cell(row: dict) -> str:
    """The row's target as the table shows it: a ratio bound, our MFU's bound, or a count."""
    if row["target"] is None:
        return ""
    if row["metric"] == "mfu":
        return f"ours ≥ {100 * row['target']:.0f}%"
    if row["unit"] == "count":
        return str(row["target"])
    return ("≤ " if row["lower_is_better"] else "≥ ") + f"{row['target']:.2f}x"


def _table_line(row: dict) -> str:
    unit = row["unit"]
    if row["metric"] in ("mfu", "graph_breaks"):
        ratio = "-"
    else:
        ratio = f"{row['ratio']:.2f}x" if isinstance(row["ratio"], float) else "-"
    retaken = row.get("ours_discarded", 0) + row.get("peer_discarded", 0)
    loads = row.get("ours_foreign_load", []) + row.get("peer_foreign_load", [])
    return (
        f"| {_comparison(row['pair'])} | {metric_label(row['metric'])} ({unit}) | {_fmt(row['ours'], unit)} | "
        f"{_fmt(row['peer'], unit)} | {ratio} | {_target_cell(row)} | {_verdict(row)} | "
        f"{retaken if 'ours_seconds' in row else ''} | {f'{max(loads):.2f}' if loads else ''} |"
    )


def _size_section(size_name: str, block: dict) -> list[str]:
    d = block["dims"]
    lines = [
        f"### {size_name}: hidden {d['hidden']}, {d['layers']} layers, {d['heads']} heads, seq {d['seq']}, "
        f"batch {d['batch']}, vocab {d['vocab']}; generation: prompt {d['prompt']}, {d['new_tokens']} new tokens",
        "",
        "| comparison | metric | ours | peer | ours/peer | target | met | retaken samples | max foreign load |",
        "|---|---|---:|---:|---:|---|---|---:|---:|",
    ]
    lines += [_table_line(row) for row in block["rows"]]
    for row in block["rows"]:
        if "peer_padding_fraction" in row:
            lines += [
                "",
                f"Packed vs padded: the same {row['documents']} paragraphs ({row['real_tokens']:,} real tokens); "
                f"padded: {row['peer_batches']} batches of {d['batch']}, {100 * row['peer_padding_fraction']:.0f}% "
                f"padding; packed: {row['ours_rows']} rows of {d['seq']}, no padding.",
            ]
    lines.append("")
    return lines


def to_markdown(result: dict) -> str:
    """The machine and settings, then one table of every row per size."""
    m = result["machine"]
    s = result["settings"]
    peak = result["matmul_peak"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads; device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + f"; torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}; {m['date']}.",
        f"Settings: {'bf16 autocast' if s['bf16'] else 'fp32'}, attn_implementation={s['attn']}, "
        f"{'torch.compile' if s['compile'] else 'eager'}, median of {s['repeats']} interleaved samples after warm-up.",
        f"Load average at start {result['load_avg_start'][0]:.2f} / end {result['load_avg_end'][0]:.2f}; matmul peak "
        f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['n']}x{peak['n']} {peak['dtype']}); "
        f"run took {result['wall_seconds'] / 60:.1f} min.",
        "",
    ]
    for size_name, block in result["sizes"].items():
        lines += _size_section(size_name, block)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------------------------


def _loaded(row: dict, rows: list[dict], settings: dict) -> bool:
    """Whether a kept sample of this row (MFU: of its training row) saw more foreign load than allowed."""
    if row["metric"] == "mfu":
        row = next(r for r in rows if r["pair"] == row["pair"] and r["metric"] == "train")
    loads = row.get("ours_foreign_load", []) + row.get("peer_foreign_load", [])
    return bool(loads) and max(loads) > settings["max_foreign_load"]


def _worst(target: Target, rows: list[dict]) -> tuple[str, bool | None]:
    """The summary cell for the rows a target covers at one size (the worst of them), and whether that meets it."""
    if target.unit == "count":
        bad = [row for row in rows if not target.holds(row["ours"])]
        cell = ", ".join(f"{r['pair'].removeprefix('compile-')}: {r['ours']}" for r in bad)
        return cell or f"{max(r['ours'] for r in rows)} (all {in_words(len(rows))})", not bad
    sign = 1 if target.comparison == ">=" else -1
    worst = min(rows, key=lambda row: sign * target.value(row))
    if target.unit == "%":
        return f"{100 * worst['ours']:.1f}% ({worst['pair']})", target.holds(target.value(worst))
    where = f"{worst['pair']}, {metric_label(worst['metric'])}"
    return f"{worst['ratio']:.2f}x ({where})", target.holds(target.value(worst))


def targets_summary(result: dict) -> str:
    """One line per target judged on this run's device: the worst measured value per size, and whether it is met.
    Rows with a sample taken under more foreign load than --max-foreign-load are left out (they stay in the full
    table); a size the target does not apply to is shown but not judged."""
    sizes = list(result["sizes"])
    device = result["settings"]["device"]
    lines = [
        "| target | " + " | ".join(f"{name}: worst measured" for name in sizes) + " | met |",
        "|---|" + "---:|" * len(sizes) + "---|",
    ]
    for target in (target for target in TARGETS if target.judged_on(device)):
        cells, verdicts = [], []
        for size_name in sizes:
            all_rows = result["sizes"][size_name]["rows"]
            covered = [r for r in all_rows if target.covers(r["pair"], r["metric"], device)]
            rows = [r for r in covered if not _loaded(r, all_rows, result["settings"])]
            if not rows:
                cells.append("only under foreign load" if covered else "not measured")
                continue
            cell, met = _worst(target, rows)
            cells.append(cell)
            if target.judged_at(size_name):
                verdicts.append(met)
        met = "" if not verdicts else "yes" if all(verdicts) else "**no**"
        lines.append(f"| {target.text} | " + " | ".join(cells) + f" | {met} |")
    return "\n".join(lines)


def targets_list() -> str:
    """Every target of `TARGETS`: its line, where it is judged, and why."""
    lines = ["| target | judged on | why |", "|---|---|---|"]
    for target in TARGETS:
        scope = [", ".join(target.pairs)]
        if target.sizes is not None:
            scope.append(f"size {', '.join(target.sizes)}")
        if target.devices is not None:
            scope.append(", ".join(target.devices))
        if target.summary_only:
            scope.append("summary only")
        lines.append(f"| {target.text} | {'; '.join(scope)} | {target.rationale} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------------


def write_outputs(result: dict, out: Path) -> tuple[Path, Path]:
    """results.json (every row with its samples) and results.md (the tables, then the targets summary)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    md_path.write_text(to_markdown(result) + "\n\n## Targets\n\n" + targets_summary(result) + "\n")
    return json_path, md_path


def _replace_between(text: str, start: str, end: str, body: list[str]) -> str:
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return head + "\n".join([start, *body, end]) + tail


def update_readme(result: dict, readme: Path, note: str = "") -> None:
    """Replaces the measured section of the benchmarks README (between its markers) with this run's tables, and the
    list of targets (if the README has its markers) with `targets_list`."""
    section = [
        note,
        "",
        "### Targets",
        "",
        targets_summary(result),
        "",
        "### All measurements",
        "",
        to_markdown(result),
    ]
    text = _replace_between(readme.read_text(), README_START, README_END, section)
    if TARGETS_START in text:
        text = update_targets_list(text)
    readme.write_text(text)


def update_targets_list(text: str) -> str:
    """The README text with the list of targets between its markers rewritten from `TARGETS`."""
    return _replace_between(text, TARGETS_START, TARGETS_END, ["", targets_list(), ""])

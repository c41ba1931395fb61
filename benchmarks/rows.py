"""One result row: what every measurement hands to the report and to results.json.

A row holds each side's value (tokens per second from the median seconds of its `Samples`, or a plain value such as
MiB), the ratio ours/peer, the target and verdict (`targets.judge`), each side's raw samples, and any extra fields.
"""

from __future__ import annotations

from targets import Target, judge
from timing import Samples


def result_row(
    pair: str,
    metric: str,
    unit: str,
    ours: Samples | float,
    peer: Samples | float,
    *,
    tokens: float = 1.0,
    target: Target | None = None,
    lower_is_better: bool = False,
    **extra,
) -> dict:
    """One result: per-side value (tokens/s from the median seconds, or a plain value), ratio ours/peer, target."""

    def value(side):
        return tokens / side.median if isinstance(side, Samples) else side

    ours_value, peer_value = value(ours), value(peer)
    row = {
        "pair": pair,
        "metric": metric,
        "unit": unit,
        "ours": ours_value,
        "peer": peer_value,
        "ratio": ours_value / peer_value if peer_value else float("nan"),
        "target": None,
        "lower_is_better": lower_is_better,
        "met": None,
    }
    judge(row, target)
    for name, side in (("ours", ours), ("peer", peer)):
        if isinstance(side, Samples):
            row[f"{name}_seconds"] = [round(s, 6) for s in side.seconds]
            row[f"{name}_foreign_load"] = side.foreign_load
            row[f"{name}_discarded"] = side.discarded
    row.update(extra)
    return row


def count_row(pair: str, metric: str, count: int | str, target: Target | None) -> dict:
    """A row of our value alone, a count (fewer is better) or an error message: no peer, no ratio."""
    row = {
        "pair": pair,
        "metric": metric,
        "unit": "count",
        "ours": count,
        "peer": None,
        "ratio": None,
        "target": None,
        "lower_is_better": True,
        "met": None,
    }
    return judge(row, target)

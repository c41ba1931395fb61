"""The performance targets (issue 6), each defined once as a `Target` record in `TARGETS`, and the rule that judges one.

Everything that mentions a target reads this list: the result rows' `target` and `met` (`target_for`, `judge`), the
targets summary and the README's list of targets (`report.py`). A target bounds ours/peer (`of="ratio"`) or our own
value (`of="ours"`: MFU, graph breaks) for the comparisons, metrics, sizes and devices it names. A `summary_only`
target is a floor over rows that carry targets of their own: the summary judges it, rows do not record it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase

PEERS = ("encoder", "gpt2", "llama", "t5", "bart")  # the comparisons against a transformers model
GRAPH_BREAK_MODELS = ("encoder", "llama", "prefix-lm", "t5")  # our models whose training forward is traced
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def in_words(n: int) -> str:
    """Small counts as words ("zero graph breaks", "all four")."""
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


@dataclass(frozen=True)
class Target:
    """One performance target.

    Args:
        label: the summary's line; `{bound}` becomes the comparison and threshold (">= 1.1x", "<= 0.9x", ">= 60%"),
            `{threshold}` the threshold alone ("1.0x", "zero"), `{slack}` 1 - threshold as a percentage ("5%").
        metrics: the result rows' metrics it bounds (shell patterns: "generate_b*").
        pairs: the result rows' comparisons (`pair`) it bounds.
        comparison: ">=" (at least) or "<=" (at most).
        threshold: the bound on ours/peer, or on ours alone.
        rationale: why this bound, in one line.
        of: "ratio" (ours/peer) or "ours" (our own value).
        unit: how the threshold reads: "x" (a ratio), "%" (a fraction), "count".
        sizes / devices: where it is judged (`None`: everywhere); the summary still shows the other sizes' values.
        summary_only: judged in the summary only (a floor over rows that have their own targets).
    """

    label: str
    metrics: tuple[str, ...]
    pairs: tuple[str, ...]
    comparison: str
    threshold: float
    rationale: str
    of: str = "ratio"
    unit: str = "x"
    sizes: tuple[str, ...] | None = None
    devices: tuple[str, ...] | None = None
    summary_only: bool = False

    def __post_init__(self):
        for name, allowed in (("comparison", (">=", "<=")), ("of", ("ratio", "ours")), ("unit", ("x", "%", "count"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Target {self.label!r}: {name}={getattr(self, name)!r}; choose one of {allowed}.")

    @property
    def threshold_text(self) -> str:
        if self.unit == "%":
            return f"{self.threshold:.0%}"
        if self.unit == "count":
            return in_words(int(self.threshold))
        return f"{self.threshold}x"

    @property
    def text(self) -> str:
        """The label with its numbers filled in from the threshold."""
        bound = f"{self.comparison} {self.threshold_text}"
        return self.label.format(bound=bound, threshold=self.threshold_text, slack=f"{1 - self.threshold:.0%}")

    def covers(self, pair: str, metric: str, device: str) -> bool:
        """Whether a row of this comparison and metric, measured on this device, is bounded by this target."""
        return (
            pair in self.pairs
            and any(fnmatchcase(metric, pattern) for pattern in self.metrics)
            and self.judged_on(device)
        )

    def judged_on(self, device: str) -> bool:
        return self.devices is None or device.split(":")[0] in self.devices

    def judged_at(self, size_name: str) -> bool:
        return self.sizes is None or size_name in self.sizes

    def holds(self, value: float | str | None) -> bool | None:
        """Whether a measured value meets the bound; `None` when it is not a number (nan); an error text fails."""
        if not isinstance(value, (int, float)):
            return False
        if math.isnan(value):
            return None
        return value >= self.threshold if self.comparison == ">=" else value <= self.threshold

    def value(self, row: dict) -> float | str | None:
        """The row's value this target bounds."""
        return row["ours"] if self.of == "ours" else row["ratio"]


# Each: label, metrics, comparisons, comparison, threshold, rationale (then the keyword options). The summary keeps
# this order.
TARGETS: tuple[Target, ...] = (
    Target(
        "training step {bound} BertForMaskedLM",
        ("train",),
        ("encoder",),
        ">=",
        1.3,
        "our masked-LM head runs on the masked positions only, BERT's on every position",
    ),
    Target(
        "training step {bound} GPT-2 / Llama",
        ("train",),
        ("gpt2", "llama"),
        ">=",
        1.1,
        "the chunked LM-head loss and the MLP activation recomputed in backward should pay for themselves",
    ),
    Target(
        "training step {bound} T5 / BART",
        ("train",),
        ("t5", "bart"),
        ">=",
        1.1,
        "as for the decoders: the same math, with the chunked loss and the recomputed activation",
    ),
    Target(
        "inference forward {bound} (every peer)",
        ("forward",),
        PEERS,
        ">=",
        1.0,
        "inference runs the plain path: it must not cost more than the peer's",
    ),
    Target(
        "generation, batch 8 {bound}",
        ("generate_b8",),
        PEERS,
        ">=",
        1.0,
        "batched decoding with the KV cache must keep up with the peer's",
    ),
    Target(
        "generation, batch 1 {bound}",
        ("generate_b1",),
        PEERS,
        ">=",
        1.5,
        "single-sequence decoding is where per-step overhead weighs most, so where a lean decode step shows",
    ),
    Target(
        "never below {threshold} (training, forward, generation)",
        ("train", "forward", "generate_b*"),
        PEERS,
        ">=",
        1.0,
        "whatever a row's own target, no throughput against a peer may fall below parity",
        summary_only=True,
    ),
    Target(
        "peak training memory {bound}",
        ("memory",),
        PEERS,
        "<=",
        0.9,
        "no (tokens, vocab) logits or gradient is ever whole, and the MLP keeps its activation's inputs only",
    ),
    Target(
        "training MFU {bound} (small)",
        ("mfu",),
        PEERS,
        ">=",
        0.60,
        "at the small size a CPU training step should be bound by its matmuls",
        of="ours",
        unit="%",
        sizes=("small",),
        devices=("cpu",),
    ),
    Target(
        "training MFU {bound} (GPU: decoders, small)",
        ("mfu",),
        ("gpt2", "llama"),
        ">=",
        0.40,
        "issue 6's GPU goal, set for a ~125M decoder at seq 1024 in bf16; judged at our largest size meanwhile",
        of="ours",
        unit="%",
        sizes=("small",),
        devices=("cuda",),
    ),
    Target(
        "prefix LM within {slack} of our decoder (training)",
        ("train",),
        ("prefix-lm",),
        ">=",
        0.95,
        "a prefix LM is our decoder with another mask: the mask must cost next to nothing",
    ),
    Target(
        "bf16 autocast {bound} our fp32 (training)",
        ("train",),
        ("bf16-vs-fp32",),
        ">=",
        1.3,
        "on CPUs with bf16 matmuls (AVX512-BF16, AMX) autocast must pay off",
    ),
    Target(
        "torch.compile: {threshold} graph breaks",
        ("graph_breaks",),
        tuple(f"compile-{name}" for name in GRAPH_BREAK_MODELS),
        "<=",
        0,
        "one graph per training forward, so that the compiler sees the whole step",
        of="ours",
        unit="count",
    ),
    Target(
        "torch.compile >= eager (training)",
        ("train",),
        ("compile-vs-eager",),
        ">=",
        1.0,
        "compiling must never slow the training step down",
    ),
    Target(
        "packing vs padding {bound} non-pad tokens/s",
        ("train",),
        ("packing",),
        ">=",
        1.5,
        "packed rows hold no padding, and real documents leave about half of a padded batch empty",
    ),
)


def target_for(pair: str, metric: str, size_name: str, device: str) -> Target | None:
    """The target a result row records (summary-only floors excluded), or `None`."""
    for target in TARGETS:
        if not target.summary_only and target.covers(pair, metric, device) and target.judged_at(size_name):
            return target
    return None


def judge(row: dict, target: Target | None) -> dict:
    """Writes the target's threshold and verdict into a result row (`met` is `None` without a target)."""
    row["target"] = None if target is None else target.threshold
    row["met"] = None if target is None else target.holds(target.value(row))
    return row

"""Benchmark sizes and run settings: what both sides of every comparison are built and run with.

`Size` is one benchmark size (`SIZES`: micro for the smoke test, tiny and small for the README tables); `Settings`
holds the process-wide options the command line sets (device, threads, dtype, attention, sampling, which
measurements run). `size_for` applies `--vocab` to a named size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Size:
    """One benchmark size; both sides of every comparison are built from it."""

    hidden: int
    layers: int
    heads: int
    seq: int  # training / forward length (seq2seq: source and target length each)
    batch: int
    vocab: int = 8192
    prompt: int = 32  # generation prompt length (seq2seq: source length)
    new_tokens: int = 128
    gen_batches: tuple[int, ...] = (1, 8)

    @property
    def max_positions(self) -> int:
        return max(self.seq, self.prompt + self.new_tokens) + 2  # + BART's two reserved rows


SIZES: dict[str, Size] = {
    "micro": Size(hidden=32, layers=1, heads=2, seq=16, batch=2, vocab=128, prompt=4, new_tokens=4, gen_batches=(1, 2)),
    "tiny": Size(hidden=256, layers=4, heads=4, seq=128, batch=8),
    "small": Size(hidden=512, layers=6, heads=8, seq=512, batch=4),
}


@dataclass
class Settings:
    """Process-wide settings shared by both sides of every comparison."""

    device: str = "cpu"
    threads: int = 0  # 0: leave torch's default
    bf16: bool = False  # run every comparison under bf16 autocast
    compile: bool = False  # torch.compile both sides (training and forward)
    attn: str = "sdpa"
    repeats: int = 5
    min_sample_s: float = 0.25  # short calls are repeated inside one sample until it lasts this long
    max_foreign_load: float = 0.3  # cores other processes may use during a sample before it is retaken
    retries: int = 3
    memory: bool = True
    graph_breaks: bool = True
    packing: bool = True
    metrics: tuple[str, ...] = ("train", "forward", "generate")  # of each comparison
    vocab: int = 0  # > 0: this vocabulary size at every size instead of the size's own
    seed: int = 0


def size_for(name: str, settings: Settings) -> Size:
    """The named size, with `--vocab` applied."""
    return replace(SIZES[name], vocab=settings.vocab) if settings.vocab else SIZES[name]

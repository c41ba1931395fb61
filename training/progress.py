"""One live progress line per training stage: step/total, the latest training loss, elapsed time and time left.

`LiveProgress` is a `TrainerCallback`. On a terminal it rewrites one line in place (`\\r`, at most twice a second) and
ends it when training ends; anywhere else (a pipe, a file, CI logs) it prints a full line every `every_seconds`, so a
reader of the log sees the run move without a line per step. The first and the last step are always reported.

`live_progress(label)` puts a `LiveProgress` in scope: every fourfold Trainer built inside the `with` block (the ones
`fourfold pretrain` and `fourfold finetune` build, see `trainer.py`) reports through it. The stream is taken when the
block opens, so a `contextlib.redirect_stdout` inside it sends the Trainer's own logs elsewhere and leaves the
progress line on the console.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Iterator
from typing import TextIO

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

_IN_SCOPE: contextvars.ContextVar[tuple[TrainerCallback, ...]] = contextvars.ContextVar("progress", default=())


def format_duration(seconds: float) -> str:
    """`75` -> `1:15`, `3725` -> `1:02:05`."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class LiveProgress(TrainerCallback):
    """Reports a Trainer's progress as `<label>: step 120/300 (40%), loss 5.12, 0:32 elapsed, ~0:48 left`.

    Args:
        label: what is training, e.g. `"encoder: pretraining"`.
        stream: where the line goes (default: `sys.stdout` as it is now).
        every_seconds: without a terminal, the time between two printed lines.
        tty: force the terminal (in-place) or line mode; default: `stream.isatty()`.
    """

    def __init__(
        self, label: str, stream: TextIO | None = None, every_seconds: float = 10.0, tty: bool | None = None
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stdout
        self.every_seconds = every_seconds
        self.tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = self.last_print = 0.0
        self.first_step_seconds: float | None = None
        self.loss: float | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.start = time.perf_counter()
        self.last_print = float("-inf")
        self.first_step_seconds = None
        self.loss = None

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        now = time.perf_counter()
        interval = 0.5 if self.tty else self.every_seconds
        last = state.global_step >= state.max_steps
        if state.global_step == 1:
            self.first_step_seconds = now - self.start
        if state.is_world_process_zero and (now - self.last_print >= interval or state.global_step == 1 or last):
            self.last_print = now
            self.write(self.line(state.global_step, state.max_steps, now - self.start))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.is_world_process_zero:
            elapsed = time.perf_counter() - self.start
            self.write(f"{self.label}: done, {state.global_step} steps in {format_duration(elapsed)}", end=True)

    def line(self, step: int, total: int, elapsed: float) -> str:
        """The progress line at `step` of `total` after `elapsed` seconds. Time left is the pace of the steps after
        the first (which also warms up: allocations, the first batch), so the first line gives none."""
        loss = f", loss {self.loss:.3f}" if self.loss is not None else ""
        percent = 100 * step / total if total else 100.0
        text = f"{self.label}: step {step}/{total} ({percent:.0f}%){loss}, {format_duration(elapsed)} elapsed"
        if step > 1 and self.first_step_seconds is not None:
            left = (elapsed - self.first_step_seconds) / (step - 1) * (total - step)
            text += f", ~{format_duration(left)} left"
        return text

    def write(self, text: str, end: bool = False) -> None:
        if self.tty:
            # \x1b[K clears what a longer previous line left on the right.
            self.stream.write(f"\r{text}\x1b[K" + ("\n" if end else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


@contextlib.contextmanager
def live_progress(label: str, stream: TextIO | None = None, every_seconds: float = 10.0) -> Iterator[LiveProgress]:
    """Every fourfold Trainer built inside the block reports through one `LiveProgress(label, stream)`."""
    callback = LiveProgress(label, stream if stream is not None else sys.stdout, every_seconds)
    token = _IN_SCOPE.set((*_IN_SCOPE.get(), callback))
    try:
        yield callback
    finally:
        _IN_SCOPE.reset(token)


def callbacks_in_scope() -> tuple[TrainerCallback, ...]:
    """The callbacks the enclosing `live_progress` blocks put in scope (none outside them)."""
    return _IN_SCOPE.get()

"""The live progress line: one line per report with step/total, the loss the Trainer logged, elapsed and time left;
full lines without a terminal, one rewritten line on one; Trainers built inside `live_progress` report through it."""

import io
import re

import torch
from conftest import tiny_config
from transformers import Trainer, TrainingArguments

from fourfold.training.progress import LiveProgress, callbacks_in_scope, format_duration, live_progress
from fourfold.training.trainer import FourfoldTrainer


class Rows(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        generator = torch.Generator().manual_seed(i)
        return {"input_ids": torch.randint(5, 100, (12,), generator=generator), "labels": torch.tensor(i % 2)}


def tiny_trainer(tmp_path, steps: int, trainer_class=Trainer, callbacks=()):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config("encoder", num_labels=2))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        use_cpu=True,
    )
    return trainer_class(model=model, args=args, train_dataset=Rows(), callbacks=list(callbacks))


def test_format_duration():
    assert [format_duration(s) for s in (0, 59.4, 75, 3725)] == ["0:00", "0:59", "1:15", "1:02:05"]


def test_line_mode_reports_every_step_with_the_logged_loss(tmp_path):
    stream = io.StringIO()
    trainer = tiny_trainer(tmp_path, 3, callbacks=[LiveProgress("stage", stream, every_seconds=0, tty=False)])
    trainer.train()
    lines = stream.getvalue().splitlines()
    # The Trainer's own record; a step's loss is logged after its step ends, so a line shows the step before's.
    losses = [None] + [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(lines) == 4 and "\r" not in stream.getvalue()
    for step, (line, loss) in enumerate(zip(lines[:-1], losses[:-1], strict=True), start=1):
        match = re.fullmatch(
            r"stage: step (\d+)/3 \((\d+)%\)(, loss ([\d.]+))?, \d+:\d\d elapsed(, ~\d+:\d\d left)?", line
        )
        assert match, line
        assert (match[5] is None) == (step == 1)  # the first step warms up: no estimate from it
        assert int(match[1]) == step and int(match[2]) == round(100 * step / 3)
        assert (match[4] is None) if loss is None else abs(float(match[4]) - loss) < 1e-3
    assert re.fullmatch(r"stage: done, 3 steps in \d+:\d\d", lines[-1])


def test_time_left_is_the_pace_after_the_first_step():
    progress = LiveProgress("stage", io.StringIO())
    progress.first_step_seconds = 30.0  # a slow first step (warm-up) ...
    assert progress.line(11, 100, 30.0 + 10 * 2.0).endswith("0:50 elapsed, ~2:58 left")  # ... then 2 s a step: 89 x 2
    assert progress.line(1, 100, 30.0).endswith("0:30 elapsed")


def test_line_mode_waits_between_lines_but_reports_first_and_last_step(tmp_path):
    stream = io.StringIO()
    tiny_trainer(tmp_path, 4, callbacks=[LiveProgress("stage", stream, every_seconds=3600, tty=False)]).train()
    steps = re.findall(r"step (\d+)/4", stream.getvalue())
    assert steps == ["1", "4"]


def test_terminal_mode_rewrites_one_line(tmp_path):
    stream = io.StringIO()
    tiny_trainer(tmp_path, 2, callbacks=[LiveProgress("stage", stream, tty=True)]).train()
    text = stream.getvalue()
    assert (
        text.startswith("\rstage: step 1/2")
        and text.count("\n") == 1
        and re.search(r"\rstage: done, 2 steps in \d+:\d\d\x1b\[K\n$", text)
    )


def test_trainers_built_in_scope_report_through_it(tmp_path):
    stream = io.StringIO()
    with live_progress("scoped", stream, every_seconds=0) as callback:
        assert callbacks_in_scope() == (callback,)
        trainer = tiny_trainer(tmp_path, 1, trainer_class=FourfoldTrainer)
    assert callbacks_in_scope() == ()
    assert callback in trainer.callback_handler.callbacks
    assert not any(
        isinstance(c, LiveProgress) for c in tiny_trainer(tmp_path, 1, FourfoldTrainer).callback_handler.callbacks
    )
    trainer.train()
    assert stream.getvalue().splitlines()[-1].startswith("scoped: done, 1 steps")

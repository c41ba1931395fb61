"""A user's mistake, as an exception that says what is wrong and how to fix it.

The training commands raise `UsageError(what, fix)` for every input they refuse: a flag out of range, a file that is
not there or not text, a label the model never saw, an output folder that holds another run. It is a `ValueError`
(so library callers catch it as one), and the command line prints it as one line on stderr and exits with status 2:

    fourfold pretrain: error: --mlm_probability 0.0 must be in (0, 1) — the masked-LM loss needs masked tokens; ...

A traceback is for bugs only: `fourfold --debug <command>` or `FOURFOLD_DEBUG=1` shows one for a user error too.
`closest(name, choices)` suggests the nearest valid name for a misspelt one.
"""

import difflib
from collections.abc import Iterable


class UsageError(ValueError):
    """Bad input to a training command.

    Args:
        what: what is wrong, naming the argument (flag, file, column, row) and the value.
        fix: what to do instead.
    """

    def __init__(self, what: str, fix: str):
        super().__init__(f"{what} — {fix}")
        self.what, self.fix = what, fix


def require(condition: bool, what: str, fix: str) -> None:
    """Raises `UsageError(what, fix)` unless `condition`."""
    if not condition:
        raise UsageError(what, fix)


def check_between(flag: str, value: float | None, low: float, high: float, why: str, *, closed: str = "") -> None:
    """`value` of `--flag` lies in (low, high); `closed` may hold "low" / "high" for an end that is allowed.
    `None` (unset) passes. `why` says what the range protects, as the fix's reason."""
    if value is None:
        return
    above = value >= low if "low" in closed else value > low
    below = value <= high if "high" in closed else value < high
    interval = f"{'[' if 'low' in closed else '('}{low:g}, {high:g}{']' if 'high' in closed else ')'}"
    require(above and below, f"--{flag} {value:g} must be in {interval}", why)


def closest(name: str, choices: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` for the nearest of `choices` to a misspelt `name`, or `""` when none is near."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def one_line(text: str) -> str:
    """A message on one line: newlines and runs of spaces become single spaces."""
    return " ".join(str(text).split())

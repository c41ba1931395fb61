"""The raw data's column names (`Columns`), as the command line's `--*_column` flags name them.

Each task reads only some of them; its record says which (`Task.columns`), and `Task.check_columns` refuses data
that lacks one before anything is built.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Columns:
    """Column names of the raw data (the command line's `--*_column` flags)."""

    text: str = "text"
    text_pair: str | None = None
    label: str = "label"
    question: str = "question"
    context: str = "context"
    answers: str = "answers"
    choices: str = "choices"
    prompt: str = "prompt"
    completion: str = "completion"
    target: str = "target"

    def texts(self) -> list[str]:
        """The columns that hold text (a string; token classification's `text`: a list of words), where an empty
        cell is a mistake in the data; the others hold labels, answers or choices."""
        names = (self.text, self.text_pair, self.question, self.context, self.prompt, self.completion, self.target)
        return [name for name in names if name is not None]

"""The fine-tuning tasks, one module and one `Task` record each (`base.py`); `TASKS` is the registry.

    task                      Auto class                           columns (flags)                      metrics
    sequence-classification   AutoModelForSequenceClassification   text [, text_pair], label            accuracy, f1
      (--problem_type regression: label a number; mse, mae, pearson, spearman. --problem_type
      multi_label_classification: label a list of names/ids, or a string split on --label_separator;
      micro/macro f1, subset accuracy at sigmoid > 0.5)
    token-classification      AutoModelForTokenClassification      text (list of words), label (tags)   seqeval F1
    question-answering        AutoModelForQuestionAnswering        question, context, answers (SQuAD)   squad EM/F1
      (questions with no answer, empty `answers` lists: SQuAD v2, squad_v2 EM/F1; long contexts: windows)
    multiple-choice           AutoModelForMultipleChoice           text (question), choices, label      accuracy
    causal-lm                 AutoModelForCausalLM                 prompt, completion                   perplexity
    text-to-text              AutoModelForSeq2SeqLM                text (source), target                rouge, bleu

Adding a task is one module that builds a `Task` and one line in `TASKS`. `get_task(name, problem_type)` resolves
the `--task` and `--problem_type` flags to a record once; every task's checks run on the raw data before a model is
built, so bad labels fail in seconds.
"""

from fourfold.training.errors import UsageError, closest
from fourfold.training.tasks.base import Task, TaskOptions
from fourfold.training.tasks.causal_lm import CAUSAL_LM
from fourfold.training.tasks.columns import Columns
from fourfold.training.tasks.multiple_choice import MULTIPLE_CHOICE
from fourfold.training.tasks.question_answering import QUESTION_ANSWERING
from fourfold.training.tasks.sequence_classification import SEQUENCE_CLASSIFICATION
from fourfold.training.tasks.text_to_text import TEXT_TO_TEXT
from fourfold.training.tasks.token_classification import TOKEN_CLASSIFICATION

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        SEQUENCE_CLASSIFICATION,
        TOKEN_CLASSIFICATION,
        QUESTION_ANSWERING,
        MULTIPLE_CHOICE,
        CAUSAL_LM,
        TEXT_TO_TEXT,
    )
}
DEFAULT_PROBLEM_TYPE = "single_label_classification"  # what `--problem_type` says when not given
PROBLEM_TYPES: tuple[str, ...] = (
    DEFAULT_PROBLEM_TYPE,
    *dict.fromkeys(p for t in TASKS.values() for p in t.problem_types),
)

__all__ = ["DEFAULT_PROBLEM_TYPE", "PROBLEM_TYPES", "TASKS", "Columns", "Task", "TaskOptions", "get_task"]


def get_task(name: str, problem_type: str | None = None) -> Task:
    """The record of `--task name` (and `--problem_type`; `None` or the default: the task's own record); a
    `UsageError` naming the choices (and the nearest one) otherwise."""
    if name not in TASKS:
        raise UsageError(f"--task {name!r} is not a task{closest(name, TASKS)}", f"choose one of {', '.join(TASKS)}")
    task = TASKS[name]
    if problem_type in (None, DEFAULT_PROBLEM_TYPE):
        return task
    if problem_type not in PROBLEM_TYPES:
        raise UsageError(
            f"--problem_type {problem_type!r} is not a problem type{closest(problem_type, PROBLEM_TYPES)}",
            f"choose one of {', '.join(PROBLEM_TYPES)}",
        )
    if problem_type not in task.problem_types:
        able = " / ".join(t.name for t in TASKS.values() if problem_type in t.problem_types)
        raise UsageError(f"--problem_type {problem_type} needs --task {able}, not {name}", f"pass --task {able}")
    return task.problem_types[problem_type]

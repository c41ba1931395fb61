"""Evaluation metrics for fine-tuning, through the `evaluate` library.

Each folder here is a local `evaluate` module with the same inputs and outputs as its Hub namesake, computed by a
well-kept implementation rather than re-derived formulas:

    accuracy    scikit-learn accuracy_score              sequence classification, multiple choice
    f1          scikit-learn f1_score                    sequence classification
    seqeval     the seqeval package (entity-level F1)    token classification (NER)
    squad       the official SQuAD v1.1 script (EM, F1)  extractive question answering
    squad_v2    the official SQuAD v2.0 script (EM, F1)  extractive QA with unanswerable questions
    rouge       Google's rouge_score                     text-to-text
    sacrebleu   the sacrebleu package (corpus BLEU)      text-to-text

`load_metric(name)` takes the Hub version when the Hub is reachable and `HF_HUB_OFFLINE` is not set, else the local
module (the results are the same; the Hub copy is preferred only because it is the one other people cite). A module is
loaded once per process and reused by every later evaluation: on a machine without network each Hub attempt costs
1.5 s before the local copy loads (two metrics, two evaluations: 6 s of a 20 s fine-tuning run in the demo).
Perplexity is exp(mean token loss) from the evaluation loss (`perplexity`, `with_perplexity`): evaluate's own
`perplexity` module runs a model from the Hub, which is not what a fine-tuning evaluation needs.
"""

import functools
import math
import os
from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).parent
LOCAL_METRICS = tuple(sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file()))


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "TRUE", "YES", "ON")


def load_metric(name: str, prefer_hub: bool = True) -> evaluate.EvaluationModule:
    """The evaluate module `name` (one of `LOCAL_METRICS`): from the Hub when allowed and reachable, else local;
    loaded once per process (and per `HF_HUB_OFFLINE` setting), then reused."""
    if name not in LOCAL_METRICS:
        raise ValueError(f"Unknown metric {name!r}; the bundled metrics are {', '.join(LOCAL_METRICS)}.")
    return _load_metric(name, prefer_hub and not hub_offline())


@functools.cache
def _load_metric(name: str, try_hub: bool) -> evaluate.EvaluationModule:
    if try_hub:
        try:
            return evaluate.load(name)
        except Exception:  # unreachable Hub, missing dependency of the Hub script, ...: the local copy will do
            pass
    return evaluate.load(str(METRICS_DIR / name / f"{name}.py"))


def perplexity(loss: float) -> float:
    """exp(mean token loss), capped so a diverged run reports a large number rather than overflowing."""
    return math.exp(min(loss, 50.0))


def with_perplexity(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """Adds `<prefix>_perplexity` = exp(`<prefix>_loss`) (per predicted token: masked tokens for MLM, spans for
    seq2seq), in place; returns `metrics`."""
    loss = metrics.get(f"{prefix}_loss")
    if loss is not None:
        metrics[f"{prefix}_perplexity"] = perplexity(loss)
    return metrics

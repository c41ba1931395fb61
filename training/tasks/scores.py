"""Scores shared by the classification tasks and their constant-predictor baselines.

`classification_scores` (accuracy, F1), `regression_scores` (MSE, MAE, Pearson, Spearman), `multi_label_scores`
(micro / macro F1, subset accuracy): each takes predictions and references, so a task's `compute_metrics` and its
baseline score the same way. `logits_of` takes the logits out of an `EvalPrediction`.
"""

import warnings

import numpy as np
from transformers import EvalPrediction

from fourfold.training.metrics import load_metric


def logits_of(p: EvalPrediction) -> np.ndarray:
    """The first output of the predictions (the logits; models may return more, e.g. hidden states)."""
    return p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions


def classification_scores(predictions, references, num_labels: int) -> dict[str, float]:
    """Accuracy and F1 (binary F1 of class 1 with two classes; macro F1 otherwise)."""
    f1_kwargs = {} if num_labels == 2 else {"average": "macro"}
    return {
        **load_metric("accuracy").compute(predictions=predictions, references=references),
        **load_metric("f1").compute(predictions=predictions, references=references, **f1_kwargs),
    }


def regression_scores(predictions, references) -> dict[str, float]:
    """MSE, MAE, and Pearson / Spearman correlation (NaN when either side is constant)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    references = np.asarray(references, dtype=np.float64).reshape(-1)
    constant = predictions.std() == 0 or references.std() == 0
    with warnings.catch_warnings():  # a nearly constant prediction (an untrained head) makes scipy warn
        warnings.simplefilter("ignore")
        return {
            "mse": float(mean_squared_error(references, predictions)),
            "mae": float(mean_absolute_error(references, predictions)),
            "pearson": float("nan") if constant else float(pearsonr(predictions, references)[0]),
            "spearman": float("nan") if constant else float(spearmanr(predictions, references)[0]),
        }


def multi_label_scores(predictions, references) -> dict[str, float]:
    """Micro / macro F1 over the labels and subset accuracy (every label of a row right), from 0/1 matrices."""
    from sklearn.metrics import accuracy_score, f1_score

    predictions, references = np.asarray(predictions).astype(int), np.asarray(references).astype(int)
    return {
        "micro_f1": float(f1_score(references, predictions, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(references, predictions, average="macro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(references, predictions)),
    }


def as_baseline(scores: dict[str, float]) -> dict[str, float]:
    """Scores renamed `baseline_<name>`, as results.json holds them."""
    return {f"baseline_{k}": v for k, v in scores.items()}

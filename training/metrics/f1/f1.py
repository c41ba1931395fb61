"""F1, as a local `evaluate` module: the harmonic mean of precision and recall.

Same inputs and output as the Hub's `f1` (`{"f1": float}`, or an array with `average=None`), computed by
scikit-learn's `f1_score`. Binary by default (`pos_label=1`); pass `average="macro"` (or "micro", "weighted") for
several classes.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score

_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall), via sklearn.f1_score."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    labels (list of int): the labels to include when `average != "binary"`.
    pos_label (int): the positive class when `average="binary"` (default 1).
    average (str): "binary" (default), "micro", "macro", "weighted", "samples" or None (one score per class).
    sample_weight (list of float): per-example weights.
Returns:
    f1 (float, or list of float with average=None)
Example:
    >>> f1.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 1])
    {'f1': 0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None):
        score = f1_score(
            references, predictions, labels=labels, pos_label=pos_label, average=average, sample_weight=sample_weight
        )
        return {"f1": float(score) if np.ndim(score) == 0 else np.asarray(score).tolist()}

"""Entity-level precision, recall and F1 for sequence labelling (NER), as a local `evaluate` module.

Same inputs and output as the Hub's `seqeval`: one dict per entity type plus `overall_precision`,
`overall_recall`, `overall_f1` and `overall_accuracy`, computed by the `seqeval` package. An entity counts as
correct only when its type and its whole span match (CoNLL evaluation), so B-PER I-PER predicted as B-PER B-PER
is one miss, not half a hit.
"""

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report

_DESCRIPTION = "Entity-level precision/recall/F1 of IOB-tagged sequences, via the seqeval package (CoNLL-style)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of str): predicted tags per sequence, e.g. [["B-PER", "I-PER", "O"]].
    references (list of list of str): true tags per sequence.
    suffix (bool): tags are "PER-B" rather than "B-PER".
    scheme (str): a strict scheme ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU") with mode="strict"; default
        None: seqeval's lenient CoNLL evaluation.
    mode (str): "strict" or None.
    sample_weight (list of float): per-sequence weights.
    zero_division (str or int): value for a zero division ("warn" -> 0 with a warning).
Returns:
    <TYPE> (dict with precision, recall, f1, number) for every entity type, and overall_precision, overall_recall,
    overall_f1, overall_accuracy (token-level).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Seqeval(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
                    "references": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
                }
            ),
            reference_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(
        self, predictions, references, suffix=False, scheme=None, mode=None, sample_weight=None, zero_division="warn"
    ):
        if scheme is not None:
            import importlib

            scheme = getattr(importlib.import_module("seqeval.scheme"), scheme)
        report = classification_report(
            y_true=references,
            y_pred=predictions,
            suffix=suffix,
            output_dict=True,
            scheme=scheme,
            mode=mode,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        report.pop("macro avg")
        report.pop("weighted avg")
        overall = report.pop("micro avg")
        scores = {
            entity: {
                "precision": float(s["precision"]),
                "recall": float(s["recall"]),
                "f1": float(s["f1-score"]),
                "number": int(s["support"]),
            }
            for entity, s in report.items()
        }
        # Plain floats (seqeval returns numpy scalars), so the scores go straight into JSON.
        scores["overall_precision"] = float(overall["precision"])
        scores["overall_recall"] = float(overall["recall"])
        scores["overall_f1"] = float(overall["f1-score"])
        scores["overall_accuracy"] = float(accuracy_score(y_true=references, y_pred=predictions))
        return scores

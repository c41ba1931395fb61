"""SQuAD v1.1 exact match and F1 for extractive question answering, as a local `evaluate` module.

Same inputs and output as the Hub's `squad` (`{"exact_match": 0-100, "f1": 0-100}`). The scoring is the official
SQuAD v1.1 evaluation script (Rajpurkar et al., 2016), kept as it is: answers are normalised (lower case, no
punctuation, no articles a/an/the, single spaces), a prediction scores the best over the reference answers, and F1 is
over the bag of normalised tokens.
"""

import collections
import re
import string

import datasets
import evaluate

_DESCRIPTION = "SQuAD v1.1 exact match and token F1 (the official evaluation script), in percent."
_CITATION = """@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "EMNLP", year = "2016"}"""
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of dict): {"id": str, "prediction_text": str} per question.
    references (list of dict): {"id": str, "answers": {"text": list of str, "answer_start": list of int}}.
Returns:
    exact_match (float, 0-100), f1 (float, 0-100)
Example:
    >>> squad.compute(predictions=[{"id": "1", "prediction_text": "the Whale"}],
    ...               references=[{"id": "1", "answers": {"text": ["whale"], "answer_start": [0]}}])
    {'exact_match': 100.0, 'f1': 100.0}
"""


# ---- The official SQuAD v1.1 evaluation script (functions unchanged but for formatting) ----
def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def f1_score(prediction, ground_truth):
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction, ground_truth):
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    return max(metric_fn(prediction, ground_truth) for ground_truth in ground_truths)


# ---------------------------------------------------------------------------------------------


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Squad(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references):
        answers = {reference["id"]: reference["answers"]["text"] for reference in references}
        exact_match = f1 = 0.0
        for prediction in predictions:
            truths = answers[prediction["id"]]
            exact_match += metric_max_over_ground_truths(exact_match_score, prediction["prediction_text"], truths)
            f1 += metric_max_over_ground_truths(f1_score, prediction["prediction_text"], truths)
        total = max(len(predictions), 1)
        return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}

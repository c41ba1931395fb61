"""ROUGE for generated text (summaries, text-to-text), as a local `evaluate` module.

Same inputs and output as the Hub's `rouge` (`rouge1`, `rouge2`, `rougeL`, `rougeLsum`: mid F-measures of a
bootstrap aggregate, or per-example lists with `use_aggregator=False`), computed by Google's `rouge_score` package.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer, scoring

_DESCRIPTION = "ROUGE-N / ROUGE-L F-measures, via Google's rouge_score package (the reference implementation)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated texts.
    references (list of str, or list of list of str): one or several references per prediction.
    rouge_types (list of str): default ["rouge1", "rouge2", "rougeL", "rougeLsum"].
    use_aggregator (bool): return bootstrap-aggregated mid scores (default) or per-example lists.
    use_stemmer (bool): Porter-stem words before matching.
    tokenizer: a callable that splits a text into tokens (default: rouge_score's).
Returns:
    one float (or list) per rouge type: the F-measure.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Sequence(datasets.Value("string", id="sequence")),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Value("string", id="sequence"),
                    }
                ),
            ],
            reference_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(
        self, predictions, references, rouge_types=None, use_aggregator=True, use_stemmer=False, tokenizer=None
    ):
        rouge_types = rouge_types or ["rouge1", "rouge2", "rougeL", "rougeLsum"]
        multi_ref = isinstance(references[0], list)
        scorer = rouge_scorer.RougeScorer(rouge_types=rouge_types, use_stemmer=use_stemmer, tokenizer=tokenizer)
        aggregator = scoring.BootstrapAggregator() if use_aggregator else None
        scores = []
        for reference, prediction in zip(references, predictions, strict=True):
            score = scorer.score_multi(reference, prediction) if multi_ref else scorer.score(reference, prediction)
            if aggregator is not None:
                aggregator.add_scores(score)
            else:
                scores.append(score)
        if aggregator is not None:
            result = aggregator.aggregate()
            return {key: float(result[key].mid.fmeasure) for key in result}
        return {key: [float(score[key].fmeasure) for score in scores] for key in rouge_types}

"""Corpus BLEU for generated text, as a local `evaluate` module.

Same inputs and output as the Hub's `sacrebleu` (`score` 0-100, `counts`, `totals`, `precisions`, `bp`, `sys_len`,
`ref_len`), computed by the `sacrebleu` package (Post, 2018), the standard, reproducible BLEU.
"""

import datasets
import evaluate
import sacrebleu as scb

_DESCRIPTION = "Corpus-level BLEU via sacrebleu (standard tokenisation, reproducible scores)."
_CITATION = """@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores", author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation", year = "2018"}"""
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated texts.
    references (list of list of str): the references of each prediction (the same number for every prediction).
    smooth_method (str): "exp" (default), "floor", "add-k" or "none".
    smooth_value (float): for "floor" and "add-k".
    force (bool), lowercase (bool), tokenize (str, e.g. "13a", "intl", "char"), use_effective_order (bool).
Returns:
    score (float, 0-100), counts, totals, precisions (list), bp (float), sys_len (int), ref_len (int)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Sacrebleu(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Sequence(datasets.Value("string", id="sequence"), id="references"),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Value("string", id="sequence"),
                    }
                ),
            ],
            reference_urls=["https://github.com/mjpost/sacreBLEU"],
        )

    def _compute(
        self,
        predictions,
        references,
        smooth_method="exp",
        smooth_value=None,
        force=False,
        lowercase=False,
        tokenize=None,
        use_effective_order=False,
    ):
        if isinstance(references[0], str):
            references = [[reference] for reference in references]
        references_per_prediction = len(references[0])
        if any(len(refs) != references_per_prediction for refs in references):
            raise ValueError("sacrebleu needs the same number of references for every prediction.")
        transposed = [[refs[i] for refs in references] for i in range(references_per_prediction)]
        output = scb.corpus_bleu(
            predictions,
            transposed,
            smooth_method=smooth_method,
            smooth_value=smooth_value,
            force=force,
            lowercase=lowercase,
            use_effective_order=use_effective_order,
            **({} if tokenize is None else {"tokenize": tokenize}),
        )
        return {
            "score": output.score,
            "counts": output.counts,
            "totals": output.totals,
            "precisions": output.precisions,
            "bp": output.bp,
            "sys_len": output.sys_len,
            "ref_len": output.ref_len,
        }

"""The answer `finetune` reports is the answer users get: the `fourfold-question-answering` pipeline and the
question-answering evaluation (windows -> logits -> squad metrics) decode the same model's logits alike.

The model is a real (untrained) QA checkpoint whose logits a forward hook replaces with a hash of each window's
tokens: arbitrary, varied from example to example, exact in float32 and on 2**20 levels (near-ties improbable),
whatever the random weights or the machine's float rounding (an untrained head's own logits follow the token
embedding, so every context can pick the same word). The pipeline's answers become the references of the evaluation's
own `compute_metrics`, so an exact-match of 100 means every example was decoded to the same text (and SQuAD v2's "no
answer" the same way when it competes).
"""

import random

import pytest
import torch
from datasets import Dataset
from finetune_helpers import WORDS
from hub_helpers import save_checkpoint
from transformers import EvalPrediction, pipeline

from fourfold.modeling import FourfoldEncoderForQuestionAnswering
from fourfold.modeling.pipelines import QUESTION_ANSWERING_TASK
from fourfold.training.tasks import Columns, TaskOptions
from fourfold.training.tasks.question_answering import qa_features, span_metrics

MAX_LENGTH, DOC_STRIDE = 24, 6


def examples(count: int = 12) -> list[dict]:
    rng = random.Random(0)
    rows = []
    for index in range(count):
        context = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 60)))  # 1 to several windows
        rows.append({"question": f"which word {index} ?", "context": context})
    return rows


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qa")
    save_checkpoint(folder, "encoder", FourfoldEncoderForQuestionAnswering)
    qa = pipeline(QUESTION_ANSWERING_TASK, model=str(folder))
    qa.model.register_forward_hook(hashed_logits, with_kwargs=True)
    return qa


def hashed_logits(model, args, kwargs, output):
    """Start/end logits as a pseudo-random function of (window, position): a multiplicative hash of the running sum
    of token ids plus their total, on 2**20 levels over [-4, 4) (exact in float32): the same word scores differently
    in two contexts, and "no answer" (the [CLS] scores) competes with the best span."""
    ids = kwargs["input_ids"].long()  # (batch, length)
    prefix = torch.cumsum(ids * 7919 + 1, dim=-1)  # (batch, length): differs as soon as the windows differ
    prefix = prefix + 31 * ids.sum(-1, keepdim=True)  # and [CLS] (the "no answer" score) differs by window
    for name, salt in (("start_logits", 0), ("end_logits", 1)):
        key = (prefix * 2654435761 + salt * 40503) % 2**20
        setattr(output, name, key.to(torch.float32) / 2**17 - 4)
    return output


def evaluation_predictions(qa, rows: list[dict], options: TaskOptions) -> EvalPrediction:
    """What the Trainer hands `compute_metrics`: start/end logits per feature, padded to one length."""
    keep = {"input_ids", "attention_mask", "token_type_ids"}
    features = qa_features(
        {key: [row[key] for row in rows] for key in ("question", "context", "answers")},
        qa.tokenizer,
        options.columns,
        MAX_LENGTH,
        keep,
        with_offsets=True,
        doc_stride=DOC_STRIDE,
    )
    starts, ends = [], []
    with torch.no_grad():
        for index in range(len(features["input_ids"])):
            inputs = {key: torch.tensor([features[key][index]]) for key in keep if key in features}
            output = qa.model(**inputs)
            starts.append(output.start_logits[0]), ends.append(output.end_logits[0])
    padded = [
        torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-1e4).numpy() for rows in (starts, ends)
    ]
    return features, EvalPrediction(predictions=tuple(padded), label_ids=None)


@pytest.mark.parametrize("version_2", [False, True], ids=["squad", "squad_v2"])
def test_pipeline_and_evaluation_pick_the_same_answers(qa, version_2):
    rows = examples()
    # SQuAD v2: a margin at which "no answer" wins for some examples and loses for others.
    for threshold in [None] if not version_2 else [-margin / 4 for margin in range(100)]:
        kwargs = {"max_seq_len": MAX_LENGTH, "doc_stride": DOC_STRIDE, "null_score_diff_threshold": threshold}
        answers = [qa(question=row["question"], context=row["context"], **kwargs) for row in rows]
        if not version_2 or 2 <= sum(answer["answer"] == "" for answer in answers) <= len(rows) - 2:
            break
    else:
        pytest.fail("no margin gives a mix of answers and 'no answer'")
    assert len({answer["answer"] for answer in answers}) > 3  # varied answers, so agreement is not by accident
    for row, answer in zip(rows, answers, strict=True):  # the pipeline's answers are the references
        text = [answer["answer"]] if answer["answer"] else []
        row["answers"] = {"text": text, "answer_start": [answer["start"]] if text else []}
    options = TaskOptions(
        columns=Columns(), version_2_with_negative=version_2, null_score_diff_threshold=threshold or 0.0
    )
    features, predictions = evaluation_predictions(qa, rows, options)
    assert len(features["input_ids"]) > len(rows)  # long contexts were read in several windows
    metrics = span_metrics(Dataset.from_list(rows), features, options)(predictions)
    assert (metrics["exact"] if version_2 else metrics["exact_match"]) == pytest.approx(100.0)
    # A different decoding rule would disagree: the evaluation's answers move when the logits do.
    shuffled = EvalPrediction(predictions=tuple(p[:, ::-1].copy() for p in predictions.predictions), label_ids=None)
    moved = span_metrics(Dataset.from_list(rows), features, options)(shuffled)
    assert (moved["exact"] if version_2 else moved["exact_match"]) < 100.0

"""Questions with no answer (SQuAD v2: `answers = {"text": [], "answer_start": []}`): every window of such a question
points at the first token (0, 0); evaluation answers "" when the null score (first token's start + end logit, the
lowest over the windows) beats the best span by more than --null_score_diff_threshold; the SQuAD v2 metric scores it
(an empty prediction is right exactly when there is no answer). Malformed answers fail on the raw data, naming the
row."""

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from finetune_helpers import (
    NAMES,
    WORDS,
    finetune,
    question_answering_rows,
    tiny_checkpoints,  # noqa: F401  (session fixture)
    write_jsonl,
)
from test_qa_stride import ANSWER, QUESTION, as_batch, long_example
from transformers import AutoTokenizer, EvalPrediction

from fourfold.training.metrics import load_metric
from fourfold.training.tasks import Columns, TaskOptions
from fourfold.training.tasks.question_answering import best_span, check_qa_answers, qa_features, span_metrics

NO_ANSWER = {"text": [], "answer_start": []}


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoints):  # noqa: F811
    return AutoTokenizer.from_pretrained(tiny_checkpoints["encoder"])


def test_every_window_of_an_unanswerable_question_points_at_the_first_token(tokenizer):
    answered = long_example(words_before=8, words_after=30)
    unanswerable = {**long_example(words_before=8, words_after=30, seed=1), "answers": NO_ANSWER}
    features = qa_features(
        as_batch([answered, unanswerable]), tokenizer, Columns(), 24, {"input_ids"}, with_offsets=True, doc_stride=4
    )
    mine = [i for i, example in enumerate(features["example_id"]) if example == 1]
    assert len(mine) >= 3  # the answer text is in its context, yet no window may point at it
    assert all((features["start_positions"][i], features["end_positions"][i]) == (0, 0) for i in mine)
    # The answerable example in the same batch still points at its answer.
    theirs = [i for i, example in enumerate(features["example_id"]) if example == 0 and features["start_positions"][i]]
    assert theirs
    i = theirs[0]
    ids = features["input_ids"][i][features["start_positions"][i] : features["end_positions"][i] + 1]
    assert tokenizer.decode(ids).strip() == ANSWER


def crafted(features: dict) -> tuple[np.ndarray, np.ndarray]:
    """Zero logits per feature, padded with -100 to one width as the Trainer pads predictions."""
    lengths = [len(offsets) for offsets in features["offset_mapping"]]
    start = np.full((len(lengths), max(lengths)), -100.0)
    for i, length in enumerate(lengths):
        start[i, :length] = 0.0
    return start, start.copy()


def test_evaluation_answers_nothing_when_the_null_score_wins(tokenizer):
    short = {"question": QUESTION, "context": f"{ANSWER} held it .", "answers": {"text": [ANSWER], "answer_start": [0]}}
    unanswerable = {**long_example(words_before=8, words_after=30), "answers": NO_ANSWER}
    rows = [short, unanswerable]
    features = qa_features(as_batch(rows), tokenizer, Columns(), 24, {"input_ids"}, with_offsets=True, doc_stride=4)
    windows = [i for i, example in enumerate(features["example_id"]) if example == 1]
    assert features["example_id"][0] == 0 and len(windows) >= 3
    compute = span_metrics(Dataset.from_list(rows), features, TaskOptions(version_2_with_negative=True))
    # The short example's answer scores 8 + 8 = 16 against its null score 0: it is answered.
    start, end = crafted(features)
    start[0, features["start_positions"][0]] = end[0, features["end_positions"][0]] = 8.0
    # The unanswerable example: a one-token span, a whole filler word, scoring 2 + 2 = 4 in its second window ...
    ids, offsets = features["input_ids"][windows[1]], features["offset_mapping"][windows[1]]
    words = [tokenizer.decode([i]).strip() for i in ids]
    decoy = next(
        t
        for t in range(len(ids) - 1)
        if offsets[t] is not None and words[t] in WORDS and not words[t + 1].startswith("#")
    )
    decoy_text = words[decoy]
    start[windows[1], decoy] = end[windows[1], decoy] = 2.0
    # ... against null scores 3 + 3 = 6 in every window: no answer wins.
    start[windows, 0] = end[windows, 0] = 3.0

    def answers(threshold):  # each example's answer: the best span over its windows, or "" when no answer wins
        return [
            best_span(
                [
                    (start[i], end[i], features["offset_mapping"][i])
                    for i, e in enumerate(features["example_id"])
                    if e == k
                ],
                rows[k]["context"],
                null_score_diff_threshold=threshold,
            )
            for k in (0, 1)
        ]

    assert answers(0.0) == [ANSWER, ""]
    assert answers(1.5) == [ANSWER, ""]  # null 6 - span 4 = 2 > 1.5
    assert answers(2.5) == [ANSWER, decoy_text]  # 2 <= 2.5: the span is given
    assert answers(None) == [ANSWER, decoy_text]  # SQuAD v1.1: a span whenever one exists
    scores = compute(EvalPrediction(predictions=(start, end), label_ids=None))
    assert scores["exact"] == scores["f1"] == 100.0
    assert scores["HasAns_total"] == scores["NoAns_total"] == 1

    # The null score is the lowest over the windows: one window unsure that there is no answer (null 1 + 0 = 1 < 4)
    # lets the span win, however sure the others are.
    start[windows[0], 0], start[windows[-1], 0], end[windows[-1], 0] = 10.0, 1.0, 0.0
    assert answers(0.0) == [ANSWER, decoy_text]
    scores = compute(EvalPrediction(predictions=(start, end), label_ids=None))
    assert scores["exact"] == scores["f1"] == 50.0 and scores["NoAns_exact"] == 0.0


def test_squad_v2_metric_by_hand():
    predictions = [
        {"id": "a", "prediction_text": "white whale", "no_answer_probability": 0.0},
        {"id": "b", "prediction_text": "", "no_answer_probability": 0.0},
        {"id": "c", "prediction_text": "Ahab", "no_answer_probability": 0.0},
    ]
    references = [
        {"id": "a", "answers": {"text": ["the great white whale"], "answer_start": [0]}},
        {"id": "b", "answers": NO_ANSWER},
        {"id": "c", "answers": NO_ANSWER},
    ]
    scores = load_metric("squad_v2").compute(predictions=predictions, references=references)
    # a: [white, whale] vs [great, white, whale]: EM 0, precision 1, recall 2/3, F1 0.8.
    # b: no answer, predicted none: EM 1, F1 1.   c: no answer, predicted "Ahab": EM 0, F1 0.
    assert scores["exact"] == pytest.approx(100 * 1 / 3) and scores["f1"] == pytest.approx(100 * 1.8 / 3)
    assert scores["total"] == 3
    assert (scores["HasAns_exact"], scores["HasAns_f1"], scores["HasAns_total"]) == (0.0, pytest.approx(80.0), 1)
    assert (scores["NoAns_exact"], scores["NoAns_f1"], scores["NoAns_total"]) == (50.0, 50.0, 2)
    # Best over no-answer thresholds (the official sweep, questions in order of no_answer_probability, all 0 here):
    # it peaks after a, with b and c counted as abstained (right): exact (0 + 2) / 3, F1 (0.8 + 2) / 3.
    assert scores["best_exact"] == pytest.approx(200 / 3) and scores["best_f1"] == pytest.approx(280 / 3)


CONTEXT = "Ahab held the harpoon ."


@pytest.mark.parametrize(
    ("answers", "match"),
    [
        ({"text": ["Ahab"], "answer_start": [40]}, r"answer 'Ahab' is not at answer_start 40 of the 23-character"),
        ({"text": ["Ahab"], "answer_start": [-1]}, r"answer 'Ahab' is not at answer_start -1"),
        ({"text": ["harpoon"], "answer_start": [3]}, r"there: 'b held '\).*first appears at 14.*Fix answer_start"),
        ({"text": ["Starbuck"], "answer_start": [0]}, r"answer 'Starbuck' is not at answer_start 0.*drop the row"),
        ({"text": [""], "answer_start": [0]}, r"empty answer text.*use empty lists"),
        ({"text": ["Ahab"], "answer_start": []}, r"one character offset per answer text"),
    ],
)
def test_malformed_answers_raise_naming_the_row(answers, match):
    good = {"text": ["Ahab"], "answer_start": [0]}
    raw = DatasetDict(
        train=Dataset.from_list([{"question": QUESTION, "context": CONTEXT, "answers": good}]),
        validation=Dataset.from_dict(
            {"question": [QUESTION] * 2, "context": [CONTEXT] * 2, "answers": [good, answers]}
        ),
    )
    with pytest.raises(ValueError, match=r"validation row 1: column 'answers' holds .*" + match):
        check_qa_answers(raw, Columns())


@pytest.mark.parametrize(
    ("answers", "match"),
    [
        ({"text": ["Ahab"], "answer_start": ["0"]}, r"a string with an integer answer_start"),
        ("Ahab", r"needs SQuAD-style answers, \{'text': \[...\], 'answer_start': \[...\]\}"),
    ],
)
def test_answers_of_the_wrong_type_raise(answers, match):  # a whole column of them: Arrow holds one type per column
    raw = DatasetDict(train=Dataset.from_list([{"question": QUESTION, "context": CONTEXT, "answers": answers}]))
    with pytest.raises(ValueError, match=r"train row 0: column 'answers' holds .*" + match):
        check_qa_answers(raw, Columns())


def test_well_formed_answers_pass_and_report_unanswerable_questions():
    good = {"question": QUESTION, "context": CONTEXT, "answers": {"text": ["Ahab", "held"], "answer_start": [0, 5]}}
    assert check_qa_answers(DatasetDict(train=Dataset.from_list([good])), Columns()) is False
    rows = [good, {**good, "answers": NO_ANSWER}]
    assert check_qa_answers(DatasetDict(train=Dataset.from_list(rows)), Columns()) is True


def unanswerable_rows(n: int = 32, seed: int = 1) -> list[dict]:
    """question_answering_rows' contexts, but the question asks about a thing nobody held."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, held, asked = rng.choice(NAMES), *rng.sample(WORDS, 2)
        filler = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        rows.append(
            {
                "question": f"Who held the {asked} ?",
                "context": f"{filler} . {name} held the {held} . {filler}",
                "answers": NO_ANSWER,
            }
        )
    return rows


def test_finetune_on_a_mix_scores_squad_v2(tiny_checkpoints, tmp_path):  # noqa: F811
    import random

    rows = question_answering_rows(48) + unanswerable_rows(32)
    random.Random(0).shuffle(rows)
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    args = ["--model_name_or_path", str(tiny_checkpoints["encoder"]), "--task", "question-answering"]
    results = finetune(tmp_path / "out", *args, "--train_files", data, "--null_score_diff_threshold", "0.5")
    assert results["arguments"]["data"]["version_2_with_negative"] is True  # turned on by the data
    assert results["arguments"]["evaluation"]["null_score_diff_threshold"] == 0.5
    metrics = results["metrics"]
    assert {"eval_exact", "eval_f1", "eval_HasAns_f1", "eval_NoAns_f1", "eval_NoAns_total"} <= set(metrics)
    assert metrics["eval_HasAns_total"] + metrics["eval_NoAns_total"] == metrics["eval_total"] == 16
    assert 0 <= metrics["eval_f1"] <= 100
    assert metrics["eval_loss"] < results["metrics_before"]["eval_before_loss"]


def test_malformed_answer_fails_before_training(tiny_checkpoints, tmp_path):  # noqa: F811
    rows = question_answering_rows(20)
    rows[3]["answers"] = {"text": [rows[3]["answers"]["text"][0]], "answer_start": [1]}
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    args = ["--model_name_or_path", str(tiny_checkpoints["encoder"]), "--task", "question-answering"]
    with pytest.raises(
        ValueError, match=r"(train|validation) row \d+: column 'answers' holds .* not at answer_start 1"
    ):
        finetune(tmp_path / "out", *args, "--train_files", data)
    assert not (tmp_path / "out" / "results.json").exists()

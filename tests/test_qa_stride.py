"""Question answering over contexts longer than `--max_length`: the context becomes overlapping windows
(`--doc_stride` tokens of overlap), each window is one feature that points at the answer only when it holds all of it,
and scoring takes the best span over an example's windows. Nothing is cut away; bad strides and questions that leave no
room for the context fail with the flag to change."""

import itertools
import random

import numpy as np
import pytest
from datasets import Dataset
from finetune_helpers import (
    NAMES,
    WORDS,
    finetune,
    tiny_checkpoints,  # noqa: F401  (session fixture)
    write_jsonl,
)
from transformers import AutoTokenizer, EvalPrediction

from fourfold.training.tasks import Columns, TaskOptions
from fourfold.training.tasks.question_answering import best_span, check_doc_stride, qa_features, span_metrics

QUESTION = "Who held the harpoon"
ANSWER = "Queequeg and Tashtego"  # several tokens, so a window can hold part of it


def long_example(words_before: int = 40, words_after: int = 30, seed: int = 0) -> dict:
    """A context of filler words with the answer well past the first window; the filler never contains it."""
    rng = random.Random(seed)
    before = " ".join(rng.choice(WORDS) for _ in range(words_before))
    after = " ".join(rng.choice(WORDS) for _ in range(words_after))
    context = f"{before} {ANSWER} held the harpoon {after}"
    return {"question": QUESTION, "context": context, "answers": {"text": [ANSWER], "answer_start": [len(before) + 1]}}


def as_batch(rows: list[dict]) -> dict:
    return {key: [row[key] for row in rows] for key in rows[0]}


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoints):  # noqa: F811
    return AutoTokenizer.from_pretrained(tiny_checkpoints["encoder"])


def context_positions(features: dict, i: int) -> list[int]:
    return [t for t, o in enumerate(features["offset_mapping"][i]) if o is not None]


@pytest.mark.parametrize("doc_stride", [0, 3, 8, 11])
def test_long_context_becomes_windows_that_point_at_the_answer_only_when_they_hold_it(tokenizer, doc_stride):
    example = long_example()
    features = qa_features(
        as_batch([example]), tokenizer, Columns(), 24, {"input_ids"}, with_offsets=True, doc_stride=doc_stride
    )
    n = len(features["input_ids"])
    assert n >= 3 and features["example_id"] == [0] * n
    assert all(len(ids) <= 24 for ids in features["input_ids"])

    holds_answer = []
    for i in range(n):
        ids, start, end = features["input_ids"][i], features["start_positions"][i], features["end_positions"][i]
        window_text = tokenizer.decode([ids[t] for t in context_positions(features, i)])
        holds_answer.append(ANSWER in window_text)  # reference: the window's decoded context contains the answer
        if holds_answer[-1]:
            assert tokenizer.decode(ids[start : end + 1]).strip() == ANSWER
        else:
            assert (start, end) == (0, 0)
    assert not holds_answer[0]  # the answer lies beyond the first window
    # An overlap at least as long as the answer guarantees that a window holds all of it; a shorter one may split it
    # (stride 3 does here: each window holds only part of it, and all of them point at (0, 0)).
    if doc_stride >= len(tokenizer(ANSWER, add_special_tokens=False)["input_ids"]):
        assert any(holds_answer)

    # Nothing is cut: the windows together cover every context token, consecutive windows share `doc_stride` of them.
    spans = [[features["offset_mapping"][i][t] for t in context_positions(features, i)] for i in range(n)]
    whole = tokenizer(example["context"], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert sorted({tuple(s) for window in spans for s in window}) == [tuple(s) for s in whole]
    for left, right in itertools.pairwise(spans):
        assert left[len(left) - doc_stride :] == right[:doc_stride]


def test_short_context_stays_one_feature(tokenizer):
    row = {"question": QUESTION, "context": f"{ANSWER} held it .", "answers": {"text": [ANSWER], "answer_start": [0]}}
    features = qa_features(as_batch([row]), tokenizer, Columns(), 64, {"input_ids"}, with_offsets=True, doc_stride=8)
    assert features["example_id"] == [0]
    start, end = features["start_positions"][0], features["end_positions"][0]
    assert tokenizer.decode(features["input_ids"][0][start : end + 1]).strip() == ANSWER


def crafted_logits(features: dict, true_window: int, decoy_window: int, true_score: float, decoy_score: float):
    """Start/end logits per feature, padded to one width with -100 as the Trainer pads predictions: the answer's
    tokens score `true_score` in `true_window`, the first context token `decoy_score` in `decoy_window`, all else 0."""
    lengths = [len(offsets) for offsets in features["offset_mapping"]]
    start = np.full((len(lengths), max(lengths)), -100.0)
    end = np.full_like(start, -100.0)
    for i, length in enumerate(lengths):
        start[i, :length] = end[i, :length] = 0.0
    start[true_window, features["start_positions"][true_window]] = true_score
    end[true_window, features["end_positions"][true_window]] = true_score
    decoy = context_positions(features, decoy_window)[0]
    start[decoy_window, decoy] = end[decoy_window, decoy] = decoy_score
    return start, end


def test_evaluation_takes_the_best_span_over_an_example_s_windows(tokenizer):
    short = {"question": QUESTION, "context": f"{ANSWER} held it .", "answers": {"text": [ANSWER], "answer_start": [0]}}
    # Answer about 8 context tokens in: with 14 tokens of room for the context, it lies wholly in window 1 only.
    rows = [short, long_example(words_before=8, words_after=30)]
    features = qa_features(as_batch(rows), tokenizer, Columns(), 24, set(), with_offsets=True, doc_stride=4)
    windows = [i for i, example in enumerate(features["example_id"]) if example == 1]
    answered = [i for i in windows if features["start_positions"][i] != 0]
    assert features["example_id"][0] == 0 and len(windows) >= 3 and answered[0] == windows[1]
    compute = span_metrics(Dataset.from_list(rows), features, TaskOptions())

    # The answer scores highest in the long example's second window; a lower decoy sits in its first window.
    start, end = crafted_logits(features, windows[1], windows[0], true_score=8.0, decoy_score=5.0)
    start[0, features["start_positions"][0]] = end[0, features["end_positions"][0]] = 8.0  # the short example's
    long_windows = [(start[i], end[i], features["offset_mapping"][i]) for i in windows]
    assert best_span(long_windows, rows[1]["context"]) == ANSWER
    scores = compute(EvalPrediction(predictions=(start, end), label_ids=None))
    assert scores == {"exact_match": 100.0, "f1": 100.0}

    # The decoy wins when it scores higher: the choice is made across windows, by score.
    start, end = crafted_logits(features, windows[1], windows[0], true_score=5.0, decoy_score=8.0)
    decoy = context_positions(features, windows[0])[0]
    decoy_text = rows[1]["context"][slice(*features["offset_mapping"][windows[0]][decoy])]
    long_windows = [(start[i], end[i], features["offset_mapping"][i]) for i in windows]
    assert best_span(long_windows, rows[1]["context"]) == decoy_text != ANSWER

    with pytest.raises(RuntimeError, match="predictions for"):
        compute(EvalPrediction(predictions=(start[:-1], end[:-1]), label_ids=None))


@pytest.mark.parametrize(
    ("doc_stride", "max_length", "match"),
    [
        (-1, 24, r"--doc_stride -1.*integer >= 0"),
        (2.5, 24, r"--doc_stride 2.5.*integer >= 0"),
        (True, 24, r"--doc_stride True.*integer >= 0"),
        (24, 24, r"--doc_stride 24 must be smaller than --max_length 24.*Lower --doc_stride"),
    ],
)
def test_bad_doc_stride(doc_stride, max_length, match):
    with pytest.raises(ValueError, match=match):
        check_doc_stride(doc_stride, max_length)


def test_doc_stride_must_leave_the_windows_room_to_advance(tokenizer):
    question_tokens = len(tokenizer(QUESTION, add_special_tokens=False)["input_ids"])
    room = 24 - question_tokens - tokenizer.num_special_tokens_to_add(pair=True)
    batch = as_batch([long_example()])
    with pytest.raises(ValueError, match=rf"--doc_stride {room} must be smaller than the {room} tokens.*lower"):
        qa_features(batch, tokenizer, Columns(), 24, set(), with_offsets=False, doc_stride=room)
    assert qa_features(batch, tokenizer, Columns(), 24, set(), with_offsets=False, doc_stride=room - 1)


def test_question_longer_than_max_length(tokenizer):
    row = {**long_example(), "question": " ".join(["who held the harpoon"] * 10)}
    with pytest.raises(ValueError, match=r"leaves no room for the context in --max_length 24.*Raise --max_length"):
        qa_features(as_batch([row]), tokenizer, Columns(), 24, set(), with_offsets=False, doc_stride=0)


def test_bad_doc_stride_fails_before_training(tiny_checkpoints, tmp_path):  # noqa: F811
    data = write_jsonl(tmp_path / "data.jsonl", [long_example(seed=s) for s in range(10)])
    args = ["--model_name_or_path", str(tiny_checkpoints["encoder"]), "--task", "question-answering"]
    with pytest.raises(ValueError, match="--doc_stride 64 must be smaller than --max_length 32"):
        finetune(tmp_path / "out", *args, "--train_files", data, "--max_length", "32", "--doc_stride", "64")
    assert not (tmp_path / "out" / "results.json").exists()


def long_context_rows(n: int = 64, seed: int = 0) -> list[dict]:
    """question_answering_rows with long filler: most contexts need several 32-token windows."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, thing = rng.choice(NAMES), rng.choice(WORDS)
        before = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 40)))
        after = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 20)))
        context = f"{before} . {name} held the {thing} . {after}"
        rows.append(
            {
                "question": f"Who held the {thing} ?",
                "context": context,
                "answers": {"text": [name], "answer_start": [context.index(f" . {name}") + 3]},
            }
        )
    return rows


def test_finetune_on_long_contexts_learns(tiny_checkpoints, tmp_path):  # noqa: F811
    rows = long_context_rows()
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    args = ["--model_name_or_path", str(tiny_checkpoints["encoder"]), "--task", "question-answering"]
    args += ["--train_files", data, "--max_length", "32", "--doc_stride", "8"]
    results = finetune(tmp_path / "out", *args, steps=40)
    examples = len(rows) - round(len(rows) * 0.2)  # 20% held out
    assert results["num_train_rows"] > examples  # windows, not examples
    assert results["arguments"]["data"]["doc_stride"] == 8
    assert results["metrics"]["eval_loss"] < results["metrics_before"]["eval_before_loss"]
    # Scored per example over its windows: 69-85 F1 over seeds 0-2 (13 held-out examples, 50-70 windows).
    assert results["metrics"]["eval_f1"] >= 50 > results["metrics_before"]["eval_before_f1"]

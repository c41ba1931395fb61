"""Extractive QA, `modeling/question_answering.py`: windows over a long context, the doc_stride rule, and the one
span decoder (used by the pipeline and by evaluation) on hand-made logits with known answers; then the pipeline end
to end on a tiny model."""

import itertools
import math

import numpy as np
import pytest
import torch
from hub_helpers import save_checkpoint, tokenizer_for
from transformers import pipeline

from fourfold.modeling import FourfoldEncoderForQuestionAnswering
from fourfold.modeling.pipelines import QUESTION_ANSWERING_TASK
from fourfold.modeling.question_answering import (
    Answer,
    check_doc_stride,
    context_room,
    decode_answers,
    question_windows,
)

# A context of 10 one-character words: token t of the context covers characters [2t, 2t + 1).
CONTEXT = "a b c d e f g h i j"


def window_offsets(first: int, count: int, question_tokens: int = 2) -> list:
    """Offsets of a window: [CLS] + question + [SEP] (None), context tokens first..first+count-1, [SEP] (None)."""
    return [None] * (question_tokens + 2) + [(2 * t, 2 * t + 1) for t in range(first, first + count)] + [None]


def logits_for(offsets: list, scores: dict[int, float]) -> torch.Tensor:
    """Zeros, except `scores` at the positions of the given context tokens (by context token index)."""
    row = torch.zeros(len(offsets))
    for position, span in enumerate(offsets):
        if span is not None and span[0] // 2 in scores:
            row[position] = scores[span[0] // 2]
    return row


def text_of(first: int, last: int) -> str:
    return CONTEXT[2 * first : 2 * last + 1]


# --------------------------------------------------------------------------------------------------------------------
# The decoder
# --------------------------------------------------------------------------------------------------------------------


def test_the_docstring_example_every_valid_span_ranked_by_start_plus_end():
    """One window of 4 tokens, context = tokens 1..3, answers of at most 2 tokens: 5 candidates."""
    offsets = [[None, (0, 1), (2, 3), (4, 5)]]
    # Token 0 (not context) has the best start and end; the best context pair, (3, 2) = 3 + 2, ends before it
    # starts. The candidates, best first: (1, 2) = 0.5 + 2, (2, 2) = 0 + 2, (3, 3) = 3 - 1.5, (1, 1) = 0.5, (2, 3).
    start = torch.tensor([[9.0, 0.5, 0.0, 3.0]])
    end = torch.tensor([[9.0, 0.0, 2.0, -1.5]])
    answers = decode_answers(start, end, offsets, "a b c", max_answer_length=2, top_k=10)
    assert [(a.start, a.end) for a in answers] == [(0, 3), (2, 3), (4, 5), (0, 1), (2, 5)]
    assert [a.text for a in answers] == ["a b", "b", "c", "a", "b c"]
    # score: the softmax of the candidates' start + end over all of them.
    scores = torch.tensor([2.5, 2.0, 1.5, 0.5, -1.5], dtype=torch.float64)
    assert [a.score for a in answers] == pytest.approx(scores.softmax(0).tolist())
    assert sum(a.score for a in answers) == pytest.approx(1.0)
    one_token = decode_answers(start, end, offsets, "a b c", max_answer_length=1, top_k=2)
    assert [a.text for a in one_token] == ["b", "c"]
    assert isinstance(one_token[0], Answer)


def test_the_best_span_over_two_windows_is_found_in_the_window_that_holds_it():
    """Windows of context tokens 0-5 and 4-9 (overlap 2). The answer g..h (tokens 6-7) lies in window 2 only; window 1
    has a weaker decoy b..c."""
    offsets = [window_offsets(0, 6), window_offsets(4, 6)]
    start = torch.stack([logits_for(offsets[0], {1: 3.0}), logits_for(offsets[1], {6: 4.0})])
    end = torch.stack([logits_for(offsets[0], {2: 3.0}), logits_for(offsets[1], {7: 4.0})])
    best, second = decode_answers(start, end, offsets, CONTEXT, top_k=2)
    assert (best.text, best.start, best.end) == (text_of(6, 7), 12, 15) == ("g h", 12, 15)
    assert second.text == text_of(1, 2)
    # The decoy wins when it scores higher: windows compare by raw start + end logits.
    start[0] *= 3
    end[0] *= 3
    assert decode_answers(start, end, offsets, CONTEXT)[0].text == text_of(1, 2)


def test_a_span_seen_in_two_overlapping_windows_counts_once_with_its_best_score():
    offsets = [window_offsets(0, 6), window_offsets(4, 6)]  # tokens 4 and 5 are in both windows
    start = torch.stack([logits_for(offsets[0], {4: 2.0}), logits_for(offsets[1], {4: 5.0})])
    end = torch.stack([logits_for(offsets[0], {5: 2.0}), logits_for(offsets[1], {5: 5.0})])
    answers = decode_answers(start, end, offsets, CONTEXT, top_k=200)
    texts = [a.text for a in answers]
    # Spans inside a window: 21 in each, 3 of them (inside tokens 4-5) in both and counted once.
    assert len(texts) == len(set(texts)) == 21 + 21 - 3
    assert answers[0].text == text_of(4, 5)
    # Best scores per distinct span: e..f 5 + 5 (not window 1's 2 + 2); e..e, e..g-j, f..f 5 (window 2);
    # a-d..f 2 (window 1 only); the other 28 spans 0.
    z = math.exp(10) + 6 * math.exp(5) + 4 * math.exp(2) + 28
    assert answers[0].score == pytest.approx(math.exp(10) / z)
    assert sum(a.score for a in answers) == pytest.approx(1.0)


def test_rows_padded_past_their_window_and_numpy_rows_decode_alike():
    """As the Trainer pads predictions (-100 past a window's end): positions past the offsets are ignored."""
    offsets = [window_offsets(0, 4), window_offsets(2, 6)]  # windows of different lengths
    width = max(len(o) for o in offsets) + 3
    start = np.full((2, width), -100.0, dtype=np.float32)
    end = np.full((2, width), -100.0, dtype=np.float32)
    for w, row in enumerate(offsets):
        start[w, : len(row)] = logits_for(row, {3: 1.0}).numpy()
        end[w, : len(row)] = logits_for(row, {5: 1.0}).numpy()
    start[0, -1] = end[0, -1] = 1000.0  # padding: must not matter
    from_numpy = decode_answers(start, end, offsets, CONTEXT, top_k=3)
    rows = [(torch.tensor(start[w, : len(o)]), torch.tensor(end[w, : len(o)])) for w, o in enumerate(offsets)]
    from_rows = decode_answers([r[0] for r in rows], [r[1] for r in rows], offsets, CONTEXT, top_k=3)
    assert from_numpy == from_rows
    assert from_numpy[0].text == text_of(3, 5)


def test_max_answer_length_counts_tokens():
    offsets = [window_offsets(0, 10)]
    start, end = logits_for(offsets[0], {1: 5.0})[None], logits_for(offsets[0], {4: 5.0})[None]
    assert decode_answers(start, end, offsets, CONTEXT, max_answer_length=4)[0].text == text_of(1, 4)
    assert decode_answers(start, end, offsets, CONTEXT, max_answer_length=3)[0].text != text_of(1, 4)


def test_ties_go_to_the_shorter_then_the_earlier_answer():
    offsets = [window_offsets(0, 10)]
    start = logits_for(offsets[0], {2: 10.0})[None]
    end = logits_for(offsets[0], {6: 10.0})[None]
    answers = decode_answers(start, end, offsets, CONTEXT, max_answer_length=2, top_k=4)
    # All four score 10: c, c d (start at 2) and f g, g (end at 6).
    assert [a.text for a in answers] == ["c", "g", "c d", "f g"]
    assert len({a.score for a in answers}) == 1


def null_windows(null_scores: list[tuple[float, float]], span_score: float):
    """Two windows; window 1 holds a one-token span (token 3) of start + end = span_score; first tokens as given."""
    offsets = [window_offsets(0, 6), window_offsets(4, 6)]
    start = torch.stack([logits_for(offsets[0], {3: span_score / 2}), logits_for(offsets[1], {})])
    end = start.clone()
    for w, (s, e) in enumerate(null_scores):
        start[w, 0], end[w, 0] = s, e
    return start, end, offsets


def test_no_answer_wins_when_the_null_score_beats_the_best_span_by_more_than_the_threshold():
    # Null scores 3 + 3 = 6 and 4 + 4 = 8: the lowest, 6, counts. The best span scores 4: null - best = 2.
    start, end, offsets = null_windows([(3.0, 3.0), (4.0, 4.0)], span_score=4.0)

    def answer(threshold):
        return decode_answers(start, end, offsets, CONTEXT, null_score_diff_threshold=threshold)[0]

    assert answer(0.0)[:3] == ("", 0, 0)
    assert answer(0.0).text == answer(1.5).text == ""  # 2 > 1.5
    assert answer(2.0).text == answer(2.5).text == text_of(3, 3)  # 2 is not > 2: the span is given
    assert answer(None).text == text_of(3, 3)  # SQuAD v1.1: a span whenever one exists
    # One window unsure that there is no answer (null 1 + 0 = 1 < 4) lets the span win, however sure the other is.
    start[0, 0], end[0, 0] = 1.0, 0.0
    start[1, 0] = end[1, 0] = 50.0
    assert answer(0.0).text == text_of(3, 3)


def test_top_k_places_no_answer_by_the_threshold_and_scores_it_with_the_others():
    start, end, offsets = null_windows([(3.0, 3.0), (4.0, 4.0)], span_score=4.0)
    answers = decode_answers(start, end, offsets, CONTEXT, top_k=3, null_score_diff_threshold=0.0)
    assert answers[0].text == "" and (answers[0].start, answers[0].end) == (0, 0)
    assert answers[1].text == text_of(3, 3)
    # The probabilities cover every candidate and the null answer: they sum to 1 over all of them.
    everything = decode_answers(start, end, offsets, CONTEXT, top_k=1000, null_score_diff_threshold=0.0)
    assert sum(a.score for a in everything) == pytest.approx(1.0)
    # null 6; d 4; d..e, d..f, a..d, b..d, c..d 2 (window 1); the other 33 spans (39 in all) 0.
    z = math.exp(6.0) + math.exp(4.0) + 5 * math.exp(2.0) + 33
    assert answers[0].score == pytest.approx(math.exp(6.0) / z)
    # With a threshold of 3, null (6) ranks below the span (4: 6 - 4 = 2 <= 3), above those scoring 0 (6 - 0 > 3).
    answers = decode_answers(start, end, offsets, CONTEXT, top_k=3, null_score_diff_threshold=3.0)
    assert [a.text for a in answers[:2]] == [text_of(3, 3), ""]
    assert answers[1].score > answers[0].score  # the order is the threshold's, the scores the softmax's


def test_no_context_token_means_no_answer():
    offsets = [[None, None, None]]
    logits = torch.zeros(1, 3)
    assert decode_answers(logits, logits, offsets, "abc") == [Answer("", 0, 0, 0.0)]
    assert decode_answers(logits, logits, offsets, "abc", null_score_diff_threshold=0.0) == [Answer("", 0, 0, 1.0)]


# --------------------------------------------------------------------------------------------------------------------
# Windows and the doc_stride rule
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_for("encoder")


LONG_CONTEXT = "the cat sat on the mat . " * 6 + "the quick brown fox jumps over the lazy dog ."


@pytest.mark.parametrize("doc_stride", [0, 3, 7])
def test_windows_overlap_by_doc_stride_and_cover_the_whole_context(tokenizer, doc_stride):
    windows = question_windows(tokenizer, "who jumps ?", LONG_CONTEXT, max_length=20, doc_stride=doc_stride)
    assert len(windows.offsets) >= 3 and windows.example_ids == [0] * len(windows.offsets)
    assert all(len(ids) <= 20 for ids in windows.encoding["input_ids"])
    spans = [[o for o in row if o is not None] for row in windows.offsets]
    whole = tokenizer(LONG_CONTEXT, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert sorted({s for row in spans for s in row}) == [tuple(s) for s in whole]  # nothing is cut away
    for left, right in itertools.pairwise(spans):
        assert left[len(left) - doc_stride :] == right[:doc_stride]
    # None exactly outside the context: the question and special tokens.
    for w, row in enumerate(windows.offsets):
        sequence_ids = windows.encoding.sequence_ids(w)
        assert [o is not None for o in row] == [s == 1 for s in sequence_ids]


def test_windows_of_several_questions_point_back_at_their_examples(tokenizer):
    windows = question_windows(
        tokenizer, ["who jumps ?", "where ?"], [LONG_CONTEXT, "on the mat"], max_length=20, doc_stride=4
    )
    assert windows.example_ids[-1] == 1 and windows.example_ids.count(1) == 1
    assert windows.example_ids[:-1] == [0] * (len(windows.offsets) - 1)


@pytest.mark.parametrize(
    ("doc_stride", "names", "match"),
    [
        (-1, ("doc_stride", "max_seq_len"), r"doc_stride=-1: .*integer >= 0; pass e\.g\. doc_stride=32"),
        (2.5, ("doc_stride", "max_length"), r"doc_stride=2\.5: .*integer >= 0"),
        (True, ("doc_stride", "max_length"), r"doc_stride=True: .*integer >= 0"),
        (20, ("doc_stride", "max_seq_len"), r"doc_stride=20 must be smaller than max_seq_len=20.*Lower doc_stride"),
        (20, ("--doc_stride", "--max_length"), r"--doc_stride 20 must be smaller than --max_length 20.*Lower --doc"),
    ],
)
def test_bad_doc_stride_names_the_argument_and_the_fix(doc_stride, names, match):
    with pytest.raises(ValueError, match=match):
        check_doc_stride(doc_stride, 20, argument_names=names)


def test_doc_stride_must_leave_the_windows_room_to_advance(tokenizer):
    room = context_room(tokenizer, "who jumps ?", 20)
    question_tokens = len(tokenizer("who jumps ?", add_special_tokens=False)["input_ids"])
    assert room == 20 - question_tokens - tokenizer.num_special_tokens_to_add(pair=True)
    with pytest.raises(
        ValueError, match=rf"doc_stride={room} must be smaller than the {room} tokens.*lower doc_stride"
    ):
        question_windows(tokenizer, "who jumps ?", LONG_CONTEXT, max_length=20, doc_stride=room)
    assert question_windows(tokenizer, "who jumps ?", LONG_CONTEXT, max_length=20, doc_stride=room - 1).offsets
    with pytest.raises(ValueError, match=r"leaves no room for the context in max_length=8.*Raise max_length"):
        question_windows(tokenizer, "the cat sat on the mat", LONG_CONTEXT, max_length=8, doc_stride=0)
    check_doc_stride(np.int64(3), 20, tokenizer=tokenizer, questions=["who jumps ?"])  # numpy ints are integers


# --------------------------------------------------------------------------------------------------------------------
# The pipeline, end to end
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoder-qa")
    save_checkpoint(folder, "encoder", FourfoldEncoderForQuestionAnswering)
    return pipeline(QUESTION_ANSWERING_TASK, model=str(folder))


def test_pipeline_answers_are_the_decoders_on_the_models_own_logits(qa):
    """Untouched random model, long context: the pipeline's top 3 are `decode_answers` over the model's windows."""
    question = "who jumps ?"
    results = qa(question=question, context=LONG_CONTEXT, max_seq_len=20, doc_stride=5, top_k=3)
    windows = question_windows(
        qa.tokenizer, question, LONG_CONTEXT, max_length=20, doc_stride=5, padding="longest", return_tensors="pt"
    )
    inputs = {name: windows.encoding[name] for name in ("input_ids", "attention_mask")}
    if qa.model.config.type_vocab_size > 0:
        inputs["token_type_ids"] = windows.encoding["token_type_ids"]
    with torch.no_grad():
        output = qa.model(**inputs)
    expected = decode_answers(output.start_logits, output.end_logits, windows.offsets, LONG_CONTEXT, top_k=3)
    assert [(r["answer"], r["start"], r["end"]) for r in results] == [(a.text, a.start, a.end) for a in expected]
    assert [r["score"] for r in results] == pytest.approx([a.score for a in expected])
    assert all(LONG_CONTEXT[r["start"] : r["end"]] == r["answer"] for r in results)
    assert results[0]["score"] >= results[1]["score"] >= results[2]["score"]


def rig(model, start_token_id: int, end_token_id: int, first_token: float = 0.0):
    """The QA head's logits replaced: 10 at the given start / end token, `first_token` at position 0, else 0."""

    def hook(module, args, kwargs, output):
        input_ids = kwargs["input_ids"]
        output.start_logits = (input_ids == start_token_id).float() * 10
        output.end_logits = (input_ids == end_token_id).float() * 10
        output.start_logits[:, 0] = output.end_logits[:, 0] = first_token
        return output

    return model.register_forward_hook(hook, with_kwargs=True)


def test_pipeline_handles_impossible_answers_on_request(qa):
    fox, dog = qa.tokenizer.convert_tokens_to_ids(["fox", "dog"])
    handle = rig(qa.model, fox, dog, first_token=11.0)  # null 22 against the span's 20
    try:
        kwargs = {"question": "who jumps ?", "context": "the quick brown fox jumps over the lazy dog ."}
        assert qa(**kwargs)["answer"] == "fox jumps over the lazy dog"  # by default a span is always given
        nothing = qa(**kwargs, handle_impossible_answer=True)
        assert (nothing["answer"], nothing["start"], nothing["end"]) == ("", 0, 0)
        assert 0.5 < nothing["score"] < 1.0
        assert qa(**kwargs, null_score_diff_threshold=2.5)["answer"] == "fox jumps over the lazy dog"  # 2 <= 2.5
        both = qa(**kwargs, handle_impossible_answer=True, top_k=2)
        assert [a["answer"] for a in both] == ["", "fox jumps over the lazy dog"]
        with pytest.raises(ValueError, match="handle_impossible_answer=False"):
            qa(**kwargs, handle_impossible_answer=False, null_score_diff_threshold=1.0)
    finally:
        handle.remove()


def test_pipeline_refuses_a_doc_stride_that_does_not_fit(qa):
    room = context_room(qa.tokenizer, "who jumps ?", 20)
    with pytest.raises(ValueError, match=rf"doc_stride={room} must be smaller than the {room} tokens.*max_seq_len=20"):
        qa(question="who jumps ?", context=LONG_CONTEXT, max_seq_len=20, doc_stride=room)
    with pytest.raises(ValueError, match=r"doc_stride=20 must be smaller than max_seq_len=20"):
        qa(question="who jumps ?", context=LONG_CONTEXT, max_seq_len=20, doc_stride=20)
    # The default stride fits whatever the question: half the room it leaves.
    assert qa(question="who jumps ?", context=LONG_CONTEXT, max_seq_len=20)["answer"]

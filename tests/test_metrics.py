"""The bundled evaluate modules against values worked out by hand (and the Hub-or-local loading rule)."""

import math

import evaluate
import pytest

from fourfold.training import metrics
from fourfold.training.metrics import LOCAL_METRICS, load_metric, perplexity


@pytest.fixture(autouse=True)
def fresh_metric_cache():
    """Each test sees load_metric's first load in the process (it caches the modules it loads)."""
    metrics._load_metric.cache_clear()
    yield
    metrics._load_metric.cache_clear()


def test_every_metric_is_bundled():
    assert set(LOCAL_METRICS) == {"accuracy", "f1", "seqeval", "squad", "squad_v2", "rouge", "sacrebleu"}


def test_accuracy():
    # 3 of 4 right.
    assert load_metric("accuracy").compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0]) == {"accuracy": 0.75}


def test_f1_binary_and_macro():
    f1 = load_metric("f1")
    # Class 1: predicted at rows 0, 1; true at rows 0, 2 -> precision 1/2, recall 1/2, F1 1/2.
    assert f1.compute(predictions=[1, 1, 0, 0], references=[1, 0, 1, 0])["f1"] == pytest.approx(0.5)
    # Three classes. Class 0: P 1/1, R 1/2 -> 2/3. Class 1: P 1/2, R 1/1 -> 2/3. Class 2: P 1/1, R 1/1 -> 1.
    macro = f1.compute(predictions=[0, 1, 1, 2], references=[0, 0, 1, 2], average="macro")["f1"]
    assert macro == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_seqeval_counts_whole_entities():
    seqeval = load_metric("seqeval")
    references = [["B-PER", "I-PER", "O", "B-LOC"]]
    # PER found, LOC missed: precision 1/1, recall 1/2, F1 2/3; 3 of 4 tags right.
    scores = seqeval.compute(predictions=[["B-PER", "I-PER", "O", "O"]], references=references)
    assert scores["overall_precision"] == pytest.approx(1.0)
    assert scores["overall_recall"] == pytest.approx(0.5)
    assert scores["overall_f1"] == pytest.approx(2 / 3)
    assert scores["overall_accuracy"] == pytest.approx(0.75)
    assert scores["PER"]["f1"] == pytest.approx(1.0) and scores["LOC"]["recall"] == 0
    # A split entity is a miss, not half a hit: B-PER B-PER predicts two one-token PERs, neither is the true span.
    scores = seqeval.compute(predictions=[["B-PER", "B-PER", "O", "B-LOC"]], references=references)
    assert scores["PER"]["precision"] == 0 and scores["overall_precision"] == pytest.approx(1 / 3)


def test_squad_exact_match_and_f1():
    squad = load_metric("squad")
    answers = {"text": ["the great white whale"], "answer_start": [0]}
    scores = squad.compute(
        predictions=[{"id": "a", "prediction_text": "The Whale!"}, {"id": "b", "prediction_text": "white whale"}],
        references=[
            {"id": "a", "answers": {"text": ["whale", "a whale"], "answer_start": [4, 2]}},
            {"id": "b", "answers": answers},
        ],
    )
    # a: normalised "whale" == "whale" -> EM 1, F1 1. b: tokens [white, whale] vs [great, white, whale]:
    # precision 2/2, recall 2/3, F1 0.8, EM 0. Means in percent: EM 50, F1 90.
    assert scores == {"exact_match": pytest.approx(50.0), "f1": pytest.approx(90.0)}


def test_rouge():
    scores = load_metric("rouge").compute(predictions=["the cat sat"], references=["the cat sat down"])
    # ROUGE-1: 3 shared unigrams, P 3/3, R 3/4 -> F 6/7. ROUGE-2: 2 shared bigrams of 2 and 3 -> F 0.8.
    assert scores["rouge1"] == pytest.approx(6 / 7)
    assert scores["rouge2"] == pytest.approx(0.8)
    assert scores["rougeL"] == pytest.approx(6 / 7)


def test_sacrebleu():
    bleu = load_metric("sacrebleu")
    # Same length (BP 1); n-gram precisions 5/6, 4/5, 3/4, 2/3 -> BLEU = (1/3) ** (1/4).
    scores = bleu.compute(predictions=["a b c d e f"], references=[["a b c d e g"]])
    assert scores["score"] == pytest.approx(100 * (1 / 3) ** 0.25, abs=1e-6)
    assert scores["precisions"] == pytest.approx([500 / 6, 80.0, 75.0, 200 / 3])
    assert bleu.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])[
        "score"
    ] == pytest.approx(100.0)


def test_perplexity_is_exp_of_the_loss():
    assert perplexity(math.log(5.0)) == pytest.approx(5.0)
    assert math.isfinite(perplexity(1e6))  # a diverged run reports a large number instead of overflowing


def test_local_module_when_offline(monkeypatch):
    """HF_HUB_OFFLINE: the Hub is not tried; the local module loads by path."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []
    original = evaluate.load
    monkeypatch.setattr(metrics.evaluate, "load", lambda path, **kw: calls.append(path) or original(path, **kw))
    load_metric("accuracy")
    assert len(calls) == 1 and calls[0].endswith("accuracy/accuracy.py")


def unreachable_hub(monkeypatch) -> list[str]:
    """Online, with a Hub that refuses `accuracy`; returns the list of paths evaluate.load is called with."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = []
    original = evaluate.load

    def fake_load(path, **kwargs):
        calls.append(path)
        if path == "accuracy":
            raise ConnectionError("Hub unreachable")
        return original(path, **kwargs)

    monkeypatch.setattr(metrics.evaluate, "load", fake_load)
    return calls


def test_hub_first_then_local(monkeypatch):
    """Online, the Hub copy is tried first; when it fails (unreachable), the local one is used."""
    calls = unreachable_hub(monkeypatch)
    assert load_metric("accuracy").compute(predictions=[1], references=[1]) == {"accuracy": 1.0}
    assert calls[0] == "accuracy" and calls[1].endswith("accuracy/accuracy.py")


def test_an_unreachable_hub_is_tried_once_per_process(monkeypatch):
    """Every evaluation calls load_metric: the second call reuses the module, with no second Hub attempt."""
    calls = unreachable_hub(monkeypatch)
    first, second = load_metric("accuracy"), load_metric("accuracy")
    assert first is second and len(calls) == 2  # one Hub attempt, one local load
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load_metric("accuracy")  # going offline is a new setting: the local module, loaded without the Hub
    assert len(calls) == 3 and calls[2].endswith("accuracy/accuracy.py")


def test_unknown_metric_names_the_choices():
    with pytest.raises(ValueError, match="bundled metrics are accuracy"):
        load_metric("meteor")

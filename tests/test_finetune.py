"""`fourfold finetune`: every task on every architecture that has its head learns (the held-out loss falls), the
bundled spam demo beats the majority class, results.json carries what the model card needs, and bad input fails
before training with an error that names the fix."""

import json
import random
from pathlib import Path

import pytest
from finetune_helpers import (
    NAMES,
    WORDS,
    finetune,
    multiple_choice_rows,
    prompt_completion_rows,
    question_answering_rows,
    sequence_classification_rows,
    text_to_text_rows,
    tiny_checkpoints,  # noqa: F401  (session fixture)
    token_classification_rows,
    write_jsonl,
)

from fourfold.training.finetune import main, parse_arguments
from fourfold.training.tasks import TASKS, TaskOptions, get_task

SPAM_DATA = Path(__file__).parents[1] / "training" / "data" / "spam_assassin.csv"

# (task, architecture, rows, extra flags, steps, the metric that must have improved over the untrained model)
CASES = [
    *[
        ("sequence-classification", arch, sequence_classification_rows, [], 80, "eval_accuracy")
        for arch in ("encoder", "decoder", "prefix-lm", "seq2seq")
    ],
    *[
        (
            "token-classification",
            arch,
            token_classification_rows,
            ["--text_column", "tokens", "--label_column", "tags"],
            20,
            "eval_overall_f1",
        )
        for arch in ("encoder", "decoder")
    ],
    ("question-answering", "encoder", question_answering_rows, [], 20, "eval_f1"),
    ("multiple-choice", "encoder", multiple_choice_rows, ["--text_column", "question"], 80, None),
    ("causal-lm", "decoder", prompt_completion_rows, [], 20, None),
    ("causal-lm", "prefix-lm", prompt_completion_rows, [], 20, None),
    ("text-to-text", "seq2seq", text_to_text_rows, ["--predict_with_generate", "true"], 20, None),
]


@pytest.mark.parametrize(
    ("task", "architecture", "rows", "extra", "steps", "metric"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_task_learns(tiny_checkpoints, tmp_path, task, architecture, rows, extra, steps, metric):  # noqa: F811
    data = write_jsonl(tmp_path / "data.jsonl", rows())
    args = ["--model_name_or_path", str(tiny_checkpoints[architecture]), "--task", task, "--train_files", data]
    results = finetune(tmp_path / "out", *args, *extra, steps=steps)
    # Held-out loss falls (robust over seeds 0-2; the held-out splits are a dozen or two rows), and the task metric
    # improves where the task is learnt within these few steps.
    assert results["metrics"]["eval_loss"] < results["metrics_before"]["eval_before_loss"]
    if metric is not None:
        assert results["metrics"][metric] > results["metrics_before"][metric.replace("eval_", "eval_before_")]
    if task in ("causal-lm", "text-to-text"):
        assert results["metrics"]["eval_perplexity"] < results["metrics_before"]["eval_before_perplexity"]
    if task == "text-to-text":
        assert {"eval_rouge1", "eval_rougeL", "eval_bleu"} <= set(results["metrics"])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["parameters"]["trainable"] == saved["parameters"]["total"]  # full fine-tuning
    assert saved["peak_memory"]["rss_mb"] > 0 and saved["runtime_s"] > 0
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "tokenizer.json").is_file()


def test_prefix_lm_prompt_is_the_prefix(tiny_checkpoints, tmp_path):  # noqa: F811
    """causal-lm on a prefix LM: prefix_mask covers exactly the prompt, and the labels start right after it."""
    from datasets import Dataset, DatasetDict
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoints["prefix-lm"])
    config = type("C", (), {"model_type": "fourfold-prefix-lm"})()
    raw = DatasetDict(train=Dataset.from_list([{"prompt": "Call me", "completion": " Ishmael."}]))
    row = TASKS["causal-lm"].tokenize_splits(raw, tokenizer, config, TaskOptions(max_length=64))["train"][0]
    prompt_length = 1 + len(tokenizer("Call me", add_special_tokens=False).input_ids)  # with <s>
    assert row["prefix_mask"] == [1] * prompt_length + [0] * (len(row["input_ids"]) - prompt_length)
    assert row["labels"][:prompt_length] == [-100] * prompt_length
    assert row["labels"][prompt_length:] == row["input_ids"][prompt_length:]
    assert row["input_ids"][-1] == tokenizer.eos_token_id


def test_spam_demo_beats_the_majority_baseline(tmp_path):
    """The bundled demo: a fresh tiny encoder, its tokenizer trained on the messages, three epochs. (How long it
    takes is the benchmark's business, not a test's: a loaded machine would fail a time limit.)"""
    results = finetune(
        tmp_path / "spam",
        "--model_name_or_path",
        "encoder-tiny",
        "--train_files",
        str(SPAM_DATA),
        "--num_train_epochs",
        "3",
        "--per_device_train_batch_size",
        "16",
        "--learning_rate",
        "2e-3",
        "--evaluate_before",
        "false",
        steps=-1,
    )
    accuracy, baseline = results["metrics"]["eval_accuracy"], results["baseline"]["baseline_accuracy"]
    print(f"spam demo: accuracy {accuracy:.2f} vs majority baseline {baseline:.2f}")
    assert results["labels"] == ["ham", "spam"] and results["num_validation_rows"] == 100
    assert accuracy >= baseline + 0.2


def test_bundled_spam_data_is_balanced_ish():
    import csv

    rows = list(csv.DictReader(SPAM_DATA.open()))
    labels = [r["label"] for r in rows]
    assert len(rows) >= 300 and set(labels) == {"ham", "spam"}
    assert 0.35 < labels.count("spam") / len(labels) < 0.65
    assert all(r["text"].strip() for r in rows)


def test_cli_entry_point(tmp_path, capsys):
    """`fourfold finetune` dispatches here: main(argv) runs a job and prints its metrics next to the baseline."""
    from fourfold.training.cli import main as cli_main

    data = write_jsonl(tmp_path / "data.jsonl", sequence_classification_rows(32))
    flags = ["--model_name_or_path", "decoder-tiny", "--train_files", data, "--max_steps", "2"]
    flags += ["--output_dir", str(tmp_path / "out"), "--report_to", "none", "--disable_tqdm", "true"]
    assert cli_main(["finetune", *flags]) == 0
    printed = capsys.readouterr().out
    assert '"baseline_accuracy"' in printed and '"eval_accuracy"' in printed
    assert "full: accuracy" in printed and "(majority baseline" in printed and "parameters trained" in printed
    assert main is not None


# --------------------------------------------------------------------------------------------------------------------
# Bad input: clear errors before training
# --------------------------------------------------------------------------------------------------------------------


def fails_before_training(tmp_path, args: list[str], match: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        finetune(tmp_path / "out", *args)
    assert not (tmp_path / "out" / "results.json").exists()


def seqcls_data(tmp_path, rows=None) -> str:
    return write_jsonl(tmp_path / "data.jsonl", rows or sequence_classification_rows(20))


def test_missing_label_column(tiny_checkpoints, tmp_path):  # noqa: F811
    args = ["--model_name_or_path", str(tiny_checkpoints["encoder"]), "--train_files", seqcls_data(tmp_path)]
    fails_before_training(tmp_path, [*args, "--label_column", "category"], r"no column \['category'\]")


@pytest.mark.parametrize(
    ("bad", "match"),
    [(None, "fill in or drop rows without a label"), (0.5, "--problem_type regression"), ([1], "class names")],
)
def test_bad_label_values(tmp_path, bad, match):
    rows = [{"text": "a b", "label": 0}, {"text": "c d", "label": 1}] * 5 + [{"text": "e f", "label": bad}]
    fails_before_training(
        tmp_path, ["--model_name_or_path", "encoder-tiny", "--train_files", seqcls_data(tmp_path, rows)], match
    )


def test_labels_outside_num_labels(tmp_path):
    rows = [{"text": "a b", "label": i % 3} for i in range(12)]
    args = ["--model_name_or_path", "encoder-tiny", "--train_files", seqcls_data(tmp_path, rows), "--num_labels", "2"]
    fails_before_training(tmp_path, args, r"Labels \[2\] .* outside \[0, num_labels=2\).*Raise --num_labels")


def resolve_labels(labels: list, problem_type: str | None = None, **options) -> list[str]:
    """The label names sequence classification's data check resolves from one training split of `labels`."""
    from datasets import Dataset, DatasetDict

    raw = DatasetDict(train=Dataset.from_dict({"label": labels}))
    return get_task("sequence-classification", problem_type).check_data(raw, TaskOptions(**options)).labels


def test_label_ids_and_names():
    assert resolve_labels(["spam", "ham", "spam"]) == ["ham", "spam"]
    assert resolve_labels([0, 2, 1]) == ["LABEL_0", "LABEL_1", "LABEL_2"]
    with pytest.raises(ValueError, match="single class"):
        resolve_labels([0, 0])


def test_lora_target_that_matches_nothing(tiny_checkpoints, tmp_path):  # noqa: F811
    args = ["--model_name_or_path", str(tiny_checkpoints["decoder"]), "--train_files", seqcls_data(tmp_path)]
    args += ["--method", "lora", "--target_modules", "q_proj", "query"]
    fails_before_training(tmp_path, args, r"\['query'\] match no linear or embedding layer.*q_proj")


@pytest.mark.parametrize(
    ("architecture", "task", "method", "match"),
    [
        ("seq2seq", "text-to-text", "prefix-tuning", "not supported for text-to-text on a fourfold-seq2seq"),
        ("prefix-lm", "causal-lm", "prompt-tuning", "Use --method lora, dora or ia3"),
        ("encoder", "token-classification", "prompt-tuning", "not supported for token-classification"),
        ("decoder", "sequence-classification", "unknown", "choose one of full, lora"),
    ],
)
def test_method_that_does_not_fit(tiny_checkpoints, tmp_path, architecture, task, method, match):  # noqa: F811
    args = ["--model_name_or_path", str(tiny_checkpoints[architecture]), "--task", task, "--method", method]
    fails_before_training(tmp_path, [*args, "--train_files", seqcls_data(tmp_path)], match)


def test_merge_needs_a_mergeable_method(tiny_checkpoints, tmp_path):  # noqa: F811
    args = ["--model_name_or_path", str(tiny_checkpoints["decoder"]), "--method", "prompt-tuning", "--merge", "true"]
    fails_before_training(tmp_path, [*args, "--train_files", seqcls_data(tmp_path)], "drop --merge")


@pytest.mark.parametrize(
    ("architecture", "task", "match"),
    [
        ("decoder", "question-answering", "fourfold-decoder checkpoint cannot do question-answering.*fourfold-encoder"),
        ("encoder", "causal-lm", "cannot do causal-lm"),
        ("seq2seq", "causal-lm", "generates through --task text-to-text"),
        ("prefix-lm", "token-classification", "cannot do token-classification"),
    ],
)
def test_architecture_that_cannot_do_the_task(tiny_checkpoints, tmp_path, architecture, task, match):  # noqa: F811
    args = ["--model_name_or_path", str(tiny_checkpoints[architecture]), "--task", task]
    fails_before_training(tmp_path, [*args, "--train_files", seqcls_data(tmp_path)], match)


def test_checkpoint_that_does_not_exist(tmp_path):
    args = ["--model_name_or_path", str(tmp_path / "outputs" / "encoder"), "--train_files", seqcls_data(tmp_path)]
    fails_before_training(tmp_path, args, "neither a checkpoint folder.*encoder-tiny")


def test_unknown_task(tmp_path):
    fails_before_training(
        tmp_path, ["--task", "summarization", "--train_files", seqcls_data(tmp_path)], "choose one of"
    )


def test_text_to_text_uses_seq2seq_arguments():
    *_, training_args = parse_arguments(["--task", "text-to-text", "--predict_with_generate", "true"])
    assert training_args.predict_with_generate and training_args.generation_max_length == 64


# --------------------------------------------------------------------------------------------------------------------
# --problem_type regression and multi_label_classification (sequence-classification)
# --------------------------------------------------------------------------------------------------------------------


def regression_rows(n: int = 96, seed: int = 0) -> list[dict]:
    """The target is the number of names in the sentence (0, 1 or 2): learnable from the tokens alone."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 8))]
        count = i % 3
        for _ in range(count):
            words.insert(rng.randrange(len(words) + 1), rng.choice(NAMES))
        rows.append({"text": " ".join(words), "label": float(count)})
    return rows


def multi_label_rows(n: int = 96, seed: int = 0, separator: str | None = None) -> list[dict]:
    """Labels: 'person' when the sentence names one, 'question' when it ends with '?', both, or none."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 8))]
        labels = []
        if i % 2:
            words.insert(rng.randrange(len(words)), rng.choice(NAMES))
            labels.append("person")
        if (i // 2) % 2:
            words.append("?")
            labels.append("question")
        rows.append({"text": " ".join(words), "label": separator.join(labels) if separator else labels})
    return rows


def test_regression_learns(tiny_checkpoints, tmp_path):  # noqa: F811
    data = write_jsonl(tmp_path / "data.jsonl", regression_rows())
    args = ["--model_name_or_path", str(tiny_checkpoints["encoder"]), "--train_files", data]
    results = finetune(tmp_path / "out", *args, "--problem_type", "regression", steps=80)
    metrics, before, baseline = results["metrics"], results["metrics_before"], results["baseline"]
    assert results["labels"] == ["LABEL_0"] and results["problem_type"] == "regression"
    assert metrics["eval_loss"] < before["eval_before_loss"]
    assert metrics["eval_mse"] < baseline["baseline_mse"]  # beats predicting the training mean
    assert {"eval_mae", "eval_pearson", "eval_spearman"} <= set(metrics)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == "regression" and len(config["id2label"]) == 1


@pytest.mark.parametrize("separator", [None, ","])
def test_multi_label_learns(tiny_checkpoints, tmp_path, separator):  # noqa: F811
    data = write_jsonl(tmp_path / "data.jsonl", multi_label_rows(separator=separator))
    args = ["--model_name_or_path", str(tiny_checkpoints["encoder"]), "--train_files", data]
    args += ["--problem_type", "multi_label_classification"]
    if separator:
        args += ["--label_separator", separator]
    results = finetune(tmp_path / "out", *args, steps=80)
    metrics, before = results["metrics"], results["metrics_before"]
    assert results["labels"] == ["person", "question"]
    assert metrics["eval_loss"] < before["eval_before_loss"]
    assert metrics["eval_micro_f1"] > before["eval_before_micro_f1"]
    assert {"eval_macro_f1", "eval_subset_accuracy"} <= set(metrics)
    assert set(results["baseline"]) == {"baseline_micro_f1", "baseline_macro_f1", "baseline_subset_accuracy"}
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and len(config["id2label"]) == 2


def test_regression_and_multi_label_scores_by_hand():
    from fourfold.training.tasks.scores import multi_label_scores, regression_scores

    scores = regression_scores([1.0, 2.0, 4.0], [1.0, 3.0, 3.0])
    assert scores["mse"] == pytest.approx(2 / 3) and scores["mae"] == pytest.approx(2 / 3)
    # Deviations from the means (7/3 each): (-4, -1, 5)/3 and (-4, 2, 2)/3 -> r = 24 / sqrt(42 * 24) = sqrt(4/7).
    assert scores["pearson"] == pytest.approx((4 / 7) ** 0.5)
    # Ranks (1, 2, 3) and (1, 2.5, 2.5) -> rho = 1.5 / sqrt(2 * 1.5) = sqrt(3) / 2.
    assert scores["spearman"] == pytest.approx(3**0.5 / 2)
    # 2 rows x 3 labels. Label 0: tp 1, fn 1; label 1: tp 1, fp 1; label 2: tn only. Micro: tp 2, fp 1, fn 1.
    scores = multi_label_scores([[1, 1, 0], [0, 1, 0]], [[1, 0, 0], [1, 1, 0]])
    assert scores["micro_f1"] == pytest.approx(2 / 3)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)  # label 2 (never present): F1 0
    assert scores["subset_accuracy"] == 0.0
    assert multi_label_scores([[1, 0], [0, 1]], [[1, 0], [0, 0]])["subset_accuracy"] == 0.5


def test_multi_label_and_regression_baselines():
    from datasets import Dataset, DatasetDict

    raw = DatasetDict(
        train=Dataset.from_dict({"label": [["a"], ["a"], ["a", "b"]]}),
        validation=Dataset.from_dict({"label": [["a"], ["b"]]}),
    )
    multi_label = get_task("sequence-classification", "multi_label_classification")
    baseline = multi_label.baseline(raw, TaskOptions(labels=["a", "b"]))
    # The most frequent training set {a}: row 1 exact (tp a), row 2 wrong (fp a, fn b): micro F1 = 2 / (2 + 1 + 1).
    assert baseline["baseline_subset_accuracy"] == 0.5 and baseline["baseline_micro_f1"] == pytest.approx(0.5)
    raw = DatasetDict(
        train=Dataset.from_dict({"label": [1.0, 3.0]}), validation=Dataset.from_dict({"label": [0.0, 4.0]})
    )
    baseline = get_task("sequence-classification", "regression").baseline(raw, TaskOptions(labels=["LABEL_0"]))
    assert baseline == {"baseline_mse": pytest.approx(4.0), "baseline_mae": pytest.approx(2.0)}


@pytest.mark.parametrize(
    ("problem_type", "bad", "extra", "match"),
    [
        ("regression", "high", [], "regression needs a finite number in every row"),
        ("regression", None, [], "regression needs a finite number"),
        ("multi_label_classification", "a", [], "needs a list of label names or ids.*--label_separator"),
        ("multi_label_classification", 3, [], "needs a list of label names or ids"),
        ("multi_label_classification", [0.5], [], "class names"),
        ("ordinal", 1, [], "choose one of single_label_classification"),
        ("regression", 1.0, ["--task", "token-classification"], "needs --task sequence-classification"),
    ],
)
def test_bad_problem_type_input(tmp_path, problem_type, bad, extra, match):
    good = 1.0 if problem_type != "multi_label_classification" else [0, 1]
    rows = [{"text": "a b", "label": good}] * 10 + [{"text": "e f", "label": bad}]
    args = ["--model_name_or_path", "encoder-tiny", "--train_files", seqcls_data(tmp_path, rows)]
    fails_before_training(tmp_path, [*args, "--problem_type", problem_type, *extra], match)


def test_regression_num_labels_and_separator_rows():
    assert resolve_labels(["b,a", "", "c , a"], "multi_label_classification", label_separator=",") == ["a", "b", "c"]
    with pytest.raises(ValueError, match="regression has one output"):
        resolve_labels([1, 2.5], "regression", num_labels=2)

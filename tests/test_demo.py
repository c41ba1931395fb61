"""`fourfold demo`'s pieces: its arguments (bundled corpus by default, no network), the fresh-weights side of the
transfer comparison (same config and tokenizer as the checkpoint, other weights), and the printed gain."""

import pytest
import torch
from finetune_helpers import build_checkpoint
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

from fourfold.training import demo


def test_arguments_default_to_the_bundled_corpus_and_the_encoder():
    args = demo.parse_args([])
    assert args.architecture == "all" and args.transfer == "encoder" and args.seed == 42 and not args.skip_finetune
    assert [demo.CORPUS.name] == [p.rsplit("/", 1)[-1] for p in args.train_files] and demo.CORPUS.is_file()
    assert demo.TRANSFER_RECIPE.is_file()
    args = demo.parse_args(["--architecture", "decoder", "--transfer", "all", "--seed", "7", "--max_steps", "3"])
    assert (args.architecture, args.transfer, args.seed, args.max_steps) == ("decoder", "all", 7, 3)


def test_models_outside_the_transfer_comparison_pretrain_for_fewer_steps():
    def steps(argv: list[str]) -> dict[str, int | None]:
        return {a: demo.pretraining_steps(a, demo.parse_args(argv)) for a in demo.ARCHITECTURES}

    assert steps([]) == {"encoder": None, "decoder": 150, "prefix-lm": 150, "seq2seq": 150}  # None: the recipe's
    assert set(steps(["--transfer", "all"]).values()) == {None}
    assert steps(["--steps_without_transfer", "0"])["decoder"] is None
    assert set(steps(["--max_steps", "5", "--transfer", "all"]).values()) == {5}
    assert steps(["--skip_finetune"])["encoder"] == 150


def test_fresh_copy_differs_from_the_checkpoint_in_the_weights_only(tmp_path):
    pretrained = build_checkpoint("encoder", tmp_path / "pretrained", seed=0)
    fresh = demo.fresh_copy(pretrained, tmp_path / "fresh", seed=1)
    configs = [AutoConfig.from_pretrained(p).to_dict() for p in (fresh, pretrained)]
    assert configs[0] | {"_name_or_path": None} == configs[1] | {"_name_or_path": None}
    assert AutoTokenizer.from_pretrained(fresh).get_vocab() == AutoTokenizer.from_pretrained(pretrained).get_vocab()
    a, b = (AutoModelForMaskedLM.from_pretrained(p).state_dict() for p in (pretrained, fresh))
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    matrices = [k for k in a if a[k].dim() == 2]
    assert matrices and not any(torch.equal(a[k], b[k]) for k in matrices)
    again = AutoModelForMaskedLM.from_pretrained(demo.fresh_copy(pretrained, tmp_path / "again", seed=1))
    assert all(torch.equal(v, b[k]) for k, v in again.state_dict().items())  # seeded


def test_transfer_lines_report_the_gain_of_the_mean_accuracies():
    def results(accuracy: float) -> dict:
        return {
            "task": "sequence-classification",
            "method": "full",
            "metrics": {"eval_accuracy": accuracy},
            "metrics_before": {"eval_before_accuracy": 0.5},
            "baseline": {"baseline_accuracy": 0.5},
            "parameters": {"trainable_percent": 100.0, "total": 1000},
            "peak_memory": {"rss_mb": 700.0, "cuda_allocated_mb": None},
            "runtime_s": 30.0,
        }

    runs = [
        {"seed": 7, "fresh": results(0.71), "pretrained": results(0.83)},
        {"seed": 8, "fresh": results(0.81), "pretrained": results(0.85)},
    ]
    assert demo.accuracies(runs[0]) == {"fresh": 0.71, "pretrained": 0.83, "majority": 0.5}
    assert demo.seed_line(runs[1]) == "seed 8: accuracy 0.810 from fresh weights, 0.850 from pretrained ones (+4.0)"
    lines = demo.transfer_lines(runs)
    assert "seed 7, from fresh weights" in lines[0] and "accuracy 0.50 -> 0.71" in lines[0]
    assert "accuracy 0.50 -> 0.83" in lines[1]
    assert lines[2] == (
        "pretraining bought +8.0 accuracy points (0.760 -> 0.840, means over 2 fine-tuning seeds; majority class 0.500)"
    )


def test_finetune_seeds_follow_the_seed_and_must_be_positive(capsys):
    assert demo.finetune_seeds(demo.parse_args(["--seed", "5"])) == [5, 6, 7]
    assert demo.finetune_seeds(demo.parse_args(["--finetune_seeds", "1"])) == [42]
    with pytest.raises(SystemExit):
        demo.parse_args(["--finetune_seeds", "0"])
    assert "--finetune_seeds must be at least 1" in capsys.readouterr().err

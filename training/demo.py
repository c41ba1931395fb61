"""`fourfold demo`: the main job, and what pretraining buys, in minutes on a CPU.

1. Pretrain a tiny model of each configuration on the bundled State of the Union sample (92 addresses, 1790-2021,
   training/data/sotu_addresses.parquet) with its shipped recipe (configuration/pretrain-<architecture>-tiny.yaml,
   through `fourfold pretrain`): a tokenizer trained on the text, then masked LM / causal LM / prefix LM / span
   corruption. The models the transfer comparison fine-tunes run their recipe's full steps; the others stop after
   --steps_without_transfer (150), which keeps the demo near 5 minutes on 2 CPU cores. Prints the held-out loss at
   every evaluation, throughput and samples; saves model, tokenizer, loss curve, log and model card to
   outputs/<architecture>/.
2. Transfer: fine-tune the encoder on a task with few labels, the era of a State of the Union passage (1790-1899 or
   1900-2021; 50 labelled passages, 500 held out, from addresses that are not in the pretraining text), with one
   recipe (configuration/finetune-sotu-era-full.yaml) from the pretrained checkpoint and from the same model with
   fresh random weights (same tokenizer, same budget), at --finetune_seeds seeds (3: --seed, --seed + 1, ...; each
   seeds the fresh weights and the fine-tuning). Prints both held-out accuracies per seed, their means next to the
   majority-class baseline, and the difference of the means: what pretraining bought. One seed is not enough: with
   few labels a fresh model's accuracy moves by up to 11 points with the seed (0.686-0.800 at seeds 42, 43, 44), the
   pretrained one's by less. Saves to outputs/finetune-era-{pretrained,fresh}-seed<seed>/.

Every stage shows one live progress line (step/total, loss, elapsed, time left); the Trainer's own logs go to each
run's train.log.
"""

import argparse
import contextlib
import json
import sys
import time
import warnings
from pathlib import Path

import datasets
import torch
import transformers
from transformers import AutoConfig, AutoTokenizer

from fourfold.training import pretrain
from fourfold.training.architectures import ARCHITECTURES, architecture_of
from fourfold.training.finetune import run_finetune, summary_line
from fourfold.training.progress import live_progress

RECIPES = Path(__file__).resolve().parents[1] / "configuration"
CORPUS = Path(__file__).resolve().parent / "data" / "sotu_addresses.parquet"
TRANSFER_RECIPE = RECIPES / "finetune-sotu-era-full.yaml"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    architectures = list(ARCHITECTURES) if args.architecture == "all" else [args.architecture]
    for architecture in architectures:
        output_dir = Path(args.output_dir) / architecture
        steps = pretraining_steps(architecture, args)
        print(summarize(architecture, output_dir, *pretrain_one(architecture, output_dir, args, steps)), flush=True)
    print("\nSamples (held-out text):")
    for architecture in architectures:
        samples = (Path(args.output_dir) / architecture / "samples.txt").read_text().strip()
        print(f"\n[{architecture}]\n{samples}")

    if not args.skip_finetune:
        for architecture in [a for a in architectures if fine_tuned(a, args)]:
            print(f"\nTransfer ({architecture}): {TASK_DESCRIPTION}")
            steps = ["--max_steps", str(args.finetune_max_steps)] if args.finetune_max_steps else []
            runs = []
            for seed in finetune_seeds(args):
                runs.append(
                    transfer(Path(args.output_dir) / architecture, Path(args.output_dir), seed, architecture, steps)
                )
                print(f"  {seed_line(runs[-1])}", flush=True)
            for line in transfer_lines(runs):
                print(f"  {line}", flush=True)
    print(f"\nModels, tokenizers, loss curves, model cards and logs are in {args.output_dir}/.")
    return 0


TASK_DESCRIPTION = (
    "the era of a State of the Union passage (1790-1899 or 1900-2021), 50 labelled passages, 500 held out, "
    "from addresses outside the pretraining text; the same fine-tuning from fresh weights and from the pretrained "
    "ones, at several seeds"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fourfold demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architecture", choices=[*ARCHITECTURES, "all"], default="all")
    parser.add_argument("--output_dir", default="outputs", help="Each model goes to <output_dir>/<architecture>/.")
    parser.add_argument("--max_steps", type=int, default=None, help="Override every pretraining recipe's steps.")
    parser.add_argument(
        "--steps_without_transfer",
        type=int,
        default=150,
        help="Pretraining steps of the models the transfer comparison does not fine-tune (0: their recipe's).",
    )
    parser.add_argument(
        "--train_files", nargs="+", default=[str(CORPUS)], help="Pretraining text (default: the bundled sample)."
    )
    parser.add_argument("--seed", type=int, default=42, help="Seed of pretraining, the first of the fine-tuning seeds.")
    parser.add_argument(
        "--transfer",
        choices=["encoder", "all"],
        default="encoder",
        help="Which pretrained models the transfer comparison fine-tunes (all: every one pretrained).",
    )
    parser.add_argument(
        "--finetune_max_steps", type=int, default=None, help="Override the transfer recipe's epochs with steps."
    )
    parser.add_argument(
        "--finetune_seeds",
        type=int,
        default=3,
        help="Fine-tune each side at this many seeds (--seed, --seed + 1, ...) and compare the mean accuracies.",
    )
    parser.add_argument("--skip_finetune", action="store_true", help="Only pretrain.")
    args = parser.parse_args(argv)
    if args.finetune_seeds < 1:
        parser.error(f"--finetune_seeds must be at least 1 (got {args.finetune_seeds}).")
    return args


def quiet_libraries() -> None:
    """The console gets the progress and summary lines; per-step logs go to each run's train.log."""
    datasets.disable_progress_bars()
    # Library advice that does not apply here (pin_memory without a GPU, deprecations inside transformers) would bury
    # the summary lines.
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def fine_tuned(architecture: str, args: argparse.Namespace) -> bool:
    """Whether the transfer comparison fine-tunes this architecture's pretrained model."""
    return not args.skip_finetune and (args.transfer == "all" or architecture == "encoder")


def finetune_seeds(args: argparse.Namespace) -> list[int]:
    """The transfer comparison's seeds: --seed, --seed + 1, ... (--finetune_seeds of them)."""
    return [args.seed + i for i in range(args.finetune_seeds)]


def pretraining_steps(architecture: str, args: argparse.Namespace) -> int | None:
    """--max_steps if given; else the recipe's own (None) for a model the transfer comparison fine-tunes, and
    --steps_without_transfer for the others (0: the recipe's)."""
    if args.max_steps:
        return args.max_steps
    return None if fine_tuned(architecture, args) else args.steps_without_transfer or None


def pretrain_one(
    architecture: str, output_dir: Path, args: argparse.Namespace, max_steps: int | None = None
) -> tuple[list[str], float]:
    """`fourfold pretrain` with the architecture's tiny recipe on the demo's corpus (`max_steps`: None, the
    recipe's); returns (flags, seconds)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    flags = [str(RECIPES / f"pretrain-{architecture}-tiny.yaml"), "--output_dir", str(output_dir)]
    flags += ["--overwrite_output_dir", "true"]  # the demo's own folder: a rerun replaces it
    flags += ["--train_files", *args.train_files, "--seed", str(args.seed), "--disable_tqdm", "true"]
    flags += ["--max_steps", str(max_steps)] if max_steps else []
    start = time.perf_counter()
    run_logged(pretrain.main, flags, output_dir, f"{architecture:>9}: pretraining")
    return flags, time.perf_counter() - start


def run_logged(function, flags: list[str], output_dir: Path, label: str):
    """`function(flags)` with its stdout in output_dir/train.log (line-buffered, so it can be followed while it
    runs) and one live progress line on the console."""
    with (
        live_progress(label, sys.stdout),
        open(output_dir / "train.log", "w", buffering=1) as log,
        contextlib.redirect_stdout(log),
    ):
        return function(flags)


def summarize(architecture: str, output_dir: Path, flags: list[str], seconds: float) -> str:
    """One line: held-out loss at every evaluation, perplexity before -> after, wall time, training tokens/s."""
    results = json.loads((output_dir / "all_results.json").read_text())
    state = json.loads((output_dir / "trainer_state.json").read_text())
    _, data_args, _, _, _, training_args = pretrain.parse_arguments(flags)
    # Input tokens the model read while training (seq2seq: encoder input tokens; targets are extra).
    tokens = state["global_step"] * training_args.per_device_train_batch_size * data_args.block_size
    # One loss per evaluated step (the final evaluation repeats the last scheduled one).
    curve = {e["step"]: e["eval_loss"] for e in state["log_history"] if "eval_loss" in e}
    return (
        f"{architecture:>9}: eval loss {' '.join(f'{loss:.2f}' for loss in curve.values())} at steps {min(curve)}.."
        f"{max(curve)} "
        f"(perplexity {results['eval_before_perplexity']:,.0f} -> {results['eval_perplexity']:,.1f}), "
        f"{state['global_step']} steps, {seconds:.0f} s wall ({results['train_runtime']:.0f} s training, "
        f"{tokens / results['train_runtime']:,.0f} tokens/s)"
    )


def fresh_copy(pretrained_dir: Path, fresh_dir: Path, seed: int) -> Path:
    """The pretrained checkpoint's model with fresh random weights (seeded) and its tokenizer, saved to fresh_dir:
    the "no pretraining" side of the transfer comparison differs from the pretrained one in the weights only."""
    config = AutoConfig.from_pretrained(pretrained_dir)
    torch.manual_seed(seed)
    model = architecture_of(config.model_type).pretraining_head(config)
    model.save_pretrained(fresh_dir)
    AutoTokenizer.from_pretrained(pretrained_dir).save_pretrained(fresh_dir)
    return fresh_dir


def transfer(pretrained_dir: Path, output_root: Path, seed: int, name: str = "encoder", extra=()) -> dict[str, dict]:
    """The transfer recipe fine-tuned from fresh weights (drawn with `seed`) and from `pretrained_dir`, same budget,
    both at `seed`; returns {"seed": seed, "fresh": results, "pretrained": results} (finetune's results.json)."""
    suffix = "" if name == "encoder" else f"-{name}"
    fresh_dir = fresh_copy(pretrained_dir, output_root / f"{name}-fresh-weights-seed{seed}", seed)
    results: dict = {"seed": seed}
    for side, model_dir in (("fresh", fresh_dir), ("pretrained", pretrained_dir)):
        output_dir = output_root / f"finetune-era{suffix}-{side}-seed{seed}"
        output_dir.mkdir(parents=True, exist_ok=True)
        flags = [str(TRANSFER_RECIPE), "--model_name_or_path", str(model_dir), "--output_dir", str(output_dir)]
        flags += ["--seed", str(seed), "--disable_tqdm", "true", "--overwrite_output_dir", "true", *extra]
        results[side] = run_logged(run_finetune, flags, output_dir, f"  fine-tuning {side} {name}, seed {seed}")
    return results


def accuracies(results: dict[str, dict]) -> dict[str, float]:
    """Held-out accuracy from fresh weights, from the pretrained ones, and of the majority class."""
    return {
        "fresh": results["fresh"]["metrics"]["eval_accuracy"],
        "pretrained": results["pretrained"]["metrics"]["eval_accuracy"],
        "majority": results["pretrained"]["baseline"]["baseline_accuracy"],
    }


def seed_line(run: dict) -> str:
    """One fine-tuning seed: `seed 42: accuracy 0.836 from fresh weights, 0.882 from pretrained ones (+4.6)`."""
    scores = accuracies(run)
    return (
        f"seed {run['seed']}: accuracy {scores['fresh']:.3f} from fresh weights, {scores['pretrained']:.3f} from "
        f"pretrained ones ({100 * (scores['pretrained'] - scores['fresh']):+.1f})"
    )


def mean_accuracies(runs: list[dict]) -> dict[str, float]:
    """`accuracies` averaged over the fine-tuning seeds."""
    per_seed = [accuracies(run) for run in runs]
    return {key: sum(scores[key] for scores in per_seed) / len(per_seed) for key in per_seed[0]}


def transfer_lines(runs: list[dict]) -> list[str]:
    """Both fine-tuning summaries of the first seed, then the gain of the mean accuracies, e.g.
    `pretraining bought +9.4 accuracy points (0.787 -> 0.881, means over 3 fine-tuning seeds; majority class 0.500)`."""
    scores = mean_accuracies(runs)
    gain = 100 * (scores["pretrained"] - scores["fresh"])
    seeds = f"means over {len(runs)} fine-tuning seeds" if len(runs) > 1 else "one fine-tuning seed"
    return [
        f"seed {runs[0]['seed']}, from fresh weights:      {summary_line(runs[0]['fresh'])}",
        f"seed {runs[0]['seed']}, from pretrained weights: {summary_line(runs[0]['pretrained'])}",
        f"pretraining bought {gain:+.1f} accuracy points ({scores['fresh']:.3f} -> {scores['pretrained']:.3f}, "
        f"{seeds}; majority class {scores['majority']:.3f})",
    ]

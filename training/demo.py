"""`fourfold demo`: pretrain a tiny model of each configuration on the bundled Moby-Dick sample, in minutes on a CPU.

Each architecture runs its shipped recipe (configuration/pretrain-<architecture>-tiny.yaml) through
`fourfold pretrain`: a tokenizer trained on the text, then masked LM / causal LM / prefix LM / span corruption.
The demo prints the held-out loss at every evaluation (every 50 steps), throughput and samples; each model, its
tokenizer, loss curve and full log are saved to outputs/<architecture>/. About 2.5 minutes on 2 idle CPU cores.
"""

import argparse
import contextlib
import json
import time
from pathlib import Path

import datasets
import transformers

from fourfold.configuration import ARCHITECTURES
from fourfold.training import pretrain

RECIPES = Path(__file__).resolve().parents[1] / "configuration"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fourfold demo", description=__doc__)
    parser.add_argument("--architecture", choices=[*ARCHITECTURES, "all"], default="all")
    parser.add_argument("--output_dir", default="outputs", help="Each model goes to <output_dir>/<architecture>/.")
    parser.add_argument("--max_steps", type=int, default=None, help="Override the recipes' training steps.")
    args = parser.parse_args(argv)
    # The per-step logs go to each run's train.log; the console gets one summary per architecture.
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    summaries = []
    for architecture in ARCHITECTURES if args.architecture == "all" else [args.architecture]:
        output_dir = Path(args.output_dir) / architecture
        output_dir.mkdir(parents=True, exist_ok=True)
        flags = [str(RECIPES / f"pretrain-{architecture}-tiny.yaml"), "--output_dir", str(output_dir)]
        flags += ["--disable_tqdm", "true"] + (["--max_steps", str(args.max_steps)] if args.max_steps else [])
        print(f"{architecture:>9}: pretraining ({output_dir / 'train.log'}) ...", flush=True)
        start = time.perf_counter()
        with open(output_dir / "train.log", "w") as log, contextlib.redirect_stdout(log):
            pretrain.main(flags)
        seconds = time.perf_counter() - start
        summaries.append(summarize(architecture, output_dir, flags, seconds))
        print(summaries[-1], flush=True)
    print("\nSamples (held-out text):")
    for architecture in ARCHITECTURES if args.architecture == "all" else [args.architecture]:
        samples = (Path(args.output_dir) / architecture / "samples.txt").read_text().strip()
        print(f"\n[{architecture}]\n{samples}")
    return 0


def summarize(architecture: str, output_dir: Path, flags: list[str], seconds: float) -> str:
    """One line: held-out loss at every evaluation, perplexity before -> after, wall time, training tokens/s."""
    results = json.loads((output_dir / "all_results.json").read_text())
    state = json.loads((output_dir / "trainer_state.json").read_text())
    _, data_args, _, _, training_args = pretrain.parse_arguments(flags)
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

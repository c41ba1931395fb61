"""`fourfold demo`: the main job, in minutes on a CPU.

1. Pretrain a tiny model of each configuration on the bundled Moby-Dick sample with its shipped recipe
   (configuration/pretrain-<architecture>-tiny.yaml, through `fourfold pretrain`): a tokenizer trained on the text,
   then masked LM / causal LM / prefix LM / span corruption. Prints the held-out loss at every evaluation,
   throughput and samples; saves model, tokenizer, loss curve, log and model card to outputs/<architecture>/.
2. Fine-tune the pretrained encoder on the bundled SpamAssassin sample (spam or ham) with LoRA and in full
   (configuration/finetune-spam-{lora,full}.yaml, through `fourfold finetune`). Prints held-out accuracy before ->
   after next to the majority-class baseline, the trainable share of parameters, run time and peak memory; saves
   to outputs/finetune-spam-{lora,full}/.
"""

import argparse
import contextlib
import json
import time
import warnings
from pathlib import Path

import datasets
import transformers

from fourfold.training import pretrain
from fourfold.training.architectures import ARCHITECTURES
from fourfold.training.finetune import run_finetune, summary_line

RECIPES = Path(__file__).resolve().parents[1] / "configuration"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fourfold demo", description=__doc__)
    parser.add_argument("--architecture", choices=[*ARCHITECTURES, "all"], default="all")
    parser.add_argument("--output_dir", default="outputs", help="Each model goes to <output_dir>/<architecture>/.")
    parser.add_argument("--max_steps", type=int, default=None, help="Override the recipes' training steps.")
    parser.add_argument("--skip_finetune", action="store_true", help="Only pretrain.")
    args = parser.parse_args(argv)
    # The per-step logs go to each run's train.log; the console gets one summary per architecture.
    datasets.disable_progress_bars()
    # Library advice that does not apply here (pin_memory without a GPU, PEFT on tied embeddings of a classifier
    # that has no output embedding, deprecations inside transformers) would bury the summary lines.
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    summaries = []
    for architecture in ARCHITECTURES if args.architecture == "all" else [args.architecture]:
        output_dir = Path(args.output_dir) / architecture
        output_dir.mkdir(parents=True, exist_ok=True)
        flags = [str(RECIPES / f"pretrain-{architecture}-tiny.yaml"), "--output_dir", str(output_dir)]
        flags += ["--overwrite_output_dir", "true"]  # the demo's own folder: a rerun replaces it
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

    if args.architecture in ("all", "encoder") and not args.skip_finetune:
        print("\nFine-tuning the pretrained encoder on the bundled SpamAssassin sample (spam or ham):")
        for method in ("lora", "full"):
            output_dir = Path(args.output_dir) / f"finetune-spam-{method}"
            flags = [str(RECIPES / f"finetune-spam-{method}.yaml"), "--output_dir", str(output_dir)]
            flags += ["--model_name_or_path", str(Path(args.output_dir) / "encoder"), "--disable_tqdm", "true"]
            flags += ["--overwrite_output_dir", "true"]  # the demo's own folder: a rerun replaces it
            output_dir.mkdir(parents=True, exist_ok=True)
            with open(output_dir / "train.log", "w") as log, contextlib.redirect_stdout(log):
                results = run_finetune(flags)
            print(f"  {summary_line(results)}", flush=True)
    print(f"\nModels, tokenizers, loss curves, model cards and logs are in {args.output_dir}/.")
    return 0


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

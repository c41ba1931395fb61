"""Time to target: how long fourfold's pretraining recipe takes to reach the held-out loss a transformers peer reaches.

    python benchmarks/time_to_target.py [--configs encoder decoder seq2seq] [--quick] [--out benchmarks/results]

Per configuration, in one process: the peer (`BertForMaskedLM`, `LlamaForCausalLM`, `BartForConditionalGeneration`)
trains with the data path and defaults of transformers' `run_mlm` / `run_clm` examples (documents tokenized,
concatenated and cut into blocks; AdamW, linear decay, no warmup, no weight decay, batch 8; the learning rate, which
`run_*` leave at 5e-5 for ~100M-parameter models, is `--peer-lr`) for `--peer-steps` steps, and its final held-out
loss is the target. Then fourfold's recipe (`configuration/pretrain-<architecture>-tiny.yaml`: its objective, data
path, optimiser and schedule, at the same model size) trains for its own `max_steps`, evaluated every `--eval-every`
steps; its time to target is the (linearly interpolated) step at which the held-out loss first reaches the target,
times its measured seconds per training step. The ratio is the peer's time over ours.

Same for both: the corpus, one tokenizer trained on its training split (`--vocab`), hidden 64, 2 layers, 4 heads
(`--hidden`, `--layers`), sequences of 128, seed, and the evaluation: the same held-out blocks, the same
corruption (masked LM: 15 % of tokens, 80/10/10, drawn once with a fixed seed; seq2seq: T5 span corruption at 15 %,
fixed seed), loss averaged over every predicted token. Evaluation time is not counted as training time.
`--set KEY=VALUE` overrides one recipe key for ours (a lever: `--set mlm_probability=0.3`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
import transformers
from torch import nn
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    LlamaConfig,
    LlamaForCausalLM,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))

from fourfold.training import pretrain  # noqa: E402
from fourfold.training.collators import SpanCorruptionCollator, compute_input_and_target_lengths  # noqa: E402
from fourfold.training.data import load_text_dataset, tokenize_and_group  # noqa: E402
from fourfold.training.optimizers import optimizer_cls_and_kwargs  # noqa: E402
from fourfold.training.tokenizer import load_or_train_tokenizer, model_special_ids  # noqa: E402
from fourfold.training.trainer import FourfoldTrainer  # noqa: E402

BLOCK = 128
EVAL_SEED = 1234  # the held-out corruption (masks, spans): drawn once, the same for both sides
NOISE_DENSITY, MEAN_SPAN = 0.15, 3.0


def bundled_corpus() -> Path:
    """The largest bundled pretraining corpus under training/data/ (.jsonl or .parquet with a `text` column; the
    .csv files there are fine-tuning tasks)."""
    data = REPO / "training" / "data"
    return max([*data.glob("*.jsonl"), *data.glob("*.parquet")], key=lambda p: p.stat().st_size)


# --------------------------------------------------------------------------------------------------------------------
# The peers, at the same size (their own config classes; ids from the shared tokenizer)
# --------------------------------------------------------------------------------------------------------------------


def peer_bert(hidden: int, layers: int, heads: int, ids: dict) -> nn.Module:
    return BertForMaskedLM(
        BertConfig(
            vocab_size=ids["vocab_size"],
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            max_position_embeddings=BLOCK + 2,
            pad_token_id=ids["pad_token_id"],
        )
    )


def peer_llama(hidden: int, layers: int, heads: int, ids: dict) -> nn.Module:
    # LlamaConfig's defaults (untied head, one key/value head per query head, RMSNorm eps 1e-6, rope theta 10,000).
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=ids["vocab_size"],
            hidden_size=hidden,
            intermediate_size=64 * -(-8 * hidden // (3 * 64)),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=BLOCK + 2,
            pad_token_id=ids["pad_token_id"],
            bos_token_id=ids["bos_token_id"],
            eos_token_id=ids["eos_token_id"],
        )
    )


def peer_bart(hidden: int, layers: int, heads: int, ids: dict) -> nn.Module:
    start = ids.get("decoder_start_token_id", ids["pad_token_id"])
    return BartForConditionalGeneration(
        BartConfig(
            vocab_size=ids["vocab_size"],
            d_model=hidden,
            encoder_layers=layers,
            decoder_layers=layers,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
            encoder_ffn_dim=4 * hidden,
            decoder_ffn_dim=4 * hidden,
            max_position_embeddings=BLOCK + 2,
            pad_token_id=ids["pad_token_id"],
            bos_token_id=ids["bos_token_id"],
            eos_token_id=ids["eos_token_id"],
            decoder_start_token_id=start,
            forced_eos_token_id=None,
        )
    )


@dataclass(frozen=True)
class Configuration:
    """One comparison: our architecture and recipe, the peer, the peer's collator and raw row length."""

    name: str
    architecture: str
    peer_name: str
    build_peer: Callable[[int, int, int, dict], nn.Module]
    kind: str  # "mlm", "clm" or "span": the peer's collator and the evaluation's corruption

    @property
    def recipe(self) -> Path:
        return REPO / "configuration" / f"pretrain-{self.architecture}-tiny.yaml"


CONFIGURATIONS: dict[str, Configuration] = {
    c.name: c
    for c in (
        Configuration("encoder", "encoder", "BertForMaskedLM", peer_bert, "mlm"),
        Configuration("decoder", "decoder", "LlamaForCausalLM", peer_llama, "clm"),
        Configuration("seq2seq", "seq2seq", "BartForConditionalGeneration", peer_bart, "span"),
    )
}


def raw_length(kind: str) -> int:
    """Tokens a raw row is cut to: span corruption shortens a row, so it is cut longer (as run_t5_mlm does)."""
    return compute_input_and_target_lengths(BLOCK, NOISE_DENSITY, MEAN_SPAN)[0] if kind == "span" else BLOCK


def peer_collator(kind: str, tokenizer, seed: int | None):
    if kind == "mlm":
        return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)
    if kind == "clm":
        return DataCollatorForLanguageModeling(tokenizer, mlm=False)
    return SpanCorruptionCollator(tokenizer, NOISE_DENSITY, MEAN_SPAN, seed=seed)


# --------------------------------------------------------------------------------------------------------------------
# The shared evaluation
# --------------------------------------------------------------------------------------------------------------------


def eval_batches(kind: str, tokenizer, rows, batch_size: int = 32) -> list[dict[str, torch.Tensor]]:
    """The held-out blocks as fixed batches (corruption drawn once with `EVAL_SEED`)."""
    examples = [{"input_ids": r["input_ids"]} for r in rows]
    if kind == "mlm":
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)
        collator.generator = torch.Generator().manual_seed(EVAL_SEED)
    else:
        collator = peer_collator(kind, tokenizer, EVAL_SEED)
    return [
        {k: v for k, v in dict(collator(examples[i : i + batch_size])).items() if k in ("input_ids", "labels")}
        for i in range(0, len(examples), batch_size)
    ]


@torch.no_grad()
def held_out_loss(model: nn.Module, batches: list[dict[str, torch.Tensor]], kind: str) -> float:
    """Mean cross-entropy over every predicted token of the held-out batches."""
    was_training = model.training
    model.eval()
    total = count = 0.0
    for batch in batches:
        labels = batch["labels"]
        predicted = int((labels[:, 1:] if kind == "clm" else labels).ne(-100).sum())  # causal: shifted by one
        total += float(model(**batch).loss) * predicted
        count += predicted
    model.train(was_training)
    return total / count


class HeldOutCurve(TrainerCallback):
    """Evaluates the held-out loss every `every` steps and at the end, and times every training step: the time from
    one step's end to the next's (data loading, collation, forward, backward, optimiser step), leaving out those an
    evaluation fell in. Seconds per step is their median, which a burst of other processes' load moves least."""

    def __init__(self, batches, kind: str, every: int):
        self.batches, self.kind, self.every = batches, kind, every
        self.curve: list[tuple[int, float]] = []
        self.step_seconds: list[float] = []
        self._last = 0.0

    def _evaluate(self, model, step: int) -> None:
        self.curve.append((step, held_out_loss(model, self.batches, self.kind)))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._evaluate(model, 0)
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        now = time.perf_counter()
        self.step_seconds.append(now - self._last)
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._evaluate(model, state.global_step)
            now = time.perf_counter()
        self._last = now

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.curve[-1][0] != state.global_step:
            self._evaluate(model, state.global_step)

    def seconds_per_step(self) -> float:
        return statistics.median(self.step_seconds[1:] or self.step_seconds)  # the first step warms up


def steps_to_target(curve: list[tuple[int, float]], target: float) -> float | None:
    """The first step at which the curve reaches `target`, linearly interpolated between evaluations; None if never."""
    for (s0, l0), (s1, l1) in itertools.pairwise(curve):
        if l1 <= target:
            return s1 if l0 == l1 else s0 + (s1 - s0) * (l0 - target) / (l0 - l1)
    return 0.0 if curve and curve[0][1] <= target else None


# --------------------------------------------------------------------------------------------------------------------
# One configuration
# --------------------------------------------------------------------------------------------------------------------


def _train(trainer: Trainer, curve: HeldOutCurve, steps: int) -> dict:
    trainer.add_callback(curve)
    trainer.remove_callback(PrinterCallback)  # the run's summary line
    trainer.train()
    return {
        "steps": steps,
        "seconds_per_step": curve.seconds_per_step(),
        "mean_seconds_per_step": statistics.fmean(curve.step_seconds),
        "curve": [[s, round(loss, 4)] for s, loss in curve.curve],
        "final_loss": curve.curve[-1][1],
        "best_loss": min(loss for _, loss in curve.curve),
    }


def _quiet_args(output_dir: str, **kwargs) -> dict:
    return dict(
        output_dir=output_dir,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_strategy="no",
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        **kwargs,
    )


def run_peer(config, tokenizer, raw, batches, model_size, options) -> dict:
    set_seed(options.seed)
    model = config.build_peer(*model_size, model_special_ids(tokenizer, config.architecture))
    model.set_attn_implementation("sdpa")
    framing = pretrain.ARCHITECTURES[config.architecture].framing
    rows = tokenize_and_group(raw, tokenizer, raw_length(config.kind), packing=False, framing=framing)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            **_quiet_args(out),
            max_steps=options.peer_steps,
            per_device_train_batch_size=8,  # run_mlm / run_clm's defaults, but the learning rate
            learning_rate=options.peer_lr,
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            seed=options.seed,
        )
        seed = options.seed if config.kind == "span" else None
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=rows["train"],
            data_collator=peer_collator(config.kind, tokenizer, seed),
        )
        result = _train(trainer, HeldOutCurve(batches, config.kind, options.eval_every), options.peer_steps)
    result.update(
        model=config.peer_name, parameters=sum(p.numel() for p in model.parameters()), lr=options.peer_lr, batch=8
    )
    return result


def run_ours(config, tokenizer_dir: str, raw, batches, model_size, options, settings: list[str]) -> dict:
    hidden, layers, heads = model_size
    with tempfile.TemporaryDirectory() as out:
        flags = [str(config.recipe), *settings, "--output_dir", out, "--tokenizer_name", tokenizer_dir]
        size = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads}
        flags += ["--config_overrides", json.dumps(size), "--block_size", str(BLOCK), "--seed", str(options.seed)]
        flags += ["--report_to", "none", "--disable_tqdm", "true", "--eval_strategy", "no", "--logging_strategy", "no"]
        if options.ours_steps:
            flags += ["--max_steps", str(options.ours_steps)]
        model_args, data_args, tokenizer_args, objective_args, _, training_args = pretrain.parse_arguments(flags)
        architecture, objective = pretrain.check_arguments(
            model_args, data_args, tokenizer_args, objective_args, training_args
        )
        set_seed(training_args.seed)
        tokenizer = load_or_train_tokenizer(tokenizer_dir, architecture.name)
        model, _ = pretrain.build_model(model_args, architecture, objective, objective_args, tokenizer)
        rows = tokenize_and_group(
            raw,
            tokenizer,
            objective.raw_length(data_args.block_size, objective_args),
            packing=data_args.packing,
            return_offsets=objective_args.whole_word_mask,
            framing=architecture.framing,
        )
        collator = objective.collator(tokenizer, objective_args, training_args.seed, data_args.block_size)
        trainer = FourfoldTrainer(
            model=model,
            args=training_args,
            train_dataset=rows["train"],
            data_collator=collator,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(objective_args.optimizer, training_args),
        )
        result = _train(trainer, HeldOutCurve(batches, config.kind, options.eval_every), training_args.max_steps)
    result.update(
        model=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        recipe=str(config.recipe.relative_to(REPO)),
        settings=settings,
        batch=training_args.per_device_train_batch_size,
        lr=training_args.learning_rate,
        lr_scheduler_type=str(training_args.lr_scheduler_type.value),
    )
    return result


def run_configuration(config: Configuration, options, log: Callable[[str], None] = print) -> dict:
    raw = load_text_dataset([str(options.corpus)], validation_split_percentage=5.0, seed=options.seed)
    if options.quick:
        raw["train"] = raw["train"].select(range(min(3, len(raw["train"]))))
        raw["validation"] = raw["validation"].select(range(1))
    tokenizer = load_or_train_tokenizer(None, config.architecture, raw["train"]["text"], options.vocab)
    held_out = tokenize_and_group(
        raw,
        tokenizer,
        raw_length(config.kind),
        packing=False,
        framing=pretrain.ARCHITECTURES[config.architecture].framing,
    )["validation"]
    held_out = held_out.select(range(min(len(held_out), options.held_out_rows)))
    batches = eval_batches(config.kind, tokenizer, held_out)
    model_size = (options.hidden, options.layers, options.heads)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        tokenizer.save_pretrained(tokenizer_dir)
        log(f"{config.name}: {config.peer_name}, {options.peer_steps} steps ...")
        peer = run_peer(config, tokenizer, raw, batches, model_size, options)
        target = peer["final_loss"]
        runs = {}
        for name, settings in options.variants.items():
            log(f"{config.name}: fourfold {name} {settings} ...")
            runs[name] = ours = run_ours(config, tokenizer_dir, raw, batches, model_size, options, settings)
            steps = steps_to_target(ours["curve"], target)
            ours["steps_to_target"] = steps
            ours["rows_to_target"] = None if steps is None else steps * ours["batch"]
            ours["rows_ratio"] = None if steps is None else peer["steps"] * peer["batch"] / ours["rows_to_target"]
            ours["seconds_to_target"] = None if steps is None else steps * ours["seconds_per_step"]
            ours["ratio"] = (
                None if steps is None else peer["steps"] * peer["seconds_per_step"] / ours["seconds_to_target"]
            )
            log(
                f"  target {target:.3f} (peer {peer['seconds_per_step'] * 1000:.1f} ms/step): steps {steps}, "
                f"{ours['seconds_per_step'] * 1000:.1f} ms/step, ratio {ours['ratio']}, final {ours['final_loss']:.3f}"
            )
    peer["seconds_to_target"] = peer["steps"] * peer["seconds_per_step"]
    return {
        "configuration": config.name,
        "vocab": len(tokenizer),
        "held_out_rows": len(held_out),
        "held_out_predicted_tokens": sum(int(b["labels"].ne(-100).sum()) for b in batches),
        "target": target,
        "peer": peer,
        "ours": runs,
    }


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


def _ratio(value: float | None) -> str:
    return "not reached" if value is None else f"**{value:.2f}x**"


def markdown(result: dict) -> str:
    meta = result["machine"]
    lines = [
        f"Machine: {meta['processor']}, {meta['threads']} threads; torch {meta['torch']}, transformers "
        f"{meta['transformers']}; {meta['date']}. Load average at start {meta['load_start']:.2f} / end "
        f"{meta['load_end']:.2f} (`uptime`: {meta['uptime_start']}). Corpus {meta['corpus']}; hidden "
        f"{meta['hidden']}, {meta['layers']} layers, {meta['heads']} heads, sequences of {BLOCK}; run took "
        f"{meta['minutes']:.1f} min.",
        "",
        "| configuration | peer: steps x s/step = s | target (peer's held-out loss) | fourfold | steps to target "
        "x s/step = s | ours final loss | rows-to-target ratio | time-to-target ratio |",
        "|---|---|---:|---|---|---:|---:|---:|",
    ]
    for row in result["configurations"]:
        peer = row["peer"]
        peer_cell = (
            f"{peer['model']} (batch {peer['batch']}, lr {peer['lr']:g}): {peer['steps']} x "
            f"{peer['seconds_per_step'] * 1000:.1f} ms = {peer['seconds_to_target']:.1f} s"
        )
        for name, ours in row["ours"].items():
            steps = ours["steps_to_target"]
            ours_cell = (
                "not reached"
                if steps is None
                else f"{steps:.0f} x {ours['seconds_per_step'] * 1000:.1f} ms = {ours['seconds_to_target']:.1f} s"
            )
            settings = " ".join(ours["settings"]).replace("|", "\\|")
            lines.append(
                f"| {row['configuration']} | {peer_cell} | {row['target']:.3f} | {name} (batch {ours['batch']}) "
                f"{settings} | {ours_cell} | {ours['final_loss']:.3f} | {_ratio(ours['rows_ratio'])} | "
                f"{_ratio(ours['ratio'])} |"
            )
    return "\n".join(lines) + "\n"


def parse_variant(text: str) -> tuple[str, list[str]]:
    """`name:key=value;key=value` -> (name, ["--key", "value", ...]); `name` alone: the recipe as it is."""
    name, _, pairs = text.partition(":")
    flags = []
    for pair in filter(None, pairs.split(";")):
        key, _, value = pair.partition("=")
        flags += [f"--{key}", value]
    return name, flags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS))
    parser.add_argument("--corpus", type=Path, default=None, help="default: the largest bundled .jsonl")
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument(
        "--peer-steps", type=int, default=600, help="the peer's budget (600 x 8 rows = the recipes' 300 x 16)"
    )
    parser.add_argument("--peer-lr", type=float, default=2e-3)
    parser.add_argument("--ours-steps", type=int, default=0, help="0: the recipe's max_steps")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
    parser.add_argument("--held-out-rows", type=int, default=128, help="held-out blocks evaluated (the first N)")
    parser.add_argument(
        "--variant",
        action="append",
        default=None,
        help="a run of ours: 'name' (the recipe) or 'name:key=value;key=value' (recipe keys overridden); repeatable",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test: a few documents and steps")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="time_to_target", help="output file stem under --out")
    options = parser.parse_args(argv)
    if options.corpus is None:  # the smoke test: the small Moby-Dick sample
        options.corpus = REPO / "training" / "data" / "moby_dick.jsonl" if options.quick else bundled_corpus()
    if options.quick:
        options.peer_steps, options.ours_steps, options.eval_every, options.held_out_rows = 4, 4, 2, 8
    options.variants = dict(parse_variant(v) for v in (options.variant or ["recipe"]))
    threads, verbosity, bars = (
        torch.get_num_threads(),
        transformers.logging.get_verbosity(),
        datasets.is_progress_bar_enabled(),
    )
    if options.threads:
        torch.set_num_threads(options.threads)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        return _run(options)
    finally:  # a caller (the smoke test) keeps its own settings
        torch.set_num_threads(threads)
        transformers.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def _run(options) -> int:

    start, load_start = time.time(), os.getloadavg()[0]
    uptime = os.popen("uptime").read().strip()
    rows = [run_configuration(CONFIGURATIONS[name], options) for name in options.configs]
    result = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "uptime_start": uptime,
            "load_start": load_start,
            "load_end": os.getloadavg()[0],
            "minutes": (time.time() - start) / 60,
            "corpus": str(Path(options.corpus).resolve().relative_to(REPO))
            if REPO in Path(options.corpus).resolve().parents
            else str(options.corpus),
            "hidden": options.hidden,
            "layers": options.layers,
            "heads": options.heads,
            "quick": options.quick,
        },
        "configurations": rows,
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / f"{options.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (options.out / f"{options.name}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

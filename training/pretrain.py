"""`fourfold pretrain RECIPE.yaml [--flag value ...]`: pretrain one of the four configurations from scratch.

Reads top to bottom: parse -> tokenizer -> model from a named configuration -> data -> collator -> Trainer -> save.
Objectives: masked LM or ELECTRA replaced-token detection (encoder), causal LM (decoder), prefix LM or UL2's mixture
of denoisers in one sequence (prefix-lm), T5 span corruption or UL2's mixture of denoisers (seq2seq).

The flags are the dataclasses below plus every `transformers.TrainingArguments` flag. A YAML recipe holds the same
keys and gives the defaults; flags after it win (`fourfold pretrain configuration/pretrain-decoder-tiny.yaml
--max_steps 10`). Bad input (missing files, an unknown text column, a tokenizer without the needed special tokens,
a block longer than the model's positions, an objective the architecture cannot train) fails before training.
The output folder gets the model and tokenizer (`save_pretrained`), `loss_curve.png`, metrics and samples.
"""

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import (
    HfArgumentParser,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainingArguments,
    set_seed,
)

from fourfold.configuration import ARCHITECTURES, get_config
from fourfold.hub_cards import FourfoldTrainer, write_model_card
from fourfold.modeling import (
    FourfoldDecoderForCausalLM,
    FourfoldEncoderForMaskedLM,
    FourfoldPrefixLMForCausalLM,
    FourfoldSeq2SeqForConditionalGeneration,
)
from fourfold.training.collators import (
    MODE_TOKENS,
    collator_for,
    compute_input_and_target_lengths,
    prefix_lm_raw_length,
)
from fourfold.training.data import BUNDLED_CORPUS, FRAMING, load_text_dataset, tokenize_and_group
from fourfold.training.electra import ReplacedTokenDetection
from fourfold.training.tokenizer import load_or_train_tokenizer, model_special_ids, sentinel_ids

PRETRAINING_HEADS: dict[str, type[PreTrainedModel]] = {
    "encoder": FourfoldEncoderForMaskedLM,
    "decoder": FourfoldDecoderForCausalLM,
    "prefix-lm": FourfoldPrefixLMForCausalLM,
    "seq2seq": FourfoldSeq2SeqForConditionalGeneration,
}
# The objectives each architecture trains with, its default first; `--objective` must be one of them.
OBJECTIVES: dict[str, tuple[str, ...]] = {
    "encoder": ("mlm", "electra"),
    "decoder": ("clm",),
    "prefix-lm": ("prefix-lm", "ul2"),
    "seq2seq": ("span-corruption", "ul2"),
}


@dataclass
class ModelArguments:
    architecture: str = field(default="decoder", metadata={"help": "encoder, decoder, prefix-lm or seq2seq."})
    size: str = field(default="tiny", metadata={"help": "Preset size: tiny, small, base or large."})
    config_name: str | None = field(
        default=None, metadata={"help": "A named configuration such as 'decoder-tiny'; overrides architecture/size."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Config fields to override, as JSON (a mapping in YAML), e.g. '{\"hidden_size\": 128}'."},
    )


@dataclass
class DataArguments:
    train_files: list[str] = field(
        default_factory=lambda: [str(BUNDLED_CORPUS)],
        metadata={"help": "Local .txt/.json/.jsonl/.csv/.parquet files. Default: the bundled Moby-Dick sample."},
    )
    validation_files: list[str] | None = field(
        default=None, metadata={"help": "Held-out files; without them --validation_split_percentage is held out."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A Hub dataset, or a local folder (save_to_disk, or data files), instead of --train_files."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    text_column: str = field(default="text", metadata={"help": "The column that holds the text."})
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Percent of the training documents held out when no validation files."}
    )
    block_size: int = field(
        default=128,
        metadata={
            "help": "Tokens per training row (seq2seq: encoder input tokens, after span corruption; prefix-lm ul2: "
            "the longest a document laid out as [mode] input target may be)."
        },
    )
    packing: bool = field(
        default=True,
        metadata={"help": "Keep documents apart in a row (position ids restart at each document); else plain blocks."},
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream the data, read as training goes (needs --max_steps and a validation split)."},
    )
    shuffle_buffer_size: int = field(
        default=10_000, metadata={"help": "With --streaming: rows drawn from a buffer of this many, for shuffling."}
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenizing."})


@dataclass
class TokenizerArguments:
    tokenizer_name: str | None = field(
        default=None,
        metadata={
            "help": "A tokenizer folder or Hub name; empty: train one on the training data (WordPiece and Unigram "
            "training is not repeatable run to run; reuse a saved tokenizer for identical runs)."
        },
    )
    tokenizer_algorithm: str | None = field(
        default=None,
        metadata={"help": "wordpiece, bpe or unigram (default: encoder wordpiece, seq2seq unigram, others bpe)."},
    )
    vocab_size: int = field(default=4000, metadata={"help": "Vocabulary size of a trained tokenizer."})
    num_sentinels: int = field(default=100, metadata={"help": "Sentinel tokens <extra_id_i> (seq2seq tokenizer)."})


@dataclass
class ObjectiveArguments:
    objective: str | None = field(
        default=None,
        metadata={
            "help": "mlm or electra (encoder), clm (decoder), prefix-lm or ul2 (prefix-lm), span-corruption or ul2 "
            "(seq2seq); default: the architecture's first. ul2: UL2's mixture of denoisers (R, X, S) with mode tokens; "
            "on prefix-lm, [mode] corrupted input is the prefix and the targets follow it in the same row."
        },
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Masked LM: fraction of tokens predicted."})
    whole_word_mask: bool = field(default=False, metadata={"help": "Masked LM: mask whole words."})
    prefix_fraction: float | None = field(
        default=None, metadata={"help": "Prefix LM: fixed prefix fraction of each row; empty: uniform random split."}
    )
    noise_density: float = field(default=0.15, metadata={"help": "Span corruption: fraction of tokens corrupted."})
    mean_noise_span_length: float = field(default=3.0, metadata={"help": "Span corruption: mean span length."})
    electra_generator_fraction: float = field(
        default=0.5, metadata={"help": "ELECTRA: the generator's width as a fraction of the discriminator's."}
    )
    electra_discriminator_weight: float = field(
        default=50.0, metadata={"help": "ELECTRA: weight of the discriminator's loss against the generator's."}
    )
    num_samples: int = field(default=3, metadata={"help": "Samples printed and saved after training."})


def main(argv: list[str] | None = None) -> int:
    # 1. Parse: the recipe's keys first, then the command line, so later flags win.
    model_args, data_args, tokenizer_args, objective_args, training_args = parse_arguments(argv)
    architecture = check_arguments(model_args, data_args, tokenizer_args, objective_args)
    if data_args.streaming and training_args.max_steps <= 0:  # else the Trainer fails after the data and model
        raise ValueError("--streaming true needs --max_steps: a stream has no length to count epochs by.")
    if data_args.streaming and data_args.shuffle_buffer_size < 1:
        raise ValueError(f"--shuffle_buffer_size {data_args.shuffle_buffer_size} must be >= 1 (1: no shuffling).")
    training_args.remove_unused_columns = False  # the collators need every column (offsets, position ids)
    # Before the tokenizer and the model are built. A trained WordPiece or Unigram tokenizer still varies between
    # runs (the `tokenizers` trainers break frequency ties in hash-map order); --tokenizer_name repeats one exactly.
    set_seed(training_args.seed)

    # 2. Data, raw: checked now so a wrong path or column fails before anything is built.
    raw = load_text_dataset(
        data_args.train_files if not data_args.dataset_name else None,
        data_args.dataset_name,
        data_args.dataset_config_name,
        data_args.text_column,
        data_args.validation_files,
        data_args.validation_split_percentage,
        data_args.streaming,
        training_args.seed,
    )

    # 3. Tokenizer: loaded, or trained on the training split.
    texts = (row[data_args.text_column] for row in raw["train"])
    tokenizer = load_or_train_tokenizer(
        tokenizer_args.tokenizer_name,
        architecture,
        texts,
        tokenizer_args.vocab_size,
        tokenizer_args.tokenizer_algorithm,
        tokenizer_args.num_sentinels,
    )
    if objective_args.objective == "ul2":  # its mode tokens join the vocabulary
        tokenizer.add_tokens(list(MODE_TOKENS), special_tokens=True)
        if not sentinel_ids(tokenizer):  # a prefix-LM tokenizer has no sentinels: span corruption needs them
            sentinels = [f"<extra_id_{i}>" for i in range(tokenizer_args.num_sentinels)]
            tokenizer.add_tokens(sentinels, special_tokens=True)

    # 4. Model from a named configuration; vocabulary and special ids follow the tokenizer.
    overrides = json.loads(model_args.config_overrides) if model_args.config_overrides else {}
    config = get_config(model_args.config_name, **{**overrides, **model_special_ids(tokenizer, architecture)})
    check_block_size(data_args.block_size, config.max_position_embeddings)
    if objective_args.objective == "electra":  # a generator and a discriminator, trained together
        model = ReplacedTokenDetection.from_config(
            config, objective_args.electra_generator_fraction, objective_args.electra_discriminator_weight
        )
    else:
        model = PRETRAINING_HEADS[architecture](config)
    # No cache while training: it is for generation, and a packed batch must be read without one.
    config.use_cache = False
    parameters = sum(p.numel() for p in model.parameters())
    print(f"{model_args.config_name}: {parameters:,} parameters, vocabulary {len(tokenizer):,}")

    # 5. Data, tokenized and cut into rows. Span corruption shortens a row, so seq2seq rows are cut longer.
    raw_length = data_args.block_size
    if architecture == "seq2seq":
        raw_length, _ = compute_input_and_target_lengths(
            data_args.block_size, objective_args.noise_density, objective_args.mean_noise_span_length
        )
        if objective_args.objective == "ul2":  # the S-denoiser's input is a whole row's prefix, mode token and eos
            check_block_size(raw_length + 2, config.max_position_embeddings)
    elif objective_args.objective == "ul2":  # prefix LM: [mode] input target in one row grows; cut rows shorter
        raw_length = prefix_lm_raw_length(
            data_args.block_size,
            noise_density=objective_args.noise_density,
            mean_noise_span_length=objective_args.mean_noise_span_length,
        )
    with training_args.main_process_first(desc="tokenizing"):
        rows = tokenize_and_group(
            raw,
            tokenizer,
            raw_length,
            data_args.text_column,
            data_args.packing,
            return_offsets=objective_args.whole_word_mask,
            num_proc=data_args.preprocessing_num_workers,
            framing=FRAMING[architecture],  # e.g. decoder documents end in eos, which the tokenizer leaves to us
        )
    if data_args.streaming:  # the Trainer shuffles a map-style dataset, never a stream: shuffle through a buffer
        rows["train"] = rows["train"].shuffle(seed=training_args.seed, buffer_size=data_args.shuffle_buffer_size)

    # 6. Collator: the objective.
    collator = collator_for(
        architecture,
        tokenizer,
        objective_args.mlm_probability,
        objective_args.whole_word_mask,
        objective_args.prefix_fraction,
        objective_args.noise_density,
        objective_args.mean_noise_span_length,
        seed=training_args.seed,  # draws follow the seed and each batch's tokens: resumed runs repeat them exactly
        objective=objective_args.objective,
        max_length=data_args.block_size,  # prefix-LM UL2: a document laid out longer is an error, never a cut
    )

    # 7. Train, with an evaluation before and after. The one before runs inside `train()` (`eval_on_start`): a
    # `trainer.evaluate()` ahead of `train()` would mark the bare model as prepared, and accelerate would then skip
    # the DistributedDataParallel wrap, leaving each process to train its own replica on its share of the batch.
    training_args.eval_on_start = True
    training_args.prediction_loss_only = True  # evaluation needs the loss only, not every logit gathered
    trainer = FourfoldTrainer(  # a Trainer whose push_to_hub uploads fourfold's model card
        model=model,
        args=training_args,
        train_dataset=rows["train"],
        eval_dataset=rows["validation"],
        data_collator=collator,
        processing_class=tokenizer,
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    perplexity = with_perplexity if objective_args.objective != "electra" else lambda m, _: m  # a sum of two losses
    metrics_before = perplexity(first_evaluation(trainer.state.log_history, "eval_before"), "eval_before")
    trainer.log_metrics("eval_before", metrics_before)
    trainer.log_metrics("train", result.metrics)
    metrics = perplexity(trainer.evaluate(), "eval")
    trainer.log_metrics("eval", metrics)

    # 8. Save: model and tokenizer, metrics, the loss curve, samples.
    config.use_cache = True
    if objective_args.objective == "electra":  # the discriminator is the model; the generator goes beside it
        if trainer.is_world_process_zero():
            model.discriminator.save_pretrained(training_args.output_dir)
            model.generator.save_pretrained(Path(training_args.output_dir) / "generator")
            tokenizer.save_pretrained(training_args.output_dir)
        model = model.generator  # fill-mask samples below
    else:
        trainer.save_model()  # on every process: sharded (FSDP, DeepSpeed) models gather their weights here
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", {**metrics_before, **result.metrics, **metrics})
        trainer.save_state()
        plot_loss_curve(trainer.state.log_history, Path(training_args.output_dir) / "loss_curve.png")
        validation_texts = [row[data_args.text_column] for row in rows_of(raw["validation"], 50)]
        samples = generate_samples(
            model, tokenizer, architecture, validation_texts, objective_args.num_samples, objective_args.objective
        )
        (Path(training_args.output_dir) / "samples.txt").write_text("\n\n".join(samples) + "\n")
        print("\n".join(["", "Samples:", *samples]))
        run_arguments = (model_args, data_args, tokenizer_args, objective_args, training_args)
        write_model_card(training_args.output_dir, run_arguments=run_arguments)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return 0


def parse_arguments(argv: list[str] | None = None) -> tuple:
    """(model, data, tokenizer, objective, training) arguments from an optional YAML recipe followed by flags."""
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, TokenizerArguments, ObjectiveArguments, TrainingArguments),
        prog="fourfold pretrain",
        description=__doc__,
    )
    return parse_recipe_and_flags(parser, argv)


def parse_recipe_and_flags(parser: HfArgumentParser, argv: list[str] | None) -> tuple:
    """The parser's dataclasses from an optional YAML recipe (the first argument) followed by flags; flags win."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        argv = recipe_to_flags(argv[0]) + argv[1:]
    return parser.parse_args_into_dataclasses(args=argv)


def recipe_to_flags(path: str | Path) -> list[str]:
    """A YAML recipe as command-line flags: `block_size: 64` -> ["--block_size", "64"]; lists spread, maps as JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe {path} does not exist; see configuration/pretrain-*.yaml.")
    recipe = yaml.safe_load(path.read_text()) or {}
    flags = []
    for key, value in recipe.items():
        if value is None:
            continue
        flags.append(f"--{key}")
        if isinstance(value, list):
            flags += [_resolve(path, key, str(v)) for v in value]
        elif isinstance(value, dict):
            flags.append(json.dumps(value))
        else:
            flags.append(str(value))
    return flags


def _resolve(recipe: Path, key: str, value: str) -> str:
    """Data files in a recipe may be relative to the package (`training/data/...`), so recipes work anywhere."""
    if key.endswith("_files") and not Path(value).exists():
        package_root = Path(__file__).resolve().parents[1]
        if (package_root / value).exists():
            return str(package_root / value)
    return value


def check_arguments(model_args, data_args, tokenizer_args, objective_args) -> str:
    """Fills in `config_name` and returns the architecture; raises, naming the fix, on arguments that cannot work."""
    if model_args.config_name is None:
        model_args.config_name = f"{model_args.architecture}-{model_args.size}"
    architecture = model_args.config_name.rpartition("-")[0]
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"config_name={model_args.config_name!r}: the architecture must be one of {list(ARCHITECTURES)}."
        )
    choices = OBJECTIVES[architecture]
    if objective_args.objective is None:
        objective_args.objective = choices[0]
    if objective_args.objective not in choices:
        raise ValueError(
            f"objective={objective_args.objective!r} does not fit the {architecture} architecture, which trains with "
            f"{' or '.join(map(repr, choices))}: drop --objective or pick the architecture of that objective "
            f"({'; '.join(a + ': ' + ' or '.join(o) for a, o in OBJECTIVES.items())})."
        )
    if objective_args.whole_word_mask and architecture != "encoder":
        raise ValueError("whole_word_mask is a masked-LM option: use it with --architecture encoder, or drop it.")
    if objective_args.objective == "ul2" and not data_args.packing:
        raise ValueError("objective='ul2' needs --packing true: its denoisers' inputs differ in length.")
    if objective_args.prefix_fraction is not None and architecture != "prefix-lm":
        raise ValueError("prefix_fraction is a prefix-LM option: use it with --architecture prefix-lm, or drop it.")
    if data_args.block_size < 8:
        raise ValueError(f"block_size={data_args.block_size} is too short to train on; use at least 8.")
    return architecture


def check_block_size(block_size: int, max_position_embeddings: int) -> None:
    if block_size > max_position_embeddings:
        raise ValueError(
            f"block_size={block_size} exceeds the model's max_position_embeddings={max_position_embeddings}: lower "
            f"--block_size, or raise it with --config_overrides '{{\"max_position_embeddings\": {block_size}}}'."
        )


def first_evaluation(log_history: list[dict], prefix: str) -> dict[str, float]:
    """The metrics of the run's first evaluation (the untrained model's, by `eval_on_start`; a resumed run keeps its
    history), renamed `eval_loss` -> `<prefix>_loss`."""
    entry = next(e for e in log_history if "eval_loss" in e)
    return {f"{prefix}_{k.removeprefix('eval_')}": v for k, v in entry.items() if k.startswith("eval_")}


def with_perplexity(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """Adds `<prefix>_perplexity` = exp(loss) (per predicted token: masked tokens for MLM, spans for seq2seq)."""
    loss = metrics.get(f"{prefix}_loss")
    if loss is not None:
        metrics[f"{prefix}_perplexity"] = math.exp(min(loss, 50.0))
    return metrics


def rows_of(dataset, n: int) -> list[dict]:
    return [row for _, row in zip(range(n), dataset, strict=False)]


def plot_loss_curve(log_history: list[dict], path: Path) -> None:
    """Training and evaluation loss against step, from the Trainer's log history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    evaluation = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    figure, axes = plt.subplots(figsize=(6, 4))
    for points, label, style in ((train, "train", "-"), (evaluation, "eval", "o-")):
        if points:
            axes.plot(*zip(*points, strict=True), style, label=label)
    axes.set(xlabel="step", ylabel="loss", title=f"{path.parent.name}: pretraining loss")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@torch.no_grad()
def generate_samples(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    architecture: str,
    texts: list[str],
    n: int = 3,
    objective: str | None = None,
) -> list[str]:
    """What the model learnt, in words: fill-mask (encoder), continuations (decoder, prefix LM), denoised spans
    (seq2seq), on the first sentence-ish stretch of `n` held-out texts."""
    model.eval()
    device = next(model.parameters()).device
    prompts = [" ".join(text.split()[:12]) for text in texts if len(text.split()) >= 12][:n]
    samples = []
    generator = torch.Generator().manual_seed(0)
    for prompt in prompts:
        if architecture == "encoder":
            encoded = tokenizer(prompt, return_tensors="pt").to(device)
            input_ids = encoded.input_ids.clone()
            # Mask every fourth ordinary token, then read the model's guesses.
            candidates = [i for i in range(1, input_ids.shape[1] - 1)][1::4]
            input_ids[0, candidates] = tokenizer.mask_token_id
            logits = model(input_ids=input_ids).logits
            filled = input_ids.clone()
            filled[0, candidates] = logits[0, candidates].argmax(-1)
            masked = tokenizer.decode(input_ids[0], skip_special_tokens=False)
            samples.append(f"{masked}\n  -> {tokenizer.decode(filled[0], skip_special_tokens=True)}")
        elif architecture in ("decoder", "prefix-lm"):
            input_ids = tokenizer(prompt, return_tensors="pt").input_ids  # <s> prompt, as in training
            if architecture == "prefix-lm" and objective == "ul2":  # ask the S-denoiser: [S2S] <s> prompt </s>
                mode, eos = tokenizer.convert_tokens_to_ids(MODE_TOKENS[2]), tokenizer.eos_token_id
                input_ids = torch.cat([torch.tensor([[mode]]), input_ids, torch.tensor([[eos]])], dim=1)
            input_ids = input_ids.to(device)
            output = model.generate(input_ids, max_new_tokens=30, do_sample=False, repetition_penalty=1.3)
            continuation = tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
            samples.append(f"{prompt}\n  -> {' '.join(continuation.split())}")  # newlines would break the layout
        else:
            collator = collator_for("seq2seq", tokenizer, seed=int(torch.randint(0, 2**31, (1,), generator=generator)))
            corrupted = collator([{"input_ids": tokenizer(prompt, add_special_tokens=False).input_ids}])
            if objective == "ul2":  # ask for the R-denoiser: span corruption's mode token starts the input
                mode = torch.tensor([[tokenizer.convert_tokens_to_ids(MODE_TOKENS[0])]])
                corrupted["input_ids"] = torch.cat([mode, corrupted["input_ids"]], dim=1)
            output = model.generate(corrupted["input_ids"].to(device), max_new_tokens=20, do_sample=False)
            samples.append(
                f"{tokenizer.decode(corrupted['input_ids'][0])}\n"
                f"  -> predicted {tokenizer.decode(output[0], skip_special_tokens=False)}\n"
                f"     truth     {tokenizer.decode(corrupted['labels'][0])}"
            )
    return samples


if __name__ == "__main__":
    sys.exit(main())

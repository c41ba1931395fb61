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
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import (
    HfArgumentParser,
    PreTrainedTokenizerBase,
    TrainingArguments,
    set_seed,
)

from fourfold.configuration import get_config
from fourfold.hub_cards import write_model_card
from fourfold.training.architectures import (
    ARCHITECTURES,
    OBJECTIVE_OPTIONS,
    Architecture,
    Objective,
    get_architecture,
)
from fourfold.training.arguments import parse_recipe_and_flags
from fourfold.training.collators import MODE_TOKENS
from fourfold.training.data import BUNDLED_CORPUS, load_text_dataset, tokenize_and_group
from fourfold.training.metrics import with_perplexity
from fourfold.training.samples import write_samples
from fourfold.training.tokenizer import load_or_train_tokenizer, model_special_ids, sentinel_ids
from fourfold.training.trainer import FourfoldTrainer, first_evaluation


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
    # 1. Parse: the recipe's keys first, then the command line, so later flags win; checked before anything is built.
    model_args, data_args, tokenizer_args, objective_args, training_args = parse_arguments(argv)
    architecture, objective = check_arguments(model_args, data_args, tokenizer_args, objective_args, training_args)
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
    tokenizer = build_tokenizer(
        tokenizer_args, architecture, objective, (r[data_args.text_column] for r in raw["train"])
    )

    # 4. Model from a named configuration; vocabulary and special ids follow the tokenizer.
    model, config = build_model(model_args, architecture, objective, objective_args, tokenizer, data_args.block_size)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"{model_args.config_name}: {parameters:,} parameters, vocabulary {len(tokenizer):,}")

    # 5. Data, tokenized and cut into rows of the objective's raw length (corruption changes a row's length).
    with training_args.main_process_first(desc="tokenizing"):
        rows = tokenize_and_group(
            raw,
            tokenizer,
            objective.raw_length(data_args.block_size, objective_args),
            data_args.text_column,
            data_args.packing,
            return_offsets=objective_args.whole_word_mask,
            num_proc=data_args.preprocessing_num_workers,
            framing=architecture.framing,  # e.g. decoder documents end in eos, which the tokenizer leaves to us
        )
    if data_args.streaming:  # the Trainer shuffles a map-style dataset, never a stream: shuffle through a buffer
        rows["train"] = rows["train"].shuffle(seed=training_args.seed, buffer_size=data_args.shuffle_buffer_size)

    # 6. Collator: the objective. Its draws follow the seed and each batch's tokens, so resumed runs repeat them.
    collator = objective.collator(tokenizer, objective_args, training_args.seed, data_args.block_size)

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
    metrics = report_metrics(trainer, result.metrics, objective)

    # 8. Save: the model and tokenizer (the objective decides what the model is), metrics, loss curve, samples.
    config.use_cache = True  # the saved model generates with its cache
    sample_model = objective.save_model(trainer, model, tokenizer)
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", metrics)
        trainer.save_state()
        output_dir = Path(training_args.output_dir)
        plot_loss_curve(trainer.state.log_history, output_dir / "loss_curve.png")
        texts = [row[data_args.text_column] for row in rows_of(raw["validation"], 50)]
        sample_lines = write_samples(
            objective.sample_writer, sample_model, tokenizer, texts, objective_args.num_samples
        )
        (output_dir / "samples.txt").write_text("\n\n".join(sample_lines) + "\n")
        print("\n".join(["", "Samples:", *sample_lines]))
        run_arguments = (model_args, data_args, tokenizer_args, objective_args, training_args)
        write_model_card(output_dir, run_arguments=run_arguments)
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


def check_arguments(
    model_args, data_args, tokenizer_args, objective_args, training_args
) -> tuple[Architecture, Objective]:
    """Fills in `config_name` and `objective`, and returns the architecture and objective records; raises, naming the
    fix, on arguments that cannot work."""
    if model_args.config_name is None:
        model_args.config_name = f"{model_args.architecture}-{model_args.size}"
    architecture = get_architecture(model_args.config_name.rpartition("-")[0])
    objective = architecture.objective(objective_args.objective)
    objective_args.objective = objective.name
    defaults = ObjectiveArguments()
    for name in OBJECTIVE_OPTIONS:
        if getattr(objective_args, name) != getattr(defaults, name) and name not in objective.options:
            users = sorted(
                {f"{a.name} {o.name}" for a in ARCHITECTURES.values() for o in a.objectives if name in o.options}
            )
            raise ValueError(
                f"{name} is an option of {', '.join(users)}, not of {architecture.name} {objective.name}: drop "
                f"--{name}, or pick an architecture and objective that read it."
            )
    if objective.mode_tokens and not data_args.packing:
        raise ValueError(f"objective={objective.name!r} needs --packing true: its denoisers' inputs differ in length.")
    if data_args.block_size < 8:
        raise ValueError(f"block_size={data_args.block_size} is too short to train on; use at least 8.")
    if data_args.streaming and training_args.max_steps <= 0:  # else the Trainer fails after the data and model
        raise ValueError("--streaming true needs --max_steps: a stream has no length to count epochs by.")
    if data_args.streaming and data_args.shuffle_buffer_size < 1:
        raise ValueError(f"--shuffle_buffer_size {data_args.shuffle_buffer_size} must be >= 1 (1: no shuffling).")
    training_args.remove_unused_columns = False  # the collators need every column (offsets, position ids)
    return architecture, objective


def build_tokenizer(tokenizer_args, architecture: Architecture, objective: Objective, texts) -> PreTrainedTokenizerBase:
    """The tokenizer: loaded, or trained on `texts`; UL2's mode tokens (and sentinels, for a prefix LM) join it."""
    tokenizer = load_or_train_tokenizer(
        tokenizer_args.tokenizer_name,
        architecture.name,
        texts,
        tokenizer_args.vocab_size,
        tokenizer_args.tokenizer_algorithm,
        tokenizer_args.num_sentinels,
    )
    if objective.mode_tokens:
        tokenizer.add_tokens(list(MODE_TOKENS), special_tokens=True)
        if not sentinel_ids(tokenizer):  # a prefix-LM tokenizer has no sentinels: span corruption needs them
            sentinels = [f"<extra_id_{i}>" for i in range(tokenizer_args.num_sentinels)]
            tokenizer.add_tokens(sentinels, special_tokens=True)
    return tokenizer


def build_model(model_args, architecture: Architecture, objective: Objective, objective_args, tokenizer, block_size):
    """(model, config): the objective's model (the architecture's pretraining head, or ELECTRA's pair) from the named
    configuration with `--config_overrides`; vocabulary and special ids from the tokenizer; the block checked
    against the model's positions."""
    overrides = json.loads(model_args.config_overrides) if model_args.config_overrides else {}
    config = get_config(model_args.config_name, **{**overrides, **model_special_ids(tokenizer, architecture.name)})
    check_block_size(objective.model_length(block_size, objective_args), config.max_position_embeddings)
    model = objective.build_model(architecture.pretraining_head, config, objective_args)
    config.use_cache = False  # no cache while training: it is for generation, and a packed batch is read without one
    return model, config


def report_metrics(trainer: FourfoldTrainer, train_metrics: dict, objective: Objective) -> dict[str, float]:
    """Logs and returns the evaluation before training (`eval_before_*`), the training metrics and the evaluation
    after training, with perplexities where the loss is a per-token cross-entropy."""
    perplexity = with_perplexity if objective.reports_perplexity else lambda metrics, prefix: metrics
    before = perplexity(first_evaluation(trainer.state.log_history, "eval_before"), "eval_before")
    after = perplexity(trainer.evaluate(), "eval")
    trainer.log_metrics("eval_before", before)
    trainer.log_metrics("train", train_metrics)
    trainer.log_metrics("eval", after)
    return {**before, **train_metrics, **after}


def check_block_size(block_size: int, max_position_embeddings: int) -> None:
    if block_size > max_position_embeddings:
        raise ValueError(
            f"block_size={block_size} exceeds the model's max_position_embeddings={max_position_embeddings}: lower "
            f"--block_size, or raise it with --config_overrides '{{\"max_position_embeddings\": {block_size}}}'."
        )


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


if __name__ == "__main__":
    sys.exit(main())

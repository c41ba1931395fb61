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
    PreTrainedTokenizerBase,
    TrainingArguments,
    set_seed,
)

from fourfold.configuration import SIZES, get_config, preset_names
from fourfold.hub_cards import write_model_card
from fourfold.modeling import FourfoldConfig
from fourfold.training.architectures import (
    ARCHITECTURES,
    OBJECTIVE_OPTIONS,
    Architecture,
    Objective,
    get_architecture,
)
from fourfold.training.arguments import (
    ArgumentParser,
    RunArguments,
    check_training_arguments,
    parse_json_mapping,
    parse_recipe_and_flags,
)
from fourfold.training.chat_template import resolve_chat_template
from fourfold.training.collators import MODE_TOKENS
from fourfold.training.data import BUNDLED_CORPUS, load_text_dataset, tokenize_and_group
from fourfold.training.errors import UsageError, check_between, closest, require
from fourfold.training.metrics import with_perplexity
from fourfold.training.optimizers import OPTIMIZERS, fit_decay_steps, optimizer_cls_and_kwargs
from fourfold.training.outputs import prepare_output_dir
from fourfold.training.samples import write_samples
from fourfold.training.sentence_transformers_files import write_sentence_transformers_files
from fourfold.training.tokenizer import (
    ALGORITHMS,
    TOKENIZER_FIELDS,
    load_or_train_tokenizer,
    model_special_ids,
    sentinel_ids,
)
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
        metadata={
            "help": "Config fields to override, as JSON (a mapping in YAML), e.g. '{\"hidden_size\": 128}'; a flag "
            "merges into the recipe's mapping. The vocabulary and special ids follow the tokenizer."
        },
    )

    def __post_init__(self):
        require(
            self.architecture in ARCHITECTURES,
            f"--architecture {self.architecture!r} is not one of the four{closest(self.architecture, ARCHITECTURES)}",
            f"choose {', '.join(ARCHITECTURES)}",
        )
        require(
            self.size in SIZES,
            f"--size {self.size!r} is not a preset size{closest(self.size, SIZES)}",
            f"choose {', '.join(SIZES)}, and --config_overrides for anything else",
        )
        if self.config_name is not None:
            require(
                self.config_name in preset_names(),
                f"--config_name {self.config_name!r} is not a named configuration"
                f"{closest(self.config_name, preset_names())}",
                f"choose one of {', '.join(preset_names())}",
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

    def __post_init__(self):
        require(
            self.block_size >= 8,
            f"--block_size {self.block_size} is too short to train on",
            "use at least 8 (128 or more for real runs)",
        )
        check_between(
            "validation_split_percentage", self.validation_split_percentage, 0, 100, "it is a percentage of documents"
        )
        require(
            self.shuffle_buffer_size >= 1,
            f"--shuffle_buffer_size {self.shuffle_buffer_size} must be >= 1",
            "1 turns shuffling off; 10000 is usual",
        )
        require(
            self.preprocessing_num_workers is None or self.preprocessing_num_workers >= 1,
            f"--preprocessing_num_workers {self.preprocessing_num_workers} must be >= 1",
            "leave it empty to tokenize in this process",
        )


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
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "The tokenizer's chat template: a path to a Jinja file, or the template itself; empty: keep the "
            "tokenizer's, or (decoder, prefix-lm) fourfold's default (training/chat_template.py)."
        },
    )

    def __post_init__(self):
        if self.chat_template is not None:
            resolve_chat_template(self.chat_template)  # a missing file or a template Jinja cannot parse fails now
        require(
            self.tokenizer_algorithm is None or self.tokenizer_algorithm in ALGORITHMS,
            f"--tokenizer_algorithm {self.tokenizer_algorithm!r} is not one the trainer knows"
            f"{closest(str(self.tokenizer_algorithm), ALGORITHMS)}",
            f"choose {', '.join(ALGORITHMS)}, or leave it empty for the architecture's default",
        )
        require(self.vocab_size > 0, f"--vocab_size {self.vocab_size} must be > 0", "4000 suits the bundled corpus")
        require(
            self.num_sentinels >= 1,
            f"--num_sentinels {self.num_sentinels} must be >= 1",
            "span corruption needs a sentinel per noise span of a row (100 is T5's)",
        )


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
    optimizer: str = field(
        default="adamw",
        metadata={
            "help": "adamw (the Trainer's own, set by --optim) or muon (torch.optim.Muon for the blocks' matrices, "
            "AdamW for embeddings, norms, biases and heads; one --learning_rate: training/optimizers.py)."
        },
    )

    def __post_init__(self):
        # An all-ignored loss trains nothing and evaluates to NaN: every rate that picks the targets is kept inside.
        check_between("mlm_probability", self.mlm_probability, 0, 1, "the masked-LM loss needs masked tokens (0.15)")
        check_between("prefix_fraction", self.prefix_fraction, 0, 1, "both the prefix and the target need tokens")
        check_between("noise_density", self.noise_density, 0, 1, "span corruption needs noise and clean text (0.15)")
        require(
            self.mean_noise_span_length >= 1,
            f"--mean_noise_span_length {self.mean_noise_span_length:g} must be >= 1",
            "a noise span has at least one token (3 is T5's)",
        )
        check_between(
            "electra_generator_fraction",
            self.electra_generator_fraction,
            0,
            1,
            "the generator is a narrower copy of the discriminator (0.25-0.5)",
            closed="high",
        )
        require(
            self.electra_discriminator_weight > 0,
            f"--electra_discriminator_weight {self.electra_discriminator_weight:g} must be > 0",
            "50 is the paper's",
        )
        require(self.num_samples >= 0, f"--num_samples {self.num_samples} must be >= 0", "0 writes no samples")
        require(
            self.optimizer in OPTIMIZERS,
            f"--optimizer {self.optimizer!r} is not one fourfold knows{closest(self.optimizer, OPTIMIZERS)}",
            f"choose {', '.join(OPTIMIZERS)} (other optimisers: --optim, with --optimizer adamw)",
        )


def main(argv: list[str] | None = None) -> int:
    # 1. Parse: the recipe's keys first, then the command line, so later flags win; checked before anything is built.
    model_args, data_args, tokenizer_args, objective_args, run_args, training_args = parse_arguments(argv)
    architecture, objective = check_arguments(model_args, data_args, tokenizer_args, objective_args, training_args)
    with training_args.main_process_first(desc="output folder"):  # refuses, or empties, a folder of another run
        checkpoint = prepare_output_dir(
            training_args.output_dir, run_args.overwrite_output_dir, training_args.resume_from_checkpoint
        )
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
    model, config = build_model(model_args, architecture, objective, objective_args, tokenizer)
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
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(objective_args.optimizer, training_args),  # None: --optim
    )
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = report_metrics(trainer, result.metrics, objective)

    # 8. Save: the model and tokenizer (the objective decides what the model is), metrics, loss curve, samples.
    config.use_cache = True  # the saved model generates with its cache
    sample_model = objective.save_model(trainer, model, tokenizer)
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", metrics)
        trainer.save_state()
        output_dir = Path(training_args.output_dir)
        write_sentence_transformers_files(output_dir)  # an encoder's pooling, for SentenceTransformer(output_dir)
        plot_loss_curve(trainer.state.log_history, output_dir / "loss_curve.png")
        texts = [row[data_args.text_column] for row in rows_of(raw["validation"], 50)]
        sample_lines = write_samples(
            objective.sample_writer, sample_model, tokenizer, texts, objective_args.num_samples
        )
        (output_dir / "samples.txt").write_text("\n\n".join(sample_lines) + "\n")
        print("\n".join(["", "Samples:", *sample_lines]))
        run_arguments = (model_args, data_args, tokenizer_args, objective_args, run_args, training_args)
        write_model_card(output_dir, run_arguments=run_arguments)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return 0


def parse_arguments(argv: list[str] | None = None) -> tuple:
    """(model, data, tokenizer, objective, run, training) arguments from an optional YAML recipe followed by flags."""
    parser = ArgumentParser(
        (ModelArguments, DataArguments, TokenizerArguments, ObjectiveArguments, RunArguments, TrainingArguments),
        prog="fourfold pretrain",
        description=__doc__,
    )
    return parse_recipe_and_flags(parser, argv)


def check_arguments(
    model_args, data_args, tokenizer_args, objective_args, training_args
) -> tuple[Architecture, Objective]:
    """Fills in `config_name` and `objective`, and returns the architecture and objective records; raises a
    `UsageError` naming the fix on arguments that cannot work, before any data, tokenizer or model is built."""
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
            raise UsageError(
                f"--{name} is an option of {', '.join(users)}, not of {architecture.name} {objective.name}",
                f"drop --{name}, or pick an architecture and objective that read it",
            )
    require(
        not objective.mode_tokens or data_args.packing,
        f"--objective {objective.name} with --packing false",
        "use --packing true: the denoisers' inputs differ in length",
    )
    require(
        not data_args.streaming or training_args.max_steps > 0,
        "--streaming true without --max_steps",
        "set --max_steps: a stream has no length to count epochs by",
    )
    check_training_arguments(training_args)
    fit_decay_steps(training_args)  # a run shortened with --max_steps still decays its learning rate
    config = check_config_overrides(model_args)
    check_block_size(objective.model_length(data_args.block_size, objective_args), config.max_position_embeddings)
    training_args.remove_unused_columns = False  # the collators need every column (offsets, position ids)
    return architecture, objective


def check_config_overrides(model_args) -> FourfoldConfig:
    """The named configuration with `--config_overrides` applied, built now so that a bad override fails before the
    tokenizer is trained. Unknown keys are refused with the nearest valid name; the keys that follow the tokenizer
    (vocabulary size, special ids) are refused with the flag that sets them."""
    overrides = parse_json_mapping("--config_overrides", model_args.config_overrides or "{}")
    config_class = get_config(model_args.config_name).__class__
    known = set(config_class().to_dict()) | {"attn_implementation"}
    for key in overrides:
        require(
            key in known,
            f"--config_overrides: {config_class.__name__} has no option {key!r}{closest(key, known)}",
            "fix the name (the options are listed in FourfoldConfig's docstring)",
        )
        require(
            key not in TOKENIZER_FIELDS,
            f"--config_overrides sets {key!r}, which follows the tokenizer",
            "set --vocab_size (a trained tokenizer's size) or --tokenizer_name instead",
        )
    try:
        return get_config(model_args.config_name, **overrides)
    except (ValueError, TypeError) as error:  # the config's own validators name the option and the fix
        raise UsageError(f"--config_overrides {json.dumps(overrides)}: {error}", "change the value it names") from error


def build_tokenizer(tokenizer_args, architecture: Architecture, objective: Objective, texts) -> PreTrainedTokenizerBase:
    """The tokenizer: loaded, or trained on `texts`; UL2's mode tokens (and sentinels, for a prefix LM) join it."""
    tokenizer = load_or_train_tokenizer(
        tokenizer_args.tokenizer_name,
        architecture.name,
        texts,
        tokenizer_args.vocab_size,
        tokenizer_args.tokenizer_algorithm,
        tokenizer_args.num_sentinels,
        tokenizer_args.chat_template,
    )
    if objective.mode_tokens:
        tokenizer.add_tokens(list(MODE_TOKENS), special_tokens=True)
        if not sentinel_ids(tokenizer):  # a prefix-LM tokenizer has no sentinels: span corruption needs them
            sentinels = [f"<extra_id_{i}>" for i in range(tokenizer_args.num_sentinels)]
            tokenizer.add_tokens(sentinels, special_tokens=True)
    return tokenizer


def build_model(model_args, architecture: Architecture, objective: Objective, objective_args, tokenizer):
    """(model, config): the objective's model (the architecture's pretraining head, or ELECTRA's pair) from the named
    configuration with `--config_overrides` (checked in `check_arguments`); vocabulary and special ids from the
    tokenizer."""
    overrides = parse_json_mapping("--config_overrides", model_args.config_overrides or "{}")
    config = get_config(model_args.config_name, **{**overrides, **model_special_ids(tokenizer, architecture.name)})
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


def check_block_size(length: int, max_position_embeddings: int) -> None:
    """The longest sequence the model will read (`Objective.model_length` of --block_size) fits its positions."""
    require(
        length <= max_position_embeddings,
        f"--block_size makes rows of {length} tokens, beyond the model's max_position_embeddings="
        f"{max_position_embeddings}",
        f"lower --block_size, or raise it with --config_overrides '{{\"max_position_embeddings\": {length}}}'",
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

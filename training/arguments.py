"""Command-line arguments shared by the training entry points: a YAML recipe, then flags, into dataclasses.

    fourfold pretrain configuration/pretrain-decoder-tiny.yaml --max_steps 10

`parse_recipe_and_flags` turns the recipe (an optional first argument ending in .yaml/.yml) into flags placed before
the ones typed after it, so later flags win, and lets transformers' `HfArgumentParser` fill the dataclasses: the
recipe's keys are exactly the flags (`fourfold pretrain --help` lists them), and a test parses every shipped recipe.
A mapping-valued key (`config_overrides`) merges instead: a flag adds to or overrides the recipe's entries, it does
not replace the whole mapping. Every mistake here — a recipe that is not a mapping, an unknown key or flag (with the
nearest valid name), JSON that does not parse, a value the dataclasses refuse — is a `UsageError`.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from fourfold.training.errors import UsageError, closest, require

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# Flags whose value is a JSON mapping: given twice (recipe, then command line), the mappings merge.
MAPPING_FLAGS = ("--config_overrides",)


@dataclass
class RunArguments:
    """What to do with an output folder that holds another run (both commands)."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the run already in --output_dir (its files are removed first). Without it such a folder "
            "is refused, unless --resume_from_checkpoint (a checkpoint-N folder, or last) continues it."
        },
    )


class ArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose errors (a missing value, a bad choice, a wrong type) are `UsageError`s, and which
    takes no abbreviated flags (argparse would read `--learning_rat` as `--learning_rate` without a word)."""

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        raise UsageError(message, f"see `{self.prog} --help` for the flags and their values")


def parse_recipe_and_flags(parser: HfArgumentParser, argv: list[str] | None) -> tuple:
    """The parser's dataclasses from an optional YAML recipe (the first argument) followed by flags; flags win."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        argv = recipe_to_flags(argv[0]) + argv[1:]
    argv = merge_mapping_flags(argv)
    try:
        *dataclasses, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except UsageError:
        raise
    except ValueError as error:  # a dataclass's own check (ours, or TrainingArguments')
        raise UsageError(str(error), f"fix the flag it names (`{parser.prog} --help`)") from error
    unknown = [arg for arg in remaining if arg.startswith("--")]
    if remaining:
        known = [option for action in parser._actions for option in action.option_strings]
        name = (unknown or remaining)[0]
        raise UsageError(
            f"unknown argument {name!r}{closest(name, known)}",
            f"see `{parser.prog} --help` for the flags (a recipe's keys are the flags without --)",
        )
    return tuple(dataclasses)


def recipe_to_flags(path: str | Path) -> list[str]:
    """A YAML recipe as command-line flags: `block_size: 64` -> ["--block_size", "64"]; lists spread, maps as JSON."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"recipe {path} does not exist", "give the path of a YAML recipe, e.g. configuration/*.yaml")
    try:
        recipe = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UsageError(f"recipe {path} is not valid YAML ({error})", "fix the file's syntax") from error
    if recipe is None:
        recipe = {}
    if not isinstance(recipe, dict):
        raise UsageError(
            f"recipe {path} holds a {type(recipe).__name__}, not a mapping",
            "write one `key: value` per line, the keys being the command's flags without --",
        )
    flags = []
    for key, value in recipe.items():
        if value is None:
            continue
        flags.append(f"--{key}")
        if isinstance(value, list):
            flags += [_resolve(key, str(v)) for v in value]
        elif isinstance(value, dict):
            flags.append(json.dumps(value))
        else:
            flags.append(str(value))
    return flags


def merge_mapping_flags(argv: list[str]) -> list[str]:
    """A flag of `MAPPING_FLAGS` given more than once (the recipe's, then the command line's) becomes one flag whose
    JSON mapping merges them in order, so `--config_overrides '{"hidden_size": 32}'` changes one entry of the
    recipe's overrides rather than dropping the rest. Each value must be a JSON object."""
    merged: dict[str, dict] = {}
    out: list[str] = []
    i = 0
    while i < len(argv):
        name, _, inline = argv[i].partition("=")
        if name not in MAPPING_FLAGS:
            out.append(argv[i])
            i += 1
            continue
        value, i = (inline, i + 1) if inline else (argv[i + 1] if i + 1 < len(argv) else None, i + 2)
        if name not in merged:
            out.append(name)  # its merged value follows it below
        merged.setdefault(name, {}).update(parse_json_mapping(name, value))
    return [part for flag in out for part in ((flag, json.dumps(merged[flag])) if flag in merged else (flag,))]


def parse_json_mapping(flag: str, value: str | None) -> dict:
    """The JSON object `value` of `flag`; a `UsageError` naming the flag when it is missing, not JSON or not a map."""
    if value is None:
        raise UsageError(f"{flag} needs a value", f"""pass a JSON object, e.g. {flag} '{{"hidden_size": 128}}'""")
    try:
        mapping = json.loads(value)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"{flag} {value!r} is not JSON ({error.msg} at character {error.pos})",
            f"""quote it as a JSON object, e.g. {flag} '{{"hidden_size": 128}}'""",
        ) from error
    if not isinstance(mapping, dict):
        raise UsageError(f"{flag} {value!r} is a JSON {type(mapping).__name__}", "pass a JSON object: {...}")
    return mapping


def _resolve(key: str, value: str) -> str:
    """Data files in a recipe may be relative to the package (`training/data/...`), so recipes work anywhere."""
    if key.endswith("_files") and not Path(value).exists() and (PACKAGE_ROOT / value).exists():
        return str(PACKAGE_ROOT / value)
    return value


def check_training_arguments(training_args) -> None:
    """The Trainer flags that would run no training, or one step where none was asked for, are refused (the Trainer
    itself takes `--max_steps 0` for one step and `--num_train_epochs 0` for an untrained "result")."""
    max_steps, epochs = training_args.max_steps, training_args.num_train_epochs
    require(
        max_steps == -1 or max_steps > 0,
        f"--max_steps {max_steps} must be > 0, or -1 to train for --num_train_epochs",
        "pass the number of optimizer steps to train",
    )
    require(
        max_steps > 0 or epochs > 0,
        f"--num_train_epochs {epochs:g} with no --max_steps trains nothing",
        "pass --num_train_epochs > 0 or --max_steps > 0",
    )
    # The Trainer takes these as given: a rate <= 0 trains nothing (or away from the data), a negative clipping norm
    # flips every gradient, a batch of 0 rows fails deep in the data loader.
    rate = training_args.learning_rate
    require(rate > 0, f"--learning_rate {rate:g} must be > 0", "pass the peak rate, e.g. 5e-5 (fine-tuning), 1e-3")
    norm = training_args.max_grad_norm
    require(norm is None or norm >= 0, f"--max_grad_norm {norm:g} must be >= 0", "0 turns gradient clipping off")
    require(
        training_args.weight_decay >= 0,
        f"--weight_decay {training_args.weight_decay:g} must be >= 0",
        "0 turns it off; 0.01 is usual",
    )
    for flag in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        value = getattr(training_args, flag)
        require(value >= 1, f"--{flag} {value} must be >= 1", "pass a whole number of rows (steps) >= 1")

"""Command-line arguments shared by the training entry points: a YAML recipe, then flags, into dataclasses.

    fourfold pretrain configuration/pretrain-decoder-tiny.yaml --max_steps 10

`parse_recipe_and_flags` turns the recipe (an optional first argument ending in .yaml/.yml) into flags placed before
the ones typed after it, so later flags win, and lets transformers' `HfArgumentParser` fill the dataclasses: the
recipe's keys are exactly the flags (`fourfold pretrain --help` lists them), and a test parses every shipped recipe.
"""

import json
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


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
        raise FileNotFoundError(f"Recipe {path} does not exist; see configuration/*.yaml.")
    recipe = yaml.safe_load(path.read_text()) or {}
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


def _resolve(key: str, value: str) -> str:
    """Data files in a recipe may be relative to the package (`training/data/...`), so recipes work anywhere."""
    if key.endswith("_files") and not Path(value).exists() and (PACKAGE_ROOT / value).exists():
        return str(PACKAGE_ROOT / value)
    return value

"""Every shipped pretraining recipe parses into the pretrain arguments, with values that pass the checks."""

from pathlib import Path

import pytest

from fourfold.training.architectures import ARCHITECTURES
from fourfold.training.pretrain import check_arguments, parse_arguments

RECIPES = sorted((Path(__file__).parents[1] / "configuration").glob("pretrain-*.yaml"))


def test_there_is_a_recipe_per_architecture():
    assert {f"pretrain-{architecture}-tiny.yaml" for architecture in ARCHITECTURES} <= {r.name for r in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(recipe):
    model_args, data_args, tokenizer_args, objective_args, _, training_args = parse_arguments([str(recipe)])
    architecture, objective = check_arguments(model_args, data_args, tokenizer_args, objective_args, training_args)
    assert recipe.name.startswith(f"pretrain-{architecture.name}-")
    assert objective in architecture.objectives
    assert all(Path(f).is_file() for f in data_args.train_files)  # recipe paths resolve from anywhere
    assert training_args.output_dir


def test_flags_after_the_recipe_win():
    recipe = str(RECIPES[0])
    *_, training_args = parse_arguments([recipe, "--max_steps", "7", "--learning_rate", "0.5"])
    assert training_args.max_steps == 7 and training_args.learning_rate == 0.5

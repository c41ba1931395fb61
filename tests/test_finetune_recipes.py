"""Every shipped fine-tuning recipe parses into the finetune arguments, with values that pass the checks."""

from pathlib import Path

import pytest

from fourfold.configuration import preset_names
from fourfold.training.architectures import get_architecture
from fourfold.training.finetune import parse_arguments
from fourfold.training.peft_support import check_method
from fourfold.training.tasks import TASKS

RECIPES = sorted((Path(__file__).parents[1] / "configuration").glob("finetune-*.yaml"))


def test_there_are_full_and_lora_recipes():
    assert {"finetune-spam-full.yaml", "finetune-spam-lora.yaml"} <= {r.name for r in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(recipe):
    model_args, data_args, peft_args, _, _, training_args = parse_arguments([str(recipe)])
    assert model_args.task in TASKS
    model_type = get_architecture(model_args.model_name_or_path.rpartition("-")[0]).model_type
    assert model_args.model_name_or_path in preset_names()  # shipped recipes run anywhere, without a checkpoint
    check_method(peft_args.method, model_args.task, model_type, peft_args.merge)
    assert all(Path(f).is_file() for f in data_args.train_files)  # recipe paths resolve from anywhere
    assert training_args.output_dir and not training_args.remove_unused_columns


def test_flags_after_the_recipe_win():
    recipe = str(RECIPES[0])
    model_args, _, peft_args, _, _, training_args = parse_arguments(
        [recipe, "--model_name_or_path", "outputs/encoder", "--method", "dora", "--learning_rate", "0.5"]
    )
    assert model_args.model_name_or_path == "outputs/encoder" and peft_args.method == "dora"
    assert training_args.learning_rate == 0.5

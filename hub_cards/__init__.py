"""Model cards for fourfold checkpoints: templates (`*.jinja`) and `write_model_card`, which fills them from the
files that training leaves in an output folder. See `cards.py`."""

from .cards import render_model_card, save_run_arguments, write_model_card

__all__ = ["render_model_card", "save_run_arguments", "write_model_card"]

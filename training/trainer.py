"""The Trainer classes the training commands use: transformers' own, with fourfold's model card on `push_to_hub`.

`Trainer.push_to_hub` writes a generic card right before it uploads the output folder; `FourfoldCardMixin` replaces
that step with `fourfold.hub_cards.write_model_card`, which reads every fact from the folder. `FourfoldTrainer`
serves pretraining and every fine-tuning task but text-to-text, which generates in evaluation
(`FourfoldSeq2SeqTrainer`). Both take the callbacks of an enclosing `progress.live_progress` block (the demo's
progress line). `first_evaluation` reads the evaluation before training back from a Trainer's history.
"""

from transformers import Seq2SeqTrainer, Trainer

from fourfold.hub_cards import write_model_card
from fourfold.training.progress import callbacks_in_scope


class FourfoldCardMixin:
    """Put before a `Trainer` class: `create_model_card`, which `Trainer.push_to_hub` calls right before uploading
    the output folder, then writes fourfold's card instead of Trainer's generic one."""

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        if not self.is_world_process_zero():
            return
        overrides = {
            "language": language,
            "license": license,
            "tags": [tags] if isinstance(tags, str) else tags,
            "model_name": model_name,
            "base_model": finetuned_from,
            "datasets": [dataset] if isinstance(dataset, str) else dataset,
        }
        write_model_card(self.args.output_dir, **{k: v for k, v in overrides.items() if v is not None})


class ProgressInScopeMixin:
    """Put before a `Trainer` class: the callbacks of the enclosing `progress.live_progress` blocks join the Trainer's
    (the demo's live progress line; none outside such a block)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for callback in callbacks_in_scope():
            self.add_callback(callback)


class FourfoldTrainer(FourfoldCardMixin, ProgressInScopeMixin, Trainer):
    """`transformers.Trainer` whose `push_to_hub` uploads fourfold's model card."""


class FourfoldSeq2SeqTrainer(FourfoldCardMixin, ProgressInScopeMixin, Seq2SeqTrainer):
    """`transformers.Seq2SeqTrainer` whose `push_to_hub` uploads fourfold's model card."""


def first_evaluation(log_history: list[dict], prefix: str) -> dict[str, float]:
    """The metrics of the run's first evaluation (the untrained model's, with `eval_on_start`; a resumed run keeps
    its history), renamed `eval_loss` -> `<prefix>_loss`."""
    entry = next(e for e in log_history if "eval_loss" in e)
    return {f"{prefix}_{k.removeprefix('eval_')}": v for k, v in entry.items() if k.startswith("eval_")}

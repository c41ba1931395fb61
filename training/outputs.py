"""A run's output folder: never another run's by accident, resumable, and its final model written atomically.

    prepare_output_dir(output_dir, overwrite, resume)   before anything is built:
        a folder that holds another run (a model, an adapter, a trainer state, results or checkpoints) is refused
        unless --overwrite_output_dir (what a run writes there is removed first, so nothing of the earlier run is
        left beside the new one for `push` to upload) or --resume_from_checkpoint; returns the checkpoint to resume
        from
    resume "true" / "last"                               the newest *complete* checkpoint-N; incomplete ones (a save
                                                         killed half-way) are skipped and named
    save_atomically(save, output_dir)                    the final model goes to a temporary folder first and is
                                                         moved into place file by file, so a full disk or a kill
                                                         during the save leaves the earlier files whole

A checkpoint is complete when it has the trainer state, the weights (or adapter) and, unless the run saves the model
only, the optimizer and scheduler states.
"""

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from fourfold.training.errors import UsageError, require

# Files that mean "a run wrote here" (beside checkpoint-N folders).
RUN_FILES = (
    "config.json",
    "adapter_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "trainer_state.json",
    "all_results.json",
    "results.json",
)
# Everything a training run writes into its folder: what --overwrite_output_dir removes (nothing else is touched).
RUN_OUTPUTS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*.bin",
    "*.json",
    "*.jinja",
    "*.model",
    "*.py",
    "vocab.txt",
    "merges.txt",
    "loss_curve.png",
    "samples.txt",
    "README.md",
    "checkpoint-*",
    "generator",
    "merged",
    "base_model",
    "runs",
    "1_Pooling",  # sentence-transformers' pooling module (training/sentence_transformers_files.py)
)
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")
LATEST = ("true", "last", "latest")


def checkpoints(output_dir: Path) -> list[Path]:
    """The checkpoint-N folders of `output_dir`, oldest first."""
    found = [p for p in output_dir.iterdir() if p.is_dir() and CHECKPOINT.match(p.name)] if output_dir.is_dir() else []
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)))


def incomplete_parts(checkpoint: Path, model_only: bool = False) -> list[str]:
    """What a checkpoint lacks to resume from (empty when complete)."""
    missing = [] if (checkpoint / "trainer_state.json").is_file() else ["trainer_state.json"]
    if not any((checkpoint / name).is_file() for name in WEIGHTS):
        missing.append("the model weights")
    if not model_only:
        missing += [name for name in ("optimizer.pt", "scheduler.pt") if not (checkpoint / name).is_file()]
    return missing


def latest_complete_checkpoint(output_dir: Path, model_only: bool = False) -> Path:
    """The newest complete checkpoint; prints the incomplete ones it skips. Raises when there is none."""
    skipped = []
    for checkpoint in reversed(checkpoints(output_dir)):
        missing = incomplete_parts(checkpoint, model_only)
        if not missing:
            if skipped:
                print(f"Skipping incomplete checkpoints (a save that did not finish): {', '.join(skipped)}")
            return checkpoint
        skipped.append(f"{checkpoint.name} (no {', '.join(missing)})")
    raise UsageError(
        f"--resume_from_checkpoint last: {output_dir} has no complete checkpoint"
        + (f"; incomplete: {', '.join(skipped)}" if skipped else ""),
        "start without --resume_from_checkpoint (and with --overwrite_output_dir to replace the folder)",
    )


def resolve_resume(output_dir: Path, resume: str | None, model_only: bool = False) -> str | None:
    """The checkpoint folder `--resume_from_checkpoint` means: "true"/"last" the newest complete one, a path itself
    (checked complete), empty nothing."""
    if not resume or resume.lower() in ("false", "none"):
        return None
    if resume.lower() in LATEST:
        return str(latest_complete_checkpoint(output_dir, model_only))
    path = Path(resume)
    require(path.is_dir(), f"--resume_from_checkpoint {resume}: no such folder", "pass a checkpoint-N folder, or last")
    missing = incomplete_parts(path, model_only)
    if missing:
        others = [c.name for c in checkpoints(path.parent) if c != path and not incomplete_parts(c, model_only)]
        raise UsageError(
            f"--resume_from_checkpoint {resume} is incomplete (no {', '.join(missing)}): its save did not finish",
            f"resume from an earlier complete one ({', '.join(others) or 'there is none'}), or pass last",
        )
    return str(path)


def prepare_output_dir(output_dir: str, overwrite: bool, resume: str | None, model_only: bool = False) -> str | None:
    """Checks (and with `overwrite` empties) the output folder; returns the checkpoint to resume from, if any."""
    folder = Path(output_dir)
    require(
        not folder.exists() or folder.is_dir(),
        f"--output_dir {output_dir} is a file",
        "pass a folder (it is created if missing)",
    )
    checkpoint = resolve_resume(folder, resume, model_only)
    earlier = [name for name in RUN_FILES if (folder / name).is_file()] + [c.name for c in checkpoints(folder)]
    if earlier and checkpoint is None:
        require(
            overwrite,
            f"--output_dir {output_dir} holds another run ({', '.join(earlier[:4])}"
            + (", ..." if len(earlier) > 4 else "")
            + ")",
            "pass a new --output_dir, --overwrite_output_dir true to replace that run, or --resume_from_checkpoint "
            "last to continue it",
        )
        remove_earlier_run(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return checkpoint


def remove_earlier_run(folder: Path) -> None:
    """Deletes what a run writes (`RUN_OUTPUTS`) from `folder`, so nothing of it is left beside the new run."""
    paths = sorted({path for pattern in RUN_OUTPUTS for path in folder.glob(pattern)})
    print(f"--overwrite_output_dir: removing the earlier run in {folder} ({len(paths)} files and folders)")
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def save_atomically(save: Callable[[str], None], output_dir: str, is_main_process: bool = True) -> None:
    """Calls `save(temporary_folder)` inside `output_dir` (on every process: sharded models gather their weights
    there), then the main process moves each file it wrote into `output_dir` (`os.replace`: atomic per file, and no
    space needed), so the earlier files stay whole if the save fails half-way, e.g. on a full disk."""
    folder = Path(output_dir)
    temporary = folder / ".saving"
    if is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    try:
        save(str(temporary))
        if not is_main_process:
            return
        names = sorted(p.relative_to(temporary) for p in temporary.rglob("*") if p.is_file())
        # Weights before config: a reader never finds a new config beside old weights.
        for name in sorted(names, key=lambda n: n.name == "config.json"):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary / name, folder / name)
    finally:
        if is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)

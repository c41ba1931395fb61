"""`fourfold push OUTPUT_DIR REPO_ID [--private] [--revision REV] [--token TOKEN]`: upload a trained folder to the Hub.

What goes up is exactly `files_to_upload(OUTPUT_DIR)`: weights and config, the model code those need (so the repo
loads with `trust_remote_code=True`, without fourfold), the tokenizer, the model card (rewritten from the folder by
`fourfold.hub_cards`), the loss curve, metrics and run records, or for a PEFT adapter its adapter files. Never
optimizer states, `checkpoint-*` folders, `training_args.bin` (a pickle) or logs. The uploaded config.json also names
the fourfold pipeline of a seq2seq or extractive-QA checkpoint (`custom_pipelines`), so
`pipeline("fourfold-text2text", model=REPO_ID, trust_remote_code=True)` works; the local folder keeps its config.

Order: check the folder, then the token and that the Hub answers (`HF_HUB_OFFLINE=1` stops here at once), then write
the card, create the repo (and branch) and upload everything in one commit. Any failure before the upload changes
nothing, locally or on the Hub. `--dry-run DIR` writes the upload set into DIR instead, without any network.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import sys
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status, validate_repo_id

from fourfold.hub_cards import write_model_card
from fourfold.hub_cards.cards import card_is_unedited
from fourfold.modeling.pipelines import hub_config_with_pipelines
from fourfold.training.errors import UsageError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
# Records that the card is built from: small, and they let readers check the card.
RECORD_FILES = (
    "loss_curve.png",
    "all_results.json",
    "eval_results.json",
    "test_results.json",
    "train_results.json",
    "results.json",
    "trainer_state.json",
    "run_arguments.json",
    "conversion.json",
)
REACHABILITY_TIMEOUT_S = 10.0


class PushError(UsageError):
    """A push that cannot go ahead: what is wrong, and what to do (`UsageError(what, fix)`)."""


# --------------------------------------------------------------------------------------------------------------------
# What would be uploaded (no network)
# --------------------------------------------------------------------------------------------------------------------


def files_to_upload(output_dir: str | Path) -> list[str]:
    """The exact files (relative paths, sorted) that `push` uploads from `output_dir`. Raises `PushError` when the
    folder is neither a fourfold checkpoint nor a PEFT adapter, or lacks a file that loading needs."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise PushError(f"{output_dir} is not a folder", "pass the output_dir of a training run")
    present = {path.name for path in output_dir.iterdir() if path.is_file()}
    files = {"README.md"}  # written by push itself, from the folder

    if "adapter_config.json" in present:
        if "adapter_model.safetensors" not in present:
            raise PushError(
                f"{output_dir} has adapter_config.json but no adapter_model.safetensors",
                "save the adapter with PeftModel.save_pretrained",
            )
        files |= {"adapter_config.json", "adapter_model.safetensors"}
    elif "config.json" in present:
        files |= {"config.json", *weight_files(output_dir, present)}
        files |= {"generation_config.json"} & present
        files |= code_files(output_dir)
    else:
        raise PushError(
            f"{output_dir} has neither config.json (a model) nor adapter_config.json (a PEFT adapter)",
            "pass the folder that save_pretrained wrote",
        )
    files |= (set(TOKENIZER_FILES) | set(RECORD_FILES)) & present
    return sorted(files)


def weight_files(output_dir: Path, present: set[str]) -> set[str]:
    """model.safetensors, or a sharded checkpoint's index and every shard it names."""
    if "model.safetensors" in present:
        return {"model.safetensors"}
    index = "model.safetensors.index.json"
    if index in present:
        shards = set(json.loads((output_dir / index).read_text())["weight_map"].values())
        missing = sorted(shards - present)
        if missing:
            raise PushError(
                f"{output_dir}/{index} names shards that are not there: {', '.join(missing)}",
                "save the model again",
            )
        return {index, *shards}
    raise PushError(f"{output_dir} has config.json but no model.safetensors", "save the model with save_pretrained")


def code_files(output_dir: Path) -> set[str]:
    """The Python modules the checkpoint's auto_map and custom pipelines name, and every sibling they import."""
    config = hub_config_with_pipelines(json.loads((output_dir / "config.json").read_text()))
    references = list((config.get("auto_map") or {}).values())
    references += [entry["impl"] for entry in (config.get("custom_pipelines") or {}).values()]
    if not references:
        raise PushError(
            f"{output_dir}/config.json has no auto_map, so the Hub copy could not load without fourfold",
            "save the model with a fourfold model's save_pretrained",
        )
    pending = {reference.rsplit(".", 1)[0] for reference in references}
    modules: set[str] = set()
    while pending:
        module = pending.pop()
        if not module.isidentifier():  # "../x", "/abs/path", "owner/repo--module": not a file of this folder
            raise PushError(
                f"{output_dir}/config.json names code {module!r} that is not a module of the folder",
                "re-save the model with save_pretrained: its auto_map names sibling modules only",
            )
        path = output_dir / f"{module}.py"
        if not path.is_file():
            raise PushError(
                f"{output_dir} lacks {module}.py, which config.json needs",
                "re-save the model with save_pretrained (it copies fourfold's model code next to the weights)",
            )
        modules.add(module)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module not in modules:
                pending.add(node.module)
    return {f"{module}.py" for module in modules}


def hub_files(output_dir: str | Path) -> dict[str, Path | bytes]:
    """Each file to upload and its content: the file itself, or (config.json) the bytes that go up instead."""
    output_dir = Path(output_dir)
    contents: dict[str, Path | bytes] = {name: output_dir / name for name in files_to_upload(output_dir)}
    if "config.json" in contents:
        config = hub_config_with_pipelines(json.loads((output_dir / "config.json").read_text()))
        contents["config.json"] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    return contents


def check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PushError(
            f"repo_id {repo_id!r} is not a Hub repository name ({error})", "write it as owner/name"
        ) from error


def check_keep_card(output_dir: str | Path, keep_card: bool) -> None:
    if keep_card and not (Path(output_dir) / "README.md").is_file():
        raise PushError(f"--keep-card, but {output_dir} has no README.md", "drop --keep-card to write one")


def update_card(output_dir: str | Path, keep_card: bool, rewrite_card: bool, **overrides) -> None:
    """The card that goes up: a fresh one from the folder as it is now, unless the folder's README.md was edited
    since fourfold wrote it (or was never fourfold's): that one is kept, and said so, unless `rewrite_card`.
    `keep_card` keeps README.md whatever it holds."""
    readme = Path(output_dir) / "README.md"
    if keep_card:
        return
    if readme.is_file() and not card_is_unedited(readme) and not rewrite_card:
        print(f"Keeping {readme}: it was edited since fourfold wrote it (pass --rewrite-card to replace it).")
        return
    write_model_card(output_dir, **overrides)


def export_for_hub(
    output_dir: str | Path,
    destination: str | Path,
    keep_card: bool = False,
    rewrite_card: bool = False,
    **card_overrides,
) -> list[str]:
    """Writes the card into `output_dir` (as `push` would: see `update_card`), then exactly what `push` would upload
    into `destination` (the repo's contents after the push); returns the file names."""
    if card_overrides.get("repo_id"):
        check_repo_id(card_overrides["repo_id"])
    destination = Path(destination)
    contents = hub_files(output_dir)  # checks the folder before the card is written
    check_keep_card(output_dir, keep_card)
    destination.mkdir(parents=True, exist_ok=True)
    update_card(output_dir, keep_card, rewrite_card, **card_overrides)
    for name, content in contents.items():
        if isinstance(content, bytes):
            (destination / name).write_bytes(content)
        else:
            shutil.copyfile(content, destination / name)
    return sorted(contents)


# --------------------------------------------------------------------------------------------------------------------
# Access and upload
# --------------------------------------------------------------------------------------------------------------------


def offline_mode() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as the environment says now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or value.upper() in {"1", "ON", "YES", "TRUE"}


def check_hub_access(token: str | None = None, endpoint: str | None = None) -> tuple[str, str]:
    """Returns (token, user name) after one cheap authenticated request (whoami) with a short timeout; raises
    `PushError` saying what to fix when offline mode is on, no token is found, the Hub does not answer, or it
    rejects the token."""
    if offline_mode():
        raise PushError("HF_HUB_OFFLINE is set, so nothing can be uploaded", "unset it (or set it to 0) to push")
    token = token or get_token()
    if not token:
        raise PushError(
            "No Hugging Face token found", "set HF_TOKEN, run `hf auth login`, or pass --token (with write access)"
        )
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    try:
        response = get_session().get(
            f"{endpoint}/api/whoami-v2", headers=build_hf_headers(token=token), timeout=REACHABILITY_TIMEOUT_S
        )
        hf_raise_for_status(response)
    except OfflineModeIsEnabled as error:
        raise PushError(f"HF_HUB_OFFLINE is set, so nothing can be uploaded ({error})", "unset it to push") from error
    except HfHubHTTPError as error:
        if error.response is not None and error.response.status_code == 401:
            raise PushError(f"{endpoint} rejected the token (401)", "create a write token and set HF_TOKEN") from error
        raise PushError(f"{endpoint} answered with an error: {error}", "retry, or check the Hub's status") from error
    except Exception as error:  # DNS, refused connection, timeout, proxy: the transport's own exception types
        raise PushError(
            f"Cannot reach {endpoint} ({type(error).__name__}: {error})",
            "check the network, a proxy, or HF_ENDPOINT, and retry",
        ) from error
    return token, response.json().get("name", "?")


def push(
    output_dir: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    keep_card: bool = False,
    api: HfApi | None = None,
    rewrite_card: bool = False,
) -> str:
    """Uploads `files_to_upload(output_dir)` to `repo_id` in one commit and returns the commit URL.

    Args:
        output_dir: a training run's output folder (model or PEFT adapter).
        repo_id: "owner/name"; created (private if `private`) when it does not exist.
        revision: a branch to commit to, created from main if needed; default main.
        token: a write token; default `HF_TOKEN` or the saved login.
        keep_card: upload the folder's README.md as it is, whatever it holds.
        api: the `HfApi` to use (tests pass a recorder).
        rewrite_card: write a fresh card even over a README.md edited since fourfold wrote it (without it, an edited
            card is uploaded as it is: see `update_card`).
    """
    check_repo_id(repo_id)
    contents = hub_files(output_dir)  # 1. the arguments and the folder: fails before any network
    check_keep_card(output_dir, keep_card)
    if api is None:
        token, _ = check_hub_access(token)  # 2. token and reachability: fails before any change
        api = HfApi(token=token)
    update_card(output_dir, keep_card, rewrite_card, repo_id=repo_id, revision=revision)  # 3. the card
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")  # 4. upload
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content) for name, content in contents.items()]
    commit = api.create_commit(
        repo_id,
        operations=operations,
        commit_message=f"Upload {Path(output_dir).name} with fourfold push",
        revision=revision,
    )
    return commit.commit_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fourfold push",
        description="Upload a trained output folder (model, tokenizer, code, card; or a PEFT adapter) to the Hub.",
    )
    parser.add_argument("output_dir", help="the folder that pretrain/finetune/convert wrote")
    parser.add_argument("repo_id", help="the Hub repository, owner/name; created if missing")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to commit to (created if missing); default main")
    parser.add_argument("--token", help="write token; default HF_TOKEN or `hf auth login` (prefer those: argv leaks)")
    parser.add_argument("--keep-card", action="store_true", help="upload README.md as it is, whatever it holds")
    parser.add_argument(
        "--rewrite-card", action="store_true", help="write a fresh card even over a README.md edited by hand"
    )
    parser.add_argument("--dry-run", metavar="DIR", help="write the upload set into DIR; no network, no upload")
    args = parser.parse_args(argv)
    if args.dry_run:
        names = export_for_hub(
            args.output_dir,
            args.dry_run,
            args.keep_card,
            args.rewrite_card,
            repo_id=args.repo_id,
            revision=args.revision,
        )
        print(f"Would upload to {args.repo_id} ({len(names)} files, copied to {args.dry_run}):")
        print("\n".join(names))
        return 0
    url = push(
        args.output_dir,
        args.repo_id,
        args.private,
        args.revision,
        args.token,
        args.keep_card,
        rewrite_card=args.rewrite_card,
    )
    print(f"Pushed {args.output_dir} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

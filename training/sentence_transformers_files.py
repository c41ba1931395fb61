"""sentence-transformers' files beside a checkpoint, so `SentenceTransformer(folder)` loads it as it is meant to.

For an architecture whose record names a `sentence_pooling` (the encoder: mean), three small files say how token
states become one embedding:

    modules.json                [Transformer (the folder itself, path ""), Pooling (path "1_Pooling")]
    sentence_bert_config.json   {"max_seq_length": the model's positions or the tokenizer's limit if lower,
                                 "do_lower_case": false}
    1_Pooling/config.json       mean over the non-padding tokens, of the model's hidden size

They are written in the long-standing format (`sentence_transformers.models.Transformer` / `.Pooling`,
`pooling_mode_mean_tokens`), which every sentence-transformers release from 2.x to 6.x reads. Without them
sentence-transformers guesses the same mean pooling, with a warning, and nothing records the choice.

    write_sentence_transformers_files(folder)   pretrain and finetune, after saving a model (a folder that already
                                                has modules.json keeps it: sentence-transformers or a user wrote it)
    sentence_transformers_upload(folder)        push: the folder's own set (every file of each module it lists), or
                                                the generated one where the folder has none
"""

import json
from pathlib import Path

from fourfold.training.architectures import architecture_of

MODULES = "modules.json"
# Beside modules.json: its modules' settings, and what sentence-transformers itself saves at the top.
TOP_LEVEL_FILES = (MODULES, "sentence_bert_config.json", "config_sentence_transformers.json")
POOLING_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")
# Architecture record's name -> the pooling mode sentence-transformers spells.
POOLING_MODE_OF = {"mean": "mean_tokens", "cls": "cls_token", "last": "lasttoken"}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def sentence_transformers_files(folder: str | Path) -> dict[str, bytes]:
    """The files (relative path -> content) that make `folder`, a saved fourfold checkpoint, a sentence-transformers
    model; empty when its architecture has no `sentence_pooling` or the folder is no model (e.g. a PEFT adapter)."""
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    architecture = architecture_of(config.get("model_type"))
    if architecture is None or architecture.sentence_pooling is None:
        return {}
    mode = POOLING_MODE_OF[architecture.sentence_pooling]
    max_length = config["max_position_embeddings"]
    tokenizer_limit = _read_json(folder / "tokenizer_config.json").get("model_max_length")
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < max_length:
        max_length = tokenizer_limit
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    pooling = {"word_embedding_dimension": config["hidden_size"]}
    pooling |= {f"pooling_mode_{name}": name == mode for name in POOLING_MODES}
    pooling["include_prompt"] = True
    contents = {
        MODULES: modules,
        "sentence_bert_config.json": {"max_seq_length": max_length, "do_lower_case": False},
        "1_Pooling/config.json": pooling,
    }
    return {name: (json.dumps(value, indent=2) + "\n").encode() for name, value in contents.items()}


def write_sentence_transformers_files(folder: str | Path) -> list[str]:
    """Writes `sentence_transformers_files(folder)` into `folder` unless it has a modules.json already; returns the
    names written."""
    folder = Path(folder)
    if (folder / MODULES).is_file():
        return []
    contents = sentence_transformers_files(folder)
    for name, content in contents.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return sorted(contents)


def sentence_transformers_upload(folder: str | Path) -> dict[str, Path | bytes]:
    """What `push` uploads for sentence-transformers: with a modules.json, the folder's files (modules.json, the
    top-level settings, every file under each module's own folder); without one, the generated set (as bytes)."""
    folder = Path(folder)
    if not (folder / MODULES).is_file():
        return dict(sentence_transformers_files(folder))
    files: dict[str, Path | bytes] = {name: folder / name for name in TOP_LEVEL_FILES if (folder / name).is_file()}
    for module in json.loads((folder / MODULES).read_text()):
        path = module.get("path", "")
        module_dir = (folder / path).resolve()
        if not path or not module_dir.is_dir() or folder.resolve() not in module_dir.parents:
            continue  # "": the checkpoint itself, uploaded as such; a path outside the folder is not ours to send
        for file in sorted(module_dir.rglob("*")):
            if file.is_file():
                files[file.relative_to(folder.resolve()).as_posix()] = file
    return files

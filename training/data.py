"""Pretraining data: load raw text with `datasets`, tokenize it, and cut it into fixed-length training rows.

Two ways to cut (`group_texts`):
    grouping (packing=False)  concatenate every document and cut blocks of `block_size`; attention crosses documents,
                              as in transformers' run_clm/run_mlm examples.
    packing  (packing=True)   the same blocks, plus `position_ids` that restart at 0 at every document start (and at
                              the start of every block). No attention_mask: fourfold models read restarting position
                              ids as document boundaries (modeling/masks.py), so no token attends across documents.
        documents  [a a a] [b b b b b] [c c]   block_size 4
        rows       [a a a b]  [b b b b]  (the trailing [c c] is dropped, as in run_clm)
        position   [0 1 2 0]  [0 1 2 3]
Each document is framed first (`FRAMINGS`, chosen by the architecture's record): the tokenizer's template adds what
belongs to every input (bos, cls/sep), and a causal LM's documents get their eos here, because a prompt tokenized with
the same template must not end in one.
"""

import codecs
import contextlib
import math
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError
from transformers import PreTrainedTokenizerBase

from fourfold.training.errors import UsageError, check_between, closest, one_line, require

BUNDLED_CORPUS = Path(__file__).parent / "data" / "moby_dick.jsonl"
# How a pretraining document is framed (an architecture's `framing`):
#   "template"      the tokenizer's template                       encoder: [CLS] text [SEP] (BERT)
#   "template+eos"  the template, then eos                         decoder, prefix-lm: <s> text </s>; the template
#                                                                   adds <s> only (prompts must not end in </s>), so
#                                                                   the model learns where a text ends here
#   "bare"          the text's tokens alone                        seq2seq: span corruption ends each corrupted
#                                                                   input and its target with </s> (T5)
FRAMINGS = ("template", "template+eos", "bare")
# File suffix -> `datasets` builder name.
BUILDERS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def load_text_dataset(
    train_files: list[str] | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    text_column: str = "text",
    validation_files: list[str] | None = None,
    validation_split_percentage: float = 5.0,
    streaming: bool = False,
    seed: int = 42,
) -> DatasetDict | IterableDatasetDict:
    """A `DatasetDict` with `train` and `validation` splits of raw documents, each with a `text_column`.

    Args:
        train_files: local .txt / .json / .jsonl / .csv / .parquet files (one builder for all of them).
        dataset_name / dataset_config_name: a Hub dataset, or a local folder (save_to_disk, or data files), instead
            of files.
        text_column: the column holding the text; checked here so a typo fails before training.
        validation_files: held-out files; without them `validation_split_percentage` % of train is held out.
        streaming: iterate lazily (IterableDataset); the held-out split then needs `validation_files`.
    """
    if dataset_name:
        try:
            raw = load_dataset(dataset_name, dataset_config_name, streaming=streaming)
        except (ConnectionError, FileNotFoundError) as error:  # a mistyped path reads as a Hub name: say which flag
            raise UsageError(
                f"--dataset_name {dataset_name!r} could not be loaded ({error})",
                "give a local folder (written by save_to_disk, or of data files) or a Hub dataset; with "
                "HF_HUB_OFFLINE=1 it must be in the cache",
            ) from error
    else:
        files = {"train": _check_files(train_files, "train_files")}
        if validation_files:
            files["validation"] = _check_files(validation_files, "validation_files")
        builder = BUILDERS[Path(files["train"][0]).suffix.lower()]
        try:
            with quiet_datasets():  # its own error log would print the traceback we turn into one line below
                raw = load_dataset(builder, data_files=files, streaming=streaming)
        except DatasetGenerationError as error:  # e.g. a CSV row with the wrong number of fields
            cause = error.__cause__ or error
            raise UsageError(
                f"--train_files / --validation_files could not be read as {builder} ({one_line(cause)})",
                f"fix the file, or save it as one of {', '.join(BUILDERS)}",
            ) from error
        except ValueError as error:  # e.g. a CSV of a header only: `datasets` finds no rows for its split
            if "corresponds to no data" not in str(error):
                raise
            raise UsageError(
                f"--train_files / --validation_files: a split has no rows ({one_line(error)})",
                "give every file at least one row (a CSV header is not a row)",
            ) from error
    if "validation" not in raw:
        require(
            not streaming,
            "--streaming true cannot hold out a validation split",
            "pass --validation_files (or a --dataset_name with a validation split), or drop --streaming",
        )
        raw = hold_out(raw["train"], validation_split_percentage, seed)
    columns = column_names(raw["train"])
    require(
        text_column in columns,
        f"--text_column {text_column!r} is not a column of the data{closest(text_column, columns)}",
        f"its columns are {columns}",
    )
    if not streaming:
        for split, dataset in raw.items():
            check_texts(dataset, text_column, split)
    return raw


@contextlib.contextmanager
def quiet_datasets():
    """`datasets` at log level CRITICAL for the duration (its level is restored after)."""
    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)


def hold_out(train: Dataset, percentage: float, seed: int) -> DatasetDict:
    """`percentage` % of `train`'s documents, drawn with `seed`, as the validation split; both keep a document."""
    check_between("validation_split_percentage", percentage, 0, 100, "it is the percent of documents held out")
    held_out = math.ceil(len(train) * percentage / 100)
    require(
        len(train) - held_out >= 1,
        f"the data has {len(train)} document(s): holding out {percentage:g}% leaves none to train on",
        "give more documents, or pass --validation_files",
    )
    split = train.train_test_split(test_size=held_out, seed=seed)
    return DatasetDict(train=split["train"], validation=split["test"])


def check_texts(dataset: Dataset, text_column: str, split: str) -> None:
    """Every row has a text: a missing cell (an empty CSV field reads as None) is an error naming the rows."""
    texts = dataset[text_column]
    missing = [row for row, text in enumerate(texts) if text is None]
    require(
        not missing,
        f"the {split} data has no text in column {text_column!r} at row(s) {missing[:5]}"
        + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""),
        "fill those cells in, or drop the rows",
    )
    bad = next(((row, type(t).__name__) for row, t in enumerate(texts) if not isinstance(t, str | list)), None)
    require(
        bad is None,
        f"the {split} data's column {text_column!r} holds a {bad[1] if bad else ''} at row {bad[0] if bad else ''}",
        "give text in that column (a string; token classification: a list of words), or name it with --text_column",
    )


def tokenize_and_group(
    raw: DatasetDict | IterableDatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    text_column: str = "text",
    packing: bool = True,
    return_offsets: bool = False,
    num_proc: int | None = None,
    framing: str = "template",
) -> DatasetDict | IterableDatasetDict:
    """Tokenizes every document, framed by `framing` (one of `FRAMINGS`), and cuts rows of `block_size`.

    Rows have `input_ids` (and `position_ids` when `packing`; `offset_mapping` when `return_offsets`, which
    whole-word masking needs). Raises when the data is too short to fill one block.
    """
    if framing not in FRAMINGS:
        raise ValueError(f"framing={framing!r}: choose one of {', '.join(map(repr, FRAMINGS))}.")
    streaming = isinstance(raw, IterableDatasetDict)
    map_kwargs = {} if streaming else dict(num_proc=num_proc, desc="tokenizing")

    def tokenize(batch: dict) -> dict:
        encoded = tokenizer(
            batch[text_column],
            add_special_tokens=framing != "bare",
            return_offsets_mapping=return_offsets,
            verbose=False,
        )
        rows = {k: v for k, v in encoded.items() if k in ("input_ids", "offset_mapping")}
        if framing == "template+eos":
            rows = append_eos(rows, tokenizer.eos_token_id)
        return rows

    columns = column_names(raw["train"])
    tokenized = raw.map(tokenize, batched=True, remove_columns=columns, **map_kwargs)
    if not streaming:
        map_kwargs["desc"] = f"cutting blocks of {block_size}"
    grouped = tokenized.map(lambda batch: group_texts(batch, block_size, packing), batched=True, **map_kwargs)
    for split, rows in grouped.items():
        # A stream has no length: read its first row (tokenizing one batch of documents) to know it is not empty.
        if (next(iter(rows), None) is None) if streaming else len(rows) == 0:
            raise UsageError(
                f"the {split} split has fewer than --block_size {block_size} tokens",
                "lower --block_size, or give it more text",
            )
    return grouped


def column_names(dataset: Dataset | IterableDataset) -> list[str]:
    """The dataset's columns. A stream of text files, say, does not know its features until read: its first row does."""
    if dataset.column_names is not None:
        return dataset.column_names
    first = next(iter(dataset), None)
    return list(first) if first is not None else []


def append_eos(batch: dict[str, list[list]], eos_token_id: int) -> dict[str, list[list]]:
    """Ends every document with `eos_token_id` unless it already ends with it (a template that adds eos itself).

    An appended eos gets the offset (0, 0) of a special token.
    """
    ends = [not ids or ids[-1] != eos_token_id for ids in batch["input_ids"]]
    out = {
        "input_ids": [[*ids, eos_token_id] if end else ids for ids, end in zip(batch["input_ids"], ends, strict=True)]
    }
    if "offset_mapping" in batch:
        out["offset_mapping"] = [
            [*o, (0, 0)] if end else o for o, end in zip(batch["offset_mapping"], ends, strict=True)
        ]
    return out


def group_texts(batch: dict[str, list[list]], block_size: int, packing: bool) -> dict[str, list[list]]:
    """Concatenates the documents of a batch and cuts them into rows of `block_size` (see the module docstring).

    `batch["input_ids"]` is a list of documents; other list columns (e.g. `offset_mapping`) are cut alongside.
    """
    keys = [k for k in ("input_ids", "offset_mapping") if k in batch]
    concatenated = {k: [x for document in batch[k] for x in document] for k in keys}
    # Position of every token inside its own document: 0, 1, ... restarting at each document.
    positions = [p for document in batch["input_ids"] for p in range(len(document))]
    total = (len(positions) // block_size) * block_size  # drop the ragged tail, as run_clm does
    rows = {k: [v[i : i + block_size] for i in range(0, total, block_size)] for k, v in concatenated.items()}
    if packing:
        # Restart at every block start as well: a block that begins mid-document is a document of its own.
        rows["position_ids"] = [
            restart_at_block_start(positions[i : i + block_size]) for i in range(0, total, block_size)
        ]
    return rows


def restart_at_block_start(positions: list[int]) -> list[int]:
    """[5, 6, 7, 0, 1] -> [0, 1, 2, 0, 1]: the leading fragment's positions, shifted to start at 0."""
    offset = positions[0]
    out = []
    for p in positions:
        if p == 0:
            offset = 0
        out.append(p - offset)
    return out


def _check_files(files: list[str] | None, flag: str) -> list[str]:
    """Each file exists, is not empty, has a known suffix (one builder for all), and text files decode as UTF-8."""
    require(bool(files), "no training data", f"pass --{flag} (local files) or --dataset_name (a Hub dataset)")
    for file in files:
        path = Path(file)
        require(path.is_file(), f"--{flag}: {file} does not exist", "check the path")
        require(path.stat().st_size > 0, f"--{flag}: {file} is empty", "give a file with text in it")
        require(
            path.suffix.lower() in BUILDERS,
            f"--{flag}: {file} has an unknown suffix",
            f"use one of {', '.join(BUILDERS)}",
        )
        if BUILDERS[path.suffix.lower()] != "parquet":
            check_utf8(path, flag)
    require(
        len({BUILDERS[Path(f).suffix.lower()] for f in files}) == 1,
        f"--{flag}: a mix of file types {files}",
        "convert them to one format",
    )
    return [str(f) for f in files]


def check_utf8(path: Path, flag: str, chunk_bytes: int = 1 << 20) -> None:
    """A text file must decode as UTF-8 (what `datasets` reads); a Latin-1 or binary file is named with the byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as file:
        while chunk := file.read(chunk_bytes):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise UsageError(
                    f"--{flag}: {path} is not UTF-8 text (byte {offset + error.start}: {error.reason})",
                    "convert it, e.g. `iconv -f latin1 -t utf-8 IN > OUT`, or pass a text file",
                ) from None
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise UsageError(f"--{flag}: {path} ends inside a UTF-8 character", "convert it to UTF-8") from None

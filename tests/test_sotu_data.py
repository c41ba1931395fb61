"""The bundled State of the Union files: they parse through fourfold's own loader, the task is small and balanced,
and no task passage, nor any address a task passage comes from, is in the pretraining text."""

from pathlib import Path

import pyarrow.parquet as pq

from fourfold.training.data import load_text_dataset

DATA = Path(__file__).resolve().parents[1] / "training" / "data"


def test_task_files_parse_and_are_few_balanced_labels():
    raw = load_text_dataset(
        [str(DATA / "sotu_era_train.csv")], validation_files=[str(DATA / "sotu_era_validation.csv")]
    )
    assert len(raw["train"]) <= 500 and len(raw["validation"]) >= 400
    for split in raw.values():
        labels = split["label"]
        assert sorted(set(labels)) == ["1790-1899", "1900-2021"] and labels.count("1790-1899") == len(labels) / 2
        assert all((year < 1900) == (label == "1790-1899") for year, label in zip(split["year"], labels, strict=True))
        assert min(len(t.split()) for t in split["text"]) >= 50
    train_addresses = set(zip(raw["train"]["year"], raw["train"]["president"], strict=True))
    validation_addresses = set(zip(raw["validation"]["year"], raw["validation"]["president"], strict=True))
    assert not train_addresses & validation_addresses


def test_task_rows_are_not_in_the_pretraining_text():
    corpus = load_text_dataset([str(DATA / "sotu_addresses.parquet")], validation_split_percentage=5)
    addresses = pq.read_table(DATA / "sotu_addresses.parquet").to_pylist()
    assert len(addresses) == len(corpus["train"]) + len(corpus["validation"]) and len(addresses) >= 50
    pretraining = "\n".join(a["text"] for a in addresses)
    assert sum(len(a["text"].split()) for a in addresses) > 500_000
    task = load_text_dataset(
        [str(DATA / "sotu_era_train.csv")], validation_files=[str(DATA / "sotu_era_validation.csv")]
    )
    pretrained_on = {(a["year"], a["president"]) for a in addresses}
    for split in task.values():
        assert not pretrained_on & set(zip(split["year"], split["president"], strict=True))
        # The text itself: no passage is in the corpus (formulaic openings such as "Gentlemen of the House of
        # Representatives: I have directed an estimate of the appropriations" recur in other addresses, so a prefix is).
        assert not any(text in pretraining for text in split["text"])

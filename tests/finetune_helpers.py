"""Shared pieces of the fine-tuning tests: tiny "pretrained" checkpoints and small synthetic task datasets.

`tiny_checkpoints` (session fixture) saves one checkpoint per architecture the way a pretraining run would: a
tokenizer trained on the bundled Moby-Dick sample with training/tokenizer.py, a tiny model whose vocabulary and
special ids follow it, saved with its pretraining head (masked LM, causal LM, seq2seq LM). Fine-tuning then loads
it for a task, so the task head is fresh, as in real use. The datasets are generated, learnable in a few steps.
"""

import json
import random
from pathlib import Path

import pytest

from fourfold.configuration import get_config
from fourfold.training.architectures import ARCHITECTURES
from fourfold.training.data import BUNDLED_CORPUS
from fourfold.training.finetune import run_finetune
from fourfold.training.tokenizer import model_special_ids, train_tokenizer

NAMES = ["Ahab", "Ishmael", "Queequeg", "Starbuck", "Stubb", "Flask", "Tashtego", "Daggoo"]
WORDS = "the whale sea ship boat harpoon captain mast deck sail wind wave oil rope bone storm night".split()


def build_checkpoint(architecture: str, folder: Path, seed: int = 0) -> Path:
    import torch

    texts = [json.loads(line)["text"] for line in BUNDLED_CORPUS.read_text().splitlines()]
    tokenizer = train_tokenizer(texts, architecture, vocab_size=600, num_sentinels=8)
    config = get_config(f"{architecture}-tiny", **model_special_ids(tokenizer, architecture))
    torch.manual_seed(seed)
    model = ARCHITECTURES[architecture].pretraining_head(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {arch: build_checkpoint(arch, root / arch) for arch in ARCHITECTURES}


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def token_classification_rows(n: int = 96, seed: int = 0) -> list[dict]:
    """Sentences of common words with names in them: names are B-PER, a name right after a name I-PER."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(4, 9)):
            if rng.random() < 0.3:
                words.append(rng.choice(NAMES))
                tags.append("I-PER" if tags and tags[-1] != "O" else "B-PER")
            else:
                words.append(rng.choice(WORDS))
                tags.append("O")
        rows.append({"tokens": words, "tags": tags})
    return rows


def sequence_classification_rows(n: int = 96, seed: int = 0) -> list[dict]:
    """Does the sentence name a person? Learnable from the tokens alone."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 8))]
        label = "person" if i % 2 else "thing"
        if label == "person":
            words.insert(rng.randrange(len(words)), rng.choice(NAMES))
        rows.append({"text": " ".join(words), "label": label})
    return rows


def question_answering_rows(n: int = 64, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, thing = rng.choice(NAMES), rng.choice(WORDS)
        filler = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        context = f"{filler} . {name} held the {thing} . {filler}"
        start = context.index(name)
        rows.append(
            {
                "question": f"Who held the {thing} ?",
                "context": context,
                "answers": {"text": [name], "answer_start": [start]},
            }
        )
    return rows


def multiple_choice_rows(n: int = 64, seed: int = 0) -> list[dict]:
    """Pick the choice that repeats the question's word."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        choices = rng.sample(WORDS, 3)
        label = rng.randrange(3)
        rows.append({"question": f"which is {choices[label]} ?", "choices": choices, "label": label})
    return rows


def prompt_completion_rows(n: int = 64, seed: int = 0) -> list[dict]:
    """Prompt: some words; completion: the same words again."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))
        rows.append({"prompt": f"repeat: {words} ->", "completion": f" {words}"})
    return rows


def text_to_text_rows(n: int = 64, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))
        rows.append({"text": f"copy: {words}", "target": words})
    return rows


def quick_args(output_dir: Path, *extra: str, steps: int = 20) -> list[str]:
    """Trainer flags for a fast, quiet, deterministic run."""
    return [
        "--output_dir",
        str(output_dir),
        "--max_steps",
        str(steps),
        "--per_device_train_batch_size",
        "8",
        "--per_device_eval_batch_size",
        "16",
        "--learning_rate",
        "3e-3",
        "--warmup_steps",
        "0",
        "--logging_steps",
        "5",
        "--save_strategy",
        "no",
        "--eval_strategy",
        "no",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--seed",
        "0",
        "--dataloader_num_workers",
        "0",
        "--dataloader_pin_memory",
        "false",
        *extra,
    ]


def finetune(output_dir: Path, *args: str, steps: int = 20) -> dict:
    return run_finetune(quick_args(output_dir, *args, steps=steps))

"""Packing vs padding: our llama-like decoder trained on the same real documents, batched two ways.

The documents are the bundled Moby-Dick paragraphs (`training/data/moby_dick.jsonl`), tokenized by a byte-level BPE
tokenizer trained on them as `fourfold pretrain` does. Packed ("ours"): document-aware rows from `group_texts` whose
position ids restart at every document, no padding. Padded ("peer"): `batch` paragraphs per batch, padded to the
longest. One timed call is a training pass over the whole set; throughput counts non-pad tokens only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache

from pairs import build_model, ours_llama
from rows import result_row
from settings import Settings, Size
from targets import target_for
from timing import interleaved, train_step_fn
from torch import nn
from transformers import DataCollatorForLanguageModeling

from fourfold.training.collators import CausalLMCollator
from fourfold.training.data import BUNDLED_CORPUS, append_eos, group_texts
from fourfold.training.tokenizer import train_tokenizer

PACKED_BATCHES = 4  # the packing comparison's fixed set: this many full packed batches' worth of real tokens


@lru_cache(maxsize=4)
def _paragraph_tokenizer(vocab_size: int):
    """The decoder's byte-level BPE tokenizer trained on the bundled corpus (as `fourfold pretrain` does), and the
    corpus's paragraphs."""
    chapters = [json.loads(line) for line in BUNDLED_CORPUS.read_text().splitlines() if line.strip()]
    paragraphs = [p.strip() for chapter in chapters for p in chapter["text"].split("\n\n") if p.strip()]
    return train_tokenizer(paragraphs, "decoder", vocab_size), paragraphs


def _documents(tokenizer, paragraphs: list[str], size: Size, settings: Settings) -> list[list[int]]:
    """Paragraphs framed `<s> text </s>`, cut to `size.seq`, shuffled with the seed, and taken until they hold
    `PACKED_BATCHES * size.batch * size.seq` tokens (the last one cut to fit)."""
    documents = tokenizer(paragraphs, verbose=False)["input_ids"]
    documents = append_eos({"input_ids": documents}, tokenizer.eos_token_id)["input_ids"]
    documents = [ids[: size.seq] for ids in documents]
    random.Random(settings.seed).shuffle(documents)
    budget = PACKED_BATCHES * size.batch * size.seq
    chosen, total = [], 0
    for ids in documents:
        if total == budget:
            break
        chosen.append(ids[: budget - total])
        total += len(chosen[-1])
    if total < budget:
        raise ValueError(f"the corpus holds {total} tokens, fewer than the {budget} the packing comparison needs")
    return chosen


def packing_batches(size: Size, settings: Settings) -> dict:
    """One fixed set of real documents (`_documents`), batched twice: padded and document-aware packed.

    Packed: concatenated into rows of `size.seq` by `group_texts` (position ids restart at every document and row
    start), labelled by `CausalLMCollator` (-100 at document starts), no attention_mask. Padded: `size.batch`
    documents per batch, padded to the batch's longest, `attention_mask` and labels -100 on pads (transformers'
    `DataCollatorForLanguageModeling(mlm=False)`). Both sides see exactly the same tokens.
    """
    tokenizer, paragraphs = _paragraph_tokenizer(size.vocab)
    chosen = _documents(tokenizer, paragraphs, size, settings)
    budget = PACKED_BATCHES * size.batch * size.seq

    def chunks(items: list, n: int) -> list[list]:
        return [items[i : i + n] for i in range(0, len(items), n)]

    def to_device(batch: dict) -> dict:
        return {name: tensor.to(settings.device) for name, tensor in batch.items()}

    rows = group_texts({"input_ids": chosen}, size.seq, packing=True)
    packed_examples = [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)]
    packed = [to_device(CausalLMCollator(tokenizer)(chunk)) for chunk in chunks(packed_examples, size.batch)]
    pad_collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    padded = [to_device(pad_collator([{"input_ids": ids} for ids in chunk])) for chunk in chunks(chosen, size.batch)]
    padded_slots = sum(batch["input_ids"].numel() for batch in padded)
    real = sum(int(batch["attention_mask"].sum()) for batch in padded)
    if real != budget or len(packed_examples) * size.seq != budget:
        raise RuntimeError(f"packed rows hold {len(packed_examples) * size.seq} tokens, padded batches {real}")
    return {
        "vocab_size": len(tokenizer),
        "packed": packed,
        "padded": padded,
        "documents": len(chosen),
        "real_tokens": real,
        "padded_slots": padded_slots,
        "padding_fraction": 1 - real / padded_slots,
    }


def train_pass_fn(model: nn.Module, batches: list[dict], settings: Settings) -> Callable[[], None]:
    """A training step on every batch in turn, one AdamW throughout (`train_step_fn`'s inputs, refilled per batch)."""
    inputs = dict(batches[0])
    step = train_step_fn(model, inputs, settings)

    def train_pass():
        for batch in batches:
            inputs.clear()
            inputs.update(batch)
            step()

    return train_pass


def bench_packing(size: Size, size_name: str, settings: Settings, log: Callable[[str], None]) -> list[dict]:
    """Packed rows ('ours') vs padded batches ('peer') of the same paragraphs, training in non-pad tokens/s."""
    log("  packing vs padding (ours, llama-like decoder, Moby-Dick paragraphs)")
    data = packing_batches(size, settings)
    size = replace(size, vocab=max(size.vocab, data["vocab_size"]))  # micro: byte-level BPE needs 256 symbols
    packed_model, padded_model = build_model(ours_llama, size, settings), build_model(ours_llama, size, settings)
    o, p = interleaved(
        train_pass_fn(packed_model, data["packed"], settings),
        train_pass_fn(padded_model, data["padded"], settings),
        settings,
    )
    row = result_row(
        "packing",
        "train",
        "non-pad tokens/s",
        o,
        p,
        tokens=data["real_tokens"],
        target=target_for("packing", "train", size_name, settings.device),
        corpus="Moby-Dick paragraphs (training/data/moby_dick.jsonl)",
        documents=data["documents"],
        real_tokens=data["real_tokens"],
        ours_batches=len(data["packed"]),
        ours_rows=sum(len(batch["input_ids"]) for batch in data["packed"]),
        peer_batches=len(data["padded"]),
        peer_padded_tokens=data["padded_slots"],
        peer_padding_fraction=data["padding_fraction"],
    )
    return [row]

"""Tokenizer training is reproducible: the same text gives the same WordPiece ids in every process.

`tokenizers`' WordPiece trainer numbers its alphabet in hash-map order, different in every process;
`renumbered_wordpiece` fixes the order. Checked against the trainer's own numbering (the same pieces, the same
splits of real text) and across two fresh processes on the demo's corpus and vocabulary size (the same ids). On a
small corpus the trainer can still pick different pieces at the vocabulary cutoff, where merges tie: their order
follows the hash-map ids of the `##` symbols (12 addresses at 1,500 pieces: 3 pieces differed in some processes).
"""

import json
import subprocess
import sys

import pandas as pd
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from fourfold.training.demo import CORPUS
from fourfold.training.tokenizer import renumbered_wordpiece

TEXTS = pd.read_parquet(CORPUS)["text"].tolist()[:12]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def trained_wordpiece() -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=1500, special_tokens=SPECIALS, show_progress=False)
    tokenizer.train_from_iterator(TEXTS, trainer=trainer)
    return tokenizer


def test_renumbering_keeps_the_pieces_and_the_splits():
    tokenizer = trained_wordpiece()
    before = tokenizer.get_vocab()
    splits = [encoding.tokens for encoding in tokenizer.encode_batch(TEXTS)]
    tokenizer.model = renumbered_wordpiece(tokenizer, SPECIALS, "[UNK]")
    after = tokenizer.get_vocab()
    assert set(after) == set(before) and sorted(after.values()) == list(range(len(before)))
    assert [after[t] for t in SPECIALS] == [before[t] for t in SPECIALS] == list(range(len(SPECIALS)))
    ordinary = [t for t in after if t not in SPECIALS]
    assert sorted(ordinary, key=after.get) == sorted(ordinary)
    assert [encoding.tokens for encoding in tokenizer.encode_batch(TEXTS)] == splits


def test_the_encoder_tokenizer_has_the_same_ids_in_every_process():
    script = (
        "import json, sys; import pandas as pd; from fourfold.training.tokenizer import train_tokenizer; "
        f"texts = pd.read_parquet({str(CORPUS)!r})['text'].tolist(); "
        "print(json.dumps(train_tokenizer(texts, 'encoder', 4000).get_vocab(), sort_keys=True))"
    )
    vocabs = [
        json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
        for _ in range(2)
    ]
    assert vocabs[0] == vocabs[1] and len(vocabs[0]) == 4000

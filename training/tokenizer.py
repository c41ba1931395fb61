"""Tokenizers for pretraining: train one on the corpus with the `tokenizers` library, or load an existing one.

Each architecture's record (`architectures.py`, `TokenizerSpec`) gives the algorithm and special tokens its
objective needs and the template around a text:
    encoder     WordPiece; [CLS] text [SEP]; [MASK] for masked LM                          (BERT)
    decoder     byte-level BPE; <s> text                                                    (Llama)
    prefix-lm   byte-level BPE; <s> text                                                    (the decoder's)
    seq2seq     Unigram (or BPE); text </s>; sentinels <extra_id_0> ... for span corruption (T5)
The decoder's template adds no </s>: a prompt must not end in one, or generation would stop at once. Pretraining
data appends </s> to each document instead (`data.tokenize_and_group`), so models still learn where a text ends.
Every tokenizer has distinct pad / bos / eos / unk ids (pad != eos, so padding never hides an end of text) and a mask
token. `model_special_ids` gives the ids a model config must copy, so a config always follows its tokenizer.
"""

import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from fourfold.training.architectures import architecture_of, get_architecture
from fourfold.training.chat_template import set_chat_template

ALGORITHMS = ("wordpiece", "bpe", "unigram")


def special_tokens_for(architecture: str, num_sentinels: int = 100) -> dict[str, str | list[str]]:
    """The special tokens of an architecture's tokenizer, as `PreTrainedTokenizerFast` keyword arguments."""
    spec = get_architecture(architecture).tokenizer
    tokens: dict[str, str | list[str]] = dict(spec.special_tokens)
    if spec.sentinels:
        tokens["extra_special_tokens"] = [f"<extra_id_{i}>" for i in range(num_sentinels)]
    return tokens


def train_tokenizer(
    texts: Iterable[str],
    architecture: str,
    vocab_size: int,
    algorithm: str | None = None,
    num_sentinels: int = 100,
    min_frequency: int = 2,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Trains a tokenizer for `architecture` on `texts` and wraps it for transformers.

    Args:
        texts: the training text, one document per item (an iterator is fine).
        architecture: `"encoder"`, `"decoder"`, `"prefix-lm"` or `"seq2seq"`: picks the special tokens and template.
        vocab_size: total vocabulary size, special tokens included.
        algorithm: `"wordpiece"`, `"bpe"` (byte-level) or `"unigram"`; `None`: the architecture's default.
        num_sentinels: seq2seq only: how many `<extra_id_i>` sentinels span corruption may use.
        min_frequency: BPE/WordPiece merges need a pair seen at least this often.
        model_max_length: recorded on the tokenizer (the longest input it will truncate to).
    """
    spec = get_architecture(architecture).tokenizer
    algorithm = algorithm or spec.algorithm
    if algorithm not in ALGORITHMS:
        raise ValueError(f"tokenizer algorithm={algorithm!r}: choose one of {', '.join(ALGORITHMS)}.")
    specials = special_tokens_for(architecture, num_sentinels)
    # Special tokens first, in a fixed order, so their ids are small and stable: pad=0, then bos/unk/eos...
    special_list = list(dict.fromkeys(v for k, v in specials.items() if isinstance(v, str) and k != "pad_token"))
    special_list = [specials["pad_token"], *special_list, *specials.get("extra_special_tokens", [])]
    if vocab_size <= len(special_list) + 64:
        raise ValueError(f"vocab_size={vocab_size} leaves no room beside {len(special_list)} special tokens.")

    if algorithm == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=specials["unk_token"]))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=special_list, min_frequency=min_frequency, show_progress=False
        )
    elif algorithm == "bpe":
        # Byte-level: every string is encodable, so unk never appears in practice.
        tokenizer = Tokenizer(models.BPE(unk_token=specials["unk_token"]))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special_list,
            min_frequency=min_frequency,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=special_list, unk_token=specials["unk_token"], show_progress=False
        )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if algorithm == "wordpiece":
        tokenizer.model = renumbered_wordpiece(tokenizer, special_list, specials["unk_token"])

    # What `tokenizer(text)` adds around the text: the objective's framing. In a pair, the second text ends with
    # the closing token ([SEP], </s>), or starts with the opening one (<s>) where there is none.
    first, last = spec.first, spec.last
    single = " ".join(t for t in (first, "$A", last) if t)
    pair = f"{single} $B:1 {last}:1" if last else f"{single} {first}:1 $B:1"
    used = [t for t in (first, last) if t is not None]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, tokenizer.token_to_id(t)) for t in used]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length, **specials)


def renumbered_wordpiece(tokenizer: Tokenizer, special_tokens: list[str], unk_token: str) -> models.WordPiece:
    """The trained WordPiece model with its ids in a fixed order: the special tokens first (at the ids the trainer
    gave them), then every other piece sorted. Written by hand because `tokenizers`' WordPiece trainer numbers its
    alphabet in hash-map order, which changes from process to process: the same text and seed gave the same 4,000
    pieces with 117 ids moved, so a differently initialised model (on a small corpus, merges that tie at the
    vocabulary cutoff can also pick different pieces: not fixed here). WordPiece matches the longest piece in the
    vocabulary whatever its id, so the renumbering changes ids only, never how a text is split. (The Unigram trainer,
    seq2seq's default, also varies by process, in the last digits of its scores: not renumbered.)"""
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    if [vocab.get(token) for token in special_tokens] != list(range(len(special_tokens))):
        raise RuntimeError("The WordPiece trainer did not put the special tokens first; cannot renumber its vocab.")
    ordered = special_tokens + sorted(set(vocab) - set(special_tokens))
    return models.WordPiece({token: i for i, token in enumerate(ordered)}, unk_token=unk_token)


def load_or_train_tokenizer(
    name_or_path: str | None,
    architecture: str,
    texts: Iterable[str] | None = None,
    vocab_size: int = 8000,
    algorithm: str | None = None,
    num_sentinels: int = 100,
    chat_template: str | None = None,
) -> PreTrainedTokenizerBase:
    """Loads `name_or_path` (a local folder, or a Hub name unless `HF_HUB_OFFLINE=1`), or trains one on `texts`.

    A loaded tokenizer is checked against the architecture (`check_special_tokens`); a trained one has what it needs.
    `chat_template` (a path or a template: `--chat_template`) replaces its chat template; without it, a tokenizer
    that has none gets the architecture's default (causal LMs: `chat_template.DEFAULT_CHAT_TEMPLATE`).
    """
    if name_or_path:
        if not Path(name_or_path).exists() and os.environ.get("HF_HUB_OFFLINE", "0") in ("1", "true", "TRUE"):
            raise FileNotFoundError(
                f"tokenizer {name_or_path!r} is not a local folder and HF_HUB_OFFLINE is set: pass a local path, "
                "unset HF_HUB_OFFLINE, or leave the tokenizer name empty to train one on the corpus."
            )
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    else:
        if texts is None:
            raise ValueError("Training a tokenizer needs `texts`.")
        tokenizer = train_tokenizer(texts, architecture, vocab_size, algorithm, num_sentinels)
    check_special_tokens(tokenizer, architecture)
    set_chat_template(tokenizer, chat_template, get_architecture(architecture).tokenizer.chat_template)
    return tokenizer


def default_chat_template(model_type: str | None) -> str | None:
    """The chat template a fourfold checkpoint of `model_type` gets when its tokenizer has none (`None` for other
    models, and for architectures that do not chat)."""
    architecture = architecture_of(model_type)
    return architecture.tokenizer.chat_template if architecture is not None else None


def sentinel_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of `<extra_id_0>`, `<extra_id_1>`, ... in order (empty when the tokenizer has none)."""
    ids = []
    while (token_id := tokenizer.convert_tokens_to_ids(f"<extra_id_{len(ids)}>")) not in (None, tokenizer.unk_token_id):
        ids.append(token_id)
    return ids


def check_special_tokens(tokenizer: PreTrainedTokenizerBase, architecture: str) -> None:
    """Raises, naming the fix, when `tokenizer` lacks a special token that `architecture`'s objective needs."""
    spec = get_architecture(architecture).tokenizer
    missing = [f"{name} (for {why})" for name, why in spec.required.items() if getattr(tokenizer, name) is None]
    if spec.sentinels and not sentinel_ids(tokenizer):
        missing.append("sentinel tokens <extra_id_0>, <extra_id_1>, ... (for span corruption)")
    if missing:
        raise ValueError(
            f"The tokenizer lacks {', '.join(missing)}, which {architecture} pretraining needs: add them with "
            "`tokenizer.add_special_tokens(...)` and save it, or leave --tokenizer_name empty to train a tokenizer."
        )
    if spec.pad_unlike_eos and tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError(
            "The tokenizer's pad token is its eos token, so the loss would ignore every end of text: give it a "
            "distinct pad token (`tokenizer.add_special_tokens({'pad_token': '<pad>'})`)."
        )


# Config fields that `model_special_ids` sets from the tokenizer: a config override of one is refused.
TOKENIZER_FIELDS = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")


def model_special_ids(tokenizer: PreTrainedTokenizerBase, architecture: str) -> dict[str, int | None]:
    """Config fields that must follow the tokenizer: vocab size and the pad/bos/eos (/decoder start) ids."""
    ids = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if get_architecture(architecture).tokenizer.decoder_starts_with_pad:  # T5's convention
        ids["decoder_start_token_id"] = tokenizer.pad_token_id
    return ids

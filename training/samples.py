"""What a pretrained model learnt, in words: the samples `fourfold pretrain` prints and saves after training.

One writer per kind of objective, each on the first dozen words of a few held-out texts:

    fill_mask        encoder     every fourth word piece masked, then the model's guesses
    continue_text    decoder,    a greedy continuation of 30 tokens (prefix LM: the prompt is the prefix;
                     prefix LM   UL2's prefix LM asks its S-denoiser: [S2S] <s> prompt </s>)
    denoise          seq2seq     span-corrupted text and the predicted spans next to the truth (UL2: asked with the
                                 R-denoiser's mode token)

The architecture records (`architectures.py`) name the writer of each objective.
"""

import zlib
from collections.abc import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fourfold.training.collators import MODE_TOKENS, SpanCorruptionCollator

SampleWriter = Callable[[PreTrainedModel, PreTrainedTokenizerBase, str], str]


def prompts_of(texts: list[str], n: int) -> list[str]:
    """The first 12 words of the first `n` texts that have that many."""
    return [" ".join(text.split()[:12]) for text in texts if len(text.split()) >= 12][:n]


@torch.no_grad()
def write_samples(
    writer: SampleWriter, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], n: int = 3
) -> list[str]:
    """`writer` on the prompts of `texts` (see `prompts_of`), in evaluation mode."""
    model.eval()
    return [writer(model, tokenizer, prompt) for prompt in prompts_of(texts, n)]


def fill_mask(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """Masks every fourth ordinary token of the prompt, then reads the model's guesses."""
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
    candidates = list(range(1, input_ids.shape[1] - 1))[1::4]
    input_ids[0, candidates] = tokenizer.mask_token_id
    logits = model(input_ids=input_ids).logits
    filled = input_ids.clone()
    filled[0, candidates] = logits[0, candidates].argmax(-1)
    masked = tokenizer.decode(input_ids[0], skip_special_tokens=False)
    return f"{masked}\n  -> {tokenizer.decode(filled[0], skip_special_tokens=True)}"


def continue_text(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, mode_token: str | None = None
) -> str:
    """A greedy continuation of `<s> prompt` (with `mode_token`: of `mode <s> prompt </s>`, UL2's S-denoiser)."""
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids  # <s> prompt, as in training
    if mode_token is not None:
        mode, eos = tokenizer.convert_tokens_to_ids(mode_token), tokenizer.eos_token_id
        input_ids = torch.cat([torch.tensor([[mode]]), input_ids, torch.tensor([[eos]])], dim=1)
    input_ids = input_ids.to(model.device)
    output = model.generate(input_ids, max_new_tokens=30, do_sample=False, repetition_penalty=1.3)
    continuation = tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
    return f"{prompt}\n  -> {' '.join(continuation.split())}"  # newlines would break the layout


def denoise(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, mode_token: str | None = None
) -> str:
    """Span-corrupts the prompt (T5's defaults; the draw is fixed by the prompt) and generates the spans;
    `mode_token` starts the input (UL2)."""
    corrupt = SpanCorruptionCollator(tokenizer, seed=zlib.crc32(prompt.encode()))
    corrupted = corrupt([{"input_ids": tokenizer(prompt, add_special_tokens=False).input_ids}])
    if mode_token is not None:
        mode = torch.tensor([[tokenizer.convert_tokens_to_ids(mode_token)]])
        corrupted["input_ids"] = torch.cat([mode, corrupted["input_ids"]], dim=1)
    output = model.generate(corrupted["input_ids"].to(model.device), max_new_tokens=20, do_sample=False)
    return (
        f"{tokenizer.decode(corrupted['input_ids'][0])}\n"
        f"  -> predicted {tokenizer.decode(output[0], skip_special_tokens=False)}\n"
        f"     truth     {tokenizer.decode(corrupted['labels'][0])}"
    )


def ul2_continue_text(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """`continue_text` asked of UL2's S-denoiser (prefix LM)."""
    return continue_text(model, tokenizer, prompt, mode_token=MODE_TOKENS[2])


def ul2_denoise(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """`denoise` asked of UL2's R-denoiser (seq2seq)."""
    return denoise(model, tokenizer, prompt, mode_token=MODE_TOKENS[0])

"""fourfold against transformers' own models, at identical sizes, in one interleaved run.

    python benchmarks/bench.py --size all --repeats 5 --out benchmarks/results

Six comparisons, each a fourfold model configured as close to its peer as the options allow:

    encoder     FourfoldEncoderForMaskedLM (post-norm, LayerNorm, learned positions, GELU, biases, token types)
                vs BertForMaskedLM
    gpt2        FourfoldDecoderForCausalLM (pre-norm, LayerNorm, learned positions, gelu_new, biases) vs GPT2LMHeadModel
    llama       FourfoldDecoderForCausalLM (defaults: RMSNorm, RoPE, SwiGLU, no biases) vs LlamaForCausalLM
    prefix-lm   FourfoldPrefixLMForCausalLM (prefix_mask over half the sequence) vs our own `llama` decoder
    t5          FourfoldSeq2SeqForConditionalGeneration (pre-norm RMSNorm, ReLU, no biases; RoPE where T5 has its
                relative position bias) vs T5ForConditionalGeneration
    bart        FourfoldSeq2SeqForConditionalGeneration (post-norm LayerNorm, learned positions with offset 2,
                embedding norm, GELU, biases, logits bias) vs BartForConditionalGeneration

Metrics: training step (forward + backward + AdamW step) and inference forward in tokens/s, generation with the KV
cache (greedy, exactly `new_tokens` new tokens, batch 1 and 8) in new tokens/s, peak training memory (a fresh
subprocess per model: growth of VmHWM over two training steps on CPU, `max_memory_allocated` on CUDA), and model FLOPs
utilisation of the training step against a large matmul timed in the same run. Plus: bf16 autocast vs fp32 (ours),
torch.compile graph breaks (and, with --compile, compiled vs eager), and document-aware packing vs padding (ours, on
the bundled Moby-Dick paragraphs, in non-pad tokens/s).

Fairness: one process, the same thread count, dtype, attention implementation, zero dropout, the same inputs;
ours and the peer alternate sample by sample (warm-up first) and each side's median is reported. Every timed sample
also measures the CPU time other processes took meanwhile (/proc/stat minus our own); a sample taken while others
used more than --max-foreign-load cores is discarded and retaken (up to --retries times), and the count is recorded.

FLOPs (the PaLM formula): per training step 6 * N * B * T + 12 * d * T_q * T_k * B per attention layer, N = the
weights of every matmul (linear layers and the LM head, not embedding lookups), not discounted for causal masking.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.pytorch_utils import Conv1D

from fourfold.modeling import (
    FourfoldDecoderConfig,
    FourfoldDecoderForCausalLM,
    FourfoldEncoderConfig,
    FourfoldEncoderForMaskedLM,
    FourfoldPrefixLMConfig,
    FourfoldPrefixLMForCausalLM,
    FourfoldSeq2SeqConfig,
    FourfoldSeq2SeqForConditionalGeneration,
)
from fourfold.training.collators import CausalLMCollator
from fourfold.training.data import BUNDLED_CORPUS, append_eos, group_texts
from fourfold.training.tokenizer import train_tokenizer

# --------------------------------------------------------------------------------------------------------------------
# Sizes and settings
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    """One benchmark size; both sides of every comparison are built from it."""

    hidden: int
    layers: int
    heads: int
    seq: int  # training / forward length (seq2seq: source and target length each)
    batch: int
    vocab: int = 8192
    prompt: int = 32  # generation prompt length (seq2seq: source length)
    new_tokens: int = 128
    gen_batches: tuple[int, ...] = (1, 8)

    @property
    def max_positions(self) -> int:
        return max(self.seq, self.prompt + self.new_tokens) + 2  # + BART's two reserved rows


SIZES: dict[str, Size] = {
    "micro": Size(hidden=32, layers=1, heads=2, seq=16, batch=2, vocab=128, prompt=4, new_tokens=4, gen_batches=(1, 2)),
    "tiny": Size(hidden=256, layers=4, heads=4, seq=128, batch=8),
    "small": Size(hidden=512, layers=6, heads=8, seq=512, batch=4),
}


@dataclass
class Settings:
    """Process-wide settings shared by both sides of every comparison."""

    device: str = "cpu"
    threads: int = 0  # 0: leave torch's default
    bf16: bool = False  # run every comparison under bf16 autocast
    compile: bool = False  # torch.compile both sides (training and forward)
    attn: str = "sdpa"
    repeats: int = 5
    min_sample_s: float = 0.25  # short calls are repeated inside one sample until it lasts this long
    max_foreign_load: float = 0.3  # cores other processes may use during a sample before it is retaken
    retries: int = 3
    memory: bool = True
    graph_breaks: bool = True
    packing: bool = True
    metrics: tuple[str, ...] = ("train", "forward", "generate")  # of each comparison
    vocab: int = 0  # > 0: this vocabulary size at every size instead of the size's own
    seed: int = 0


# --------------------------------------------------------------------------------------------------------------------
# The comparisons: matched model pairs
# --------------------------------------------------------------------------------------------------------------------

PAD, BOS, EOS = 0, 1, 2  # BART's own ids (0 bos, 1 pad, 2 eos) are set in its builders


def size_for(name: str, settings: Settings) -> Size:
    """The named size, with `--vocab` applied."""
    return replace(SIZES[name], vocab=settings.vocab) if settings.vocab else SIZES[name]


def _common(size: Size) -> dict:
    return dict(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        max_position_embeddings=size.max_positions,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )


def ours_encoder(size: Size) -> nn.Module:
    config = FourfoldEncoderConfig(
        **_common(size),
        norm_position="post",
        norm_type="layernorm",
        norm_eps=1e-12,
        position_embedding_type="absolute",
        hidden_act="gelu",
        mlp_type="plain",
        intermediate_size=4 * size.hidden,
        attention_bias=True,
        mlp_bias=True,
        type_vocab_size=2,
        embedding_norm=True,
        tie_word_embeddings=True,
        pad_token_id=PAD,
    )
    return FourfoldEncoderForMaskedLM(config)


def peer_bert(size: Size) -> nn.Module:
    config = BertConfig(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=4 * size.hidden,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=size.max_positions,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=PAD,
        tie_word_embeddings=True,
    )
    return BertForMaskedLM(config)


def ours_gpt2(size: Size) -> nn.Module:
    config = FourfoldDecoderConfig(
        **_common(size),
        norm_position="pre",
        norm_type="layernorm",
        norm_eps=1e-5,
        position_embedding_type="absolute",
        hidden_act="gelu_new",
        mlp_type="plain",
        intermediate_size=4 * size.hidden,
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    return FourfoldDecoderForCausalLM(config)


def peer_gpt2(size: Size) -> nn.Module:
    config = GPT2Config(
        vocab_size=size.vocab,
        n_embd=size.hidden,
        n_layer=size.layers,
        n_head=size.heads,
        n_inner=4 * size.hidden,
        n_positions=size.max_positions,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    return GPT2LMHeadModel(config)


def _llama_like(size: Size) -> dict:
    """fourfold's defaults (pre-norm RMSNorm, RoPE, SwiGLU at 8/3 x hidden rounded to 64, no biases), explicit."""
    return dict(
        **_common(size),
        norm_eps=1e-6,
        intermediate_size=64 * -(-8 * size.hidden // (3 * 64)),
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )


def ours_llama(size: Size) -> nn.Module:
    return FourfoldDecoderForCausalLM(FourfoldDecoderConfig(**_llama_like(size)))


def peer_llama(size: Size) -> nn.Module:
    config = LlamaConfig(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        intermediate_size=64 * -(-8 * size.hidden // (3 * 64)),
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=size.max_positions,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    return LlamaForCausalLM(config)


def ours_prefix_lm(size: Size) -> nn.Module:
    return FourfoldPrefixLMForCausalLM(FourfoldPrefixLMConfig(**_llama_like(size)))


def ours_t5(size: Size) -> nn.Module:
    config = FourfoldSeq2SeqConfig(
        **_common(size),
        norm_position="pre",
        norm_type="rmsnorm",
        norm_eps=1e-6,
        position_embedding_type="rope",  # T5: a learned relative position bias per head (no fourfold option)
        hidden_act="relu",
        mlp_type="plain",
        intermediate_size=4 * size.hidden,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        eos_token_id=1,
        decoder_start_token_id=PAD,
    )
    return FourfoldSeq2SeqForConditionalGeneration(config)


def peer_t5(size: Size) -> nn.Module:
    config = T5Config(
        vocab_size=size.vocab,
        d_model=size.hidden,
        d_kv=size.hidden // size.heads,
        d_ff=4 * size.hidden,
        num_layers=size.layers,
        num_decoder_layers=size.layers,
        num_heads=size.heads,
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        pad_token_id=PAD,
        eos_token_id=1,
        decoder_start_token_id=PAD,
    )
    return T5ForConditionalGeneration(config)


BART_IDS = dict(bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2)


def ours_bart(size: Size) -> nn.Module:
    config = FourfoldSeq2SeqConfig(
        **_common(size),
        norm_position="post",
        norm_type="layernorm",
        norm_eps=1e-5,
        position_embedding_type="absolute",
        position_offset=2,
        hidden_act="gelu",
        mlp_type="plain",
        intermediate_size=4 * size.hidden,
        attention_bias=True,
        mlp_bias=True,
        embedding_norm=True,
        lm_head_bias=True,
        tie_word_embeddings=True,
        **BART_IDS,
    )
    return FourfoldSeq2SeqForConditionalGeneration(config)


def peer_bart(size: Size) -> nn.Module:
    config = BartConfig(
        vocab_size=size.vocab,
        d_model=size.hidden,
        encoder_layers=size.layers,
        decoder_layers=size.layers,
        encoder_attention_heads=size.heads,
        decoder_attention_heads=size.heads,
        encoder_ffn_dim=4 * size.hidden,
        decoder_ffn_dim=4 * size.hidden,
        activation_function="gelu",
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        max_position_embeddings=size.max_positions,
        scale_embedding=False,
        tie_word_embeddings=True,
        forced_eos_token_id=None,
        **BART_IDS,
    )
    return BartForConditionalGeneration(config)


@dataclass(frozen=True)
class Pair:
    """A comparison: our model and its peer, the task kind that decides the inputs, and the targets (ours/peer)."""

    name: str
    ours: Callable[[Size], nn.Module]
    peer: Callable[[Size], nn.Module]
    peer_name: str
    kind: str  # "mlm", "causal", "prefix" or "seq2seq"
    train_target: float
    generates: bool = True
    notes: str = ""


PAIRS: dict[str, Pair] = {
    pair.name: pair
    for pair in (
        Pair(
            "encoder",
            ours_encoder,
            peer_bert,
            "BertForMaskedLM",
            "mlm",
            1.3,
            generates=False,
            notes="same architecture; BERT's MLM head (dense, GELU, LayerNorm, tied decoder with bias) on both",
        ),
        Pair(
            "gpt2",
            ours_gpt2,
            peer_gpt2,
            "GPT2LMHeadModel",
            "causal",
            1.1,
            notes="same architecture (GPT-2 uses Conv1D = transposed linear)",
        ),
        Pair("llama", ours_llama, peer_llama, "LlamaForCausalLM", "causal", 1.1, notes="same architecture"),
        Pair(
            "prefix-lm",
            ours_prefix_lm,
            ours_llama,
            "fourfold decoder (llama-like)",
            "prefix",
            0.95,
            notes="prefix_mask over the first half of every sequence (generation: the prompt); labels -100 there, "
            "for both sides",
        ),
        Pair(
            "t5",
            ours_t5,
            peer_t5,
            "T5ForConditionalGeneration",
            "seq2seq",
            1.1,
            notes="T5 has a relative position bias (a float mask in every layer, computed in the first) and scales "
            "the tied LM head input by d**-0.5; ours uses RoPE; T5's attention is unscaled (folded into init)",
        ),
        Pair(
            "bart",
            ours_bart,
            peer_bart,
            "BartForConditionalGeneration",
            "seq2seq",
            1.1,
            notes="same architecture (BART's final_logits_bias is a buffer, ours a parameter)",
        ),
    )
}

# Targets from issue 6, as ours/peer ratios (memory: at most; everything else: at least).
TARGETS = {
    "forward": 1.0,
    "generate_b1": 1.5,
    "generate_b8": 1.0,
    "memory": 0.9,
    "mfu": 0.60,
    "bf16_train": 1.3,
    "compile_train": 1.0,
    "packing": 1.5,  # packed vs padded, per real (non-pad) token
}
NEVER_BELOW = 1.0  # no throughput ratio against a peer may fall below this


# --------------------------------------------------------------------------------------------------------------------
# Building models and inputs
# --------------------------------------------------------------------------------------------------------------------


def build_model(builder: Callable[[Size], nn.Module], size: Size, settings: Settings) -> nn.Module:
    """The model, seeded, in fp32 on the device, with the requested attention implementation on both sides."""
    torch.manual_seed(settings.seed)
    model = builder(size)
    model.set_attn_implementation(settings.attn)
    return model.to(settings.device)


MASKED_FRACTION = 0.15  # MLM: the share of positions that carry a label


def make_batch(kind: str, size: Size, settings: Settings, *, batch: int | None = None, length: int | None = None):
    """Training inputs (with labels) for the task kind; the same tensors go to both sides."""
    batch, length = batch or size.batch, length or size.seq
    generator = torch.Generator().manual_seed(settings.seed)
    input_ids = torch.randint(3, size.vocab, (batch, length), generator=generator)
    inputs = {"input_ids": input_ids}
    if kind == "mlm":
        chosen = torch.rand(batch, length, generator=generator) < MASKED_FRACTION
        inputs["labels"] = input_ids.masked_fill(~chosen, -100)
    elif kind == "causal":
        inputs["labels"] = input_ids.clone()
    elif kind == "prefix":
        prefix = torch.zeros(batch, length, dtype=torch.long)
        prefix[:, : length // 2] = 1
        inputs["labels"] = input_ids.masked_fill(prefix.bool(), -100)
        inputs["prefix_mask"] = prefix
    elif kind == "seq2seq":
        inputs["labels"] = torch.randint(3, size.vocab, (batch, length), generator=generator)
    return {name: tensor.to(settings.device) for name, tensor in inputs.items()}


def inputs_for(model: nn.Module, inputs: dict) -> dict:
    """Drop `prefix_mask` for models that do not take it (the prefix-LM comparison's decoder side)."""
    if "prefix_mask" in inputs and not isinstance(model, FourfoldPrefixLMForCausalLM):
        return {name: tensor for name, tensor in inputs.items() if name != "prefix_mask"}
    return inputs


def forward_inputs(kind: str, inputs: dict, model: nn.Module) -> dict:
    """Inference inputs: no labels, no cache; the seq2seq decoder reads the (shifted) labels."""
    inputs = dict(inputs_for(model, inputs))
    labels = inputs.pop("labels")
    if kind == "seq2seq":
        inputs["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels)
    if kind != "mlm":
        inputs["use_cache"] = False
    return inputs


def matmul_parameters(model: nn.Module) -> int:
    """Weights of every matmul (linear layers and the LM head; each shared weight once), not embedding lookups."""
    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, (nn.Linear, Conv1D)) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            total += module.weight.numel()
    return total


def training_flops(model: nn.Module, kind: str, size: Size) -> float:
    """PaLM-style model FLOPs of one training step (see the module docstring)."""
    tokens = size.batch * size.seq  # seq2seq: every weight sees `seq` tokens (source = target length)
    layers = size.layers * (3 if kind == "seq2seq" else 1)  # seq2seq: encoder self, decoder self and cross
    weights = matmul_parameters(model)
    if kind == "mlm":  # the prediction head is needed at the masked positions only, whichever side computes more
        head = model.lm_head if hasattr(model, "lm_head") else model.cls
        weights -= (1 - MASKED_FRACTION) * matmul_parameters(head)
    return 6 * weights * tokens + 12 * size.hidden * size.seq**2 * size.batch * layers


# --------------------------------------------------------------------------------------------------------------------
# Timing with a foreign-load check
# --------------------------------------------------------------------------------------------------------------------


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process), or None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    busy = sum(fields[:3]) + sum(fields[5:8])  # user nice system . . irq softirq steal
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def _sync(settings: Settings) -> None:
    if settings.device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Samples:
    """Timed samples of one side of one metric (seconds per call), and what was discarded."""

    seconds: list[float] = field(default_factory=list)
    foreign_load: list[float] = field(default_factory=list)
    discarded: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed_sample(fn: Callable[[], object], calls: int, settings: Settings, samples: Samples) -> None:
    """Time `calls` calls of `fn` as one sample; retake it while other processes used too much CPU meanwhile."""
    for attempt in range(settings.retries + 1):
        before = _cpu_seconds()
        _sync(settings)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(settings)
        wall = time.perf_counter() - start
        after = _cpu_seconds()
        foreign = 0.0
        if before is not None and after is not None:
            foreign = max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall)
        if foreign <= settings.max_foreign_load or attempt == settings.retries:
            samples.seconds.append(wall / calls)
            samples.foreign_load.append(round(foreign, 3))
            return
        samples.discarded += 1


def interleaved(ours: Callable[[], object], peer: Callable[[], object], settings: Settings) -> tuple[Samples, Samples]:
    """Warm both up, pick a per-sample call count, then alternate ours, peer, ours, peer, ... `repeats` times."""
    calls = {}
    for side, fn in (("ours", ours), ("peer", peer)):
        for _ in range(2):  # warm-up (lazy initialisation, allocator, optimizer state), then calibrate
            _sync(settings)
            start = time.perf_counter()
            fn()
            _sync(settings)
            seconds = time.perf_counter() - start
            calls[side] = max(1, math.ceil(settings.min_sample_s / max(seconds, 1e-6)))
            if seconds > 2 * settings.min_sample_s:  # a long call needs one warm-up only: saves minutes
                break
    n = max(calls.values())  # the same count on both sides
    result = (Samples(), Samples())
    for _ in range(settings.repeats):
        timed_sample(ours, n, settings, result[0])
        timed_sample(peer, n, settings, result[1])
    return result


def autocast(settings: Settings, enabled: bool | None = None):
    device_type = "cuda" if settings.device.startswith("cuda") else "cpu"
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=settings.bf16 if enabled is None else enabled)


def train_step_fn(model: nn.Module, inputs: dict, settings: Settings, bf16: bool | None = None) -> Callable[[], None]:
    """One training step: forward with labels, backward, AdamW step."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_model = torch.compile(model) if settings.compile else model

    def step():
        with autocast(settings, bf16):
            loss = step_model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def forward_fn(model: nn.Module, inputs: dict, settings: Settings, bf16: bool | None = None) -> Callable[[], None]:
    model.eval()
    forward_model = torch.compile(model) if settings.compile else model

    def forward():
        with torch.inference_mode(), autocast(settings, bf16):
            forward_model(**inputs)

    return forward


def generate_fn(model: nn.Module, kind: str, size: Size, batch: int, settings: Settings) -> Callable[[], None]:
    """Greedy generation of exactly `size.new_tokens` tokens with the KV cache (eos suppressed by min_new_tokens)."""
    model.eval()
    config = model.config
    model.generation_config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=size.new_tokens,
        min_new_tokens=size.new_tokens,
        use_cache=True,
        pad_token_id=config.pad_token_id,
        eos_token_id=config.eos_token_id,
        bos_token_id=getattr(config, "bos_token_id", None),
        decoder_start_token_id=getattr(config, "decoder_start_token_id", None),
    )
    generator = torch.Generator().manual_seed(settings.seed + 1)
    prompt = torch.randint(3, size.vocab, (batch, size.prompt), generator=generator).to(settings.device)
    attention_mask = torch.ones_like(prompt)

    def generate():
        with torch.inference_mode(), autocast(settings):
            out = model.generate(prompt, attention_mask=attention_mask)
        produced = out.shape[1] - (0 if kind == "seq2seq" else size.prompt) - (1 if kind == "seq2seq" else 0)
        if produced != size.new_tokens:
            raise RuntimeError(f"{type(model).__name__} generated {produced} tokens, expected {size.new_tokens}")

    return generate


# --------------------------------------------------------------------------------------------------------------------
# Peak memory: a fresh subprocess per model
# --------------------------------------------------------------------------------------------------------------------


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_training_memory(pair_name: str, side: str, size: Size, settings: Settings) -> dict:
    """Peak memory growth (MiB) over two training steps of one model, measured in this process: VmHWM on CPU (reset
    through /proc/self/clear_refs after building), `max_memory_allocated` on CUDA. Run it in a fresh process."""
    pair = PAIRS[pair_name]
    model = build_model(pair.ours if side == "ours" else pair.peer, size, settings)
    step = train_step_fn(model, inputs_for(model, make_batch(pair.kind, size, settings)), settings)
    if settings.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        step()
        torch.cuda.synchronize()
        return {"peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20, "method": "cuda max_memory_allocated"}
    base = _proc_status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        method = "VmHWM - VmRSS after build (clear_refs)"
    except OSError:
        method = "VmHWM - VmRSS after build (no clear_refs: may include import peak)"
    step()
    step()
    return {"peak_mib": (_proc_status_kib("VmHWM") - base) / 1024, "method": method}


def memory_in_subprocess(pair_name: str, side: str, size_name: str, settings: Settings) -> dict:
    spec = json.dumps({"pair": pair_name, "side": side, "size": size_name, "settings": asdict(settings)})
    result = subprocess.run(
        [sys.executable, __file__, "--memory-worker", spec], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        return {"peak_mib": float("nan"), "method": "failed", "error": result.stderr[-2000:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------------------
# Machine peak, graph breaks
# --------------------------------------------------------------------------------------------------------------------


def matmul_peak(settings: Settings, repeats: int = 5) -> dict:
    """Achieved FLOP/s of a large square matmul (2048 on CPU, 8192 on CUDA) at this run's threads and dtype."""
    n = 8192 if settings.device.startswith("cuda") else 2048
    dtype = torch.bfloat16 if settings.bf16 else torch.float32
    a = torch.randn(n, n, device=settings.device, dtype=dtype)
    b = torch.randn(n, n, device=settings.device, dtype=dtype)
    samples = Samples()
    calls = None
    for _ in range(2):  # warm-up, then calibrate
        _sync(settings)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(settings)
        calls = max(1, math.ceil(settings.min_sample_s / (time.perf_counter() - start)))
    for _ in range(repeats):
        timed_sample(lambda: torch.mm(a, b), calls, settings, samples)
    return {
        "n": n,
        "dtype": str(dtype).removeprefix("torch."),
        "flops_per_s": 2 * n**3 / samples.median,
        "foreign_load_max": max(samples.foreign_load),
        "discarded": samples.discarded,
    }


def count_graph_breaks(model: nn.Module, inputs: dict) -> int | str:
    """torch._dynamo.explain over a training-mode forward with labels (tracing only, no code generation)."""
    torch._dynamo.reset()
    try:
        explanation = torch._dynamo.explain(model)(**inputs)
    except Exception as error:  # report, do not abort the benchmark
        return f"error: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    finally:
        torch._dynamo.reset()
    return explanation.graph_break_count


# --------------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------------


def _row(
    pair: str,
    metric: str,
    unit: str,
    ours: Samples | float,
    peer: Samples | float,
    *,
    tokens: float = 1.0,
    target: float | None = None,
    lower_is_better: bool = False,
    **extra,
) -> dict:
    """One result: per-side value (tokens/s from the median seconds, or a plain value), ratio ours/peer, target."""

    def value(side):
        return tokens / side.median if isinstance(side, Samples) else side

    ours_value, peer_value = value(ours), value(peer)
    ratio = ours_value / peer_value if peer_value else float("nan")
    met = None
    if target is not None and not math.isnan(ratio):
        met = ratio <= target if lower_is_better else ratio >= target
    row = {
        "pair": pair,
        "metric": metric,
        "unit": unit,
        "ours": ours_value,
        "peer": peer_value,
        "ratio": ratio,
        "target": target,
        "lower_is_better": lower_is_better,
        "met": met,
    }
    for name, side in (("ours", ours), ("peer", peer)):
        if isinstance(side, Samples):
            row[f"{name}_seconds"] = [round(s, 6) for s in side.seconds]
            row[f"{name}_foreign_load"] = side.foreign_load
            row[f"{name}_discarded"] = side.discarded
    row.update(extra)
    return row


def bench_pair(pair: Pair, size: Size, size_name: str, settings: Settings, peak: float, log) -> list[dict]:
    """All metrics of one comparison, ours and peer interleaved."""
    rows = []
    ours, peer = build_model(pair.ours, size, settings), build_model(pair.peer, size, settings)
    batch = make_batch(pair.kind, size, settings)
    info = {
        "ours_class": type(ours).__name__,
        "peer_class": type(peer).__name__,
        "ours_params": sum(p.numel() for p in ours.parameters()),
        "peer_params": sum(p.numel() for p in peer.parameters()),
        "ours_attn": ours.config._attn_implementation,
        "peer_attn": peer.config._attn_implementation,
        "load_avg_1m": os.getloadavg()[0],
    }

    if "train" in settings.metrics:
        rows += bench_training(pair, ours, peer, batch, size, size_name, settings, peak, info, log)
    if "forward" in settings.metrics:
        rows += bench_forward(pair, ours, peer, batch, size, settings, log)
    if pair.generates and "generate" in settings.metrics:
        rows += bench_generation(pair, ours, peer, size, settings, log)
    return rows


def bench_training(pair, ours, peer, batch, size, size_name, settings, peak, info, log) -> list[dict]:
    rows = []
    tokens = size.batch * size.seq
    log(f"  {pair.name}: training step")
    o, p = interleaved(
        train_step_fn(ours, inputs_for(ours, batch), settings),
        train_step_fn(peer, inputs_for(peer, batch), settings),
        settings,
    )
    rows.append(_row(pair.name, "train", "tokens/s", o, p, tokens=tokens, target=pair.train_target, **info))
    flops = training_flops(ours, pair.kind, size), training_flops(peer, pair.kind, size)
    rows.append(
        _row(
            pair.name,
            "mfu",
            "fraction of matmul peak",
            flops[0] / o.median / peak,
            flops[1] / p.median / peak,
            target=TARGETS["mfu"] if size_name == "small" and pair.name != "prefix-lm" else None,
            ours_flops_per_step=flops[0],
            peer_flops_per_step=flops[1],
        )
    )
    # MFU's target is on ours, not on a ratio: mark it against the ours value.
    if rows[-1]["target"] is not None:
        rows[-1]["met"] = rows[-1]["ours"] >= rows[-1]["target"]
    return rows


def bench_forward(pair, ours, peer, batch, size, settings, log) -> list[dict]:
    tokens = size.batch * size.seq
    log(f"  {pair.name}: inference forward")
    o, p = interleaved(
        forward_fn(ours, forward_inputs(pair.kind, batch, ours), settings),
        forward_fn(peer, forward_inputs(pair.kind, batch, peer), settings),
        settings,
    )
    forward_target = None if pair.name == "prefix-lm" else TARGETS["forward"]
    return [_row(pair.name, "forward", "tokens/s", o, p, tokens=tokens, target=forward_target)]


def bench_generation(pair, ours, peer, size, settings, log) -> list[dict]:
    rows = []
    peer_is_ours = pair.name == "prefix-lm"  # its only target is training throughput within 5% of our decoder
    for gen_batch in size.gen_batches:
        log(f"  {pair.name}: generation, batch {gen_batch}")
        o, p = interleaved(
            generate_fn(ours, pair.kind, size, gen_batch, settings),
            generate_fn(peer, pair.kind, size, gen_batch, settings),
            settings,
        )
        target = TARGETS["generate_b1"] if gen_batch == 1 else TARGETS["generate_b8"]
        rows.append(
            _row(
                pair.name,
                f"generate_b{gen_batch}",
                "new tokens/s",
                o,
                p,
                tokens=gen_batch * size.new_tokens,
                target=None if peer_is_ours else target,
            )
        )
    return rows


def bench_bf16(size: Size, settings: Settings, log) -> list[dict]:
    """Ours (the llama-like decoder) under bf16 autocast vs fp32: 'ours' is bf16, 'peer' is fp32."""
    if settings.device.startswith("cuda"):
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if not supported:
        return []
    log("  bf16 autocast vs fp32 (ours, llama-like decoder)")
    model = build_model(ours_llama, size, settings)
    reference = build_model(ours_llama, size, settings)
    batch = make_batch("causal", size, settings)
    tokens = size.batch * size.seq
    o, p = interleaved(
        train_step_fn(model, batch, settings, bf16=True),
        train_step_fn(reference, batch, settings, bf16=False),
        settings,
    )
    rows = [_row("bf16-vs-fp32", "train", "tokens/s", o, p, tokens=tokens, target=TARGETS["bf16_train"])]
    fwd = forward_inputs("causal", batch, model)
    o, p = interleaved(
        forward_fn(model, fwd, settings, bf16=True), forward_fn(reference, fwd, settings, bf16=False), settings
    )
    rows.append(_row("bf16-vs-fp32", "forward", "tokens/s", o, p, tokens=tokens))
    return rows


def bench_compile(size: Size, settings: Settings, log) -> list[dict]:
    """Graph breaks of our four models, and our compiled vs eager training step (both unless --no-graph-breaks)."""
    rows = []
    if settings.graph_breaks:
        for name in ("encoder", "llama", "prefix-lm", "t5"):
            pair = PAIRS[name]
            log(f"  graph breaks: {pair.ours.__name__}")
            model = build_model(pair.ours, size, settings).train()
            breaks = count_graph_breaks(model, make_batch(pair.kind, size, settings))
            rows.append(
                {
                    "pair": f"compile-{name}",
                    "metric": "graph_breaks",
                    "unit": "count",
                    "ours": breaks,
                    "peer": None,
                    "ratio": None,
                    "target": 0,
                    "lower_is_better": True,
                    "met": breaks == 0 if isinstance(breaks, int) else False,
                }
            )
    if settings.graph_breaks:
        log("  torch.compile vs eager (ours, llama-like decoder, training step)")
        eager_settings = Settings(**{**asdict(settings), "compile": False})
        settings = Settings(**{**asdict(settings), "compile": True})
        compiled, eager = build_model(ours_llama, size, settings), build_model(ours_llama, size, settings)
        batch = make_batch("causal", size, settings)
        o, p = interleaved(
            train_step_fn(compiled, batch, settings), train_step_fn(eager, batch, eager_settings), settings
        )
        rows.append(
            _row(
                "compile-vs-eager",
                "train",
                "tokens/s",
                o,
                p,
                tokens=size.batch * size.seq,
                target=TARGETS["compile_train"],
            )
        )
    return rows


PACKED_BATCHES = 4  # the packing comparison's fixed set: this many full packed batches' worth of real tokens


@lru_cache(maxsize=4)
def _paragraph_tokenizer(vocab_size: int):
    """The decoder's byte-level BPE tokenizer trained on the bundled corpus (as `fourfold pretrain` does), and the
    corpus's paragraphs."""
    chapters = [json.loads(line) for line in BUNDLED_CORPUS.read_text().splitlines() if line.strip()]
    paragraphs = [p.strip() for chapter in chapters for p in chapter["text"].split("\n\n") if p.strip()]
    return train_tokenizer(paragraphs, "decoder", vocab_size), paragraphs


def packing_batches(size: Size, settings: Settings) -> dict:
    """One fixed set of real documents, batched twice: padded and document-aware packed.

    Documents are Moby-Dick paragraphs framed as the decoder's pretraining frames them (`<s> text </s>`), cut to
    `size.seq` tokens and shuffled with the seed; documents are taken in that order until they hold
    `PACKED_BATCHES * size.batch * size.seq` tokens (the last one cut to fit), so both sides see exactly the same
    tokens. Packed: concatenated into rows of `size.seq` by `group_texts` (position ids restart at every document and
    row start), labelled by `CausalLMCollator` (-100 at document starts), no attention_mask. Padded: `size.batch`
    documents per batch, padded to the batch's longest, `attention_mask` and labels -100 on pads (transformers'
    `DataCollatorForLanguageModeling(mlm=False)`).
    """
    tokenizer, paragraphs = _paragraph_tokenizer(size.vocab)
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


def bench_packing(size: Size, settings: Settings, log) -> list[dict]:
    """Ours (the llama-like decoder): document-aware packed rows ('ours') vs padded batches ('peer') of the same
    Moby-Dick paragraphs (`packing_batches`), training step in non-pad tokens/s: one call is a pass over the set."""
    log("  packing vs padding (ours, llama-like decoder, Moby-Dick paragraphs)")
    data = packing_batches(size, settings)
    size = replace(size, vocab=max(size.vocab, data["vocab_size"]))  # micro: byte-level BPE needs 256 symbols
    packed_model, padded_model = build_model(ours_llama, size, settings), build_model(ours_llama, size, settings)
    o, p = interleaved(
        train_pass_fn(packed_model, data["packed"], settings),
        train_pass_fn(padded_model, data["padded"], settings),
        settings,
    )
    return [
        _row(
            "packing",
            "train",
            "non-pad tokens/s",
            o,
            p,
            tokens=data["real_tokens"],
            target=TARGETS["packing"],
            corpus="Moby-Dick paragraphs (training/data/moby_dick.jsonl)",
            documents=data["documents"],
            real_tokens=data["real_tokens"],
            ours_batches=len(data["packed"]),
            ours_rows=sum(len(batch["input_ids"]) for batch in data["packed"]),
            peer_batches=len(data["padded"]),
            peer_padded_tokens=data["padded_slots"],
            peer_padding_fraction=data["padding_fraction"],
        )
    ]


def recompute_mfu(result: dict) -> None:
    """MFU rows against the best matmul peak of the run (a later, quieter measurement may beat the first)."""
    peak = result["matmul_peak"]["flops_per_s"]
    for block in result["sizes"].values():
        train = {row["pair"]: row for row in block["rows"] if row["metric"] == "train"}
        for row in block["rows"]:
            if row["metric"] == "mfu":
                for side in ("ours", "peer"):
                    seconds = statistics.median(train[row["pair"]][f"{side}_seconds"])
                    row[side] = row[f"{side}_flops_per_step"] / seconds / peak
                if row["target"] is not None:
                    row["met"] = row["ours"] >= row["target"]


def machine_info(settings: Settings) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": settings.device,
    }
    if settings.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run_benchmark(
    sizes: list[str],
    settings: Settings,
    pairs: list[str] | None = None,
    log=print,
    checkpoint: Callable[[dict], None] | None = None,
) -> dict:
    """Runs every comparison at every size; returns the JSON-ready result (also handed to `checkpoint` after each
    size, so a long run that is cut short keeps what it measured)."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    pairs = pairs or list(PAIRS)
    result = {
        "machine": machine_info(settings),
        "settings": asdict(settings),
        "load_avg_start": list(os.getloadavg()),
        "flops_formula": "6 * N_matmul * B * T + 12 * d * T^2 * B per attention layer (seq2seq: encoder self, "
        "decoder self and cross); N_matmul = weights of every linear layer and the LM head (masked LM: the prediction "
        "head counted at the masked 15% of positions only)",
        "sizes": {},
    }
    started = time.perf_counter()
    result["matmul_peaks"] = []
    for size_name in sizes:
        size = size_for(size_name, settings)
        # Re-measured per size, and the best kept: foreign load can only lower it, and a low peak inflates MFU.
        result["matmul_peaks"].append(matmul_peak(settings))
        peak = result["matmul_peak"] = max(result["matmul_peaks"], key=lambda p: p["flops_per_s"])
        log(f"matmul peak {peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['n']}x{peak['n']} {peak['dtype']})")
        log(f"size {size_name}: {size}")
        rows = []
        for name in pairs:
            rows += bench_pair(PAIRS[name], size, size_name, settings, peak["flops_per_s"], log)
        rows += bench_bf16(size, settings, log)
        rows += bench_compile(size, settings, log)
        if settings.packing:
            rows += bench_packing(size, settings, log)
        if settings.memory:
            for name in pairs:
                log(f"  {name}: peak training memory (subprocesses)")
                mem = {side: memory_in_subprocess(name, side, size_name, settings) for side in ("ours", "peer")}
                rows.append(
                    _row(
                        name,
                        "memory",
                        "MiB",
                        mem["ours"]["peak_mib"],
                        mem["peer"]["peak_mib"],
                        target=TARGETS["memory"] if name != "prefix-lm" else None,
                        lower_is_better=True,
                        method=mem["ours"]["method"],
                        errors={k: v.get("error") for k, v in mem.items()},
                    )
                )
        result["sizes"][size_name] = {"dims": asdict(size), "pairs": {n: PAIRS[n].notes for n in pairs}, "rows": rows}
        result["load_avg_end"] = list(os.getloadavg())
        result["wall_seconds"] = time.perf_counter() - started
        recompute_mfu(result)
        if checkpoint is not None:
            checkpoint(result)
    return result


# --------------------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------------------

METRIC_LABELS = {
    "train": "training step",
    "mfu": "training MFU",
    "forward": "inference forward",
    "memory": "peak training memory",
    "graph_breaks": "torch.compile graph breaks",
}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("generate_b", "generation, batch "))


def _fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "n/a"
    if unit.startswith("fraction"):
        return f"{100 * value:.1f}%"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "count":
        return str(value)
    return f"{value:,.0f}"


def _verdict(row: dict) -> str:
    if row["met"] is None:
        return ""
    return "yes" if row["met"] else "**no**"


def _comparison(pair: str) -> str:
    if pair in PAIRS:
        return f"{pair} vs {PAIRS[pair].peer_name}"
    if pair.startswith("compile-") and pair != "compile-vs-eager":
        return f"ours {pair.removeprefix('compile-')}"
    return {
        "bf16-vs-fp32": "ours llama: bf16 autocast vs fp32",
        "compile-vs-eager": "ours llama: compiled vs eager",
        "packing": "ours llama: packed vs padded (Moby-Dick paragraphs)",
    }[pair]


def to_markdown(result: dict) -> str:
    m = result["machine"]
    s = result["settings"]
    peak = result["matmul_peak"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads; device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + f"; torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}; {m['date']}.",
        f"Settings: {'bf16 autocast' if s['bf16'] else 'fp32'}, attn_implementation={s['attn']}, "
        f"{'torch.compile' if s['compile'] else 'eager'}, median of {s['repeats']} interleaved samples after warm-up.",
        f"Load average at start {result['load_avg_start'][0]:.2f} / end {result['load_avg_end'][0]:.2f}; matmul peak "
        f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['n']}x{peak['n']} {peak['dtype']}); "
        f"run took {result['wall_seconds'] / 60:.1f} min.",
        "",
    ]
    for size_name, block in result["sizes"].items():
        d = block["dims"]
        lines += [
            f"### {size_name}: hidden {d['hidden']}, {d['layers']} layers, {d['heads']} heads, seq {d['seq']}, "
            f"batch {d['batch']}, vocab {d['vocab']}; generation: prompt {d['prompt']}, {d['new_tokens']} new tokens",
            "",
            "| comparison | metric | ours | peer | ours/peer | target | met | retaken samples | max foreign load |",
            "|---|---|---:|---:|---:|---|---|---:|---:|",
        ]
        for row in block["rows"]:
            metric = metric_label(row["metric"])
            unit = row["unit"]
            if row["metric"] in ("mfu", "graph_breaks"):
                ratio = "-"
            else:
                ratio = f"{row['ratio']:.2f}x" if isinstance(row["ratio"], float) else "-"
            if row["target"] is None:
                target = ""
            elif row["metric"] == "mfu":
                target = f"ours ≥ {100 * row['target']:.0f}%"
            elif row["metric"] == "graph_breaks":
                target = "0"
            else:
                target = ("≤ " if row["lower_is_better"] else "≥ ") + f"{row['target']:.2f}x"
            retaken = row.get("ours_discarded", 0) + row.get("peer_discarded", 0)
            loads = row.get("ours_foreign_load", []) + row.get("peer_foreign_load", [])
            lines.append(
                f"| {_comparison(row['pair'])} | {metric} ({unit}) | {_fmt(row['ours'], unit)} | "
                f"{_fmt(row['peer'], unit)} | {ratio} | {target} | {_verdict(row)} | "
                f"{retaken if 'ours_seconds' in row else ''} | {f'{max(loads):.2f}' if loads else ''} |"
            )
        for row in block["rows"]:
            if "peer_padding_fraction" in row:
                lines += [
                    "",
                    f"Packed vs padded: the same {row['documents']} paragraphs ({row['real_tokens']:,} real tokens); "
                    f"padded: {row['peer_batches']} batches of {d['batch']}, {100 * row['peer_padding_fraction']:.0f}% "
                    f"padding; packed: {row['ours_rows']} rows of {d['seq']}, no padding.",
                ]
        lines.append("")
    return "\n".join(lines)


# Issue 6's targets: (label, rows it covers as (pair, metric) predicates, the bound, "min" or "max" over them).
TARGET_SUMMARY = [
    ("training step >= 1.3x BertForMaskedLM", lambda r: r["pair"] == "encoder" and r["metric"] == "train", "min"),
    ("training step >= 1.1x GPT-2 / Llama", lambda r: r["pair"] in ("gpt2", "llama") and r["metric"] == "train", "min"),
    ("training step >= 1.1x T5 / BART", lambda r: r["pair"] in ("t5", "bart") and r["metric"] == "train", "min"),
    ("inference forward >= 1.0x (every peer)", lambda r: r["pair"] in PEERS and r["metric"] == "forward", "min"),
    ("generation, batch 8 >= 1.0x", lambda r: r["pair"] in PEERS and r["metric"] == "generate_b8", "min"),
    ("generation, batch 1 >= 1.5x", lambda r: r["pair"] in PEERS and r["metric"] == "generate_b1", "min"),
    (
        "never below 1.0x (training, forward, generation)",
        lambda r: r["pair"] in PEERS and (r["metric"] in ("train", "forward") or r["metric"].startswith("generate")),
        "min",
    ),
    ("peak training memory <= 0.9x", lambda r: r["pair"] in PEERS and r["metric"] == "memory", "max"),
    ("training MFU >= 60% (small)", lambda r: r["pair"] in PEERS and r["metric"] == "mfu", "mfu"),
    (
        "prefix LM within 5% of our decoder (training)",
        lambda r: r["pair"] == "prefix-lm" and r["metric"] == "train",
        "min",
    ),
    (
        "bf16 autocast >= 1.3x our fp32 (training)",
        lambda r: r["pair"] == "bf16-vs-fp32" and r["metric"] == "train",
        "min",
    ),
    ("torch.compile: zero graph breaks", lambda r: r["metric"] == "graph_breaks", "breaks"),
    ("torch.compile >= eager (training)", lambda r: r["pair"] == "compile-vs-eager", "min"),
    ("packing vs padding >= 1.5x non-pad tokens/s", lambda r: r["pair"] == "packing", "min"),
]
PEERS = ("encoder", "gpt2", "llama", "t5", "bart")
BOUNDS = {
    "training step >= 1.3x BertForMaskedLM": 1.3,
    "training step >= 1.1x GPT-2 / Llama": 1.1,
    "training step >= 1.1x T5 / BART": 1.1,
    "inference forward >= 1.0x (every peer)": 1.0,
    "generation, batch 8 >= 1.0x": 1.0,
    "generation, batch 1 >= 1.5x": 1.5,
    "never below 1.0x (training, forward, generation)": 1.0,
    "peak training memory <= 0.9x": 0.9,
    "training MFU >= 60% (small)": 0.6,
    "prefix LM within 5% of our decoder (training)": 0.95,
    "bf16 autocast >= 1.3x our fp32 (training)": 1.3,
    "torch.compile >= eager (training)": 1.0,
    "packing vs padding >= 1.5x non-pad tokens/s": 1.5,
}


def _loaded(row: dict, rows: list[dict], settings: dict) -> bool:
    """Whether a kept sample of this row (MFU: of its training row) saw more foreign load than allowed."""
    if row["metric"] == "mfu":
        row = next(r for r in rows if r["pair"] == row["pair"] and r["metric"] == "train")
    loads = row.get("ours_foreign_load", []) + row.get("peer_foreign_load", [])
    return bool(loads) and max(loads) > settings["max_foreign_load"]


def targets_summary(result: dict) -> str:
    """One line per issue target: the worst measured value per size, and whether it is met. Rows with a sample
    taken under more foreign load than --max-foreign-load are left out (they stay in the full table)."""
    sizes = list(result["sizes"])
    lines = [
        "| target | " + " | ".join(f"{name}: worst measured" for name in sizes) + " | met |",
        "|---|" + "---:|" * len(sizes) + "---|",
    ]
    for label, covers, how in TARGET_SUMMARY:
        cells, verdicts = [], []
        for size_name in sizes:
            all_rows = result["sizes"][size_name]["rows"]
            rows = [r for r in all_rows if covers(r) and not _loaded(r, all_rows, result["settings"])]
            if not rows:
                loaded = any(covers(r) for r in all_rows)
                cells.append("only under foreign load" if loaded else "not measured")
                continue
            if how == "breaks":
                values = [r["ours"] for r in rows]
                bad = [f"{r['pair'].removeprefix('compile-')}: {r['ours']}" for r in rows if r["ours"] != 0]
                cells.append(", ".join(bad) if bad else "0 (all four)")
                verdicts.append(not bad and all(isinstance(v, int) for v in values))
                continue
            if how == "mfu":
                worst = min(rows, key=lambda r: r["ours"])
                cells.append(f"{100 * worst['ours']:.1f}% ({worst['pair']})")
                if size_name == "small":
                    verdicts.append(worst["ours"] >= BOUNDS[label])
                continue
            key = (lambda r: r["ratio"]) if how == "min" else (lambda r: -r["ratio"])
            worst = min(rows, key=key)
            where = f"{worst['pair']}, {metric_label(worst['metric'])}"
            cells.append(f"{worst['ratio']:.2f}x ({where})")
            bound = BOUNDS[label]
            verdicts.append(worst["ratio"] >= bound if how == "min" else worst["ratio"] <= bound)
        met = "" if not verdicts else "yes" if all(verdicts) else "**no**"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {met} |")
    return "\n".join(lines)


def write_outputs(result: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    md_path.write_text(to_markdown(result) + "\n\n## Targets\n\n" + targets_summary(result) + "\n")
    return json_path, md_path


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(result: dict, readme: Path, note: str = "") -> None:
    """Replaces the measured section of the benchmarks README (between the two markers) with this run's tables."""
    text = readme.read_text()
    head, _, rest = text.partition(README_START)
    _, _, tail = rest.partition(README_END)
    section = "\n".join(
        [
            README_START,
            note,
            "",
            "### Targets",
            "",
            targets_summary(result),
            "",
            "### All measurements",
            "",
            to_markdown(result),
            README_END,
        ]
    )
    readme.write_text(head + section + tail)


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", choices=[*SIZES, "all"], default="tiny", help="all = tiny and small")
    parser.add_argument("--repeats", type=int, default=5, help="timed samples per side (median reported)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for results.{json,md}")
    parser.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=None, help="a subset of the comparisons")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--bf16", action="store_true", help="run every comparison under bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides; add compiled vs eager")
    parser.add_argument("--attn", default="sdpa", help="attn_implementation on both sides (sdpa, flex_attention, ...)")
    parser.add_argument("--max-foreign-load", type=float, default=0.3, help="cores others may use during a sample")
    parser.add_argument("--retries", type=int, default=3, help="retakes of a sample taken under foreign load")
    parser.add_argument("--update-readme", type=Path, help="write the tables into this README (between markers)")
    parser.add_argument("--readme-note", default="", help="a line put above the tables in the README")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--no-graph-breaks", action="store_true", help="skip the torch.compile checks (graph breaks, compiled vs eager)"
    )
    parser.add_argument("--no-packing", action="store_true", help="skip packing vs padding (Moby-Dick paragraphs)")
    parser.add_argument("--vocab", type=int, default=0, help="vocabulary size at every size (0: the size's own)")
    parser.add_argument(
        "--metrics", nargs="+", choices=Settings.metrics, default=Settings.metrics, help="of each comparison"
    )
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_worker:  # a fresh process measuring one model's peak training memory
        spec = json.loads(args.memory_worker)
        settings = Settings(**spec["settings"])
        if settings.threads:
            torch.set_num_threads(settings.threads)
        size = size_for(spec["size"], settings)
        print(json.dumps(peak_training_memory(spec["pair"], spec["side"], size, settings)))
        return
    settings = Settings(
        device=args.device,
        threads=args.threads,
        bf16=args.bf16,
        compile=args.compile,
        attn=args.attn,
        repeats=args.repeats,
        max_foreign_load=args.max_foreign_load,
        retries=args.retries,
        memory=not args.no_memory,
        graph_breaks=not args.no_graph_breaks,
        packing=not args.no_packing,
        metrics=tuple(args.metrics),
        vocab=args.vocab,
    )
    sizes = ["tiny", "small"] if args.size == "all" else [args.size]
    print(f"load average {os.getloadavg()}", flush=True)
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s, load {os.getloadavg()[0]:.2f}] {message}", flush=True)

    result = run_benchmark(
        sizes, settings, args.pairs, log=log, checkpoint=lambda partial: write_outputs(partial, args.out)
    )
    json_path, md_path = write_outputs(result, args.out)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    if args.update_readme:
        update_readme(result, args.update_readme, args.readme_note)
        print(f"updated {args.update_readme}")


if __name__ == "__main__":
    main()

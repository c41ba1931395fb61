"""torch.compile and static-cache generation, for the four configurations.

    graph breaks       `torch._dynamo.explain` captures every forward (padding, packed documents, recorded outputs)
                       as one graph
    training step      `torch.compile(fullgraph=True)` forward + backward give eager's loss and gradients
    static cache       `generate(cache_implementation="static")` gives the dynamic cache's tokens (greedy and beam,
                       left padding), and the prefix LM's prefix is honoured with it
    compiled decoding  generate's own compile of the decode step (static cache + `CompileConfig`) gives eager's tokens

Compiling on CPU is slow: inductor spends ~10-30 s per graph in the C++ compiler on 2 cores. So the models have one
layer, and the checks that need no generated code use the `aot_eager` backend (Dynamo capture + AOTAutograd, which
is where graph breaks and functionalisation problems show); inductor itself runs once, on the decoder's decode step.
"""

import copy

import pytest
import torch
from torch._dynamo.utils import counters
from transformers import CompileConfig
from transformers.cache_utils import DynamicCache, StaticCache

from fourfold.modeling import (
    FourfoldDecoderForCausalLM,
    FourfoldEncoderForMaskedLM,
    FourfoldPrefixLMForCausalLM,
    FourfoldSeq2SeqForConditionalGeneration,
)
from tests.conftest import tiny_config

MODELS = {
    "encoder": FourfoldEncoderForMaskedLM,
    "decoder": FourfoldDecoderForCausalLM,
    "prefix-lm": FourfoldPrefixLMForCausalLM,
    "seq2seq": FourfoldSeq2SeqForConditionalGeneration,
}
NEW_TOKENS = 5
GREEDY = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Every test compiles new model instances: start each from an empty Dynamo cache (no recompile limit reached)."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def build(architecture: str, num_layers: int = 1, **overrides):
    """One layer to compile fast; two where the prefix must matter to generated tokens (with one layer, continuation
    tokens read only embeddings of the prefix, which no mask changes)."""
    torch.manual_seed(0)
    overrides["num_hidden_layers"] = num_layers
    if architecture == "seq2seq":
        overrides["num_decoder_layers"] = num_layers
    # A large init keeps greedy decoding of a random model from repeating one token (see test_generation.py).
    return MODELS[architecture](tiny_config(architecture, initializer_range=0.3, **overrides)).eval()


def ids(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, 101, (batch, length), generator=torch.Generator().manual_seed(seed))


def training_inputs(architecture: str, case: str = "padding") -> dict:
    """A batch with labels: left padding (right padding for the encoders), or two packed documents per row."""
    input_ids = ids(2, 8, seed=1)
    if case == "padding":
        mask = torch.ones_like(input_ids)
        if architecture in ("encoder", "seq2seq"):
            mask[1, -2:] = 0
        else:
            mask[1, :2] = 0
        inputs = {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.masked_fill(mask == 0, -100)}
    else:  # packed: position ids restart at every document start
        positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4]]).expand(2, -1)
        inputs = {"input_ids": input_ids, "position_ids": positions, "labels": input_ids.clone()}
    if architecture == "prefix-lm":
        inputs["prefix_mask"] = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0, 0, 0]])
        inputs["labels"] = inputs["labels"].masked_fill(inputs["prefix_mask"] == 1, -100)
    if architecture == "seq2seq":
        inputs["labels"] = ids(2, 5, seed=2)
        if case == "packed":
            inputs["decoder_position_ids"] = torch.tensor([[0, 1, 0, 1, 2]]).expand(2, -1)
    return inputs


def left_padded_prompt() -> tuple[torch.Tensor, torch.Tensor]:
    prompt, mask = ids(2, 6, seed=3), torch.ones(2, 6, dtype=torch.long)
    prompt[1, :2], mask[1, :2] = 0, 0
    return prompt, mask


def compile_config(backend: str) -> CompileConfig:
    """What generate() compiles the decode step with. On CPU it compiles only when told to (`_compile_all_devices`);
    `mode="default"`: the default "reduce-overhead" is CUDA graphs."""
    config = CompileConfig(fullgraph=True, mode="default", backend=backend)
    config._compile_all_devices = True
    return config


# ---------------------------------------------------------------------------------------------------------------------
# Graph breaks and the compiled training step
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["padding", "packed"])
def test_forward_is_one_graph(architecture, case):
    explanation = torch._dynamo.explain(build(architecture))(**training_inputs(architecture, case))
    reasons = [reason.reason for reason in explanation.break_reasons]
    assert (explanation.graph_count, explanation.graph_break_count, reasons) == (1, 0, [])


def test_recorded_outputs_are_one_graph(architecture):
    """Hidden states and attention weights come from transformers' output hooks. Their first use installs the hooks
    under a lock, which Dynamo cannot trace (for every transformers model): a warm-up call in eager mode does it."""
    model = build(architecture, attn_implementation="eager")  # sdpa returns no attention weights
    inputs = {**training_inputs(architecture), "output_hidden_states": True, "output_attentions": True}
    expected = model(**inputs)  # installs the hooks
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(**inputs)
    names = ("hidden_states", "attentions")
    if architecture == "seq2seq":
        names = ("encoder_hidden_states", "encoder_attentions", "decoder_hidden_states", "decoder_attentions")
        names += ("cross_attentions",)
    for name in names:
        assert len(getattr(expected, name)) > 0, name
        torch.testing.assert_close(getattr(compiled, name), getattr(expected, name), msg=name)


def test_compiled_training_step_matches_eager(architecture):
    """`fullgraph=True` fails on any graph break, in the forward or the backward. Compiled models take the plain
    loss (modeling/loss.py), so the eager twin does too; chunked vs plain is tests/test_chunked_loss.py. Eager
    training takes FourfoldRMSNorm's one-pass backward and the compiled step torch's own (the same gradient, summed
    in another order), so gradients agree to float32 rounding: an absolute 1e-5 on gradients of order 1."""
    model = build(architecture, loss_chunk_size=0).train()
    twin = copy.deepcopy(model)
    inputs = training_inputs(architecture)
    compiled = torch.compile(twin, fullgraph=True, backend="aot_eager")
    compiled_loss = compiled(**inputs).loss
    compiled_loss.backward()
    loss = model(**inputs).loss
    loss.backward()
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-6, atol=1e-6)
    for (name, parameter), twin_parameter in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert (parameter.grad is None) == (twin_parameter.grad is None), name
        if parameter.grad is not None:
            torch.testing.assert_close(twin_parameter.grad, parameter.grad, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("check", ["token ids", "labels in the prefix"])
def test_input_checks_hold_in_eager_and_compiled_mode(check):
    """Checks that read tensor values are a clear ValueError in eager mode (on CPU), and an in-graph assert without a
    graph break when compiled."""
    if check == "token ids":
        model, inputs, message = build("decoder"), {"input_ids": torch.tensor([[5, 6, 101]])}, "outside the vocabulary"
    else:
        model, inputs, message = build("prefix-lm"), training_inputs("prefix-lm"), "prefix"
        inputs["labels"] = inputs["input_ids"]  # labelled prefix tokens
    with pytest.raises(ValueError, match=message):
        model(**inputs)
    with pytest.raises(RuntimeError, match=message):
        torch.compile(model, fullgraph=True, backend="aot_eager")(**inputs)


# ---------------------------------------------------------------------------------------------------------------------
# Static cache
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_beams", [1, 3], ids=["greedy", "beam"])
def test_static_cache_generates_as_the_dynamic_cache(generative_architecture, num_beams):
    model = build(generative_architecture, num_layers=2)
    prompt, mask = left_padded_prompt()
    kwargs = {"attention_mask": mask, "num_beams": num_beams, **GREEDY}
    dynamic = model.generate(prompt, **kwargs)
    static = model.generate(prompt, cache_implementation="static", **kwargs)
    assert len(set(dynamic[0, -NEW_TOKENS:].tolist())) > 1, "degenerate model: tokens all equal"
    torch.testing.assert_close(static, dynamic, rtol=0, atol=0)


@pytest.mark.parametrize("architecture", ["decoder", "prefix-lm"])
def test_static_cache_generates_from_inputs_embeds(architecture):
    model = build(architecture, num_layers=2)
    prompt, mask = left_padded_prompt()
    kwargs = {"attention_mask": mask, **GREEDY}
    from_ids = model.generate(prompt, **kwargs)[:, prompt.shape[1] :]
    embeds = model.get_input_embeddings()(prompt)
    torch.testing.assert_close(model.generate(inputs_embeds=embeds, cache_implementation="static", **kwargs), from_ids)


def test_static_cache_honours_the_prefix():
    """generate() builds the decode steps' 4D masks itself when the cache is static; they must carry the prefix. Each
    step's logits equal those of one no-cache forward with the same (partial, left-padded) prefix."""
    model = build("prefix-lm", num_layers=2)
    prompt, mask = left_padded_prompt()
    prefix = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]])
    out = model.generate(
        prompt,
        attention_mask=mask,
        prefix_mask=prefix,
        cache_implementation="static",
        output_logits=True,
        return_dict_in_generate=True,
        **GREEDY,
    )
    step_logits = torch.stack(out.logits, dim=1)  # (B, new, V)
    sequence = out.sequences[:, :-1]
    full_mask = torch.cat([mask, torch.ones(2, NEW_TOKENS - 1, dtype=torch.long)], dim=1)
    with torch.no_grad():
        full = model(sequence, attention_mask=full_mask, prefix_mask=prefix).logits[:, prompt.shape[1] - 1 :]
        causal = model(sequence, attention_mask=full_mask).logits[:, prompt.shape[1] - 1 :]
    torch.testing.assert_close(step_logits, full, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(step_logits, causal, atol=1e-3), "the prefix made no difference: test is vacuous"


# ---------------------------------------------------------------------------------------------------------------------
# Compiled decoding: generate() compiles the decode step of a static cache
# ---------------------------------------------------------------------------------------------------------------------


def compiled_decoding_matches_eager(architecture: str, backend: str) -> None:
    model = build(architecture, num_layers=2)
    prompt, mask = left_padded_prompt()
    kwargs = {"attention_mask": mask, "cache_implementation": "static", **GREEDY}
    eager = model.generate(prompt, **kwargs)
    compiled = model.generate(prompt, compile_config=compile_config(backend), **kwargs)
    assert counters["stats"]["unique_graphs"] >= 1, "generate() did not compile the decode step"
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)


def test_compiled_static_decoding_captures_one_graph(generative_architecture):
    """Dynamo + AOTAutograd over the decode step, fullgraph: any graph break would raise."""
    compiled_decoding_matches_eager(generative_architecture, "aot_eager")


@pytest.mark.parametrize("positions", ["rope", "absolute"])
def test_compiled_decode_step_reads_the_static_cache_length(positions):
    """A static cache counts its tokens in a tensor: the default position ids and the length check must use it
    without reading it on the host (a graph break). Decode steps without position ids, against a dynamic cache."""
    overrides = {"position_embedding_type": "absolute"} if positions == "absolute" else {}
    model = build("decoder", **overrides)
    prompt = ids(1, 6, seed=4)
    static = StaticCache(config=model.config, max_cache_len=16)
    dynamic = DynamicCache(config=model.config)
    decode = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        model(prompt, cache=static)
        model(prompt, cache=dynamic)
        for token in ids(1, 3, seed=5).unbind(dim=1):
            compiled = decode(token[:, None], cache=static).logits
            expected = model(token[:, None], cache=dynamic).logits
            torch.testing.assert_close(compiled, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_inductor_compiled_decoding_matches_eager():
    """The real thing, inductor's generated code, for the decoder. Vectorised C++ takes longer to compile; this
    checks correctness, so it is switched off."""
    with torch._inductor.config.patch({"cpp.vec_isa_ok": False}):
        compiled_decoding_matches_eager("decoder", "inductor")

"""The chunked training loss (modeling/loss.py) against the plain head + transformers' loss functions.

Reference: the same model with `loss_chunk_size=0`, which computes full logits and calls transformers'
`ForCausalLMLoss` / `ForMaskedLMLoss`. Loss and every parameter gradient must match, across chunk boundaries,
with ignored labels, `num_items_in_batch`, a logits bias (BART-like), untied heads and bf16 autocast.
"""

import copy

import pytest
import torch
from conftest import tiny_config
from parameterized import parameterized

from fourfold.modeling import (
    FourfoldDecoderForCausalLM,
    FourfoldEncoderForMaskedLM,
    FourfoldPrefixLMForCausalLM,
    FourfoldSeq2SeqForConditionalGeneration,
)
from fourfold.modeling.loss import chunked_lm_loss

LM_CLASSES = {
    "encoder": FourfoldEncoderForMaskedLM,
    "decoder": FourfoldDecoderForCausalLM,
    "prefix-lm": FourfoldPrefixLMForCausalLM,
    "seq2seq": FourfoldSeq2SeqForConditionalGeneration,
}


def _batch(architecture: str, vocab: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab, (3, 11), generator=generator)
    labels = input_ids.clone()
    if architecture == "encoder":  # labels only at "masked" positions
        labels[torch.rand(labels.shape, generator=generator) > 0.3] = -100
    else:
        labels[0, :4] = -100
    batch = {"input_ids": input_ids, "labels": labels}
    if architecture == "prefix-lm":
        batch["prefix_mask"] = (torch.arange(11) < 4).long().expand(3, -1)
        batch["labels"][:, :4] = -100
    if architecture == "seq2seq":
        batch["labels"] = labels[:, :7].contiguous()
    return batch


def _loss_and_grads(model, batch, **kwargs):
    model.zero_grad()
    outputs = model(**batch, **kwargs)
    outputs.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return outputs, grads


def _pair(architecture: str, **overrides):
    torch.manual_seed(0)
    chunked = LM_CLASSES[architecture](tiny_config(architecture, loss_chunk_size=5, **overrides)).train()
    plain = copy.deepcopy(chunked)
    plain.config.loss_chunk_size = 0
    return chunked, plain


CASES = [
    ("plain",),
    ("num_items_in_batch",),
    ("bias",),
    ("untied",),
]


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_chunked_loss_matches_plain_loss_and_gradients(architecture, case):
    overrides = {}
    if case == "bias":
        overrides["lm_head_bias"] = True
    if case == "untied" and architecture != "seq2seq":  # seq2seq always ties (its config refuses otherwise)
        overrides["tie_word_embeddings"] = False
    chunked, plain = _pair(architecture, **overrides)
    batch = _batch(architecture, chunked.config.vocab_size)
    kwargs = {"num_items_in_batch": torch.tensor(13)} if case == "num_items_in_batch" else {}

    chunked_out, chunked_grads = _loss_and_grads(chunked, batch, **kwargs)
    plain_out, plain_grads = _loss_and_grads(plain, batch, **kwargs)

    assert chunked_out.logits is None and plain_out.logits is not None
    torch.testing.assert_close(chunked_out.loss, plain_out.loss, rtol=1e-5, atol=1e-6)
    assert chunked_grads.keys() == plain_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(chunked_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_masked_lm_predicts_only_masked_positions():
    """Perturbing an unmasked position's head input must not change the chunked loss' gradient through the head:
    it is never projected. Checked by counting: the head's dense layer sees exactly the masked rows."""
    chunked, _ = _pair("encoder")
    batch = _batch("encoder", chunked.config.vocab_size)
    seen = []
    chunked.lm_head.dense.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    chunked(**batch)
    assert seen == [torch.Size([int((batch["labels"] != -100).sum()), chunked.config.hidden_size])]


def test_masked_lm_training_path_calls_the_heads_transform():
    """The sparse path runs the head's own `transform` (dense -> act -> norm) on the masked rows, and the result
    equals the head's full forward at those rows."""
    chunked, _ = _pair("encoder")
    batch = _batch("encoder", chunked.config.vocab_size)
    transformed = []
    original = chunked.lm_head.transform

    def recording(hidden):
        transformed.append(original(hidden))
        return transformed[-1]

    chunked.lm_head.transform = recording
    chunked(**batch)
    masked = batch["labels"] != -100
    assert len(transformed) == 1 and transformed[0].shape[0] == int(masked.sum())
    with torch.no_grad():
        hidden = chunked.model(input_ids=batch["input_ids"]).last_hidden_state
        torch.testing.assert_close(
            chunked.lm_head.decoder(transformed[0]), chunked.lm_head(hidden)[masked], rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("hook", ["forward", "forward_pre"])
def test_one_fast_path_predicate_a_hooked_module_keeps_its_own_call(hook):
    """`training_fast_path` decides for all three fast paths: a hook (forward or pre-forward) on the module a path
    would bypass sends it down the plain path: the MLP's down_proj, the LM head, the masked-LM head."""
    from fourfold.modeling.layers import training_fast_path

    def hooked(module):
        register = getattr(module, f"register_{hook}_hook")
        register(lambda *args: None)
        return module

    mlp_model, _ = _pair("decoder")
    down = mlp_model.model.layers[0].mlp.down_proj
    assert training_fast_path(mlp_model.model.layers[0].mlp, down)
    hooked(down)
    assert not training_fast_path(mlp_model.model.layers[0].mlp, down)

    decoder, _ = _pair("decoder")
    hooked(decoder.lm_head)
    assert decoder(**_batch("decoder", decoder.config.vocab_size)).logits is not None  # plain path: full logits

    encoder, _ = _pair("encoder")
    hooked(encoder.lm_head)
    assert encoder(**_batch("encoder", encoder.config.vocab_size)).logits is not None
    with torch.no_grad():
        assert not training_fast_path(decoder, torch.nn.Linear(2, 2))  # gradients off
    assert not training_fast_path(decoder.eval(), torch.nn.Linear(2, 2))  # not training
    assert not training_fast_path(decoder.train(), torch.nn.Identity())  # not a bare nn.Linear


def test_eval_and_no_grad_take_the_plain_path(generative_architecture):
    chunked, _ = _pair(generative_architecture)
    batch = _batch(generative_architecture, chunked.config.vocab_size)
    with torch.no_grad():
        assert chunked(**batch).logits is not None
    assert chunked.eval()(**batch).logits is not None


def test_bf16_autocast_close_to_plain():
    chunked, plain = _pair("decoder")
    batch = _batch("decoder", chunked.config.vocab_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked_out, chunked_grads = _loss_and_grads(chunked, batch)
        plain_out, plain_grads = _loss_and_grads(plain, batch)
    torch.testing.assert_close(chunked_out.loss, plain_out.loss, rtol=2e-2, atol=2e-2)
    for name in plain_grads:
        assert chunked_grads[name].dtype == plain_grads[name].dtype == torch.float32
        torch.testing.assert_close(chunked_grads[name], plain_grads[name], rtol=0.1, atol=2e-3, msg=name)


@parameterized.expand([(1,), (4,), (1000,)])
def test_chunk_size_does_not_change_the_result(chunk_size):
    """Against an independent formula: log-sum-exp minus the target logit, averaged over counted rows."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 17, bias=True)
    hidden = torch.randn(2, 5, 8, requires_grad=True)
    labels = torch.randint(0, 17, (2, 5))
    labels[1, 2] = -100
    loss = chunked_lm_loss(hidden, head, labels, shift=False, chunk_size=chunk_size)
    logits = head(hidden).view(-1, 17)
    flat = labels.view(-1)
    counted = flat != -100
    expected = (logits.logsumexp(-1) - logits.gather(-1, flat.clamp(min=0)[:, None]).squeeze(-1))[counted].mean()
    torch.testing.assert_close(loss, expected)
    (grad_ours,) = torch.autograd.grad(loss, hidden)
    (grad_ref,) = torch.autograd.grad(expected, hidden)
    torch.testing.assert_close(grad_ours, grad_ref)


def test_bad_chunk_size_is_refused():
    with pytest.raises(ValueError, match="loss_chunk_size"):
        tiny_config("decoder", loss_chunk_size=-1)


@pytest.mark.parametrize("architecture", ["encoder", "decoder"])
def test_peft_wrapped_head_takes_the_plain_path(architecture):
    """With the head in PEFT's `modules_to_save`, the trainable copy must be the one that predicts: the plain path
    (full logits) runs, and its loss moves when only the copy's weights change."""
    from peft import LoraConfig, get_peft_model

    model, _ = _pair(architecture)
    peft_model = get_peft_model(model, LoraConfig(target_modules=["q_proj"], modules_to_save=["lm_head"])).train()
    batch = _batch(architecture, model.config.vocab_size)
    before = peft_model(**batch)
    assert before.logits is not None
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "modules_to_save" in name and name.endswith("bias" if architecture == "encoder" else "weight"):
                parameter.add_(torch.randn_like(parameter))
    assert not torch.allclose(peft_model(**batch).loss, before.loss)

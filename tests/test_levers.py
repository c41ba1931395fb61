"""Pretraining levers as config options: QK-norm (per-head RMSNorm of queries and keys, checked against a hand
computation) and zero-initialised residual output projections (every block starts as the identity; a loaded
checkpoint keeps its weights)."""

import math

import pytest
import torch

from fourfold.configuration import get_config
from fourfold.modeling import FourfoldDecoderForCausalLM, FourfoldSeq2SeqForConditionalGeneration
from fourfold.modeling.layers import FourfoldAttention, FourfoldRotaryEmbedding


def test_qk_norm_normalises_each_heads_query_and_key_before_rope():
    config = get_config("decoder-tiny", hidden_size=16, num_attention_heads=2, num_key_value_heads=1, qk_norm=True)
    torch.manual_seed(0)
    attention = FourfoldAttention(config, 0, is_causal=True)
    with torch.no_grad():
        attention.q_norm.weight.uniform_(0.5, 1.5)
        attention.k_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(1, 5, 16)
    positions = torch.arange(5)[None]
    cos, sin = FourfoldRotaryEmbedding(config)(x, positions)
    output, _ = attention(x, None, (cos, sin))

    def rms(v, weight):  # by hand: v / sqrt(mean(v^2) + eps) * weight, over each head's 8 channels
        return v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + config.norm_eps) * weight

    def rope(v):
        half = v.shape[-1] // 2
        rotated = torch.cat((-v[..., half:], v[..., :half]), dim=-1)
        return v * cos[:, None] + rotated * sin[:, None]

    q = rms((x @ attention.q_proj.weight.T).view(1, 5, 2, 8), attention.q_norm.weight).transpose(1, 2)
    k = rms((x @ attention.k_proj.weight.T).view(1, 5, 1, 8), attention.k_norm.weight).transpose(1, 2)
    v = (x @ attention.v_proj.weight.T).view(1, 5, 1, 8).transpose(1, 2)
    scores = rope(q) @ rope(k).transpose(2, 3) / math.sqrt(8)  # (1, 2, 5, 5); the one kv head serves both
    scores = scores.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
    expected = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, 5, 16) @ attention.o_proj.weight.T
    torch.testing.assert_close(output, expected)
    plain = get_config("decoder-tiny", hidden_size=16, num_attention_heads=2, num_key_value_heads=1)
    assert FourfoldAttention(plain, 0, is_causal=True).q_norm is None


@pytest.mark.parametrize("field", ["qk_norm", "zero_init_residual"])
def test_the_switches_must_be_booleans(field):
    with pytest.raises(ValueError, match=field):
        get_config("decoder-tiny", **{field: "yes"})


def test_zero_init_residual_starts_every_block_as_the_identity_and_loads_trained_weights(tmp_path):
    torch.manual_seed(0)
    config = get_config("seq2seq-tiny", vocab_size=60, zero_init_residual=True, qk_norm=True)
    model = FourfoldSeq2SeqForConditionalGeneration(config).eval()
    zeroed = {n for n, p in model.named_parameters() if p.ndim == 2 and not p.any()}
    expected = {
        f"model.{stack}.layers.{i}.{name}.weight"
        for stack in ("encoder", "decoder")
        for i in range(2)
        for name in ("self_attn.o_proj", "mlp.down_proj", *(["cross_attn.o_proj"] if stack == "decoder" else []))
    }
    assert zeroed == expected
    ids = torch.randint(3, 60, (2, 7))
    out = model(input_ids=ids, decoder_input_ids=ids, output_hidden_states=True)
    stacks = ((out.encoder_hidden_states, model.model.encoder), (out.decoder_hidden_states, model.model.decoder))
    for states, stack in stacks:  # the embeddings, each block's output, the last one through the final norm
        torch.testing.assert_close(states[1], states[0])
        torch.testing.assert_close(states[2], stack.norm(states[0]))

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in expected:
                parameter.normal_()
    model.save_pretrained(tmp_path)
    loaded = FourfoldSeq2SeqForConditionalGeneration.from_pretrained(tmp_path)
    for (name, saved), (_, restored) in zip(model.named_parameters(), loaded.named_parameters(), strict=True):
        torch.testing.assert_close(restored, saved, msg=name)


def test_zero_init_off_keeps_the_normal_init():
    model = FourfoldDecoderForCausalLM(get_config("decoder-tiny", vocab_size=60))
    assert model.model.layers[0].self_attn.o_proj.weight.std() > 0.01

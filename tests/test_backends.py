"""Attention backends agree: eager (ours, the reference) vs sdpa vs flex attention, for all four configurations.

Each case runs one model under several `attn_implementation`s and compares outputs at real (non-padding) positions.
The eager backend's attention weights are also checked to be zero exactly where the mask forbids attention.
"""

import pytest
import torch

from fourfold.modeling import (
    FourfoldDecoderModel,
    FourfoldEncoderModel,
    FourfoldPrefixLMModel,
    FourfoldSeq2SeqModel,
)
from tests.conftest import tiny_config

BASE_MODELS = {
    "encoder": FourfoldEncoderModel,
    "decoder": FourfoldDecoderModel,
    "prefix-lm": FourfoldPrefixLMModel,
    "seq2seq": FourfoldSeq2SeqModel,
}
ATOL = 1e-5


def build(architecture: str, seed: int = 0):
    torch.manual_seed(seed)
    return BASE_MODELS[architecture](tiny_config(architecture, initializer_range=0.2)).eval()


def ids(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, 101, (batch, length), generator=torch.Generator().manual_seed(seed))


def t(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def case_inputs(architecture: str, case: str) -> tuple[dict, torch.Tensor]:
    """Model kwargs for a case, and which output positions (B, T) are specified (padding outputs are not)."""
    kwargs = {"input_ids": ids(2, 6, seed=1)}
    keep = torch.ones(2, 6, dtype=torch.bool)
    if architecture == "seq2seq":
        kwargs["decoder_input_ids"] = ids(2, 5, seed=2)
        keep = torch.ones(2, 5, dtype=torch.bool)
    if case == "padding":
        if architecture == "encoder":
            kwargs["attention_mask"] = t([[1] * 6, [1, 1, 1, 1, 0, 0]])
        elif architecture == "seq2seq":
            kwargs["attention_mask"] = t([[1] * 6, [1, 1, 1, 1, 0, 0]])
            kwargs["decoder_attention_mask"] = t([[1] * 5, [1, 1, 1, 0, 0]])
        else:
            kwargs["attention_mask"] = t([[1] * 6, [0, 0, 1, 1, 1, 1]])
        keep = (kwargs.get("decoder_attention_mask", kwargs["attention_mask"])).bool()
    elif case == "prefix":
        kwargs["prefix_mask"] = t([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    elif case == "prefix+padding":
        kwargs["attention_mask"] = t([[1] * 6, [0, 0, 1, 1, 1, 1]])
        kwargs["prefix_mask"] = t([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0]])
        keep = kwargs["attention_mask"].bool()
    elif case == "packed":
        kwargs["position_ids"] = t([[0, 1, 2, 0, 1, 2], [0, 1, 0, 1, 2, 3]])
        if architecture == "prefix-lm":
            kwargs["prefix_mask"] = t([[1, 1, 0, 1, 0, 0], [1, 0, 1, 1, 0, 0]])
        if architecture == "seq2seq":
            kwargs["decoder_position_ids"] = t([[0, 1, 0, 1, 2], [0, 1, 2, 0, 1]])
    return kwargs, keep


CASES = [
    (architecture, case)
    for architecture in BASE_MODELS
    for case in ("plain", "padding", "packed", "prefix", "prefix+padding")
    if architecture == "prefix-lm" or not case.startswith("prefix")
]


@torch.no_grad()
def outputs_under(model, implementations: tuple[str, ...], kwargs: dict) -> dict[str, torch.Tensor]:
    outputs = {}
    for implementation in implementations:
        model.set_attn_implementation(implementation)
        outputs[implementation] = model(**kwargs).last_hidden_state
    return outputs


@pytest.mark.parametrize("architecture, case", CASES)
def test_eager_and_sdpa_agree(architecture, case):
    model = build(architecture)
    kwargs, keep = case_inputs(architecture, case)
    out = outputs_under(model, ("eager", "sdpa"), kwargs)
    torch.testing.assert_close(out["sdpa"][keep], out["eager"][keep], rtol=0, atol=ATOL)


def test_the_cases_differ():
    """Guards the comparison above: padding, prefix and packing each change the output, so a backend that ignored
    them would be caught."""
    model = build("prefix-lm")
    plain = outputs_under(model, ("eager",), case_inputs("prefix-lm", "plain")[0])["eager"]
    for case in ("padding", "packed", "prefix", "prefix+padding"):
        kwargs, keep = case_inputs("prefix-lm", case)
        other = outputs_under(model, ("eager",), kwargs)["eager"]
        assert (other[keep] - plain[keep]).abs().max() > 1e-2, case


@pytest.fixture
def eager_flex(monkeypatch):
    """Flex attention without compilation: compiling it (and its block mask) on CPU takes tens of seconds per
    pattern. Uncompiled, flex runs its dense reference kernel over the same BlockMask, so the masks we build for flex
    (document and prefix blocks as mask functions) are still what is checked."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention", reason="this torch has no flex attention")
    import transformers.integrations.flex_attention as transformers_flex
    import transformers.masking_utils as masking_utils

    def uncompiled_attention(query, key, value, training=False, **kwargs):
        return flex.flex_attention(query, key, value, **kwargs)

    def uncompiled_block_mask(*args, _compile=False, **kwargs):
        return flex.create_block_mask(*args, _compile=False, **kwargs)

    monkeypatch.setattr(transformers_flex, "compile_friendly_flex_attention", uncompiled_attention)
    monkeypatch.setattr(masking_utils, "create_block_mask", uncompiled_block_mask)
    try:
        with torch.no_grad():
            q = torch.randn(1, 1, 4, 8)
            flex.flex_attention(q, q, q)
    except Exception as error:  # any failure means: not available here
        pytest.skip(f"flex attention does not run on this CPU build of torch: {error}")


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("architecture, case", CASES)
def test_eager_and_flex_attention_agree(architecture, case, eager_flex):
    model = build(architecture)
    kwargs, keep = case_inputs(architecture, case)
    out = outputs_under(model, ("eager", "flex_attention"), kwargs)
    torch.testing.assert_close(out["flex_attention"][keep], out["eager"][keep], rtol=0, atol=ATOL)


# ---------------------------------------------------------------------------------------------------------------------
# Eager attention weights: zero exactly where the mask forbids
# ---------------------------------------------------------------------------------------------------------------------


def assert_pattern(attentions: tuple, expected: list, layers: int) -> None:
    """Every layer's (B, heads, Q, K) weights are > 0 exactly where `expected` (B, Q, K) is 1."""
    expected = torch.tensor(expected, dtype=torch.bool)
    assert len(attentions) == layers
    for weights in attentions:
        visible = weights > 0
        assert torch.equal(visible, expected[:, None].expand_as(visible)), f"{visible[:, 0].int()}"
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))


def tril(n: int) -> list:
    return torch.ones(n, n, dtype=torch.long).tril().tolist()


@torch.no_grad()
def test_eager_attention_weights_encoder():
    model = build("encoder")
    model.set_attn_implementation("eager")
    out = model(ids(2, 4, seed=1), attention_mask=t([[1, 1, 1, 1], [1, 1, 1, 0]]), output_attentions=True)
    assert_pattern(out.attentions, [[[1, 1, 1, 1]] * 4, [[1, 1, 1, 0]] * 4], model.config.num_hidden_layers)


@torch.no_grad()
def test_eager_attention_weights_decoder():
    model = build("decoder")
    model.set_attn_implementation("eager")
    out = model(ids(2, 4, seed=1), output_attentions=True)
    assert_pattern(out.attentions, [tril(4)] * 2, model.config.num_hidden_layers)


@torch.no_grad()
def test_eager_attention_weights_prefix_lm():
    model = build("prefix-lm")
    model.set_attn_implementation("eager")
    out = model(ids(2, 5, seed=1), prefix_mask=t([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]), output_attentions=True)
    prefix_3 = [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    prefix_2 = [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert_pattern(out.attentions, [prefix_3, prefix_2], model.config.num_hidden_layers)


@torch.no_grad()
def test_eager_attention_weights_seq2seq():
    model = build("seq2seq")
    model.set_attn_implementation("eager")
    source_mask = t([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    out = model(
        ids(2, 5, seed=1), attention_mask=source_mask, decoder_input_ids=ids(2, 3, seed=2), output_attentions=True
    )
    encoder_layers, decoder_layers = model.config.num_hidden_layers, model.config.num_decoder_layers
    assert_pattern(out.encoder_attentions, [[[1] * 5] * 5, [[1, 1, 1, 0, 0]] * 5], encoder_layers)
    assert_pattern(out.decoder_attentions, [tril(3)] * 2, decoder_layers)
    assert_pattern(out.cross_attentions, [[[1] * 5] * 3, [[1, 1, 1, 0, 0]] * 3], decoder_layers)


# ---------------------------------------------------------------------------------------------------------------------
# Flash attention cannot express the prefix
# ---------------------------------------------------------------------------------------------------------------------


def test_flash_attention_refuses_a_prefix_mask():
    model = build("prefix-lm")
    model.config._attn_implementation = "flash_attention_2"  # flash is not installed: set it without loading it
    with pytest.raises(ValueError, match="prefix-LM mask"):
        model(ids(1, 4, seed=1), prefix_mask=t([[1, 1, 0, 0]]))

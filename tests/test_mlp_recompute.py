"""The MLP's training path (`_ActivatedDown`: activation recomputed in backward) against the plain formula.

Reference: `down_proj(act(gate_proj(x)) * up_proj(x))` / `down_proj(act(up_proj(x)))` written out with plain
modules and transformers' activations. Output and every gradient must match, for each MLP type, with biases, with
a frozen `down_proj` (LoRA-style) and under bf16 autocast; and the saved-tensor memory must actually shrink.
"""

import pytest
import torch
from conftest import tiny_config
from transformers.activations import ACT2FN

from fourfold.modeling.layers import FourfoldMLP

VARIANTS = {
    "swiglu": dict(mlp_type="gated", hidden_act="silu"),
    "geglu": dict(mlp_type="gated", hidden_act="gelu"),
    "plain-gelu-bias": dict(mlp_type="plain", hidden_act="gelu", mlp_bias=True),
    "plain-relu": dict(mlp_type="plain", hidden_act="relu"),
    "plain-gelu_new": dict(mlp_type="plain", hidden_act="gelu_new", mlp_bias=True),
}


def _mlp(variant: str) -> FourfoldMLP:
    torch.manual_seed(0)
    return FourfoldMLP(tiny_config("decoder", **VARIANTS[variant])).train()


def _reference(mlp: FourfoldMLP, x: torch.Tensor, act: str) -> torch.Tensor:
    act_fn = ACT2FN[act]  # transformers' own, gelu_new included
    if mlp.gate_proj is None:
        return mlp.down_proj(act_fn(mlp.up_proj(x)))
    return mlp.down_proj(act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))


def _grads(mlp, x, output):
    output.backward(torch.randn_like(output, generator=torch.Generator().manual_seed(1)))
    grads = {name: p.grad.clone() for name, p in mlp.named_parameters() if p.grad is not None}
    grads["x"] = x.grad.clone()
    mlp.zero_grad()
    x.grad = None
    return grads


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("frozen_down", [False, True], ids=["trained", "frozen-down"])
def test_recomputed_activation_matches_the_plain_formula(variant, frozen_down):
    mlp = _mlp(variant)
    mlp.down_proj.requires_grad_(not frozen_down)
    x = torch.randn(2, 5, mlp.up_proj.in_features, requires_grad=True)
    ours = mlp(x)
    assert ours.grad_fn.name().endswith("_ActivatedDownBackward"), ours.grad_fn.name()
    ours_grads = _grads(mlp, x, ours)
    expected = _reference(mlp, x, VARIANTS[variant]["hidden_act"])
    expected_grads = _grads(mlp, x, expected)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert ours_grads.keys() == expected_grads.keys()
    assert ("down_proj.weight" in ours_grads) != frozen_down
    for name in expected_grads:
        torch.testing.assert_close(ours_grads[name], expected_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_eval_and_no_grad_take_the_plain_path():
    mlp = _mlp("swiglu")
    x = torch.randn(2, 3, mlp.up_proj.in_features, requires_grad=True)
    assert "ActivatedDown" not in mlp.eval()(x).grad_fn.name()
    with torch.no_grad():
        assert mlp.train()(x).grad_fn is None


def test_bf16_autocast_matches_the_plain_formula():
    mlp = _mlp("swiglu")
    x = torch.randn(2, 5, mlp.up_proj.in_features, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = mlp(x)
        expected = _reference(mlp, x, "silu")
    assert ours.dtype == expected.dtype == torch.bfloat16
    ours_grads, expected_grads = _grads(mlp, x, ours), _grads(mlp, x, expected)
    torch.testing.assert_close(ours, expected)
    for name in expected_grads:
        assert ours_grads[name].dtype == expected_grads[name].dtype, name
        torch.testing.assert_close(ours_grads[name], expected_grads[name], rtol=2e-2, atol=1e-3, msg=name)


@pytest.mark.parametrize("variant", ["swiglu", "plain-gelu-bias"])
def test_fewer_bytes_are_saved_for_backward(variant):
    """Counted with saved-tensor hooks: the plain formula keeps the activation's output (and, gated, the product);
    ours keeps only `up` (and `gate`)."""

    def saved_bytes(fn) -> int:
        seen = {}

        def pack(tensor):
            seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            fn()
        return sum(seen.values())

    mlp = _mlp(variant)
    x = torch.randn(4, 64, mlp.up_proj.in_features, requires_grad=True)
    inner_bytes = 4 * 64 * mlp.up_proj.out_features * 4
    ours = saved_bytes(lambda: mlp(x))
    plain = saved_bytes(lambda: _reference(mlp, x, VARIANTS[variant]["hidden_act"]))
    fewer = 2 if variant == "swiglu" else 1  # act(gate) and the product / act(up)
    assert plain - ours == fewer * inner_bytes


def test_gelu_new_is_transformers_gelu_new():
    x = torch.linspace(-6, 6, 1001)
    torch.testing.assert_close(_mlp("plain-gelu_new").act_fn(x), ACT2FN["gelu_new"](x), rtol=0, atol=1e-6)

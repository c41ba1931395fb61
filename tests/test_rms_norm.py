"""`FourfoldRMSNorm`'s hand-written CPU training backward against torch's `nn.RMSNorm` differentiated by autograd.

Output, input gradient and weight gradient must match for the shapes the models use (hidden states, per-head queries
and keys), with a frozen weight; outside float32 CPU training it must be torch's own path, and every RMSNorm in the
models is ours.
"""

import pytest
import torch
from conftest import tiny_config
from torch import nn

from fourfold.modeling import FourfoldSeq2SeqForConditionalGeneration
from fourfold.modeling.layers import FourfoldRMSNorm, _RMSNormFunction


def _pair(width: int, eps: float | None = 1e-6) -> tuple[FourfoldRMSNorm, nn.RMSNorm]:
    ours, theirs = FourfoldRMSNorm(width, eps=eps), nn.RMSNorm(width, eps=eps)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(width, generator=torch.Generator().manual_seed(0)) + 1)
        theirs.weight.copy_(ours.weight)
    return ours, theirs


def _forward_backward(norm: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    x = x.clone().requires_grad_()
    output = norm(x)
    output.backward(grad)
    weight_grad = None if norm.weight.grad is None else norm.weight.grad.clone()
    norm.zero_grad(set_to_none=True)
    return output.detach(), x.grad, weight_grad


@pytest.mark.parametrize("shape", [(3, 7, 16), (2, 5, 4, 8)])  # hidden states; (B, T, heads, hd) of QK-norm
@pytest.mark.parametrize("eps", [1e-6, None])
def test_backward_matches_autograd_through_torchs_rms_norm(shape, eps):
    generator = torch.Generator().manual_seed(1)
    x, grad = torch.randn(shape, generator=generator) * 3, torch.randn(shape, generator=generator)
    ours, theirs = _pair(shape[-1], eps)
    results = [_forward_backward(norm, x, grad) for norm in (ours, theirs)]
    for mine, reference in zip(*results, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6)
    assert results[0][2].abs().sum() > 0


def test_the_hand_written_path_is_taken_in_training_only(monkeypatch):
    calls = []
    monkeypatch.setattr(_RMSNormFunction, "apply", lambda *args: calls.append(args) or args[0] * args[1])
    norm = FourfoldRMSNorm(4)
    x = torch.randn(2, 4, requires_grad=True)
    norm.train()(x)
    assert len(calls) == 1
    norm.eval()(x)
    with torch.no_grad():
        norm.train()(x)
    FourfoldRMSNorm(4).double().train()(x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        norm(x)
    assert len(calls) == 1  # evaluation, no grad, float64, autocast: torch's own


def test_a_frozen_weight_gets_no_gradient():
    ours, theirs = _pair(8)
    ours.weight.requires_grad_(False)
    theirs.weight.requires_grad_(False)
    x, grad = torch.randn(4, 8), torch.randn(4, 8)
    (out, x_grad, weight_grad), (ref_out, ref_x_grad, _) = (_forward_backward(n, x, grad) for n in (ours, theirs))
    assert weight_grad is None
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(x_grad, ref_x_grad)


def test_every_rms_norm_in_the_models_is_ours():
    model = FourfoldSeq2SeqForConditionalGeneration(tiny_config("seq2seq", qk_norm=True))
    norms = [m for m in model.modules() if isinstance(m, nn.RMSNorm)]
    assert len(norms) > 10 and all(type(m) is FourfoldRMSNorm for m in norms)

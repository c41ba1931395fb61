"""`optimizer: muon` (training/optimizers.py): Muon takes exactly the blocks' linear weights, AdamW the rest, and one
step of the combined optimiser moves every weight as torch's own Muon and AdamW do on those parameters: bitwise with
the Newton-Schulz iterations in bfloat16 (torch's dtype), and closer to the float64 iteration than torch in the
float32 that ours uses off CUDA."""

import copy
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from transformers import TrainingArguments

from fourfold.configuration import get_config
from fourfold.modeling import FourfoldDecoderForCausalLM, FourfoldEncoderForMaskedLM
from fourfold.training.optimizers import (
    Muon,
    MuonWithAdamW,
    _fused_adamw,
    newton_schulz,
    optimizer_cls_and_kwargs,
    split_parameters,
)

KW = dict(lr=0.02, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)


def _encoder():
    torch.manual_seed(0)
    return FourfoldEncoderForMaskedLM(get_config("encoder-tiny", vocab_size=50, hidden_size=32, num_hidden_layers=2))


def _named(model, params):
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = _encoder()
    muon, decay, no_decay = split_parameters(model)
    block_linears = {f"{n}.weight" for n, m in model.named_modules() if ".layers." in f".{n}." and type(m) is nn.Linear}
    assert len(block_linears) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert _named(model, muon) == block_linears
    assert all(p.ndim == 2 for p in muon)
    rest = _named(model, decay) | _named(model, no_decay)
    assert "model.embed_tokens.weight" in _named(model, decay)  # the embedding: AdamW
    assert any("norm" in n for n in _named(model, no_decay)) and all(p.ndim < 2 for p in no_decay)
    assert any(n.startswith("lm_head") or "head" in n for n in rest)  # the masked-LM head: AdamW
    every = {n for n, _ in model.named_parameters()}
    assert _named(model, muon) | rest == every and not _named(model, muon) & rest


def _two_steps(model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> None:
    for step in range(2):  # the second step reads the momentum buffers
        torch.manual_seed(step)
        batch = {"input_ids": torch.randint(5, 50, (2, 12))}
        batch["labels"] = batch["input_ids"].masked_fill(torch.rand(2, 12) > 0.3, -100)
        batch["labels"][0, 0] = 7
        model.train()
        model(**batch).loss.backward()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()


def _muon_with_adamw(model: nn.Module, newton_schulz_dtype: torch.dtype | None) -> MuonWithAdamW:
    optimizer_cls, kwargs = optimizer_cls_and_kwargs("muon", _args())
    optimizer = optimizer_cls()(model, **kwargs)
    optimizer.muon.newton_schulz_dtype = newton_schulz_dtype
    return optimizer


def test_steps_match_torch_muon_and_adamw_on_those_parameters():
    """With torch's bfloat16 iterations, two steps equal torch.optim.Muon + fused AdamW's bit for bit."""
    model = _encoder()
    reference = copy.deepcopy(model)
    optimizer = _muon_with_adamw(model, torch.bfloat16)
    assert isinstance(optimizer, MuonWithAdamW) and len(optimizer.param_groups) == 3
    assert optimizer.adamw.defaults["fused"]  # float32 on CPU: torch's fused kernel
    muon, decay, no_decay = split_parameters(reference)
    torch_muon = torch.optim.Muon(muon, lr=0.02, weight_decay=0.1, momentum=0.95, adjust_lr_fn="match_rms_adamw")
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    torch_adamw = torch.optim.AdamW(groups, lr=0.02, betas=(0.9, 0.95), eps=1e-8, fused=True)  # the Trainer's default
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _two_steps(model, [optimizer])
    _two_steps(reference, [torch_muon, torch_adamw])
    for (name, ours), (_, theirs) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        assert not torch.equal(ours, before[name]), name  # every trained weight moved
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=name)


def test_adamw_is_fused_only_where_torch_has_the_kernel():
    assert _fused_adamw([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))])
    assert _fused_adamw([nn.Parameter(torch.zeros(2, device="meta"))]) is None
    assert _fused_adamw([]) is None


def test_cpu_parameters_iterate_in_float32():
    models = {dtype: _encoder() for dtype in (None, torch.float32, torch.bfloat16)}
    for dtype, model in models.items():
        _two_steps(model, [_muon_with_adamw(model, dtype)])
    default, float32, bfloat16 = (dict(m.named_parameters()) for m in models.values())
    name = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(default[name], float32[name]) and not torch.equal(default[name], bfloat16[name])


def test_float32_iterations_are_closer_to_float64_than_bfloat16():
    coefficients, steps, eps = (3.4445, -4.7750, 2.0315), 5, 1e-7
    for shape in [(32, 96), (96, 32)]:  # wide and tall
        update = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        exact = newton_schulz(update.double(), coefficients, steps, eps, torch.float64)
        errors = {
            dtype: (newton_schulz(update, coefficients, steps, eps, dtype).double() - exact).abs().max()
            for dtype in (torch.float32, torch.bfloat16)
        }
        assert errors[torch.float32] < 1e-4 < errors[torch.bfloat16], errors
        assert newton_schulz(update, coefficients, steps, eps, torch.float32).shape == shape


def test_a_stack_is_orthogonalised_matrix_by_matrix():
    """Same-shaped matrices go through the iterations as one stack; each comes out as it would alone."""
    coefficients, steps, eps = (3.4445, -4.7750, 2.0315), 5, 1e-7
    for shape in [(3, 32, 96), (3, 96, 32)]:
        stack = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        stack[1] *= 50  # each matrix is normalised by its own norm, not the stack's
        together = newton_schulz(stack, coefficients, steps, eps, torch.float32)
        for matrix, alone in zip(stack, together, strict=True):
            torch.testing.assert_close(alone, newton_schulz(matrix, coefficients, steps, eps, torch.float32))


def test_muon_keeps_torchs_interface():
    weight = nn.Parameter(torch.zeros(4, 6))
    muon = Muon([weight], lr=0.1)
    assert isinstance(muon, torch.optim.Muon) and muon.defaults == torch.optim.Muon([weight], lr=0.1).defaults
    with pytest.raises(ValueError, match="2D"):
        Muon([nn.Parameter(torch.zeros(3))])


def test_scheduler_reaches_both_and_state_round_trips():
    model = FourfoldDecoderForCausalLM(get_config("decoder-tiny", vocab_size=40, hidden_size=32))
    optimizer_cls, kwargs = optimizer_cls_and_kwargs("muon", _args())
    optimizer = optimizer_cls()(model, **kwargs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    assert optimizer.muon.param_groups[0]["lr"] == optimizer.adamw.param_groups[0]["lr"] == 0.01
    model(input_ids=torch.randint(3, 40, (1, 8)), labels=torch.randint(3, 40, (1, 8))).loss.backward()
    optimizer.step()
    scheduler.step()
    state = copy.deepcopy(optimizer.state_dict())
    fresh = optimizer_cls()(model, **kwargs)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0] is fresh.muon.param_groups[0]  # the scheduler's groups are the inner ones
    torch.testing.assert_close(fresh.state_dict()["muon"]["state"][0], state["muon"]["state"][0])


def test_adamw_is_the_trainers_own_and_unknown_names_are_refused():
    assert optimizer_cls_and_kwargs("adamw", _args()) is None
    with pytest.raises(ValueError, match="optimizer='sgd'"):
        optimizer_cls_and_kwargs("sgd", _args())


def _args() -> TrainingArguments:
    return TrainingArguments(
        output_dir="unused", learning_rate=0.02, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, report_to="none"
    )


def test_a_shortened_run_decays_over_the_steps_it_has():
    from fourfold.training.optimizers import fit_decay_steps
    from fourfold.training.pretrain import check_arguments, parse_arguments

    recipe = Path(__file__).resolve().parents[1] / "configuration" / "pretrain-decoder-tiny.yaml"
    decay = yaml.safe_load(recipe.read_text())["lr_scheduler_kwargs"]["num_decay_steps"]
    assert decay > 20
    *args, _, training_args = parse_arguments([str(recipe), "--max_steps", "50", "--warmup_steps", "30"])
    check_arguments(*args, training_args)
    assert training_args.lr_scheduler_kwargs == {"num_decay_steps": 20}  # the recipe's, clipped to 50 - 30
    *_, full = parse_arguments([str(recipe)])
    fit_decay_steps(full)
    assert full.lr_scheduler_kwargs == {"num_decay_steps": decay}  # a full run keeps it

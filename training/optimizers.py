"""Optimisers the Trainer does not have: Muon for the blocks' matrices with AdamW for the rest (`optimizer: muon`).

Muon orthogonalises the momentum of each 2-D weight (Newton-Schulz iterations) before the update; it is meant for
the hidden matrices only, so here it takes every `nn.Linear` weight inside a `FourfoldBlock` (q, k, v, o,
cross-attention, MLP), and AdamW (torch's fused kernel where it has one, as the Trainer's default) takes the rest:
embeddings, norms, biases and the heads (LM head, masked-LM head, classifiers). Muon runs with
`adjust_lr_fn="match_rms_adamw"` (Moonshot's scaling), so one learning rate and weight decay serve both halves, and
the recipe's `learning_rate` / `weight_decay` / `adam_*` keys keep their meaning.

`Muon` is `torch.optim.Muon` (its arguments, defaults, parameter groups and state) with two changes, written by
hand because torch has no option for them: torch runs the Newton-Schulz iterations in bfloat16, which GPUs' tensor
cores are built for and most CPUs emulate; on this project's 2-core CPU that made the optimiser step 80 % of a tiny
model's training step (a 128x512 matrix: 70 ms in bfloat16, 2.7 ms in float32). Here the iterations run in bfloat16
on CUDA, as torch's, and in float32 elsewhere. And torch orthogonalises one matrix at a time; here same-shaped
matrices go through the iterations as one stack (batched matmuls), the same arithmetic with a fraction of the calls.

`MuonWithAdamW` is one `torch.optim.Optimizer` over the two inner optimisers' parameter groups (the same dicts), so
the Trainer's scheduler, gradient clipping, `zero_grad` and accelerate's wrapper see a single optimiser. The Trainer
builds it through `optimizer_cls_and_kwargs` with `MuonWithAdamWFactory` (a factory is called with the model).
"""

from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS: tuple[str, ...] = ("adamw", "muon")  # "adamw": the Trainer's own (`--optim`), as before


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """(Muon's matrices, AdamW's decayed, AdamW's undecayed) of the trainable parameters: Muon gets every
    `nn.Linear` weight inside a `FourfoldBlock`; of the rest, weights of 2 or more dimensions decay, biases and norm
    weights do not (the Trainer's own rule). A tied weight appears once."""
    from fourfold.modeling.layers import FourfoldBlock

    matrices = {
        id(module.weight)
        for block in model.modules()
        if isinstance(block, FourfoldBlock)
        for module in block.modules()
        if type(module) is nn.Linear and module.weight.requires_grad
    }
    muon, decay, no_decay, seen = [], [], [], set()
    for parameter in model.parameters():
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        (muon if id(parameter) in matrices else decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return muon, decay, no_decay


def newton_schulz(update: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype):
    """The quintic Newton-Schulz iteration torch.optim.Muon uses (same coefficients, same order of operations),
    computed in `dtype`: an approximate orthogonalisation U S' V^T of `update` = U S V^T, with S' near 1.

    `update` is one (rows, columns) matrix or a stack (n, rows, columns) of same-shaped ones, each orthogonalised on
    its own: one batched matmul per product for the whole stack instead of one small matmul per matrix."""
    a, b, c = coefficients
    tall = update.size(-2) > update.size(-1)
    wide = update.to(dtype)
    if tall:
        wide = wide.mT  # (..., rows <= columns): the Gram matrix below is the smaller one
    wide = wide / torch.linalg.vector_norm(wide, dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm <= 1
    addmm = torch.addmm if wide.ndim == 2 else torch.baddbmm
    for _ in range(steps):
        gram = wide @ wide.mT  # (..., rows, rows)
        wide = addmm(wide, addmm(gram, gram, gram, beta=b, alpha=c), wide, beta=a)
    return wide.mT if tall else wide


class Muon(torch.optim.Muon):
    """`torch.optim.Muon` whose Newton-Schulz iterations run in float32 off CUDA (see the module docstring).

    Args:
        params, lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn: torch's.
        newton_schulz_dtype: the iterations' dtype; None: bfloat16 for CUDA parameters, float32 for the rest.
    """

    def __init__(self, params, *args, newton_schulz_dtype: torch.dtype | None = None, **kwargs):
        super().__init__(params, *args, **kwargs)
        self.newton_schulz_dtype = newton_schulz_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = float(group["lr"]), group["momentum"]
            # Same-shaped matrices (every layer's q, every layer's up, ...) are orthogonalised as one stack: a tiny
            # model's step is otherwise dominated by the per-matrix overhead of ns_steps x 3 small matmuls.
            stacks: dict[tuple, list[tuple[nn.Parameter, torch.Tensor]]] = {}
            for param in group["params"]:
                if param.grad is None:
                    continue
                buffer = self.state[param].setdefault("momentum_buffer", torch.zeros_like(param.grad))
                buffer.lerp_(param.grad, 1 - momentum)
                update = param.grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                stacks.setdefault((param.shape, param.dtype, param.device), []).append((param, update))
            for (shape, _, device), pairs in stacks.items():
                dtype = self.newton_schulz_dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
                updates = torch.stack([update for _, update in pairs])  # (n, rows, columns)
                updates = newton_schulz(updates, group["ns_coefficients"], group["ns_steps"], group["eps"], dtype)
                for (param, _), update in zip(pairs, updates, strict=True):
                    param.mul_(1 - lr * group["weight_decay"])
                    param.add_(update, alpha=-lr * lr_ratio(group["adjust_lr_fn"], shape))
        return loss


def lr_ratio(adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's learning-rate scale for a (rows, columns) matrix."""
    rows, columns = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, columns))  # the update's RMS matches AdamW's (Moonshot)
    return math.sqrt(max(1, rows / columns))  # None / "original" (Keller Jordan's)


class MuonWithAdamW(torch.optim.Optimizer):
    """`Muon` and `torch.optim.AdamW` stepped together; `param_groups` are theirs (Muon's first).

    Args:
        muon: the optimiser of the blocks' matrices.
        adamw: the optimiser of every other parameter.
    """

    def __init__(self, muon: Muon, adamw: torch.optim.AdamW):
        self.muon, self.adamw = muon, adamw
        super().__init__([*muon.param_groups, *adamw.param_groups], {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        # Loading replaces the inner group dicts: share the new ones again (the scheduler reads `param_groups`).
        self.param_groups = [*self.muon.param_groups, *self.adamw.param_groups]


def muon_with_adamw(
    model: nn.Module,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.95,
) -> MuonWithAdamW:
    """Muon (momentum `momentum`, Nesterov, RMS matched to AdamW) on the blocks' matrices, AdamW on the rest."""
    muon_params, decay, no_decay = split_parameters(model)
    if not muon_params:
        raise ValueError("optimizer='muon' found no FourfoldBlock linear weights to train: use optimizer='adamw'.")
    muon = Muon(muon_params, lr=lr, weight_decay=weight_decay, momentum=momentum, adjust_lr_fn="match_rms_adamw")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    adamw = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=lr, betas=betas, eps=eps, fused=_fused_adamw(decay + no_decay)
    )
    return MuonWithAdamW(muon, adamw)


def _fused_adamw(params: list[nn.Parameter]) -> bool | None:
    """True where torch's fused AdamW kernel takes every parameter (float tensors on CPU or CUDA), as the Trainer's
    default `adamw_torch_fused` does: one kernel call per tensor instead of a dozen elementwise ops (on CPU, a tiny
    model's AdamW step 2.3 -> 0.6 ms). None (torch's own choice) otherwise."""
    kinds = {(p.device.type, p.dtype) for p in params}
    floats = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    return True if kinds and all(d in ("cpu", "cuda") and t in floats for d, t in kinds) else None


class MuonWithAdamWFactory:
    """What `Trainer(optimizer_cls_and_kwargs=(MuonWithAdamWFactory, kwargs))` instantiates and calls with the
    model (transformers' optimiser-factory protocol): `muon_with_adamw(model, **kwargs)`."""

    def __call__(self, model: nn.Module, **kwargs) -> MuonWithAdamW:
        return muon_with_adamw(model, **kwargs)


def optimizer_cls_and_kwargs(name: str, training_args) -> tuple[type, dict] | None:
    """The Trainer's `optimizer_cls_and_kwargs` for `name` (one of `OPTIMIZERS`); None: the Trainer's own optimiser
    (`--optim`). Muon reads the learning rate, weight decay and Adam settings of `training_args`."""
    if name == "adamw":
        return None
    if name != "muon":
        raise ValueError(f"optimizer={name!r} is not one of {', '.join(OPTIMIZERS)}.")
    kwargs = dict(
        lr=training_args.learning_rate,
        weight_decay=training_args.weight_decay,
        betas=(training_args.adam_beta1, training_args.adam_beta2),
        eps=training_args.adam_epsilon,
    )
    return MuonWithAdamWFactory, kwargs


def fit_decay_steps(training_args) -> None:
    """`lr_scheduler_type: warmup_stable_decay` with `lr_scheduler_kwargs: {num_decay_steps: N}`: N is clipped to the
    steps after warmup, so a run shortened with `--max_steps` decays over what is left instead of starting its
    decay before its first step (transformers would make the stable phase negative)."""
    kwargs = training_args.lr_scheduler_kwargs
    if (
        training_args.lr_scheduler_type == "warmup_stable_decay"
        and isinstance(kwargs, dict)
        and "num_decay_steps" in kwargs
        and training_args.max_steps > 0
    ):
        after_warmup = training_args.max_steps - training_args.get_warmup_steps(training_args.max_steps)
        kwargs["num_decay_steps"] = max(0, min(int(kwargs["num_decay_steps"]), after_warmup))

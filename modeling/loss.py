"""Language-modeling loss without full-vocabulary logits: the LM head and cross-entropy, a chunk of tokens at a time.

A training step of a plain LM head keeps (tokens, vocab) logits, their log-softmax and its gradient alive at once:
for 4 x 512 tokens and a 32k vocabulary that is three 256 MB tensors. `chunked_lm_loss` projects `chunk_size`
tokens, takes their cross-entropy and, in the same pass, the gradient of that loss with respect to the hidden
states, the head's weight and its bias, so only one (chunk, vocab) block ever exists. The backward pass then only
scales the stored gradients. Neither transformers nor torch ships a fused linear + cross-entropy; this is written by
hand (the same idea as Liger-Kernel's fused linear cross-entropy, in plain torch).

The heads use it only in training (`model.train()` with gradients on, labels given, `config.loss_chunk_size > 0`)
and then return `logits=None`; evaluation and generation take the plain path and return logits as usual.
"""

import torch
from torch import nn

from .layers import training_fast_path


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Sum over non-ignored rows of cross_entropy(hidden @ weight.T + bias, labels); gradients made in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size: int, ignore_index: int):
        device_type = hidden.device.type
        # Under autocast, do the matmuls in the autocast dtype as nn.Linear would; softmax and sums stay in float32.
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
        with torch.autocast(device_type, enabled=False):
            w = weight.to(dtype)
            loss = hidden.new_zeros((), dtype=torch.float32)
            grad_hidden = torch.empty_like(hidden)
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
            grad_bias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and bias.requires_grad else None
            for start in range(0, hidden.shape[0], chunk_size):
                h = hidden[start : start + chunk_size].to(dtype)  # (n, d)
                target = labels[start : start + chunk_size]  # (n,)
                counted = (target != ignore_index).unsqueeze(-1)  # (n, 1)
                target = target.masked_fill(~counted.squeeze(-1), 0).unsqueeze(-1)  # (n, 1), any valid id
                logits = (h @ w.T).float()  # (n, V)
                if bias is not None:
                    logits += bias.float()
                # One exp per logit: the softmax's numerator gives both log Z (its sum) and the gradient,
                # d(loss)/d(logits) = softmax - one_hot(target), zero on ignored rows; built in the logits' memory.
                picked = logits.gather(-1, target)  # (n, 1)
                top = logits.amax(-1, keepdim=True)  # (n, 1)
                grad = logits.sub_(top).exp_()  # (n, V), exp(logit - top)
                total = grad.sum(-1, keepdim=True)  # (n, 1)
                loss += ((top + total.log() - picked) * counted).sum()  # log Z - picked logit
                grad.mul_(counted / total)
                grad.scatter_add_(-1, target, -counted.to(grad.dtype))
                grad = grad.to(dtype)
                grad_hidden[start : start + chunk_size] = grad @ w
                if grad_weight is not None and dtype == torch.float32:
                    grad_weight.addmm_(grad.T, h)
                elif grad_weight is not None:
                    grad_weight += grad.T @ h
                if grad_bias is not None:
                    grad_bias += grad.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        grad_hidden = grad_hidden * grad_loss.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_loss).to(weight_dtype)
        if grad_bias is not None:
            grad_bias = (grad_bias * grad_loss).to(bias_dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None


def chunked_lm_loss(
    hidden_states: torch.Tensor,
    head: nn.Linear,
    labels: torch.Tensor,
    *,
    shift: bool,
    chunk_size: int,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """Cross-entropy of `head(hidden_states)` against `labels`, equal to transformers' `ForCausalLMLoss`
    (`shift=True`: position t predicts label t + 1) or `ForMaskedLMLoss` (`shift=False`), including their
    `num_items_in_batch` scaling (sum / count) for gradient accumulation; the mean over counted tokens otherwise.

    Args:
        hidden_states: (..., hidden) final hidden states, aligned with `labels` (..., length).
        head: the output projection (its weight and bias are read directly; it is not called).
        chunk_size: tokens per chunk; the largest tensor made is (chunk_size, vocab) in float32.
    """
    if shift:
        if shift_labels is None:  # pad, then drop the first label: the last position predicts nothing
            shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
        labels = shift_labels
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])  # (B*T, d)
    labels = labels.reshape(-1).to(hidden.device)  # (B*T,)
    total = _ChunkedLinearCrossEntropy.apply(hidden, head.weight, head.bias, labels, chunk_size, ignore_index)
    if num_items_in_batch is None:
        return total / (labels != ignore_index).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def use_chunked_loss(model: nn.Module, head: nn.Module, labels: torch.Tensor | None, logits_to_keep=0) -> bool:
    """The chunked loss replaces the plain head + loss only when nothing else needs the logits or the head's call:
    labels given, chunking on, all positions kept, and the training fast path (`layers.training_fast_path`: training
    with gradients, not compiling, a bare `nn.Linear` head without hooks)."""
    return (
        labels is not None
        and model.config.loss_chunk_size > 0
        and isinstance(logits_to_keep, int)
        and logits_to_keep == 0
        and training_fast_path(model, head)
    )

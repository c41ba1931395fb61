"""The building blocks shared by all four configurations: norm, rotary embedding, attention, MLP, block.

One attention module serves self- and cross-attention; one block serves every stack. The block's only structural
switch is whether it has cross-attention (the seq2seq decoder). Who attends to whom is not decided here: the stack
builds the mask once (see `masks.py`) and every layer consumes it. Each attention module still sets `is_causal`
explicitly, because sdpa falls back on that flag when the mask is `None`.

Attention runs through transformers' attention-function registry (`config._attn_implementation`: eager, sdpa,
flex_attention, flash_attention_2, ...); the eager function is ours, since the registry has no generic one.

`training_fast_path` is the one condition under which a hand-written training path (the MLP's recomputed
activation here, the chunked LM loss in `loss.py`, the masked-LM head's masked-only projection) replaces plain calls;
`FourfoldRMSNorm` adds a backward pass torch lacks on CPU.
"""

from collections.abc import Callable

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_fourfold import FourfoldConfig


def training_fast_path(owner: nn.Module, bypassed: nn.Module, plain_type: type[nn.Module] = nn.Linear) -> bool:
    """Whether a hand-written training path may replace the call of `bypassed` (reading its weights directly):
    `owner` is training with gradients on, torch.compile is not tracing (inductor optimises the plain path itself),
    and `bypassed` is exactly `plain_type` (a bare `nn.Linear` by default) with no forward hooks, so nothing else
    needs its call (a PEFT-wrapped or hooked module keeps its own forward)."""
    return (
        owner.training
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and type(bypassed) is plain_type
        and not bypassed._forward_hooks
        and not bypassed._forward_pre_hooks
    )


def make_norm(config: FourfoldConfig) -> nn.Module:
    """The configured normalisation layer over `hidden_size`."""
    if config.norm_type == "rmsnorm":
        return FourfoldRMSNorm(config.hidden_size, eps=config.norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps)


class FourfoldRMSNorm(nn.RMSNorm):
    """`nn.RMSNorm` (the same parameter, the same checkpoint key, the same forward) with a hand-written backward
    for float32 CPU training: torch has a fused RMSNorm backward only on GPUs, and on CPU autograd differentiates it
    op by op (pow, mean, rsqrt and their products), twice the time of `_RMSNormFunction`'s one pass on a (8, 128, 64)
    input. Everywhere else (GPU, other dtypes, autocast, evaluation, torch.compile) it is torch's own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.training
            and torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight is not None
            and self.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
        ):
            eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
            return _RMSNormFunction.apply(x, self.weight, eps)
        return super().forward(x)


class _RMSNormFunction(torch.autograd.Function):
    """y = n * weight, n = x * rstd, rstd = 1 / sqrt(mean(x^2) + eps) over the last dimension; saves n and rstd.

    Backward, with h = grad * weight:  dx = rstd * (h - n * mean(h * n)),  dweight = sum(grad * n).
    """

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        rstd = torch.rsqrt(x.square().mean(-1, keepdim=True).add_(eps))  # (..., 1)
        normed = x * rstd
        ctx.save_for_backward(normed, rstd, weight)  # n rather than x: backward need not recompute it
        return normed * weight

    @staticmethod
    def backward(ctx, grad_output):
        normed, rstd, weight = ctx.saved_tensors
        scaled = grad_output * weight
        grad_x = torch.addcmul(scaled, normed, (scaled * normed).mean(-1, keepdim=True), value=-1).mul_(rstd)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (grad_output * normed).reshape(-1, normed.shape[-1]).sum(0)
        return grad_x, grad_weight, None


class FourfoldRotaryEmbedding(nn.Module):
    """Rotary position embedding: the (cos, sin) tables for the given positions, shared by all layers.

    The inverse frequencies come from `config.rope_parameters` ("default", or any scaled type transformers knows:
    linear, dynamic, yarn, llama3, ...). They are a non-persistent buffer (not in checkpoints); transformers'
    default `_init_weights` recomputes it through `compute_default_rope_parameters` / `ROPE_INIT_FUNCTIONS`.
    """

    def __init__(self, config: FourfoldConfig):
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        self.max_seq_len_cached = self.original_max_seq_len = config.max_position_embeddings
        rope_init_fn = self.compute_default_rope_parameters
        if self.rope_type != "default":
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: FourfoldConfig, **kwargs) -> tuple[torch.Tensor, float]:
        base, dim = config.rope_parameters["rope_theta"], config.head_dim
        return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)), 1.0

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(x.device)  # (B, T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hd)
        return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, hd): broadcast over heads
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention: softmax(q k^T * scaling + mask) v. Returns (B, T, nh, hd) and the weights."""
    key = key.repeat_interleave(module.num_key_value_groups, dim=1)  # (B, nkv, S, hd) -> (B, nh, S, hd)
    value = value.repeat_interleave(module.num_key_value_groups, dim=1)
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, nh, T, S)
    if attention_mask is not None:
        weights = weights + attention_mask
    elif module.is_causal and query.shape[2] > 1:  # the mask is None only when the module's own flag suffices
        causal = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool, device=query.device).tril(
            key.shape[2] - query.shape[2]
        )
        weights = weights.masked_fill(~causal, torch.finfo(weights.dtype).min)
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, nh, T, hd) -> (B, T, nh, hd)
    return output, weights


class FourfoldAttention(nn.Module):
    """Multi-head attention with grouped-query support, for self- or cross-attention.

    Args:
        config: the model config.
        layer_idx: index of the layer, for the KV cache.
        is_causal: whether the pattern is causal when no mask is given (sdpa's fast path). Always explicit.
        is_cross_attention: keys and values come from `key_value_states` (the final encoder layer) and are cached
            once per generation in the `EncoderDecoderCache`.
    """

    def __init__(self, config: FourfoldConfig, layer_idx: int, *, is_causal: bool, is_cross_attention: bool = False):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.is_causal = is_causal
        self.is_cross_attention = is_cross_attention
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout

        q_size, kv_size = config.num_attention_heads * self.head_dim, config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_size, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=config.attention_bias)
        # QK-norm: per-head RMSNorm of queries and keys (over hd), before the rotary embedding.
        self.q_norm = FourfoldRMSNorm(self.head_dim, eps=config.norm_eps) if config.qk_norm else None
        self.k_norm = FourfoldRMSNorm(self.head_dim, eps=config.norm_eps) if config.qk_norm else None

    def _heads(self, projection: nn.Linear, states: torch.Tensor, norm: nn.Module | None = None) -> torch.Tensor:
        batch, length, _ = states.shape
        heads = projection(states).view(batch, length, -1, self.head_dim)  # (B, T, n, hd)
        return (heads if norm is None else norm(heads)).transpose(1, 2)  # (B, n, T, hd)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        key_value_states: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = hidden_states.shape
        query = self._heads(self.q_proj, hidden_states, self.q_norm)  # (B, nh, T, hd)
        if self.is_cross_attention:
            key, value = self._cross_key_values(key_value_states, cache)  # (B, nkv, S, hd)
        else:
            key, value = self._heads(self.k_proj, hidden_states, self.k_norm), self._heads(self.v_proj, hidden_states)
            if position_embeddings is not None:
                query, key = apply_rotary(query, key, *position_embeddings)
            if cache is not None:
                self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
                key, value = self_cache.update(key, value, self.layer_idx)

        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        output = output.reshape(batch, length, -1)  # (B, T, nh, hd) -> (B, T, nh*hd)
        return self.o_proj(output), weights

    def _cross_key_values(self, encoder_states: torch.Tensor, cache: Cache | None):
        """Keys/values of the encoder output: projected once, then read from the cross-attention cache."""
        cross_cache = cache.cross_attention_cache if isinstance(cache, EncoderDecoderCache) else None
        if cross_cache is not None and cache.is_updated.get(self.layer_idx):
            layer = cross_cache.layers[self.layer_idx]
            return layer.keys, layer.values
        key, value = self._heads(self.k_proj, encoder_states, self.k_norm), self._heads(self.v_proj, encoder_states)
        if cross_cache is not None:
            key, value = cross_cache.update(key, value, self.layer_idx)
            cache.is_updated[self.layer_idx] = True
        return key, value


class FourfoldMLP(nn.Module):
    """Position-wise feed-forward: gated `down(act(gate(x)) * up(x))` (SwiGLU, GeGLU) or plain `down(act(up(x)))`.

    In training (on `training_fast_path`), the activation and `down_proj` run as one autograd function
    (`_ActivatedDown`) that keeps only the activation's inputs for backward and recomputes the activation there: one
    to two fewer (tokens, intermediate) tensors per layer held between forward and backward, for one extra
    elementwise pass.
    """

    def __init__(self, config: FourfoldConfig):
        super().__init__()
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(hidden, inner, bias=bias) if config.mlp_type == "gated" else None
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)
        # transformers' "gelu_new" is a chain of Python ops; torch's tanh GELU is the same function in one kernel.
        self.act_fn = _gelu_tanh if config.hidden_act == "gelu_new" else ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up_proj(x)
        gate = None if self.gate_proj is None else self.gate_proj(x)
        if training_fast_path(self, self.down_proj):  # `_ActivatedDown` replaces down_proj's call
            return _ActivatedDown.apply(self.act_fn, up, gate, self.down_proj.weight, self.down_proj.bias)
        return self.down_proj(_activate(self.act_fn, up, gate))


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.gelu(x, approximate="tanh")


def _activate(act_fn: Callable, up: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return act_fn(up) if gate is None else act_fn(gate) * up


class _ActivatedDown(torch.autograd.Function):
    """`linear(activate(up, gate), weight, bias)`, saving `up` and `gate` rather than the activation's output.

    Written by hand (torch's checkpointing would recompute the matmul too): the backward pass recomputes only the
    elementwise activation, for `down_proj`'s weight gradient and the activation's own backward. Autocast state is
    carried from forward to backward, so the matmuls run in the same dtype both ways.
    """

    @staticmethod
    def forward(ctx, act_fn, up, gate, weight, bias):
        device_type = up.device.type
        ctx.autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        ctx.act_fn = act_fn
        ctx.save_for_backward(up, gate, weight)
        return nn.functional.linear(_activate(act_fn, up, gate), weight, bias)

    @staticmethod
    def backward(ctx, grad_output):
        up, gate, weight = ctx.saved_tensors
        needs_up, needs_gate, needs_weight, needs_bias = ctx.needs_input_grad[1:5]
        device_type, autocast_enabled, autocast_dtype = ctx.autocast
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_enabled), torch.enable_grad():
            up = up.detach().requires_grad_(needs_up)
            gate = None if gate is None else gate.detach().requires_grad_(needs_gate)
            activated = _activate(ctx.act_fn, up, gate)  # (..., inner), recomputed
            grad_activated = grad_output @ weight  # (..., hidden) @ (hidden, inner) -> (..., inner)
            flat_grad = grad_output.reshape(-1, grad_output.shape[-1])  # (N, hidden)
            grad_weight = grad_bias = None
            if needs_weight:  # (hidden, N) @ (N, inner)
                grad_weight = (flat_grad.T @ activated.detach().reshape(-1, activated.shape[-1])).to(weight.dtype)
            if needs_bias:
                grad_bias = flat_grad.sum(0).to(weight.dtype)
            inputs = [t for t in (up, gate) if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad(activated, inputs, grad_activated) if inputs else ())
        grad_up = next(grads) if needs_up else None
        grad_gate = next(grads) if gate is not None and needs_gate else None
        return None, grad_up, grad_gate, grad_weight, grad_bias


class FourfoldBlock(GradientCheckpointingLayer):
    """Self-attention, optional cross-attention, MLP; each a residual sublayer.

    Pre-norm:  x = x + f(norm(x))     (GPT-2, Llama; the stack adds a final norm)
    Post-norm: x = norm(x + f(x))     (BERT, BART)

    Args:
        config: the model config.
        layer_idx: index of the layer, for the KV cache.
        is_causal: passed to self-attention (see `FourfoldAttention`).
        has_cross_attention: add cross-attention over the encoder output (the seq2seq decoder).
    """

    def __init__(self, config: FourfoldConfig, layer_idx: int, *, is_causal: bool, has_cross_attention: bool = False):
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.self_attn = FourfoldAttention(config, layer_idx, is_causal=is_causal)
        self.self_attn_norm = make_norm(config)
        self.cross_attn = self.cross_attn_norm = None
        if has_cross_attention:
            self.cross_attn = FourfoldAttention(config, layer_idx, is_causal=False, is_cross_attention=True)
            self.cross_attn_norm = make_norm(config)
        self.mlp = FourfoldMLP(config)
        self.mlp_norm = make_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,  # positional, so checkpointing propagates its gradient
        *,
        attention_mask: torch.Tensor | None = None,
        cross_attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attn_input = self.self_attn_norm(hidden_states) if self.pre_norm else hidden_states
        attn_output, _ = self.self_attn(attn_input, attention_mask, position_embeddings, cache, **kwargs)
        hidden_states = self._residual(hidden_states, attn_output, self.self_attn_norm)

        if self.cross_attn is not None:
            cross_input = self.cross_attn_norm(hidden_states) if self.pre_norm else hidden_states
            cross_output, _ = self.cross_attn(
                cross_input,
                cross_attention_mask,
                None,
                cache,
                key_value_states=encoder_hidden_states,
                **kwargs,
            )
            hidden_states = self._residual(hidden_states, cross_output, self.cross_attn_norm)

        mlp_input = self.mlp_norm(hidden_states) if self.pre_norm else hidden_states
        return self._residual(hidden_states, self.mlp(mlp_input), self.mlp_norm)

    def _residual(self, x: torch.Tensor, sublayer_output: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        x = x + self.dropout(sublayer_output)
        return x if self.pre_norm else norm(x)

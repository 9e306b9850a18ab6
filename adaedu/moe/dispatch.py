"""Dispatch: run each expert on its tokens and combine the outputs, from a :class:`Routing`.

:func:`dispatch` is the one the layer uses: no Python loop over tokens. The routing already lists
the assignments sorted by expert, so expert e's tokens are one contiguous block: gather them,
run the expert once on the block (one matrix product per weight), and scatter-add the weighted
outputs back with ``index_add_``. The loop is over the E experts only.

Dropped tokens: a token without any assignment (capacity overflow, or picked by no expert in
expert choice) receives nothing, so its output is exactly 0; in a residual block ``x + MoE(x)``
it passes unchanged. A top-2 token that lost only its second choice keeps its first expert's
output, weighted as before (no renormalisation).

:func:`dispatch_per_token` and :func:`dispatch_per_expert_mask` compute the same thing the
slow and the usual way; the tests and ``benchmarks/moe_dispatch.py`` compare against them.
:func:`soft_dispatch` is Soft MoE's dense version.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adaedu.moe.routers import Routing


def _check(x: Tensor, routing: Routing, experts: nn.ModuleList, dims: int) -> None:
    if not isinstance(routing, Routing):
        raise ValueError(f"routing is a {type(routing).__name__}; allowed values: a Routing")
    if len(experts) != routing.n_experts:
        raise ValueError(
            f"{len(experts)} experts for a routing over {routing.n_experts}; "
            "allowed values: len(experts) == routing.n_experts"
        )
    if not isinstance(x, Tensor) or x.dim() != dims or x.shape[:-1].numel() != routing.n_tokens:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        want = "(N, d)" if dims == 2 else "(G, n, d)"
        raise ValueError(f"x has shape {shape}; allowed values: {want} with N = {routing.n_tokens}")


def dispatch(x: Tensor, routing: Routing, experts: nn.ModuleList) -> Tensor:
    """y_t = sum over t's assignments of weight * E_expert(x_t), for x (N, d) -> (N, d).

    Sorted dispatch: one call per expert on its contiguous block of tokens, no token loop.
    """
    _check(x, routing, experts, dims=2)
    if routing.is_soft:
        raise ValueError(
            "routing is soft (Soft MoE); allowed values: a hard routing (use soft_dispatch)"
        )
    out = torch.zeros_like(x)
    start = 0
    for expert, count in zip(experts, routing.expert_counts.tolist(), strict=True):
        if count == 0:  # an expert without tokens costs nothing
            continue
        token = routing.token[start : start + count]  # expert e's block
        weight = routing.weight[start : start + count].to(x.dtype)
        y = expert(x[token])  # one batched call: E_e(x_t) for all its tokens t
        out.index_add_(0, token, weight.unsqueeze(1) * y)  # y_t += G(x_t)_e E_e(x_t)
        start += count
    return out


def dispatch_per_token(x: Tensor, routing: Routing, experts: nn.ModuleList) -> Tensor:
    """The same as :func:`dispatch` with a Python loop over tokens: the slow reference."""
    _check(x, routing, experts, dims=2)
    out = [torch.zeros_like(x[0]) for _ in range(x.shape[0])]
    assignments = zip(routing.token.tolist(), routing.expert.tolist(), routing.weight, strict=True)
    for t, e, w in assignments:
        out[t] = out[t] + w.to(x.dtype) * experts[e](x[t : t + 1])[0]
    return torch.stack(out)


def dispatch_per_expert_mask(x: Tensor, routing: Routing, experts: nn.ModuleList) -> Tensor:
    """The same as :func:`dispatch` without sorting: for each expert, find its tokens with a
    mask over all assignments (what :class:`adaedu.moe.noisy_topk.SparseMoE` and HF's Mixtral do)."""
    _check(x, routing, experts, dims=2)
    out = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        mine = (routing.expert == e).nonzero(as_tuple=True)[0]  # scans all A assignments
        if mine.numel() == 0:
            continue
        token = routing.token[mine]
        y = expert(x[token])
        out.index_add_(0, token, routing.weight[mine, None].to(y.dtype) * y)
    return out


def soft_dispatch(x: Tensor, routing: Routing, experts: nn.ModuleList) -> Tensor:
    """Soft MoE (Puigcerver et al. 2023, Sec. 2.1) for x (G, n, d) -> (G, n, d):
    slot inputs X~ = D^T X, slot outputs Y~_s = f_{expert(s)}(X~_s), outputs Y = C Y~."""
    _check(x, routing, experts, dims=3)
    if not routing.is_soft:
        raise ValueError("routing is hard; allowed values: a Soft MoE routing (use dispatch)")
    dispatch_w, combine_w = routing.dispatch.to(x.dtype), routing.combine.to(x.dtype)
    slots = torch.einsum("gnes,gnd->gesd", dispatch_w, x)  # X~ = D^T X, (G, E, S, d)
    outputs = torch.stack([expert(slots[:, e]) for e, expert in enumerate(experts)], dim=1)
    return torch.einsum("gnes,gesd->gnd", combine_w, outputs)  # Y = C Y~

"""Auxiliary losses of sparse MoE layers.

- :func:`switch_balance_loss`  Switch Transformer load balancing (Fedus et al. 2021, eq. 4-6);
- :func:`router_z_loss`        ST-MoE router z-loss (Zoph et al. 2022, eq. 5);
- :func:`importance_loss`, :func:`load_loss`  Shazeer et al. (2017, eq. 7 and 11), re-exported
  from :mod:`adaedu.moe.noisy_topk`;
- :func:`routing_losses`       all of those that apply to a :class:`Routing`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adaedu.moe.noisy_topk import importance_loss, load_loss
from adaedu.moe.routers import Routing

__all__ = ["importance_loss", "load_loss", "router_z_loss", "routing_losses", "switch_balance_loss"]


def _check_probs_chosen(probs: Tensor, chosen: Tensor) -> None:
    if not isinstance(probs, Tensor) or probs.dim() != 2 or not probs.is_floating_point():
        raise ValueError("probs must be a 2-d floating-point tensor (tokens N, experts E)")
    if not isinstance(chosen, Tensor) or chosen.dim() != 2 or chosen.shape[0] != probs.shape[0]:
        shape = tuple(chosen.shape) if isinstance(chosen, Tensor) else type(chosen).__name__
        raise ValueError(f"chosen has shape {shape}; allowed values: ({probs.shape[0]}, k)")
    if chosen.is_floating_point() or chosen.is_complex():
        raise ValueError(f"chosen has dtype {chosen.dtype}; allowed values: integer expert ids")
    n_experts = probs.shape[1]
    if chosen.numel() and not (0 <= int(chosen.min()) and int(chosen.max()) < n_experts):
        raise ValueError(f"chosen must lie in 0..{n_experts - 1} (probs has {n_experts} experts)")


def switch_balance_loss(probs: Tensor, chosen: Tensor, alpha: float = 1.0) -> Tensor:
    """Switch Transformer eq. 4: loss = alpha * N * sum_i f_i * P_i, with N experts.

    f_i (eq. 5) is the fraction of tokens that chose expert i (before capacity: the tokens asked
    for it), P_i (eq. 6) the mean router probability of expert i. ``probs`` (T, N) are
    softmax(logits) over all experts; ``chosen`` (T, k) the experts each token chose. For k > 1,
    f_i counts the T * k choices, so that sum_i f_i = 1 and the loss (alpha = 1) is exactly 1 at
    perfect balance (f_i = P_i = 1/N) for every k. (HF's Mixtral counts per token: k at balance.)
    It is minimised by the uniform routing and > 1 when the router prefers its busiest experts.
    """
    _check_probs_chosen(probs, chosen)
    if not isinstance(alpha, int | float) or not alpha >= 0:
        raise ValueError(f"alpha={alpha!r}; allowed values: a loss weight >= 0")
    n_experts = probs.shape[1]
    if chosen.numel() == 0:  # no token: nothing to balance, the loss is 0 (kept in the graph)
        return probs.sum() * 0.0
    counts = torch.bincount(chosen.reshape(-1), minlength=n_experts)
    f = counts.to(probs.dtype) / chosen.numel()  # eq. 5: f_i = 1/T sum_x 1{argmax p(x) = i}
    p = probs.mean(dim=0)  # eq. 6: P_i = 1/T sum_x p_i(x)
    return alpha * n_experts * (f * p).sum()  # eq. 4: alpha N sum_i f_i P_i


def router_z_loss(logits: Tensor) -> Tensor:
    """ST-MoE router z-loss (Zoph et al. 2022, eq. 5, https://arxiv.org/abs/2202.08906):
    L_z = 1/B sum_i (log sum_j exp(x_j^(i)))^2 over the B tokens' router logits (B, N).

    It keeps the logits small, which makes the float32 router softmax numerically safe.
    """
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError("logits must be a 2-d tensor (tokens B, experts N)")
    if logits.shape[0] == 0:  # no token: the loss is 0 (kept in the graph)
        return logits.float().sum() * 0.0
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()  # mean_i logsumexp(x^(i))^2


def routing_losses(routing: Routing) -> dict[str, Tensor]:
    """The unweighted auxiliary losses that apply to ``routing``:

    - ``"balance"`` (Switch eq. 4, alpha = 1) for token-choice routers with a gate;
    - ``"z"`` (ST-MoE eq. 5) for routers with logits;
    - ``"importance"`` and ``"load"`` (Shazeer eq. 7 and 11, weight 1) for the noisy top-k router.

    Hash and Soft MoE routings have none; expert choice has ``"z"`` only (it is balanced by
    construction).
    """
    if not isinstance(routing, Routing):
        raise ValueError(f"routing is a {type(routing).__name__}; allowed values: a Routing")
    losses: dict[str, Tensor] = {}
    if routing.probs is not None and routing.chosen is not None:
        losses["balance"] = switch_balance_loss(routing.probs, routing.chosen)
    if routing.logits is not None:
        losses["z"] = router_z_loss(routing.logits)
    if "gates" in routing.extras:
        losses["importance"] = importance_loss(routing.extras["gates"], 1.0)
    if "load_probs" in routing.extras:
        losses["load"] = load_loss(routing.extras["load_probs"], 1.0)
    return losses

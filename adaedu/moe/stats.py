"""Routing statistics every MoE notebook plots, from one :class:`Routing`.

:func:`moe_stats` summarises a routing in plain Python numbers (:class:`MoEStats`);
:func:`plot_tokens_per_expert` and :func:`plot_experts_per_token` draw the two histograms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from adaedu.moe.routers import Routing


@dataclass(frozen=True)
class MoEStats:
    """How one batch was routed.

    For Soft MoE, "tokens" per expert are the slots it processed, and every token reaches all
    E experts (through the slots). For the hash router, which has no probabilities, the entropy
    is 0.
    """

    tokens_per_expert: list[int]  # tokens each expert processed (after capacity)
    max_mean_load: float  # max / mean of tokens_per_expert (1 = perfectly even)
    dropped_fraction: float  # fraction of tokens that reached no expert (their output is 0)
    overflow_fraction: float  # fraction of token choices refused for capacity (token choice)
    router_entropy: float  # mean over tokens of the entropy of the router distribution, nats
    experts_per_token: float  # mean number of experts a token reached
    experts_per_token_hist: list[int]  # tokens that reached 0, 1, ..., E experts


def _entropy(probs: torch.Tensor) -> float:
    """Mean over rows of -sum_i p_i log p_i (0 log 0 = 0)."""
    p = probs.float()
    return float(-(p * p.clamp_min(1e-30).log()).sum(dim=-1).mean())


@torch.no_grad()
def moe_stats(routing: Routing) -> MoEStats:
    """The :class:`MoEStats` of ``routing``."""
    if not isinstance(routing, Routing):
        raise ValueError(f"routing is a {type(routing).__name__}; allowed values: a Routing")
    E, N = routing.n_experts, routing.n_tokens
    counts = routing.expert_counts.float()
    if routing.is_soft:
        per_token = torch.full((N,), E, dtype=torch.long)
        entropy = _entropy(routing.combine.flatten(0, 1).flatten(1))  # (N, E * S)
    else:
        per_token = torch.bincount(routing.token.cpu(), minlength=N)
        entropy = _entropy(routing.probs) if routing.probs is not None else 0.0
    overflow = 0.0 if routing.kept is None else float(1.0 - routing.kept.float().mean())
    mean = float(counts.mean())
    return MoEStats(
        tokens_per_expert=[int(c) for c in counts.tolist()],
        max_mean_load=float(counts.max()) / mean if mean > 0 else math.nan,
        dropped_fraction=float(routing.dropped.float().mean()),
        overflow_fraction=overflow,
        router_entropy=entropy,
        experts_per_token=float(per_token.float().mean()),
        experts_per_token_hist=torch.bincount(per_token, minlength=E + 1).tolist(),
    )


def _check_stats(stats: MoEStats) -> None:
    if not isinstance(stats, MoEStats):
        raise ValueError(f"stats is a {type(stats).__name__}; allowed values: a MoEStats")


def plot_tokens_per_expert(
    ax: plt.Axes, stats: MoEStats, capacity: int | None = None, label: str | None = None
) -> None:
    """Bar chart of the tokens each expert processed, the mean load (dotted) and the capacity."""
    _check_stats(stats)
    counts = stats.tokens_per_expert
    ax.bar(range(len(counts)), counts, label=label)
    ax.axhline(sum(counts) / len(counts), color="k", linestyle=":", linewidth=1, label="mean")
    if capacity is not None:
        ax.axhline(capacity, color="#D55E00", linestyle="--", linewidth=1.2, label="capacity")
    ax.set(xlabel="expert", ylabel="tokens processed", xticks=range(len(counts)))
    ax.legend()


def plot_experts_per_token(ax: plt.Axes, stats: MoEStats, label: str | None = None) -> None:
    """Histogram of how many experts each token reached (0 = dropped)."""
    _check_stats(stats)
    hist = stats.experts_per_token_hist
    total = max(1, sum(hist))
    ax.bar(range(len(hist)), [h / total for h in hist], label=label)
    ax.set(xlabel="experts per token", ylabel="fraction of tokens", xticks=range(len(hist)))

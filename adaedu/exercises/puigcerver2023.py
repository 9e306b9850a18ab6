"""Exercises of notebook 3.2 (Puigcerver et al., 2023, Soft MoE): dispatch and combine weights,
a whole Soft MoE layer, and the fraction of tokens a capacity-limited top-1 router drops."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adaedu.exercises import Exercise
from adaedu.moe.routers import expert_capacity, keep_within_capacity


def _close(a: object, b: Tensor, atol: float = 1e-4) -> bool:
    return isinstance(a, Tensor) and a.shape == b.shape and torch.allclose(a.float(), b, atol=atol)


def _randint(low: int, high: int, gen: torch.Generator) -> int:
    return int(torch.randint(low, high, (1,), generator=gen))


# --- q1: dispatch and combine weights (Sec. 2.1) ---------------------------------------------------


def soft_moe_weights(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Reference: for logits (X Phi) of shape (n tokens, slots), the dispatch weights D (softmax
    over the tokens, per slot) and the combine weights C (softmax over the slots, per token)."""
    return torch.softmax(logits, dim=0), torch.softmax(logits, dim=1)


def _weights_inputs(gen: torch.Generator) -> tuple:
    n, slots = _randint(3, 9, gen), _randint(2, 7, gen)
    while slots == n:
        slots = _randint(2, 7, gen)
    return (2 * torch.randn(n, slots, generator=gen),)


def _weights_diagnose(args: tuple, expected: tuple, got: object) -> str | None:
    (logits,) = args
    if not isinstance(got, tuple) or len(got) != 2:
        return None
    d, c = got
    if _close(d, expected[1]) and _close(c, expected[0]):
        return (
            "you swapped the two: dispatch D normalises over the tokens (each slot's column sums "
            "to 1 over dim 0), combine C over the slots (each token's row sums to 1 over dim 1)"
        )
    if _close(d, expected[1]) and _close(c, expected[1]):
        return "both your weights are a softmax over the slots: D must be a softmax over the tokens"
    if _close(d, expected[0]) and _close(c, expected[0]):
        return "both your weights are a softmax over the tokens: C must be a softmax over the slots"
    if _close(d, torch.softmax(logits.flatten(), 0).view_as(logits)):
        return "you took one softmax over all entries: D is a softmax per slot (per column)"
    return None


q1 = Exercise(
    title="Exercise 1 (dispatch and combine weights, Sec. 2.1)",
    reference=soft_moe_weights,
    make_inputs=_weights_inputs,
    hints=[
        "both weights come from the same logits; only the axis of the softmax differs",
        "dispatch: each slot is a convex mixture of the tokens, so its column sums to 1 over "
        "the tokens (dim 0)",
        "combine: each token's output is a convex mixture of the slot outputs, so its row sums "
        "to 1 over the slots (dim 1)",
    ],
    diagnose=_weights_diagnose,
)


# --- q2: a whole Soft MoE layer with linear experts ------------------------------------------------


def soft_moe_layer(x: Tensor, phi: Tensor, expert_weights: Tensor) -> Tensor:
    """Reference: Y = C Y~ with Y~_j = X~_j W_{expert(j)}, X~ = D^T X, for tokens x (n, d),
    slot parameters phi (d, E * S) and linear experts expert_weights (E, d, d); slot j belongs
    to expert j // S (the slots of an expert are adjacent columns of Phi)."""
    n_experts = expert_weights.shape[0]
    slots = phi.shape[1] // n_experts
    logits = x @ phi  # (n, E * S)
    dispatch, combine = torch.softmax(logits, dim=0), torch.softmax(logits, dim=1)
    slot_in = dispatch.T @ x  # X~ = D^T X, (E * S, d)
    w = expert_weights.repeat_interleave(slots, dim=0)  # slot j -> W_{j // S}
    slot_out = torch.einsum("sd,sdf->sf", slot_in, w)  # Y~_j = X~_j W_{expert(j)}
    return combine @ slot_out  # Y = C Y~


def _layer_inputs(gen: torch.Generator) -> tuple:
    n, d, e, s = _randint(4, 9, gen), _randint(2, 6, gen), _randint(2, 4, gen), _randint(2, 4, gen)
    return (
        torch.randn(n, d, generator=gen),
        torch.randn(d, e * s, generator=gen),
        torch.randn(e, d, d, generator=gen) / math.sqrt(d),
    )


def _layer_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    x, phi, w = args
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        return None
    e, s = w.shape[0], phi.shape[1] // w.shape[0]
    interleaved = soft_moe_layer(x, phi.view(-1, s, e).transpose(1, 2).reshape(phi.shape), w)
    if _close(got, interleaved):
        return (
            f"slot j belongs to expert j // S (S = {s} adjacent slots per expert); you gave it "
            "to expert j % E"
        )
    logits = x @ phi
    swapped = torch.softmax(logits, 1).T @ x
    wide = w.repeat_interleave(s, dim=0)
    if _close(got, torch.softmax(logits, 0) @ torch.einsum("sd,sdf->sf", swapped, wide)):
        return "you swapped dispatch and combine: X~ = D^T X uses the softmax over the tokens"
    dense = sum(
        torch.softmax(logits, 1)[:, i * s : (i + 1) * s].sum(1, keepdim=True) * (x @ w[i])
        for i in range(e)
    )
    if _close(got, dense):
        return (
            "you applied the experts to the tokens themselves (a dense soft mixture, as in "
            "Jacobs 1991); Soft MoE applies them to the S mixed slots X~ = D^T X"
        )
    return None


q2 = Exercise(
    title="Exercise 2 (a Soft MoE layer)",
    reference=soft_moe_layer,
    make_inputs=_layer_inputs,
    hints=[
        "logits = x @ phi; D = softmax over the tokens (dim 0), C = softmax over the slots (dim 1)",
        "slot inputs X~ = D.T @ x, shape (E * S, d); slot j is processed by expert j // S",
        "expert_weights.repeat_interleave(S, dim=0) gives each slot its expert's matrix; then "
        "Y = C @ Y~",
    ],
    diagnose=_layer_diagnose,
)


# --- q3: tokens dropped by top-1 routing with capacity (Switch eq. 3) ------------------------------


def top1_dropped_fraction(chosen: Tensor, n_experts: int, capacity_factor: float) -> float:
    """Reference: the fraction of tokens dropped when each group (a row of ``chosen`` (G, n),
    each token's expert) gives every expert ceil(n / E * capacity_factor) slots, first come
    first served."""
    capacity = expert_capacity(chosen.shape[1], n_experts, capacity_factor)
    kept = keep_within_capacity(chosen, n_experts, capacity)
    return float(1.0 - kept.float().mean())


def _dropped_inputs(gen: torch.Generator) -> tuple:
    g, n, e = _randint(2, 5, gen), _randint(6, 15, gen), _randint(3, 6, gen)
    skew = torch.linspace(0.0, 1.5, e)  # uneven routing, so that some tokens are dropped
    chosen = torch.multinomial(torch.softmax(skew, 0), g * n, True, generator=gen).view(g, n)
    return chosen, e, [1.0, 1.25, 1.5][_randint(0, 3, gen)]


def _dropped_diagnose(args: tuple, expected: float, got: object) -> str | None:
    chosen, e, cf = args
    try:
        value = float(got)
    except (TypeError, ValueError):
        return None
    if abs(value - expected) < 1e-6:
        return None
    g, n = chosen.shape
    floor_cap = max(1, math.floor(n / e * cf))
    floor_drop = float(1 - keep_within_capacity(chosen, e, floor_cap).float().mean())
    if abs(value - floor_drop) < 1e-6:
        return "the capacity rounds up (ceil(n / E * capacity_factor)), not down"
    whole = chosen.reshape(1, -1)
    batch_drop = float(
        1 - keep_within_capacity(whole, e, expert_capacity(g * n, e, cf)).float().mean()
    )
    if abs(value - batch_drop) < 1e-6:
        return (
            "you counted the capacity over the whole batch; here each row is a group (an "
            "image) with its own ceil(n / E * capacity_factor) slots per expert"
        )
    if abs(value - (1 - expected)) < 1e-6:
        return "you returned the fraction of tokens kept; the question asks for the dropped ones"
    return None


q3 = Exercise(
    title="Exercise 3 (dropped tokens of top-1 routing)",
    reference=top1_dropped_fraction,
    make_inputs=_dropped_inputs,
    hints=[
        "capacity per expert and group: ceil(n / E * capacity_factor) (Switch eq. 3)",
        "in each row, count for each expert how many tokens chose it; the ones beyond the "
        "capacity are dropped",
        "dropped = sum over groups and experts of max(count - capacity, 0), divided by G * n",
    ],
    diagnose=_dropped_diagnose,
)

"""Exercises of notebook 2.2 (Fedus et al. 2021, Switch Transformers; Zoph et al. 2022, ST-MoE):
the load-balancing loss, expert capacity and token dropping, the router z-loss."""

from __future__ import annotations

import torch
from torch import Tensor

from adaedu.exercises import Exercise
from adaedu.moe.losses import router_z_loss, switch_balance_loss
from adaedu.moe.routers import keep_within_capacity


def _scalar(got: object) -> float | None:
    try:
        return float(got)
    except (TypeError, ValueError, RuntimeError):
        return None


def _near(got: float, value: float, expected: float) -> bool:
    """got equals value (a wrong answer) and value is clearly not the expected one."""
    close = abs(got - value) <= 1e-5 + 1e-4 * abs(value)
    return close and abs(value - expected) > 1e-5 + 1e-4 * abs(expected)


# --- q1: the load-balancing loss (eq. 4-6) -------------------------------------------------------


def balance_loss(probs: Tensor, chosen: Tensor) -> Tensor:
    """Switch eq. 4 with alpha = 1: N * sum_i f_i P_i for top-1 choices ``chosen`` (T,)."""
    return switch_balance_loss(probs, chosen.unsqueeze(-1))


def _balance_inputs(gen: torch.Generator) -> tuple:
    t = int(torch.randint(12, 40, (1,), generator=gen))
    e = int(torch.randint(3, 9, (1,), generator=gen))
    skew = torch.linspace(0, 1.5, e)  # some experts are favoured: the loss is clearly above 1
    probs = torch.softmax(torch.randn(t, e, generator=gen) + skew, dim=-1)
    return probs, probs.argmax(dim=-1)


def _balance_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    probs, chosen = args
    g, exp = _scalar(got), float(expected)
    if g is None:
        return None
    n = probs.shape[1]
    f = torch.bincount(chosen, minlength=n).float() / len(chosen)
    p = probs.mean(dim=0)
    if _near(g, exp / n, exp):
        return f"you forgot the factor N = {n} (the number of experts) in alpha * N * sum f_i P_i"
    if _near(g, float(n * (p * p).sum()), exp):
        return (
            "you used P_i where f_i belongs: f_i is the fraction of tokens whose argmax is "
            "expert i (a count, eq. 5), P_i the mean router probability (eq. 6)"
        )
    if _near(g, float(n * (f * f).sum()), exp):
        return (
            "you used f_i twice: the second factor is P_i, the mean router probability, which "
            "is what gives the loss a gradient (f_i has none)"
        )
    if _near(g, float((f * p).mean()), exp):
        return "you averaged f_i P_i over the experts: the loss is N times their *sum*"
    return None


q1 = Exercise(
    title="Exercise 1 (the load-balancing loss, eq. 4-6)",
    reference=balance_loss,
    make_inputs=_balance_inputs,
    hints=[
        "eq. 5: f_i = (number of tokens with chosen == i) / T; `torch.bincount(chosen, "
        "minlength=N)` counts them",
        "eq. 6: P_i = probs.mean(dim=0), the mean router probability of expert i",
        "eq. 4 with alpha = 1: N * (f * P).sum(); check that it is 1 when f = P = 1/N",
    ],
    diagnose=_balance_diagnose,
)


# --- q2: expert capacity and token dropping (eq. 3) ---------------------------------------------


def kept_tokens(chosen: Tensor, n_experts: int, capacity: int) -> Tensor:
    """Which tokens of one group keep their expert: token t (in order) is kept iff fewer than
    ``capacity`` earlier tokens chose the same expert."""
    return keep_within_capacity(chosen.unsqueeze(0), n_experts, capacity)[0]


def _kept_inputs(gen: torch.Generator) -> tuple:
    t = int(torch.randint(10, 30, (1,), generator=gen))
    e = int(torch.randint(3, 6, (1,), generator=gen))
    weights = torch.linspace(1.0, 3.0, e)  # uneven: some experts overflow
    chosen = torch.multinomial(weights, t, replacement=True, generator=gen)
    capacity = max(1, t // e)  # capacity factor 1
    return chosen, e, capacity


def _kept_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    chosen, e, capacity = args
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        return None
    got = got.bool()
    if torch.equal(got, kept_tokens(chosen, e, capacity + 1)) and not torch.equal(got, expected):
        return (
            "off by one: you keep capacity + 1 tokens per expert; an expert has exactly "
            "`capacity` slots (the first `capacity` tokens that choose it)"
        )
    reverse = kept_tokens(chosen.flip(0), e, capacity).flip(0)
    if torch.equal(got, reverse) and not torch.equal(got, expected):
        return "you filled the slots from the last token backwards: tokens claim slots in order"
    first = torch.arange(len(chosen)) < capacity * e
    if torch.equal(got, first) and not torch.equal(got, expected):
        return (
            "you kept the first capacity * E tokens whatever their expert: the capacity is "
            "per expert, so count the earlier tokens that chose the *same* expert"
        )
    return None


q2 = Exercise(
    title="Exercise 2 (capacity and dropped tokens, eq. 3)",
    reference=kept_tokens,
    make_inputs=_kept_inputs,
    hints=[
        "for each token, count the earlier tokens (before it in the sequence) with the same "
        "expert; the token is kept if that count is < capacity",
        "`one_hot = F.one_hot(chosen, n_experts)`; `one_hot.cumsum(0)` counts, per expert, the "
        "tokens up to and including each position",
        "position = (one_hot.cumsum(0) * one_hot).sum(-1) - 1; return position < capacity",
    ],
    diagnose=_kept_diagnose,
)


# --- q3: the router z-loss (ST-MoE eq. 5) ---------------------------------------------------------


def _z_inputs(gen: torch.Generator) -> tuple:
    t = int(torch.randint(5, 30, (1,), generator=gen))
    e = int(torch.randint(3, 9, (1,), generator=gen))
    scale = 0.5 + 3 * float(torch.rand(1, generator=gen))
    return (scale * torch.randn(t, e, generator=gen) + 1.0,)


def _z_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    (logits,) = args
    g, exp = _scalar(got), float(expected)
    if g is None:
        return None
    lse = torch.logsumexp(logits, dim=-1)
    if _near(g, float(lse.mean() ** 2), exp):
        return "you squared the mean of logsumexp: square each token's logsumexp, then average"
    if _near(g, float(lse.mean()), exp):
        return "you forgot the square: L_z = mean over tokens of logsumexp(logits)^2"
    if _near(g, float(logits.pow(2).sum(dim=-1).mean()), exp):
        return (
            "you penalised the squared logits themselves; the z-loss squares log sum_j exp(x_j), "
            "the log of the softmax's normaliser"
        )
    if _near(g, float(torch.log(logits.exp().sum()) ** 2), exp):
        return "you took one logsumexp over all tokens and experts: it is per token (dim=-1)"
    return None


q3 = Exercise(
    title="Exercise 3 (the router z-loss, ST-MoE)",
    reference=router_z_loss,
    make_inputs=_z_inputs,
    hints=[
        "for each token (row), z = log sum_j exp(logit_j): `torch.logsumexp(logits, dim=-1)`",
        "square each z, then average over the tokens",
    ],
    diagnose=_z_diagnose,
)

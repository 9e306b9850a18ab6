"""Exercises of notebook 4.4 (Banino et al. 2021, PonderNet): p_n and the KL regulariser."""

from __future__ import annotations

import torch
from torch import Tensor

from adaedu.exercises import Exercise
from adaedu.halting.ponder import halting_probabilities, kl_divergence, truncated_geometric


def _close(a: object, b: Tensor) -> bool:
    return isinstance(a, Tensor) and a.shape == b.shape and torch.allclose(a.float(), b, atol=1e-5)


# --- q1: the halting distribution -----------------------------------------------------


def _p_inputs(gen: torch.Generator) -> tuple:
    batch = int(torch.randint(2, 6, (1,), generator=gen))
    steps = int(torch.randint(3, 8, (1,), generator=gen))
    return (torch.rand(batch, steps, generator=gen) * 0.8 + 0.05,)


def _p_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    (lam,) = args
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        return None
    survive = torch.cumprod(1 - lam, dim=1)
    before = torch.cat([torch.ones_like(survive[:, :1]), survive[:, :-1]], dim=1)
    if _close(got, lam * before):
        return (
            "your rows do not sum to 1: set lambda to 1 at the last step, so that the "
            "probability of never halting goes to step N"
        )
    if _close(got, lam * survive):
        return "the product runs over j < n (the steps before), not j <= n"
    if _close(got, lam):
        return "lambda_n is the *conditional* probability: multiply by prod_{j<n} (1 - lambda_j)"
    return None


q1 = Exercise(
    title="Exercise 1 (PonderNet's halting distribution)",
    reference=halting_probabilities,
    make_inputs=_p_inputs,
    hints=[
        "p_n = lambda_n * prod_{j<n} (1 - lambda_j): the network has not halted before n, then "
        "halts at n",
        "replace the last column of lambdas by ones, then use torch.cumprod along dim 1 and "
        "shift it by one step (the first step has an empty product, 1)",
    ],
    diagnose=_p_diagnose,
)


# --- q2: the KL regulariser with a truncated geometric prior -----------------------------------


def regulariser(p: Tensor, lambda_p: float) -> Tensor:
    """KL(p || truncated geometric(lambda_p)) per row, the prior normalised over 1..N."""
    return kl_divergence(p, truncated_geometric(lambda_p, p.shape[1]))


def _kl_inputs(gen: torch.Generator) -> tuple:
    batch = int(torch.randint(2, 6, (1,), generator=gen))
    steps = int(torch.randint(3, 7, (1,), generator=gen))
    lam = torch.rand(batch, steps, generator=gen) * 0.8 + 0.1
    p = halting_probabilities(lam)
    lambda_p = round(0.1 + 0.4 * float(torch.rand(1, generator=gen)), 3)
    return p, lambda_p


def _kl_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    p, lambda_p = args
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        return None
    prior = truncated_geometric(lambda_p, p.shape[1])
    if _close(got, (prior * (prior.log() - p.log())).sum(-1)):
        return (
            "you computed KL(prior || p): PonderNet's regulariser is KL(p || prior), "
            "sum_n p_n log(p_n / prior_n)"
        )
    n = torch.arange(p.shape[1], dtype=torch.float32)
    raw = lambda_p * (1 - lambda_p) ** n
    if _close(got, (p * (p.log() - raw.log())).sum(-1)):
        return (
            "your prior is not normalised: truncated to N steps, the geometric probabilities sum "
            "to less than 1; divide them by their sum"
        )
    if _close(got, (p * (p.log() - prior.log())).sum()):
        return "return one KL value per row (sum over the steps only)"
    return None


q2 = Exercise(
    title="Exercise 2 (the KL regulariser)",
    reference=regulariser,
    make_inputs=_kl_inputs,
    hints=[
        "prior_n = lambda_p (1 - lambda_p)^(n-1) for n = 1..N, divided by its sum",
        "KL(p || prior) = sum_n p_n (log p_n - log prior_n), one value per row",
    ],
    diagnose=_kl_diagnose,
)

"""Exercises of notebook 5.2 (speculative sampling, Chen et al. 2023; Leviathan et al. 2023).

q1: the acceptance rate ``alpha = sum_x min(p, q)``; q2: the distribution a rejected draft is
resampled from, ``norm((p - q)_+)``; q3: the expected wall-clock speed-up of Leviathan et al.'s
Theorem 3.8.
"""

from __future__ import annotations

import torch

from adaedu.decoding.speculative import acceptance_rate, residual_distribution, walltime_factor
from adaedu.exercises import Exercise


def _pair(gen: torch.Generator) -> tuple:
    rows, vocab = (
        int(torch.randint(1, 5, (1,), generator=gen)),
        int(torch.randint(3, 9, (1,), generator=gen)),
    )
    p = torch.softmax(2 * torch.randn(rows, vocab, generator=gen), dim=-1)
    q = torch.softmax(2 * torch.randn(rows, vocab, generator=gen), dim=-1)
    return p, q


def _diagnose_alpha(args: tuple, expected: torch.Tensor, got: object) -> str | None:
    p, q = args
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return None
    if torch.allclose(got, torch.maximum(p, q).sum(-1), atol=1e-5):
        return "you summed max(p, q): a draft is accepted with probability min(1, p/q), so sum min"
    if torch.allclose(got, 1 - (p - q).abs().sum(-1), atol=1e-5):
        return "1 - sum |p - q| forgets the 1/2 in TV(p, q) = 1/2 sum |p - q|"
    if torch.allclose(got, torch.minimum(p, q).mean(-1), atol=1e-5):
        return "you averaged over the vocabulary: alpha is a sum over tokens x, not a mean"
    return None


q1 = Exercise(
    title="Exercise 1 (acceptance rate)",
    reference=acceptance_rate,
    make_inputs=_pair,
    hints=[
        "draft x ~ q is accepted with probability min(1, p(x)/q(x)); average that over x ~ q",
        "sum_x q(x) min(1, p(x)/q(x)) = sum_x min(q(x), p(x)), over the last dimension",
    ],
    diagnose=_diagnose_alpha,
)


def _diagnose_residual(args: tuple, expected: torch.Tensor, got: object) -> str | None:
    p, q = args
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return None
    swapped = (q - p).clamp(min=0)
    if torch.allclose(got, swapped / swapped.sum(-1, keepdim=True), atol=1e-5):
        return "you took (q - p)_+: the missing mass is where the target p exceeds the draft q"
    if torch.allclose(got, (p - q).clamp(min=0), atol=1e-5):
        return "(p - q)_+ is not a distribution yet: divide by its sum over the vocabulary"
    if torch.allclose(got, p, atol=1e-5):
        return (
            "resampling from p itself adds p's mass twice where q already covered it; "
            "use norm((p - q)_+)"
        )
    return None


q2 = Exercise(
    title="Exercise 2 (resampling distribution)",
    reference=residual_distribution,
    make_inputs=_pair,
    hints=[
        "after a rejection, only the probability mass that q under-proposed is still missing",
        "clamp p - q at 0 and renormalise each row so it sums to 1",
    ],
    diagnose=_diagnose_residual,
)


def _factor_inputs(gen: torch.Generator) -> tuple:
    alpha = float(torch.rand(1, generator=gen)) * 0.95
    gamma = int(torch.randint(1, 9, (1,), generator=gen))
    c = float(torch.rand(1, generator=gen)) * 0.5
    return alpha, gamma, c


def _diagnose_factor(args: tuple, expected: float, got: object) -> str | None:
    alpha, gamma, c = args
    try:
        g = float(got)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    tokens = (1 - alpha ** (gamma + 1)) / (1 - alpha)
    if abs(g - (1 - alpha**gamma) / (1 - alpha) / (gamma * c + 1)) < 1e-6 < abs(g - expected):
        return "you left out the bonus token: a round emits up to gamma + 1 tokens"
    if abs(g - tokens) < 1e-6 < abs(g - expected):
        return "that is tokens per target call; divide by the round's cost, gamma c + 1"
    if abs(g - tokens / (gamma * c)) < 1e-6 < abs(g - expected):
        return "a round also makes one target call: its cost is gamma c + 1, not gamma c"
    return None


q3 = Exercise(
    title="Exercise 3 (expected speed-up)",
    reference=walltime_factor,
    make_inputs=_factor_inputs,
    hints=[
        "expected tokens per round: 1 + alpha + alpha^2 + ... + alpha^gamma",
        "a round costs gamma draft calls (c each) plus one target call, in target-call units",
    ],
    diagnose=_diagnose_factor,
)

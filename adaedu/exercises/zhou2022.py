"""Exercises of notebook 2.5 (Zhou et al., 2022): expert-choice gates, experts per token, and
the load of top-1 token choice."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adaedu.exercises import Exercise
from adaedu.moe.expert_choice_experiments import (
    expert_choice_gates,
    experts_per_token_hist,
    top1_max_mean_load,
)


def _close(a: object, b: Tensor, atol: float = 1e-5) -> bool:
    return isinstance(a, Tensor) and a.shape == b.shape and torch.allclose(a.float(), b, atol=atol)


# --- q1: expert choice gates (eq. 1-2) ------------------------------------------------------------


def _gates_inputs(gen: torch.Generator) -> tuple:
    n = int(torch.randint(8, 17, (1,), generator=gen))
    e = int(torch.randint(3, 7, (1,), generator=gen))
    c = [0.5, 1.0, 2.0][int(torch.randint(3, (1,), generator=gen))]
    return 2 * torch.randn(n, e, generator=gen), c


def _gates_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    logits, c = args
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        return None
    got = got.float()
    n, e = logits.shape
    k = min(n, math.ceil(round(n * c / e, 6)))
    scores = torch.softmax(logits, dim=-1)
    token_choice = torch.zeros_like(scores).scatter(
        1, scores.topk(min(e, max(1, round(c))), dim=-1).indices, 1.0
    )
    if _close(got, expected.gt(0).float()):
        return "your entries are 0/1: each chosen token must be weighted by its score S[t, e]"
    if _close((got > 0).float(), token_choice) and not _close(got, expected):
        return (
            "you let each token pick its best experts (token choice, top-k over dim=1): in "
            "expert choice each *expert* (a column) picks its k best tokens, top-k over dim=0"
        )
    by_tokens = torch.softmax(logits, dim=0)
    mine = torch.zeros_like(by_tokens).scatter(0, by_tokens.topk(k, dim=0).indices, 1.0)
    if _close(got, mine * by_tokens):
        return (
            "your softmax runs over the tokens (dim=0): eq. 1 takes it over the experts of "
            "each token (dim=-1), and only then each expert ranks the tokens"
        )
    picked = (got > 0).sum(dim=0)
    if (picked != k).any():
        return (
            f"each expert must take exactly k = ceil(n c / E) = ceil({n} * {c} / {e}) = {k} "
            f"tokens; your experts took {picked.tolist()}"
        )
    return None


q1 = Exercise(
    title="Exercise 1 (expert choice gates, eq. 1-2)",
    reference=expert_choice_gates,
    make_inputs=_gates_inputs,
    hints=[
        "eq. 1: S = softmax(logits, dim=-1), a distribution over the experts of each token",
        "k = ceil(n * c / E) tokens per expert (and at most n); `S.t().topk(k, dim=-1)` gives "
        "each expert's k best tokens and their scores",
        "build a zero (n, E) matrix and `scatter(0, index.t(), gate.t())` the scores into it",
    ],
    diagnose=_gates_diagnose,
)


# --- q2: experts per token ------------------------------------------------------------------------


def _hist_inputs(gen: torch.Generator) -> tuple:
    n = int(torch.randint(10, 30, (1,), generator=gen))
    e = int(torch.randint(3, 7, (1,), generator=gen))
    k = int(torch.randint(1, n // 2, (1,), generator=gen))
    scores = torch.rand(e, n, generator=gen) + torch.linspace(0, 1.5, n)  # later tokens favoured
    token = scores.topk(k, dim=-1).indices.reshape(-1)  # expert choice: each expert k tokens
    return token, n, e


def _hist_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    token, n, e = args
    if not isinstance(got, Tensor):
        return None
    if got.shape == expected.shape and torch.equal(got.long(), expected):
        return None
    if got.shape == (e + 1,) and torch.equal(got[1:].long(), expected[1:]):
        return (
            "the count of tokens with 0 experts is wrong: a token no expert picked never "
            "appears in `token`, so count every token 0..n-1 (bincount with minlength=n_tokens)"
        )
    per_token = torch.bincount(token, minlength=n)
    if got.shape != expected.shape and got.numel() == per_token.numel():
        return (
            "you returned the number of experts of each token; the exercise wants how many "
            f"tokens have 0, 1, ..., E experts: shape ({e + 1},)"
        )
    if got.shape != expected.shape:
        return (
            f"the result has one entry for each possible count 0, 1, ..., E = {e}: shape "
            f"({e + 1},) (use minlength=n_experts + 1)"
        )
    return None


q2 = Exercise(
    title="Exercise 2 (experts per token)",
    reference=experts_per_token_hist,
    make_inputs=_hist_inputs,
    hints=[
        "first count, for every token 0..n-1, how many assignments name it: "
        "`torch.bincount(token, minlength=n_tokens)`",
        "then count how often each of the values 0, 1, ..., E occurs among those counts",
        "both steps are bincounts; the second needs minlength=n_experts + 1",
    ],
    diagnose=_hist_diagnose,
)


# --- q3: max/mean load of top-1 token choice --------------------------------------------------------


def _load_inputs(gen: torch.Generator) -> tuple:
    n = int(torch.randint(20, 60, (1,), generator=gen))
    e = int(torch.randint(3, 9, (1,), generator=gen))
    bias = torch.zeros(e)
    bias[int(torch.randint(e, (1,), generator=gen))] = 1.5  # one popular expert
    bias[-1] = -4.0  # and one that is (almost) never chosen
    return (torch.randn(n, e, generator=gen) + bias,)


def _load_diagnose(args: tuple, expected: float, got: object) -> str | None:
    (logits,) = args
    try:
        g = float(got)
    except (TypeError, ValueError):
        return None

    def near(value: float) -> bool:
        return abs(g - value) < 1e-4 and abs(g - expected) > 1e-6

    counts = torch.bincount(logits.argmax(dim=-1), minlength=logits.shape[1]).float()
    if near(float(counts.max() / counts[counts > 0].mean())):
        return (
            "you averaged over the experts that got tokens only: an idle expert counts too "
            "(mean = tokens / E)"
        )
    probs = torch.softmax(logits, dim=-1).sum(dim=0)
    if near(float(probs.max() / probs.mean())):
        return (
            "you used the summed probabilities (importance); the load counts the tokens each "
            "expert actually receives (argmax)"
        )
    if counts.min() > 0 and near(float(counts.max() / counts.min())):
        return "you divided by the smallest load; the statistic is max / mean"
    return None


q3 = Exercise(
    title="Exercise 3 (max/mean load of top-1)",
    reference=top1_max_mean_load,
    make_inputs=_load_inputs,
    hints=[
        "each token goes to `logits.argmax(dim=-1)`",
        "count the tokens per expert with `torch.bincount(..., minlength=E)`, as floats",
        "return counts.max() / counts.mean() as a float",
    ],
    diagnose=_load_diagnose,
)

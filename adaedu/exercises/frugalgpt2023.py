"""Exercises of notebook 5.3 (FrugalGPT, Chen, Zaharia & Zou 2023).

q1: the cascade's stop rule (which stage answers each query); q2: the cost a query pays (the sum
of the costs of every model it visited); q3: the operating point (the cheapest configuration that
reaches a target accuracy).
"""

from __future__ import annotations

import torch

from adaedu.decoding.cascade import route
from adaedu.exercises import Exercise


def _route_inputs(gen: torch.Generator) -> tuple:
    k = int(torch.randint(2, 5, (1,), generator=gen))
    n = int(torch.randint(4, 12, (1,), generator=gen))
    return torch.rand(k, n, generator=gen), torch.rand(k - 1, generator=gen)


def _route_diagnose(args: tuple, expected: torch.Tensor, got: object) -> str | None:
    scores, taus = args
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return None
    last = (scores[:-1] > taus[:, None]).float()
    last_true = torch.where(
        last.any(0), (last.shape[0] - 1) - last.flip(0).argmax(0), scores.shape[0] - 1
    )
    if torch.equal(got.long(), last_true) and not torch.equal(last_true, expected):
        return "you picked the LAST stage whose score passes; the cascade stops at the FIRST one"
    if got.max() < scores.shape[0] - 1 and expected.max() == scores.shape[0] - 1:
        return "when no score passes its threshold the last model must answer (index k - 1)"
    lower = (scores[:-1] < taus[:, None]).float()
    first_lower = torch.cat([lower, torch.ones_like(lower[:1])]).argmax(0)
    if torch.equal(got.long(), first_lower):
        return "a stage stops when its score is ABOVE its threshold (g > tau), not below"
    return None


q1 = Exercise(
    title="Exercise 1 (which stage answers)",
    reference=route,
    make_inputs=_route_inputs,
    hints=[
        "stage i would stop if scores[i] > thresholds[i]; the last stage always stops",
        "append a row of True for the last stage, then take the index of the first True per column",
    ],
    diagnose=_route_diagnose,
)


def query_cost(stage: torch.Tensor, costs: torch.Tensor) -> torch.Tensor:
    """Cost of each query in a cascade: a query answered by stage i paid for stages 0..i."""
    return costs.cumsum(0)[stage]


def _cost_inputs(gen: torch.Generator) -> tuple:
    k = int(torch.randint(2, 5, (1,), generator=gen))
    costs = torch.randint(1, 100, (k,), generator=gen).float().sort().values
    return torch.randint(
        0, k, (int(torch.randint(4, 12, (1,), generator=gen)),), generator=gen
    ), costs


def _cost_diagnose(args: tuple, expected: torch.Tensor, got: object) -> str | None:
    stage, costs = args
    if isinstance(got, torch.Tensor) and got.shape == expected.shape:
        if torch.allclose(got.float(), costs[stage]) and not torch.allclose(expected, costs[stage]):
            return (
                "you charged only the model that answered; the cascade also paid every cheaper "
                "model it asked before (use a cumulative sum)"
            )
    return None


q2 = Exercise(
    title="Exercise 2 (cost per query)",
    reference=query_cost,
    make_inputs=_cost_inputs,
    hints=["costs.cumsum(0)[i] is what a query answered by stage i paid"],
    diagnose=_cost_diagnose,
)


def cheapest_index(accuracy: torch.Tensor, cost: torch.Tensor, target: float) -> int:
    """Index of the cheapest configuration with ``accuracy >= target`` (ties: the more accurate,
    then the first)."""
    ok = (accuracy >= target).nonzero().flatten().tolist()
    return min(ok, key=lambda i: (cost[i].item(), -accuracy[i].item(), i))


def _cheapest_inputs(gen: torch.Generator) -> tuple:
    n = int(torch.randint(5, 15, (1,), generator=gen))
    acc = torch.randint(80, 100, (n,), generator=gen).float() / 100
    cost = torch.randint(1, 50, (n,), generator=gen).float()
    target = float(acc.sort().values[n // 2])
    return acc, cost, target


def _cheapest_diagnose(args: tuple, expected: int, got: object) -> str | None:
    acc, cost, target = args
    if isinstance(got, torch.Tensor) and got.numel() != 1:
        return (
            f"you returned {got.numel()} values: return one index (a Python int), the cheapest "
            "configuration among those that reach the target"
        )
    if not isinstance(got, int | torch.Tensor) or isinstance(got, bool):
        return None
    got = int(got)
    if not 0 <= got < len(acc):
        return f"index {got} is not a configuration: indices run from 0 to {len(acc) - 1}"
    if got == int(cost.argmin()) and acc[got] < target:
        return "you picked the cheapest configuration overall; it must also reach the target"
    if got == int(acc.argmax()) and got != expected:
        return "you picked the most accurate configuration; we want the cheapest one that reaches the target"
    if acc[got] < target:
        return "your configuration is below the target accuracy (use >=)"
    return None


q3 = Exercise(
    title="Exercise 3 (operating point)",
    reference=cheapest_index,
    make_inputs=_cheapest_inputs,
    hints=[
        "keep the indices whose accuracy is >= target",
        "among them take the smallest cost; break ties by higher accuracy",
    ],
    diagnose=_cheapest_diagnose,
)

"""Exercises of notebook 2.13 (Eliseev & Mazur, 2023): LRU hits, speculative recall, Belady."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adaedu.exercises import Exercise
from adaedu.moe.offload import belady_victim, simulate_cache


def _local_trace(gen: torch.Generator, n_tokens: int, n_experts: int) -> Tensor:
    """(T, 2) distinct expert pairs with some reuse from one token to the next."""
    rows, prev = [], torch.randperm(n_experts, generator=gen)[:2].tolist()
    for _ in range(n_tokens):
        fresh = torch.randperm(n_experts, generator=gen).tolist()
        keep = prev[0] if torch.rand(1, generator=gen).item() < 0.5 else None
        row = [keep] if keep is not None else []
        row += [e for e in fresh if e not in row][: 2 - len(row)]
        if torch.rand(1, generator=gen).item() < 0.5:
            row.reverse()
        rows.append(row)
        prev = row
    return torch.tensor(rows)


# --- q1: hits of an LRU cache ---------------------------------------------------------------------


def lru_hits(requests: Tensor, capacity: int) -> int:
    """Total hits of a per-layer LRU cache of ``capacity`` experts on ``requests`` (T, k)."""
    missed = simulate_cache(requests, capacity, "lru", n_experts=int(requests.max()) + 1)
    return int((~missed).sum())


def _lru_inputs(gen: torch.Generator) -> tuple:
    n_experts = int(torch.randint(5, 9, (1,), generator=gen))
    capacity = int(torch.randint(3, n_experts, (1,), generator=gen))  # > k: the policy matters
    return _local_trace(gen, int(torch.randint(30, 60, (1,), generator=gen)), n_experts), capacity


def _fifo_hits(requests: Tensor, capacity: int) -> int:
    cache: list[int] = []  # oldest load first; a hit does not refresh
    hits = 0
    for needed in requests.tolist():
        for e in needed:
            if e in cache:
                hits += 1
                continue
            if len(cache) >= capacity:
                victim = next((c for c in cache if c not in needed), cache[0])
                cache.remove(victim)
            cache.append(e)
    return hits


def _mru_hits(requests: Tensor, capacity: int) -> int:
    cache: dict[int, int] = {}  # expert -> last use; evicts the most recently used
    hits = 0
    for t, needed in enumerate(requests.tolist()):
        for e in needed:
            if e in cache:
                hits += 1
                cache[e] = t
                continue
            if len(cache) >= capacity:
                candidates = [c for c in cache if c not in needed] or list(cache)
                del cache[max(candidates, key=lambda c: (cache[c], -c))]
            cache[e] = t
    return hits


def _lru_diagnose(args: tuple, expected: int, got: object) -> str | None:
    requests, capacity = args
    try:
        got = int(got)
    except (TypeError, ValueError):
        return None
    if got == expected:
        return None
    if got == _fifo_hits(requests, capacity):
        return (
            "you evict the expert that was loaded first (FIFO): a hit must also make the expert "
            "the most recently used, so that it is evicted last"
        )
    if got == int((~simulate_cache(requests, capacity, "belady")).sum()):
        return "you evict the expert needed furthest in the future (Belady): LRU looks back only"
    if got == _mru_hits(requests, capacity):
        return "you evict the most recently used expert: LRU evicts the least recently used one"
    return None


q1 = Exercise(
    title="Exercise 1 (hits of an LRU expert cache)",
    reference=lru_hits,
    make_inputs=_lru_inputs,
    hints=[
        "keep a dict expert -> the last token index that used it; it starts empty",
        "for each token, for each needed expert: in the dict -> a hit (update its time); "
        "otherwise a miss: if the dict is full, delete the entry with the smallest time among "
        "the experts this token does not need, then add the new expert",
        "update the time of an expert on every use, hits included: that is what makes it LRU",
    ],
    diagnose=_lru_diagnose,
)


# --- q2: recall of the speculative guess ----------------------------------------------------------


def guess_recall(guess_logits: Tensor, used: Tensor, n_guess: int) -> float:
    """Fraction of the used experts (N, k) that are among the ``n_guess`` experts with the
    largest guess logits (N, E): the recall of a speculative prefetch of n_guess experts."""
    guess = guess_logits.topk(n_guess, dim=-1).indices  # (N, g)
    found = (used.unsqueeze(-1) == guess.unsqueeze(-2)).any(dim=-1)  # (N, k)
    return found.float().mean().item()


def _recall_inputs(gen: torch.Generator) -> tuple:
    n, n_experts = int(torch.randint(20, 50, (1,), generator=gen)), 8
    logits = torch.randn(n, n_experts, generator=gen)
    used = (logits + torch.randn(n, n_experts, generator=gen)).topk(2, dim=-1).indices
    return logits, used, int(torch.randint(1, 5, (1,), generator=gen))


def _recall_diagnose(args: tuple, expected: float, got: object) -> str | None:
    logits, used, n_guess = args
    try:
        got = float(got)
    except (TypeError, ValueError):
        return None
    if math.isclose(got, expected, abs_tol=1e-6):
        return None
    if n_guess != 2 and math.isclose(got, expected * 2 / n_guess, abs_tol=1e-6):
        return (
            "you divided by the number of guesses (that is precision): recall divides the "
            "experts found by the number of experts actually used"
        )
    if math.isclose(got, guess_recall(logits, used, 1), abs_tol=1e-6) and n_guess != 1:
        return f"you guessed only the top-1 expert: take the top n_guess={n_guess}"
    return None


q2 = Exercise(
    title="Exercise 2 (recall of a speculative prefetch)",
    reference=guess_recall,
    make_inputs=_recall_inputs,
    hints=[
        "the guess is `guess_logits.topk(n_guess, dim=-1).indices`",
        "a used expert is found if it equals any of its row's guesses: compare (N, k, 1) with "
        "(N, 1, g) and take `.any(dim=-1)`; the order of the guesses does not matter",
        "recall = the mean of that (N, k) boolean tensor, as a Python float",
    ],
    diagnose=_recall_diagnose,
)


# --- q3: Belady's victim --------------------------------------------------------------------------


def belady_choice(cached: list[int], future: Tensor) -> int:
    """The cached expert Belady evicts: needed furthest in ``future`` (T', k) (never = infinitely
    far; ties to the lowest id)."""
    next_use = {}
    for e in cached:
        rows = (future == e).any(dim=-1).nonzero()
        next_use[e] = int(rows[0]) if len(rows) else math.inf
    return belady_victim(
        sorted(cached), [next_use.get(e, math.inf) for e in range(max(cached) + 1)]
    )


def _belady_inputs(gen: torch.Generator) -> tuple:
    n_experts = 8
    cached = torch.randperm(n_experts, generator=gen)[
        : int(torch.randint(3, 6, (1,), generator=gen))
    ]
    future = _local_trace(gen, int(torch.randint(5, 12, (1,), generator=gen)), n_experts)
    return sorted(cached.tolist()), future


def _belady_diagnose(args: tuple, expected: int, got: object) -> str | None:
    cached, future = args
    if isinstance(got, torch.Tensor):
        return (
            f"you returned {'a 0-d' if got.dim() == 0 else f'a {tuple(got.shape)}'} tensor: "
            "return the victim as an integer (a Python int, e.g. int(...)), one expert id"
        )
    if not isinstance(got, int) or isinstance(got, bool):
        return None
    if got == expected:
        return None
    uses = {e: int((future == e).sum()) for e in cached}
    if got in cached and uses[got] == 0 and uses[expected] == 0:
        return (
            "several cached experts are never needed again (all equally far): break the tie "
            "with the lowest expert id"
        )
    firsts = {
        e: int(r[0]) if len(r := (future == e).any(-1).nonzero()) else math.inf for e in cached
    }
    if got in cached and firsts[got] == min(firsts.values()) != max(firsts.values()):
        return "you evicted the expert needed soonest: Belady evicts the one needed furthest away"
    if got in cached and uses[got] == min(uses.values()) and firsts[got] != firsts[expected]:
        return (
            "you evicted the expert used least often in the future: Belady looks at when each "
            "expert is needed next, not how often"
        )
    if got not in cached:
        return f"{got!r} is not in the cache {cached}: the victim must be a cached expert"
    return None


q3 = Exercise(
    title="Exercise 3 (Belady's furthest-in-future victim)",
    reference=belady_choice,
    make_inputs=_belady_inputs,
    hints=[
        "for each cached expert, find the first row of `future` that contains it",
        "an expert that never appears again is needed 'infinitely far' away: use math.inf",
        "evict the expert with the largest next-use index; among equals, the lowest id",
    ],
    diagnose=_belady_diagnose,
    trials=8,
)

"""Exercises of notebook 2.3 (Roller et al., 2021): expert loads of a hash table, a balanced
table, and the slope of Zipf's law."""

from __future__ import annotations

import torch
from torch import Tensor

from adaedu.exercises import Exercise
from adaedu.moe.hashing import expert_loads, greedy_balanced_table, zipf_fit


def _zipf_counts(gen: torch.Generator, vocab: int) -> Tensor:
    """Zipf-like counts (s ~ 1) in a random order of the ids, so the ids are not the ranks."""
    s = 0.8 + 0.4 * torch.rand(1, generator=gen).item()
    ranks = torch.arange(1, vocab + 1, dtype=torch.float64)
    counts = (2000.0 * ranks**-s).round().long() + 1
    return counts[torch.randperm(vocab, generator=gen)]


# --- q1: tokens per expert under a hash table -----------------------------------------------


def _loads_inputs(gen: torch.Generator) -> tuple:
    vocab = int(torch.randint(20, 60, (1,), generator=gen))
    n_experts = int(torch.randint(3, 7, (1,), generator=gen))
    table = torch.randint(0, n_experts - 1, (vocab,), generator=gen)  # the last expert: no type
    counts = _zipf_counts(gen, vocab).double()
    ids = torch.multinomial(counts, 300, replacement=True, generator=gen).view(10, 30)
    return table, ids, n_experts


def _loads_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    table, ids, n_experts = args
    if not isinstance(got, Tensor):
        return None
    if got.shape == expected.shape and torch.equal(
        got.long(), torch.bincount(table, minlength=n_experts)
    ):
        return (
            "you counted token *types* per expert (how many ids the table gives each expert): "
            "the load is the number of *tokens* in token_ids that land on each expert, so "
            "frequent types count many times"
        )
    if got.numel() == n_experts - 1:
        return (
            f"your result has {got.numel()} entries, one short: an expert that receives no "
            f"token still needs its 0 (`torch.bincount(..., minlength={n_experts})`)"
        )
    if got.shape == ids.shape:
        return "you returned the expert of every token; count them per expert (bincount)"
    return None


q1 = Exercise(
    title="Exercise 1 (tokens per expert under a hash table)",
    reference=expert_loads,
    make_inputs=_loads_inputs,
    hints=[
        "token t goes to expert table[token_ids[t]]: index the table with all ids at once",
        "then count how many tokens went to each expert: torch.bincount over the flattened "
        "expert indices",
        "give bincount minlength=n_experts, so experts that get nothing still appear (as 0)",
    ],
    diagnose=_loads_diagnose,
)


# --- q2: a balanced hash table (largest first, least loaded expert) -------------------------


def _balanced_inputs(gen: torch.Generator) -> tuple:
    vocab = int(torch.randint(15, 40, (1,), generator=gen))
    n_experts = int(torch.randint(3, 6, (1,), generator=gen))
    return _zipf_counts(gen, vocab), n_experts


def _loads_of(table: Tensor, counts: Tensor, n_experts: int) -> Tensor:
    return torch.zeros(n_experts, dtype=torch.float64).index_add_(0, table.long(), counts.double())


def _greedy_in_order(counts: Tensor, n_experts: int, largest_first: bool) -> Tensor:
    """Least-loaded greedy, visiting types largest first or smallest first."""
    order = torch.argsort(counts, descending=largest_first, stable=True)
    loads, table = [0.0] * n_experts, torch.zeros(len(counts), dtype=torch.long)
    for token_id in order.tolist():
        e = min(range(n_experts), key=lambda i: (loads[i], i))
        table[token_id], loads[e] = e, loads[e] + float(counts[token_id])
    return table


def _balanced_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    counts, n_experts = args
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        return None
    if torch.equal(got.long(), expected):
        return None
    if got.is_floating_point() or got.dtype == torch.bool:
        return None  # the generic message names the dtype
    if got.numel() and (got.min() < 0 or got.max() >= n_experts):
        if got.min() >= 1 and got.max() <= n_experts:
            return f"expert ids start at 0: use 0..{n_experts - 1}, not 1..{n_experts}"
        return f"every entry must be an expert id in 0..{n_experts - 1}"
    got_loads, ref_loads = _loads_of(got, counts, n_experts), _loads_of(expected, counts, n_experts)
    order = torch.argsort(counts, descending=True, stable=True)
    round_robin = torch.empty_like(expected)
    round_robin[order] = torch.arange(len(counts)) % n_experts
    if torch.equal(got.long(), round_robin):
        return (
            "you dealt the types out in turn (0, 1, 2, ...): the most frequent types all land on "
            "the first experts. Give each type to the expert with the fewest tokens so far"
        )
    if torch.equal(got.long(), _greedy_in_order(counts, n_experts, largest_first=False)):
        return (
            "you visited the types from the least to the most frequent: the big types come last "
            "and nothing can even them out. Go largest first"
        )
    if got_loads.max() > ref_loads.max() + 1e-9:
        return (
            f"your busiest expert gets {got_loads.max():.0f} tokens, the greedy rule gives "
            f"{ref_loads.max():.0f}: always pick the *least* loaded expert"
        )
    return (
        "the loads are fine but the table differs: break ties by the smaller token id "
        "(a stable sort) and the smaller expert index"
    )


q2 = Exercise(
    title="Exercise 2 (a balanced hash table)",
    reference=greedy_balanced_table,
    make_inputs=_balanced_inputs,
    hints=[
        "keep a list of loads, one per expert, starting at 0",
        "visit token ids in order of decreasing count: torch.argsort(counts, descending=True, "
        "stable=True)",
        "give each id to the expert with the smallest load so far (ties: smaller index), and "
        "add the id's count to that expert's load",
    ],
    diagnose=_balanced_diagnose,
)


# --- q3: the slope of Zipf's law --------------------------------------------------------------


def _zipf_inputs(gen: torch.Generator) -> tuple:
    vocab = int(torch.randint(30, 80, (1,), generator=gen))
    counts = _zipf_counts(gen, vocab).double()
    noisy = counts * (1 + 0.3 * torch.rand(vocab, generator=gen, dtype=torch.float64))
    freqs = noisy.sort(descending=True).values
    return (freqs / freqs.sum(),)


def _zipf_slope(freqs: Tensor) -> float:
    """The slope of log frequency against log rank over all ranks (reference of q3)."""
    return zipf_fit(freqs)[0]


def _zipf_diagnose(args: tuple, expected: float, got: object) -> str | None:
    (freqs,) = args
    try:
        g = float(got)
    except (TypeError, ValueError):
        return None
    ranks = torch.arange(1, len(freqs) + 1, dtype=torch.float64)

    def slope(x: Tensor, y: Tensor) -> float:
        return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())

    if abs(g - slope(ranks, freqs.log())) < 1e-6:
        return "you fitted log frequency against the rank itself: use log rank on the x axis"
    if abs(g + expected) < 1e-6:
        return "your sign is flipped: frequency falls with rank, so the slope is negative"
    if abs(g - slope(freqs.log(), ranks.log())) < 1e-6:
        return "you swapped the axes: x is log rank, y is log frequency"
    if abs(g - slope(ranks - 1, freqs.log())) < 1e-6 or not abs(g) < float("inf"):
        return "ranks start at 1 (log 0 is -inf): rank r = 1, 2, ..., V"
    return None


q3 = Exercise(
    title="Exercise 3 (the slope of Zipf's law)",
    reference=_zipf_slope,
    make_inputs=_zipf_inputs,
    hints=[
        "freqs is already sorted, most frequent first: the rank of entry i is i + 1",
        "x = log(rank), y = log(freq); the least-squares slope is "
        "sum((x - mean x)(y - mean y)) / sum((x - mean x)^2)",
        "return a float (about -1 for Zipf's law)",
    ],
    diagnose=_zipf_diagnose,
    atol=1e-6,
)

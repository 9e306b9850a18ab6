"""Exercises of notebook 2.15 (Jiang et al., 2024, Mixtral): the chance of overlapping top-k
sets, the first-choice repetition rate of Table 5, and Mixtral's total and active parameters."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adaedu.exercises import Exercise
from adaedu.moe.mixtral import mixtral_parameters, repetition_rates, uniform_chance_rates

# --- q1: chance that two random top-k sets share an expert ---------------------------------------


def overlap_chance(n_experts: int, k: int) -> float:
    """P(two independent uniform k-subsets of E experts share at least one expert)."""
    return uniform_chance_rates(n_experts, k)["overlap"]


def _overlap_inputs(gen: torch.Generator) -> tuple:
    e = int(torch.randint(4, 17, (1,), generator=gen))
    k = int(torch.randint(2, max(3, e // 2), (1,), generator=gen))
    return e, k


def _near(got: object, value: float, expected: float) -> bool:
    try:
        g = float(got)
    except (TypeError, ValueError):
        return False
    return abs(g - value) < 1e-6 and abs(g - expected) > 1e-6


def _overlap_diagnose(args: tuple, expected: float, got: object) -> str | None:
    e, k = args
    disjoint = math.comb(e - k, k) / math.comb(e, k)
    if _near(got, disjoint, expected):
        return (
            "you returned the chance that the two sets are disjoint: the overlap chance is "
            "1 minus that"
        )
    if _near(got, 1 / math.comb(e, k), expected):
        return "that is the chance of the *same* set of k experts; any shared expert counts"
    if _near(got, k / e, expected):
        return (
            f"k/E = {k}/{e} is the chance that one given expert is in a random set; the second "
            "set can hit any of the first set's k experts"
        )
    if _near(got, 1 - (1 - k / e) ** k, expected):
        return (
            "you treated the k draws as independent (with replacement); the k experts of a "
            "token are distinct, so count subsets: C(E-k, k) of the C(E, k) sets avoid the first"
        )
    return None


q1 = Exercise(
    title="Exercise 1 (chance of a shared expert)",
    reference=overlap_chance,
    make_inputs=_overlap_inputs,
    hints=[
        "fix the first token's k experts; the second token's set is one of C(E, k) equally "
        "likely sets",
        "the sets that share nothing with the first use only the other E - k experts: "
        "C(E - k, k) of them",
        "math.comb(n, r) computes C(n, r); the answer is 1 - C(E-k, k) / C(E, k)",
    ],
    diagnose=_overlap_diagnose,
)


# --- q2: first-choice repetition rate (Table 5) ---------------------------------------------------


def first_choice_repetition(chosen: Tensor) -> float:
    """Share of consecutive token pairs (within a sequence) with the same first-choice expert."""
    return repetition_rates(chosen)["first"]


def _chosen_inputs(gen: torch.Generator) -> tuple:
    b = int(torch.randint(2, 6, (1,), generator=gen))
    t = int(torch.randint(5, 30, (1,), generator=gen))
    e = int(torch.randint(3, 6, (1,), generator=gen))
    chosen = torch.stack([torch.randperm(e, generator=gen)[:2] for _ in range(b * t)])
    return (chosen.reshape(b, t, 2),)


def _chosen_diagnose(args: tuple, expected: float, got: object) -> str | None:
    (chosen,) = args
    flat = chosen.reshape(-1, 2)
    across = float((flat[:-1, 0] == flat[1:, 0]).float().mean())
    if _near(got, across, expected):
        return (
            "you flattened the batch, so the last token of one sequence was paired with the "
            "first token of the next: compare chosen[:, :-1] with chosen[:, 1:]"
        )
    a, b = chosen[:, :-1], chosen[:, 1:]
    overlap = float((a.unsqueeze(-1) == b.unsqueeze(-2)).any(-1).any(-1).float().mean())
    if _near(got, overlap, expected):
        return "you counted any shared expert (first or second choice); compare the first choices"
    both = float((a == b).all(dim=-1).float().mean())
    if _near(got, both, expected):
        return "you required both choices to match; only the first choice (index 0) counts"
    second = float((a[..., 1] == b[..., 1]).float().mean())
    if _near(got, second, expected):
        return "you compared the second choices; the first choice is chosen[..., 0]"
    return None


q2 = Exercise(
    title="Exercise 2 (first-choice repetition, Table 5)",
    reference=first_choice_repetition,
    make_inputs=_chosen_inputs,
    hints=[
        "chosen[..., 0] is each token's first choice, shape (B, T)",
        "token t and token t + 1 of each row: first[:, :-1] and first[:, 1:]",
        "the rate is the mean of (first[:, :-1] == first[:, 1:]) as floats",
    ],
    diagnose=_chosen_diagnose,
)


# --- q3: total and active parameters (Table 1) ----------------------------------------------------


def _params_inputs(gen: torch.Generator) -> tuple:
    def r(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi, (1,), generator=gen))

    n_kv = r(1, 4)
    n_heads = n_kv * r(2, 5)  # grouped-query: n_kv_heads < n_heads, so the mistake shows
    e = r(4, 9)
    return (r(8, 65), r(1, 5), r(4, 17), r(16, 129), n_heads, n_kv, r(50, 300), e, r(1, e))


def _params_diagnose(args: tuple, expected: tuple, got: object) -> str | None:
    if not isinstance(got, tuple | list) or len(got) != 2:
        return None
    try:
        got = (int(got[0]), int(got[1]))
    except (TypeError, ValueError):
        return None
    dim, n_layers, head_dim, hidden, n_heads, n_kv, vocab, e, k = args
    if got == tuple(
        mixtral_parameters(dim, n_layers, head_dim, hidden, n_heads, n_heads, vocab, e, k)
    ):
        return (
            "your attention has as many key/value heads as query heads; Mixtral uses grouped-"
            "query attention: W_k and W_v have n_kv_heads * head_dim columns"
        )
    if got == tuple(mixtral_parameters(*args, tie_embeddings=True)):
        return "Mixtral's output matrix is not tied to the embedding: count vocab_size * dim twice"
    if got[0] == expected[0] and got[1] == expected[1] + n_layers * (e - k) * 3 * dim * hidden:
        return "your active count includes all E experts; a token uses only its top k"
    two = 2 * dim * hidden * n_layers
    if got[0] == expected[0] - e * two // 2 and got[1] == expected[1] - k * two // 2:
        return "a SwiGLU expert has three matrices (gate, up, down), not two"
    if got[0] == expected[0] - n_layers * dim * e:
        return "you forgot the router W_g (dim x E per layer)"
    return None


q3 = Exercise(
    title="Exercise 3 (Mixtral's total and active parameters, Table 1)",
    reference=mixtral_parameters,
    make_inputs=_params_inputs,
    hints=[
        "per layer: W_q and W_o are dim x (n_heads * head_dim); W_k and W_v dim x "
        "(n_kv_heads * head_dim)",
        "each expert: 3 * dim * hidden_dim; the router: dim * n_experts; two RMSNorm gains of dim",
        "once: embedding and (untied) output matrix vocab_size * dim each, and a final norm of "
        "dim; active = the same with top_k experts instead of n_experts",
    ],
    diagnose=_params_diagnose,
    atol=0.5,
    rtol=0.0,
)

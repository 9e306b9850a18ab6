"""Exercises of notebook 4.1 (Graves 2016, ACT): the halting distribution and the parity target."""

from __future__ import annotations

import torch
from torch import Tensor

from adaedu.exercises import Exercise
from adaedu.halting.act import halting_distribution


def parity_target(x: Tensor) -> Tensor:
    """The parity target of Graves (2016, Sec. 3.1): 1.0 if x holds an odd number of +1 entries."""
    return ((x == 1).sum(dim=-1) % 2).float()


def _close(a: object, b: Tensor) -> bool:
    return isinstance(a, Tensor) and a.shape == b.shape and torch.allclose(a.float(), b, atol=1e-5)


# --- q1: ACT's halting distribution -------------------------------------------------


def _halting_inputs(gen: torch.Generator) -> tuple:
    batch = int(torch.randint(3, 7, (1,), generator=gen))
    cap = int(torch.randint(4, 8, (1,), generator=gen))
    h = torch.rand(batch, cap, generator=gen) * 0.6
    h[0] = 0.05  # one row never reaches 1 - eps: the step cap must halt it
    return h, 0.01


def _halting_diagnose(args: tuple, expected: tuple, got: object) -> str | None:
    h, eps = args
    if not isinstance(got, tuple | list) or len(got) != 3:
        return None
    n_exp, r_exp, p_exp = expected
    n_got, r_got, p_got = got
    if _close(n_got, n_exp - 1):
        return "your N is 0-based: ACT counts steps from 1 (N = 1 means one step was run)"
    if _close(r_got, 1 - (h * (torch.arange(h.shape[1]) < n_exp[:, None])).sum(1)):
        return "your remainder subtracts h_N too: R = 1 - sum of h_n over the steps *before* N"
    if isinstance(n_got, Tensor) and n_got.shape == n_exp.shape and n_got[0] != n_exp[0]:
        return (
            "the first row never reaches 1 - eps: the step cap must stop it at the last step, "
            f"N = {h.shape[1]}"
        )
    if _close(p_got, h):
        return "p_n is h_n only before N: at N it is the remainder R, and 0 after N"
    return None


q1 = Exercise(
    title="Exercise 1 (ACT's halting step, remainder and distribution)",
    reference=halting_distribution,
    make_inputs=_halting_inputs,
    hints=[
        "cumsum the halting units along the steps; N is the first step where the sum reaches "
        "1 - eps (1-based), or the last step if it never does",
        "R = 1 - (sum of h_n for n < N); p_n = h_n for n < N, R at N, 0 after",
        "`(cum >= 1 - eps).float().argmax(dim=1)` finds the first True; force the last column "
        "True first",
    ],
    diagnose=_halting_diagnose,
)


# --- q2: the parity target -----------------------------------------------------------------------


def _parity_inputs(gen: torch.Generator) -> tuple:
    x = torch.randint(-1, 2, (int(torch.randint(8, 20, (1,), generator=gen)), 10), generator=gen)
    return (x.float(),)


def _parity_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    (x,) = args
    if _close(got, ((x != 0).sum(-1) % 2).float()):
        return "you counted all nonzero entries: the target is the parity of the +1 entries only"
    if _close(got, ((x == -1).sum(-1) % 2).float()):
        return "you counted the -1 entries: the target counts the +1 entries"
    if _close(got, 1 - expected):
        return "your target is flipped: it is 1 when the number of +1 entries is odd"
    return None


q2 = Exercise(
    title="Exercise 2 (the parity target)",
    reference=parity_target,
    make_inputs=_parity_inputs,
    hints=[
        "`(x == 1)` marks the +1 entries; sum them along the last dimension",
        "the target is that count modulo 2, as a float tensor",
    ],
    diagnose=_parity_diagnose,
)

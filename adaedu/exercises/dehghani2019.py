"""Exercises of notebook 4.2 (Dehghani et al., 2019): the coordinate embedding, one per-position
ACT step, and sequence accuracy with unscored slots."""

from __future__ import annotations

import torch
from torch import Tensor

from adaedu.exercises import Exercise
from adaedu.halting.universal import (
    IGNORE,
    coordinate_embedding,
    halting_step,
    sequence_accuracy,
    sinusoid,
)


def _close(a: object, b: Tensor, atol: float = 1e-4) -> bool:
    return isinstance(a, Tensor) and a.shape == b.shape and torch.allclose(a.float(), b, atol=atol)


# --- q1: the coordinate embedding P^t -----------------------------------------------------------


def _coord_inputs(gen: torch.Generator) -> tuple:
    b, t = (
        int(torch.randint(1, 4, (1,), generator=gen)),
        int(torch.randint(3, 9, (1,), generator=gen)),
    )
    d = 2 * int(torch.randint(2, 9, (1,), generator=gen))
    offset = torch.randint(0, 30, (b, 1), generator=gen)
    step = int(torch.randint(1, 8, (1,), generator=gen))
    return offset + torch.arange(t), step, d


def _coord_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    positions, step, d = args
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        return None
    if _close(got, sinusoid(positions, d)):
        return "you returned the position embedding only: P^t also adds the embedding of the step t"
    time = torch.full((1, 1), float(step))
    if _close(got, sinusoid(positions, d) + sinusoid(time + 1, d)) or _close(
        got, sinusoid(positions, d) + sinusoid(time - 1, d)
    ):
        return "the step term is off by one: use the step number exactly as given"
    swapped = sinusoid(positions, d).view(*positions.shape, -1, 2).flip(-1).flatten(-2)
    if _close(got, swapped + sinusoid(time, d).view(1, 1, -1, 2).flip(-1).flatten(-2)):
        return (
            "sin and cos are swapped: even features (2j) take the sine, odd ones (2j+1) the cosine"
        )
    return None


q1 = Exercise(
    title="Exercise 1 (coordinate embedding P^t)",
    reference=coordinate_embedding,
    make_inputs=_coord_inputs,
    hints=[
        "P^t = (embedding of the position i) + (embedding of the step t), both sinusoidal",
        "`sinusoid(values, d)` from adaedu.halting.universal embeds any tensor of numbers",
        "embed the step as a (1, 1) tensor so that it broadcasts over (B, T)",
    ],
    diagnose=_coord_diagnose,
)


# --- q2: one per-position ACT step --------------------------------------------------------------


def _halt_inputs(gen: torch.Generator) -> tuple:
    b, t = (
        int(torch.randint(2, 5, (1,), generator=gen)),
        int(torch.randint(4, 10, (1,), generator=gen)),
    )
    halting = torch.rand(b, t, generator=gen) * 0.9
    halting[torch.rand(b, t, generator=gen) < 0.25] = 1.0  # some positions have halted already
    p = torch.rand(b, t, generator=gen)
    return halting, p, 0.99


def _halt_diagnose(args: tuple, expected: tuple, got: object) -> str | None:
    halting, p, threshold = args
    if not isinstance(got, tuple) or len(got) != 3:
        return None
    weight = got[0]
    if not isinstance(weight, Tensor) or weight.shape != p.shape:
        return None
    done = halting >= 1.0
    if (weight[done].abs() > 1e-6).any():
        return "a position that has already halted must get weight 0: its state is copied through"
    halts = expected[2]
    if _close(weight[halts], p[halts]) and not _close(weight, expected[0]):
        return (
            "a position that halts now gets the remainder R = 1 - (sum of its earlier p), not p: "
            "otherwise its weights do not sum to 1"
        )
    return None


q2 = Exercise(
    title="Exercise 2 (one per-position ACT step)",
    reference=halting_step,
    make_inputs=_halt_inputs,
    hints=[
        "running = halting < 1; a running position halts now if halting + p > threshold",
        "weight: R = 1 - halting if it halts now, p if it keeps running, 0 if it had halted",
        "new halting: 1 where it halts now, halting + p where it keeps running, unchanged else",
    ],
    diagnose=_halt_diagnose,
)


# --- q3: character and sequence accuracy --------------------------------------------------------


def _acc_inputs(gen: torch.Generator) -> tuple:
    b, t, v = 16, int(torch.randint(4, 9, (1,), generator=gen)), 6
    targets = torch.randint(v, (b, t), generator=gen)
    logits = torch.randn(b, t, v, generator=gen)
    right = torch.rand(b, t, generator=gen) < 0.85  # mostly right, so seq_acc is not 0
    logits[right] = logits[right].scatter(-1, targets[right][:, None], 10.0)
    logits[:, [0, -1]] = 0.0  # the markers: argmax 0, usually "wrong"
    targets[:, [0, -1]] = IGNORE
    return logits, targets


def _acc_diagnose(args: tuple, expected: tuple, got: object) -> str | None:
    logits, targets = args
    if not isinstance(got, tuple | list) or len(got) != 2:
        return None
    c, s = (float(g) for g in got)
    pred = logits.argmax(-1)
    if abs(c - (pred == targets).float().mean().item()) < 1e-6 and abs(c - expected[0]) > 1e-6:
        return "char_acc counts the IGNORE slots as wrong: score only slots with target != IGNORE"
    inner = (pred == targets)[:, 1:-1]
    if abs(s - inner.float().mean().item()) < 1e-6 and abs(s - expected[1]) > 1e-6:
        return "seq_acc is the fraction of sequences that are right in EVERY scored slot"
    if (
        abs(s - (pred == targets).all(1).float().mean().item()) < 1e-6
        and abs(s - expected[1]) > 1e-6
    ):
        return "seq_acc treats the IGNORE slots as wrong, so no sequence can ever be right"
    return None


q3 = Exercise(
    title="Exercise 3 (character and sequence accuracy)",
    reference=sequence_accuracy,
    make_inputs=_acc_inputs,
    hints=[
        "scored = targets != IGNORE; right = logits.argmax(-1) == targets",
        "char_acc: mean of right over the scored slots only",
        "seq_acc: a row counts if (right | ~scored) is true in every slot; return two floats",
    ],
    diagnose=_acc_diagnose,
)

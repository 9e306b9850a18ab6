"""Exercises of notebook 4.3 (Zhou et al. 2020, PaBEE): the patience rule, the weighted
training loss, and the overthinking rate. The references call adaedu.halting.multi_exit."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaedu.exercises import Exercise
from adaedu.halting import multi_exit as me


def patience_exit_layer(predictions: torch.Tensor, t: int) -> torch.Tensor:
    """Exit layer (1-based) of each example under PaBEE's patience rule, from the predicted class
    of every head, ``predictions`` of shape (n_layers, batch): the first layer where the
    prediction has equalled the previous layer's ``t`` times in a row; the last layer if never."""
    n_classes = int(predictions.max()) + 1
    logits = F.one_hot(predictions, n_classes).float()  # any logits with these argmaxes
    return me.simulate_exits(logits, me.Patience(t)).exit_layer


def _predictions(gen: torch.Generator) -> tuple:
    n_layers = int(torch.randint(4, 9, (1,), generator=gen))
    batch = int(torch.randint(6, 12, (1,), generator=gen))
    n_classes = int(torch.randint(2, 4, (1,), generator=gen))  # few classes: many repeats
    t = int(torch.randint(1, 4, (1,), generator=gen))
    return torch.randint(0, n_classes, (n_layers, batch), generator=gen), t


def _diagnose_patience(args: tuple, expected: torch.Tensor, got: object) -> str | None:
    predictions, t = args
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return None
    got = got.long()
    if torch.equal(got, expected):
        return None
    if torch.equal(got, expected - 1):
        return "your layers are one lower everywhere: return 1-based layer numbers (1..n_layers)"
    if torch.equal(got, patience_exit_layer(predictions, t + 1)):
        return (
            "you leave one layer late: t = 1 means 'the prediction stayed the same once', i.e. "
            "two equal predictions in a row"
        )
    if t > 1 and torch.equal(got, patience_exit_layer(predictions, t - 1)):
        return (
            "you leave one layer early: the counter starts at 0 at layer 1 and grows by one for "
            "each layer that agrees with the previous one; leave when it reaches t"
        )
    if (got == 0).any() or (got > predictions.shape[0]).any():
        return "an example that never runs out of patience leaves at the last layer, n_layers"
    return None


q1 = Exercise(
    title="Exercise 1 (the patience rule)",
    reference=patience_exit_layer,
    make_inputs=_predictions,
    hints=[
        "keep a counter per example: +1 when predictions[i] == predictions[i-1], else back to 0",
        "an example leaves at the first layer i (1-based) where its counter reaches t; "
        "examples that never get there leave at layer n_layers",
    ],
    diagnose=_diagnose_patience,
)


def weighted_exit_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PaBEE's training loss: sum_j j * CE(logits[j-1], labels) / sum_j j, for logits of shape
    (n_layers, batch, n_classes)."""
    return me.pabee_loss(logits, labels)


def _logits_labels(gen: torch.Generator) -> tuple:
    n_layers = int(torch.randint(2, 7, (1,), generator=gen))
    batch = int(torch.randint(3, 9, (1,), generator=gen))
    n_classes = int(torch.randint(3, 7, (1,), generator=gen))
    logits = 2 * torch.randn(n_layers, batch, n_classes, generator=gen)
    logits = logits * torch.linspace(0.3, 3.0, n_layers)[:, None, None]  # heads differ
    return logits, torch.randint(0, n_classes, (batch,), generator=gen)


def _diagnose_loss(args: tuple, expected: torch.Tensor, got: object) -> str | None:
    logits, labels = args
    if not isinstance(got, torch.Tensor) or got.numel() != 1:
        return None
    got = got.reshape(())
    if torch.allclose(got.to(expected.dtype), expected, atol=1e-5, rtol=1e-4):
        return None
    n = logits.shape[0]
    ce = torch.stack([F.cross_entropy(logits[j], labels) for j in range(n)])
    j = torch.arange(1, n + 1, dtype=ce.dtype)
    wrong = {
        "you averaged the heads' losses with equal weights: weight head j by j": ce.mean(),
        "you weighted the first heads most: head j (1-based, counting from the input) gets "
        "weight j, so the deepest head counts most": (j.flip(0) * ce).sum() / j.sum(),
        "you forgot to divide by sum_j j": (j * ce).sum(),
        "your weights start at 0: use j = 1..n_layers, so the first head is trained too": (
            (j - 1) * ce
        ).sum()
        / j.sum(),
    }
    for message, value in wrong.items():
        if torch.allclose(got.to(value.dtype), value, atol=1e-5, rtol=1e-4):
            return message
    return None


q2 = Exercise(
    title="Exercise 2 (PaBEE's weighted loss)",
    reference=weighted_exit_loss,
    make_inputs=_logits_labels,
    hints=[
        "compute the cross-entropy of every head: F.cross_entropy(logits[j], labels)",
        "weights 1, 2, ..., n_layers (head 1 is closest to the input); divide by their sum",
    ],
    diagnose=_diagnose_loss,
)


def overthinking(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of examples that some earlier head classifies correctly while the last head is
    wrong, for logits of shape (n_layers, batch, n_classes)."""
    return me.overthinking_rate(logits, labels)


def _heads_disagree(gen: torch.Generator) -> tuple:
    n_layers = int(torch.randint(3, 7, (1,), generator=gen))
    batch = int(torch.randint(20, 40, (1,), generator=gen))
    n_classes = 3
    return torch.randn(n_layers, batch, n_classes, generator=gen), torch.randint(
        0, n_classes, (batch,), generator=gen
    )


def _diagnose_overthinking(args: tuple, expected: float, got: object) -> str | None:
    logits, labels = args
    try:
        g = float(got)
    except (TypeError, ValueError):
        return None
    correct = logits.argmax(-1) == labels
    last_wrong = ~correct[-1]
    wrong = {
        "you counted every example the last head gets wrong (its error rate): an overthinking "
        "example must also have been right at some earlier head": last_wrong.float().mean(),
        "you asked for *all* earlier heads to be right: one earlier head is enough": (
            last_wrong & correct[:-1].all(0)
        )
        .float()
        .mean(),
        "you divided by the number of last-head errors: divide by the number of examples": (
            (last_wrong & correct[:-1].any(0)).float().sum() / last_wrong.float().sum().clamp(min=1)
        ),
        "you looked only at the second-to-last head: any earlier head counts": (
            last_wrong & correct[-2]
        )
        .float()
        .mean(),
    }
    if abs(g - expected) < 1e-6:
        return None
    for message, value in wrong.items():
        if abs(g - float(value)) < 1e-6:
            return message
    return None


q3 = Exercise(
    title="Exercise 3 (overthinking rate)",
    reference=overthinking,
    make_inputs=_heads_disagree,
    hints=[
        "correct = logits.argmax(-1) == labels has shape (n_layers, batch)",
        "overthinking: not correct[-1], and correct[:-1].any(0); average over the batch",
    ],
    diagnose=_diagnose_overthinking,
)

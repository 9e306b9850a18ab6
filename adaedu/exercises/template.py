"""The template notebook's exercise: a softmax (an example of how exercises are written)."""

from __future__ import annotations

import torch

from adaedu.exercises import Exercise


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, shifted by the maximum for numerical stability."""
    z = x - x.max(dim=-1, keepdim=True).values
    return z.exp() / z.exp().sum(dim=-1, keepdim=True)


def _inputs(gen: torch.Generator) -> tuple:
    rows, cols = torch.randint(2, 6, (2,), generator=gen).tolist()
    return (torch.randn(rows, cols + 1, generator=gen) * 5,)


def _diagnose(args: tuple, expected: torch.Tensor, got: object) -> str | None:
    if isinstance(got, torch.Tensor) and got.shape == expected.shape:
        if (
            torch.allclose(got.sum(dim=0), torch.ones_like(got.sum(dim=0)), atol=1e-4)
            and got.shape[0] > 1
        ):
            return (
                "your values sum to 1 down each column: normalise over the last dimension (dim=-1)"
            )
    return None


q1 = Exercise(
    title="Exercise 1 (softmax)",
    reference=softmax,
    make_inputs=_inputs,
    hints=[
        "softmax(x)_j = exp(x_j) / sum_l exp(x_l), over the last dimension",
        "subtract the row maximum first so exp() cannot overflow",
    ],
    diagnose=_diagnose,
)


def one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Float one-hot rows: ``out[i, labels[i]] = 1``."""
    return (labels[:, None] == torch.arange(n_classes)).float()


def _labels(gen: torch.Generator) -> tuple:
    n_classes = int(torch.randint(3, 8, (1,), generator=gen))
    return torch.randint(
        0, n_classes - 1, (int(torch.randint(2, 9, (1,), generator=gen)),), generator=gen
    ), n_classes


q2 = Exercise(
    title="Exercise 2 (one-hot)",
    reference=one_hot,
    make_inputs=_labels,
    hints=[
        "compare each label with torch.arange(n_classes)",
        "use n_classes, not labels.max() + 1",
    ],
)

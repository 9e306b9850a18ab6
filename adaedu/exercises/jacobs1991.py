"""Exercises of notebook 1.1, Jacobs, Jordan, Nowlan & Hinton (1991), adaptive mixtures of experts.

- q1: the cooperative error function, eq. 1.1;
- q2: the paper's competitive error function, eq. 1.3 (Gaussian form);
- q3: how many experts are in use, from a matrix of gate values.

The references are the adaedu functions the notebook runs. Each ``diagnose`` recomputes the
common wrong answers on the same inputs and, when the learner's result matches one of them,
says in words what went wrong.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaedu.exercises import Exercise
from adaedu.precursors.local_experts import cooperative_loss, experts_in_use, gaussian_mixture_loss


def _matches(got: object, value: torch.Tensor | float) -> bool:
    """True if ``got`` is a number (or 0-d tensor) equal to ``value`` up to rounding."""
    try:
        return abs(float(got) - float(value)) <= 1e-5 + 1e-4 * abs(float(value))
    except (TypeError, ValueError, RuntimeError):
        return False


def _mixture_inputs(gen: torch.Generator, softmax_experts: bool) -> tuple:
    n, e, c = (int(v) for v in torch.randint(2, 7, (3,), generator=gen))
    gates = F.softmax(2 * torch.randn(n, e, generator=gen), dim=-1)
    logits = 2 * torch.randn(n, e, c, generator=gen)
    outputs = F.softmax(logits, dim=-1) if softmax_experts else 0.4 * logits
    labels = torch.randint(0, c, (n,), generator=gen)
    return gates, outputs, labels


# --- q1: eq. 1.1 -------------------------------------------------------------------------------


def _diagnose_cooperative(args: tuple, expected: torch.Tensor, got: object) -> str | None:
    gates, outputs, labels = args
    d = F.one_hot(labels, outputs.shape[2]).float()
    per_expert = ((d.unsqueeze(1) - outputs) ** 2).sum(-1)  # ||d - o_i||^2, (N, E)
    blend = (gates.unsqueeze(-1) * outputs).sum(1)
    mistakes = {
        "you weighted each expert's own error by its gate, sum_i g_i ||d - o_i||^2: that is "
        "eq. 1.2, the competitive version. Eq. 1.1 blends the outputs first, sum_i g_i o_i, "
        "and then takes one squared error": (gates * per_expert).sum(1).mean(),
        "you averaged the experts' outputs with equal weights: the blend must weight each "
        "expert by its gate g_i, not by 1/E": ((d - outputs.mean(1)) ** 2).sum(-1).mean(),
        "you summed over the cases: average the per-case error over the batch (mean, not sum)": (
            (d - blend) ** 2
        )
        .sum(-1)
        .sum(),
        "you took the length ||d - blend|| instead of its square": (d - blend).norm(dim=-1).mean(),
        "you averaged over the classes too: the squared error is a sum over the C output "
        "units, then a mean over cases": ((d - blend) ** 2).mean(),
    }
    for message, wrong in mistakes.items():
        if _matches(got, wrong) and not _matches(got, expected):
            return message
    return None


q1 = Exercise(
    title="Exercise 1 (cooperative error, eq. 1.1)",
    reference=cooperative_loss,
    make_inputs=lambda gen: _mixture_inputs(gen, softmax_experts=True),
    hints=[
        "d is the one-hot vector of the label: F.one_hot(labels, C).float(), shape (N, C)",
        "the blend is sum_i g_i o_i: (gates.unsqueeze(-1) * expert_probs).sum(dim=1), shape (N, C)",
        "square the difference d - blend, sum it over the classes, then average over the cases",
    ],
    diagnose=_diagnose_cooperative,
)


# --- q2: eq. 1.3 -------------------------------------------------------------------------------


def _diagnose_gaussian(args: tuple, expected: torch.Tensor, got: object) -> str | None:
    gates, outputs, labels = args
    d = F.one_hot(labels, outputs.shape[2]).float()
    sq_err = ((d.unsqueeze(1) - outputs) ** 2).sum(-1)  # ||d - o_i||^2, (N, E)
    mistakes = {
        "you left out the 1/2 in exp(-1/2 ||d - o_i||^2)": -(gates * torch.exp(-sq_err))
        .sum(1)
        .log()
        .mean(),
        "you took the log inside the sum over experts, -sum_i g_i log(...): that turns eq. 1.3 "
        "back into a gate-weighted squared error (eq. 1.2, halved). The log goes outside: "
        "-log sum_i g_i exp(...)": (gates * 0.5 * sq_err).sum(1).mean(),
        "your sign is flipped: the error is MINUS the log of the mixture likelihood": (
            gates * torch.exp(-0.5 * sq_err)
        )
        .sum(1)
        .log()
        .mean(),
        "you summed over the cases: average the per-case error over the batch (mean, not sum)": -(
            gates * torch.exp(-0.5 * sq_err)
        )
        .sum(1)
        .log()
        .sum(),
        "you mixed the experts' outputs before scoring them, as in eq. 1.1: eq. 1.3 scores each "
        "expert's own output o_i and mixes the likelihoods": (
            0.5 * ((d - (gates.unsqueeze(-1) * outputs).sum(1)) ** 2).sum(-1)
        ).mean(),
    }
    for message, wrong in mistakes.items():
        if _matches(got, wrong) and not _matches(got, expected):
            return message
    return None


q2 = Exercise(
    title="Exercise 2 (competitive error, eq. 1.3)",
    reference=gaussian_mixture_loss,
    make_inputs=lambda gen: _mixture_inputs(gen, softmax_experts=False),
    hints=[
        "first each expert's own squared error: ((d.unsqueeze(1) - expert_outputs) ** 2).sum(-1), "
        "shape (N, E)",
        "turn each error into a likelihood exp(-err / 2), weight by the gates and sum over experts",
        "finally -log of that sum, averaged over the cases",
    ],
    diagnose=_diagnose_gaussian,
)


# --- q3: experts in use --------------------------------------------------------------------------


def _gate_inputs(gen: torch.Generator) -> tuple:
    n, e = (
        int(torch.randint(20, 60, (1,), generator=gen)),
        int(torch.randint(3, 9, (1,), generator=gen)),
    )
    # Some experts get large negative offsets: like a trained gate that has switched them off.
    offsets = torch.where(torch.rand(e, generator=gen) < 0.5, -6.0, 0.0)
    gates = F.softmax(3 * torch.randn(n, e, generator=gen) + offsets, dim=-1)
    threshold = [0.05, 0.1, 0.2][int(torch.randint(0, 3, (1,), generator=gen))]
    return gates, threshold


def _diagnose_in_use(args: tuple, expected: int, got: object) -> str | None:
    gates, threshold = args
    mistakes = {
        "you counted the experts that win at least one case (argmax): the paper's measure is the "
        "mixing proportion averaged over all cases, gates.mean(dim=0)": gates.argmax(dim=1)
        .unique()
        .numel(),
        "you counted the experts whose gate exceeds the threshold on SOME case: average each "
        "expert's gate over the cases first (dim=0), then compare": int(
            (gates > threshold).any(0).sum()
        ),
        "you averaged over the experts (dim=1) instead of over the cases (dim=0)": int(
            (gates.mean(dim=1) > threshold).sum()
        ),
        "you summed the gates over the cases instead of averaging them": int(
            (gates.sum(dim=0) > threshold).sum()
        ),
    }
    for message, wrong in mistakes.items():
        if _matches(got, wrong) and not _matches(got, expected):
            return message
    if isinstance(got, torch.Tensor) and got.numel() > 1:
        return f"return one number (how many experts), not a tensor of shape {tuple(got.shape)}"
    return None


q3 = Exercise(
    title="Exercise 3 (experts in use)",
    reference=experts_in_use,
    make_inputs=_gate_inputs,
    hints=[
        "an expert's usage is its gate averaged over the cases: gates.mean(dim=0), shape (E,)",
        "count the experts whose usage is above the threshold, and return a Python int",
    ],
    diagnose=_diagnose_in_use,
)

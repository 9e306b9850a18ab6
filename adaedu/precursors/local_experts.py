"""Adaptive mixtures of local experts (Jacobs, Jordan, Nowlan & Hinton, 1991).

R. A. Jacobs, M. I. Jordan, S. J. Nowlan and G. E. Hinton. *Adaptive Mixtures of Local Experts.*
Neural Computation 3(1):79-87 (1991). https://doi.org/10.1162/neco.1991.3.1.79

A gating network turns the input into mixing proportions g_i(x) (a softmax: they are positive
and sum to 1) and n expert networks each give an output o_i(x). What makes the experts
*specialise* is the error function:

- eq. 1.1, cooperative: ``E = || d - sum_i g_i o_i ||^2``. The experts' outputs are *added*, so
  each expert learns to cancel the residual of the others: they cooperate and rarely specialise.
- eq. 1.3, competitive: ``E = -log sum_i g_i exp(-1/2 || d - o_i ||^2)``. Each expert must
  produce the *whole* answer on its own; the gate learns which expert to trust where.

Our experts are linear-softmax classifiers, so o_i is a probability vector over the classes and
the natural competitive loss is the multinomial analogue of eq. 1.3, the negative log-likelihood
of a mixture of categorical distributions: ``E = -log sum_i g_i o_i(y)``.

Shapes used throughout: N cases, E experts, C classes; ``gates`` (N, E), ``expert_probs`` or
``expert_outputs`` (N, E, C), ``labels`` (N,) integers in 0..C-1. Losses are averaged over the N cases (the paper
states them per case; the average only rescales the learning rate).

The rest of the module is the vowel experiment of the paper's section 3 (its Table 1): features, MLP
baselines, gate statistics, epochs to criterion, and a trainer that runs many independent
full-batch gradient-descent runs at once (one per seed and learning rate), each stopped at its
own criterion.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adaedu.data import Vowels, split_by_speaker
from adaedu.train import History, train

# --- checks shared by the public functions ------------------------------------------------------

#: Value checks (label ranges) need a single value per tensor, which a batched tensor inside
#: ``torch.func.vmap`` does not have; :func:`train_to_criterion` checks once up front and turns
#: them off for its vmapped inner loop. Shape checks always run.
_CHECK_VALUES: ContextVar[bool] = ContextVar("adaedu_check_values", default=True)


@contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """Run the block on one CPU thread: for tensors this small (hundreds of cases), threads cost
    more than they save, many times more on a busy machine. Restores the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _positive_int(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}; allowed values: an integer >= {minimum}")


def _check_gates(gates: torch.Tensor) -> None:
    if not isinstance(gates, torch.Tensor) or gates.dim() != 2:
        shape = tuple(gates.shape) if isinstance(gates, torch.Tensor) else type(gates).__name__
        raise ValueError(f"gates has shape {shape}; allowed: a 2-d tensor (cases N, experts E)")


def _check_mixture(
    gates: torch.Tensor, expert_out: torch.Tensor, name: str = "expert_probs"
) -> None:
    _check_gates(gates)
    if not isinstance(expert_out, torch.Tensor) or expert_out.dim() != 3:
        shape = (
            tuple(expert_out.shape)
            if isinstance(expert_out, torch.Tensor)
            else type(expert_out).__name__
        )
        raise ValueError(
            f"{name} has shape {shape}; allowed: a 3-d tensor (cases N, experts E, classes C)"
        )
    if expert_out.shape[:2] != gates.shape:
        raise ValueError(
            f"gates has shape {tuple(gates.shape)} but {name} has shape {tuple(expert_out.shape)}; "
            f"allowed: {name}.shape[:2] == gates.shape (same cases N and experts E)"
        )


def _check_labels(labels: torch.Tensor, n_cases: int, n_classes: int) -> None:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ValueError("labels must be a 1-d integer tensor of class indices")
    if labels.shape[0] != n_cases:
        raise ValueError(
            f"labels has {labels.shape[0]} entries for {n_cases} cases; allowed: one label per case"
        )
    if _CHECK_VALUES.get() and labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels range over {labels.min().item()}..{labels.max().item()}; "
            f"allowed values: 0..{n_classes - 1} (there are {n_classes} classes)"
        )


# --- the model -----------------------------------------------------------------------------------


class MixtureOfExperts(nn.Module):
    """n linear experts mixed by a softmax gating network (Jacobs et al. 1991, Fig. 1).

    Both the experts and the gate see the input ``x``; there is no hidden layer anywhere: the
    only non-linearity is *which* expert the gate trusts at ``x``. Each expert outputs class
    probabilities (``expert_outputs="softmax"``, the default) or unconstrained linear outputs
    (``"linear"``, usable with the squared-error losses of eq. 1.1 and eq. 1.3 only).
    """

    def __init__(
        self, in_features: int, n_classes: int, n_experts: int, expert_outputs: str = "softmax"
    ) -> None:
        super().__init__()
        _positive_int("in_features", in_features)
        _positive_int("n_classes", n_classes, minimum=2)
        _positive_int("n_experts", n_experts)
        if expert_outputs not in ("softmax", "linear"):
            raise ValueError(
                f"expert_outputs={expert_outputs!r}; allowed values: 'softmax', 'linear'"
            )
        self.expert_outputs = expert_outputs
        self.experts = nn.ModuleList(nn.Linear(in_features, n_classes) for _ in range(n_experts))
        self.gate = nn.Linear(in_features, n_experts)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(gates, expert_outputs)``, shapes (N, E) and (N, E, C)."""
        if x.dim() != 2 or x.shape[1] != self.gate.in_features:
            raise ValueError(f"x has shape {tuple(x.shape)}; allowed: (N, {self.gate.in_features})")
        gates = F.softmax(self.gate(x), dim=-1)  # g_i = exp(s_i) / sum_j exp(s_j)
        outputs = torch.stack([e(x) for e in self.experts], dim=1)  # o_i = W_i x + b_i
        if self.expert_outputs == "softmax":
            outputs = F.softmax(outputs, dim=-1)  # o_i = softmax(W_i x + b_i)
        return gates, outputs


class MLP(nn.Module):
    """The paper's back-propagation baseline: one hidden layer of tanh units, class logits out."""

    def __init__(self, in_features: int, hidden: int, n_classes: int) -> None:
        super().__init__()
        _positive_int("in_features", in_features)
        _positive_int("hidden", hidden)
        _positive_int("n_classes", n_classes, minimum=2)
        self.hidden = nn.Linear(in_features, hidden)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits, shape (N, C)."""
        if x.dim() != 2 or x.shape[1] != self.hidden.in_features:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; allowed: (N, {self.hidden.in_features})"
            )
        return self.out(torch.tanh(self.hidden(x)))


class LogisticMLP(nn.Module):
    """Back-propagation as in 1991: one hidden layer of logistic units and logistic output units,
    trained with squared error on one-hot targets (:func:`squared_error`; Rumelhart et al. 1986).
    The outputs lie in (0, 1) but need not sum to 1; the largest one is the answer."""

    def __init__(self, in_features: int, hidden: int, n_classes: int) -> None:
        super().__init__()
        _positive_int("in_features", in_features)
        _positive_int("hidden", hidden)
        _positive_int("n_classes", n_classes, minimum=2)
        self.hidden = nn.Linear(in_features, hidden)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the output units' activations, shape (N, C), each in (0, 1)."""
        if x.dim() != 2 or x.shape[1] != self.hidden.in_features:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; allowed: (N, {self.hidden.in_features})"
            )
        return torch.sigmoid(self.out(torch.sigmoid(self.hidden(x))))


# --- the error functions ---------------------------------------------------------------------------


def mixture_output(gates: torch.Tensor, expert_outputs: torch.Tensor) -> torch.Tensor:
    """The system's output sum_i g_i o_i, shape (N, C): the blend that eq. 1.1 compares to d.

    With softmax experts it is a probability vector over the classes; its argmax is the answer.
    """
    _check_mixture(gates, expert_outputs, name="expert_outputs")
    return (gates.unsqueeze(-1) * expert_outputs).sum(dim=1)  # sum_i g_i o_i


def cooperative_loss(
    gates: torch.Tensor, expert_outputs: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Eq. 1.1: E = || d - sum_i g_i o_i ||^2, with d the one-hot target; mean over cases.

    Only the blend is judged, so an expert can profit from cancelling the others' residual:
    the experts cooperate on each case instead of each owning some cases.
    """
    _check_mixture(gates, expert_outputs, name="expert_outputs")
    _check_labels(labels, gates.shape[0], expert_outputs.shape[2])
    d = F.one_hot(labels, expert_outputs.shape[2]).to(expert_outputs.dtype)  # desired output d
    blend = mixture_output(gates, expert_outputs)  # sum_i g_i o_i
    return ((d - blend) ** 2).sum(dim=-1).mean()  # || d - sum_i g_i o_i ||^2


def competitive_loss(
    gates: torch.Tensor, expert_probs: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Multinomial analogue of eq. 1.3: E = -log sum_i g_i o_i(y); mean over cases.

    o_i(y) is the probability that expert i gives the correct class y: the likelihood of a
    mixture of categorical distributions. The clamp only guards log(0) (all experts certain
    and wrong), which float32 softmax outputs do not reach on this task.
    """
    _check_mixture(gates, expert_probs)
    _check_labels(labels, gates.shape[0], expert_probs.shape[2])
    index = labels.view(-1, 1, 1).expand(-1, expert_probs.shape[1], 1)
    p_correct = expert_probs.gather(2, index).squeeze(2)  # o_i(y), shape (N, E)
    likelihood = (gates * p_correct).sum(dim=1)  # sum_i g_i o_i(y)
    return -likelihood.clamp_min(torch.finfo(likelihood.dtype).tiny).log().mean()  # -log(...)


def gaussian_mixture_loss(
    gates: torch.Tensor, expert_outputs: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The paper's eq. 1.3: E = -log sum_i g_i exp(-1/2 || d - o_i ||^2); mean over cases.

    Each expert's output o_i is scored as the mean of a unit-variance Gaussian around d, so an
    expert is judged on its own error, not on the blend's (compare eq. 1.1).
    """
    _check_mixture(gates, expert_outputs, name="expert_outputs")
    _check_labels(labels, gates.shape[0], expert_outputs.shape[2])
    d = F.one_hot(labels, expert_outputs.shape[2]).to(expert_outputs.dtype)
    sq_err = ((d.unsqueeze(1) - expert_outputs) ** 2).sum(dim=-1)  # || d - o_i ||^2, shape (N, E)
    return -(gates * torch.exp(-0.5 * sq_err)).sum(dim=1).log().mean()  # -log sum_i g_i e^(-err/2)


def squared_error(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean over cases of || d - o ||^2 (summed over the C output units), d one-hot: the
    error of 1991 back-propagation nets and, with o = sum_i g_i o_i, of eq. 1.1. It is also the
    statistic of the stopping rule (training error <= the error criterion)."""
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2:
        raise ValueError("outputs must be a 2-d tensor (cases N, output units C)")
    _check_labels(labels, outputs.shape[0], outputs.shape[1])
    d = F.one_hot(labels, outputs.shape[1]).to(outputs.dtype)
    return ((d - outputs) ** 2).sum(dim=-1).mean()


def responsibilities(
    gates: torch.Tensor, expert_probs: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Posterior h_i = g_i o_i(y) / sum_j g_j o_j(y), shape (N, E) (the weighting of eq. 1.5).

    The gradient of the competitive loss sends each case mainly to the experts with large h_i:
    the experts that explain it better than their gate-weighted average.
    """
    _check_mixture(gates, expert_probs)
    _check_labels(labels, gates.shape[0], expert_probs.shape[2])
    index = labels.view(-1, 1, 1).expand(-1, expert_probs.shape[1], 1)
    joint = gates * expert_probs.gather(2, index).squeeze(2)  # g_i o_i(y)
    return joint / joint.sum(dim=1, keepdim=True)  # h_i


# --- gate statistics --------------------------------------------------------------------------


def gate_usage(gates: torch.Tensor) -> torch.Tensor:
    """The mixing proportion of each expert averaged over cases, shape (E,); it sums to 1."""
    _check_gates(gates)
    if gates.shape[0] == 0:
        raise ValueError("gates has 0 cases; allowed: at least one case (row)")
    return gates.mean(dim=0)


def experts_in_use(gates: torch.Tensor, threshold: float = 0.05) -> int:
    """How many experts have a mean gate above ``threshold`` (the paper's "used" experts)."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold={threshold!r}; allowed values: 0 <= threshold < 1")
    return int((gate_usage(gates) > threshold).sum().item())


def experts_per_case(gates: torch.Tensor) -> torch.Tensor:
    """The effective number of experts a case is shared among, exp(entropy of its gates),
    averaged over cases (a 0-d tensor): 1 when each case goes to one expert, E when uniform.

    The paper's complaint about eq. 1.1 is per case: it "tends to lead to solutions in which
    many experts are used for each case". Gate usage (:func:`gate_usage`) cannot see that.
    """
    gate_usage(gates)  # the same checks: a 2-d tensor with at least one case
    entropy = -(gates * gates.clamp_min(torch.finfo(gates.dtype).tiny).log()).sum(dim=1)  # H(g)
    return entropy.exp().mean()  # exp H(g): the gate's perplexity


def hit_rate(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of cases whose highest-scoring class is the correct one (a 0-d tensor)."""
    if scores.dim() != 2:
        raise ValueError(f"scores has shape {tuple(scores.shape)}; allowed: (cases N, classes C)")
    _check_labels(labels, scores.shape[0], scores.shape[1])
    return (scores.argmax(dim=-1) == labels).float().mean()


def epochs_to_criterion(
    hit_rates: torch.Tensor, criterion: float, *, below: bool = False
) -> torch.Tensor:
    """First epoch at which the hit rate reaches ``criterion``; ``inf`` if it never does.

    ``hit_rates[t]`` is the training hit rate after t epochs (row 0: before training), shape
    (T,) for one run or (T, R) for R runs; the result has shape () or (R,). A run that misses
    the criterion is not dropped: it stays in the result as ``inf`` (a failure). With
    ``below=True`` the rows are training errors instead and the criterion is reached when the
    error is <= ``criterion`` (the paper's "error criterion").
    """
    if below:
        if not criterion > 0.0:
            raise ValueError(f"criterion={criterion!r}; allowed values: an error > 0")
    elif not 0.0 < criterion <= 1.0:
        raise ValueError(f"criterion={criterion!r}; allowed values: 0 < criterion <= 1")
    if hit_rates.dim() not in (1, 2) or hit_rates.shape[0] == 0:
        raise ValueError(
            f"hit_rates has shape {tuple(hit_rates.shape)}; allowed: (T,) or (T, R) with T >= 1"
        )
    reached = hit_rates <= criterion if below else hit_rates >= criterion
    first = reached.float().argmax(dim=0).float()  # index of the first True (0 if none)
    return torch.where(reached.any(dim=0), first, torch.full_like(first, float("inf")))


# --- the vowel data ----------------------------------------------------------------------------


@dataclass
class VowelSplit:
    """Standardised log-formant features (F1, F2) of a speaker split, and the scaling used."""

    x_train: torch.Tensor  # (N_train, 2)
    y_train: torch.Tensor  # (N_train,)
    x_test: torch.Tensor  # (N_test, 2)
    y_test: torch.Tensor  # (N_test,)
    mean: torch.Tensor  # (2,) mean of log F1, log F2 over the training speakers
    std: torch.Tensor  # (2,) their standard deviation

    def features(self, f1_hz: torch.Tensor, f2_hz: torch.Tensor) -> torch.Tensor:
        """The model input for formants in Hz: (log F - mean) / std, shape (..., 2)."""
        if (torch.as_tensor(f1_hz) <= 0).any() or (torch.as_tensor(f2_hz) <= 0).any():
            raise ValueError("f1_hz and f2_hz must be positive frequencies in Hz")
        log_f = torch.stack([torch.as_tensor(f1_hz), torch.as_tensor(f2_hz)], dim=-1).float().log()
        return (log_f - self.mean) / self.std


def vowel_split(vowels: Vowels, n_train: int = 50, seed: int = 0) -> VowelSplit:
    """Split the vowel tokens by speaker and standardise log F1, log F2 on the training speakers.

    The paper trained on 50 speakers and tested on 25; the table has 76, so 26 are tested here.
    Raw Hz would give the network inputs of ~300-3000 with F2 dominating; logs also make the
    spread between men, women and children roughly a shift rather than a stretch.
    """
    train_mask, test_mask = split_by_speaker(vowels.speaker, n_train, seed)
    log_f = torch.tensor(np.log(vowels.formants[:, 1:3]), dtype=torch.float32)  # log F1, log F2
    labels = torch.tensor(vowels.label, dtype=torch.long)
    mean, std = log_f[train_mask].mean(dim=0), log_f[train_mask].std(dim=0)
    x = (log_f - mean) / std
    return VowelSplit(x[train_mask], labels[train_mask], x[test_mask], labels[test_mask], mean, std)


# --- training many runs at once ------------------------------------------------------------------

#: ``objective(model_output, labels) -> (loss, class_scores)`` for each way of training; the
#: argmax of the class scores is the system's answer.
Objective = Callable[[object, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

OBJECTIVES: dict[str, Objective] = {
    "competitive": lambda out, y: (competitive_loss(*out, y), mixture_output(*out)),
    "cooperative": lambda out, y: (cooperative_loss(*out, y), mixture_output(*out)),
    "gaussian": lambda out, y: (gaussian_mixture_loss(*out, y), mixture_output(*out)),
    "cross_entropy": lambda logits, y: (F.cross_entropy(logits, y), F.softmax(logits, dim=-1)),
    "squared_error": lambda out, y: (squared_error(out, y), out),
}

#: How :func:`train_to_criterion` stops a run: training hit rate >= criterion ("hits"), or
#: training squared error || d - output ||^2 <= criterion ("error"), where the output is the
#: objective's class scores (the blend sum_i g_i o_i for a mixture, the softmax for CE).
STOP_RULES = ("hits", "error")


@dataclass
class CriterionRuns:
    """R independent training runs, each stopped when it reached the criterion (or the cap)."""

    models: list[nn.Module]  # each run's model, as it was when the run stopped
    seeds: list[int]
    lrs: list[float]
    epochs: torch.Tensor  # (R,) epochs to criterion; inf: not reached within max_epochs
    hit_rates: torch.Tensor  # (T, R) training hit rate after t epochs
    history: History
    errors: torch.Tensor | None = None  # (T, R) training squared error || d - output ||^2


def train_to_criterion(
    make_model: Callable[[], nn.Module],
    objective: str,
    splits: Sequence[VowelSplit],
    seeds: Sequence[int],
    lrs: Sequence[float],
    *,
    criterion: float,
    max_epochs: int,
    stop: str = "hits",
    progress: bool = False,
) -> CriterionRuns:
    """Train R = len(seeds) runs by full-batch gradient descent, each until it hits ``criterion``.

    Run r starts from ``make_model()`` drawn after ``torch.manual_seed(seeds[r])``, trains on
    ``splits[r]`` with learning rate ``lrs[r]``, and stops (its parameters freeze) at the first
    epoch whose training hit rate is >= ``criterion`` (``stop="hits"``) or whose training
    squared error :func:`squared_error` of the system's output is <= ``criterion``
    (``stop="error"``, the paper's error criterion). Runs are independent: they are stacked
    and trained together with ``torch.func`` only because that is far faster than a loop. The
    summed loss sum_r lrs[r] * loss_r under plain SGD with lr=1 gives every run exactly its own
    update w_r <- w_r - lrs[r] * grad loss_r; a finished run gets weight 0, so it stays put.
    """
    n = len(seeds)
    if n == 0 or len(splits) != n or len(lrs) != n:
        raise ValueError(
            f"seeds, splits and lrs have lengths {n}, {len(splits)}, {len(lrs)}; allowed: equal and >= 1"
        )
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r}; allowed values: {', '.join(OBJECTIVES)}")
    if any(not lr > 0 for lr in lrs):
        raise ValueError(f"lrs={list(lrs)}; allowed values: learning rates > 0")
    _positive_int("max_epochs", max_epochs)
    if stop not in STOP_RULES:
        raise ValueError(f"stop={stop!r}; allowed values: {', '.join(STOP_RULES)}")
    if not (0.0 < criterion <= 1.0 if stop == "hits" else criterion > 0.0):
        raise ValueError(
            f"criterion={criterion!r}; allowed values: 0 < criterion <= 1 (hits), > 0 (error)"
        )

    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(make_model())
    params, buffers = torch.func.stack_module_state(models)  # each tensor gets a leading run axis
    params = {name: nn.Parameter(p) for name, p in params.items()}
    x = torch.stack([s.x_train for s in splits])
    y = torch.stack([s.y_train for s in splits])
    lr = torch.tensor(list(lrs), dtype=x.dtype)
    objective_fn = OBJECTIVES[objective]

    def one_run(
        p: dict, b: dict, x_r: torch.Tensor, y_r: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss, scores = objective_fn(torch.func.functional_call(models[0], (p, b), (x_r,)), y_r)
        return loss, hit_rate(scores, y_r), squared_error(scores, y_r)

    many_runs = torch.func.vmap(one_run)
    hits: list[torch.Tensor] = []
    errors: list[torch.Tensor] = []
    done = torch.zeros(n, dtype=torch.bool)

    # One plain (unbatched) call per split first, so that bad data raises its ValueError here.
    for split in splits:
        objective_fn(models[0](split.x_train), split.y_train)

    def loss_fn(_model: nn.Module, _batch: None) -> tuple[torch.Tensor, dict[str, float]]:
        live = (~done).nonzero().squeeze(1)  # finished runs are frozen: compute only the others
        token = _CHECK_VALUES.set(False)
        try:
            losses, hit, err = many_runs(
                {k: p[live] for k, p in params.items()},
                {k: b[live] for k, b in buffers.items()},
                x[live],
                y[live],
            )
        finally:
            _CHECK_VALUES.reset(token)
        hit_all = hits[-1].clone() if hits else torch.zeros(n)
        hit_all[live] = hit.detach()
        hits.append(hit_all)
        err_all = errors[-1].clone() if errors else torch.full((n,), math.inf)
        err_all[live] = err.detach()
        errors.append(err_all)
        epoch = len(hits) - 1  # the parameters seen here have had `epoch` updates
        done.logical_or_(hit_all >= criterion if stop == "hits" else err_all <= criterion)
        done.logical_or_(~err_all.isfinite())  # diverged (nan/inf): a failure, stop paying for it
        keep = ~done[live] & (epoch < max_epochs)
        # sum_r lr_r * loss_r over the runs still training (where: a diverged run's nan stays out)
        weighted = torch.where(keep, lr[live] * losses, torch.zeros_like(losses)).sum()
        return weighted, {"running": float(keep.sum()), "mean_loss": losses.mean().item()}

    holder = nn.Module()  # train() needs a module; the stacked tensors are the parameters
    holder.params = nn.ParameterList(params.values())  # the same tensors, registered
    with _one_cpu_thread():
        history = train(
            holder,
            loss_fn,
            lambda _step: None,
            steps=max_epochs + 1,
            optimizer=torch.optim.SGD(holder.parameters(), lr=1.0),
            stop=lambda h: h.last("running") == 0,
            progress=progress,
            desc=objective,
        )
    hit_rates, error_rows = torch.stack(hits), torch.stack(errors)
    for r, model in enumerate(models):  # unstack: each run's final parameters into its own model
        model.load_state_dict({k: v[r].detach().clone() for k, v in {**params, **buffers}.items()})
    return CriterionRuns(
        models,
        list(seeds),
        [float(v) for v in lrs],
        epochs_to_criterion(error_rows, criterion, below=True)
        if stop == "error"
        else epochs_to_criterion(hit_rates, criterion),
        hit_rates,
        history,
        error_rows,
    )


@torch.no_grad()
def evaluate(model: nn.Module, objective: str, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Hit rate of ``model`` on (x, y); for a mixture also its experts in use and gate usage."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r}; allowed values: {', '.join(OBJECTIVES)}")
    out = model(x)
    _, scores = OBJECTIVES[objective](out, y)
    result: dict = {
        "hit_rate": hit_rate(scores, y).item(),
        "error": squared_error(scores, y).item(),
    }
    if isinstance(model, MixtureOfExperts):
        result["gate_usage"] = gate_usage(out[0]).tolist()
        result["experts_in_use"] = experts_in_use(out[0])
        result["experts_per_case"] = experts_per_case(out[0]).item()
    return result


def select_learning_rate(
    epochs: torch.Tensor, lrs: Sequence[float]
) -> tuple[float, dict[float, float]]:
    """The learning rate whose runs have the smallest median epochs to criterion.

    ``epochs[r]`` comes from a run with learning rate ``lrs[r]``; failures (``inf``) count as
    the slowest runs, so a rate that fails in half its runs has an infinite median and loses.
    Ties go to the smaller rate. Returns the chosen rate and the median per rate.
    """
    if epochs.dim() != 1 or epochs.shape[0] != len(lrs) or len(lrs) == 0:
        raise ValueError(
            f"epochs has shape {tuple(epochs.shape)} for {len(lrs)} lrs; allowed: (len(lrs),), non-empty"
        )
    medians = {}
    for rate in sorted(set(float(v) for v in lrs)):
        mine = epochs[torch.tensor([float(v) == rate for v in lrs])]
        medians[rate] = mine.sort().values[(mine.numel() - 1) // 2].item()  # lower median
    best = min(medians, key=lambda rate: (medians[rate], rate))
    return best, medians


@torch.no_grad()
def gate_partition(
    model: MixtureOfExperts, split: VowelSplit, f1_hz: torch.Tensor, f2_hz: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Who owns each point of the (F1, F2) plane: ``(expert, gate)``, each of shape
    (len(f2_hz), len(f1_hz)): the expert with the largest gate, and that gate (1: it alone
    handles the point; 1/E: the gate cannot decide)."""
    if not isinstance(model, MixtureOfExperts):
        raise ValueError(f"model is a {type(model).__name__}; allowed: a MixtureOfExperts")
    f2_grid, f1_grid = torch.meshgrid(torch.as_tensor(f2_hz), torch.as_tensor(f1_hz), indexing="ij")
    gates, _ = model(split.features(f1_grid, f2_grid).reshape(-1, 2))
    top_gate, expert = gates.max(dim=-1)
    return expert.reshape(f2_grid.shape), top_gate.reshape(f2_grid.shape)


# --- the paper's Table 1, at laptop scale ---------------------------------------------------------


@dataclass(frozen=True)
class System:
    """One system of the comparison: how to build it and which error function trains it."""

    name: str
    make: Callable[[], nn.Module]
    objective: str

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"objective={self.objective!r}; allowed values: {', '.join(OBJECTIVES)}"
            )


def vowel_systems() -> dict[str, System]:
    """The systems of the paper's Table 1 (2 formant inputs, 4 vowels) in the paper's regime,
    and two more.

    - "4 experts", "8 experts": linear experts (unconstrained outputs o_i = W_i x + b_i) and a
      linear softmax gate, trained with the paper's Gaussian eq. 1.3;
    - "BP 6 hidden", "BP 12 hidden": :class:`LogisticMLP` (logistic hidden and output units)
      trained with squared error on one-hot targets, 1991 back-propagation;
    - "8 experts, cooperative": the same 8 linear experts trained with eq. 1.1;
    - "MLP 6 hidden, CE": a modern control, tanh hidden units and softmax outputs trained with
      cross-entropy (not a system of the paper).
    """
    return {
        s.name: s
        for s in [
            System("4 experts", partial(MixtureOfExperts, 2, 4, 4, "linear"), "gaussian"),
            System("8 experts", partial(MixtureOfExperts, 2, 4, 8, "linear"), "gaussian"),
            System("BP 6 hidden", partial(LogisticMLP, 2, 6, 4), "squared_error"),
            System("BP 12 hidden", partial(LogisticMLP, 2, 12, 4), "squared_error"),
            System(
                "8 experts, cooperative",
                partial(MixtureOfExperts, 2, 4, 8, "linear"),
                "cooperative",
            ),
            System("MLP 6 hidden, CE", partial(MLP, 2, 6, 4), "cross_entropy"),
        ]
    }


def median(values: torch.Tensor) -> float:
    """The lower median of a 1-d tensor (``torch.median``); inf counts as the largest value."""
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError("values must be a non-empty 1-d tensor")
    return float(values.float().median())


@dataclass
class SystemResult:
    """Tuning and evaluation runs of one system, and what each evaluation run ended with."""

    system: System
    lr: float  # the learning rate chosen on the tuning runs
    lr_medians: dict[float, float]  # tuning: median epochs to criterion per learning rate
    tuning: CriterionRuns
    runs: CriterionRuns  # evaluation runs (fresh seeds and speaker splits) at `lr`
    train_hit: torch.Tensor  # (R,) training hit rate when each run stopped
    train_error: torch.Tensor  # (R,) training squared error when each run stopped
    test_hit: torch.Tensor  # (R,) test hit rate (the 26 held-out speakers)
    gate_usage: torch.Tensor | None  # (R, E) mean gate per expert on the training cases
    experts_in_use: torch.Tensor | None  # (R,) experts with mean gate > 0.05
    experts_per_case: torch.Tensor | None  # (R,) effective experts per training case


@_one_cpu_thread()
def tune_and_train(
    system: System,
    vowels: Vowels,
    *,
    lr_grid: Sequence[float],
    tune_seeds: Sequence[int],
    eval_seeds: Sequence[int],
    criterion: float,
    max_epochs: int,
    stop: str = "hits",
    n_train: int = 50,
    progress: bool = False,
) -> SystemResult:
    """Choose ``system``'s learning rate on tuning runs, then train fresh runs with it.

    Tuning: every rate of ``lr_grid`` on every tuning seed; the rate with the smallest median
    epochs to criterion wins (:func:`select_learning_rate`). Evaluation: one run per seed of
    ``eval_seeds`` (disjoint from the tuning seeds), where the seed draws both the speaker split
    and the initial weights, so every system sees the same splits. ``stop`` and ``criterion``
    are the stopping rule of :func:`train_to_criterion`.
    """
    if set(tune_seeds) & set(eval_seeds):
        raise ValueError(
            "tune_seeds and eval_seeds overlap; allowed: disjoint seeds, so tuning never sees an evaluation run"
        )
    if not lr_grid or not tune_seeds or not eval_seeds:
        raise ValueError("lr_grid, tune_seeds and eval_seeds must each be non-empty")
    seeds = [s for s in tune_seeds for _ in lr_grid]
    lrs = [float(lr) for _ in tune_seeds for lr in lr_grid]
    splits = {s: vowel_split(vowels, n_train, s) for s in [*tune_seeds, *eval_seeds]}
    tuning = train_to_criterion(
        system.make,
        system.objective,
        [splits[s] for s in seeds],
        seeds,
        lrs,
        criterion=criterion,
        max_epochs=max_epochs,
        stop=stop,
        progress=progress,
    )
    lr, medians = select_learning_rate(tuning.epochs, lrs)
    runs = train_to_criterion(
        system.make,
        system.objective,
        [splits[s] for s in eval_seeds],
        eval_seeds,
        [lr] * len(eval_seeds),
        criterion=criterion,
        max_epochs=max_epochs,
        stop=stop,
        progress=progress,
    )
    train_stats = [
        evaluate(m, system.objective, splits[s].x_train, splits[s].y_train)
        for m, s in zip(runs.models, eval_seeds, strict=True)
    ]
    test_stats = [
        evaluate(m, system.objective, splits[s].x_test, splits[s].y_test)
        for m, s in zip(runs.models, eval_seeds, strict=True)
    ]

    def column(stats: list[dict], key: str) -> torch.Tensor | None:  # None for a key MLPs lack
        return torch.tensor([t[key] for t in stats]) if key in stats[0] else None

    return SystemResult(
        system,
        lr,
        medians,
        tuning,
        runs,
        train_hit=column(train_stats, "hit_rate"),
        train_error=column(train_stats, "error"),
        test_hit=column(test_stats, "hit_rate"),
        gate_usage=column(train_stats, "gate_usage"),
        experts_in_use=column(train_stats, "experts_in_use"),
        experts_per_case=column(train_stats, "experts_per_case"),
    )


def train_snapshots(
    system: System, split: VowelSplit, *, seed: int, lr: float, epochs: Sequence[int]
) -> dict[int, nn.Module]:
    """One full-batch gradient-descent run of ``system``, with a copy of the model after each of
    ``epochs`` (0: the initial weights). For watching the gate partition form."""
    if not epochs or min(epochs) < 0:
        raise ValueError(f"epochs={list(epochs)}; allowed: a non-empty list of integers >= 0")
    if not lr > 0:
        raise ValueError(f"lr={lr!r}; allowed values: > 0")
    torch.manual_seed(seed)
    model = system.make()
    snapshots = {0: copy.deepcopy(model)} if 0 in epochs else {}
    objective = OBJECTIVES[system.objective]

    def keep(history: History) -> bool:
        # called after each update: the model has had `history.steps[-1]` updates
        if history.steps[-1] in epochs:
            snapshots[history.steps[-1]] = copy.deepcopy(model)
        return False

    if max(epochs) > 0:
        with _one_cpu_thread():
            train(
                model,
                lambda m, batch: objective(m(batch[0]), batch[1])[0],
                lambda _step: (split.x_train, split.y_train),
                steps=max(epochs),
                optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                stop=keep,
                progress=False,
            )
    return {e: snapshots[e] for e in sorted(set(epochs))}

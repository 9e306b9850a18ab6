"""Training and evaluation on parity for the halting notebooks (4.1 ACT, 4.4 PonderNet).

One loop trains any of the three model kinds on freshly drawn batches:
:class:`~adaedu.halting.act.ACT` (loss of Graves 2016), :class:`~adaedu.halting.ponder.
PonderNet` (loss of Banino et al. 2021) and :class:`~adaedu.halting.baselines.RepeatRNN`
(cross-entropy at the last step). Evaluation reports the error and the compute actually spent per
example (steps and FLOPs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaedu.halting.act import ACT, act_loss
from adaedu.halting.baselines import RepeatRNN
from adaedu.halting.ponder import PonderNet, ponder_loss
from adaedu.halting.tasks import parity_batch


@dataclass
class FitHistory:
    """Training curves: ``step``, ``loss`` (total) and ``steps`` (mean ponder steps) per log."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)
    seconds: float = 0.0


def parity_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    tau: float = 0.01,
    beta: float = 0.01,
    lambda_p: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """The training loss of ``model`` on a parity batch and its mean ponder steps."""
    if isinstance(model, ACT):
        out = model(x)
        task = F.binary_cross_entropy_with_logits(out.y.squeeze(-1), y)
        return act_loss(task, out.ponder, tau), out.steps.mean()
    if isinstance(model, PonderNet):
        out = model(x)
        target = y[:, None].expand(-1, model.n_max)
        step_losses = F.binary_cross_entropy_with_logits(
            out.y.squeeze(-1), target, reduction="none"
        )
        rec, reg = ponder_loss(step_losses, out.p, lambda_p, beta)
        n = torch.arange(1, model.n_max + 1, device=x.device, dtype=x.dtype)
        return rec + reg, (out.p * n).sum(dim=1).mean()
    if isinstance(model, RepeatRNN):
        out = model(x)
        return F.binary_cross_entropy_with_logits(out.y.squeeze(-1), y), out.steps.mean()
    raise ValueError(f"model is a {type(model).__name__}; allowed: ACT, PonderNet, RepeatRNN")


def penalty_schedule(step: int, steps: int, warmup: float = 0.0, ramp: float = 0.0) -> float:
    """The factor (0..1) applied to ACT's time penalty tau at training step ``step`` (1-based) of
    ``steps``: 0 for the first ``warmup`` fraction of the run, then a linear rise to 1 over the next
    ``ramp`` fraction, then 1. ``warmup = ramp = 0`` is Graves's constant penalty.

    The warm-up lets the network learn the task before it is asked to save steps; Graves (2016)
    uses a constant tau, with runs far longer than ours, so this is our addition (notebook 4.1).
    """
    if not (0.0 <= warmup <= 1.0 and 0.0 <= ramp <= 1.0 and warmup + ramp <= 1.0):
        raise ValueError(
            f"warmup={warmup}, ramp={ramp}; allowed values: fractions in [0, 1] with sum <= 1"
        )
    if steps < 1 or not 1 <= step <= steps:
        raise ValueError(f"step={step}, steps={steps}; allowed values: 1 <= step <= steps")
    frac = (step - 1) / steps
    if frac < warmup:
        return 0.0
    if ramp == 0.0 or frac >= warmup + ramp:
        return 1.0
    return (frac - warmup) / ramp


def fit_parity(
    model: nn.Module,
    n_bits: int,
    steps: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    min_nonzero: int = 1,
    max_nonzero: int | None = None,
    log_every: int = 100,
    grad_clip: float | None = None,
    tau_warmup: float = 0.0,
    tau_ramp: float = 0.0,
    **loss_kw: float,
) -> FitHistory:
    """Train ``model`` with Adam on fresh parity batches; returns the logged history.

    ``grad_clip``: clip the global gradient norm (None: no clipping). ``tau_warmup`` and
    ``tau_ramp`` schedule ACT's time penalty ``tau`` (see :func:`penalty_schedule`).
    """
    if steps < 1:
        raise ValueError(f"steps={steps}; allowed values: >= 1")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip={grad_clip}; allowed values: None or a number > 0")
    penalty_schedule(1, steps, tau_warmup, tau_ramp)  # validates the schedule
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history, start = FitHistory(), time.perf_counter()
    model.train()
    tau = loss_kw.pop("tau", 0.01)
    for step in range(1, steps + 1):
        batch = parity_batch(batch_size, n_bits, min_nonzero, max_nonzero, generator=gen)
        tau_now = tau * penalty_schedule(step, steps, tau_warmup, tau_ramp)
        loss, mean_steps = parity_loss(
            model, batch.x.to(device), batch.y.to(device), tau=tau_now, **loss_kw
        )
        opt.zero_grad()
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if step % log_every == 0 or step == steps:
            history.step.append(step)
            history.loss.append(loss.item())
            history.steps.append(mean_steps.item())
    history.seconds = time.perf_counter() - start
    return history


@dataclass
class ParityEval:
    """Per-example results on a test set: ``correct`` (bool), ``steps`` and ``flops`` spent,
    and ``k`` (nonzero entries). ``error``, ``mean_steps`` and ``mean_flops`` summarise."""

    correct: Tensor
    steps: Tensor
    flops: Tensor
    k: Tensor

    @property
    def error(self) -> float:
        return 1.0 - self.correct.float().mean().item()

    @property
    def mean_steps(self) -> float:
        return self.steps.mean().item()

    @property
    def mean_flops(self) -> float:
        return self.flops.mean().item()


@torch.no_grad()
def evaluate_parity(model: nn.Module, x: Tensor, y: Tensor, k: Tensor, seed: int = 0) -> ParityEval:
    """Evaluate on a fixed test set; PonderNet samples its halting step (generator ``seed``)."""
    device = next(model.parameters()).device
    model.eval()
    x = x.to(device)
    if isinstance(model, ACT):
        out = model(x)
        y_hat, steps = out.y.squeeze(-1), out.steps
        flops = model.flops_per_example(steps)
    elif isinstance(model, PonderNet):
        out = model.sample(x, generator=torch.Generator().manual_seed(seed))
        y_hat, steps = out.y.squeeze(-1), out.steps
        flops = steps * model.step_flops()
    elif isinstance(model, RepeatRNN):
        out = model(x)
        y_hat, steps = out.y.squeeze(-1), out.steps
        flops = torch.full_like(steps, float(model.flops_per_example()))
    else:
        raise ValueError(f"model is a {type(model).__name__}; allowed: ACT, PonderNet, RepeatRNN")
    model.train()
    correct = (y_hat > 0).float().cpu() == y.cpu()
    return ParityEval(correct, steps.cpu(), flops.cpu(), k.cpu())


def error_by_count(ev: ParityEval, counts: list[int] | range) -> list[float]:
    """Test error at each number of nonzero entries in ``counts`` (NaN where none occurs)."""
    errors = []
    for k in counts:
        sel = ev.k == k
        errors.append(
            float("nan") if not sel.any() else 1.0 - ev.correct[sel].float().mean().item()
        )
    return errors


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation (ties get their average rank), computed with torch."""
    if a.numel() != b.numel() or a.numel() < 2:
        raise ValueError("a and b must have the same number (>= 2) of elements")

    def ranks(v: Tensor) -> Tensor:
        v = v.flatten().double()
        order = v.argsort()
        r = torch.empty_like(v)
        r[order] = torch.arange(len(v), dtype=torch.float64)
        for value in v.unique():  # average ranks over ties
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return 0.0 if denom == 0 else (ra @ rb).item() / denom

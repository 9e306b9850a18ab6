"""PonderNet (Banino, Balaguer & Blundell 2021, arXiv:2107.05407).

A step function runs on the input for n = 1..N_max steps, each giving a prediction y_n and a
conditional halting probability lambda_n (Sec. 2.1). The unconditional probability of halting at
step n is p_n = lambda_n prod_{j<n} (1 - lambda_j). lambda is set to 1 at the last
step so that p sums to 1. Training minimises the expected reconstruction loss
L_rec = sum_n p_n L(y, y_n) plus beta KL(p || p_G(lambda_p)), where p_G is a geometric prior
truncated to 1..N_max and renormalised. At evaluation the halting step is sampled:
at each step the network halts with probability lambda_n, so it runs only the steps it needs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from adaedu.halting.baselines import cell_step_flops, make_cell, with_flag


class PonderOutput(NamedTuple):
    """``y``: (B, N, d_out) predictions of every step; ``lambdas``: (B, N) conditional halting
    probabilities (last one forced to 1); ``p``: (B, N) halting distribution."""

    y: Tensor
    lambdas: Tensor
    p: Tensor


class SampledOutput(NamedTuple):
    """Evaluation with a sampled halting step: ``y`` (B, d_out) the prediction at the halting
    step, ``steps`` (B,) how many steps each example ran (the compute actually spent)."""

    y: Tensor
    steps: Tensor


def halting_probabilities(lambdas: Tensor) -> Tensor:
    """p_n = lambda_n prod_{j<n} (1 - lambda_j), with lambda_N = 1 at the last step.

    ``lambdas``: (B, N) in [0, 1]. Forcing the last lambda to 1 gives the leftover probability
    of never halting to step N, so that every row sums to 1.
    """
    if not isinstance(lambdas, Tensor) or lambdas.dim() != 2:
        shape = tuple(lambdas.shape) if isinstance(lambdas, Tensor) else type(lambdas).__name__
        raise ValueError(f"lambdas has shape {shape}; allowed: (batch, steps)")
    if not bool(((lambdas >= 0) & (lambdas <= 1)).all()):  # also rejects NaN
        raise ValueError("lambdas must lie in [0, 1] (conditional halting probabilities)")
    lam = torch.cat([lambdas[:, :-1], torch.ones_like(lambdas[:, -1:])], dim=1)
    survive = torch.cumprod(1 - lam, dim=1)  # prod_{j<=n} (1 - lambda_j)
    before = torch.cat([torch.ones_like(survive[:, :1]), survive[:, :-1]], dim=1)  # prod_{j<n}
    return lam * before


def truncated_geometric(lambda_p: float, n_max: int) -> Tensor:
    """The prior p_G(n) = lambda_p (1 - lambda_p)^(n-1) on n = 1..n_max, renormalised to sum 1."""
    if not 0.0 < lambda_p <= 1.0:
        raise ValueError(f"lambda_p={lambda_p}; allowed values: 0 < lambda_p <= 1")
    if not isinstance(n_max, int) or isinstance(n_max, bool) or n_max < 1:
        raise ValueError(f"n_max={n_max!r}; allowed values: an integer >= 1")
    n = torch.arange(n_max, dtype=torch.float64)
    prior = lambda_p * (1 - lambda_p) ** n
    return (prior / prior.sum()).float()


def kl_divergence(p: Tensor, prior: Tensor) -> Tensor:
    """KL(p || prior) = sum_n p_n (log p_n - log prior_n) per row (the paper's direction: p first).

    Terms with p_n = 0 contribute 0: log p is taken of p clamped at 1e-12, so that neither the
    value nor the gradient (log p + 1) is infinite when p_n underflows to 0. ``prior`` must be
    positive.
    Swapping the arguments, KL(prior || p), is a different loss (and one public implementation's
    mistake): it explodes wherever p_n goes to 0 under a positive prior.
    """
    if not isinstance(p, Tensor) or not isinstance(prior, Tensor) or p.dim() == 0:
        raise ValueError("p and prior must be tensors (..., steps N) and (N,)")
    if prior.shape[-1:] != p.shape[-1:] or prior.dim() > p.dim():
        raise ValueError(
            f"prior has shape {tuple(prior.shape)}; allowed values: ({p.shape[-1]},), the number "
            f"of steps of p {tuple(p.shape)}"
        )
    if not bool((prior > 0).all()):  # also rejects NaN
        raise ValueError("prior must be positive everywhere (no zero, negative or NaN entry)")
    prior = prior.to(p.device).expand_as(p)
    return (p * (p.clamp_min(1e-12).log() - prior.log())).sum(dim=-1)


def ponder_loss(
    step_losses: Tensor, p: Tensor, lambda_p: float, beta: float
) -> tuple[Tensor, Tensor]:
    """PonderNet's loss: L_rec = mean over the batch of sum_n p_n L(y, y_n), and
    L_reg = beta mean KL(p || p_G(lambda_p)). ``step_losses``: (B, N) loss of each step's
    prediction. Returns ``(L_rec, L_reg)``; train on their sum."""
    if not isinstance(beta, int | float) or not beta >= 0:  # also rejects NaN
        raise ValueError(f"beta={beta!r}; allowed values: a number >= 0")
    if step_losses.shape != p.shape:
        raise ValueError(
            f"step_losses {tuple(step_losses.shape)} and p {tuple(p.shape)} differ; allowed "
            "values: two tensors of one shape (batch, steps)"
        )
    rec = (p * step_losses).sum(dim=1).mean()
    reg = beta * kl_divergence(p, truncated_geometric(lambda_p, p.shape[1])).mean()
    return rec, reg


class PonderNet(nn.Module):
    """A recurrent step function (tanh RNN or GRU cell) with PonderNet's halting head.

    ``forward`` unrolls all ``n_max`` steps (training needs every p_n); ``sample`` runs at
    evaluation and stops each example at a halting step drawn from lambda_n.
    """

    def __init__(
        self, d_in: int, hidden: int, d_out: int, n_max: int = 20, cell: str = "rnn"
    ) -> None:
        super().__init__()
        if n_max < 1:
            raise ValueError(f"n_max={n_max}; allowed values: >= 1")
        self.d_in, self.hidden, self.d_out, self.n_max, self.cell_kind = (
            d_in,
            hidden,
            d_out,
            n_max,
            cell,
        )
        self.cell = make_cell(d_in, hidden, cell)
        self.out = nn.Linear(hidden, d_out)
        self.halt = nn.Linear(hidden, 1)

    def _step(self, x: Tensor, s: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
        s = self.cell(with_flag(x, n == 1), s)
        return s, self.out(s), torch.sigmoid(self.halt(s)).squeeze(-1)

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.d_in:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x has shape {shape}; allowed values: (batch, d_in={self.d_in})")

    def forward(self, x: Tensor) -> PonderOutput:
        self._check_input(x)
        s = x.new_zeros(x.shape[0], self.hidden)
        ys, lams = [], []
        for n in range(1, self.n_max + 1):
            s, y, lam = self._step(x, s, n)
            ys.append(y)
            lams.append(lam)
        lambdas = torch.stack(lams, dim=1)
        return PonderOutput(torch.stack(ys, dim=1), lambdas, halting_probabilities(lambdas))

    @torch.no_grad()
    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> SampledOutput:
        """Run until each example halts: at step n it halts with probability lambda_n (1 at
        n_max). Examples that halted are not updated again; the loop ends when all have."""
        self._check_input(x)
        batch = x.shape[0]
        s = x.new_zeros(batch, self.hidden)
        y_out = x.new_zeros(batch, self.d_out)
        steps = x.new_zeros(batch)
        running = torch.ones(batch, dtype=torch.bool, device=x.device)
        for n in range(1, self.n_max + 1):
            s, y, lam = self._step(x, s, n)
            u = torch.rand(batch, generator=generator).to(x.device)
            halt_now = running & ((u < lam) | (n == self.n_max))
            y_out = torch.where(halt_now[:, None], y, y_out)
            steps = torch.where(halt_now, torch.full_like(steps, n), steps)
            running = running & ~halt_now
            if not running.any():
                break
        return SampledOutput(y_out, steps)

    def step_flops(self) -> int:
        """FLOPs of one step: the cell, the output layer and the halting unit."""
        return cell_step_flops(self.d_in, self.hidden, self.d_out, self.cell_kind) + 2 * self.hidden


@torch.no_grad()
def halt_at_threshold(out: PonderOutput, threshold: float) -> SampledOutput:
    """Deterministic halting, an alternative to sampling n ~ p at evaluation: stop at the first
    step n whose cumulative halting probability sum_{j<=n} p_j reaches ``threshold``.

    The decision at step n uses lambda_1..lambda_n only, so a model halted this way runs exactly
    ``steps`` steps. A low threshold stops early (less compute), a high one late; at threshold 1
    every example runs until lambda_N = 1 forces the stop.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold={threshold!r}; allowed values: 0 < threshold <= 1")
    cumulative = out.p.cumsum(dim=1)  # sum_{j<=n} p_j, reaches 1 at the last step
    reached = cumulative >= threshold - 1e-6  # tolerance: the float sum of p may end at 1 - 1e-7
    reached[:, -1] = True
    steps = reached.float().argmax(dim=1) + 1  # first step that reaches the threshold
    y = out.y[torch.arange(out.y.shape[0], device=out.y.device), steps - 1]
    return SampledOutput(y, steps)

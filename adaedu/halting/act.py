"""Adaptive Computation Time (Graves 2016, arXiv:1603.08983), for one input per sequence step.

At input step t the cell runs ponder steps n = 1, 2, ... on the same input (with a first-step
flag), each producing a state s^n, an output y^n and a halting probability h^n. It stops
at N(t) = min{n : sum_{n'<=n} h^{n'} >= 1 - eps}, or at the step cap. The halting
distribution is p^n = h^n for n < N and the remainder R = 1 - sum_{n<N} h^n at n = N;
the state and output passed on are the p-weighted means. The ponder cost
rho = N + R is added to the loss with weight tau; N is a step count with no gradient,
so only R carries gradient (Sec. 2).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from adaedu.halting.baselines import cell_step_flops, make_cell, with_flag


class ACTOutput(NamedTuple):
    """One ACT input step for a batch.

    ``y``: (B, d_out) mean-field output; ``state``: (B, H) mean-field state;
    ``steps``: (B,) N(t) as float; ``remainder``: (B,) R(t) (differentiable); ``ponder``: (B,)
    rho = N + R with gradient through R only; ``p``: (B, cap) halting distribution,
    zero after N.
    """

    y: Tensor
    state: Tensor
    steps: Tensor
    remainder: Tensor
    ponder: Tensor
    p: Tensor


def halting_distribution(h: Tensor, eps: float = 0.01) -> tuple[Tensor, Tensor, Tensor]:
    """ACT's halting step, remainder and distribution from halting units ``h`` (B, cap).

    N = min{n : sum_{n'<=n} h_n' >= 1 - eps}, or the last step if the sum never gets there (the
    step cap); R = 1 - sum_{n<N} h_n; p_n = h_n for n < N, R at n = N, 0 after. Returns
    ``(N, R, p)`` with N as a float tensor (1-based).
    """
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps={eps}; allowed values: 0 <= eps < 1")
    if h.dim() != 2:
        raise ValueError(f"h has shape {tuple(h.shape)}; allowed: (batch, steps)")
    cap = h.shape[1]
    cum = h.cumsum(dim=1)
    reached = cum >= 1 - eps
    reached[:, -1] = True  # the step cap forces a halt
    n_idx = reached.float().argmax(dim=1)  # first True, 0-based
    steps = torch.arange(cap, device=h.device)
    before = steps[None, :] < n_idx[:, None]
    remainder = 1 - (h * before).sum(dim=1)  # R = 1 - sum_{n<N} h_n
    at = steps[None, :] == n_idx[:, None]
    p = torch.where(before, h, torch.zeros_like(h)) + at * remainder[:, None]  # h before N, R at N
    return (n_idx + 1).float(), remainder, p


class ACT(nn.Module):
    """A tanh RNN (or GRU) cell with Graves's adaptive computation time.

    The halting unit is h^n = sigmoid(W_h s^n + b_h), with b_h initialised to
    ``halt_bias`` (1 in Graves's experiments, so that pondering starts short). ``cap`` bounds the
    number of ponder steps (100 in the paper).
    """

    def __init__(
        self,
        d_in: int,
        hidden: int,
        d_out: int,
        eps: float = 0.01,
        cap: int = 100,
        halt_bias: float = 1.0,
        cell: str = "rnn",
    ) -> None:
        super().__init__()
        if cap < 1:
            raise ValueError(f"cap={cap}; allowed values: >= 1")
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"eps={eps}; allowed values: 0 <= eps < 1")
        self.d_in, self.hidden, self.d_out, self.cell_kind = d_in, hidden, d_out, cell
        self.eps, self.cap = eps, cap
        self.cell = make_cell(d_in, hidden, cell)
        self.out = nn.Linear(hidden, d_out)
        self.halt = nn.Linear(hidden, 1)
        nn.init.constant_(self.halt.bias, halt_bias)

    def forward(self, x: Tensor, state: Tensor | None = None) -> ACTOutput:
        """Ponder on input ``x`` (B, d_in) from ``state`` (B, H; zeros if None).

        Runs steps while any example of the batch is still pondering; an example that has halted
        gets weight 0 on later steps, so its result equals a run that stopped at its own N.
        """
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.d_in:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x has shape {shape}; allowed values: (batch, d_in={self.d_in})")
        batch = x.shape[0]
        if state is not None and (
            not isinstance(state, Tensor) or state.shape != (batch, self.hidden)
        ):
            shape = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
            raise ValueError(
                f"state has shape {shape}; allowed values: None or ({batch}, hidden={self.hidden})"
            )
        s = x.new_zeros(batch, self.hidden) if state is None else state
        cum = x.new_zeros(batch)  # sum of h^n over the steps before this one
        running = torch.ones(batch, dtype=torch.bool, device=x.device)
        steps = x.new_zeros(batch)
        remainder = x.new_zeros(batch)
        y_mean = x.new_zeros(batch, self.d_out)
        s_mean = x.new_zeros(batch, self.hidden)
        p_all = []
        for n in range(1, self.cap + 1):
            s = self.cell(with_flag(x, n == 1), s)  # s^n = S(s^{n-1}, x^n), flag at n = 1
            h = torch.sigmoid(self.halt(s)).squeeze(-1)  # h^n = sigmoid(W_h s^n + b_h)
            halt_now = running & ((cum + h >= 1 - self.eps) | (n == self.cap))  # N(t)
            r = 1 - cum  # R(t), if this step is N
            p = torch.where(halt_now, r, torch.where(running, h, torch.zeros_like(h)))  # p^n
            remainder = torch.where(halt_now, r, remainder)
            steps = torch.where(halt_now, torch.full_like(steps, n), steps)
            s_mean = s_mean + p[:, None] * s  # s_t = sum_n p^n s^n
            y_mean = y_mean + p[:, None] * self.out(s)  # y_t = sum_n p^n y^n
            p_all.append(p)
            cum = cum + torch.where(running & ~halt_now, h, torch.zeros_like(h))
            running = running & ~halt_now
            if not running.any():
                break
        ponder = steps.detach() + remainder  # rho = N + R: N has no gradient, R does
        p = torch.stack(p_all, dim=1)
        p = torch.cat([p, p.new_zeros(batch, self.cap - p.shape[1])], dim=1)
        return ACTOutput(y_mean, s_mean, steps, remainder, ponder, p)

    def step_flops(self) -> int:
        """FLOPs of one ponder step: the cell, the output layer and the halting unit."""
        return cell_step_flops(self.d_in, self.hidden, self.d_out, self.cell_kind) + 2 * self.hidden

    def flops_per_example(self, steps: Tensor) -> Tensor:
        """FLOPs actually spent on each example that pondered ``steps`` steps."""
        return steps * self.step_flops()


def act_loss(task_loss: Tensor, ponder: Tensor, tau: float) -> Tensor:
    """Graves (2016, Sec. 2): task loss plus tau times the mean ponder cost rho = N + R."""
    if not isinstance(tau, int | float) or not tau >= 0:  # also rejects NaN
        raise ValueError(f"tau={tau!r}; allowed values: a number >= 0")
    return task_loss + tau * ponder.mean()

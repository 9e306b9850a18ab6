"""Baselines for the halting notebooks: a recurrent cell run a fixed number of steps per input.

``RepeatRNN(k=1)`` is the plain RNN (one step per input, "no ACT" in Graves 2016, Sec. 3.1);
``RepeatRNN(k)`` is the honest control for ACT and PonderNet: the same cell, the same first-step
flag, but ``k`` steps on every input whatever its difficulty.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class RepeatOutput(NamedTuple):
    """``y``: (B, d_out) output of the last step; ``steps``: (B,) steps run per example."""

    y: Tensor
    steps: Tensor


def cell_step_flops(d_in: int, hidden: int, d_out: int, cell: str = "rnn") -> int:
    """Multiply-add FLOPs (2 per multiply-add) of one step: the cell and the output layer.

    ``d_in`` excludes the first-step flag, which is added here. A tanh RNN cell has two matrix
    products (input and recurrent); a GRU cell has three of each.
    """
    gates = {"rnn": 1, "gru": 3}
    if cell not in gates:
        raise ValueError(f"cell={cell!r}; allowed values: 'rnn', 'gru'")
    return 2 * gates[cell] * ((d_in + 1) * hidden + hidden * hidden) + 2 * hidden * d_out


def make_cell(d_in: int, hidden: int, cell: str = "rnn") -> nn.Module:
    """A recurrent cell whose input is the data plus one flag (``d_in + 1`` features)."""
    if cell == "rnn":
        return nn.RNNCell(d_in + 1, hidden, nonlinearity="tanh")
    if cell == "gru":
        return nn.GRUCell(d_in + 1, hidden)
    raise ValueError(f"cell={cell!r}; allowed values: 'rnn', 'gru'")


def with_flag(x: Tensor, first: bool) -> Tensor:
    """Append the binary first-step flag of Graves (2016, Sec. 2): 1 at the first ponder step."""
    if x.dim() != 2:
        raise ValueError(f"x has shape {tuple(x.shape)}; allowed: (batch, features)")
    flag = torch.full_like(x[:, :1], 1.0 if first else 0.0)
    return torch.cat([x, flag], dim=1)


class RepeatRNN(nn.Module):
    """A recurrent cell applied ``k`` times to the same input; the output is read at the last step."""

    def __init__(self, d_in: int, hidden: int, d_out: int, k: int = 1, cell: str = "rnn") -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k={k}; allowed values: >= 1")
        self.k, self.hidden, self.d_in, self.d_out, self.cell_kind = k, hidden, d_in, d_out, cell
        self.cell = make_cell(d_in, hidden, cell)
        self.out = nn.Linear(hidden, d_out)

    def forward(self, x: Tensor) -> RepeatOutput:
        if x.dim() != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"x has shape {tuple(x.shape)}; allowed: (batch, d_in={self.d_in})")
        s = x.new_zeros(x.shape[0], self.hidden)
        for n in range(self.k):
            s = self.cell(with_flag(x, n == 0), s)
        steps = torch.full((x.shape[0],), float(self.k), device=x.device)
        return RepeatOutput(self.out(s), steps)

    def flops_per_example(self) -> int:
        """Forward FLOPs per example: ``k`` cell steps, the output layer once."""
        step = cell_step_flops(self.d_in, self.hidden, self.d_out, self.cell_kind)
        return self.k * (step - 2 * self.hidden * self.d_out) + 2 * self.hidden * self.d_out

"""SkipNet-style gated residual blocks (Wang et al. 2018, arXiv:1711.09485), small and supervised.

Before each residual block a gate looks at the current features and decides whether to run the
block: h <- h + g(h) F(h) with g in {0, 1}. SkipNet trains its gates first with soft (relaxed)
decisions and then with hybrid reinforcement learning; here the hard decision g = 1[sigmoid(w.h+b)
> 0.5] is trained with a straight-through estimator (forward: hard, backward: the sigmoid's
gradient) and a compute penalty alpha * mean gate probability. At evaluation the skipped blocks
are really not computed. The static baseline runs the first ``m`` blocks for every input.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaedu.checks import check_int


class SkipOutput(NamedTuple):
    """``logits`` (B, C); ``probs`` (B, L) gate probabilities; ``gates`` (B, L) in {0, 1}."""

    logits: Tensor
    probs: Tensor
    gates: Tensor


class GatedResMLP(nn.Module):
    """An MLP with ``n_blocks`` residual blocks, each behind a gate (or the first ``static``)."""

    def __init__(
        self, d_in: int, width: int, n_classes: int, n_blocks: int, static: int | None = None
    ) -> None:
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"n_blocks={n_blocks}; allowed values: >= 1")
        if static is not None and not 0 <= static <= n_blocks:
            raise ValueError(f"static={static}; allowed values: None or 0..{n_blocks}")
        self.static, self.width, self.d_in, self.n_classes = static, width, d_in, n_classes
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
            for _ in range(n_blocks)
        )
        self.gates = nn.ModuleList(nn.Linear(width, 1) for _ in range(n_blocks))
        self.head = nn.Linear(width, n_classes)
        for g in self.gates:  # start with every block on (sigmoid(2) = 0.88)
            nn.init.constant_(g.bias, 2.0)

    def forward(self, x: Tensor) -> SkipOutput:
        h = F.relu(self.inp(x))
        probs, gates = [], []
        for i, (block, gate) in enumerate(zip(self.blocks, self.gates, strict=True)):
            if self.static is not None:
                prob = torch.full_like(h[:, 0], 1.0 if i < self.static else 0.0)
                hard = prob
            else:
                prob = torch.sigmoid(gate(h)).squeeze(-1)
                hard = (prob > 0.5).float()
            if self.training and self.static is None:
                g = hard + prob - prob.detach()  # straight-through: hard forward, soft backward
                h = h + g[:, None] * block(h)
            else:  # evaluation: run the block only on the examples whose gate is open
                on = hard.bool()
                if on.any():
                    h = h.clone()
                    h[on] = h[on] + block(h[on])
            probs.append(prob)
            gates.append(hard)
        return SkipOutput(self.head(h), torch.stack(probs, 1), torch.stack(gates, 1))

    def flops_per_example(self, gates: Tensor) -> Tensor:
        """FLOPs per example given its executed blocks ``gates`` (B, L); gate units count when
        the net is gated (2 FLOPs per multiply-add)."""
        w = self.width
        fixed = 2 * self.d_in * w + 2 * w * self.n_classes
        if self.static is None:
            fixed += 2 * w * len(self.blocks)
        return fixed + gates.sum(dim=1) * (4 * w * w)


def fit_skipnet(
    model: GatedResMLP,
    x: Tensor,
    y: Tensor,
    steps: int,
    alpha: float = 0.0,
    lr: float = 3e-3,
    batch_size: int = 128,
    seed: int = 0,
) -> list[float]:
    """Train with cross-entropy + ``alpha`` * mean gate probability (the compute penalty)."""
    check_int("steps", steps)
    if alpha < 0:
        raise ValueError(f"alpha={alpha}; allowed values: >= 0")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        out = model(x[idx])
        loss = F.cross_entropy(out.logits, y[idx]) + alpha * out.probs.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def evaluate_skipnet(model: GatedResMLP, x: Tensor, y: Tensor) -> tuple[float, float, float]:
    """(accuracy, mean blocks run, mean FLOPs per example) on a test set, with real skipping."""
    model.eval()
    out = model(x)
    acc = (out.logits.argmax(1) == y).float().mean().item()
    return acc, out.gates.sum(1).mean().item(), model.flops_per_example(out.gates).mean().item()


@torch.no_grad()
def masked_reference_logits(model: GatedResMLP, x: Tensor) -> Tensor:
    """The logits of ``model`` computed densely: every block runs on every example and a closed
    gate multiplies its output by 0. Equal to ``model(x).logits`` in evaluation mode if, and only
    if, the real skipping there changes nothing but the compute (a mechanism check)."""
    h = F.relu(model.inp(x))
    for i, (block, gate) in enumerate(zip(model.blocks, model.gates, strict=True)):
        if model.static is not None:
            on = torch.full_like(h[:, 0], 1.0 if i < model.static else 0.0)
        else:
            on = (torch.sigmoid(gate(h)).squeeze(-1) > 0.5).float()
        h = h + on[:, None] * block(h)
    return model.head(h)

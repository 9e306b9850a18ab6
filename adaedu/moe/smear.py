"""SMEAR: soft merging of experts with adaptive routing (Muqeeth, Liu & Raffel 2023,
arXiv:2306.03745; the curated list credits it to the MoV authors). Notebook 2.9 (to come).

Discrete routing (top-1) cannot be trained by plain back-propagation: the choice of an expert has
no gradient, so it needs an estimator (straight-through, REINFORCE). SMEAR avoids the choice. The
router gives a distribution ``p`` over the E experts for each example (from the mean of the
example's token representations), and the layer **merges the experts' parameters** with those
weights,

    theta_merged = sum_i p_i theta_i,

then runs the one merged expert on every token of the example. Everything is differentiable, and
the compute per token is that of one expert, plus one weighted sum of the E experts' parameters
per example. This is not an ensemble: averaging the *outputs*, sum_i p_i E_i(x), costs E expert
applications and, for a non-linear expert, computes something else.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adaedu.moe.experts import make_experts


class SMEARLayer(nn.Module):
    """E Linear-ReLU-Linear experts (d -> h -> d), merged per example by a softmax router that
    reads the mean of the example's tokens. ``forward(x)`` for x (B, T, d) returns the output
    (B, T, d) and the routing probabilities (B, E)."""

    def __init__(self, d_model: int, d_hidden: int, n_experts: int) -> None:
        super().__init__()
        self.experts = make_experts("mlp", n_experts, d_model, d_hidden)
        self.router = nn.Linear(d_model, n_experts)  # p = softmax(W mean_t(x_t) + b)

    def route(self, x: Tensor) -> Tensor:
        """Routing probabilities per example, (B, E), from the mean token representation."""
        return torch.softmax(self.router(x.mean(dim=1)), dim=-1)

    def merged(self, probs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The merged expert of each example: theta = sum_i p_i theta_i for both layers' weights
        and biases, shapes (B, h, d), (B, h), (B, d, h), (B, d)."""
        stacks = [
            torch.stack([getattr(e[layer], name) for e in self.experts])
            for layer, name in ((0, "weight"), (0, "bias"), (2, "weight"), (2, "bias"))
        ]  # each (E, ...): the experts' parameters side by side
        return tuple(torch.einsum("be,e...->b...", probs, s) for s in stacks)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.router.in_features:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"x has shape {shape}; allowed values: (B, T, {self.router.in_features})"
            )
        probs = self.route(x)
        w1, b1, w2, b2 = self.merged(probs)
        h = torch.relu(torch.einsum("btd,bhd->bth", x, w1) + b1[:, None])  # merged first layer
        return torch.einsum("bth,bdh->btd", h, w2) + b2[:, None], probs  # merged second layer


def ensemble_output(layer: SMEARLayer, x: Tensor, probs: Tensor) -> Tensor:
    """The output ensemble sum_i p_i E_i(x) with the same probabilities (B, E): what SMEAR is
    *not*, for comparison (E expert applications per token)."""
    n = len(layer.experts)
    if not isinstance(probs, Tensor) or probs.shape != (x.shape[0], n):
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f"probs has shape {shape}; allowed values: ({x.shape[0]}, {n})")
    outs = torch.stack([expert(x) for expert in layer.experts], dim=-1)  # (B, T, d, E)
    return (outs * probs[:, None, None, :]).sum(-1)

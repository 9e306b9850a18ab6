"""Fast feedforward networks (Belcak & Wattenhofer 2023, arXiv:2308.14711). Notebook 3.1 (to come).

A fast feedforward (FFF) layer is a balanced binary tree of depth D. Each of its 2^D - 1 inner
nodes is one neuron, c_n(x) = w_n . x + b_n, and each of its 2^D leaves is a small MLP of width
``leaf_width``.

- **Training** is soft. Node n sends x right with probability sigma(c_n(x)) and left with
  1 - sigma(c_n(x)). A leaf's weight is the product of these probabilities along its path (the
  weights sum to 1), and the output is the weighted sum of all leaves. Everything is
  differentiable.
- **Inference** is hard. Starting at the root, each node sends x right if c_n(x) > 0 and left
  otherwise, so one path of D nodes is evaluated and only the one leaf it ends in is run.

Compute per token at inference is D node neurons plus one leaf, against all 2^D leaves in
training. This is what the paper means by logarithmic-time access to the layer's neurons. Nodes
are numbered as in a heap: node n has children 2n + 1 (left) and 2n + 2 (right), and leaf j is
node 2^D - 1 + j.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FastFeedForward(nn.Module):
    """A depth-``depth`` FFF layer, d -> d, with 2^depth Linear-ReLU-Linear leaves of width
    ``leaf_width``: soft mixture of the leaves in training mode, one hard path in eval mode."""

    def __init__(self, d_model: int, leaf_width: int, depth: int) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("leaf_width", leaf_width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; allowed values: an integer >= 1")
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth={depth!r}; allowed values: an integer >= 0")
        self.depth, n_leaves = depth, 2**depth
        self.nodes = nn.Linear(d_model, max(n_leaves - 1, 1))  # c_n(x) for every inner node
        scale = d_model**-0.5
        self.w1 = nn.Parameter(torch.randn(n_leaves, leaf_width, d_model) * scale)
        self.b1 = nn.Parameter(torch.zeros(n_leaves, leaf_width))
        self.w2 = nn.Parameter(torch.randn(n_leaves, d_model, leaf_width) * leaf_width**-0.5)
        self.b2 = nn.Parameter(torch.zeros(n_leaves, d_model))

    def leaf_probs(self, x: Tensor) -> Tensor:
        """(N, 2^D) soft leaf weights for x (N, d): products of sigma(c_n) (right) and
        1 - sigma(c_n) (left) along each leaf's path; every row sums to 1."""
        right = torch.sigmoid(self.nodes(x))  # (N, nodes)
        probs = x.new_ones(x.shape[0], 1)  # the root's subtree holds all the mass
        for level in range(self.depth):
            first = 2**level - 1  # heap index of the first node on this level
            p = right[:, first : first + 2**level]  # (N, 2^level), in left-to-right order
            probs = torch.stack((probs * (1 - p), probs * p), dim=-1).flatten(1)  # children
        return probs

    def hard_leaf(self, x: Tensor) -> Tensor:
        """(N,) the leaf each x reaches by hard descent: right where c_n(x) > 0, else left."""
        node = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        logits = self.nodes(x)
        for _ in range(self.depth):
            go_right = logits.gather(1, node[:, None]).squeeze(1) > 0
            node = 2 * node + 1 + go_right.long()  # heap children: 2n + 1 (left), 2n + 2 (right)
        return node - (2**self.depth - 1)  # node index -> leaf index

    def leaves(self, x: Tensor, leaf: Tensor) -> Tensor:
        """Leaf ``leaf[i]`` applied to x[i] (both N long): only the chosen leaves run."""
        h = torch.relu(torch.einsum("nd,nhd->nh", x, self.w1[leaf]) + self.b1[leaf])
        return torch.einsum("nh,ndh->nd", h, self.w2[leaf]) + self.b2[leaf]

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.shape[-1] != self.nodes.in_features:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"x has shape {shape}; allowed values: (..., {self.nodes.in_features})"
            )
        flat = x.reshape(-1, x.shape[-1])
        if self.training:  # soft: every leaf, weighted by its path probability
            h = torch.relu(torch.einsum("nd,lhd->nlh", flat, self.w1) + self.b1)
            out = torch.einsum("nlh,ldh->nld", h, self.w2) + self.b2  # (N, leaves, d)
            y = (self.leaf_probs(flat)[..., None] * out).sum(1)
        else:  # hard: one path, one leaf
            y = self.leaves(flat, self.hard_leaf(flat))
        return y.reshape(x.shape)

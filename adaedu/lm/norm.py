"""RMSNorm: B. Zhang and R. Sennrich, *Root Mean Square Layer Normalization*, NeurIPS 2019,
arXiv:1910.07467.

LayerNorm re-centres and re-scales each token's features; RMSNorm drops the re-centring and
keeps only the re-scaling by the root mean square (eq. 4), which is cheaper and works as well.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Eq. 4: ``y_i = x_i / RMS(x) * g_i`` with ``RMS(x) = sqrt(mean_i x_i^2 + eps)``, over the
    last dimension; the gain ``g`` (``weight``) starts at 1. ``eps`` guards against x = 0."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim={dim!r}; allowed values: an integer >= 1")
        if not eps > 0:
            raise ValueError(f"eps={eps!r}; allowed values: a number > 0")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # g

    def forward(self, x: Tensor) -> Tensor:
        rms = torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # RMS(x)
        return x / rms * self.weight  # eq. 4: x_i / RMS(x) * g_i

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"

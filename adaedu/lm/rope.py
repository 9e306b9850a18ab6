"""Rotary position embeddings (RoPE): J. Su, Y. Lu, S. Pan, A. Murtadha, B. Wen, Y. Liu,
*RoFormer: Enhanced Transformer with Rotary Position Embedding*, arXiv:2104.09864 (2021).

Instead of adding a position vector to the input, rotate each query and key: split the d
features of a head into d/2 pairs and turn pair i of the vector at position m by the angle
``m * theta_i``, with ``theta_i = base^(-2i/d)`` (eq. 15, with i counted from 0 here). A dot
product of a query at m with a key at n then depends on the positions only through ``n - m``
(eq. 16): attention becomes relative. Eq. 34 computes the rotation without a matrix:

    R x = (x_1, x_2, x_3, x_4, ...) * (cos m.theta_1, cos m.theta_1, cos m.theta_2, ...)
        + (-x_2, x_1, -x_4, x_3, ...) * (sin m.theta_1, sin m.theta_1, sin m.theta_2, ...)

Shapes: x is (..., T, d) with d even; cos and sin are (T, d/2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def rotary_angles(positions: Tensor, dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """``cos`` and ``sin`` of ``m * theta_i`` for each position m and pair i, shape (T, dim/2)."""
    if dim % 2:
        raise ValueError(f"dim={dim}; allowed values: an even number (features come in pairs)")
    i = torch.arange(dim // 2, dtype=torch.float64)  # in float64 on the CPU (MPS has no float64)
    theta = base ** (-2.0 * i / dim)  # eq. 15: theta_i = base^(-2(i-1)/d), i = 1..d/2
    angles = positions.detach().cpu().to(torch.float64)[:, None] * theta[None, :]  # m * theta_i
    return angles.cos().float().to(positions.device), angles.sin().float().to(positions.device)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Eq. 34: rotate each pair (x_2i, x_2i+1) of the last dimension by the angle of its row."""
    d = x.shape[-1]
    if d % 2 or cos.shape != sin.shape or cos.shape[-1:] != (d // 2,):
        raise ValueError(
            f"x {tuple(x.shape)}, cos {tuple(cos.shape)}, sin {tuple(sin.shape)}; allowed values: "
            "x (..., T, d) with d even, and cos and sin of the same shape (T, d/2)"
        )
    x1, x2 = x[..., 0::2], x[..., 1::2]  # the two coordinates of every pair
    y1 = x1 * cos - x2 * sin  # eq. 34: x_1 cos m.theta_1 - x_2 sin m.theta_1
    y2 = x2 * cos + x1 * sin  # eq. 34: x_2 cos m.theta_1 + x_1 sin m.theta_1
    return torch.stack((y1, y2), dim=-1).flatten(-2)  # interleave back: (y1_1, y2_1, y1_2, ...)


class RotaryEmbedding(nn.Module):
    """Precomputed angles for positions ``0 .. max_positions - 1``; ``forward(x, start)``
    rotates ``x`` (..., T, dim) as the tokens at positions ``start .. start + T - 1``."""

    def __init__(self, dim: int, max_positions: int, base: float = 10000.0):
        super().__init__()
        cos, sin = rotary_angles(torch.arange(max_positions), dim, base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        end = start + x.shape[-2]
        if end > self.cos.shape[0]:
            raise ValueError(
                f"positions {start}..{end - 1}; allowed values: 0..{self.cos.shape[0] - 1} "
                "(max_positions, the model's block_size)"
            )
        cos, sin = self.cos[start:end].to(x.dtype), self.sin[start:end].to(x.dtype)
        return apply_rotary(x, cos, sin)

"""Feed-forward networks for the transformer block, and the protocol of a pluggable FFN.

**The FFN protocol.** A block's FFN is any ``nn.Module`` that maps ``x`` (B, T, d_model) to
either ``y`` (B, T, d_model) or a tuple ``(y, aux)``. ``y`` is added to the residual stream;
``aux`` may be anything (an auxiliary load-balancing loss, routing decisions, a dict of them):
:class:`adaedu.lm.TinyLM` collects it per layer in ``LMOutput.aux`` (``None`` for the layers
whose FFN returns a plain tensor). The model never adds an auxiliary loss to its own loss: the
training loss function does, e.g. ``out.loss + w * sum(a["loss"] for a in out.aux)``. This is
how the mixture-of-experts layers of ``adaedu.moe`` plug in (Switch, Hash layers, Mixtral, ...).

Provided here, both without biases:

- :class:`MLP`, the dense FFN of Vaswani et al. (2017), eq. 2, ``FFN(x) = act(x W_1) W_2``,
  with GELU (Hendrycks & Gimpel, arXiv:1606.08415) as in GPT-2, hidden size 4 d by default;
- :class:`SwiGLU`, N. Shazeer, *GLU Variants Improve Transformer*, arXiv:2002.05202 (2020),
  sec. 2: ``FFN_SwiGLU(x) = (Swish(x W) * x V) W_2``; three matrices instead of two, so the
  hidden size is 2/3 of the MLP's (8/3 d) to keep parameters and FLOPs equal (sec. 2).
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from adaedu.checks import check_int

FFN_KINDS = ("mlp", "swiglu")


def default_d_ff(kind: str, d_model: int) -> int:
    """Hidden size: 4 d for ``mlp``; 8/3 d rounded up to a multiple of 8 for ``swiglu``."""
    if kind not in FFN_KINDS:
        raise ValueError(f"kind={kind!r}; allowed values: {', '.join(FFN_KINDS)}")
    return 4 * d_model if kind == "mlp" else 8 * math.ceil(d_model / 3)  # 8 * ceil(8d/3 / 8)


class MLP(nn.Module):
    """Vaswani et al. (2017), eq. 2, without biases and with GELU: ``act(x W_1) W_2``."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        check_int("d_model", d_model)
        check_int("d_ff", d_ff)
        self.up = nn.Linear(d_model, d_ff, bias=False)  # W_1
        self.out = nn.Linear(d_ff, d_model, bias=False)  # W_2

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.gelu(self.up(x)))  # FFN(x) = GELU(x W_1) W_2


class SwiGLU(nn.Module):
    """Shazeer (2020), sec. 2: ``FFN_SwiGLU(x) = (Swish_1(x W) * x V) W_2``, Swish_1 = SiLU."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        check_int("d_model", d_model)
        check_int("d_ff", d_ff)
        self.gate = nn.Linear(d_model, d_ff, bias=False)  # W
        self.up = nn.Linear(d_model, d_ff, bias=False)  # V
        self.out = nn.Linear(d_ff, d_model, bias=False)  # W_2

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.silu(self.gate(x)) * self.up(x))  # (Swish(xW) * xV) W_2


def split_ffn_output(out: Tensor | tuple[Tensor, Any]) -> tuple[Tensor, Any]:
    """``(y, aux)`` from an FFN's output, following the protocol above (aux None if absent)."""
    if isinstance(out, Tensor):
        return out, None
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Tensor):
        return out
    raise TypeError(
        f"an FFN returned {type(out).__name__}; allowed values: a tensor y or a tuple (y, aux)"
    )

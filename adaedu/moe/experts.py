"""Experts and their dense, FLOP-matched baselines.

Experts live in an ``nn.ModuleList`` of E small modules (one per expert), so that
:func:`adaedu.compute.active_parameters` can weigh each expert by the tokens it received, and so
that notebook 2.13 can move single experts between devices (offloading).

- ``"mlp"``:    Linear -> ReLU -> Linear, as in T5 and the Switch Transformer
  (:func:`adaedu.moe.noisy_topk.expert_mlp`);
- ``"swiglu"``: (Swish(x W_gate) * x W_up) W_down without biases, as in Mixtral (Shazeer 2020,
  *GLU Variants Improve Transformer*, https://arxiv.org/abs/2002.05202, eq. 6: FFN_SwiGLU).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from adaedu.moe.noisy_topk import expert_mlp

EXPERT_KINDS = ("mlp", "swiglu")


class SwiGLU(nn.Module):
    """FFN_SwiGLU(x) = (Swish_1(x W_gate) * x W_up) W_down (Shazeer 2020, eq. 6), no biases.

    W_gate and W_up (Mixtral's w1 and w3) are stacked into one ``nn.Linear`` ``gate_up``
    (2h, d), gate rows first (the layout of HF's Mixtral), so that one matrix product computes
    both; ``down`` is W_down (w2).
    """

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("d_hidden", d_hidden)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; allowed values: an integer >= 1")
        self.d_model, self.d_hidden = d_model, d_hidden
        self.gate_up = nn.Linear(d_model, 2 * d_hidden, bias=False)  # [W_gate; W_up]
        self.down = nn.Linear(d_hidden, d_model, bias=False)  # W_down

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # x W_gate, x W_up
        return self.down(F.silu(gate) * up)  # (Swish(x W_gate) * x W_up) W_down


def make_expert(kind: str, d_model: int, d_hidden: int) -> nn.Module:
    """One expert (or a dense feed-forward layer) of ``kind`` "mlp" or "swiglu": d -> h -> d."""
    if kind == "mlp":
        return expert_mlp(d_model, d_hidden, d_model)
    if kind == "swiglu":
        return SwiGLU(d_model, d_hidden)
    raise ValueError(f"kind={kind!r}; allowed values: {', '.join(map(repr, EXPERT_KINDS))}")


def make_experts(kind: str, n_experts: int, d_model: int, d_hidden: int) -> nn.ModuleList:
    """E independent experts of ``kind``, in an ``nn.ModuleList``."""
    if not isinstance(n_experts, int) or n_experts < 1:
        raise ValueError(f"n_experts={n_experts!r}; allowed values: an integer >= 1")
    return nn.ModuleList(make_expert(kind, d_model, d_hidden) for _ in range(n_experts))


def expert_kind(expert: nn.Module) -> tuple[str, int, int]:
    """``(kind, d_model, d_hidden)`` of an expert built by :func:`make_expert`."""
    if isinstance(expert, SwiGLU):
        return "swiglu", expert.d_model, expert.d_hidden
    linears = [m for m in expert.modules() if isinstance(m, nn.Linear)]
    if isinstance(expert, nn.Sequential) and len(linears) == 2:
        return "mlp", linears[0].in_features, linears[0].out_features
    raise ValueError(
        f"expert is a {type(expert).__name__}; allowed values: an expert from make_expert"
    )


def matched_dense_hidden(
    kind: str, d_model: int, d_hidden: int, active_experts: float, router_macs: float
) -> int:
    """Hidden width H of a dense layer of ``kind`` with the MoE's multiply-adds per token.

    An expert costs m * d * h multiply-adds per token (m = 2 for "mlp", 3 for "swiglu"); a token
    uses ``active_experts`` of them plus ``router_macs`` for routing, so
    H = round(active_experts * h + router_macs / (m * d)). Biases and activations are ignored.
    """
    if kind not in EXPERT_KINDS:
        raise ValueError(f"kind={kind!r}; allowed values: {', '.join(map(repr, EXPERT_KINDS))}")
    for name, value in (("d_model", d_model), ("d_hidden", d_hidden)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}; allowed values: an integer >= 1")
    if not active_experts > 0 or not router_macs >= 0:
        raise ValueError(
            f"active_experts={active_experts!r}, router_macs={router_macs!r}; allowed values: "
            "active_experts > 0 and router_macs >= 0"
        )
    m = 2 if kind == "mlp" else 3
    return max(1, round(active_experts * d_hidden + router_macs / (m * d_model)))

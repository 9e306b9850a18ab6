"""Exercises of notebook 2.4 (Xue et al. 2022, WideNet): what sharing across depth costs in
parameters, and the individual LayerNorms that let one shared layer act differently per block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from adaedu.exercises import Exercise
from adaedu.modular.vit import TinyViT, ViTConfig
from adaedu.modular.widenet import make_albert, make_widenet

# --- q1: parameters in the blocks of a ViT, ALBERT and WideNet ----------------------------------


def _block_parameters(model: TinyViT) -> int:
    """Parameters held by the blocks, each shared tensor once (``parameters()`` skips repeats)."""
    return sum(p.numel() for p in model.blocks.parameters())


def block_parameters(d_model: int, d_ff: int, n_layers: int, n_experts: int) -> tuple:
    """(ViT, ALBERT, WideNet) parameters in the blocks (attention, FFN or MoE, LayerNorms), for
    2 heads and top-2 routing; counted on the real models."""
    config = ViTConfig(
        image_size=4, patch=2, d_model=d_model, n_layers=n_layers, n_heads=2, d_ff=d_ff
    )
    return (
        _block_parameters(TinyViT(config)),
        _block_parameters(make_albert(config)),
        _block_parameters(make_widenet(config, n_experts=n_experts, k=2)),
    )


def _param_inputs(gen: torch.Generator) -> tuple:
    d = 2 * int(torch.randint(2, 9, (1,), generator=gen))
    d_ff = int(torch.randint(4, 33, (1,), generator=gen))
    n_layers = int(torch.randint(2, 7, (1,), generator=gen))
    n_experts = int(torch.randint(2, 6, (1,), generator=gen))
    return d, d_ff, n_layers, n_experts


def _param_diagnose(args: tuple, expected: tuple, got: object) -> str | None:
    d, _, n_layers, _ = args
    if not isinstance(got, tuple | list) or len(got) != 3:
        return None
    vit, albert, wide = (int(g) if isinstance(g, int | float) else None for g in got)
    norms = 4 * d  # two LayerNorms of 2 d parameters per block
    if wide is not None and wide == expected[2] - (n_layers - 1) * norms:
        return (
            "WideNet keeps an individual pair of LayerNorms in every block: count them n_layers "
            "times (only attention and the MoE layer are shared)"
        )
    if albert is not None and albert == expected[1] * n_layers:
        return "ALBERT shares the whole block: its parameters count once, not once per layer"
    if vit is not None and vit == expected[0] - (n_layers - 1) * expected[1]:
        return "a ViT has n_layers blocks of its own: its block parameters count n_layers times"
    return None


q1 = Exercise(
    title="Exercise 1 (parameters under sharing)",
    reference=block_parameters,
    make_inputs=_param_inputs,
    hints=[
        "attention: qkv (d x 3d + 3d) and out (d x d + d); a dense FFN: d x d_ff + d_ff + d_ff x d + d",
        "an MoE layer: n_experts FFNs plus its router (d x n_experts); LayerNorm: 2 d",
        "ViT: everything n_layers times; ALBERT: one block; WideNet: one attention + one MoE, "
        "and 2 LayerNorms per block",
    ],
    diagnose=_param_diagnose,
    atol=0.0,
    rtol=0.0,
)


# --- q2: one input, a LayerNorm per depth ----------------------------------------------------------


def depth_norms(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``z`` (B, n, d) normalised by each depth's LayerNorm (``weight``, ``bias`` of shape (L, d)):
    (L, B, n, d), LN_l(z) = (z - mean) / sqrt(var + 1e-5) * weight_l + bias_l."""
    d = z.shape[-1]
    return torch.stack(
        [F.layer_norm(z, (d,), w, b, eps=1e-5) for w, b in zip(weight, bias, strict=True)]
    )


def _norm_inputs(gen: torch.Generator) -> tuple:
    b, n, d = (
        int(torch.randint(1, 4, (1,), generator=gen)),
        5,
        2 * int(torch.randint(2, 6, (1,), generator=gen)),
    )
    layers = int(torch.randint(2, 5, (1,), generator=gen))
    z = torch.randn(b, n, d, generator=gen) * 3 + 1
    weight = 1 + 0.5 * torch.randn(layers, d, generator=gen)
    bias = 0.5 * torch.randn(layers, d, generator=gen)
    return z, weight, bias


def _norm_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    z, weight, bias = args
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        return None
    d = z.shape[-1]
    unbiased = (z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, keepdim=True) + 1e-5)
    if torch.allclose(
        got, torch.stack([unbiased * w + b for w, b in zip(weight, bias, strict=True)]), atol=1e-4
    ):
        return (
            "LayerNorm divides by the biased variance (mean of squared deviations, unbiased=False)"
        )
    shared = F.layer_norm(z, (d,), weight[0], bias[0])
    if torch.allclose(got, shared.expand_as(got), atol=1e-4):
        return "every depth uses the first LayerNorm: depth l needs weight[l] and bias[l]"
    return None


q2 = Exercise(
    title="Exercise 2 (a LayerNorm per depth)",
    reference=depth_norms,
    make_inputs=_norm_inputs,
    hints=[
        "normalise z over its last dimension: subtract the mean, divide by sqrt(var + 1e-5)",
        "then scale and shift with depth l's weight[l] and bias[l]; stack the L results",
        "torch.nn.functional.layer_norm(z, (d,), weight[l], bias[l]) does one depth",
    ],
    diagnose=_norm_diagnose,
)

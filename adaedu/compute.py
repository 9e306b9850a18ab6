"""Compute accounting: FLOPs actually spent per example, and active vs. total parameters.

Quality-versus-compute plots are only honest if compute is *measured* on the code that runs.
FLOPs are counted with PyTorch's ``torch.utils.flop_counter.FlopCounterMode``, which counts the
matrix products (2 FLOPs per multiply-add) that a forward pass executes; elementwise work
(softmax, activations) is not counted, as is usual in the papers.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def _check_module(name: str, module: object) -> None:
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"{name} is a {type(module).__name__}; allowed values: a torch.nn.Module")


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    """Total number of parameters of ``module``."""
    _check_module("module", module)
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def forward_flops(model: torch.nn.Module, *inputs: torch.Tensor, per_example: bool = True) -> float:
    """FLOPs of one forward pass of ``model(*inputs)``, divided by the batch size if ``per_example``.

    The batch size is the length of the first input's first dimension. For a mixture of experts
    that really skips the unchosen experts, the count is the compute actually spent.
    """
    if not inputs:
        raise ValueError("forward_flops needs at least one input tensor")
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    with counter:
        model(*inputs)
    model.train(was_training)
    total = float(counter.get_total_flops())
    return total / inputs[0].shape[0] if per_example else total


def active_parameters(model: torch.nn.Module) -> float:
    """Parameters used per token (or example) in the last forward pass, averaged over tokens.

    Any sub-module that routes inputs to experts exposes ``experts`` (a ``ModuleList``) and,
    after a forward pass, ``last_expert_counts`` (how many tokens each expert received) and
    ``last_num_tokens``. Its experts then count with weight ``count_e / num_tokens`` instead of 1;
    every other parameter counts fully. For top-k routing without dropping this is
    ``shared + k * params_per_expert``.
    """
    _check_module("model", model)
    total = float(count_parameters(model))
    for module in model.modules():
        counts = getattr(module, "last_expert_counts", None)
        if counts is None:
            continue
        tokens = float(module.last_num_tokens)
        for expert, count in zip(module.experts, counts.tolist(), strict=True):
            total -= count_parameters(expert) * (1.0 - count / tokens)
    return total

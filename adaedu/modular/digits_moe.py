"""Sparse and soft mixtures of experts in a tiny ViT on sklearn's 8x8 digits (notebook 3.2).

Puigcerver, Riquelme, Mustafa & Houlsby (2023), *From Sparse to Soft Mixtures of Experts*,
https://arxiv.org/abs/2308.00951, compare Soft MoE with token choice, expert choice and dense
ViTs at matched compute. This module runs that comparison at laptop scale:

- :func:`load_digit_split`  the 1797 bundled digits, a fixed stratified train/test split;
- :data:`METHODS` and :func:`make_ffn_factory` the FFN of each method, by name;
- :func:`train_vit` / :func:`evaluate_vit`     training and the measurements (accuracy, dropped
  tokens, how far the Soft MoE dispatch columns are from summing to 1).

Compute is counted in *expert applications per token* ("multiplier" m): a dense MLP of width
m h, top-m token choice, expert choice with capacity factor m, or Soft MoE with m n slots for
n tokens all run about m expert-sized MLPs per token (before tokens are dropped).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from adaedu.data import load_digits_split
from adaedu.modular.vit import TinyViT, ViTConfig, classification_loss
from adaedu.moe.experts import make_expert
from adaedu.moe.layer import MoEFeedForward, make_moe
from adaedu.train import History, train

#: method name -> router kind; every method takes a compute multiplier m (see the docstring).
METHODS = {
    "dense": None,
    "top-1": "switch",  # Switch routing: argmax expert, weight p_i(x), capacity
    "top-2": "topk",  # top-2 token choice, weights renormalised over the 2, capacity
    "expert choice": "expert_choice",
    "soft": "soft",
}


@dataclass
class DigitSplit:
    """Normalised digit images (B, 8, 8) and labels (B,) for training and testing."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load_digit_split(test_fraction: float = 0.25, seed: int = 0) -> DigitSplit:
    """sklearn's bundled 8x8 digits (1797 images, pixel values 0-16), split stratified by class;
    pixels standardised with the training set's mean and std."""
    return DigitSplit(*load_digits_split(test_fraction, seed, images=True))


def method_kwargs(method: str, multiplier: int, n_tokens: int, n_experts: int) -> dict:
    """The router arguments that give ``method`` about ``multiplier`` expert applications per
    token: k for token choice, capacity factor c for expert choice, slots per expert for Soft
    MoE (multiplier * n_tokens slots in all, Puigcerver et al. Sec. 2.1)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; allowed values: {', '.join(map(repr, METHODS))}")
    if method == "top-1" and multiplier != 1 or method == "top-2" and multiplier != 2:
        raise ValueError(f"multiplier={multiplier!r}; allowed values: {method[-1]} for {method}")
    if not isinstance(multiplier, int) or multiplier < 1:
        raise ValueError(f"multiplier={multiplier!r}; allowed values: an integer >= 1")
    if method == "soft":
        slots = multiplier * n_tokens
        if slots % n_experts:
            raise ValueError(
                f"multiplier * n_tokens = {slots} slots; allowed values: a multiple of "
                f"n_experts={n_experts}"
            )
        return {"slots_per_expert": slots // n_experts}
    if method == "expert choice":
        return {"capacity_factor": float(multiplier)}
    if method == "top-1":
        return {"capacity_factor": 1.0}
    if method == "top-2":
        return {"k": 2, "capacity_factor": 1.0}
    return {}


def make_ffn_factory(
    method: str,
    multiplier: int,
    config: ViTConfig,
    n_experts: int,
    moe_layers: tuple[int, ...],
    capacity_factor: float = 1.0,
    soft_normalize: bool = False,
):
    """``factory(layer)`` for :class:`TinyViT`: an MoE layer (E experts of width d_ff, routed
    per image) in ``moe_layers``, and a dense MLP of width multiplier * d_ff elsewhere for the
    "dense" method (None, the default MLP, in the other layers of the MoE methods).
    ``capacity_factor`` applies to token choice (top-1, top-2), ``soft_normalize`` (the
    l2-normalisation of Sec. 2.3, which the paper needs only for large d) to Soft MoE."""
    kwargs = method_kwargs(method, multiplier, config.n_tokens, n_experts)
    if "k" in kwargs or method == "top-1":
        kwargs["capacity_factor"] = capacity_factor
    if method == "soft":
        kwargs["normalize"] = soft_normalize
    bad = [i for i in moe_layers if not 0 <= i < config.n_layers]
    if bad:
        raise ValueError(f"moe_layers has {bad}; allowed values: 0..{config.n_layers - 1}")

    def factory(layer: int) -> nn.Module | None:
        if layer not in moe_layers:
            return None
        if method == "dense":
            return make_expert("mlp", config.d_model, multiplier * config.d_ff)
        return make_moe(
            METHODS[method],
            config.d_model,
            config.d_ff,
            n_experts,
            expert="mlp",
            group="sequence",  # one image = one group: capacity and mixing per image
            **kwargs,
        )

    return factory


def make_vit(
    method: str,
    multiplier: int,
    config: ViTConfig,
    n_experts: int = 4,
    moe_layers: tuple[int, ...] = (2, 3),
    capacity_factor: float = 1.0,
    soft_normalize: bool = False,
) -> TinyViT:
    """A :class:`TinyViT` whose ``moe_layers`` use ``method`` at ``multiplier``."""
    return TinyViT(
        config,
        make_ffn_factory(
            method, multiplier, config, n_experts, moe_layers, capacity_factor, soft_normalize
        ),
    )


def _batches(n: int, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Index batches: a fresh random permutation every epoch (the last partial batch dropped)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def train_vit(
    model: TinyViT,
    data: DigitSplit,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 5e-3,
    seed: int = 0,
) -> History:
    """AdamW with a cosine learning-rate decay on cross-entropy + the MoE auxiliary losses."""
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r}; allowed values: an integer >= 1")
    n = len(data.y_train)
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size={batch_size!r}; allowed values: 1..{n}")
    device = next(model.parameters()).device
    x, y = data.x_train.to(device), data.y_train.to(device)
    steps = epochs * (n // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    batches = _batches(n, batch_size, seed)

    def next_batch(step: int) -> tuple[Tensor, Tensor]:
        for group in optimizer.param_groups:  # cosine decay from lr to 0 over the run
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        idx = next(batches)
        idx = idx.to(device)
        return x[idx], y[idx]

    history = train(
        model,
        lambda m, batch: classification_loss(m, *batch),
        next_batch,
        steps=steps,
        optimizer=optimizer,
        log_every=max(1, steps // 50),
        progress=False,
    )
    return history


@dataclass
class Evaluation:
    """Measurements of one trained model on the test set."""

    accuracy: float  # fraction of test images classified correctly
    dropped_fraction: float  # tokens that reached no expert, over all MoE layers
    max_dispatch_deviation: float  # Soft MoE: max |sum_i D_ij - 1| over slots; nan otherwise
    min_dispatch: float  # Soft MoE: smallest dispatch weight (> 0: every token reaches every slot)


@torch.no_grad()
def evaluate_vit(model: TinyViT, images: Tensor, labels: Tensor) -> Evaluation:
    """Accuracy, the fraction of dropped tokens (averaged over the MoE layers) and, for Soft MoE,
    the largest deviation of a slot's dispatch weights from summing to 1 over the tokens."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError("images and labels must have the same length")
    model.eval()
    device = next(model.parameters()).device
    out = model(images.to(device))
    accuracy = float((out.logits.argmax(-1).cpu() == labels).float().mean())
    dropped, deviation, minimum = [], [], []
    for aux in out.aux:
        if aux is None:
            continue
        routing = aux.routing
        dropped.append(float(routing.dropped.float().mean()))
        if routing.is_soft:
            sums = routing.dispatch.double().sum(dim=1)  # over the n tokens of each image
            deviation.append(float((sums - 1).abs().max()))
            minimum.append(float(routing.dispatch.min()))
    model.train()
    return Evaluation(
        accuracy,
        sum(dropped) / len(dropped) if dropped else 0.0,
        max(deviation) if deviation else math.nan,
        min(minimum) if minimum else math.nan,
    )


def moe_layers_of(model: nn.Module) -> list[MoEFeedForward]:
    """The MoE layers of ``model``, in order."""
    return [m for m in model.modules() if isinstance(m, MoEFeedForward)]


@dataclass
class RunResult:
    """One trained model of :func:`run_comparison` and what was measured on it."""

    method: str
    multiplier: int
    seed: int
    evaluation: Evaluation
    flops_per_image: float  # measured forward FLOPs on the test set (adaedu.compute)
    parameters: int  # total
    active_parameters: float  # used per token in the test forward pass
    seconds: float  # training time
    model: TinyViT


def run_comparison(
    data: DigitSplit,
    config: ViTConfig,
    settings: list[tuple[str, int]],
    *,
    seeds: int,
    epochs: int,
    n_experts: int = 4,
    moe_layers: tuple[int, ...] = (2, 3),
    device: torch.device | str = "cpu",
    **train_kwargs,
) -> list[RunResult]:
    """Train one ViT per (method, multiplier) in ``settings`` and seed 0..seeds-1, with the same
    data order per seed, and measure each on the test set."""
    from adaedu.compute import active_parameters, count_parameters, forward_flops
    from adaedu.device import seed_everything

    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r}; allowed values: an integer >= 1")
    results = []
    x_test = data.x_test.to(device)
    for method, multiplier in settings:
        for seed in range(seeds):
            seed_everything(seed)
            model = make_vit(method, multiplier, config, n_experts, moe_layers).to(device)
            history = train_vit(model, data, epochs=epochs, seed=seed, **train_kwargs)
            evaluation = evaluate_vit(model, data.x_test, data.y_test)
            flops = forward_flops(model, x_test)
            results.append(
                RunResult(
                    method,
                    multiplier,
                    seed,
                    evaluation,
                    flops,
                    count_parameters(model),
                    active_parameters(model),
                    history.seconds,
                    model,
                )
            )
    return results

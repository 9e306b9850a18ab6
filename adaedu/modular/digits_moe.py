"""Sparse and soft mixtures of experts in a tiny ViT on sklearn's 8x8 digits (notebook 3.2).

Puigcerver, Riquelme, Mustafa & Houlsby (2023), *From Sparse to Soft Mixtures of Experts*,
https://arxiv.org/abs/2308.00951, compare Soft MoE with token choice, expert choice and dense
ViTs at matched compute. This module runs that comparison at laptop scale:

- :data:`METHODS` and :func:`make_ffn_factory` the FFN of each method, by name;
- :func:`load_canvas_digits`, :func:`shift_digits`, :func:`shifted_test_set`,
  :func:`train_vit_stream`, :func:`run_stream_comparison`  the notebook's pretraining-like regime:
  every step draws fresh random shifts of the training digits into a larger canvas, plus pixel
  noise, so that the models under-fit a stream instead of memorising 1347 images;
- :func:`evaluate_vit` the measurements (accuracy, dropped tokens, how far the Soft MoE dispatch
  columns are from summing to 1).

Compute is counted in *expert applications per token* ("multiplier" m): a dense MLP of width
m h, top-m token choice, expert choice with capacity factor m, or Soft MoE with m n slots for
n tokens all run about m expert-sized MLPs per token (before tokens are dropped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

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


#: Auxiliary-loss weights per method, passed explicitly (the layer's defaults are not relied on):
#: token choice gets Switch's balance loss (alpha = 0.01, Fedus et al. eq. 4) and ST-MoE's z-loss
#: (1e-3); Soft MoE and expert choice need none (balanced by construction), the paper uses none.
LOSS_WEIGHTS = {
    "top-1": {"balance": 0.01, "z": 0.001},
    "top-2": {"balance": 0.01, "z": 0.001},
    "expert choice": {"balance": 0.0, "z": 0.0},
    "soft": {"balance": 0.0, "z": 0.0},
}


def make_ffn_factory(
    method: str,
    multiplier: int,
    config: ViTConfig,
    n_experts: int,
    moe_layers: tuple[int, ...],
    capacity_factor: float = 1.0,
    soft_normalize: bool = False,
    loss_weights: dict[str, float] | None = None,
):
    """``factory(layer)`` for :class:`TinyViT`: an MoE layer (E experts of width d_ff, routed
    per image) in ``moe_layers``, and a dense MLP of width multiplier * d_ff elsewhere for the
    "dense" method (None, the default MLP, in the other layers of the MoE methods).
    ``capacity_factor`` applies to token choice (top-1, top-2), ``soft_normalize`` (the
    l2-normalisation of Sec. 2.3, which the paper needs only for large d) to Soft MoE.
    ``loss_weights`` (default :data:`LOSS_WEIGHTS` of the method) weight the auxiliary losses."""
    kwargs = method_kwargs(method, multiplier, config.n_tokens, n_experts)
    if "k" in kwargs or method == "top-1":
        kwargs["capacity_factor"] = capacity_factor
    if method == "soft":
        kwargs["normalize"] = soft_normalize
    bad = [i for i in moe_layers if not 0 <= i < config.n_layers]
    if bad:
        raise ValueError(f"moe_layers has {bad}; allowed values: 0..{config.n_layers - 1}")
    weights = dict(LOSS_WEIGHTS.get(method, {}) if loss_weights is None else loss_weights)

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
            loss_weights=weights,
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
    loss_weights: dict[str, float] | None = None,
) -> TinyViT:
    """A :class:`TinyViT` whose ``moe_layers`` use ``method`` at ``multiplier``."""
    return TinyViT(
        config,
        make_ffn_factory(
            method,
            multiplier,
            config,
            n_experts,
            moe_layers,
            capacity_factor,
            soft_normalize,
            loss_weights,
        ),
    )


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
    """One trained model of :func:`run_stream_comparison` and what was measured on it."""

    method: str
    multiplier: int
    seed: int
    evaluation: Evaluation
    flops_per_image: float  # measured forward FLOPs on the test set (adaedu.compute)
    parameters: int  # total
    active_parameters: float  # used per token in the test forward pass
    seconds: float  # training time
    model: TinyViT
    correct: Tensor | None = None  # per test image, for a bootstrap by image


# --- the pretraining-like regime: a stream of freshly shifted, noisy digits -------------------


def load_canvas_digits(test_fraction: float = 0.25, seed: int = 0) -> DigitSplit:
    """sklearn's bundled 8x8 digits (1797 images, pixel values 0-16), split stratified by class
    (1347 training and 450 test images at 0.25): the base images that :func:`shift_digits` pastes
    into a larger zero canvas. Pixels are divided by the training pixels' standard deviation, not
    centred, so that the background stays 0, the value of the canvas around a digit."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r}; allowed values: 0 < fraction < 1")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        digits.images,
        digits.target,
        test_size=test_fraction,
        stratify=digits.target,
        random_state=seed,
    )
    x_tr, x_te = (torch.tensor(a, dtype=torch.float32) for a in (x_tr, x_te))
    std = x_tr.std()
    return DigitSplit(
        x_tr / std,
        torch.tensor(y_tr, dtype=torch.long),
        x_te / std,
        torch.tensor(y_te, dtype=torch.long),
    )


def shift_digits(images: Tensor, canvas: int, gen: torch.Generator, noise: float = 0.0) -> Tensor:
    """Paste each (h, w) image at a uniformly random offset into a zero ``canvas x canvas`` image
    and add Gaussian pixel noise of standard deviation ``noise`` (vectorised: one call per batch).
    With an 8x8 digit and ``canvas`` 10 there are 9 offsets; with noise, no two draws coincide."""
    if not isinstance(images, Tensor) or images.dim() != 3:
        raise ValueError("images: allowed values: a tensor of shape (B, h, w)")
    B, h, w = images.shape
    if not isinstance(canvas, int) or canvas < max(h, w):
        raise ValueError(f"canvas={canvas!r}; allowed values: an integer >= {max(h, w)}")
    if not noise >= 0:
        raise ValueError(f"noise={noise!r}; allowed values: a standard deviation >= 0")
    rows = torch.randint(0, canvas - h + 1, (B,), generator=gen)
    cols = torch.randint(0, canvas - w + 1, (B,), generator=gen)
    out = images.new_zeros(B, canvas, canvas)
    r = (rows[:, None] + torch.arange(h))[:, :, None]  # (B, h, 1)
    c = (cols[:, None] + torch.arange(w))[:, None, :]  # (B, 1, w)
    out[torch.arange(B)[:, None, None], r, c] = images
    if noise > 0:
        out = out + noise * torch.randn(out.shape, generator=gen)
    return out


#: The seed of the stream's held-out test set: every notebook on the stream (3.2, 2.4) tests on
#: the same shifted copies.
TEST_SEED = 12345


def shifted_test_set(
    images: Tensor, labels: Tensor, *, copies: int, canvas: int, noise: float, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """``copies`` independently shifted, noisy versions of every held-out image: returns images
    (copies * n, canvas, canvas), labels and the index of each one's base image (for a bootstrap
    by base image). Fixed by ``seed``, the same for every model."""
    if not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies={copies!r}; allowed values: an integer >= 1")
    gen = torch.Generator().manual_seed(seed)
    base = torch.arange(len(labels)).repeat(copies)
    return shift_digits(images[base], canvas, gen, noise), labels[base], base


def train_vit_stream(
    model: TinyViT,
    data: DigitSplit,
    *,
    steps: int,
    canvas: int,
    noise: float,
    batch_size: int = 128,
    lr: float = 5e-3,
    seed: int = 0,
) -> History:
    """AdamW (cosine decay of ``lr`` to 0, weight decay 0.01) on cross-entropy + the MoE auxiliary
    losses, for ``steps`` steps; every step draws ``batch_size`` training digits at random and
    fresh shifts and noise (:func:`shift_digits`), from a generator seeded with ``seed``: the same
    stream for every model trained with that seed."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}; allowed values: an integer >= 1")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; allowed values: an integer >= 1")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(  # foreach: one kernel per step for all tensors, less overhead
        model.parameters(), lr=lr, weight_decay=0.01, foreach=True
    )
    n = len(data.y_train)

    def next_batch(step: int) -> tuple[Tensor, Tensor]:
        for group in optimizer.param_groups:  # cosine decay from lr to 0 over the run
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        x = shift_digits(data.x_train[idx], canvas, gen, noise)
        return x.to(device), data.y_train[idx].to(device)

    return train(
        model,
        lambda m, batch: classification_loss(m, *batch),
        next_batch,
        steps=steps,
        optimizer=optimizer,
        log_every=max(1, steps // 50),
        progress=False,
    )


@torch.no_grad()
def correct_per_image(model: TinyViT, images: Tensor, labels: Tensor, chunk: int = 2048) -> Tensor:
    """A bool (n,) tensor: is each image classified correctly (evaluated in chunks)."""
    model.eval()
    device = next(model.parameters()).device
    out = [
        model(images[i : i + chunk].to(device)).logits.argmax(-1).cpu() == labels[i : i + chunk]
        for i in range(0, len(labels), chunk)
    ]
    model.train()
    return torch.cat(out)


def _stream_run(
    task: tuple[str, int, int],
    data: DigitSplit,
    config: ViTConfig,
    test: tuple[Tensor, Tensor, Tensor],
    probe: int,
    n_experts: int,
    moe_layers: tuple[int, ...],
    steps: int,
    noise: float,
    device: torch.device | str,
    train_kwargs: dict,
) -> RunResult:
    """One (method, multiplier, seed) of :func:`run_stream_comparison`: seeded from scratch, so
    its result does not depend on what ran before it or in which process."""
    from adaedu.compute import active_parameters, count_parameters, forward_flops
    from adaedu.device import seed_everything

    method, multiplier, seed = task
    x_probe, y_probe = test[0][:probe], test[1][:probe]
    seed_everything(seed)
    model = make_vit(method, multiplier, config, n_experts, moe_layers).to(device)
    history = train_vit_stream(
        model, data, steps=steps, canvas=config.image_size, noise=noise, seed=seed, **train_kwargs
    )
    correct = correct_per_image(model, test[0], test[1])
    probe_eval = evaluate_vit(model, x_probe, y_probe)
    evaluation = Evaluation(
        float(correct.float().mean()),
        probe_eval.dropped_fraction,
        probe_eval.max_dispatch_deviation,
        probe_eval.min_dispatch,
    )
    return RunResult(
        method,
        multiplier,
        seed,
        evaluation,
        forward_flops(model, x_probe.to(device)),
        count_parameters(model),
        active_parameters(model),
        history.seconds,
        model,
        correct,
    )


def run_stream_comparison(
    data: DigitSplit,
    config: ViTConfig,
    settings: list[tuple[str, int]],
    *,
    seeds: list[int],
    steps: int,
    noise: float,
    test_copies: int,
    n_experts: int = 4,
    moe_layers: tuple[int, ...] = (2, 3),
    device: torch.device | str = "cpu",
    probe: int = 256,
    workers: int = 1,
    **train_kwargs,
) -> tuple[list[RunResult], tuple[Tensor, Tensor, Tensor]]:
    """Train one ViT per (method, multiplier) in ``settings`` and seed in ``seeds`` on the stream
    of :func:`train_vit_stream` (canvas = ``config.image_size``), the same stream and the same
    initialisation seed for every setting of one seed (paired runs); measure each on the shifted
    test set of :func:`shifted_test_set` (``test_copies`` per held-out digit, seed :data:`TEST_SEED`).
    Accuracy is on the whole test set; dropped tokens, dispatch sums and FLOPs on its first
    ``probe`` images. Returns the runs (in settings-then-seeds order) and the test set
    ``(images, labels, base index)``.

    ``workers`` > 1 trains that many runs at once in separate processes
    (:func:`adaedu.parallel.map_runs`; CPU only, each with the calling process's thread count).
    The runs are independent and seeded from scratch, so the results are those of the serial
    loop, in the same order; only the wall time changes."""
    from functools import partial

    from adaedu.parallel import map_runs

    if not seeds:
        raise ValueError("seeds is empty; allowed values: a list of integer seeds")
    test = shifted_test_set(
        data.x_test,
        data.y_test,
        copies=test_copies,
        canvas=config.image_size,
        noise=noise,
        seed=TEST_SEED,
    )
    tasks = [(method, m, seed) for method, m in settings for seed in seeds]
    run = partial(
        _stream_run,
        data=data,
        config=config,
        test=test,
        probe=probe,
        n_experts=n_experts,
        moe_layers=moe_layers,
        steps=steps,
        noise=noise,
        device=device,
        train_kwargs=train_kwargs,
    )
    return map_runs(run, tasks, workers=workers, device=device), test

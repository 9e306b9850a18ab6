"""The experiment of notebook 2.4 (Xue et al. 2022, WideNet): a ViT, ALBERT-style sharing and
WideNet, trained on the same stream of shifted, noisy digits (3.2's under-fitting regime) for
several seeds, each (model, seed) one run in parallel processes.

Used by notebook 2.4 only; the models live in :mod:`adaedu.modular.widenet`, the stream and the
training loop in :mod:`adaedu.modular.digits_moe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from adaedu.modular.digits_moe import (
    TEST_SEED,
    DigitSplit,
    correct_per_image,
    shifted_test_set,
    train_vit_stream,
)
from adaedu.modular.vit import TinyViT, ViTConfig
from adaedu.modular.widenet import make_albert, make_widenet
from adaedu.parallel import map_runs

MODELS = ("WideNet", "ViT", "ALBERT")  # WideNet first: the longest runs start first


@dataclass(frozen=True)
class Setup:
    """What every run shares: the model sizes, the stream, and the test set's size."""

    config: ViTConfig
    n_experts: int
    k: int
    steps: int
    batch_size: int
    noise: float
    test_copies: int


@dataclass
class Run:
    """One trained model: its test accuracy, trainable parameters, and training seconds."""

    model: str
    seed: int
    accuracy: float
    parameters: int
    seconds: float
    state: dict


def build(name: str, setup: Setup) -> TinyViT:
    """A fresh model ``name`` (one of :data:`MODELS`) of the setup's sizes."""
    if name not in MODELS:
        raise ValueError(f"name={name!r}; allowed values: {', '.join(MODELS)}")
    if name == "ViT":
        return TinyViT(setup.config)
    if name == "ALBERT":
        return make_albert(setup.config)
    return make_widenet(setup.config, n_experts=setup.n_experts, k=setup.k)


def run_one(task: tuple[str, int], setup: Setup, data: DigitSplit) -> Run:
    """Train model ``task[0]`` from seed ``task[1]`` on the stream (the same batches for every
    model of a seed) and measure its accuracy on the shifted test set (the same for all runs)."""
    from adaedu.compute import count_parameters
    from adaedu.device import seed_everything

    name, seed = task
    if name not in MODELS:
        raise ValueError(f"name={name!r}; allowed values: {', '.join(MODELS)}")
    torch.set_num_threads(1)  # tiny matrices: one thread per process is fastest
    seed_everything(seed)
    model = build(name, setup)
    history = train_vit_stream(
        model,
        data,
        steps=setup.steps,
        canvas=setup.config.image_size,
        noise=setup.noise,
        batch_size=setup.batch_size,
        seed=seed,
    )
    x, y, _ = held_out(data, setup)
    accuracy = float(correct_per_image(model, x, y).float().mean())
    return Run(name, seed, accuracy, count_parameters(model), history.seconds, model.state_dict())


def held_out(data: DigitSplit, setup: Setup) -> tuple[Tensor, Tensor, Tensor]:
    """``setup.test_copies`` shifted, noisy copies of every held-out digit (the stream's
    :data:`~adaedu.modular.digits_moe.TEST_SEED`, as in 3.2)."""
    if not isinstance(setup, Setup):
        raise ValueError(f"setup is a {type(setup).__name__}; allowed values: a Setup")
    return shifted_test_set(
        data.x_test,
        data.y_test,
        copies=setup.test_copies,
        canvas=setup.config.image_size,
        noise=setup.noise,
        seed=TEST_SEED,
    )


def run_comparison(
    seeds: list[int], setup: Setup, data: DigitSplit, workers: int = 1
) -> dict[str, list[Run]]:
    """Every model of :data:`MODELS` for every seed, in ``workers`` processes; returns the runs
    per model, in seed order (the same results for any ``workers``)."""
    if not seeds:
        raise ValueError("seeds is empty; allowed values: one or more integers")
    tasks = [(name, seed) for name in MODELS for seed in seeds]
    runs = map_runs(partial(run_one, setup=setup, data=data), tasks, workers=workers)
    return {name: [r for r in runs if r.model == name] for name in MODELS}

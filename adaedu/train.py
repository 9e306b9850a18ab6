"""A minimal training loop: one optimiser step per batch, a history of metrics, a progress bar.

Deliberately small (in the spirit of nanoGPT's train loop): the notebooks read it, so it hides
nothing. Deterministic on the CPU under :func:`adaedu.device.seed_everything`.
"""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

Batch = Any
#: ``loss_fn(model, batch)`` returns the loss, or ``(loss, {"name": value, ...})``.
LossFn = Callable[[torch.nn.Module, Batch], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]


@dataclass
class History:
    """Metrics logged during training: ``history["loss"]`` is a list, ``history.steps`` its steps."""

    steps: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def log(self, step: int, **values: float) -> None:
        self.steps.append(step)
        for name, value in values.items():
            self.metrics.setdefault(name, [float("nan")] * (len(self.steps) - 1)).append(
                float(value)
            )
        for series in self.metrics.values():  # keep every series aligned with `steps`
            if len(series) < len(self.steps):
                series.append(float("nan"))

    def __getitem__(self, name: str) -> list[float]:
        if name not in self.metrics:
            raise KeyError(
                f"no metric {name!r}; logged metrics: {', '.join(self.metrics) or 'none'}"
            )
        return self.metrics[name]

    def last(self, name: str) -> float:
        return self[name][-1]


def _next_or_explain(batches: Iterator[Batch], steps: int) -> Callable[[int], Batch]:
    """``step -> next(batches)``, with an error naming ``steps`` if the iterator runs out."""

    def next_batch(step: int) -> Batch:
        try:
            return next(batches)
        except StopIteration:
            raise ValueError(
                f"batches ran out after {step - 1} batches but steps={steps}; allowed values: an "
                f"iterator of at least {steps} batches (or a function step -> batch)"
            ) from None

    return next_batch


def train(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batches: Callable[[int], Batch] | Iterator[Batch],
    *,
    steps: int,
    optimizer: torch.optim.Optimizer,
    log_every: int = 1,
    stop: Callable[[History], bool] | None = None,
    progress: bool = True,
    desc: str = "training",
) -> History:
    """Train ``model`` for ``steps`` optimiser steps and return the :class:`History`.

    ``batches`` is either a function ``step -> batch`` (for example ``lambda step: (X, y)`` for
    full-batch training) or an iterator of batches. Every ``log_every`` steps the loss and the
    extra metrics returned by ``loss_fn`` are logged; ``stop(history)`` may end training early
    (for example once a criterion is reached), checked right after each log.
    """
    for name, value in (("steps", steps), ("log_every", log_every)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r}; allowed values: an integer >= 1")
    steps = int(steps)
    if not callable(batches) and not isinstance(batches, Iterator):
        raise ValueError(
            f"batches is a {type(batches).__name__}; allowed values: a function step -> batch "
            "or an iterator of batches (use iter(...) on a list)"
        )
    history = History()
    next_batch = batches if callable(batches) else _next_or_explain(batches, steps)
    start = time.perf_counter()
    model.train()
    quiet = not progress or os.environ.get("TQDM_DISABLE", "") not in (
        "",
        "0",
    )  # `adaedu run` sets it
    bar = tqdm(range(1, steps + 1), desc=desc, disable=quiet, leave=False)
    for step in bar:
        out = loss_fn(model, next_batch(step))
        loss, extra = out if isinstance(out, tuple) else (out, {})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % log_every == 0 or step == steps:
            history.log(step, loss=loss.item(), **extra)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if stop is not None and stop(history):
                break
    bar.close()
    history.seconds = time.perf_counter() - start
    return history

"""Synthetic tasks on which experts can specialise, and how to train a model on them.

:class:`ClusterTask` (notebook 2.1): inputs come from a mixture of C Gaussian clusters and each
cluster has its own random linear map, y = A_c x. A router can tell the clusters apart from x, and
an expert that serves a few clusters only has a few linear maps to learn; a dense network of the
same compute must fit all C maps at once. Everything is generated from a seed; nothing is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from adaedu.moe.noisy_topk import RoutingStats, SparseMoE, expert_mlp, routing_stats
from adaedu.train import History, train


@dataclass(frozen=True)
class ClusterTask:
    """C clusters in R^d_in with centres ``centers`` (C, d_in) and maps ``maps`` (C, d_out, d_in)."""

    centers: Tensor
    maps: Tensor
    spread: float

    @property
    def n_clusters(self) -> int:
        return self.centers.shape[0]

    @property
    def d_in(self) -> int:
        return self.centers.shape[1]

    @property
    def d_out(self) -> int:
        return self.maps.shape[1]

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """``n`` examples ``(x, y, cluster)``: a uniform cluster c, x = centre_c + spread * noise,
        y = A_c x."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r}; allowed values: an integer >= 1")
        cluster = torch.randint(self.n_clusters, (n,), generator=generator)
        x = self.centers[cluster] + self.spread * torch.randn(n, self.d_in, generator=generator)
        y = torch.einsum("noi,ni->no", self.maps[cluster], x)
        return x, y, cluster


def make_cluster_task(
    n_clusters: int,
    d_in: int,
    d_out: int,
    *,
    center_scale: float = 2.0,
    spread: float = 1.0,
    shared: float | None = None,
    seed: int = 0,
) -> ClusterTask:
    """A :class:`ClusterTask` with centres ~ N(0, center_scale^2 I) and maps A_c with i.i.d.
    N(0, 1 / (d_in (center_scale^2 + spread^2))) entries, so that each output has variance ~1.

    With ``shared = s`` the maps share structure: A_c = (A_0 + s B_c) / sqrt(1 + s^2) with A_0
    common to all clusters and B_c drawn per cluster (same entry variance as above), so that an
    expert fitted on any cluster is already decent on all of them (notebook 2.1's collapse run:
    ``shared=0.3`` is the review's y = (A_0 + 0.3 A_c) x). ``None`` (default): independent maps.
    """
    for name, value in (("n_clusters", n_clusters), ("d_in", d_in), ("d_out", d_out)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}; allowed values: an integer >= 1")
    if not center_scale > 0 or not spread > 0:
        raise ValueError(f"center_scale={center_scale}, spread={spread}; allowed values: both > 0")
    if shared is not None and not (isinstance(shared, int | float) and shared >= 0):
        raise ValueError(f"shared={shared!r}; allowed values: None or a number >= 0")
    gen = torch.Generator().manual_seed(seed)
    centers = center_scale * torch.randn(n_clusters, d_in, generator=gen)
    scale = (d_in * (center_scale**2 + spread**2)) ** -0.5
    maps = scale * torch.randn(n_clusters, d_out, d_in, generator=gen)
    if shared is not None:
        common = scale * torch.randn(d_out, d_in, generator=gen)
        maps = (common + shared * maps) / (1 + shared**2) ** 0.5
    return ClusterTask(centers, maps, spread)


def fit(
    model: nn.Module,
    task: ClusterTask,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    w_importance: float = 0.0,
    w_load: float = 0.0,
    seed: int = 0,
    log_every: int = 50,
    progress: bool = True,
) -> History:
    """Train ``model`` with Adam on fresh batches of ``task`` to minimise the mean squared error,
    plus the balancing losses (eq. 7 and 11) if ``model`` is a :class:`SparseMoE`.

    Logs ``mse`` and, for a MoE, the batch's ``max_mean_load`` (from the actual counts) and
    ``cv_importance``. The data stream is seeded by ``seed``; seed the model before building it.
    """
    is_moe = isinstance(model, SparseMoE)
    if not is_moe and (w_importance or w_load):
        raise ValueError(
            "w_importance / w_load are for a SparseMoE; allowed values for a dense model: 0"
        )
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device

    def batches(_step: int) -> tuple[Tensor, Tensor]:
        x, y, _ = task.sample(batch_size, gen)
        return x.to(device), y.to(device)

    def loss_fn(m: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x, y = batch
        mse = (m(x) - y).pow(2).mean()
        if not is_moe:
            return mse, {"mse": mse.item()}
        stats = routing_stats(m.last_route)
        metrics = {
            "mse": mse.item(),
            "max_mean_load": stats.max_mean_load,
            "cv_importance": stats.cv_importance,
        }
        return mse + m.balancing_loss(w_importance, w_load), metrics

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    return train(
        model, loss_fn, batches, steps=steps, optimizer=opt, log_every=log_every, progress=progress
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, *, training_mode: bool = False
) -> tuple[float, RoutingStats | None]:
    """Mean squared error on ``(x, y)`` and, for a :class:`SparseMoE`, the routing statistics of
    that batch (else None). In eval mode (default) the gate has no noise; with
    ``training_mode=True`` the router draws its noise as in training (eq. 3), the protocol of the
    paper's Table 6, whose statistics are measured on training batches."""
    if not isinstance(training_mode, bool):
        raise ValueError(f"training_mode={training_mode!r}; allowed values: True, False")
    was_training = model.training
    model.train(training_mode)
    device = next(model.parameters()).device
    mse = float((model(x.to(device)) - y.to(device)).pow(2).mean())
    model.train(was_training)
    return mse, (routing_stats(model.last_route) if isinstance(model, SparseMoE) else None)


@dataclass(frozen=True)
class FitJob:
    """One training run of the comparisons on a :class:`ClusterTask` (notebook 2.1): a
    :class:`SparseMoE` (``n_experts`` experts of width ``hidden``, top ``k``, balancing weights)
    or, with ``n_experts=0``, a dense MLP of width ``hidden``; ``seed`` seeds its weights and its
    data stream."""

    seed: int
    hidden: int
    n_experts: int = 0
    k: int = 0
    w_importance: float = 0.0
    w_load: float = 0.0


@dataclass
class FitResult:
    """What :func:`run_fits` measured for one :class:`FitJob`: the trained model, its history,
    the held-out MSE and routing statistics (eval mode), and for a MoE with ``train_stat_size``
    the routing statistics in training mode on fresh training examples (Table 6's protocol)."""

    job: FitJob
    model: nn.Module
    history: History
    mse: float
    stats: RoutingStats | None
    train_stats: RoutingStats | None = None


def _run_fit(
    job: FitJob,
    task: ClusterTask,
    x_test: Tensor,
    y_test: Tensor,
    fit_kw: dict,
    train_stat_size: int,
    device: torch.device | str,
) -> FitResult:
    from adaedu.device import seed_everything

    seed_everything(job.seed)
    d_in, d_out = task.d_in, task.d_out
    if job.n_experts:
        model = SparseMoE(d_in, d_out, job.hidden, job.n_experts, job.k).to(device)
        losses = dict(w_importance=job.w_importance, w_load=job.w_load)
    else:
        model = expert_mlp(d_in, job.hidden, d_out).to(device)
        losses = {}
    history = fit(model, task, seed=job.seed, progress=False, **losses, **fit_kw)
    train_stats = None
    if job.n_experts and train_stat_size:
        gen = torch.Generator().manual_seed(10_000 + job.seed)
        x_tr, y_tr, _ = task.sample(train_stat_size, gen)
        train_stats = evaluate(model, x_tr, y_tr, training_mode=True)[1]
    mse, stats = evaluate(model, x_test, y_test)
    return FitResult(job, model, history, mse, stats, train_stats)


def run_fits(
    jobs: list[FitJob],
    task: ClusterTask,
    x_test: Tensor,
    y_test: Tensor,
    *,
    fit_kw: dict,
    train_stat_size: int = 0,
    device: torch.device | str = "cpu",
    workers: int = 1,
) -> list[FitResult]:
    """Train and evaluate every job (:func:`fit`, :func:`evaluate`; ``fit_kw``: steps,
    batch_size, lr) in ``workers`` processes (:func:`adaedu.parallel.map_runs`, CPU only, each
    with this process's thread count). Each job seeds itself, so the results, in job order, are
    those of the serial loop."""
    from functools import partial

    from adaedu.parallel import map_runs

    if not jobs:
        raise ValueError("jobs is empty; allowed values: one or more FitJob")
    run = partial(
        _run_fit,
        task=task,
        x_test=x_test,
        y_test=y_test,
        fit_kw=fit_kw,
        train_stat_size=train_stat_size,
        device=device,
    )
    return map_runs(run, jobs, workers=workers, device=device)

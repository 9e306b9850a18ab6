"""Switch Transformer experiments on the course's tiny character LM (notebook 2.2).

Fedus, Zoph & Shazeer (2021), *Switch Transformers*, https://arxiv.org/abs/2101.03961, and the
router z-loss of Zoph et al. (2022), *ST-MoE*, https://arxiv.org/abs/2202.08906.

- :func:`switch_lm` / :func:`dense_lm`  a :class:`adaedu.lm.TinyLM` whose FFNs are Switch layers
  (top-1, capacity factor, balance and z losses) or dense FFNs of the same active compute;
- :func:`switch_loss`        the training loss: cross-entropy + the auxiliary loss of every layer;
- :func:`train_lm`           seeded training with Adam on the shipped text domains;
- :func:`capacity_factor`    a context manager that evaluates a model at another capacity factor;
- :func:`evaluate_lm`        validation loss and routing statistics per layer (:class:`LMEval`);
- :func:`choice_load`        max/mean load of the router's *choices* (before capacity);
- :func:`experts_alive`      how many experts receive a fair fraction of the choices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from adaedu.data import TextCorpus
from adaedu.lm import TinyLM, TinyLMConfig
from adaedu.moe.experts import expert_kind, make_expert
from adaedu.moe.layer import MoEFeedForward, dense_equivalent, make_moe
from adaedu.moe.losses import router_z_loss
from adaedu.moe.routers import Routing, SwitchRouter, _check_capacity_factor
from adaedu.train import History, train

__all__ = [
    "LMEval",
    "capacity_factor",
    "choice_load",
    "dense_lm",
    "evaluate_lm",
    "experts_alive",
    "moe_layers",
    "switch_lm",
    "switch_loss",
    "train_lm",
]


def _check_layers(layers: Sequence[int], n_layers: int) -> tuple[int, ...]:
    chosen = tuple(layers)
    if (
        not chosen
        or len(set(chosen)) < len(chosen)
        or not all(isinstance(i, int) and 0 <= i < n_layers for i in chosen)
    ):
        raise ValueError(
            f"layers={layers!r}; allowed values: distinct block indices in 0..{n_layers - 1}"
        )
    return chosen


def switch_lm(
    config: TinyLMConfig,
    n_experts: int = 8,
    d_expert: int = 128,
    *,
    layers: Sequence[int] | None = None,
    capacity_factor: float | None = 1.25,
    balance_weight: float = 0.01,
    z_weight: float = 0.0,
    expert: str = "mlp",
) -> TinyLM:
    """A TinyLM whose FFN in the blocks ``layers`` (default: all) is a Switch layer.

    Each Switch layer routes each token to one of ``n_experts`` experts (ReLU MLPs d -> d_expert
    -> d, as in T5), with ``capacity_factor`` (eq. 3; None = dropless) per batch,
    ``balance_weight`` alpha (eq. 4) and ``z_weight`` c_z (ST-MoE eq. 5). The other blocks keep a
    dense MLP of width ``d_expert`` (the same kind as one expert).
    """
    moe_at = _check_layers(range(config.n_layers) if layers is None else layers, config.n_layers)

    def ffn(cfg: TinyLMConfig, layer: int) -> nn.Module:
        moe = make_moe(
            "switch",
            cfg.d_model,
            d_expert,
            n_experts,
            expert=expert,
            group="batch",
            loss_weights={"balance": balance_weight, "z": z_weight},
            capacity_factor=capacity_factor,
        )
        if layer in moe_at:
            return moe
        return moe.experts[0]  # a dense FFN of one expert's size

    return TinyLM(replace(config, ffn=ffn))


def dense_lm(
    config: TinyLMConfig,
    n_experts: int = 8,
    d_expert: int = 128,
    expert: str = "mlp",
    scale: float = 1.0,
) -> TinyLM:
    """The dense TinyLM with the same multiply-adds per token as :func:`switch_lm` (all layers
    Switch): each FFN is :func:`adaedu.moe.layer.dense_equivalent` of a Switch layer, i.e. one
    expert widened by the router's cost (width d_expert + E / 2 for a ReLU MLP). ``scale``
    multiplies that width (for a quality-vs-compute curve of dense models)."""
    if not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale={scale!r}; allowed values: a number > 0")

    def ffn(cfg: TinyLMConfig, layer: int) -> nn.Module:
        moe = make_moe("switch", cfg.d_model, d_expert, n_experts, expert=expert)
        matched = dense_equivalent(moe)
        if scale == 1:
            return matched
        kind, d, hidden = expert_kind(matched)
        return make_expert(kind, d, max(1, round(scale * hidden)))

    return TinyLM(replace(config, ffn=ffn))


def moe_layers(model: nn.Module) -> list[MoEFeedForward]:
    """The MoE layers of ``model``, in order."""
    return [m for m in model.modules() if isinstance(m, MoEFeedForward)]


def switch_loss(model: TinyLM, batch: Sequence[Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy + the weighted auxiliary losses of *every* MoE layer (Switch Sec. 2.2: the
    balance loss is added per layer), for :func:`adaedu.train.train`. Also logs the parts."""
    out = model(batch[0], targets=batch[1])
    auxes = [a for a in out.aux if a is not None]
    aux = sum((a.loss for a in auxes), torch.zeros((), device=out.loss.device))
    logs = {"ce": out.loss.item()}
    if auxes:
        logs["balance"] = sum(a.losses["balance"].item() for a in auxes) / len(auxes)
        logs["z"] = sum(a.losses["z"].item() for a in auxes) / len(auxes)
        logs["dropped"] = sum(a.stats.dropped_fraction for a in auxes) / len(auxes)
    return out.loss + aux, logs


def train_lm(
    model: TinyLM,
    corpus: TextCorpus,
    *,
    steps: int,
    batch_size: int,
    block_size: int,
    lr: float = 3e-3,
    seed: int = 0,
    log_every: int = 10,
    device: torch.device | str | None = None,
) -> History:
    """Train ``model`` with Adam on windows of ``corpus`` (a seeded stream, the same for every
    model with the same seed) and :func:`switch_loss`."""
    device = device if device is not None else next(model.parameters()).device
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    batches = corpus.batches(batch_size, block_size, seed=seed, device=device)
    return train(
        model, switch_loss, batches, steps=steps, optimizer=opt, log_every=log_every,
        progress=False,
    )  # fmt: skip


@contextmanager
def capacity_factor(model: nn.Module, factor: float | None) -> Iterator[None]:
    """Within the block, every Switch router of ``model`` uses ``factor`` (None: dropless);
    the training values come back afterwards. Switch Sec. 2.2 evaluates with a higher factor."""
    _check_capacity_factor(factor)
    routers = [m for m in model.modules() if isinstance(m, SwitchRouter)]
    saved = [r.capacity_factor for r in routers]
    for r in routers:
        r.capacity_factor = factor
    try:
        yield
    finally:
        for r, old in zip(routers, saved, strict=True):
            r.capacity_factor = old


def choice_load(routing: Routing) -> float:
    """max/mean of the tokens each expert was *asked* for (the router's argmax, before capacity
    drops the overflow): the imbalance the router wants. (After capacity, max/mean cannot exceed
    capacity / mean, so it would hide a collapse.)"""
    if not isinstance(routing, Routing) or routing.chosen is None:
        raise ValueError("routing must be a token-choice Routing (with .chosen)")
    counts = torch.bincount(routing.chosen.reshape(-1), minlength=routing.n_experts).float()
    return float(counts.max() / counts.mean())


def experts_alive(routing: Routing, threshold: float = 0.1) -> int:
    """Experts asked for by at least ``threshold`` times an equal share of the choices."""
    if not isinstance(routing, Routing) or routing.chosen is None:
        raise ValueError("routing must be a token-choice Routing (with .chosen)")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold={threshold!r}; allowed values: a number in [0, 1]")
    counts = torch.bincount(routing.chosen.reshape(-1), minlength=routing.n_experts).float()
    return int((counts >= threshold * counts.mean()).sum())


@dataclass(frozen=True)
class LMEval:
    """Validation results of one model: the loss, and per MoE layer (lists, one entry per layer,
    averaged over the validation batches) the routing statistics."""

    loss: float  # mean next-token cross-entropy, nats
    max_mean_load: list[float]  # of the router's choices (choice_load)
    experts_alive: list[float]  # experts with >= 10% of an equal share of the choices
    dropped_fraction: list[float]  # tokens that reached no expert (passed by the residual)
    z: list[float]  # mean logsumexp(logits)^2, ST-MoE eq. 5
    tokens_per_expert: list[list[int]]  # choices per expert, summed over the batches


@torch.no_grad()
def evaluate_lm(
    model: TinyLM,
    corpus: TextCorpus,
    *,
    batch_size: int,
    block_size: int,
    n_batches: int = 8,
    seed: int = 1234,
    factor: float | None | str = "train",
) -> LMEval:
    """Validation loss and routing statistics of ``model`` on ``n_batches`` seeded windows of
    ``corpus``, in eval mode, at capacity factor ``factor`` ("train": the training value;
    None: dropless). Capacity is counted per batch of ``batch_size * block_size`` tokens."""
    if not isinstance(n_batches, int) or n_batches < 1:
        raise ValueError(f"n_batches={n_batches!r}; allowed values: an integer >= 1")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    layers = moe_layers(model)
    n = len(layers)
    sums = {k: [0.0] * n for k in ("load", "alive", "dropped", "z")}
    counts = [[0] * (layers[i].n_experts) for i in range(n)]
    loss = 0.0
    ctx = capacity_factor(model, factor) if factor != "train" else _nothing()
    with ctx:
        for _ in range(n_batches):
            x, y, _ = corpus.batch(batch_size, block_size, gen, device=device)
            loss += model(x, targets=y).loss.item() / n_batches
            for i, layer in enumerate(layers):
                r = layer.last_routing
                sums["load"][i] += choice_load(r) / n_batches
                sums["alive"][i] += experts_alive(r) / n_batches
                sums["dropped"][i] += float(r.dropped.float().mean()) / n_batches
                sums["z"][i] += float(router_z_loss(r.logits)) / n_batches
                c = torch.bincount(r.chosen.reshape(-1), minlength=r.n_experts).tolist()
                counts[i] = [a + b for a, b in zip(counts[i], c, strict=True)]
    model.train(was_training)
    return LMEval(loss, sums["load"], sums["alive"], sums["dropped"], sums["z"], counts)


@contextmanager
def _nothing() -> Iterator[None]:
    yield

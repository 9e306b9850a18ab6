"""Training and validating the course's tiny language models: one loop for every LM notebook.

- :func:`moe_aux_loss`        the hook that adds each MoE layer's weighted auxiliary loss;
- :func:`lm_objective`        next-token cross-entropy + the hook, with the metrics to log;
- :func:`validation_batches`  a fixed list of seeded validation batches (the same for every model);
- :func:`evaluate_lm`         validation loss and, per MoE layer, routing statistics (:class:`LMEval`);
- :func:`train_lm`            Adam(W) on a seeded stream of windows, optionally validating every N
  steps for a learning curve (:class:`LMRun`).

The MoE layers are recognised by what their FFN returns besides the output: an ``aux`` with a
``routing`` (:class:`adaedu.moe.layer.MoEAux`) and a ``loss`` (already weighted by the layer's
loss weights, so a layer whose weights are all 0 adds exactly 0). A dense model has none. Every
forward pass runs inside ``routing_token_ids``, so that hash layers see the batch's token ids.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from adaedu.train import History, train

AuxLoss = Callable[[Sequence[Any]], Tensor]
OPTIMIZERS = ("adam", "adamw")


def _moe_auxes(aux: Sequence[Any]) -> list[Any]:
    """The entries of ``LMOutput.aux`` that come from MoE layers (they carry a routing)."""
    return [a for a in aux if a is not None and hasattr(a, "routing")]


def moe_aux_loss(aux: Sequence[Any]) -> Tensor:
    """Sum over the MoE layers of their weighted auxiliary loss ``aux.loss`` (Switch Sec. 2.2:
    the balance loss is added in every layer). 0 for a dense model."""
    if isinstance(aux, str) or not isinstance(aux, Sequence):
        raise TypeError(f"aux={aux!r}; allowed: a list of the layers' aux (LMOutput.aux)")
    losses = [a.loss for a in _moe_auxes(aux)]
    return sum(losses[1:], losses[0]) if losses else torch.zeros(())


def _forward(model: nn.Module, x: Tensor, y: Tensor) -> Any:
    """``model(x, targets=y)`` with the token ids ``x`` visible to every MoE layer, which hash
    routing (Roller et al. 2021) needs; other routers ignore them."""
    from adaedu.moe.layer import routing_token_ids  # here: adaedu.moe imports adaedu.lm

    with routing_token_ids(model, x):
        return model(x, targets=y)


def lm_objective(
    model: nn.Module, batch: Sequence[Tensor], aux_loss: AuxLoss | None = moe_aux_loss
) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy of ``model(x)`` against ``y`` plus ``aux_loss(out.aux)`` (None: none), for
    :func:`adaedu.train.train`. Logs ``ce`` and, with MoE layers (means over the layers):
    ``balance`` and ``z`` (unweighted), ``dropped`` and ``max_mean_load`` (of this batch)."""
    if len(batch) < 2:
        raise ValueError(f"batch has {len(batch)} entries; allowed: (x, y, ...) with targets y")
    out = _forward(model, batch[0], batch[1])
    loss = out.loss if aux_loss is None else out.loss + aux_loss(out.aux).to(out.loss.device)
    logs = {"ce": out.loss.item()}
    auxes = _moe_auxes(out.aux)
    if auxes:
        for name in ("balance", "z"):
            if all(name in a.losses for a in auxes):
                logs[name] = sum(a.losses[name].item() for a in auxes) / len(auxes)
        logs["dropped"] = sum(a.stats.dropped_fraction for a in auxes) / len(auxes)
        logs["max_mean_load"] = sum(a.stats.max_mean_load for a in auxes) / len(auxes)
    return loss, logs


def validation_batches(
    corpus: Any, n_batches: int, batch_size: int, block_size: int, seed: int = 1234, device=None
) -> list[tuple[Tensor, Tensor]]:
    """``n_batches`` seeded (x, y) windows of ``corpus`` (an :class:`adaedu.data.TextCorpus`),
    drawn once so that every model and every evaluation sees the same tokens."""
    if not isinstance(n_batches, int) or n_batches < 1:
        raise ValueError(f"n_batches={n_batches!r}; allowed values: an integer >= 1")
    gen = torch.Generator().manual_seed(seed)
    return [corpus.batch(batch_size, block_size, gen, device=device)[:2] for _ in range(n_batches)]


@dataclass(frozen=True)
class LMEval:
    """Validation of one model: the loss and, per MoE layer (one list entry per layer), the
    routing statistics of all validation batches pooled (counts added)."""

    loss: float  # mean next-token cross-entropy over the batches, nats
    stats: list[Any] = field(default_factory=list)  # MoEStats per layer (after capacity)
    choice_counts: list[list[int]] = field(default_factory=list)  # first choices, before capacity
    z: list[float] = field(default_factory=list)  # mean logsumexp(router logits)^2 (ST-MoE eq. 5)

    @property
    def choice_load(self) -> list[float]:
        """max/mean of the tokens each expert was *asked* for, per layer: the imbalance the
        router wants (after capacity the max is capped, which would hide a collapse)."""
        return [max(c) / (sum(c) / len(c)) if sum(c) else math.nan for c in self.choice_counts]


def _pool(a: Any, b: Any) -> Any:
    """Two batches' MoEStats together: counts added, per-token means weighted by tokens."""
    counts = [x + y for x, y in zip(a.tokens_per_expert, b.tokens_per_expert, strict=True)]
    hist = [x + y for x, y in zip(a.experts_per_token_hist, b.experts_per_token_hist, strict=True)]
    na, nb = sum(a.experts_per_token_hist), sum(b.experts_per_token_hist)
    mean = sum(counts) / len(counts)

    def avg(name: str) -> float:
        return (getattr(a, name) * na + getattr(b, name) * nb) / (na + nb)

    return replace(
        a,
        tokens_per_expert=counts,
        max_mean_load=max(counts) / mean if mean > 0 else math.nan,
        experts_per_token_hist=hist,
        **{n: avg(n) for n in ("dropped_fraction", "overflow_fraction", "router_entropy")},
        experts_per_token=avg("experts_per_token"),
    )


def _choice_counts(routing: Any) -> list[int]:
    """Tokens per expert of the first choices (token choice), else of the kept assignments."""
    if routing.chosen is None:
        return [int(c) for c in routing.expert_counts.tolist()]
    chosen = routing.chosen[:, 0].reshape(-1)
    return torch.bincount(chosen, minlength=routing.n_experts).tolist()


@torch.no_grad()
def evaluate_lm(model: nn.Module, batches: Sequence[Sequence[Tensor]]) -> LMEval:
    """Teacher-forced validation loss of ``model`` (in eval mode; its mode is restored) on the
    fixed ``batches`` (:func:`validation_batches`), and per MoE layer the pooled routing
    statistics, the router's choices and the z-loss term. Deterministic for a given model."""
    if len(batches) == 0:
        raise ValueError("batches is empty; allowed values: a list of at least one (x, y) batch")
    was_training = model.training
    model.eval()
    loss, stats, counts, z = 0.0, None, None, None
    for x, y in (b[:2] for b in batches):
        out = _forward(model, x, y)
        loss += out.loss.item() / len(batches)
        auxes = _moe_auxes(out.aux)
        s = [a.stats for a in auxes]
        c = [_choice_counts(a.routing) for a in auxes]
        zs = [
            math.nan
            if a.routing.logits is None
            else float(torch.logsumexp(a.routing.logits, -1).pow(2).mean()) / len(batches)
            for a in auxes
        ]
        if stats is None:
            stats, counts, z = s, c, zs
        else:
            stats = [_pool(p, q) for p, q in zip(stats, s, strict=True)]
            counts = [
                [u + v for u, v in zip(p, q, strict=True)] for p, q in zip(counts, c, strict=True)
            ]
            z = [p + q for p, q in zip(z, zs, strict=True)]
    model.train(was_training)
    return LMEval(loss, stats, counts, z)


@dataclass
class LMRun:
    """What :func:`train_lm` returns: the training history (``ce``, ``loss`` and the MoE
    metrics of :func:`lm_objective`) and the validation curve (empty without ``eval_every``)."""

    history: History
    val_steps: list[int] = field(default_factory=list)  # 0, eval_every, 2 eval_every, ..., steps
    val_loss: list[float] = field(default_factory=list)  # evaluate_lm(...).loss at those steps

    @property
    def seconds(self) -> float:
        return self.history.seconds


def train_lm(
    model: nn.Module,
    corpus: Any,
    *,
    steps: int,
    batch_size: int,
    block_size: int,
    lr: float = 3e-3,
    seed: int = 0,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    aux_loss: AuxLoss | None = moe_aux_loss,
    log_every: int = 10,
    val_batches: Sequence[Sequence[Tensor]] | None = None,
    eval_every: int | None = None,
) -> LMRun:
    """Train ``model`` on a seeded stream of random windows of ``corpus`` (the same stream for
    every model with the same ``seed``) with ``optimizer`` ("adam", or "adamw" with decoupled
    ``weight_decay``, default 0) and :func:`lm_objective` (``aux_loss`` None: cross-entropy only). With
    ``eval_every`` (and ``val_batches``), the validation loss is measured at step 0 and every
    ``eval_every`` steps (and at the end): a learning curve on fixed batches."""
    for name, value in (("steps", steps), ("log_every", log_every)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}; allowed values: an integer >= 1")
    if not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr={lr!r}; allowed values: a number > 0")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}; allowed values: {', '.join(OPTIMIZERS)}")
    if not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
        raise ValueError(f"weight_decay={weight_decay!r}; allowed values: a number >= 0")
    if weight_decay and optimizer != "adamw":
        raise ValueError(
            f"weight_decay={weight_decay!r} with optimizer={optimizer!r}; allowed values: 0, or "
            "optimizer='adamw' (decoupled weight decay)"
        )
    if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
        raise ValueError(f"eval_every={eval_every!r}; allowed values: None or an integer >= 1")
    if eval_every is not None and not val_batches:
        raise ValueError("val_batches is empty; allowed values: batches when eval_every is set")
    device = next(model.parameters()).device
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
    opt = opt_cls(
        model.parameters(),
        lr=lr,
        **({"weight_decay": weight_decay} if optimizer == "adamw" else {}),
    )
    stream = corpus.batches(batch_size, block_size, seed=seed, device=device)
    run = LMRun(History())

    def objective(m: nn.Module, batch: Sequence[Tensor]) -> tuple[Tensor, dict[str, float]]:
        return lm_objective(m, batch, aux_loss)

    def validate(step: int) -> None:
        if eval_every is not None:
            run.val_steps.append(step)
            run.val_loss.append(evaluate_lm(model, val_batches).loss)

    validate(0)
    done = 0
    while done < steps:  # chunks of eval_every steps, one validation after each
        n = min(eval_every or steps, steps - done)
        part = train(model, objective, stream, steps=n, optimizer=opt, log_every=log_every, progress=False)  # fmt: skip
        for i, step in enumerate(part.steps):
            run.history.log(done + step, **{k: v[i] for k, v in part.metrics.items()})
        run.history.seconds += part.seconds
        done += n
        validate(done)
    return run

"""Experiments of notebook 2.5: expert choice routing in a causal language model, and its leak.

Expert choice (Zhou et al. 2022, Sec. 3.2, https://arxiv.org/abs/2202.09368) lets each expert
pick the k = n c / E tokens of its group that score highest for it (eq. 1-2). Which tokens form
a group decides whether a causal language model stays causal:

- ``"sequence"``: the n = T tokens of one sequence compete. Whether position t is picked
  depends on the scores of positions t + 1 .. T - 1: the future leaks into the past, and
  generation (which has no future) sees a different routing than training.
- ``"batch"``: all B * T tokens of the batch compete: the same leak, plus the other sequences.
- ``"position"``: the B tokens at the *same position* t of the B sequences of the batch
  compete (:class:`PositionGroupedMoE`). With causal attention the hidden state of token
  (b', t) depends on x(b', <= t) only, so nothing in the group has seen x(b, t + 1): no future
  leak. The price: a token's computation depends on the other sequences of the batch, so
  generation must decode B sequences side by side (k = B c / E tokens per expert per step).

Token choice (top-1 / top-2 without capacity) routes each token alone and is causal whatever
the group. The helpers below build the tiny MoE language models, train them with the same data
stream, measure the leak and the routing statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaedu.data import TextCorpus
from adaedu.lm import TinyLM, TinyLMConfig
from adaedu.moe.layer import MoEAux, MoEFeedForward, make_moe
from adaedu.moe.stats import MoEStats, moe_stats
from adaedu.train import History, train

ROUTERS = ("top1", "top2", "expert_choice")
GROUPINGS = ("sequence", "batch", "position")


class PositionGroupedMoE(nn.Module):
    """An MoE layer whose groups are the B tokens at one position of the B sequences.

    x (B, T, d) is transposed to (T, B, d) so that each of the T "sequences" of the wrapped
    :class:`MoEFeedForward` (``group="sequence"``) holds the tokens at one position; the output
    is transposed back. For expert choice this gives k = B c / E tokens per expert and position,
    chosen among tokens that all live at the same time step: causal (see the module docstring).
    """

    def __init__(self, moe: MoEFeedForward) -> None:
        super().__init__()
        if not isinstance(moe, MoEFeedForward) or moe.group != "sequence":
            raise ValueError("moe must be a MoEFeedForward with group='sequence'")
        self.moe = moe

    def forward(self, x: Tensor) -> tuple[Tensor, MoEAux]:
        if not isinstance(x, Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x has shape {shape}; allowed values: (B, T, d)")
        y, aux = self.moe(x.transpose(0, 1))  # groups = positions: (T, B, d)
        return y.transpose(0, 1), aux


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; allowed values: {', '.join(map(repr, allowed))}")


def make_moe_ffn(
    router: str,
    grouping: str,
    d_model: int,
    d_hidden: int,
    n_experts: int,
    *,
    capacity_factor: float = 1.0,
    alpha: float = 0.0,
) -> nn.Module:
    """One MoE feed-forward layer for the language model.

    ``router``: ``"top1"`` (Switch, dropless), ``"top2"`` (top-2 with a softmax over the two,
    dropless) or ``"expert_choice"`` (capacity factor c = ``capacity_factor``, no auxiliary
    loss). ``grouping``: which tokens compete (module docstring). ``alpha`` weighs the Switch
    balance loss (eq. 4 of Fedus et al.) of token-choice routers; the z-loss is off.
    """
    _check_choice("router", router, ROUTERS)
    _check_choice("grouping", grouping, GROUPINGS)
    if not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise ValueError(f"alpha={alpha!r}; allowed values: a loss weight >= 0")
    group = "sequence" if grouping == "position" else grouping
    weights = {"balance": float(alpha), "z": 0.0}
    if router == "expert_choice":
        moe = make_moe(
            "expert_choice",
            d_model,
            d_hidden,
            n_experts,
            group=group,
            loss_weights={"z": 0.0},
            capacity_factor=capacity_factor,
        )
    elif router == "top1":
        moe = make_moe(
            "switch",
            d_model,
            d_hidden,
            n_experts,
            group=group,
            loss_weights=weights,
            capacity_factor=None,
        )
    else:
        moe = make_moe(
            "topk",
            d_model,
            d_hidden,
            n_experts,
            group=group,
            loss_weights=weights,
            k=2,
            capacity_factor=None,
        )
    return PositionGroupedMoE(moe) if grouping == "position" else moe


@dataclass(frozen=True)
class MoELMSpec:
    """What distinguishes the language models of the comparison (the rest is shared)."""

    router: str  # "top1", "top2" or "expert_choice"
    grouping: str  # "sequence", "batch" or "position"
    capacity_factor: float = 1.0  # expert choice: c (experts per token on average)
    alpha: float = 0.0  # token choice: weight of the Switch balance loss


def make_moe_lm(
    spec: MoELMSpec,
    vocab_size: int,
    *,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    block_size: int = 64,
    d_hidden: int = 128,
    n_experts: int = 8,
) -> TinyLM:
    """A :class:`adaedu.lm.TinyLM` whose every FFN is an MoE layer built from ``spec``."""
    if not isinstance(spec, MoELMSpec):
        raise ValueError(f"spec is a {type(spec).__name__}; allowed values: a MoELMSpec")

    def factory(config: TinyLMConfig, layer: int) -> nn.Module:
        return make_moe_ffn(
            spec.router,
            spec.grouping,
            config.d_model,
            d_hidden,
            n_experts,
            capacity_factor=spec.capacity_factor,
            alpha=spec.alpha,
        )

    config = TinyLMConfig(
        vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads, block_size=block_size
    )
    return TinyLM(replace(config, ffn=factory))


def _moe_auxes(aux: list) -> list[MoEAux]:
    return [a for a in aux if isinstance(a, MoEAux)]


def lm_moe_loss(model: TinyLM, batch: Sequence[Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Next-token cross-entropy plus each MoE layer's weighted auxiliary loss; the metrics
    ``ce`` (nats) and ``max_mean_load`` (mean over layers, of this batch)."""
    out = model(batch[0], targets=batch[1])
    auxes = _moe_auxes(out.aux)
    aux_loss = sum((a.loss for a in auxes), torch.zeros((), device=out.loss.device))
    load = sum(a.stats.max_mean_load for a in auxes) / max(1, len(auxes))
    return out.loss + aux_loss, {"ce": out.loss.item(), "max_mean_load": load}


def train_moe_lm(
    model: TinyLM,
    corpus: TextCorpus,
    *,
    steps: int,
    batch_size: int,
    block_size: int,
    lr: float = 3e-3,
    seed: int = 0,
    log_every: int = 10,
    progress: bool = False,
) -> History:
    """AdamW on a seeded stream of random windows of ``corpus`` (the same stream for every model
    with the same seed); logs ``loss`` (with aux), ``ce`` and ``max_mean_load``."""
    device = next(model.parameters()).device
    batches = corpus.batches(batch_size, block_size, seed=seed, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    return train(
        model,
        lm_moe_loss,
        batches,
        steps=steps,
        optimizer=opt,
        log_every=log_every,
        progress=progress,
    )


@dataclass(frozen=True)
class LMEval:
    """Validation of one model: teacher-forced cross-entropy and per-layer routing statistics."""

    ce: float  # mean next-token cross-entropy (nats), all positions computed at once
    stats: list[MoEStats]  # one per MoE layer, pooled over the evaluation batches


@torch.no_grad()
def evaluate_lm(model: TinyLM, batches: Sequence[Sequence[Tensor]]) -> LMEval:
    """Teacher-forced validation loss over ``batches`` and the routing statistics of each MoE
    layer, with the counts of all batches added up (max/mean load of the pooled counts)."""
    if len(batches) == 0:
        raise ValueError("batches is empty; allowed values: at least one (x, y) batch")
    was_training = model.training
    model.eval()
    losses, layer_stats = [], None
    for batch in batches:
        out = model(batch[0], targets=batch[1])
        losses.append(out.loss.item())
        stats = [moe_stats(a.routing) for a in _moe_auxes(out.aux)]
        layer_stats = (
            stats
            if layer_stats is None
            else [_pool(a, b) for a, b in zip(layer_stats, stats, strict=True)]
        )
    model.train(was_training)
    return LMEval(sum(losses) / len(losses), layer_stats or [])


def _pool(a: MoEStats, b: MoEStats) -> MoEStats:
    """The statistics of two routings together (counts added; means weighted by tokens)."""
    counts = [x + y for x, y in zip(a.tokens_per_expert, b.tokens_per_expert, strict=True)]
    hist = [x + y for x, y in zip(a.experts_per_token_hist, b.experts_per_token_hist, strict=True)]
    na, nb = sum(a.experts_per_token_hist), sum(b.experts_per_token_hist)
    mean = sum(counts) / len(counts)

    def avg(u: float, v: float) -> float:
        return (u * na + v * nb) / (na + nb)

    return MoEStats(
        tokens_per_expert=counts,
        max_mean_load=max(counts) / mean if mean > 0 else math.nan,
        dropped_fraction=avg(a.dropped_fraction, b.dropped_fraction),
        overflow_fraction=avg(a.overflow_fraction, b.overflow_fraction),
        router_entropy=avg(a.router_entropy, b.router_entropy),
        experts_per_token=avg(a.experts_per_token, b.experts_per_token),
        experts_per_token_hist=hist,
    )


def future_leak(model: nn.Module, idx: Tensor, position: int, new_token: int) -> Tensor:
    """How much the logits at positions < ``position`` change when the token at ``position`` is
    replaced by ``new_token``: the max absolute change per earlier position, shape (position,).

    A causal model gives exactly 0 everywhere: position t must not see tokens after t. Expert
    choice over the sequence does not (Zhou et al. 2022, Sec. 6, Limitations).
    """
    if not isinstance(idx, Tensor) or idx.dim() != 2:
        raise ValueError("idx must be a (batch, time) tensor of token ids")
    if not isinstance(position, int) or not 1 <= position < idx.shape[1]:
        raise ValueError(f"position={position!r}; allowed values: 1..{idx.shape[1] - 1}")
    was_training = model.training
    model.eval()
    changed = idx.clone()
    changed[:, position] = new_token
    with torch.no_grad():
        before = model(idx).logits[:, :position]
        after = model(changed).logits[:, :position]
    model.train(was_training)
    return (after - before).abs().amax(dim=(0, 2))


@torch.no_grad()
def prefix_loss(model: TinyLM, x: Tensor, y: Tensor) -> Tensor:
    """The loss generation would see: for each t, run the model on the prefix x[:, :t + 1] alone
    and score its last position against y[:, t]. Returns the per-position mean cross-entropy
    (T,) in nats. For a causal model this equals the teacher-forced loss (to rounding)."""
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError("x and y must be (batch, time) tensors of the same shape")
    was_training = model.training
    model.eval()
    losses = []
    for t in range(x.shape[1]):
        logits = model(x[:, : t + 1]).logits[:, -1]
        losses.append(F.cross_entropy(logits.float(), y[:, t]))
    model.train(was_training)
    return torch.stack(losses)


def smooth(values: Sequence[float], beta: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average (as in Adam), to read noisy training curves."""
    if not 0 <= beta < 1:
        raise ValueError(f"beta={beta!r}; allowed values: 0 <= beta < 1")
    out, m = [], 0.0
    for i, v in enumerate(values, start=1):
        m = beta * m + (1 - beta) * v
        out.append(m / (1 - beta**i))
    return out


def steps_to_reach(steps: Sequence[int], curve: Sequence[float], target: float) -> int | None:
    """The first logged step at which ``curve`` is <= ``target`` (None if it never is)."""
    if len(steps) != len(curve):
        raise ValueError(f"{len(steps)} steps for {len(curve)} values; allowed: equal lengths")
    for step, value in zip(steps, curve, strict=True):
        if value <= target:
            return step
    return None


# --- small reference functions (the exercises' solutions) -----------------------------------------


def expert_choice_gates(logits: Tensor, capacity_factor: float) -> Tensor:
    """Expert choice on one group as a dense (n, E) matrix: entry (t, e) is the gate G with which
    expert e took token t, 0 where it did not.

    S = Softmax(X W_g) over the experts (eq. 1), then each expert keeps its k = ceil(n c / E)
    highest-scoring tokens, G, I = TopK(S^T, k) (eq. 2); the same as
    :class:`adaedu.moe.routers.ExpertChoiceRouter` with ``logits`` = X W_g.
    """
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError("logits must be a 2-d tensor (tokens n, experts E)")
    n, n_experts = logits.shape
    if not isinstance(capacity_factor, (int, float)) or not 0 < capacity_factor <= n_experts:
        raise ValueError(
            f"capacity_factor={capacity_factor!r}; allowed values: 0 < c <= {n_experts}"
        )
    scores = torch.softmax(logits.float(), dim=-1)  # eq. 1: S, softmax over the experts
    k = min(n, math.ceil(round(n * capacity_factor / n_experts, 6)))  # k = n c / E
    gate, index = scores.t().topk(k, dim=-1)  # eq. 2: G, I = TopK(S^T, k), (E, k)
    return torch.zeros_like(scores).scatter(0, index.t(), gate.t())  # (n, E)


def experts_per_token_hist(token: Tensor, n_tokens: int, n_experts: int) -> Tensor:
    """How many tokens reached 0, 1, ..., E experts: a (E + 1,) count, from the token index of
    every assignment (``Routing.token``, or I flattened)."""
    if not isinstance(token, Tensor) or token.dim() != 1 or token.is_floating_point():
        raise ValueError("token must be a 1-d integer tensor (the token of each assignment)")
    if token.numel() and (int(token.min()) < 0 or int(token.max()) >= n_tokens):
        raise ValueError(f"token entries must lie in 0..{n_tokens - 1} (n_tokens={n_tokens})")
    per_token = torch.bincount(token, minlength=n_tokens)  # experts reached by each token
    return torch.bincount(per_token, minlength=n_experts + 1)


def top1_max_mean_load(logits: Tensor) -> float:
    """Max / mean of the tokens each expert receives when every token takes its argmax expert
    (top-1 token choice, no capacity): 1 is perfect balance, E means one expert takes all."""
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError("logits must be a 2-d tensor (tokens N, experts E)")
    counts = torch.bincount(logits.argmax(dim=-1), minlength=logits.shape[1]).float()
    return float(counts.max() / counts.mean())

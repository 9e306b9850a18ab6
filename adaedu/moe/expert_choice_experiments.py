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
the group. The helpers below build the tiny MoE language models, measure the leak and read the
learning curves; training and validation are :func:`adaedu.lm.training.train_lm` and
:func:`adaedu.lm.training.evaluate_lm`, shared by every LM notebook.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaedu.lm import TinyLM, TinyLMConfig
from adaedu.moe.layer import MoEAux, MoEFeedForward, make_moe

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


def steps_to_reach(steps: Sequence[int], curve: Sequence[float], target: float) -> float | None:
    """The first step at which ``curve`` reaches ``target`` (<=), linearly interpolated between
    the two logged steps around the crossing (None if it never does). For the speed-up of a
    learning curve measured every N steps: steps of one model to reach another's final loss."""
    if len(steps) != len(curve) or len(steps) == 0:
        raise ValueError(f"{len(steps)} steps for {len(curve)} values; allowed: equal, >= 1")
    if not math.isfinite(target):
        raise ValueError(f"target={target!r}; allowed values: a finite number")
    if curve[0] <= target:
        return float(steps[0])
    for i in range(1, len(steps)):
        if curve[i] <= target:  # curve[i - 1] > target >= curve[i]
            frac = (curve[i - 1] - target) / (curve[i - 1] - curve[i])
            return steps[i - 1] + frac * (steps[i] - steps[i - 1])
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


@dataclass
class SpecRun:
    """One trained LM of the comparison (:func:`train_specs`): its spec and seed, the training
    run (history and validation curve), the validation after training, and the trained weights
    (``make_moe_lm(spec, ...)`` + ``load_state_dict`` rebuilds the model)."""

    spec: MoELMSpec
    seed: int
    run: Any  # adaedu.lm.training.LMRun
    eval: Any  # adaedu.lm.training.LMEval
    state: dict = field(repr=False, default_factory=dict)


def _train_spec(
    task: tuple[MoELMSpec, int],
    corpus: Any,
    val_batches: Sequence[Sequence[Tensor]],
    model_kw: dict,
    train_kw: dict,
) -> SpecRun:
    """One (spec, seed): seeded from scratch, trained by the course's LM loop, validated."""
    from adaedu.device import seed_everything
    from adaedu.lm.training import evaluate_lm, train_lm

    spec, seed = task
    seed_everything(seed)
    device = val_batches[0][0].device
    model = make_moe_lm(spec, corpus.tokenizer.vocab_size, **model_kw).to(device)
    run = train_lm(model, corpus, seed=seed, val_batches=val_batches, **train_kw)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    return SpecRun(spec, seed, run, evaluate_lm(model, val_batches), state)


def train_specs(
    tasks: Sequence[tuple[MoELMSpec, int]],
    corpus: Any,
    val_batches: Sequence[Sequence[Tensor]],
    *,
    model_kw: dict,
    train_kw: dict,
    workers: int = 1,
) -> list[SpecRun]:
    """Train one LM per (spec, seed) in ``tasks`` with :func:`adaedu.lm.training.train_lm`
    (``train_kw``: steps, batch and block size, optimizer, eval_every; the stream is fixed by the
    seed) on ``corpus`` and validate it on ``val_batches``, in ``workers`` processes
    (:func:`adaedu.parallel.map_runs`, CPU only, each with this process's thread count). Every
    run is seeded from scratch, so the results, in task order, are those of the serial loop."""
    from functools import partial

    from adaedu.parallel import map_runs

    if not tasks:
        raise ValueError("tasks is empty; allowed values: one or more (MoELMSpec, seed) pairs")
    run = partial(
        _train_spec, corpus=corpus, val_batches=val_batches, model_kw=model_kw, train_kw=train_kw
    )
    return map_runs(run, list(tasks), workers=workers, device=val_batches[0][0].device)

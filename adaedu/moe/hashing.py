"""Hash layers in a tiny language model: token statistics, hash-table loads, training runs
(notebook 2.3; S. Roller, S. Sukhbaatar, A. Szlam, J. Weston, *Hash Layers For Large Sparse
Models*, NeurIPS 2021, https://arxiv.org/abs/2106.04426).

A hash layer routes token t to expert ``table[id_t]`` (:class:`adaedu.moe.routers.HashRouter`).
How evenly the experts are loaded then depends only on the table and on the token frequencies,
which follow a Zipf-like law (frequency ~ rank^-s): this module measures both without training
(:func:`rank_frequency`, :func:`zipf_fit`, :func:`expert_loads`, :func:`random_table_max_mean`)
and trains the small LMs the notebook compares (:func:`make_routed_lm`,
:func:`train_routed_lm`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from adaedu.data import TextCorpus
from adaedu.lm.model import TinyLM, TinyLMConfig
from adaedu.lm.training import train_lm
from adaedu.moe.experts import make_experts
from adaedu.moe.layer import MoEFeedForward, routing_token_ids
from adaedu.moe.routers import HashRouter, SwitchRouter

ROUTED_KINDS = ("dense", "switch", "random", "balanced", "clustered")


def _check_ids(ids: Tensor, vocab_size: int, name: str = "ids") -> None:
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
        raise ValueError(f"vocab_size={vocab_size!r}; allowed values: an integer >= 1")
    if not isinstance(ids, Tensor) or ids.is_floating_point() or ids.numel() == 0:
        raise ValueError(f"{name} must be a non-empty integer tensor of token ids")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"{name} must lie in 0..{vocab_size - 1} (vocab_size={vocab_size})")


# --- token statistics ------------------------------------------------------------------------


def token_counts(ids: Tensor, vocab_size: int) -> Tensor:
    """How often each of the ``vocab_size`` token types occurs in ``ids`` (any shape)."""
    _check_ids(ids, vocab_size)
    return torch.bincount(ids.reshape(-1).cpu(), minlength=vocab_size)


def rank_frequency(ids: Tensor, vocab_size: int) -> Tensor:
    """Relative frequencies of the token types that occur, most frequent first: entry r - 1 is
    the frequency of the type of rank r (the y axis of a Zipf plot)."""
    counts = token_counts(ids, vocab_size).double()
    freq = counts[counts > 0].sort(descending=True).values
    return freq / freq.sum()


def zipf_fit(freqs: Tensor, min_rank: int = 1, max_rank: int | None = None) -> tuple[float, float]:
    """Least-squares line through (log rank, log frequency) for ranks min_rank..max_rank:
    returns (slope, intercept). Zipf's law f(r) ~ C r^-s gives slope -s (s ~ 1 for words).

    ``freqs`` are the (relative or absolute) frequencies of the types in rank order, as from
    :func:`rank_frequency`; zeros are not allowed (log 0).
    """
    if not isinstance(freqs, Tensor) or freqs.dim() != 1 or freqs.numel() < 2:
        raise ValueError("freqs must be a 1-d tensor of at least 2 frequencies in rank order")
    if not (freqs > 0).all():
        raise ValueError("freqs must be > 0 (drop the types that never occur)")
    max_rank = freqs.numel() if max_rank is None else max_rank
    if not (isinstance(min_rank, int) and isinstance(max_rank, int)) or not (
        1 <= min_rank < max_rank <= freqs.numel()
    ):
        raise ValueError(
            f"min_rank={min_rank!r}, max_rank={max_rank!r}; allowed values: integers with "
            f"1 <= min_rank < max_rank <= {freqs.numel()}"
        )
    ranks = torch.arange(min_rank, max_rank + 1, dtype=torch.float64)
    x, y = ranks.log(), freqs[min_rank - 1 : max_rank].double().log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return float(slope), float(y.mean() - slope * x.mean())


# --- loads of hash tables --------------------------------------------------------------------


def expert_loads(table: Tensor, token_ids: Tensor, n_experts: int) -> Tensor:
    """Tokens each expert receives when ``token_ids`` are routed by the hash ``table``
    (expert = table[id], Roller et al. Sec. 3): a (n_experts,) count of *tokens*, not of types."""
    if not isinstance(table, Tensor) or table.dim() != 1 or table.is_floating_point():
        raise ValueError("table must be a 1-d integer tensor: the expert of each token id")
    if not isinstance(n_experts, int) or n_experts < 1 or int(table.max()) >= n_experts:
        raise ValueError(f"n_experts={n_experts!r}; allowed values: an integer > table.max()")
    _check_ids(token_ids, table.numel(), "token_ids")
    return torch.bincount(table.cpu()[token_ids.reshape(-1).cpu()], minlength=n_experts)


def max_mean(loads: Tensor | Sequence[float]) -> float:
    """max / mean of per-expert loads: 1 is perfect balance, E means one expert takes all."""
    loads = torch.as_tensor(loads, dtype=torch.float64)
    if loads.dim() != 1 or loads.numel() == 0 or (loads < 0).any() or loads.sum() <= 0:
        raise ValueError("loads must be a non-empty 1-d sequence of counts >= 0, not all zero")
    return float(loads.max() / loads.mean())


def greedy_balanced_table(counts: Tensor, n_experts: int) -> Tensor:
    """A deterministic balanced assignment (the idea of Roller et al.'s "Balanced assignment"):
    visit token types from the most to the least frequent (ties: smaller id first) and give each
    to the currently least loaded expert (ties: smaller expert index). Types that never occur
    (count 0) are also handed out in this order, so the table is total. Largest-first greedy
    keeps the expert loads within one type's count of each other."""
    if not isinstance(counts, Tensor) or counts.dim() != 1 or counts.numel() == 0:
        raise ValueError("counts must be a non-empty 1-d tensor (one count per token type)")
    if not isinstance(n_experts, int) or isinstance(n_experts, bool) or n_experts < 1:
        raise ValueError(f"n_experts={n_experts!r}; allowed values: an integer >= 1")
    order = torch.argsort(counts, descending=True, stable=True)
    loads = [0.0] * n_experts
    table = torch.zeros(counts.numel(), dtype=torch.long)
    for token_id in order.tolist():
        e = min(range(n_experts), key=lambda i: (loads[i], i))  # the least loaded expert
        table[token_id] = e
        loads[e] += float(counts[token_id])
    return table


def random_table_max_mean(
    token_ids: Tensor, vocab_size: int, n_experts: int, n_tables: int = 200, seed: int = 0
) -> Tensor:
    """max/mean load on ``token_ids`` of ``n_tables`` independent random hash tables
    (:meth:`HashRouter.random` with seeds seed, seed + 1, ...): how imbalanced random hashing is
    under the data's token frequencies, without training anything."""
    if not isinstance(n_tables, int) or n_tables < 1:
        raise ValueError(f"n_tables={n_tables!r}; allowed values: an integer >= 1")
    counts = token_counts(token_ids, vocab_size).double()
    out = []
    for s in range(seed, seed + n_tables):
        table = HashRouter.random(vocab_size, n_experts, seed=s).table
        loads = torch.zeros(n_experts, dtype=torch.float64).index_add_(0, table, counts)
        out.append(max_mean(loads))
    return torch.tensor(out)


# --- the language models -----------------------------------------------------------------------


def make_routed_lm(
    kind: str,
    vocab_size: int,
    *,
    d_model: int,
    n_layers: int,
    n_heads: int,
    block_size: int,
    n_experts: int,
    d_expert: int,
    tables: Sequence[Tensor] | None = None,
    balance_weight: float = 0.0,
) -> TinyLM:
    """A :class:`TinyLM` whose feed-forward layers are all of one ``kind``:

    - "dense": a SwiGLU FFN of width d_expert (the compute of one expert, no router);
    - "switch": top-1 learned routing (Fedus et al. 2021) over E SwiGLU experts, dropless, with
      the load-balancing loss of Switch eq. 4 at weight ``balance_weight`` (alpha; the paper's
      0.01, 0 for none) and no z-loss;
    - "random", "balanced", "clustered": a :class:`HashRouter` per layer with ``tables[layer]``
      (built by the caller with HashRouter.random / .balanced / .clustered), dropless.

    Hash layers need the token ids: run the model inside :func:`routing_token_ids`.
    """
    if kind not in ROUTED_KINDS:
        raise ValueError(f"kind={kind!r}; allowed values: {', '.join(ROUTED_KINDS)}")
    is_hash = kind in ("random", "balanced", "clustered")
    if is_hash and (tables is None or len(tables) != n_layers):
        raise ValueError(f"kind={kind!r} needs tables: one hash table per layer ({n_layers})")
    if not isinstance(balance_weight, int | float) or not balance_weight >= 0:
        raise ValueError(f"balance_weight={balance_weight!r}; allowed values: a weight >= 0")
    if balance_weight and kind != "switch":
        raise ValueError(
            f"balance_weight={balance_weight!r} with kind={kind!r}; allowed: 0 (only a learned "
            "router, kind='switch', has a load to balance by a loss)"
        )

    def ffn(config: TinyLMConfig, layer: int) -> nn.Module:
        if is_hash:
            router = HashRouter(tables[layer], n_experts, capacity_factor=None)
            weight = 0.0  # nothing to balance: the table fixes the routing
        else:
            router = SwitchRouter(config.d_model, n_experts, capacity_factor=None)
            weight = float(balance_weight)
        experts = make_experts("swiglu", n_experts, config.d_model, d_expert)
        return MoEFeedForward(router, experts, balance_weight=weight, z_weight=0.0)

    config = TinyLMConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        block_size=block_size,
        ffn="swiglu" if kind == "dense" else ffn,
        d_ff=d_expert if kind == "dense" else None,
    )
    return TinyLM(config)


def validation_loss(model: TinyLM, batch: Sequence[Tensor]) -> Tensor:
    """Next-token cross-entropy only (nats per token, no auxiliary loss), as validation scores
    every model."""
    with routing_token_ids(model, batch[0]):
        return model(batch[0], targets=batch[1]).loss


def validation_windows(corpus: TextCorpus, block_size: int) -> tuple[Tensor, Tensor]:
    """The whole of ``corpus`` cut into non-overlapping windows: inputs X (n, block_size) and
    next-token targets Y, so that a validation loss sees every token exactly once."""
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size={block_size!r}; allowed values: an integer >= 1")
    xs, ys = [], []
    for tokens in corpus.tokens.values():
        n = (len(tokens) - 1) // block_size
        if n < 1:
            raise ValueError(f"block_size={block_size} is longer than a domain of the corpus")
        xs.append(tokens[: n * block_size].view(n, block_size))
        ys.append(tokens[1 : n * block_size + 1].view(n, block_size))
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def evaluate_routed(
    model: TinyLM, X: Tensor, Y: Tensor, batch_size: int = 64
) -> tuple[float, list[Tensor]]:
    """Mean next-token loss (nats) over all windows (X, Y), and for each MoE layer the tokens
    each expert received, summed over them (an empty list for a dense model)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    layers = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    loads = [torch.zeros(m.n_experts, dtype=torch.long) for m in layers]
    total = 0.0
    for i in range(0, len(X), batch_size):
        x, y = X[i : i + batch_size].to(device), Y[i : i + batch_size].to(device)
        total += validation_loss(model, (x, y)).item() * x.numel()
        for load, layer in zip(loads, layers, strict=True):
            load += layer.last_expert_counts.cpu()
    model.train(was_training)
    return total / Y.numel(), loads


@dataclass
class RoutedRun:
    """One trained model: its validation-loss curve, final validation loss and expert loads."""

    name: str
    model: TinyLM
    steps: list[int] = field(default_factory=list)  # steps at which validation ran
    val_loss: list[float] = field(default_factory=list)  # loss on the curve's windows then
    train_loss: list[float] = field(default_factory=list)  # training loss, every step
    final_loss: float = math.nan  # loss on the whole validation set after training
    loads: list[Tensor] = field(default_factory=list)  # per MoE layer, on the validation set
    seconds: float = 0.0

    @property
    def max_mean_load(self) -> float:
        """max/mean load on the validation set, averaged over the MoE layers (nan if dense)."""
        if not self.loads:
            return math.nan
        return sum(max_mean(load) for load in self.loads) / len(self.loads)


def train_routed_lm(
    name: str,
    model: TinyLM,
    corpus: TextCorpus,
    X_val: Tensor,
    Y_val: Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    eval_every: int,
    curve_windows: int | None = None,
    seed: int = 0,
) -> RoutedRun:
    """Train ``model`` with the course's LM loop (:func:`adaedu.lm.training.train_lm`: AdamW
    without weight decay, cross-entropy + each layer's weighted auxiliary loss, random windows of
    ``corpus`` from a stream fixed by ``seed``, so every model sees the same batches). Every
    ``eval_every`` steps the loss on the first ``curve_windows`` validation windows (None: all)
    is logged for the learning curve; after training, the loss and the expert loads on all of
    (X_val, Y_val)."""
    if not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError(f"eval_every={eval_every!r}; allowed values: an integer >= 1")
    if curve_windows is not None and not (isinstance(curve_windows, int) and curve_windows >= 1):
        raise ValueError(f"curve_windows={curve_windows!r}; allowed values: None or an int >= 1")
    device = next(model.parameters()).device
    X_curve, Y_curve = X_val[:curve_windows], Y_val[:curve_windows]
    curve = [  # the curve's windows in batches of 64, as evaluate_routed reads them
        (X_curve[i : i + 64].to(device), Y_curve[i : i + 64].to(device))
        for i in range(0, len(X_curve), 64)
    ]
    lm = train_lm(
        model,
        corpus,
        steps=steps,
        batch_size=batch_size,
        block_size=X_val.shape[1],
        lr=lr,
        seed=seed,
        optimizer="adamw",
        log_every=1,
        val_batches=curve,
        eval_every=eval_every,
    )
    final_loss, loads = evaluate_routed(model, X_val, Y_val)
    return RoutedRun(
        name,
        model,
        steps=lm.val_steps,
        val_loss=lm.val_loss,
        train_loss=list(lm.history["loss"]),
        final_loss=final_loss,
        loads=loads,
        seconds=lm.seconds,
    )

"""Routers: which token goes to which expert, with what weight (notebooks 2.2-2.15, 3.2).

Every router is a small ``nn.Module`` that maps token groups ``x`` (G, n, d) to one structure,
:class:`Routing`. Think of each expert as a row of *slots*: dispatch fills the slots with
tokens, the expert processes its slots, combine adds the slot outputs back to the tokens.

- Hard routers (all but Soft MoE): a slot holds exactly one token. :class:`Routing` keeps the A
  (token, expert, weight) assignments, sorted by expert, and the layer computes
  ``y_t = sum over assignments a of token t: weight_a * E_{expert_a}(x_t)``.
- Soft MoE: a slot holds a softmax-weighted mixture of all tokens of its group, so
  :class:`Routing` carries dense ``dispatch`` and ``combine`` weights instead.

A *group* is the set of tokens that compete for capacity: one sequence, or the whole batch
(:class:`adaedu.moe.layer.MoEFeedForward` decides). Token indices in :class:`Routing` count over
the flattened N = G * n tokens. Shapes: E experts, k choices per token, d features.

The routers and their papers:

- :class:`ShazeerRouter`       noisy top-k (Shazeer et al. 2017), wrapping
  :class:`adaedu.moe.noisy_topk.NoisyTopKRouter`;
- :class:`TopKRouter`          top-k with a softmax over the k kept logits (Mixtral, Jiang et al. 2024);
- :class:`SwitchRouter`        top-1 with capacity and token dropping (Fedus et al. 2021);
- :class:`HashRouter`          a fixed token-id -> expert table (Roller et al. 2021);
- :class:`ExpertChoiceRouter`  experts pick their top tokens (Zhou et al. 2022);
- :class:`SoftMoERouter`       slots are mixtures of tokens (Puigcerver et al. 2023).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaedu.moe.noisy_topk import NoisyTopKRouter

GROUPINGS = ("batch", "sequence")


# --- argument checks ------------------------------------------------------------------------------


def _check_int(name: str, value: int, minimum: int = 1, maximum: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if not ok or (maximum is not None and value > maximum):
        upper = f"..{maximum}" if maximum is not None else " or more"
        raise ValueError(f"{name}={value!r}; allowed values: an integer {minimum}{upper}")


def _check_capacity_factor(
    capacity_factor: float | None, maximum: float | None = None, allow_none: bool = True
) -> None:
    if capacity_factor is None and allow_none:
        return
    ok = isinstance(capacity_factor, (int, float)) and capacity_factor > 0  # also rejects NaN
    if not ok or (maximum is not None and capacity_factor > maximum):
        allowed = "a number > 0" + (f" and <= {maximum}" if maximum is not None else "")
        allowed += " (or None: no capacity limit)" if allow_none else ""
        raise ValueError(f"capacity_factor={capacity_factor!r}; allowed values: {allowed}")


def _check_groups(x: Tensor, d_model: int | None) -> None:
    if (
        not isinstance(x, Tensor)
        or x.dim() != 3
        or (d_model is not None and x.shape[-1] != d_model)
    ):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        d = d_model if d_model is not None else "d"
        raise ValueError(f"x has shape {shape}; allowed values: (groups G, tokens n, {d})")


def _check_finite(x: Tensor, why: str) -> None:
    """Reject NaN / inf tokens where tokens compete (capacity, expert choice, Soft MoE): a
    non-finite token would take an expert's slot (or poison every slot's softmax) and change the
    outputs of the clean tokens of its group. Dropless token choice needs no check: there a NaN
    token only makes its own output NaN, as in any layer."""
    if not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).any(dim=-1).nonzero()[0].tolist()
        raise ValueError(
            f"x contains NaN or inf (first at token {bad}); allowed values: finite activations "
            f"({why}: a non-finite token would change the other tokens' outputs)"
        )


# --- the routing structure ------------------------------------------------------------------------


@dataclass
class Routing:
    """The routing of N tokens to E experts: the one structure every router returns.

    Hard routing: ``token``, ``expert``, ``weight`` list the A kept assignments, sorted by expert
    (then by priority), so expert e's tokens are the contiguous block of length
    ``expert_counts[e]``. A token with no assignment is ``dropped``: the MoE outputs exactly 0
    for it, so in a residual block ``x + MoE(x)`` it passes unchanged to the next layer.

    Soft routing (Soft MoE): ``dispatch`` and ``combine`` (G, n, E, S) weigh every token of a
    group into each of the E * S slots and every slot back into each token; the assignment
    fields are empty and ``expert_counts`` counts the slots each expert processes.
    """

    n_tokens: int
    n_experts: int
    token: Tensor  # (A,) long: the token of each assignment, an index into the N tokens
    expert: Tensor  # (A,) long: its expert, ascending
    weight: Tensor  # (A,) float: the combine weight of E_expert(x_token)
    expert_counts: Tensor  # (E,) long: tokens (Soft MoE: slots) each expert processes
    dropped: Tensor  # (N,) bool: tokens that reach no expert (the MoE outputs 0 for them)
    logits: Tensor | None = None  # (N, E) router logits (float32); None for hash and Soft MoE
    probs: Tensor | None = None  # (N, E) softmax(logits) over all experts
    chosen: Tensor | None = None  # (N, k) token choice: the experts asked for, best first
    kept: Tensor | None = None  # (N, k) bool: which of those choices got a slot (capacity)
    dispatch: Tensor | None = None  # (G, n, E, S) Soft MoE: sums to 1 over the n tokens
    combine: Tensor | None = None  # (G, n, E, S) Soft MoE: sums to 1 over the E * S slots
    extras: dict[str, Tensor] = field(default_factory=dict)  # router-specific tensors

    @property
    def is_soft(self) -> bool:
        return self.dispatch is not None

    @classmethod
    def hard(
        cls,
        token: Tensor,
        expert: Tensor,
        weight: Tensor,
        n_tokens: int,
        n_experts: int,
        **fields: Tensor | dict | None,
    ) -> Routing:
        """Build a hard routing from assignments given in priority order: sort them by expert
        (stable, so each expert keeps the priority order), count them, find the dropped tokens."""
        if not token.shape == expert.shape == weight.shape or token.dim() != 1:
            raise ValueError(
                f"token {tuple(token.shape)}, expert {tuple(expert.shape)}, weight "
                f"{tuple(weight.shape)}; allowed values: three 1-d tensors of one length"
            )
        if token.numel() and not (0 <= int(token.min()) and int(token.max()) < n_tokens):
            raise ValueError(f"token indices must lie in 0..{n_tokens - 1} (n_tokens={n_tokens})")
        if expert.numel() and not (0 <= int(expert.min()) and int(expert.max()) < n_experts):
            raise ValueError(
                f"expert indices must lie in 0..{n_experts - 1} (n_experts={n_experts})"
            )
        expert, order = torch.sort(expert, stable=True)
        token, weight = token[order], weight[order]
        counts = torch.bincount(expert, minlength=n_experts)
        reached = torch.bincount(token, minlength=n_tokens) > 0
        return cls(n_tokens, n_experts, token, expert, weight, counts, ~reached, **fields)


# --- capacity: Switch eq. 3 -----------------------------------------------------------------------


def expert_capacity(
    tokens_per_group: int, n_experts: int, capacity_factor: float, k: int = 1
) -> int:
    """Switch Transformer eq. 3: slots per expert and group,
    ceil(k * tokens_per_group / n_experts * capacity_factor).

    With capacity_factor = 1 and perfectly even routing every token fits; > 1 leaves slack.
    (k = 1 is the paper's formula; for k > 1 each token asks for k slots, as in GShard.)
    """
    _check_int("tokens_per_group", tokens_per_group)
    _check_int("n_experts", n_experts)
    _check_int("k", k)
    _check_capacity_factor(capacity_factor, allow_none=False)
    slots = k * tokens_per_group / n_experts * capacity_factor  # eq. 3
    return max(1, math.ceil(round(slots, 6)))  # round: 1.1 * 10 must give 11, not 12


def keep_within_capacity(expert: Tensor, n_experts: int, capacity: int) -> Tensor:
    """Which assignments fit: ``expert`` (G, m) lists each group's requests in priority order;
    request j of group g is kept iff fewer than ``capacity`` earlier requests of g went to the
    same expert (its position in the expert's queue, a cumulative sum as in Mesh TensorFlow)."""
    if not isinstance(expert, Tensor) or expert.dim() != 2:
        raise ValueError("expert must be a 2-d tensor (groups G, requests m in priority order)")
    _check_int("n_experts", n_experts)
    _check_int("capacity", capacity, minimum=0)
    if expert.numel() and not (0 <= int(expert.min()) and int(expert.max()) < n_experts):
        raise ValueError(f"expert must lie in 0..{n_experts - 1} (n_experts={n_experts})")
    one_hot = F.one_hot(expert, n_experts)  # (G, m, E)
    position = (one_hot.cumsum(dim=1) * one_hot).sum(dim=-1) - 1  # earlier requests to my expert
    return position < capacity


def token_choice_routing(
    chosen: Tensor,
    weights: Tensor,
    n_experts: int,
    capacity: int | None,
    **fields: Tensor | dict | None,
) -> Routing:
    """The :class:`Routing` of token-choice routers from each token's choices.

    ``chosen`` (G, n, k) are the experts each token picked, best first, and ``weights`` (G, n, k)
    their combine weights. Capacity is per group (and per expert). Tokens claim slots in this
    order: all first choices in token order (position in the group), then all second choices,
    and so on (GShard / Mesh TensorFlow). A choice that finds its expert full is dropped, and the
    other choices' weights are *not* renormalised. ``capacity=None``: dropless, nothing is lost.
    """
    if chosen.dim() != 3 or chosen.shape != weights.shape:
        raise ValueError(
            f"chosen {tuple(chosen.shape)} and weights {tuple(weights.shape)}; allowed values: "
            "two tensors of shape (groups G, tokens n, choices k)"
        )
    G, n, k = chosen.shape
    if capacity is None:  # dropless: every choice is served, in any order
        token = torch.arange(G * n, device=chosen.device).repeat_interleave(k)
        kept = torch.ones(G * n, k, dtype=torch.bool, device=chosen.device)
        return Routing.hard(
            token,
            chosen.reshape(-1),
            weights.reshape(-1),
            G * n,
            n_experts,
            chosen=chosen.reshape(G * n, k),
            kept=kept,
            **fields,
        )
    token = torch.arange(G * n, device=chosen.device).view(G, 1, n).expand(G, k, n)
    expert = chosen.transpose(1, 2).reshape(G, k * n)  # priority: choice rank, then position
    weight = weights.transpose(1, 2).reshape(G, k * n)
    keep = keep_within_capacity(expert, n_experts, capacity)
    kept = keep.view(G, k, n).transpose(1, 2).reshape(G * n, k)
    return Routing.hard(
        token.reshape(G, k * n)[keep],
        expert[keep],
        weight[keep],
        G * n,
        n_experts,
        chosen=chosen.reshape(G * n, k),
        kept=kept,
        **fields,
    )


# --- the routers ----------------------------------------------------------------------------------


class Router(nn.Module):
    """The common interface: ``forward(x, token_ids=None) -> Routing`` for x (G, n, d_model).

    ``default_group`` says over which tokens capacity is counted unless the layer says otherwise;
    :meth:`active_experts` and :meth:`router_macs` give the compute per token, for a
    FLOP-matched dense baseline.
    """

    needs_token_ids = False
    default_group = "batch"

    def __init__(self, d_model: int | None, n_experts: int) -> None:
        super().__init__()
        if d_model is not None:
            _check_int("d_model", d_model)
        _check_int("n_experts", n_experts)
        self.d_model, self.n_experts = d_model, n_experts

    def active_experts(self, tokens_per_group: int) -> float:
        """Expert applications per token on average, when no token is dropped."""
        raise NotImplementedError

    def router_macs(self, tokens_per_group: int) -> float:
        """Multiply-adds per token spent on routing (the gate's matrix product)."""
        return float(self.d_model * self.n_experts)


def _float32_logits(linear: nn.Linear, x: Tensor) -> Tensor:
    """x W_g in float32 whatever the model's dtype ("selective precision", Switch Sec. 2.4)."""
    return F.linear(x.float(), linear.weight.float())


def _jitter(x: Tensor, eps: float, training: bool) -> Tensor:
    """Multiply the router input by U(1 - eps, 1 + eps) noise in training (Mesh TF's Switch
    ``router_jitter_noise``); out of place, so the experts still see the clean x."""
    if not training or eps == 0:
        return x
    return x * torch.empty_like(x).uniform_(1.0 - eps, 1.0 + eps)


def _check_jitter(jitter: float) -> None:
    if not isinstance(jitter, (int, float)) or not 0 <= jitter < 1:
        raise ValueError(f"jitter={jitter!r}; allowed values: a number in [0, 1)")


class ShazeerRouter(Router):
    """Noisy top-k token choice (Shazeer et al. 2017, eq. 3-5, https://arxiv.org/abs/1701.06538).

    H(x) = x W_g + N(0, 1) * Softplus(x W_noise) (eq. 3), G(x) = Softmax(KeepTopK(H(x), k))
    (eq. 5): computed by :class:`adaedu.moe.noisy_topk.NoisyTopKRouter` (``self.gate``), which
    adds noise in training mode only. The extras ``gates`` (G(x), N x E) and ``load_probs``
    (P(x, i), eq. 9) feed the importance and load losses (eq. 7, 11). ``capacity_factor``
    (not in the paper, which is dropless) limits each expert as in Switch eq. 3.
    """

    def __init__(
        self, d_model: int, n_experts: int, k: int = 2, capacity_factor: float | None = None
    ) -> None:
        super().__init__(d_model, n_experts)
        _check_capacity_factor(capacity_factor)
        self.gate = NoisyTopKRouter(d_model, n_experts, k)  # checks k
        self.k, self.capacity_factor = k, capacity_factor

    def forward(self, x: Tensor, token_ids: Tensor | None = None) -> Routing:
        _check_groups(x, self.d_model)
        G, n, d = x.shape
        out = self.gate(x.reshape(G * n, d))
        capacity = None
        if self.capacity_factor is not None and n > 0:  # n = 0: nothing to route
            _check_finite(x, "capacity-limited routing")
            capacity = expert_capacity(n, self.n_experts, self.capacity_factor, self.k)
        return token_choice_routing(
            out.top_indices.view(G, n, self.k),
            out.top_gates.view(G, n, self.k),
            self.n_experts,
            capacity,
            logits=out.noisy_logits,
            probs=torch.softmax(out.noisy_logits, dim=-1),
            extras={"gates": out.gates, "load_probs": out.load_probs},
        )

    def active_experts(self, tokens_per_group: int) -> float:
        return float(self.k)


class TopKRouter(Router):
    """Top-k token choice with a softmax over the k kept logits (Mixtral, Jiang et al. 2024,
    Sec. 2.1, https://arxiv.org/abs/2401.04088): G(x) = Softmax(TopK(x W_g)) (eq. 2), so each
    token's k weights sum to 1 (k = 2 in Mixtral).

    Logits are computed in float32. ``capacity_factor=None`` (Mixtral) is dropless; a number
    limits each expert as in Switch eq. 3. ``jitter`` multiplies the router input by
    U(1 - jitter, 1 + jitter) in training (HF's Mixtral jitters the experts' input too).
    """

    def __init__(
        self,
        d_model: int,
        n_experts: int,
        k: int = 2,
        capacity_factor: float | None = None,
        jitter: float = 0.0,
    ) -> None:
        super().__init__(d_model, n_experts)
        _check_int("k", k, maximum=n_experts)
        _check_capacity_factor(capacity_factor)
        _check_jitter(jitter)
        self.k, self.capacity_factor, self.jitter = k, capacity_factor, jitter
        self.linear = nn.Linear(d_model, n_experts, bias=False)  # W_g

    def forward(self, x: Tensor, token_ids: Tensor | None = None) -> Routing:
        _check_groups(x, self.d_model)
        G, n, _ = x.shape
        logits = _float32_logits(self.linear, _jitter(x, self.jitter, self.training))  # x W_g
        probs = torch.softmax(logits, dim=-1)  # over all E experts (for the balancing loss)
        top_probs, chosen = probs.topk(self.k, dim=-1)  # TopK(x W_g): same order as the logits
        # eq. 2: G(x) = Softmax(TopK(x W_g)) = the k kept probabilities, renormalised to sum to 1
        weights = top_probs / top_probs.sum(dim=-1, keepdim=True)
        capacity = None
        if self.capacity_factor is not None and n > 0:  # n = 0: nothing to route
            _check_finite(x, "capacity-limited routing")
            capacity = expert_capacity(n, self.n_experts, self.capacity_factor, self.k)
        return token_choice_routing(
            chosen,
            weights,
            self.n_experts,
            capacity,
            logits=logits.reshape(G * n, self.n_experts),
            probs=probs.reshape(G * n, self.n_experts),
        )

    def active_experts(self, tokens_per_group: int) -> float:
        return float(self.k)


class SwitchRouter(Router):
    """Switch routing: top-1 with expert capacity (Fedus et al. 2021,
    https://arxiv.org/abs/2101.03961).

    p(x) = softmax(x W_r) (eq. 1), in float32 ("selective precision", Sec. 2.4); each token goes
    to its argmax expert i and its output is scaled by p_i(x), the full-softmax probability
    (eq. 2: y = p_i(x) E_i(x)), which is how the router gets a gradient. Each expert has
    ceil(tokens_per_group / E * capacity_factor) slots (eq. 3); tokens claim them in token order
    and the overflow is dropped: the layer outputs 0 for it and the residual connection carries
    it to the next layer (Sec. 2.2). ``capacity_factor=None`` is dropless. ``jitter``: see
    :func:`_jitter`.
    """

    def __init__(
        self, d_model: int, n_experts: int, capacity_factor: float | None = 1.0, jitter: float = 0.0
    ) -> None:
        super().__init__(d_model, n_experts)
        _check_capacity_factor(capacity_factor)
        _check_jitter(jitter)
        self.capacity_factor, self.jitter = capacity_factor, jitter
        self.linear = nn.Linear(d_model, n_experts, bias=False)  # W_r

    def forward(self, x: Tensor, token_ids: Tensor | None = None) -> Routing:
        _check_groups(x, self.d_model)
        G, n, _ = x.shape
        logits = _float32_logits(
            self.linear, _jitter(x, self.jitter, self.training)
        )  # h(x) = W_r x
        probs = torch.softmax(logits, dim=-1)  # eq. 1: p_i(x) = e^{h_i} / sum_j e^{h_j}
        top_prob, chosen = probs.max(dim=-1, keepdim=True)  # i = argmax p(x); eq. 2 weight p_i(x)
        capacity = None
        if self.capacity_factor is not None and n > 0:  # n = 0: nothing to route
            _check_finite(x, "capacity-limited routing")
            capacity = expert_capacity(n, self.n_experts, self.capacity_factor)  # eq. 3
        return token_choice_routing(
            chosen,
            top_prob,
            self.n_experts,
            capacity,
            logits=logits.reshape(G * n, self.n_experts),
            probs=probs.reshape(G * n, self.n_experts),
        )

    def active_experts(self, tokens_per_group: int) -> float:
        return 1.0


class HashRouter(Router):
    """Hash layers (Roller et al. 2021, Sec. 3, https://arxiv.org/abs/2106.04426): token t goes to
    expert hash(id_t), a fixed table ``table[token_id]`` learned from nothing, weight 1.

    The routing ignores x, so it needs the token ids: ``forward(x, token_ids)`` with token_ids
    (G, n). Build the table with :meth:`random`, :meth:`balanced` or :meth:`clustered`. No
    gate, no balancing loss, nothing to collapse; but a token type can never be split, so a type
    more frequent than 1/E of the data overloads its expert whatever the table.
    """

    needs_token_ids = True

    def __init__(self, table: Tensor, n_experts: int, capacity_factor: float | None = None) -> None:
        super().__init__(None, n_experts)
        _check_capacity_factor(capacity_factor)
        if not isinstance(table, Tensor) or table.dim() != 1 or table.is_floating_point():
            raise ValueError("table must be a 1-d integer tensor: the expert of each token id")
        if table.numel() == 0 or int(table.min()) < 0 or int(table.max()) >= n_experts:
            raise ValueError(
                f"table entries must lie in 0..{n_experts - 1} (n_experts={n_experts})"
            )
        self.capacity_factor = capacity_factor
        self.register_buffer("table", table.long().clone())

    @property
    def vocab_size(self) -> int:
        return self.table.numel()

    @classmethod
    def random(cls, vocab_size: int, n_experts: int, seed: int = 0, **kwargs) -> HashRouter:
        """Random hash: a random permutation of the vocabulary cut into E equal parts, so every
        expert owns vocab_size / E token types (+-1)."""
        _check_int("vocab_size", vocab_size)
        _check_int("n_experts", n_experts)
        gen = torch.Generator().manual_seed(seed)
        return cls(torch.randperm(vocab_size, generator=gen) % n_experts, n_experts, **kwargs)

    @classmethod
    def balanced(
        cls, train_ids: Tensor, vocab_size: int, n_experts: int, seed: int = 0, **kwargs
    ) -> HashRouter:
        """Balanced hash: greedily give the most frequent token types of ``train_ids`` to the
        least loaded expert (largest first), so the experts' token counts on the training ids
        differ by at most the count of one type. Types absent from train_ids keep a random hash."""
        _check_int("vocab_size", vocab_size)
        _check_int("n_experts", n_experts)
        if (
            not isinstance(train_ids, Tensor)
            or train_ids.is_floating_point()
            or train_ids.numel() == 0
        ):
            raise ValueError("train_ids must be a non-empty integer tensor of token ids")
        if int(train_ids.min()) < 0 or int(train_ids.max()) >= vocab_size:
            raise ValueError(f"train_ids must lie in 0..{vocab_size - 1} (vocab_size={vocab_size})")
        table = cls.random(vocab_size, n_experts, seed).table
        freq = torch.bincount(train_ids.reshape(-1), minlength=vocab_size)
        gen = torch.Generator().manual_seed(seed)
        shuffled = torch.randperm(vocab_size, generator=gen)  # random order among equal counts
        order = shuffled[torch.argsort(freq[shuffled], descending=True, stable=True)]
        loads = [(0, e) for e in range(n_experts)]  # a heap of (tokens so far, expert)
        for token_id, count in zip(order.tolist(), freq[order].tolist(), strict=True):
            if count == 0:
                break
            load, e = heapq.heappop(loads)  # the least loaded expert
            table[token_id] = e
            heapq.heappush(loads, (load + count, e))
        return cls(table, n_experts, **kwargs)

    @classmethod
    def clustered(
        cls, embeddings: Tensor, n_experts: int, seed: int = 0, iters: int = 25, **kwargs
    ) -> HashRouter:
        """Clustered hash: k-means with E clusters on token embeddings (V, d), e.g. from a
        trained dense model; similar tokens share an expert (Roller et al. found this worse than
        random hashing)."""
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
            raise ValueError("embeddings must be a 2-d tensor (vocab_size, d)")
        _check_int("n_experts", n_experts, maximum=embeddings.shape[0])
        _check_int("iters", iters)
        gen = torch.Generator().manual_seed(seed)
        emb = embeddings.detach().float().cpu()
        centres = emb[torch.randint(emb.shape[0], (1,), generator=gen)]
        while len(centres) < n_experts:  # k-means++ seeding: far points are likely centres
            d2 = torch.cdist(emb, centres).min(dim=1).values.pow(2)
            pick = torch.multinomial(d2, 1, generator=gen) if d2.sum() > 0 else torch.tensor([0])
            centres = torch.cat([centres, emb[pick]])
        for _ in range(iters):  # Lloyd's algorithm
            assign = torch.cdist(emb, centres).argmin(dim=1)
            sums = torch.zeros_like(centres).index_add_(0, assign, emb)
            sizes = torch.bincount(assign, minlength=n_experts).unsqueeze(1)
            centres = torch.where(sizes > 0, sums / sizes.clamp_min(1), centres)  # empty: stay
        return cls(torch.cdist(emb, centres).argmin(dim=1), n_experts, **kwargs)

    def forward(self, x: Tensor, token_ids: Tensor | None = None) -> Routing:
        _check_groups(x, None)
        G, n, _ = x.shape
        if (
            not isinstance(token_ids, Tensor)
            or token_ids.shape != (G, n)
            or token_ids.is_floating_point()
        ):
            shape = tuple(token_ids.shape) if isinstance(token_ids, Tensor) else None
            raise ValueError(
                f"token_ids has shape {shape}; allowed values: integer ids of shape {(G, n)}"
            )
        if token_ids.numel() and (
            int(token_ids.min()) < 0 or int(token_ids.max()) >= self.vocab_size
        ):
            raise ValueError(f"token_ids must lie in 0..{self.vocab_size - 1}")
        chosen = self.table[token_ids].unsqueeze(-1)  # expert = hash(token id)
        weights = torch.ones(chosen.shape, dtype=x.dtype, device=x.device)
        capacity = None
        if self.capacity_factor is not None and n > 0:  # n = 0: nothing to route
            capacity = expert_capacity(n, self.n_experts, self.capacity_factor)
        return token_choice_routing(chosen, weights, self.n_experts, capacity)

    def active_experts(self, tokens_per_group: int) -> float:
        return 1.0

    def router_macs(self, tokens_per_group: int) -> float:
        return 0.0


class ExpertChoiceRouter(Router):
    """Expert choice (Zhou et al. 2022, Sec. 3.2, https://arxiv.org/abs/2202.09368): the experts
    choose the tokens. S = Softmax(X W_g) (n x E token-to-expert scores, softmax over experts);
    G, I = TopK(S^T, k): each expert takes the k = n * c / E tokens of its group that score
    highest for it, and weighs its output by the score. c is the ``capacity_factor`` (2 in the
    paper): tokens get c experts on average but anywhere from 0 (the MoE outputs 0 for them)
    to E, and every expert processes exactly k tokens, so the load is perfectly balanced.

    Causal leak: whether token t is picked depends on the scores of all tokens of its group,
    including later ones. In a decoder LM this lets the future influence the present (a token's
    output changes when a later token changes) and it cannot run token by token at generation
    time. Route per sequence (``group="sequence"``) to at least keep sequences independent;
    with ``group="batch"`` outputs also depend on the other sequences in the batch.
    """

    def __init__(self, d_model: int, n_experts: int, capacity_factor: float = 2.0) -> None:
        super().__init__(d_model, n_experts)
        _check_capacity_factor(capacity_factor, maximum=n_experts, allow_none=False)
        self.capacity_factor = capacity_factor
        self.linear = nn.Linear(d_model, n_experts, bias=False)  # W_g

    def forward(self, x: Tensor, token_ids: Tensor | None = None) -> Routing:
        _check_groups(x, self.d_model)
        _check_finite(x, "expert choice")
        G, n, _ = x.shape
        logits = _float32_logits(self.linear, x)  # X W_g
        scores = torch.softmax(logits, dim=-1)  # S = Softmax(X W_g), (G, n, E)
        k = min(n, expert_capacity(max(n, 1), self.n_experts, self.capacity_factor))  # k = n c / E
        gate, index = scores.transpose(1, 2).topk(k, dim=-1)  # G, I = TopK(S^T, k): (G, E, k)
        token = index + n * torch.arange(G, device=x.device).view(G, 1, 1)
        expert = torch.arange(self.n_experts, device=x.device).view(1, -1, 1).expand_as(index)
        return Routing.hard(
            token.reshape(-1),
            expert.reshape(-1),
            gate.reshape(-1),
            G * n,
            self.n_experts,
            logits=logits.reshape(G * n, self.n_experts),
            probs=scores.reshape(G * n, self.n_experts),
        )

    def active_experts(self, tokens_per_group: int) -> float:
        n = tokens_per_group
        return self.n_experts * min(n, expert_capacity(n, self.n_experts, self.capacity_factor)) / n


class SoftMoERouter(Router):
    """Soft MoE (Puigcerver et al. 2023, Sec. 2.1, https://arxiv.org/abs/2308.00951): each of
    the E experts has S slots, and each slot is a softmax-weighted mixture of all n tokens of
    its group.

    Logits (X Phi)_ij for token i and slot j, Phi (d, E * S). Dispatch weights
    D_ij = exp((X Phi)_ij) / sum_i' exp((X Phi)_i'j) (softmax over tokens), slot inputs
    X~ = D^T X; combine weights C_ij = exp((X Phi)_ij) / sum_j' exp((X Phi)_ij') (softmax over
    slots), outputs Y = C Y~. With ``normalize`` (Sec. 2.3) X and the columns of Phi are
    l2-normalised and the logits scaled by a learned scalar. No token is dropped and no
    balancing loss is needed. Like expert choice it mixes all tokens of a group, so in a
    decoder LM the future leaks into the past (route per sequence: ``default_group``).
    """

    default_group = "sequence"

    def __init__(
        self, d_model: int, n_experts: int, slots_per_expert: int = 1, normalize: bool = True
    ) -> None:
        super().__init__(d_model, n_experts)
        _check_int("slots_per_expert", slots_per_expert)
        self.slots_per_expert, self.normalize = slots_per_expert, normalize
        self.phi = nn.Parameter(torch.randn(d_model, n_experts * slots_per_expert) * d_model**-0.5)
        self.scale = nn.Parameter(torch.ones(())) if normalize else None

    def forward(self, x: Tensor, token_ids: Tensor | None = None) -> Routing:
        _check_groups(x, self.d_model)
        _check_finite(x, "Soft MoE mixes every token into every slot")
        G, n, _ = x.shape
        E, S = self.n_experts, self.slots_per_expert
        x32, phi = x.float(), self.phi.float()
        if self.normalize:  # Sec. 2.3: l2-normalise tokens and slot parameters, learned scale
            x32, phi = F.normalize(x32, dim=-1), self.scale * F.normalize(phi, dim=0)
        logits = x32 @ phi  # (X Phi), (G, n, E * S)
        dispatch = torch.softmax(logits, dim=1)  # D: softmax over the n tokens of each slot
        combine = torch.softmax(logits, dim=-1)  # C: softmax over the E * S slots of each token
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        counts = torch.full((E,), G * S, dtype=torch.long, device=x.device)
        dropped = torch.zeros(G * n, dtype=torch.bool, device=x.device)
        return Routing(
            G * n,
            E,
            empty,
            empty,
            empty.to(x.dtype),
            counts,
            dropped,
            dispatch=dispatch.view(G, n, E, S),
            combine=combine.view(G, n, E, S),
        )

    def active_experts(self, tokens_per_group: int) -> float:
        return self.n_experts * self.slots_per_expert / tokens_per_group  # slots per token

    def router_macs(self, tokens_per_group: int) -> float:
        """Logits, dispatch (X~ = D^T X) and combine (Y = C Y~): 3 d E S per token."""
        return 3.0 * self.d_model * self.n_experts * self.slots_per_expert

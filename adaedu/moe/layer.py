"""The MoE feed-forward layer: a router, E experts and the dispatch between them.

:class:`MoEFeedForward` maps (B, T, d) -> ``(y, aux)``: it plugs into the feed-forward slot of
the course's tiny decoder LM, which collects ``aux`` (:class:`MoEAux`: the routing, the
weighted auxiliary loss ``aux.loss`` to add to the training loss, and ``aux.stats``).
:func:`make_moe` builds one by router name, :class:`MixtralMoE` is Mixtral's block (with a
loader for HuggingFace's weights), :func:`dense_equivalent` a dense FFN with the same
multiply-adds per token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor, nn

from adaedu.moe.dispatch import dispatch, soft_dispatch
from adaedu.moe.experts import expert_kind, make_expert, make_experts, matched_dense_hidden
from adaedu.moe.losses import routing_losses
from adaedu.moe.routers import (
    GROUPINGS,
    ExpertChoiceRouter,
    HashRouter,
    Router,
    Routing,
    ShazeerRouter,
    SoftMoERouter,
    SwitchRouter,
    TopKRouter,
)
from adaedu.moe.stats import MoEStats, moe_stats

LOSS_NAMES = ("balance", "z", "importance", "load")


@dataclass
class MoEAux:
    """What one forward pass of a :class:`MoEFeedForward` reports besides its output.

    ``losses`` (unweighted) and ``loss`` (their weighted sum, to add to the training loss) keep
    the autograd graph; ``stats`` are plain numbers. All three are computed on first access.
    ``aux["loss"]`` is ``aux.loss`` (likewise for the other fields), as the LM's FFN protocol
    example writes it.
    """

    routing: Routing
    weights: dict[str, float] = field(default_factory=dict)  # loss name -> weight

    @cached_property
    def losses(self) -> dict[str, Tensor]:
        return routing_losses(self.routing)

    @cached_property
    def loss(self) -> Tensor:
        total = torch.zeros((), device=self.routing.expert_counts.device)
        for name, value in self.losses.items():
            if self.weights.get(name, 0.0):
                total = total + self.weights[name] * value
        return total

    @cached_property
    def stats(self) -> MoEStats:
        return moe_stats(self.routing)

    def __getitem__(self, key: str) -> object:
        if key not in ("routing", "weights", "losses", "loss", "stats"):
            raise KeyError(f"{key!r}; allowed keys: routing, weights, losses, loss, stats")
        return getattr(self, key)


class MoEFeedForward(nn.Module):
    """y = MoE(x) for x (B, T, d) or (N, d): route, dispatch to the experts, combine.

    ``group`` sets which tokens compete for expert capacity (and, for expert choice and Soft
    MoE, which tokens are mixed): ``"sequence"`` (each of the B sequences alone, as HF's Switch)
    or ``"batch"`` (all B * T tokens, the "tokens per batch" of Switch eq. 3); None takes the
    router's default. A 2-d input is one group.

    Capacity and dropped tokens (routers with a ``capacity_factor``): each expert has
    ceil(capacity_factor * k * tokens_per_group / E) slots per group (Switch eq. 3). Within a
    group, tokens claim slots in order: all first choices by position (with ``"batch"``: sequence
    0 first, then sequence 1, ...), then all second choices, and so on. A choice that finds its
    expert full is dropped; a token that loses all its choices (``aux.routing.dropped``) gets an
    MoE output of exactly 0, so the residual ``x + MoE(x)`` passes it to the next layer
    unchanged. The weights of a token's surviving choices are not renormalised.

    Loss weights (``balance_weight`` alpha of Switch eq. 4, 1e-2 in the paper; ``z_weight`` c_z
    of ST-MoE, 1e-3; ``importance_weight`` and ``load_weight`` of Shazeer eq. 7 and 11) only
    enter ``aux.loss``. They all default to 0: a layer gets an auxiliary loss only when its
    caller asks for one (a "no aux" arm cannot get one by forgetting an argument). After each forward, ``last_expert_counts``, ``last_num_tokens`` and
    ``last_routing`` describe it (:func:`adaedu.compute.active_parameters` reads the first two).
    A hash router needs the token ids: ``forward(x, token_ids)``, or set them for a whole model
    with :func:`routing_token_ids`.
    """

    def __init__(
        self,
        router: Router,
        experts: nn.ModuleList,
        *,
        group: str | None = None,
        balance_weight: float = 0.0,
        z_weight: float = 0.0,
        importance_weight: float = 0.0,
        load_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(router, Router):
            raise ValueError(f"router is a {type(router).__name__}; allowed values: a Router")
        if not isinstance(experts, nn.ModuleList) or len(experts) != router.n_experts:
            raise ValueError(
                f"experts must be an nn.ModuleList of router.n_experts = {router.n_experts} modules"
            )
        group = router.default_group if group is None else group
        if group not in GROUPINGS:
            raise ValueError(f"group={group!r}; allowed values: {', '.join(map(repr, GROUPINGS))}")
        weights = dict(
            zip(LOSS_NAMES, (balance_weight, z_weight, importance_weight, load_weight), strict=True)
        )
        for name, w in weights.items():
            if not isinstance(w, (int, float)) or not w >= 0:
                raise ValueError(f"{name}_weight={w!r}; allowed values: a loss weight >= 0")
        self.router, self.experts, self.group, self.loss_weights = router, experts, group, weights
        self.token_ids: Tensor | None = None  # set by routing_token_ids() for hash routing
        self.last_routing: Routing | None = None
        self.last_expert_counts: Tensor | None = None
        self.last_num_tokens = 0

    @property
    def n_experts(self) -> int:
        return self.router.n_experts

    def _groups(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return x.unsqueeze(0)
        return x if self.group == "sequence" else x.reshape(1, -1, x.shape[-1])

    def forward(self, x: Tensor, token_ids: Tensor | None = None) -> tuple[Tensor, MoEAux]:
        if not isinstance(x, Tensor) or x.dim() not in (2, 3):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x has shape {shape}; allowed values: (B, T, d) or (N, d)")
        dtype = next(self.experts.parameters(), x).dtype
        if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):  # autocast mixes
            raise ValueError(
                f"x has dtype {x.dtype}; allowed values: {dtype}, the layer's dtype (convert "
                f"the input with x.to({dtype}) or the layer with .to({x.dtype}))"
            )
        token_ids = self.token_ids if token_ids is None else token_ids
        if token_ids is not None and token_ids.shape != x.shape[:-1]:
            raise ValueError(
                f"token_ids has shape {tuple(token_ids.shape)}; allowed values: "
                f"{tuple(x.shape[:-1])} (x without its last dimension)"
            )
        if token_ids is None and self.router.needs_token_ids:
            raise ValueError(
                "token_ids=None; allowed values: the token ids (this router hashes them)"
            )
        groups = self._groups(x)
        ids = None if token_ids is None else token_ids.reshape(groups.shape[:-1])
        routing = self.router(groups, ids)
        if routing.is_soft:
            y = soft_dispatch(groups, routing, self.experts)
        else:
            y = dispatch(groups.reshape(-1, x.shape[-1]), routing, self.experts)
        self.last_routing = routing
        self.last_expert_counts, self.last_num_tokens = routing.expert_counts, routing.n_tokens
        return y.reshape(x.shape), MoEAux(routing, self.loss_weights)


ROUTER_NAMES = ("noisy_topk", "topk", "switch", "hash", "expert_choice", "soft")


def make_router(name: str, d_model: int, n_experts: int, **kwargs) -> Router:
    """A router by name; ``kwargs`` go to its constructor:

    - "noisy_topk" :class:`ShazeerRouter` (k, capacity_factor)
    - "topk"  :class:`TopKRouter` (k, capacity_factor, jitter)
    - "switch" :class:`SwitchRouter` (capacity_factor, jitter)
    - "hash"  :class:`HashRouter.random` (vocab_size, seed, capacity_factor)
    - "expert_choice" :class:`ExpertChoiceRouter` (capacity_factor)
    - "soft"  :class:`SoftMoERouter` (slots_per_expert, normalize)
    """
    if name == "noisy_topk":
        return ShazeerRouter(d_model, n_experts, **kwargs)
    if name == "topk":
        return TopKRouter(d_model, n_experts, **kwargs)
    if name == "switch":
        return SwitchRouter(d_model, n_experts, **kwargs)
    if name == "hash":
        if "vocab_size" not in kwargs:
            raise ValueError("router 'hash' needs vocab_size=...; allowed values: an integer >= 1")
        return HashRouter.random(n_experts=n_experts, **kwargs)
    if name == "expert_choice":
        return ExpertChoiceRouter(d_model, n_experts, **kwargs)
    if name == "soft":
        return SoftMoERouter(d_model, n_experts, **kwargs)
    raise ValueError(f"router={name!r}; allowed values: {', '.join(map(repr, ROUTER_NAMES))}")


def make_moe(
    router: str,
    d_model: int,
    d_hidden: int,
    n_experts: int,
    *,
    expert: str = "swiglu",
    group: str | None = None,
    loss_weights: dict[str, float] | None = None,
    **router_kwargs,
) -> MoEFeedForward:
    """A :class:`MoEFeedForward` with a router by name (:func:`make_router`, which gets
    ``router_kwargs``) and E experts of kind ``expert`` ("mlp" or "swiglu") of width d_hidden.
    ``loss_weights`` maps "balance", "z", "importance", "load" to weights (see the layer); a
    loss it omits gets weight 0 (no auxiliary loss unless asked for)."""
    weights = dict(loss_weights or {})
    unknown = set(weights) - set(LOSS_NAMES)
    if unknown:
        raise ValueError(
            f"loss_weights has {sorted(unknown)}; allowed keys: {', '.join(LOSS_NAMES)}"
        )
    return MoEFeedForward(
        make_router(router, d_model, n_experts, **router_kwargs),
        make_experts(expert, n_experts, d_model, d_hidden),
        group=group,
        **{f"{name}_weight": w for name, w in weights.items()},
    )


def dense_equivalent(layer: MoEFeedForward, tokens_per_group: int | None = None) -> nn.Module:
    """A dense feed-forward layer of the same kind with the MoE's multiply-adds per token.

    A token uses ``router.active_experts`` experts on average (k for top-k, 1 for Switch and
    hash, c for expert choice, E * S / n for Soft MoE) plus the router's own multiply-adds; see
    :func:`adaedu.moe.experts.matched_dense_hidden`. ``tokens_per_group`` (the sequence length,
    or B * T when routing per batch) matters for expert choice and Soft MoE only.
    """
    if not isinstance(layer, MoEFeedForward):
        raise ValueError(f"layer is a {type(layer).__name__}; allowed values: a MoEFeedForward")
    if tokens_per_group is None:
        if isinstance(layer.router, (ExpertChoiceRouter, SoftMoERouter)):
            raise ValueError(
                "tokens_per_group=None; allowed values: an integer >= 1 "
                "(expert choice and Soft MoE compute depends on it)"
            )
        tokens_per_group = 1
    if not isinstance(tokens_per_group, int) or tokens_per_group < 1:
        raise ValueError(f"tokens_per_group={tokens_per_group!r}; allowed values: an integer >= 1")
    kind, d_model, d_hidden = expert_kind(layer.experts[0])
    hidden = matched_dense_hidden(
        kind,
        d_model,
        d_hidden,
        layer.router.active_experts(tokens_per_group),
        layer.router.router_macs(tokens_per_group),
    )
    return make_expert(kind, d_model, hidden)


@contextmanager
def routing_token_ids(model: nn.Module, token_ids: Tensor) -> Iterator[None]:
    """Within the block, every :class:`MoEFeedForward` in ``model`` whose router hashes token ids
    routes with ``token_ids`` (B, T): how a hash layer inside an LM whose FFN slot is called as
    ``ffn(x)`` sees the ids.

    >>> with routing_token_ids(model, idx):  # doctest: +SKIP
    ...     logits = model(idx)
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model is a {type(model).__name__}; allowed values: an nn.Module")
    if not isinstance(token_ids, Tensor) or token_ids.dim() != 2 or token_ids.is_floating_point():
        raise ValueError("token_ids must be a 2-d integer tensor (B, T)")
    layers = [  # only the layers that route by token id (others may regroup x, e.g. by position)
        m for m in model.modules() if isinstance(m, MoEFeedForward) and m.router.needs_token_ids
    ]
    for layer in layers:
        layer.token_ids = token_ids
    try:
        yield
    finally:
        for layer in layers:
            layer.token_ids = None


class MixtralMoE(MoEFeedForward):
    """Mixtral's sparse MoE block (Jiang et al. 2024, Sec. 2.1, https://arxiv.org/abs/2401.04088):
    y = sum_i Softmax(Top2(x W_g))_i SwiGLU_i(x) (eq. 3), dropless, E = 8 experts.

    :meth:`load_hf` copies the weights of HuggingFace transformers' ``MixtralSparseMoeBlock``
    (5.x layout); the outputs then agree to float32 rounding (``tests/test_moe_parity.py``).
    """

    def __init__(
        self,
        d_model: int,
        d_hidden: int,
        n_experts: int = 8,
        k: int = 2,
        jitter: float = 0.0,
        **loss_weights: float,
    ) -> None:
        router = TopKRouter(d_model, n_experts, k, capacity_factor=None, jitter=jitter)
        super().__init__(
            router,
            make_experts("swiglu", n_experts, d_model, d_hidden),
            group="batch",
            **loss_weights,
        )

    @torch.no_grad()
    def load_hf(self, hf_block: nn.Module) -> MixtralMoE:
        """Copy the weights of a transformers 5.x ``MixtralSparseMoeBlock``: router
        ``gate.weight`` (E, d); experts fused as ``experts.gate_up_proj`` (E, 2h, d), gate rows
        first, and ``experts.down_proj`` (E, d, h). Returns self."""
        gate = getattr(getattr(hf_block, "gate", None), "weight", None)
        experts = getattr(hf_block, "experts", None)
        gate_up = getattr(experts, "gate_up_proj", None)
        down = getattr(experts, "down_proj", None)
        if gate is None or gate_up is None or down is None:
            raise ValueError(
                "hf_block must be a transformers 5.x MixtralSparseMoeBlock (with "
                "gate.weight, experts.gate_up_proj, experts.down_proj)"
            )
        E, d, h = self.n_experts, self.experts[0].d_model, self.experts[0].d_hidden
        expected = {
            "gate.weight": (E, d),
            "experts.gate_up_proj": (E, 2 * h, d),
            "experts.down_proj": (E, d, h),
        }
        for (name, shape), tensor in zip(expected.items(), (gate, gate_up, down), strict=True):
            if tuple(tensor.shape) != shape:
                raise ValueError(
                    f"hf_block {name} has shape {tuple(tensor.shape)}; allowed "
                    f"values: {shape} (E={E}, d={d}, h={h})"
                )
        if getattr(hf_block, "top_k", self.router.k) != self.router.k:
            raise ValueError(
                f"hf_block routes to top_k={hf_block.top_k}; this block to k={self.router.k}"
            )
        self.router.linear.weight.copy_(gate)
        for e, expert in enumerate(self.experts):
            expert.gate_up.weight.copy_(gate_up[e])  # the same layout: gate rows, then up rows
            expert.down.weight.copy_(down[e])
        return self

    @classmethod
    def from_hf(cls, hf_block: nn.Module, **kwargs) -> MixtralMoE:
        """A :class:`MixtralMoE` with the sizes and weights of ``hf_block``."""
        gate_up = getattr(getattr(hf_block, "experts", None), "gate_up_proj", None)
        if gate_up is None:
            raise ValueError("hf_block must be a transformers 5.x MixtralSparseMoeBlock")
        E, two_h, d = gate_up.shape
        block = cls(d, two_h // 2, E, getattr(hf_block, "top_k", 2), **kwargs)
        return block.to(gate_up.dtype).load_hf(hf_block)

"""Mixtral of Experts (Jiang et al. 2024, https://arxiv.org/abs/2401.04088): a tiny Mixtral,
its parameter accounting and the routing analysis of the paper's Section 5 (notebook 2.15).

- :data:`MIXTRAL_8X7B` and :func:`mixtral_parameters`: total and active parameters from the
  hyperparameters of Table 1 (the abstract's "47B parameters, 13B active");
- :func:`tiny_mixtral`: a :class:`adaedu.lm.TinyLM` whose every FFN is a
  :class:`adaedu.moe.layer.MixtralMoE` (8 SwiGLU experts, top-2, eq. 2-3), trained by the course's
  LM loop (:mod:`adaedu.lm.training`);
- :func:`routed_experts`: the experts each token chose, per layer;
- :func:`repetition_rates`, :func:`chance_rates`, :func:`uniform_chance_rates`: how often two
  consecutive tokens share experts (Table 5), and how often they would by chance;
- :func:`expert_shares`: the share of assignments each expert gets per domain (Figure 7);
- :func:`hf_parity`: the largest difference from HuggingFace's ``MixtralSparseMoeBlock``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adaedu.lm.model import TinyLM, TinyLMConfig
from adaedu.moe.layer import MixtralMoE

RATES = ("first", "overlap", "same_set")

#: Table 1 of Jiang et al. (2024): Mixtral 8x7B's hyperparameters (context length omitted).
MIXTRAL_8X7B = dict(
    dim=4096,
    n_layers=32,
    head_dim=128,
    hidden_dim=14336,
    n_heads=32,
    n_kv_heads=8,
    vocab_size=32000,
    n_experts=8,
    top_k=2,
)


def _positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}; allowed values: an integer >= 1")


def mixtral_parameters(
    dim: int,
    n_layers: int,
    head_dim: int,
    hidden_dim: int,
    n_heads: int,
    n_kv_heads: int,
    vocab_size: int,
    n_experts: int,
    top_k: int,
    tie_embeddings: bool = False,
) -> tuple[int, int]:
    """``(total, active)`` parameters of a Mixtral-style decoder (Jiang et al. 2024, Table 1).

    Per layer: grouped-query attention W_q, W_o (dim x n_heads * head_dim) and W_k, W_v
    (dim x n_kv_heads * head_dim); E SwiGLU experts of 3 * dim * hidden_dim each (eq. 3); the
    router W_g (dim x E); two RMSNorm gains. Plus the embedding, the output matrix (unless
    tied) and the final norm. A token uses every parameter except the E - k experts it skips.
    """
    for name, value in (
        ("dim", dim),
        ("n_layers", n_layers),
        ("head_dim", head_dim),
        ("hidden_dim", hidden_dim),
        ("n_heads", n_heads),
        ("n_kv_heads", n_kv_heads),
        ("vocab_size", vocab_size),
        ("n_experts", n_experts),
        ("top_k", top_k),
    ):
        _positive(name, value)
    if n_heads % n_kv_heads:
        raise ValueError(f"n_kv_heads={n_kv_heads}; allowed values: a divisor of n_heads={n_heads}")
    if top_k > n_experts:
        raise ValueError(f"top_k={top_k}; allowed values: 1..n_experts={n_experts}")
    attention = 2 * dim * n_heads * head_dim + 2 * dim * n_kv_heads * head_dim
    expert = 3 * dim * hidden_dim  # W_1 (gate), W_3 (up), W_2 (down)
    shared_per_layer = attention + dim * n_experts + 2 * dim  # + router + two norms
    embeddings = vocab_size * dim * (1 if tie_embeddings else 2) + dim  # + final norm
    total = n_layers * (shared_per_layer + n_experts * expert) + embeddings
    active = n_layers * (shared_per_layer + top_k * expert) + embeddings
    return total, active


def tiny_mixtral(
    vocab_size: int,
    d_model: int = 64,
    n_layers: int = 4,
    n_heads: int = 4,
    d_hidden: int = 224,
    n_experts: int = 8,
    k: int = 2,
    block_size: int = 128,
    balance_weight: float = 0.01,
) -> TinyLM:
    """A tiny Mixtral: :class:`TinyLM` (RMSNorm, RoPE, untied output) with a
    :class:`MixtralMoE` (E SwiGLU experts of width ``d_hidden``, top-k, dropless) as the FFN of
    every block. ``balance_weight`` weighs the Switch balancing loss in ``aux.loss`` (the paper
    does not state its auxiliary loss; HF's Mixtral trains with one). Attention is plain
    multi-head (Mixtral's is grouped-query: that changes parameter counts, not routing)."""
    _positive("d_hidden", d_hidden)
    _positive("n_experts", n_experts)
    if not isinstance(k, int) or not 1 <= k <= n_experts:
        raise ValueError(f"k={k!r}; allowed values: 1..n_experts={n_experts}")

    def factory(config: TinyLMConfig, layer: int) -> MixtralMoE:
        return MixtralMoE(
            config.d_model, d_hidden, n_experts, k, balance_weight=balance_weight, z_weight=0.0
        )

    config = TinyLMConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        block_size=block_size,
        ffn=factory,
        tie_embeddings=False,
    )
    return TinyLM(config)


@torch.no_grad()
def routed_experts(model: TinyLM, idx: Tensor) -> Tensor:
    """The experts chosen for each token of ``idx`` (B, T), best first, in every MoE layer:
    a LongTensor (L, B, T, k). Runs the model in eval mode (no jitter)."""
    if not isinstance(idx, Tensor) or idx.dim() != 2:
        raise ValueError("idx must be a (batch, time) tensor of token ids")
    was_training = model.training
    model.eval()
    out = model(idx)
    model.train(was_training)
    chosen = [a.routing.chosen for a in out.aux if a is not None and a.routing.chosen is not None]
    if not chosen:
        raise ValueError("model has no token-choice MoE layer; allowed values: a tiny_mixtral")
    return torch.stack([c.reshape(*idx.shape, -1) for c in chosen]).cpu()


def _check_chosen(chosen: Tensor, n_experts: int | None = None) -> None:
    if not isinstance(chosen, Tensor) or chosen.dim() != 3 or chosen.is_floating_point():
        raise ValueError("chosen must be an integer tensor (B, T, k): the experts, best first")
    if chosen.shape[1] < 2:
        raise ValueError(f"chosen has T={chosen.shape[1]} tokens; allowed values: T >= 2")
    if n_experts is not None:
        _positive("n_experts", n_experts)
        if chosen.numel() and not 0 <= int(chosen.min()) <= int(chosen.max()) < n_experts:
            raise ValueError(f"expert ids must lie in 0..{n_experts - 1} (n_experts={n_experts})")


def _sets(chosen: Tensor) -> Tensor:
    """The unordered set of each token's k experts, as a sorted (..., k) tensor."""
    return chosen.sort(dim=-1).values


def repetition_rates(chosen: Tensor) -> dict[str, float]:
    """How often token t and token t + 1 of the same sequence share experts (Table 5), for
    ``chosen`` (B, T, k):

    - ``first``: the same first choice (Table 5, "First choice");
    - ``overlap``: at least one common expert among their k choices ("First or second choice");
    - ``same_set``: the same set of k experts.

    Pairs never span two sequences (the B rows are separate windows of text).
    """
    _check_chosen(chosen)
    a, b = chosen[:, :-1], chosen[:, 1:]  # token t and token t + 1, (B, T - 1, k)
    first = (a[..., 0] == b[..., 0]).float().mean()
    overlap = (a.unsqueeze(-1) == b.unsqueeze(-2)).any(dim=-1).any(dim=-1).float().mean()
    same_set = (_sets(a) == _sets(b)).all(dim=-1).float().mean()
    return {"first": float(first), "overlap": float(overlap), "same_set": float(same_set)}


def uniform_chance_rates(n_experts: int, k: int) -> dict[str, float]:
    """The rates of :func:`repetition_rates` if both tokens drew k of E experts uniformly and
    independently: first 1/E; overlap 1 - C(E-k, k) / C(E, k) (the chance that the second set
    misses all k experts of the first); same set 1 / C(E, k). For E = 8, k = 2: 12.5%,
    1 - 15/28 = 46.4% (Table 5's caption writes it 1 - 6/8 * 5/7) and 3.6%."""
    _positive("n_experts", n_experts)
    if not isinstance(k, int) or not 1 <= k <= n_experts:
        raise ValueError(f"k={k!r}; allowed values: 1..n_experts={n_experts}")
    sets = math.comb(n_experts, k)
    return {
        "first": 1 / n_experts,
        "overlap": 1 - math.comb(n_experts - k, k) / sets,
        "same_set": 1 / sets,
    }


def chance_rates(chosen: Tensor, n_experts: int) -> dict[str, float]:
    """The rates of :func:`repetition_rates` for two tokens drawn independently from the
    *measured* routing distribution of ``chosen`` (B, T, k): with p_e the share of tokens whose
    first choice is e and q_S the share whose set of k experts is S,

    first = sum_e p_e^2,  same_set = sum_S q_S^2,  overlap = 1 - sum over disjoint (S, S') q_S q_S'.

    This is the right baseline when the router is not uniform (a popular expert repeats often
    by itself); with uniform routing it equals :func:`uniform_chance_rates`.
    """
    _check_chosen(chosen, n_experts)
    flat = chosen.reshape(-1, chosen.shape[-1])
    p = torch.bincount(flat[:, 0], minlength=n_experts).double() / len(flat)
    first = float((p**2).sum())  # P(two independent tokens share the first choice)
    sets, counts = torch.unique(_sets(flat), dim=0, return_counts=True)
    q = counts.double() / len(flat)
    same_set = float((q**2).sum())
    disjoint = ~(sets[:, None, :, None] == sets[None, :, None, :]).any(dim=-1).any(dim=-1)
    overlap = 1.0 - float((q[:, None] * q[None, :] * disjoint).sum())
    return {"first": first, "overlap": overlap, "same_set": same_set}


def expert_shares(chosen: Tensor, domain: Tensor, n_domains: int, n_experts: int) -> Tensor:
    """(n_domains, E): the share of each domain's expert assignments (first or second choice)
    that went to each expert, as in Figure 7 (rows sum to 1; uniform = 1/E).

    ``chosen`` (B, T, k) and ``domain`` (B,): the domain index of each window."""
    _check_chosen(chosen, n_experts)
    _positive("n_domains", n_domains)
    if not isinstance(domain, Tensor) or domain.shape != chosen.shape[:1]:
        raise ValueError(f"domain must be a tensor of shape ({chosen.shape[0]},): one per window")
    shares = torch.zeros(n_domains, n_experts, dtype=torch.float64)
    for d in range(n_domains):
        mine = chosen[domain.cpu() == d].reshape(-1)
        if mine.numel():
            shares[d] = torch.bincount(mine, minlength=n_experts).double() / mine.numel()
    return shares


def hf_parity(
    d_model: int = 32,
    d_hidden: int = 64,
    n_experts: int = 8,
    k: int = 2,
    n_tokens: int = 64,
    seed: int = 0,
) -> float:
    """max |ours - HF| over the outputs of HuggingFace transformers' ``MixtralSparseMoeBlock``
    and :class:`MixtralMoE` with the same random weights, on ``n_tokens`` random tokens.

    Works with the fused (5.x: ``experts.gate_up_proj``) and the per-expert (4.x: ``w1, w2,
    w3``) weight layouts. Raises ImportError if transformers is not installed.
    """
    from transformers import MixtralConfig
    from transformers import logging as hf_logging
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    hf_logging.set_verbosity_error()  # a standalone block warns about its expert dispatch

    for name, value in (("d_hidden", d_hidden), ("n_tokens", n_tokens)):
        _positive(name, value)
    config = MixtralConfig(
        hidden_size=d_model,
        intermediate_size=d_hidden,
        num_local_experts=n_experts,
        num_experts_per_tok=k,
        router_jitter_noise=0.0,
    )
    hf = MixtralSparseMoeBlock(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a fresh block may hold uninitialised memory: fill it
        for p in hf.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * p.shape[-1] ** -0.5)
    ours = MixtralMoE(d_model, d_hidden, n_experts, k).eval()
    if hasattr(hf.experts, "gate_up_proj"):  # transformers 5.x
        ours.load_hf(hf)
    else:  # transformers 4.x: one module per expert, w1 = gate, w3 = up, w2 = down
        with torch.no_grad():
            ours.router.linear.weight.copy_(hf.gate.weight)
            for mine, theirs in zip(ours.experts, hf.experts, strict=True):
                mine.gate_up.weight.copy_(torch.cat([theirs.w1.weight, theirs.w3.weight]))
                mine.down.weight.copy_(theirs.w2.weight)
    x = torch.randn(1, n_tokens, d_model, generator=gen)
    with torch.no_grad():
        expected = hf(x.clone())
        expected = expected[0] if isinstance(expected, tuple) else expected  # 4.x: (y, logits)
        y, _ = ours(x)
    return float((y - expected).abs().max())

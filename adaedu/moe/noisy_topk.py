"""Noisy top-k gating and the sparsely-gated mixture-of-experts layer (Shazeer et al., 2017).

N. Shazeer, A. Mirhoseini, K. Maziarz, A. Davis, Q. Le, G. Hinton, J. Dean. *Outrageously Large
Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer.* ICLR 2017. arXiv:1701.06538.

Equation numbers are the paper's:

- eq. 1    y = sum_i G(x)_i E_i(x)                              (:class:`SparseMoE`)
- eq. 3    H(x)_i = (x W_g)_i + StandardNormal() * Softplus((x W_noise)_i)
- eq. 4    KeepTopK(v, k)_i = v_i if v_i is among the k largest of v, else -inf
- eq. 5    G(x) = Softmax(KeepTopK(H(x), k))                    (:class:`NoisyTopKRouter`)
- eq. 6-7  Importance(X) = sum_x G(x);  L_importance = w_importance * CV(Importance(X))^2
- eq. 8-9  P(x, i) = Phi(((x W_g)_i - kth_excluding(H(x), k, i)) / Softplus((x W_noise)_i))
- eq. 10-11 Load(X)_i = sum_x P(x, i);  L_load = w_load * CV(Load(X))^2

Shapes: N tokens (the batch, flattened), E experts, k experts per token, d features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --- gating: eq. 3-5 ------------------------------------------------------------------------------


def _check_k(k: int, n_experts: int) -> None:
    if not isinstance(k, int) or not 1 <= k <= n_experts:
        raise ValueError(f"k={k!r}; allowed values: an integer 1..n_experts ({n_experts})")


def _check_weight(name: str, weight: float) -> None:
    if not weight >= 0:  # also rejects NaN
        raise ValueError(f"{name}={weight!r}; allowed values: a loss weight >= 0")


def _check_matrix(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor) or t.dim() != 2:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(
            f"{name} has shape {shape}; allowed values: a 2-d tensor (tokens, experts)"
        )


def keep_top_k(logits: Tensor, k: int) -> Tensor:
    """Eq. 4: keep the k largest logits of each row, set the others to -inf.

    Exactly k entries per row stay finite, also when logits tie (``topk`` picks k of them).
    """
    _check_matrix("logits", logits)
    _check_k(k, logits.shape[-1])
    top_values, top_indices = logits.topk(k, dim=-1)
    masked = torch.full_like(logits, float("-inf"))
    return masked.scatter(-1, top_indices, top_values)  # KeepTopK(v, k)_i = v_i or -inf


def top_k_gates(logits: Tensor, k: int) -> Tensor:
    """Eq. 5: G = Softmax(KeepTopK(logits, k)), a (N, E) matrix with k nonzero gates per row.

    exp(-inf) = 0, so the softmax runs over the k kept logits only: each row's k gates sum to 1.
    """
    return torch.softmax(keep_top_k(logits, k), dim=-1)  # G(x) = Softmax(KeepTopK(H(x), k))


def load_probability(
    clean_logits: Tensor, noisy_logits: Tensor, noise_std: Tensor, k: int
) -> Tensor:
    """Eq. 8-9: P(x, i), the probability that expert i is among the top k of H(x) when the noise
    on H(x)_i alone is drawn afresh (the other experts' noise stays as sampled).

    Expert i is chosen iff (x W_g)_i + z * std_i > kth_excluding(H(x), k, i), z ~ N(0, 1), so
    P(x, i) = Phi(((x W_g)_i - kth_excluding(H(x), k, i)) / std_i), Phi the normal CDF. The
    threshold kth_excluding(H, k, i), the k-th largest of H without H_i, is the (k+1)-th largest
    of H if i is in the top k, else the k-th largest. Unlike the 0/1 choice, P is differentiable
    in W_g and W_noise; it needs std_i > 0, i.e. the softplus noise of eq. 3. Without noise
    (std_i = 0) it degenerates to the 0/1 choice itself, whose gradient is zero.
    """
    for name, t in (
        ("clean_logits", clean_logits),
        ("noisy_logits", noisy_logits),
        ("noise_std", noise_std),
    ):
        _check_matrix(name, t)
    if not clean_logits.shape == noisy_logits.shape == noise_std.shape:
        raise ValueError(
            f"clean_logits {tuple(clean_logits.shape)}, noisy_logits {tuple(noisy_logits.shape)} "
            f"and noise_std {tuple(noise_std.shape)}; allowed values: three tensors of one shape"
        )
    n_experts = clean_logits.shape[-1]
    _check_k(k, n_experts)
    if k == n_experts:  # every expert is always chosen
        return torch.ones_like(clean_logits)
    top = noisy_logits.topk(k + 1, dim=-1).values
    kth_largest, kplus1th_largest = top[:, k - 1 : k], top[:, k : k + 1]
    in_top_k = noisy_logits >= kth_largest
    threshold = torch.where(in_top_k, kplus1th_largest, kth_largest)  # kth_excluding(H(x), k, i)
    z = (clean_logits - threshold) / noise_std.clamp_min(1e-9)  # ((x W_g)_i - kth_excl.) / std_i
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))  # eq. 9: P(x, i) = Phi(z), the normal CDF


class RouterOutput(NamedTuple):
    """What :class:`NoisyTopKRouter` computes for N tokens and E experts."""

    gates: Tensor  # (N, E)  G(x), eq. 5: k nonzero entries per row, each row sums to 1
    top_indices: Tensor  # (N, k)  the chosen experts, best first
    top_gates: Tensor  # (N, k)  their gates
    clean_logits: Tensor  # (N, E)  x W_g
    noisy_logits: Tensor  # (N, E)  H(x), eq. 3 (equal to clean_logits without noise)
    noise_std: Tensor  # (N, E)  Softplus(x W_noise), zeros without noise
    load_probs: Tensor  # (N, E)  P(x, i), eq. 9 (without noise: 1 if chosen, else 0)


class NoisyTopKRouter(nn.Module):
    """The noisy top-k gating network G(x) of eq. 3-5, plus P(x, i) of eq. 9 for the load loss.

    W_g and W_noise start at zero (Appendix A), so that training starts from roughly equal
    expert load while the balancing losses have not acted yet: all clean logits are 0 and the
    noise std is Softplus(0) = log 2, so the choice of experts is uniformly random.
    Noise is added in training mode, or when ``forward(x, noisy=True)`` asks for it.
    """

    def __init__(self, d_model: int, n_experts: int, k: int) -> None:
        super().__init__()
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"d_model={d_model!r}; allowed values: an integer >= 1")
        if not isinstance(n_experts, int) or n_experts < 1:
            raise ValueError(f"n_experts={n_experts!r}; allowed values: an integer >= 1")
        _check_k(k, n_experts)
        self.d_model, self.n_experts, self.k = d_model, n_experts, k
        self.w_gate = nn.Parameter(torch.zeros(d_model, n_experts))  # W_g
        self.w_noise = nn.Parameter(torch.zeros(d_model, n_experts))  # W_noise

    def forward(self, x: Tensor, noisy: bool | None = None) -> RouterOutput:
        """Route ``x`` (N, d_model). ``noisy`` defaults to ``self.training``."""
        if x.dim() != 2 or x.shape[-1] != self.d_model:
            raise ValueError(f"x has shape {tuple(x.shape)}; allowed values: (N, {self.d_model})")
        noisy = self.training if noisy is None else noisy
        clean = x @ self.w_gate  # (x W_g)_i
        if noisy:
            noise_std = F.softplus(x @ self.w_noise)  # Softplus((x W_noise)_i)
            logits = clean + torch.randn_like(clean) * noise_std  # eq. 3: H(x)
        else:  # test time: H(x) = x W_g, and W_noise is not even multiplied
            noise_std, logits = torch.zeros_like(clean), clean
        gates = top_k_gates(logits, self.k)  # eq. 5
        top_indices = logits.topk(self.k, dim=-1).indices
        top_gates = gates.gather(-1, top_indices)
        load_probs = load_probability(clean, logits, noise_std, self.k)  # eq. 9
        return RouterOutput(gates, top_indices, top_gates, clean, logits, noise_std, load_probs)


# --- balancing losses: eq. 6-7 and 10-11 ----------------------------------------------------------


def cv(values: Tensor) -> Tensor:
    """Coefficient of variation std / mean of a 1-d tensor, with the *population* std (divide by E).

    The E entries are the whole population of experts, not a sample from a larger one, so there is
    nothing to correct for: with the population std, CV = 0 exactly at perfect balance and
    CV = sqrt(E - 1) when one expert takes everything.
    """
    if not isinstance(values, Tensor) or values.dim() != 1 or values.numel() < 1:
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"values has shape {shape}; allowed values: a non-empty 1-d tensor")
    mean = values.mean()
    std = (values - mean).pow(2).mean().sqrt()  # population std
    return std / mean.clamp_min(1e-10)


def importance(gates: Tensor) -> Tensor:
    """Eq. 6: Importance(X) = sum over the batch of the gates G(x), one value per expert (E,)."""
    _check_matrix("gates", gates)
    return gates.sum(dim=0)  # Importance(X) = sum_{x in X} G(x)


def importance_loss(gates: Tensor, weight: float) -> Tensor:
    """Eq. 7: L_importance(X) = w_importance * CV(Importance(X))^2."""
    _check_weight("weight", weight)
    return weight * cv(importance(gates)) ** 2  # w_importance * CV(Importance(X))^2


def load(load_probs: Tensor) -> Tensor:
    """Eq. 10: Load(X)_i = sum over the batch of P(x, i): a smooth estimate of tokens per expert."""
    _check_matrix("load_probs", load_probs)
    return load_probs.sum(dim=0)  # Load(X)_i = sum_{x in X} P(x, i)


def load_loss(load_probs: Tensor, weight: float) -> Tensor:
    """Eq. 11: L_load(X) = w_load * CV(Load(X))^2."""
    _check_weight("weight", weight)
    return weight * cv(load(load_probs)) ** 2  # w_load * CV(Load(X))^2


# --- the layer: eq. 1 -------------------------------------------------------------------------------


def expert_mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """One expert (and the dense baseline): Linear -> ReLU -> Linear."""
    for name, value in (("d_in", d_in), ("hidden", hidden), ("d_out", d_out)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}; allowed values: an integer >= 1")
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class SparseMoE(nn.Module):
    """Eq. 1: y = sum_i G(x)_i E_i(x), computing only the k experts each token is routed to.

    Dispatch without a loop over tokens: for each expert, gather the tokens routed to it, run
    the expert once on all of them (one matmul per layer), and scatter-add its outputs, weighted
    by their gates, back to those tokens. After each forward pass ``last_route`` holds the
    :class:`RouterOutput` (for the balancing losses), ``last_expert_counts`` the number of tokens
    each expert received and ``last_num_tokens`` the number of tokens (read by
    :func:`adaedu.compute.active_parameters`).
    """

    def __init__(self, d_in: int, d_out: int, hidden: int, n_experts: int, k: int) -> None:
        super().__init__()
        self.router = NoisyTopKRouter(d_in, n_experts, k)
        self.experts = nn.ModuleList(expert_mlp(d_in, hidden, d_out) for _ in range(n_experts))
        self.d_in, self.d_out, self.hidden = d_in, d_out, hidden
        self.n_experts, self.k = n_experts, k
        self.last_route: RouterOutput | None = None
        self.last_expert_counts: Tensor | None = None
        self.last_num_tokens = 0

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (..., d_in) -> (..., d_out); the leading dimensions are flattened into tokens."""
        if x.dim() < 2 or x.shape[-1] != self.d_in:
            raise ValueError(f"x has shape {tuple(x.shape)}; allowed values: (..., {self.d_in})")
        tokens = x.reshape(-1, self.d_in)
        route = self.router(tokens)
        out = tokens.new_zeros(tokens.shape[0], self.d_out)
        for e, expert in enumerate(self.experts):
            token_idx, slot = (route.top_indices == e).nonzero(as_tuple=True)  # tokens sent to e
            if token_idx.numel() == 0:
                continue
            gate = route.top_gates[token_idx, slot].unsqueeze(-1)  # G(x)_e for those tokens
            out.index_add_(0, token_idx, gate * expert(tokens[token_idx]))  # y += G(x)_e E_e(x)
        self.last_route = route
        self.last_expert_counts = expert_counts(route.top_indices, self.n_experts)
        self.last_num_tokens = tokens.shape[0]
        return out.reshape(*x.shape[:-1], self.d_out)

    def balancing_loss(self, w_importance: float, w_load: float) -> Tensor:
        """L_importance + L_load (eq. 7 and 11) of the last forward pass."""
        if self.last_route is None:
            raise RuntimeError("balancing_loss() needs a forward pass first")
        route = self.last_route
        return importance_loss(route.gates, w_importance) + load_loss(route.load_probs, w_load)


def flop_matched_dense(moe: SparseMoE) -> nn.Sequential:
    """A dense MLP whose forward FLOPs per token match the MoE's (router included, no noise).

    Per token the MoE multiplies d_in x E (the gate, W_noise is unused at test time) and runs k
    experts of d_in x hidden + hidden x d_out; the dense MLP d_in x H + H x d_out gets
    H = round((d_in * E + k * hidden * (d_in + d_out)) / (d_in + d_out)).
    """
    if not isinstance(moe, SparseMoE):
        raise ValueError(f"moe is a {type(moe).__name__}; allowed values: a SparseMoE")
    d_in, d_out = moe.d_in, moe.d_out
    multiply_adds = d_in * moe.n_experts + moe.k * moe.hidden * (d_in + d_out)
    return expert_mlp(d_in, round(multiply_adds / (d_in + d_out)), d_out)


# --- routing statistics -----------------------------------------------------------------------------


def expert_counts(top_indices: Tensor, n_experts: int) -> Tensor:
    """Tokens routed to each expert: a (E,) integer tensor from the (N, k) chosen indices."""
    if not isinstance(n_experts, int) or n_experts < 1:
        raise ValueError(f"n_experts={n_experts!r}; allowed values: an integer >= 1")
    if (
        top_indices.numel()
        and not 0 <= int(top_indices.min()) <= int(top_indices.max()) < n_experts
    ):
        raise ValueError(f"top_indices must lie in 0..{n_experts - 1} (n_experts={n_experts})")
    return torch.bincount(top_indices.reshape(-1), minlength=n_experts)


@dataclass(frozen=True)
class RoutingStats:
    """How evenly a batch was spread over the experts (Table 6's columns)."""

    tokens_per_expert: list[int]  # actual routing counts
    max_mean_load: float  # max / mean of the counts (1 = perfectly even)
    cv_importance: float  # CV of Importance(X), eq. 6
    cv_load: float  # CV of the actual counts
    cv_smooth_load: float  # CV of Load(X), eq. 10 (the smooth estimate)


@torch.no_grad()
def routing_stats(route: RouterOutput) -> RoutingStats:
    """Routing statistics of one batch from its :class:`RouterOutput`."""
    if not isinstance(route, RouterOutput):
        raise TypeError(f"route is a {type(route).__name__}; allowed: a RouterOutput")
    counts = expert_counts(route.top_indices, route.gates.shape[-1]).float()
    return RoutingStats(
        tokens_per_expert=[int(c) for c in counts.tolist()],
        max_mean_load=float(counts.max() / counts.mean()),
        cv_importance=float(cv(importance(route.gates))),
        cv_load=float(cv(counts)),
        cv_smooth_load=float(cv(load(route.load_probs))),
    )

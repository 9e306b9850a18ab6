"""Expert offloading: traces of expert use, expert caches and speculative prefetch (notebook 2.13).

A. Eliseev, D. Mazur, *Fast Inference of Mixture-of-Experts Language Models with Offloading*,
arXiv:2312.17238 (2023). When a mixture-of-experts model does not fit in accelerator memory, the
experts live in slower memory (CPU RAM) and are copied in when a token needs them. Two ideas
make this fast enough for interactive generation:

- **an LRU cache of experts per layer** (the paper's Sec. 3.1): consecutive tokens often reuse
  the experts of the previous tokens, so keeping the k most recently used experts of each layer
  on the accelerator avoids many copies;
- **speculative expert loading** (Sec. 3.2): the hidden state changes little from one layer to
  the next (the residual stream ``h_{l+1} = h_l + f(h_l)``), so applying layer l+1's router to
  layer l's hidden state guesses the experts of layer l+1 early enough to copy them while
  layer l computes.

This module records the experts a :class:`adaedu.lm.TinyLM` with MoE feed-forward layers uses
while generating (:func:`record_expert_trace`), replays the trace through per-layer caches with
three replacement policies (:func:`simulate_cache`: LRU, random, and Belady's offline optimum),
scores the speculative guesses (:func:`speculative_guesses`, :func:`speculative_recall`), and
turns misses into tokens per second under a simple latency model (:func:`tokens_per_second`).

**Cache model.** Each layer has its own cache of ``capacity`` experts, empty at the start. Token
t needs the set S_t of its k chosen experts. Each needed expert already in the cache is a hit;
each other one is a miss: it is copied in, and if the cache is full one expert is evicted. The
policy picks the victim among the cached experts the current token does not need (or, only when
``capacity < k``, among all cached experts). Hit rate = hits / (tokens * k).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from adaedu.decoding.sampling import next_token

POLICIES = ("lru", "random", "belady")


# --- argument checks ------------------------------------------------------------------------------


def _check_int(name: str, value: int, minimum: int, maximum: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if not ok or (maximum is not None and value > maximum):
        upper = f"..{maximum}" if maximum is not None else " or more"
        raise ValueError(f"{name}={value!r}; allowed values: an integer {minimum}{upper}")


def _check_requests(requests: Tensor, n_experts: int) -> None:
    if not isinstance(requests, Tensor) or requests.dim() != 2 or requests.is_floating_point():
        raise ValueError("requests must be a 2-d integer tensor (tokens T, experts per token k)")
    if requests.numel() and not (0 <= int(requests.min()) and int(requests.max()) < n_experts):
        raise ValueError(f"requests must lie in 0..{n_experts - 1} (n_experts={n_experts})")


# --- recording a trace ----------------------------------------------------------------------------


@dataclass
class ExpertTrace:
    """What a generation run used, for the decoded tokens only (the prompt is prefilled at once).

    ``experts`` (S, T, L, k): the experts chosen for sequence s, decode step t, layer l, best
    first. ``hidden`` (S, T, L, d): the residual stream after block l (its output), the input a
    speculative guess for layer l+1 sees. ``tokens`` (S, prompt + T): the prompts and the
    generated tokens. The decode step t processes ``tokens[:, prompt + t]``.
    """

    experts: Tensor
    hidden: Tensor
    tokens: Tensor
    n_experts: int

    @property
    def n_layers(self) -> int:
        return self.experts.shape[2]

    @property
    def k(self) -> int:
        return self.experts.shape[3]


def _moe_layers(model: nn.Module) -> list[nn.Module]:
    blocks = getattr(model, "blocks", None)
    ffns = [getattr(b, "ffn", None) for b in blocks] if blocks is not None else []
    if not ffns or not all(hasattr(f, "router") and hasattr(f, "last_routing") for f in ffns):
        raise ValueError(
            "model must be an adaedu.lm.TinyLM whose every block's FFN is an "
            "adaedu.moe MoEFeedForward (for example MixtralMoE)"
        )
    return ffns


def record_expert_trace(
    model: nn.Module,
    prompts: Tensor,
    n_new: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> ExpertTrace:
    """Generate ``n_new`` tokens after each prompt (S, P) with the KV cache, and record, for every
    decode step and layer, the chosen experts and the block's output hidden state.

    Like :func:`adaedu.decoding.sampling.sample`: one prefill pass for the prompts, then one token
    at a time; ``temperature=0`` is greedy, else sampling from softmax(logits / temperature).
    """
    ffns = _moe_layers(model)
    _check_int("n_new", n_new, 1)
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature!r}; allowed values: a number >= 0")
    if not isinstance(prompts, Tensor) or prompts.dim() != 2 or prompts.is_floating_point():
        raise ValueError("prompts must be a (sequences S, prompt length P) tensor of token ids")
    room = model.config.block_size - prompts.shape[1]
    if n_new > room:
        raise ValueError(
            f"n_new={n_new}; allowed values: 1..{room} (block_size="
            f"{model.config.block_size}, prompts of {prompts.shape[1]} tokens)"
        )
    outputs: list[Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: outputs.append(o[0])) for b in model.blocks]
    was_training, grad_was_enabled = model.training, torch.is_grad_enabled()
    model.eval()
    torch.set_grad_enabled(False)  # inference only
    try:
        cache = model.new_cache()
        logits = model(prompts, cache=cache).logits[:, -1]  # prefill: not recorded
        tokens, experts, hidden = [prompts], [], []
        for _ in range(n_new):
            tokens.append(next_token(logits, temperature, generator=generator)[:, None])
            outputs.clear()
            logits = model(tokens[-1], cache=cache).logits[:, -1]
            S = prompts.shape[0]
            experts.append(torch.stack([f.last_routing.chosen.reshape(S, -1) for f in ffns], 1))
            hidden.append(torch.stack([h[:, -1] for h in outputs], dim=1))  # (S, L, d)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
        torch.set_grad_enabled(grad_was_enabled)
    return ExpertTrace(
        experts=torch.stack(experts, dim=1).cpu(),
        hidden=torch.stack(hidden, dim=1).float().cpu(),
        tokens=torch.cat(tokens, dim=1).cpu(),
        n_experts=ffns[0].n_experts,
    )


def forced_expert_trace(model: nn.Module, tokens: Tensor, prompt: int) -> ExpertTrace:
    """The trace ``model`` would record if it read the given ``tokens`` (S, prompt + T) instead
    of generating its own: one causal forward pass, in eval mode, and for each position after the
    first ``prompt`` the chosen experts and every block's output, as in
    :func:`record_expert_trace` (decode step t is position ``prompt + t``). Notebook 2.13 routes
    the trained model's generations through the same architecture at initialisation with it:
    the same text, only the weights differ."""
    ffns = _moe_layers(model)
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
        raise ValueError("tokens must be a (sequences S, length) tensor of token ids")
    _check_int("prompt", prompt, 1, tokens.shape[1] - 1)
    if tokens.shape[1] > model.config.block_size:
        raise ValueError(
            f"tokens has {tokens.shape[1]} positions; allowed values: <= block_size "
            f"{model.config.block_size}"
        )
    outputs: list[Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: outputs.append(o[0])) for b in model.blocks]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(tokens.to(device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    S, n = tokens.shape
    experts = torch.stack([f.last_routing.chosen.reshape(S, n, -1) for f in ffns], dim=2)
    hidden = torch.stack([h for h in outputs], dim=2)  # (S, n, L, d)
    return ExpertTrace(
        experts=experts[:, prompt:].cpu(),
        hidden=hidden[:, prompt:].float().cpu(),
        tokens=tokens.cpu(),
        n_experts=ffns[0].n_experts,
    )


def shuffle_trace(trace: ExpertTrace, generator: torch.Generator | None = None) -> ExpertTrace:
    """A null trace with the same marginals: for every sequence and layer, the decode steps'
    expert sets in a random order (each token keeps its k experts; which experts a layer uses,
    and how often, is unchanged; only the order in time is destroyed). A cache's hit rate on it
    is what the routing's marginal distribution alone would give. ``hidden`` and ``tokens`` are
    kept as they are: use the result for cache statistics only."""
    S, T, L, _ = trace.experts.shape
    order = torch.rand(S, L, T, generator=generator).argsort(dim=-1).transpose(1, 2)  # (S, T, L)
    experts = trace.experts.gather(1, order.unsqueeze(-1).expand_as(trace.experts))
    return ExpertTrace(experts, trace.hidden, trace.tokens, trace.n_experts)


# --- cache simulation -----------------------------------------------------------------------------


def next_uses(requests: Tensor, n_experts: int) -> list[list[float]]:
    """``nxt[t][e]``: the first token after t that needs expert e (``inf`` if none), for
    Belady's rule. One backward pass over the trace, O(T E)."""
    _check_requests(requests, n_experts)
    T = requests.shape[0]
    nxt: list[list[float]] = [[math.inf] * n_experts for _ in range(T)]
    upcoming = [math.inf] * n_experts
    for t in range(T - 1, -1, -1):
        nxt[t] = list(upcoming)
        for e in requests[t].tolist():
            upcoming[e] = t
    return nxt


def belady_victim(candidates: list[int], next_use: list[float]) -> int:
    """Belady's rule (L. Belady, *A study of replacement algorithms for a virtual-storage
    computer*, IBM Systems Journal 5(2), 1966): evict the expert needed furthest in the future
    (never again counts as infinitely far); ties go to the lowest expert id."""
    if not candidates:
        raise ValueError("candidates is empty; allowed values: a non-empty list of expert ids")
    if not 0 <= min(candidates) <= max(candidates) < len(next_use):
        raise ValueError(
            f"next_use has {len(next_use)} entries for candidates {candidates}; allowed: one "
            "entry per expert id, every candidate id in 0..len(next_use) - 1"
        )
    return max(sorted(candidates), key=lambda e: next_use[e])


def simulate_cache(
    requests: Tensor,
    capacity: int,
    policy: str = "lru",
    n_experts: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Replay one layer's expert requests (T, k) through a cache of ``capacity`` experts and
    return the (T, k) boolean mask of misses (see the module docstring for the cache model).

    Policies: ``"lru"`` evicts the least recently used expert (the paper's Sec. 3.1);
    ``"random"`` a uniformly random one (``generator`` seeds it); ``"belady"`` the one needed
    furthest in the future, which needs the whole trace in advance: an offline upper bound on the
    hit rate of any policy, not something a server could run.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r}; allowed values: {', '.join(POLICIES)}")
    n_experts = int(requests.max()) + 1 if n_experts is None and requests.numel() else n_experts
    n_experts = n_experts or 1
    _check_requests(requests, n_experts)
    _check_int("capacity", capacity, 1, n_experts)
    nxt = next_uses(requests, n_experts) if policy == "belady" else None
    last_used: dict[int, int] = {}  # the cache: expert -> last token that used it (LRU order)
    missed = torch.zeros(requests.shape, dtype=torch.bool)
    for t, needed in enumerate(requests.tolist()):
        for j, e in enumerate(needed):
            if e in last_used:
                last_used[e] = t
                continue
            missed[t, j] = True
            if len(last_used) >= capacity:
                candidates = [c for c in last_used if c not in needed] or list(last_used)
                if policy == "lru":
                    victim = min(candidates, key=lambda c: (last_used[c], c))
                elif policy == "random":
                    pick = torch.randint(len(candidates), (1,), generator=generator)
                    victim = sorted(candidates)[int(pick)]
                else:
                    victim = belady_victim(candidates, nxt[t])
                del last_used[victim]
            last_used[e] = t
    return missed


def chance_hit_rate(n_experts: int, capacity: int) -> float:
    """Hit rate if every token drew its k experts uniformly at random and capacity >= k: the
    cache before token t holds ``capacity`` experts independent of the token's choice, and each
    needed expert is one of the E, equally likely, so it is cached with probability capacity / E,
    for any policy (once the cache is full). (With capacity < k the token's own experts evict
    each other, and the rate is lower: 1 / (2E) for capacity 1 and k = 2.)"""
    _check_int("n_experts", n_experts, 1)
    _check_int("capacity", capacity, 1, n_experts)
    return capacity / n_experts


def chance_any_hit(n_experts: int, k: int, capacity: int) -> float:
    """Probability that at least one of k uniformly random distinct experts is among ``capacity``
    cached ones: 1 - C(E - c, k) / C(E, k) (for E = 8, k = 2, c = 2: 1 - 15/28 = 0.464)."""
    _check_int("n_experts", n_experts, 1)
    _check_int("k", k, 1, n_experts)
    _check_int("capacity", capacity, 1, n_experts)
    return 1.0 - math.comb(n_experts - capacity, k) / math.comb(n_experts, k)


@dataclass
class CacheStudy:
    """Hit rates of every policy, capacity and layer on a trace: ``hit_rate[policy]`` is
    (len(capacities), L); ``misses_per_token[policy]`` (len(capacities),) sums the layers."""

    capacities: list[int]
    hit_rate: dict[str, Tensor]
    misses_per_token: dict[str, Tensor]

    def overall(self, policy: str) -> Tensor:
        """Hit rate over all layers, per capacity."""
        return self.hit_rate[policy].mean(dim=1)


def sequence_hit_rates(
    trace: ExpertTrace, capacity: int, policy: str = "lru", seed: int = 0
) -> Tensor:
    """Hit rate of each sequence (S,), over all its layers (each layer with its own cache, empty
    at the start): the unit a bootstrap over sequences resamples. The same ``seed`` gives the
    random policy the same draws on two traces of the same shape."""
    _check_int("capacity", capacity, 1, trace.n_experts)
    S, T, L, k = trace.experts.shape
    generator = torch.Generator().manual_seed(seed)
    misses = torch.zeros(S)
    for s in range(S):
        for layer in range(L):
            missed = simulate_cache(
                trace.experts[s, :, layer], capacity, policy, trace.n_experts, generator
            )
            misses[s] += missed.sum()
    return 1 - misses / (T * L * k)


def cache_study(
    trace: ExpertTrace,
    capacities: list[int] | None = None,
    policies: tuple[str, ...] = POLICIES,
    seed: int = 0,
) -> CacheStudy:
    """Run :func:`simulate_cache` on every sequence and layer of ``trace``, for every capacity
    (default 1..E) and policy. Each sequence starts with empty caches (one generation request).
    Several traces of the same model shape (e.g. one per seed) can be pooled first with
    :func:`concat_traces`."""
    capacities = list(range(1, trace.n_experts + 1)) if capacities is None else list(capacities)
    for c in capacities:
        _check_int("capacity", c, 1, trace.n_experts)
    S, T, L, k = trace.experts.shape
    generator = torch.Generator().manual_seed(seed)
    hit_rate, per_token = {}, {}
    for policy in policies:
        misses = torch.zeros(len(capacities), L)
        for i, c in enumerate(capacities):
            for s in range(S):
                for layer in range(L):
                    m = simulate_cache(
                        trace.experts[s, :, layer], c, policy, trace.n_experts, generator
                    )
                    misses[i, layer] += m.sum()
        hit_rate[policy] = 1 - misses / (S * T * k)
        per_token[policy] = misses.sum(dim=1) / (S * T)
    return CacheStudy(capacities, hit_rate, per_token)


def concat_traces(traces: list[ExpertTrace]) -> ExpertTrace:
    """Pool the sequences of several traces (same T, L, k, E) into one (``hidden`` and
    ``experts`` concatenated along the sequences; ``tokens`` too when their lengths agree)."""
    if not traces:
        raise ValueError("traces is empty; allowed values: a non-empty list of ExpertTrace")
    shape = traces[0].experts.shape[1:]
    if any(t.experts.shape[1:] != shape or t.n_experts != traces[0].n_experts for t in traces):
        raise ValueError("traces must have the same tokens, layers, k and n_experts")
    return ExpertTrace(
        torch.cat([t.experts for t in traces]),
        torch.cat([t.hidden for t in traces]),
        torch.cat([t.tokens for t in traces]),
        traces[0].n_experts,
    )


# --- speculative prefetch -------------------------------------------------------------------------


def speculative_guesses(model: nn.Module, trace: ExpertTrace, ahead: int = 1) -> Tensor:
    """Guess layer l's experts from the hidden state ``ahead`` layers earlier (the paper's
    Sec. 3.2): ``TopK(router_l(RMSNorm_l(h_{l - ahead})))``, where h_j is block j's output and
    RMSNorm_l, router_l are layer l's own FFN norm and router. Returns (S, T, L, k); the layers
    l < ahead have no earlier hidden state and get -1."""
    ffns = _moe_layers(model)
    _check_int("ahead", ahead, 1, trace.n_layers - 1)
    S, T, L, k = trace.experts.shape
    guesses = torch.full((S, T, L, k), -1, dtype=torch.long)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for layer in range(ahead, L):
        block = model.blocks[layer]
        h = trace.hidden[:, :, layer - ahead].to(device)  # (S, T, d)
        with torch.no_grad():
            routing = ffns[layer].router(block.ffn_norm(h))  # groups = sequences
        guesses[:, :, layer] = routing.chosen.reshape(S, T, k).cpu()
    model.train(was_training)
    return guesses


def speculative_recall(guesses: Tensor, experts: Tensor) -> Tensor:
    """Per layer, the fraction of the experts actually used that the guess contained:
    |guess ∩ used| / |used|, averaged over all tokens (NaN where a layer has no guesses).
    ``guesses`` (..., L, g) and ``experts`` (..., L, k) as from :func:`speculative_guesses`."""
    if guesses.shape[:-1] != experts.shape[:-1]:
        raise ValueError(
            f"guesses {tuple(guesses.shape)} and experts {tuple(experts.shape)}; allowed values: "
            "the same shape except the last dimension"
        )
    found = (experts.unsqueeze(-1) == guesses.unsqueeze(-2)).any(dim=-1).float()  # (..., L, k)
    recall = found.mean(dim=-1).flatten(0, -2).mean(dim=0)  # (L,)
    no_guess = (guesses < 0).all(dim=-1).flatten(0, -2).all(dim=0)
    return recall.masked_fill(no_guess, float("nan"))


def sequence_recall(guesses: Tensor, experts: Tensor) -> Tensor:
    """Recall of the guesses for each sequence (S,): |guess ∩ used| / |used| averaged over the
    sequence's tokens and the layers that have guesses. ``guesses`` (S, T, L, g) and ``experts``
    (S, T, L, k) as from :func:`speculative_guesses`; the unit a bootstrap over sequences
    resamples."""
    if guesses.dim() != 4 or guesses.shape[:-1] != experts.shape[:-1]:
        raise ValueError(
            f"guesses {tuple(guesses.shape)} and experts {tuple(experts.shape)}; allowed values: "
            "(S, T, L, g) and (S, T, L, k)"
        )
    has_guess = ~(guesses < 0).all(dim=-1).all(dim=(0, 1))  # (L,)
    if not has_guess.any():
        raise ValueError("guesses has no layer with guesses (all -1)")
    found = (experts.unsqueeze(-1) == guesses.unsqueeze(-2)).any(dim=-1).float()  # (S, T, L, k)
    return found[:, :, has_guess].mean(dim=(1, 2, 3))


# --- the latency model ----------------------------------------------------------------------------


def _check_seconds(compute_seconds: float, transfer_seconds: float) -> None:
    for name, value in (
        ("compute_seconds", compute_seconds),
        ("transfer_seconds", transfer_seconds),
    ):
        if not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name}={value!r}; allowed values: a number >= 0")


def tokens_per_second(
    misses_per_token: Tensor | float, compute_seconds: float, transfer_seconds: float
) -> Tensor:
    """A simple latency model of offloaded decoding at batch size 1: each token costs the
    compute time plus one expert transfer per miss, done one after the other (no overlap):
    tokens/s = 1 / (compute + misses * transfer)."""
    _check_seconds(compute_seconds, transfer_seconds)
    misses = torch.as_tensor(misses_per_token, dtype=torch.float64)
    if (misses < 0).any():
        raise ValueError("misses_per_token must be >= 0")
    seconds = compute_seconds + misses * transfer_seconds
    if (seconds <= 0).any():
        raise ValueError("compute_seconds and transfer_seconds are both 0: no time per token")
    return 1.0 / seconds


def copy_seconds(n_bytes: int, device: torch.device | str, repeats: int = 5) -> float:
    """Measured seconds to copy ``n_bytes`` from CPU memory to ``device`` (the median of
    ``repeats`` copies; from pinned memory when the device is a GPU). On a CPU-only machine
    this is a memory-to-memory copy, far faster than a PCIe transfer."""
    _check_int("n_bytes", n_bytes, 1)
    _check_int("repeats", repeats, 1)
    device = torch.device(device)
    source = torch.ones(n_bytes, dtype=torch.uint8)
    if device.type == "cuda":
        source = source.pin_memory()
    target = torch.empty(n_bytes, dtype=torch.uint8, device=device)
    times = []
    for _ in range(repeats + 1):  # the first copy warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        target.copy_(source, non_blocking=device.type == "cuda")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def prefetch_split(
    trace: ExpertTrace, guesses: Tensor, capacity: int, policy: str = "lru", seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Split the cache misses of every layer into those the speculative guess had predicted
    (their copy could start one layer early) and the others. Returns (unguessed, guessed), each
    (L,): misses per token and layer, averaged over the trace."""
    if guesses.shape[:-1] != trace.experts.shape[:-1]:
        raise ValueError("guesses must come from speculative_guesses(model, trace, ...)")
    S, T, L, _ = trace.experts.shape
    generator = torch.Generator().manual_seed(seed)
    unguessed, guessed = torch.zeros(L), torch.zeros(L)
    for s in range(S):
        for layer in range(L):
            used = trace.experts[s, :, layer]
            missed = simulate_cache(used, capacity, policy, trace.n_experts, generator)
            hit_guess = (used.unsqueeze(-1) == guesses[s, :, layer].unsqueeze(-2)).any(-1)
            guessed[layer] += (missed & hit_guess).sum()
            unguessed[layer] += (missed & ~hit_guess).sum()
    return unguessed / (S * T), guessed / (S * T)


def layer_seconds(
    unguessed: Tensor, guessed: Tensor, compute_seconds: float, transfer_seconds: float
) -> Tensor:
    """Time of one layer per token when guessed misses are copied during the previous layer's
    compute: compute + unguessed * transfer + max(0, guessed * transfer - compute). Optimistic:
    wrong guesses are assumed to cost nothing (they would compete for the same bus)."""
    _check_seconds(compute_seconds, transfer_seconds)
    hidden = torch.clamp(guessed * transfer_seconds - compute_seconds, min=0.0)
    return compute_seconds + unguessed * transfer_seconds + hidden

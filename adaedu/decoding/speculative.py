"""Speculative sampling: a cheap draft model proposes, the target model verifies, exactly.

C. Chen, S. Borgeaud, G. Irving, J.-B. Lespiau, L. Sifre, J. Jumper, *Accelerating Large Language
Model Decoding with Speculative Sampling*, 2023, arXiv:2302.01318 (Algorithm 2);
Y. Leviathan, M. Kalman, Y. Matias, *Fast Inference from Transformers via Speculative Decoding*,
ICML 2023, arXiv:2211.17192 (Algorithm 1, Theorems 3.5 and 3.8).

One round, with ``p`` the target's next-token distribution and ``q`` the draft's (both *after*
temperature and top-k / top-p filtering: the distributions actually sampled from):

1. draft ``gamma`` tokens ``x_1 .. x_gamma`` autoregressively from ``q`` (gamma cheap calls);
2. one target call over ``[last, x_1 .. x_gamma]`` gives ``p_1 .. p_{gamma+1}``;
3. for i = 1..gamma: accept ``x_i`` with probability ``min(1, p_i(x_i) / q_i(x_i))``; at the first
   rejection emit a token from ``norm((p_i - q_i)_+)`` and stop;
4. if every draft was accepted, emit a bonus token from ``p_{gamma+1}``;
5. roll both key-value caches back to the accepted length.

Every emitted token is distributed exactly as under the target alone (Leviathan, Theorem 3.5; Chen,
Theorem 1). The acceptance probability of a draft is ``alpha = sum_x min(p(x), q(x)) = 1 -
TV(p, q)`` (Leviathan, Corollary 3.6 / Definition 3.4), a round emits ``(1 - alpha^(gamma+1)) /
(1 - alpha)`` tokens on average (eq. 1), and with ``c`` the cost of a draft call relative to a
target call the expected wall-clock improvement is ``(1 - alpha^(gamma+1)) / ((1 - alpha)
(gamma c + 1))`` (Theorem 3.8).

Online speculative decoding (X. Liu et al., *Online Speculative Decoding*, ICML 2024,
arXiv:2310.07177) keeps the target's distributions seen during verification and distils the
draft on them while serving, so the draft adapts to the queries it actually gets:
:func:`distill_step`, :func:`online_speculative_decoding`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaedu.decoding.ngram import BigramLM
from adaedu.decoding.sampling import (
    check_room,
    check_sampling_args,
    draw,
    next_token_distribution,
    sample,
    sample_from,
)


class Cache(Protocol):
    """What speculative sampling needs of a cache: its length and a rollback."""

    @property
    def length(self) -> int: ...

    def truncate(self, n: int) -> None: ...


class Decoder(Protocol):
    """Any model with :class:`adaedu.lm.TinyLM`'s decoding interface: ``config.vocab_size``,
    ``config.block_size``, ``new_cache()`` and ``model(idx, cache=cache).logits`` (B, T, V)."""

    config: Any

    def new_cache(self) -> Cache: ...

    def __call__(self, idx: Tensor, cache: Cache | None = None) -> Any: ...


# --- the quantities of the analysis (Leviathan et al. 2023, section 3) ------------------------


def _check_same_shape(p: Tensor, q: Tensor) -> None:
    if not isinstance(p, Tensor) or not isinstance(q, Tensor) or p.shape != q.shape:
        shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (p, q)]
        raise ValueError(
            f"p has shape {shapes[0]} and q {shapes[1]}; allowed values: two distributions of "
            "one shape (..., vocab)"
        )


def total_variation(p: Tensor, q: Tensor) -> Tensor:
    """``TV(p, q) = 1/2 sum_x |p(x) - q(x)|`` over the last dimension."""
    _check_same_shape(p, q)
    return 0.5 * (p - q).abs().sum(dim=-1)


def acceptance_rate(p: Tensor, q: Tensor) -> Tensor:
    """``alpha = sum_x min(p(x), q(x)) = 1 - TV(p, q)`` over the last dimension: the probability
    that a draft from ``q`` is accepted when the target's distribution is ``p`` (Leviathan et al.
    2023, Definition 3.4 and Corollary 3.6)."""
    _check_same_shape(p, q)
    return torch.minimum(p, q).sum(dim=-1)


def residual_distribution(p: Tensor, q: Tensor) -> Tensor:
    """``norm((p - q)_+)`` over the last dimension: where a rejected draft is resampled from
    (Chen et al. 2023, eq. 3; Leviathan et al. 2023, Algorithm 1 ``p'(x)``). Where ``p == q``
    (rejection impossible) it returns ``p``."""
    _check_same_shape(p, q)
    diff = (p - q).clamp(min=0)  # (p - q)_+
    mass = diff.sum(dim=-1, keepdim=True)
    return torch.where(mass > 0, diff / mass.clamp(min=torch.finfo(diff.dtype).tiny), p)


def _check_alpha_gamma(alpha: float, gamma: int) -> None:
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha!r}; allowed values: a number in [0, 1]")
    if not isinstance(gamma, int) or isinstance(gamma, bool) or gamma < 1:
        raise ValueError(f"gamma={gamma!r}; allowed values: an integer >= 1")


def expected_tokens_per_call(alpha: float, gamma: int) -> float:
    """``E[tokens per target call] = (1 - alpha^(gamma+1)) / (1 - alpha)`` (Leviathan et al. 2023,
    eq. 1): the accepted drafts, capped at gamma, plus the one token every round emits."""
    _check_alpha_gamma(alpha, gamma)
    if alpha == 1:
        return float(gamma + 1)
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def walltime_factor(alpha: float, gamma: int, c: float, v: float = 1.0) -> float:
    """Expected wall-clock speed-up ``(1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1))``
    (Leviathan et al. 2023, Theorem 3.8): a round costs one target call plus gamma draft calls,
    each ``c`` times a target call.

    The theorem assumes that the target scores the gamma + 1 tokens of a verification in the time
    of one token (true where a call is bound by reading the weights). ``v`` is the cost of that
    call relative to a one-token call where it is not (:func:`verification_cost`); the same
    argument then gives ``E[tokens per round] / (gamma c + v)``. ``v = 1`` is the theorem."""
    if not c >= 0:
        raise ValueError(f"c={c!r}; allowed values: a number >= 0 (draft cost / target cost)")
    if not v > 0:
        raise ValueError(f"v={v!r}; allowed values: a number > 0 (verification / one-token call)")
    return expected_tokens_per_call(alpha, gamma) / (gamma * c + v)


# --- one verification (steps 3-4) --------------------------------------------------------------

#: ``verify(p, q, drafts, generator) -> (n_accepted, next_token)``.
VerifyFn = Callable[[Tensor, Tensor, Tensor, "torch.Generator | None"], tuple[int, int]]


def _check_drafts(drafts: Tensor, vocab: int) -> None:
    if drafts.is_floating_point() or (
        drafts.numel() and not (0 <= int(drafts.min()) and int(drafts.max()) < vocab)
    ):
        raise ValueError(f"drafts must be token ids; allowed values: integers 0..{vocab - 1}")


def verify(
    p: Tensor, q: Tensor, drafts: Tensor, generator: torch.Generator | None = None
) -> tuple[int, int]:
    """Modified rejection sampling of one round: ``(n_accepted, next_token)``.

    ``p`` (gamma + 1, V): the target's distributions at the gamma draft positions and after them;
    ``q`` (gamma, V): the draft's distributions the drafts were sampled from; ``drafts`` (gamma,).
    Draft i is accepted iff ``r_i < min(1, p_i(x_i) / q_i(x_i))``, ``r_i ~ U(0, 1)``, i.e.
    ``r_i q_i(x_i) < p_i(x_i)``; the first rejection at i emits a token from
    ``norm((p_i - q_i)_+)``; if all are accepted, the bonus token comes from ``p_{gamma+1}``.
    """
    gamma = drafts.shape[0]
    if p.shape[0] != gamma + 1 or q.shape[0] != gamma or p.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"p {tuple(p.shape)}, q {tuple(q.shape)}, drafts {tuple(drafts.shape)}; allowed: "
            "p (gamma + 1, V), q (gamma, V), drafts (gamma,)"
        )
    _check_drafts(drafts, p.shape[-1])
    n = gamma
    if gamma:
        rows = torch.arange(gamma, device=p.device)
        px, qx = p[rows, drafts].double(), q[rows, drafts].double()
        r = torch.rand(gamma, generator=generator, device=p.device, dtype=torch.float64)
        rejected = (r * qx >= px).nonzero()  # Chen Alg. 2: r > min(1, p/q) -> reject
        if len(rejected):
            n = int(rejected[0, 0])
    if n < gamma:  # Chen Alg. 2 / Leviathan Alg. 1: resample from norm((p - q)_+)
        return n, int(sample_from(residual_distribution(p[n].double(), q[n].double()), generator))
    return n, int(sample_from(p[gamma].double(), generator))  # all accepted: the bonus token


# --- the statistics of a call --------------------------------------------------------------------


@dataclass
class SpeculativeStats:
    """Counts over one or more calls of :func:`speculative_sample` (pass the same object again to
    accumulate). ``verified``: drafts whose acceptance test was run (the accepted ones and the
    first rejected one of each round; drafts after a rejection are never tested). ``overlap``:
    the sum over the tested drafts of ``sum_x min(p, q)`` at that position, the acceptance
    probability the theory predicts for it."""

    drafted: int = 0
    accepted: int = 0
    verified: int = 0
    overlap: float = 0.0
    target_calls: int = 0  # the prefill included
    draft_calls: int = 0  # the prefill included
    tokens: int = 0
    rounds: list[tuple[int, int]] = field(default_factory=list)  # (drafted, accepted) per round
    target_probs: list[Tensor] = field(default_factory=list)  # one row per token, if recorded

    @property
    def alpha(self) -> float:
        """Measured acceptance rate: accepted / tested drafts."""
        return self.accepted / self.verified if self.verified else float("nan")

    @property
    def alpha_theory(self) -> float:
        """Mean of ``1 - TV(p, q)`` over the tested draft positions."""
        return self.overlap / self.verified if self.verified else float("nan")

    def tokens_per_round(self, gamma: int) -> float:
        """Mean tokens emitted by the rounds that drafted the full ``gamma`` (accepted + 1)."""
        full = [a + 1 for d, a in self.rounds if d == gamma]
        return sum(full) / len(full) if full else float("nan")


# --- the algorithm -------------------------------------------------------------------------------


def _logits(model: Decoder, tokens: list[int], cache: Cache, device: torch.device) -> Tensor:
    """Feed ``tokens`` after the cache; the logits (len(tokens), V)."""
    return model(torch.tensor([tokens], device=device), cache=cache).logits[0]


def _check_pair(target: Decoder, draft: Decoder, prompt: Tensor, gamma: int) -> None:
    if not isinstance(gamma, int) or isinstance(gamma, bool) or gamma < 1:
        raise ValueError(f"gamma={gamma!r}; allowed values: an integer >= 1")
    if target.config.vocab_size != draft.config.vocab_size:
        raise ValueError(
            f"draft vocab_size={draft.config.vocab_size} but target vocab_size="
            f"{target.config.vocab_size}; allowed: the same vocabulary for both models"
        )
    if not isinstance(prompt, Tensor) or prompt.dim() != 2 or prompt.shape != (1, prompt.shape[1]):
        raise ValueError("prompt must be a (1, time) tensor of token ids (one sequence)")
    if prompt.shape[1] < 1:
        raise ValueError("prompt must hold at least one token")


@torch.no_grad()
def speculative_sample(
    target: Decoder,
    draft: Decoder,
    prompt: Tensor,
    max_new_tokens: int,
    gamma: int = 4,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    stats: SpeculativeStats | None = None,
    verify_fn: VerifyFn = verify,
    record_target_probs: bool = False,
) -> Tensor:
    """``prompt`` (1, T) followed by ``max_new_tokens`` tokens sampled from the *target*'s
    distribution (after the same temperature / top-k / top-p as :func:`adaedu.decoding.sampling.
    sample`), drafting ``gamma`` tokens per target call.

    ``stats`` accumulates the counts; ``record_target_probs`` keeps in ``stats.target_probs`` the
    target's distribution of every emitted token (what online speculative decoding distils on).
    ``verify_fn`` replaces the acceptance rule (the tests use it to show a wrong rule fails).
    Both models stay in eval mode during the call.
    """
    _check_pair(target, draft, prompt, gamma)
    check_sampling_args(temperature, top_k, top_p)
    check_room(target, prompt.shape[1], max_new_tokens)
    check_room(draft, prompt.shape[1], max_new_tokens)
    stats = stats if stats is not None else SpeculativeStats()
    if max_new_tokens == 0:
        return prompt
    modes = [m.training for m in (target, draft) if isinstance(m, nn.Module)]
    for m in (target, draft):
        if isinstance(m, nn.Module):
            m.eval()
    device = prompt.device
    seq = prompt[0].tolist()
    end = len(seq) + max_new_tokens
    t_cache, d_cache = target.new_cache(), draft.new_cache()
    if len(seq) > 1:  # prefill: each cache holds every token but the last one
        _logits(target, seq[:-1], t_cache, device)
        _logits(draft, seq[:-1], d_cache, device)
        stats.target_calls, stats.draft_calls = stats.target_calls + 1, stats.draft_calls + 1

    def dist(logits: Tensor) -> Tensor:
        return next_token_distribution(logits, temperature, top_k, top_p)

    while len(seq) < end:
        g = min(gamma, end - len(seq) - 1)  # never draft past the requested length
        # Chen Alg. 2 "for t = 1..K: sample x~_t ~ q(x | x_1..x_n, x~_1..x~_{t-1})";
        # Leviathan Alg. 1 "for i = 1 to gamma: q_i(x) <- M_q(prefix + [x_1..x_{i-1}]); x_i ~ q_i".
        drafts: list[int] = []
        q_rows: list[Tensor] = []
        for _ in range(g):
            q = dist(_logits(draft, (seq + drafts)[d_cache.length :], d_cache, device)[-1])
            stats.draft_calls += 1
            q_rows.append(q)
            drafts.append(int(draw(q, temperature, generator)))
        # Chen "compute K+1 sets of logits ... in parallel"; Leviathan "run M_p in parallel:
        # p_1(x) .. p_{gamma+1}(x) <- M_p(prefix), .., M_p(prefix + [x_1..x_gamma])".
        fed = (seq + drafts)[t_cache.length :]
        p = dist(_logits(target, fed, t_cache, device)[-(g + 1) :])
        stats.target_calls += 1
        q_all = torch.stack(q_rows) if q_rows else p.new_zeros(0, p.shape[-1])
        # Chen "for t = 1..K: r ~ U[0,1]; if r < min(1, p/q) accept, else resample from
        # (q - p)_+ [their q is the target] and exit"; Leviathan "n <- min({i - 1 | r_i >
        # p_i(x_i)/q_i(x_i)} u {gamma}); p' <- p_{n+1}, adjusted to norm(max(0, p_{n+1} - q_{n+1}))
        # if n < gamma". If all K accepted: Chen "sample x_{n+K+1} ~ p" (the bonus token).
        n, token = verify_fn(
            p, q_all, torch.tensor(drafts, dtype=torch.long, device=p.device), generator
        )
        tested = min(n + 1, g)
        stats.drafted += g
        stats.accepted += n
        stats.verified += tested
        stats.overlap += float(acceptance_rate(p[:tested].double(), q_all[:tested].double()).sum())
        stats.rounds.append((g, n))
        if record_target_probs:
            stats.target_probs.append(p[: n + 1].float().cpu())
        # Leviathan "return prefix + [x_1, .., x_n, t]"
        seq += drafts[:n] + [token]
        stats.tokens += n + 1
        # Roll back: the caches keep only positions of accepted tokens (all but the last one).
        t_cache.truncate(len(seq) - 1)
        d_cache.truncate(min(d_cache.length, len(seq) - 1))
    for m, mode in zip(
        [m for m in (target, draft) if isinstance(m, nn.Module)], modes, strict=True
    ):
        m.train(mode)
    return torch.tensor([seq], device=device)


# --- exactness: a chi-square goodness-of-fit test ------------------------------------------------


def wrong_verify_resample_from_p(
    p: Tensor, q: Tensor, drafts: Tensor, generator: torch.Generator | None = None
) -> tuple[int, int]:
    """A deliberately WRONG rule, to show that the exactness test can fail: the acceptance test
    of :func:`verify`, but a rejected draft is replaced by a sample from ``p`` instead of
    ``norm((p - q)_+)``. Tokens where ``q`` is large get emitted too often."""
    _check_drafts(drafts, p.shape[-1])
    gamma = drafts.shape[0]
    rows = torch.arange(gamma, device=p.device)
    r = torch.rand(gamma, generator=generator, device=p.device, dtype=torch.float64)
    rejected = (r * q[rows, drafts].double() >= p[rows, drafts].double()).nonzero()
    n = int(rejected[0, 0]) if len(rejected) else gamma
    return n, int(sample_from(p[n].double(), generator))


def chi_square_test(counts: Tensor, probs: Tensor) -> tuple[float, float]:
    """Pearson's goodness-of-fit test of ``counts`` against the exact ``probs``: the statistic
    ``sum (O - E)^2 / E`` and its p-value under chi-square with (categories - 1) degrees of
    freedom, ``P(X > stat) = Q(dof / 2, stat / 2)`` (the regularised upper incomplete gamma
    function). Categories with probability 0 must have count 0."""
    counts, probs = counts.double().flatten(), probs.double().flatten()
    if counts.shape != probs.shape or (probs < 0).any() or abs(float(probs.sum()) - 1) > 1e-6:
        raise ValueError("counts and probs must have the same length; probs a distribution")
    if (counts[probs == 0] > 0).any():
        return float("inf"), 0.0
    keep = probs > 0
    expected = probs[keep] * counts.sum()
    stat = float(((counts[keep] - expected) ** 2 / expected).sum())
    dof = int(keep.sum()) - 1
    p_value = float(torch.special.gammaincc(torch.tensor(dof / 2.0), torch.tensor(stat / 2.0)))
    return stat, p_value


@dataclass
class ExactnessResult:
    """Outcome of :func:`exactness_test`."""

    counts: Tensor  # (V ** n_tokens,) observed sequences, in lexicographic order
    expected: Tensor  # their exact probabilities under the target
    statistic: float
    p_value: float


def exactness_test(
    target: BigramLM,
    draft: BigramLM,
    first_token: int,
    n_tokens: int,
    gamma: int,
    n_samples: int,
    seed: int = 0,
    verify_fn: VerifyFn = verify,
) -> ExactnessResult:
    """Draw ``n_samples`` sequences of ``n_tokens`` after ``first_token`` with speculative
    sampling and compare their counts with the exact distribution under the target bigram model
    ``prod_t p(x_t | x_{t-1})`` by a chi-square test."""
    if not isinstance(n_tokens, int) or not 1 <= n_tokens <= 3:
        raise ValueError(f"n_tokens={n_tokens!r}; allowed values: 1, 2 or 3")
    vocab = target.config.vocab_size
    if not isinstance(first_token, int) or isinstance(first_token, bool):
        raise ValueError(f"first_token={first_token!r}; allowed values: a token id 0..{vocab - 1}")
    if not 0 <= first_token < vocab:
        raise ValueError(f"first_token={first_token!r}; allowed values: a token id 0..{vocab - 1}")
    trans = target.probs().double()
    exact = trans[first_token]
    for _ in range(n_tokens - 1):  # P(x_1..x_t) p(x_{t+1} | x_t), flattened lexicographically
        exact = (exact.reshape(-1, vocab)[:, :, None] * trans[None]).reshape(-1)
        exact = exact.reshape(-1)
    gen = torch.Generator().manual_seed(seed)
    counts = torch.zeros(vocab**n_tokens, dtype=torch.float64)
    prompt = torch.tensor([[first_token]])
    weights = vocab ** torch.arange(n_tokens - 1, -1, -1)
    for _ in range(n_samples):
        out = speculative_sample(
            target, draft, prompt, n_tokens, gamma, generator=gen, verify_fn=verify_fn
        )
        counts[int((out[0, 1:] * weights).sum())] += 1
    stat, p_value = chi_square_test(counts, exact)
    return ExactnessResult(counts, exact.float(), stat, p_value)


# --- measuring: acceptance, tokens per call, wall-clock --------------------------------------


def call_time(model: Decoder, context: int, new_tokens: int = 1, repeats: int = 20) -> float:
    """Median seconds of one cached forward call of ``new_tokens`` tokens after ``context``
    cached ones (random token ids), on the model's device, in the steady state of decoding: the
    cache is filled once, and after each timed call rolled back to ``context`` positions (as
    speculative sampling does after a verification)."""
    for name, value, low in (
        ("context", context, 0),
        ("new_tokens", new_tokens, 1),
        ("repeats", repeats, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}={value!r}; allowed values: an integer >= {low}")
    device = next(iter(model.parameters())).device if isinstance(model, nn.Module) else None
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(model.config.vocab_size, (1, context + new_tokens), generator=gen)
    ids = ids.to(device)
    times = []
    with torch.no_grad():
        cache = model.new_cache()
        model(ids[:, :context], cache=cache)
        for _ in range(repeats + 3):  # the first 3 calls warm up
            start = time.perf_counter()
            model(ids[:, context:], cache=cache)
            times.append(time.perf_counter() - start)
            cache.truncate(context)
    return statistics.median(times[3:])


def cost_ratio(draft: Decoder, target: Decoder, context: int, repeats: int = 20) -> float:
    """``c`` = one draft call / one target call (one new token each, after ``context``)."""
    return call_time(draft, context, 1, repeats) / call_time(target, context, 1, repeats)


def verification_cost(target: Decoder, gamma: int, context: int, repeats: int = 20) -> float:
    """``v`` = one target call over ``gamma + 1`` new tokens / one over a single token (1 where
    scoring more tokens is free, as Theorem 3.8 assumes)."""
    _check_alpha_gamma(0.0, gamma)
    return call_time(target, context, gamma + 1, repeats) / call_time(target, context, 1, repeats)


@dataclass
class GammaResult:
    """One gamma of :func:`gamma_sweep`."""

    gamma: int
    alpha: float  # measured acceptance rate
    alpha_theory: float  # mean 1 - TV(p, q) at the tested positions
    tokens_per_call: float  # mean tokens per round with a full gamma
    tokens_formula: float  # (1 - alpha^(gamma+1)) / (1 - alpha) with the measured alpha
    seconds: float  # median over prompts of the speculative run
    baseline_seconds: float  # median over prompts of plain sampling with the target
    stats: SpeculativeStats

    @property
    def speedup(self) -> float:
        return self.baseline_seconds / self.seconds

    def predicted_speedup(self, c: float, v: float = 1.0) -> float:
        """Theorem 3.8 with the measured alpha (``v``: see :func:`walltime_factor`)."""
        return walltime_factor(min(self.alpha, 1.0), self.gamma, c, v)


def gamma_sweep(
    target: Decoder,
    draft: Decoder,
    prompts: Sequence[Tensor],
    max_new_tokens: int,
    gammas: Sequence[int],
    temperature: float = 1.0,
    seed: int = 0,
) -> list[GammaResult]:
    """For each gamma, sample ``max_new_tokens`` after each prompt speculatively and, in turn
    with it, plainly from the target alone; the measured and predicted quantities."""
    results = []
    for gamma in gammas:
        stats = SpeculativeStats()
        spec_times, base_times = [], []
        gen = torch.Generator(device=prompts[0].device).manual_seed(seed)
        for prompt in prompts:
            start = time.perf_counter()
            speculative_sample(
                target,
                draft,
                prompt,
                max_new_tokens,
                gamma,
                temperature,
                generator=gen,
                stats=stats,
            )
            spec_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            sample(target, prompt, max_new_tokens, temperature, generator=gen)
            base_times.append(time.perf_counter() - start)
        results.append(
            GammaResult(
                gamma=gamma,
                alpha=stats.alpha,
                alpha_theory=stats.alpha_theory,
                tokens_per_call=stats.tokens_per_round(gamma),
                tokens_formula=expected_tokens_per_call(min(stats.alpha, 1.0), gamma),
                seconds=statistics.median(spec_times),
                baseline_seconds=statistics.median(base_times),
                stats=stats,
            )
        )
    return results


# --- online speculative decoding (Liu et al. 2023) -----------------------------------------------


def distill_step(
    draft: nn.Module, tokens: Tensor, target_probs: Tensor, optimizer: torch.optim.Optimizer
) -> float:
    """One optimiser step of the draft on the forward KL ``KL(p || q)`` to the target's
    distributions ``target_probs`` (N, V) of the last N tokens of ``tokens`` (1, L) (Liu et al.
    2023, eq. 4 with the forward KL as the distance). Returns the KL in nats per token."""
    n = target_probs.shape[0]
    if tokens.dim() != 2 or tokens.shape[0] != 1 or not 1 <= n < tokens.shape[1]:
        raise ValueError(
            f"tokens {tuple(tokens.shape)}, target_probs {tuple(target_probs.shape)}; allowed: "
            "tokens (1, L) and target_probs (N, V) with 1 <= N < L"
        )
    draft.train()
    logq = F.log_softmax(draft(tokens[:, :-1]).logits[0, -n:].float(), dim=-1)  # predicts last n
    p = target_probs.to(logq.device)
    kl = (p * (p.clamp(min=1e-12).log() - logq)).sum(dim=-1).mean()  # KL(p || q)
    optimizer.zero_grad(set_to_none=True)
    kl.backward()
    optimizer.step()
    draft.eval()
    return float(kl.detach())


@dataclass
class OnlineResult:
    """What :func:`online_speculative_decoding` measured, one entry per prompt."""

    alpha: list[float]  # acceptance rate of each request, in serving order
    kl: list[float]  # distillation loss of each update


def online_speculative_decoding(
    target: Decoder,
    draft: nn.Module,
    prompts: Sequence[Tensor],
    max_new_tokens: int,
    gamma: int,
    optimizer: torch.optim.Optimizer | None,
    steps_per_request: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
) -> OnlineResult:
    """Serve ``prompts`` one after the other with speculative sampling; after each request,
    ``steps_per_request`` distillation steps of the draft on the target's distributions that the
    verification just computed (no extra target call). ``optimizer=None``: a frozen draft."""
    if not isinstance(steps_per_request, int) or steps_per_request < 0:
        raise ValueError(f"steps_per_request={steps_per_request!r}; allowed values: integer >= 0")
    gen = torch.Generator(device=prompts[0].device).manual_seed(seed)
    result = OnlineResult([], [])
    for prompt in prompts:
        stats = SpeculativeStats()
        out = speculative_sample(
            target,
            draft,
            prompt,
            max_new_tokens,
            gamma,
            temperature,
            generator=gen,
            stats=stats,
            record_target_probs=optimizer is not None,
        )
        result.alpha.append(stats.alpha)
        if optimizer is not None:
            probs = torch.cat(stats.target_probs)  # one row per generated token
            for _ in range(steps_per_request):
                result.kl.append(distill_step(draft, out, probs, optimizer))
    return result


@dataclass
class TimedPrompt:
    """Plain vs speculative wall-clock on one prompt (:func:`timed_speedup`)."""

    plain: list[float]  # seconds of each repeat of plain sampling from the target
    speculative: list[float]  # seconds of each repeat of speculative sampling

    @property
    def speedup(self) -> float:
        """Median plain time / median speculative time."""
        return statistics.median(self.plain) / statistics.median(self.speculative)


def timed_speedup(
    target: Decoder,
    draft: Decoder,
    prompts: Sequence[Tensor],
    max_new_tokens: int,
    gamma: int,
    repeats: int = 5,
    temperature: float = 1.0,
) -> list[TimedPrompt]:
    """Wall-clock of speculative sampling (Chen et al. 2023, Algorithm 2) against plain sampling
    from the target, per prompt: ``repeats`` pairs of runs, plain and speculative alternating
    (so that background load hits both alike), repeat ``r`` of both seeded with ``r``. The unit of
    an interval over prompts is :attr:`TimedPrompt.speedup` (a ratio of medians)."""
    _check_alpha_gamma(0.0, gamma)
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r}; allowed values: an integer >= 1")
    if not prompts:
        raise ValueError("prompts is empty; allowed values: one or more (1, T) tensors")
    out = []
    for prompt in prompts:
        row = TimedPrompt([], [])
        for r in range(repeats):
            gen = torch.Generator(device=prompt.device).manual_seed(r)
            start = time.perf_counter()
            sample(target, prompt, max_new_tokens, temperature, generator=gen)
            row.plain.append(time.perf_counter() - start)
            gen = torch.Generator(device=prompt.device).manual_seed(r)
            start = time.perf_counter()
            speculative_sample(
                target, draft, prompt, max_new_tokens, gamma, temperature, generator=gen
            )
            row.speculative.append(time.perf_counter() - start)
        out.append(row)
    return out

"""adaedu.decoding.sampling and adaedu.decoding.speculative: filters, plain sampling, and the
exactness of speculative sampling (Chen et al. 2023; Leviathan et al. 2023)."""

from __future__ import annotations

import math

import pytest
import torch

from adaedu.decoding.sampling import (
    SampleStats,
    apply_temperature,
    next_token_distribution,
    sample,
    top_k_filter,
    top_p_filter,
)
from adaedu.decoding.speculative import (
    BigramLM,
    SpeculativeStats,
    acceptance_rate,
    chi_square_test,
    distill_step,
    exactness_test,
    expected_tokens_per_call,
    residual_distribution,
    sample_from,
    speculative_sample,
    total_variation,
    verification_cost,
    verify,
    walltime_factor,
)
from adaedu.lm import KVCache, TinyLM, TinyLMConfig

# --- filters ----------------------------------------------------------------------------------


def test_temperature_scales_and_zero_is_one_hot():
    z = torch.tensor([[1.0, 3.0, 2.0]])
    assert torch.allclose(apply_temperature(z, 2.0), z / 2)
    assert torch.equal(next_token_distribution(z, 0.0), torch.tensor([[0.0, 1.0, 0.0]]))
    cold = next_token_distribution(z, 0.05)
    assert cold[0, 1] > 0.999  # low temperature approaches greedy
    hot = next_token_distribution(z, 1e4)
    assert torch.allclose(hot, torch.full_like(hot, 1 / 3), atol=1e-3)


def test_top_k_keeps_the_k_largest_and_ties():
    z = torch.tensor([[0.5, 2.0, -1.0, 2.0, 1.0]])
    out = top_k_filter(z, 2)
    assert torch.isinf(out).tolist() == [[True, False, True, False, True]]
    out = top_k_filter(z, 3)
    assert (~torch.isinf(out)).sum() == 3 and not torch.isinf(out[0, 4])
    tied = top_k_filter(torch.tensor([[1.0, 1.0, 0.0]]), 1)  # both tied maxima are kept
    assert (~torch.isinf(tied)).sum() == 2
    assert torch.equal(top_k_filter(z, 10), z)
    probs = next_token_distribution(z, 1.0, top_k=2)
    assert torch.allclose(probs[0, [1, 3]], torch.tensor([0.5, 0.5]))


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    z = probs.log()
    kept = lambda p: (~torch.isinf(top_p_filter(z, p))).sum().item()  # noqa: E731
    assert kept(0.5) == 1  # 0.5 >= 0.5 already
    assert kept(0.51) == 2
    assert kept(0.8) == 2  # 0.5 + 0.3 = 0.8
    assert kept(0.81) == 3
    assert kept(1.0) == 4
    assert kept(0.01) == 1  # the most probable token is always kept
    out = next_token_distribution(z, 1.0, top_p=0.8)
    assert torch.allclose(out, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))


@pytest.mark.parametrize(
    "kwargs",
    [dict(temperature=-1.0), dict(top_k=0), dict(top_k=1.5), dict(top_p=0.0), dict(top_p=1.5)],
)
def test_bad_filter_arguments_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        next_token_distribution(torch.zeros(1, 4), **kwargs)


# --- plain sampling -----------------------------------------------------------------------------


def _tiny(seed: int, d: int = 32, layers: int = 2, vocab: int = 12, block: int = 64) -> TinyLM:
    torch.manual_seed(seed)
    config = TinyLMConfig(
        vocab_size=vocab,
        d_model=d,
        n_layers=layers,
        n_heads=2,
        block_size=block,
        tie_embeddings=False,
    )
    model = TinyLM(config).eval()
    with torch.no_grad():  # sharper distributions than the N(0, 0.02) initialisation gives
        model.head.weight.mul_(50)
    return model


def test_sample_counts_calls_and_greedy_draws_no_random_number():
    model = _tiny(0)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    for temperature in (0.0, 1.0):
        stats = SampleStats()
        sample(model, prompt, 10, temperature, stats=stats)
        assert stats.model_calls == 10 and stats.tokens == 10  # prefill + 9 single-token calls
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    sample(model, prompt, 10, 0.0, generator=g)
    assert torch.equal(g.get_state(), state)  # greedy leaves the generator untouched
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample(model, prompt, 63)


# --- the analysis -------------------------------------------------------------------------------


def test_acceptance_rate_is_one_minus_tv_and_residual():
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, 7, generator=gen), -1)
    q = torch.softmax(torch.randn(5, 7, generator=gen), -1)
    assert torch.allclose(acceptance_rate(p, q), 1 - total_variation(p, q), atol=1e-6)
    a = torch.tensor([0.5, 0.3, 0.2])
    b = torch.tensor([0.2, 0.3, 0.5])
    assert acceptance_rate(a, b).item() == pytest.approx(0.7)
    assert torch.allclose(residual_distribution(a, b), torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(residual_distribution(a, a), a)  # no mass to move: p itself
    # the mixture that modified rejection sampling produces is p itself (Leviathan Thm 3.5)
    mix = torch.minimum(p, q) + (1 - acceptance_rate(p, q))[:, None] * residual_distribution(p, q)
    assert torch.allclose(mix, p, atol=1e-6)


def test_formulas():
    assert expected_tokens_per_call(0.0, 5) == 1.0
    assert expected_tokens_per_call(1.0, 5) == 6.0
    assert expected_tokens_per_call(0.5, 2) == pytest.approx(1 + 0.5 + 0.25)
    assert walltime_factor(0.8, 4, 0.0) == pytest.approx(expected_tokens_per_call(0.8, 4))
    assert walltime_factor(0.8, 4, 0.05) == pytest.approx((1 - 0.8**5) / (0.2 * 1.2))
    # a verification call costing v one-token calls: E[tokens] / (gamma c + v)
    assert walltime_factor(0.8, 4, 0.05, v=1.5) == pytest.approx((1 - 0.8**5) / 0.2 / 1.7)
    for bad in (dict(alpha=1.2, gamma=2), dict(alpha=0.5, gamma=0)):
        with pytest.raises(ValueError, match=next(k for k in bad if k != "alpha" or bad[k] > 1)):
            expected_tokens_per_call(**bad)


# --- exactness: a chi-square test on a bigram pair with an exactly known output distribution ---

V = 3
P = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.7, 0.2]])  # target p(next | token)
Q = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.3, 0.3, 0.4]])  # draft q(next | token)
N_SAMPLES = 4000


def wrong_deterministic_accept(p, q, drafts, generator=None):
    """A plausible mistake: accept iff p(x) >= q(x), with no coin flip."""
    g = drafts.shape[0]
    rows = torch.arange(g)
    bad = (p[rows, drafts] < q[rows, drafts]).nonzero()
    n = int(bad[0, 0]) if len(bad) else g
    if n < g:
        return n, int(sample_from(residual_distribution(p[n], q[n]), generator))
    return n, int(sample_from(p[g], generator))


def wrong_resample_from_p(p, q, drafts, generator=None):
    """A plausible mistake: on rejection, resample from p instead of norm((p - q)_+)."""
    g = drafts.shape[0]
    rows = torch.arange(g)
    r = torch.rand(g, generator=generator, dtype=torch.float64)
    bad = (r * q[rows, drafts].double() >= p[rows, drafts].double()).nonzero()
    n = int(bad[0, 0]) if len(bad) else g
    return n, int(sample_from(p[n], generator))


def _chi_square_p(rule, gamma: int, seed: int = 0) -> float:
    target, draft = BigramLM.from_probs(P), BigramLM.from_probs(Q)
    result = exactness_test(target, draft, 0, 2, gamma, N_SAMPLES, seed, verify_fn=rule)
    exact = (P[0][:, None] * P).flatten()  # p(x1 | 0) p(x2 | x1), 9 outcomes
    assert torch.allclose(result.expected, exact, atol=1e-6)
    assert result.counts.sum() == N_SAMPLES
    return result.p_value


def test_chi_square_p_value():
    counts, probs = torch.tensor([30.0, 50.0, 20.0]), torch.tensor([0.3, 0.5, 0.2])
    stat, p = chi_square_test(counts, probs)
    assert stat == pytest.approx(0.0, abs=1e-9) and p == pytest.approx(1.0)
    stat, p = chi_square_test(torch.tensor([40.0, 40.0, 20.0]), probs)
    assert stat == pytest.approx(100 / 30 + 100 / 50)
    assert p == pytest.approx(math.exp(-stat / 2), rel=1e-6)  # chi-square with 2 dof
    assert chi_square_test(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))[1] == 0.0
    scipy_stats = pytest.importorskip("scipy.stats")
    counts = torch.tensor([12.0, 30.0, 7.0, 51.0])
    probs = torch.tensor([0.1, 0.3, 0.1, 0.5])
    ref = scipy_stats.chisquare(counts.numpy(), (probs * 100).numpy())
    assert chi_square_test(counts, probs)[1] == pytest.approx(ref.pvalue, rel=1e-5)


@pytest.mark.parametrize("gamma", [1, 2])
def test_output_distribution_is_exactly_the_targets(gamma):
    # gamma=1 reaches the bonus token inside the first two tokens, gamma=2 two acceptances
    assert _chi_square_p(verify, gamma) > 0.01


@pytest.mark.parametrize("rule", [wrong_deterministic_accept, wrong_resample_from_p])
def test_the_chi_square_test_rejects_wrong_rules(rule):
    assert _chi_square_p(rule, 1) < 1e-6


def test_acceptance_frequency_matches_one_minus_tv():
    target, draft = BigramLM.from_probs(P), BigramLM.from_probs(Q)
    gen = torch.Generator().manual_seed(1)
    stats = SpeculativeStats()
    n = 3000
    for _ in range(n):  # gamma=1, 2 tokens: exactly one draft from row 0 is tested per call
        speculative_sample(target, draft, torch.tensor([[0]]), 2, 1, generator=gen, stats=stats)
    alpha = acceptance_rate(P[0], Q[0]).item()  # 0.2 + 0.3 + 0.1 = 0.6
    assert stats.verified == n
    assert stats.alpha_theory == pytest.approx(alpha)
    assert abs(stats.alpha - alpha) < 4 * math.sqrt(alpha * (1 - alpha) / n)


def test_tokens_per_round_match_formula_for_constant_alpha():
    p_row, q_row = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.3, 0.3, 0.4])  # alpha 0.8
    target = BigramLM.from_probs(p_row.expand(V, V))  # same distribution after every token
    draft = BigramLM.from_probs(q_row.expand(V, V))
    gen = torch.Generator().manual_seed(2)
    stats = SpeculativeStats()
    for _ in range(300):
        speculative_sample(target, draft, torch.tensor([[0]]), 40, 3, generator=gen, stats=stats)
    full = [r for r in stats.rounds if r[0] == 3]
    sd = math.sqrt(sum((a + 1 - stats.tokens_per_round(3)) ** 2 for _, a in full) / len(full))
    expected = expected_tokens_per_call(0.8, 3)  # 1 + .8 + .64 + .512 = 2.952
    assert abs(stats.tokens_per_round(3) - expected) < 4 * sd / math.sqrt(len(full))
    assert stats.tokens == 300 * 40 and stats.drafted == sum(d for d, _ in stats.rounds)


# --- with real TinyLMs: greedy identity, cache rollback ----------------------------------------


class RecordingLM(TinyLM):
    """A TinyLM that remembers the caches it handed out."""

    def new_cache(self) -> KVCache:
        self.last_cache = super().new_cache()
        return self.last_cache


def _recording(seed: int, d: int, layers: int) -> RecordingLM:
    torch.manual_seed(seed)
    config = TinyLMConfig(
        vocab_size=12, d_model=d, n_layers=layers, n_heads=2, block_size=64, tie_embeddings=False
    )
    model = RecordingLM(config).eval()
    with torch.no_grad():
        model.head.weight.mul_(50)
    return model


def test_greedy_speculative_equals_greedy_target():
    target, draft = _tiny(0), _tiny(1, d=16, layers=1)
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    stats = SpeculativeStats()
    out = speculative_sample(target, draft, prompt, 40, 4, temperature=0.0, stats=stats)
    assert torch.equal(out, sample(target, prompt, 40, temperature=0.0))
    assert 0 < stats.accepted < stats.drafted  # the pair disagrees sometimes
    topk = speculative_sample(target, draft, prompt, 40, 3, temperature=1.0, top_k=1)
    assert torch.equal(topk, out)  # top-k = 1 is greedy too


def test_cache_rollback_equals_fresh_prefill():
    target, draft = _recording(0, 32, 2), _recording(1, 16, 1)
    prompt = torch.tensor([[2, 7, 1]])
    stats = SpeculativeStats()
    gen = torch.Generator().manual_seed(0)
    out = speculative_sample(target, draft, prompt, 50, 4, generator=gen, stats=stats)
    assert stats.accepted < stats.drafted  # there were rejections to roll back
    assert stats.tokens == 50 and out.shape == (1, 53)
    for model in (target, draft):
        used = model.last_cache
        fresh = model.new_cache()
        with torch.no_grad():
            model(out[:, : used.length], cache=fresh)
        assert used.length >= out.shape[1] - 2
        for k_used, k_fresh in zip(used.keys + used.values, fresh.keys + fresh.values, strict=True):
            assert torch.allclose(k_used, k_fresh, atol=1e-5)
    assert target.last_cache.length == out.shape[1] - 1


def test_target_calls_and_counts():
    target, draft = _tiny(0), _tiny(1, d=16, layers=1)
    stats = SpeculativeStats()
    gen = torch.Generator().manual_seed(3)
    speculative_sample(target, draft, torch.tensor([[1, 2]]), 30, 4, generator=gen, stats=stats)
    assert stats.target_calls == 1 + len(stats.rounds)  # prefill + one call per round
    assert stats.tokens == 30 == sum(a + 1 for _, a in stats.rounds)
    assert stats.accepted <= stats.verified <= stats.drafted


def test_record_target_probs_and_distill_step():
    target, draft = _tiny(0), _tiny(1, d=16, layers=1)
    stats = SpeculativeStats()
    prompt = torch.tensor([[1, 2, 3]])
    out = speculative_sample(target, draft, prompt, 20, 3, stats=stats, record_target_probs=True)
    probs = torch.cat(stats.target_probs)
    assert probs.shape == (20, 12)
    with torch.no_grad():  # row i is the target's distribution of generated token i
        ref = torch.softmax(target(out[:, :-1]).logits[0, -20:], -1)
    assert torch.allclose(probs, ref, atol=1e-4)
    opt = torch.optim.Adam(draft.parameters(), lr=1e-2)
    losses = [distill_step(draft, out, probs, opt) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


def test_bad_arguments_raise():
    target, draft = _tiny(0), _tiny(1, d=16, layers=1)
    prompt = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="gamma"):
        speculative_sample(target, draft, prompt, 5, 0)
    with pytest.raises(ValueError, match="vocab_size"):
        speculative_sample(target, _tiny(1, vocab=13), prompt, 5, 2)
    with pytest.raises(ValueError, match="prompt"):
        speculative_sample(target, draft, torch.tensor([[1], [2]]), 5, 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        speculative_sample(target, draft, prompt, 100, 2)
    with pytest.raises(ValueError, match="temperature"):
        speculative_sample(target, draft, prompt, 5, 2, temperature=-0.5)
    with pytest.raises(ValueError, match="c="):
        walltime_factor(0.5, 2, -1.0)
    with pytest.raises(ValueError, match="v=0"):
        walltime_factor(0.5, 2, 0.1, v=0)
    with pytest.raises(ValueError, match="gamma=0"):
        verification_cost(target, 0, context=4)
    assert torch.equal(speculative_sample(target, draft, prompt, 0, 2), prompt)


# --- several rounds of gamma > 2 drafts, with rollbacks (issue 10: gamma=2 above drafts one token)


class RecordingBigram(BigramLM):
    """A bigram model that keeps the token caches it hands out."""

    def new_cache(self):
        self.last_cache = super().new_cache()
        return self.last_cache


def _long_run_joint(rule, seed: int, n_samples: int = 1500) -> tuple[float, SpeculativeStats]:
    """Chi-square p-value of the joint of (x_3, x_4, x_7) over 7 tokens drafted 3 at a time:
    every sequence spans >= 2 rounds of 3 drafts, and the caches roll back after rejections."""
    target, draft = RecordingBigram(P.log()), RecordingBigram(Q.log())
    gen = torch.Generator().manual_seed(seed)
    stats = SpeculativeStats()
    counts = torch.zeros(V**3, dtype=torch.float64)
    for _ in range(n_samples):
        rounds_before = len(stats.rounds)
        out = speculative_sample(
            target, draft, torch.tensor([[0]]), 7, 3, generator=gen, stats=stats, verify_fn=rule
        )
        assert out.shape == (1, 8) and len(stats.rounds) - rounds_before >= 2
        for model in (target, draft):  # rollback: the cache is exactly a prefix of the output
            cache = model.last_cache.tokens
            assert torch.equal(cache, out[:, : cache.shape[1]])
        assert target.last_cache.length == out.shape[1] - 1  # all but the last token
        x = out[0].tolist()
        counts[x[3] * V * V + x[4] * V + x[7]] += 1
    p64 = P.double()
    pi3 = torch.linalg.matrix_power(p64, 3)[0]  # P(x_3 = a | x_0 = 0)
    exact = pi3[:, None, None] * p64[:, :, None] * torch.linalg.matrix_power(p64, 3)[None]
    return chi_square_test(counts, exact.flatten().float())[1], stats


def test_exactness_over_several_rounds_of_three_drafts_with_rollbacks():
    p_value, stats = _long_run_joint(verify, seed=11)
    full = [(d, a) for d, a in stats.rounds if d == 3]
    assert len(full) >= 1500  # every sample drafted 3 tokens at least once
    assert any(a < d for d, a in full) and any(a == d for d, a in full)  # rejections and bonuses
    assert any(0 < a < d for d, a in full)  # partial acceptances: a rollback inside a round
    assert p_value > 0.01


def test_the_long_run_test_rejects_a_wrong_rule():
    p_value, _ = _long_run_joint(wrong_resample_from_p, seed=11)
    assert p_value < 1e-6

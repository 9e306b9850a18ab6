"""Tests of noisy top-k gating, the balancing losses and the sparse MoE layer (notebook 2.1)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import adaedu
from adaedu.compute import active_parameters, count_parameters, forward_flops
from adaedu.exercises import shazeer2017 as ex
from adaedu.moe import (
    NoisyTopKRouter,
    SparseMoE,
    cv,
    evaluate,
    expert_counts,
    fit,
    flop_matched_dense,
    importance,
    importance_loss,
    keep_top_k,
    load,
    load_loss,
    load_probability,
    make_cluster_task,
    routing_stats,
    top_k_gates,
)

# --- gating invariants (property tests) -----------------------------------------------------------


@st.composite
def logits_and_k(draw, ties: bool = False):
    n = draw(st.integers(1, 6))
    e = draw(st.integers(1, 10))
    k = draw(st.integers(1, e))
    if ties:  # small integers: many exact ties
        values = draw(st.lists(st.integers(-2, 2), min_size=n * e, max_size=n * e))
        return torch.tensor(values, dtype=torch.float32).reshape(n, e), k
    values = draw(st.lists(st.floats(-10, 10, width=32), min_size=n * e, max_size=n * e))
    return torch.tensor(values, dtype=torch.float32).reshape(n, e), k


@settings(max_examples=200, deadline=None)
@given(logits_and_k())
def test_gates_sum_to_one_over_exactly_k_experts(case):
    logits, k = case
    gates = top_k_gates(logits, k)
    chosen = logits.topk(k, dim=-1).indices
    assert ((gates > 0).sum(dim=-1) == k).all()  # exactly k experts per row
    assert torch.allclose(gates.gather(-1, chosen).sum(-1), torch.ones(len(logits)), atol=1e-6)
    mask = torch.ones_like(gates, dtype=torch.bool).scatter(-1, chosen, False)
    assert (gates[mask] == 0).all()  # zero elsewhere
    # the kept gates are the softmax of the kept logits (eq. 5)
    expected = torch.softmax(logits.gather(-1, chosen), dim=-1)
    assert torch.allclose(gates.gather(-1, chosen), expected, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(logits_and_k(ties=True))
def test_exactly_k_experts_even_with_ties(case):
    logits, k = case
    kept = keep_top_k(logits, k)
    assert (torch.isfinite(kept).sum(-1) == k).all()
    gates = top_k_gates(logits, k)
    assert ((gates > 0).sum(-1) == k).all()
    assert torch.allclose(gates.sum(-1), torch.ones(len(logits)), atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 12), st.integers(1, 8), st.data())
def test_router_output_is_consistent(n, e, data):
    k = data.draw(st.integers(1, e))
    torch.manual_seed(data.draw(st.integers(0, 10_000)))
    router = NoisyTopKRouter(5, e, k)
    with torch.no_grad():
        router.w_gate.normal_()
        router.w_noise.normal_()
    route = router(torch.randn(n, 5), noisy=True)
    assert route.top_indices.shape == route.top_gates.shape == (n, k)
    assert torch.equal(route.gates.gather(-1, route.top_indices), route.top_gates)
    assert ((route.gates > 0).sum(-1) == k).all()
    assert torch.allclose(route.gates.sum(-1), torch.ones(n), atol=1e-6)
    assert ((route.load_probs >= 0) & (route.load_probs <= 1)).all()
    assert expert_counts(route.top_indices, e).sum() == n * k


def test_keep_top_k_by_hand():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    inf = float("-inf")
    assert torch.equal(keep_top_k(logits, 2), torch.tensor([[inf, 3.0, 2.0, inf]]))
    g = top_k_gates(logits, 2)
    e = math.exp(1.0)
    assert torch.allclose(g, torch.tensor([[0.0, e / (1 + e), 1 / (1 + e), 0.0]]))


def test_router_starts_at_zero_and_noise_only_when_training():
    router = NoisyTopKRouter(3, 4, 2)
    assert torch.count_nonzero(router.w_gate) == 0 and torch.count_nonzero(router.w_noise) == 0
    x = torch.randn(10, 3)
    route = router(x)  # a fresh module is in training mode: noise std Softplus(0) = log 2
    assert torch.allclose(route.noise_std, torch.full((10, 4), math.log(2.0)))
    with torch.no_grad():
        router.w_gate.normal_()
    router.eval()
    route = router(x)
    assert torch.equal(route.noisy_logits, route.clean_logits)
    assert torch.equal(route.noise_std, torch.zeros(10, 4))
    # without noise P(x, i) is the 0/1 choice itself
    assert torch.equal(route.load_probs, (route.gates > 0).float())
    router.train()
    route = router(x)
    assert not torch.equal(route.noisy_logits, route.clean_logits)
    assert not torch.equal(router(x, noisy=False).noisy_logits, route.noisy_logits)


# --- the balancing losses on hand-made cases ------------------------------------------------------


def test_cv_is_population_std_over_mean():
    values = torch.tensor([1.0, 2.0, 3.0, 6.0])  # mean 3, population variance (4+1+0+9)/4 = 3.5
    assert cv(values).item() == pytest.approx(math.sqrt(3.5) / 3)
    assert cv(torch.full((5,), 2.0)).item() == 0.0
    one_hot = torch.tensor([8.0, 0.0, 0.0, 0.0])
    assert cv(one_hot).item() == pytest.approx(math.sqrt(3.0))  # sqrt(E - 1)


def test_importance_and_its_loss_by_hand():
    gates = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75], [1.0, 0.0, 0.0], [0.0, 0.25, 0.75]])
    imp = importance(gates)
    assert torch.allclose(imp, torch.tensor([1.5, 1.0, 1.5]))
    # mean 4/3, population variance ((1/6)^2 * 2 + (1/3)^2) / 3 = 1/18, CV^2 = 1/32
    cv2 = (1 / 18) / (4 / 3) ** 2
    assert importance_loss(gates, 0.2).item() == pytest.approx(0.2 * cv2, rel=1e-5)
    assert importance_loss(gates, 0.0).item() == 0.0


def test_load_and_its_loss_by_hand():
    probs = torch.tensor([[1.0, 0.2, 0.0, 0.8], [0.5, 0.5, 0.5, 0.5]])
    lo = load(probs)
    assert torch.allclose(lo, torch.tensor([1.5, 0.7, 0.5, 1.3]))
    mean = 1.0
    var = (0.25 + 0.09 + 0.25 + 0.09) / 4
    assert load_loss(probs, 0.5).item() == pytest.approx(0.5 * var / mean**2, rel=1e-5)


def test_routing_stats_on_a_hand_made_routing():
    # 4 tokens, 3 experts, k=2: expert 0 gets 4 tokens, expert 1 gets 3, expert 2 gets 1
    top_indices = torch.tensor([[0, 1], [0, 1], [0, 2], [1, 0]])
    top_gates = torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.9, 0.1], [0.7, 0.3]])
    gates = torch.zeros(4, 3).scatter(-1, top_indices, top_gates)
    route = adaedu.moe.RouterOutput(
        gates, top_indices, top_gates, gates, gates, torch.zeros(4, 3), (gates > 0).float()
    )
    stats = routing_stats(route)
    assert stats.tokens_per_expert == [4, 3, 1]
    assert stats.max_mean_load == pytest.approx(4 / (8 / 3))
    counts = torch.tensor([4.0, 3.0, 1.0])
    assert stats.cv_load == pytest.approx(cv(counts).item())
    assert stats.cv_smooth_load == pytest.approx(stats.cv_load)
    assert stats.cv_importance == pytest.approx(cv(torch.tensor([2.3, 1.6, 0.1])).item(), rel=1e-5)


# --- P(x, i) against Monte Carlo ------------------------------------------------------------------


def test_load_probability_matches_monte_carlo():
    """Eq. 8: redraw only expert i's noise, keep the others' noise, count how often i is top-k.

    With M = 40_000 draws a frequency's standard error is at most sqrt(0.25 / M) = 0.0025; we
    allow 5 standard errors of the binomial at p = P(x, i) (plus 1e-3 for float error), so that
    even over the 5 * 6 compared probabilities a correct P fails with probability < 1e-5,
    while a wrong threshold (e.g. not excluding i) is off by far more (checked below).
    """
    gen = torch.Generator().manual_seed(0)
    n, e, k, m = 5, 6, 2, 40_000
    clean = torch.randn(n, e, generator=gen)
    std = torch.nn.functional.softplus(torch.randn(n, e, generator=gen))
    noisy = clean + torch.randn(n, e, generator=gen) * std
    p = load_probability(clean, noisy, std, k)
    freq = torch.empty(n, e)
    for i in range(e):
        draws = noisy.unsqueeze(0).repeat(m, 1, 1)  # (m, n, e)
        draws[:, :, i] = clean[:, i] + torch.randn(m, n, generator=gen) * std[:, i]
        in_top_k = (draws.topk(k, dim=-1).indices == i).any(-1)  # (m, n)
        freq[:, i] = in_top_k.float().mean(0)
    tol = 5 * (p * (1 - p) / m).sqrt() + 1e-3
    assert ((freq - p).abs() <= tol).all(), (freq - p).abs().max()
    # a wrong estimator (threshold = k-th largest including i) is clearly rejected by the same test
    wrong = torch.special.ndtr((clean - noisy.topk(k, -1).values[:, -1:]) / std)
    assert ((freq - wrong).abs() > tol).any()


def test_load_probability_is_differentiable_in_both_weight_matrices():
    torch.manual_seed(1)
    router = NoisyTopKRouter(4, 6, 2)
    with torch.no_grad():
        router.w_gate.normal_()
    route = router(torch.randn(32, 4), noisy=True)
    load_loss(route.load_probs, 1.0).backward()
    assert router.w_gate.grad.abs().sum() > 0 and router.w_noise.grad.abs().sum() > 0


def test_load_probability_with_k_equal_to_e_is_one():
    x = torch.randn(3, 4)
    assert torch.equal(load_probability(x, x, torch.ones(3, 4), 4), torch.ones(3, 4))


# --- the layer --------------------------------------------------------------------------------------


def _trained_looking_moe(seed: int = 0) -> SparseMoE:
    torch.manual_seed(seed)
    moe = SparseMoE(d_in=5, d_out=3, hidden=7, n_experts=6, k=2)
    with torch.no_grad():
        moe.router.w_gate.normal_()
        moe.router.w_noise.normal_()
    return moe


@pytest.mark.parametrize("training", [False, True])
def test_moe_equals_the_naive_weighted_sum_of_chosen_experts(training):
    moe = _trained_looking_moe().train(training)
    x = torch.randn(2, 9, 5)  # leading dimensions are flattened into 18 tokens
    torch.manual_seed(5)
    y = moe(x)
    route = moe.last_route
    tokens = x.reshape(-1, 5)
    naive = torch.zeros(18, 3)
    for t in range(18):
        for e in range(6):
            if route.gates[t, e] != 0:
                naive[t] += route.gates[t, e] * moe.experts[e](tokens[t])
    assert y.shape == (2, 9, 3)
    assert torch.allclose(y.reshape(18, 3), naive, atol=1e-6)
    assert torch.equal(moe.last_expert_counts, (route.gates > 0).sum(0))
    assert moe.last_num_tokens == 18


def test_moe_gradients_reach_the_gate_and_the_chosen_experts_only():
    moe = _trained_looking_moe().eval()
    x = torch.randn(1, 5)
    moe(x).sum().backward()
    chosen = set(moe.last_route.top_indices[0].tolist())
    assert moe.router.w_gate.grad.abs().sum() > 0
    for e, expert in enumerate(moe.experts):
        has_grad = expert[0].weight.grad is not None and expert[0].weight.grad.abs().sum() > 0
        assert has_grad == (e in chosen)


def test_active_parameters_and_flops_of_the_moe_and_the_matched_dense():
    moe = _trained_looking_moe()
    x = torch.randn(64, 5)
    flops = forward_flops(moe, x)  # eval mode: no noise matmul
    per_expert = count_parameters(moe.experts[0])
    router = count_parameters(moe.router)
    assert flops == 2 * (5 * 6 + 2 * 7 * (5 + 3))
    moe.eval()
    moe(x)
    assert active_parameters(moe) == pytest.approx(router + 2 * per_expert)
    dense = flop_matched_dense(moe)
    hidden = dense[0].out_features
    assert hidden == round((5 * 6 + 2 * 7 * 8) / 8)
    assert abs(forward_flops(dense, x) - flops) <= 2 * (5 + 3) / 2


def test_balancing_loss_needs_a_forward_and_adds_both_losses():
    moe = _trained_looking_moe()
    with pytest.raises(RuntimeError, match="forward"):
        moe.balancing_loss(0.1, 0.1)
    moe(torch.randn(16, 5))
    r = moe.last_route
    total = moe.balancing_loss(0.3, 0.7)
    assert torch.allclose(total, importance_loss(r.gates, 0.3) + load_loss(r.load_probs, 0.7))


def test_cluster_task_and_a_short_fit_run():
    task = make_cluster_task(4, 6, 2, seed=3)
    x, y, c = task.sample(1000, torch.Generator().manual_seed(0))
    assert x.shape == (1000, 6) and y.shape == (1000, 2) and set(c.tolist()) == {0, 1, 2, 3}
    assert 0.7 < y.var().item() < 1.3  # outputs scaled to variance ~1
    assert torch.allclose(y[0], task.maps[c[0]] @ x[0], atol=1e-5)
    adaedu.seed_everything(0)
    moe = SparseMoE(6, 2, 8, 4, 2)
    before, _ = evaluate(moe, x, y)
    h = fit(
        moe,
        task,
        steps=60,
        batch_size=64,
        lr=1e-2,
        w_importance=0.1,
        w_load=0.1,
        log_every=20,
        progress=False,
    )
    after, stats = evaluate(moe, x, y)
    assert after < 0.5 * before
    assert len(h["max_mean_load"]) == 3 and sum(stats.tokens_per_expert) == 2000
    with pytest.raises(ValueError, match="w_importance"):
        fit(flop_matched_dense(moe), task, steps=1, batch_size=4, lr=1e-3, w_importance=0.1)


# --- bad arguments ----------------------------------------------------------------------------------


def test_bad_arguments_raise_value_errors_naming_the_parameter():
    logits = torch.randn(3, 4)
    for bad_k in (0, 5, -1, 2.0):
        with pytest.raises(ValueError, match="k="):
            top_k_gates(logits, bad_k)
    with pytest.raises(ValueError, match="k="):
        NoisyTopKRouter(3, 4, 5)
    with pytest.raises(ValueError, match="n_experts="):
        NoisyTopKRouter(3, 0, 1)
    with pytest.raises(ValueError, match="logits"):
        keep_top_k(torch.randn(4), 1)
    with pytest.raises(ValueError, match="x has shape"):
        NoisyTopKRouter(3, 4, 2)(torch.randn(5, 2))
    with pytest.raises(ValueError, match="x has shape"):
        SparseMoE(3, 2, 4, 4, 2)(torch.randn(5, 2))
    with pytest.raises(ValueError, match="same shape|one shape"):
        load_probability(logits, logits, torch.ones(3, 5), 2)
    with pytest.raises(ValueError, match="k="):
        load_probability(logits, logits, torch.ones(3, 4), 0)
    with pytest.raises(ValueError, match="weight="):
        importance_loss(torch.rand(3, 4), -0.1)
    with pytest.raises(ValueError, match="weight="):
        load_loss(torch.rand(3, 4), float("nan"))
    with pytest.raises(ValueError, match="values"):
        cv(torch.ones(2, 2))
    with pytest.raises(ValueError, match="top_indices"):
        expert_counts(torch.tensor([[0, 4]]), 4)
    with pytest.raises(ValueError, match="hidden="):
        SparseMoE(3, 2, 0, 4, 2)
    with pytest.raises(ValueError, match="moe"):
        flop_matched_dense(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="n_clusters="):
        make_cluster_task(0, 2, 2)


# --- exercises ------------------------------------------------------------------------------------


def _not_implemented(*args):
    raise NotImplementedError


def _q1_dense_softmax(logits, k):
    return torch.softmax(logits, dim=-1)


def _q1_softmax_then_mask(logits, k):
    dense = torch.softmax(logits, dim=-1)
    keep = torch.zeros_like(dense).scatter(-1, logits.topk(k, -1).indices, 1.0)
    return dense * keep


def _q1_bottom_k(logits, k):
    return top_k_gates(-logits, k)


def _q2_sample_variance(gates, w):
    imp = gates.sum(0)
    return w * (imp.std() / imp.mean()) ** 2  # torch's default std is the sample std


def _q2_no_square(gates, w):
    imp = gates.sum(0)
    return w * imp.std(unbiased=False) / imp.mean()


def _q2_wrong_dim(gates, w):
    imp = gates.sum(1)
    return w * (imp.std(unbiased=False) / imp.mean()) ** 2


def _q3_threshold_including_i(clean, noisy, std, k):
    return torch.special.ndtr((clean - noisy.topk(k, -1).values[:, -1:]) / std)


def _q3_noisy_numerator(clean, noisy, std, k):
    return load_probability(noisy, noisy, std, k)


def _q3_sigmoid(clean, noisy, std, k):
    top = noisy.topk(k + 1, dim=-1).values
    threshold = torch.where(noisy >= top[:, k - 1 : k], top[:, k : k + 1], top[:, k - 1 : k])
    return torch.sigmoid((clean - threshold) / std)


EXERCISES = {
    "q1": (ex.q1, [_q1_dense_softmax, _q1_softmax_then_mask, _q1_bottom_k]),
    "q2": (ex.q2, [_q2_sample_variance, _q2_no_square, _q2_wrong_dim]),
    "q3": (ex.q3, [_q3_threshold_including_i, _q3_noisy_numerator, _q3_sigmoid]),
}


@pytest.mark.parametrize("name", EXERCISES)
def test_exercise_accepts_the_reference_and_flags_not_implemented(name):
    exercise, _ = EXERCISES[name]
    assert exercise.run_check(exercise.reference).passed
    result = exercise.run_check(_not_implemented)
    assert not result.passed and result.implemented is False


@pytest.mark.parametrize("name", EXERCISES)
def test_exercise_rejects_plausible_mistakes_with_a_diagnosis(name):
    exercise, wrong_answers = EXERCISES[name]
    for wrong in wrong_answers:
        result = exercise.run_check(wrong)
        assert not result.passed and result.implemented, wrong.__name__
    messages = [exercise.run_check(w).message for w in wrong_answers]
    expected_words = {
        "q1": ["all experts", "sum to less than 1", "smallest"],
        "q2": ["sample variance", "squared", "dim=0"],
        "q3": ["(k+1)-th", "clean logit", "sigmoid"],
    }[name]
    for message, words in zip(messages, expected_words, strict=True):
        assert words in message, message


def test_exercise_hints_exist():
    for exercise, _ in EXERCISES.values():
        assert 2 <= len(exercise.hints) <= 3


# --- notebook 2.1's collapse regime (issue 9 redesign) ---------------------------------------------


def test_cluster_task_with_shared_structure():
    independent = make_cluster_task(8, 6, 3, seed=5)
    shared = make_cluster_task(8, 6, 3, shared=0.3, seed=5)
    variances = []  # still scaled to output variance ~1 (in expectation over the task's seed)
    for seed in range(10):
        task = make_cluster_task(16, 16, 8, shared=0.3, seed=seed)
        variances.append(task.sample(2000, torch.Generator().manual_seed(0))[1].var().item())
    assert 0.8 < sum(variances) / len(variances) < 1.2

    # the maps share a common part: close to their mean, far less so without sharing
    def spread(task):
        maps = task.maps
        return ((maps - maps.mean(0)).norm() / maps.norm()).item()

    assert spread(shared) < 0.45 < 0.8 < spread(independent)
    assert torch.equal(shared.centers, independent.centers)
    none = make_cluster_task(8, 6, 3, shared=None, seed=5)
    assert torch.equal(none.maps, independent.maps)  # the default is unchanged
    with pytest.raises(ValueError, match="shared"):
        make_cluster_task(8, 6, 3, shared=-0.1)


def test_evaluate_in_training_mode_draws_the_gate_noise():
    moe = _trained_looking_moe()
    x = torch.randn(500, moe.d_in, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(500, moe.d_out)
    moe.train()
    _, clean = evaluate(moe, x, y)
    assert moe.training  # evaluate restores the mode
    torch.manual_seed(0)
    _, noisy_a = evaluate(moe, x, y, training_mode=True)
    torch.manual_seed(1)
    _, noisy_b = evaluate(moe, x, y, training_mode=True)
    _, clean_again = evaluate(moe, x, y)
    assert clean.tokens_per_expert == clean_again.tokens_per_expert  # eval mode: deterministic
    assert noisy_a.tokens_per_expert != noisy_b.tokens_per_expert  # training mode: noisy gates
    assert sum(noisy_a.tokens_per_expert) == 500 * moe.k
    with pytest.raises(ValueError, match="training_mode"):
        evaluate(moe, x, y, training_mode=1)


def test_run_fits_gives_the_serial_loop_from_worker_processes():
    """notebook 2.1's runs: each FitJob seeds itself, so workers change nothing but the time."""
    from adaedu.moe.tasks import FitJob, evaluate, fit, run_fits

    task = make_cluster_task(4, 6, 3, seed=0)
    x, y, _ = task.sample(64, torch.Generator().manual_seed(1))
    jobs = [FitJob(5, 8, 4, 2, 0.1, 0.1), FitJob(6, 12)]
    kw = dict(fit_kw=dict(steps=4, batch_size=16, lr=1e-2), train_stat_size=32)
    serial = run_fits(jobs, task, x, y, **kw)
    parallel = run_fits(jobs, task, x, y, workers=2, **kw)
    for a, b in zip(serial, parallel, strict=True):
        assert a.job == b.job and a.mse == b.mse
        pairs = zip(a.model.parameters(), b.model.parameters(), strict=True)
        assert all(torch.equal(p, q) for p, q in pairs)
    moe, dense = serial
    assert moe.stats is not None and moe.train_stats is not None
    assert dense.stats is None and dense.train_stats is None
    # the same as training by hand with the job's seed
    adaedu.seed_everything(5)
    by_hand = SparseMoE(6, 3, 8, 4, 2)
    fit(by_hand, task, steps=4, batch_size=16, lr=1e-2, w_importance=0.1, w_load=0.1, seed=5,
        progress=False)  # fmt: skip
    gen = torch.Generator().manual_seed(10_005)
    xt, yt, _ = task.sample(32, gen)
    evaluate(by_hand, xt, yt, training_mode=True)
    assert evaluate(by_hand, x, y)[0] == moe.mse

"""Tests of adaedu.decoding.cascade and the exercises of notebook 5.3 (FrugalGPT)."""

from __future__ import annotations

import pytest
import torch

from adaedu.decoding import cascade as C
from adaedu.exercises import frugalgpt2023 as ex


def test_route_stops_at_first_passing_stage_and_falls_back_to_last():
    scores = torch.tensor([[0.9, 0.1, 0.2, 0.95], [0.1, 0.8, 0.1, 0.99], [0.0, 0.0, 0.0, 0.0]])
    taus = torch.tensor([0.5, 0.5])
    assert C.route(scores, taus).tolist() == [0, 1, 2, 0]
    with pytest.raises(ValueError, match="thresholds"):
        C.route(scores, torch.tensor([0.5]))


def test_evaluate_cascade_pays_every_visited_model():
    correct = torch.tensor([[True, False, False], [False, True, False], [True, True, True]])
    scores = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.5, 0.5, 0.5]])
    res = C.evaluate_cascade(
        correct, scores, torch.tensor([1.0, 10.0, 100.0]), torch.tensor([0.5, 0.5])
    )
    assert res.stage.tolist() == [0, 1, 2]
    assert res.cost.tolist() == [1.0, 11.0, 111.0]
    assert res.correct.tolist() == [True, True, True]
    assert res.mean_cost == pytest.approx(41.0)


def test_search_pareto_and_cheapest():
    gen = torch.Generator().manual_seed(0)
    correct = torch.rand(3, 50, generator=gen) < torch.tensor([[0.6], [0.8], [0.95]])
    scores = torch.rand(3, 50, generator=gen)
    costs = torch.tensor([1.0, 5.0, 50.0])
    configs = C.search_thresholds(correct, scores, costs, torch.linspace(0, 1, 5))
    assert len(configs) == 3 + 3 * 5 + 25  # singles, pairs, the triple
    single = [c for c in configs if len(c.models) == 1]
    assert [c.mean_cost for c in single] == [1.0, 5.0, 50.0]
    front = C.pareto_front(configs)
    assert all(
        a.mean_cost <= b.mean_cost and a.accuracy < b.accuracy
        for a, b in zip(front, front[1:], strict=False)
    )
    target = max(c.accuracy for c in single)
    chosen = C.cheapest_meeting(configs, target)
    assert chosen.accuracy >= target
    assert all(c.mean_cost >= chosen.mean_cost for c in configs if c.accuracy >= target)
    with pytest.raises(ValueError):
        C.cheapest_meeting(configs, 1.01)


def test_features_scorer_and_splits():
    probs = torch.tensor([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    f = C.answer_features(probs)
    assert f.shape == (2, 6)
    assert f[0, :2].tolist() == pytest.approx([0.7, 0.5])
    assert f[1, 2].item() == pytest.approx(torch.log(torch.tensor(3.0)).item(), abs=1e-5)
    x = torch.randn(400, 3)
    y = x[:, 0] > 0
    scorer = C.fit_scorer(x, y, steps=200)
    assert ((scorer(x) > 0.5) == y).float().mean() > 0.9
    splits = C.load_frugal_splits(0, train_copies=1)
    assert [len(s.y) for s in splits.values()] == [700, 300, 300, 497]
    assert splits["test"].x.shape[1:] == (C.CANVAS, C.CANVAS)


def test_models_increase_in_cost():
    from adaedu.compute import forward_flops

    x = torch.zeros(2, C.CANVAS, C.CANVAS)
    flops = [forward_flops(m, x) for m in C.make_models()]
    assert flops[0] < flops[1] < flops[2]
    assert flops[0] == 2 * C.CANVAS**2 * 10


def test_best_under_budget_is_eq1_argmax():
    configs = [
        C.Config((0,), (), 0.60, 1.0),
        C.Config((1,), (), 0.80, 5.0),
        C.Config((0, 1), (0.5,), 0.80, 3.0),
        C.Config((0, 2), (0.5,), 0.90, 20.0),
        C.Config((2,), (), 0.95, 50.0),
    ]
    assert C.best_under_budget(configs, 10.0) == configs[2]  # ties on accuracy: the cheaper
    assert C.best_under_budget(configs, 20.0) == configs[3]  # the budget itself is allowed
    assert C.best_under_budget(configs, 100.0) == configs[4]
    with pytest.raises(ValueError, match="budget"):
        C.best_under_budget(configs, 0.5)


def test_eval_copies_and_gap_by_base_image():
    splits = C.load_frugal_splits(0, train_copies=1, eval_copies=3)
    assert [len(s.y) for s in splits.values()] == [700, 900, 900, 1491]
    test = splits["test"]
    assert torch.equal(torch.bincount(test.base), torch.full((497,), 3))
    # the copies of one base image are the same digit, shifted: same label, same ink
    first = (test.base == 0).nonzero().flatten()
    assert len(set(test.y[first].tolist())) == 1
    sums = test.x[first].sum((1, 2))
    assert torch.allclose(sums, sums[0].expand(3))
    # a toy run: 2 base images x 2 copies; the cascade is model 0 alone, the best model is 1
    run = C.FrugalRun(
        costs=torch.tensor([1.0, 10.0]),
        correct={"test": torch.tensor([[1, 1, 0, 1], [1, 0, 1, 1]], dtype=torch.bool)},
        scores={"test": torch.zeros(2, 4)},
        configs=[],
        best_model=1,
        chosen=C.Config((0,), (), 0.0, 1.0),
        base={"test": torch.tensor([0, 1, 0, 1])},
    )
    gaps = C.gap_by_base_image(run, run.chosen)
    # base 0: cascade (1 + 0) / 2 - best (1 + 1) / 2 = -0.5; base 1: (1 + 1) / 2 - (0 + 1) / 2
    assert gaps.tolist() == [-0.5, 0.5]


def _wrong_route_last(scores, taus):
    """The last passing stage instead of the first."""
    ok = torch.cat([scores[:-1] > taus[:, None], torch.ones_like(scores[:1], dtype=torch.bool)])
    ok[-1] = ~ok[:-1].any(0)
    return (ok.shape[0] - 1) - ok.flip(0).float().argmax(0)


def test_exercises_accept_reference_and_reject_mistakes():
    assert ex.q1.run_check(C.route).passed
    assert not ex.q1.run_check(lambda s, t: C.route(-s, -t)).passed  # g < tau
    assert not ex.q1.run_check(lambda s, t: (s[:-1] > t[:, None]).float().argmax(0)).passed
    assert not ex.q1.run_check(_wrong_route_last).passed

    assert ex.q2.run_check(ex.query_cost).passed
    assert not ex.q2.run_check(lambda stage, costs: costs[stage]).passed
    assert not ex.q2.run_check(lambda stage, costs: costs.sum().expand(len(stage))).passed

    assert ex.q3.run_check(ex.cheapest_index).passed
    assert not ex.q3.run_check(lambda a, c, t: int(c.argmin())).passed
    assert not ex.q3.run_check(lambda a, c, t: int(a.argmax())).passed

    def todo(*args):
        raise NotImplementedError

    for q in (ex.q1, ex.q2, ex.q3):
        assert q.run_check(todo).implemented is False

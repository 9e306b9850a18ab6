"""Tests of adaedu.halting (parity task, ACT, baselines) and the exercises of notebook 4.1."""

from __future__ import annotations

import math

import pytest
import torch

import adaedu
from adaedu.compute import forward_flops
from adaedu.exercises import graves2016 as ex
from adaedu.halting.act import ACT, act_loss, halting_distribution
from adaedu.halting.baselines import RepeatRNN
from adaedu.halting.experiments import evaluate_parity, fit_parity, spearman
from adaedu.halting.tasks import parity_batch


def test_parity_batch_properties():
    g = torch.Generator().manual_seed(0)
    b = parity_batch(500, 10, 3, 6, generator=g)
    assert set(b.x.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal((b.x != 0).sum(1), b.k)
    assert b.k.min() == 3 and b.k.max() == 6
    assert torch.equal(b.y, ((b.x == 1).sum(1) % 2).float())
    assert 0.3 < b.y.mean() < 0.7  # both classes occur
    again = parity_batch(500, 10, 3, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.x, b.x)
    first = (b.x[:, 0] != 0).float().mean()
    assert 0.2 < first < 0.7  # positions are random, not always the first k entries


@pytest.mark.parametrize(
    "kw", [dict(min_nonzero=0), dict(max_nonzero=11), dict(min_nonzero=5, max_nonzero=4)]
)
def test_parity_batch_rejects_bad_ranges(kw):
    with pytest.raises(ValueError, match="nonzero"):
        parity_batch(4, 10, **kw)


def test_halting_distribution_hand_computed():
    h = torch.tensor([[0.5, 0.3, 0.4, 0.2], [0.995, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]])
    n, r, p = halting_distribution(h, eps=0.01)
    assert n.tolist() == [3.0, 1.0, 4.0]  # cum 0.5, 0.8, 1.2 >= 0.99 at step 3; cap for row 3
    assert torch.allclose(r, torch.tensor([0.2, 1.0, 0.7]))
    expected = torch.tensor([[0.5, 0.3, 0.2, 0.0], [1.0, 0, 0, 0], [0.1, 0.1, 0.1, 0.7]])
    assert torch.allclose(p, expected)
    assert torch.allclose(p.sum(1), torch.ones(3))


def test_eps_matters():
    h = torch.tensor([[0.5, 0.495, 0.3]])
    assert halting_distribution(h, eps=0.01)[0].item() == 2  # 0.995 >= 0.99
    assert halting_distribution(h, eps=0.0)[0].item() == 3


def _act(bias: float, cap: int = 6) -> ACT:
    adaedu.seed_everything(0)
    return ACT(5, 8, 1, cap=cap, halt_bias=bias)


def test_act_forward_matches_halting_distribution_and_weights():
    model = _act(1.0)
    assert model.halt.bias.item() == 1.0
    x = torch.randn(4, 5)
    out = model(x)
    # recompute the halting units step by step, without the early stop
    s, hs = torch.zeros(4, 8), []
    for n in range(model.cap):
        flag = torch.full((4, 1), 1.0 if n == 0 else 0.0)
        s = model.cell(torch.cat([x, flag], 1), s)
        hs.append(torch.sigmoid(model.halt(s)).squeeze(-1))
    n_ref, r_ref, p_ref = halting_distribution(torch.stack(hs, 1), eps=0.01)
    assert torch.equal(out.steps, n_ref)
    assert torch.allclose(out.remainder, r_ref, atol=1e-6)
    assert torch.allclose(out.p, p_ref, atol=1e-6)
    assert torch.allclose(out.p.sum(1), torch.ones(4), atol=1e-6)
    assert torch.allclose(out.ponder, out.steps + out.remainder)


def test_act_extremes_and_cap():
    x = torch.randn(3, 5)
    out = _act(20.0)(x)  # h ~ 1 at once: N = 1, R = 1, rho = 2
    assert out.steps.tolist() == [1.0] * 3
    assert torch.allclose(out.ponder, torch.full((3,), 2.0))
    out = _act(-20.0, cap=6)(x)  # h ~ 0: the cap halts at 6 with R ~ 1
    assert out.steps.tolist() == [6.0] * 3
    assert torch.allclose(out.remainder, torch.ones(3), atol=1e-6)


def test_gradient_flows_through_remainder_not_steps():
    model = _act(1.0)
    out = model(torch.randn(4, 5))
    assert not out.steps.requires_grad
    (g_ponder,) = torch.autograd.grad(out.ponder.sum(), model.halt.bias, retain_graph=True)
    (g_rem,) = torch.autograd.grad(out.remainder.sum(), model.halt.bias)
    assert torch.allclose(g_ponder, g_rem)
    assert g_rem.abs().item() > 0


def test_act_loss_and_flops():
    assert act_loss(torch.tensor(1.0), torch.tensor([2.0, 4.0]), 0.5).item() == 2.5
    with pytest.raises(ValueError, match="tau"):
        act_loss(torch.tensor(1.0), torch.tensor([2.0]), -1.0)
    model = _act(1.0)
    x = torch.randn(1, 5)
    steps = model(x).steps
    assert forward_flops(model, x) == model.flops_per_example(steps).item()
    rnn = RepeatRNN(5, 8, 1, k=3)
    assert forward_flops(rnn, x) == rnn.flops_per_example()


def test_bad_arguments():
    with pytest.raises(ValueError, match="cap"):
        ACT(5, 8, 1, cap=0)
    with pytest.raises(ValueError, match="eps"):
        halting_distribution(torch.rand(2, 3), eps=1.0)
    with pytest.raises(ValueError, match="cell"):
        RepeatRNN(5, 8, 1, cell="lstm")
    with pytest.raises(ValueError, match="k="):
        RepeatRNN(5, 8, 1, k=0)


def test_spearman():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a * 10) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # ties: ranks of [1, 1, 2] are [0.5, 0.5, 2]; of [1, 2, 3]: [0, 1, 2]
    assert spearman(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(
        math.sqrt(3) / 2
    )


def test_fit_and_evaluate_run():
    adaedu.seed_everything(0)
    model = ACT(4, 8, 1, cap=5)
    hist = fit_parity(model, 4, steps=3, batch_size=8, log_every=1, tau=0.01)
    assert hist.step == [1, 2, 3]
    b = parity_batch(16, 4, generator=torch.Generator().manual_seed(0))
    ev = evaluate_parity(model, b.x, b.y, b.k)
    assert ev.correct.shape == (16,) and 0 <= ev.error <= 1
    assert torch.allclose(ev.flops, ev.steps * model.step_flops())


def _wrong_remainder(h, eps=0.01):
    n, r, p = halting_distribution(h, eps)
    mask = torch.arange(h.shape[1]) < n[:, None]
    return n, 1 - (h * mask).sum(1), p


def _no_cap(h, eps=0.01):
    n, r, p = halting_distribution(h, eps)
    n = n.clone()
    n[0] = 0.0
    return n, r, p


@pytest.mark.parametrize(
    "wrong",
    [
        lambda h, eps=0.01: (
            halting_distribution(h, eps)[0] - 1,
            *halting_distribution(h, eps)[1:],
        ),
        _wrong_remainder,
        _no_cap,
        lambda h, eps=0.01: (*halting_distribution(h, eps)[:2], h),
    ],
)
def test_q1_rejects_wrong(wrong):
    assert not ex.q1.run_check(wrong).passed


def test_q1_accepts_reference_and_not_implemented():
    assert ex.q1.run_check(halting_distribution).passed

    def todo(*args):
        raise NotImplementedError

    assert ex.q1.run_check(todo).implemented is False
    assert ex.q2.run_check(todo).implemented is False


@pytest.mark.parametrize(
    "wrong",
    [
        lambda x: ((x != 0).sum(-1) % 2).float(),
        lambda x: ((x == -1).sum(-1) % 2).float(),
        lambda x: 1 - ((x == 1).sum(-1) % 2).float(),
    ],
)
def test_q2(wrong):
    assert ex.q2.run_check(ex.parity_target).passed
    result = ex.q2.run_check(wrong)
    assert not result.passed and "+1" in result.message or "flipped" in result.message


def test_penalty_schedule_warmup_and_ramp():
    from adaedu.halting.experiments import penalty_schedule

    # 100 steps, warm-up 30 %, ramp 30 %: 0 on steps 1-30, rising over 31-60, then 1
    values = [penalty_schedule(s, 100, 0.3, 0.3) for s in range(1, 101)]
    assert values[:30] == [0.0] * 30
    assert values[30] == pytest.approx(0.0) and values[45] == pytest.approx(0.5)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))  # non-decreasing
    assert values[60:] == [1.0] * 40
    assert penalty_schedule(1, 10) == 1.0  # no warm-up: Graves's constant penalty
    assert penalty_schedule(5, 10, 0.5, 0.0) == 0.0 and penalty_schedule(6, 10, 0.5, 0.0) == 1.0
    for bad in [dict(warmup=-0.1), dict(warmup=0.8, ramp=0.3), dict(ramp=1.5)]:
        with pytest.raises(ValueError, match="warmup"):
            penalty_schedule(1, 10, **{"warmup": 0.0, "ramp": 0.0, **bad})
    with pytest.raises(ValueError, match="step"):
        penalty_schedule(11, 10)


def test_fit_parity_warmup_switches_the_penalty_off():
    """With the penalty off for the whole run (warm-up 100 %), a huge tau must leave training
    identical to tau = 0; with the penalty on, it must change it."""

    def train(tau, warmup):
        adaedu.seed_everything(0)
        model = ACT(4, 8, 1, cap=5)
        fit_parity(model, 4, steps=4, batch_size=8, tau=tau, tau_warmup=warmup)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    base = train(0.0, 0.0)
    assert torch.equal(train(10.0, 1.0), base)
    assert not torch.allclose(train(10.0, 0.0), base)


def test_fit_parity_grad_clip():
    def train(clip):
        adaedu.seed_everything(0)
        model = RepeatRNN(4, 8, 1, k=2)
        fit_parity(model, 4, steps=1, batch_size=8, lr=1.0, grad_clip=clip)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert not torch.allclose(train(None), train(1e-6))
    with pytest.raises(ValueError, match="grad_clip"):
        fit_parity(RepeatRNN(4, 8, 1), 4, steps=1, grad_clip=0.0)


def test_error_by_count():
    from adaedu.halting.experiments import ParityEval, error_by_count

    ev = ParityEval(
        correct=torch.tensor([True, False, True, True]),
        steps=torch.ones(4),
        flops=torch.ones(4),
        k=torch.tensor([1, 1, 2, 2]),
    )
    errs = error_by_count(ev, [1, 2, 3])
    assert errs[:2] == [0.5, 0.0] and math.isnan(errs[2])

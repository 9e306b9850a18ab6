"""Tests of adaedu.halting.ponder (PonderNet), adaedu.halting.skipnet and notebook 4.4's exercises."""

from __future__ import annotations

import math

import pytest
import torch

import adaedu
from adaedu.compute import forward_flops
from adaedu.exercises import banino2021 as ex
from adaedu.halting.experiments import evaluate_parity, fit_parity, parity_loss
from adaedu.halting.ponder import (
    PonderNet,
    halting_probabilities,
    kl_divergence,
    ponder_loss,
    truncated_geometric,
)
from adaedu.halting.skipnet import GatedResMLP, evaluate_skipnet, fit_skipnet
from adaedu.halting.tasks import parity_batch


def test_halting_probabilities_hand_computed():
    p = halting_probabilities(torch.tensor([[0.5, 0.5, 0.3], [0.2, 0.0, 0.9]]))
    # row 1: 0.5, 0.5 * 0.5, and the last lambda forced to 1: 0.5 * 0.5 * 1
    assert torch.allclose(p[0], torch.tensor([0.5, 0.25, 0.25]))
    assert torch.allclose(p[1], torch.tensor([0.2, 0.0, 0.8]))
    assert torch.allclose(p.sum(1), torch.ones(2))


def test_p_sums_to_one_randomly():
    lam = torch.rand(50, 9, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(halting_probabilities(lam).sum(1), torch.ones(50), atol=1e-6)


def test_truncated_geometric_is_normalised():
    prior = truncated_geometric(0.5, 3)  # 0.5, 0.25, 0.125 -> divided by 0.875
    assert torch.allclose(prior, torch.tensor([4 / 7, 2 / 7, 1 / 7]))
    assert truncated_geometric(0.1, 20).sum().item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="lambda_p"):
        truncated_geometric(0.0, 3)
    with pytest.raises(ValueError, match="n_max"):
        truncated_geometric(0.5, 0)


def test_kl_direction_hand_computed():
    p = torch.tensor([[0.9, 0.05, 0.05]])
    prior = truncated_geometric(0.5, 3)  # 4/7, 2/7, 1/7
    forward = (
        0.9 * math.log(0.9 / (4 / 7))
        + 0.05 * math.log(0.05 / (2 / 7))
        + 0.05 * math.log(0.05 / (1 / 7))
    )  # KL(p || prior) = 0.2692
    reverse = (
        4 / 7 * math.log((4 / 7) / 0.9)
        + 2 / 7 * math.log((2 / 7) / 0.05)
        + 1 / 7 * math.log((1 / 7) / 0.05)
    )  # KL(prior || p) = 0.3884
    assert abs(forward - reverse) > 0.1  # the test can tell the two directions apart
    assert kl_divergence(p, prior).item() == pytest.approx(forward, abs=1e-6)


def test_kl_guards_log_zero():
    p = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    kl = kl_divergence(p, truncated_geometric(0.5, 3))
    assert kl.item() == pytest.approx(math.log(7 / 4), abs=1e-6)
    kl.sum().backward()
    assert torch.isfinite(p.grad).all()
    with pytest.raises(ValueError, match="prior"):
        kl_divergence(p, torch.tensor([1.0, 0.0, 0.0]))


def test_ponder_loss():
    p = torch.tensor([[0.5, 0.25, 0.25]])
    losses = torch.tensor([[1.0, 2.0, 4.0]])
    rec, reg = ponder_loss(losses, p, lambda_p=0.5, beta=0.01)
    assert rec.item() == pytest.approx(0.5 + 0.5 + 1.0)
    assert reg.item() == pytest.approx(0.01 * kl_divergence(p, truncated_geometric(0.5, 3)).item())
    with pytest.raises(ValueError, match="beta"):
        ponder_loss(losses, p, 0.5, -1.0)


def test_pondernet_forward_and_sampling():
    adaedu.seed_everything(0)
    model = PonderNet(5, 8, 1, n_max=6)
    x = torch.randn(4, 5)
    out = model(x)
    assert out.y.shape == (4, 6, 1) and out.p.shape == (4, 6)
    assert torch.allclose(out.p.sum(1), torch.ones(4), atol=1e-6)
    assert torch.allclose(out.p, halting_probabilities(out.lambdas))
    with torch.no_grad():  # lambda ~ 1: always halt at step 1; lambda ~ 0: the last step
        model.halt.bias.fill_(30.0)
    assert model.sample(x).steps.tolist() == [1.0] * 4
    with torch.no_grad():
        model.halt.bias.fill_(-30.0)
    sampled = model.sample(x)
    assert sampled.steps.tolist() == [6.0] * 4
    assert torch.allclose(sampled.y, model(x).y[:, -1])
    one = torch.randn(1, 5)
    assert forward_flops(model, one) == 6 * model.step_flops()


def test_sampling_matches_p():
    adaedu.seed_everything(1)
    model = PonderNet(3, 4, 1, n_max=4)
    x = torch.randn(1, 3).expand(4000, 3)
    steps = model.sample(x, generator=torch.Generator().manual_seed(0)).steps
    freq = torch.stack([(steps == n).float().mean() for n in range(1, 5)])
    assert torch.allclose(freq, model(x[:1]).p[0].detach(), atol=0.03)


def test_fit_and_evaluate_pondernet():
    adaedu.seed_everything(0)
    model = PonderNet(4, 8, 1, n_max=5)
    b = parity_batch(16, 4, generator=torch.Generator().manual_seed(0))
    loss, steps = parity_loss(model, b.x, b.y, beta=0.01, lambda_p=0.2)
    assert loss.item() > 0 and 1 <= steps.item() <= 5
    fit_parity(model, 4, steps=2, batch_size=8, beta=0.01, lambda_p=0.2)
    ev = evaluate_parity(model, b.x, b.y, b.k)
    assert torch.allclose(ev.flops, ev.steps * model.step_flops())


def test_skipnet_gates_and_static():
    adaedu.seed_everything(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    static = GatedResMLP(6, 8, 3, n_blocks=4, static=2)
    acc, blocks, flops = evaluate_skipnet(static, x, y)
    assert blocks == 2.0
    assert flops == 2 * 6 * 8 + 2 * 8 * 3 + 2 * 4 * 8 * 8
    gated = GatedResMLP(6, 8, 3, n_blocks=4)
    fit_skipnet(gated, x, y, steps=3, alpha=0.1)
    out = gated(x)
    assert set(out.gates.unique().tolist()) <= {0.0, 1.0}
    with torch.no_grad():
        for g in gated.gates:
            g.weight.zero_()
            g.bias.fill_(-5.0)
    assert evaluate_skipnet(gated, x, y)[1] == 0.0  # all gates closed: no block runs
    with pytest.raises(ValueError, match="static"):
        GatedResMLP(6, 8, 3, n_blocks=4, static=5)


def _todo(*args):
    raise NotImplementedError


def test_q1():
    assert ex.q1.run_check(halting_probabilities).passed
    assert ex.q1.run_check(_todo).implemented is False

    def no_last(lam):
        s = torch.cumprod(1 - lam, 1)
        return lam * torch.cat([torch.ones_like(s[:, :1]), s[:, :-1]], 1)

    def inclusive(lam):
        lam = torch.cat([lam[:, :-1], torch.ones_like(lam[:, -1:])], 1)
        return lam * torch.cumprod(1 - lam, 1)

    for wrong in (no_last, inclusive, lambda lam: lam):
        result = ex.q1.run_check(wrong)
        assert not result.passed and result.implemented


def test_q2():
    assert ex.q2.run_check(ex.regulariser).passed
    assert ex.q2.run_check(_todo).implemented is False

    def reverse(p, lambda_p):
        prior = truncated_geometric(lambda_p, p.shape[1])
        return (prior * (prior.log() - p.log())).sum(-1)

    def unnormalised(p, lambda_p):
        raw = lambda_p * (1 - lambda_p) ** torch.arange(p.shape[1], dtype=torch.float32)
        return (p * (p.log() - raw.log())).sum(-1)

    r = ex.q2.run_check(reverse)
    assert not r.passed and "KL(prior || p)" in r.message
    r = ex.q2.run_check(unnormalised)
    assert not r.passed and "normalised" in r.message


def test_halt_at_threshold_stops_at_the_first_step_reaching_it():
    from adaedu.halting.ponder import PonderOutput, halt_at_threshold

    lambdas = torch.tensor([[0.5, 0.5, 1.0], [0.1, 0.9, 1.0]])
    p = halting_probabilities(lambdas)  # rows: [0.5, 0.25, 0.25], [0.1, 0.81, 0.09]
    y = torch.arange(6, dtype=torch.float32).view(2, 3, 1)
    out = PonderOutput(y, lambdas, p)
    low = halt_at_threshold(out, 0.5)
    assert low.steps.tolist() == [1, 2] and low.y.squeeze(-1).tolist() == [0.0, 4.0]
    high = halt_at_threshold(out, 0.95)
    assert high.steps.tolist() == [3, 3] and high.y.squeeze(-1).tolist() == [2.0, 5.0]
    assert halt_at_threshold(out, 1.0).steps.tolist() == [3, 3]
    with pytest.raises(ValueError, match="threshold=0"):
        halt_at_threshold(out, 0.0)


def test_skipnet_real_skipping_equals_dense_masked_run():
    from adaedu.halting.skipnet import masked_reference_logits

    adaedu.seed_everything(0)
    x = torch.randn(64, 6)
    net = GatedResMLP(6, 8, 3, n_blocks=4).eval()
    with torch.no_grad():  # open about half the gates, input-dependently
        for g in net.gates:
            g.bias.zero_()
    gates = net(x).gates
    assert 0 < gates.mean() < 1
    assert torch.allclose(net(x).logits, masked_reference_logits(net, x), atol=1e-6)
    with torch.no_grad():  # a reference that ignored the gates would differ
        all_on = net.head(_dense_all_blocks(net, x))
    assert not torch.allclose(all_on, net(x).logits)
    static = GatedResMLP(6, 8, 3, n_blocks=4, static=1).eval()
    assert torch.allclose(static(x).logits, masked_reference_logits(static, x), atol=1e-6)


def _dense_all_blocks(net, x):
    h = torch.relu(net.inp(x))
    for block in net.blocks:
        h = h + block(h)
    return h


def test_pondernet_gru_cell_trains_with_clipping():
    adaedu.seed_everything(0)
    model = PonderNet(4, 8, 1, n_max=5, cell="gru")
    assert isinstance(model.cell, torch.nn.GRUCell)
    fit_parity(model, 4, steps=2, batch_size=8, beta=0.01, lambda_p=0.2, grad_clip=1.0)
    b = parity_batch(16, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model(b.x).p.sum(1), torch.ones(16), atol=1e-6)

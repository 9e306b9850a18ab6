"""Tests of notebook 2.2's helpers (adaedu.moe.switch_lm) and exercises (Switch Transformers)."""

import pytest
import torch

from adaedu.compute import count_parameters
from adaedu.data import char_tokenizer, text_corpus
from adaedu.exercises import fedus2021 as ex
from adaedu.lm import TinyLMConfig
from adaedu.lm.training import evaluate_lm, lm_objective, train_lm, validation_batches
from adaedu.moe.layer import MoEFeedForward
from adaedu.moe.routers import SwitchRouter
from adaedu.moe.switch_lm import (
    capacity_factor,
    dense_lm,
    experts_alive,
    moe_layers,
    switch_lm,
)

CFG = TinyLMConfig(vocab_size=20, d_model=16, n_layers=2, n_heads=2, block_size=16)


def test_experts_alive_counts_fair_shares():
    assert experts_alive([4, 1, 1], threshold=0.5) == 3  # mean 2: each >= 1
    assert experts_alive([3, 1, 0, 0], threshold=0.1) == 2
    with pytest.raises(ValueError, match="threshold"):
        experts_alive([1, 1], threshold=2)
    with pytest.raises(ValueError, match="counts"):
        experts_alive([0, 0])


def test_switch_lm_places_moe_layers_and_dense_matches_active_compute():
    m = switch_lm(CFG, 4, 8, layers=[1], capacity_factor=None, balance_weight=0.0)
    assert [isinstance(b.ffn, MoEFeedForward) for b in m.blocks] == [False, True]
    full = switch_lm(CFG, n_experts=4, d_expert=8, balance_weight=0.01)
    assert all(layer.loss_weights["balance"] == 0.01 for layer in moe_layers(full))
    d = dense_lm(CFG, n_experts=4, d_expert=8)
    hidden = d.blocks[0].ffn[0].out_features
    assert hidden == 8 + 4 // 2  # one expert + the router's multiply-adds (E / 2 for an MLP)
    assert count_parameters(full) > count_parameters(d)
    assert dense_lm(CFG, 4, 8, scale=2.0).blocks[0].ffn[0].out_features == 20
    with pytest.raises(ValueError, match="layers"):
        switch_lm(CFG, layers=[2], balance_weight=0.0)
    with pytest.raises(TypeError, match="balance_weight"):  # no silent default
        switch_lm(CFG)
    with pytest.raises(ValueError, match="scale"):
        dense_lm(CFG, scale=0)


def test_objective_adds_every_layers_aux_loss():
    torch.manual_seed(0)
    m = switch_lm(CFG, n_experts=4, d_expert=8, balance_weight=0.5, z_weight=0.1)
    x = torch.randint(0, 20, (2, 8))
    loss, logs = lm_objective(m, (x, x))
    out = m(x, targets=x)
    aux = [a for a in out.aux if a is not None]
    assert len(aux) == 2
    expected = out.loss + sum(0.5 * a.losses["balance"] + 0.1 * a.losses["z"] for a in aux)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert {"ce", "balance", "z", "dropped", "max_mean_load"} <= set(logs)


def test_capacity_factor_context_sets_and_restores():
    m = switch_lm(CFG, n_experts=4, d_expert=8, capacity_factor=1.25, balance_weight=0.0)
    routers = [r for r in m.modules() if isinstance(r, SwitchRouter)]
    with capacity_factor(m, None):
        assert all(r.capacity_factor is None for r in routers)
    assert all(r.capacity_factor == 1.25 for r in routers)
    with pytest.raises(ValueError, match="capacity_factor"):
        with capacity_factor(m, -1.0):
            pass


def test_train_and_evaluate_on_text_at_two_capacity_factors():
    tok = char_tokenizer()
    cfg = TinyLMConfig(vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, block_size=16)
    train, val = text_corpus(split="train"), text_corpus(split="validation")
    torch.manual_seed(0)
    m = switch_lm(cfg, n_experts=4, d_expert=8, capacity_factor=0.5, balance_weight=0.01)
    run = train_lm(m, train, steps=3, batch_size=4, block_size=16, log_every=1)
    assert len(run.history.steps) == 3 and "dropped" in run.history.metrics
    batches = validation_batches(val, 2, 4, 16)
    low = evaluate_lm(m, batches)  # at the training factor 0.5: must drop
    with capacity_factor(m, None):
        high = evaluate_lm(m, batches)
    assert high.stats[0].dropped_fraction == 0.0 and low.stats[0].dropped_fraction > 0
    assert len(moe_layers(m)) == 1 and sum(high.choice_counts[0]) == 2 * 4 * 16
    assert high.choice_load[0] >= 1.0 and high.z[0] > 0
    assert low.choice_counts == high.choice_counts  # capacity drops tokens, not choices
    assert m.training  # evaluate_lm restores the mode


# --- exercises -------------------------------------------------------------------------------------


def test_q1_balance_loss():
    assert ex.q1.run_check(ex.balance_loss).passed
    u = torch.full((8, 4), 0.25)
    assert ex.balance_loss(u, torch.arange(8) % 4).item() == pytest.approx(1.0)

    def no_n(p, c):
        return ex.balance_loss(p, c) / p.shape[1]

    def p_twice(p, c):
        return p.shape[1] * (p.mean(0) ** 2).sum()

    def f_twice(p, c):
        f = torch.bincount(c, minlength=p.shape[1]).float() / len(c)
        return p.shape[1] * (f * f).sum()

    for wrong in (no_n, p_twice, f_twice):
        result = ex.q1.run_check(wrong)
        assert not result.passed and result.implemented
    assert "factor N" in ex.q1.run_check(no_n).message

    def todo(p, c):
        raise NotImplementedError

    assert ex.q1.run_check(todo).implemented is False


def test_q2_kept_tokens():
    assert ex.q2.run_check(ex.kept_tokens).passed
    kept = ex.kept_tokens(torch.tensor([0, 0, 1, 0, 1, 1]), 2, 2)
    assert kept.tolist() == [True, True, True, False, True, False]

    def off_by_one(c, e, cap):
        return ex.kept_tokens(c, e, cap + 1)

    def backwards(c, e, cap):
        return ex.kept_tokens(c.flip(0), e, cap).flip(0)

    def global_cap(c, e, cap):
        return torch.arange(len(c)) < cap * e

    for wrong in (off_by_one, backwards, global_cap):
        result = ex.q2.run_check(wrong)
        assert not result.passed and result.implemented
    assert "off by one" in ex.q2.run_check(off_by_one).message

    def todo(c, e, cap):
        raise NotImplementedError

    assert ex.q2.run_check(todo).implemented is False


def test_q3_z_loss():
    def mine(logits):
        return torch.logsumexp(logits, dim=-1).pow(2).mean()

    assert ex.q3.run_check(mine).passed

    def no_square(logits):
        return torch.logsumexp(logits, dim=-1).mean()

    def square_of_mean(logits):
        return torch.logsumexp(logits, dim=-1).mean() ** 2

    def logits_squared(logits):
        return logits.pow(2).sum(-1).mean()

    for wrong in (no_square, square_of_mean, logits_squared):
        result = ex.q3.run_check(wrong)
        assert not result.passed and result.implemented
    assert "square" in ex.q3.run_check(no_square).message

    def todo(logits):
        raise NotImplementedError

    assert ex.q3.run_check(todo).implemented is False

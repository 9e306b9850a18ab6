"""Tests of adaedu.halting.multi_exit and the exercises of notebook 4.3 (PaBEE)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adaedu.exercises import zhou2020 as ex
from adaedu.halting import multi_exit as me


def _logits_from(predictions: list[list[int]], n_classes: int = 3) -> torch.Tensor:
    """Logits (n_layers, batch, n_classes) whose argmax per layer is ``predictions``."""
    return F.one_hot(torch.tensor(predictions), n_classes).float()


def test_patience_counts_consecutive_agreements():
    # columns are examples; rows are layers 1..5
    preds = [[0, 0, 1, 2], [0, 1, 1, 2], [0, 0, 2, 1], [1, 0, 2, 1], [1, 0, 2, 0]]
    logits = _logits_from(preds)
    r1 = me.simulate_exits(logits, me.Patience(1))
    assert r1.exit_layer.tolist() == [2, 4, 2, 2]
    r2 = me.simulate_exits(logits, me.Patience(2))
    # example 0: 0,0,0 -> agrees at layers 2 and 3 -> exits at 3
    # example 1: 0,1,0,0,0 -> counter 0,0,0,1,2 -> exits at 5
    # example 2: 1,1,2,2,2 -> counter 0,1,0,1,2 -> exits at 5; example 3 never -> last layer
    assert r2.exit_layer.tolist() == [3, 5, 5, 5]
    assert r2.prediction.tolist() == [0, 0, 2, 0]


def test_policies_agree_with_real_early_exit_and_skip_layers():
    torch.manual_seed(0)
    model = me.MultiExitMLP(d=16, n_layers=6)
    x = 3 * torch.randn(150, 64)
    y = torch.randint(0, 10, (150,))
    logits = me.all_head_logits(model, x)
    policies = [
        me.Patience(1),
        me.Patience(3),
        me.EntropyThreshold(2.25),
        me.Similarity(0.002, t=1, kind="js"),
        me.Similarity(0.01, t=2, kind="kl"),
        me.FixedDepth(4),
    ]
    for policy in policies:
        sim = me.simulate_exits(logits, policy, y)
        real = me.early_exit_inference(model, x, policy, y)
        assert torch.equal(sim.exit_layer, real.exit_layer), policy
        assert torch.equal(sim.prediction, real.prediction), policy
        assert sim.accuracy == real.accuracy
    assert me.simulate_exits(logits, me.FixedDepth(4)).mean_layers == 4.0
    # a huge entropy threshold exits everything at layer 1, a zero one never exits early
    assert me.simulate_exits(logits, me.EntropyThreshold(10.0)).mean_layers == 1.0
    assert me.simulate_exits(logits, me.EntropyThreshold(0.0)).mean_layers == 6.0


def test_similarity_threshold_limits():
    torch.manual_seed(1)
    logits = torch.randn(5, 40, 4)
    loose = me.simulate_exits(logits, me.Similarity(10.0, t=2))
    assert (loose.exit_layer == 3).all()  # every pair is "similar": exit at layer t + 1
    strict = me.simulate_exits(logits, me.Similarity(0.0, t=1))
    assert (strict.exit_layer == 5).all()


def test_divergences():
    p = torch.tensor([[2.0, 0.0, -1.0]])
    q = torch.tensor([[0.0, 1.0, 0.5]])
    kl = me.divergence(p, q, "kl")
    pp, pq = p.softmax(-1), q.softmax(-1)
    assert torch.allclose(kl, (pp * (pp / pq).log()).sum(-1))
    js = me.divergence(p, q, "js")
    assert torch.allclose(js, me.divergence(q, p, "js"))
    assert 0 < js.item() <= math.log(2)
    assert me.divergence(p, p, "js").abs().item() < 1e-6
    with pytest.raises(ValueError, match="kind"):
        me.divergence(p, q, "cos")


def test_pabee_loss_weights_deeper_heads_more():
    logits = torch.zeros(3, 2, 4)
    labels = torch.tensor([0, 1])
    logits[2, :, :] = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0]])  # only head 3 is good
    ce = torch.stack([F.cross_entropy(logits[j], labels) for j in range(3)])
    expected = (1 * ce[0] + 2 * ce[1] + 3 * ce[2]) / 6
    assert torch.allclose(me.pabee_loss(logits, labels), expected)
    with pytest.raises(ValueError, match="logits"):
        me.pabee_loss(torch.zeros(2, 4), labels)


def test_overthinking_and_head_accuracy():
    labels = torch.tensor([0, 1, 2, 0])
    preds = [[0, 1, 0, 1], [1, 1, 2, 1], [1, 1, 1, 1]]  # layer 3 is the last
    logits = _logits_from(preds)
    mask = me.overthinking_mask(logits, labels)
    assert mask.tolist() == [True, False, True, False]
    assert me.overthinking_rate(logits, labels) == 0.5
    assert me.head_accuracies(logits, labels).tolist() == [0.5, 0.5, 0.25]


def test_flops_accounting_matches_hand_count():
    model = me.MultiExitMLP(in_features=64, d=16, n_layers=3, n_classes=10, expansion=2)
    embed, per_layer = me.layer_flops(model)
    assert embed == 2 * 64 * 16
    assert per_layer.tolist() == [2 * (16 * 32 + 32 * 16) + 2 * 16 * 10] * 3
    flops = me.exit_flops(model, torch.tensor([1, 3]))
    assert flops.tolist() == [embed + per_layer[0].item(), embed + 3 * per_layer[0].item()]
    with pytest.raises(ValueError, match="exit_layer"):
        me.exit_flops(model, torch.tensor([4]))


def test_training_lowers_loss_and_data_split():
    data = me.load_noisy_digits(noise=0.5)
    assert len(data.y_test) == 540 and len(data.y_train) == 1257
    assert abs(data.x_train.mean().item()) < 1e-4  # training images clean and standardised
    torch.manual_seed(0)
    model = me.MultiExitMLP(d=16, n_layers=3)
    history = me.train_multi_exit(model, data, steps=60, lr=5e-3, noise=0.5)
    assert history["loss"][-1] < 0.6 * history["loss"][0]
    acc = me.head_accuracies(me.all_head_logits(model, data.x_test), data.y_test)
    assert acc[-1] > 0.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="t="):
        me.Patience(0)
    with pytest.raises(ValueError, match="threshold"):
        me.EntropyThreshold(-1.0)
    with pytest.raises(ValueError, match="kind"):
        me.Similarity(0.1, kind="cos")
    with pytest.raises(ValueError, match="n_layers"):
        me.MultiExitMLP(n_layers=0)
    with pytest.raises(ValueError, match="noise"):
        me.load_noisy_digits(noise=-1.0)


# ----------------------------------------------------------------------------------------------
# Exercises


def _not_implemented(*args):
    raise NotImplementedError


def test_q1_patience_checker():
    assert ex.q1.run_check(ex.patience_exit_layer).passed

    def zero_based(p, t):
        return ex.patience_exit_layer(p, t) - 1

    def late(p, t):
        return ex.patience_exit_layer(p, t + 1)

    def no_reset(p, t):  # counts agreements in total, not in a row
        same = torch.cat([torch.zeros_like(p[:1], dtype=torch.bool), p[1:] == p[:-1]])
        reached = same.long().cumsum(0) >= t
        first = torch.where(reached.any(0), reached.float().argmax(0) + 1, p.shape[0])
        return first

    for wrong in (zero_based, late, no_reset):
        assert not ex.q1.run_check(wrong).passed, wrong.__name__
    assert "one lower" in ex.q1.run_check(zero_based).message
    assert ex.q1.run_check(_not_implemented).implemented is False


def test_q2_loss_checker():
    assert ex.q2.run_check(ex.weighted_exit_loss).passed

    def uniform(logits, labels):
        return torch.stack([F.cross_entropy(lg, labels) for lg in logits]).mean()

    def reversed_weights(logits, labels):
        n = logits.shape[0]
        ce = torch.stack([F.cross_entropy(lg, labels) for lg in logits])
        w = torch.arange(n, 0, -1, dtype=ce.dtype)
        return (w * ce).sum() / w.sum()

    def unnormalised(logits, labels):
        ce = torch.stack([F.cross_entropy(lg, labels) for lg in logits])
        return (torch.arange(1, len(ce) + 1) * ce).sum()

    for wrong in (uniform, reversed_weights, unnormalised):
        result = ex.q2.run_check(wrong)
        assert not result.passed, wrong.__name__
    assert "equal weights" in ex.q2.run_check(uniform).message
    assert ex.q2.run_check(_not_implemented).implemented is False


def test_q3_overthinking_checker():
    assert ex.q3.run_check(ex.overthinking).passed

    def error_rate(logits, labels):
        return float((logits[-1].argmax(-1) != labels).float().mean())

    def all_earlier(logits, labels):
        c = logits.argmax(-1) == labels
        return float((~c[-1] & c[:-1].all(0)).float().mean())

    def second_to_last_only(logits, labels):
        c = logits.argmax(-1) == labels
        return float((~c[-1] & c[-2]).float().mean())

    for wrong in (error_rate, all_earlier, second_to_last_only):
        assert not ex.q3.run_check(wrong).passed, wrong.__name__
    assert "error rate" in ex.q3.run_check(error_rate).message
    assert ex.q3.run_check(_not_implemented).implemented is False


def test_validation_split_is_carved_from_training_and_leaves_test_unchanged():
    plain = me.load_noisy_digits(test_fraction=0.3, noise=1.0, seed=0)
    split = me.load_noisy_digits(test_fraction=0.3, noise=1.0, seed=0, val_fraction=0.3)
    assert plain.x_val is None and plain.y_val is None
    assert len(split.y_train) + len(split.y_val) == len(plain.y_train)
    assert abs(len(split.y_val) - 0.3 * len(plain.y_train)) <= 1
    assert torch.equal(split.x_test, plain.x_test) and torch.equal(split.y_test, plain.y_test)
    # stratified: every class in both parts, in about the same proportion
    frac = torch.bincount(split.y_val, minlength=10) / torch.bincount(plain.y_train, minlength=10)
    assert frac.min() > 0.2 and frac.max() < 0.4
    # the clean training rows of the split are rows of the unsplit training set
    rows = {tuple(r.tolist()) for r in plain.x_train}
    assert all(tuple(r.tolist()) in rows for r in split.x_train[:50])
    # the validation images are noisy (not equal to any clean training row)
    assert not any(tuple(r.tolist()) in rows for r in split.x_val[:50])
    with pytest.raises(ValueError, match="val_fraction"):
        me.load_noisy_digits(val_fraction=1.0)


def test_select_on_validation_takes_the_cheapest_setting_within_tolerance():
    # 4 layers, 10 examples, label 0. Head 1 right on 7, heads 2-4 right on all 10.
    labels = torch.zeros(10, dtype=torch.long)
    preds = torch.zeros(4, 10, dtype=torch.long)
    preds[0, 7:] = 1
    logits = _logits_from(preds.tolist(), n_classes=2)
    policies = [me.FixedDepth(1), me.FixedDepth(3), me.FixedDepth(2), me.FixedDepth(4)]
    # depth 1 (0.7) is more than 0.003 below the last head (1.0); depths 2-4 qualify: 2 is cheapest
    assert me.select_on_validation(logits, labels, policies) == 2
    # a tolerance of 0.3 admits depth 1
    assert me.select_on_validation(logits, labels, policies, tolerance=0.3) == 0
    # none qualifies -> the most accurate one
    assert me.select_on_validation(logits, labels, [me.FixedDepth(1)]) == 0
    worse_last = logits.clone()
    worse_last[-1] = _logits_from([[1] * 10], 2)[0]  # the last head is always wrong
    assert me.select_on_validation(worse_last, labels, [me.FixedDepth(1)], tolerance=0.0) == 0
    with pytest.raises(ValueError, match="policies"):
        me.select_on_validation(logits, labels, [])
    with pytest.raises(ValueError, match="tolerance"):
        me.select_on_validation(logits, labels, policies, tolerance=-0.1)


def test_static_exit_accuracy_interpolates_between_heads():
    acc = torch.tensor([0.5, 0.7, 0.8, 0.9])
    assert me.static_exit_accuracy(acc, 1.0) == pytest.approx(0.5)
    assert me.static_exit_accuracy(acc, 4.0) == pytest.approx(0.9)
    assert me.static_exit_accuracy(acc, 2.0) == pytest.approx(0.7)
    assert me.static_exit_accuracy(acc, 2.25) == pytest.approx(0.75 * 0.7 + 0.25 * 0.8)
    # the expected accuracy of sending half the examples to head 1 and half to head 2
    labels = torch.zeros(8, dtype=torch.long)
    preds = torch.tensor([[0] * 4 + [1] * 4, [0] * 6 + [1] * 2])  # heads: 0.5, 0.75
    head = me.head_accuracies(_logits_from(preds.tolist(), 2), labels)
    assert me.static_exit_accuracy(head, 1.5) == pytest.approx(0.625)
    for bad in (0.5, 4.5):
        with pytest.raises(ValueError, match="mean_layers"):
            me.static_exit_accuracy(acc, bad)

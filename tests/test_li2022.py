"""The checkers of notebook 5.1's exercises accept the reference and reject plausible mistakes."""

import math

import torch
import torch.nn.functional as F

from adaedu.exercises import li2022 as ex


def test_q1_accepts_reference_and_rejects_mistakes():
    assert ex.q1.run_check(ex.cd_choice).passed

    def no_mask(e, a, alpha):
        return (F.log_softmax(e, -1) - F.log_softmax(a, -1)).argmax(-1)

    def greedy(e, a, alpha):
        return e.argmax(-1)

    def amateur_mask(e, a, alpha):
        la = F.log_softmax(a, -1)
        keep = la >= math.log(alpha) + la.max(-1, keepdim=True).values
        return (F.log_softmax(e, -1) - la).masked_fill(~keep, -math.inf).argmax(-1)

    for wrong in (no_mask, greedy, amateur_mask):
        result = ex.q1.run_check(wrong)
        assert not result.passed
    assert "plausible" in ex.q1.run_check(no_mask).message

    def todo(e, a, alpha):
        raise NotImplementedError

    assert ex.q1.run_check(todo).implemented is False


def test_q2_accepts_reference_and_rejects_mistakes():
    assert ex.q2.run_check(ex.obrien_scores).passed

    def absolute_mask(e, a, alpha, beta):
        return ((1 + beta) * e - beta * a).masked_fill(e.softmax(-1) < alpha, -math.inf)

    def no_weight(e, a, alpha, beta):
        cutoff = math.log(alpha) + e.max(-1, keepdim=True).values
        return (e - beta * a).masked_fill(e < cutoff, -math.inf)

    def log_probs(e, a, alpha, beta):
        cutoff = math.log(alpha) + e.max(-1, keepdim=True).values
        s = (1 + beta) * e.log_softmax(-1) - beta * a.log_softmax(-1)
        return s.masked_fill(e < cutoff, -math.inf)

    for wrong in (absolute_mask, no_weight, log_probs):
        assert not ex.q2.run_check(wrong).passed
    assert "(1 + beta)" in ex.q2.run_check(no_weight).message

    def todo(*args):
        raise NotImplementedError

    assert ex.q2.run_check(todo).implemented is False
    assert torch.isinf(
        ex.obrien_scores(torch.tensor([[5.0, 0.0]]), torch.zeros(1, 2), 0.1, 0.5)
    ).any()

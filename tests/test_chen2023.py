"""The exercises of notebook 5.2 accept the reference and reject plausible mistakes."""

from __future__ import annotations

import torch

from adaedu.exercises import chen2023 as ex


def test_q1_acceptance_rate():
    assert ex.q1.run_check(lambda p, q: torch.minimum(p, q).sum(-1)).passed
    assert ex.q1.run_check(lambda p, q: 1 - 0.5 * (p - q).abs().sum(-1)).passed
    wrong = {
        "max": lambda p, q: torch.maximum(p, q).sum(-1),
        "no half": lambda p, q: 1 - (p - q).abs().sum(-1),
        "mean": lambda p, q: torch.minimum(p, q).mean(-1),
    }
    for name, fn in wrong.items():
        result = ex.q1.run_check(fn)
        assert not result.passed, name
    assert "1/2" in ex.q1.run_check(wrong["no half"]).message


def test_q2_residual():
    def ref(p, q):
        d = (p - q).clamp(min=0)
        return d / d.sum(-1, keepdim=True)

    assert ex.q2.run_check(ref).passed
    swapped = ex.q2.run_check(lambda p, q: ref(q, p))
    assert not swapped.passed and "(q - p)_+" in swapped.message
    unnormalised = ex.q2.run_check(lambda p, q: (p - q).clamp(min=0))
    assert not unnormalised.passed and "divide" in unnormalised.message
    assert not ex.q2.run_check(lambda p, q: p).passed


def test_q3_walltime_factor():
    def ref(alpha, gamma, c):
        return (1 - alpha ** (gamma + 1)) / ((1 - alpha) * (gamma * c + 1))

    assert ex.q3.run_check(ref).passed
    no_bonus = ex.q3.run_check(lambda a, g, c: (1 - a**g) / ((1 - a) * (g * c + 1)))
    assert not no_bonus.passed and "bonus" in no_bonus.message
    no_cost = ex.q3.run_check(lambda a, g, c: (1 - a ** (g + 1)) / (1 - a))
    assert not no_cost.passed and "gamma c + 1" in no_cost.message
    assert not ex.q3.run_check(lambda a, g, c: (1 - a ** (g + 1)) / ((1 - a) * g * c)).passed


def test_not_implemented():
    def todo(*args):
        raise NotImplementedError

    for q in (ex.q1, ex.q2, ex.q3):
        assert q.run_check(todo).implemented is False

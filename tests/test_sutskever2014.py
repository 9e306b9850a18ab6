"""The checkers of notebook 5.4's exercises accept the reference and reject plausible mistakes."""

from collections import Counter

import torch

from adaedu.exercises import sutskever2014 as ex


def test_q1_accepts_reference_and_rejects_mistakes():
    assert ex.q1.run_check(ex.beam_step).passed

    def ignores_totals(totals, logp, width):
        top = logp.flatten().topk(width)
        v = logp.shape[1]
        return top.indices // v, top.indices % v, top.values

    def row_by_row(totals, logp, width):  # each hypothesis keeps its own best token(s)
        cand = totals[:, None] + logp
        best = cand.max(-1)
        order = best.values.argsort(descending=True)[:width]
        return order, best.indices[order], best.values[order]

    def ascending(totals, logp, width):
        p, t, v = ex.beam_step(totals, logp, width)
        return p.flip(0), t.flip(0), v.flip(0)

    for wrong in (ignores_totals, row_by_row, ascending):
        assert not ex.q1.run_check(wrong).passed
    assert "total" in ex.q1.run_check(ignores_totals).message

    def todo(*args):
        raise NotImplementedError

    assert ex.q1.run_check(todo).implemented is False
    p, t, v = ex.beam_step(
        torch.tensor([0.0, -10.0]), torch.tensor([[-1.0, -2.0], [-0.1, -5.0]]), 2
    )
    assert p.tolist() == [0, 0] and t.tolist() == [0, 1]


def test_q2_accepts_reference_and_rejects_mistakes():
    assert ex.q2.run_check(ex.modified_precision).passed

    def unclipped(h, r, n):
        grams = [tuple(h[i : i + n]) for i in range(len(h) - n + 1)]
        ref = {tuple(r[i : i + n]) for i in range(len(r) - n + 1)}
        return sum(g in ref for g in grams) / len(grams) if grams else 0.0

    def over_reference(h, r, n):
        hc = Counter(tuple(h[i : i + n]) for i in range(len(h) - n + 1))
        rc = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
        total = sum(rc.values())
        return sum(min(c, rc[g]) for g, c in hc.items()) / total if total else 0.0

    def set_based(h, r, n):
        hs = {tuple(h[i : i + n]) for i in range(len(h) - n + 1)}
        rs = {tuple(r[i : i + n]) for i in range(len(r) - n + 1)}
        return len(hs & rs) / len(hs) if hs else 0.0

    for wrong in (unclipped, over_reference, set_based):
        assert not ex.q2.run_check(wrong).passed
    assert "clip" in ex.q2.run_check(unclipped).message

    def todo(*args):
        raise NotImplementedError

    assert ex.q2.run_check(todo).implemented is False
    assert ex.modified_precision("the the the".split(), "the cat".split(), 1) == 1 / 3

"""Notebook 2.15 (Mixtral): parameter accounting, routing analysis, exercises."""

import math

import pytest
import torch

from adaedu.compute import active_parameters, count_parameters
from adaedu.exercises import jiang2024 as ex
from adaedu.lm.training import lm_objective
from adaedu.moe.mixtral import (
    MIXTRAL_8X7B,
    chance_rates,
    expert_shares,
    mixtral_parameters,
    repetition_rates,
    routed_experts,
    tiny_mixtral,
    uniform_chance_rates,
)


def test_mixtral_8x7b_has_47b_total_and_13b_active_parameters():
    total, active = mixtral_parameters(**MIXTRAL_8X7B)
    assert round(total / 1e9) == 47 and round(active / 1e9) == 13
    assert total == 46_702_792_704 and active == 12_879_925_248


def test_mixtral_parameters_match_a_built_tiny_mixtral():
    model = tiny_mixtral(vocab_size=50, d_model=32, n_layers=2, n_heads=4, d_hidden=48)
    total, active = mixtral_parameters(32, 2, 8, 48, 4, 4, 50, 8, 2)
    assert count_parameters(model) == total
    idx = torch.randint(50, (2, 16))
    model(idx)
    assert active_parameters(model) == pytest.approx(active)
    with pytest.raises(ValueError, match="n_kv_heads"):
        mixtral_parameters(32, 2, 8, 48, 4, 3, 50, 8, 2)
    with pytest.raises(ValueError, match="top_k"):
        mixtral_parameters(32, 2, 8, 48, 4, 4, 50, 8, 9)


def test_uniform_chance_rates():
    rates = uniform_chance_rates(8, 2)
    assert rates["first"] == 0.125
    assert rates["overlap"] == pytest.approx(1 - 15 / 28) == pytest.approx(1 - 6 / 8 * 5 / 7)
    assert rates["same_set"] == pytest.approx(1 / 28)
    assert uniform_chance_rates(4, 3)["overlap"] == 1.0  # two 3-subsets of 4 always meet
    with pytest.raises(ValueError, match="k="):
        uniform_chance_rates(4, 5)


def test_repetition_rates_by_hand():
    chosen = torch.tensor([[[0, 1], [0, 2], [3, 2], [2, 3]], [[5, 4], [4, 5], [1, 0], [1, 0]]])
    # pairs of row 0: same first? T F F; overlap? T T T; same set? F F T
    # pairs of row 1: same first? F F T; overlap? T F T; same set? T F T
    rates = repetition_rates(chosen)
    assert rates["first"] == pytest.approx(2 / 6)
    assert rates["overlap"] == pytest.approx(5 / 6)
    assert rates["same_set"] == pytest.approx(3 / 6)
    with pytest.raises(ValueError, match="T >= 2"):
        repetition_rates(chosen[:, :1])


def test_chance_rates_match_uniform_and_shuffled_tokens():
    gen = torch.Generator().manual_seed(0)
    sets = torch.rand(40000, 8, generator=gen).argsort(dim=1)[:, :2]
    uniform = chance_rates(sets.reshape(100, 400, 2), 8)
    for name, value in uniform_chance_rates(8, 2).items():
        assert uniform[name] == pytest.approx(value, abs=0.01), name
    # skewed routing: the chance rates rise, and shuffling tokens reproduces them
    p = torch.tensor([0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05])
    skewed = torch.multinomial(p.expand(20000, 8), 2, generator=gen)
    chance = chance_rates(skewed.reshape(50, 400, 2), 8)
    assert chance["first"] == pytest.approx(float((p**2).sum()), abs=0.01)
    assert chance["first"] > 0.2 and chance["overlap"] > 0.6
    shuffled = skewed[torch.randperm(len(skewed), generator=gen)].reshape(50, 400, 2)
    measured = repetition_rates(shuffled)
    for name in ("first", "overlap", "same_set"):
        assert measured[name] == pytest.approx(chance[name], abs=0.015), name


def test_expert_shares_rows_sum_to_one():
    chosen = torch.tensor([[[0, 1], [0, 1]], [[2, 3], [2, 2]]])
    shares = expert_shares(chosen, torch.tensor([0, 1]), n_domains=3, n_experts=4)
    assert shares[0].tolist() == [0.5, 0.5, 0.0, 0.0]
    assert shares[1].tolist() == [0.0, 0.0, 0.75, 0.25]
    assert shares[2].sum() == 0  # a domain without windows
    with pytest.raises(ValueError, match="expert ids"):
        expert_shares(chosen, torch.tensor([0, 1]), 3, 3)


def test_tiny_mixtral_trains_and_reports_routing():
    torch.manual_seed(0)
    model = tiny_mixtral(vocab_size=20, d_model=32, n_layers=2, n_heads=2, d_hidden=32)
    idx = torch.randint(20, (3, 12))
    loss, logs = lm_objective(model, (idx, idx))
    assert loss.item() > logs["ce"]  # the balancing loss is added
    loss.backward()
    assert model.blocks[0].ffn.router.linear.weight.grad is not None
    chosen = routed_experts(model, idx)
    assert chosen.shape == (2, 3, 12, 2)
    assert (chosen[..., 0] != chosen[..., 1]).all()


def test_hf_parity_when_transformers_is_installed():
    pytest.importorskip("transformers")
    from adaedu.moe.mixtral import hf_parity

    assert hf_parity(d_model=16, d_hidden=24, n_experts=8, k=2, n_tokens=20) < 1e-5


def _raises(*args):
    raise NotImplementedError


def test_q1_checker():
    assert ex.q1.run_check(ex.overlap_chance).passed
    assert ex.q1.run_check(lambda e, k: math.comb(e - k, k) / math.comb(e, k)).passed is False
    assert ex.q1.run_check(lambda e, k: 1 / math.comb(e, k)).passed is False
    assert ex.q1.run_check(lambda e, k: 1 - (1 - k / e) ** k).passed is False
    assert ex.q1.run_check(lambda e, k: k / e).passed is False
    assert ex.q1.run_check(_raises).implemented is False


def test_q2_checker():
    assert ex.q2.run_check(ex.first_choice_repetition).passed
    flat = lambda c: float((c.reshape(-1, 2)[:-1, 0] == c.reshape(-1, 2)[1:, 0]).float().mean())  # noqa: E731
    assert ex.q2.run_check(flat).passed is False
    assert ex.q2.run_check(lambda c: repetition_rates(c)["overlap"]).passed is False
    assert ex.q2.run_check(lambda c: repetition_rates(c)["same_set"]).passed is False
    assert ex.q2.run_check(_raises).implemented is False


def test_q3_checker():
    assert ex.q3.run_check(mixtral_parameters).passed
    no_gqa = lambda d, n, hd, h, nh, nkv, v, e, k: mixtral_parameters(d, n, hd, h, nh, nh, v, e, k)  # noqa: E731
    tied = lambda *a: mixtral_parameters(*a, tie_embeddings=True)  # noqa: E731
    all_active = lambda *a: (mixtral_parameters(*a)[0],) * 2  # noqa: E731
    for wrong in (no_gqa, tied, all_active):
        result = ex.q3.run_check(wrong)
        assert result.passed is False
    assert "grouped-query" in ex.q3.run_check(no_gqa).message
    assert ex.q3.run_check(_raises).implemented is False

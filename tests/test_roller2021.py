"""Tests of notebook 2.3's module (adaedu.moe.hashing) and exercises (Roller et al., 2021)."""

from __future__ import annotations

import math

import pytest
import torch

from adaedu.exercises import roller2021 as ex
from adaedu.lm.training import lm_objective
from adaedu.moe.hashing import (
    ROUTED_KINDS,
    evaluate_routed,
    expert_loads,
    greedy_balanced_table,
    make_routed_lm,
    max_mean,
    random_table_max_mean,
    rank_frequency,
    token_counts,
    train_routed_lm,
    validation_loss,
    validation_windows,
    zipf_fit,
)
from adaedu.moe.layer import MoEFeedForward
from adaedu.moe.routers import HashRouter

# --- token statistics ------------------------------------------------------------------------


def test_token_counts_and_rank_frequency():
    ids = torch.tensor([[3, 3, 1], [3, 0, 1]])
    assert token_counts(ids, 5).tolist() == [1, 2, 0, 3, 0]
    freqs = rank_frequency(ids, 5)
    assert torch.allclose(freqs, torch.tensor([3, 2, 1], dtype=torch.float64) / 6)
    with pytest.raises(ValueError, match="0..4"):
        token_counts(torch.tensor([5]), 5)
    with pytest.raises(ValueError, match="integer"):
        token_counts(torch.tensor([0.5]), 5)


def test_zipf_fit_recovers_exponent():
    ranks = torch.arange(1, 201, dtype=torch.float64)
    slope, intercept = zipf_fit(3.0 * ranks**-1.2)
    assert slope == pytest.approx(-1.2, abs=1e-9)
    assert intercept == pytest.approx(math.log(3.0), abs=1e-9)
    slope_head, _ = zipf_fit(ranks**-0.5, min_rank=1, max_rank=10)
    assert slope_head == pytest.approx(-0.5, abs=1e-9)
    with pytest.raises(ValueError, match="min_rank"):
        zipf_fit(ranks**-1.0, min_rank=5, max_rank=5)
    with pytest.raises(ValueError, match="> 0"):
        zipf_fit(torch.tensor([1.0, 0.0]))


# --- loads -----------------------------------------------------------------------------------


def test_expert_loads_counts_tokens_not_types():
    table = torch.tensor([0, 1, 1, 2])
    ids = torch.tensor([0, 0, 0, 3, 1])
    assert expert_loads(table, ids, 4).tolist() == [3, 1, 1, 0]
    assert max_mean([3, 1, 1, 0]) == pytest.approx(3 / 1.25)
    with pytest.raises(ValueError, match="n_experts"):
        expert_loads(table, ids, 2)
    with pytest.raises(ValueError, match="loads"):
        max_mean([0, 0])


def test_greedy_balanced_table_is_balanced_and_deterministic():
    counts = torch.tensor([10, 1, 7, 7, 3, 2, 0])
    table = greedy_balanced_table(counts, 3)
    # largest first: 10 (id 0) -> e0 | 7 (id 2) -> e1 | 7 (id 3) -> e2 | 3 (id 4) -> e1 (tie
    # 7 = 7: smaller index) | 2 (id 5) -> e2 | 1 (id 1) -> e2 | 0 (id 6) -> e0 (all tied at 10)
    loads = torch.zeros(3).index_add_(0, table, counts.float())
    assert loads.tolist() == [10.0, 10.0, 10.0]
    assert table.tolist() == [0, 2, 1, 2, 1, 2, 0]
    zipf = (1000 * torch.arange(1, 301, dtype=torch.float64) ** -1.0).round()
    loads = torch.zeros(8, dtype=torch.float64).index_add_(0, greedy_balanced_table(zipf, 8), zipf)
    assert loads.max() - loads.min() <= zipf.max()  # within one type's count
    assert loads.max() == zipf.max()  # the top type (16% > 1/8) is alone on its expert
    assert loads[loads < zipf.max()].max() - loads[loads < zipf.max()].min() <= 5  # the rest: even


def test_random_tables_are_imbalanced_under_zipf_but_not_uniform_data():
    gen = torch.Generator().manual_seed(0)
    zipf = 1.0 / torch.arange(1, 201, dtype=torch.float64)
    ids = torch.multinomial(zipf, 20000, replacement=True, generator=gen)
    skewed = random_table_max_mean(ids, 200, 8, n_tables=30)
    uniform = random_table_max_mean(torch.randint(0, 200, (20000,), generator=gen), 200, 8, 30)
    assert skewed.median() > 1.3
    assert uniform.median() < 1.15
    # the top type has 1 / H_200 = 17% of the tokens, more than 1/8: no table can balance 8
    # experts (the busiest holds it alone), but 4 experts (25% each) can be balanced
    top_share = float(token_counts(ids, 200).max()) / ids.numel()
    balanced8 = expert_loads(HashRouter.balanced(ids, 200, 8).table, ids, 8)
    assert max_mean(balanced8) == pytest.approx(8 * top_share)
    balanced4 = HashRouter.balanced(ids, 200, 4).table
    assert max_mean(expert_loads(balanced4, ids, 4)) < 1.02


# --- models ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ROUTED_KINDS)
def test_make_routed_lm_and_loss(kind):
    V, E, L = 40, 4, 2
    tables = [HashRouter.random(V, E, seed=layer).table for layer in range(L)]
    model = make_routed_lm(
        kind,
        V,
        d_model=16,
        n_layers=L,
        n_heads=2,
        block_size=8,
        n_experts=E,
        d_expert=8,
        tables=tables if kind not in ("dense", "switch") else None,
    )
    moes = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    assert len(moes) == (0 if kind == "dense" else L)
    for m in moes:
        assert m.loss_weights["balance"] == 0 and m.loss_weights["z"] == 0
    x = torch.randint(0, V, (3, 8))
    loss, _ = lm_objective(model, (x, torch.randint(0, V, (3, 8))))  # hash layers see the ids
    assert loss.ndim == 0 and torch.isfinite(loss)
    X, Y = torch.randint(0, V, (5, 8)), torch.randint(0, V, (5, 8))
    val, loads = evaluate_routed(model, X, Y, batch_size=2)
    assert len(loads) == len(moes)
    for load in loads:
        assert int(load.sum()) == X.numel()  # dropless: every token reaches one expert
    if kind not in ("dense", "switch"):
        assert loads[0].tolist() == expert_loads(tables[0], X, E).tolist()


def test_make_routed_lm_rejects_bad_kind_and_missing_tables():
    kw = dict(d_model=16, n_layers=2, n_heads=2, block_size=8, n_experts=4, d_expert=8)
    with pytest.raises(ValueError, match="allowed values"):
        make_routed_lm("hashy", 40, **kw)
    with pytest.raises(ValueError, match="tables"):
        make_routed_lm("random", 40, **kw)


def test_switch_balancing_loss_enters_training_not_validation():
    """kind='switch' with balance_weight: the training loss is CE + alpha * (Switch eq. 4 per
    layer); validation scores CE alone; no other kind accepts a balancing weight."""
    V, L = 40, 2
    kw = dict(d_model=16, n_layers=L, n_heads=2, block_size=8, n_experts=4, d_expert=8)
    torch.manual_seed(0)
    model = make_routed_lm("switch", V, balance_weight=0.01, **kw)
    moes = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    assert [m.loss_weights["balance"] for m in moes] == [0.01] * L
    assert all(m.loss_weights["z"] == 0 for m in moes)
    x, y = torch.randint(0, V, (3, 8)), torch.randint(0, V, (3, 8))
    out = model(x, targets=y)
    balance = sum(a.losses["balance"] for a in out.aux)
    assert balance.item() > 0.5 * L  # Switch eq. 4 is ~1 per layer near balance, >= 1 always
    assert lm_objective(model, (x, y))[0].item() == pytest.approx(
        out.loss.item() + 0.01 * balance.item(), rel=1e-5
    )
    assert validation_loss(model, (x, y)).item() == pytest.approx(out.loss.item(), rel=1e-6)
    val, _ = evaluate_routed(model, x, y, batch_size=3)
    assert val == pytest.approx(out.loss.item(), rel=1e-5)  # no aux in the validation loss
    tables = [HashRouter.random(V, 4, seed=layer).table for layer in range(L)]
    with pytest.raises(ValueError, match="balance_weight"):
        make_routed_lm("random", V, tables=tables, balance_weight=0.01, **kw)
    with pytest.raises(ValueError, match="balance_weight"):
        make_routed_lm("switch", V, balance_weight=-1.0, **kw)


def test_validation_windows_cover_every_token_once():
    from adaedu.data import TextCorpus

    tokens = torch.arange(23)
    corpus = TextCorpus({"verse": tokens}, tokenizer=None, split="validation")
    X, Y = validation_windows(corpus, 5)
    assert X.shape == (4, 5) and torch.equal(X.reshape(-1), tokens[:20])
    assert torch.equal(Y, X + 1)


# --- exercises -------------------------------------------------------------------------------


def _not_implemented(*args):
    raise NotImplementedError


def test_q1_expert_loads_checker():
    assert ex.q1.run_check(expert_loads).passed
    assert not ex.q1.run_check(lambda table, ids, e: torch.bincount(table, minlength=e)).passed
    assert not ex.q1.run_check(lambda table, ids, e: torch.bincount(table[ids.reshape(-1)])).passed
    assert not ex.q1.run_check(lambda table, ids, e: table[ids]).passed
    assert ex.q1.run_check(_not_implemented).implemented is False


def test_q2_balanced_table_checker():
    def round_robin(counts, n_experts):
        order = torch.argsort(counts, descending=True, stable=True)
        table = torch.empty(len(counts), dtype=torch.long)
        table[order] = torch.arange(len(counts)) % n_experts
        return table

    def smallest_first(counts, n_experts):
        return ex._greedy_in_order(counts, n_experts, largest_first=False)

    assert ex.q2.run_check(greedy_balanced_table).passed
    assert not ex.q2.run_check(round_robin).passed
    assert not ex.q2.run_check(smallest_first).passed
    result = ex.q2.run_check(round_robin)
    assert "in turn" in result.message
    assert ex.q2.run_check(_not_implemented).implemented is False


def test_q3_zipf_slope_checker():
    def linear_rank(freqs):
        ranks = torch.arange(1, len(freqs) + 1, dtype=torch.float64)
        x, y = ranks, freqs.log()
        return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())

    assert ex.q3.run_check(lambda f: zipf_fit(f)[0]).passed
    assert not ex.q3.run_check(lambda f: -zipf_fit(f)[0]).passed
    assert not ex.q3.run_check(linear_rank).passed
    assert "log rank" in ex.q3.run_check(linear_rank).message
    assert ex.q3.run_check(_not_implemented).implemented is False


def test_train_routed_lm_uses_the_course_lm_loop_and_trains_hash_layers():
    """The hash LM trains with adaedu.lm.training (the token ids reach the hash layers) and the
    loop's curve and final loss are those of evaluate_routed; the loss falls on a corpus."""
    from adaedu.data import TextCorpus

    V, block = 12, 8
    tokens = torch.arange(400) % V  # a deterministic cycle: easy to learn
    corpus = TextCorpus({"cycle": tokens}, tokenizer=None, split="train")
    X, Y = tokens[: 5 * block].view(5, block), tokens[1 : 5 * block + 1].view(5, block)
    tables = [HashRouter.random(V, 4, seed=layer).table for layer in range(2)]
    kw = dict(d_model=16, n_layers=2, n_heads=2, block_size=block, n_experts=4, d_expert=8)
    torch.manual_seed(0)
    model = make_routed_lm("random", V, tables=tables, **kw)
    run = train_routed_lm(
        "random", model, corpus, X, Y, steps=30, batch_size=8, lr=1e-2, eval_every=10
    )
    assert run.steps == [0, 10, 20, 30] and len(run.train_loss) == 30
    assert run.val_loss[-1] < run.val_loss[0] - 0.5
    final, loads = evaluate_routed(model, X, Y)
    assert run.final_loss == pytest.approx(final) and run.val_loss[-1] == pytest.approx(final)
    assert [int(x.sum()) for x in run.loads] == [X.numel()] * 2

"""Tests of notebook 2.5 (Zhou et al. 2022): the expert-choice experiment helpers and exercises."""

from __future__ import annotations

import pytest
import torch

import adaedu
from adaedu.exercises import zhou2022 as ex
from adaedu.lm.training import evaluate_lm, lm_objective
from adaedu.moe.expert_choice_experiments import (
    MoELMSpec,
    PositionGroupedMoE,
    expert_choice_gates,
    experts_per_token_hist,
    future_leak,
    make_moe_ffn,
    make_moe_lm,
    prefix_loss,
    smooth,
    steps_to_reach,
    top1_max_mean_load,
)
from adaedu.moe.routers import ExpertChoiceRouter

V, B, T = 11, 8, 12
SMALL = dict(d_model=16, n_heads=2, n_layers=2, block_size=T, d_hidden=16, n_experts=4)


def _lm(spec: MoELMSpec) -> torch.nn.Module:
    adaedu.seed_everything(0)
    model = make_moe_lm(spec, V, **SMALL)
    with torch.no_grad():  # sharper routers than at init, so that routing depends on the input
        for name, p in model.named_parameters():
            if "router" in name:
                p.mul_(20)
    return model


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_expert_choice_gates_match_the_router() -> None:
    router = ExpertChoiceRouter(5, 5, capacity_factor=1.5)
    with torch.no_grad():
        router.linear.weight.copy_(torch.eye(5))  # logits = x
    x = torch.randn(1, 9, 5)
    routing = router(x)
    dense = torch.zeros(9, 5)
    dense[routing.token, routing.expert] = routing.weight
    assert torch.allclose(expert_choice_gates(x[0], 1.5), dense)
    gates = expert_choice_gates(x[0], 1.5)
    assert ((gates > 0).sum(0) == 3).all()  # k = ceil(9 * 1.5 / 5) = 3 for every expert


def test_experts_per_token_hist_counts_zero() -> None:
    token = torch.tensor([0, 0, 2, 2, 2, 3])
    assert experts_per_token_hist(token, 5, 3).tolist() == [2, 1, 1, 1]
    with pytest.raises(ValueError, match="n_tokens"):
        experts_per_token_hist(torch.tensor([7]), 5, 3)


def test_top1_max_mean_load() -> None:
    logits = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    assert top1_max_mean_load(logits) == pytest.approx(1.5)


def test_sequence_expert_choice_leaks_and_the_others_do_not() -> None:
    idx = _ids()
    leak = {
        name: future_leak(_lm(spec), idx, position=T - 2, new_token=3).max().item()
        for name, spec in {
            "ec_sequence": MoELMSpec("expert_choice", "sequence"),
            "ec_position": MoELMSpec("expert_choice", "position"),
            "top1": MoELMSpec("top1", "sequence"),
            "top2": MoELMSpec("top2", "batch"),
        }.items()
    }
    assert leak["ec_sequence"] > 1e-3
    assert leak["ec_position"] == 0.0
    assert leak["top1"] == 0.0
    assert leak["top2"] == 0.0


def test_position_grouping_routes_each_position_alone() -> None:
    layer = make_moe_ffn("expert_choice", "position", 8, 8, 4, capacity_factor=1.0)
    assert isinstance(layer, PositionGroupedMoE)
    x = torch.randn(B, T, 8)
    y, aux = layer(x)
    assert y.shape == x.shape
    # T groups of B tokens: each expert takes k = B * 1 / 4 = 2 tokens per position
    assert aux.routing.expert_counts.tolist() == [2 * T] * 4
    # changing sequence 0 at the last position leaves every earlier position unchanged
    x2 = x.clone()
    x2[0, -1] += 5
    y2, _ = layer(x2)
    assert torch.equal(y[:, :-1], y2[:, :-1])


def test_prefix_loss_equals_teacher_forcing_only_for_causal_models() -> None:
    x, y = _ids(1), _ids(2)
    causal = _lm(MoELMSpec("top1", "sequence"))
    tf = causal(x, targets=y).loss.item()
    assert prefix_loss(causal, x, y).mean().item() == pytest.approx(tf, abs=1e-5)
    leaky = _lm(MoELMSpec("expert_choice", "sequence"))
    tf = leaky(x, targets=y).loss.item()
    assert abs(prefix_loss(leaky, x, y).mean().item() - tf) > 1e-4


def test_loss_and_evaluation() -> None:
    model = _lm(MoELMSpec("top1", "sequence", alpha=0.5))
    x, y = _ids(1), _ids(2)
    loss, metrics = lm_objective(model, (x, y))
    assert loss.item() > metrics["ce"]  # the balance loss is added (it is >= alpha per layer)
    assert metrics["max_mean_load"] >= 1.0
    ev = evaluate_lm(_lm(MoELMSpec("expert_choice", "sequence", capacity_factor=2.0)), [(x, y)] * 2)
    assert len(ev.stats) == 2
    for s in ev.stats:
        assert s.max_mean_load == pytest.approx(1.0)
        assert sum(s.experts_per_token_hist) == 2 * B * T
        assert s.experts_per_token == pytest.approx(2.0, abs=0.2)  # k = ceil(12*2/4) = 6 -> 2.0


def test_curves_and_arguments() -> None:
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])
    assert steps_to_reach([10, 20, 30], [3.0, 2.0, 1.0], 2.5) == pytest.approx(15.0)
    assert steps_to_reach([0, 50, 100], [3.0, 2.5, 2.4], 2.45) == pytest.approx(75.0)
    assert steps_to_reach([0, 50, 100], [2.0, 3.0, 1.0], 2.5) == 0.0  # already there at step 0
    assert steps_to_reach([10, 20], [3.0, 2.0], 1.0) is None
    with pytest.raises(ValueError, match="target"):
        steps_to_reach([10, 20], [3.0, 2.0], float("nan"))
    with pytest.raises(ValueError, match="router"):
        make_moe_ffn("top3", "sequence", 8, 8, 4)
    with pytest.raises(ValueError, match="grouping"):
        make_moe_ffn("top1", "tokens", 8, 8, 4)
    with pytest.raises(ValueError, match="position"):
        future_leak(_lm(MoELMSpec("top1", "sequence")), _ids(), T, 0)


# --- exercises ------------------------------------------------------------------------------------


def test_q1_checker() -> None:
    assert ex.q1.run_check(expert_choice_gates).passed

    def zero_one(logits, c):
        return (expert_choice_gates(logits, c) > 0).float()

    def softmax_over_tokens(logits, c):
        s = torch.softmax(logits, dim=0)
        k = -(-logits.shape[0] * c // logits.shape[1])
        idx = s.topk(int(min(k, logits.shape[0])), dim=0).indices
        return torch.zeros_like(s).scatter(0, idx, 1.0) * s

    def token_choice(logits, c):
        s = torch.softmax(logits, dim=-1)
        idx = s.topk(1, dim=-1).indices
        return torch.zeros_like(s).scatter(1, idx, 1.0) * s

    def not_implemented(logits, c):
        raise NotImplementedError

    for wrong in (zero_one, softmax_over_tokens, token_choice):
        assert not ex.q1.run_check(wrong).passed
    assert ex.q1.run_check(not_implemented).implemented is False


def test_q2_checker() -> None:
    assert ex.q2.run_check(experts_per_token_hist).passed

    def no_zero_bin(token, n, e):
        return torch.bincount(torch.bincount(token), minlength=e + 1)[: e + 1]

    def per_token(token, n, e):
        return torch.bincount(token, minlength=n)

    def short(token, n, e):
        return torch.bincount(torch.bincount(token, minlength=n), minlength=e)[:e]

    for wrong in (no_zero_bin, per_token, short):
        assert not ex.q2.run_check(wrong).passed


def test_q3_checker() -> None:
    assert ex.q3.run_check(top1_max_mean_load).passed

    def busy_only(logits):
        c = torch.bincount(logits.argmax(-1), minlength=logits.shape[1]).float()
        return float(c.max() / c[c > 0].mean())

    def importance(logits):
        p = torch.softmax(logits, -1).sum(0)
        return float(p.max() / p.mean())

    for wrong in (busy_only, importance):
        assert not ex.q3.run_check(wrong).passed


def test_train_specs_gives_the_serial_results_from_worker_processes():
    from adaedu.data import text_corpus
    from adaedu.lm.training import validation_batches
    from adaedu.moe.expert_choice_experiments import MoELMSpec, make_moe_lm, train_specs

    corpus = text_corpus()
    val = validation_batches(text_corpus(split="validation"), 1, 4, 16, seed=3)
    tasks = [
        (MoELMSpec("top1", "sequence", alpha=0.01), 1),
        (MoELMSpec("expert_choice", "position"), 2),
    ]
    kw = dict(
        model_kw=dict(d_model=16, n_layers=1, n_heads=2, block_size=16, d_hidden=16, n_experts=4),
        train_kw=dict(steps=3, batch_size=4, block_size=16, eval_every=2),
    )
    serial = train_specs(tasks, corpus, val, **kw)
    parallel = train_specs(tasks, corpus, val, workers=2, **kw)
    for a, b, (spec, seed) in zip(serial, parallel, tasks, strict=True):
        assert (a.spec, a.seed) == (b.spec, b.seed) == (spec, seed)
        assert a.eval.loss == b.eval.loss and a.run.val_loss == b.run.val_loss
        assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    model = make_moe_lm(tasks[0][0], corpus.tokenizer.vocab_size, **kw["model_kw"])
    model.load_state_dict(serial[0].state)  # the weights rebuild the trained model
    with pytest.raises(ValueError, match="tasks"):
        train_specs([], corpus, val, **kw)

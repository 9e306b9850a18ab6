"""Tests of adaedu.lm.training: the one LM training loop and validation of the course."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adaedu.data import TextCorpus
from adaedu.lm import TinyLM, TinyLMConfig
from adaedu.lm.training import (
    evaluate_lm,
    lm_objective,
    moe_aux_loss,
    train_lm,
    validation_batches,
)
from adaedu.moe.layer import make_moe

V = 7


class _Tok:
    vocab_size = V


def _cycle_corpus(n: int = 700) -> TextCorpus:
    """0 1 2 ... 6 0 1 2 ...: the next token is a function of the current one (learnable)."""
    return TextCorpus({"cycle": torch.arange(n) % V}, _Tok(), "train")


def _lm(ffn=None, dropout: float = 0.0) -> TinyLM:
    torch.manual_seed(0)
    cfg = TinyLMConfig(V, d_model=16, n_layers=2, n_heads=2, block_size=8, dropout=dropout)
    return TinyLM(cfg if ffn is None else TinyLMConfig(**{**cfg.__dict__, "ffn": ffn}))


def _moe_lm(**weights: float) -> TinyLM:
    def ffn(cfg, layer):
        return make_moe("switch", cfg.d_model, 16, 4, expert="mlp", loss_weights=weights or None)

    return _lm(ffn)


def test_loss_decreases_on_a_learnable_toy_and_the_curve_is_logged():
    corpus = _cycle_corpus()
    val = validation_batches(corpus, 2, 4, 8, seed=5)
    model = _lm()
    run = train_lm(
        model, corpus, steps=60, batch_size=8, block_size=8, val_batches=val, eval_every=25
    )
    assert run.val_steps == [0, 25, 50, 60]  # step 0, every 25 steps and the end
    assert run.val_loss[-1] < 0.3 * run.val_loss[0]  # log 7 = 1.95 nats at the start
    assert run.history.steps == [10, 20, 25, 35, 45, 50, 60]  # chunks continue the count
    assert run.history["ce"][-1] < run.history["ce"][0]
    assert run.val_loss[-1] == pytest.approx(evaluate_lm(model, val).loss)


def test_same_seed_same_run_and_adamw():
    corpus = _cycle_corpus()
    a = train_lm(_lm(), corpus, steps=5, batch_size=4, block_size=8, log_every=1)
    b = train_lm(_lm(), corpus, steps=5, batch_size=4, block_size=8, log_every=1)
    assert a.history["ce"] == b.history["ce"]
    c = train_lm(_lm(), corpus, steps=5, batch_size=4, block_size=8, log_every=1, seed=1)
    assert c.history["ce"] != a.history["ce"]
    w = train_lm(_lm(), corpus, steps=5, batch_size=4, block_size=8, optimizer="adamw")
    assert len(w.history.steps) == 1 and w.val_steps == []


def test_weight_decay_is_decoupled_adamw_and_matches_a_hand_written_loop():
    """train_lm(optimizer="adamw", weight_decay=wd, aux_loss=None) is exactly the plain loop that
    the decoding notebooks used before: AdamW(wd) on model(x, targets=y).loss over the stream."""
    corpus = _cycle_corpus()
    a = _lm()
    train_lm(a, corpus, steps=6, batch_size=4, block_size=8, optimizer="adamw",
             weight_decay=0.5, aux_loss=None, seed=3)  # fmt: skip
    b = _lm()
    opt = torch.optim.AdamW(b.parameters(), lr=3e-3, weight_decay=0.5)
    stream = corpus.batches(4, 8, seed=3)
    for _ in range(6):
        batch = next(stream)
        opt.zero_grad()
        b(batch[0], targets=batch[1]).loss.backward()
        opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    c = _lm()
    train_lm(c, corpus, steps=6, batch_size=4, block_size=8, optimizer="adamw", aux_loss=None,
             seed=3)  # fmt: skip
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


class _ModeSpy(nn.Module):
    """A dense FFN that records whether it ran in training mode."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.lin(x)


def test_evaluation_is_deterministic_in_eval_mode_and_restores_the_mode():
    model = _lm(ffn=lambda cfg, layer: _ModeSpy(cfg.d_model), dropout=0.5)
    val = validation_batches(_cycle_corpus(), 3, 4, 8)
    assert model.training
    first, second = evaluate_lm(model, val), evaluate_lm(model, val)
    assert first.loss == second.loss  # dropout 0.5 would make training-mode passes differ
    assert model.blocks[0].ffn.modes == [False] * 6  # 3 batches x 2 evaluations
    assert model.training  # restored
    assert first.stats == [] and first.choice_counts == []  # a dense model has no MoE layer
    model.eval()
    evaluate_lm(model, val)
    assert not model.training  # an eval-mode model stays in eval mode


def test_aux_loss_is_added_only_when_a_weight_is_positive():
    x = torch.arange(16).view(2, 8) % V
    y = (x + 1) % V
    loss, logs = lm_objective(_moe_lm(), (x, y))  # weights omitted: all 0 (no hidden default)
    assert loss.item() == logs["ce"]
    assert {"balance", "z", "dropped", "max_mean_load"} <= set(logs)
    loss, logs = lm_objective(_moe_lm(balance=0.0, z=0.0), (x, y))
    assert loss.item() == logs["ce"]
    model = _moe_lm(balance=0.5)
    loss, logs = lm_objective(model, (x, y))
    expected = 2 * 0.5 * logs["balance"]  # two MoE layers, alpha = 0.5, N sum f P per layer
    assert loss.item() - logs["ce"] == pytest.approx(expected, rel=1e-4)
    loss, logs = lm_objective(model, (x, y), aux_loss=None)  # the hook switched off
    assert loss.item() == logs["ce"]
    assert moe_aux_loss([None, {"loss": 1.0}]).item() == 0.0  # only MoE layers' auxes count


def test_moe_evaluation_pools_routing_statistics_per_layer():
    model = _moe_lm(balance=0.01)
    val = validation_batches(_cycle_corpus(), 2, 4, 8)
    ev = evaluate_lm(model, val)
    assert len(ev.stats) == 2 and len(ev.choice_counts) == 2 and len(ev.z) == 2
    for layer in range(2):
        assert sum(ev.choice_counts[layer]) == 2 * 4 * 8  # every token's first choice, pooled
        assert sum(ev.stats[layer].experts_per_token_hist) == 2 * 4 * 8
        assert ev.choice_load[layer] >= 1.0 and ev.z[layer] > 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(steps=0), "steps=0"),
        (dict(log_every=0), "log_every=0"),
        (dict(lr=0.0), "lr=0.0"),
        (dict(optimizer="sgd"), "optimizer='sgd'"),
        (
            dict(eval_every=0, val_batches=[(torch.zeros(1, 8, dtype=torch.long),) * 2]),
            "eval_every=0",
        ),
        (dict(eval_every=5), "val_batches"),
        (dict(weight_decay=-0.1, optimizer="adamw"), "weight_decay=-0.1"),
        (dict(weight_decay=0.01), "weight_decay=0.01 with optimizer='adam'"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, name):
    args = dict(steps=2, batch_size=2, block_size=8) | kwargs
    with pytest.raises(ValueError, match=name.replace("(", r"\(")):
        train_lm(_lm(), _cycle_corpus(), **args)


def test_bad_evaluation_arguments():
    with pytest.raises(ValueError, match="batches"):
        evaluate_lm(_lm(), [])
    with pytest.raises(ValueError, match="n_batches"):
        validation_batches(_cycle_corpus(), 0, 2, 8)

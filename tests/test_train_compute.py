import pytest
import torch
from torch import nn

import adaedu
from adaedu.compute import active_parameters, count_parameters, forward_flops
from adaedu.train import History, train


def _fit(seed: int) -> History:
    adaedu.seed_everything(seed)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss_fn(m, batch):
        xb, yb = batch
        loss = ((m(xb) - yb) ** 2).mean()
        return loss, {"abs_w0": m.weight[0, 0].abs().item()}

    return train(model, loss_fn, lambda step: (x, y), steps=100, optimizer=opt, progress=False)


def test_training_reduces_the_loss_and_logs_metrics():
    h = _fit(0)
    assert h["loss"][-1] < 0.01 * h["loss"][0]
    assert len(h["loss"]) == len(h["abs_w0"]) == len(h.steps) == 100
    assert h.last("abs_w0") == pytest.approx(1.0, abs=0.05)


def test_training_is_deterministic_on_cpu():
    assert _fit(3)["loss"] == _fit(3)["loss"]


def test_stop_ends_training_early_and_iterators_work():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    batches = iter([torch.ones(4, 2)] * 50)
    h = train(
        model,
        lambda m, b: m(b).mean(),
        batches,
        steps=50,
        optimizer=opt,
        stop=lambda hist: len(hist.steps) >= 7,
        progress=False,
    )
    assert h.steps == list(range(1, 8))


def test_train_rejects_bad_arguments():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="steps=0"):
        train(model, lambda m, b: m(b).sum(), lambda s: torch.ones(1, 2), steps=0, optimizer=opt)
    with pytest.raises(ValueError, match="log_every=0"):
        train(
            model,
            lambda m, b: m(b).sum(),
            lambda s: torch.ones(1, 2),
            steps=1,
            optimizer=opt,
            log_every=0,
        )


def test_history_keeps_series_aligned():
    h = History()
    h.log(1, loss=1.0)
    h.log(2, loss=0.5, acc=0.9)
    h.log(3, loss=0.2)
    assert h["acc"][1] == 0.9 and len(h["acc"]) == 3
    with pytest.raises(KeyError, match="no metric 'f1'"):
        h["f1"]


def test_forward_flops_counts_matrix_products():
    lin = nn.Linear(10, 20)
    assert forward_flops(lin, torch.randn(4, 10)) == 2 * 10 * 20
    assert forward_flops(lin, torch.randn(4, 10), per_example=False) == 4 * 2 * 10 * 20
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    assert forward_flops(mlp, torch.randn(3, 8)) == 2 * (8 * 16 + 16 * 4)


class _Routed(nn.Module):
    """Two experts; every token goes to expert 0 only."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.experts = nn.ModuleList([nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)])

    def forward(self, x):
        self.last_expert_counts = torch.tensor([x.shape[0], 0])
        self.last_num_tokens = x.shape[0]
        return self.experts[0](self.shared(x))


def test_active_parameters_count_only_the_experts_used():
    m = _Routed()
    assert count_parameters(m) == 20 + 16 + 16
    m(torch.randn(5, 4))
    assert active_parameters(m) == 20 + 16
    assert active_parameters(nn.Linear(4, 4)) == 20

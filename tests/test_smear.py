"""SMEAR (Muqeeth et al. 2023, notebook 2.9 to come): merging experts' parameters per example."""

from __future__ import annotations

import pytest
import torch

from adaedu.moe.smear import SMEARLayer, ensemble_output


def _layer(seed: int = 0, e: int = 3) -> SMEARLayer:
    torch.manual_seed(seed)
    return SMEARLayer(d_model=6, d_hidden=10, n_experts=e)


def test_a_one_hot_router_runs_exactly_the_chosen_expert() -> None:
    layer = _layer()
    x = torch.randn(4, 5, 6)
    for i in range(3):
        with torch.no_grad():
            layer.router.weight.zero_()
            layer.router.bias.fill_(-1e4)
            layer.router.bias[i] = 0.0
        y, probs = layer(x)
        assert torch.allclose(probs[:, i], torch.ones(4))
        torch.testing.assert_close(y, layer.experts[i](x), rtol=1e-5, atol=1e-5)


def test_merging_is_not_ensembling_but_agrees_for_identical_experts() -> None:
    layer = _layer()
    x = torch.randn(2, 5, 6)
    y, probs = layer(x)
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(-1), torch.ones(2))
    assert not torch.allclose(y, ensemble_output(layer, x, probs), atol=1e-4)
    with torch.no_grad():  # make every expert a copy of expert 0: merged = that expert
        for e in layer.experts[1:]:
            e.load_state_dict(layer.experts[0].state_dict())
    y, probs = layer(x)
    torch.testing.assert_close(y, layer.experts[0](x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, ensemble_output(layer, x, probs), rtol=1e-5, atol=1e-5)


def test_merged_parameters_are_the_weighted_sums() -> None:
    layer = _layer()
    probs = torch.softmax(torch.randn(2, 3), -1)
    w1, b1, w2, b2 = layer.merged(probs)
    expected = sum(probs[1, i] * layer.experts[i][2].weight for i in range(3))
    torch.testing.assert_close(w2[1], expected)
    assert w1.shape == (2, 10, 6) and b1.shape == (2, 10) and w2.shape == (2, 6, 10)
    assert b2.shape == (2, 6)


def test_the_router_gets_a_gradient_and_examples_route_independently() -> None:
    layer = _layer()
    x = torch.randn(3, 5, 6)
    y, _ = layer(x)
    y.square().sum().backward()
    assert layer.router.weight.grad is not None and layer.router.weight.grad.abs().sum() > 0
    assert all(e[0].weight.grad.abs().sum() > 0 for e in layer.experts)  # every expert learns
    x2 = x.clone()
    x2[1] += 1.0  # changing example 1 leaves examples 0 and 2 as they were
    y2, _ = layer(x2)
    torch.testing.assert_close(y2[[0, 2]], y.detach()[[0, 2]])
    assert not torch.allclose(y2[1], y.detach()[1])


def test_bad_input() -> None:
    layer = _layer()
    with pytest.raises(ValueError, match="x has shape"):
        layer(torch.randn(5, 6))
    with pytest.raises(ValueError, match="n_experts"):
        SMEARLayer(6, 10, 0)

"""Fast feedforward networks (Belcak & Wattenhofer 2023, notebook 3.1 to come)."""

from __future__ import annotations

import pytest
import torch

from adaedu.modular.fff import FastFeedForward


def _fff(depth: int = 3, seed: int = 0) -> FastFeedForward:
    torch.manual_seed(seed)
    return FastFeedForward(d_model=5, leaf_width=4, depth=depth)


def test_leaf_probabilities_are_the_path_products_and_sum_to_one() -> None:
    fff = _fff(depth=2)
    x = torch.randn(7, 5)
    probs = fff.leaf_probs(x)
    assert probs.shape == (7, 4) and torch.allclose(probs.sum(1), torch.ones(7))
    r = torch.sigmoid(fff.nodes(x))  # heap order: root 0, then 1 (left), 2 (right)
    by_hand = torch.stack(
        [
            (1 - r[:, 0]) * (1 - r[:, 1]),
            (1 - r[:, 0]) * r[:, 1],
            r[:, 0] * (1 - r[:, 2]),
            r[:, 0] * r[:, 2],
        ],
        dim=1,
    )
    torch.testing.assert_close(probs, by_hand)


def test_hard_descent_follows_the_signs() -> None:
    fff = _fff(depth=3)
    x = torch.randn(50, 5)
    logits = fff.nodes(x)
    leaf = fff.hard_leaf(x)
    for i in range(50):
        node = 0
        for _ in range(3):
            node = 2 * node + (2 if logits[i, node] > 0 else 1)
        assert leaf[i] == node - 7
    assert leaf.min() >= 0 and leaf.max() <= 7


def test_eval_runs_one_leaf_and_saturated_nodes_make_soft_equal_hard() -> None:
    fff = _fff(depth=2)
    x = torch.randn(3, 6, 5)
    fff.eval()
    hard = fff(x)
    flat = x.reshape(-1, 5)
    leaf = fff.hard_leaf(flat)
    for i in range(len(flat)):  # the hard output is exactly the reached leaf's MLP
        j = int(leaf[i])
        h = torch.relu(fff.w1[j] @ flat[i] + fff.b1[j])
        torch.testing.assert_close(hard.reshape(-1, 5)[i], fff.w2[j] @ h + fff.b2[j])
    with torch.no_grad():  # sharpen every node: the soft mixture becomes the hard path
        fff.nodes.weight.mul_(1e4)
        fff.nodes.bias.mul_(1e4)
    fff.train()
    soft = fff(x)
    fff.eval()
    torch.testing.assert_close(soft, fff(x), rtol=1e-4, atol=1e-4)


def test_depth_zero_is_one_mlp_and_training_reaches_every_leaf() -> None:
    fff = _fff(depth=0)
    x = torch.randn(4, 5)
    fff.train()
    torch.testing.assert_close(fff(x), fff.eval()(x))
    fff = _fff(depth=2).train()
    fff(torch.randn(8, 5)).square().sum().backward()
    assert (fff.w1.grad.flatten(1).abs().sum(1) > 0).all()  # soft training updates all leaves
    assert fff.nodes.weight.grad.abs().sum() > 0


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="depth"):
        FastFeedForward(5, 4, -1)
    with pytest.raises(ValueError, match="leaf_width"):
        FastFeedForward(5, 0, 2)
    with pytest.raises(ValueError, match="x has shape"):
        _fff()(torch.randn(3, 4))

"""WideNet (Xue et al. 2022, notebook 2.4 to come): what is shared across depth, and what is not."""

from __future__ import annotations

import pytest
import torch

from adaedu.compute import count_parameters
from adaedu.modular.vit import TinyViT, ViTConfig, classification_loss
from adaedu.modular.widenet import make_albert, make_widenet, share_across_depth, shared_modules

CFG = ViTConfig(image_size=8, patch=2, d_model=16, n_layers=4, n_heads=2, d_ff=32)


def _norm_params(d: int) -> int:
    return 2 * d  # LayerNorm: a scale and a shift per feature


def test_sharing_structure() -> None:
    torch.manual_seed(0)
    vit, albert, wide = TinyViT(CFG), make_albert(CFG), make_widenet(CFG, n_experts=4)
    assert shared_modules(vit) == {
        k: [1, 1, 1, 1] for k in ("attn", "ffn", "attn_norm", "ffn_norm")
    }
    assert shared_modules(albert) == {k: [4] for k in ("attn", "ffn", "attn_norm", "ffn_norm")}
    assert shared_modules(wide) == {
        "attn": [4],
        "ffn": [4],
        "attn_norm": [1, 1, 1, 1],
        "ffn_norm": [1, 1, 1, 1],
    }


def test_parameter_counts_follow_the_sharing() -> None:
    torch.manual_seed(0)
    vit, albert, wide = TinyViT(CFG), make_albert(CFG), make_widenet(CFG, n_experts=4)
    d, L = CFG.d_model, CFG.n_layers
    block = sum(p.numel() for p in vit.blocks[0].parameters())
    outside = count_parameters(vit) - L * block  # embedding, positions, final norm, head
    assert count_parameters(albert) == outside + block  # one block for all depths
    moe = sum(p.numel() for p in wide.blocks[0].ffn.parameters())
    attn = sum(p.numel() for p in wide.blocks[0].attn.parameters())
    assert count_parameters(wide) == outside + attn + moe + L * 2 * _norm_params(d)
    # WideNet: fewer parameters than the ViT, more than ALBERT (the experts and the norms)
    assert count_parameters(albert) < count_parameters(wide) < count_parameters(vit)


def test_every_block_trains_the_shared_modules_and_its_own_norms() -> None:
    torch.manual_seed(0)
    wide = make_widenet(CFG, n_experts=4)
    images, labels = torch.randn(6, 8, 8), torch.randint(0, 10, (6,))
    classification_loss(wide, images, labels).backward()
    assert wide.blocks[3].attn.qkv.weight.grad is wide.blocks[0].attn.qkv.weight.grad
    norms = [b.attn_norm.weight.grad for b in wide.blocks]
    assert all(g is not None for g in norms)
    assert not torch.allclose(norms[0], norms[3])  # each block's norm learns on its own
    # one optimiser step changes the shared weights once (one tensor), seen by every block
    opt = torch.optim.SGD(wide.parameters(), lr=0.1)
    before = wide.blocks[0].attn.qkv.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, wide.blocks[2].attn.qkv.weight)
    assert wide.blocks[2].attn.qkv.weight is wide.blocks[0].attn.qkv.weight


def test_individual_norms_can_route_a_token_differently_by_depth() -> None:
    """The shared router reads each block's own LayerNorm of the input: changing block 1's norm
    changes the routing from block 1 on, and leaves block 0's routing as it was."""
    torch.manual_seed(0)
    wide = make_widenet(CFG, n_experts=4, k=1).eval()
    x = torch.randn(8, 8, 8)
    before = [a.routing.chosen.clone() for a in wide(x).aux]
    with torch.no_grad():
        wide.blocks[1].ffn_norm.weight.mul_(-1.0)  # the same router, a mirrored input
    after = [a.routing.chosen.clone() for a in wide(x).aux]
    assert torch.equal(before[0], after[0])
    assert not torch.equal(before[1], after[1])


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="model"):
        share_across_depth(torch.nn.Linear(2, 2), norms=True)
    with pytest.raises(ValueError, match="model"):
        shared_modules(torch.nn.Linear(2, 2))


def test_run_comparison_is_paired_deterministic_and_the_same_in_parallel() -> None:
    from adaedu.modular import widenet_experiments as wx
    from adaedu.modular.digits_moe import load_canvas_digits

    data = load_canvas_digits()
    setup = wx.Setup(
        config=ViTConfig(image_size=10, patch=2, d_model=8, n_layers=2, n_heads=2, d_ff=8),
        n_experts=2,
        k=1,
        steps=3,
        batch_size=8,
        noise=0.3,
        test_copies=1,
    )
    serial = wx.run_comparison([5, 6], setup, data)
    parallel = wx.run_comparison([5, 6], setup, data, workers=2)
    assert list(serial) == list(wx.MODELS)
    for name in wx.MODELS:
        assert [r.seed for r in serial[name]] == [5, 6]
        assert [r.accuracy for r in serial[name]] == [r.accuracy for r in parallel[name]]
        for a, b in zip(serial[name], parallel[name], strict=True):
            assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    params = {name: serial[name][0].parameters for name in wx.MODELS}
    assert params["ALBERT"] < params["ViT"]
    assert params == {name: count_parameters(wx.build(name, setup)) for name in wx.MODELS}
    with pytest.raises(ValueError, match="seeds"):
        wx.run_comparison([], setup, data)
    with pytest.raises(ValueError, match="name"):
        wx.build("resnet", setup)

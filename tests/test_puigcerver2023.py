"""Notebook 3.2 (Soft MoE): the tiny ViT, the digits comparison helpers and the exercises."""

import math

import pytest
import torch
from torch import nn

from adaedu.exercises import puigcerver2023 as ex
from adaedu.modular.digits_moe import (
    evaluate_vit,
    load_canvas_digits,
    make_vit,
    method_kwargs,
    run_stream_comparison,
)
from adaedu.modular.vit import TinyViT, ViTConfig, patch_grid, patchify
from adaedu.moe.dispatch import soft_dispatch
from adaedu.moe.routers import SoftMoERouter

CFG = ViTConfig(d_model=16, n_layers=2, n_heads=2, d_ff=16)


def test_patchify_and_patch_grid_are_inverse_layouts():
    images = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 8, 8)
    patches = patchify(images, 2)
    assert patches.shape == (2, 16, 4)
    assert patches[0, 0].tolist() == [0, 1, 8, 9]  # top-left 2x2 square
    assert patches[0, 1].tolist() == [2, 3, 10, 11]  # its right neighbour
    assert patches[0, 4].tolist() == [16, 17, 24, 25]  # second row of patches
    grid = patch_grid(torch.arange(16.0), 8, 2)
    assert grid[0, :4].tolist() == [0, 0, 1, 1] and grid[2, 0] == 4
    with pytest.raises(ValueError, match="patch"):
        patchify(images, 3)
    with pytest.raises(ValueError, match="values"):
        patch_grid(torch.zeros(15), 8, 2)


def test_vit_is_not_causal_and_returns_aux_per_block():
    torch.manual_seed(0)
    model = TinyViT(CFG).eval()
    x = torch.randn(1, 8, 8)
    out = model(x)
    assert out.logits.shape == (1, 10) and out.aux == [None, None]
    # changing the last patch changes the first token's path: full attention (the logits move)
    y = x.clone()
    y[0, 6:, 6:] += 3.0
    assert not torch.allclose(model(y).logits, out.logits)
    with pytest.raises(ValueError, match="images"):
        model(torch.randn(1, 4, 4))
    with pytest.raises(ValueError, match="n_heads"):
        ViTConfig(d_model=10, n_heads=3)


def test_method_kwargs_match_compute():
    assert method_kwargs("soft", 1, 16, 4) == {"slots_per_expert": 4}
    assert method_kwargs("soft", 2, 16, 4) == {"slots_per_expert": 8}
    assert method_kwargs("expert choice", 2, 16, 4) == {"capacity_factor": 2.0}
    assert method_kwargs("top-2", 2, 16, 4)["k"] == 2
    with pytest.raises(ValueError, match="method"):
        method_kwargs("top-3", 3, 16, 4)
    with pytest.raises(ValueError, match="multiplier"):
        method_kwargs("top-1", 2, 16, 4)
    with pytest.raises(ValueError, match="slots"):
        method_kwargs("soft", 1, 15, 4)


def test_soft_moe_vit_drops_nothing_and_dispatch_sums_to_one():
    torch.manual_seed(0)
    model = make_vit("soft", 1, CFG, n_experts=4, moe_layers=(1,))
    x, y = torch.randn(5, 8, 8), torch.randint(0, 10, (5,))
    ev = evaluate_vit(model, x, y)
    assert ev.dropped_fraction == 0.0
    assert ev.max_dispatch_deviation < 1e-5 and ev.min_dispatch > 0
    routing = model(x).aux[1].routing
    assert routing.dispatch.shape == (5, 16, 4, 4)  # per image: 16 tokens, 4 experts x 4 slots


def test_top1_with_capacity_drops_when_routing_is_uneven():
    torch.manual_seed(0)
    model = make_vit("top-1", 1, CFG, n_experts=4, moe_layers=(1,))
    layer = model.blocks[1].ffn
    with torch.no_grad():  # every token prefers expert 0: capacity 4 of 16 per image
        layer.router.linear.weight.zero_()
        model.blocks[1].ffn_norm.bias.fill_(1.0)
        model.blocks[1].ffn_norm.weight.zero_()
        layer.router.linear.weight[0].fill_(1.0)
    ev = evaluate_vit(model, torch.randn(3, 8, 8), torch.zeros(3, dtype=torch.long))
    assert math.isclose(ev.dropped_fraction, 12 / 16)
    assert math.isnan(ev.max_dispatch_deviation)


def test_run_stream_comparison_measures_and_runs_the_same_in_worker_processes():
    data = load_canvas_digits()
    small = type(data)(data.x_train[:256], data.y_train[:256], data.x_test[:32], data.y_test[:32])
    cfg = ViTConfig(image_size=10, patch=2, d_model=16, n_layers=2, n_heads=2, d_ff=16)
    kw = dict(seeds=[3, 4], steps=3, noise=0.3, test_copies=1, moe_layers=(1,), batch_size=8)
    settings = [("dense", 1), ("soft", 1)]
    serial, _ = run_stream_comparison(small, cfg, settings, n_experts=5, **kw)
    dense, soft = serial[0], serial[2]
    assert dense.flops_per_image > 0 and soft.flops_per_image > dense.flops_per_image
    assert soft.parameters > dense.parameters and soft.active_parameters <= soft.parameters
    parallel, _ = run_stream_comparison(small, cfg, settings, n_experts=5, workers=2, **kw)
    for a, b in zip(serial, parallel, strict=True):  # independent seeded runs: identical results
        assert (a.method, a.seed) == (b.method, b.seed) and torch.equal(a.correct, b.correct)
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            assert torch.equal(p, q)
    with pytest.raises(ValueError, match="workers"):
        run_stream_comparison(small, cfg, settings, workers=0, **kw)


def test_q2_reference_matches_the_library_soft_moe():
    torch.manual_seed(0)
    n, d, E, S = 6, 5, 3, 2
    router = SoftMoERouter(d, E, S, normalize=False)
    experts = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(E))
    x = torch.randn(n, d)
    y_lib = soft_dispatch(x[None], router(x[None]), experts)[0]
    weights = torch.stack([e.weight.T for e in experts])  # x @ W.T
    y_ref = ex.soft_moe_layer(x, router.phi.detach(), weights)
    assert torch.allclose(y_lib, y_ref, atol=1e-5)


def test_q1_checker():
    assert ex.q1.run_check(ex.soft_moe_weights).passed
    assert not ex.q1.run_check(lambda z: (torch.softmax(z, 1), torch.softmax(z, 0))).passed
    assert not ex.q1.run_check(lambda z: (torch.softmax(z, 1), torch.softmax(z, 1))).passed
    assert not ex.q1.run_check(lambda z: (torch.softmax(z, 0), torch.softmax(z, 0))).passed


def test_q2_checker():
    assert ex.q2.run_check(ex.soft_moe_layer).passed

    def interleaved(x, phi, w):
        e = w.shape[0]
        s = phi.shape[1] // e
        logits = x @ phi
        d, c = torch.softmax(logits, 0), torch.softmax(logits, 1)
        ww = w.repeat(s, 1, 1)  # slot j -> expert j % E
        return c @ torch.einsum("sd,sdf->sf", d.T @ x, ww)

    def swapped(x, phi, w):
        s = phi.shape[1] // w.shape[0]
        logits = x @ phi
        d, c = torch.softmax(logits, 1), torch.softmax(logits, 0)
        return c @ torch.einsum("sd,sdf->sf", d.T @ x, w.repeat_interleave(s, 0))

    for wrong in (interleaved, swapped):
        result = ex.q2.run_check(wrong)
        assert not result.passed and "expert" in result.message or "swapped" in result.message


def test_q3_checker():
    assert ex.q3.run_check(ex.top1_dropped_fraction).passed

    def floor_capacity(chosen, e, cf):
        cap = max(1, math.floor(chosen.shape[1] / e * cf))
        counts = torch.stack([torch.bincount(r, minlength=e) for r in chosen])
        return float((counts - cap).clamp_min(0).sum() / chosen.numel())

    def kept(chosen, e, cf):
        return 1 - ex.top1_dropped_fraction(chosen, e, cf)

    def whole_batch(chosen, e, cf):
        return ex.top1_dropped_fraction(chosen.reshape(1, -1), e, cf)

    for wrong in (floor_capacity, kept, whole_batch):
        assert not ex.q3.run_check(wrong).passed


def test_unimplemented_solutions_are_reported():
    def todo(*args):
        raise NotImplementedError

    for q in (ex.q1, ex.q2, ex.q3):
        assert q.run_check(todo).implemented is False


def test_shift_digits_pastes_each_image_inside_the_canvas():
    from adaedu.modular.digits_moe import shift_digits

    gen = torch.Generator().manual_seed(0)
    images = torch.ones(50, 8, 8) * torch.arange(1, 51.0)[:, None, None]
    out = shift_digits(images, 10, gen)
    assert out.shape == (50, 10, 10)
    for i in range(50):  # exactly one 8x8 block of the image's value, zeros elsewhere
        assert int((out[i] == i + 1).sum()) == 64 and int((out[i] == 0).sum()) == 36
        rows = (out[i] != 0).any(1).nonzero().flatten()
        assert rows.max() - rows.min() == 7
    offsets = {tuple((o != 0).nonzero()[0].tolist()) for o in out}
    assert len(offsets) > 4  # the offsets vary (9 possible)
    noisy = shift_digits(images[:2], 10, gen, noise=0.5)
    assert float((noisy[0] - out[0]).std()) > 0.3  # noise everywhere, also on the background
    with pytest.raises(ValueError, match="canvas"):
        shift_digits(images, 7, gen)
    with pytest.raises(ValueError, match="noise"):
        shift_digits(images, 10, gen, noise=-1.0)


def test_shifted_test_set_and_canvas_digits():
    from adaedu.modular.digits_moe import load_canvas_digits, shifted_test_set

    data = load_canvas_digits()
    assert len(data.y_train) == 1347 and len(data.y_test) == 450
    assert float(data.x_train.min()) == 0.0  # not centred: the background stays 0
    assert abs(float(data.x_train.std()) - 1.0) < 1e-4
    x, y, base = shifted_test_set(data.x_test, data.y_test, copies=3, canvas=10, noise=0.0)
    assert x.shape == (1350, 10, 10) and torch.equal(y, data.y_test[base])
    assert torch.equal(torch.bincount(base), torch.full((450,), 3))
    again = shifted_test_set(data.x_test, data.y_test, copies=3, canvas=10, noise=0.0)
    assert torch.equal(x, again[0])  # fixed by its seed
    # each copy holds its base image somewhere
    assert torch.allclose(x[0].sum(), data.x_test[0].sum())


def test_stream_comparison_pairs_streams_and_sets_loss_weights():
    from adaedu.modular.digits_moe import (
        LOSS_WEIGHTS,
        load_canvas_digits,
        run_stream_comparison,
    )

    cfg = ViTConfig(image_size=10, patch=2, d_model=16, n_layers=2, n_heads=2, d_ff=16)
    soft = make_vit("soft", 1, cfg, n_experts=5, moe_layers=(1,))
    assert soft.blocks[1].ffn.loss_weights["balance"] == 0.0
    top1 = make_vit("top-1", 1, cfg, n_experts=5, moe_layers=(1,))
    assert top1.blocks[1].ffn.loss_weights["balance"] == LOSS_WEIGHTS["top-1"]["balance"] > 0
    assert top1.blocks[1].ffn.loss_weights["z"] == LOSS_WEIGHTS["top-1"]["z"] > 0
    data = load_canvas_digits()
    res, (x, y, base) = run_stream_comparison(
        data,
        cfg,
        [("top-1", 1), ("soft", 1)],
        seeds=[3, 4],
        steps=3,
        noise=0.3,
        test_copies=2,
        n_experts=5,
        moe_layers=(1,),
        batch_size=8,
        probe=16,
    )
    assert [(r.method, r.seed) for r in res] == [
        ("top-1", 3),
        ("top-1", 4),
        ("soft", 3),
        ("soft", 4),
    ]
    assert len(y) == 900 and all(r.correct.shape == (900,) for r in res)
    assert all(r.evaluation.accuracy == float(r.correct.float().mean()) for r in res)
    assert res[2].evaluation.dropped_fraction == 0.0
    assert res[2].evaluation.max_dispatch_deviation < 1e-5

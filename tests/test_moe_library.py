"""Tests of the MoE library: routers, dispatch, losses, statistics, the layer (part 2)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaedu.compute import active_parameters, count_parameters, forward_flops
from adaedu.moe.dispatch import (
    dispatch,
    dispatch_per_expert_mask,
    dispatch_per_token,
    soft_dispatch,
)
from adaedu.moe.experts import SwiGLU, make_expert, make_experts, matched_dense_hidden
from adaedu.moe.layer import (
    MixtralMoE,
    MoEFeedForward,
    dense_equivalent,
    make_moe,
    make_router,
    routing_token_ids,
)
from adaedu.moe.losses import router_z_loss, routing_losses, switch_balance_loss
from adaedu.moe.noisy_topk import NoisyTopKRouter
from adaedu.moe.routers import (
    ExpertChoiceRouter,
    HashRouter,
    Routing,
    ShazeerRouter,
    SoftMoERouter,
    SwitchRouter,
    TopKRouter,
    expert_capacity,
    keep_within_capacity,
)
from adaedu.moe.stats import moe_stats, plot_experts_per_token, plot_tokens_per_expert

FAST = settings(max_examples=25, deadline=None)


@st.composite
def sizes(draw, max_experts: int = 6):
    """(groups G, tokens per group n, experts E, features d, seed)."""
    return (
        draw(st.integers(1, 3)),
        draw(st.integers(1, 12)),
        draw(st.integers(1, max_experts)),
        draw(st.integers(1, 6)),
        draw(st.integers(0, 10_000)),
    )


def randomised(router: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random router weights (some routers start at zero, where every logit ties)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in router.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return router.eval()


def per_group_counts(routing: Routing, n: int) -> torch.Tensor:
    """(G, E) assignments per group and expert."""
    group = routing.token // n
    G = routing.n_tokens // n
    return torch.zeros(G, routing.n_experts, dtype=torch.long).index_put_(
        (group, routing.expert), torch.ones_like(group), accumulate=True
    )


# --- router invariants (property tests) -----------------------------------------------------------


@FAST
@given(sizes(), st.data())
def test_topk_routes_every_token_to_k_distinct_experts_with_weights_summing_to_one(size, data):
    G, n, E, d, seed = size
    k = data.draw(st.integers(1, E))
    router = randomised(TopKRouter(d, E, k), seed)
    x = torch.randn(G, n, d, generator=torch.Generator().manual_seed(seed))
    r = router(x)
    assert torch.equal(torch.bincount(r.token, minlength=G * n), torch.full((G * n,), k))
    weight_sum = torch.zeros(G * n).index_add_(0, r.token, r.weight)
    assert torch.allclose(weight_sum, torch.ones(G * n), atol=1e-6)
    assert (r.chosen.sort(dim=1).values.diff(dim=1) > 0).all()  # distinct experts
    assert torch.equal(r.chosen, r.logits.topk(k, dim=-1).indices)  # the k largest logits
    assert not r.dropped.any() and r.kept.all()
    assert (r.expert.diff() >= 0).all()  # sorted by expert
    assert torch.equal(r.expert_counts, torch.bincount(r.expert, minlength=E))


@FAST
@given(sizes(), st.data())
def test_noisy_topk_router_reuses_noisy_topk_and_keeps_its_invariants(size, data):
    G, n, E, d, seed = size
    k = data.draw(st.integers(1, E))
    router = randomised(ShazeerRouter(d, E, k), seed).train()  # with noise
    assert isinstance(router.gate, NoisyTopKRouter)
    r = router(torch.randn(G, n, d))
    assert torch.equal(torch.bincount(r.token, minlength=G * n), torch.full((G * n,), k))
    weight_sum = torch.zeros(G * n).index_add_(0, r.token, r.weight)
    assert torch.allclose(weight_sum, torch.ones(G * n), atol=1e-5)
    assert r.extras["gates"].shape == r.extras["load_probs"].shape == (G * n, E)


@FAST
@given(sizes(), st.floats(0.1, 2.0), st.sampled_from(["batch", "sequence"]))
def test_switch_respects_capacity_and_dropped_tokens_output_exactly_zero(size, factor, group):
    G, n, E, d, seed = size
    layer = MoEFeedForward(
        randomised(SwitchRouter(d, E, capacity_factor=factor), seed),
        make_experts("mlp", E, d, 4),
        group=group,
    ).eval()
    x = torch.randn(G, n, d, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y, aux = layer(x)
    r = aux.routing
    n_group = n if group == "sequence" else G * n
    capacity = expert_capacity(n_group, E, factor)
    assert (per_group_counts(r, n_group) <= capacity).all()  # no expert over capacity
    assert (y.reshape(-1, d)[r.dropped] == 0).all()  # dropped: exactly 0 ...
    assert torch.equal(
        (x + y).reshape(-1, d)[r.dropped], x.reshape(-1, d)[r.dropped]
    )  # ... residual
    assert torch.equal(r.dropped, ~r.kept[:, 0])  # top-1: dropped = lost its only choice
    assert torch.allclose(r.weight, r.probs[r.token].max(dim=-1).values)  # weight p_i(x), eq. 2
    # first come, first served: in each group, an expert keeps a prefix of the tokens choosing it
    chosen = r.chosen[:, 0].view(-1, n_group)
    kept = r.kept[:, 0].view(-1, n_group)
    for e in range(E):
        for g in range(chosen.shape[0]):
            wanted = kept[g][chosen[g] == e]
            assert torch.equal(wanted, torch.arange(len(wanted)) < capacity)


@FAST
@given(sizes(), st.data())
def test_topk_capacity_serves_first_choices_before_second_choices(size, data):
    G, n, E, d, seed = size
    k = data.draw(st.integers(1, E))
    factor = data.draw(st.floats(0.1, 1.5))
    router = randomised(TopKRouter(d, E, k, capacity_factor=factor), seed)
    r = router(torch.randn(G, n, d, generator=torch.Generator().manual_seed(seed)))
    capacity = expert_capacity(n, E, factor, k)  # the router sees G groups of n tokens
    assert (per_group_counts(r, n) <= capacity).all()
    chosen, kept = r.chosen.view(G, n, k), r.kept.view(G, n, k)
    for g in range(G):  # if a later choice got expert e, no earlier-ranked choice of e lost it
        for e in range(E):
            for j in range(1, k):
                if (kept[g, :, j] & (chosen[g, :, j] == e)).any():
                    assert kept[g, :, :j][chosen[g, :, :j] == e].all()


@FAST
@given(sizes(), st.data())
def test_expert_choice_gives_every_expert_exactly_its_capacity(size, data):
    G, n, E, d, seed = size
    factor = data.draw(st.floats(0.1, float(E)))
    router = randomised(ExpertChoiceRouter(d, E, capacity_factor=factor), seed)
    r = router(torch.randn(G, n, d, generator=torch.Generator().manual_seed(seed)))
    k = min(n, expert_capacity(n, E, factor))
    assert torch.equal(per_group_counts(r, n), torch.full((G, E), k))  # per group and expert
    stats = moe_stats(r)
    assert stats.max_mean_load == 1.0
    pairs = r.token * E + r.expert
    assert pairs.unique().numel() == pairs.numel()  # an expert takes a token at most once
    assert stats.experts_per_token == pytest.approx(E * k / n)
    assert sum(stats.experts_per_token_hist) == G * n  # 0 .. E experts per token


@FAST
@given(sizes(), st.integers(1, 3), st.booleans())
def test_soft_moe_dispatch_and_combine_weights_are_distributions(size, slots, normalize):
    G, n, E, d, seed = size
    router = randomised(SoftMoERouter(d, E, slots, normalize=normalize), seed)
    r = router(torch.randn(G, n, d, generator=torch.Generator().manual_seed(seed)))
    assert r.dispatch.shape == r.combine.shape == (G, n, E, slots)
    assert torch.allclose(r.dispatch.sum(dim=1), torch.ones(G, E, slots), atol=1e-5)  # over tokens
    assert torch.allclose(r.combine.sum(dim=(2, 3)), torch.ones(G, n), atol=1e-5)  # over slots
    assert torch.equal(r.expert_counts, torch.full((E,), G * slots))
    assert not r.dropped.any()


@FAST
@given(st.integers(1, 40), st.integers(1, 6), st.integers(0, 100))
def test_hash_routing_is_deterministic(vocab, E, seed):
    ids = torch.randint(vocab, (2, 9), generator=torch.Generator().manual_seed(seed))
    a = HashRouter.random(vocab, E, seed=seed)
    b = HashRouter.random(vocab, E, seed=seed)
    x = torch.randn(2, 9, 3)
    ra, rb = a(x, ids), b(x.neg(), ids)  # same ids, same experts, whatever x
    assert torch.equal(ra.chosen[:, 0], a.table[ids.reshape(-1)])
    assert torch.equal(ra.chosen, rb.chosen) and torch.equal(ra.chosen, a(x, ids).chosen)
    types = torch.bincount(a.table, minlength=E)  # random hash: vocab / E types each (+-1)
    assert types.max() - types.min() <= 1


@FAST
@given(st.integers(1, 8), st.integers(1, 200), st.integers(0, 100))
def test_balanced_hash_is_within_one_of_perfect_balance_on_distinct_training_ids(E, n, seed):
    vocab = 300
    train_ids = torch.randperm(vocab, generator=torch.Generator().manual_seed(seed))[:n]
    router = HashRouter.balanced(train_ids, vocab, E, seed=seed)
    load = torch.bincount(router.table[train_ids], minlength=E)
    assert (load - n / E).abs().max() < 1  # floor or ceil of n / E


@FAST
@given(st.integers(1, 8), st.lists(st.integers(0, 29), min_size=1, max_size=300), st.integers(0, 9))
def test_balanced_hash_is_within_one_token_type_of_balance(E, ids, seed):
    train_ids = torch.tensor(ids)
    router = HashRouter.balanced(train_ids, 30, E, seed=seed)
    load = torch.bincount(router.table[train_ids], minlength=E)
    biggest_type = int(torch.bincount(train_ids).max())
    assert int(load.max() - load.min()) <= biggest_type  # greedy largest-first bound


def test_balanced_hash_beats_random_hash_on_zipf_ids():
    gen = torch.Generator().manual_seed(0)
    zipf = (1.0 / torch.arange(1, 201).float()).clamp_max(0.05)  # no type above 1/E of the data
    train_ids = torch.multinomial(zipf, 20_000, replacement=True, generator=gen)
    balanced = HashRouter.balanced(train_ids, 200, 8)
    random = HashRouter.random(200, 8)
    spread = [torch.bincount(r.table[train_ids], minlength=8).float() for r in (balanced, random)]
    assert (spread[0].max() / spread[0].mean()) < 1.01 < (spread[1].max() / spread[1].mean())


def test_clustered_hash_puts_each_cluster_on_one_expert():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    cluster = torch.arange(30) % 3
    embeddings = centres[cluster] + 0.1 * torch.randn(30, 2, generator=gen)
    table = HashRouter.clustered(embeddings, 3).table
    for c in range(3):
        assert table[cluster == c].unique().numel() == 1
    assert table.unique().numel() == 3


# --- dispatch: vectorised == naive loops ----------------------------------------------------------

HARD_ROUTERS = ["noisy_topk", "topk", "switch", "hash", "expert_choice"]


def build(name: str, d: int, E: int, seed: int, kind: str = "swiglu", **kwargs) -> MoEFeedForward:
    torch.manual_seed(seed)
    extra = {"vocab_size": 20} if name == "hash" else {}
    if name in ("topk", "noisy_topk"):
        extra["k"] = min(2, E)
    if name == "expert_choice":
        extra["capacity_factor"] = min(2.0, E)
    layer = make_moe(name, d, 5, E, expert=kind, **{**extra, **kwargs})
    randomised(layer.router, seed)
    return layer.eval()


@settings(max_examples=40, deadline=None)
@given(sizes(), st.sampled_from(HARD_ROUTERS), st.sampled_from(["mlp", "swiglu"]))
def test_sorted_dispatch_equals_naive_per_token_loop(size, name, kind):
    G, n, E, d, seed = size
    layer = build(name, d, E, seed, kind)
    x = torch.randn(G, n, d, generator=torch.Generator().manual_seed(seed))
    ids = torch.randint(20, (G, n), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y, aux = layer(x, ids if name == "hash" else None)
        flat = layer._groups(x).reshape(-1, d)
        naive = dispatch_per_token(flat, aux.routing, layer.experts)
        masked = dispatch_per_expert_mask(flat, aux.routing, layer.experts)
    assert torch.allclose(y.reshape(-1, d), naive, atol=1e-5)
    assert torch.allclose(y.reshape(-1, d), masked, atol=1e-6)


def test_soft_dispatch_equals_a_loop_over_slots():
    torch.manual_seed(0)
    G, n, d, E, S = 2, 5, 4, 3, 2
    router, experts = SoftMoERouter(d, E, S), make_experts("mlp", E, d, 6)
    x = torch.randn(G, n, d)
    with torch.no_grad():
        r = router(x)
        y = soft_dispatch(x, r, experts)
        expected = torch.zeros(G, n, d)
        for g in range(G):
            for e in range(E):
                for s in range(S):
                    slot = (r.dispatch[g, :, e, s, None] * x[g]).sum(0)  # X~ = D^T X
                    out = experts[e](slot[None])[0]
                    expected[g] += r.combine[g, :, e, s, None] * out  # Y = C Y~
    assert torch.allclose(y, expected, atol=1e-5)


def test_gradients_flow_to_router_and_experts():
    for name in ["topk", "switch", "expert_choice", "soft", "noisy_topk"]:
        layer = build(name, 4, 3, 0).train()
        y, aux = layer(torch.randn(2, 6, 4))
        (y.pow(2).sum() + aux.loss).backward()
        router_grads = [p.grad for p in layer.router.parameters() if p.grad is not None]
        assert router_grads and any(g.abs().sum() > 0 for g in router_grads), name
        assert any(p.grad is not None for p in layer.experts.parameters()), name


def test_expert_choice_leaks_the_future_within_a_group():
    torch.manual_seed(0)
    d, E, n = 4, 2, 8
    router = ExpertChoiceRouter(d, E, capacity_factor=1.0)  # each expert takes 4 of 8 tokens
    layer = MoEFeedForward(router, make_experts("mlp", E, d, 8), group="sequence").eval()
    with torch.no_grad():
        router.linear.weight.copy_(torch.tensor([[5.0, 0, 0, 0], [-5.0, 0, 0, 0]]))
        x = torch.randn(1, n, d)
        x[0, -1, 0] = -100.0  # the last token is expert 1's favourite ...
        y_before, _ = layer(x)
        x[0, -1, 0] = 100.0  # ... and now expert 0's: it displaces an earlier token there
        y_after, _ = layer(x)
    assert not torch.allclose(y_before[0, :-1], y_after[0, :-1])  # earlier outputs changed


# --- losses ---------------------------------------------------------------------------------------


def test_switch_balance_loss_is_one_at_perfect_balance():
    E = 4
    probs = torch.full((8, E), 1 / E)
    chosen = (torch.arange(8) % E).unsqueeze(1)  # each expert chosen by 2 tokens
    assert switch_balance_loss(probs, chosen).item() == pytest.approx(1.0)
    chosen2 = torch.stack([torch.arange(8) % E, (torch.arange(8) + 1) % E], dim=1)  # top-2
    assert switch_balance_loss(probs, chosen2).item() == pytest.approx(1.0)
    assert switch_balance_loss(probs, chosen, alpha=0.01).item() == pytest.approx(0.01)


def test_switch_balance_loss_hand_computed_when_imbalanced():
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1]] * 4)
    chosen = torch.zeros(4, 1, dtype=torch.long)  # everybody on expert 0
    # f = (1, 0, 0, 0), P = (0.7, 0.1, 0.1, 0.1): N sum f P = 4 * 0.7
    assert switch_balance_loss(probs, chosen).item() == pytest.approx(2.8)
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    chosen = torch.tensor([[0], [0], [1]])  # f = (2/3, 1/3), P = (1.6/3, 1.4/3)
    expected = 2 * (2 / 3 * 1.6 / 3 + 1 / 3 * 1.4 / 3)
    assert switch_balance_loss(probs, chosen).item() == pytest.approx(expected)
    assert expected > 1


@given(st.integers(1, 8), st.integers(1, 6), st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_switch_balance_loss_is_at_least_one_for_self_consistent_routing(n, E, seed):
    # when the tokens choose their argmax, sum f P >= 1/N (f and P agree); here with f = P exactly
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randint(E, (n * E, 1), generator=gen)
    f = torch.bincount(chosen[:, 0], minlength=E).float() / (n * E)
    probs = f.expand(n * E, E)
    assert switch_balance_loss(probs, chosen).item() >= 1 - 1e-6


def test_router_z_loss_hand_computed():
    assert router_z_loss(torch.zeros(5, 4)).item() == pytest.approx(math.log(4) ** 2)
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), math.log(2.0)]])
    expected = (math.log(4.0) ** 2 + math.log(4.0) ** 2) / 2  # log(1 + 3), log(2 + 2)
    assert router_z_loss(logits).item() == pytest.approx(expected)


def test_routing_losses_and_the_weighted_aux_loss():
    layer = build("noisy_topk", 4, 3, 0, loss_weights={"balance": 0.5, "z": 0.1, "importance": 2.0})
    _, aux = layer(torch.randn(2, 5, 4))
    assert set(aux.losses) == {"balance", "z", "importance", "load"}
    expected = 0.5 * aux.losses["balance"] + 0.1 * aux.losses["z"] + 2.0 * aux.losses["importance"]
    assert aux.loss.item() == pytest.approx(expected.item())
    assert aux["loss"] is aux.loss and aux["stats"] is aux.stats  # the LM protocol's aux["loss"]
    with pytest.raises(KeyError):
        aux["total"]
    r = aux.routing
    assert routing_losses(r)["balance"].item() == pytest.approx(
        switch_balance_loss(r.probs, r.chosen).item()
    )
    for name, keys in [
        ("hash", set()),
        ("soft", set()),
        ("expert_choice", {"z"}),
        ("switch", {"balance", "z"}),
    ]:
        ids = torch.zeros(2, 5, dtype=torch.long)
        _, aux = build(name, 4, 3, 0)(torch.randn(2, 5, 4), ids if name == "hash" else None)
        assert set(aux.losses) == keys, name


# --- statistics on hand-made routings -------------------------------------------------------------


def test_stats_of_a_hand_made_routing():
    # token 0 -> e0; token 1 -> e0 and e1; token 2 -> nothing; token 3 -> e2
    token, expert = torch.tensor([3, 0, 1, 1]), torch.tensor([2, 0, 0, 1])
    probs = torch.full((4, 3), 1 / 3)
    r = Routing.hard(token, expert, torch.ones(4), 4, 3, probs=probs)
    assert r.expert.tolist() == [0, 0, 1, 2] and r.token.tolist() == [0, 1, 1, 3]
    s = moe_stats(r)
    assert s.tokens_per_expert == [2, 1, 1]
    assert s.max_mean_load == pytest.approx(2 / (4 / 3))
    assert s.dropped_fraction == 0.25 and r.dropped.tolist() == [False, False, True, False]
    assert s.experts_per_token == 1.0 and s.experts_per_token_hist == [1, 2, 1, 0]
    assert s.router_entropy == pytest.approx(math.log(3))
    assert s.overflow_fraction == 0.0


def test_stats_overflow_and_entropy_of_a_peaked_router():
    chosen = torch.tensor([[0], [0], [0], [1]])
    weights = torch.ones(1, 4, 1)
    from adaedu.moe.routers import token_choice_routing

    r = token_choice_routing(
        chosen.view(1, 4, 1), weights, 2, capacity=2, probs=torch.tensor([[1.0, 0.0]] * 4)
    )
    s = moe_stats(r)
    assert s.tokens_per_expert == [2, 1]
    assert r.kept[:, 0].tolist() == [True, True, False, True]  # the third token on e0 overflows
    assert s.overflow_fraction == 0.25 and s.dropped_fraction == 0.25
    assert s.router_entropy == pytest.approx(0.0, abs=1e-6)


def test_plots_draw_the_statistics():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = moe_stats(Routing.hard(torch.tensor([0, 1]), torch.tensor([1, 1]), torch.ones(2), 3, 2))
    fig, (a, b) = plt.subplots(1, 2)
    plot_tokens_per_expert(a, stats, capacity=2)
    plot_experts_per_token(b, stats)
    assert [p.get_height() for p in a.patches] == [0, 2]
    assert [p.get_height() for p in b.patches] == pytest.approx([1 / 3, 2 / 3, 0])
    plt.close(fig)


def test_keep_within_capacity_counts_positions_per_group():
    expert = torch.tensor([[0, 1, 0, 0, 1], [1, 1, 1, 0, 0]])
    keep = keep_within_capacity(expert, 2, capacity=2)
    assert keep.tolist() == [[True, True, True, False, True], [True, True, False, True, True]]
    assert not keep_within_capacity(expert, 2, capacity=0).any()


def test_expert_capacity_formula():
    assert expert_capacity(256, 8, 1.0) == 32  # eq. 3
    assert expert_capacity(256, 8, 1.25) == 40
    assert expert_capacity(10, 1, 1.1) == 11  # not 12 from 11.000000000000002
    assert expert_capacity(256, 8, 1.0, k=2) == 64
    assert expert_capacity(3, 8, 1.0) == 1  # at least one slot


# --- the layer ------------------------------------------------------------------------------------


def test_layer_sets_what_active_parameters_reads():
    d, E, k = 8, 4, 2
    layer = build("topk", d, E, 0, k=k)
    layer(torch.randn(3, 5, d))
    assert layer.last_num_tokens == 15 and int(layer.last_expert_counts.sum()) == 15 * k
    per_expert = count_parameters(layer.experts[0])
    expected = count_parameters(layer.router) + k * per_expert
    assert active_parameters(layer) == pytest.approx(expected)


def test_dense_equivalent_matches_the_active_flops():
    x = torch.randn(2, 16, 8)
    for name, kwargs, kind in [
        ("topk", {"k": 2}, "swiglu"),
        ("switch", {"capacity_factor": None}, "mlp"),
        ("expert_choice", {"capacity_factor": 2.0}, "swiglu"),
        ("soft", {"slots_per_expert": 2}, "swiglu"),
    ]:
        layer = make_moe(name, 8, 32, 4, expert=kind, group="sequence", **kwargs)
        dense = dense_equivalent(layer, tokens_per_group=16)
        moe_flops, dense_flops = forward_flops(layer, x), forward_flops(dense, x)
        assert dense_flops == pytest.approx(moe_flops, rel=0.03), name


def test_matched_dense_hidden():
    assert matched_dense_hidden("swiglu", 64, 128, 2, 64 * 8) == 2 * 128 + round(8 / 3)
    assert matched_dense_hidden("mlp", 64, 128, 1, 0) == 128


def test_routing_token_ids_reaches_hash_layers_inside_a_model():
    layer = build("hash", 4, 3, 0)
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.ModuleList([layer]))
    ids = torch.randint(20, (2, 5))
    x = torch.randn(2, 5, 4)
    with routing_token_ids(model, ids):
        y, aux = layer(x)
    assert torch.equal(aux.routing.chosen[:, 0], layer.router.table[ids.reshape(-1)])
    assert layer.token_ids is None
    with pytest.raises(ValueError, match="token_ids"):
        layer(x)


def test_layer_accepts_flat_tokens_and_grouping_changes_capacity():
    torch.manual_seed(0)
    router = randomised(SwitchRouter(4, 2, capacity_factor=1.0), 1)
    x = torch.randn(4, 6, 4)
    per_batch = MoEFeedForward(router, make_experts("mlp", 2, 4, 4), group="batch")
    per_seq = MoEFeedForward(router, per_batch.experts, group="sequence")
    y_flat, _ = per_batch(x.reshape(-1, 4))
    y_batch, aux_b = per_batch(x)
    _, aux_s = per_seq(x)
    assert torch.allclose(y_flat, y_batch.reshape(-1, 4))
    assert (per_group_counts(aux_s.routing, 6) <= 3).all()  # per sequence: 6 / 2 slots
    assert (aux_b.routing.expert_counts <= 12).all()  # per batch: 24 / 2 slots


def test_mixtral_moe_is_dropless_top2_swiglu():
    block = MixtralMoE(8, 16)
    assert isinstance(block.router, TopKRouter) and block.router.k == 2
    assert all(isinstance(e, SwiGLU) for e in block.experts) and len(block.experts) == 8
    y, aux = block(torch.randn(2, 40, 8))
    assert not aux.routing.dropped.any() and aux.stats.experts_per_token == 2.0


# --- bad arguments --------------------------------------------------------------------------------


def test_bad_arguments_raise_value_errors_naming_the_parameter():
    x = torch.randn(1, 4, 8)
    cases = [
        (lambda: TopKRouter(8, 4, k=5), "k=5"),
        (lambda: TopKRouter(8, 4, k=0), "k=0"),
        (lambda: ShazeerRouter(8, 4, k=5), "k=5"),
        (lambda: SwitchRouter(8, 4, capacity_factor=-1.0), "capacity_factor=-1.0"),
        (lambda: TopKRouter(8, 4, capacity_factor=0.0), "capacity_factor=0.0"),
        (lambda: SwitchRouter(8, 4, jitter=1.5), "jitter=1.5"),
        (lambda: ExpertChoiceRouter(8, 4, capacity_factor=5.0), "capacity_factor=5.0"),
        (lambda: ExpertChoiceRouter(8, 4, capacity_factor=None), "capacity_factor=None"),
        (lambda: SoftMoERouter(8, 4, slots_per_expert=0), "slots_per_expert=0"),
        (lambda: TopKRouter(0, 4), "d_model=0"),
        (lambda: TopKRouter(8, 0), "n_experts=0"),
        (lambda: TopKRouter(8, 4)(torch.randn(1, 4, 7)), "x has shape"),
        (lambda: TopKRouter(8, 4)(torch.randn(4, 8)), "x has shape"),
        (
            lambda: HashRouter.random(10, 4)(x, torch.zeros(1, 3, dtype=torch.long)),
            "token_ids has shape",
        ),
        (lambda: HashRouter.random(10, 4)(x, torch.full((1, 4), 10)), "token_ids must lie"),
        (lambda: HashRouter(torch.tensor([0, 4]), 4), "table entries"),
        (lambda: HashRouter.balanced(torch.tensor([11]), 10, 4), "train_ids"),
        (lambda: HashRouter.clustered(torch.randn(3, 2), 4), "n_experts=4"),
        (lambda: make_router("top3", 8, 4), "router='top3'"),
        (lambda: make_router("hash", 8, 4), "vocab_size"),
        (lambda: make_moe("topk", 8, 16, 4, expert="relu"), "kind='relu'"),
        (lambda: make_moe("topk", 8, 16, 4, loss_weights={"aux": 1.0}), "aux"),
        (lambda: make_moe("topk", 8, 16, 4, group="token"), "group='token'"),
        (lambda: make_moe("topk", 8, 16, 4, loss_weights={"z": -1.0}), "z_weight=-1.0"),
        (lambda: MoEFeedForward(TopKRouter(8, 4), make_experts("mlp", 3, 8, 4)), "n_experts"),
        (lambda: make_moe("topk", 8, 16, 4)(torch.randn(8)), "x has shape"),
        (
            lambda: make_moe("topk", 8, 16, 4)(x, torch.zeros(1, 5, dtype=torch.long)),
            "token_ids has shape",
        ),
        (lambda: dense_equivalent(make_moe("soft", 8, 16, 4)), "tokens_per_group"),
        (lambda: dense_equivalent(torch.nn.Linear(2, 2)), "layer is a Linear"),
        (lambda: expert_capacity(16, 4, -0.5), "capacity_factor=-0.5"),
        (lambda: expert_capacity(0, 4, 1.0), "tokens_per_group=0"),
        (
            lambda: switch_balance_loss(torch.rand(4, 3), torch.zeros(5, 1, dtype=torch.long)),
            "chosen has shape",
        ),
        (lambda: switch_balance_loss(torch.rand(4, 3), torch.full((4, 1), 3)), "chosen must lie"),
        (
            lambda: switch_balance_loss(
                torch.rand(4, 3), torch.zeros(4, 1, dtype=torch.long), -1.0
            ),
            "alpha",
        ),
        (lambda: router_z_loss(torch.zeros(3)), "logits"),
        (
            lambda: Routing.hard(torch.tensor([0]), torch.tensor([0, 1]), torch.ones(1), 2, 2),
            "token",
        ),
        (
            lambda: Routing.hard(torch.tensor([2]), torch.tensor([0]), torch.ones(1), 2, 2),
            "token indices",
        ),
        (
            lambda: Routing.hard(torch.tensor([0]), torch.tensor([2]), torch.ones(1), 2, 2),
            "expert indices",
        ),
        (
            lambda: dispatch(torch.randn(3, 8), TopKRouter(8, 4)(x), make_experts("mlp", 4, 8, 4)),
            "x has shape",
        ),
        (
            lambda: dispatch(torch.randn(4, 8), TopKRouter(8, 4)(x), make_experts("mlp", 3, 8, 4)),
            "experts",
        ),
        (lambda: dispatch(x[0], SoftMoERouter(8, 4)(x), make_experts("mlp", 4, 8, 4)), "soft"),
        (lambda: soft_dispatch(x, TopKRouter(8, 4)(x), make_experts("mlp", 4, 8, 4)), "hard"),
        (lambda: moe_stats("routing"), "routing is a str"),
        (lambda: make_expert("swiglu", 8, 0), "d_hidden=0"),
        (lambda: matched_dense_hidden("swiglu", 8, 16, 0.0, 0.0), "active_experts"),
        (lambda: matched_dense_hidden("swiglu", 0, 16, 1.0, 0.0), "d_model=0"),
        (lambda: keep_within_capacity(torch.tensor([[0, 3]]), 2, 1), "expert must lie"),
        (lambda: keep_within_capacity(torch.tensor([[0, 1]]), 2, -1), "capacity=-1"),
        (lambda: HashRouter.balanced(torch.tensor([0]), 0, 4), "vocab_size=0"),
        (
            lambda: routing_token_ids(torch.nn.Linear(2, 2), torch.randn(2, 3)).__enter__(),
            "token_ids",
        ),
        (lambda: plot_tokens_per_expert(None, [1, 2]), "stats is a list"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            make()


def test_loss_weights_default_to_zero():
    """A no-aux arm must not get auxiliary losses by forgetting an argument (review sec. 4)."""
    layer = make_moe("switch", 8, 16, 4, expert="mlp")
    assert set(layer.loss_weights.values()) == {0.0}
    _, aux = layer(torch.randn(2, 5, 8))
    assert aux.loss.item() == 0.0 and aux.losses["balance"].item() > 0
    explicit = make_moe("switch", 8, 16, 4, expert="mlp", loss_weights={"balance": 0.01})
    assert explicit.loss_weights == {"balance": 0.01, "z": 0.0, "importance": 0.0, "load": 0.0}

"""Tests of notebook 4.2 (Dehghani et al. 2019): the Universal Transformer module and exercises."""

from __future__ import annotations

import pytest
import torch

import adaedu
from adaedu.exercises import dehghani2019 as ex
from adaedu.halting.universal import (
    BOS,
    EOS,
    FIRST_SYMBOL,
    IGNORE,
    UniversalTransformer,
    VanillaEncoder,
    algorithmic_batch,
    coordinate_embedding,
    evaluate_lengths,
    halting_step,
    sequence_accuracy,
    sinusoid,
    train_algorithmic,
    train_to_bar,
)

V = FIRST_SYMBOL + 5


def test_algorithmic_batch_reverse_and_copy() -> None:
    gen = torch.Generator().manual_seed(0)
    tokens, positions, targets = algorithmic_batch("reverse", 4, 5, 5, gen, max_position=20)
    assert tokens.shape == positions.shape == targets.shape == (4, 7)
    assert (tokens[:, 0] == BOS).all() and (tokens[:, -1] == EOS).all()
    assert torch.equal(targets[:, 1:-1], tokens[:, 1:-1].flip(1))
    assert (targets[:, [0, -1]] == IGNORE).all()
    assert (positions[:, 1:] - positions[:, :-1] == 1).all() and positions.max() <= 19
    tokens, positions, targets = algorithmic_batch("copy", 3, 4, 5, gen)
    assert torch.equal(targets[:, 1:-1], tokens[:, 1:-1]) and (positions[:, 0] == 0).all()
    with pytest.raises(ValueError, match="task"):
        algorithmic_batch("sort", 2, 3, 5, gen)
    with pytest.raises(ValueError, match="max_position"):
        algorithmic_batch("copy", 2, 10, 5, gen, max_position=5)


def test_coordinate_embedding_adds_position_and_step() -> None:
    pos = torch.arange(6)[None]
    p0, p3 = coordinate_embedding(pos, 0, 8), coordinate_embedding(pos, 3, 8)
    assert p0.shape == (1, 6, 8)
    # step 0 adds sin(0) = 0 and cos(0) = 1: the even features are the plain position sines
    assert torch.allclose(p0[..., 0::2], sinusoid(pos, 8)[..., 0::2])
    assert torch.allclose(p0[..., 1::2], sinusoid(pos, 8)[..., 1::2] + 1)
    diff = p3 - p0  # the same vector added at every position
    assert torch.allclose(diff, diff[:, :1].expand_as(diff), atol=1e-6)
    assert not torch.allclose(p3, p0)


def test_halting_step_weights_sum_to_one() -> None:
    gen = torch.Generator().manual_seed(0)
    halting, total = torch.zeros(3, 7), torch.zeros(3, 7)
    for step in range(50):
        p = torch.rand(3, 7, generator=gen) * 0.3
        weight, halting, _ = halting_step(halting, p, 0.0 if step == 49 else 0.99)
        total += weight
    assert torch.allclose(total, torch.ones(3, 7), atol=1e-6)
    w, h, now = halting_step(torch.tensor([0.5, 1.0, 0.2]), torch.tensor([0.6, 0.9, 0.1]), 0.99)
    assert w.tolist() == pytest.approx([0.5, 0.0, 0.1]) and now.tolist() == [True, False, False]
    assert h.tolist() == pytest.approx([1.0, 1.0, 0.3])


def test_ut_act_halts_per_position_and_copies_halted_states() -> None:
    adaedu.seed_everything(0)
    model = UniversalTransformer(V, d_model=16, n_heads=2, d_ff=32, max_steps=6, halting_bias=0.0)
    with torch.no_grad():  # make halting depend strongly on the state
        model.halt.weight.normal_(0, 0.5)
    tokens, positions, _ = algorithmic_batch("copy", 4, 10, 5, torch.Generator().manual_seed(1))
    logits = model(tokens, positions)
    info = model.last_ponder
    assert logits.shape == (4, 12, V)
    assert info.steps.min() >= 1 and info.steps.max() <= 6 and info.loop_steps <= 6
    assert info.steps.std() > 0  # positions halt at different steps
    assert info.loop_steps == int(info.steps.max())
    assert ((info.remainders > 0) & (info.remainders <= 1)).all()
    assert info.ponder_cost.requires_grad  # through the remainders
    # a position that halted at step 1 has the first layer output as its state: changing what
    # later steps do to other positions cannot change the ACT output at a halted position
    model.eval()
    fixed = UniversalTransformer(V, d_model=16, n_heads=2, d_ff=32, max_steps=1, act=False)
    assert fixed(tokens, positions).shape == (4, 12, V)
    assert (fixed.last_ponder.steps == 1).all()


def test_ut_shares_one_layer_and_vanilla_does_not() -> None:
    ut = UniversalTransformer(V, d_model=16, n_heads=2, d_ff=32, max_steps=8)
    van = VanillaEncoder(V, d_model=16, n_heads=2, d_ff=32, n_layers=4)
    layer = sum(p.numel() for p in van.layers[0].parameters())
    ut_params = sum(p.numel() for p in ut.parameters())
    van_params = sum(p.numel() for p in van.parameters())
    assert van_params - ut_params == 3 * layer - (16 + 1)  # 3 more layers, minus the halting unit
    with pytest.raises(ValueError, match="n_heads"):
        UniversalTransformer(V, d_model=16, n_heads=3)
    with pytest.raises(ValueError, match="threshold"):
        UniversalTransformer(V, d_model=16, threshold=1.5)


def test_encoder_is_bidirectional() -> None:
    adaedu.seed_everything(0)
    model = VanillaEncoder(V, d_model=16, n_heads=2, d_ff=32, n_layers=2).eval()
    tokens, positions, _ = algorithmic_batch("copy", 1, 6, 5, torch.Generator().manual_seed(0))
    out = model(tokens, positions)
    changed = tokens.clone()
    changed[0, -2] = FIRST_SYMBOL + (int(tokens[0, -2]) - FIRST_SYMBOL + 1) % 5
    assert not torch.allclose(model(changed, positions)[0, 0], out[0, 0])  # the future is seen


def test_sequence_accuracy() -> None:
    targets = torch.tensor([[IGNORE, 1, 2, IGNORE], [IGNORE, 0, 0, IGNORE]])
    logits = torch.nn.functional.one_hot(torch.tensor([[3, 1, 2, 3], [3, 0, 1, 3]]), 4).float()
    assert sequence_accuracy(logits, targets) == pytest.approx((0.75, 0.5))


def test_training_learns_copy() -> None:
    adaedu.seed_everything(0)
    model = UniversalTransformer(V, d_model=32, n_heads=2, d_ff=64, max_steps=3)
    train_algorithmic(model, "copy", steps=150, batch_size=32, lr=3e-3, n_symbols=5, seed=0)
    (res,) = evaluate_lengths(model, "copy", [8], n_examples=64, n_symbols=5)
    assert res.char_acc > 0.9 and 1 <= res.mean_steps <= 3


@pytest.mark.parametrize("name", ["q1", "q2", "q3"])
def test_exercises_accept_reference_and_unimplemented(name: str) -> None:
    exercise = getattr(ex, name)
    assert exercise.run_check(exercise.reference).passed

    def todo(*args):
        raise NotImplementedError

    assert exercise.run_check(todo).implemented is False


def test_q1_rejects_wrong_answers() -> None:
    assert not ex.q1.run_check(lambda pos, step, d: sinusoid(pos, d)).passed
    assert not ex.q1.run_check(lambda pos, step, d: coordinate_embedding(pos, step + 1, d)).passed
    assert not ex.q1.run_check(
        lambda pos, step, d: torch.cat((sinusoid(pos, d // 2), sinusoid(pos, d // 2)), -1)
    ).passed


def test_q2_rejects_wrong_answers() -> None:
    def p_as_weight(halting, p, threshold):
        w, h, now = halting_step(halting, p, threshold)
        return torch.where(now, p, w), h, now

    def no_copy(halting, p, threshold):
        w, h, now = halting_step(halting, p, threshold)
        return torch.where(halting >= 1, p, w), h, now

    assert not ex.q2.run_check(p_as_weight).passed
    assert "remainder" in ex.q2.run_check(p_as_weight).message
    assert not ex.q2.run_check(no_copy).passed
    assert "copied through" in ex.q2.run_check(no_copy).message


def test_q3_rejects_wrong_answers() -> None:
    def counts_ignored(logits, targets):
        right = logits.argmax(-1) == targets
        return right.float().mean().item(), right.all(1).float().mean().item()

    def mean_not_all(logits, targets):
        c, _ = sequence_accuracy(logits, targets)
        return c, (logits.argmax(-1) == targets)[:, 1:-1].float().mean().item()

    assert "IGNORE" in ex.q3.run_check(counts_ignored).message
    assert "EVERY" in ex.q3.run_check(mean_not_all).message


def test_halt_from_input_reads_the_state_before_the_step() -> None:
    """With max_steps=2 and threshold 0.5, a position halts after step 1 iff p^1 > 0.5, so the
    steps N reveal which state the halting unit read (tensor2tensor: the step's input)."""
    torch.manual_seed(0)
    tokens = torch.randint(FIRST_SYMBOL, V, (4, 9))
    positions = torch.arange(9).expand(4, 9)
    for halt_from in ("updated", "input"):
        torch.manual_seed(1)
        ut = UniversalTransformer(
            V, d_model=16, n_heads=2, d_ff=32, max_steps=2, threshold=0.5, halt_from=halt_from
        )
        with torch.no_grad():
            ut.halt.weight.mul_(20.0)
            ut.halt.bias.zero_()
            ut(tokens, positions)
            x = ut.embed(tokens) + coordinate_embedding(positions, 0, 16)
            p_in = torch.sigmoid(ut.halt(x)).squeeze(-1)
            p_up = torch.sigmoid(ut.halt(ut.layer(x))).squeeze(-1)
        assert ((p_in > 0.5) != (p_up > 0.5)).any()  # the two rules disagree somewhere
        p = p_up if halt_from == "updated" else p_in
        assert torch.equal(ut.last_ponder.steps, torch.where(p > 0.5, 1.0, 2.0))
    with pytest.raises(ValueError, match="halt_from"):
        UniversalTransformer(V, halt_from="before")


def test_train_to_bar_stops_at_the_first_check_that_reaches_the_bar() -> None:
    adaedu.seed_everything(0)
    model = UniversalTransformer(V, d_model=32, n_heads=2, d_ff=64, max_steps=3)
    run = train_to_bar(
        model,
        "copy",
        bar=0.9,
        check_every=25,
        max_steps=400,
        batch_size=32,
        lr=3e-3,
        n_symbols=5,
        n_val=32,
        ponder_weight=0.01,
    )
    assert run.reached and run.final_accuracy >= 0.9 and run.steps < 400
    steps = [s for s, _ in run.checks]
    assert steps == list(range(25, run.steps + 1, 25))  # checked every 25 steps, stopped at once
    assert all(a < 0.9 for _, a in run.checks[:-1])
    # an unreachable bar: trains to the cap, checks at the cap, reports not reached
    adaedu.seed_everything(0)
    model = UniversalTransformer(V, d_model=16, n_heads=2, d_ff=32, max_steps=2)
    run = train_to_bar(model, "reverse", bar=1.0, check_every=10, max_steps=25, n_symbols=5)
    assert not run.reached and run.steps == 25 and [s for s, _ in run.checks] == [10, 20, 25]
    for bad in (dict(bar=0.0), dict(check_every=50, max_steps=10)):
        kw = dict(max_steps=20) | bad
        with pytest.raises(ValueError):
            train_to_bar(model, "copy", **kw)


def test_run_seeds_is_deterministic_and_keeps_an_untrained_control() -> None:
    from adaedu.halting import ut_experiments as ux

    cfg = ux.Config(
        d_model=16,
        n_heads=2,
        ut_max_steps=3,
        n_layers=2,
        ut_cap=20,
        vanilla_cap=20,
        check_every=10,
        bar=0.99,
        batch_size=8,
        n_test=8,
        n_val=8,
        lengths=(4, 16),
    )
    a, b = ux.run_seeds([3], cfg), ux.run_seeds([3], cfg)
    assert a[0].ut_run.checks == b[0].ut_run.checks
    assert set(a[0].results) == {"UT + ACT", "vanilla", "untrained UT"}
    ut, vanilla = ux.load_models(a[0], cfg)
    adaedu.seed_everything(3)
    control, _ = ux.make_models(cfg)  # the seed's initial UT: the control is exactly this model
    assert not torch.equal(ut.layer.qkv.weight, control.layer.qkv.weight)  # trained
    again = evaluate_lengths(control, "reverse", [4, 16], 8, cfg.n_symbols)
    for x, y in zip(again, a[0].results["untrained UT"], strict=True):
        assert x.char_acc == y.char_acc and torch.equal(x.steps, y.steps)
    with pytest.raises(ValueError, match="workers"):
        ux.run_seeds([0], cfg, workers=0)
    with pytest.raises(ValueError, match="seeds"):
        ux.run_seeds([], cfg)

"""Tests of adaedu.precursors.local_experts (notebook 1.1) and its exercises."""

import math

import pytest
import torch
import torch.nn.functional as F

from adaedu.data import load_vowels
from adaedu.exercises import jacobs1991 as ex
from adaedu.precursors import local_experts as le

# A tiny hand-computable case: 2 cases, 2 experts, 2 classes.
GATES = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
PROBS = torch.tensor([[[0.8, 0.2], [0.4, 0.6]], [[0.1, 0.9], [0.3, 0.7]]])
LABELS = torch.tensor([0, 1])


@pytest.fixture(scope="module")
def vowels():
    return load_vowels()


# --- the model ---------------------------------------------------------------------------------


def test_gates_and_expert_outputs_are_distributions():
    torch.manual_seed(0)
    model = le.MixtureOfExperts(2, 4, 8)
    gates, probs = model(torch.randn(32, 2))
    assert gates.shape == (32, 8) and probs.shape == (32, 8, 4)
    assert torch.allclose(gates.sum(dim=1), torch.ones(32))
    assert torch.allclose(probs.sum(dim=2), torch.ones(32, 8))
    assert (gates > 0).all()
    assert isinstance(model.experts, torch.nn.ModuleList) and len(model.experts) == 8


def test_linear_experts_are_unconstrained():
    torch.manual_seed(0)
    _, outputs = le.MixtureOfExperts(2, 3, 2, expert_outputs="linear")(5 * torch.randn(16, 2))
    assert not torch.allclose(outputs.sum(dim=2), torch.ones(16, 2))
    assert (outputs < 0).any()


def test_mlp_shapes_and_hidden_units():
    mlp = le.MLP(2, 6, 4)
    assert mlp(torch.randn(5, 2)).shape == (5, 4)
    assert mlp.hidden.out_features == 6


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_experts=0), dict(n_classes=1), dict(in_features=0), dict(expert_outputs="relu")],
)
def test_mixture_rejects_impossible_sizes(kwargs):
    args = dict(in_features=2, n_classes=4, n_experts=4) | kwargs
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        le.MixtureOfExperts(**args)


def test_forward_rejects_wrong_input_width():
    with pytest.raises(ValueError, match="x has shape"):
        le.MixtureOfExperts(2, 4, 4)(torch.randn(3, 5))
    with pytest.raises(ValueError, match="hidden"):
        le.MLP(2, 0, 4)


# --- the error functions -------------------------------------------------------------------------


def test_mixture_output_by_hand():
    expected = torch.tensor([[0.7, 0.3], [0.2, 0.8]])  # 0.75*0.8+0.25*0.4, ...
    assert torch.allclose(le.mixture_output(GATES, PROBS), expected)


def test_cooperative_loss_by_hand():
    # blends (0.7, 0.3) vs d=(1,0): 0.09+0.09; (0.2, 0.8) vs d=(0,1): 0.04+0.04
    assert le.cooperative_loss(GATES, PROBS, LABELS).item() == pytest.approx((0.18 + 0.08) / 2)


def test_competitive_loss_by_hand():
    # case 1: 0.75*0.8 + 0.25*0.4 = 0.7; case 2: 0.5*0.9 + 0.5*0.7 = 0.8
    expected = -(math.log(0.7) + math.log(0.8)) / 2
    assert le.competitive_loss(GATES, PROBS, LABELS).item() == pytest.approx(expected, rel=1e-6)


def test_gaussian_loss_by_hand():
    # case 1: ||d - o||^2 = 0.08 and 0.72; case 2: 0.02 and 0.18
    like1 = 0.75 * math.exp(-0.04) + 0.25 * math.exp(-0.36)
    like2 = 0.5 * math.exp(-0.01) + 0.5 * math.exp(-0.09)
    expected = -(math.log(like1) + math.log(like2)) / 2
    assert le.gaussian_mixture_loss(GATES, PROBS, LABELS).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_one_expert_competitive_loss_is_cross_entropy():
    torch.manual_seed(1)
    logits, labels = torch.randn(10, 4), torch.randint(0, 4, (10,))
    loss = le.competitive_loss(torch.ones(10, 1), F.softmax(logits, -1).unsqueeze(1), labels)
    assert torch.allclose(loss, F.cross_entropy(logits, labels), atol=1e-6)


def test_responsibilities_are_a_posterior():
    h = le.responsibilities(GATES, PROBS, LABELS)
    assert torch.allclose(h.sum(dim=1), torch.ones(2))
    assert torch.allclose(h[0], torch.tensor([0.6 / 0.7, 0.1 / 0.7]))


@pytest.mark.parametrize(
    "loss", [le.competitive_loss, le.cooperative_loss, le.gaussian_mixture_loss]
)
def test_gradients_reach_every_expert_and_the_gate(loss):
    torch.manual_seed(0)
    model = le.MixtureOfExperts(2, 4, 3)
    loss(*model(torch.randn(20, 2)), torch.randint(0, 4, (20,))).backward()
    for p in model.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "loss", [le.competitive_loss, le.cooperative_loss, le.gaussian_mixture_loss]
)
def test_losses_reject_bad_arguments(loss):
    with pytest.raises(ValueError, match="labels range"):
        loss(GATES, PROBS, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="labels"):
        loss(GATES, PROBS, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="one label per case"):
        loss(GATES, PROBS, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="same cases N and experts E"):
        loss(GATES[:, :1], PROBS, LABELS)
    with pytest.raises(ValueError, match="gates has shape"):
        loss(GATES.flatten(), PROBS, LABELS)
    with pytest.raises(ValueError, match="3-d tensor"):
        loss(GATES, PROBS[:, :, 0], LABELS)


# --- gate statistics and the criterion -------------------------------------------------------------


def test_gate_usage_and_experts_in_use():
    gates = torch.tensor([[0.9, 0.08, 0.02], [0.1, 0.88, 0.02], [0.5, 0.46, 0.04]])
    assert torch.allclose(le.gate_usage(gates), torch.tensor([0.5, 1.42 / 3, 0.08 / 3]))
    assert le.experts_in_use(gates, 0.05) == 2
    assert le.experts_in_use(gates, 0.48) == 1
    with pytest.raises(ValueError, match="threshold"):
        le.experts_in_use(gates, 1.5)
    with pytest.raises(ValueError, match="gates has 0 cases"):
        le.gate_usage(torch.zeros(0, 3))


def test_experts_per_case_extremes():
    assert le.experts_per_case(torch.eye(4)).item() == pytest.approx(1.0)
    assert le.experts_per_case(torch.full((5, 4), 0.25)).item() == pytest.approx(4.0)


def test_system_rejects_unknown_objective():
    with pytest.raises(ValueError, match="objective"):
        le.System("bad", le.MLP, "hinge")
    with pytest.raises(ValueError, match="gates has 0 cases"):
        le.experts_per_case(torch.zeros(0, 3))


def test_hit_rate():
    scores = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    assert le.hit_rate(scores, torch.tensor([0, 1, 1])).item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="scores has shape"):
        le.hit_rate(scores.flatten(), torch.tensor([0, 1, 1]))


def test_epochs_to_criterion_counts_failures_as_inf():
    hits = torch.tensor(
        [[0.2, 0.3, 0.5], [0.7, 0.9, 0.6], [0.9, 0.95, 0.7]]
    )  # (T=3 epochs, R=3 runs)
    result = le.epochs_to_criterion(hits, 0.88)
    assert result[0].item() == 2 and result[1].item() == 1 and math.isinf(result[2].item())
    assert le.epochs_to_criterion(torch.tensor([0.9, 0.1]), 0.88).item() == 0
    with pytest.raises(ValueError, match="criterion"):
        le.epochs_to_criterion(hits, 0.0)
    with pytest.raises(ValueError, match="hit_rates"):
        le.epochs_to_criterion(torch.zeros(2, 2, 2), 0.5)


def test_select_learning_rate_prefers_reliable_rates():
    epochs = torch.tensor([10.0, math.inf, 12.0, math.inf, 30.0, 31.0])
    best, medians = le.select_learning_rate(epochs, [1.0, 1.0, 1.0, 4.0, 0.5, 0.5])
    assert best == 1.0 and medians[4.0] == math.inf and medians[0.5] == 30.0


# --- the data and the trainer --------------------------------------------------------------------------


def test_vowel_split_is_standardised_and_by_speaker(vowels):
    split = le.vowel_split(vowels, n_train=50, seed=3)
    assert split.x_train.shape == (400, 2) and split.x_test.shape == (208, 2)
    assert torch.allclose(split.x_train.mean(dim=0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(split.x_train.std(dim=0), torch.ones(2), atol=1e-5)
    f1, f2 = torch.tensor([500.0]), torch.tensor([1500.0])
    expected = (torch.tensor([500.0, 1500.0]).log() - split.mean) / split.std
    assert torch.allclose(split.features(f1, f2)[0], expected)
    with pytest.raises(ValueError, match="positive"):
        split.features(torch.tensor([0.0]), f2)


def test_train_to_criterion_matches_one_plain_run(vowels):
    """The stacked trainer gives each run exactly the plain full-batch SGD updates of its own lr."""
    splits = [le.vowel_split(vowels, 50, s) for s in (0, 1)]
    system = le.System("4 softmax experts", lambda: le.MixtureOfExperts(2, 4, 4), "competitive")
    runs = le.train_to_criterion(
        system.make, system.objective, splits, [0, 1], [0.5, 2.0], criterion=1.0, max_epochs=15
    )
    assert runs.hit_rates.shape == (16, 2) and torch.isinf(runs.epochs).all()
    torch.manual_seed(1)
    model = system.make()
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    for _ in range(15):
        opt.zero_grad()
        le.competitive_loss(*model(splits[1].x_train), splits[1].y_train).backward()
        opt.step()
    for p, q in zip(model.parameters(), runs.models[1].parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


def test_train_to_criterion_freezes_runs_at_the_criterion(vowels):
    splits = [le.vowel_split(vowels, 50, s) for s in (0, 1, 2)]
    system = le.vowel_systems()["MLP 6 hidden, CE"]
    runs = le.train_to_criterion(
        system.make, system.objective, splits, [0, 1, 2], [2.0] * 3, criterion=0.8, max_epochs=200
    )
    assert torch.isfinite(runs.epochs).all()
    for r in range(3):
        reached = int(runs.epochs[r])
        assert runs.hit_rates[reached, r] >= 0.8 and (runs.hit_rates[:reached, r] < 0.8).all()
        final = le.hit_rate(F.softmax(runs.models[r](splits[r].x_train), -1), splits[r].y_train)
        assert final.item() == pytest.approx(runs.hit_rates[reached, r].item())


def test_train_to_criterion_rejects_bad_arguments(vowels):
    split = le.vowel_split(vowels, 50, 0)
    make = le.vowel_systems()["4 experts"].make
    with pytest.raises(ValueError, match="equal"):
        le.train_to_criterion(
            make, "competitive", [split], [0, 1], [1.0], criterion=0.9, max_epochs=5
        )
    with pytest.raises(ValueError, match="objective"):
        le.train_to_criterion(make, "hinge", [split], [0], [1.0], criterion=0.9, max_epochs=5)
    with pytest.raises(ValueError, match="lrs"):
        le.train_to_criterion(make, "competitive", [split], [0], [0.0], criterion=0.9, max_epochs=5)
    with pytest.raises(ValueError, match="max_epochs"):
        le.train_to_criterion(make, "competitive", [split], [0], [1.0], criterion=0.9, max_epochs=0)


def test_tune_and_train_small(vowels):
    result = le.tune_and_train(
        le.vowel_systems()["4 experts"],
        vowels,
        lr_grid=[1.0, 4.0],
        tune_seeds=[100],
        eval_seeds=[0, 1],
        criterion=0.8,
        max_epochs=100,
    )
    assert result.lr in (1.0, 4.0) and set(result.lr_medians) == {1.0, 4.0}
    assert result.gate_usage.shape == (2, 4)
    assert torch.allclose(result.gate_usage.sum(dim=1), torch.ones(2), atol=1e-5)
    assert ((result.test_hit > 0.5) & (result.test_hit <= 1)).all()
    with pytest.raises(ValueError, match="disjoint"):
        le.tune_and_train(
            le.vowel_systems()["4 experts"],
            vowels,
            lr_grid=[1.0],
            tune_seeds=[0],
            eval_seeds=[0],
            criterion=0.8,
            max_epochs=5,
        )


def test_train_snapshots_and_gate_partition(vowels):
    split = le.vowel_split(vowels, 50, 0)
    snaps = le.train_snapshots(
        le.vowel_systems()["8 experts"], split, seed=0, lr=1.0, epochs=[0, 5]
    )
    assert list(snaps) == [0, 5]
    first, later = (list(m.parameters())[0] for m in snaps.values())
    assert not torch.equal(first, later)
    grid = le.gate_partition(
        snaps[5], split, torch.tensor([300.0, 500.0, 800.0]), torch.tensor([1000.0, 2500.0])
    )
    expert, top_gate = grid
    assert expert.shape == top_gate.shape == (2, 3) and expert.max() < 8
    assert ((top_gate >= 1 / 8) & (top_gate <= 1)).all()
    with pytest.raises(ValueError, match="MixtureOfExperts"):
        le.gate_partition(le.MLP(2, 6, 4), split, torch.tensor([300.0]), torch.tensor([1000.0]))


def test_vowel_systems_are_the_papers_regime():
    systems = le.vowel_systems()
    torch.manual_seed(0)
    for name in ("4 experts", "8 experts", "8 experts, cooperative"):
        model = systems[name].make()
        assert model.expert_outputs == "linear"  # eq. 1.1 and 1.3 need unconstrained outputs
    assert systems["4 experts"].objective == systems["8 experts"].objective == "gaussian"
    assert systems["8 experts, cooperative"].objective == "cooperative"
    for name in ("BP 6 hidden", "BP 12 hidden"):
        assert isinstance(systems[name].make(), le.LogisticMLP)
        assert systems[name].objective == "squared_error"


def test_logistic_mlp_outputs_are_logistic_units():
    torch.manual_seed(0)
    mlp = le.LogisticMLP(2, 6, 4)
    out = mlp(5 * torch.randn(64, 2))
    assert out.shape == (64, 4) and ((out > 0) & (out < 1)).all()
    assert not torch.allclose(out.sum(dim=1), torch.ones(64))  # not a softmax
    h = torch.sigmoid(mlp.hidden(torch.ones(1, 2)))
    assert torch.allclose(mlp(torch.ones(1, 2)), torch.sigmoid(mlp.out(h)))
    with pytest.raises(ValueError, match="hidden"):
        le.LogisticMLP(2, 0, 4)


def test_squared_error_by_hand():
    out = torch.tensor([[0.8, 0.1], [0.5, 0.5]])
    # case 1: (1 - .8)^2 + .1^2 = 0.05; case 2: .5^2 + (1 - .5)^2 = 0.5; mean 0.275
    assert le.squared_error(out, torch.tensor([0, 1])).item() == pytest.approx(0.275)
    blend = le.mixture_output(GATES, PROBS)
    assert le.squared_error(blend, LABELS).item() == pytest.approx(
        le.cooperative_loss(GATES, PROBS, LABELS).item()
    )  # eq. 1.1 is the squared error of the blend
    with pytest.raises(ValueError, match="outputs"):
        le.squared_error(torch.zeros(3), torch.tensor([0, 1, 1]))


def test_epochs_to_criterion_below_for_errors():
    errors = torch.tensor([[0.9, 0.5], [0.3, 0.4], [0.1, 0.35]])
    result = le.epochs_to_criterion(errors, 0.32, below=True)
    assert result[0].item() == 1 and math.isinf(result[1].item())
    assert le.epochs_to_criterion(errors, 1.5, below=True).tolist() == [0.0, 0.0]  # > 1 allowed
    with pytest.raises(ValueError, match="criterion"):
        le.epochs_to_criterion(errors, 0.0, below=True)


def test_train_to_criterion_stops_on_the_error(vowels):
    splits = [le.vowel_split(vowels, 50, s) for s in (0, 1)]
    system = le.vowel_systems()["BP 6 hidden"]
    runs = le.train_to_criterion(
        system.make,
        "squared_error",
        splits,
        [0, 1],
        [8.0, 8.0],
        criterion=0.5,
        max_epochs=300,
        stop="error",
    )
    assert torch.isfinite(runs.epochs).all() and runs.errors.shape == runs.hit_rates.shape
    for r in range(2):
        reached = int(runs.epochs[r])
        assert runs.errors[reached, r] <= 0.5 and (runs.errors[:reached, r] > 0.5).all()
        final = le.squared_error(runs.models[r](splits[r].x_train), splits[r].y_train)
        assert final.item() == pytest.approx(runs.errors[reached, r].item(), abs=1e-6)
    with pytest.raises(ValueError, match="stop"):
        le.train_to_criterion(
            system.make,
            "squared_error",
            splits[:1],
            [0],
            [1.0],
            criterion=0.5,
            max_epochs=5,
            stop="loss",
        )


def test_train_to_criterion_stops_diverged_runs(vowels):
    """A run whose error turns nan stops as a failure (inf) and does not spoil the others."""
    splits = [le.vowel_split(vowels, 50, s) for s in (0, 1)]
    system = le.vowel_systems()["4 experts"]
    runs = le.train_to_criterion(
        system.make,
        "gaussian",
        splits,
        [0, 1],
        [1.0, 1e4],
        criterion=0.32,
        max_epochs=2000,
        stop="error",
    )
    assert math.isfinite(runs.epochs[0].item()) and math.isinf(runs.epochs[1].item())
    assert runs.errors.shape[0] < 2001  # it did not run to the cap
    assert all(torch.isfinite(p).all() for p in runs.models[0].parameters())


# --- the exercises ---------------------------------------------------------------------------------


def _not_implemented(*args):
    raise NotImplementedError


def _one_hot(labels, c):
    return F.one_hot(labels, c).float()


WRONG = {
    "q1": [
        # eq. 1.2 instead of eq. 1.1
        lambda g, o, y: (
            (g * ((_one_hot(y, o.shape[2]).unsqueeze(1) - o) ** 2).sum(-1)).sum(1).mean()
        ),
        # experts averaged with equal weights
        lambda g, o, y: ((_one_hot(y, o.shape[2]) - o.mean(1)) ** 2).sum(-1).mean(),
        # summed over cases
        lambda g, o, y: ((_one_hot(y, o.shape[2]) - (g.unsqueeze(-1) * o).sum(1)) ** 2).sum(),
    ],
    "q2": [
        # no 1/2
        lambda g, o, y: (
            -(g * torch.exp(-((_one_hot(y, o.shape[2]).unsqueeze(1) - o) ** 2).sum(-1)))
            .sum(1)
            .log()
            .mean()
        ),
        # log inside the sum
        lambda g, o, y: (
            (g * 0.5 * ((_one_hot(y, o.shape[2]).unsqueeze(1) - o) ** 2).sum(-1)).sum(1).mean()
        ),
        # sign flipped
        lambda g, o, y: le.gaussian_mixture_loss(g, o, y) * -1,
    ],
    "q3": [
        lambda g, t: int(g.argmax(dim=1).unique().numel()),  # experts winning some case
        lambda g, t: int((g > t).any(dim=0).sum()),  # above the threshold on some case
        lambda g, t: int((g.sum(dim=0) > t).sum()),  # summed instead of averaged
    ],
}


@pytest.mark.parametrize("name", ["q1", "q2", "q3"])
def test_exercise_accepts_the_reference(name):
    exercise = getattr(ex, name)
    assert exercise.run_check(exercise.reference).passed


@pytest.mark.parametrize("name", ["q1", "q2", "q3"])
def test_exercise_rejects_plausible_mistakes_with_an_explanation(name):
    exercise = getattr(ex, name)
    for wrong in WRONG[name]:
        result = exercise.run_check(wrong)
        assert not result.passed and result.implemented
        assert "you" in result.message or "expected" in result.message


@pytest.mark.parametrize("name", ["q1", "q2", "q3"])
def test_exercise_reports_not_implemented(name):
    result = getattr(ex, name).run_check(_not_implemented)
    assert not result.passed and result.implemented is False


def test_exercise_diagnoses_name_the_mistake():
    msg = ex.q1.run_check(WRONG["q1"][0]).message
    assert "eq. 1.2" in msg
    msg = ex.q1.run_check(WRONG["q1"][1]).message
    assert "gate" in msg
    msg = ex.q2.run_check(WRONG["q2"][1]).message
    assert "log inside" in msg
    msg = ex.q3.run_check(WRONG["q3"][1]).message
    assert "SOME case" in msg

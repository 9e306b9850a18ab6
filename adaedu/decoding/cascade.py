"""An LLM cascade with a learned reliability scorer, at laptop scale (notebook 5.3).

Chen, Zaharia & Zou (2023), *FrugalGPT: How to Use Large Language Models While Reducing Cost and
Improving Performance*, https://arxiv.org/abs/2305.05176, Section 3 ("LLM cascade"). A list of
models of increasing cost answers a query in turn; after model ``i`` answers, a scoring function
``g(q, a) in [0, 1]`` estimates how reliable the answer is, and the cascade stops and returns
it if ``g > tau_i``; the last model always answers. The cost of a query is the sum of the costs
of the models it visited. The paper chooses the models, their order and the thresholds by
solving (eq. 1) on training data:

    max_{L, tau}  E[ r(a, f_L(q)) ]   subject to   E[ c(L, tau, q) ] <= b

Here the "APIs" are digit classifiers of increasing size trained in the notebook (no LLM, no
download), their price is their measured forward FLOPs per query, and the search is a grid search
over thresholds for every subset of the models kept in increasing-cost order (the paper also
searches other orders and uses a mixed-integer solver).

- :func:`load_frugal_splits`, :func:`make_models`, :func:`fit_classifier`, :func:`predict_proba`
  the "APIs": models, four disjoint splits;
- :func:`answer_features`, :func:`fit_scorer`, :func:`scorer_probability` the scorer ``g``;
- :func:`route`, :func:`evaluate_cascade` the cascade itself (stop rule and cost);
- :func:`search_thresholds`, :func:`best_under_budget` (eq. 1), :func:`cheapest_meeting` (the
  earlier rule, kept for comparison), :func:`pareto_front` the optimisation;
- :func:`run_frugal` the whole experiment for one seed; :func:`gap_by_base_image` the unit of
  the test-set bootstrap (``adaedu.claims.mean_interval``), the base image.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaedu.checks import check_int
from adaedu.compute import forward_flops

#: Sizes of the four disjoint splits of the 1797 digits (the rest is the test split).
SPLIT_SIZES = {"train": 700, "scorer": 300, "validation": 300}
MODEL_NAMES = ("linear", "MLP", "CNN")
CANVAS = 10


@dataclass
class Split:
    """Digit images ``x`` (n, canvas, canvas), pixels in [0, 1], labels ``y`` (n,) and, for each
    image, the index ``base`` of the digit it is a shifted copy of (within the split)."""

    x: Tensor
    y: Tensor
    base: Tensor | None = None


def shift_into_canvas(images: Tensor, canvas: int, gen: torch.Generator) -> Tensor:
    """Paste each (8, 8) image at a random offset into a zero ``canvas x canvas`` image: a
    harder task on which capacity (and translation equivariance) pays, so that the three models
    differ in quality as well as in cost."""
    if canvas < 8:
        raise ValueError(f"canvas={canvas}; allowed values: >= 8")
    out = images.new_zeros(len(images), canvas, canvas)
    offsets = torch.randint(0, canvas - 7, (len(images), 2), generator=gen)
    for i, (r, c) in enumerate(offsets.tolist()):
        out[i, r : r + 8, c : c + 8] = images[i]
    return out


def load_frugal_splits(
    seed: int = 0, canvas: int = CANVAS, train_copies: int = 4, eval_copies: int = 1
) -> dict[str, Split]:
    """sklearn's bundled digits, shuffled with ``seed`` and cut into four disjoint splits of base
    images: ``train`` (fits the models), ``scorer`` (fits g), ``validation`` (chooses the
    thresholds), ``test`` (reports); sizes in :data:`SPLIT_SIZES`, test = the remaining 497 base
    images. Every image is shifted at random into a ``canvas``-sized image
    (:func:`shift_into_canvas`); each training image appears ``train_copies`` times and each image
    of the three other splits ``eval_copies`` times, with independent shifts. ``Split.base`` says
    which base image a query comes from (copies of one digit are not independent queries)."""
    from sklearn.datasets import load_digits

    if train_copies < 1:
        raise ValueError(f"train_copies={train_copies}; allowed values: >= 1")
    if not isinstance(eval_copies, int) or eval_copies < 1:
        raise ValueError(f"eval_copies={eval_copies!r}; allowed values: an integer >= 1")
    digits = load_digits()
    gen = torch.Generator().manual_seed(seed)
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=gen)
    x, y = x[order], y[order]
    splits, start = {}, 0
    for name, size in [*SPLIT_SIZES.items(), ("test", len(y))]:
        xs, ys = x[start : start + size], y[start : start + size]
        copies = train_copies if name == "train" else eval_copies
        base = torch.arange(len(ys)).repeat(copies)
        splits[name] = Split(shift_into_canvas(xs[base], canvas, gen), ys[base], base)
        start += size
    return splits


class _Flatten(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


def make_models(canvas: int = CANVAS, hidden: int = 256, channels: int = 16) -> list[nn.Module]:
    """Three classifiers of increasing capacity and cost, all taking (B, canvas, canvas) images:
    multinomial logistic regression, a one-hidden-layer MLP, and a two-layer CNN."""
    canvas, hidden, channels = (
        check_int(name, value)
        for name, value in (("canvas", canvas), ("hidden", hidden), ("channels", channels))
    )
    pixels = canvas * canvas
    linear = nn.Sequential(_Flatten(), nn.Linear(pixels, 10))
    mlp = nn.Sequential(_Flatten(), nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    cnn = nn.Sequential(
        nn.Unflatten(1, (1, canvas)),
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.ReLU(),
        _Flatten(),
        nn.Linear(2 * channels * pixels, 10),
    )
    return [linear, mlp, cnn]


def fit_classifier(
    model: nn.Module,
    data: Split,
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """Adam on the cross-entropy, ``epochs`` passes over ``data`` in shuffled mini-batches."""
    if epochs < 0:
        raise ValueError(f"epochs={epochs}; allowed values: >= 0")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(data.y), generator=gen).split(batch_size):
            loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict_proba(model: nn.Module, x: Tensor) -> Tensor:
    """Class probabilities (n, 10) of ``model`` on images ``x``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model is a {type(model).__name__}; allowed values: an nn.Module")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x is {got}; allowed values: a float tensor of images (n, ...)")
    try:
        logits = model.eval()(x)
    except RuntimeError as err:
        raise ValueError(
            f"x has shape {tuple(x.shape)}, which model rejects ({err}); allowed values: the "
            "input shape the model expects, (n, canvas, canvas) for make_models"
        ) from err
    if logits.dim() != 2 or logits.shape[0] != len(x):
        raise ValueError(
            f"model maps x {tuple(x.shape)} to {tuple(logits.shape)}; allowed values: a model "
            f"giving logits of shape ({len(x)}, n_classes)"
        )
    return logits.softmax(-1)


def answer_features(probs: Tensor, x: Tensor | None = None) -> Tensor:
    """Features of (query, answer) for the scorer: max probability, margin between the top two
    probabilities, entropy (nats), the answer as a one-hot vector, and (if given) the query's
    pixels. The paper's scorer is a DistilBERT on the text of query and answer; ours sees the
    answering model's output distribution and the query."""
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs.shape={tuple(probs.shape)}; allowed: (n, n_classes >= 2)")
    top2 = probs.topk(2, dim=-1).values
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    answer = F.one_hot(probs.argmax(-1), probs.shape[1]).float()
    parts = [top2[:, :1], top2[:, :1] - top2[:, 1:], entropy[:, None], answer]
    if x is not None:
        parts.append(x.flatten(1))
    return torch.cat(parts, dim=1)


@dataclass
class Scorer:
    """Logistic regression ``g(q, a) = sigmoid(w . standardise(phi(q, a)) + b)``."""

    weight: Tensor
    bias: Tensor
    mean: Tensor
    std: Tensor

    def __call__(self, features: Tensor) -> Tensor:
        return scorer_probability(self, features)


def fit_scorer(
    features: Tensor, correct: Tensor, steps: int = 300, weight_decay: float = 1e-2
) -> Scorer:
    """Fit the reliability scorer on a split the models never saw: a logistic regression that
    predicts ``correct`` (1 if the model's answer equals the label) from ``features``."""
    _check_scorer_data(features, correct, steps, weight_decay)
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    z = (features - mean) / std
    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    target = correct.float()
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(z @ w + b, target)
        loss = loss + weight_decay * (w**2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Scorer(w.detach(), b.detach(), mean, std)


def _check_scorer_data(features: Tensor, correct: Tensor, steps: int, weight_decay: float) -> None:
    """The argument checks of :func:`fit_scorer` (issue 10)."""
    if not isinstance(features, Tensor) or features.dim() != 2 or len(features) < 2:
        got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features is {got}; allowed values: a 2-d tensor (n >= 2, d)")
    if not isinstance(correct, Tensor) or correct.shape != (len(features),):
        got = tuple(correct.shape) if isinstance(correct, Tensor) else type(correct).__name__
        raise ValueError(
            f"correct is {got}; allowed values: a tensor of shape ({len(features)},), "
            "one flag per row of features"
        )
    check_int("steps", steps)
    if not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
        raise ValueError(f"weight_decay={weight_decay!r}; allowed values: a number >= 0")


def scorer_probability(scorer: Scorer, features: Tensor) -> Tensor:
    """``g(q, a)`` in [0, 1] for each row of ``features``."""
    z = (features - scorer.mean) / scorer.std
    return torch.sigmoid(z @ scorer.weight + scorer.bias)


def route(scores: Tensor, thresholds: Tensor) -> Tensor:
    """The cascade's stop rule (FrugalGPT Section 3): the index of the stage that answers each
    query, the first ``i`` with ``g_i > tau_i``, or the last stage if none.

    ``scores`` (k, n): the scorer's value for stage i's answer to query j; ``thresholds`` (k - 1,):
    one per stage except the last, which always answers."""
    k = scores.shape[0]
    if thresholds.shape != (k - 1,):
        raise ValueError(f"thresholds.shape={tuple(thresholds.shape)}; allowed: ({k - 1},)")
    accept = scores[:-1] > thresholds[:, None]  # (k-1, n): stage i would stop
    accept = torch.cat([accept, torch.ones_like(scores[:1], dtype=torch.bool)])
    return accept.float().argmax(0)  # first True (argmax returns the first maximum)


@dataclass
class CascadeResult:
    """Per-query outcome of one cascade: answering stage, correctness, cost (sum of visited)."""

    stage: Tensor
    correct: Tensor
    cost: Tensor

    @property
    def accuracy(self) -> float:
        return self.correct.float().mean().item()

    @property
    def mean_cost(self) -> float:
        return self.cost.mean().item()


def evaluate_cascade(
    correct: Tensor, scores: Tensor, costs: Tensor, thresholds: Tensor
) -> CascadeResult:
    """Run the cascade on recorded answers: ``correct``/``scores`` (k, n) per stage and query,
    ``costs`` (k,) per stage. A query answered by stage i paid ``costs[0] + ... + costs[i]``."""
    if correct.shape != scores.shape or costs.shape != (scores.shape[0],):
        raise ValueError(
            f"shapes correct={tuple(correct.shape)}, scores={tuple(scores.shape)}, "
            f"costs={tuple(costs.shape)}; allowed: (k, n), (k, n), (k,)"
        )
    stage = route(scores, thresholds)
    paid = costs.cumsum(0)[stage]  # every visited model is paid
    return CascadeResult(stage, correct[stage, torch.arange(scores.shape[1])], paid)


@dataclass
class Config:
    """One cascade: the models used (indices into the full list, increasing cost), the
    thresholds of all but the last, and its accuracy and mean cost on the split evaluated."""

    models: tuple[int, ...]
    thresholds: tuple[float, ...]
    accuracy: float
    mean_cost: float


def search_thresholds(correct: Tensor, scores: Tensor, costs: Tensor, grid: Tensor) -> list[Config]:
    """Every cascade over every non-empty subset of the models, kept in increasing-cost order,
    with every combination of thresholds from ``grid``: our simplification of the paper's
    optimisation (eq. 1), which also searches orders and uses a solver. Single models are the
    one-element subsets."""
    if (
        not isinstance(grid, Tensor)
        or grid.dim() != 1
        or len(grid) == 0
        or not grid.isfinite().all()
    ):
        got = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
        raise ValueError(f"grid is {got}; allowed values: a non-empty 1-d tensor of finite taus")
    k = scores.shape[0]
    found = []
    for size in range(1, k + 1):
        for models in itertools.combinations(range(k), size):
            idx = list(models)
            for taus in itertools.product(grid.tolist(), repeat=size - 1):
                res = evaluate_cascade(correct[idx], scores[idx], costs[idx], torch.tensor(taus))
                found.append(Config(models, tuple(taus), res.accuracy, res.mean_cost))
    return found


def best_under_budget(configs: list[Config], budget: float) -> Config:
    """The paper's eq. 1 on the split the configurations were scored on: the most accurate
    configuration whose mean cost is at most ``budget`` (ties: the cheaper)."""
    _check_configs(configs, "budget", budget)
    ok = [c for c in configs if c.mean_cost <= budget]
    if not ok:
        cheapest = min(c.mean_cost for c in configs)
        raise ValueError(
            f"budget={budget}; no configuration in configs is that cheap; allowed values: "
            f"budget >= the cheapest mean_cost in configs, {cheapest}"
        )
    return max(ok, key=lambda c: (c.accuracy, -c.mean_cost))


def cheapest_meeting(configs: list[Config], target: float) -> Config:
    """The cheapest configuration whose accuracy is at least ``target`` (ties: more accurate):
    the dual of eq. 1, which an earlier version of notebook 5.3 used (it over-fits a small
    validation split when ``target`` is itself a validation estimate)."""
    _check_configs(configs, "target", target)
    ok = [c for c in configs if c.accuracy >= target]
    if not ok:
        best = max(c.accuracy for c in configs)
        raise ValueError(
            f"target={target}; no configuration in configs reaches it; allowed values: "
            f"target <= the best accuracy in configs, {best}"
        )
    return min(ok, key=lambda c: (c.mean_cost, -c.accuracy))


def _check_configs(
    configs: list[Config], name: str = "", value: float = 0.0, allow_empty: bool = False
) -> None:
    """``configs`` must be a (non-empty unless ``allow_empty``) list of :class:`Config`, and the
    number ``name=value`` (a budget or target) not NaN (issue 10)."""
    if not isinstance(configs, (list, tuple)) or not all(isinstance(c, Config) for c in configs):
        got = type(configs).__name__
        raise TypeError(f"configs is a {got}; allowed values: a list of Config (search_thresholds)")
    if not configs and not allow_empty:
        raise ValueError(
            f"configs is empty, so no configuration meets {name}={value}; allowed values: a "
            "non-empty list of Config (from search_thresholds)"
        )
    if name and (not isinstance(value, (int, float)) or math.isnan(value)):
        raise ValueError(f"{name}={value!r}; allowed values: a number (not NaN)")


def pareto_front(configs: list[Config]) -> list[Config]:
    """The configurations no other one beats on both cost and accuracy, by increasing cost."""
    _check_configs(configs, allow_empty=True)
    front, best = [], -1.0
    for c in sorted(configs, key=lambda c: (c.mean_cost, -c.accuracy)):
        if c.accuracy > best:
            front.append(c)
            best = c.accuracy
    return front


@dataclass
class FrugalRun:
    """Everything the notebook plots for one seed."""

    costs: Tensor  # (3,) FLOPs per query of each model
    correct: dict[str, Tensor]  # split -> (3, n) bool
    scores: dict[str, Tensor]  # split -> (3, n) g values
    configs: list[Config]  # all cascades, scored on validation
    best_model: int  # index of the best single model on validation
    chosen: Config  # the operating point, chosen on validation (eq. 1 with budget b)
    budget: float = float("nan")  # b, FLOPs per query: budget_fraction x the best model's cost
    base: dict[str, Tensor] | None = None  # split -> base-image index of every query


def run_frugal(
    seed: int,
    epochs: int,
    grid: Tensor,
    scorer_steps: int = 300,
    *,
    eval_copies: int = 1,
    budget_fraction: float = 0.4,
) -> FrugalRun:
    """The notebook's experiment for one seed: split (``eval_copies`` shifted copies of every
    scorer, validation and test digit), train the three models on ``train``, fit one scorer per
    model on ``scorer``, search thresholds on ``validation``, and choose the operating point by
    eq. 1 on validation: the most accurate cascade whose mean cost is at most
    ``budget_fraction`` x the cost of the best single model (best on validation)."""
    if not 0 < budget_fraction <= 1:
        raise ValueError(f"budget_fraction={budget_fraction!r}; allowed values: in (0, 1]")
    torch.manual_seed(seed)
    splits = load_frugal_splits(seed, eval_copies=eval_copies)
    models = [fit_classifier(m, splits["train"], epochs, seed=seed) for m in make_models()]
    probe = splits["test"].x[:8]
    costs = torch.tensor([forward_flops(m, probe) for m in models])
    correct, feats = {}, {}
    for name in ("scorer", "validation", "test"):
        s = splits[name]
        probs = [predict_proba(m, s.x) for m in models]
        correct[name] = torch.stack([p.argmax(-1) == s.y for p in probs])
        feats[name] = [answer_features(p, s.x) for p in probs]
    scorers = [fit_scorer(feats["scorer"][i], correct["scorer"][i], scorer_steps) for i in range(3)]
    scores = {
        name: torch.stack([scorers[i](feats[name][i]) for i in range(3)])
        for name in ("validation", "test")
    }
    configs = search_thresholds(correct["validation"], scores["validation"], costs, grid)
    val_acc = correct["validation"].float().mean(1)
    best = int(max(range(3), key=lambda i: (val_acc[i].item(), i)))
    budget = budget_fraction * costs[best].item()
    chosen = best_under_budget(configs, budget)
    base = {name: splits[name].base for name in ("scorer", "validation", "test")}
    return FrugalRun(costs, correct, scores, configs, best, chosen, budget, base)


def on_split(run: FrugalRun, config: Config, split: str = "test") -> CascadeResult:
    """Evaluate ``config`` (chosen elsewhere) on the recorded answers of ``split``."""
    idx = list(config.models)
    return evaluate_cascade(
        run.correct[split][idx],
        run.scores[split][idx],
        run.costs[idx],
        torch.tensor(config.thresholds),
    )


def gap_by_base_image(run: FrugalRun, config: Config, split: str = "test") -> Tensor:
    """Per base image of ``split``: the cascade's accuracy minus the best single model's, each
    averaged over that image's shifted copies (n_base,). Their mean is the split's accuracy gap
    when every base image has the same number of copies."""
    if run.base is None:
        raise ValueError("run.base is None; allowed values: a FrugalRun from run_frugal")
    base = run.base[split]
    diff = on_split(run, config, split).correct.float() - run.correct[split][run.best_model].float()
    n = int(base.max()) + 1
    total = torch.zeros(n).index_add_(0, base, diff)
    return total / torch.bincount(base, minlength=n).float()

"""Claims: what a notebook tests, the paper's number beside ours, and a record of the outcome.

The course's claims standard, used by every notebook:

- A **replication** (``kind="replication"``) tests one of the paper's empirical claims and ends in
  one of three outcomes: ``"reproduced"``, ``"not reproduced"`` or ``"inconclusive"``. A claim is
  inconclusive only through a rule written before the run: a :class:`Precondition` that failed
  (the models did not learn the base task; the capacity does not bind), or an :class:`Interval`
  that straddles the criterion.
- A **mechanism check** (``kind="mechanism"``) is an identity or property that holds by
  construction (dispatch weights sum to 1, expert-choice load = 1.00, alpha = 1 - TV): shown and
  recorded, ``"holds"`` or ``"fails"``, but counted apart from the replications.
- Trained comparisons give per-seed values and decide from the 95 % interval of the **paired**
  difference (:func:`paired_interval`), never from the mean alone: a paired interval that contains
  0 is never "reproduced".

A notebook states each claim with :meth:`Claims.check` (or :meth:`Claims.mechanism`),
:meth:`Claims.show` displays the "paper vs. this notebook" table and :meth:`Claims.save` writes
``results/<profile>/<notebook>.json``, from which ``adaedu results`` regenerates RESULTS.md.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from adaedu.profiles import current_profile

RESULTS_ENV = "ADAEDU_RESULTS_DIR"
HASH_ENV = "ADAEDU_NOTEBOOK_SHA256"  # set by `adaedu run` to the hash of the notebook's code cells

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
HOLDS, FAILS = "holds", "fails"
OUTCOMES = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
KINDS = ("replication", "mechanism")
BADGES = {
    REPRODUCED: "✅ reproduced",
    NOT_REPRODUCED: "❌ **not reproduced**",
    INCONCLUSIVE: "❔ *inconclusive*",
    HOLDS: "☑️ holds",
    FAILS: "⚠️ **fails**",
}


# --- statistics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A mean with a two-sided confidence interval, and the values it summarises."""

    mean: float
    low: float
    high: float
    level: float
    method: str  # "t" or "bootstrap"
    n: int
    values: tuple[float, ...] = field(default=(), repr=False)

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def describe(self, fmt: str = ".3f", unit: str = "") -> str:
        """E.g. ``-0.041 [-0.060, -0.022] nats (95 % t, 3 seeds)``."""
        u = f" {unit}" if unit else ""
        return (
            f"{self.mean:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]{u} "
            f"({self.level:.0%} {self.method}, n = {self.n})"
        )


def _values(x: Sequence[float] | torch.Tensor, name: str) -> list[float]:
    values = [float(v) for v in (x.flatten().tolist() if isinstance(x, torch.Tensor) else x)]
    if not values:
        raise ValueError(f"{name} is empty; allowed values: one or more numbers")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{name} holds {bad[0]}; allowed values: finite numbers")
    return values


def _check_level(level: float) -> None:
    if not (isinstance(level, int | float) and 0 < level < 1):
        raise ValueError(f"level={level!r}; allowed values: a number in (0, 1), e.g. 0.95")


def mean_interval(
    values: Sequence[float] | torch.Tensor,
    *,
    level: float = 0.95,
    method: str = "t",
    n_boot: int = 10_000,
    seed: int = 0,
) -> Interval:
    """Mean of ``values`` with a ``level`` interval: Student's t (``method="t"``, the default for a
    few seeds) or the percentile bootstrap (``method="bootstrap"``, for many units, e.g. prompts).
    One value gives a degenerate interval (its mean) only under the bootstrap; t needs two."""
    xs = _values(values, "values")
    _check_level(level)
    n = len(xs)
    mean = sum(xs) / n
    if method == "t":
        if n < 2:
            raise ValueError(f"values has {n} entry; allowed values: >= 2 entries for method='t'")
        from scipy.stats import t as student_t

        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
        half = float(student_t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
        return Interval(mean, mean - half, mean + half, level, "t", n, tuple(xs))
    if method == "bootstrap":
        if not (isinstance(n_boot, int) and n_boot >= 100):
            raise ValueError(f"n_boot={n_boot!r}; allowed values: an integer >= 100")
        data = torch.tensor(xs, dtype=torch.float64)
        means = data[_resample_indices(n, n_boot, seed)].mean(dim=1)  # vectorised resample means
        lo, hi = _percentile_ends(means, level)
        return Interval(mean, lo, hi, level, "bootstrap", n, tuple(xs))
    raise ValueError(f"method={method!r}; allowed values: 't', 'bootstrap'")


def _resample_indices(n: int, n_boot: int, seed: int) -> torch.Tensor:
    """(n_boot, n) unit indices drawn with replacement: the one resampling of every bootstrap."""
    return torch.randint(0, n, (n_boot, n), generator=torch.Generator().manual_seed(seed))


def _percentile_ends(values: torch.Tensor, level: float) -> tuple[float, float]:
    """The percentile interval's ends (Efron & Tibshirani 1993, Sec. 13.3): the (1 - level) / 2
    and (1 + level) / 2 quantiles of the resampled statistics, interpolated linearly; where some
    are infinite, the order statistics below and above (so that inf - inf never makes a nan)."""
    q = torch.tensor([0.5 - level / 2, 0.5 + level / 2], dtype=torch.float64)
    v = values.to(torch.float64)
    if bool(torch.isfinite(v).all()):
        lo, hi = torch.quantile(v, q)
    else:
        lo = torch.quantile(v, q[0], interpolation="lower")
        hi = torch.quantile(v, q[1], interpolation="higher")
    return float(lo), float(hi)


def bootstrap_interval(
    statistic: Callable[..., float],
    units: Sequence[torch.Tensor],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    nan_as: float | None = None,
) -> Interval:
    """Percentile-bootstrap interval of any ``statistic(*units)`` (Efron & Tibshirani 1993), with
    the pairing kept: ``units[k][i]`` is unit i (a run, a sentence, a base image) of arm k, and
    each resample draws the same unit indices, with replacement, for every arm.

    E.g. a ratio of medians over paired runs, ``bootstrap_interval(lambda a, b: median(a) /
    median(b), [a, b])``, or a corpus-level score over sentences (Koehn 2004). The interval's
    ``mean`` is the statistic of the data itself (the point estimate), ``n`` the number of units.
    A statistic that comes out nan raises, unless ``nan_as`` says what it stands for (e.g.
    ``math.inf`` for "slower" when a median of failed runs is inf / inf); inf is kept.
    """
    if (
        not units
        or not all(isinstance(u, torch.Tensor) and u.dim() >= 1 for u in units)
        or len({len(u) for u in units}) != 1
    ):
        raise ValueError(
            "units: allowed values: one or more tensors with the same number of units (dim 0)"
        )
    n = len(units[0])
    if n < 2:
        raise ValueError(f"units have {n} unit; allowed values: >= 2 units")
    _check_level(level)
    if not (isinstance(n_boot, int) and n_boot >= 100):
        raise ValueError(f"n_boot={n_boot!r}; allowed values: an integer >= 100")
    if not callable(statistic):
        raise TypeError(f"statistic={statistic!r}; allowed values: a function of the units")

    def value(arms: Sequence[torch.Tensor]) -> float:
        v = float(statistic(*arms))
        if math.isnan(v):
            if nan_as is None:
                raise ValueError(
                    "statistic returned nan on a resample; allowed: finite or inf values, or "
                    "pass nan_as=<value> to say what nan stands for"
                )
            return float(nan_as)
        return v

    stats = torch.tensor(
        [value([u[i] for u in units]) for i in _resample_indices(n, n_boot, seed)],
        dtype=torch.float64,
    )
    lo, hi = _percentile_ends(stats, level)
    return Interval(value(units), lo, hi, level, "bootstrap", n)


def paired_interval(
    a: Sequence[float] | torch.Tensor,
    b: Sequence[float] | torch.Tensor,
    *,
    level: float = 0.95,
    method: str = "t",
    n_boot: int = 10_000,
    seed: int = 0,
) -> Interval:
    """Interval of the mean **paired** difference ``a[i] - b[i]`` (same seed, same prompt, same
    image for both arms): the per-pair differences are the values of the returned interval."""
    xa, xb = _values(a, "a"), _values(b, "b")
    if len(xa) != len(xb):
        raise ValueError(
            f"a has {len(xa)} values and b has {len(xb)}; allowed values: one value per pair in each"
        )
    diffs = [p - q for p, q in zip(xa, xb, strict=True)]
    return mean_interval(diffs, level=level, method=method, n_boot=n_boot, seed=seed)


def decide(interval: Interval, *, above: float | None = None, below: float | None = None) -> str:
    """The outcome of "the quantity is above ``above``" (or "below ``below``") from its interval:
    reproduced if the whole interval is on the claimed side, not reproduced if the whole interval
    is on the other side, inconclusive if it straddles the threshold."""
    if (above is None) == (below is None):
        raise ValueError("give exactly one of above=..., below=...; allowed values: a number")
    if above is not None:
        if interval.low > above:
            return REPRODUCED
        return NOT_REPRODUCED if interval.high <= above else INCONCLUSIVE
    if interval.high < below:
        return REPRODUCED
    return NOT_REPRODUCED if interval.low >= below else INCONCLUSIVE


# --- claims ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Precondition:
    """A condition fixed before the run without which a claim cannot be judged, e.g. "both models
    learn the training range to >= 0.98" or "dense x8 beats dense x1 by >= 0.03 nats"."""

    description: str
    measured: str
    met: bool


def precondition(description: str, *, measured: str, met: bool) -> Precondition:
    if not description:
        raise ValueError("description is empty; allowed values: the condition, in words")
    return Precondition(description, measured, bool(met))


@dataclass(frozen=True)
class Claim:
    """One tested claim. ``outcome`` is decided by the notebook's criterion, never edited by hand."""

    id: str
    statement: str
    paper: str
    source: str
    measured: str
    criterion: str
    outcome: str
    kind: str = "replication"
    why: str | None = None  # for "inconclusive" (and overridden outcomes): the rule that decided
    preconditions: tuple[Precondition, ...] = ()
    interval: dict | None = None  # the decisive interval: mean, low, high, level, method, n, values
    per_seed: dict[str, list[float]] | None = None  # arm -> one value per seed

    @property
    def passed(self) -> bool:
        """True for "reproduced" and for a mechanism check that holds."""
        return self.outcome in (REPRODUCED, HOLDS)


def machine_description() -> str:
    """CPU model, cores and torch threads: results differ in their last digits between CPUs."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu} ({platform.machine()}), {os.cpu_count()} cpus, torch threads "
        f"{torch.get_num_threads()}"
    )


class Claims:
    """The claims of one notebook, e.g. ``claims = Claims("2.1", "Shazeer et al. (2017)")``."""

    def __init__(self, notebook: str, paper: str) -> None:
        if not notebook or "/" in notebook:
            raise ValueError(
                f"notebook={notebook!r}; allowed values: a non-empty id without '/', e.g. '2.1'"
            )
        self.notebook, self.paper = notebook, paper
        self.claims: list[Claim] = []

    def check(
        self,
        id: str,
        statement: str,
        *,
        paper: str,
        source: str,
        measured: str,
        criterion: str,
        passed: bool | None = None,
        outcome: str | None = None,
        interval: Interval | None = None,
        preconditions: Sequence[Precondition] | Precondition = (),
        per_seed: dict[str, Sequence[float]] | None = None,
        paired: bool | None = None,
    ) -> Claim:
        """Record one replication and return it.

        Give the decision as ``passed`` (True/False) or as ``outcome`` (one of
        ``"reproduced" | "not reproduced" | "inconclusive"``, e.g. from :func:`decide`). Then:

        - a failed precondition makes the claim "inconclusive", whatever the decision;
        - with ``paired=True`` (``interval`` is a paired difference, the default when ``per_seed``
          holds two or more arms), "reproduced" with an interval that contains 0 becomes
          "inconclusive": a paired interval containing 0 is never "reproduced".
        """
        self._new_id(id)
        if (passed is None) == (outcome is None):
            raise ValueError("give exactly one of passed=True/False or outcome=...")
        if outcome is None:
            outcome = REPRODUCED if passed else NOT_REPRODUCED
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome={outcome!r}; allowed values: {', '.join(OUTCOMES)}")
        pre = (preconditions,) if isinstance(preconditions, Precondition) else tuple(preconditions)
        if not all(isinstance(p, Precondition) for p in pre):
            raise ValueError("preconditions: allowed values: Precondition objects (precondition())")
        seeds = {k: [float(x) for x in v] for k, v in per_seed.items()} if per_seed else None
        if seeds is not None and len(seeds) >= 2 and interval is None:
            raise ValueError(
                "per_seed compares several arms, so interval is required: pass the paired "
                "interval of their difference (paired_interval(a, b)) and decide from it"
            )
        if paired is None:
            paired = seeds is not None and len(seeds) >= 2
        why = None
        failed = [p for p in pre if not p.met]
        if failed:
            why = "precondition not met: " + "; ".join(
                f"{p.description} (measured {p.measured})" for p in failed
            )
            outcome = INCONCLUSIVE
        elif paired and interval is not None and outcome == REPRODUCED and interval.contains(0.0):
            why = f"the paired interval {interval.describe()} contains 0"
            outcome = INCONCLUSIVE
        elif outcome == INCONCLUSIVE:
            why = (
                f"the interval {interval.describe()} straddles the criterion"
                if interval is not None
                else "the criterion's own rule for 'inconclusive' applies"
            )
        claim = Claim(
            id,
            statement,
            paper,
            source,
            measured,
            criterion,
            outcome,
            "replication",
            why,
            pre,
            asdict(interval) if interval is not None else None,
            seeds,
        )
        self.claims.append(claim)
        return claim

    def mechanism(
        self,
        id: str,
        statement: str,
        *,
        measured: str,
        criterion: str,
        holds: bool,
        source: str = "by construction",
        paper: str = "",
    ) -> Claim:
        """Record a mechanism check: an identity or property that holds by construction. It is
        shown and saved like a claim, but counted apart from the paper's empirical claims."""
        self._new_id(id)
        claim = Claim(
            id,
            statement,
            paper,
            source,
            measured,
            criterion,
            HOLDS if holds else FAILS,
            "mechanism",
        )
        self.claims.append(claim)
        return claim

    def _new_id(self, id: str) -> None:
        if not id:
            raise ValueError("id is empty; allowed values: a short unique name, e.g. 'balance'")
        if any(c.id == id for c in self.claims):
            raise ValueError(
                f"id={id!r} is already used in this notebook; claim ids must be unique"
            )

    @property
    def replications(self) -> list[Claim]:
        return [c for c in self.claims if c.kind == "replication"]

    @property
    def mechanisms(self) -> list[Claim]:
        return [c for c in self.claims if c.kind == "mechanism"]

    def markdown(self) -> str:
        """The "paper vs. this notebook" table as Markdown (GitHub and Colab render it)."""
        rows = [
            "| claim | paper | source | this notebook | criterion | outcome |",
            "|---|---|---|---|---|---|",
        ]
        for c in self.replications:
            rows.append(
                f"| {c.statement} | {c.paper} | {c.source} | {c.measured} | {c.criterion} | "
                f"{outcome_cell(c.outcome, c.why)} |"
            )
        rows.append(
            f"\n**Replications** (profile `{current_profile()}`): {tally(self.replications)}."
        )
        if self.mechanisms:
            rows += [
                "",
                "Mechanism checks (hold by construction; counted apart from the replications):",
                "",
                "| check | this notebook | criterion | outcome |",
                "|---|---|---|---|",
            ]
            rows += [
                f"| {c.statement} | {c.measured} | {c.criterion} | {BADGES[c.outcome]} |"
                for c in self.mechanisms
            ]
        return "\n".join(rows)

    def show(self) -> None:
        """Display the claims table in the notebook (plain text outside one)."""
        try:
            from IPython import get_ipython
            from IPython.display import Markdown, display

            if get_ipython() is not None:
                display(Markdown(self.markdown()))
                return
        except ImportError:
            pass
        print(self.markdown())

    def save(self) -> Path:
        """Write the machine-readable record ``results/<profile>/<notebook>.json``."""
        if not self.claims:
            raise ValueError("no claims to save: call check() first")
        profile = current_profile()
        out = results_dir() / profile / f"{self.notebook}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "notebook": self.notebook,
            "paper": self.paper,
            "profile": profile,
            "code_sha256": os.environ.get(HASH_ENV),
            "date": _dt.date.today().isoformat(),
            "torch": torch.__version__,
            "machine": machine_description(),
            "claims": [asdict(c) for c in self.claims],
        }
        out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return out


def outcome_cell(outcome: str, why: str | None = None) -> str:
    """The outcome as the tables show it; an inconclusive outcome carries its reason."""
    if outcome not in BADGES:
        raise ValueError(f"outcome={outcome!r}; allowed values: {', '.join(BADGES)}")
    badge = BADGES[outcome]
    return f"{badge}: {why}" if why and outcome == INCONCLUSIVE else badge


def tally(claims: Sequence[Claim] | Sequence[dict]) -> str:
    """E.g. ``2 reproduced, 1 not reproduced, 1 inconclusive (of 4)``."""
    outcomes = [
        c.outcome if isinstance(c, Claim) else c.get("outcome") if isinstance(c, Mapping) else c
        for c in claims
    ]
    bad = [o for o in outcomes if o not in OUTCOMES]
    if bad:
        raise ValueError(
            f"claims hold {bad[:3]!r}; allowed values: Claims, or dicts whose 'outcome' is one "
            f"of {', '.join(OUTCOMES)}"
        )
    parts = [f"{outcomes.count(o)} {o}" for o in OUTCOMES]
    return ", ".join(parts) + f" (of {len(outcomes)})"


def results_dir() -> Path:
    """``$ADAEDU_RESULTS_DIR``, else the ``results/`` folder of the enclosing course checkout,
    else ``./adaedu-results`` (for a notebook copied out of the repository)."""
    env = os.environ.get(RESULTS_ENV)
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder / "results"
    return here / "adaedu-results"

import json
import math

import nbformat
import pytest
import torch

from adaedu import course
from adaedu.claims import Claims, decide, mean_interval, paired_interval, precondition
from adaedu.exercises import Exercise, describe_difference
from adaedu.exercises import template as tex
from adaedu.show import source_of


def _claims() -> Claims:
    c = Claims("9.9", "Someone (2099)")
    c.check(
        "a",
        "loss goes down",
        paper="1.0",
        source="Table 1",
        measured="0.9",
        criterion="< 1",
        passed=True,
    )
    c.check(
        "b",
        "speed-up",
        paper="2x",
        source="Fig. 2",
        measured="1.1x",
        criterion=">= 1.5x",
        passed=False,
    )
    return c


def test_claims_table_shows_failures_plainly():
    md = _claims().markdown()
    assert "| speed-up | 2x | Fig. 2 | 1.1x | >= 1.5x | ❌ **not reproduced** |" in md
    assert "✅ reproduced" in md
    assert "1 reproduced, 1 not reproduced, 0 inconclusive (of 2)" in md


def test_claims_are_saved_per_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAEDU_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("ADAEDU_PROFILE", "cpu")
    monkeypatch.setenv("ADAEDU_NOTEBOOK_SHA256", "abc")
    path = _claims().save()
    assert path == tmp_path / "cpu" / "9.9.json"
    record = json.loads(path.read_text())
    assert record["code_sha256"] == "abc"
    assert [c["outcome"] for c in record["claims"]] == ["reproduced", "not reproduced"]
    # the record names the CPU model, not only the architecture
    assert "cpus, torch threads" in record["machine"]


def test_claims_reject_bad_input():
    c = _claims()
    with pytest.raises(ValueError, match="id='a' is already used"):
        c.check("a", "x", paper="", source="", measured="", criterion="", passed=True)
    with pytest.raises(ValueError, match="exactly one of passed"):
        c.check("z", "x", paper="", source="", measured="", criterion="")
    with pytest.raises(ValueError, match="outcome='maybe'"):
        c.check("z", "x", paper="", source="", measured="", criterion="", outcome="maybe")
    with pytest.raises(ValueError, match="interval is required"):
        c.check(
            "z", "x", paper="", source="", measured="", criterion="", passed=True,
            per_seed={"moe": [1.0, 2.0], "dense": [2.0, 3.0]},
        )  # fmt: skip
    with pytest.raises(ValueError, match="notebook="):
        Claims("", "x")
    with pytest.raises(ValueError, match="no claims"):
        Claims("1.0", "x").save()


def _kw(**extra):
    return dict(paper="p", source="s", measured="m", criterion="c", **extra)


def test_three_outcomes_and_preconditions():
    c = Claims("9.9", "x")
    ok = precondition("both models learn the base task (>= 0.98)", measured="0.99, 0.97", met=False)
    claim = c.check("pre", "claim", passed=True, preconditions=[ok], **_kw())
    assert claim.outcome == "inconclusive" and "precondition not met" in claim.why
    assert "0.99, 0.97" in claim.why
    met = precondition("capacity binds", measured="0.05 nats", met=True)
    assert c.check("met", "claim", passed=True, preconditions=met, **_kw()).outcome == "reproduced"
    # a failed precondition also overrides "not reproduced": the claim could not be judged
    assert c.check("pre2", "claim", passed=False, preconditions=[ok], **_kw()).outcome == (
        "inconclusive"
    )
    md = c.markdown()
    assert "❔ *inconclusive*: precondition not met" in md
    assert "2 reproduced" not in md and "1 reproduced, 0 not reproduced, 2 inconclusive" in md


def test_a_paired_interval_containing_zero_is_never_reproduced():
    moe, dense = [2.00, 2.10, 1.95], [2.05, 2.02, 2.00]  # mean difference < 0, spread across 0
    iv = paired_interval(moe, dense)
    assert iv.low < 0 < iv.high and iv.n == 3
    c = Claims("9.9", "x")
    claim = c.check(
        "switch", "MoE beats dense", passed=iv.mean < 0, interval=iv,
        per_seed={"moe": moe, "dense": dense}, **_kw(),
    )  # fmt: skip
    assert claim.outcome == "inconclusive" and "contains 0" in claim.why
    # the same interval, decided by decide(): straddling the criterion is inconclusive
    assert decide(iv, below=0.0) == "inconclusive"
    clear = paired_interval([1.90, 1.92, 1.91], [2.00, 2.03, 2.01])
    assert clear.high < 0 and decide(clear, below=0.0) == "reproduced"
    assert decide(clear, above=0.0) == "not reproduced"
    claim = c.check(
        "switch2", "MoE beats dense", outcome=decide(clear, below=0.0), interval=clear,
        per_seed={"moe": [1.90, 1.92, 1.91], "dense": [2.00, 2.03, 2.01]}, **_kw(),
    )  # fmt: skip
    assert claim.outcome == "reproduced" and claim.interval["high"] < 0


def test_intervals_are_right():
    # t interval of (1, 2, 3): mean 2, sd 1, t_{0.975, 2} = 4.3027
    iv = mean_interval([1.0, 2.0, 3.0])
    assert iv.mean == pytest.approx(2.0)
    assert iv.high - iv.mean == pytest.approx(4.302653 / 3**0.5, rel=1e-5)
    pd = paired_interval([3.0, 5.0, 7.0], [2.0, 3.0, 4.0])  # differences 1, 2, 3
    assert (pd.low, pd.high) == pytest.approx((iv.low, iv.high))
    assert pd.values == (1.0, 2.0, 3.0)
    boot = mean_interval(list(range(100)), method="bootstrap", seed=1)
    assert boot.low < 49.5 < boot.high and boot.high - boot.low < 25
    assert boot == mean_interval(list(range(100)), method="bootstrap", seed=1)  # repeatable
    assert "[" in iv.describe(unit="nats") and "nats (95% t, n = 3)" in iv.describe(unit="nats")


def test_interval_bad_input():
    with pytest.raises(ValueError, match="values is empty"):
        mean_interval([])
    with pytest.raises(ValueError, match="nan"):
        mean_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match=">= 2 entries"):
        mean_interval([1.0])
    with pytest.raises(ValueError, match="a has 2 values and b has 3"):
        paired_interval([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="method='z'"):
        mean_interval([1.0, 2.0], method="z")
    with pytest.raises(ValueError, match="level=1.5"):
        mean_interval([1.0, 2.0], level=1.5)
    with pytest.raises(ValueError, match="exactly one of above"):
        decide(mean_interval([1.0, 2.0]))


def test_mechanism_checks_are_counted_apart():
    c = _claims()
    c.mechanism(
        "sum1",
        "dispatch weights sum to 1",
        measured="max error 1e-7",
        criterion="< 1e-6",
        holds=True,
    )
    c.mechanism("load", "expert choice load = 1.00", measured="1.02", criterion="== 1", holds=False)
    assert [m.outcome for m in c.mechanisms] == ["holds", "fails"]
    md = c.markdown()
    assert "(of 2)" in md and "Mechanism checks" in md and "⚠️ **fails**" in md
    assert "dispatch weights sum to 1 | max error 1e-7 | < 1e-6 | ☑️ holds" in md


def test_results_md_shows_three_outcomes_and_counts_per_part(tmp_path, monkeypatch):
    folder = tmp_path / "results" / "cpu"
    folder.mkdir(parents=True)
    monkeypatch.setattr(course, "ROOT", tmp_path)
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    monkeypatch.setattr(course, "NOTEBOOKS", nbs)
    for name in ("1.1-a-1991-x.ipynb", "2.1-b-2017-y.ipynb"):
        nbformat.write(
            nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t")]), nbs / name
        )
    monkeypatch.setenv("ADAEDU_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("ADAEDU_PROFILE", "cpu")
    a = Claims("1.1", "A")
    a.check("r", "claim r", passed=True, **_kw())
    a.check("i", "claim i", outcome="inconclusive", **_kw())
    a.mechanism("m", "mech m", measured="1", criterion="1", holds=True)
    a.save()
    b = Claims("2.1", "B")
    b.check("n", "claim n", passed=False, **_kw())
    b.save()
    course.results()
    text = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    assert "1 reproduced, 1 not reproduced, 1 inconclusive (of 3)" in text
    assert "| Part 1: precursors | 1 | 0 | 1 | 2 |" in text
    assert "| Part 2: sparse mixtures of experts | 0 | 1 | 0 | 1 |" in text
    assert "❔ *inconclusive*" in text and "claim r" in text and "1 of 1 hold." in text
    assert "| mech m | 1 | 1 | ☑️ holds |" in text
    assert "| 1 / 0 / 1 (1/1) |" in course.notebook_table()


def test_show_gives_the_real_source_with_its_location():
    header, src = source_of(tex.softmax)
    assert header.startswith("`softmax` from `adaedu/exercises/template.py`, lines ")
    assert "def softmax" in src and "x.max(dim=-1" in src
    with pytest.raises(TypeError, match="outside adaedu"):
        source_of(json.dumps)
    with pytest.raises(TypeError, match="no source"):
        source_of(3)


def test_template_checker_accepts_the_reference_and_rejects_wrong_answers():
    assert tex.q1.run_check(tex.softmax).passed
    assert tex.q1.run_check(lambda x: torch.softmax(x, dim=-1)).passed
    wrong_dim = tex.q1.run_check(lambda x: torch.softmax(x, dim=0))
    assert not wrong_dim.passed and "dim=-1" in wrong_dim.message
    log_softmax = tex.q1.run_check(lambda x: torch.log_softmax(x, dim=-1))
    assert not log_softmax.passed and "values differ" in log_softmax.message
    unnormalised = tex.q1.run_check(lambda x: x.exp())
    assert not unnormalised.passed


def test_checker_reports_missing_work_and_crashes_in_words():
    def todo(x):
        raise NotImplementedError()

    result = tex.q1.run_check(todo)
    assert not result.passed and not result.implemented and "not implemented" in result.message
    crash = tex.q1.run_check(lambda x: x.nope())
    assert "raised AttributeError" in crash.message
    assert "expects your function" in tex.q1.run_check(3).message


def test_check_raises_under_the_nbgrader_autograder(monkeypatch, capsys):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError):
        tex.q1.check(lambda x: x)
    assert tex.q1.check(tex.softmax) is None
    assert "✅" in capsys.readouterr().out


def test_hints_and_solution(capsys):
    ex = Exercise(
        "t", tex.softmax, lambda g: (torch.randn(2, 3, generator=g),), hints=["one", "two"]
    )
    ex.hint()
    ex.hint()
    ex.hint()
    out = capsys.readouterr().out
    assert "hint 1/2: one" in out and out.count("hint 2/2: two") == 2
    with pytest.raises(ValueError, match="1..2"):
        ex.hint(5)
    ex.solution()
    assert "def softmax" in capsys.readouterr().out


def test_describe_difference_explains_shapes_types_and_values():
    e = torch.zeros(2, 3)
    assert "shape (2, 3), got (3, 2)" in describe_difference(e, torch.zeros(3, 2), 1e-5, 1e-4)
    assert "torch.Tensor" in describe_difference(e, [0, 0], 1e-5, 1e-4)
    assert "NaN" in describe_difference(e, torch.full((2, 3), float("nan")), 1e-5, 1e-4)
    assert "index [1, 2]" in describe_difference(
        e, torch.tensor([[0, 0, 0], [0, 0, 1.0]]), 1e-5, 1e-4
    )
    assert describe_difference((1.0, e), (1.0, e.clone()), 1e-5, 1e-4) is None
    assert "expected 2 return values" in describe_difference((1.0, e), e, 1e-5, 1e-4)
    assert describe_difference(torch.tensor([1, 2]), torch.tensor([1, 3]), 0, 0).startswith(
        "values differ"
    )


def test_one_hot_checker_rejects_labels_max_and_integer_output():
    assert tex.q2.run_check(tex.one_hot).passed
    assert not tex.q2.run_check(lambda y, n: torch.nn.functional.one_hot(y).float()).passed
    assert not tex.q2.run_check(lambda y, n: torch.nn.functional.one_hot(y, n).T.float()).passed


def test_bootstrap_interval_keeps_the_pairing_and_handles_failures():
    from adaedu.claims import bootstrap_interval

    def median(t):
        return float(t.median())

    a = torch.tensor([10.0, 12.0, 11.0, 9.0, 10.0, 13.0, 11.0, 10.0])
    iv = bootstrap_interval(lambda x, y: median(x) / median(y), [a, 2 * a], n_boot=500)
    # exactly paired arms: every resample gives 0.5; an unpaired resampling would not
    assert (iv.mean, iv.low, iv.high) == (pytest.approx(0.5),) * 3
    assert iv.method == "bootstrap" and iv.n == 8
    b = torch.tensor([20.0, 5.0, 30.0, 8.0, 25.0, 7.0, 40.0, 6.0])
    iv = bootstrap_interval(lambda x, y: median(x) / median(y), [a, b], n_boot=500)
    assert iv.low < iv.mean < iv.high
    fail = torch.tensor([math.inf] * 8)
    iv = bootstrap_interval(lambda x, y: median(x) / median(y), [fail, a], n_boot=200)
    assert math.isinf(iv.mean) and math.isinf(iv.low)  # inf is kept, never turned into nan
    both = bootstrap_interval(
        lambda x, y: median(x) / median(y), [fail, fail], n_boot=200, nan_as=math.inf
    )
    assert math.isinf(both.mean) and math.isinf(both.high)
    with pytest.raises(ValueError, match="nan_as"):
        bootstrap_interval(lambda x, y: median(x) / median(y), [fail, fail], n_boot=200)


def test_bootstrap_interval_of_the_mean_matches_mean_interval():
    from adaedu.claims import bootstrap_interval

    x = torch.randn(40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = bootstrap_interval(lambda t: t.mean(), [x], n_boot=2000, seed=7)
    b = mean_interval(x.tolist(), method="bootstrap", n_boot=2000, seed=7)
    assert a.mean == pytest.approx(b.mean) and a.low == pytest.approx(b.low)
    assert a.high == pytest.approx(b.high)
    assert a.low < float(x.mean()) < a.high
    # 95 % covers more than 50 %: a bug in the quantile ends would break the order
    c = bootstrap_interval(lambda t: t.mean(), [x], level=0.5, n_boot=2000, seed=7)
    assert a.low < c.low < c.high < a.high

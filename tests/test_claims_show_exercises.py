import json

import pytest
import torch

from adaedu.claims import Claims
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
    assert "✅ reproduced" in md and "**1 of 2 claims reproduced**" in md


def test_claims_are_saved_per_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAEDU_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("ADAEDU_PROFILE", "cpu")
    monkeypatch.setenv("ADAEDU_NOTEBOOK_SHA256", "abc")
    path = _claims().save()
    assert path == tmp_path / "cpu" / "9.9.json"
    record = json.loads(path.read_text())
    assert record["code_sha256"] == "abc" and [c["passed"] for c in record["claims"]] == [
        True,
        False,
    ]


def test_claims_reject_bad_input():
    c = _claims()
    with pytest.raises(ValueError, match="id='a' is already used"):
        c.check("a", "x", paper="", source="", measured="", criterion="", passed=True)
    with pytest.raises(ValueError, match="notebook="):
        Claims("", "x")
    with pytest.raises(ValueError, match="no claims"):
        Claims("1.0", "x").save()


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

"""``adaedu grade``: generated submissions with right, wrong and broken answers are graded as
such; a crash, a loop or a tampered checker is reported and never stops the run."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nbformat
import pytest

from adaedu.course import course_notebooks, main, student_copy
from adaedu.grading import grade, spec_of, totals, write_tables

pytestmark = pytest.mark.slow


def _course(prefix: str) -> Path:
    return next(p for p in course_notebooks() if p.name.startswith(prefix + "-"))


def _replace(nb, marker: str, source: str) -> None:
    cells = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, marker
    cells[0].source = source


def _write(root: Path, learner: str, name: str, nb) -> None:
    (root / learner).mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, root / learner / name)


def test_every_course_notebook_has_gradable_exercises() -> None:
    for path in course_notebooks():
        spec = spec_of(nbformat.read(path, as_version=4))
        assert len(spec.checks) >= 2, path.name
        assert spec.module and "import" in spec.imports, path.name


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("submissions")
    ref = _course("5.3")
    nb = nbformat.read(ref, as_version=4)
    _write(root, "ada", ref.name, nb)  # the reference answers: all correct
    _write(root, "bob", ref.name, student_copy(nb))  # handed in untouched: not attempted
    cy = student_copy(nb)  # wrong, looping, and not even Python
    _replace(cy, "def my_route", "def my_route(scores, thresholds):\n    return scores.argmax(0)\n")
    _replace(
        cy, "def my_query_cost", "def my_query_cost(stage, costs):\n    while True:\n        pass\n"
    )
    q3 = next(
        c for c in cy.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "q3-solution"
    )
    q3.source = q3.source.split("(", 1)[0] + "(:\n    pass\n"  # def my_...(:  a SyntaxError
    _write(root, "cy", ref.name, cy)
    dee = nbformat.read(ref, as_version=4)  # right answers for q2, q3; q1 wrong but "checked" away
    _replace(
        dee, "def my_route", "def my_route(scores, thresholds):\n    return scores.argmax(0)\n"
    )
    _replace(dee, "ex.q1.check", "print('✅ Exercise 1: correct')")
    dee.cells.insert(-1, nbformat.v4.new_code_cell("ex.q2.run_check = lambda fn: True"))
    _write(root, "dee", ref.name, dee)
    (root / "eve").mkdir()
    (root / "eve" / ref.name).write_text("this is not a notebook", encoding="utf-8")
    _write(root, "fay", "notes.ipynb", nbformat.v4.new_notebook())  # matches no course notebook
    # two more notebooks whose exercises import more than torch (the grader's setup must cope)
    for prefix in ("1.1", "4.2"):
        shutil.copy(_course(prefix), root / "ada" / _course(prefix).name)
    rows = grade(root, timeout=8)
    return root, rows, {(r.learner, r.notebook, r.exercise): r for r in rows}


def test_right_answers_are_correct(graded) -> None:
    _, rows, by = graded
    ada = [r for r in rows if r.learner == "ada"]
    assert {r.notebook for r in ada} == {"1.1", "4.2", "5.3"}
    assert all(r.verdict == "correct" and not r.tampered for r in ada), [
        (r.notebook, r.exercise, r.message) for r in ada if r.verdict != "correct"
    ]


def test_untouched_student_copy_is_not_attempted(graded) -> None:
    _, rows, _ = graded
    bob = [r for r in rows if r.learner == "bob"]
    assert len(bob) == 3 and all(r.verdict == "not attempted" for r in bob)


def test_wrong_looping_and_broken_answers(graded) -> None:
    _, _, by = graded
    assert (
        by["cy", "5.3", "q1"].verdict == "wrong" and "random input" in by["cy", "5.3", "q1"].message
    )
    assert by["cy", "5.3", "q2"].verdict == "timed out"
    assert by["cy", "5.3", "q3"].verdict == "crashed"
    assert "SyntaxError" in by["cy", "5.3", "q3"].message


def test_tampering_is_reported_and_does_not_help(graded) -> None:
    _, _, by = graded
    q1, q2 = by["dee", "5.3", "q1"], by["dee", "5.3", "q2"]
    assert q1.tampered and q1.verdict == "wrong"  # its fake "correct" cell is not believed
    assert q2.tampered and q2.verdict == "correct"  # a patched checker: graded with a fresh one
    assert "edited or removed" in q1.message


def test_unreadable_and_unknown_files(graded) -> None:
    _, rows, _ = graded
    eve = [r for r in rows if r.learner == "eve"]
    assert eve and all(r.verdict == "unreadable" for r in eve)
    fay = [r for r in rows if r.learner == "fay"]
    assert (
        len(fay) == 1 and fay[0].verdict == "unreadable" and "no course notebook" in fay[0].message
    )


def test_tables_and_totals(graded, tmp_path: Path) -> None:
    _, rows, _ = graded
    csv_path, md_path = write_tables(rows, tmp_path)
    with csv_path.open(encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and set(table[0]) >= {
        "learner",
        "notebook",
        "exercise",
        "verdict",
        "message",
    }
    assert totals(rows)["ada"] == (sum(1 for r in rows if r.learner == "ada"),) * 2
    assert totals(rows)["bob"] == (0, 3)
    text = md_path.read_text(encoding="utf-8")
    assert "| learner | correct | exercises |" in text and "| bob | 0 | 3 |" in text


def test_command_line(tmp_path: Path, capsys) -> None:
    ref = _course("5.3")
    (tmp_path / "sub" / "ada").mkdir(parents=True)
    shutil.copy(ref, tmp_path / "sub" / "ada" / ref.name)
    assert main(["grade", str(tmp_path / "sub"), "-o", str(tmp_path / "out")]) == 0
    assert "ada: 3 / 3 correct" in capsys.readouterr().out
    assert (tmp_path / "out" / "grades.csv").exists() and (tmp_path / "out" / "grades.md").exists()
    with pytest.raises(SystemExit):
        main(["grade", str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="submissions"):
        grade(tmp_path / "missing")

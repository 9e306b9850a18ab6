"""Student copies: our `adaedu student` and nbgrader's `generate_assignment` agree, and run."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from adaedu import course

CHECK = re.compile(
    r"^ex\.q\d+\.check\(", re.M
)  # convention: `from adaedu.exercises import X as ex`

ALL_NOTEBOOKS = sorted(course.NOTEBOOKS.glob("*.ipynb"))


def test_strip_solutions_keeps_indentation_and_rejects_broken_markers():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\ny = 2"
    assert course.strip_solutions(src) == (
        "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\ny = 2"
    )
    with pytest.raises(ValueError, match="without '### END"):
        course.strip_solutions("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ValueError, match="without '### BEGIN"):
        course.strip_solutions("x = 1\n### END SOLUTION")
    with pytest.raises(ValueError, match="nested"):
        course.strip_solutions("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION")


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_solution_and_check_cells_carry_nbgrader_metadata(path):
    nb = nbformat.read(path, as_version=4)
    solutions = [c for c in nb.cells if c.cell_type == "code" and course.BEGIN in c.source]
    assert solutions, "no exercise solution"
    ids = []
    for cell in solutions:
        meta = cell.metadata.get("nbgrader", {})
        assert meta.get("solution") is True and meta.get("grade") is False, cell.source[:60]
        ids.append(meta["grade_id"])
    checks = [c for c in nb.cells if c.cell_type == "code" and CHECK.search(c.source)]
    assert len(checks) >= len(solutions)
    for cell in checks:
        meta = cell.metadata.get("nbgrader", {})
        assert (
            meta.get("grade") is True and meta.get("locked") is True and meta.get("points", 0) > 0
        )
        ids.append(meta["grade_id"])
    assert len(ids) == len(set(ids)), "grade_id values must be unique within a notebook"


def test_student_copies_match_nbgrader_generate_assignment(tmp_path):
    ours = course.student(ALL_NOTEBOOKS, tmp_path / "ours")
    source = tmp_path / "nbg" / "source" / "adaedu"
    source.mkdir(parents=True)
    for p in ALL_NOTEBOOKS:
        shutil.copy(p, source / p.name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    root = tmp_path / "nbg"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nbgrader",
            "generate_assignment",
            "adaedu",
            f"--CourseDirectory.root={root}",
            f"--CourseDirectory.db_url=sqlite:///{root / 'gradebook.db'}",
            "--log-level=WARN",
        ],
        check=True,
        cwd=root,
        env=env,
        capture_output=True,
    )
    for mine in ours:
        theirs = nbformat.read(root / "release" / "adaedu" / mine.name, as_version=4)
        mine_nb = nbformat.read(mine, as_version=4)
        code = lambda nb: [c.source.strip() for c in nb.cells if c.cell_type == "code"]  # noqa: E731
        assert code(mine_nb) == code(theirs), mine.name
        assert not any(course.BEGIN in s or course.END in s for s in code(mine_nb))
        assert sum("raise NotImplementedError()" in s for s in code(mine_nb)) >= 1


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_student_copy_runs_and_checkers_say_not_implemented(path, tmp_path):
    (target,) = course.student([path], tmp_path)
    nb = nbformat.read(target, as_version=4)
    course.execute(nb, tmp_path, "smoke", timeout=600)  # raises CellExecutionError on any error
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    n_checks = sum(bool(CHECK.search(c.source)) for c in nb.cells if c.cell_type == "code")
    assert outputs.count("not implemented yet") == n_checks


def test_gpu_command_refuses_without_cuda_and_records_a_gpu_run(tmp_path, monkeypatch, capsys):
    """`adaedu gpu`: without CUDA it refuses with a clear message; where it runs (here forced
    on the CPU with a two-cell notebook) the notebook sees the gpu profile, saves its claims
    under results/gpu/ and the run time lands in results/gpu/run_times.json, while the
    source notebook stays as it was."""
    import json

    import nbformat
    import torch

    from adaedu.course import main, run_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="CUDA"):
        run_gpu([], tmp_path / "out")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import adaedu\nfrom adaedu.claims import Claims\nprint(adaedu.profiles.current_profile())"
        ),
        nbformat.v4.new_code_cell(
            "c = Claims('9.9', 'nobody')\nc.mechanism('m', 'one', measured='1', criterion='1', "
            "holds=True)\nc.save()"
        ),
    ]
    source = tmp_path / "9.9-test.ipynb"
    nbformat.write(nb, source)
    before = source.read_bytes()
    record = run_gpu([source], tmp_path / "out", results=tmp_path / "results", require_cuda=False)
    assert source.read_bytes() == before
    executed = nbformat.read(tmp_path / "out" / source.name, as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == "gpu"
    saved = json.loads((tmp_path / "results" / "gpu" / "9.9.json").read_text())
    assert saved["profile"] == "gpu" and saved["claims"][0]["id"] == "m"
    times = json.loads(record.read_text())
    assert record == tmp_path / "results" / "gpu" / "run_times.json"
    assert times["9.9"]["gpu_seconds"] > 0 and times["9.9"]["device"] == "cpu"

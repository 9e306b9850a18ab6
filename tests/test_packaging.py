"""Packaging: environment.yml mirrors pyproject.toml, and a notebook copied out of the repository
runs against an installed (non-editable) adaedu, data included."""

import re
import shutil
import subprocess
import sys
import zipfile

import nbformat
import pytest
import yaml

from adaedu import course

CONDA_NAMES = {"torch": "pytorch"}


def _pyproject_requirements() -> dict[str, str]:
    """Every requirement in [project] dependencies and optional-dependencies, name -> specifier."""
    text = (course.ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1].split("\n[tool.", 1)[0]
    reqs = re.findall(r'^\s+"([A-Za-z0-9_.-]+)([^"]*)",?$', project, re.M)
    assert len(reqs) > 10, "could not read the requirements from pyproject.toml"
    return {CONDA_NAMES.get(name, name).lower(): spec for name, spec in reqs}


def test_environment_yml_mirrors_pyproject():
    env = yaml.safe_load((course.ROOT / "environment.yml").read_text(encoding="utf-8"))
    conda = {}
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    deps += [d for group in env["dependencies"] if isinstance(group, dict) for d in group["pip"]]
    for dep in deps:
        name, _, bound = re.match(r"([A-Za-z0-9_.-]+)((>=.*)?)$", dep).groups()
        if name not in ("python", "pip"):
            conda[name.lower()] = bound
    assert conda == _pyproject_requirements()


def test_package_dependencies_have_lower_bounds_only():
    for name, bound in _pyproject_requirements().items():
        assert bound.startswith(">=") and "<" not in bound and "==" not in bound, name


def test_constraints_pin_torch_to_the_cpu_build_version():
    lines = (course.ROOT / "requirements" / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in lines
    assert all("==" in line for line in lines if line and not line.startswith("#"))


@pytest.mark.slow
def test_a_notebook_copied_out_runs_against_an_installed_wheel(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(course.ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("adaedu-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert (
        "adaedu/_data/peterson_barney_1952.csv" in names and "adaedu/_data/MANIFEST.json" in names
    )
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    notebook = course.course_notebooks()[0]
    shutil.copy(notebook, elsewhere / notebook.name)
    nb = nbformat.read(elsewhere / notebook.name, as_version=4)
    probe = nbformat.v4.new_code_cell("import adaedu; print(adaedu.__file__)")
    nb.cells.insert(2, probe)
    course.execute(nb, elsewhere, "smoke", timeout=600, extra_env={"PYTHONPATH": str(site)})
    assert str(site) in probe.outputs[0]["text"], "the notebook did not use the installed copy"


def test_make_course_passes_allow_root_only_as_root():
    """JupyterLab refuses to run as root without --allow-root (Docker, Codespaces, CI)."""
    import os

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(
        ["make", "-n", "course"], cwd=course.ROOT, capture_output=True, text=True, check=True
    ).stdout
    lab = [line for line in out.splitlines() if "jupyter lab" in line]
    assert len(lab) == 1
    assert ("--allow-root" in lab[0]) == (os.getuid() == 0)

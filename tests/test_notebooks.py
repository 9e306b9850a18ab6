"""The committed notebooks are what they claim to be: executed in the cpu profile, in order, from
their committed source, with their claims in the results table and the course conventions kept."""

import json
import re

import nbformat
import pytest

from adaedu import claims as claims_mod
from adaedu import course

COURSE = course.course_notebooks()
ALL_NOTEBOOKS = sorted(course.NOTEBOOKS.glob("*.ipynb"))
CHECKED = "# NBVAL_CHECK_OUTPUT"


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_course_has_notebooks():
    assert len(COURSE) >= 2


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_executed_in_order_without_errors(path):
    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in _code(nb) if c.source.strip()]
    assert counts == list(range(1, len(counts) + 1)), "not executed top to bottom in a fresh kernel"
    errors = [o for c in _code(nb) for o in c.outputs if o.output_type == "error"]
    assert not errors, f"error output committed: {errors[0].ename if errors else ''}"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_committed_execution_matches_the_committed_code(path):
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("adaedu", {})
    assert meta.get("profile") == "cpu", "not executed with `adaedu run` in the cpu profile"
    assert meta.get("code_sha256") == course.code_sha256(nb), (
        "the code changed after the notebook was executed: re-run `adaedu run " + path.name + "`"
    )


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_checked_cells_keep_their_outputs(path):
    """nbval passes a checked cell whose outputs were stripped, silently: guard against that."""
    nb = nbformat.read(path, as_version=4)
    checked = [c for c in _code(nb) if c.source.startswith(CHECKED)]
    assert checked, "no nbval-checked cell"
    for cell in checked:
        assert cell.outputs, f"checked cell without stored output: {cell.source[:80]!r}"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_sources_hold_no_control_characters(path):
    """A LaTeX command written into a cell from a non-raw Python string loses its backslash
    (the escape sequence for alpha becomes a bell character and "lpha"): catch that."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        bad = re.search(r"[\x00-\x08\x0b-\x1f]", cell.source)
        assert bad is None, f"control character {bad.group()!r} in: {cell.source[:80]!r}"


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.name)
def test_claims_record_belongs_to_this_execution_and_is_in_the_results_table(path):
    nb = nbformat.read(path, as_version=4)
    record_path = course.ROOT / "results" / "cpu" / f"{course.notebook_id(path)}.json"
    assert record_path.exists(), "no claims record in results/cpu: run `make notebooks`"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert record["code_sha256"] == course.code_sha256(nb), (
        "the record comes from another version of the notebook"
    )
    assert record["claims"], "the notebook tests no claim"
    results = (course.ROOT / "RESULTS.md").read_text(encoding="utf-8")
    for claim in record["claims"]:
        assert claim["statement"] in results and claim["measured"] in results, claim["id"]
        shown = claims_mod.outcome_cell(course.claim_outcome(claim), claim.get("why"))
        if course.claim_kind(claim) == "mechanism":
            shown = claims_mod.BADGES[course.claim_outcome(claim)]
        outputs = json.dumps([o for c in _code(nb) for o in c.outputs], ensure_ascii=False)
        assert claim["measured"] in outputs and shown in outputs, (
            "the claims table is not shown in the notebook"
        )


def test_readme_notebook_table_is_current():
    readme = (course.ROOT / "README.md").read_text(encoding="utf-8")
    assert course.notebook_table() in readme, "README's notebook table is stale: run `make results`"


def test_sync_run_times_rewrites_only_the_run_time_paragraph(tmp_path):
    nb = nbformat.read(COURSE[0], as_version=4)
    nb.cells[0].source = "# Title\n\n**Run time** (old): ~N min\nmore words.\n\nNext paragraph."
    nb.metadata["adaedu"].update(smoke_seconds=12.0, cpu_seconds=150.0, machine="m")
    path = tmp_path / COURSE[0].name
    nbformat.write(nb, path)
    assert course.sync_run_times([path]) == [path]
    after = nbformat.read(path, as_version=4)
    assert after.cells[0].source == (
        "# Title\n\n**Run time** (measured by `adaedu run` on m): smoke 12 s · cpu 2.5 min · "
        "gpu: not measured yet.\n\nNext paragraph."
    )
    assert course.code_sha256(after) == course.code_sha256(nb)
    assert course.sync_run_times([path]) == []  # nothing left to change


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.name)
def test_header_run_times_are_the_measured_ones(path):
    nb = nbformat.read(path, as_version=4)
    line = course.run_time_line(nb.metadata["adaedu"])
    assert line in nb.cells[0].source, "stale run-time line: run `make results`"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_anatomy(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0].source
    repo = course.repository()
    assert (
        f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{path.name}" in first
    )
    assert re.search(r"arxiv\.org|doi\.org|openreview\.net", first) or path.name.startswith("_")
    assert "Run time" in first
    setup = nb.cells[1].source
    assert setup.startswith("# Setup:") and f'ADAEDU_REPO = "{repo}"' in setup
    sizes = [c for c in _code(nb) if "adaedu.sizes(" in c.source]
    assert len(sizes) == 1, "sizes for the three profiles belong in exactly one cell"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for heading in (
        "## Learning objectives",
        "## The idea",
        "## The implementation",
        "## The replication",
        "## Exercises",
        "## Summary",
    ):
        assert heading in text, f"missing section {heading!r}"
    info = nb.metadata.get("adaedu_course", {})
    assert {"title", "paper", "replicates"} <= set(info)


@pytest.mark.slow
@pytest.mark.parametrize(
    "path", [p for p in COURSE if p.name.startswith("4.3-")], ids=lambda p: p.name
)
def test_smoke_run_twice_gives_identical_claim_records(path, tmp_path):
    """Determinism on one machine: the same notebook, executed twice in fresh kernels, writes
    the same claim records (the date and the machine aside)."""
    records = []
    for run in ("first", "second"):
        out = tmp_path / run
        nb = nbformat.read(path, as_version=4)
        course.execute(nb, path.parent, "smoke", extra_env={"ADAEDU_RESULTS_DIR": str(out)})
        record = json.loads((out / "smoke" / f"{course.notebook_id(path)}.json").read_text())
        records.append({k: v for k, v in record.items() if k not in ("date", "machine")})
    assert records[0]["claims"], "the smoke run recorded no claim"
    assert records[0] == records[1]

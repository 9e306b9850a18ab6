"""Grading for instructors without nbgrader: ``adaedu grade SUBMISSIONS/``.

For each submitted notebook, only the exercises are run, never the notebook's training: a fresh
kernel gets the imports of the course's own copy of that notebook (its import statements only),
then the learner's exercise cells (the cells after ``## Exercises``) except the check cells, then, for every
exercise, the checker of a freshly loaded :mod:`adaedu.exercises` module
(:meth:`~adaedu.exercises.Exercise.run_check`), not the learner's check cell. Each cell and each
check has a time limit. A submission that crashes, loops, or edits a check cell is reported as
such in the table and never stops the grading run.

The table (one row per learner, notebook and exercise: verdict and the checker's message, with
totals per learner) is written as CSV and Markdown.
"""

from __future__ import annotations

import ast
import csv
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from adaedu.course import course_notebooks, notebook_id

VERDICTS = ("correct", "wrong", "not attempted", "crashed", "timed out", "missing", "unreadable")
CHECK_CALL = re.compile(r"^\s*ex\.(q\d+)\.check\((\w+)\)\s*$", re.M)
EXERCISE_IMPORT = re.compile(r"^\s*from adaedu\.exercises import (\w+) as ex\s*$", re.M)
MARK = "ADAEDU-GRADE "
#: What a learner's cell must not do to the checkers (reported as tampering, graded anyway).
TAMPER = re.compile(
    r"\bex\s*=|\bex\.q\d+\s*=|\bex\.q\d+\.\w+\s*=|run_check|_run_trials|describe_difference"
)


@dataclass
class Row:
    """One line of the grade table."""

    learner: str
    notebook: str
    exercise: str
    verdict: str
    message: str
    tampered: bool = False


@dataclass
class Spec:
    """What the course's copy of a notebook says about its exercises."""

    module: str  # adaedu.exercises.<module>
    imports: str  # the import statements of the notebook's code cells
    checks: dict[str, str] = field(default_factory=dict)  # exercise id -> function name
    check_cells: dict[str, str] = field(default_factory=dict)  # exercise id -> cell source


def _exercise_start(nb: nbformat.NotebookNode) -> int | None:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("## Exercises"):
            return i
    return None


def _normalise(source: str) -> str:
    """A check cell without comments and blank lines (learners may uncomment hint() lines)."""
    lines = [line.split("#")[0].rstrip() for line in source.splitlines()]
    return "\n".join(line for line in lines if line and "hint()" not in line)


def _imports(sources: list[str]) -> str:
    """The import statements of ``sources`` (code cells), in order; cells that do not parse (a
    magic) are skipped."""
    found = []
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        found += [ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    return "\n".join(dict.fromkeys(found))


def spec_of(nb: nbformat.NotebookNode) -> Spec:
    """The exercises of a course notebook: their checkers, the learner functions they check, and
    the imports the exercise cells rely on."""
    start = _exercise_start(nb)
    if start is None:
        raise ValueError("nb has no '## Exercises' section; expected a course notebook")
    code = [c.source for c in nb.cells[start:] if c.cell_type == "code"]
    module = next((m[1] for s in code for m in EXERCISE_IMPORT.finditer(s)), None)
    if module is None:
        raise ValueError("the exercises do not import 'from adaedu.exercises import ... as ex'")
    before = [c.source for c in nb.cells if c.cell_type == "code"]
    spec = Spec(module, _imports(before))  # every import of the course's copy
    for source in code:
        for m in CHECK_CALL.finditer(source):
            spec.checks[m[1]] = m[2]
            spec.check_cells[m[1]] = _normalise(source)
    return spec


def _learner(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else path.stem


def _reference(path: Path, references: dict[str, Path]) -> Path | None:
    return references.get(path.name.split("-")[0]) if re.match(r"\d+\.\d+-", path.name) else None


def _checker_code(module: str, exercise: str, fn: str) -> str:
    """Run the course's checker, from freshly loaded modules, on the learner's ``fn``."""
    return (
        "import importlib as _il, json as _json, sys as _sys\n"
        "for _name in [n for n in _sys.modules if n.startswith('adaedu.exercises')]:\n"
        "    del _sys.modules[_name]\n"
        f"_mod = _il.import_module('adaedu.exercises.{module}')\n"
        f"_fn = globals().get({fn!r})\n"
        "if _fn is None:\n"
        f"    _r = dict(verdict='missing', message='no function named {fn} was defined')\n"
        "else:\n"
        f"    _c = _mod.{exercise}.run_check(_fn)\n"
        "    _v = 'correct' if _c.passed else ('wrong' if _c.implemented else 'not attempted')\n"
        "    _r = dict(verdict=_v, message=_c.message)\n"
        f"print({MARK!r} + _json.dumps(_r))\n"
    )


class _Kernel:
    """A kernel for one submission: run code with a time limit, report an error or a timeout."""

    def __init__(self, cwd: Path, timeout: float):
        from nbclient import NotebookClient

        self.nb = nbformat.v4.new_notebook()
        self.client = NotebookClient(
            self.nb,
            timeout=timeout,
            kernel_name="python3",
            allow_errors=True,
            interrupt_on_timeout=True,
            resources={"metadata": {"path": str(cwd)}},
        )

    def __enter__(self) -> _Kernel:
        self._ctx = self.client.setup_kernel()
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)

    def run(self, source: str) -> tuple[str, str]:
        """``(status, text)``: status ``ok``, ``error`` (text: the exception) or ``timeout``."""
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        try:
            self.client.execute_cell(cell, len(self.nb.cells) - 1)
        except (CellTimeoutError, DeadKernelError) as exc:
            return "timeout", type(exc).__name__
        errors = [o for o in cell.outputs if o.get("output_type") == "error"]
        if errors:
            name = errors[0].get("ename", "Error")
            if name == "KeyboardInterrupt":  # interrupted at the time limit
                return "timeout", "interrupted at the time limit"
            return "error", f"{name}: {errors[0].get('evalue', '')}"[:300]
        text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
        return "ok", text


def grade_notebook(path: Path, reference: Path, learner: str, timeout: float = 30.0) -> list[Row]:
    """Grade one submitted notebook against the course's copy ``reference``."""
    if not timeout > 0:
        raise ValueError(f"timeout={timeout!r}; allowed values: seconds > 0")
    spec = spec_of(nbformat.read(reference, as_version=4))
    name = notebook_id(reference)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # not a notebook at all: every exercise is unreadable
        message = f"the file is not a readable notebook ({type(exc).__name__})"
        return [Row(learner, name, q, "unreadable", message) for q in spec.checks]
    start = _exercise_start(nb)
    cells = [c.source for c in nb.cells[start or 0 :] if c.cell_type == "code"]
    learner_checks = {
        m[1]: _normalise(s) for s in cells for m in CHECK_CALL.finditer(s) if m[1] in spec.checks
    }
    check_sources = {s for s in cells if CHECK_CALL.search(s)}
    tampered = {q for q, cell in spec.check_cells.items() if learner_checks.get(q) != cell}
    if any(TAMPER.search(s) for s in cells if s not in check_sources):
        tampered = set(spec.checks)
    setup = spec.imports + f"\nfrom adaedu.exercises import {spec.module} as ex\n"
    rows, broken = [], {}  # broken: function name -> (verdict, message) of a cell that failed
    with _Kernel(reference.parent, timeout) as kernel:
        status, text = kernel.run("import os\nos.environ.pop('NBGRADER_EXECUTION', None)\n" + setup)
        if status != "ok":
            raise RuntimeError(f"the grader's own setup failed for {name}: {text}")
        for source in cells:
            if source in check_sources:
                continue  # the grader runs its own checkers
            status, text = kernel.run(source)
            if status != "ok":
                defined = re.findall(r"^def (\w+)\(", source, re.M)  # a scratch cell: none
                verdict = "timed out" if status == "timeout" else "crashed"
                for fn in defined:
                    broken.setdefault(fn, (verdict, f"a cell defining {fn} failed: {text}"))
        for q, fn in spec.checks.items():
            if fn in broken:
                verdict, message = broken[fn]
            else:
                status, text = kernel.run(_checker_code(spec.module, q, fn))
                if status == "timeout":
                    verdict, message = "timed out", f"the check did not finish in {timeout:g} s"
                elif status == "error":
                    verdict, message = "crashed", text
                else:
                    line = next((x for x in text.splitlines() if x.startswith(MARK)), None)
                    result = json.loads(line[len(MARK) :]) if line else {}
                    verdict = result.get("verdict", "crashed")
                    message = result.get("message", "the checker printed no verdict")
            if q in tampered:
                message = "the check cell was edited or removed, or a cell changes the checkers "
                message += f"(graded with the course's checker): {message}"
            rows.append(Row(learner, name, q, verdict, message, q in tampered))
    return rows


def grade(submissions: Path, timeout: float = 30.0) -> list[Row]:
    """Grade every notebook under ``submissions`` (``LEARNER/NOTEBOOK.ipynb``, or notebooks
    directly inside, named after the learner by file). Notebooks that match no course notebook
    are reported as unreadable rows."""
    if not timeout > 0:
        raise ValueError(f"timeout={timeout!r}; allowed values: seconds > 0")
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise ValueError(f"submissions={submissions}; allowed values: a folder of notebooks")
    references = {notebook_id(p): p for p in course_notebooks()}
    rows: list[Row] = []
    for path in sorted(submissions.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        learner = _learner(path, submissions)
        reference = _reference(path, references)
        if reference is None:
            rows.append(Row(learner, path.name, "-", "unreadable", "matches no course notebook"))
            continue
        rows += grade_notebook(path, reference, learner, timeout)
    return rows


def totals(rows: list[Row]) -> dict[str, tuple[int, int]]:
    """Per learner: (exercises correct, exercises graded)."""
    out: dict[str, tuple[int, int]] = {}
    for row in rows:
        right, total = out.get(row.learner, (0, 0))
        out[row.learner] = (right + (row.verdict == "correct"), total + 1)
    return out


def write_tables(rows: list[Row], out: Path) -> tuple[Path, Path]:
    """``grades.csv`` and ``grades.md`` in ``out``: one row per exercise, then the totals."""
    out.mkdir(parents=True, exist_ok=True)
    names = list(asdict(rows[0]).keys()) if rows else [*Row.__dataclass_fields__]
    csv_path, md_path = out / "grades.csv", out / "grades.md"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(cell(v) for v in asdict(r).values()) + " |" for r in rows]
    lines += ["", "| learner | correct | exercises |", "|---|---:|---:|"]
    lines += [f"| {cell(k)} | {a} | {b} |" for k, (a, b) in totals(rows).items()]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, md_path

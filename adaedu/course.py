"""Course maintenance commands: ``adaedu run | gpu | results | student | grade | site | sync-repo``.

- ``adaedu run [NOTEBOOK...]`` re-executes notebooks top to bottom in a fresh kernel, first in the
  smoke profile (timed, discarded), then in the cpu profile (saved, with the hash of the code
  cells and the run times in the notebook metadata), then regenerates the results table.
- ``adaedu gpu [NOTEBOOK...]`` executes notebooks in the gpu profile on a CUDA GPU and records
  their claims and run times under ``results/gpu/`` (the committed notebooks stay as they are).
- ``adaedu results`` regenerates RESULTS.md and the notebook table of README.md from
  ``results/cpu/*.json`` and the notebooks' metadata.
- ``adaedu student [NOTEBOOK...] -o DIR`` writes student copies: every solution region
  (``### BEGIN SOLUTION`` .. ``### END SOLUTION``) becomes ``raise NotImplementedError()``,
  outputs are cleared, checkers stay. (``nbgrader generate_assignment`` gives the same result.)
- ``adaedu grade SUBMISSIONS/`` runs the exercises of submitted notebooks with the course's
  checkers and writes a grade table (:mod:`adaedu.grading`).
- ``adaedu site [-o DIR]`` builds the course website from the committed notebooks
  (:mod:`adaedu.site`), without re-executing them.
- ``adaedu sync-repo`` writes the repository location from ``pyproject.toml``
  (``[tool.adaedu] repository``) into every notebook's Colab badge and setup cell.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import nbformat

from adaedu import claims as claims_mod

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
README_START, README_END = "<!-- notebooks:start -->", "<!-- notebooks:end -->"


# --- notebooks --------------------------------------------------------------------------------


def course_notebooks() -> list[Path]:
    """The paper notebooks (``notebooks/N.M-*.ipynb``), in course order; the template excluded."""
    found = [p for p in NOTEBOOKS.glob("*.ipynb") if re.match(r"\d+\.\d+-", p.name)]
    return sorted(found, key=lambda p: tuple(int(x) for x in p.name.split("-")[0].split(".")))


def notebook_id(path: Path) -> str:
    return path.name.split("-")[0]


def code_sha256(nb: nbformat.NotebookNode) -> str:
    """Hash of the notebook's code cells (sources only), recorded at execution time."""
    digest = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            digest.update(cell.source.encode("utf-8") + b"\x00")
    return digest.hexdigest()


def execute(
    nb: nbformat.NotebookNode,
    cwd: Path,
    profile: str,
    timeout: int = 1800,
    allow_errors: bool = False,
    extra_env: dict[str, str] | None = None,
) -> float:
    """Execute ``nb`` in place in a fresh kernel under ``profile``; returns the seconds it took."""
    from nbclient import NotebookClient

    env = {
        "ADAEDU_PROFILE": profile,
        "ADAEDU_NOTEBOOK_SHA256": code_sha256(nb),
        "TQDM_DISABLE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        **(extra_env or {}),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            allow_errors=allow_errors,
            resources={"metadata": {"path": str(cwd)}},
        )
        start = time.perf_counter()
        client.execute()
        return time.perf_counter() - start
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(paths: list[Path], smoke: bool = True) -> None:
    import tempfile

    import torch

    scratch = tempfile.mkdtemp(prefix="adaedu-scratch-")
    for path in paths:
        meta: dict = {}
        # Smoke runs, and notebooks outside the course (the template), record no claims.
        scratch_env = {"ADAEDU_RESULTS_DIR": scratch}
        cpu_env = None if path in course_notebooks() else scratch_env
        if smoke:
            nb = nbformat.read(path, as_version=4)
            meta["smoke_seconds"] = round(
                execute(nb, path.parent, "smoke", extra_env=scratch_env), 1
            )
            print(f"{path.name}: smoke {meta['smoke_seconds']} s", flush=True)
        nb = nbformat.read(path, as_version=4)
        seconds = execute(nb, path.parent, "cpu", extra_env=cpu_env)
        old = nb.metadata.get("adaedu", {})
        nb.metadata["adaedu"] = {
            **{k: old[k] for k in ("smoke_seconds",) if k in old},
            **meta,
            "profile": "cpu",
            "cpu_seconds": round(seconds, 1),
            "code_sha256": code_sha256(nb),
            "torch": torch.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        }
        nbformat.write(nb, path)
        print(f"{path.name}: cpu {seconds:.1f} s", flush=True)
    results()


def run_gpu(
    paths: list[Path],
    out: Path | None = None,
    *,
    results: Path | None = None,
    require_cuda: bool = True,
) -> Path:
    """Execute ``paths`` in the gpu profile, one after the other, each in a fresh kernel, and
    record what they measured: every notebook's claims in ``results/gpu/<id>.json`` (written by
    the notebook itself) and the run times in ``results/gpu/run_times.json``. The executed
    notebooks go to ``out`` (default ``build/gpu``); the committed cpu notebooks are not touched.
    ``results`` is the results folder (default the repository's ``results/``).
    Refuses to start without CUDA unless ``require_cuda`` is False (the tests' way to check the
    command on a CPU with a small notebook)."""
    import torch

    if require_cuda and not torch.cuda.is_available():
        raise RuntimeError(
            "the gpu profile needs a CUDA GPU and torch.cuda.is_available() is False here; run "
            "it on a machine with one (make gpu), or use the cpu profile (make notebooks)"
        )
    out = Path(out) if out is not None else ROOT / "build" / "gpu"
    out.mkdir(parents=True, exist_ok=True)
    results = Path(results) if results is not None else ROOT / "results"
    record = results / "gpu" / "run_times.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    times = json.loads(record.read_text(encoding="utf-8")) if record.exists() else {}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    total = 0.0
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        seconds = execute(nb, path.parent, "gpu", extra_env={"ADAEDU_RESULTS_DIR": str(results)})
        nbformat.write(nb, out / path.name)
        total += seconds
        times[notebook_id(path)] = {
            "gpu_seconds": round(seconds, 1),
            "code_sha256": code_sha256(nb),
            "device": device,
            "torch": torch.__version__,
        }
        record.write_text(json.dumps(times, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"{path.name}: gpu {seconds:.1f} s", flush=True)
    print(f"total {total / 60:.1f} min on {device}; records in {record.parent}", flush=True)
    return record


# --- results table ------------------------------------------------------------------------------


def load_records(profile: str = "cpu") -> list[dict]:
    folder = ROOT / "results" / profile
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]


PARTS = {
    "1": "Part 1: precursors",
    "2": "Part 2: sparse mixtures of experts",
    "3": "Part 3: soft and modular mixtures",
    "4": "Part 4: halting and early exit",
    "5": "Part 5: adaptive decoding and cascades",
}


def claim_outcome(c: dict) -> str:
    """A record's outcome (records written before the three-outcome standard hold ``passed``)."""
    if "outcome" in c:
        return c["outcome"]
    return claims_mod.REPRODUCED if c["passed"] else claims_mod.NOT_REPRODUCED


def claim_kind(c: dict) -> str:
    return c.get("kind", "replication")


def results() -> None:
    """Regenerate RESULTS.md, README.md's notebook table and the notebooks' run-time lines."""
    records = {r["notebook"]: r for r in load_records("cpu")}
    replications, mechanisms = [], []
    by_part: dict[str, list[dict]] = {}
    rows, mech_rows = [], []
    for path in course_notebooks():
        nid = notebook_id(path)
        rec = records.get(nid)
        link = f"[{nid}](notebooks/{path.name})"
        if rec is None:
            rows.append(f"| {link} | *no cpu record yet* | | | | | |")
            continue
        for c in rec["claims"]:
            outcome = claim_outcome(c)
            if claim_kind(c) == "mechanism":
                mechanisms.append({"outcome": outcome})
                mech_rows.append(
                    f"| {link} | {c['statement']} | {c['measured']} | {c['criterion']} | "
                    f"{claims_mod.BADGES[outcome]} |"
                )
                continue
            replications.append({"outcome": outcome})
            by_part.setdefault(nid.split(".")[0], []).append({"outcome": outcome})
            rows.append(
                f"| {link} | {c['statement']} | {c['paper']} | {c['source']} | {c['measured']} | "
                f"{c['criterion']} | {claims_mod.outcome_cell(outcome, c.get('why'))} |"
            )
    lines = [
        "# Results",
        "",
        "Generated by `make results` (`adaedu results`) from `results/cpu/*.json`, which the",
        "notebooks write when they run in the cpu profile (`make notebooks`). Do not edit by hand.",
        "",
        "Each replication of a paper's claim ends in one of three outcomes: **reproduced**, **not",
        "reproduced**, or **inconclusive**, the last only through a rule fixed before the run (a",
        "precondition that failed, or an interval that straddles the criterion; the reason is",
        "given). Mechanism checks (identities that hold by construction) are listed and counted",
        "apart.",
        "",
        f"**Replications, cpu profile: {claims_mod.tally(replications)}.**",
        "",
        "| part | reproduced | not reproduced | inconclusive | claims |",
        "|---|---:|---:|---:|---:|",
    ]
    for part in sorted(by_part, key=int):
        outs = [c["outcome"] for c in by_part[part]]
        lines.append(
            f"| {PARTS.get(part, 'Part ' + part)} | "
            + " | ".join(str(outs.count(o)) for o in claims_mod.OUTCOMES)
            + f" | {len(outs)} |"
        )
    all_outs = [c["outcome"] for c in replications]
    lines.append(
        "| **all** | "
        + " | ".join(f"**{all_outs.count(o)}**" for o in claims_mod.OUTCOMES)
        + f" | **{len(all_outs)}** |"
    )
    lines += [
        "",
        "## Replications",
        "",
        "| notebook | claim | paper | source | this notebook | criterion | outcome |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## Mechanism checks",
        "",
        f"{sum(m['outcome'] == claims_mod.HOLDS for m in mechanisms)} of {len(mechanisms)} hold.",
        "",
        "| notebook | check | this notebook | criterion | outcome |",
        "|---|---|---|---|---|",
        *mech_rows,
        "",
    ]
    (ROOT / "RESULTS.md").write_text("\n".join(lines), encoding="utf-8")
    sync_run_times(course_notebooks())
    readme = ROOT / "README.md"
    if readme.exists():
        text = readme.read_text(encoding="utf-8")
        if README_START in text and README_END in text:
            head, rest = text.split(README_START, 1)
            _, tail = rest.split(README_END, 1)
            table = notebook_table()
            readme.write_text(
                f"{head}{README_START}\n{table}\n{README_END}{tail}", encoding="utf-8"
            )


RUN_TIME = re.compile(r"\*\*Run time\*\*.*?(?=\n\n|\Z)", re.S)


def run_time_line(meta: dict) -> str:
    """The header's run-time line, from the times ``adaedu run`` recorded in the metadata."""
    return (
        f"**Run time** (measured by `adaedu run` on {meta.get('machine', '?')}): smoke "
        f"{_fmt_s(meta.get('smoke_seconds'))} · cpu {_fmt_s(meta.get('cpu_seconds'))} · "
        "gpu: not measured yet."
    )


def sync_run_times(paths: list[Path]) -> list[Path]:
    """Write each notebook's measured run times into its first cell (markdown only: the code
    and its hash stay as they are). Notebooks never run by ``adaedu run`` are left alone."""
    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        meta = nb.metadata.get("adaedu", {})
        if "cpu_seconds" not in meta:
            continue
        first = nb.cells[0]
        line = run_time_line(meta)
        new = RUN_TIME.sub(lambda _, line=line: line, first.source, count=1)
        if new != first.source:
            first.source = new
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def notebook_table() -> str:
    rows = [
        "| # | notebook | paper | replicates | smoke | cpu (2 cores) | claims: ✅ / ❌ / ❔ (mechanism checks) |",
        "|---|---|---|---|---|---|---|",
    ]
    records = {r["notebook"]: r for r in load_records("cpu")}
    for path in course_notebooks():
        nb = nbformat.read(path, as_version=4)
        meta = nb.metadata.get("adaedu", {})
        info = nb.metadata.get("adaedu_course", {})
        rec = records.get(notebook_id(path), {"claims": []})
        reps = [claim_outcome(c) for c in rec["claims"] if claim_kind(c) == "replication"]
        mech = [claim_outcome(c) for c in rec["claims"] if claim_kind(c) == "mechanism"]
        counts = " / ".join(str(reps.count(o)) for o in claims_mod.OUTCOMES)
        mech_note = f" ({mech.count(claims_mod.HOLDS)}/{len(mech)})" if mech else ""
        rows.append(
            f"| {notebook_id(path)} | [{info.get('title', path.stem)}](notebooks/{path.name}) | {info.get('paper', '')} | "
            f"{info.get('replicates', '')} | {_fmt_s(meta.get('smoke_seconds'))} | {_fmt_s(meta.get('cpu_seconds'))} | "
            f"{counts}{mech_note} |"
        )
    return "\n".join(rows)


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# --- student copies -----------------------------------------------------------------------------


def strip_solutions(source: str) -> str:
    """Replace every ``### BEGIN SOLUTION`` .. ``### END SOLUTION`` region by
    ``raise NotImplementedError()`` at the marker's indentation (what nbgrader does)."""
    out, inside, indent = [], False, ""
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError("nested '### BEGIN SOLUTION'")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
        elif stripped == END:
            if not inside:
                raise ValueError("'### END SOLUTION' without '### BEGIN SOLUTION'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("'### BEGIN SOLUTION' without '### END SOLUTION'")
    return "\n".join(out)


def student_copy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("adaedu", None)
    return nb


def student(paths: list[Path], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        target = out / path.name
        nbformat.write(student_copy(nbformat.read(path, as_version=4)), target)
        written.append(target)
    return written


# --- repository location --------------------------------------------------------------------------


def repository() -> str:
    """``owner/name`` of the course's GitHub repository: ``[tool.adaedu] repository`` in pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^\[tool\.adaedu\][^\[]*?^repository\s*=\s*"([^"]+)"', text, re.M | re.S)
    if not match:
        raise ValueError('pyproject.toml lacks [tool.adaedu] repository = "owner/name"')
    return match.group(1)


BADGE = re.compile(
    r"https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/main/notebooks/[^)\s\"]+"
)
SETUP = re.compile(r'^ADAEDU_REPO = "[^"]*"', re.M)


def sync_repo(paths: list[Path]) -> list[Path]:
    """Write the repository location into each notebook's Colab badge and setup cell."""
    repo, changed = repository(), []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        before = json.dumps(nb.cells)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = BADGE.sub(
                    f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{path.name}",
                    cell.source,
                )
            else:
                cell.source = SETUP.sub(f'ADAEDU_REPO = "{repo}"', cell.source)
        if json.dumps(nb.cells) != before:
            nbformat.write(nb, path)
            changed.append(path)
    return changed


# --- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adaedu", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser(
        "run", help="re-execute notebooks in the cpu profile and regenerate the results table"
    )
    p_run.add_argument("notebooks", nargs="*", type=Path)
    p_run.add_argument("--no-smoke", action="store_true", help="skip the timed smoke run")
    sub.add_parser(
        "results", help="regenerate RESULTS.md, README.md's table and the run-time lines"
    )
    p_student = sub.add_parser("student", help="write student copies without solutions")
    p_student.add_argument("notebooks", nargs="*", type=Path)
    p_student.add_argument("-o", "--out", type=Path, default=ROOT / "student")
    sub.add_parser("sync-repo", help="write the repository location into badges and setup cells")
    p_gpu = sub.add_parser(
        "gpu", help="execute notebooks in the gpu profile (needs CUDA) and record results/gpu/"
    )
    p_gpu.add_argument("notebooks", nargs="*", type=Path)
    p_gpu.add_argument("-o", "--out", type=Path, help="where the executed notebooks go")
    p_grade = sub.add_parser(
        "grade", help="grade submitted notebooks: run their exercises and the course's checkers"
    )
    p_grade.add_argument("submissions", type=Path, help="a folder: LEARNER/NOTEBOOK.ipynb")
    p_grade.add_argument("-o", "--out", type=Path, help="where to write grades.csv and grades.md")
    p_grade.add_argument("--timeout", type=float, default=30.0, help="seconds per cell and check")
    p_site = sub.add_parser(
        "site", help="build the course website from the committed notebooks (no re-execution)"
    )
    p_site.add_argument("-o", "--out", type=Path, default=ROOT / "build" / "site")
    p_site.add_argument("--strict", action="store_true", help="fail on any Sphinx warning")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in getattr(args, "notebooks", [])] or course_notebooks()
    for p in paths:
        if not p.exists():
            parser.error(f"notebook {p} does not exist")
    if args.command == "run":
        run(paths, smoke=not args.no_smoke)
    elif args.command == "results":
        results()
    elif args.command == "student":
        for target in student(paths, args.out):
            print(f"wrote {target}")
    elif args.command == "gpu":
        try:
            run_gpu(paths, args.out)
        except RuntimeError as exc:
            print(f"adaedu gpu: {exc}", file=sys.stderr)
            return 2
    elif args.command == "grade":
        from adaedu.grading import grade, totals, write_tables

        if not args.submissions.is_dir():
            parser.error(f"submissions={args.submissions}: not a folder")
        rows = grade(args.submissions, timeout=args.timeout)
        csv_path, md_path = write_tables(rows, args.out or args.submissions)
        for learner, (right, total) in totals(rows).items():
            print(f"{learner}: {right} / {total} correct")
        print(f"wrote {csv_path} and {md_path}")
    elif args.command == "site":
        from adaedu.site import build_site

        try:
            built = build_site(args.out, strict=args.strict)
        except (ValueError, RuntimeError, ModuleNotFoundError) as exc:
            print(f"adaedu site: {exc}", file=sys.stderr)
            return 2
        for line in built.warnings:
            print(line)
        print(
            f"built {len(built.pages)} pages ({len(built.notebooks)} notebooks) in "
            f"{built.seconds:.1f} s: open {built.html / 'index.html'}"
        )
    elif args.command == "sync-repo":
        for p in sync_repo(paths):
            print(f"updated {p.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

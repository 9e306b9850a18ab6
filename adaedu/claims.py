"""Claims: what a notebook tests, the paper's number beside ours, and a record of the outcome.

A notebook states each claim with :meth:`Claims.check`: the statement, the paper's value and where
it comes from, our measurement, the pass criterion (decided before the run, written in words) and
whether it passed. :meth:`Claims.show` displays the "paper vs. this notebook" table, failures
included; :meth:`Claims.save` writes ``results/<profile>/<notebook>.json``, from which
``adaedu results`` regenerates RESULTS.md.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from adaedu.profiles import current_profile

RESULTS_ENV = "ADAEDU_RESULTS_DIR"
HASH_ENV = "ADAEDU_NOTEBOOK_SHA256"  # set by `adaedu run` to the hash of the notebook's code cells


@dataclass(frozen=True)
class Claim:
    """One tested claim. ``passed`` is decided by the notebook's criterion, never edited by hand."""

    id: str
    statement: str
    paper: str
    source: str
    measured: str
    criterion: str
    passed: bool


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
        passed: bool,
    ) -> Claim:
        """Record one claim and return it. ``measured`` is our number, formatted for reading."""
        if any(c.id == id for c in self.claims):
            raise ValueError(
                f"id={id!r} is already used in this notebook; claim ids must be unique"
            )
        claim = Claim(id, statement, paper, source, measured, criterion, bool(passed))
        self.claims.append(claim)
        return claim

    def markdown(self) -> str:
        """The "paper vs. this notebook" table as Markdown (GitHub and Colab render it)."""
        rows = [
            "| claim | paper | source | this notebook | criterion | outcome |",
            "|---|---|---|---|---|---|",
        ]
        for c in self.claims:
            outcome = "✅ reproduced" if c.passed else "❌ **not reproduced**"
            rows.append(
                f"| {c.statement} | {c.paper} | {c.source} | {c.measured} | {c.criterion} | {outcome} |"
            )
        passed = sum(c.passed for c in self.claims)
        rows.append(
            f"\n**{passed} of {len(self.claims)} claims reproduced** (profile `{current_profile()}`)."
        )
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
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}",
            "claims": [asdict(c) for c in self.claims],
        }
        out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return out

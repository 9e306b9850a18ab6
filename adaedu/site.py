"""The course as a static website: ``adaedu site`` (``make site``).

The site is built from the committed, executed notebooks, **without re-executing them**, by
Sphinx with myst-nb (notebooks and Markdown) and sphinx-book-theme (sidebar, previous / next,
page contents, local search). It is offline by construction: MathJax is served from the site
(sphinx-mathjax-offline), the widget manager is not loaded (the explorers' static figures stand
in for the live widgets), and the remote Colab badge image becomes a text link.

The repository stays as GitHub shows it: the builder assembles a staging folder (the README as
the home page, with a table of contents generated from the notebooks found, grouped by course
part; RESULTS.md, CONTRIBUTING.md, docs/ and data/README.md), rewrites only the staged copies,
and runs Sphinx on it. A notebook added to ``notebooks/`` appears on the site without editing a
table of contents.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from adaedu.course import PARTS, ROOT, course_notebooks, notebook_id, repository

#: Pages of the site besides the notebooks, as (source in the repository, caption group).
EXTRA_PAGES = ("RESULTS.md", "docs/benchmarks.md", "CONTRIBUTING.md", "data/README.md")
#: Output types of live widgets: dropped from the site (their static fallback figures stay).
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
BADGE_IMAGE = re.compile(
    r"\[!\[Open in Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
    r"\(([^)\s]+)\)"
)
SOURCE_LINK = re.compile(r"\]\(\.\./((?:adaedu|tests|benchmarks|scripts)/[^)\s#]+)(#[^)\s]*)?\)")

CONF = """\
# Sphinx configuration of the course website, written by adaedu.site (do not edit: regenerated).
project = "adaedu: Adaptive Computation, hands-on"
author = "the adaedu authors"
copyright = "the adaedu authors, MIT licence"
root_doc = "index"
extensions = ["myst_nb", "sphinx-mathjax-offline"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
source_suffix = {{".md": "myst-nb", ".ipynb": "myst-nb"}}
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"            # the committed outputs, never re-executed
nb_render_markdown_format = "myst"   # Markdown outputs (claims tables, adaedu.show) as tables
nb_ipywidgets_js = {{}}                # no widget manager from a CDN
nb_merge_streams = True
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
html_theme = "sphinx_book_theme"
html_title = "adaedu"
html_static_path = []
html_theme_options = {{
    "repository_url": "https://github.com/{repo}",
    "use_repository_button": False,
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "navigation_with_keys": False,
}}
html_context = {{"default_mode": "light"}}  # the figures have white backgrounds
"""


@dataclass
class SiteBuild:
    """What :func:`build_site` produced: the ``html`` folder, its ``pages`` (paths of the HTML
    files of the notebooks and the other pages, relative to ``html``), the build ``seconds`` and
    Sphinx's ``warnings`` (its messages, one per line)."""

    html: Path
    pages: list[str]
    notebooks: list[str]
    seconds: float
    warnings: list[str]


MARKER = ".adaedu-site"  # left in every folder the builder makes, so that it only empties its own


def part_of(path: Path) -> str:
    """The part a notebook belongs to, by its number: ``2.13-...`` is in part 2."""
    if not re.match(r"\d+\.\d+-", Path(path).name):
        raise ValueError(f"path={path}; allowed values: a course notebook named N.M-...ipynb")
    return notebook_id(Path(path)).split(".")[0]


def _claim(folder: Path, name: str = "out") -> None:
    """Make ``folder`` the builder's own: refuse a folder with files the builder did not write
    (nothing of the user's is ever deleted), then empty it."""
    folder = Path(folder).resolve()
    if folder == ROOT or folder in ROOT.parents:
        raise ValueError(
            f"{name}={folder}; allowed values: a folder for the build, not the repository"
        )
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"{name}={folder} is a file; allowed values: a folder")
        if any(folder.iterdir()) and not (folder / MARKER).exists():
            raise ValueError(
                f"{name}={folder} holds files adaedu did not write; allowed values: a new or empty "
                "folder, or one an earlier `adaedu site` made"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by adaedu site; emptied at every build\n", "utf-8")


def toc_markdown(notebooks: list[Path]) -> str:
    """Hidden toctrees for the home page: one per course part (in course order), then one for
    the reference pages. Sphinx turns them into the sidebar."""
    blocks = []
    parts: dict[str, list[Path]] = {}
    for nb in notebooks:
        parts.setdefault(part_of(nb), []).append(nb)
    for part, members in parts.items():
        entries = "\n".join(f"notebooks/{p.stem}" for p in members)
        caption = PARTS.get(part, f"Part {part}")
        blocks.append(f"```{{toctree}}\n:hidden:\n:caption: {caption}\n\n{entries}\n```")
    extras = "\n".join(Path(p).with_suffix("").as_posix() for p in EXTRA_PAGES)
    blocks.append(f"```{{toctree}}\n:hidden:\n:caption: Results and reference\n\n{extras}\n```")
    return "\n\n".join(blocks) + "\n"


def site_notebook(nb: nbformat.NotebookNode, repo: str) -> nbformat.NotebookNode:
    """The copy of a notebook the site shows: the Colab badge as a text link (no remote image),
    links to the package's source files pointing at the repository, live-widget outputs dropped
    (their static figures stay). Sources and outputs are otherwise the committed ones."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ValueError(f"repo={repo!r}; allowed values: 'owner/name' of a GitHub repository")
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    blob = f"https://github.com/{repo}/blob/main/"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = BADGE_IMAGE.sub(r"[Open in Colab](\1)", cell.source)
            cell.source = SOURCE_LINK.sub(lambda m: f"]({blob}{m[1]}{m[2] or ''})", cell.source)
        elif cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_MIME not in o.get("data", {})]
    return nb


def stage(src: Path) -> list[Path]:
    """Assemble the site's sources in ``src`` (emptied first if an earlier build made it);
    returns the notebooks staged."""
    _claim(src, "src")
    (src / "notebooks").mkdir()
    repo = repository()
    notebooks = course_notebooks()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (src / "index.md").write_text(readme.rstrip() + "\n\n" + toc_markdown(notebooks), "utf-8")
    for page in EXTRA_PAGES:
        target = src / page
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / page, target)
    for path in notebooks:
        nb = site_notebook(nbformat.read(path, as_version=4), repo)
        nbformat.write(nb, src / "notebooks" / path.name)
    (src / "conf.py").write_text(CONF.format(repo=repo), encoding="utf-8")
    return notebooks


def build_site(out: Path | None = None, *, strict: bool = False) -> SiteBuild:
    """Build the website into ``out`` (default ``build/site``; the HTML is in ``out/html``).

    ``strict``: raise if Sphinx reports any warning (a broken link, a missing page). Needs the
    ``site`` extra (Sphinx, myst-nb, sphinx-book-theme, sphinx-mathjax-offline)."""
    try:
        from sphinx.cmd.build import build_main
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "the website needs the site extra: pip install -e '.[site]' (make site does it)"
        ) from exc
    out = Path(out) if out is not None else ROOT / "build" / "site"
    src, html, log = out / "src", out / "html", out / "warnings.txt"
    start = time.perf_counter()
    _claim(out)
    notebooks = stage(src)
    args = ["-b", "html", "-q", "-j", "1", "-w", str(log), "-d", str(out / "doctrees")]
    status = build_main([*args, str(src), str(html)])
    seconds = time.perf_counter() - start
    warnings = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    if status != 0:
        raise RuntimeError(f"sphinx-build failed (status {status}):\n" + "\n".join(warnings))
    if strict and warnings:
        raise RuntimeError(f"the site build gave {len(warnings)} warnings:\n" + "\n".join(warnings))
    pages = [f"notebooks/{p.stem}.html" for p in notebooks]
    pages += ["index.html"] + [Path(p).with_suffix(".html").as_posix() for p in EXTRA_PAGES]
    return SiteBuild(html, pages, [notebook_id(p) for p in notebooks], seconds, warnings)

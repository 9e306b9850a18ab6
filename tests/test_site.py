"""The course website (``make site``), built from the committed notebooks and read in a real
browser: every page loads without a request leaving the site, without console errors, with its
math typeset by the site's own MathJax, every image loaded, the claims tables present, and the
home page linking every notebook. A second test shows the check fails when the offline MathJax
is taken away."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.browser import launched, require_browser, serve

pytest.importorskip("sphinx", reason="the site needs the site extra: pip install -e '.[site]'")
pytestmark = pytest.mark.slow

#: In the browser, after MathJax has run: math left as raw TeX, and math typeset.
MATH_STATE = """() => {
  const spans = [...document.querySelectorAll('.math')];
  const raw = spans.filter(s => !s.querySelector('mjx-container')).map(s => s.textContent.slice(0, 60));
  return {total: spans.length, raw: raw, typeset: document.querySelectorAll('mjx-container').length};
}"""
IMAGES = """() => [...document.querySelectorAll('article img')]
  .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))"""
CLAIMS_TABLES = """() => [...document.querySelectorAll('article table')].filter(t => {
  const head = (t.tHead ? t.tHead.textContent : '').toLowerCase();
  return head.includes('claim') && head.includes('outcome');
}).length"""
WAIT_MATHJAX = """async () => {
  if (!document.querySelector('.math')) return 'no math';
  for (let i = 0; i < 200 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++)
    await new Promise(r => setTimeout(r, 50));
  if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) return 'no MathJax';
  await MathJax.startup.promise;
  return 'typeset';
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require_browser()
    from adaedu.site import build_site

    return build_site(tmp_path_factory.mktemp("site"), strict=True)


def read_page(context, base: str, page: str) -> dict:
    """Open ``page`` of the site served at ``base`` and report what a reader would see wrong."""
    outside, errors = [], []
    tab = context.new_page()

    def route(r) -> None:
        if r.request.url.startswith(base) or r.request.url.startswith("data:"):
            r.continue_()
        else:  # nothing may leave the site: count it and block it
            outside.append(r.request.url)
            r.abort()

    tab.route("**/*", route)
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    missing = []
    tab.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    tab.goto(base + page, wait_until="load")
    mathjax = tab.evaluate(WAIT_MATHJAX)
    state = dict(
        outside=outside,
        errors=errors,
        missing=missing,
        mathjax=mathjax,
        math=tab.evaluate(MATH_STATE),
        broken_images=tab.evaluate(IMAGES),
        claims_tables=tab.evaluate(CLAIMS_TABLES),
        links=tab.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)"),
        text=tab.inner_text("article"),
        sidebar=tab.text_content(".bd-sidebar-primary") or "",
    )
    tab.close()
    return state


def problems(state: dict) -> list[str]:
    """Everything wrong with one page, in words (empty: the page is fine)."""
    found = []
    if state["outside"]:
        found.append(f"{len(state['outside'])} requests left the site: {state['outside'][:3]}")
    if state["errors"]:
        found.append(f"console errors: {state['errors'][:3]}")
    if state["missing"]:
        found.append(f"missing files: {state['missing'][:3]}")
    if state["mathjax"] == "no MathJax":
        found.append("the page has math but MathJax never started")
    if state["math"]["raw"]:
        found.append(
            f"{len(state['math']['raw'])} formulas left as raw TeX: {state['math']['raw'][:2]}"
        )
    if state["broken_images"]:
        found.append(f"images not loaded: {state['broken_images'][:3]}")
    return found


def test_every_page_reads_offline(site) -> None:
    assert len(site.notebooks) >= 16 and not site.warnings
    report = {}
    with launched() as browser, serve(site.html) as base:
        context = browser.new_context()
        for page in site.pages:
            state = read_page(context, base, page)
            report[page] = state
            assert not problems(state), f"{page}: {problems(state)}"
        context.close()
    notebook_pages = [p for p in site.pages if p.startswith("notebooks/")]
    assert len(notebook_pages) == len(site.notebooks)
    for page in notebook_pages:
        state = report[page]
        assert state["claims_tables"] >= 1, f"{page}: no claims table"
        assert state["math"]["typeset"] > 0, f"{page}: no typeset math"
        assert "$$" not in state["text"] and "\\frac" not in state["text"], page
    home = report["index.html"]
    for page in notebook_pages:  # the home page links every notebook (README table and sidebar)
        assert any(link.endswith(page) for link in home["links"]), f"index.html: no link to {page}"
    # the sidebar lists every part present, on every page; previous / next follow course order
    from adaedu.course import PARTS

    parts = {PARTS[n.split(".")[0]] for n in site.notebooks}
    for page, state in report.items():
        assert all(part in state["sidebar"] for part in parts), f"{page}: sidebar lacks a part"
    second = report[notebook_pages[1]]
    assert any(link.endswith(notebook_pages[0]) for link in second["links"])
    assert any(link.endswith(notebook_pages[2]) for link in second["links"])
    # the search page works offline too
    with launched() as browser, serve(site.html) as base:
        tab = browser.new_page()
        tab.goto(base + "search.html?q=halting", wait_until="load")
        tab.wait_for_selector("#search-results li", timeout=20_000)
        hits = tab.eval_on_selector_all("#search-results li a", "els => els.map(e => e.href)")
        assert any("4.1-graves" in h or "4.2-dehghani" in h for h in hits), hits[:5]


def test_the_check_fails_without_the_offline_mathjax(site, tmp_path: Path) -> None:
    broken = tmp_path / "html"
    shutil.copytree(site.html, broken)
    shutil.rmtree(broken / "_static" / "mathjax")
    page = next(p for p in site.pages if p.startswith("notebooks/4.2"))
    with launched() as browser, serve(broken) as base:
        context = browser.new_context()
        found = problems(read_page(context, base, page))
        context.close()
    assert any("MathJax" in f or "raw TeX" in f for f in found), found
    assert any("missing files" in f for f in found), found


def test_site_copy_keeps_the_repository_as_it_is() -> None:
    """The staged notebook drops the remote badge image and live widgets, nothing else."""
    import nbformat

    from adaedu.course import course_notebooks
    from adaedu.site import WIDGET_MIME, site_notebook

    path = next(p for p in course_notebooks() if p.name.startswith("4.2"))
    nb = nbformat.read(path, as_version=4)
    before = path.read_bytes()
    copy = site_notebook(nb, "owner/name")
    assert path.read_bytes() == before
    text = "".join(c.source for c in copy.cells if c.cell_type == "markdown")
    assert "colab-badge.svg" not in text and "[Open in Colab](https://colab" in text
    assert "](https://github.com/owner/name/blob/main/adaedu/halting/universal.py)" in text
    outputs = [o for c in copy.cells if c.cell_type == "code" for o in c.outputs]
    assert not any(WIDGET_MIME in o.get("data", {}) for o in outputs)
    originals = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    dropped = [o for o in originals if WIDGET_MIME in o.get("data", {})]
    assert dropped and len(outputs) == len(originals) - len(dropped)
    assert [c.source for c in copy.cells if c.cell_type == "code"] == [
        c.source for c in nb.cells if c.cell_type == "code"
    ]

"""A notebook run by a learner in JupyterLab, in a real browser: JupyterLab started as
``make course`` starts it (the course's kernel, smoke profile), a notebook opened, Run All Cells
from the menu; every cell must run without an error, and the ipywidgets explorer must render as
live widgets whose slider redraws the figure.

The notebook is a copy in a temporary folder (JupyterLab may save it; the committed one is never
touched). JupyterLab 4 keeps only on-screen cells in the page unless windowing is off, so the
test's settings turn it off; they also switch off autosave and the news / update checks (nothing
may leave the machine). MPLBACKEND is removed from the kernel's environment: with a non-GUI
backend forced, the explorer would draw no figure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from adaedu.course import ROOT, course_notebooks
from tests.browser import launched, require_browser

pytestmark = pytest.mark.slow
NOTEBOOK = "5.3"  # smoke run in seconds, with a two-slider explorer
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path: Path):
    """JupyterLab serving a copy of one notebook; yields (url of the notebook, its path)."""
    require_browser()
    pytest.importorskip("jupyterlab")
    source = next(p for p in course_notebooks() if p.name.startswith(NOTEBOOK + "-"))
    work = tmp_path / "notebooks"
    work.mkdir()
    copy = work / source.name
    shutil.copy(source, copy)
    settings = tmp_path / "settings"
    for name, values in SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env |= {
        "ADAEDU_PROFILE": "smoke",
        "ADAEDU_RESULTS_DIR": str(tmp_path / "results"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    port, token = _free_port(), secrets.token_hex(8)
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter), "lab", str(work)]  # what `make course` runs, plus the test's own server
    cmd += ["--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}"]
    cmd += [f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")  # as `make course` does as root
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("JupyterLab exited: " + (tmp_path / "lab.log").read_text())
                time.sleep(0.5)
        yield f"{base}/lab/tree/{copy.name}?token={token}", copy
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_run_all_cells_and_move_a_slider(lab) -> None:
    url, path = lab
    code_cells = sum(c.cell_type == "code" for c in nbformat.read(path, as_version=4).cells)
    outside = []
    with launched() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})

        def route(r) -> None:
            if r.request.url.startswith("http://127.0.0.1") or r.request.url.startswith("ws://"):
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        # JupyterLab may ask which kernel to start (when it is slow to find the notebook's), at
        # any moment: accept its first offer, the course's kernel, whenever the dialog shows
        page.add_locator_handler(
            page.locator(".jp-Dialog .jp-mod-accept"), lambda button: button.click()
        )
        page.goto(url)
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
        # the kernel is up when the toolbar names it and its status says idle
        page.wait_for_selector(".jp-KernelName:has-text('adaedu')", timeout=60_000)
        page.wait_for_selector(
            ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000
        )
        # windowing off: every cell ends up in the page (they are rendered in batches)
        page.wait_for_function(
            "n => document.querySelectorAll('.jp-Notebook .jp-CodeCell').length === n",
            arg=code_cells,
            timeout=60_000,
        )

        def prompts() -> list[str]:
            return [
                p.strip() for p in page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
            ]

        def run_all() -> None:
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()

        run_all()
        deadline, started = time.monotonic() + 240, time.monotonic()
        done: list[str] = []
        while time.monotonic() < deadline:
            now = prompts()
            done = [p for p in now if p.startswith("[") and p[1:-2].isdigit()]
            if len(done) == code_cells:
                break
            if all(p == "[ ]:" for p in now) and time.monotonic() - started > 20:
                run_all()  # the click reached a kernel that was not ready: ask once more
                started = time.monotonic()
            time.sleep(1)
        assert len(done) == code_cells, f"not every cell ran: {prompts()}"
        errors = page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        )
        tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
        assert not tracebacks, tracebacks[:2]
        # the explorer: live widgets with two sliders and a figure that follows them
        sliders = page.locator(".jupyter-widgets .widget-slider")
        try:  # the widget views render once their models have arrived over the kernel's comm
            sliders.first.wait_for(timeout=30_000)
        except Exception:
            pytest.fail("the explorer did not render as live widgets")
        assert sliders.count() >= 2, "the explorer has two sliders"
        widget = sliders.first.locator("xpath=ancestor::div[contains(@class,'widget-interact')]")
        figure = widget.locator(".jp-OutputArea-output img")
        figure.first.wait_for(timeout=30_000)
        before = figure.first.get_attribute("src")
        handle = sliders.first.locator(".noUi-handle, [role='slider']").first
        handle.focus()
        for _ in range(10):
            page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "([el, old]) => el.querySelector('img') && el.querySelector('img').src !== old",
            arg=[widget.element_handle(), before],
            timeout=30_000,
        )
        page.close()
    # only the notebook's own Colab badge image points outside (JupyterLab shows it online)
    assert set(outside) <= {BADGE}, outside[:3]

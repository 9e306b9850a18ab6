"""A real browser for the tests: Playwright (from PyPI) driving the system's Chromium.

Playwright's own browser download (``playwright install``) does not work offline, so the tests
use the Chromium the machine has (Debian's ``chromium`` package; ``make test`` installs it as
root on Debian / Ubuntu where it is missing). Set ``ADAEDU_CHROMIUM`` to choose another binary.
Where no browser is found the browser tests are skipped with a message saying how to install
one, except under ``CI=true``, where a missing browser fails them.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HOW_TO = (
    "no Chromium found for the browser tests: on Debian / Ubuntu run `apt-get install chromium` "
    "(make test does it as root), elsewhere install Chromium or Chrome and set ADAEDU_CHROMIUM "
    "to its path"
)


def chromium_path() -> str | None:
    """The browser binary: ``ADAEDU_CHROMIUM`` if set, else the first of CANDIDATES on PATH."""
    chosen = os.environ.get("ADAEDU_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).exists() else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def require_browser() -> str:
    """The browser's path, or skip (fail under CI=true) with the way to install one."""
    try:
        import playwright.sync_api  # noqa: F401
    except ModuleNotFoundError:
        message = "playwright is not installed: pip install -e '.[browser]' (make test does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(HOW_TO)
        pytest.skip(HOW_TO)
    return path


@contextlib.contextmanager
def launched() -> Iterator[object]:
    """A headless Chromium (Playwright ``Browser``), closed afterwards."""
    from playwright.sync_api import sync_playwright

    path = require_browser()
    with sync_playwright() as p:
        # --no-sandbox: Chromium's sandbox refuses to run as root (containers, CI)
        browser = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request log on the test's output
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port); yields the base URL."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()

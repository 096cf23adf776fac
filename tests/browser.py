"""Shared helpers of the browser tests: a real chromium driven by Playwright, and llmkit apps served in a
subprocess that a test can SIGKILL.

Where no browser is installed (a user's machine) the browser tests skip with the reason; `.ci/run` sets
LLMKIT_REQUIRE_BROWSER=1, and then a missing browser fails them instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import pytest

from llmkit.launch import free_port  # noqa: F401  (the tests import it from here)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def require_browser() -> str:
    """The chromium executable, or skip (fail under CI) saying what is missing."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install playwright)")
    path = chromium_path()
    if path is None:
        missing.append("a chromium browser (Debian: apt-get install chromium)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("LLMKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (LLMKIT_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    return path


@contextmanager
def browser_page():
    from playwright.sync_api import sync_playwright

    path = require_browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


@contextmanager
def browser_pages(n: int):
    """`n` pages, each in its own browser context (its own cookies and storage: n people), in one browser."""
    from playwright.sync_api import sync_playwright

    path = require_browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            pages = [browser.new_context().new_page() for _ in range(n)]
            for page in pages:
                page.set_default_timeout(60_000)
            yield pages
        finally:
            browser.close()


def outbound_probes(port: int) -> str:
    """Text that makes a browser request http://127.0.0.1:`port`/... wherever it is rendered as Markdown or HTML
    (image, raw HTML image and iframe, autolink preview) or run as script (a javascript: link)."""
    return (f"![md](http://127.0.0.1:{port}/markdown.png) <img src=\"http://127.0.0.1:{port}/html.png\"> "
            f"<iframe src=\"http://127.0.0.1:{port}/frame\"></iframe> [link](javascript:window.__probe=1) "
            f"<http://127.0.0.1:{port}/autolink> <script>window.__probe=2</script>")


def watch_requests(page) -> list[str]:
    """Every URL `page` requests from now on."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    return seen


class Server:
    """`python -m llmkit <args>` serving on 127.0.0.1:port, killed with SIGKILL on `kill()`."""

    def __init__(self, args: list[str], port: int, cwd, log_path):
        self.args, self.port, self.cwd, self.log_path = args, port, cwd, log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 90) -> Server:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "llmkit", *self.args, "--port", str(self.port)],
                                     cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"server did not answer on {self.url} within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return open(self.log_path, encoding="utf-8", errors="replace").read()[-4000:]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

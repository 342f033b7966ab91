"""Browser tests: Debian's Chromium driven by Playwright against pytest-django's live server on
127.0.0.1, serving the small phantom download. Every console error or uncaught page error fails
the test (unless the test declares it expected); screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.support.chromium import CHROMIUM, CHROMIUM_ARGS

# Read when the session-scoped live server starts; must be set before that.
os.environ.setdefault("DJANGO_LIVE_TEST_SERVER_ADDRESS", "127.0.0.1")
# Playwright's sync API keeps an event loop in the main thread; the ORM calls of the fixtures run
# outside it, but Django's async-safety check cannot tell.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
VIEWPORT = {"width": 1280, "height": 720}


class Console:
    """Console errors and uncaught exceptions of one page; ``expect`` whitelists a pattern."""

    def __init__(self):
        self.errors: list[str] = []
        self.expected: list[re.Pattern] = []

    def record(self, text: str) -> None:
        self.errors.append(text)

    def expect(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser, console, transactional_db):
    """A fresh 1280 x 720 page; console errors are collected into ``console``.

    Set up after the test database, so that it is closed, and the live server idle, before
    ``transactional_db`` flushes the tables."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on(
        "console", lambda m: console.record(f"console: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: console.record(f"page error: {e}"))
    page.on(
        "response",
        lambda r: console.record(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
    )
    yield page
    context.close()
    wait_for_live_server_requests()


def wait_for_live_server_requests(timeout_s: float = 15) -> None:
    """Wait until the live server has finished every request of the closed browser.

    The live server answers each connection in a thread of its own, and on SQLite's in-memory
    database through the test's own connection: a request still running when the test ends (a
    tile or a poll the page had just sent) holds a table lock, and transactional_db's flush then
    fails with "database table is locked". Closing the browser context ends its connections; the
    threads end once their request is answered.
    """
    deadline = time.monotonic() + timeout_s
    while busy := [t.name for t in threading.enumerate() if "process_request_thread" in t.name]:
        if time.monotonic() > deadline:
            raise AssertionError(f"live server still answering after {timeout_s} s: {busy}")
        time.sleep(0.02)


@pytest.fixture
def site(live_server, transactional_db, phantom_root, settings) -> str:
    """Base URL of the live server with the phantom download ingested."""
    settings.CTSPINE_DATA_ROOT = phantom_root
    call_command("ingest", str(phantom_root), verbosity=0)
    return live_server.url


@pytest.fixture
def shot(request, page):
    """``shot(name)`` saves a screenshot of the page as <test>-<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(name: str, **kwargs) -> Path:
        path = SCREENSHOTS / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), **kwargs)
        return path

    return save


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Fail a browser test that logged console errors; screenshot a failing one."""
    page = item.funcargs.get("page")
    try:
        result = yield
    except BaseException:
        if page is not None and not page.is_closed():
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{item.name}-FAILED.png"))
        raise
    console = item.funcargs.get("console")
    if console is not None:
        unexpected = console.unexpected()
        assert not unexpected, "console errors during the test:\n" + "\n".join(unexpected)
    return result


# Page-side helpers of the viewer. Pixels are read from the image canvas only (the crosshair is
# drawn on a separate canvas above it).
_COLOURED_PIXELS_JS = """(panel) => {
  const canvas = document.querySelector(`[data-panel="${panel}"] canvas.image`);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let coloured = 0;
  for (let n = 0; n < data.length; n += 4) {
    const r = data[n], g = data[n + 1], b = data[n + 2];
    if (Math.max(r, g, b) - Math.min(r, g, b) > 24) coloured += 1;
  }
  return coloured;
}"""
_MEAN_GREY_JS = """(panel) => {
  const canvas = document.querySelector(`[data-panel="${panel}"] canvas.image`);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0;
  for (let n = 0; n < data.length; n += 4) sum += data[n + 1];
  return sum / (data.length / 4);
}"""
_TILE_POINT_JS = """([panel, col, row]) => {
  const view = document.querySelector("#viewer").viewer.views[panel];
  const box = view.layout();
  const stage = view.stage.getBoundingClientRect();
  return {
    x: stage.left + box.x + ((col + 0.5) * box.width) / box.cols,
    y: stage.top + box.y + ((row + 0.5) * box.height) / box.rows,
  };
}"""
_ALL_READY_JS = """() => {
  const panels = document.querySelectorAll("#viewer [data-panel]");
  return panels.length === 4 && [...panels].every((p) => p.dataset.state === "ready");
}"""
PANELS = ("axial", "sagittal", "coronal", "projection")


class ViewerPage:
    """Drives the case viewer of ``page`` and reads what it shows."""

    def __init__(self, page):
        self.page = page

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_function("document.body.dataset.viewsReady === 'true'")
        self.wait_ready()

    def wait_ready(self) -> None:
        self.page.wait_for_function(_ALL_READY_JS)

    def wait_for(self, js_condition: str, arg=None) -> None:
        """Wait until ``js_condition`` holds and every panel has drawn its latest tile."""
        self.page.wait_for_function(f"(arg) => ({js_condition}) && ({_ALL_READY_JS})()", arg=arg)

    def index(self, plane: str) -> int:
        return int(self.page.get_attribute(f'[data-panel="{plane}"]', "data-index"))

    def volume(self) -> dict:
        return self.page.evaluate("document.querySelector('#viewer').viewer.volume")

    def state(self) -> dict:
        return self.page.evaluate("document.querySelector('#viewer').viewer.store.state")

    def drawn_url(self, panel: str) -> str:
        return self.page.evaluate(
            "(p) => document.querySelector('#viewer').viewer.views[p].tile.url", panel
        )

    def coloured_pixels(self, panel: str) -> int:
        return self.page.evaluate(_COLOURED_PIXELS_JS, panel)

    def mean_grey(self, panel: str) -> float:
        return self.page.evaluate(_MEAN_GREY_JS, panel)

    def tile_point(self, panel: str, col: int, row: int) -> dict:
        """Page coordinates of the centre of tile pixel (col, row) of ``panel``."""
        return self.page.evaluate(_TILE_POINT_JS, [panel, col, row])


@pytest.fixture
def viewer(page) -> ViewerPage:
    return ViewerPage(page)

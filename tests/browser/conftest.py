"""Fixtures for the browser tests: Playwright driving Debian's chromium, headless.

    browser     one Chromium for the session (``CUNSYNC_CHROMIUM`` overrides ``/usr/bin/chromium``)
    page        a fresh zh-CN page the size of a 10-inch tablet; when the test ends, its last page is
                saved as ``test-output/<test name>/last-page.png`` for a person to look at

`make test` installs chromium; a machine without it fails here with what to run, never skips.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = os.environ.get("CUNSYNC_CHROMIUM", "/usr/bin/chromium")
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
# As root in a container: no sandbox; and no background traffic to hosts this machine cannot reach.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in item.nodeid:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium "
                    "(apt-get install chromium), or set CUNSYNC_CHROMIUM")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800}, has_touch=True)
    context.set_default_timeout(10_000)
    pg = context.new_page()
    yield pg
    folder = OUTPUT / re.sub(r"[^\w.-]+", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        pg.screenshot(path=str(folder / "last-page.png"), full_page=True)
    finally:
        context.close()

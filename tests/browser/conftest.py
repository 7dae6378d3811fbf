"""Browser tests: Playwright (from PyPI) driving Debian's Chromium at /usr/bin/chromium.

Every test under tests/browser/ is marked `browser`. Playwright's own browser download
(`playwright install`) is never used: the executable is Debian's package, which
scripts/services.sh installs where it is missing (with a font that has Japanese and Chinese
glyphs). Without Chromium or Playwright a browser test skips on a developer's machine and
FAILS in CI (CI=true), saying what to install, so CI never passes by skipping them.

`launch()` gives every browser a fresh temporary profile (user-data dir) of its own, and the
switches below keep Chromium off the network: no QUIC, no background fetches, no component
updates, no sync.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from datagate import unavailable

CHROMIUM = Path(os.environ.get("CABINET_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
HERE = Path(__file__).resolve().parent
SCREENSHOTS = HERE.parents[1] / "docs" / "screenshots"


def missing(what: str) -> None:
    unavailable(f"browser test: {what}",
                f"CI=true but {what}; `make test` runs scripts/services.sh, which installs "
                f"Debian's chromium (apt-get install chromium), and `make setup` installs "
                f"playwright from the test extra")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def chromium():
    """A headless Debian Chromium under Playwright, shared by one module's tests.

    Module scope, not session: Playwright's sync API keeps an asyncio loop running on the main
    thread while it is open, and every later test that calls asyncio.run() (the controller's)
    would fail with "cannot be called from a running event loop"."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed (pip install -e '.[test]')")
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} is missing (apt-get install -y --no-install-recommends chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS

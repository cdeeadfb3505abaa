"""The system Chromium, driven by Playwright without ever downloading a browser, for the site's browser tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package, which .ci/run installs
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
needs_chromium = pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs the system Chromium (.ci/run installs it)")


def launch(playwright: Any) -> Any:
    """A headless system Chromium from a running `sync_playwright()`."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)


def watched_page(browser: Any, problems: list[str], width: int = 1280, height: int = 900) -> Any:
    """A new page whose script errors and failed requests (a file:// link to nothing) are added to `problems`."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    return page

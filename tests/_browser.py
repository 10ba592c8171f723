"""A headless Chromium for the browser tests, or a loud skip saying exactly what is missing.

The browser tests (tests/test_live_page.py) drive the live view with Playwright and a *system*
Chromium (`apt-get install chromium`; `playwright install` is never needed). Where either is
missing they are skipped, with the reason in pytest's summary (`-rs` is on by default), so the
README's test command passes on a fresh machine. CI sets `LONGLIVE_REQUIRE_BROWSER=1`: there a
missing browser fails the run instead (`.ci/run` installs Chromium first).

- `LONGLIVE_CHROMIUM=PATH`: use this Chromium binary, and only it (a missing PATH counts as no
  Chromium: that is how the tests simulate a machine without one);
- `LONGLIVE_REQUIRE_BROWSER=1`: a missing browser is a test failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ENV = "LONGLIVE_CHROMIUM"
REQUIRE_ENV = "LONGLIVE_REQUIRE_BROWSER"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
SKIP_PREFIX = "BROWSER TEST NOT RUN"


def find_chromium() -> str | None:
    """`$LONGLIVE_CHROMIUM` when set (None if it does not exist), else the first Chromium on PATH."""
    chosen = os.environ.get(CHROMIUM_ENV)
    if chosen:
        return chosen if Path(chosen).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> None:
    """Skip the test with `reason`, or fail it where the browser is required (CI)."""
    if browser_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set: the browser tests must run)", pytrace=False)
    pytest.skip(f"{SKIP_PREFIX}: {reason}. Set {REQUIRE_ENV}=1 to make this a failure (CI does)")


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401  (a dev dependency)
    except ImportError:
        return "Playwright is not installed: pip install -e '.[dev]'"
    if find_chromium() is None:
        chosen = os.environ.get(CHROMIUM_ENV)
        if chosen:
            return f"no Chromium at {CHROMIUM_ENV}={chosen}"
        return (
            f"no Chromium found ({', '.join(CHROMIUM_NAMES)} on PATH, or {CHROMIUM_ENV}): "
            "install it with `apt-get install chromium` (Debian/Ubuntu), or point "
            f"{CHROMIUM_ENV} at a Chromium binary"
        )
    return None


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """A headless Playwright `Browser` on the system Chromium (skips or fails when there is none)."""
    reason = missing_reason()
    if reason is not None:
        missing(reason)
    from playwright import sync_api

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), headless=True)
        try:
            yield browser
        finally:
            browser.close()

"""The browser tests on a machine without Chromium: a loud skip, or a failure where CI requires them.

Simulated honestly: a separate pytest run with `LONGLIVE_CHROMIUM` pointing at a path that does
not exist (tests/_browser.py then finds no Chromium), nothing uninstalled. The browser fixture
comes before the runner's, so no runner is started for a skipped test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _browser import CHROMIUM_ENV, REQUIRE_ENV, SKIP_PREFIX

ROOT = Path(__file__).resolve().parents[1]


def _run_browser_test(**env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in (CHROMIUM_ENV, REQUIRE_ENV)}
    full_env.update(env)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_live_page.py::test_page_without_the_token_says_so",
        ],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_chromium_the_browser_test_is_skipped_with_its_reason(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-chromium-here")
    proc = _run_browser_test(**{CHROMIUM_ENV: missing})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 skipped" in out and "passed" not in out and "error" not in out.lower(), out
    # The reason is in the summary (-rs is in the project's pytest options): what, and what to do.
    assert f"{SKIP_PREFIX}: no Chromium at {CHROMIUM_ENV}={missing}" in out, out
    assert f"Set {REQUIRE_ENV}=1 to make this a failure" in out, out
    assert "serving longlive" not in out  # no runner was started for it


def test_without_chromium_ci_fails_the_browser_test(tmp_path: Path) -> None:
    proc = _run_browser_test(**{CHROMIUM_ENV: str(tmp_path / "no-chromium-here"), REQUIRE_ENV: "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert ("1 error" in out or "1 failed" in out) and "skipped" not in out, out
    assert f"no Chromium at {CHROMIUM_ENV}=" in out and f"{REQUIRE_ENV} is set" in out, out

"""Drive the official Reactor JS SDK (2.9.0, bundled by esbuild) in Chromium with Playwright
against a runner (a test helper run by tests/test_reactor_js.py inside a network namespace).

    python tests/reactor_js_client.py SCENARIO URL BUNDLE.js

The page is served at the runner's own origin (Playwright answers its URL), so the SDK's calls
are same-origin. Prints one JSON object: what the page's scenario returned.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

PAGE = "/__reactor_js_test__.html"


def main() -> None:
    scenario, url, bundle = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    chromium = os.environ.get("LONGLIVE_CHROMIUM") or "/usr/bin/chromium"
    html = f"<!doctype html><html><body><script>{bundle.read_text()}</script></body></html>"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        page = browser.new_page()
        logs: list[str] = []
        page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"[:300]))
        page.route(url + PAGE, lambda route: route.fulfill(status=200, content_type="text/html", body=html))
        page.goto(url + PAGE)
        try:
            result = page.evaluate(f"{scenario}Scenario({json.dumps(url)})")
        except Exception as exc:
            print("\n".join(logs[-60:]), file=sys.stderr)
            raise SystemExit(f"the scenario failed: {exc}") from None
        result["console"] = logs[-40:]
        browser.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

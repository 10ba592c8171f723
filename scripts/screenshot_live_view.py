"""Make docs/live-view.png: the live view in a headless Chromium, the demo model following a switch.

    python scripts/screenshot_live_view.py                 # writes docs/live-view.png
    python scripts/screenshot_live_view.py --out /tmp/x.png

Starts `longlive-runner serve --model demo` (real-time pace, the default), opens the page in a
system Chromium through Playwright (`apt-get install chromium`, `pip install playwright`; no
`playwright install`), schedules a red circle moving right and, at latent frame 12, a blue square
moving right, starts, and takes the picture while the video plays, once the page has played past
the switch (video frame 45): the new prompt's frames on the canvas, both prompts on the timeline,
the playing and receiving rates. The shown frame is checked with the demo's checker
(`longlive_runner.demo.checker`) before saving; then the video is paused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # serve_process.py: a real serve process, shared with the tests

FIRST = "a red circle moving right on a black background"
SECOND = "a blue square moving right on a black background"
SWITCH = 12  # latent frame: video frame 45, 2.8 s


def chromium() -> str:
    for candidate in (
        os.environ.get("LONGLIVE_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit("no Chromium: apt-get install chromium, or set LONGLIVE_CHROMIUM")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "live-view.png")
    ap.add_argument(
        "--until", type=int, default=72, help="take the picture once the page shows this video frame"
    )
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from longlive_runner.demo.checker import measure_frame
    from serve_process import start_runner

    with start_runner("--grace-period", "off", model="demo") as runner, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True)
        # bypass_csp: Playwright evaluates its wait predicates; the page itself keeps its CSP
        page = browser.new_page(viewport={"width": 1280, "height": 860}, bypass_csp=True)
        page.goto(runner.http_url + "/")
        page.wait_for_selector('#status[data-status="connected"]')
        page.click("#reset-btn")
        page.wait_for_function("document.getElementById('phase').dataset.phase === 'idle'")
        for prompt, frame in ((FIRST, 0), (SECOND, SWITCH)):
            page.fill("#prompt-input", prompt)
            page.fill("#timestamp-input", str(frame))
            page.click("#schedule-btn")
            page.wait_for_selector(f'#timeline .marker[data-timestamp="{frame}"]')
        page.fill("#seed-input", "0")
        page.click("#start-btn")
        page.wait_for_function(
            f"Number(document.getElementById('canvas').dataset.lastVideoFrame) >= {args.until}",
            timeout=60_000,
        )
        page.wait_for_timeout(1000)  # the rates settle (playing: the video's 16 fps)
        pixels = page.evaluate(
            """() => { const c = document.getElementById("canvas");
                       return Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data); }"""
        )
        size = page.evaluate(
            "[document.getElementById('canvas').height, document.getElementById('canvas').width]"
        )
        frame = np.asarray(pixels, np.uint8).reshape(size[0], size[1], 4)[..., :3]
        seen = measure_frame(frame)
        if (seen.color, seen.background) != ("blue", "black"):
            raise SystemExit(f"the canvas does not show the switch: {seen}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shown = page.get_attribute("#canvas", "data-last-video-frame")  # what the picture shows
        rates = (page.inner_text("#fps"), page.inner_text("#receive-fps"))
        page.screenshot(path=str(args.out), full_page=True)
        page.click("#pause-btn")
        page.wait_for_function("document.getElementById('phase').dataset.phase === 'paused'")
        browser.close()
    print(
        f"wrote {args.out}: video frame {shown}, the canvas shows a {seen.color} object on {seen.background};"
        f" playing {rates[0]} fps, receiving {rates[1]} fps"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The live page's main-thread time per frame in headless Chromium (docs/performance.md).

    python benchmarks/bench_page.py                       # 480x832, 12 blocks, the page as shipped
    python benchmarks/bench_page.py --app /tmp/app_before.js   # the same with another app.js

THE RUNNER IS REPLACED in this benchmark (and only here): a small websocket server in this process
serves the page's files (`serving/static/`, or `--app` for app.js) and, on the page's websocket,
plays a runner's part with messages encoded by `longlive.protocol`: `hello`, a running `state`
with a few scheduled prompts, then per block a `progress`, the block's frames (random RGB,
`--height` x `--width`, 12 a block, one block every 0.75 s as `serve --pace realtime` sends
them) and a `state`. So the figures are the page's own cost of receiving, timing and drawing the
frames and of updating its counters and timeline, not a model's.

The page plays at video speed (its default, "play at video speed"). After a warm-up block,
Chromium traces the run (DevTools tracing, category `toplevel`): the figure is the CPU time
(`tdur`, thread time, so a loaded machine does not inflate it the way wall time is inflated) of
the renderer main thread's top-level tasks, divided by the frames the page drew meanwhile; the
decoder worker's thread (static/frames.js) is reported beside it, since work moved there is not
work saved. Also Chromium's counters (`Performance.getMetrics`: `TaskDuration`, wall time of
the main thread's tasks, and `ScriptDuration`). Needs Playwright and a Chromium
(`/usr/bin/chromium`, as the browser tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _browser import find_chromium  # noqa: E402
from longlive.protocol import FrameHeader, Progress, State, encode_frame, encode_message  # noqa: E402
from longlive.protocol.runner import hello_for  # noqa: E402
from longlive.units import latent_to_video_frame  # noqa: E402

STATIC = resources.files("longlive_runner.serving") / "static"
TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
FPB = 3


class FakeRunnerPage:
    """The page's files and a scripted runner on one port (a thread with its own event loop)."""

    def __init__(self, height: int, width: int, blocks: int, app: Path | None, worker: bool = True) -> None:
        self.height, self.width, self.blocks, self.app, self.worker = height, width, blocks, app, worker
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.started = threading.Event()
        self.done = threading.Event()
        self.go = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _file(self, name: str) -> bytes:
        if name == "app.js" and self.app is not None:
            return self.app.read_bytes()
        if name == "frames.js" and not self.worker:
            raise FileNotFoundError(name)
        return (STATIC / name).read_bytes()

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        path = request.path.split("?")[0]
        if path == "/info":
            body = json.dumps({"preset": "bench", "pace": "realtime"}).encode()
            kind = "application/json"
        else:
            name = "index.html" if path == "/" else path.removeprefix("/static/")
            try:
                body = self._file(name)
            except (FileNotFoundError, IsADirectoryError):
                return connection.respond(404, "not found\n")
            kind = TYPES.get(name.rpartition(".")[2], "application/octet-stream")
        headers = Headers([("Content-Type", kind), ("Content-Length", str(len(body)))])
        return Response(200, "OK", headers, body)

    def _state(self, csf: int) -> State:
        prompts = {0: "a red circle moving right", 12: "a blue square moving up", 60: "a green triangle"}
        return State(
            generation=0,
            running=True,
            paused=False,
            current_start_frame=csf,
            video_frame=latent_to_video_frame(csf),
            current_prompt=prompts[0] if csf else None,
            scheduled_prompts=prompts,
            seed=0,
            in_force=0,
            frontier=csf + FPB,
            decided=max(csf, 0),
        )

    async def _session(self, ws: ServerConnection) -> None:
        rng = np.random.default_rng(0)
        # A few distinct frames, reused: the page's cost does not depend on the pixel values.
        images = rng.integers(0, 256, (12, self.height, self.width, 3), dtype=np.uint8)
        await ws.send(encode_message(hello_for(height=self.height, width=self.width, preset="bench")))
        await ws.send(encode_message(self._state(0)))
        await asyncio.get_running_loop().run_in_executor(None, self.go.wait)
        for b in range(self.blocks):
            start = b * FPB
            first, end = latent_to_video_frame(start), latent_to_video_frame(start + FPB)
            t0 = time.monotonic()
            for i, v in enumerate(range(first, end)):
                header = FrameHeader(v, start, i, end - first, self.height, self.width)
                await ws.send(encode_frame(header, images[v % len(images)]))
            await ws.send(encode_message(Progress(start + FPB, end)))
            await ws.send(encode_message(self._state(start + FPB)))
            await asyncio.sleep(max(0.75 - (time.monotonic() - t0), 0.0))
        self.done.set()
        await ws.wait_closed()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            async with serve(
                self._session, "127.0.0.1", 0, process_request=self._http, max_size=None, compression=None
            ) as server:
                self.port = next(iter(server.sockets)).getsockname()[1]
                self.started.set()
                await asyncio.Future()

        try:
            self.loop.run_until_complete(main())
        except RuntimeError:
            pass

    def start(self) -> None:
        self.thread.start()
        self.started.wait(10)


def metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def thread_cpu_ms(trace: bytes) -> dict[str, float]:
    """CPU milliseconds of the top-level tasks of each renderer thread in a Chromium trace, by
    thread name (nested top-level events counted once)."""
    events = json.loads(trace)
    events = events["traceEvents"] if isinstance(events, dict) else events
    names = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    tasks: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for e in events:
        if e.get("ph") == "X" and "toplevel" in e.get("cat", "") and "tdur" in e:
            tasks.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e.get("dur", 0), e["tdur"]))
    out: dict[str, float] = {}
    for key, spans in tasks.items():
        name = names.get(key, "?")
        if name not in ("CrRendererMain", "DedicatedWorker thread"):
            continue
        total, last_end = 0, -1
        for start, end, tdur in sorted(spans):
            if start < last_end:  # nested in the previous top-level task
                continue
            total += tdur
            last_end = end
        out[name] = out.get(name, 0.0) + total / 1000
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--blocks", type=int, default=12, help="blocks measured (after 1 of warm-up)")
    parser.add_argument("--app", type=Path, default=None, help="serve this app.js instead of the shipped one")
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="answer 404 for the decoder worker (the page's fallback path)",
    )
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found (set LONGLIVE_CHROMIUM)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    server = FakeRunnerPage(args.height, args.width, args.blocks + 1, args.app, worker=not args.no_worker)
    server.start()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"http://127.0.0.1:{server.port}/")
        page.wait_for_selector('#status[data-status="connected"]')
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        server.go.set()
        warm = latent_to_video_frame(FPB)
        page.wait_for_function(f"window.longliveLiveView.state.framesShown >= {warm}", timeout=60_000)
        browser.start_tracing(page=page, categories=["toplevel", "__metadata"])
        m0, shown0 = metrics(cdp), page.evaluate("window.longliveLiveView.state.framesShown")
        total = latent_to_video_frame((args.blocks + 1) * FPB)
        page.wait_for_function(f"window.longliveLiveView.state.framesShown >= {total}", timeout=120_000)
        m1, shown1 = metrics(cdp), page.evaluate("window.longliveLiveView.state.framesShown")
        cpu = thread_cpu_ms(browser.stop_tracing())
        skipped = page.inner_text("#skipped")
        browser.close()
    frames = shown1 - shown0
    task = (m1["TaskDuration"] - m0["TaskDuration"]) / frames * 1000
    script = (m1["ScriptDuration"] - m0["ScriptDuration"]) / frames * 1000
    main_cpu = cpu.get("CrRendererMain", 0.0) / frames
    worker_cpu = cpu.get("DedicatedWorker thread", 0.0) / frames
    print(
        f"{args.height}x{args.width}, {frames} frames drawn ({skipped} skipped), app.js: "
        f"{args.app or 'shipped'}{' (no decoder worker)' if args.no_worker else ''}\n"
        f"main-thread CPU per frame: {main_cpu:.2f} ms; decoder worker CPU per frame: {worker_cpu:.2f} ms\n"
        f"main-thread wall time of tasks per frame (TaskDuration): {task:.2f} ms, of which script {script:.2f} ms"
    )
    if errors:
        print("page errors:", errors, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Drive a running `longlive-runner serve` over its websocket.

    longlive-runner serve                              # in another terminal: ws://127.0.0.1:8765
    python examples/connect_to_runner.py ws://127.0.0.1:8765 --blocks 6 --out runner.mp4

The client needs no torch. A runner started with a token (`LONGLIVE_TOKEN`) is reached by setting
the same `LONGLIVE_TOKEN` here. The runner's session is shared by every client connected to it, so this
script starts with `reset` (a fresh video) and ends with `pause` (the GPU idles until someone
resumes or resets). Frames are read with an async iterator; progress and prompt switches arrive
through callbacks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import numpy as np

from longlive import CommandError, ConnectionClosedError, Progress, PromptSwitched, Reactor


async def run(
    url: str, blocks: int, prompt: str, later_prompt: str | None, out: Path | None, model: str | None
) -> int:
    """Generate `blocks` blocks on the runner at `url`; returns the number of frames received."""
    async with Reactor(url, command_timeout=30) as reactor:
        hello = reactor.hello
        print(
            f"connected to {url} ({hello.preset}): {hello.width}x{hello.height} at {hello.fps} fps, {hello.frames_per_block} latent frames per block"
        )
        if model is not None:
            served = await served_model(url)
            if served != model:
                raise SystemExit(f"the runner serves {served!r}, not {model!r}")

        await reactor.reset()  # the session is shared: start a fresh video
        per_block = hello.frames_per_block
        end = blocks * per_block

        @reactor.on_progress
        def progress(msg: Progress) -> None:
            if msg.current_start_frame:
                print(
                    f"progress: {msg.current_start_frame} latent frames ({msg.video_frame} video frames) done"
                )

        @reactor.on_prompt_switched
        def switched(msg: PromptSwitched) -> None:
            print(f"prompt switched at latent frame {msg.frame}: {msg.new_prompt!r}")

        await reactor.schedule_prompt(prompt, timestamp=0)
        if later_prompt:
            await reactor.schedule_prompt(later_prompt, timestamp=max(blocks // 2, 1) * per_block)
        recording = reactor.record(out, until=end) if out is not None else None
        started = await reactor.start()
        print(f"generation {started.generation} started with seed {started.seed}")

        received = 0
        async for frame in reactor.frames():
            if frame.start_frame >= end:
                break
            received += 1
            if frame.index_in_block == frame.frames_in_block - 1:
                mean = np.asarray(frame.image, dtype=np.float32).mean(axis=(0, 1))
                print(
                    f"block {frame.start_frame // per_block}: mean colour RGB {np.round(mean).astype(int).tolist()}"
                )
                if frame.start_frame + per_block >= end:
                    break
        await reactor.pause()
        if recording is not None:
            await recording.stop()
            print(f"wrote {recording.frames_written} frames to {out}")
        if reactor.frames_dropped or reactor.frames_dropped_by_runner:
            print(
                f"dropped frames: {reactor.frames_dropped} here, {reactor.frames_dropped_by_runner} by the runner"
            )
        print(f"received {received} frames")
        return received


async def served_model(url: str) -> str:
    """The runner's preset, from `GET /info` on the websocket's port (with the runner's token from
    `LONGLIVE_TOKEN`, as the websocket uses, when it requires one)."""
    import httpx

    http = "http" + url.removeprefix("ws").rstrip("/") + "/info"
    token = os.environ.get("LONGLIVE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as client:
        response = await client.get(http, headers=headers, timeout=10)
        response.raise_for_status()
        return str(response.json().get("preset"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the runner's websocket URL, e.g. ws://127.0.0.1:8765")
    parser.add_argument("--blocks", type=int, default=8, help="blocks to generate (3 latent frames each)")
    parser.add_argument("--prompt", default="a red circle moving right on a black background")
    parser.add_argument(
        "--later-prompt",
        default="a red square moving up on a black background",
        help="from mid-way ('' for none)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also record the frames to this mp4")
    parser.add_argument(
        "--model",
        default=None,
        help="check that the runner serves this model (its preset from GET /info); the runner chooses the "
        "model (`longlive-runner serve --model ...`), so the default accepts any",
    )
    args = parser.parse_args()
    if args.blocks < 1:
        parser.error("--blocks must be >= 1")
    try:
        asyncio.run(run(args.url, args.blocks, args.prompt, args.later_prompt or None, args.out, args.model))
    except ConnectionClosedError as exc:
        sys.exit(f"cannot talk to the runner at {args.url}: {exc} (is `longlive-runner serve` running?)")
    except CommandError as exc:
        sys.exit(f"the runner refused {exc.command!r}: [{exc.code}] {exc.reason}")


if __name__ == "__main__":
    main()

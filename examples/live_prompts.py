"""Steer the video while it generates: type a prompt and press Enter.

    python examples/live_prompts.py                           # in-process, the demo model
    python examples/live_prompts.py --url ws://127.0.0.1:8765 # a running `longlive-runner serve`
    printf 'a blue square moving up on a gray background\\na green triangle moving left on a navy background\\n' \\
        | python examples/live_prompts.py --blocks 6

The demo model draws prompts of one form, `a COLOR SHAPE moving DIRECTION on a BACKGROUND
background` (a prompt outside it is scheduled with a `prompt_form` warning, printed here).

Each line is scheduled at the next block boundary (`current_start_frame + 3`: the block being
generated is already decided), and never before an earlier typed prompt, so none overwrites
another. `quit` (or Ctrl-C) ends early; end of input only stops reading. The video is recorded to
an mp4 as it arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from pathlib import Path

from longlive import PromptSwitched, Reactor
from longlive_runner.cli import DEFAULT_MODEL


def read_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Forward stdin lines to `queue` (None at end of input), from a daemon thread: a blocked
    read never keeps the program from exiting."""
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line.strip())
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def type_prompts(reactor: Reactor, queue: asyncio.Queue[str | None], done: asyncio.Event) -> None:
    per_block = reactor.hello.frames_per_block
    last = 0
    while (line := await queue.get()) is not None:
        if line.lower() in ("quit", "exit", "q"):
            done.set()
            return
        if not line:
            continue
        timestamp = max(reactor.current_start_frame + per_block, last + per_block)
        scheduled = await reactor.schedule_prompt(line, timestamp=timestamp)
        last = scheduled.timestamp
        note = f" ({', '.join(w.code for w in scheduled.warnings)})" if scheduled.warnings else ""
        print(f"scheduled {line!r} at latent frame {scheduled.effective_frame}{note}", flush=True)
    print("(end of input: no more prompts)", flush=True)


async def run(reactor: Reactor, prompt: str, blocks: int, out: Path) -> int:
    """Generate `blocks` blocks, scheduling typed prompts; returns the number of frames recorded."""
    async with reactor:
        per_block = reactor.hello.frames_per_block
        end = blocks * per_block
        if reactor.url is not None:
            await reactor.reset()  # a runner's session is shared: start a fresh video

        @reactor.on_prompt_switched
        def switched(msg: PromptSwitched) -> None:
            print(f"prompt switched at latent frame {msg.frame}: {msg.new_prompt!r}", flush=True)

        await reactor.schedule_prompt(prompt, timestamp=0)
        recording = reactor.record(out, until=end)
        await reactor.start()
        print(f"generating {blocks} blocks; type a prompt and press Enter ('quit' to stop)", flush=True)

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        done = asyncio.Event()
        with contextlib.suppress(NotImplementedError):  # Ctrl-C: stop cleanly, finish the mp4
            loop.add_signal_handler(signal.SIGINT, done.set)
        threading.Thread(target=read_lines, args=(loop, queue), daemon=True).start()
        typing = asyncio.create_task(type_prompts(reactor, queue, done))
        finished = asyncio.create_task(reactor.wait_for_frame(end))
        quit_early = asyncio.create_task(done.wait())
        await asyncio.wait({finished, quit_early}, return_when=asyncio.FIRST_COMPLETED)
        for task in (typing, finished, quit_early):
            task.cancel()
        await asyncio.gather(typing, finished, quit_early, return_exceptions=True)
        await reactor.pause()
        await recording.stop()
        print(f"wrote {recording.frames_written} frames to {out}", flush=True)
        return recording.frames_written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"preset or converted folder (default {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--url", default=None, help="a runner's websocket URL instead of running the model here"
    )
    parser.add_argument("--device", default=None, help="torch device of the in-process runner")
    parser.add_argument("--prompt", default="a red circle moving right on a black background")
    parser.add_argument("--blocks", type=int, default=80, help="blocks to generate (80 = 60 s of video)")
    parser.add_argument("--out", type=Path, default=Path("live_prompts.mp4"))
    args = parser.parse_args()
    if args.blocks < 1:
        parser.error("--blocks must be >= 1")
    if args.url:
        reactor = Reactor(args.url, command_timeout=30, max_buffered_frames=0)  # frames go to the mp4
    else:
        reactor = Reactor.local(model=args.model, device=args.device, max_buffered_frames=0)
    asyncio.run(run(reactor, args.prompt, args.blocks, args.out))


if __name__ == "__main__":
    main()

"""Render a prompt schedule from a JSON file to an mp4, through the SDK.

    python examples/record_schedule.py                      # examples/schedule.json -> schedule.mp4
    python examples/record_schedule.py my_story.json --out story.mp4
    python examples/record_schedule.py --frames 48 --url ws://127.0.0.1:8765

The file (by default `schedule.json`, shipped next to this script) holds latent-frame timestamps
(blocks of 3; 16 fps video, 4 video frames per latent frame after the first), either as an object
or as a list:

    {"0": "a red circle moving right on a black background",
     "12": "a blue square moving right on a black background",
     "24": "a blue square moving down on a gray background"}
    [{"timestamp": 0, "prompt": "a red circle moving right on a black background"}, ...]

Every prompt is scheduled before `start`; the runner says where each one takes effect (the next
block boundary). `--frames` defaults to 4 blocks past the last prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from longlive import PromptSwitched, Reactor, latent_to_video_frame, next_block_boundary
from longlive_runner.cli import DEFAULT_MODEL

#: The example schedule of the docstring, shipped with the script.
SHIPPED_SCHEDULE = Path(__file__).resolve().with_name("schedule.json")


def read_schedule(path: Path) -> dict[int, str]:
    """{latent frame: prompt} from an object or a list of {"timestamp", "prompt"} entries."""
    data: Any = json.loads(path.read_text())
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = [
            (e.get("timestamp"), e.get("prompt", e.get("new_prompt"))) for e in data if isinstance(e, dict)
        ]
    else:
        raise ValueError(f"{path}: expected an object or a list")
    schedule = {int(frame): str(prompt) for frame, prompt in items}
    if 0 not in schedule:
        raise ValueError(f"{path}: the schedule needs a prompt at latent frame 0")
    return schedule


async def record(reactor: Reactor, schedule: dict[int, str], frames: int, out: Path, seed: int) -> int:
    """Schedule every prompt, start, and record until latent frame `frames`; returns frames written."""
    async with reactor:
        if reactor.url is not None:
            await reactor.reset()  # a runner's session is shared: start a fresh video
        end = next_block_boundary(frames)
        for timestamp, prompt in sorted(schedule.items()):
            scheduled = await reactor.schedule_prompt(prompt, timestamp=timestamp)
            print(
                f"{timestamp:4d} -> takes effect at latent frame {scheduled.effective_frame:4d}: {prompt!r}"
            )
            for warning in scheduled.warnings:
                print(f"      warning [{warning.code}]: {warning.message}")

        switches: list[PromptSwitched] = []
        reactor.on_prompt_switched(switches.append)
        await reactor.start(seed=seed)
        # save_mp4 records the frames of every block before `end`, then finishes the file.
        recording = await reactor.save_mp4(out, until=end)
        await reactor.pause()
    for msg in switches:
        print(f"switched at latent frame {msg.frame} (video frame {msg.video_frame}): {msg.new_prompt!r}")
    print(f"wrote {recording.frames_written} frames (expected {latent_to_video_frame(end)}) to {out}")
    return recording.frames_written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "schedule",
        type=Path,
        nargs="?",
        default=SHIPPED_SCHEDULE,
        help="JSON schedule file (default: the schedule.json next to this script)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output mp4 (default: the schedule's name with .mp4, in the current directory)",
    )
    parser.add_argument(
        "--frames", type=int, default=None, help="latent frames to record (rounded up to blocks)"
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"preset or converted folder (default {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--url", default=None, help="a runner's websocket URL instead of running the model here"
    )
    parser.add_argument("--device", default=None, help="torch device of the in-process runner")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        schedule = read_schedule(args.schedule)
    except (OSError, ValueError, TypeError) as exc:
        sys.exit(f"cannot read the schedule: {exc}")
    frames = args.frames if args.frames is not None else max(schedule) + 12
    if frames < 1:
        parser.error("--frames must be >= 1")
    out = args.out or Path(args.schedule.with_suffix(".mp4").name)
    if args.url:
        reactor = Reactor(args.url, command_timeout=30, max_buffered_frames=0)
    else:
        reactor = Reactor.local(model=args.model, device=args.device, max_buffered_frames=0)
    asyncio.run(record(reactor, schedule, frames, out, args.seed))


if __name__ == "__main__":
    main()

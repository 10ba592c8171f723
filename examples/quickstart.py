"""Quick start: generate a short interactive video in this process and save it as an mp4.

    python examples/quickstart.py                          # demo model, 8 blocks -> quickstart.mp4
    python examples/quickstart.py --blocks 4 --out a.mp4
    python examples/quickstart.py --model longlive-1.3b-bf16   # a converted folder of the real model

Two prompts are scheduled before `start`: the second one takes over halfway, at a block boundary.
Frames arrive as numpy arrays while the model generates; they are recorded to the mp4 as they come.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from longlive import PromptSwitched, Reactor, latent_to_video_frame
from longlive_runner.cli import DEFAULT_MODEL

FIRST_PROMPT = "a red circle moving right on a black background"
SECOND_PROMPT = "a blue square moving right on a black background"


async def run(model: str, blocks: int, out: Path, device: str | None, seed: int) -> int:
    """Generate `blocks` blocks into `out`; returns the number of frames written."""
    # Reactor.local loads the model and runs the runner in this process (no server needed).
    async with Reactor.local(model=model, device=device) as reactor:
        per_block = reactor.hello.frames_per_block  # 3 latent frames per block
        end = blocks * per_block  # the latent frame where we stop
        switch_at = max(blocks // 2, 1) * per_block

        await reactor.schedule_prompt(FIRST_PROMPT, timestamp=0)
        scheduled = await reactor.schedule_prompt(SECOND_PROMPT, timestamp=switch_at)
        print(f"scheduled {SECOND_PROMPT!r} at latent frame {scheduled.effective_frame}")

        @reactor.on_prompt_switched
        def switched(msg: PromptSwitched) -> None:
            print(f"latent frame {msg.frame}: now generating {msg.new_prompt!r}")

        recording = reactor.record(out, until=end)  # every frame of the blocks before `end`
        await reactor.start(seed=seed)
        async for frame in reactor.frames():  # frame.image: uint8 [height, width, 3]
            if frame.index_in_block == frame.frames_in_block - 1:
                print(
                    f"block at latent frame {frame.start_frame:3d}: {frame.frames_in_block} frames "
                    f"of {frame.width}x{frame.height}, up to {frame.seconds:.2f} s"
                )
                if frame.start_frame + per_block >= end:
                    break
        await reactor.pause()  # stop generating; `async with` then closes the runner
        await recording.stop()
    expected = latent_to_video_frame(end)
    print(f"wrote {recording.frames_written} frames (expected {expected}) to {out}")
    return recording.frames_written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"preset or converted folder (default {DEFAULT_MODEL})"
    )
    parser.add_argument("--blocks", type=int, default=8, help="blocks to generate (3 latent frames each)")
    parser.add_argument("--out", type=Path, default=Path("quickstart.mp4"))
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.blocks < 1:
        parser.error("--blocks must be >= 1")
    asyncio.run(run(args.model, args.blocks, args.out, args.device, args.seed))


if __name__ == "__main__":
    main()

"""Real-time pacing: how far generation may run ahead of playback (docs/protocol.md, section 1.4).

I/O-free and clock-free: the runner passes the time in (`now`, seconds on any monotonic clock).

A viewer plays the video at `fps` from the moment its first frames arrive. The *lead* is the
number of video frames generated but not yet due on that playback clock. With pace "realtime" the
runner starts a block only when, with that block's frames, the lead stays within `lead_frames`
(2 blocks by default): a model faster than real time waits between blocks instead of running
ahead of its viewers (and of their frame queues), and a model slower than real time never waits.

When playback runs dry (the model was slower than real time for a while, or the video was
paused), the clock does not run on without frames: it restarts from the next frames, as a
player that buffers would. So pauses and stalls never let generation race ahead afterwards.
"""

from __future__ import annotations

__all__ = ["DEFAULT_LEAD_BLOCKS", "PACES", "Pacer"]

#: "realtime": keep at most `lead` blocks ahead of playback (the `serve` default);
#: "fast": generate as fast as the model can (`generate`, `Reactor.local()`, benchmarks).
PACES = ("realtime", "fast")
DEFAULT_LEAD_BLOCKS = 2


class Pacer:
    """The playback clock of one video and the rule for starting the next block.

    ```python
    pacer = Pacer(fps=16, lead_frames=24)     # lead_frames None: never wait ("fast")
    pacer.wait(now, 12)                       # seconds to wait before a 12-frame block (0: go)
    pacer.block_done(now, 21)                 # 21 video frames generated so far
    ```
    """

    def __init__(self, fps: float, lead_frames: int | None) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        if lead_frames is not None and lead_frames < 1:
            raise ValueError("lead_frames must be >= 1 (or None: no pacing)")
        self.fps = float(fps)
        self.lead_frames = lead_frames
        self.reset()

    def reset(self) -> None:
        """A new video: nothing generated, playback not started."""
        self._anchor_time: float | None = None
        self._anchor_frame = 0.0
        self._generated = 0
        self.stalls = 0  # times playback ran dry and the clock restarted (after the first frames)

    @property
    def paced(self) -> bool:
        return self.lead_frames is not None

    @property
    def generated(self) -> int:
        """Video frames generated (sent) in this video."""
        return self._generated

    def due(self, now: float) -> float:
        """Video frames due on the playback clock at `now` (never more than generated)."""
        if self._anchor_time is None:
            return 0.0
        return min(self._anchor_frame + (now - self._anchor_time) * self.fps, float(self._generated))

    def lead(self, now: float) -> float:
        """Video frames generated but not yet due at `now`."""
        return self._generated - self.due(now)

    def wait(self, now: float, block_frames: int) -> float:
        """Seconds to wait before starting a block of `block_frames` video frames (0: start now)."""
        if self.lead_frames is None or self._anchor_time is None:
            return 0.0
        excess = self._generated + block_frames - self.lead_frames - self.due(now)
        return max(excess / self.fps, 0.0)

    def block_done(self, now: float, generated: int) -> None:
        """The frames of a block were sent at `now`: `generated` video frames in all so far."""
        if self._anchor_time is None:
            self._anchor_time, self._anchor_frame = now, 0.0  # playback starts with the first frames
        elif self._anchor_frame + (now - self._anchor_time) * self.fps > self._generated:
            # Playback ran dry before these frames came: it goes on from them, from now.
            self._anchor_time, self._anchor_frame = now, float(self._generated)
            self.stalls += 1
        self._generated = generated

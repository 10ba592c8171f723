"""The session state machine: prompt schedule, start/pause/resume/reset rules, progress.

Synchronous, no threads, no I/O, no torch. A runner drives it from two sides and sends out
whatever messages it returns (replies, see `longlive.protocol.is_reply`, to the sender;
everything else to every client):

- commands: `handle_text(text)` (or `handle(command)`) -> messages;
- the generation loop, between blocks: `next_block()` -> `BlockPlan | None`, then
  `block_done(plan, n)` or `block_failed(plan, error)` -> messages.

The session is not thread-safe: a runner calls it under one lock. The rules are specified in
docs/protocol.md, section 6; in short, with `P` the first block whose prompt is not decided yet:

- the prompt for the block starting at `s` is the one at the largest timestamp `<= s`
  (`longlive.protocol.prompt_in_force`, the one statement of that rule);
- a prompt scheduled in the decided past (`timestamp <= D`, `D = max(P - block, 0)` once
  started) is re-keyed to `P`; anything later is stored at its own timestamp. So the schedule
  stays an exact, reproducible record of which prompt generated which block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from longlive.errors import ErrorCode, ProtocolError
from longlive.protocol import (
    DEFAULT_LIMITS,
    Ack,
    Command,
    CommandErrorMessage,
    CommandResult,
    ErrorMessage,
    GenerationFinished,
    GetState,
    Hello,
    Limits,
    Message,
    Pause,
    PauseResult,
    Progress,
    PromptSwitched,
    PromptWarning,
    RemovePrompt,
    RemovePromptResult,
    Reset,
    ResetResult,
    Resume,
    ResumeResult,
    ScheduledPrompt,
    SchedulePrompt,
    Start,
    StartResult,
    State,
    prompt_in_force,
)
from longlive.protocol.runner import hello_for, parse_command, validate_command
from longlive.units import (
    block_video_frames,
    decided_frame,
    frontier_frame,
    latent_to_video_frame,
    next_block_boundary,
)

if TYPE_CHECKING:
    from ..model.config import PipelineConfig

__all__ = ["BlockPlan", "Session"]

logger = logging.getLogger(__name__)

#: A callable giving extra warnings for a prompt, as (code, message) pairs; e.g. a tokenizer
#: check returning [("prompt_truncated", "612 tokens, the encoder keeps 512")].
PromptWarnings = Callable[[str], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class BlockPlan:
    """What the generation loop must generate next."""

    generation: (
        int  # the session's generation when planned (its frames carry it); a reset makes the plan stale
    )
    start_frame: int  # latent frame of the block's first frame
    prompt: str  # the prompt in force for this block
    switched: bool  # the prompt differs from the previous block's
    previous_prompt: str | None
    seed: int
    num_frames: int  # latent frames in the block
    first_video_frame: int
    num_video_frames: int  # video frames the block decodes to (9 for the first block, 12 after)

    @property
    def first(self) -> bool:
        """The first block of a video: the generator must start a new video with `seed`."""
        return self.start_frame == 0


#: What one stored prompt counts toward `max_schedule_chars` besides its characters: its key and
#: punctuation in `state`, so that many tiny prompts are bounded too.
SCHEDULE_ENTRY_CHARS = 16


def schedule_size(schedule: dict[int, str]) -> int:
    """The size of a schedule as `max_schedule_chars` counts it (docs/protocol.md, section 3.1)."""
    return sum(len(p) for p in schedule.values()) + SCHEDULE_ENTRY_CHARS * len(schedule)


class Session:
    """One shared LongLive session: one video, one prompt schedule."""

    def __init__(
        self,
        max_frames: int = DEFAULT_LIMITS.max_frames,
        frames_per_block: int = 3,
        *,
        temporal_compression: int = 4,
        fps: int = 16,
        height: int = 480,
        width: int = 832,
        max_prompt_chars: int = 2000,
        max_scheduled_prompts: int = 256,
        max_schedule_chars: int = DEFAULT_LIMITS.max_schedule_chars,
        max_message_bytes: int = 65536,
        default_seed: int = 0,
        prompt_warnings: PromptWarnings | None = None,
        preset: str | None = None,
    ) -> None:
        if frames_per_block < 1 or temporal_compression < 1:
            raise ValueError("frames_per_block and temporal_compression must be >= 1")
        if max_frames < frames_per_block:
            raise ValueError(f"max_frames ({max_frames}) must hold at least one block ({frames_per_block})")
        self.frames_per_block = frames_per_block
        self.temporal_compression = temporal_compression
        self.fps = fps
        self.height = height
        self.width = width
        self.default_seed = default_seed
        self.preset = preset
        self.limits = Limits(
            max_message_bytes=max_message_bytes,
            max_prompt_chars=max_prompt_chars,
            max_scheduled_prompts=max_scheduled_prompts,
            max_frames=max_frames,
            max_schedule_chars=max_schedule_chars,
        )
        self._prompt_warnings = prompt_warnings
        self.generation = 0
        self._clear()

    @classmethod
    def for_config(cls, config: PipelineConfig, **kwargs: Any) -> Session:
        """A session sized for a `PipelineConfig` (keyword arguments override)."""
        s = config.stream
        values: dict[str, Any] = {
            "max_frames": DEFAULT_LIMITS.max_frames if s.max_latent_frames is None else s.max_latent_frames,
            "frames_per_block": s.frames_per_block,
            "temporal_compression": config.vae.temporal_compression,
            "fps": s.fps,
            "height": s.height,
            "width": s.width,
            "preset": config.name,
        }
        values.update(kwargs)
        return cls(**values)

    def _clear(self) -> None:
        self._schedule: dict[int, str] = {}
        self._running = False
        self._paused = False
        self._finish_reason: str | None = None
        self._current_start_frame = 0
        self._current_prompt: str | None = None
        self._seed: int | None = None
        self._in_progress: BlockPlan | None = None

    # --- read-only views ----------------------------------------------------------------------
    @property
    def max_frames(self) -> int:
        return self.limits.max_frames

    @property
    def running(self) -> bool:
        """A video is being generated (also while paused)."""
        return self._running

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def finish_reason(self) -> str | None:
        return self._finish_reason

    @property
    def phase(self) -> str:
        """One of "idle", "running", "paused", "finished"."""
        if self._finish_reason is not None:
            return "finished"
        if not self._running:
            return "idle"
        return "paused" if self._paused else "running"

    @property
    def current_start_frame(self) -> int:
        return self._current_start_frame

    @property
    def current_prompt(self) -> str | None:
        return self._current_prompt

    @property
    def seed(self) -> int | None:
        return self._seed

    @property
    def schedule(self) -> dict[int, str]:
        """A copy of the schedule {latent frame: prompt}, sorted by frame."""
        return dict(sorted(self._schedule.items()))

    @property
    def in_progress(self) -> BlockPlan | None:
        """The block planned by `next_block()` and not yet reported done or failed."""
        return self._in_progress

    @property
    def frontier(self) -> int:
        """`P`: the start of the first block whose prompt is not decided yet (`units.frontier_frame`)."""
        return frontier_frame(self._current_start_frame, self._in_progress is not None, self.frames_per_block)

    @property
    def decided(self) -> int:
        """`D`: prompts at timestamps `<= D` are fixed (-1 while idle; block 0 counts from `start`)."""
        return decided_frame(self.frontier, self._running, self.frames_per_block)

    @property
    def announced_frontier(self) -> int:
        """`State.frontier`: `P` counting the block a running video is about to begin.

        A `state` is sent between blocks and nothing is sent when the runner begins the next one,
        which it does at once (or after the pace's wait) while the video runs: so a client reading
        `state` should take that block as in progress. Paused, idle or finished: `P` itself.
        """
        about_to_begin = self._in_progress is not None or self.phase == "running"
        return frontier_frame(self._current_start_frame, about_to_begin, self.frames_per_block)

    @property
    def announced_decided(self) -> int:
        """`State.decided`: `D` for `announced_frontier`; -1 while idle. A finished video keeps
        its decided past (its prompts cannot be removed either: the video ended)."""
        return decided_frame(self.announced_frontier, self.phase != "idle", self.frames_per_block)

    def prompt_at(self, frame: int) -> str | None:
        """The prompt in force for the block holding latent `frame` (`protocol.prompt_in_force`)."""
        t = prompt_in_force(self._schedule, frame, self.frames_per_block)
        return self._schedule[t] if t is not None else None

    @property
    def in_force(self) -> int | None:
        """`State.in_force`: the timestamp of the prompt in force at the last generated frame
        (block 0's from `start` on); None while idle."""
        if not self._running and self._finish_reason is None:
            return None
        return prompt_in_force(self._schedule, max(self._current_start_frame - 1, 0), self.frames_per_block)

    def is_current(self, plan: BlockPlan) -> bool:
        """True while the session still waits for `plan` (no reset, finish or failure since)."""
        return plan == self._in_progress

    def _video_frame(self, latent_frame: int) -> int:
        return latent_to_video_frame(latent_frame, self.temporal_compression)

    # --- snapshot messages ----------------------------------------------------------------------
    def hello(self) -> Hello:
        return hello_for(
            fps=self.fps,
            height=self.height,
            width=self.width,
            frames_per_block=self.frames_per_block,
            temporal_compression=self.temporal_compression,
            limits=self.limits,
            preset=self.preset,
        )

    def state(self) -> State:
        return State(
            generation=self.generation,
            running=self._running,
            paused=self._paused,
            current_start_frame=self._current_start_frame,
            video_frame=self._video_frame(self._current_start_frame),
            finished=self._finish_reason,
            current_prompt=self._current_prompt,
            scheduled_prompts=self.schedule,
            seed=self._seed,
            in_force=self.in_force,
            frontier=self.announced_frontier,
            decided=self.announced_decided,
        )

    def progress(self) -> Progress:
        return Progress(
            self._current_start_frame, self._video_frame(self._current_start_frame), self.generation
        )

    def on_connect(self) -> list[Message]:
        """What a newly connected client is sent first: `hello`, then `state`."""
        return [self.hello(), self.state()]

    # --- commands -------------------------------------------------------------------------------
    def handle_text(self, text: str | bytes) -> list[Message]:
        """Parse and apply one client text message; never raises (bugs become `internal`)."""
        try:
            command = parse_command(text, limits=self.limits)  # validated: types and values
        except ProtocolError as exc:
            return self.reject(exc)
        try:
            return self._apply(command)
        except Exception as exc:  # the client must get its one reply
            logger.exception("session failed on %s", command.type)
            return self.reject(
                ProtocolError(
                    ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}", command=command.type, id=command.id
                )
            )

    def handle_binary(self, data: bytes) -> list[Message]:
        """Clients never send binary messages: refuse (broadcast, no id can be read)."""
        return self.reject(
            ProtocolError(ErrorCode.UNEXPECTED_BINARY, "clients must not send binary messages")
        )

    def reject(self, error: ProtocolError) -> list[Message]:
        """The `command_error` for `error`: a reply when it has an id, else a broadcast."""
        return [CommandErrorMessage.from_exception(error)]

    def handle(self, command: Command) -> list[Message]:
        """Apply a command built in code (validated here): its reply (if it has an id) followed by
        any broadcasts. `handle_text` applies a client's text, validated once by `parse_command`."""
        if type(command) not in self._HANDLERS:
            raise TypeError(f"not a command: {command!r}")
        if self._finish_reason is not None and isinstance(command, self._REFUSED_WHEN_FINISHED):
            return self._refuse_finished(command)  # before validation: a late timestamp is not the fault
        try:
            validate_command(command, self.limits)
        except ProtocolError as exc:
            return self.reject(exc)
        return self._HANDLERS[type(command)](self, command)

    def _apply(self, command: Command) -> list[Message]:
        """Apply a valid command; a finished video refuses all but `reset` and `get_state`."""
        if self._finish_reason is not None and isinstance(command, self._REFUSED_WHEN_FINISHED):
            return self._refuse_finished(command)
        return self._HANDLERS[type(command)](self, command)

    def _ack(self, command: Command, result: CommandResult | State) -> list[Message]:
        """The reply carrying `result` (a typed result of `longlive.protocol`; `get_state`'s is a
        `State`), or nothing for a command without an id."""
        return [Ack(command.type, result.to_data(), command.id)] if command.id is not None else []

    def _refuse(self, command: Command, code: str, reason: str) -> list[Message]:
        return [CommandErrorMessage(command.type, code, reason, command.id)]

    def _refuse_finished(self, command: Command) -> list[Message]:
        return self._refuse(
            command,
            ErrorCode.FINISHED,
            f"the video ended ({self._finish_reason}) at frame {self._current_start_frame}; "
            "call reset() to start a new one",
        )

    def _schedule_prompt(self, cmd: SchedulePrompt) -> list[Message]:
        n, frontier, decided = self.frames_per_block, self.frontier, self.decided
        warnings: list[PromptWarning] = []
        if cmd.timestamp > decided:
            key, effective = cmd.timestamp, next_block_boundary(cmd.timestamp, n)
        else:
            key = effective = frontier
            if key != cmd.timestamp:
                warnings.append(
                    PromptWarning(
                        "rekeyed",
                        f"frame {cmd.timestamp} is already generated or being generated; "
                        f"the prompt was scheduled at the next block, frame {frontier}",
                    )
                )
        replaced = self._schedule.get(key)
        if replaced is None:
            pending = sum(1 for k in self._schedule if k > decided)
            if pending >= self.limits.max_scheduled_prompts:
                return self._refuse(
                    cmd,
                    ErrorCode.TOO_MANY_PROMPTS,
                    f"{pending} prompts are already waiting to take effect; the limit is "
                    f"{self.limits.max_scheduled_prompts}",
                )
        growth = len(cmd.new_prompt) - (len(replaced) if replaced is not None else -SCHEDULE_ENTRY_CHARS)
        forget = self._history_to_forget(growth)
        if forget is None:
            return self._refuse(
                cmd,
                ErrorCode.SCHEDULE_TOO_LARGE,
                f"the schedule would hold more than {self.limits.max_schedule_chars} characters of "
                "prompts; remove or shorten prompts, or reset",
            )
        for k in forget:
            del self._schedule[k]
        self._schedule[key] = cmd.new_prompt
        in_force = prompt_in_force(self._schedule, effective, n)
        if in_force != key:  # a prompt stored later, but still <= effective, wins
            warnings.append(
                PromptWarning(
                    "superseded", f"the prompt at frame {in_force} is the one in force at frame {effective}"
                )
            )
        if effective + n > self.max_frames:
            warnings.append(
                PromptWarning(
                    "beyond_max_frames",
                    f"frame {effective} is past the last block (max_frames {self.max_frames}); "
                    "this prompt will never be used",
                )
            )
        if self._prompt_warnings is not None:
            warnings.extend(PromptWarning(c, m) for c, m in self._prompt_warnings(cmd.new_prompt))
        return [
            *self._ack(
                cmd,
                ScheduledPrompt(
                    timestamp=key,
                    requested_timestamp=cmd.timestamp,
                    effective_frame=effective,
                    effective_video_frame=self._video_frame(effective),
                    replaced_prompt=replaced,
                    warnings=tuple(warnings),
                ),
            ),
            self.state(),
        ]

    def _history_to_forget(self, growth: int) -> list[int] | None:
        """The stored timestamps to forget so that the schedule, grown by `growth`, stays within
        `max_schedule_chars`; None when it cannot (the command is refused).

        A stored prompt counts its characters plus `SCHEDULE_ENTRY_CHARS` (its key in `state`).
        Only history is ever forgotten: prompts before the one in force at `D`, which no block
        will use again; the oldest first.
        """
        limit = self.limits.max_schedule_chars
        size = schedule_size(self._schedule) + growth
        decided = self.decided
        kept = prompt_in_force(self._schedule, decided, self.frames_per_block) if decided >= 0 else None
        history = sorted(k for k in self._schedule if kept is not None and k < kept)
        forget: list[int] = []
        for k in history:
            if size <= limit:
                break
            forget.append(k)
            size -= len(self._schedule[k]) + SCHEDULE_ENTRY_CHARS
        return forget if size <= limit else None

    def _remove_prompt(self, cmd: RemovePrompt) -> list[Message]:
        t = cmd.timestamp
        if t not in self._schedule:
            return self._refuse(cmd, ErrorCode.NO_SUCH_PROMPT, f"no prompt is scheduled at frame {t}")
        if t <= self.decided:
            return self._refuse(
                cmd,
                ErrorCode.ALREADY_APPLIED,
                f"the prompt at frame {t} is or was in force (blocks up to frame {self.decided} are decided)",
            )
        removed = self._schedule.pop(t)
        return [*self._ack(cmd, RemovePromptResult(timestamp=t, removed_prompt=removed)), self.state()]

    def _start(self, cmd: Start) -> list[Message]:
        if self._running:
            where = f"frame {self._current_start_frame}"
            return self._refuse(
                cmd,
                ErrorCode.ALREADY_RUNNING,
                f"a video is already paused at {where}: call resume() to continue or reset() to start over"
                if self._paused
                else f"a video is already running (at {where}): call reset() to start over",
            )
        if 0 not in self._schedule:
            return self._refuse(
                cmd,
                ErrorCode.NO_INITIAL_PROMPT,
                "no prompt at timestamp 0: call schedule_prompt(prompt, 0) before start()",
            )
        self._running, self._paused = True, False
        self._current_start_frame = 0
        self._current_prompt = None
        self._seed = self.default_seed if cmd.seed is None else cmd.seed
        return [
            *self._ack(cmd, StartResult(generation=self.generation, seed=self._seed)),
            self.progress(),
            self.state(),
        ]

    def _pause(self, cmd: Pause) -> list[Message]:
        if not self._running:
            return self._refuse(
                cmd, ErrorCode.NOT_RUNNING, "no video is running: schedule a prompt at 0 and call start()"
            )
        if self._paused:
            return self._refuse(
                cmd, ErrorCode.ALREADY_PAUSED, "the video is already paused: call resume() to continue"
            )
        self._paused = True
        return [*self._ack(cmd, PauseResult(effective_frame=self.frontier)), self.state()]

    def _resume(self, cmd: Resume) -> list[Message]:
        if not self._running:
            return self._refuse(
                cmd, ErrorCode.NOT_RUNNING, "no video is running: schedule a prompt at 0 and call start()"
            )
        if not self._paused:
            return self._refuse(cmd, ErrorCode.NOT_PAUSED, "the video is not paused: it is generating")
        self._paused = False
        return [*self._ack(cmd, ResumeResult(current_start_frame=self._current_start_frame)), self.state()]

    def _reset(self, cmd: Reset) -> list[Message]:
        out: list[Message] = []
        if self._running:
            out.append(self._finished_message("reset"))
        self.generation += 1
        self._clear()
        return [*self._ack(cmd, ResetResult(generation=self.generation)), *out, self.state()]

    def _get_state(self, cmd: GetState) -> list[Message]:
        if cmd.id is None:
            return [self.state()]
        return self._ack(cmd, self.state())

    _REFUSED_WHEN_FINISHED = (SchedulePrompt, RemovePrompt, Start, Pause, Resume)

    _HANDLERS: dict[type, Callable[[Session, Any], list[Message]]] = {
        SchedulePrompt: _schedule_prompt,
        RemovePrompt: _remove_prompt,
        Start: _start,
        Pause: _pause,
        Resume: _resume,
        Reset: _reset,
        GetState: _get_state,
    }

    # --- the generation loop side ---------------------------------------------------------------
    def next_block(self) -> BlockPlan | None:
        """Plan the next block, or None when there is nothing to generate (idle, paused, finished).

        Raises RuntimeError if the previous plan was not reported done or failed.
        """
        if self._in_progress is not None:
            raise RuntimeError(f"block {self._in_progress.start_frame} is still in progress")
        if not self._running or self._paused:
            return None
        s, n = self._current_start_frame, self.frames_per_block
        if s + n > self.max_frames:  # pragma: no cover - block_done finishes first
            return None
        prompt = self.prompt_at(s)
        if prompt is None:  # pragma: no cover - the prompt at 0 cannot be removed once started
            raise RuntimeError(f"no prompt in force at frame {s}")
        previous = self._current_prompt
        self._in_progress = BlockPlan(
            generation=self.generation,
            start_frame=s,
            prompt=prompt,
            switched=previous is not None and prompt != previous,
            previous_prompt=previous,
            seed=self._seed if self._seed is not None else self.default_seed,
            num_frames=n,
            first_video_frame=self._video_frame(s),
            num_video_frames=block_video_frames(s, n, self.temporal_compression),
        )
        return self._in_progress

    def block_done(self, plan: BlockPlan, num_video_frames: int) -> list[Message]:
        """The runner generated, decoded and sent the frames of `plan`: progress and events.

        Returns [] for a plan the session no longer waits for (a reset, finish or failure came in
        between), so nothing of an old run ever leaks.
        """
        if plan != self._in_progress:
            return []
        if num_video_frames != plan.num_video_frames:
            raise ValueError(
                f"block {plan.start_frame} decoded to {num_video_frames} video frames, expected {plan.num_video_frames}"
            )
        self._in_progress = None
        self._current_start_frame = plan.start_frame + plan.num_frames
        self._current_prompt = plan.prompt
        out: list[Message] = []
        if plan.switched:
            out.append(
                PromptSwitched(
                    frame=plan.start_frame,
                    video_frame=plan.first_video_frame,
                    new_prompt=plan.prompt,
                    previous_prompt=plan.previous_prompt,
                    generation=self.generation,
                )
            )
        out.append(self.progress())
        if self._current_start_frame + self.frames_per_block > self.max_frames:
            out.extend(self.finished("max_frames"))
        else:
            out.append(self.state())
        return out

    def block_failed(self, plan: BlockPlan, error: BaseException | str) -> list[Message]:
        """Generating `plan` failed: an `error` broadcast, then the session is finished ("error")."""
        if plan != self._in_progress:
            return []
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        message = ErrorMessage(
            message=f"generation failed at frame {plan.start_frame}: {text}",
            code=ErrorCode.GENERATION_FAILED,
            frame=plan.start_frame,
            generation=self.generation,
        )
        return [message, *self.finished("error")]

    def finished(self, reason: str) -> list[Message]:
        """End the video (e.g. "max_frames"): `generation_finished` and `state`; [] when not running."""
        if not self._running:
            return []
        self._running = self._paused = False
        self._in_progress = None
        self._finish_reason = reason
        return [self._finished_message(reason), self.state()]

    def _finished_message(self, reason: str) -> GenerationFinished:
        return GenerationFinished(
            reason=reason,
            current_start_frame=self._current_start_frame,
            video_frame=self._video_frame(self._current_start_frame),
            generation=self.generation,
        )

"""Command results: the typed data of each command's `ack` (docs/protocol.md, section 6.1)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from ..errors import ErrorCode, ProtocolError
from .codecs import INT, TEXT, Codec, FieldError, optional, read_fields, wire, wire_fields
from .messages import Ack

__all__ = [
    "COMMAND_RESULTS",
    "CommandResult",
    "PauseResult",
    "PromptWarning",
    "RemovePromptResult",
    "ResetResult",
    "ResumeResult",
    "ScheduledPrompt",
    "StartResult",
]

R = TypeVar("R", bound="CommandResult")


class CommandResult:
    """Base of the result of a command: its `ack`'s data without `command`.

    `to_data()` gives the wire fields in the documented order; `from_data(data)` reads them,
    ignoring fields it does not know (a newer runner may add some) and raising `ProtocolError`
    (`missing_field` / `bad_field`) for a missing or wrongly typed one. `to_ack(id)` and
    `from_ack(ack)` go to and from the whole `Ack`.
    """

    command: ClassVar[str]

    def to_data(self) -> dict[str, Any]:
        """The ack's result fields, JSON-ready."""
        return {f.name: f.codec.encode(getattr(self, f.name)) for f in wire_fields(builtins.type(self))}

    @classmethod
    def from_data(cls: builtins.type[R], data: Mapping[str, Any], id: str | None = None) -> R:
        """Read the result from an ack's data (with or without its `command`)."""
        return cls(**read_fields(cls, data, f"ack of {cls.command}", cls.command, id))

    @classmethod
    def from_ack(cls: builtins.type[R], ack: Ack) -> R:
        """The result carried by `ack`, which must answer this result's command."""
        if ack.command != cls.command:
            raise ProtocolError(
                ErrorCode.BAD_FIELD,
                f"an ack of {ack.command!r} does not carry the result of {cls.command!r}",
                command=ack.command,
                id=ack.id,
            )
        return cls.from_data(ack.result, ack.id)

    def to_ack(self, id: str | None = None) -> Ack:
        """The `ack` carrying this result, answering the command with `id`."""
        return Ack(self.command, self.to_data(), id)


@dataclass(frozen=True)
class PromptWarning:
    """A warning attached to a scheduled prompt (docs/protocol.md, section 6.1)."""

    code: str
    """`rekeyed`, `superseded`, `beyond_max_frames`, `prompt_truncated`, `unknown_words`, `prompt_form` (or a
    newer code)."""
    message: str


def _warnings(value: Any) -> tuple[PromptWarning, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(w, dict) and isinstance(w.get("code"), str) and isinstance(w.get("message"), str)
        for w in value
    ):
        raise FieldError("a list of {code, message} strings")
    return tuple(PromptWarning(w["code"], w["message"]) for w in value)


#: A list of `{code, message}` objects (null read as none).
WARNINGS: Codec[tuple[PromptWarning, ...]] = Codec(
    _warnings, lambda ws: [{"code": w.code, "message": w.message} for w in ws]
)


@dataclass(frozen=True)
class ScheduledPrompt(CommandResult):
    """What the runner did with a `schedule_prompt`: where it is stored and when it takes effect."""

    command: ClassVar[str] = "schedule_prompt"
    timestamp: int = wire(INT)
    """Latent frame where the prompt is stored (use it for `remove_prompt`)."""
    requested_timestamp: int = wire(INT)
    """The timestamp that was sent."""
    effective_frame: int = wire(INT)
    """First latent frame generated under this prompt (a block boundary)."""
    effective_video_frame: int = wire(INT)
    """The same position in video frames."""
    replaced_prompt: str | None = wire(optional(TEXT), default=None)
    """The prompt this one overwrote at `timestamp`, if any."""
    warnings: tuple[PromptWarning, ...] = wire(WARNINGS, default=())
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The whole `ack` result as received, including fields a newer runner may add (empty for a
    result built in code)."""

    @property
    def rekeyed(self) -> bool:
        """The timestamp was in the decided past, so the prompt was stored at the next block."""
        return any(w.code == "rekeyed" for w in self.warnings)

    @classmethod
    def from_data(cls, data: Mapping[str, Any], id: str | None = None) -> ScheduledPrompt:
        kwargs = read_fields(cls, data, f"ack of {cls.command}", cls.command, id)
        return cls(**kwargs, raw={k: v for k, v in data.items() if k != "command"})


@dataclass(frozen=True)
class RemovePromptResult(CommandResult):
    """What `remove_prompt` removed."""

    command: ClassVar[str] = "remove_prompt"
    timestamp: int = wire(INT)
    """The latent frame the prompt was stored at."""
    removed_prompt: str = wire(TEXT)
    """The text of the removed prompt."""


@dataclass(frozen=True)
class StartResult(CommandResult):
    """The video `start` began."""

    command: ClassVar[str] = "start"
    generation: int = wire(INT)
    """The session generation of the video (its frames carry it)."""
    seed: int = wire(INT)
    """The seed in use (the runner's default when none was sent)."""


@dataclass(frozen=True)
class PauseResult(CommandResult):
    """Where `pause` stops the video."""

    command: ClassVar[str] = "pause"
    effective_frame: int = wire(INT)
    """The first latent frame that will not start until `resume`: the block being generated
    when `pause` arrived still completes."""


@dataclass(frozen=True)
class ResumeResult(CommandResult):
    """Where `resume` continues the video."""

    command: ClassVar[str] = "resume"
    current_start_frame: int = wire(INT)
    """The latent frame of the next block to generate."""


@dataclass(frozen=True)
class ResetResult(CommandResult):
    """The fresh session `reset` made."""

    command: ClassVar[str] = "reset"
    generation: int = wire(INT)
    """The new session generation (frames of older generations are stale)."""


#: The result type of each command's `ack` (`get_state`'s is a `State`).
COMMAND_RESULTS: dict[str, type[CommandResult]] = {
    c.command: c
    for c in (ScheduledPrompt, RemovePromptResult, StartResult, PauseResult, ResumeResult, ResetResult)
}

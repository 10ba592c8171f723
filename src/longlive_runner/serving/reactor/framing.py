"""The two framings of Reactor's data channels, as one I/O-free codec per connection.

A client's first message, on either channel, picks the framing for the whole connection (the rule
reactor-runtime applies): a text message means v0, the JSON framing of the JS SDK 2.x; a binary
message means v1, the `reactor_wire.v1` protobuf framing of the Python `reactor-sdk` 1.x (`wire.py`).

v0 (JSON):

- `data` channel, application scope: `{"scope": "application", "data": {"type", "data"}}` both
  ways (a bare `{"type", "data"}` is read as application scope too);
- `data` channel, runtime scope: `{"scope": "runtime", "data": {"type", "data"}}`: `ping`,
  `requestSchema` -> `modelSchema`, `sessionEnded`, ...;
- `control` channel: `{"type": "notification", "event": "pause_track"|"resume_track"|...,
  "data": {"name"}}` and the `publish_track` request / response.
- v0 commands carry no request id and get no replies; a refusal is an application message
  `command_error {command, reason, code}` (the convention of Reactor's models).

v1 (protobuf): commands are `DataClientMessage` REQUESTs with ids; every one gets a RESPONSE (a
`ModelMessage` when there is a result, an `Error {code, message}` on refusal, nothing = an ack);
model messages are NOTIFICATIONs with an empty request id (broadcasts); platform messages travel
on `control`.

`decode()` turns a raw message into one of `Command`, `Platform`, `TrackVerb` (or raises
`FramingError`); the `encode_*` methods return `(channel, payload)` pairs, None when the framing
has nothing to send (a v0 ack).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from . import wire
from .wire import MessageKind, WireError, normalize_numbers

__all__ = [
    "CONTROL",
    "DATA",
    "NATIVE",
    "Codec",
    "Command",
    "Framing",
    "FramingError",
    "Outgoing",
    "Platform",
    "TrackVerb",
    "sniff",
]

CONTROL = "control"
DATA = "data"
#: The one channel of a client speaking this runner's own protocol over WebRTC (`longlive.webrtc`).
NATIVE = "longlive"
Channel = Literal["control", "data"]

#: The default cap on one message from a client, either channel (the JS SDK's own default send
#: limit is 256 KiB; our commands are far smaller: a prompt is at most a few KiB).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024

#: One outgoing message: (channel label, text or bytes).
Outgoing = tuple[str, str | bytes]


class Framing(Enum):
    V0 = "v0"
    V1 = "v1"


class FramingError(ValueError):
    """A client message that cannot be read in the connection's framing."""


def sniff(payload: str | bytes) -> Framing:
    """The framing a connection's first message picks: text = v0, binary = v1."""
    return Framing.V0 if isinstance(payload, str) else Framing.V1


@dataclass(frozen=True)
class Command:
    """A model command (`schedule_prompt`, `start`, ...); `request_id` None for v0 (no reply)."""

    command: str
    data: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None


@dataclass(frozen=True)
class Platform:
    """A runtime-scope request: "ping", "request_schema", "request_clip", "request_recording",
    "file_uploaded", or a name we do not serve (answered with an error for v1)."""

    name: str
    request_id: str | None = None


@dataclass(frozen=True)
class TrackVerb:
    """`pause_track`, `resume_track`, `publish_track` or `unpublish_track` for track `track`."""

    verb: str
    track: str
    request_id: str | None = None


Inbound = Command | Platform | TrackVerb

_V0_RUNTIME = {
    "ping": "ping",
    "requestSchema": "request_schema",
    "requestClip": "request_clip",
    "requestRecording": "request_recording",
    "fileUploaded": "file_uploaded",
}
_TRACK_VERBS = ("pause_track", "resume_track", "publish_track", "unpublish_track")


def _dump(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _load(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise FramingError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise FramingError("a v0 message must be a JSON object")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class Codec:
    """The framing of one connection: `None` until the first message picks it (`sniff`).

    `max_message_bytes` bounds one inbound message (longer: `FramingError`, never parsed).
    """

    def __init__(
        self, framing: Framing | None = None, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self.framing = framing
        self.max_message_bytes = max_message_bytes

    # --- inbound --------------------------------------------------------------------------------
    def decode(self, channel: str, payload: str | bytes) -> Inbound:
        size = len(payload.encode("utf-8")) if isinstance(payload, str) else len(payload)
        if size > self.max_message_bytes:
            raise FramingError(f"message of {size} bytes, the limit is {self.max_message_bytes}")
        if self.framing is None:
            self.framing = sniff(payload)
        if self.framing is Framing.V0:
            if not isinstance(payload, str):
                raise FramingError("binary message on a v0 (JSON) connection")
            return self._decode_v0(channel, payload)
        if isinstance(payload, str):
            raise FramingError("text message on a v1 (protobuf) connection")
        return self._decode_v1(channel, payload)

    def _decode_v0(self, channel: str, text: str) -> Inbound:
        obj = _load(text)
        if channel == CONTROL:
            kind, event, data = obj.get("type"), obj.get("event"), obj.get("data")
            name = data.get("name") if isinstance(data, dict) else None
            if kind == "request" and obj.get("method") == "publish_track":
                rid = obj.get("request_id")
                return TrackVerb("publish_track", str(name or ""), str(rid) if rid is not None else None)
            if kind == "notification" and event in _TRACK_VERBS and isinstance(name, str):
                return TrackVerb(str(event), name)
            raise FramingError("unknown control message")
        scope = obj.get("scope")
        inner = obj.get("data") if scope is not None else obj
        if scope not in (None, "application", "runtime") or not isinstance(inner, dict):
            raise FramingError("expected {scope, data: {type, data}}")
        mtype, body = inner.get("type"), inner.get("data", {})
        if not isinstance(mtype, str) or not mtype:
            raise FramingError("the message has no type")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise FramingError("data.data must be an object")
        if scope == "runtime":
            return Platform(_V0_RUNTIME.get(mtype, mtype))
        return Command(mtype, normalize_numbers(body))

    def _decode_v1(self, channel: str, raw: bytes) -> Inbound:
        try:
            if channel == CONTROL:
                req = wire.decode_control_client(raw)
                if req.payload in _TRACK_VERBS:
                    return TrackVerb(req.payload, req.track or "", req.request_id or None)
                return Platform(req.payload or "unknown", req.request_id or None)
            msg = wire.decode_data_client(raw)
        except WireError as exc:
            raise FramingError(str(exc)) from exc
        if msg.command is None:
            raise FramingError(f"client error report: {msg.error_code}: {msg.error_message}")
        return Command(msg.command, msg.data, msg.request_id or None)

    # --- outbound -------------------------------------------------------------------------------
    @property
    def _v1(self) -> bool:
        return self.framing is Framing.V1

    def encode_message(self, type: str, data: Mapping[str, Any]) -> Outgoing:
        """A model message for every client (a broadcast)."""
        if self._v1:
            return DATA, wire.encode_data_server(kind=MessageKind.NOTIFICATION, message=(type, data))
        return DATA, _dump({"scope": "application", "data": {"type": type, "data": dict(data)}})

    def encode_reply(
        self, request_id: str | None, type: str | None, data: Mapping[str, Any]
    ) -> Outgoing | None:
        """The success reply to a command: a v1 RESPONSE (a `ModelMessage` when `type` is
        given, else a bare ack); nothing for v0 (fire-and-forget)."""
        if not self._v1 or request_id is None:
            return None
        message = (type, data) if type is not None else None
        return DATA, wire.encode_data_server(
            request_id=request_id, kind=MessageKind.RESPONSE, message=message
        )

    def encode_refusal(self, request_id: str | None, command: str | None, code: str, reason: str) -> Outgoing:
        """A refused command: v1 RESPONSE `Error {code, message}`; v0 `command_error` message."""
        if self._v1 and request_id is not None:
            return DATA, wire.encode_data_server(
                request_id=request_id, kind=MessageKind.RESPONSE, error=(code, reason)
            )
        return self.encode_message("command_error", {"command": command, "reason": reason, "code": code})

    def encode_schema(self, request_id: str | None, openapi: Mapping[str, Any]) -> Outgoing:
        if self._v1:
            return CONTROL, wire.encode_control_server(
                request_id=request_id or "", kind=MessageKind.RESPONSE, model_schema=openapi
            )
        return DATA, _dump({"scope": "runtime", "data": {"type": "modelSchema", "data": dict(openapi)}})

    def encode_platform_ack(self, request_id: str | None) -> Outgoing | None:
        """The reply to a v1 control request with no answer of its own (a ping REQUEST)."""
        if self._v1 and request_id:
            return CONTROL, wire.encode_control_server(request_id=request_id, kind=MessageKind.RESPONSE)
        return None

    def encode_platform_error(
        self, request_id: str | None, name: str, code: str, reason: str
    ) -> Outgoing | None:
        """A control request we cannot serve (clips, uploads): v1 Error; v0 `clipFailed` for a
        clip request, else nothing."""
        if self._v1:
            if name in ("request_clip", "request_recording"):
                return CONTROL, wire.encode_control_server(
                    request_id=request_id or "", kind=MessageKind.RESPONSE, clip_failed=reason
                )
            return CONTROL, wire.encode_control_server(
                request_id=request_id or "", kind=MessageKind.RESPONSE, error=(code, reason)
            )
        if name in ("request_clip", "request_recording"):
            return DATA, _dump(
                {"scope": "runtime", "data": {"type": "clipFailed", "data": {"reason": reason}}}
            )
        return None

    def encode_publish_response(
        self, request_id: str | None, track: str, error: tuple[str, str] | None
    ) -> Outgoing:
        if self._v1:
            if error is not None:
                return CONTROL, wire.encode_control_server(
                    request_id=request_id or "", kind=MessageKind.RESPONSE, error=error
                )
            return CONTROL, wire.encode_control_server(
                request_id=request_id or "", kind=MessageKind.RESPONSE, publish_track=track
            )
        body: dict[str, Any] = {"type": "response", "method": "publish_track", "request_id": request_id or ""}
        if error is not None:
            body["error"] = {"code": error[0], "message": error[1]}
        else:
            body["data"] = {}
        return CONTROL, _dump(body)

    def encode_session_ended(self, reason: str) -> Outgoing:
        if self._v1:
            return CONTROL, wire.encode_control_server(kind=MessageKind.NOTIFICATION, session_ended=reason)
        return DATA, _dump({"scope": "runtime", "data": {"type": "sessionEnded", "data": {"reason": reason}}})

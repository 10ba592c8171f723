"""The v1 binary framing of Reactor's data channels: protobuf messages of package `reactor_wire.v1`.

Spoken by the Python `reactor-sdk` 1.x (and the Rust core behind it): every message on the `data`
and `control` channels is one serialized protobuf message. The schema (field numbers as published
in reactor-runtime's Apache-2.0 `proto/reactor_wire/v1/*.proto`) is built here in code, as a
`FileDescriptorProto` in a private descriptor pool, rather than generated `_pb2` modules or a
hand-written encoder: the messages carry `google.protobuf.Struct` payloads (arbitrary JSON), whose
encoding the `protobuf` package already gets right (nesting, null, lists), and a private pool
cannot collide with another copy of the same package (reactor-runtime's own) in one process.

Only the messages this runner sends or reads are declared; a field or `oneof` member we do not
declare is skipped by the parser (proto3 keeps it as an unknown field), so a newer client's
additions do not break decoding.

The API is plain Python: `decode_data_client` / `decode_control_client` return small dataclasses
(`DataRequest`, `ControlRequest`), `encode_data_server` / `encode_control_server` take keyword
arguments. `WireError` is raised on anything that does not parse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory, struct_pb2
from google.protobuf.message import DecodeError, Message

__all__ = [
    "PACKAGE",
    "ControlRequest",
    "DataRequest",
    "MessageKind",
    "WireError",
    "decode_control_client",
    "decode_data_client",
    "encode_control_server",
    "encode_data_server",
    "normalize_numbers",
    "struct_to_dict",
]

PACKAGE = "reactor_wire.v1"

#: Nesting allowed in a `Struct` payload a client sends (the protobuf parser's own limit is 100).
MAX_STRUCT_DEPTH = 32


class WireError(ValueError):
    """A binary message that is not a valid `reactor_wire.v1` message of the expected type."""


class MessageKind(IntEnum):
    UNSPECIFIED = 0
    REQUEST = 1
    RESPONSE = 2
    NOTIFICATION = 3


# --- the schema ---------------------------------------------------------------------------------
_F = descriptor_pb2.FieldDescriptorProto
_STRING, _INT64, _DOUBLE, _ENUM, _MESSAGE = (
    _F.TYPE_STRING,
    _F.TYPE_INT64,
    _F.TYPE_DOUBLE,
    _F.TYPE_ENUM,
    _F.TYPE_MESSAGE,
)
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

# (name, number, type, type name or None, label, oneof index or None)
_FieldSpec = tuple[str, int, int, str | None, int, int | None]


def _fields(*specs: tuple[Any, ...]) -> list[_FieldSpec]:
    out: list[_FieldSpec] = []
    for spec in specs:
        name, number, kind = spec[0], spec[1], spec[2]
        type_name = spec[3] if len(spec) > 3 else None
        oneof = spec[4] if len(spec) > 4 else None
        out.append((name, number, kind, type_name, _OPTIONAL, oneof))
    return out


def _msg(t: str) -> str:
    return f".{PACKAGE}.{t}"


_STRUCT = ".google.protobuf.Struct"
_KIND = _msg("MessageKind")

# message name -> (fields, oneof names)
_MESSAGES: dict[str, tuple[list[_FieldSpec], list[str]]] = {
    # common.proto
    "Error": (_fields(("code", 1, _STRING), ("message", 2, _STRING)), []),
    # model.proto (Command.uploads, a map<string, UploadReference> = 3, is not declared: skipped)
    "Command": (_fields(("type", 1, _STRING), ("data", 2, _MESSAGE, _STRUCT)), []),
    "ModelMessage": (_fields(("type", 1, _STRING), ("data", 2, _MESSAGE, _STRUCT)), []),
    # platform.proto
    "Ping": ([], []),
    "RequestSchema": ([], []),
    "ModelSchema": (_fields(("openapi", 1, _MESSAGE, _STRUCT)), []),
    "RequestClip": (_fields(("duration_seconds", 1, _DOUBLE)), []),
    "RequestRecording": ([], []),
    "ClipFailed": (_fields(("reason", 1, _STRING)), []),
    "SessionEnded": (_fields(("reason", 1, _STRING)), []),
    # track.proto
    "PublishTrack": (_fields(("name", 1, _STRING)), []),
    "PauseTrack": (_fields(("name", 1, _STRING)), []),
    "ResumeTrack": (_fields(("name", 1, _STRING)), []),
    "UnpublishTrack": (_fields(("name", 1, _STRING)), []),
    "PublishTrackResponse": (_fields(("name", 1, _STRING)), []),
    # data.proto
    "DataClientMessage": (
        _fields(
            ("request_id", 1, _STRING),
            ("kind", 2, _ENUM, _KIND),
            ("command", 10, _MESSAGE, _msg("Command"), 0),
            ("error", 40, _MESSAGE, _msg("Error"), 0),
        ),
        ["payload"],
    ),
    "DataServerMessage": (
        _fields(
            ("request_id", 1, _STRING),
            ("kind", 2, _ENUM, _KIND),
            ("message", 10, _MESSAGE, _msg("ModelMessage"), 0),
            ("error", 40, _MESSAGE, _msg("Error"), 0),
        ),
        ["payload"],
    ),
    # control.proto
    "ControlClientMessage": (
        _fields(
            ("request_id", 1, _STRING),
            ("kind", 2, _ENUM, _KIND),
            ("ping", 10, _MESSAGE, _msg("Ping"), 0),
            ("request_schema", 11, _MESSAGE, _msg("RequestSchema"), 0),
            ("request_clip", 13, _MESSAGE, _msg("RequestClip"), 0),
            ("request_recording", 14, _MESSAGE, _msg("RequestRecording"), 0),
            ("publish_track", 15, _MESSAGE, _msg("PublishTrack"), 0),
            ("pause_track", 16, _MESSAGE, _msg("PauseTrack"), 0),
            ("resume_track", 17, _MESSAGE, _msg("ResumeTrack"), 0),
            ("unpublish_track", 18, _MESSAGE, _msg("UnpublishTrack"), 0),
            ("error", 40, _MESSAGE, _msg("Error"), 0),
        ),
        ["payload"],
    ),
    "ControlServerMessage": (
        _fields(
            ("request_id", 1, _STRING),
            ("kind", 2, _ENUM, _KIND),
            ("model_schema", 10, _MESSAGE, _msg("ModelSchema"), 0),
            ("clip_failed", 12, _MESSAGE, _msg("ClipFailed"), 0),
            ("publish_track", 14, _MESSAGE, _msg("PublishTrackResponse"), 0),
            ("session_ended", 15, _MESSAGE, _msg("SessionEnded"), 0),
            ("error", 40, _MESSAGE, _msg("Error"), 0),
        ),
        ["payload"],
    ),
}


def _build_pool() -> dict[str, type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    fd = descriptor_pb2.FileDescriptorProto(
        name="longlive_reactor_wire_v1.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/struct.proto"],
    )
    enum = fd.enum_type.add(name="MessageKind")
    for kind in MessageKind:
        enum.value.add(name=f"MESSAGE_KIND_{kind.name}", number=int(kind))
    for name, (specs, oneofs) in _MESSAGES.items():
        m = fd.message_type.add(name=name)
        for oneof in oneofs:
            m.oneof_decl.add(name=oneof)
        for fname, number, ftype, type_name, label, oneof_index in specs:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name is not None:
                f.type_name = type_name
            if oneof_index is not None:
                f.oneof_index = oneof_index
    pool.Add(fd)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in _MESSAGES
    }


_CLASSES = _build_pool()


# --- Struct <-> Python --------------------------------------------------------------------------
def _depth(value: Any, limit: int) -> int:
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, d = stack.pop()
        deepest = max(deepest, d)
        if d > limit:
            return d
        if isinstance(item, Mapping):
            stack.extend((v, d + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, d + 1) for v in item)
    return deepest


def normalize_numbers(value: Any) -> Any:
    """JSON values with every integral float made an int (3.0 -> 3), recursively.

    A `Struct` carries every number as a double, so `timestamp: 3` arrives as 3.0; the runner's
    protocol wants integers where it says integer. Non-integral and non-finite floats are kept.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) <= 2**63:
            return int(value)
        return value
    if isinstance(value, Mapping):
        return {str(k): normalize_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_numbers(v) for v in value]
    return value


def struct_to_dict(struct: Message) -> dict[str, Any]:
    """A `google.protobuf.Struct` as a JSON-like dict (integral doubles made ints)."""
    out = json_format.MessageToDict(struct)
    if not isinstance(out, dict):  # pragma: no cover - a Struct is always an object
        raise WireError("the payload is not an object")
    if _depth(out, MAX_STRUCT_DEPTH) > MAX_STRUCT_DEPTH:
        raise WireError(f"the payload nests deeper than {MAX_STRUCT_DEPTH} levels")
    result: dict[str, Any] = normalize_numbers(out)
    return result


def _fill_struct(target: Message, data: Mapping[str, Any]) -> None:
    try:
        target.update(dict(data))
    except (TypeError, ValueError) as exc:
        raise WireError(f"cannot encode the payload as a Struct: {exc}") from exc


# --- decoding (client -> runner) ---------------------------------------------------------------
@dataclass(frozen=True)
class DataRequest:
    """A `DataClientMessage`: a command (`command` set) or a client-side error report."""

    request_id: str
    kind: MessageKind
    command: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class ControlRequest:
    """A `ControlClientMessage`: `payload` is the oneof member's name ("ping", "resume_track",
    ...; "" when absent or not one we know); `track` the track name of the track messages."""

    request_id: str
    kind: MessageKind
    payload: str
    track: str | None = None
    duration_seconds: float | None = None


def _parse(name: str, raw: bytes) -> Message:
    msg = _CLASSES[name]()
    try:
        msg.ParseFromString(bytes(raw))
    except (DecodeError, RuntimeError, ValueError) as exc:  # RuntimeError: recursion limit
        raise WireError(f"not a {PACKAGE}.{name}: {exc}") from exc
    return msg


def _kind(msg: Any) -> MessageKind:
    try:
        return MessageKind(int(msg.kind))
    except ValueError:
        return MessageKind.UNSPECIFIED


def decode_data_client(raw: bytes) -> DataRequest:
    """Parse a `DataClientMessage` (raises `WireError`)."""
    msg: Any = _parse("DataClientMessage", raw)
    which = msg.WhichOneof("payload")
    if which == "command":
        if not msg.command.type:
            raise WireError("the command has no type")
        return DataRequest(
            request_id=msg.request_id,
            kind=_kind(msg),
            command=msg.command.type,
            data=struct_to_dict(msg.command.data),
        )
    if which == "error":
        return DataRequest(
            request_id=msg.request_id,
            kind=_kind(msg),
            error_code=msg.error.code,
            error_message=msg.error.message,
        )
    raise WireError("the message carries neither a command nor an error")


def decode_control_client(raw: bytes) -> ControlRequest:
    """Parse a `ControlClientMessage` (raises `WireError`)."""
    msg: Any = _parse("ControlClientMessage", raw)
    which = msg.WhichOneof("payload") or ""
    track = None
    duration = None
    if which in ("publish_track", "pause_track", "resume_track", "unpublish_track"):
        track = getattr(msg, which).name
    elif which == "request_clip":
        duration = float(msg.request_clip.duration_seconds)
    return ControlRequest(
        request_id=msg.request_id, kind=_kind(msg), payload=which, track=track, duration_seconds=duration
    )


# --- encoding (runner -> client) ---------------------------------------------------------------
def encode_data_server(
    *,
    request_id: str = "",
    kind: MessageKind,
    message: tuple[str, Mapping[str, Any]] | None = None,
    error: tuple[str, str] | None = None,
) -> bytes:
    """A serialized `DataServerMessage`: `message` = (type, data) or `error` = (code, message);
    neither: a bare acknowledgement (a RESPONSE without payload)."""
    if message is not None and error is not None:
        raise ValueError("a DataServerMessage carries a message or an error, not both")
    out: Any = _CLASSES["DataServerMessage"](request_id=request_id, kind=int(kind))
    if message is not None:
        out.message.type = message[0]
        _fill_struct(out.message.data, message[1])
    elif error is not None:
        out.error.code, out.error.message = error
    data: bytes = out.SerializeToString()
    return data


def encode_control_server(
    *,
    request_id: str = "",
    kind: MessageKind,
    model_schema: Mapping[str, Any] | None = None,
    session_ended: str | None = None,
    publish_track: str | None = None,
    clip_failed: str | None = None,
    error: tuple[str, str] | None = None,
) -> bytes:
    """A serialized `ControlServerMessage` with at most one payload (none: a bare ack)."""
    given = [x for x in (model_schema, session_ended, publish_track, clip_failed, error) if x is not None]
    if len(given) > 1:
        raise ValueError("a ControlServerMessage carries one payload at most")
    out: Any = _CLASSES["ControlServerMessage"](request_id=request_id, kind=int(kind))
    if model_schema is not None:
        _fill_struct(out.model_schema.openapi, model_schema)
    elif session_ended is not None:
        out.session_ended.reason = session_ended
    elif publish_track is not None:
        out.publish_track.name = publish_track
    elif clip_failed is not None:
        out.clip_failed.reason = clip_failed
    elif error is not None:
        out.error.code, out.error.message = error
    data: bytes = out.SerializeToString()
    return data


# --- for tests and tools: the client side of the same messages ---------------------------------
def encode_data_client(
    *, request_id: str, command: str, data: Mapping[str, Any], kind: MessageKind = MessageKind.REQUEST
) -> bytes:
    """A serialized `DataClientMessage` carrying a command (what a v1 client sends)."""
    out: Any = _CLASSES["DataClientMessage"](request_id=request_id, kind=int(kind))
    out.command.type = command
    _fill_struct(out.command.data, data)
    raw: bytes = out.SerializeToString()
    return raw


def encode_control_client(
    *,
    request_id: str = "",
    kind: MessageKind = MessageKind.NOTIFICATION,
    payload: str,
    track: str | None = None,
) -> bytes:
    """A serialized `ControlClientMessage` (`payload` a oneof member name, e.g. "resume_track")."""
    out: Any = _CLASSES["ControlClientMessage"](request_id=request_id, kind=int(kind))
    member = getattr(out, payload)
    member.SetInParent()
    if track is not None:
        member.name = track
    raw: bytes = out.SerializeToString()
    return raw


def decode_data_server(raw: bytes) -> dict[str, Any]:
    """A `DataServerMessage` as a dict {request_id, kind, type?, data?, error?} (tests, tools)."""
    msg: Any = _parse("DataServerMessage", raw)
    out: dict[str, Any] = {"request_id": msg.request_id, "kind": _kind(msg)}
    which = msg.WhichOneof("payload")
    if which == "message":
        out["type"] = msg.message.type
        out["data"] = struct_to_dict(msg.message.data)
    elif which == "error":
        out["error"] = (msg.error.code, msg.error.message)
    return out


def decode_control_server(raw: bytes) -> dict[str, Any]:
    """A `ControlServerMessage` as a dict {request_id, kind, payload, ...} (tests, tools)."""
    msg: Any = _parse("ControlServerMessage", raw)
    which = msg.WhichOneof("payload") or ""
    out: dict[str, Any] = {"request_id": msg.request_id, "kind": _kind(msg), "payload": which}
    if which == "model_schema":
        out["openapi"] = json_format.MessageToDict(msg.model_schema.openapi)
    elif which == "session_ended":
        out["reason"] = msg.session_ended.reason
    elif which == "error":
        out["error"] = (msg.error.code, msg.error.message)
    return out

"""The JSON envelope of every text message: `{"type", "data", "id"?}` (docs/protocol.md, 2-3)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import ErrorCode, ProtocolError
from .codecs import valid_text
from .limits import MAX_ID_CHARS
from .messages import MESSAGE_TYPES, Message, UnknownMessage

__all__ = [
    "encode_envelope",
    "encode_message",
    "json_kind",
    "load_object",
    "message_size",
    "parse_message",
    "read_id",
    "read_type_and_data",
]


def encode_envelope(type: str, data: Mapping[str, Any], id: str | None = None) -> str:
    """The JSON text of one message or command: `{"type", "data", "id"?}` (docs/protocol.md, 2)."""
    obj: dict[str, Any] = {"type": type, "data": dict(data)}
    if id is not None:
        obj["id"] = id
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_message(msg: Message) -> str:
    """The JSON text of `msg`: `{"type", "data", "id"?}`."""
    return encode_envelope(msg.type, msg.to_data(), getattr(msg, "id", None))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_object(text: str | bytes) -> dict[str, Any]:
    """The JSON object of a text message; raises `ProtocolError` (bad_json / not_an_object)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(ErrorCode.BAD_JSON, f"message is not UTF-8: {exc}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.NOT_AN_OBJECT, f"message must be a JSON object, got {json_kind(obj)}")
    return obj


def json_kind(value: Any) -> str:
    """ "null", "a boolean", "a number", "a string", "an array" or "an object"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def read_id(obj: Mapping[str, Any]) -> str | None:
    """The envelope's `id` (None when absent or null); raises `ProtocolError` (bad_field)."""
    if "id" not in obj or obj["id"] is None:
        return None
    value = obj["id"]
    if not isinstance(value, str) or not (1 <= len(value) <= MAX_ID_CHARS) or not valid_text(value):
        raise ProtocolError(
            ErrorCode.BAD_FIELD,
            f"id must be a string of 1 to {MAX_ID_CHARS} characters, got {json_kind(value)}",
            command=_peek_type(obj),
        )
    return value


def _peek_type(obj: Mapping[str, Any]) -> str | None:
    t = obj.get("type")
    return t[:64] if isinstance(t, str) and valid_text(t) else None


def read_type_and_data(obj: Mapping[str, Any], id: str | None) -> tuple[str, Mapping[str, Any]]:
    """The envelope's `type` and `data` (null or absent data read as {})."""
    if "type" not in obj:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "message has no type", id=id)
    msg_type = obj["type"]
    if not isinstance(msg_type, str) or not valid_text(msg_type):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"type must be a string, got {json_kind(msg_type)}", id=id)
    data = obj.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(
            ErrorCode.BAD_FIELD,
            f"data must be an object, got {json_kind(data)}",
            command=msg_type[:64],
            id=id,
        )
    return msg_type, data


def parse_message(text: str | bytes) -> Message:
    """Decode any text message (either direction); unknown types give an `UnknownMessage`.

    Raises `ProtocolError` for text that is not a JSON object with a string `type`, or a known
    type with missing or wrongly typed fields. Values are not range-checked (a runner checks a
    client's commands with `longlive.protocol.runner.parse_command`).
    """
    obj = load_object(text)
    raw_id = obj.get("id")
    msg_id = raw_id if isinstance(raw_id, str) else None
    msg_type, data = read_type_and_data(obj, msg_id)
    cls = MESSAGE_TYPES.get(msg_type)
    if cls is None:
        return UnknownMessage(type=msg_type, data=dict(data), id=msg_id)
    return cls.from_data(data, id=msg_id)


def message_size(text: str | bytes) -> int:
    """The size of a text message in UTF-8 bytes."""
    if isinstance(text, str):
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text)

"""Per-field codecs: how each field of a message or result is read from and written to JSON.

A message dataclass declares each wire field with `wire(codec)`; the codec, not the annotation,
decides what the field accepts. Decoding is strict (a bool is not an int, text must be valid
Unicode) and raises `ProtocolError` (`bad_field` / `missing_field`) naming the message and field.
Fields declared without `wire` (a message's `id`, a result's `raw`) are not part of `data`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import ErrorCode, ProtocolError

__all__ = [
    "BOOL",
    "FRAME_MAP",
    "INT",
    "OBJECT",
    "TEXT",
    "Codec",
    "FieldError",
    "WireField",
    "decode_field",
    "optional",
    "read_fields",
    "valid_text",
    "wire",
    "wire_fields",
]

T = TypeVar("T")


class FieldError(ValueError):
    """Raised by a codec: the value is not what the field takes (`expected`, e.g. "an integer")."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How one field travels: `decode` checks and converts a JSON value (raises `FieldError`),
    `encode` gives the JSON value of a field."""

    decode: Callable[[Any], T]
    encode: Callable[[T], Any] = lambda value: value


def valid_text(value: str) -> bool:
    """False for strings that cannot be sent back out as UTF-8 (lone surrogates from "\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError("an integer")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError("a string")
    if not valid_text(value):
        raise FieldError("valid Unicode text (no lone surrogates)")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise FieldError("a boolean")
    return value


def _frame_map(value: Any) -> dict[int, str]:
    if not isinstance(value, dict):
        raise FieldError("an object")
    out: dict[int, str] = {}
    for k, v in value.items():
        if not (isinstance(k, str) and k.isdigit() and k.isascii()) or not isinstance(v, str):
            raise FieldError("an object of decimal frame -> string")
        out[int(k)] = v
    return out


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FieldError("an object")
    return dict(value)


INT: Codec[int] = Codec(_int)
TEXT: Codec[str] = Codec(_text)
BOOL: Codec[bool] = Codec(_bool)
#: {latent frame: prompt}; on the wire an object with decimal-string keys, sorted by frame.
FRAME_MAP: Codec[dict[int, str]] = Codec(_frame_map, lambda m: {str(k): m[k] for k in sorted(m)})
OBJECT: Codec[dict[str, Any]] = Codec(_object)


def optional(codec: Codec[T]) -> Codec[T | None]:
    """`codec`, or null."""

    def decode(value: Any) -> T | None:
        if value is None:
            return None
        try:
            return codec.decode(value)
        except FieldError as exc:
            raise FieldError(f"{exc.expected} or null") from None

    return Codec(decode, lambda value: None if value is None else codec.encode(value))


def wire(
    codec: Codec[Any], *, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING
) -> Any:
    """A dataclass field that travels in `data`, read and written by `codec`."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"codec": codec})


@dataclass(frozen=True)
class WireField:
    name: str
    codec: Codec[Any]
    required: bool


_WIRE_FIELDS: dict[type, tuple[WireField, ...]] = {}


def wire_fields(cls: type) -> tuple[WireField, ...]:
    """The wire fields of a message or result dataclass, in declaration order."""
    fields = _WIRE_FIELDS.get(cls)
    if fields is None:
        fields = tuple(
            WireField(
                f.name,
                f.metadata["codec"],
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
            if "codec" in f.metadata
        )
        _WIRE_FIELDS[cls] = fields
    return fields


def decode_field(field: WireField, value: Any, command: str | None, id: str | None) -> Any:
    """`value` read by the field's codec; raises `ProtocolError` (bad_field)."""
    try:
        return field.codec.decode(value)
    except FieldError as exc:
        got = "null" if value is None else type(value).__name__
        raise ProtocolError(
            ErrorCode.BAD_FIELD,
            f"{command}: data.{field.name} must be {exc.expected}, got {got}",
            command=command,
            id=id,
        ) from None


def read_fields(
    cls: type, data: Mapping[str, Any], where: str, command: str | None, id: str | None
) -> dict[str, Any]:
    """The wire fields of `cls` read from a wire `data` object (absent optional ones left out,
    unknown ones ignored); raises `ProtocolError` (missing_field / bad_field) naming `where`."""
    kwargs: dict[str, Any] = {}
    for f in wire_fields(cls):
        if f.name not in data:
            if f.required:
                raise ProtocolError(
                    ErrorCode.MISSING_FIELD, f"{where}: missing field data.{f.name}", command=command, id=id
                )
            continue
        kwargs[f.name] = decode_field(f, data[f.name], command, id)
    return kwargs

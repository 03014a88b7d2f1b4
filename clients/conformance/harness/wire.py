"""Just enough protobuf to publish: the admin calls' messages encoded and decoded by hand.

The suite must not lean on any client under test, so it carries no generated code: the few
messages it sends (``PublishRequest``, ``PublishBatchRequest`` with a ``google.protobuf.Value``
payload, ``DisconnectRequest``) and receives (``PublishResponse``, ``PublishBatchResponse``,
``DisconnectResponse``) are written here from the contract
(``proto/durable_iterator/v1/durable_iterator.proto``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from typing import Union

#: A JSON value as ``json.loads`` gives it.
Json = Union[None, bool, int, float, str, Sequence["Json"], dict[str, "Json"]]

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, _LEN) + _varint(len(payload)) + payload


def encode_value(value: Json) -> bytes:
    """A ``google.protobuf.Value``."""
    if value is None:
        return _key(1, _VARINT) + _varint(0)  # null_value: NULL_VALUE
    if isinstance(value, bool):
        return _key(4, _VARINT) + _varint(int(value))
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("JSON numbers are finite")
        return _key(2, _FIXED64) + struct.pack("<d", number)
    if isinstance(value, str):
        return _len_field(3, value.encode())
    if isinstance(value, dict):
        # Struct { map<string, Value> fields = 1; }: each entry a message { key = 1; value = 2; }
        fields = b"".join(
            _len_field(1, _len_field(1, key.encode()) + _len_field(2, encode_value(item)))
            for key, item in value.items()
        )
        return _len_field(5, fields)
    # ListValue { repeated Value values = 1; }
    return _len_field(6, b"".join(_len_field(1, encode_value(item)) for item in value))


def encode_publish(channel: str, payload: Json) -> bytes:
    """A ``PublishRequest``: channel = 1, json = 2 (no filters: everyone)."""
    return _len_field(1, channel.encode()) + _len_field(2, encode_value(payload))


def encode_publish_batch(channel: str, payloads: Sequence[Json]) -> bytes:
    """A ``PublishBatchRequest``: events = 1 (repeated ``PublishRequest``)."""
    return b"".join(_len_field(1, encode_publish(channel, payload)) for payload in payloads)


def encode_disconnect(channel: str, session_id: str, revoke: bool) -> bytes:
    """A ``DisconnectRequest``: channel = 1, session_id = 2, revoke = 3."""
    return (
        _len_field(1, channel.encode())
        + _len_field(2, session_id.encode())
        + _key(3, _VARINT)
        + _varint(int(revoke))
    )


def _fields(message: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field, wire type, bytes or integer) of each field of a message."""
    at = 0

    def varint() -> int:
        nonlocal at
        shift = result = 0
        while True:
            byte = message[at]
            at += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while at < len(message):
        key = varint()
        field, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            yield field, wire_type, varint()
        elif wire_type == _LEN:
            length = varint()
            yield field, wire_type, message[at : at + length]
            at += length
        elif wire_type == _FIXED64:
            yield field, wire_type, message[at : at + 8]
            at += 8
        elif wire_type == _FIXED32:
            yield field, wire_type, message[at : at + 4]
            at += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")


def decode_strings(message: bytes, field: int) -> list[str]:
    """Every value of string field ``field`` (``PublishResponse.id`` = 1,
    ``PublishBatchResponse.ids`` = 1)."""
    return [
        value.decode()
        for number, wire_type, value in _fields(message)
        if number == field and wire_type == _LEN and isinstance(value, bytes)
    ]


def decode_bool(message: bytes, field: int) -> bool:
    """Bool field ``field`` (``DisconnectResponse.was_live`` = 1); absent is false."""
    return any(
        number == field and wire_type == _VARINT and value == 1
        for number, wire_type, value in _fields(message)
    )

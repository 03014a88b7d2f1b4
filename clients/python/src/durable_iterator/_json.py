"""Conversions between ``google.protobuf.Value`` (how JSON travels in the contract) and plain
Python JSON values (``None``, ``bool``, ``int``, ``float``, ``str``, ``list``, ``dict``).

The same mapping as the server's (``json.rs``): numbers travel as doubles; on the way back a
double that is a whole number within ±2**53 becomes an ``int``, so ids, counters and token
times stay whole numbers; NaN and infinities, which JSON cannot hold, become ``None``; object
keys come back sorted (protobuf maps carry no order)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Union

from google.protobuf import struct_pb2

__all__ = ["JsonValue", "from_proto", "to_proto"]

#: A plain JSON value.
JsonValue = Union[None, bool, int, float, str, list["JsonValue"], dict[str, "JsonValue"]]

_MAX_SAFE = 2.0**53

# Deeper than this is surely a cycle (protobuf's own parser stops at 100 levels).
_MAX_DEPTH = 100


class NotJson(TypeError):
    """A value that has no JSON form; the message says where (``$.a[2]``) and why."""


def to_proto(value: object) -> struct_pb2.Value:
    """A JSON value as ``google.protobuf.Value``. Tuples count as lists and any ``Mapping`` with
    string keys as an object; anything else that is not JSON raises :class:`NotJson`."""
    out = struct_pb2.Value()
    _fill(out, value, "$", 0)
    return out


def _fill(out: struct_pb2.Value, value: object, where: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise NotJson(f"{where}: nested deeper than {_MAX_DEPTH} levels (a cycle?)")
    # bool before int: True is an int to Python, a boolean to JSON.
    if value is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        try:
            out.number_value = float(value)
        except OverflowError:
            raise NotJson(f"{where}: {value} is beyond the range of a JSON number") from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise NotJson(f"{where}: {value} is not a JSON number")
        out.number_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, Mapping):
        fields = out.struct_value.fields
        if not value:
            out.struct_value.SetInParent()
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJson(f"{where}: object key {key!r} is not a string")
            _fill(fields[key], item, f"{where}.{key}", depth + 1)
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        values = out.list_value.values
        if not value:
            out.list_value.SetInParent()
        for index, item in enumerate(value):
            _fill(values.add(), item, f"{where}[{index}]", depth + 1)
    else:
        raise NotJson(f"{where}: a {type(value).__name__} is not a JSON value")


def from_proto(value: struct_pb2.Value | None) -> JsonValue:
    """``google.protobuf.Value`` as a plain JSON value (an unset value is ``None``)."""
    if value is None:
        return None
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "bool_value":
        return value.bool_value
    if kind == "number_value":
        return _number(value.number_value)
    if kind == "string_value":
        return value.string_value
    if kind == "list_value":
        return [from_proto(item) for item in value.list_value.values]
    fields = value.struct_value.fields
    return {key: from_proto(fields[key]) for key in sorted(fields)}


def _number(number: float) -> JsonValue:
    if not math.isfinite(number):
        return None
    if number.is_integer() and abs(number) <= _MAX_SAFE:
        return int(number)
    return number

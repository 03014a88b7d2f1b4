"""Typed method descriptors: a channel object's method declared once, with its path and its
input and output types, like the Rust ``contract::Method`` (mypy then checks every call).

    ECHO: Method[Echo, str] = Method(("routerClient", "echo"), Echo, str)
    text = await sub.call(ECHO, Echo(text="hi"))      # "Echo: hi"

On the wire inputs and outputs are JSON values. A dataclass input is sent as the object of its
fields; a dataclass output is built from the object received (unknown keys are an error).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._errors import DecodeError, EncodeError
from ._invoke import MethodPath, method_path
from ._json import JsonValue

__all__ = ["Method"]

I = TypeVar("I")
O = TypeVar("O")


class Method(Generic[I, O]):
    """A method at ``path`` taking ``input_type`` and answering ``output_type``.

    The types may be ``None`` (``type(None)``), ``bool``, ``int``, ``float``, ``str``, ``list``,
    ``dict``, ``object`` (any JSON, unchecked) or a dataclass whose fields are JSON values.
    For anything else pass ``encode``/``decode`` functions.
    """

    def __init__(
        self,
        path: MethodPath,
        input_type: type[I],
        output_type: type[O],
        *,
        encode: Callable[[I], JsonValue] | None = None,
        decode: Callable[[JsonValue], O] | None = None,
    ) -> None:
        self.path: tuple[str, ...] = method_path(path)
        self.input_type = input_type
        self.output_type = output_type
        self._encode = encode
        self._decode = decode

    @property
    def name(self) -> str:
        """The path joined with dots, e.g. ``routerClient.echo``."""
        return ".".join(self.path)

    def encode_input(self, value: I) -> JsonValue:
        """The input as the JSON value sent on the wire."""
        if self._encode is not None:
            return self._encode(value)
        if not _is_instance(value, self.input_type):
            raise EncodeError(
                self.name,
                f"expected {_type_name(self.input_type)}, got {type(value).__name__}",
            )
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            encoded: JsonValue = dataclasses.asdict(value)
            return encoded
        return typing.cast(JsonValue, value)

    def decode_output(self, value: JsonValue) -> O:
        """The output from the JSON value received; :class:`DecodeError` if it does not fit."""
        if self._decode is not None:
            try:
                return self._decode(value)
            except (TypeError, ValueError, KeyError) as error:
                raise DecodeError(self.name, str(error)) from None
        target: Any = self.output_type
        if dataclasses.is_dataclass(target) and isinstance(target, type):
            if not isinstance(value, dict):
                raise DecodeError(self.name, f"expected an object, got {_json_name(value)}")
            try:
                return typing.cast(O, target(**value))
            except TypeError as error:
                raise DecodeError(self.name, str(error)) from None
        if not _is_instance(value, self.output_type):
            raise DecodeError(
                self.name, f"expected {_type_name(self.output_type)}, got {_json_name(value)}"
            )
        return typing.cast(O, value)

    def __repr__(self) -> str:
        return (
            f"Method({self.name!r}, {_type_name(self.input_type)} -> "
            f"{_type_name(self.output_type)})"
        )


def _is_instance(value: object, expected: type[Any]) -> bool:
    if expected is object:
        return True
    if expected is type(None):
        return value is None
    # JSON has one number type: a whole-number float arrives as int, so int fits float; a
    # bool is not a number there.
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(kind: type[Any]) -> str:
    return "None" if kind is type(None) else kind.__name__


def _json_name(value: JsonValue) -> str:
    return "null" if value is None else type(value).__name__

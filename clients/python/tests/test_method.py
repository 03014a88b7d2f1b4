"""Typed method descriptors."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from durable_iterator import DecodeError, EncodeError, Method


@dataclass(frozen=True)
class Echo:
    text: str


@dataclass(frozen=True)
class Published:
    id: str


ECHO: Method[Echo, str] = Method(["routerClient", "echo"], Echo, str)
PUBLISH: Method[dict[str, object], Published] = Method("publish", dict, Published)
PING: Method[None, str] = Method("routerClient.ping", type(None), str)


def test_paths_and_names() -> None:
    assert ECHO.path == ("routerClient", "echo") and ECHO.name == "routerClient.echo"
    assert PING.path == ("routerClient", "ping")
    assert "routerClient.echo" in repr(ECHO)
    with pytest.raises(ValueError):
        Method("", str, str)
    with pytest.raises(ValueError):
        Method(["a", ""], str, str)


def test_dataclass_inputs_and_outputs() -> None:
    assert ECHO.encode_input(Echo(text="hi")) == {"text": "hi"}
    assert PUBLISH.decode_output({"id": "e-1"}) == Published(id="e-1")
    assert PING.encode_input(None) is None


def test_mismatches_are_typed_errors() -> None:
    with pytest.raises(EncodeError, match="routerClient.echo"):
        ECHO.encode_input("hi")  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="expected str, got int"):
        ECHO.decode_output(3)
    with pytest.raises(DecodeError):
        PUBLISH.decode_output({"id": "e-1", "extra": 1})
    with pytest.raises(DecodeError):
        PUBLISH.decode_output(["e-1"])


def test_numbers_as_json_has_them() -> None:
    floats: Method[None, float] = Method("m", type(None), float)
    ints: Method[None, int] = Method("m", type(None), int)
    assert floats.decode_output(2) == 2
    with pytest.raises(DecodeError):
        ints.decode_output(2.5)
    with pytest.raises(DecodeError):
        ints.decode_output(True)


def test_custom_codecs() -> None:
    upper: Method[str, str] = Method(
        "m", str, str, encode=lambda s: s.upper(), decode=lambda v: str(v).lower()
    )
    assert upper.encode_input("a") == "A" and upper.decode_output("B") == "b"
    strict: Method[None, int] = Method("m", type(None), int, decode=lambda v: int(str(v)))
    with pytest.raises(DecodeError):
        strict.decode_output("x")

"""JSON <-> google.protobuf.Value, as the server maps it."""

from __future__ import annotations

import math

import pytest
from google.protobuf import struct_pb2

from durable_iterator._json import JsonValue, NotJson, from_proto, to_proto


def test_round_trips_and_whole_numbers_stay_ints() -> None:
    value: JsonValue = {
        "a": [1, 2.5, -3, None, True, "s", [], {}],
        "b": {"c": 9_007_199_254_740_992, "d": 1e300},
        "é": "ü",
    }
    back = from_proto(to_proto(value))
    assert back == value
    assert isinstance(back, dict) and isinstance(back["b"], dict)
    assert type(back["b"]["c"]) is int
    assert from_proto(to_proto(3.0)) == 3 and type(from_proto(to_proto(3.0))) is int
    assert type(from_proto(to_proto(True))) is bool


def test_beyond_two_to_the_53_numbers_are_floats() -> None:
    big = from_proto(to_proto(2**53 + 2))
    assert type(big) is float
    assert type(from_proto(to_proto(-(2**53)))) is int


def test_keys_come_back_sorted_and_unset_is_null() -> None:
    back = from_proto(to_proto({"z": 1, "a": 2, "m": 3}))
    assert isinstance(back, dict) and list(back) == ["a", "m", "z"]
    assert from_proto(struct_pb2.Value()) is None
    assert from_proto(None) is None


def test_nan_and_infinities_read_as_null() -> None:
    for number in (math.nan, math.inf, -math.inf):
        value = struct_pb2.Value(number_value=number)
        assert from_proto(value) is None


@pytest.mark.parametrize(
    "value",
    [{1, 2}, {1: "x"}, math.nan, math.inf, b"bytes", object(), 10**400, {"a": [object()]}],
    ids=["set", "int key", "nan", "inf", "bytes", "object", "huge int", "nested"],
)
def test_what_is_not_json_is_refused(value: object) -> None:
    with pytest.raises(NotJson):
        to_proto(value)


def test_error_says_where() -> None:
    with pytest.raises(NotJson, match=r"\$\.a\[1\]"):
        to_proto({"a": [1, {2}]})


def test_tuples_are_lists() -> None:
    assert from_proto(to_proto(("a", 1))) == ["a", 1]

"""Tokens: byte-compatible with oRPC's (the vectors the server tests too)."""

from __future__ import annotations

import pytest

from durable_iterator import (
    ManualClock,
    SigningProvider,
    TokenClaims,
    refreshable_in_place,
    sign_token,
    unverified_claims,
)
from durable_iterator import FixedToken

VECTOR_FULL = (
    '{"chn":"some-room","tags":["tag1","tag2"],"att":{"userId":"user-123"},'
    '"rpc":["singleClient","routerClient"],"iat":1764000000,"exp":1764086400}'
    ".Ix1V4qm5c6clo80AHQLzdan8rDwa6WEirtl7jvF0vPQ"
)
VECTOR_LOBBY = (
    '{"chn":"lobby","iat":1764000000,"exp":1764000600}'
    ".jikHfH4J3KyQjzKow1J0F7M6loaxo-4U2yJ6yY8X408"
)


def test_orpc_vectors_read_and_sign_byte_identically() -> None:
    for vector in (VECTOR_FULL, VECTOR_LOBBY):
        claims = unverified_claims(vector)
        assert claims is not None
        assert sign_token("secret-key", claims) == vector
    claims = unverified_claims(VECTOR_FULL)
    assert claims == TokenClaims(
        chn="some-room",
        iat=1_764_000_000,
        exp=1_764_086_400,
        tags=("tag1", "tag2"),
        att={"userId": "user-123"},
        rpc=("singleClient", "routerClient"),
    )


def test_a_key_ring_signs_with_its_first_key() -> None:
    claims = unverified_claims(VECTOR_LOBBY)
    assert claims is not None
    assert sign_token("secret-key,old-key", claims) == VECTOR_LOBBY
    with pytest.raises(ValueError):
        sign_token(",x", claims)


def test_attachment_keys_keep_their_order_and_unicode_stays() -> None:
    claims = TokenClaims(chn="c", iat=10, exp=15, att={"z": 1, "a": {"y": 2, "b": "é"}})
    assert sign_token("k", claims).startswith('{"chn":"c","att":{"z":1,"a":{"y":2,"b":"é"}},"iat":10')


def test_splits_at_the_last_dot() -> None:
    claims = TokenClaims(chn="a.b.c", iat=0, exp=100, att="x.y")
    assert unverified_claims(sign_token("k", claims)) == claims


@pytest.mark.parametrize(
    "garbage",
    ["", "no-dot", "x.!!!", "{}.", "[].sig", '{"chn":1,"iat":0,"exp":9}.s', '{"iat":0,"exp":9}.s',
     '{"chn":"x"}.sig', '{"chn":"x","iat":-1,"exp":9}.s', '{"chn":"x","iat":0,"exp":1.5}.s',
     '{"chn":"x","iat":0,"exp":9,"tags":[1]}.s', '{"chn":"x","iat":true,"exp":9}.s'],
)
def test_tokens_of_the_wrong_shape_read_as_none(garbage: str) -> None:
    assert unverified_claims(garbage) is None


def test_refresh_in_place_needs_the_same_channel_and_tag_set() -> None:
    def sign(chn: str, tags: tuple[str, ...] | None, att: object = None) -> str:
        return sign_token("k", TokenClaims(chn=chn, iat=0, exp=10, tags=tags, att=att))  # type: ignore[arg-type]

    table = [
        (("c", ("a", "b")), ("c", ("b", "a", "a")), True),
        (("c", None), ("c", ()), True),
        (("c", ("a",)), ("c", ("a", "b")), False),
        (("c", ("a",)), ("d", ("a",)), False),
    ]
    for (c1, t1), (c2, t2), same in table:
        assert refreshable_in_place(sign(c1, t1), sign(c2, t2, att=1)) is same, (t1, t2)
    assert not refreshable_in_place("garbage", sign("c", ()))


def test_signing_provider_mints_at_the_clock() -> None:
    clock = ManualClock(10_000)
    provider = SigningProvider("k", "room", tags=["a", "b"], rpc=["publish"], ttl=60, clock=clock)
    first = provider()
    assert unverified_claims(first) == TokenClaims(
        chn="room", iat=10, exp=70, tags=("a", "b"), rpc=("publish",)
    )
    clock.advance(5_000)
    second = provider()
    assert first != second and refreshable_in_place(first, second)
    with pytest.raises(ValueError):
        SigningProvider("", "room")
    with pytest.raises(ValueError):
        SigningProvider("k", "room", ttl=0)
    assert "room" in repr(provider) and "k" not in repr(provider).replace("SigningProvider", "")


def test_fixed_token_hides_itself() -> None:
    fixed = FixedToken("secret.token")
    assert fixed() == "secret.token" and "secret" not in repr(fixed)

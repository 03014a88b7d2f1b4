"""Tokens and where a subscription gets them.

A token is byte-compatible with oRPC's durable iterator tokens::

    token = JSON(payload) + "." + base64url_nopad(HMAC-SHA256(key = signing key, msg = JSON(payload)))

with the payload's fields in the order ``chn, tags, att, rpc, iat, exp`` (absent ones omitted),
written compactly as ``JSON.stringify`` does. The client never needs the signing key: it reads
a token's claims without verifying them (:func:`unverified_claims`) to tell whether a new token
can replace the current one on the live stream. Minting (:func:`sign_token`,
:class:`SigningProvider`) is for trusted processes: the command line, tests, a backend
subscribing on its own behalf.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Union

from ._clock import Clock, SystemClock
from ._json import JsonValue

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "FixedToken",
    "SigningProvider",
    "TokenClaims",
    "TokenProvider",
    "refreshable_in_place",
    "sign_token",
    "unverified_claims",
]

#: Default lifetime of a token minted by the server (one day), as in oRPC.
DEFAULT_TTL_SECONDS = 86_400

#: Returns a fresh token each time it is called: at the first subscribe, before the current
#: token expires (with ``refresh_before_expiry``), and when a reconnect was refused as
#: unauthenticated. Sync or async; in a real application, a call to the app server that mints
#: tokens (it holds the signing key, the client never does). Whatever it raises counts as a
#: failure of the provider.
TokenProvider = Callable[[], Union[str, Awaitable[str]]]


@dataclass(frozen=True)
class TokenClaims:
    """The signed payload of a token. ``None`` fields are absent from the JSON."""

    #: The channel the token lets its holder subscribe to.
    chn: str
    #: Issued at, Unix seconds.
    iat: int
    #: Expires at, Unix seconds: the token is expired once ``now >= exp``.
    exp: int
    #: The session's tags: events published with tags reach it when the sets intersect.
    tags: tuple[str, ...] | None = None
    #: Attachment: any JSON, readable by the client. Never put secrets here.
    att: JsonValue = None
    #: Methods of the channel object the holder may call (``path[0]`` of an invoke).
    rpc: tuple[str, ...] | None = None

    def to_json(self) -> str:
        """The payload as signed: fields in wire order, compact, non-ASCII kept as is."""
        payload: dict[str, Any] = {"chn": self.chn}
        if self.tags is not None:
            payload["tags"] = list(self.tags)
        if self.att is not None:
            payload["att"] = self.att
        if self.rpc is not None:
            payload["rpc"] = list(self.rpc)
        payload["iat"] = self.iat
        payload["exp"] = self.exp
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def same_subscription(self, other: TokenClaims) -> bool:
        """Whether ``other`` names the same channel and the same set of tags (order and repeats
        aside): the condition for refreshing a live stream in place."""
        return self.chn == other.chn and set(self.tags or ()) == set(other.tags or ())


def _first_key(signing_key: str) -> bytes:
    # A comma list is a key ring (as the server takes it): the first key signs.
    key = signing_key.split(",")[0]
    if not key:
        raise ValueError("the signing key is empty")
    return key.encode("utf-8")


def sign_token(signing_key: str, claims: TokenClaims) -> str:
    """Signs ``claims`` with ``signing_key`` (its first key, if it is a comma-separated list),
    as the server and oRPC do."""
    payload = claims.to_json()
    digest = hmac.new(_first_key(signing_key), payload.encode("utf-8"), hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return f"{payload}.{signature}"


def _strings(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("not a list of strings")
    return tuple(value)


def _whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("not a whole number of seconds")
    return value


def unverified_claims(token: str) -> TokenClaims | None:
    """The claims of ``token``, read without verifying its signature (the client has no key);
    ``None`` if it is not a token of the expected shape."""
    payload, dot, _signature = token.rpartition(".")
    if not dot:
        return None
    try:
        raw = json.loads(payload)
        if not isinstance(raw, dict) or not isinstance(raw.get("chn"), str):
            return None
        tags = raw.get("tags")
        rpc = raw.get("rpc")
        return TokenClaims(
            chn=raw["chn"],
            iat=_whole(raw.get("iat")),
            exp=_whole(raw.get("exp")),
            tags=None if tags is None else _strings(tags),
            att=raw.get("att"),
            rpc=None if rpc is None else _strings(rpc),
        )
    except ValueError:  # json.JSONDecodeError is one
        return None


def refreshable_in_place(current: str, new: str) -> bool:
    """Whether ``new`` can replace ``current`` on the live stream (``RefreshToken``) rather than
    needing a reconnect: the same channel and tag set, as the server judges it. A token the
    client cannot read reconnects, the safe choice."""
    old_claims, new_claims = unverified_claims(current), unverified_claims(new)
    if old_claims is None or new_claims is None:
        return False
    return old_claims.same_subscription(new_claims)


class FixedToken:
    """Always the same token: for scripts and tokens that outlive the subscription. Once it has
    expired, a reconnect refused as unauthenticated ends the subscription with that error."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self) -> str:
        return self.token

    def __repr__(self) -> str:
        return "FixedToken(<token>)"


class SigningProvider:
    """Mints tokens itself with the signing key, each issued at the clock's now and living
    ``ttl`` seconds: for trusted processes (the command line, tests, a backend subscribing on
    its own behalf). A browser or app never holds the signing key: use a provider that asks
    your app server instead.
    """

    def __init__(
        self,
        signing_key: str,
        channel: str,
        *,
        tags: Sequence[str] | None = None,
        att: JsonValue = None,
        rpc: Sequence[str] | None = None,
        ttl: int = 3_600,
        clock: Clock | None = None,
    ) -> None:
        _first_key(signing_key)  # fail now, not at the first mint
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, not {ttl}")
        self._signing_key = signing_key
        self._template = TokenClaims(
            chn=channel,
            iat=0,
            exp=0,
            tags=None if tags is None else tuple(tags),
            att=att,
            rpc=None if rpc is None else tuple(rpc),
        )
        self.ttl = ttl
        self._clock: Clock = clock or SystemClock()

    def mint(self) -> str:
        """A token minted now."""
        now = self._clock.now_ms() // 1000
        claims = replace(self._template, iat=now, exp=now + self.ttl)
        return sign_token(self._signing_key, claims)

    def __call__(self) -> str:
        return self.mint()

    def __repr__(self) -> str:
        return f"SigningProvider(channel={self._template.chn!r}, ttl={self.ttl})"

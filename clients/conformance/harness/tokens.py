"""Tokens in oRPC's format, and a small HTTP token server (what an app server offers its
clients), whose answers the test changes on the fly and whose requests it counts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def sign_token(
    key: str,
    channel: str,
    *,
    tags: Sequence[str] | None = None,
    ttl: int,
    now: float | None = None,
) -> str:
    """``JSON(payload) + "." + base64url_nopad(HMAC-SHA256(key, JSON(payload)))``, the payload's
    keys in the order chn, tags, att, rpc, iat, exp (absent ones omitted), compact JSON."""
    iat = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"chn": channel}
    if tags is not None:
        payload["tags"] = list(tags)
    payload["iat"] = iat
    payload["exp"] = iat + ttl
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    mac = hmac.new(key.encode(), text.encode(), hashlib.sha256).digest()
    return text + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a token (not verified)."""
    claims: dict[str, Any] = json.loads(token.rsplit(".", 1)[0])
    return claims


@dataclass
class Minted:
    """One answer of the token server."""

    at: float
    token: str

    @property
    def exp(self) -> int:
        return int(token_claims(self.token)["exp"])


@dataclass
class Policy:
    """What the next tokens look like: ``ttls`` is consumed one per request (the last one
    stays), so a test can hand out a short-lived first token and long-lived ones after."""

    channel: str
    tags: tuple[str, ...] | None
    ttls: list[int]


class TokenServer:
    """``GET /token`` answers a fresh token (200, text/plain). Runs in a thread on 127.0.0.1."""

    def __init__(
        self, key: str, channel: str, *, tags: Sequence[str] | None = None, ttls: Sequence[int]
    ) -> None:
        self._key = key
        self._lock = threading.Lock()
        self._policy = Policy(channel, None if tags is None else tuple(tags), list(ttls))
        self._minted: list[Minted] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                token = owner._mint()
                body = token.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # quiet

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="token-server", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}/token"

    def _mint(self) -> str:
        with self._lock:
            policy = self._policy
            ttl = policy.ttls[0]
            if len(policy.ttls) > 1:
                policy.ttls.pop(0)
            token = sign_token(self._key, policy.channel, tags=policy.tags, ttl=ttl)
            self._minted.append(Minted(time.time(), token))
            return token

    def set_tags(self, tags: Sequence[str] | None) -> None:
        with self._lock:
            self._policy.tags = None if tags is None else tuple(tags)

    def set_ttls(self, ttls: Sequence[int]) -> None:
        with self._lock:
            self._policy.ttls = list(ttls)

    @property
    def minted(self) -> list[Minted]:
        with self._lock:
            return list(self._minted)

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self._minted)

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

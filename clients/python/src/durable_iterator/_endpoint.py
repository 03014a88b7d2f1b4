"""Server addresses and the gRPC channel to them."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Union
from urllib.parse import urlsplit

import grpc
import grpc.aio

from ._errors import InvalidEndpointError

__all__ = ["CaCert", "Endpoint", "open_channel", "parse_endpoint"]

#: A CA certificate to trust: the path of a PEM file, or the PEM bytes themselves.
CaCert = Union[str, Path, bytes]

#: Channel arguments of every connection.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    # gRPC's own reconnect backoff grows to 120 s; while it waits, every call fails at once
    # with UNAVAILABLE, so a server back after a restart would be reached only that late
    # whatever the subscription's own schedule says. Kept short: the subscription's backoff
    # (1 s .. 10 s with jitter) is the one that spaces attempts out.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # Events are at most 64 KiB by default but a server may allow more: no client-side cap.
    ("grpc.max_receive_message_length", -1),
)


@dataclass(frozen=True)
class Endpoint:
    """Where the server is: ``host:port`` and whether to speak TLS."""

    host: str
    port: int
    tls: bool

    @property
    def target(self) -> str:
        """The address as gRPC takes it (``host:port``, IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_endpoint(server: str) -> Endpoint:
    """``host:port`` (plaintext), ``http://host[:port]`` or ``https://host[:port]`` (TLS).
    Raises :class:`InvalidEndpointError` for anything else."""
    text = server.strip()
    if not text:
        raise InvalidEndpointError(server, "it is empty")
    url = text if "://" in text else f"http://{text}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidEndpointError(server, str(error)) from None
    if parts.scheme not in ("http", "https"):
        raise InvalidEndpointError(server, f"the scheme must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise InvalidEndpointError(server, "no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidEndpointError(server, "a gRPC server address has no path or query")
    if parts.username is not None or parts.password is not None:
        raise InvalidEndpointError(server, "credentials do not go in the address")
    tls = parts.scheme == "https"
    if port is None:
        port = 443 if tls else 80
    if port == 0:
        raise InvalidEndpointError(server, "port 0")
    return Endpoint(host=parts.hostname, port=port, tls=tls)


def _system_roots() -> bytes:
    """The trusted roots gRPC would use by default: the system's bundle, else gRPC's own."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_bytes()
    bundled = Path(grpc.__file__).parent / "_cython" / "_credentials" / "roots.pem"
    return bundled.read_bytes() if bundled.is_file() else b""


def _read_ca(server: str, ca_cert: CaCert) -> bytes:
    if isinstance(ca_cert, bytes):
        return ca_cert
    try:
        return Path(ca_cert).read_bytes()
    except OSError as error:
        raise InvalidEndpointError(server, f"cannot read the CA certificate: {error}") from None


def open_channel(
    server: str,
    *,
    ca_cert: CaCert | None = None,
    options: tuple[tuple[str, int | str], ...] = (),
) -> grpc.aio.Channel:
    """A channel to ``server`` (see :func:`parse_endpoint`). With ``https://``, the server's
    certificate is checked against the system roots and ``ca_cert`` if given. gRPC connects on
    first use and reconnects by itself, so a server that is down now is no error here."""
    endpoint = parse_endpoint(server)
    channel_options = [*CHANNEL_OPTIONS, *options]
    if not endpoint.tls:
        if ca_cert is not None:
            raise InvalidEndpointError(server, "a CA certificate needs an https:// address")
        return grpc.aio.insecure_channel(endpoint.target, options=channel_options)
    roots: bytes | None = None
    if ca_cert is not None:
        # gRPC trusts only the roots it is given: keep the system's next to the extra CA.
        roots = _system_roots() + b"\n" + _read_ca(server, ca_cert)
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.aio.secure_channel(endpoint.target, credentials, options=channel_options)

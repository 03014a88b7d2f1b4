"""Server addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from durable_iterator import Client, Endpoint, InvalidEndpointError, parse_endpoint


@pytest.mark.parametrize(
    ("server", "endpoint"),
    [
        ("127.0.0.1:50051", Endpoint("127.0.0.1", 50051, tls=False)),
        ("localhost:8080", Endpoint("localhost", 8080, tls=False)),
        ("http://127.0.0.1:50051", Endpoint("127.0.0.1", 50051, tls=False)),
        ("http://127.0.0.1:50051/", Endpoint("127.0.0.1", 50051, tls=False)),
        ("https://example.test", Endpoint("example.test", 443, tls=True)),
        ("http://example.test", Endpoint("example.test", 80, tls=False)),
        ("https://[::1]:9443", Endpoint("::1", 9443, tls=True)),
    ],
)
def test_addresses(server: str, endpoint: Endpoint) -> None:
    assert parse_endpoint(server) == endpoint


def test_ipv6_target_is_bracketed() -> None:
    assert parse_endpoint("http://[::1]:1").target == "[::1]:1"


@pytest.mark.parametrize(
    "server",
    ["", "ftp://host:1", "http://", "http://host:99999", "http://host:port", "http://h:1/path",
     "http://user:pw@h:1", "http://h:0"],
)
def test_bad_addresses_are_refused_at_once(server: str) -> None:
    with pytest.raises(InvalidEndpointError):
        parse_endpoint(server)
    with pytest.raises(InvalidEndpointError):
        Client(server)


def test_a_ca_needs_tls() -> None:
    from durable_iterator._endpoint import open_channel

    with pytest.raises(InvalidEndpointError, match="https"):
        open_channel("http://127.0.0.1:1", ca_cert=b"pem")


async def test_an_unreadable_ca_is_an_endpoint_error() -> None:
    from durable_iterator._endpoint import open_channel

    with pytest.raises(InvalidEndpointError, match="CA"):
        open_channel("https://127.0.0.1:1", ca_cert="/nonexistent/ca.pem")


async def test_tls_channels_take_a_ca_beside_the_system_roots(tmp_path: Path) -> None:
    from durable_iterator._endpoint import open_channel

    pem = b"-----BEGIN CERTIFICATE-----\nnot checked until a handshake\n-----END CERTIFICATE-----\n"
    (tmp_path / "ca.pem").write_bytes(pem)
    for ca in (pem, tmp_path / "ca.pem", str(tmp_path / "ca.pem"), None):
        channel = open_channel("https://127.0.0.1:1", ca_cert=ca)
        await channel.close()

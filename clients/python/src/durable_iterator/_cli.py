"""``python -m durable_iterator``: the ``subscribe`` command of the shared client design (what
the conformance suite drives) and ``publish``.

``subscribe`` prints one compact JSON object per line: each event on stdout (flushed per line);
connections, resume reports, refreshes and the error that ended the subscription on stderr.
Log lines on stderr never start with ``{``. Exit status: 0 after SIGINT or SIGTERM (the stream
is closed first), 1 after a failure, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ._admin import Admin
from ._client import DEFAULT_SERVER, Client
from ._errors import ClientError, InvalidEndpointError, StatusError
from ._items import Event, Resumed
from ._json import JsonValue
from ._subscription import Progress, Subscription
from ._token import FixedToken, SigningProvider, TokenProvider

__all__ = ["main"]

_log = logging.getLogger("durable_iterator")

#: How long one ``--token-url`` request may take.
TOKEN_URL_TIMEOUT_SECONDS = 10.0


class _BadArguments(Exception):
    """Arguments that parse but do not make sense together: exit status 2."""


def _line(value: JsonValue) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _names(text: str | None) -> list[str] | None:
    """A comma-separated list; ``''`` is the empty list (not a list of one empty name)."""
    if text is None:
        return None
    return [name for name in text.split(",") if name]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m durable_iterator",
        description="The durable-iterator Python client's command line.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    env = os.environ.get

    sub = commands.add_parser(
        "subscribe",
        help="print a channel's events as JSON lines, reconnecting and resuming",
        description="Subscribes and prints each event as one JSON line on stdout; connections, "
        "resume reports, refreshes and errors go to stderr as JSON lines.",
    )
    sub.add_argument(
        "--server",
        default=env("DURABLE_ITERATOR_SERVER", DEFAULT_SERVER),
        help="http://host:port or https://host:port (env DURABLE_ITERATOR_SERVER, default "
        f"{DEFAULT_SERVER})",
    )
    sub.add_argument("--token", help="a fixed token (env DURABLE_ITERATOR_TOKEN)")
    sub.add_argument(
        "--token-url",
        metavar="URL",
        help="the token provider: each call is an HTTP GET of URL, whose body (trimmed) is the token",
    )
    sub.add_argument("--channel", help="mint tokens for this channel with the signing key")
    sub.add_argument("--tags", metavar="A,B", help="tags of the minted tokens (with --channel)")
    sub.add_argument(
        "--ttl", type=int, metavar="SECONDS", help="lifetime of the minted tokens (default 3600)"
    )
    sub.add_argument(
        "--signing-key",
        default=env("DURABLE_ITERATOR_SIGNING_KEY"),
        help="the key --channel signs with (env DURABLE_ITERATOR_SIGNING_KEY; the first key of "
        "a comma list)",
    )
    sub.add_argument(
        "--refresh-before-expiry",
        type=float,
        metavar="SECONDS",
        help="refresh the token this long before it expires (with --channel: ttl/4 clamped to "
        "1..300 by default; otherwise off)",
    )
    sub.add_argument("--from", dest="from_id", metavar="ID", help="resume after this event id")
    sub.add_argument("--session-ticket", metavar="TICKET", help="keep this session")
    sub.add_argument(
        "--ca-cert",
        type=Path,
        metavar="FILE",
        help="trust this CA for https:// (besides the system roots)",
    )

    pub = commands.add_parser(
        "publish",
        help="publish one event through the admin API and print its id",
        description="Publishes one event through the admin API and prints its id.",
    )
    pub.add_argument(
        "--server",
        default=env("DURABLE_ITERATOR_SERVER", DEFAULT_SERVER),
        help=f"the server (env DURABLE_ITERATOR_SERVER, default {DEFAULT_SERVER})",
    )
    pub.add_argument(
        "--api-key",
        default=env("DURABLE_ITERATOR_API_KEY"),
        help="the admin API key (env DURABLE_ITERATOR_API_KEY)",
    )
    pub.add_argument("--channel", required=True, help="the channel to publish to")
    pub.add_argument("--json", required=True, dest="payload", help="the payload, as JSON")
    pub.add_argument(
        "--tags",
        metavar="A,B",
        help="deliver only to sessions with one of these tags ('' : nobody)",
    )
    pub.add_argument(
        "--targets", metavar="ID,ID", help="deliver only to these session ids ('' : nobody)"
    )
    pub.add_argument("--exclude", metavar="ID,ID", help="never deliver to these session ids")
    pub.add_argument("--ca-cert", type=Path, metavar="FILE", help="trust this CA for https://")
    return parser


# ---- subscribe ------------------------------------------------------------------------------


def _token_url_provider(url: str, ca_cert: Path | None) -> TokenProvider:
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context()
        if ca_cert is not None:
            context.load_verify_locations(cafile=str(ca_cert))

    def fetch() -> str:
        request = urllib.request.Request(url, method="GET")
        with urllib.request.urlopen(
            request, timeout=TOKEN_URL_TIMEOUT_SECONDS, context=context
        ) as response:
            body: bytes = response.read()
        token = body.decode("utf-8").strip()
        if not token:
            raise ValueError(f"GET {url} answered an empty body")
        return token

    async def get_token() -> str:
        # urllib blocks: run it beside the event loop. HTTP errors (4xx, 5xx) raise, and count
        # as failures of the provider.
        return await asyncio.to_thread(fetch)

    return get_token


def _provider(args: argparse.Namespace) -> tuple[TokenProvider, float | None]:
    """The token provider the arguments ask for, and the refresh lead time."""
    sources = [name for name in ("token", "token_url", "channel") if getattr(args, name)]
    if len(sources) > 1:
        flags = ", ".join("--" + name.replace("_", "-") for name in sources)
        raise _BadArguments(f"give one of --token, --token-url, --channel (got {flags})")
    if args.channel is None and (args.tags is not None or args.ttl is not None):
        raise _BadArguments("--tags and --ttl go with --channel")
    refresh = args.refresh_before_expiry
    if refresh is not None and refresh < 0:
        raise _BadArguments("--refresh-before-expiry must not be negative")
    if args.channel:
        if not args.signing_key:
            raise _BadArguments(
                "--channel mints tokens: pass --signing-key or set DURABLE_ITERATOR_SIGNING_KEY "
                "(or give --token or --token-url)"
            )
        ttl = 3_600 if args.ttl is None else args.ttl
        if ttl <= 0:
            raise _BadArguments("--ttl must be positive")
        # A token must live long enough to be refreshed before it expires (as the Rust client).
        ttl = max(ttl, 2)
        if refresh is None:
            # Refreshed a quarter of its life (at most five minutes) before it expires.
            refresh = float(min(max(ttl // 4, 1), 300))
        tags = _names(args.tags)
        try:
            minter = SigningProvider(args.signing_key, args.channel, tags=tags or None, ttl=ttl)
        except ValueError as error:
            raise _BadArguments(str(error)) from None
        return minter, refresh
    if args.token_url:
        return _token_url_provider(args.token_url, args.ca_cert), refresh
    token = args.token or os.environ.get("DURABLE_ITERATOR_TOKEN")
    if not token:
        raise _BadArguments("give --token (or DURABLE_ITERATOR_TOKEN), --token-url or --channel")
    return FixedToken(token), refresh


class _Printer:
    """Writes the command's JSON lines."""

    def __init__(self, events: TextIO, notices: TextIO) -> None:
        self.events = events
        self.notices = notices
        self.subscription: Subscription | None = None
        self._connections = 0
        self._refreshes = 0

    def notice(self, value: JsonValue) -> None:
        try:
            self.notices.write(_line(value) + "\n")
            self.notices.flush()
        except (BrokenPipeError, ValueError):
            pass  # nobody reads stderr any more: the events still go on

    def event(self, event: Event) -> None:
        self.events.write(_line(event.to_json()) + "\n")
        self.events.flush()

    def on_progress(self, progress: Progress) -> None:
        if progress.connections > self._connections:
            self._connections = progress.connections
            ticket = self.subscription.credentials.session_ticket if self.subscription else None
            self.notice(
                {
                    "connected": {
                        "session_id": progress.session_id,
                        "session_ticket": ticket,
                        "connections": progress.connections,
                    }
                }
            )
        if progress.refreshes > self._refreshes:
            self._refreshes = progress.refreshes
            self.notice({"refreshed": {"refreshes": progress.refreshes}})

    def error(self, error: BaseException) -> None:
        code = error.code if isinstance(error, ClientError) else None
        message = error.message if isinstance(error, StatusError) else str(error)
        self.notice({"error": {"code": code.name if code is not None else None, "message": message}})


async def _subscribe(args: argparse.Namespace, printer: _Printer) -> int:
    get_token, refresh = _provider(args)
    try:
        client = Client(args.server, ca_cert=args.ca_cert)
    except InvalidEndpointError as error:
        raise _BadArguments(str(error)) from None
    loop = asyncio.get_running_loop()
    async with client:
        subscription = client.subscribe(
            get_token,
            last_event_id=args.from_id,
            session_ticket=args.session_ticket,
            refresh_before_expiry=refresh,
            on_progress=printer.on_progress,
        )
        printer.subscription = subscription
        closing: list[asyncio.Task[None]] = []

        def stop() -> None:
            if not closing:
                closing.append(loop.create_task(subscription.aclose()))

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop)
        try:
            async for item in subscription:
                if isinstance(item, Event):
                    printer.event(item)
                elif isinstance(item, Resumed):
                    printer.notice(item.report.to_json())
        except ClientError as error:
            printer.error(error)
            return 1
        except BrokenPipeError:
            # Whoever read the events has gone: nothing more to do. (Point stdout at /dev/null,
            # or the interpreter's last flush at exit would complain once more.)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            await subscription.aclose()
            return 1
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            if closing:
                await closing[0]
    # The subscription only ends without an error when it was closed: by a signal.
    return 0


# ---- publish --------------------------------------------------------------------------------


async def _publish(args: argparse.Namespace, printer: _Printer) -> int:
    if not args.api_key:
        raise _BadArguments("pass --api-key or set DURABLE_ITERATOR_API_KEY")
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as error:
        raise _BadArguments(f"--json is not JSON: {error}") from None
    try:
        admin = Admin(args.server, api_key=args.api_key, ca_cert=args.ca_cert)
    except (InvalidEndpointError, ValueError) as error:
        raise _BadArguments(str(error)) from None
    async with admin:
        try:
            event_id = await admin.publish(
                args.channel,
                payload,
                tags=_names(args.tags),
                targets=_names(args.targets),
                exclude=_names(args.exclude) or (),
            )
        except ClientError as error:
            printer.error(error)
            return 1
    printer.events.write(event_id + "\n")
    printer.events.flush()
    return 0


# ---- entry ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)  # exits with status 2 on bad arguments
    level = os.environ.get("DURABLE_ITERATOR_LOG", "warning").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING),
        format="durable-iterator: %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(encoding="utf-8")
    printer = _Printer(sys.stdout, sys.stderr)
    command = _subscribe if args.command == "subscribe" else _publish
    try:
        return asyncio.run(command(args, printer))
    except _BadArguments as error:
        parser.error(str(error))  # prints usage, exits with status 2
    except KeyboardInterrupt:
        # A second Ctrl-C while closing.
        return 130


def run() -> None:
    """Console entry: exits with :func:`main`'s status."""
    sys.exit(main())

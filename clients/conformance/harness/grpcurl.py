"""A stand-in for grpcurl, for the commands README.md shows (grpcurl itself cannot be installed
on the machines this suite runs on):

    python -m harness.grpcurl [flags] address [list|describe] [symbol]

What it does as grpcurl does:
- the command line: Go's flag syntax (``-flag``, ``--flag``, ``-flag=value``, ``-flag value``;
  flags stop at the first argument that is not one), then ``address``, then ``list`` or a
  ``service/method`` (or ``service.method``);
- the connection: TLS unless ``-plaintext``, with ``-cacert``, ``-cert``/``-key``,
  ``-servername``, ``-authority``; ``-connect-timeout`` (10 s by default) and ``-max-time``;
- headers: ``-H 'name: value'`` on every call, ``-rpc-header`` on the method's only,
  ``-reflect-header`` on reflection's only (names lowercased, values trimmed, ``-bin`` values
  base64-decoded);
- the schema from server reflection (``harness.reflection``: v1, then v1alpha);
- the request from ``-d '<json>'``, or from standard input with ``-d @``, in the protobuf JSON
  mapping (camelCase or proto names, int64 as strings or numbers, ``-allow-unknown-fields``); no
  data sends an empty request; more than one message for a unary or server-streaming method is
  an error;
- the answer in the same mapping (``google.protobuf.json_format``): camelCase names, 64-bit
  integers as strings, enums by name, whole floating-point numbers without ``.0``, unset
  fields omitted (``-emit-defaults`` prints them), indented by two spaces, each message as it
  arrives, then a newline (one difference: map entries come in protobuf's order, where
  grpcurl sorts them by key);
- an error status as ``ERROR:``, ``  Code: <Go's name>``, ``  Message: <message>`` on stderr,
  exit status 64 + the code; a bad command line exits 2, any other failure 1; Ctrl-C ends it
  at once, as it ends a Go program.

What it does not do refuses the command, naming what, with exit status 2 (so a README
command that needs more fails its test instead of passing untried): ``describe``, client- and
bidirectional-streaming methods, ``-format text``, ``-insecure``, ``-proto``/``-protoset``,
``-v`` and every flag not listed above."""

from __future__ import annotations

import base64
import binascii
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from harness.reflection import Metadata, Reflection, ReflectionError

#: grpcurl's exit status for a bad command line, for any other failure, and the offset it adds
#: to a gRPC status code.
USAGE_STATUS = 2
FAILURE_STATUS = 1
STATUS_OFFSET = 64

#: How long grpcurl waits for the connection without -connect-timeout.
DEFAULT_CONNECT_TIMEOUT = 10.0


class UsageError(Exception):
    """The command line is not one grpcurl (or this stand-in) takes: exit status 2."""


class Failure(Exception):
    """grpcurl's ``fail(err, ...)``: a message on stderr, exit status 1."""


@dataclass
class Options:
    """grpcurl's flags that the stand-in implements, and the arguments after them."""

    plaintext: bool = False
    cacert: str = ""
    cert: str = ""
    key: str = ""
    servername: str = ""
    authority: str = ""
    headers: list[str] = field(default_factory=list)
    rpc_headers: list[str] = field(default_factory=list)
    reflect_headers: list[str] = field(default_factory=list)
    data: str = ""
    format: str = "json"
    emit_defaults: bool = False
    allow_unknown_fields: bool = False
    max_time: float = 0.0
    connect_timeout: float = 0.0
    args: list[str] = field(default_factory=list)


_BOOL_FLAGS = {
    "plaintext": "plaintext",
    "emit-defaults": "emit_defaults",
    "allow-unknown-fields": "allow_unknown_fields",
}
_STRING_FLAGS = {
    "d": "data",
    "cacert": "cacert",
    "cert": "cert",
    "key": "key",
    "servername": "servername",
    "authority": "authority",
    "format": "format",
}
_FLOAT_FLAGS = {"max-time": "max_time", "connect-timeout": "connect_timeout"}
_LIST_FLAGS = {"H": "headers", "rpc-header": "rpc_headers", "reflect-header": "reflect_headers"}

#: Go's strconv.ParseBool.
_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def parse_args(argv: Sequence[str]) -> Options:
    """grpcurl's flags, parsed as Go's flag package does; the rest in ``args``."""
    options = Options()
    rest = list(argv)
    while rest:
        arg = rest[0]
        if len(arg) < 2 or not arg.startswith("-"):
            break
        rest.pop(0)
        if arg == "--":
            break
        name = arg[2:] if arg.startswith("--") else arg[1:]
        if not name or name.startswith(("-", "=")):
            raise UsageError(f"bad flag syntax: {arg}")
        name, has_value, value = name.partition("=")
        if name in _BOOL_FLAGS:
            if has_value and value not in _BOOLS:
                raise UsageError(f'invalid boolean value "{value}" for -{name}')
            setattr(options, _BOOL_FLAGS[name], _BOOLS[value] if has_value else True)
            continue
        if name not in _STRING_FLAGS and name not in _FLOAT_FLAGS and name not in _LIST_FLAGS:
            raise UsageError(f"flag provided but not defined (by the grpcurl stand-in): -{name}")
        if not has_value:
            if not rest:
                raise UsageError(f"flag needs an argument: -{name}")
            value = rest.pop(0)
        if name in _STRING_FLAGS:
            setattr(options, _STRING_FLAGS[name], value)
        elif name in _FLOAT_FLAGS:
            try:
                setattr(options, _FLOAT_FLAGS[name], float(value))
            except ValueError:
                raise UsageError(f'invalid value "{value}" for flag -{name}') from None
        else:
            getattr(options, _LIST_FLAGS[name]).append(value)
    options.args = rest
    return options


@dataclass(frozen=True)
class Target:
    """What the arguments after the flags ask: ``verb`` is ``list``, ``describe`` or
    ``invoke``; ``symbol`` a service (list), or a method (invoke)."""

    address: str
    verb: str
    symbol: str


def target_of(options: Options) -> Target:
    """grpcurl's reading of its positional arguments, and its checks of the flags."""
    usetls = not options.plaintext
    if not usetls and (options.cacert or options.cert or options.key):
        which = "-cacert" if options.cacert else "-cert" if options.cert else "-key"
        raise UsageError(f"The {which} argument can only be used with TLS.")
    if bool(options.cert) != bool(options.key):
        raise UsageError("The -cert and -key arguments must be used together and both be present.")
    if options.format != "json":
        raise UsageError(f"-format {options.format}: the grpcurl stand-in speaks JSON only")
    for seconds, name in (
        (options.max_time, "max-time"),
        (options.connect_timeout, "connect-timeout"),
    ):
        if seconds < 0:
            raise UsageError(f"The -{name} argument must not be negative.")
    args = list(options.args)
    if not args:
        raise UsageError("Too few arguments.")
    address = ""
    if args[0] not in ("list", "describe"):
        address = args.pop(0)
    if not args:
        raise UsageError("Too few arguments.")
    verb = args[0] if args[0] in ("list", "describe") else "invoke"
    if verb != "invoke":
        args.pop(0)
    if verb == "describe":
        raise UsageError("describe: the grpcurl stand-in lists services and calls methods only")
    if verb == "invoke" and not args:
        raise UsageError("Too few arguments.")
    symbol = args.pop(0) if args else ""
    if args:
        raise UsageError("Too many arguments.")
    if not address:
        raise UsageError(
            "No host:port specified (the grpcurl stand-in knows no -proto or -protoset)."
        )
    return Target(address, verb, symbol)


def metadata_of(headers: Sequence[str]) -> list[tuple[str, str | bytes]]:
    """grpcurl's ``name: value`` headers as gRPC metadata."""
    metadata: list[tuple[str, str | bytes]] = []
    for header in headers:
        if not header:
            continue
        name, _, value = header.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name.endswith("-bin"):
            try:
                metadata.append((name, base64.b64decode(value + "=" * (-len(value) % 4))))
                continue
            except binascii.Error:
                pass  # grpcurl sends an undecodable value as it is
        metadata.append((name, value))
    return metadata


def go_code_name(code: grpc.StatusCode) -> str:
    """The name Go's codes.Code.String() gives a status code (what grpcurl prints)."""
    if code == grpc.StatusCode.CANCELLED:
        return "Canceled"
    if code == grpc.StatusCode.OK:
        return "OK"
    return "".join(word.capitalize() for word in code.name.split("_"))


def json_messages(text: str) -> list[Any]:
    """The JSON values of ``text``, one after another (grpcurl reads requests as a stream)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return values
        value, at = decoder.raw_decode(text, at)
        values.append(value)


def _go_numbers(value: Any) -> Any:
    """Whole floating-point numbers as Go writes them (``1``, where Python writes ``1.0``):
    protobuf's ``double``, and every number of a ``google.protobuf.Value``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _go_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_go_numbers(item) for item in value]
    return value


def _channel(options: Options, target: Target) -> grpc.Channel:
    channel_options: list[tuple[str, str]] = []
    if options.authority:
        channel_options.append(("grpc.default_authority", options.authority))
    if options.plaintext:
        return grpc.insecure_channel(target.address, options=channel_options)
    if options.servername:
        channel_options.append(("grpc.ssl_target_name_override", options.servername))
    try:
        root = Path(options.cacert).read_bytes() if options.cacert else None
        key = Path(options.key).read_bytes() if options.key else None
        chain = Path(options.cert).read_bytes() if options.cert else None
    except OSError as error:
        raise Failure(f"Failed to configure transport credentials: {error}") from None
    credentials = grpc.ssl_channel_credentials(root, key, chain)
    return grpc.secure_channel(target.address, credentials, options=channel_options)


def _dial(options: Options, target: Target) -> grpc.Channel:
    """The channel, once connected (grpcurl dials before anything else, and gives up at the
    first failure to connect, a refused connection or a failed TLS handshake)."""
    channel = _channel(options, target)
    timeout = options.connect_timeout or DEFAULT_CONNECT_TIMEOUT
    if options.max_time:
        timeout = min(timeout, options.max_time)
    settled = threading.Event()
    states: list[grpc.ChannelConnectivity] = []
    final = (
        grpc.ChannelConnectivity.READY,
        grpc.ChannelConnectivity.TRANSIENT_FAILURE,
        grpc.ChannelConnectivity.SHUTDOWN,
    )

    def watch(state: grpc.ChannelConnectivity) -> None:
        if state in final and not settled.is_set():
            states.append(state)
            settled.set()

    channel.subscribe(watch, try_to_connect=True)
    try:
        settled.wait(timeout)
    finally:
        channel.unsubscribe(watch)
    if states[:1] == [grpc.ChannelConnectivity.READY]:
        return channel
    channel.close()
    why = "context deadline exceeded" if not states else "the connection failed"
    raise Failure(f'Failed to dial target host "{target.address}": {why}')


def _method(reflection: Reflection, symbol: str) -> MethodDescriptor:
    cut = symbol.rfind("/")
    if cut < 0:
        cut = symbol.rfind(".")
    if cut <= 0 or cut == len(symbol) - 1:
        raise Failure(
            f'given method name "{symbol}" is not in expected format: '
            "'service/method' or 'service.method'"
        )
    service_name, method_name = symbol[:cut].lstrip("."), symbol[cut + 1 :]
    try:
        service = reflection.service(service_name)
    except ReflectionError as error:
        raise Failure(f'target server does not expose service "{service_name}": {error}') from None
    method = service.methods_by_name.get(method_name)
    if method is None:
        raise Failure(f'service "{service_name}" does not include a method named "{method_name}"')
    return method


def _invoke(
    options: Options,
    target: Target,
    channel: grpc.Channel,
    reflection: Reflection,
    stdin: IO[bytes],
    out: IO[str],
    err: IO[str],
) -> int:
    method = _method(reflection, target.symbol)
    if method.client_streaming:
        raise UsageError(
            f"{method.full_name} is client- or bidirectional-streaming: the grpcurl stand-in "
            "calls unary and server-streaming methods only"
        )
    kind = "server-streaming" if method.server_streaming else "unary"
    failed = f'Error invoking method "{target.symbol}"'
    text = stdin.read().decode() if options.data == "@" else options.data
    try:
        values = json_messages(text)
    except json.JSONDecodeError as error:
        raise Failure(f"{failed}: error getting request data: {error}") from None
    if len(values) > 1:
        raise Failure(
            f'{failed}: method "{method.full_name}" is a {kind} RPC, but request data '
            "contained more than 1 message"
        )
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    request = request_class()
    if values:
        try:
            json_format.ParseDict(
                values[0],
                request,
                ignore_unknown_fields=options.allow_unknown_fields,
                descriptor_pool=reflection.pool,
            )
        except json_format.ParseError as error:
            raise Failure(f"{failed}: error getting request data: {error}") from None

    def show(response: Message) -> None:
        answer = json_format.MessageToDict(
            response,
            descriptor_pool=reflection.pool,
            always_print_fields_with_no_presence=options.emit_defaults,
        )
        out.write(json.dumps(_go_numbers(answer), indent=2, ensure_ascii=False) + "\n")
        out.flush()  # each message as it arrives: a stream is read while it runs

    path = f"/{method.containing_service.full_name}/{method.name}"
    serialize: Callable[[Message], bytes] = request_class.SerializeToString
    metadata = tuple(metadata_of([*options.headers, *options.rpc_headers]))
    timeout = options.max_time or None
    try:
        if method.server_streaming:
            stream = channel.unary_stream(
                path, request_serializer=serialize, response_deserializer=response_class.FromString
            )
            for response in stream(request, metadata=metadata, timeout=timeout):
                show(response)
        else:
            unary = channel.unary_unary(
                path, request_serializer=serialize, response_deserializer=response_class.FromString
            )
            show(unary(request, metadata=metadata, timeout=timeout))
    except grpc.RpcError as error:
        if not isinstance(error, grpc.Call):
            raise Failure(f'{failed}: grpc call for "{method.full_name}" failed: {error}') from None
        code = error.code()
        err.write(f"ERROR:\n  Code: {go_code_name(code)}\n  Message: {error.details() or ''}\n")
        return STATUS_OFFSET + int(code.value[0])
    return 0


def _list(target: Target, reflection: Reflection, out: IO[str]) -> int:
    if not target.symbol:
        try:
            services = reflection.list_services()
        except ReflectionError as error:
            raise Failure(f"Failed to list services: {error}") from None
        out.write("".join(f"{name}\n" for name in services) or "(No services)\n")
        return 0
    try:
        service = reflection.service(target.symbol)
    except ReflectionError as error:
        raise Failure(f'Failed to list methods for service "{target.symbol}": {error}') from None
    methods = sorted(method.full_name for method in service.methods)
    out.write("".join(f"{name}\n" for name in methods) or "(No methods)\n")
    return 0


def run(argv: Sequence[str], stdin: IO[bytes], out: IO[str], err: IO[str]) -> int:
    """grpcurl with ``argv``; its exit status."""
    try:
        options = parse_args(argv)
        target = target_of(options)
    except UsageError as error:
        err.write(f"{error}\nTry 'grpcurl -help' for more details.\n")
        return USAGE_STATUS
    if target.verb == "list":
        if options.data:
            err.write("Warning: The -d argument is not used with 'list' or 'describe' verb.\n")
        if options.rpc_headers:
            err.write(
                "Warning: The -rpc-header argument is not used with 'list' or 'describe' verb.\n"
            )
    channel: grpc.Channel | None = None
    try:
        channel = _dial(options, target)
        reflection_metadata: Metadata = metadata_of([*options.headers, *options.reflect_headers])
        reflection = Reflection(channel, reflection_metadata, options.max_time or None)
        if target.verb == "list":
            return _list(target, reflection, out)
        return _invoke(options, target, channel, reflection, stdin, out, err)
    except UsageError as error:
        err.write(f"{error}\n")
        return USAGE_STATUS
    except Failure as error:
        err.write(f"{error}\n")
        return FAILURE_STATUS
    finally:
        if channel is not None:
            channel.close()


def main() -> int:
    # Ctrl-C ends the process at once, as it ends grpcurl (a Go program that does not catch it).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    return run(sys.argv[1:], sys.stdin.buffer, sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

"""What a server says about its services through gRPC server reflection, learnt the way grpcurl
learns it: the v1 service first and v1alpha when v1 is unimplemented; the file that defines a
symbol and every file it imports, into a descriptor pool of its own (well-known types that the
server does not serve come from protobuf's own copies, as grpcurl's do).

The reflection messages are grpcio-reflection's (v1alpha); v1 is the same protocol under another
package name, the same messages on the wire, so both are spoken with the same classes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import grpc
from google.protobuf import (
    any_pb2,
    api_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    source_context_pb2,
    struct_pb2,
    timestamp_pb2,
    type_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import ServiceDescriptor
from grpc_reflection.v1alpha import reflection_pb2

Metadata = Sequence[tuple[str, str | bytes]]

#: The reflection protocols, newest first (grpcurl's order).
PROTOCOLS = ("v1", "v1alpha")


#: The well-known files, imported so that protobuf's default pool holds them.
_WELL_KNOWN = (
    any_pb2,
    api_pb2,
    descriptor_pb2,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    source_context_pb2,
    struct_pb2,
    timestamp_pb2,
    type_pb2,
    wrappers_pb2,
)

#: gRPC status codes by number (reflection's error responses carry the number).
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ReflectionError(Exception):
    """The server does not answer reflection, or answers an error (``code``, a gRPC code)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class Reflection:
    """One server's descriptors, fetched on demand over ``channel`` with ``metadata``, in the
    first of ``protocols`` that the server implements."""

    def __init__(
        self,
        channel: grpc.Channel,
        metadata: Metadata,
        timeout: float | None,
        protocols: Sequence[str] = PROTOCOLS,
    ) -> None:
        self._channel = channel
        self._metadata = tuple(metadata)
        self._timeout = timeout
        self._methods = [
            f"/grpc.reflection.{protocol}.ServerReflection/ServerReflectionInfo"
            for protocol in protocols
        ]
        self._method = 0
        self.pool = descriptor_pool.DescriptorPool()
        #: Files the server sent, by name, not yet in the pool.
        self._received: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def list_services(self) -> list[str]:
        """The services the server names, in name order (grpcurl sorts them)."""
        response = self._ask(reflection_pb2.ServerReflectionRequest(list_services=""))
        names: list[str] = [service.name for service in response.list_services_response.service]
        return sorted(names)

    def service(self, name: str) -> ServiceDescriptor:
        """The descriptor of service ``name``, its file and imports loaded into ``pool``."""
        try:
            return self.pool.FindServiceByName(name)
        except KeyError:
            pass
        response = self._ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=name))
        self._receive(response.file_descriptor_response.file_descriptor_proto)
        for file_name in list(self._received):
            self._load(file_name, ())
        try:
            return self.pool.FindServiceByName(name)
        except KeyError:
            raise ReflectionError(f"Symbol not found: {name}", grpc.StatusCode.NOT_FOUND) from None

    def _receive(self, serialized: Iterable[bytes]) -> None:
        for data in serialized:
            file = descriptor_pb2.FileDescriptorProto.FromString(data)
            if not self._in_pool(file.name):
                self._received.setdefault(file.name, file)

    def _in_pool(self, file_name: str) -> bool:
        try:
            self.pool.FindFileByName(file_name)
        except KeyError:
            return False
        return True

    def _load(self, file_name: str, importers: tuple[str, ...]) -> None:
        """Adds ``file_name`` to the pool, its imports first, asking the server for any it has
        not sent yet."""
        if self._in_pool(file_name):
            return
        if file_name in importers:
            raise ReflectionError(f"import cycle: {' -> '.join((*importers, file_name))}")
        file = self._received.get(file_name) or self._fetch(file_name)
        for dependency in file.dependency:
            self._load(dependency, (*importers, file_name))
        self.pool.Add(file)
        self._received.pop(file_name, None)

    def _fetch(self, file_name: str) -> descriptor_pb2.FileDescriptorProto:
        try:
            response = self._ask(reflection_pb2.ServerReflectionRequest(file_by_filename=file_name))
        except ReflectionError as error:
            if error.code != grpc.StatusCode.NOT_FOUND:
                raise
            return _bundled(file_name, error)
        self._receive(response.file_descriptor_response.file_descriptor_proto)
        if file_name not in self._received:
            return _bundled(file_name, ReflectionError(f"the server did not send {file_name}"))
        return self._received[file_name]

    def _ask(
        self, request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse:
        """One request, one answer, on a stream of its own; v1alpha from the first v1 call
        that is unimplemented on."""
        while True:
            call = self._channel.stream_stream(
                self._methods[self._method],
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            try:
                responses = call(iter([request]), metadata=self._metadata, timeout=self._timeout)
                response = next(iter(responses))
            except StopIteration:
                raise ReflectionError("the reflection service answered nothing") from None
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else None
                if code == grpc.StatusCode.UNIMPLEMENTED and self._method + 1 < len(self._methods):
                    self._method += 1
                    continue
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    raise ReflectionError(
                        "server does not support the reflection API", code
                    ) from None
                details = error.details() if isinstance(error, grpc.Call) else str(error)
                raise ReflectionError(str(details), code) from None
            if response.HasField("error_response"):
                failure = response.error_response
                code = _CODES.get(failure.error_code, grpc.StatusCode.UNKNOWN)
                raise ReflectionError(failure.error_message, code)
            return response


def _bundled(file_name: str, why: ReflectionError) -> descriptor_pb2.FileDescriptorProto:
    """protobuf's own copy of a well-known file (google/protobuf/*.proto), or ``why``."""
    try:
        descriptor = descriptor_pool.Default().FindFileByName(file_name)
    except KeyError:
        raise why from None
    file = descriptor_pb2.FileDescriptorProto()
    descriptor.CopyToProto(file)
    return file

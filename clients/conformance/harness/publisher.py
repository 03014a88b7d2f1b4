"""Publishing through the admin API over gRPC (grpcio, messages encoded by ``wire``), and a
background publisher that keeps publishing numbered events across server faults and keeps
the store's history as the publisher saw it: which publishes were acknowledged, with which id."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from . import wire

_PUBLISH = "/durable_iterator.v1.DurableIteratorAdmin/Publish"
_PUBLISH_BATCH = "/durable_iterator.v1.DurableIteratorAdmin/PublishBatch"
_DISCONNECT = "/durable_iterator.v1.DurableIteratorAdmin/Disconnect"


def _identity(message: bytes) -> bytes:
    return message


class Publisher:
    """A gRPC channel to the admin service. It reconnects quickly after a server restart
    (grpcio's default reconnect backoff grows to two minutes)."""

    def __init__(self, url: str, api_key: str) -> None:
        target = url.removeprefix("http://")
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 300),
                ("grpc.enable_retries", 0),
            ],
        )
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._publish = self._channel.unary_unary(
            _PUBLISH, request_serializer=_identity, response_deserializer=_identity
        )
        self._publish_batch = self._channel.unary_unary(
            _PUBLISH_BATCH, request_serializer=_identity, response_deserializer=_identity
        )
        self._disconnect = self._channel.unary_unary(
            _DISCONNECT, request_serializer=_identity, response_deserializer=_identity
        )

    def publish(self, channel: str, payload: wire.Json, timeout: float = 5.0) -> str:
        """Publishes one event; its id once it is durable. Raises ``grpc.RpcError``."""
        answer: bytes = self._publish(
            wire.encode_publish(channel, payload), timeout=timeout, metadata=self._metadata
        )
        (event_id,) = wire.decode_strings(answer, 1)
        return event_id

    def publish_batch(
        self, channel: str, payloads: Sequence[wire.Json], timeout: float = 20.0
    ) -> list[str]:
        """Publishes events in one call (stored in order, contiguously); their ids."""
        answer: bytes = self._publish_batch(
            wire.encode_publish_batch(channel, payloads),
            timeout=timeout,
            metadata=self._metadata,
        )
        ids = wire.decode_strings(answer, 1)
        assert len(ids) == len(payloads), f"{len(payloads)} events published, {len(ids)} ids"
        return ids

    def disconnect(
        self, channel: str, session_id: str, revoke: bool = False, timeout: float = 5.0
    ) -> bool:
        """Ends the session's stream from the server (``Disconnect``); whether it was live.
        Raises ``grpc.RpcError`` (``NOT_FOUND`` for a session that is not live)."""
        answer: bytes = self._disconnect(
            wire.encode_disconnect(channel, session_id, revoke),
            timeout=timeout,
            metadata=self._metadata,
        )
        return wire.decode_bool(answer, 1)

    def close(self) -> None:
        self._channel.close()


@dataclass
class History:
    """What the publisher knows of the store: ``acked`` maps the sequence number of each
    acknowledged event to its id, in publish order; ``failed`` holds the sequence numbers of
    publishes that failed (not acknowledged: such an event may or may not be stored, when the
    server died between its commit and its answer)."""

    acked: dict[int, str] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def acked_ids(self) -> list[str]:
        return list(self.acked.values())


class BackgroundPublisher:
    """Publishes ``{"seq": n, ...}`` one after the other, ``n`` = 0, 1, 2, ..., every
    ``interval`` seconds, to ``channel``, until stopped; failures (the server is down) are
    recorded and publishing goes on. One publish at a time, so the store's order is ``n``'s."""

    def __init__(
        self, publisher: Publisher, channel: str, interval: float = 0.02, timeout: float = 2.0
    ) -> None:
        self._publisher = publisher
        self._channel = channel
        self._interval = interval
        self._timeout = timeout
        self._lock = threading.Lock()
        self._history = History()
        self._next = 0
        self._stop = threading.Event()
        self._acked = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self) -> BackgroundPublisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            seq = self._next
            self._next += 1
            try:
                event_id = self._publisher.publish(
                    self._channel, {"seq": seq, "from": "background"}, timeout=self._timeout
                )
            except grpc.RpcError as error:
                with self._lock:
                    self._history.failed.add(seq)
                    self._history.errors.append(f"{seq}: {error.code()}")
                self._stop.wait(0.1)
                continue
            with self._lock:
                self._history.acked[seq] = event_id
                self._acked.notify_all()
            self._stop.wait(self._interval)

    def acked_count(self) -> int:
        with self._lock:
            return len(self._history.acked)

    def wait_acked(self, count: int, timeout: float) -> bool:
        """Waits until ``count`` publishes in all were acknowledged."""
        with self._lock:
            return self._acked.wait_for(lambda: len(self._history.acked) >= count, timeout)

    def history(self) -> History:
        """A copy of the history so far."""
        with self._lock:
            return History(
                dict(self._history.acked), set(self._history.failed), list(self._history.errors)
            )

    def last_acked(self) -> str | None:
        with self._lock:
            return next(reversed(self._history.acked.values()), None)

    def stop(self) -> History:
        """Stops after the publish in flight; the whole history."""
        self._stop.set()
        self._thread.join(timeout=self._timeout + 5)
        assert not self._thread.is_alive(), "the publisher did not stop"
        return self.history()

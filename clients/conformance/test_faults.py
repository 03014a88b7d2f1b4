"""The fault scenarios, each run against every client's ``subscribe`` command (``-k rust``,
``-k typescript``, ``-k python`` to run one). What each proves: README.md beside this file.

Every wait is bounded (``WAIT`` and friends); none of those bounds is what a test asserts: a
test asserts what the client printed (events, notices, exit status) against what the server
acknowledged, and what the server and the token server saw."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import time
from collections.abc import Sequence
from typing import Any

import pytest

from conftest import Harness
from harness.clients import ClientProcess
from harness.publisher import History
from harness.server import Server
from harness.sockets import tcp_connections

#: Longest wait for a client to print what it should (a reconnect can wait up to the 10 s cap
#: of the backoff, plus a server start, on a loaded 2-core machine).
WAIT = 40.0

pytestmark = pytest.mark.timeout(150)


# ---- checks ---------------------------------------------------------------------------------


def check_history(client: ClientProcess, history: History) -> None:
    """What the client printed against what the publisher was told: every acknowledged event
    printed exactly once, in publish order; nothing printed that was not published (an event
    whose publish failed may appear: the server can die between its commit and its answer)."""
    events = list(client.events)
    ids = [str(event["id"]) for event in events]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"printed more than once: {duplicates}\n{client.describe()}"
    seqs: list[int] = []
    for event in events:
        payload = event["payload"]
        assert isinstance(payload, dict) and isinstance(payload.get("seq"), int), (
            f"payload is not what was published (a whole number stays whole): {event}"
        )
        seq: int = payload["seq"]
        if seq in history.acked:
            assert history.acked[seq] == event["id"], (
                f"event {event['id']} carries seq {seq}, acknowledged as {history.acked[seq]}"
            )
        else:
            assert seq in history.failed, f"printed an event never published: {event}"
        seqs.append(seq)
    assert seqs == sorted(seqs), f"printed out of order: seqs {seqs}"
    printed = set(ids)
    missing = [(seq, i) for seq, i in history.acked.items() if i not in printed]
    assert not missing, (
        f"{len(missing)} acknowledged events never printed, first {missing[:5]}\n"
        + client.describe()
    )
    check_output(client)


def publish_numbered(h: Harness, server: Server, history: History, count: int) -> list[str]:
    """Publishes ``count`` events ``{"seq": n}`` (continuing ``history``'s numbers) one by one;
    records them in ``history``; their ids."""
    publisher = h.publisher(server)
    ids = []
    for _ in range(count):
        seq = max([*history.acked, *history.failed], default=-1) + 1
        event_id = publisher.publish(h.channel, {"seq": seq})
        history.acked[seq] = event_id
        ids.append(event_id)
    return ids


#: The keys of each stderr notice (clients/README.md, "The `subscribe` command").
NOTICE_KEYS = {
    "connected": {"session_id", "session_ticket", "connections"},
    "resume": {"recovered", "failure", "last_event_id", "replayed", "oldest_retained_id",
               "session_id"},
    "refreshed": {"refreshes"},
    "error": {"code", "message"},
}


def check_output(client: ClientProcess) -> None:
    """The command's output contract: stdout only events, stderr JSON lines only known
    notices with their keys, ``connections`` counting up from 1."""
    assert not client.bad_stdout, f"stdout lines that are not events:\n{client.describe()}"
    assert not client.bad_stderr, f"stderr lines starting with {{ that are not JSON objects:\n{client.describe()}"
    for notice in client.notices:
        assert len(notice) == 1, f"a notice has one key: {notice}"
        ((kind, body),) = notice.items()
        assert kind in NOTICE_KEYS, f"unknown notice {notice}"
        assert isinstance(body, dict) and set(body) == NOTICE_KEYS[kind], (
            f"notice {kind} has keys {sorted(body)}, not {sorted(NOTICE_KEYS[kind])}"
        )
    counts = [int(line["connections"]) for line in client.connected()]
    assert counts and counts[0] == 1 and counts == sorted(set(counts)), (
        f"connections counted {counts}"
    )
    for event in client.events:
        assert isinstance(event["id"], str) and isinstance(event["published_at_ms"], int), event


def session_ids(client: ClientProcess) -> list[str]:
    return [str(line["session_id"]) for line in client.connected()]


def no_error(client: ClientProcess) -> None:
    errors = client.notices_of("error")
    assert not errors, f"the subscription failed: {errors}\n{client.describe()}"


# ---- 1. kill -9 and restart -----------------------------------------------------------------


def test_kill9_restart(harness: Harness) -> None:
    """Three kill -9 / restart cycles (same port, same data directory) under a concurrent
    publisher: every acknowledged event printed exactly once, in order."""
    server = harness.server()
    client = harness.subscribe(server)
    client.wait_connections(1, WAIT)
    background = harness.background_publisher(server)
    for cycle in range(3):
        # The client keeps up with the live server before it dies.
        assert background.wait_acked(background.acked_count() + 10, WAIT), "publishes stall"
        last = background.last_acked()
        assert last is not None
        client.wait_events([last], WAIT)
        server.kill()
        time.sleep(0.5)  # publishes fail meanwhile: not acknowledged, not expected
        server.start()
        client.wait_connections(cycle + 2, WAIT)
    assert background.wait_acked(background.acked_count() + 10, WAIT), "publishes stall"
    history = background.stop()
    client.wait_events(history.acked_ids(), WAIT)
    check_history(client, history)
    no_error(client)
    assert len(set(session_ids(client))) == 1, f"the session changed: {client.connected()}"
    print(f"{len(history.acked)} acknowledged, {len(history.failed)} failed publishes; "
          f"{len(client.events)} printed; {client.connections()} connections")


# ---- 2. the token expires while the server is down ------------------------------------------


def test_token_expires_while_down(harness: Harness) -> None:
    """The client's token (from --token-url) expires while the server is down: after the
    restart the client asks the token server again, once, and resumes with no loss."""
    short_ttl = 5
    tokens = harness.token_server(ttls=[short_ttl, 3600])  # then long-lived ones
    server = harness.server()
    client = harness.subscribe(server, "--token-url", tokens.url)
    client.wait_connections(1, WAIT)
    history = History()
    client.wait_events(publish_numbered(harness, server, history, 3), WAIT)
    first = tokens.minted
    assert len(first) == 1, f"token requests before the fault: {len(first)}"
    assert time.time() < first[0].exp, "precondition: the first token is still valid at the kill"
    server.kill()
    # Down until the token has expired (the server checks now >= exp, in whole seconds).
    time.sleep(max(0.0, first[0].exp + 1.0 - time.time()))
    restarted_at = time.time()
    server.start()
    client.wait_connections(2, WAIT)
    client.wait_events(publish_numbered(harness, server, history, 3), WAIT)
    check_history(client, history)
    no_error(client)
    minted = tokens.minted
    assert any(m.at >= restarted_at for m in minted), (
        f"the token server was not asked after the restart: {minted}"
    )
    # One request for the first token, one after the stale one was refused: no loop.
    assert 2 <= len(minted) <= 3, f"{len(minted)} token requests: {minted}\n{client.describe()}"
    assert len(set(session_ids(client))) == 1, f"the session changed: {client.connected()}"
    print(f"token requests: {len(minted)}")


# ---- 3. refresh in place; refresh with new tags ---------------------------------------------


def test_refresh(harness: Harness) -> None:
    """Tokens of 4 s refreshed 2 s before expiry: refreshed in place on the live stream
    (``refreshed`` lines, ``connections`` stays 1); then the token server hands out tokens
    with other tags: the client reconnects (``connections`` 2) keeping its session id."""
    tokens = harness.token_server(tags=["a"], ttls=[4])
    server = harness.server()
    client = harness.subscribe(server, "--token-url", tokens.url, "--refresh-before-expiry", "2")
    client.wait_connections(1, WAIT)
    history = History()
    client.wait_events(publish_numbered(harness, server, history, 2), WAIT)

    def refreshes() -> int:
        return max((int(r["refreshes"]) for r in client.notices_of("refreshed")), default=0)

    client.wait_for("two refreshes in place", lambda: refreshes() >= 2, WAIT)
    assert client.connections() == 1, f"a refresh in place reconnected:\n{client.describe()}"
    client.wait_events(publish_numbered(harness, server, history, 2), WAIT)
    assert client.connections() == 1, f"the stream did not survive:\n{client.describe()}"
    requests_in_place = tokens.requests

    tokens.set_tags(["b"])
    client.wait_connections(2, WAIT)
    assert tokens.requests > requests_in_place
    claims_seen = tokens.minted[-1].token
    assert '"tags":["b"]' in claims_seen
    client.wait_events(publish_numbered(harness, server, history, 2), WAIT)
    check_history(client, history)
    no_error(client)
    sessions = session_ids(client)
    assert len(sessions) >= 2 and len(set(sessions)) == 1, (
        f"the session id changed on the tag change: {client.connected()}"
    )


# ---- 4. slow consumer -----------------------------------------------------------------------

#: The burst: enough bytes to fill every buffer between the server's subscriber queue and the
#: stopped client (HTTP/2 windows of 2-4 MiB, loopback TCP buffers of up to 4 MiB each way),
#: so the queue (8 events) overflows. Random padding: the server gzips streams for clients
#: that accept it (grpc-core does), and a repetitive payload would shrink to nothing.
BURST_CALLS = 64
BURST_EVENTS_PER_CALL = 8
PAD_BYTES = 32 * 1024


def test_slow_consumer(harness: Harness) -> None:
    """With --subscriber-queue 8, a burst published while the client is stopped (SIGSTOP)
    overflows its queue: the server ends the stream with RESOURCE_EXHAUSTED; after SIGCONT
    the client resumes from its last id, and prints every event once, in order."""
    server = harness.server(subscriber_queue=8)  # heartbeat 15 s: no liveness reconnect
    client = harness.subscribe(server, debug=True)
    client.wait_connections(1, WAIT)
    history = History()
    client.wait_events(publish_numbered(harness, server, history, 2), WAIT)
    publisher = harness.publisher(server)
    pad = base64.b64encode(os.urandom(PAD_BYTES * 3 // 4)).decode()
    client.send(signal.SIGSTOP)
    try:
        for _ in range(BURST_CALLS):
            first = max(history.acked) + 1
            payloads: list[Any] = [
                {"seq": first + i, "pad": pad} for i in range(BURST_EVENTS_PER_CALL)
            ]
            ids = publisher.publish_batch(harness.channel, payloads)
            history.acked.update(zip(range(first, first + len(ids)), ids))
    finally:
        client.send(signal.SIGCONT)
    client.wait_events(history.acked_ids(), WAIT)
    check_history(client, history)
    no_error(client)
    # The stream ended while the server ran on (no restart, heartbeats every 15 s, a token of
    # an hour): the server ended it, as a slow consumer; the client said why in its log.
    assert client.connections() >= 2, f"the queue did not overflow:\n{client.describe()}"
    evidence = [line for line in client.logs if "slow consumer" in line]
    assert evidence, f"no RESOURCE_EXHAUSTED (slow consumer) in the debug log:\n{client.describe()}"
    assert len(set(session_ids(client))) == 1, f"the session changed: {client.connected()}"
    print("overflow:", evidence[0])


# ---- 5. store reset -------------------------------------------------------------------------


def test_store_reset(harness: Harness) -> None:
    """The server stops, its data directory is deleted, a new one starts on the same port:
    the client reports the lost history (``resume`` with ``store_reset``) and goes on with the
    new epoch's events."""
    server = harness.server()
    client = harness.subscribe(server)
    client.wait_connections(1, WAIT)
    old = History()
    client.wait_events(publish_numbered(harness, server, old, 3), WAIT)
    last_old = client.event_ids()[-1]
    server.stop()
    shutil.rmtree(server.data_dir)
    server.start()
    client.wait_for(
        "a store_reset resume report",
        lambda: any(r.get("failure") == "store_reset" for r in client.notices_of("resume")),
        WAIT,
    )
    report = next(r for r in client.notices_of("resume") if r.get("failure") == "store_reset")
    assert report["recovered"] is False, report
    assert report["last_event_id"] == last_old, report
    new = History()
    new_ids = publish_numbered(harness, server, new, 3)
    client.wait_events(new_ids, WAIT)
    assert client.event_ids() == [*old.acked_ids(), *new_ids], client.describe()
    assert new_ids[0].split("-")[0] != last_old.split("-")[0], "the store was not reset"
    check_output(client)
    no_error(client)


# ---- 6. the server paused -------------------------------------------------------------------


def test_server_paused(harness: Harness) -> None:
    """The server is stopped (SIGSTOP) for 5 s, longer than 2.5 heartbeats of 1 s: the client
    gives the silent stream up and reconnects by itself once the server runs again."""
    server = harness.server(heartbeat_seconds=1)
    client = harness.subscribe(server, debug=True)
    client.wait_connections(1, WAIT)
    history = History()
    client.wait_events(publish_numbered(harness, server, history, 2), WAIT)
    server.pause()
    try:
        time.sleep(5.0)
    finally:
        server.resume()
    client.wait_connections(2, WAIT)
    client.wait_events(publish_numbered(harness, server, history, 3), WAIT)
    check_history(client, history)
    no_error(client)
    assert len(set(session_ids(client))) == 1, f"the session changed: {client.connected()}"


# ---- 7. stop ----------------------------------------------------------------------------------

#: h2 frames the server logged receiving (RUST_LOG h2=debug): a client that closes its stream
#: resets it (RST_STREAM CANCEL) or closes the connection (GOAWAY) before it exits; a killed
#: client sends neither.
_H2_HEADERS = re.compile(r"received frame=Headers")
_H2_CLOSE = re.compile(r"received frame=(Reset \{[^}]*CANCEL|GoAway)")


def _server_peers(server: Server, client_ports: Sequence[int]) -> list[Any]:
    return [
        c
        for c in tcp_connections(server.pid)
        if c.local_port == server.port and c.remote_port in client_ports
    ]


def _stop_with_sigterm(h: Harness) -> tuple[ClientProcess, str, str]:
    """A live subscription stopped with SIGTERM: checks the exit status 0 and that the server
    let go of the client's connection; the client, the server's whole log and its part
    written after the signal."""
    server = h.server(heartbeat_seconds=1, rust_log="info,h2=debug,tonic=debug")
    client = h.subscribe(server)
    client.wait_connections(1, WAIT)
    ports: list[int] = []

    def connected_now() -> bool:
        ports[:] = [
            c.local_port
            for c in tcp_connections(client.pid)
            if c.remote_port == server.port and c.state == "ESTABLISHED"
        ]
        return bool(ports) and bool(_server_peers(server, ports))

    client.wait_for("the client's connection, seen from both ends", connected_now, WAIT)
    time.sleep(1.5)  # a heartbeat or two on the live stream
    log_before = len(server.log_text())
    client.send(signal.SIGTERM)
    status = client.wait_exit(WAIT)
    assert status == 0, f"exit status {status} after SIGTERM\n{client.describe()}"
    check_output(client)
    no_error(client)
    deadline = time.monotonic() + WAIT
    while _server_peers(server, ports):
        assert time.monotonic() < deadline, (
            f"the server still holds the connection: {_server_peers(server, ports)}"
        )
        time.sleep(0.1)
    log = server.log_text()
    return client, log, log[log_before:]


def test_sigterm_stop(harness: Harness) -> None:
    """SIGTERM: the client exits 0 (no ``error`` line), and the server sees the stream close:
    before the signal the server's process holds an established socket whose peer is the
    client's port (read from /proc); after the exit it has let go of it (the connection that
    carried the stream ended, server-side too: not left in CLOSE_WAIT)."""
    _stop_with_sigterm(harness)


def test_sigterm_resets_stream(harness: Harness) -> None:
    """Over HTTP/2, "the stream is closed first" (the command's contract) is visible to the
    server: it receives the stream's RST_STREAM (CANCEL) or the connection's GOAWAY before the
    connection ends, which a client killed with SIGKILL never sends (its h2 debug log).
    grpc-web over HTTP/1.1 (the TypeScript client, Node's fetch) has no such frame: there,
    closing the stream is closing the connection, what ``test_sigterm_stop`` sees."""
    _, log, after = _stop_with_sigterm(harness)
    if not _H2_HEADERS.search(log):
        pytest.skip(f"{harness.command.name} spoke HTTP/1.1: no stream frames to see")
    assert _H2_CLOSE.search(after), (
        "over HTTP/2 the client exited without resetting its stream or closing the "
        f"connection first; server log after SIGTERM:\n{after[-3000:]}"
    )


# ---- 8. disconnected by the server ----------------------------------------------------------


def test_disconnected_by_the_server(harness: Harness) -> None:
    """The server API disconnects the live session (``Disconnect``): the stream ends with
    ``PERMISSION_DENIED`` "disconnected by the server", which the client reports as its one
    ``error`` line and exits 1 on, without reconnecting."""
    server = harness.server()
    client = harness.subscribe(server)
    client.wait_connections(1, WAIT)
    history = History()
    client.wait_events(publish_numbered(harness, server, history, 2), WAIT)
    (session_id,) = session_ids(client)
    assert harness.publisher(server).disconnect(harness.channel, session_id), "the session was live"
    check_disconnected(client, history)


def check_disconnected(client: ClientProcess, history: History) -> None:
    """The client took a disconnect as final: its one ``error`` line is ``PERMISSION_DENIED``
    "disconnected by the server", it exited 1 without reconnecting, and printed every event
    before."""
    status = client.wait_exit(WAIT)
    assert status == 1, f"exit status {status}\n{client.describe()}"
    errors = client.notices_of("error")
    assert len(errors) == 1, f"one error line: {errors}\n{client.describe()}"
    assert errors[0]["code"] == "PERMISSION_DENIED", errors
    assert "disconnected by the server" in str(errors[0]["message"]), errors
    assert client.connections() == 1, f"reconnected after the disconnect\n{client.describe()}"
    check_history(client, history)

"""Against the real server: subscribe, publish, resume, refresh, expiry, a slow consumer, a
kill -9 and restart, liveness, invoke and the fatal codes."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass

import grpc
import pytest

import durable_iterator as di

from .conftest import API_KEY, ServerFactory, provider, watch, within

C = grpc.StatusCode


async def connect(server_address: str, made: list[di.Client | di.Admin]) -> tuple[di.Client, di.Admin]:
    client = di.Client(server_address)
    admin = di.Admin(server_address, api_key=API_KEY)
    made += [client, admin]
    return client, admin


async def test_subscribe_publish_and_resume_with_the_ticket(
    start_server: ServerFactory, clients: list[di.Client | di.Admin]
) -> None:
    server = await start_server()
    client, admin = await connect(server.address, clients)
    first = watch(client, provider())
    await first.live()
    payloads: list[di.JsonValue] = [{"n": 1, "ratio": 2.5}, [1, "two", None], "three"]
    ids = [await admin.publish("room", payload) for payload in payloads]
    await first.until(lambda: len(first.events) == 3, "three events")
    assert [e.id for e in first.events] == ids
    assert [e.payload for e in first.events] == payloads
    first_payload = first.events[0].payload
    assert isinstance(first_payload, dict) and type(first_payload["n"]) is int
    ticket = first.sub.credentials.session_ticket
    session_id = first.sub.session_id
    await first.sub.aclose()
    assert first.task is not None and first.task.done()

    later = [await admin.publish("room", {"n": n}) for n in (4, 5)]
    again = watch(client, provider(), last_event_id=ids[-1], session_ticket=ticket)
    await again.until(lambda: len(again.events) == 2, "the two missed events")
    assert [e.id for e in again.events] == later
    assert not [item for item in again.items if isinstance(item, di.Resumed)], "recovered"
    assert again.sub.session_id == session_id, "the ticket keeps the session"
    await again.sub.aclose()


async def test_an_unrecoverable_resume_is_reported_and_the_stream_goes_on(
    start_server: ServerFactory, clients: list[di.Client | di.Admin]
) -> None:
    server = await start_server()
    client, admin = await connect(server.address, clients)
    watcher = watch(client, provider(), last_event_id="00000000-0000000000000001")
    await watcher.until(lambda: bool(watcher.items), "the resume report")
    item = watcher.items[0]
    assert isinstance(item, di.Resumed)
    assert item.report.failure is di.ResumeFailure.STORE_RESET
    assert item.report.last_event_id == "00000000-0000000000000001"
    event_id = await admin.publish("room", "after")
    await watcher.until(lambda: len(watcher.events) == 1, "the next event")
    assert watcher.events[0].id == event_id
    await watcher.sub.aclose()


async def test_publish_batch_filters_and_issue_token(
    start_server: ServerFactory, clients: list[di.Client | di.Admin]
) -> None:
    server = await start_server()
    client, admin = await connect(server.address, clients)
    issued = await admin.issue_token("room", tags=["vip"], ttl=600)
    claims = di.unverified_claims(issued.token)
    assert claims is not None and claims.tags == ("vip",)
    assert issued.expires_at == claims.exp
    vip = watch(client, di.FixedToken(issued.token))
    everyone = watch(client, provider())
    await vip.live()
    await everyone.live()
    ids = await admin.publish_batch(
        [
            di.Publish("room", "to all"),
            di.Publish("room", "to vips", tags=["vip"]),
            di.Publish("room", "to nobody", tags=[]),
            di.Publish("room", "not to vip", exclude=[vip.sub.session_id or ""]),
        ]
    )
    assert len(ids) == 4
    await vip.until(lambda: len(vip.events) == 2, "vip's two events")
    await everyone.until(lambda: len(everyone.events) == 2, "everyone's two events")
    assert [e.payload for e in vip.events] == ["to all", "to vips"]
    assert [e.payload for e in everyone.events] == ["to all", "not to vip"]
    with pytest.raises(di.StatusError) as refused:
        await di.Admin(server.address, api_key="wrong").publish("room", 1)
    assert refused.value.code is C.UNAUTHENTICATED
    await vip.sub.aclose()
    await everyone.sub.aclose()


async def test_refresh_in_place_keeps_the_stream(
    start_server: ServerFactory, clients: list[di.Client | di.Admin]
) -> None:
    server = await start_server()
    client, admin = await connect(server.address, clients)
    # Refreshed 38 s before a 40 s expiry: about two seconds after each new token.
    watcher = watch(client, provider(ttl=40), refresh_before_expiry=38)
    await watcher.live()
    token_before = watcher.sub.credentials.token
    await watcher.until(lambda: watcher.sub.progress.refreshes >= 1, "a refresh in place")
    assert watcher.sub.progress.connections == 1
    assert watcher.sub.credentials.token != token_before
    event_id = await admin.publish("room", "after the refresh")
    await watcher.until(lambda: len(watcher.events) == 1, "an event on the same stream")
    assert watcher.events[0].id == event_id
    assert watcher.sub.progress.connections == 1
    await watcher.sub.aclose()


async def test_expiry_without_refresh_reconnects_with_a_new_token(
    start_server: ServerFactory, clients: list[di.Client | di.Admin]
) -> None:
    server = await start_server()
    client, admin = await connect(server.address, clients)
    calls = 0
    minter = provider(ttl=2)

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        return minter()

    watcher = watch(client, get_token)
    await watcher.live()
    first = await admin.publish("room", 1)
    await watcher.until(lambda: len(watcher.events) == 1, "the first event")
    # The server ends the stream UNAUTHENTICATED at exp; the client asks for a new token.
    await watcher.until(lambda: watcher.sub.progress.connections >= 2, "a reconnect")
    assert calls >= 2
    second = await admin.publish("room", 2)
    await watcher.until(lambda: second in [e.id for e in watcher.events], "the second event")
    assert [e.id for e in watcher.events] == [first, second]
    assert watcher.error is None
    await watcher.sub.aclose()


async def test_slow_consumer_resumes_and_loses_nothing(
    start_server: ServerFactory, clients: list[di.Client | di.Admin]
) -> None:
    server = await start_server("--subscriber-queue", "8")
    # No BDP probing: gRPC's receive window stays small, so the server's queue fills sooner.
    client = di.Client(server.address, channel_options=(("grpc.http2.bdp_probe", 0),))
    admin = di.Admin(server.address, api_key=API_KEY)
    clients += [client, admin]
    progress: list[di.Progress] = []
    sub = client.subscribe(provider(), on_progress=progress.append)
    first = asyncio.ensure_future(sub.__anext__())
    while not progress or progress[-1].state != di.Live():
        await within(asyncio.sleep(0.01))
    # The consumer reads nothing while 12 MB are published.
    ids: list[str] = []
    for start in range(0, 3_000, 100):
        batch = [di.Publish("room", {"n": n, "pad": "x" * 4_000}) for n in range(start, start + 100)]
        ids += await admin.publish_batch(batch)
    items = [await within(first)]
    while len([i for i in items if isinstance(i, di.Event)]) < len(ids):
        items.append(await within(sub.__anext__()))
    assert [i.id for i in items if isinstance(i, di.Event)] == ids, "in order, each once"
    assert not [i for i in items if isinstance(i, di.Resumed)], "everything was recovered"
    assert sub.progress.connections >= 2, "the server dropped the slow consumer (and it resumed)"
    await sub.aclose()


async def test_kill_9_and_restart_loses_and_repeats_nothing(
    start_server: ServerFactory, clients: list[di.Client | di.Admin]
) -> None:
    server = await start_server()
    client, admin = await connect(server.address, clients)
    watcher = watch(client, provider())
    await watcher.live()
    ids = [await admin.publish("room", n) for n in range(5)]
    await watcher.until(lambda: len(watcher.events) == 5, "five events")
    session_id = watcher.sub.session_id
    await server.kill()
    await server.start()  # the same port and data directory
    await admin.close()
    admin = di.Admin(server.address, api_key=API_KEY)
    clients.append(admin)
    ids += [await within(admin.publish("room", n)) for n in range(5, 10)]
    await watcher.until(lambda: len(watcher.events) >= 10, "the five events after the restart")
    assert [e.id for e in watcher.events] == ids
    assert watcher.sub.progress.connections >= 2
    assert watcher.sub.session_id == session_id
    await watcher.sub.aclose()


async def test_a_stream_that_goes_silent_is_dead_after_two_and_a_half_heartbeats(
    start_server: ServerFactory, clients: list[di.Client | di.Admin]
) -> None:
    server = await start_server("--heartbeat-seconds", "1")
    client, admin = await connect(server.address, clients)
    watcher = watch(client, provider())
    await watcher.live()
    await watcher.until(
        lambda: any(isinstance(p.state, di.Live) for p in watcher.progress), "live"
    )
    server.signal(signal.SIGSTOP)  # the connection stays up, but nothing comes any more
    try:
        await watcher.until(
            lambda: not isinstance(watcher.sub.progress.state, di.Live), "the stream judged dead"
        )
    finally:
        server.signal(signal.SIGCONT)
    await watcher.until(lambda: watcher.sub.progress.connections >= 2, "a new stream")
    event_id = await admin.publish("room", "alive")
    await watcher.until(lambda: len(watcher.events) == 1, "an event on the new stream")
    assert watcher.events[0].id == event_id
    await watcher.sub.aclose()


async def test_invoke_through_the_relay_and_permission_denied(
    start_server: ServerFactory, clients: list[di.Client | di.Admin]
) -> None:
    server = await start_server()
    client, admin = await connect(server.address, clients)
    sender = watch(client, provider(rpc=["publish"]))
    other = watch(client, provider())
    await sender.live()
    await other.live()
    output = await sender.sub.invoke(
        ["publish"], {"payload": {"text": "hi"}, "tags": [], "exclude_self": True}
    )
    assert isinstance(output, dict) and set(output) == {"id"}
    output = await sender.sub.invoke(["publish"], {"payload": {"text": "hello"}, "exclude_self": True})
    assert isinstance(output, dict)
    relayed = output["id"]
    await other.until(lambda: len(other.events) == 1, "the relayed event")
    assert (other.events[0].id, other.events[0].payload) == (relayed, {"text": "hello"})
    marker = await admin.publish("room", "marker")
    await sender.until(lambda: len(sender.events) == 1, "the marker")
    assert sender.events[0].id == marker, "exclude_self kept the sender's own event away"

    with pytest.raises(di.StatusError) as denied:
        await sender.sub.invoke(["other"], {})
    assert denied.value.code is C.PERMISSION_DENIED
    assert denied.value.message == 'Method "other" is not allowed.'
    with pytest.raises(di.StatusError) as bad_input:
        await sender.sub.invoke(["publish"], {"nope": 1})
    assert bad_input.value.code is C.INVALID_ARGUMENT
    # Without a subscription: the token alone (exclude_self then needs a ticket).
    credentials = di.Credentials(token=provider(rpc=["publish"])())
    output = await client.invoke(credentials, "publish", {"payload": 1})
    assert isinstance(output, dict) and "id" in output
    await sender.sub.aclose()
    await other.sub.aclose()


async def test_fatal_codes_end_the_subscription_with_a_typed_error(
    start_server: ServerFactory, clients: list[di.Client | di.Admin]
) -> None:
    server = await start_server()
    client, _ = await connect(server.address, clients)
    # A token the server cannot verify, straight from the provider: UNAUTHENTICATED, fatal.
    forged = di.SigningProvider("another-key", "room")
    refused = client.subscribe(forged)
    with pytest.raises(di.StatusError) as unauthenticated:
        await within(refused.__anext__())
    assert unauthenticated.value.code is C.UNAUTHENTICATED
    assert refused.progress.state == di.Closed()
    # ABORTED: the session is resumed on another stream.
    first = watch(client, provider())
    await first.live()
    thief = watch(client, provider(), session_ticket=first.sub.credentials.session_ticket)
    await thief.live()
    await first.until(lambda: first.error is not None, "the first stream aborted")
    assert isinstance(first.error, di.StatusError) and first.error.code is C.ABORTED
    assert thief.sub.session_id == first.sub.session_id
    # INVALID_ARGUMENT: a malformed id.
    bad = client.subscribe(provider(), last_event_id="bogus")
    with pytest.raises(di.StatusError) as invalid:
        await within(bad.__anext__())
    assert invalid.value.code is C.INVALID_ARGUMENT
    await thief.sub.aclose()


@dataclass(frozen=True)
class Echo:
    text: str


ECHO: di.Method[Echo, str] = di.Method(("routerClient", "echo"), Echo, str)
PING: di.Method[None, str] = di.Method(("routerClient", "ping"), type(None), str)


async def test_channel_object_methods_of_the_chat_example(
    start_server: ServerFactory, clients: list[di.Client | di.Admin]
) -> None:
    server = await start_server(chat=True)
    client = di.Client(server.address)
    clients.append(client)
    watcher = watch(client, provider("chat:1", rpc=["routerClient"]))
    await watcher.live()
    assert await watcher.sub.invoke(["routerClient", "echo"], {"text": "hi"}) == "Echo: hi"
    assert await watcher.sub.call(ECHO, Echo(text="typed")) == "Echo: typed"
    assert await watcher.sub.call(PING, None) == "pong"
    with pytest.raises(di.StatusError) as missing:
        await watcher.sub.invoke(["routerClient", "nope"], {})
    assert missing.value.code is C.NOT_FOUND
    credentials = di.Credentials(token=provider("chat:1", rpc=["routerClient"])())
    assert await client.call(credentials, ECHO, Echo(text="x")) == "Echo: x"
    await watcher.sub.aclose()


async def test_closing_the_client_closes_its_subscriptions(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    client = di.Client(server.address)
    watcher = watch(client, provider())
    await watcher.live()
    await client.close()
    assert watcher.task is not None
    await within(watcher.task)
    assert watcher.sub.progress.state == di.Closed() and watcher.error is None
    with pytest.raises(di.ClientError, match="closed"):
        client.subscribe(provider())


"""Each client against two nodes on one Redis behind a load balancer: the client sees one
server. A node killed mid-stream hands the session to the other with every acknowledged event
printed once, in order; a disconnect through the other node is final.

The first connection through the balancer goes to the first node: the client's stream is on
``a``, the publisher and the server API calls use ``b``."""

from __future__ import annotations

import pytest

from conftest import Harness
from harness.publisher import History
from test_faults import WAIT, check_disconnected, check_history, publish_numbered, session_ids

pytestmark = pytest.mark.timeout(150)


def test_node_killed_mid_stream(harness: Harness) -> None:
    """kill -9 of the client's node under a publisher on the other: the client resumes through
    the balancer on the node left, same session, nothing lost or repeated."""
    redis = harness.redis()
    a, b = harness.server(redis=redis), harness.server(redis=redis)
    client = harness.subscribe(harness.balancer([a, b]))
    client.wait_connections(1, WAIT)
    background = harness.background_publisher(b)
    assert background.wait_acked(10, WAIT), "publishes stall"
    last = background.last_acked()
    assert last is not None
    client.wait_events([last], WAIT)
    a.kill()
    client.wait_connections(2, WAIT)
    assert background.wait_acked(background.acked_count() + 10, WAIT), "publishes stall"
    history = background.stop()
    client.wait_events(history.acked_ids(), WAIT)
    sessions = session_ids(client)
    assert len(set(sessions)) == 1, f"the session changed: {sessions}\n{client.describe()}"
    check_history(client, history)


def test_disconnected_through_the_other_node(harness: Harness) -> None:
    """``Disconnect`` sent to the node that does not hold the stream reaches it: the client
    reports ``PERMISSION_DENIED`` "disconnected by the server" once and exits 1 without
    reconnecting."""
    redis = harness.redis()
    a, b = harness.server(redis=redis), harness.server(redis=redis)
    client = harness.subscribe(harness.balancer([a, b]))
    client.wait_connections(1, WAIT)
    history = History()
    client.wait_events(publish_numbered(harness, b, history, 2), WAIT)
    (session_id,) = session_ids(client)
    # The directory learns of the session before its client does; the client printed events,
    # so it is there.
    assert harness.publisher(b).disconnect(harness.channel, session_id), "the session was live"
    check_disconnected(client, history)

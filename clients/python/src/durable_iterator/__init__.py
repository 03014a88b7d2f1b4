"""Python client of durable-iterator: durable event streams over gRPC.

A subscription reconnects and resumes from the last event id by itself, refreshes its token on
the live stream, and tells the application when history was lost::

    import durable_iterator
    from durable_iterator import Event, Resumed

    async with durable_iterator.Client("http://127.0.0.1:50051") as client:
        async with client.subscribe(get_token=fetch_token, refresh_before_expiry=600) as sub:
            async for item in sub:
                match item:
                    case Event(id=id, payload=payload):
                        print(id, payload)
                    case Resumed(report=report):
                        print("history lost:", report.failure_name)

    async with durable_iterator.Admin("http://127.0.0.1:50051", api_key=key) as admin:
        await admin.publish("lobby", {"text": "hello"})

The behaviour is the shared design of the Rust, TypeScript and Python clients (the clients'
README in the repository). Time comes from a :class:`Clock`; tests use :class:`ManualClock`.
"""

from ._admin import Admin, IssuedToken, Publish
from ._backoff import Backoff
from ._client import DEFAULT_SERVER, Client
from ._clock import Clock, ManualClock, SystemClock
from ._endpoint import CaCert, Endpoint, parse_endpoint
from ._errors import (
    ClientError,
    DecodeError,
    EncodeError,
    InvalidEndpointError,
    RetriesExhaustedError,
    StatusError,
    TokenProviderError,
)
from ._invoke import Credentials, MethodPath
from ._items import Event, ResumeFailure, ResumeReport, Resumed, SubscriptionItem
from ._json import JsonValue
from ._method import Method
from ._policy import Disposition, invoke_is_retryable, on_status
from ._subscription import (
    BackingOff,
    Closed,
    Connecting,
    ConnectionState,
    FetchingToken,
    Live,
    Progress,
    SubscribeOptions,
    Subscription,
    TokenBackoff,
)
from ._token import (
    DEFAULT_TTL_SECONDS,
    FixedToken,
    SigningProvider,
    TokenClaims,
    TokenProvider,
    refreshable_in_place,
    sign_token,
    unverified_claims,
)
from ._transport import GrpcTransport, SubscribeCall, Transport

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SERVER",
    "DEFAULT_TTL_SECONDS",
    "Admin",
    "Backoff",
    "BackingOff",
    "CaCert",
    "Client",
    "ClientError",
    "Clock",
    "Closed",
    "Connecting",
    "ConnectionState",
    "Credentials",
    "DecodeError",
    "Disposition",
    "EncodeError",
    "Endpoint",
    "Event",
    "FetchingToken",
    "FixedToken",
    "GrpcTransport",
    "InvalidEndpointError",
    "IssuedToken",
    "JsonValue",
    "Live",
    "ManualClock",
    "Method",
    "MethodPath",
    "Progress",
    "Publish",
    "ResumeFailure",
    "ResumeReport",
    "Resumed",
    "RetriesExhaustedError",
    "SigningProvider",
    "StatusError",
    "SubscribeCall",
    "SubscribeOptions",
    "Subscription",
    "SubscriptionItem",
    "SystemClock",
    "TokenBackoff",
    "TokenClaims",
    "TokenProvider",
    "TokenProviderError",
    "Transport",
    "invoke_is_retryable",
    "on_status",
    "parse_endpoint",
    "refreshable_in_place",
    "sign_token",
    "unverified_claims",
]

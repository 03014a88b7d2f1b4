"""What a subscription yields: events, and resume outcomes that could not recover everything."""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass
from typing import Union

from . import _json
from ._json import JsonValue
from .v1 import durable_iterator_pb2 as pb

__all__ = ["Event", "ResumeFailure", "ResumeReport", "Resumed", "SubscriptionItem"]


@dataclass(frozen=True)
class Event:
    """An event of the channel, as received."""

    #: Strictly increasing per channel; the subscription resumes after the last one received.
    #: Compare ids only for equality, or feed one back as ``last_event_id``.
    id: str
    #: The payload as published: a plain JSON value (whole numbers are ``int``). A typed
    #: protobuf payload is ``{"@type": type_url, "value": base64}``; no payload is ``None``.
    payload: JsonValue
    #: When the server stored the event, in Unix milliseconds.
    published_at_ms: int

    @classmethod
    def from_proto(cls, event: pb.Event) -> Event:
        kind = event.WhichOneof("payload")
        payload: JsonValue
        if kind == "json":
            payload = _json.from_proto(event.json)
        elif kind == "typed":
            payload = {
                "@type": event.typed.type_url,
                "value": base64.b64encode(event.typed.value).decode("ascii"),
            }
        else:
            payload = None
        return cls(id=event.id, payload=payload, published_at_ms=event.published_at_ms)

    def to_json(self) -> dict[str, JsonValue]:
        """The event as one JSON object, ``{"id", "payload", "published_at_ms"}``: what the
        ``subscribe`` command prints."""
        return {"id": self.id, "payload": self.payload, "published_at_ms": self.published_at_ms}


class ResumeFailure(enum.Enum):
    """Why a resume could not recover everything."""

    #: The server keeps no history (retention 0).
    RESUME_OFF = "resume_off"
    #: Events after the last id have already left the retention window; what is left is
    #: replayed.
    TOO_OLD = "too_old"
    #: The id is from another epoch of the store: its history was lost or replaced.
    STORE_RESET = "store_reset"
    #: The id was never issued on this channel.
    UNKNOWN_ID = "unknown_id"


_FAILURES = {
    pb.RESUME_FAILURE_RESUME_OFF: ResumeFailure.RESUME_OFF,
    pb.RESUME_FAILURE_TOO_OLD: ResumeFailure.TOO_OLD,
    pb.RESUME_FAILURE_STORE_RESET: ResumeFailure.STORE_RESET,
    pb.RESUME_FAILURE_UNKNOWN_ID: ResumeFailure.UNKNOWN_ID,
}


@dataclass(frozen=True)
class ResumeReport:
    """The outcome of a resume that did not recover everything: events may be missing before
    the next event. Reload what the application shows from its source of truth."""

    #: The id the subscription asked to resume after.
    last_event_id: str
    #: Why; a number is a reason this client does not know (a newer server).
    failure: ResumeFailure | int
    #: How many events (the retained part) are replayed before the stream goes live.
    replayed: int
    #: The oldest event id still retained on the channel, if any.
    oldest_retained_id: str | None
    #: The session the stream belongs to.
    session_id: str

    @classmethod
    def from_outcome(
        cls, outcome: pb.ResumeOutcome, last_event_id: str | None, session_id: str
    ) -> ResumeReport | None:
        """The report of ``outcome``, if it is one to tell the application about: a resume
        that was asked for and did not recover everything."""
        if not outcome.requested or outcome.recovered:
            return None
        failure: ResumeFailure | int = _FAILURES.get(outcome.failure, int(outcome.failure))
        return cls(
            last_event_id=last_event_id or "",
            failure=failure,
            replayed=outcome.replayed,
            oldest_retained_id=outcome.oldest_retained_id or None,
            session_id=session_id,
        )

    @property
    def failure_name(self) -> str:
        """``resume_off``, ``too_old``, ``store_reset``, ``unknown_id``, or
        ``unknown_reason_<n>``."""
        if isinstance(self.failure, ResumeFailure):
            return self.failure.value
        return f"unknown_reason_{self.failure}"

    def to_json(self) -> dict[str, JsonValue]:
        """The report as one JSON object, ``{"resume": {...}}``: what the ``subscribe`` command
        prints on stderr."""
        return {
            "resume": {
                "recovered": False,
                "failure": self.failure_name,
                "last_event_id": self.last_event_id,
                "replayed": self.replayed,
                "oldest_retained_id": self.oldest_retained_id,
                "session_id": self.session_id,
            }
        }


@dataclass(frozen=True)
class Resumed:
    """A (re)subscription asked to resume but not every event after the last id could be
    recovered. Never hidden."""

    report: ResumeReport


#: One item of a subscription: match it with ``case Event(...)`` / ``case Resumed(report)``.
SubscriptionItem = Union[Event, Resumed]

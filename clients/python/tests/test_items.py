"""Events and resume reports, from the wire to what the application and the command see."""

from __future__ import annotations

from durable_iterator import Event, ResumeFailure, ResumeReport
from durable_iterator.v1 import durable_iterator_pb2 as pb


def outcome(requested: bool, recovered: bool, failure: int = 0) -> pb.ResumeOutcome:
    return pb.ResumeOutcome(
        requested=requested,
        recovered=recovered,
        failure=failure,  # type: ignore[arg-type]
        replayed=3,
        oldest_retained_id="e-2",
    )


def test_only_unrecovered_requested_resumes_are_reported() -> None:
    assert ResumeReport.from_outcome(outcome(False, False), None, "s") is None
    assert ResumeReport.from_outcome(outcome(True, True), "e", "s") is None
    report = ResumeReport.from_outcome(outcome(True, False, pb.RESUME_FAILURE_TOO_OLD), "e-1", "s")
    assert report == ResumeReport("e-1", ResumeFailure.TOO_OLD, 3, "e-2", "s")
    assert report.to_json() == {
        "resume": {
            "recovered": False,
            "failure": "too_old",
            "last_event_id": "e-1",
            "replayed": 3,
            "oldest_retained_id": "e-2",
            "session_id": "s",
        }
    }


def test_every_failure_has_its_name_and_unknown_ones_a_number() -> None:
    names = {
        pb.RESUME_FAILURE_RESUME_OFF: "resume_off",
        pb.RESUME_FAILURE_TOO_OLD: "too_old",
        pb.RESUME_FAILURE_STORE_RESET: "store_reset",
        pb.RESUME_FAILURE_UNKNOWN_ID: "unknown_id",
        0: "unknown_reason_0",
        9: "unknown_reason_9",
    }
    for number, name in names.items():
        report = ResumeReport.from_outcome(outcome(True, False, number), "e", "s")
        assert report is not None and report.failure_name == name
    unknown = ResumeReport.from_outcome(outcome(True, False, 9), "e", "s")
    assert unknown is not None and unknown.failure == 9


def test_no_oldest_retained_id_is_none() -> None:
    bare = pb.ResumeOutcome(requested=True, recovered=False, failure=pb.RESUME_FAILURE_RESUME_OFF)
    report = ResumeReport.from_outcome(bare, None, "s")
    assert report is not None
    assert (report.oldest_retained_id, report.last_event_id) == (None, "")


def test_event_to_json_is_the_command_line_shape() -> None:
    event = pb.Event(id="e-1", published_at_ms=7)
    event.json.struct_value.fields["n"].number_value = 2
    parsed = Event.from_proto(event)
    assert parsed == Event(id="e-1", payload={"n": 2}, published_at_ms=7)
    assert list(parsed.to_json()) == ["id", "payload", "published_at_ms"]

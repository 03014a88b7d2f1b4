import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { create } from "@bufbuild/protobuf";

import { EventSchema, ResumeFailure, ResumeOutcomeSchema } from "../../src/gen/durable_iterator/v1/durable_iterator_pb.js";
import { eventFromProto, eventToJson, reportFromOutcome, reportToJson } from "../../src/items.js";
import { jsonToProto } from "../../src/json.js";

describe("items", () => {
  it("reports only resumes that were asked for and did not recover everything", () => {
    const outcome = (requested: boolean, recovered: boolean, failure: number) =>
      create(ResumeOutcomeSchema, { requested, recovered, failure, replayed: 3n, oldestRetainedId: "e-2" });
    assert.equal(reportFromOutcome(outcome(false, false, 0), undefined, "s"), undefined);
    assert.equal(reportFromOutcome(outcome(true, true, 0), "e", "s"), undefined);
    assert.equal(reportFromOutcome(undefined, "e", "s"), undefined);
    const report = reportFromOutcome(outcome(true, false, ResumeFailure.TOO_OLD), "e-1", "s");
    assert.deepEqual(report, {
      kind: "resumed",
      lastEventId: "e-1",
      failure: "too_old",
      replayed: 3,
      oldestRetainedId: "e-2",
      sessionId: "s",
    });
    assert.deepEqual(reportToJson(report!), {
      resume: { recovered: false, failure: "too_old", last_event_id: "e-1", replayed: 3, oldest_retained_id: "e-2", session_id: "s" },
    });
    const unknown = reportFromOutcome(outcome(true, false, 42), "e-1", "s");
    assert.equal(unknown?.failure, 42);
    assert.equal((reportToJson(unknown!) as { resume: { failure: string } }).resume.failure, "unknown_reason_42");
    const names: Array<[ResumeFailure, string]> = [
      [ResumeFailure.RESUME_OFF, "resume_off"],
      [ResumeFailure.STORE_RESET, "store_reset"],
      [ResumeFailure.UNKNOWN_ID, "unknown_id"],
    ];
    for (const [failure, name] of names) assert.equal(reportFromOutcome(outcome(true, false, failure), "e", "s")?.failure, name);
  });

  it("turns payloads into plain JSON: json, typed, none", () => {
    const json = eventFromProto(
      create(EventSchema, { id: "e-1", payload: { case: "json", value: jsonToProto({ n: 1 }) }, publishedAtMs: 7n }),
    );
    assert.deepEqual(json, { kind: "event", id: "e-1", payload: { n: 1 }, publishedAtMs: 7 });
    assert.equal(JSON.stringify(eventToJson(json)), '{"id":"e-1","payload":{"n":1},"published_at_ms":7}');
    const typed = eventFromProto(
      create(EventSchema, {
        id: "e-2",
        payload: { case: "typed", value: { typeUrl: "type.googleapis.com/x.Y", value: new Uint8Array([1, 2, 255]) } },
      }),
    );
    assert.deepEqual(typed.payload, { "@type": "type.googleapis.com/x.Y", value: "AQL/" });
    assert.equal(eventFromProto(create(EventSchema, { id: "e-3" })).payload, null);
  });
});

/**
 * What a subscription yields: events, and resume outcomes that could not recover everything.
 *
 * @module
 */
import { base64Encode } from "@bufbuild/protobuf/wire";

import {
  ResumeFailure as ProtoResumeFailure,
  type Event as ProtoEvent,
  type ResumeOutcome,
} from "./gen/durable_iterator/v1/durable_iterator_pb.js";
import { protoToJson, type JsonValue } from "./json.js";

/** An event of the channel. */
export interface Event {
  readonly kind: "event";
  /** Strictly increasing per channel; the subscription resumes after the last one received. */
  readonly id: string;
  /**
   * The payload as published, a plain JSON value. A typed protobuf payload is
   * `{"@type": typeUrl, "value": base64}`; an event without payload has `null`.
   */
  readonly payload: JsonValue;
  /** When the server stored the event, in Unix milliseconds. */
  readonly publishedAtMs: number;
}

/**
 * Why a resume could not recover everything: the server keeps no history (`resume_off`), the
 * events after the last id left the retention window (`too_old`), the id is from another epoch
 * of the store (`store_reset`), the id was never issued on the channel (`unknown_id`), or a
 * reason this client does not know (its number, from a newer server).
 */
export type ResumeFailure = "resume_off" | "too_old" | "store_reset" | "unknown_id" | number;

/**
 * A (re)subscription asked to resume but not every event after the last id could be recovered:
 * events may be missing before the next event. Never hidden; reload what the application shows
 * from its source of truth.
 */
export interface ResumeReport {
  readonly kind: "resumed";
  /** The id the subscription asked to resume after. */
  readonly lastEventId: string;
  readonly failure: ResumeFailure;
  /** How many events (the retained part) are replayed before the stream goes live. */
  readonly replayed: number;
  /** The oldest event id still retained on the channel, if any. */
  readonly oldestRetainedId: string | undefined;
  /** The session the stream belongs to. */
  readonly sessionId: string;
}

/** One item of a subscription: `item.kind` is `"event"` or `"resumed"`. */
export type SubscriptionItem = Event | ResumeReport;

/** The event of a received protobuf message. */
export function eventFromProto(event: ProtoEvent): Event {
  let payload: JsonValue;
  switch (event.payload.case) {
    case "json":
      payload = protoToJson(event.payload.value);
      break;
    case "typed":
      payload = {
        "@type": event.payload.value.typeUrl,
        value: base64Encode(event.payload.value.value),
      };
      break;
    default:
      payload = null;
  }
  return { kind: "event", id: event.id, payload, publishedAtMs: Number(event.publishedAtMs) };
}

/**
 * The report of `outcome`, if it is one to tell the application about: a resume that was asked
 * for and did not recover everything.
 */
export function reportFromOutcome(
  outcome: ResumeOutcome | undefined,
  lastEventId: string | undefined,
  sessionId: string,
): ResumeReport | undefined {
  if (!outcome || !outcome.requested || outcome.recovered) return undefined;
  return {
    kind: "resumed",
    lastEventId: lastEventId ?? "",
    failure: failureOf(outcome.failure),
    replayed: Number(outcome.replayed),
    oldestRetainedId: outcome.oldestRetainedId === "" ? undefined : outcome.oldestRetainedId,
    sessionId,
  };
}

function failureOf(failure: ProtoResumeFailure): ResumeFailure {
  switch (failure) {
    case ProtoResumeFailure.RESUME_OFF:
      return "resume_off";
    case ProtoResumeFailure.TOO_OLD:
      return "too_old";
    case ProtoResumeFailure.STORE_RESET:
      return "store_reset";
    case ProtoResumeFailure.UNKNOWN_ID:
      return "unknown_id";
    default:
      return failure;
  }
}

/** The event as the command line prints it: `{"id", "payload", "published_at_ms"}`. */
export function eventToJson(event: Event): JsonValue {
  return { id: event.id, payload: event.payload, published_at_ms: event.publishedAtMs };
}

/** The report as the command line prints it: `{"resume": {...}}`. */
export function reportToJson(report: ResumeReport): JsonValue {
  return {
    resume: {
      recovered: false,
      failure:
        typeof report.failure === "number" ? `unknown_reason_${report.failure}` : report.failure,
      last_event_id: report.lastEventId,
      replayed: report.replayed,
      oldest_retained_id: report.oldestRetainedId ?? null,
      session_id: report.sessionId,
    },
  };
}

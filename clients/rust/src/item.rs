//! What a subscription yields: events, and resume outcomes that could not recover everything.

use crate::pb;

/// One item of a subscription stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionItem {
    /// An event of the channel.
    Event(Event),
    /// A (re)subscription asked to resume but not every event after the last id could be
    /// recovered: events may be missing before the next [`SubscriptionItem::Event`]. Never
    /// hidden; reload what the application shows from its source of truth.
    Resumed(ResumeReport),
}

/// An event as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Strictly increasing per channel; the subscription resumes after the last one received.
    pub id: String,
    /// The payload as published.
    pub payload: Payload,
    /// When the server stored the event, in Unix milliseconds.
    pub published_at_ms: i64,
}

/// An event's payload, as published.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A JSON value (`google.protobuf.Value` on the wire).
    Json(serde_json::Value),
    /// A typed protobuf payload (`google.protobuf.Any`).
    Typed {
        /// The type of the message (`type.googleapis.com/...`).
        type_url: String,
        /// The encoded message.
        value: Vec<u8>,
    },
    /// The event carried no payload.
    None,
}

impl Event {
    pub(crate) fn from_proto(event: pb::Event) -> Self {
        let payload = match event.payload {
            Some(pb::event::Payload::Json(value)) => {
                Payload::Json(durable_iterator_contract::json::from_proto(&value))
            }
            Some(pb::event::Payload::Typed(any)) => Payload::Typed {
                type_url: any.type_url,
                value: any.value,
            },
            None => Payload::None,
        };
        Self {
            id: event.id,
            payload,
            published_at_ms: event.published_at_ms,
        }
    }

    /// The JSON payload, if the event has one.
    pub fn json(&self) -> Option<&serde_json::Value> {
        match &self.payload {
            Payload::Json(value) => Some(value),
            _ => None,
        }
    }

    /// The event as one JSON object, `{"id", "payload", "published_at_ms"}` (a typed payload
    /// becomes `{"@type": type_url, "value": base64}`): what the command line prints.
    pub fn to_json(&self) -> serde_json::Value {
        use base64::{Engine, engine::general_purpose::STANDARD};
        let payload = match &self.payload {
            Payload::Json(value) => value.clone(),
            Payload::Typed { type_url, value } => {
                serde_json::json!({ "@type": type_url, "value": STANDARD.encode(value) })
            }
            Payload::None => serde_json::Value::Null,
        };
        serde_json::json!({
            "id": self.id,
            "payload": payload,
            "published_at_ms": self.published_at_ms,
        })
    }
}

/// Why a resume could not recover everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeFailure {
    /// The server keeps no history (retention 0).
    ResumeOff,
    /// Events after the last id have already left the retention window.
    TooOld,
    /// The id is from another epoch of the store: its history was lost or replaced.
    StoreReset,
    /// The id was never issued on this channel.
    UnknownId,
    /// A reason this client does not know (a newer server).
    Other(i32),
}

/// The outcome of a resume that did not recover everything.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeReport {
    /// The id the subscription asked to resume after.
    pub last_event_id: String,
    /// Why not everything was recovered.
    pub failure: ResumeFailure,
    /// How many events (the retained part) are replayed before the stream goes live.
    pub replayed: u64,
    /// The oldest event id still retained on the channel, if any.
    pub oldest_retained_id: Option<String>,
    /// The session the stream belongs to.
    pub session_id: String,
}

impl ResumeReport {
    /// The report of `outcome`, if it is one to tell the application about: a resume that
    /// was asked for and did not recover everything.
    pub(crate) fn from_outcome(
        outcome: &pb::ResumeOutcome,
        last_event_id: Option<&str>,
        session_id: &str,
    ) -> Option<Self> {
        if !outcome.requested || outcome.recovered {
            return None;
        }
        let failure = match outcome.failure() {
            pb::ResumeFailure::ResumeOff => ResumeFailure::ResumeOff,
            pb::ResumeFailure::TooOld => ResumeFailure::TooOld,
            pb::ResumeFailure::StoreReset => ResumeFailure::StoreReset,
            pb::ResumeFailure::UnknownId => ResumeFailure::UnknownId,
            pb::ResumeFailure::Unspecified => ResumeFailure::Other(outcome.failure),
        };
        Some(Self {
            last_event_id: last_event_id.unwrap_or_default().to_owned(),
            failure,
            replayed: outcome.replayed,
            oldest_retained_id: (!outcome.oldest_retained_id.is_empty())
                .then(|| outcome.oldest_retained_id.clone()),
            session_id: session_id.to_owned(),
        })
    }

    /// The report as one JSON object (what the command line prints to stderr).
    pub fn to_json(&self) -> serde_json::Value {
        let failure = match self.failure {
            ResumeFailure::ResumeOff => "resume_off".to_owned(),
            ResumeFailure::TooOld => "too_old".to_owned(),
            ResumeFailure::StoreReset => "store_reset".to_owned(),
            ResumeFailure::UnknownId => "unknown_id".to_owned(),
            ResumeFailure::Other(code) => format!("unknown_reason_{code}"),
        };
        serde_json::json!({
            "resume": {
                "recovered": false,
                "failure": failure,
                "last_event_id": self.last_event_id,
                "replayed": self.replayed,
                "oldest_retained_id": self.oldest_retained_id,
                "session_id": self.session_id,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unrecovered_requested_resumes_are_reported() {
        let outcome = |requested, recovered, failure: pb::ResumeFailure| pb::ResumeOutcome {
            requested,
            recovered,
            failure: failure as i32,
            replayed: 3,
            oldest_retained_id: "e-2".into(),
        };
        let u = pb::ResumeFailure::Unspecified;
        assert_eq!(
            ResumeReport::from_outcome(&outcome(false, false, u), None, "s"),
            None
        );
        assert_eq!(
            ResumeReport::from_outcome(&outcome(true, true, u), Some("e"), "s"),
            None
        );
        let report = ResumeReport::from_outcome(
            &outcome(true, false, pb::ResumeFailure::TooOld),
            Some("e-1"),
            "s",
        )
        .unwrap();
        assert_eq!(report.failure, ResumeFailure::TooOld);
        assert_eq!(report.oldest_retained_id.as_deref(), Some("e-2"));
        assert_eq!(report.to_json()["resume"]["failure"], "too_old");
    }
}

//! `PublishRequest` and `PublishBatchRequest` as the server reads them, the payload kept
//! encoded: `json` and `typed` have the same field numbers in `PublishRequest` and `Event`, so
//! a payload is the same bytes in the request and in the event's frame.
//!
//! A request whose payloads are written as prost writes them (every client this project ships,
//! and most others) is read in one pass, each payload a slice of the request's buffer, checked
//! by [`canonical`] rather than decoded into a `google.protobuf.Value` and encoded again.
//! Anything else is decoded with prost as before and its payloads encoded again: the same
//! refusals, the same nesting limit, the same bytes to subscribers.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use tonic::Status;

use super::{
    canonical::{self, Reader},
    codec::{self, DecodeRequest},
};
use crate::{filter::Filter, pb, wire};

/// A `Publish` request (the contract's `PublishRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishRequest {
    /// The channel to publish to; events of a batch read in one pass share it with the event
    /// before when it is the same.
    pub channel: Arc<str>,
    /// `json` or `typed`, encoded as `Event`'s `oneof payload` field; `None` when neither is
    /// set.
    pub payload: Option<Bytes>,
    /// Who receives the event (`tags`, `targets`, `exclude`); shared like the channel.
    pub filter: Arc<Filter>,
    /// The publisher's key for the event, if it sent one.
    pub idempotency_key: Option<String>,
}

/// A `PublishBatch` request (the contract's `PublishBatchRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishBatchRequest {
    /// The events, in order.
    pub events: Vec<PublishRequest>,
}

impl From<pb::PublishRequest> for PublishRequest {
    fn from(request: pb::PublishRequest) -> Self {
        let payload = request.payload.map(|payload| {
            wire::encode_payload(&match payload {
                pb::publish_request::Payload::Json(value) => pb::event::Payload::Json(value),
                pb::publish_request::Payload::Typed(any) => pb::event::Payload::Typed(any),
            })
        });
        Self {
            channel: request.channel.into(),
            payload,
            filter: Arc::new(Filter {
                tags: request.tags.map(|list| list.values),
                targets: request.targets.map(|list| list.values),
                exclude: request.exclude,
            }),
            idempotency_key: request.idempotency_key,
        }
    }
}

impl From<pb::PublishBatchRequest> for PublishBatchRequest {
    fn from(request: pb::PublishBatchRequest) -> Self {
        Self {
            events: request.events.into_iter().map(Into::into).collect(),
        }
    }
}

impl DecodeRequest for PublishRequest {
    fn decode_request(mut message: impl Buf) -> Result<Self, Status> {
        let message = message.copy_to_bytes(message.remaining());
        match read_event(&message, &message[..], None) {
            Some((request, _)) => Ok(request),
            None => codec::decode_request::<pb::PublishRequest>(message).map(Into::into),
        }
    }
}

impl DecodeRequest for PublishBatchRequest {
    fn decode_request(mut message: impl Buf) -> Result<Self, Status> {
        let message = message.copy_to_bytes(message.remaining());
        match read_batch(&message) {
            Some(request) => Ok(request),
            None => codec::decode_request::<pb::PublishBatchRequest>(message).map(Into::into),
        }
    }
}

/// The batch in `message`, if every part of it is in the form prost writes.
fn read_batch(message: &Bytes) -> Option<PublishBatchRequest> {
    let mut reader = Reader::new(message);
    let mut events = Vec::with_capacity(count_fields(message));
    let mut previous: Option<Fields<'_>> = None;
    while !reader.is_done() {
        // Field 1, `events`: nothing else is in a batch.
        if reader.byte()? != 0x0a {
            return None;
        }
        let body = reader.length_delimited()?;
        let (event, fields) = read_event(message, body, previous.as_ref().zip(events.last()))?;
        events.push(event);
        previous = Some(fields);
    }
    Some(PublishBatchRequest { events })
}

/// How many fields `message` holds, if it is made of length-delimited ones (a batch's events):
/// the room to make for them at once.
fn count_fields(message: &[u8]) -> usize {
    let mut reader = Reader::new(message);
    let mut count = 0;
    while reader.byte().is_some() && reader.length_delimited().is_some() {
        count += 1;
    }
    count
}

/// Where an event's channel and filter are in the request, to tell whether the next event has
/// the same ones without decoding them.
struct Fields<'a> {
    channel: &'a [u8],
    /// `None` if the event has an `exclude` (not compared: rare).
    filter: Option<FilterFields<'a>>,
}

/// The bodies of an event's `tags` and `targets` fields.
type FilterFields<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// The event encoded in `bytes`, a part of `message`, if it is read in one pass: no field
/// twice (but `exclude`), no unknown field, a canonical payload. The channel and filter are
/// those of `previous` (the event before, and where its fields were) when written the same:
/// then they are neither checked (as UTF-8, as a `StringList`) nor decoded again.
fn read_event<'a>(
    message: &Bytes,
    bytes: &'a [u8],
    previous: Option<(&Fields<'_>, &PublishRequest)>,
) -> Option<(PublishRequest, Fields<'a>)> {
    let mut channel: &[u8] = b"";
    let mut payload = None;
    let (mut tags, mut targets) = (None, None);
    let mut excluded = false;
    let mut idempotency_key = None;
    let mut seen = [false; 8];
    let mut once = |field: u8| !std::mem::replace(&mut seen[usize::from(field)], true);
    let mut reader = Reader::new(bytes);
    while !reader.is_done() {
        let key_at = reader.position();
        let key = reader.byte()?;
        // Every field is length-delimited (wire type 2); field numbers fit the key's byte.
        let field = key >> 3;
        if key & 7 != 2 || field == 0 || field > 7 || (field != 6 && !once(field)) {
            return None;
        }
        match field {
            1 => channel = reader.length_delimited()?,
            2 | 3 => {
                // One payload: `json` and `typed` are one `oneof`.
                if !once(if field == 2 { 3 } else { 2 }) {
                    return None;
                }
                let body = reader.length_delimited()?;
                let canonical = if field == 2 {
                    canonical::is_canonical_value(body)
                } else {
                    canonical::is_canonical_any(body)
                };
                if !canonical {
                    return None;
                }
                let end = reader.position();
                payload = Some(message.slice_ref(&bytes[key_at..end]));
            }
            4 => tags = Some(reader.length_delimited()?),
            5 => targets = Some(reader.length_delimited()?),
            6 => {
                reader.string()?;
                excluded = true;
            }
            _ => idempotency_key = Some(reader.string()?.to_owned()),
        }
    }
    let fields = Fields {
        channel,
        filter: (!excluded).then_some((tags, targets)),
    };
    let channel = match previous {
        Some((before, event)) if before.channel == fields.channel => event.channel.clone(),
        _ => Arc::from(std::str::from_utf8(channel).ok()?),
    };
    let filter = match previous {
        Some((before, event)) if fields.filter.is_some() && before.filter == fields.filter => {
            event.filter.clone()
        }
        _ if !tags.is_none_or(is_string_list) || !targets.is_none_or(is_string_list) => {
            return None;
        }
        _ => Arc::new(Filter {
            tags: tags.map(strings),
            targets: targets.map(strings),
            exclude: if excluded {
                excludes(bytes)
            } else {
                Vec::new()
            },
        }),
    };
    let request = PublishRequest {
        channel,
        payload,
        filter,
        idempotency_key,
    };
    Some((request, fields))
}

/// Whether `bytes` are a `StringList` (field 1, repeated strings) and nothing else.
fn is_string_list(bytes: &[u8]) -> bool {
    let mut reader = Reader::new(bytes);
    while !reader.is_done() {
        if reader.byte() != Some(0x0a) || reader.string().is_none() {
            return false;
        }
    }
    true
}

/// The strings of a `StringList` body that [`is_string_list`] passed.
fn strings(list: &[u8]) -> Vec<String> {
    let mut reader = Reader::new(list);
    let mut values = Vec::new();
    while reader.byte().is_some()
        && let Some(value) = reader.string()
    {
        values.push(value.to_owned());
    }
    values
}

/// The `exclude` strings (field 6) of an event that [`read_event`] read.
fn excludes(event: &[u8]) -> Vec<String> {
    let mut reader = Reader::new(event);
    let mut values = Vec::new();
    while let Some(key) = reader.byte() {
        let Some(body) = reader.length_delimited() else {
            break;
        };
        if key == 0x32
            && let Ok(value) = std::str::from_utf8(body)
        {
            values.push(value.to_owned());
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::{Any, ListValue, Struct, Value, value::Kind};

    use super::*;

    fn json(kind: Kind) -> Option<pb::publish_request::Payload> {
        Some(pb::publish_request::Payload::Json(Value {
            kind: Some(kind),
        }))
    }

    fn requests() -> Vec<pb::PublishRequest> {
        let list = |values: &[&str]| pb::StringList {
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        };
        vec![
            pb::PublishRequest::default(),
            pb::PublishRequest {
                channel: "chat:1".into(),
                payload: json(Kind::StringValue("hello".into())),
                ..Default::default()
            },
            pb::PublishRequest {
                channel: "c".into(),
                payload: json(Kind::StructValue(Struct {
                    fields: [
                        ("a".to_owned(), Value::default()),
                        (
                            "b".to_owned(),
                            Value {
                                kind: Some(Kind::ListValue(ListValue {
                                    values: vec![Value::default()],
                                })),
                            },
                        ),
                    ]
                    .into(),
                })),
                tags: Some(list(&["t1", "t2"])),
                targets: Some(list(&[])),
                exclude: vec!["s1".into(), "s2".into()],
                idempotency_key: Some(String::new()),
            },
            pb::PublishRequest {
                channel: "c".into(),
                payload: Some(pb::publish_request::Payload::Typed(Any {
                    type_url: "type.googleapis.com/a.B".into(),
                    value: vec![8, 1],
                })),
                tags: Some(list(&[""])),
                idempotency_key: Some("k".into()),
                ..Default::default()
            },
            pb::PublishRequest {
                payload: Some(pb::publish_request::Payload::Json(Value::default())),
                ..Default::default()
            },
        ]
    }

    /// What the server read before: prost's decoding, the payload encoded again.
    fn decoded_by_prost<M, T>(bytes: &[u8]) -> Result<T, tonic::Code>
    where
        M: Message + Default + Into<T>,
    {
        codec::decode_request::<M>(bytes)
            .map(Into::into)
            .map_err(|status| status.code())
    }

    #[test]
    fn requests_as_prost_writes_them_are_read_in_one_pass_as_prost_reads_them() {
        let batch = pb::PublishBatchRequest { events: requests() };
        let bytes = Bytes::from(batch.encode_to_vec());
        let read = read_batch(&bytes).expect("read in one pass");
        assert_eq!(
            Ok(read.clone()),
            decoded_by_prost::<pb::PublishBatchRequest, _>(&bytes)
        );
        // Each payload is a slice of the request: not copied.
        let range = bytes.as_ptr_range();
        for payload in read.events.iter().filter_map(|e| e.payload.as_ref()) {
            assert!(range.contains(&payload.as_ptr()));
        }
        for request in requests() {
            let bytes = Bytes::from(request.encode_to_vec());
            assert_eq!(
                read_event(&bytes, &bytes[..], None)
                    .map(|(request, _)| request)
                    .as_ref(),
                decoded_by_prost::<pb::PublishRequest, PublishRequest>(&bytes)
                    .ok()
                    .as_ref()
            );
        }
    }

    #[test]
    fn other_forms_are_decoded_by_prost() {
        let cases: &[(&str, &[u8])] = &[
            ("an unknown field", b"\x0a\x01c\x40\x01"),
            ("the channel twice", b"\x0a\x01a\x0a\x01b"),
            (
                "tags twice (prost merges them)",
                b"\x22\x03\x0a\x01a\x22\x03\x0a\x01b",
            ),
            ("json then typed", b"\x12\x00\x1a\x00"),
            ("json twice", b"\x12\x02\x20\x01\x12\x00"),
            ("a padded json length", b"\x12\x82\x00\x20\x01"),
            ("a non-canonical value", b"\x12\x02\x20\x02"),
            ("a channel of invalid UTF-8", b"\x0a\x01\xff"),
            ("a truncated field", b"\x0a\x05ab"),
            ("an unknown field in tags", b"\x22\x02\x10\x01"),
        ];
        for (what, bytes) in cases {
            let message = Bytes::from_static(bytes);
            assert!(read_event(&message, bytes, None).is_none(), "{what}");
            // The server still answers what prost answers.
            let decoded = <PublishRequest as DecodeRequest>::decode_request(*bytes)
                .map_err(|status| status.code());
            assert_eq!(
                decoded,
                decoded_by_prost::<pb::PublishRequest, _>(bytes),
                "{what}"
            );
        }
        let json_then_typed = PublishRequest::decode_request(&b"\x12\x00\x1a\x00"[..]).unwrap();
        assert_eq!(json_then_typed.payload.as_deref(), Some(&b"\x1a\x00"[..]));
        let invalid = PublishBatchRequest::decode_request(&b"\x0a\x03\x0a\x01\xff"[..]);
        assert_eq!(
            invalid.unwrap_err().code(),
            tonic::Code::InvalidArgument,
            "refused as before"
        );
    }

    #[test]
    fn events_of_a_batch_share_a_channel_and_filter_written_as_the_one_before() {
        let event = |channel: &str, tags: Option<&[&str]>, exclude: &[&str]| pb::PublishRequest {
            channel: channel.into(),
            payload: json(Kind::BoolValue(true)),
            tags: tags.map(|tags| pb::StringList {
                values: tags.iter().map(|t| (*t).to_owned()).collect(),
            }),
            exclude: exclude.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        };
        let batch = pb::PublishBatchRequest {
            events: vec![
                event("a", Some(&["t"]), &[]),
                event("a", Some(&["t"]), &[]),
                event("b", Some(&["t"]), &[]),
                event("b", Some(&["u"]), &[]),
                event("b", None, &[]),
                event("b", None, &["s"]),
                event("b", None, &["s"]),
            ],
        };
        let bytes = Bytes::from(batch.encode_to_vec());
        let read = read_batch(&bytes).expect("read in one pass");
        assert_eq!(
            Ok(read.clone()),
            decoded_by_prost::<pb::PublishBatchRequest, _>(&bytes)
        );
        let shared = |i: usize| {
            let (before, event) = (&read.events[i - 1], &read.events[i]);
            (
                Arc::ptr_eq(&before.channel, &event.channel),
                Arc::ptr_eq(&before.filter, &event.filter),
            )
        };
        assert_eq!(shared(1), (true, true));
        assert_eq!(shared(2), (false, true));
        assert_eq!(shared(3), (true, false));
        assert_eq!(shared(4), (true, false));
        assert_eq!(shared(5), (true, false));
        // A filter with `exclude` is not compared: equal, not shared.
        assert_eq!(shared(6), (true, false));
        assert_eq!(read.events[6].filter.exclude, ["s"]);
    }

    #[test]
    fn nesting_deeper_than_prost_allows_is_refused_as_before() {
        let mut value = Value::default();
        for _ in 0..120 {
            value = Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![value],
                })),
            };
        }
        let request = pb::PublishRequest {
            channel: "c".into(),
            payload: Some(pb::publish_request::Payload::Json(value)),
            ..Default::default()
        };
        let bytes = request.encode_to_vec();
        let status = PublishRequest::decode_request(&bytes[..]).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("recursion limit"), "{status:?}");
    }
}

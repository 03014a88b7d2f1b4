//! Events as the server keeps them, and their ids.
//!
//! An event id is `<epoch>-<seq>` in fixed-width hex (`3f9a12c4-000000000000002a`): `seq` counts
//! up from 1 per channel, `epoch` names the store's history. Fixed width keeps ids of one epoch
//! in the same order as strings as in sequence. A store that lost its history starts a new epoch,
//! so an id from before is recognised as such rather than confused with a new event.

use std::{
    fmt,
    ops::{Deref, Range},
    str::FromStr,
    sync::{Arc, OnceLock},
};

use bytes::{Bytes, BytesMut};

use crate::{
    filter::Filter,
    wire::{self, Encoding, Frame, GRPC_HEADER},
};

/// The epoch of a store's history.
pub type Epoch = u32;

/// A position in a channel: epoch and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventId {
    /// The store history the id belongs to: a reset store has a new one.
    pub epoch: Epoch,
    /// The event's place in its channel, from 1.
    pub seq: u64,
}

/// The text of an event id, without allocating: `<8 hex>-<16 hex>`.
pub(crate) struct EventIdText([u8; EventIdText::LEN]);

impl EventIdText {
    /// The length of every id's text.
    pub(crate) const LEN: usize = 25;

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII hex digits and '-' are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text's bytes (UTF-8: ASCII only), without checking them again.
    pub(crate) fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

impl EventId {
    /// The id as text, written without the formatting machinery (once per stored event).
    pub(crate) fn text(&self) -> EventIdText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [b'-'; EventIdText::LEN];
        for (i, byte) in text[..8].iter_mut().enumerate() {
            *byte = HEX[(self.epoch >> (28 - 4 * i) & 0xf) as usize];
        }
        for (i, byte) in text[9..].iter_mut().enumerate() {
            *byte = HEX[(self.seq >> (60 - 4 * i) & 0xf) as usize];
        }
        EventIdText(text)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// An event id that is not of the `<8 hex>-<16 hex>` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event id {0:?}: expected <8 hex digits>-<16 hex digits>")]
pub struct MalformedEventId(pub String);

impl FromStr for EventId {
    type Err = MalformedEventId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || MalformedEventId(s.chars().take(64).collect());
        let (epoch, seq) = s.split_once('-').ok_or_else(malformed)?;
        let hex = |part: &str, width: usize| {
            part.len() == width && part.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if !hex(epoch, 8) || !hex(seq, 16) {
            return Err(malformed());
        }
        Ok(Self {
            epoch: u32::from_str_radix(epoch, 16).map_err(|_| malformed())?,
            seq: u64::from_str_radix(seq, 16).map_err(|_| malformed())?,
        })
    }
}

/// An event on its way into a store: no id yet.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The payload, encoded as `Event`'s `oneof payload` field.
    pub payload: Bytes,
    /// Who receives it, live and on replay.
    pub filter: Arc<Filter>,
    /// When the server accepted it, Unix milliseconds.
    pub published_at_ms: u64,
    /// The publisher's key for this event: a later event of the channel with the same key is
    /// a duplicate of it while it is retained.
    pub idempotency_key: Option<Arc<str>>,
}

/// An event as stored and delivered. Cloning shares everything.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The event's place in its channel.
    pub seq: u64,
    /// When it was stored, in Unix milliseconds.
    pub published_at_ms: u64,
    /// Who receives it, as published (resolved to session ids).
    pub filter: Arc<Filter>,
    /// The `SubscribeResponse` every subscriber is sent, encoded once.
    pub(crate) frame: Frame,
}

impl StoredEvent {
    /// Gives `event` its place `seq` in a channel of `epoch`, and encodes its frame.
    pub fn new(epoch: Epoch, seq: u64, event: &NewEvent) -> Self {
        let batch = Self::batch(epoch, seq, std::slice::from_ref(event));
        batch.events[0].clone()
    }

    /// Gives `events` consecutive places from `first_seq` in a channel of `epoch`, and encodes
    /// them into one buffer as gRPC messages, back to back (see [`StoredBatch`]).
    pub fn batch(epoch: Epoch, first_seq: u64, events: &[NewEvent]) -> StoredBatch {
        let frame_len = |e: &NewEvent| {
            Frame::event_len(EventIdText::LEN, e.payload.len(), e.published_at_ms as i64)
        };
        let total = events.iter().map(|e| wire::message_len(frame_len(e))).sum();
        let mut buf = BytesMut::with_capacity(total);
        let mut bounds = Vec::with_capacity(events.len() + 1);
        for (event, seq) in events.iter().zip(first_seq..) {
            bounds.push(buf.len());
            let id = EventId { epoch, seq }.text();
            wire::put_header(&mut buf, frame_len(event));
            Frame::write_event(
                &mut buf,
                id.as_bytes(),
                &event.payload,
                event.published_at_ms as i64,
            );
        }
        bounds.push(buf.len());
        let wire = buf.freeze();
        let events = events
            .iter()
            .zip(first_seq..)
            .zip(bounds.windows(2))
            .map(|((event, seq), span)| Self {
                seq,
                published_at_ms: event.published_at_ms,
                filter: event.filter.clone(),
                frame: Frame::from_encoded(wire.slice(span[0] + GRPC_HEADER..span[1])),
            })
            .collect();
        StoredBatch {
            events,
            wire,
            bounds,
            compressed: Default::default(),
            duplicates: Vec::new(),
            committed_at: None,
        }
    }
}

/// Events stored together. Their frames share one buffer, where each is a whole gRPC message
/// (header and encoded `SubscribeResponse`), back to back: a subscriber sends a run of
/// consecutive events it receives as one slice of it, with no copy (see `server/subscribe_service.rs`).
#[derive(Debug, Clone)]
pub struct StoredBatch {
    events: Vec<StoredEvent>,
    wire: Bytes,
    /// Where each event starts in `wire`, and where the last one ends: `events.len() + 1`.
    bounds: Vec<usize>,
    /// The same layout for compressed streams (gzip, zstd), each made by the first subscriber
    /// that needs it and shared by the rest: a large event is compressed once per batch, not
    /// once per subscriber.
    compressed: [OnceLock<Layout>; 2],
    /// Events of the append that were not stored, being duplicates of earlier ones (by
    /// idempotency key): their place among the appended events, and the earlier event's
    /// sequence number. In order of place.
    duplicates: Vec<(usize, u64)>,
    /// When the store answered that the batch is durable, if publish stages are timed
    /// (`metrics::enable_stage_timings`).
    committed_at: Option<std::time::Instant>,
}

/// Events as gRPC messages back to back, and where each starts (and the last ends).
#[derive(Debug, Clone)]
struct Layout {
    wire: Bytes,
    bounds: Vec<usize>,
}

impl StoredBatch {
    /// The events `range` as gRPC messages, back to back: bytes a stream writes as they are.
    pub fn wire(&self, range: Range<usize>) -> Bytes {
        self.wire
            .slice(self.bounds[range.start]..self.bounds[range.end])
    }

    /// [`StoredBatch::wire`] for a stream compressed with `encoding`: events of at least
    /// [`wire::COMPRESS_AT_LEAST`] bytes compressed (once per batch), smaller ones as they are.
    pub(crate) fn wire_with(&self, range: Range<usize>, encoding: Option<Encoding>) -> Bytes {
        let needs_compression = |events: &[StoredEvent]| {
            events
                .iter()
                .any(|event| event.frame.bytes().len() >= wire::COMPRESS_AT_LEAST)
        };
        match encoding {
            Some(encoding) if needs_compression(&self.events[range.clone()]) => {
                let slot = match encoding {
                    Encoding::Gzip => 0,
                    Encoding::Zstd => 1,
                };
                let layout = self.compressed[slot].get_or_init(|| self.compressed(encoding));
                layout
                    .wire
                    .slice(layout.bounds[range.start]..layout.bounds[range.end])
            }
            _ => self.wire(range),
        }
    }

    fn compressed(&self, encoding: Encoding) -> Layout {
        let mut buf = BytesMut::with_capacity(self.wire.len());
        let mut bounds = Vec::with_capacity(self.bounds.len());
        for event in &self.events {
            bounds.push(buf.len());
            wire::put_message_with(&mut buf, event.frame.bytes(), Some(encoding));
        }
        bounds.push(buf.len());
        Layout {
            wire: buf.freeze(),
            bounds,
        }
    }

    /// The same batch, answering `duplicates` for the appended events it leaves out: each is
    /// (its place among the appended events, the sequence number of the event it duplicates),
    /// in order of place.
    pub fn with_duplicates(mut self, duplicates: Vec<(usize, u64)>) -> Self {
        self.duplicates = duplicates;
        self
    }

    /// The same batch, durable since `at` (a `metrics::stage_clock` reading).
    pub(crate) fn committed_at(mut self, at: Option<std::time::Instant>) -> Self {
        self.committed_at = at;
        self
    }

    /// When the batch was known durable, if publish stages are timed.
    pub(crate) fn committed(&self) -> Option<std::time::Instant> {
        self.committed_at
    }

    /// The sequence number answered for each appended event, in the order they were appended:
    /// its own if stored, else that of the event it duplicates.
    pub fn answers(&self) -> Vec<u64> {
        let total = self.events.len() + self.duplicates.len();
        let mut stored = self.events.iter().map(|event| event.seq);
        let mut duplicates = self.duplicates.iter().peekable();
        (0..total)
            .filter_map(|place| match duplicates.peek() {
                Some((at, seq)) if *at == place => {
                    duplicates.next();
                    Some(*seq)
                }
                _ => stored.next(),
            })
            .collect()
    }

    /// The events, without their shared wire buffer.
    pub fn into_events(self) -> Vec<StoredEvent> {
        self.events
    }

    /// Events read back from a store, as one batch: their frames copied into one wire buffer.
    pub(crate) fn from_events(mut events: Vec<StoredEvent>) -> Self {
        let total = events
            .iter()
            .map(|event| wire::message_len(event.frame.bytes().len()))
            .sum();
        let mut buf = BytesMut::with_capacity(total);
        let mut bounds = Vec::with_capacity(events.len() + 1);
        for event in &events {
            bounds.push(buf.len());
            wire::put_message(&mut buf, event.frame.bytes());
        }
        bounds.push(buf.len());
        let wire = buf.freeze();
        // The frames point into the new buffer, as a stored batch's do: the events' own
        // buffers go, and a kept batch holds its bytes once.
        for (event, start) in events.iter_mut().zip(&bounds) {
            let end = start + wire::message_len(event.frame.bytes().len());
            event.frame = Frame::from_encoded(wire.slice(start + GRPC_HEADER..end));
        }
        Self {
            events,
            wire,
            bounds,
            compressed: Default::default(),
            duplicates: Vec::new(),
            committed_at: None,
        }
    }
}

impl Deref for StoredBatch {
    type Target = [StoredEvent];

    fn deref(&self) -> &[StoredEvent] {
        &self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_as_strings() {
        let a = EventId {
            epoch: 0x3f9a12c4,
            seq: 9,
        };
        let b = EventId {
            epoch: 0x3f9a12c4,
            seq: 10,
        };
        assert_eq!(a.to_string(), "3f9a12c4-0000000000000009");
        assert_eq!(
            EventId {
                epoch: 0x0123abcd,
                seq: 0xfedcba9876543210
            }
            .to_string(),
            "0123abcd-fedcba9876543210"
        );
        assert_eq!(a.to_string().parse::<EventId>(), Ok(a));
        assert!(a.to_string() < b.to_string());
        let max = EventId {
            epoch: u32::MAX,
            seq: u64::MAX,
        };
        assert_eq!(max.to_string().parse::<EventId>(), Ok(max));
    }

    #[test]
    fn a_batch_encodes_the_same_frames_as_one_by_one() {
        let events: Vec<NewEvent> = [&b"\x12\x02\x08\x01"[..], b"", b"\x12\x00"]
            .iter()
            .enumerate()
            .map(|(n, payload)| NewEvent {
                payload: Bytes::copy_from_slice(payload),
                filter: Arc::new(Filter::everyone()),
                published_at_ms: 1_000 + n as u64,
                idempotency_key: None,
            })
            .collect();
        let batch = StoredEvent::batch(7, 41, &events);
        assert_eq!(batch.len(), 3);
        for (n, (stored, event)) in batch.iter().zip(&events).enumerate() {
            let seq = 41 + n as u64;
            let id = EventId { epoch: 7, seq }.text();
            let mut alone = BytesMut::new();
            Frame::write_event(
                &mut alone,
                id.as_bytes(),
                &event.payload,
                event.published_at_ms as i64,
            );
            let alone = Frame::from_encoded(alone.freeze());
            assert_eq!(stored.seq, seq);
            assert_eq!(stored.frame, alone);
            assert_eq!(StoredEvent::new(7, seq, event).frame, alone);
        }
    }

    #[test]
    fn runs_are_the_events_as_grpc_messages_back_to_back_in_the_frames_buffer() {
        let events: Vec<NewEvent> = [&b"\x12\x02\x08\x01"[..], b"", b"\x12\x00"]
            .iter()
            .map(|payload| NewEvent {
                payload: Bytes::copy_from_slice(payload),
                filter: Arc::new(Filter::everyone()),
                published_at_ms: 5,
                idempotency_key: None,
            })
            .collect();
        let batch = StoredEvent::batch(7, 41, &events);
        let message = |i: usize| {
            let mut expected = BytesMut::new();
            wire::put_message(&mut expected, batch[i].frame.bytes());
            expected.freeze()
        };
        for i in 0..3 {
            let run = batch.wire(i..i + 1);
            assert_eq!(run, message(i));
            // The frame is the message inside the run: the bytes are held once.
            assert_eq!(run[GRPC_HEADER..].as_ptr(), batch[i].frame.bytes().as_ptr());
        }
        assert_eq!(
            batch.wire(0..3),
            [message(0), message(1), message(2)].concat()
        );
        assert_eq!(batch.wire(1..3), [message(1), message(2)].concat());
        assert!(batch.wire(2..2).is_empty());
    }

    #[test]
    fn a_gzip_stream_shares_one_compression_of_the_batch() {
        let payload = |len: usize| NewEvent {
            payload: Bytes::from(vec![b'z'; len]),
            filter: Arc::new(Filter::everyone()),
            published_at_ms: 5,
            idempotency_key: None,
        };
        let batch = StoredEvent::batch(7, 1, &[payload(10), payload(4_000), payload(10)]);
        let gzip = Some(Encoding::Gzip);
        // Runs of small events are the plain shared slices.
        assert_eq!(
            batch.wire_with(0..1, gzip).as_ptr(),
            batch.wire(0..1).as_ptr()
        );
        // A run with a large event comes from one compressed layout, made once.
        let first = batch.wire_with(0..3, gzip);
        let again = batch.wire_with(1..2, gzip);
        assert!(first.len() < batch.wire(0..3).len());
        let layout = batch.compressed[0].get().expect("made on first use");
        assert!(
            batch.compressed[1].get().is_none(),
            "no zstd stream asked for it"
        );
        assert_eq!(first.as_ptr(), layout.wire.as_ptr());
        assert_eq!(again.as_ptr(), layout.wire[layout.bounds[1]..].as_ptr());
        let flags: Vec<bool> = (0..3)
            .map(|i| {
                wire::read_header(&layout.wire[layout.bounds[i]..])
                    .unwrap()
                    .compressed
            })
            .collect();
        assert_eq!(flags, [false, true, false]);
        let header = wire::read_header(&again).unwrap();
        let decompressed = Encoding::Gzip
            .decompress(&again[GRPC_HEADER..GRPC_HEADER + header.len], 1 << 20)
            .unwrap();
        assert_eq!(decompressed, batch[1].frame.bytes());
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "-",
            "3f9a12c4",
            "3f9a12c4-9",
            "3f9a12c4-000000000000000g",
            "3f9a12c-00000000000000009",
            "+f9a12c4-0000000000000009",
            "3f9a12c4-+000000000000009",
            "3f9a12c4-0000000000000009-",
            "ä",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad}");
        }
    }
}

//! Events handed to subscribers together, with their gRPC wire form laid out once.
//!
//! Every event of a batch is written once, with its 5-byte gRPC message header, into one buffer
//! that all subscribers share. A subscriber sends a run of consecutive events it receives as one
//! slice of that buffer: one reference count and no copy per run, instead of a copy and two
//! reference counts (on a cache line every core touches) per event and subscriber.

use std::{ops::Range, sync::Arc};

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::StoredEvent;

/// Events stored together, shared by every subscriber of the channel. Cloning shares them.
#[derive(Clone)]
pub struct Batch(Arc<Framed>);

struct Framed {
    events: Vec<StoredEvent>,
    /// Each event as a gRPC message (header and encoded `SubscribeResponse`), back to back.
    wire: Bytes,
    /// Where each event starts in `wire`, and where the last one ends: `events.len() + 1`.
    bounds: Vec<u32>,
}

impl Batch {
    /// Lays out the wire form of `events`.
    pub fn new(events: Vec<StoredEvent>) -> Self {
        let total: usize = events
            .iter()
            .map(|e| grpc_message_len(e.frame.bytes().len()))
            .sum();
        let mut wire = BytesMut::with_capacity(total);
        let mut bounds = Vec::with_capacity(events.len() + 1);
        for event in &events {
            bounds.push(wire.len() as u32);
            put_grpc_message(&mut wire, event.frame.bytes());
        }
        bounds.push(wire.len() as u32);
        Self(Arc::new(Framed {
            events,
            wire: wire.freeze(),
            bounds,
        }))
    }

    /// The events `range` as gRPC messages, back to back: bytes a stream writes as they are.
    pub fn wire(&self, range: Range<usize>) -> Bytes {
        let framed = &self.0;
        let start = framed.bounds[range.start] as usize;
        let end = framed.bounds[range.end] as usize;
        framed.wire.slice(start..end)
    }
}

impl std::ops::Deref for Batch {
    type Target = [StoredEvent];

    fn deref(&self) -> &[StoredEvent] {
        &self.0.events
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batch({} events)", self.len())
    }
}

/// The size of a gRPC message around `len` bytes of protobuf.
pub fn grpc_message_len(len: usize) -> usize {
    GRPC_HEADER + len
}

/// Bytes of a gRPC message header: a compression flag and a big-endian length.
pub const GRPC_HEADER: usize = 5;

/// Appends `message` to `buf` as an uncompressed gRPC message.
pub fn put_grpc_message(buf: &mut BytesMut, message: &[u8]) {
    buf.put_u8(0);
    buf.put_u32(message.len() as u32);
    buf.put_slice(message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::NewEvent, filter::Filter};

    #[test]
    fn runs_are_the_events_as_grpc_messages_back_to_back() {
        let events: Vec<NewEvent> = [&b"\x12\x02\x08\x01"[..], b"", b"\x12\x00"]
            .iter()
            .map(|payload| NewEvent {
                payload: Bytes::copy_from_slice(payload),
                filter: Arc::new(Filter::everyone()),
                published_at_ms: 5,
            })
            .collect();
        let batch = Batch::new(StoredEvent::batch(7, 41, &events));
        let one = |i: usize| {
            let frame = batch.get(i).unwrap().frame.bytes();
            let mut expected = BytesMut::new();
            put_grpc_message(&mut expected, frame);
            expected.freeze()
        };
        for i in 0..3 {
            assert_eq!(batch.wire(i..i + 1), one(i));
            assert_eq!(
                batch.wire(i..i + 1)[1..5],
                (one(i).len() as u32 - 5).to_be_bytes()
            );
        }
        assert_eq!(batch.wire(0..3), [one(0), one(1), one(2)].concat());
        assert_eq!(batch.wire(1..3), [one(1), one(2)].concat());
        assert!(batch.wire(2..2).is_empty());
    }
}

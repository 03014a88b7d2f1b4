//! `PublishResponse` and `PublishBatchResponse` as the server writes them: each id written
//! from the event's id into the response, where the contract's messages would hold a `String`
//! made for each (an allocation and a formatting per published event). The same bytes.

use bytes::BufMut;
use prost::encoding::{self, WireType};

use super::codec::EncodeResponse;
use crate::event::{EventId, EventIdText};

/// The answer to `Publish`: the event's id (field 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PublishResponse {
    pub(crate) id: EventId,
}

/// The answer to `PublishBatch`: the events' ids in the order of the request (field 1,
/// repeated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PublishBatchResponse {
    pub(crate) ids: Vec<EventId>,
}

/// Field 1 holding `id`'s text.
fn put_id(id: &EventId, buf: &mut impl BufMut) {
    encoding::encode_key(1, WireType::LengthDelimited, buf);
    encoding::encode_varint(EventIdText::LEN as u64, buf);
    buf.put_slice(id.text().as_bytes());
}

impl EncodeResponse for PublishResponse {
    fn encode_response(&self, buf: &mut impl BufMut) {
        put_id(&self.id, buf);
    }
}

impl EncodeResponse for PublishBatchResponse {
    fn encode_response(&self, buf: &mut impl BufMut) {
        for id in &self.ids {
            put_id(id, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb;

    #[test]
    fn the_bytes_are_the_contract_messages_bytes() {
        let ids: Vec<EventId> = [(7, 1), (0x3f9a12c4, 42), (u32::MAX, u64::MAX)]
            .into_iter()
            .map(|(epoch, seq)| EventId { epoch, seq })
            .collect();
        let mut buf = Vec::new();
        PublishBatchResponse { ids: ids.clone() }.encode_response(&mut buf);
        let expected = pb::PublishBatchResponse {
            ids: ids.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(buf, expected.encode_to_vec());

        let mut buf = Vec::new();
        PublishResponse { id: ids[1] }.encode_response(&mut buf);
        let expected = pb::PublishResponse {
            id: ids[1].to_string(),
        };
        assert_eq!(buf, expected.encode_to_vec());

        let mut buf = Vec::new();
        PublishBatchResponse::default().encode_response(&mut buf);
        assert!(buf.is_empty(), "no ids: an empty message");
    }
}

//! Whether encoded protobuf bytes are exactly what prost writes for the message they decode
//! to: then a publish's payload can be copied into the event's frame as it came, instead of
//! decoding it into a `google.protobuf.Value` and encoding that again (the same bytes).
//!
//! Only the forms prost writes pass: minimal varints, one field per `Value`, `Struct` keys in
//! increasing order and none repeated, default fields left out, no unknown field. Anything else
//! (a valid message written another way, a malformed one, one nested deeper than
//! [`MAX_DEPTH`]) is not canonical, and the caller decodes it with prost as before, which
//! answers for validity, the nesting limit and every error message.

/// Nested messages the check follows; a deeper payload is left to prost, whose own recursion
/// limit (100) is the one that applies.
const MAX_DEPTH: u32 = 32;

/// A cursor over encoded protobuf that reads only canonical forms.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Where the cursor is, from the start of the bytes.
    pub(super) fn position(&self) -> usize {
        self.at
    }

    pub(super) fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    pub(super) fn byte(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())?;
        self.at = end;
        Some(())
    }

    /// A varint in its shortest form (prost reads longer ones too, but writes these).
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = self.byte()?;
            // The tenth byte holds the 64th bit only.
            if i == 9 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                // A last byte of 0 after others is a padded, not the shortest, form.
                return (i == 0 || byte != 0).then_some(value);
            }
        }
        None
    }

    /// The body of a length-delimited field, its length in shortest form.
    pub(super) fn length_delimited(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let start = self.at;
        self.skip(len)?;
        Some(&self.bytes[start..self.at])
    }

    /// A length-delimited field that holds UTF-8.
    pub(super) fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.length_delimited()?).ok()
    }
}

/// Whether `bytes` are a `google.protobuf.Value` as prost encodes it.
pub(super) fn is_canonical_value(bytes: &[u8]) -> bool {
    value(bytes, MAX_DEPTH)
}

/// Whether `bytes` are a `google.protobuf.Any` as prost encodes it.
pub(super) fn is_canonical_any(bytes: &[u8]) -> bool {
    let mut reader = Reader::new(bytes);
    // Fields 1 (`type_url`) and 2 (`value`), in order, each left out when empty.
    if reader.peek() == Some(0x0a) {
        reader.byte();
        if reader.string().is_none_or(str::is_empty) {
            return false;
        }
    }
    if reader.peek() == Some(0x12) {
        reader.byte();
        if reader.length_delimited().is_none_or(<[u8]>::is_empty) {
            return false;
        }
    }
    reader.is_done()
}

/// A `Value`: empty (no kind), or exactly one of its `kind` fields.
fn value(bytes: &[u8], depth: u32) -> bool {
    if bytes.is_empty() {
        return true;
    }
    if depth == 0 {
        return false;
    }
    let mut reader = Reader::new(bytes);
    let kind = match reader.byte() {
        // `null_value`, an int32 enum: prost keeps any value; one byte is its shortest form.
        Some(0x08) => reader.byte().is_some_and(|v| v < 0x80),
        // `number_value`: any 8 bytes read and write back bit for bit.
        Some(0x11) => reader.skip(8).is_some(),
        Some(0x1a) => reader.string().is_some(),
        // `bool_value`: prost reads any varint, and writes 0 or 1.
        Some(0x20) => matches!(reader.byte(), Some(0 | 1)),
        Some(0x2a) => reader
            .length_delimited()
            .is_some_and(|fields| structure(fields, depth - 1)),
        Some(0x32) => reader
            .length_delimited()
            .is_some_and(|values| list(values, depth - 1)),
        _ => false,
    };
    kind && reader.is_done()
}

/// A `Struct`: its map entries in increasing key order (prost's map is a `BTreeMap`), each
/// key at most once.
fn structure(bytes: &[u8], depth: u32) -> bool {
    if depth == 0 {
        return false;
    }
    let mut reader = Reader::new(bytes);
    let mut previous: Option<&str> = None;
    while !reader.is_done() {
        if reader.byte() != Some(0x0a) {
            return false;
        }
        let Some(key) = reader.length_delimited().and_then(|e| entry(e, depth - 1)) else {
            return false;
        };
        if previous.is_some_and(|previous| previous >= key) {
            return false;
        }
        previous = Some(key);
    }
    true
}

/// A map entry of a `Struct`: the key (field 1, left out when empty), then the value (field
/// 2, left out when it has no kind). Returns the key.
fn entry(bytes: &[u8], depth: u32) -> Option<&str> {
    let mut reader = Reader::new(bytes);
    let mut key = "";
    if reader.peek() == Some(0x0a) {
        reader.byte();
        key = reader.string().filter(|key| !key.is_empty())?;
    }
    if reader.peek() == Some(0x12) {
        reader.byte();
        let value_bytes = reader.length_delimited().filter(|v| !v.is_empty())?;
        if !value(value_bytes, depth) {
            return None;
        }
    }
    reader.is_done().then_some(key)
}

/// A `ListValue`: its values (field 1), each written even when empty.
fn list(bytes: &[u8], depth: u32) -> bool {
    let mut reader = Reader::new(bytes);
    while !reader.is_done() {
        if reader.byte() != Some(0x0a) {
            return false;
        }
        if !reader
            .length_delimited()
            .is_some_and(|item| value(item, depth))
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message;
    use prost_types::{Any, ListValue, Struct, Value, value::Kind};

    use super::*;

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    fn kind(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    /// Values of every kind, nested, as a publisher builds them.
    fn samples() -> Vec<Value> {
        let object = |pairs: Vec<(&str, Value)>| {
            kind(Kind::StructValue(Struct {
                fields: pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<BTreeMap<_, _>>(),
            }))
        };
        let list = |values: Vec<Value>| kind(Kind::ListValue(ListValue { values }));
        vec![
            Value::default(),
            kind(Kind::NullValue(0)),
            kind(Kind::NumberValue(0.0)),
            kind(Kind::NumberValue(-1.5e300)),
            kind(Kind::NumberValue(f64::NAN)),
            kind(Kind::BoolValue(false)),
            kind(Kind::BoolValue(true)),
            string(""),
            string("héllo 🙂"),
            string(&"x".repeat(300)),
            object(vec![]),
            object(vec![("", string("empty key")), ("a", Value::default())]),
            object(vec![
                ("b", list(vec![Value::default(), string("x")])),
                ("a", object(vec![("z", kind(Kind::BoolValue(true)))])),
                ("ab", kind(Kind::NumberValue(2.0))),
            ]),
            list(vec![]),
            list(vec![list(vec![list(vec![])]), object(vec![])]),
        ]
    }

    #[test]
    fn what_prost_writes_is_canonical() {
        for value in samples() {
            assert!(
                is_canonical_value(&value.encode_to_vec()),
                "{value:?} as prost writes it"
            );
        }
        for any in [
            Any::default(),
            Any {
                type_url: "type.googleapis.com/x.Y".into(),
                value: vec![],
            },
            Any {
                type_url: String::new(),
                value: vec![1, 2, 3],
            },
            Any {
                type_url: "t/u".into(),
                value: vec![0],
            },
        ] {
            assert!(is_canonical_any(&any.encode_to_vec()), "{any:?}");
        }
    }

    #[test]
    fn other_encodings_of_valid_values_are_not() {
        let cases: &[(&str, &[u8])] = &[
            ("a padded length", b"\x1a\x81\x00a"),
            ("two kinds", b"\x20\x01\x20\x00"),
            ("a bool written as 2", b"\x20\x02"),
            ("a padded bool", b"\x20\x80\x00"),
            ("an unknown field", b"\x38\x01"),
            (
                "keys out of order",
                b"\x2a\x12\x0a\x07\x0a\x01b\x12\x02\x20\x01\x0a\x07\x0a\x01a\x12\x02\x20\x01",
            ),
            ("a key twice", b"\x2a\x0a\x0a\x03\x0a\x01a\x0a\x03\x0a\x01a"),
            ("an empty key written out", b"\x2a\x04\x0a\x02\x0a\x00"),
            (
                "an empty value written out",
                b"\x2a\x07\x0a\x05\x0a\x01a\x12\x00",
            ),
            (
                "value before key",
                b"\x2a\x09\x0a\x07\x12\x02\x20\x01\x0a\x01a",
            ),
        ];
        for (what, bytes) in cases {
            assert!(!is_canonical_value(bytes), "{what}");
            // Each still decodes: these are valid messages prost writes differently.
            if let Ok(decoded) = Value::decode(*bytes) {
                assert_ne!(decoded.encode_to_vec(), *bytes, "{what}");
            }
        }
        for (what, bytes) in [
            ("an empty type url written out", &b"\x0a\x00"[..]),
            ("an empty value written out", b"\x12\x00"),
            ("value before type url", b"\x12\x01\x00\x0a\x01t"),
        ] {
            assert!(!is_canonical_any(bytes), "{what}");
        }
    }

    #[test]
    fn malformed_bytes_are_not() {
        for bytes in [
            &b"\x1a\x05ab"[..],
            b"\x1a\x02\xff\xfe",
            b"\x11\x00\x00",
            b"\x2a",
            b"\x32\x02\x0a",
            b"\x1a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
        ] {
            assert!(!is_canonical_value(bytes), "{bytes:?}");
        }
    }

    #[test]
    fn deep_nesting_is_left_to_prost() {
        let mut value = string("deep");
        for _ in 0..MAX_DEPTH {
            value = kind(Kind::ListValue(ListValue {
                values: vec![value],
            }));
        }
        assert!(!is_canonical_value(&value.encode_to_vec()));
    }

    /// Every bytes the check passes decode with prost and encode back to the same bytes: over
    /// each sample with every byte changed, cut, or doubled.
    #[test]
    fn whatever_passes_is_what_prost_would_write() {
        let mut checked = 0;
        for value in samples() {
            let bytes = value.encode_to_vec();
            let mut variants = vec![];
            for i in 0..bytes.len() {
                for byte in [0x00, 0x01, 0x02, 0x0a, 0x12, 0x7f, 0x80, 0xff] {
                    let mut changed = bytes.clone();
                    changed[i] = byte;
                    variants.push(changed);
                }
                let mut doubled = bytes.clone();
                doubled.insert(i, bytes[i]);
                variants.push(doubled);
                variants.push(bytes[..i].to_vec());
            }
            for variant in variants {
                if is_canonical_value(&variant) {
                    checked += 1;
                    let decoded = Value::decode(&variant[..]).expect("passes, so decodes");
                    assert_eq!(decoded.encode_to_vec(), variant);
                }
            }
        }
        assert!(checked > 100, "only {checked} variants passed");
    }
}

//! Conversions between `google.protobuf.Value` (how JSON travels in the contract) and
//! `serde_json::Value` (how Rust code and tokens hold it).

use prost_types::{ListValue, Struct, Value, value::Kind};

/// `serde_json` → protobuf. Numbers become doubles, as protobuf's JSON mapping has it.
pub fn to_proto(value: &serde_json::Value) -> Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_proto).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

/// protobuf → `serde_json`. A double that is a whole number within ±2^53 becomes an integer
/// (token `iat`/`exp` and ids stay integers); NaN and infinities, which JSON cannot hold,
/// become null.
pub fn from_proto(value: &Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => list.values.iter().map(from_proto).collect(),
        Some(Kind::StructValue(object)) => serde_json::Value::Object(
            // Sorted by key: protobuf maps carry no order.
            {
                let mut fields: Vec<_> = object.fields.iter().collect();
                fields.sort_by(|a, b| a.0.cmp(b.0));
                fields
                    .into_iter()
                    .map(|(k, v)| (k.clone(), from_proto(v)))
                    .collect()
            },
        ),
    }
}

fn number(n: f64) -> serde_json::Value {
    const MAX_SAFE: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE {
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let value = serde_json::json!({
            "a": [1, 2.5, -3, null, true, "s"],
            "b": {"c": 9007199254740992i64},
        });
        assert_eq!(from_proto(&to_proto(&value)), value);
        assert_eq!(from_proto(&Value { kind: None }), serde_json::Value::Null);
        let nan = Value {
            kind: Some(Kind::NumberValue(f64::NAN)),
        };
        assert_eq!(from_proto(&nan), serde_json::Value::Null);
    }
}

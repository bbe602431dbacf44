//! Between Automerge's hydrated values and serde: typed records in, typed records out.

use std::collections::HashMap;

use automerge::hydrate::{List, Map, Value};
use automerge::ScalarValue;
use serde_json::{Number, Value as Json};

/// A hydrated Automerge value as JSON (text objects become strings).
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Map(map) => Json::Object(map.iter().map(|(k, v)| (k.clone(), to_json(&v.value))).collect()),
        Value::List(list) => Json::Array(list.iter().map(|v| to_json(&v.value)).collect()),
        Value::Text(text) => Json::String(text.to_string()),
        Value::Scalar(s) => match s {
            ScalarValue::Str(s) => Json::String(s.to_string()),
            ScalarValue::Int(i) => Json::from(*i),
            ScalarValue::Uint(u) => Json::from(*u),
            ScalarValue::F64(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
            ScalarValue::Timestamp(t) => Json::from(*t),
            ScalarValue::Counter(c) => Json::from(i64::from(c)),
            ScalarValue::Boolean(b) => Json::Bool(*b),
            ScalarValue::Null => Json::Null,
            other => Json::String(other.to_string()),
        },
    }
}

/// A serialised record as a value to insert in one batch. Strings stay plain strings,
/// notes included (see `HouseholdDocument::update_note`).
pub fn from_json(json: &Json) -> Value {
    match json {
        Json::Object(fields) => Value::Map(Map::from(
            fields.iter().map(|(k, v)| (k.clone(), from_json(v))).collect::<HashMap<String, Value>>(),
        )),
        Json::Array(items) => Value::List(List::from(items.iter().map(from_json).collect::<Vec<_>>())),
        Json::String(s) => Value::Scalar(ScalarValue::Str(s.as_str().into())),
        Json::Number(n) => Value::Scalar(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => ScalarValue::Int(i),
            (None, Some(u), _) => ScalarValue::Uint(u),
            (_, _, f) => ScalarValue::F64(f.unwrap_or_default()),
        }),
        Json::Bool(b) => Value::Scalar(ScalarValue::Boolean(*b)),
        Json::Null => Value::Scalar(ScalarValue::Null),
    }
}

//! Canonical JSON: object keys sorted, no insignificant whitespace. The same value always
//! serialises to the same bytes, so the same image always has the same digest.
//!
//! Keys are sorted by UTF-16 code units and strings escaped as RFC 8785 (JCS) does
//! (`"`, `\` and control characters only; everything else verbatim). Numbers are written as
//! serde_json writes them, which matches JCS for the integers image objects hold. OLPC
//! canonical JSON is not used because it leaves control characters unescaped, which is not
//! valid JSON for Go's decoder.

use serde::Serialize;
use serde_json::{Map, Value};

/// Serialises `value` as canonical JSON bytes.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    serde_json::to_vec(&sorted(value))
}

/// Serialises `value` as a canonical JSON string.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let bytes = to_vec(value)?;
    // serde_json only ever writes UTF-8.
    // Cannot fail: serde_json writes UTF-8.
    Ok(String::from_utf8(bytes).expect("serde_json writes UTF-8"))
}

/// Rebuilds `value` with every object's keys inserted in canonical order. serde_json's map
/// keeps insertion order in this workspace (`preserve_order`), so insertion order is output order.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            let mut out = Map::with_capacity(entries.len());
            for (key, value) in entries {
                out.insert(key, sorted(value));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn sorts_keys_recursively_without_whitespace() {
        let value: Value = serde_json::from_str(
            r#"{ "b": 1, "a": { "z": [ {"y": true, "x": null} ], "c": "q\n\"" } }"#,
        )
        .unwrap();
        assert_eq!(
            to_string(&value).unwrap(),
            r#"{"a":{"c":"q\n\"","z":[{"x":null,"y":true}]},"b":1}"#
        );
    }

    #[test]
    fn insertion_order_does_not_change_the_bytes() {
        let keys: Vec<String> = (0..50).map(|i| format!("label.{i:02}")).collect();
        let mut forward = HashMap::new();
        for k in &keys {
            forward.insert(k.clone(), k.len());
        }
        let mut backward = serde_json::Map::new();
        for k in keys.iter().rev() {
            backward.insert(k.clone(), Value::from(k.len()));
        }
        assert_eq!(to_vec(&forward).unwrap(), to_vec(&backward).unwrap());
    }

    #[test]
    fn utf16_order_for_keys_outside_the_bmp() {
        // U+FF61 sorts after U+1F600 in UTF-16 (surrogates 0xD83D..) but before it in UTF-8.
        let mut map = serde_json::Map::new();
        map.insert("\u{FF61}".into(), Value::from(1));
        map.insert("\u{1F600}".into(), Value::from(2));
        let text = to_string(&map).unwrap();
        assert!(
            text.find('\u{1F600}').unwrap() < text.find('\u{FF61}').unwrap(),
            "{text}"
        );
    }
}

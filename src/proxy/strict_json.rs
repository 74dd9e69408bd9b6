//! Strict JSON: a body is parsed whole, a duplicate key anywhere is refused, and an
//! object the rules check may hold only fields spelled exactly as Docker names them.
//! Docker's Go decoder keeps the last of duplicate keys and matches field names
//! case-insensitively (Unicode folds included), so anything looser would let the
//! daemon read a different value than the one checked.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `body`, refusing duplicate keys at any depth.
pub fn parse(body: &[u8]) -> Result<Value, String> {
    let mut d = serde_json::Deserializer::from_slice(body);
    let v = Strict.deserialize(&mut d).map_err(|e| e.to_string())?;
    d.end().map_err(|e| e.to_string())?;
    Ok(v)
}

struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(Strict)?;
            if out.contains_key(&k) {
                return Err(de::Error::custom(format!("duplicate key {k:?}")));
            }
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// The shape of an object the rules look into: its exact field names, and for
/// some the shape of what they hold.
pub struct Shape {
    pub name: &'static str,
    /// Fields not looked into (scalars, lists of strings, maps with user keys).
    pub fields: &'static [&'static str],
    /// Fields holding objects that are checked too.
    pub nested: &'static [(&'static str, Inner)],
}

#[derive(Clone, Copy)]
pub enum Inner {
    Object(&'static Shape),
    ListOf(&'static Shape),
    /// A map with user-chosen keys whose values have this shape.
    MapOf(&'static Shape),
}

/// Refuses any key of `v` (and of the objects it holds, per `shape`) that is not one
/// of the shape's fields spelled exactly.
pub fn check_shape(v: &Value, shape: &Shape) -> Result<(), String> {
    let Value::Object(m) = v else {
        return if v.is_null() {
            Ok(())
        } else {
            Err(format!("{} must be an object", shape.name))
        };
    };
    for (k, val) in m {
        if shape.fields.contains(&k.as_str()) {
            continue;
        }
        let Some((_, inner)) = shape.nested.iter().find(|(f, _)| f == k) else {
            let near = shape
                .fields
                .iter()
                .chain(shape.nested.iter().map(|(f, _)| f))
                .find(|f| fold(f) == fold(k))
                .map(|f| format!(" (Docker would read it as {f:?}; spell it exactly)"))
                .unwrap_or_default();
            return Err(format!("unknown field {k:?} in {}{near}", shape.name));
        };
        match inner {
            Inner::Object(s) => check_shape(val, s)?,
            Inner::ListOf(s) => {
                for item in val.as_array().into_iter().flatten() {
                    check_shape(item, s)?;
                }
            }
            Inner::MapOf(s) => {
                for item in val.as_object().into_iter().flat_map(|m| m.values()) {
                    check_shape(item, s)?;
                }
            }
        }
    }
    Ok(())
}

/// Go's `EqualFold` closely enough to name the field a near-miss would hit.
pub fn fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{017F}' => 's', // LATIN SMALL LETTER LONG S
            '\u{212A}' => 'k', // KELVIN SIGN
            c => c.to_lowercase().next().unwrap_or(c),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    static LEAF: Shape = Shape {
        name: "Leaf",
        fields: &["A"],
        nested: &[],
    };
    static ROOT: Shape = Shape {
        name: "Root",
        fields: &["Image"],
        nested: &[
            ("Leaf", Inner::Object(&LEAF)),
            ("Leaves", Inner::ListOf(&LEAF)),
        ],
    };

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(parse(br#"{"a":1,"a":2}"#)
            .unwrap_err()
            .contains("duplicate key"));
        assert!(parse(br#"{"x":{"b":[{"c":1,"c":1}]}}"#).is_err());
        assert!(parse(br#"{"a":1} {"b":2}"#).is_err(), "trailing data");
        assert_eq!(
            parse(br#"{"a":[1,"x",null,true,1.5]}"#).unwrap()["a"][1],
            "x"
        );
    }

    #[test]
    fn fields_must_be_spelled_exactly() {
        check_shape(
            &parse(br#"{"Image":"x","Leaf":{"A":1},"Leaves":[{"A":2}]}"#).unwrap(),
            &ROOT,
        )
        .unwrap();
        for bad in [
            r#"{"image":"x"}"#,
            r#"{"IMAGE":"x"}"#,
            "{\"Ima\u{017F}e\":\"x\"}",
            r#"{"Leaf":{"a":1}}"#,
            r#"{"Leaves":[{"A":1},{"\u212A":1}]}"#,
            r#"{"Other":1}"#,
        ] {
            assert!(
                check_shape(&parse(bad.as_bytes()).unwrap(), &ROOT).is_err(),
                "{bad}"
            );
        }
        let e = check_shape(&parse(br#"{"image":"x"}"#).unwrap(), &ROOT).unwrap_err();
        assert!(e.contains("\"Image\""), "{e}");
    }
}

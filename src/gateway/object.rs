//! A signed JSON object as received: its top-level fields sorted by name,
//! each string borrowed from the body unless it had escapes. Every signed
//! body is read through it: the h5pay answer on every intent, each notify,
//! each query and close answer. A `serde_json::Value` map would copy every
//! key and value and keep them in a tree (a quarter of the h5pay answer's
//! cost, half of the notify body's).
//!
//! It reads what `serde_json::from_slice::<Map<String, Value>>` reads: a
//! number is the same `Number`, a repeated name keeps its last value, and a
//! body that map would refuse is refused, with one exception: a value
//! nested deeper than serde_json's 128 levels. The map refuses the body;
//! the object passes over the value without building it, and the field is
//! [`Field::Other`], never signed or read as text.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

/// A top-level field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    Str(Cow<'a, str>),
    Num(Number),
    Null,
    /// A boolean, an array or an object: never signed, never read as text.
    /// Its kind, for error messages.
    Other(&'static str),
}

/// The kinds [`Field::Other`] names for nested values.
const ARRAY: &str = "an array";
const OBJECT: &str = "an object";

impl Field<'_> {
    /// The kind of an array or an object; `None` for a scalar (a boolean
    /// is one).
    pub fn nested(&self) -> Option<&'static str> {
        match self {
            Field::Other(kind) if *kind == ARRAY || *kind == OBJECT => Some(kind),
            _ => None,
        }
    }
}

/// A JSON object's top-level fields, sorted by name in byte order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object<'a> {
    fields: Vec<(Cow<'a, str>, Field<'a>)>,
}

impl<'a> Object<'a> {
    /// Reads a JSON object; anything else is an error naming what it is.
    pub fn parse(body: &'a [u8]) -> Result<Self, ObjectError> {
        // UTF-8 checked once for the whole body: read from a `str`,
        // serde_json does not check each string again (from bytes it does:
        // a fifth of this function's cost, BENCHMARKS.md). It refuses what
        // `from_slice` refuses: outside strings a byte past ASCII is a
        // syntax error.
        let text = std::str::from_utf8(body).map_err(|e| {
            ObjectError::NotJson(format!("not UTF-8 (at byte {})", e.valid_up_to()))
        })?;
        let mut de = serde_json::Deserializer::from_str(text);
        let top = de
            .deserialize_any(TopVisitor)
            .map_err(|e| ObjectError::NotJson(e.to_string()))?;
        de.end().map_err(|e| ObjectError::NotJson(e.to_string()))?;
        match top {
            Top::Object(fields) => Ok(Object::from_fields(fields)),
            Top::Not(kind) => Err(ObjectError::NotObject(kind)),
        }
    }

    /// Sorted by name; of a repeated name the last value stays (as in a
    /// map that inserts each in turn).
    fn from_fields(mut fields: Vec<(Cow<'a, str>, Field<'a>)>) -> Self {
        // Stable: equal names keep their order, the last one read last.
        fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut kept: Vec<(Cow<'a, str>, Field<'a>)> = Vec::with_capacity(fields.len());
        for f in fields {
            match kept.last_mut() {
                Some(last) if last.0 == f.0 => *last = f,
                _ => kept.push(f),
            }
        }
        Object { fields: kept }
    }

    /// The field named `k`.
    pub fn get(&self, k: &str) -> Option<&Field<'a>> {
        self.fields
            .binary_search_by(|(name, _)| name.as_bytes().cmp(k.as_bytes()))
            .ok()
            .and_then(|i| self.fields.get(i))
            .map(|(_, v)| v)
    }

    /// A string or a number as text (a number as JSON writes it); `None`
    /// for null, another type or no such field.
    pub fn text(&self, k: &str) -> Option<Cow<'_, str>> {
        match self.get(k)? {
            Field::Str(s) => Some(Cow::Borrowed(s)),
            Field::Num(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        }
    }

    /// Every field, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Field<'a>)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

/// Why a body is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectError {
    NotJson(String),
    NotObject(&'static str),
}

/// The top-level value: an object's fields, or the kind it is instead.
enum Top<'a> {
    Object(Vec<(Cow<'a, str>, Field<'a>)>),
    Not(&'static str),
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(24));
        while let Some(k) = map.next_key::<Text<'de>>()? {
            let v = map.next_value::<FieldSeed<'de>>()?;
            fields.push((k.0, v.0));
        }
        Ok(Top::Object(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Top::Not(ARRAY))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Top::Not("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Top::Not("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Top::Not("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Top::Not("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Top::Not("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Top::Not("null"))
    }
}

/// A string, borrowed from the body when it had no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A field's value, read as `serde_json::Value` reads it (numbers alike),
/// nested values passed over.
struct FieldSeed<'a>(Field<'a>);

impl<'de> de::Deserialize<'de> for FieldSeed<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldSeed<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(FieldSeed(Field::Str(Cow::Borrowed(s))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(FieldSeed(Field::Str(Cow::Owned(s.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(FieldSeed(Field::Str(Cow::Owned(s))))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(FieldSeed(Field::Num(n.into())))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                Ok(FieldSeed(Field::Num(n.into())))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
                // As `Value` reads it: a float JSON cannot hold is null.
                Ok(FieldSeed(
                    Number::from_f64(n).map_or(Field::Null, Field::Num),
                ))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(FieldSeed(Field::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(FieldSeed(Field::Null))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(FieldSeed(Field::Other("a boolean")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FieldSeed(Field::Other(ARRAY)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(FieldSeed(Field::Other(OBJECT)))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    /// What the map reading makes of `body`, in the object's terms.
    fn as_map(body: &[u8]) -> Result<Vec<(String, Field<'static>)>, ()> {
        let v: Value = serde_json::from_slice(body).map_err(|_| ())?;
        let Value::Object(m) = v else { return Err(()) };
        Ok(Map::into_iter(m)
            .map(|(k, v)| {
                let f = match v {
                    Value::String(s) => Field::Str(Cow::Owned(s)),
                    Value::Number(n) => Field::Num(n),
                    Value::Null => Field::Null,
                    Value::Bool(_) => Field::Other("a boolean"),
                    Value::Array(_) => Field::Other("an array"),
                    Value::Object(_) => Field::Other("an object"),
                };
                (k, f)
            })
            .collect())
    }

    #[test]
    fn it_reads_what_a_value_map_reads() {
        let bodies: [&[u8]; 15] = [
            br#"{"b":"2","a":"1","sign":"x"}"#,
            br#"{"n":1,"f":1.50,"neg":-3,"big":18446744073709551615,"e":1e3}"#,
            br#"{"esc":"a\"b\u00e9","k\u0065y":"v","empty":""}"#,
            br#"{"dup":"first","x":null,"dup":"last"}"#,
            br#"{"t":true,"arr":[1,{"a":2}],"obj":{"a":[3]}}"#,
            br#"  {"a":"1"}  "#,
            br#"{}"#,
            "{\"Z\":\"1\",\"a\":\"2\",\"_\":\"3\",\"\u{e9}\":\"4\"}".as_bytes(),
            br#"{"a":"1"} x"#,
            br#"{"a":"1""#,
            br#"[1,2]"#,
            br#"not json"#,
            b"{\"a\":\"\xff\"}",
            b"{\"a\":\"1\"}\xc3",
            b"{\"a\":\"\xe6\x94\xaf\xe4\xbb\x98\"}",
        ];
        for body in bodies {
            let ours = Object::parse(body).map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Field::Str(s) => Field::Str(Cow::Owned(s.to_string())),
                            other => other.clone(),
                        };
                        (k.to_owned(), v)
                    })
                    .collect::<Vec<_>>()
            });
            assert_eq!(
                ours.ok(),
                as_map(body).ok(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_value_nested_past_the_maps_limit_is_passed_over_not_refused() {
        let body = format!(
            r#"{{"a":"1","deep":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(as_map(body.as_bytes()).is_err());
        let o = Object::parse(body.as_bytes()).unwrap_or_default();
        assert_eq!(o.get("deep").and_then(Field::nested), Some("an array"));
        assert_eq!(o.text("deep"), None);
        assert_eq!(o.text("a").as_deref(), Some("1"));
    }

    #[test]
    fn strings_without_escapes_are_borrowed_and_lookups_find_each_name() {
        let body = br#"{"return_code":"SUCCESS","msg":"a\nb","amount":100}"#;
        let o = Object::parse(body).expect("an object");
        assert!(matches!(
            o.get("return_code"),
            Some(Field::Str(Cow::Borrowed("SUCCESS")))
        ));
        assert!(matches!(o.get("msg"), Some(Field::Str(Cow::Owned(s))) if s == "a\nb"));
        assert_eq!(o.text("amount").as_deref(), Some("100"));
        assert_eq!(o.text("missing"), None);
        assert_eq!(
            Object::parse(b"[]"),
            Err(ObjectError::NotObject("an array"))
        );
        assert_eq!(Object::parse(b"7"), Err(ObjectError::NotObject("a number")));
        assert!(matches!(Object::parse(b"{"), Err(ObjectError::NotJson(_))));
    }
}

//! Keys a JSON object gives twice. JSON parsers keep the last value; serde's
//! derived structs refuse the file instead, so app.json is read through
//! [`last_value_wins`] when it has any.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Every key given twice in one object, as a dotted path (`env.KEY`), and
/// the document with only each key's last value.
pub(crate) fn last_value_wins(text: &str) -> Option<(Vec<String>, serde_json::Value)> {
    let found = RefCell::new(Vec::new());
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = Walk {
        path: String::new(),
        found: &found,
    }
    .deserialize(&mut deserializer)
    .ok()?;
    Some((found.into_inner(), value))
}

struct Walk<'a> {
    path: String,
    found: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = serde_json::Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
        Ok(value.into())
    }
    fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
        Ok(value.into())
    }
    fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
        Ok(value.into())
    }
    fn visit_f64<E>(self, value: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(value.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Walk {
            path: format!("{}[{}]", self.path, items.len()),
            found: self.found,
        })? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            let value = map.next_value_seed(Walk {
                path: path.clone(),
                found: self.found,
            })?;
            if object.insert(key, value).is_some() {
                self.found.borrow_mut().push(path);
            }
        }
        Ok(serde_json::Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_keeps_its_last_value_and_is_named() {
        let (twice, value) =
            last_value_wins(r#"{"stack":"heroku-18","env":{"A":"1","A":"2"},"stack":"heroku-22"}"#)
                .unwrap();
        assert_eq!(twice, ["env.A", "stack"]);
        assert_eq!(value["stack"], "heroku-22");
        assert_eq!(value["env"]["A"], "2");
        assert_eq!(
            last_value_wins(r#"{"a":1}"#).unwrap().0,
            Vec::<String>::new()
        );
        assert!(last_value_wins("{").is_none());
    }
}

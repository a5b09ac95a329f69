//! Finds the line of a key path (`tenants.acme.auth.key`) in the YAML text, so
//! that errors found after parsing can still say where to look. yaml_serde
//! already locates its own errors; this covers the checks done in `validate`.
//!
//! Positions come from the same parser as the values: a seed walks the path
//! through yaml_serde's deserializer and stops with a marker error at the
//! node it wants, and yaml_serde stamps that error with the node's position.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl std::fmt::Display for Seg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seg::Key(k) => f.write_str(k),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Renders `[tenants, acme, auth]` as `tenants.acme.auth`, `[clients, 0]` as `clients[0]`.
pub fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        if let Seg::Key(_) = seg {
            if !out.is_empty() {
                out.push('.');
            }
        }
        out.push_str(&seg.to_string());
    }
    out
}

/// Line and column (both 1-based) of the deepest part of `path` found in `src`:
/// the key itself when it exists, else its closest existing parent.
pub fn locate(src: &str, path: &[Seg]) -> Option<(usize, usize)> {
    // Config files are small and this runs only on an error path, so one
    // parse per prefix (longest first) is simpler than tracking the best match.
    (0..=path.len()).rev().find_map(|len| seek(src, &path[..len]))
}

/// The message of the marker error; no YAML error text contains it.
const FOUND: &str = "\u{0}pleo-gateway-locate";

fn seek(src: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let err = Seek(path).deserialize(yaml_serde::Deserializer::from_str(src)).err()?;
    // yaml_serde prefixes the message with the path it was at.
    if !err.to_string().contains(FOUND) {
        return None;
    }
    let at = err.location()?;
    Some((at.line(), at.column()))
}

/// Walks `self.0` through one node. `Ok(())` means the path is not there;
/// `Err(FOUND)` carries the position of the node or key at its end.
struct Seek<'p>(&'p [Seg]);

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.0.is_empty() {
            // The node itself: any visit stops here with the node's position.
            return d.deserialize_any(Here);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.0.split_first() else {
            return Ok(());
        };
        while let Some(matched) = map.next_key_seed(Key { want, last: rest.is_empty() })? {
            if matched {
                return map.next_value_seed(Seek(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.0.split_first() else {
            return Ok(());
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Seek(rest)).map(|_| ())
    }

    // A scalar where the path wants to go deeper: not there.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Reads one mapping key: `Ok(true)` when it is the wanted one, and the marker
/// error (at the key's own position) when the path ends there.
struct Key<'p> {
    want: &'p str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match (key == self.want, self.last) {
            (true, true) => Err(E::custom(FOUND)),
            (matched, _) => Ok(matched),
        }
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// Stops at whatever node it is given.
struct Here;

impl<'de> Visitor<'de> for Here {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Seg {
        Seg::Key(s.to_string())
    }

    #[test]
    fn finds_nested_keys_and_sequence_items() {
        let src = "listen: x\ntenants:\n  acme:\n    auth:\n      model: oauth2\n      key: v\nclients:\n  - name: a\n  - name: b\n    tenants: [acme]\n";
        assert_eq!(locate(src, &[k("listen")]), Some((1, 1)));
        assert_eq!(locate(src, &[k("tenants"), k("acme"), k("auth"), k("key")]), Some((6, 7)));
        assert_eq!(locate(src, &[k("clients"), Seg::Index(1), k("tenants")]), Some((10, 5)));
        // A missing leaf falls back to its parent.
        assert_eq!(locate(src, &[k("tenants"), k("acme"), k("environment")]), Some((3, 3)));
        assert_eq!(render(&[k("clients"), Seg::Index(1), k("tenants")]), "clients[1].tenants");
    }
}

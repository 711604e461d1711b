//! Serde glue for key and signature types: they serialize as one byte
//! string (in the wire format: a `u64` length then the bytes) and
//! deserialize through the type's own validating `from_bytes`.

use crate::WireError;
use serde::de::{Error as _, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

pub(crate) struct BytesVisitor<T> {
    pub(crate) expecting: &'static str,
    /// Longest byte string accepted from a self-describing format that
    /// sends a sequence instead of bytes (JSON): bounds the collection.
    pub(crate) len_max: usize,
    pub(crate) parse: fn(&[u8]) -> Result<T, WireError>,
    pub(crate) marker: PhantomData<T>,
}

impl<'de, T> Visitor<'de> for BytesVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<T, E> {
        (self.parse)(bytes).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.len_max));
        while let Some(byte) = seq.next_element::<u8>()? {
            if bytes.len() == self.len_max {
                return Err(A::Error::custom(format!(
                    "{} is longer than {} bytes",
                    self.expecting, self.len_max
                )));
            }
            bytes.push(byte);
        }
        (self.parse)(&bytes).map_err(A::Error::custom)
    }
}

/// Deserializes a `T` from a byte string with `parse`.
pub(crate) fn deserialize<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    len_max: usize,
    parse: fn(&[u8]) -> Result<T, WireError>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    deserializer.deserialize_bytes(BytesVisitor {
        expecting,
        len_max,
        parse,
        marker: PhantomData,
    })
}

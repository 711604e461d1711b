//! Canonical encoding: bincode 2 through serde, with one fixed configuration.
//!
//! **Configuration** (never change it without a protocol version bump: hashes
//! and signatures are taken over these bytes): little-endian, **fixed-width**
//! integers (`u64` is always 8 bytes, lengths are `u64`), no bincode limit on
//! the encoding side. Fixed width was chosen over varint because
//!
//! * encoded sizes are predictable (a block header is always the same size);
//! * bincode's allocation limit counts the *in-memory* width of every integer
//!   it decodes. With fixed-width encoding that equals the bytes consumed, so
//!   a legitimate input of `n` bytes never trips a limit of `n`; with varint
//!   a `u64` read from 1 byte is charged 8 and honest input could be refused.
//!
//! **Decoding** ([`decode`]) rejects input longer than the caller's limit,
//! runs bincode with an allocation limit so a hostile length prefix cannot
//! make it allocate (see [`decode`] for the exact bound), rejects trailing
//! bytes, and re-encodes the value: if that does not give back the input
//! byte for byte the input is rejected as [`WireError::NonCanonical`]. So for
//! every accepted input, `encode(decode(x)) == x` — which is what lets us
//! hash and sign encodings.
//!
//! Types that go on the wire must not contain `HashMap`/`HashSet` (iteration
//! order) and should use `BTreeMap`/`BTreeSet`, whose canonical form is
//! sorted; unsorted or duplicated input is refused as non-canonical.
//!
//! Known non-bound: a sequence of zero-sized elements (`Vec<()>`) costs no
//! allocation per element, so its length prefix is bounded only by time.
//! None of our wire types has one.

use crate::WireError;
use bincode::config::{Configuration, Fixint, LittleEndian, NoLimit};
use bincode::error::{DecodeError, EncodeError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The one wire configuration (see the module doc).
const WIRE_CONFIG: Configuration<LittleEndian, Fixint, NoLimit> = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding();

/// Largest limit [`decode`] honours: nothing we decode in one piece is
/// bigger; larger data (files, chunks) is streamed and chunked above us.
/// A caller's larger `limit_bytes` is lowered to this.
pub const DECODE_LIMIT_BYTES_MAX: usize = 1 << 30;

/// Smallest bincode allocation tier: below this the tier is not worth a
/// separate monomorphization.
const DECODE_TIER_EXP_MIN: u32 = 10;

/// Exponent of the largest tier, `2^30 == DECODE_LIMIT_BYTES_MAX`.
const DECODE_TIER_EXP_MAX: u32 = 30;

/// Encodes `value` in the canonical wire form.
///
/// # Panics
///
/// If `value`'s `Serialize` impl produces something the format cannot hold
/// (a sequence or map of unknown length, or an error raised by the impl).
/// Our wire types never do — that would be a bug in the type, found by its
/// first test. Use [`try_encode`] for values whose impl you do not control.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    match try_encode(value) {
        Ok(bytes) => bytes,
        Err(error) => panic!("hm_wire::encode: {error}"),
    }
}

/// Like [`encode`], but reports a failing `Serialize` impl as
/// [`WireError::Unencodable`] instead of panicking.
pub fn try_encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    bincode::serde::encode_to_vec(value, WIRE_CONFIG)
        .map_err(|error: EncodeError| WireError::Unencodable(error.to_string()))
}

/// The length of [`encode`]'s output, counted without building it.
///
/// # Panics
///
/// Where [`encode`] would.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = bincode::enc::write::SizeWriter::default();
    match bincode::serde::encode_into_writer(value, &mut counter, WIRE_CONFIG) {
        Ok(()) => counter.bytes_written,
        Err(error) => panic!("hm_wire::encoded_len: {error}"),
    }
}

/// Decodes a `T` from exactly `bytes`, refusing anything but its canonical
/// encoding.
///
/// * `bytes.len() > limit_bytes` → [`WireError::TooLarge`] before any work
///   (`limit_bytes` is lowered to [`DECODE_LIMIT_BYTES_MAX`]).
/// * bincode runs with an allocation limit of the smallest power of two
///   `>= limit_bytes` (at least 1 KiB): a length prefix claiming more is
///   refused *before* allocating ([`WireError::AllocationLimit`]). bincode's
///   limit is a compile-time constant, hence power-of-two tiers; the
///   allocation bound is therefore `< 2 * limit_bytes` (and at most 1 KiB for
///   tiny limits). Sequences and maps preallocate at most serde's cautious
///   1 MiB and then grow only with bytes actually present in the input.
/// * leftover bytes → [`WireError::TrailingBytes`];
/// * re-encoding differs from `bytes` → [`WireError::NonCanonical`].
pub fn decode<T>(bytes: &[u8], limit_bytes: usize) -> Result<T, WireError>
where
    T: DeserializeOwned + Serialize,
{
    let limit_bytes = limit_bytes.min(DECODE_LIMIT_BYTES_MAX);
    if bytes.len() > limit_bytes {
        return Err(WireError::TooLarge {
            what: "encoded value",
            len: bytes.len(),
            max: limit_bytes,
        });
    }
    let (value, read_bytes) = decode_tiered::<T>(bytes, limit_bytes)?;
    assert!(read_bytes <= bytes.len(), "bincode read past the slice");
    if read_bytes != bytes.len() {
        return Err(WireError::TrailingBytes);
    }
    // A value that decoded but cannot be re-encoded cannot be canonical.
    // The re-encoding is compared as it is produced, never built: decoding
    // a block would otherwise allocate, grow and compare a second copy.
    let mut rest = MatchingWriter { expected: bytes };
    bincode::serde::encode_into_writer(&value, &mut rest, WIRE_CONFIG)
        .map_err(|_| WireError::NonCanonical)?;
    if !rest.expected.is_empty() {
        return Err(WireError::NonCanonical);
    }
    Ok(value)
}

/// A bincode writer that accepts only the bytes of `expected`, in order,
/// consuming them; the first difference is an error.
struct MatchingWriter<'a> {
    expected: &'a [u8],
}

impl bincode::enc::write::Writer for MatchingWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        // Most writes are a few bytes (integers, and byte arrays, which
        // serde writes one byte at a time): compared inline, not through a
        // memcmp call each.
        let equal = |head: &[u8]| {
            if bytes.len() <= 16 {
                head.iter().zip(bytes).all(|(a, b)| a == b)
            } else {
                head == bytes
            }
        };
        match self.expected.split_at_checked(bytes.len()) {
            Some((head, tail)) if equal(head) => {
                self.expected = tail;
                Ok(())
            }
            _ => Err(EncodeError::Other("the re-encoding differs from the input")),
        }
    }
}

/// Picks the allocation tier for `limit_bytes` and decodes with it.
fn decode_tiered<T: DeserializeOwned>(
    bytes: &[u8],
    limit_bytes: usize,
) -> Result<(T, usize), WireError> {
    let tier_exp = limit_bytes
        .next_power_of_two()
        .trailing_zeros()
        .clamp(DECODE_TIER_EXP_MIN, DECODE_TIER_EXP_MAX);
    macro_rules! tiers {
        ($($exp:literal)*) => {
            match tier_exp {
                $( $exp => decode_with_limit::<T, { 1usize << $exp }>(bytes), )*
                // The clamp above makes every other exponent impossible;
                // the largest tier is the safe answer regardless.
                _ => decode_with_limit::<T, { 1usize << DECODE_TIER_EXP_MAX }>(bytes),
            }
        };
    }
    tiers!(10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29)
}

fn decode_with_limit<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<(T, usize), WireError> {
    let config = WIRE_CONFIG.with_limit::<LIMIT>();
    bincode::serde::decode_from_slice(bytes, config).map_err(|error| decode_error(error, LIMIT))
}

fn decode_error(error: DecodeError, limit_bytes: usize) -> WireError {
    match error {
        DecodeError::LimitExceeded => WireError::AllocationLimit {
            max_bytes: limit_bytes,
        },
        DecodeError::UnexpectedEnd { additional } => WireError::Malformed(format!(
            "input ends {additional} bytes early; it was truncated or is not this type"
        )),
        other => WireError::Malformed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hash;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Empty,
        Number(u64),
        Named { name: String, weight: i32 },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: u64,
        flag: bool,
        hash: Hash,
        label: String,
        payload: Vec<u8>,
        maybe: Option<u16>,
        kinds: Vec<Kind>,
        set: BTreeSet<u32>,
        map: BTreeMap<String, u8>,
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Empty),
            any::<u64>().prop_map(Kind::Number),
            (".{0,8}", any::<i32>()).prop_map(|(name, weight)| Kind::Named { name, weight }),
        ]
    }

    fn sample() -> impl Strategy<Value = Sample> {
        (
            any::<u64>(),
            any::<bool>(),
            any::<[u8; 32]>(),
            ".{0,16}",
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<Option<u16>>(),
            proptest::collection::vec(kind(), 0..4),
            proptest::collection::btree_set(any::<u32>(), 0..8),
            proptest::collection::btree_map(".{0,4}", any::<u8>(), 0..4),
        )
            .prop_map(
                |(id, flag, hash, label, payload, maybe, kinds, set, map)| Sample {
                    id,
                    flag,
                    hash: Hash(hash),
                    label,
                    payload,
                    maybe,
                    kinds,
                    set,
                    map,
                },
            )
    }

    proptest! {
        #[test]
        fn round_trips_and_is_stable(value in sample()) {
            let bytes = encode(&value);
            let back: Sample = decode(&bytes, bytes.len()).expect("own encoding decodes");
            prop_assert_eq!(&back, &value);
            prop_assert_eq!(encode(&back), bytes);
        }

        #[test]
        fn encoded_len_is_the_encodings_length(value in sample()) {
            prop_assert_eq!(encoded_len(&value), encode(&value).len());
        }

        #[test]
        fn any_proper_prefix_is_refused(value in sample(), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&value);
            let cut = cut.index(bytes.len());
            prop_assert!(decode::<Sample>(&bytes[..cut], bytes.len()).is_err());
        }

        #[test]
        fn trailing_bytes_are_refused(value in sample(), extra in proptest::collection::vec(any::<u8>(), 1..8)) {
            let mut bytes = encode(&value);
            bytes.extend_from_slice(&extra);
            prop_assert_eq!(decode::<Sample>(&bytes, bytes.len()), Err(WireError::TrailingBytes));
        }

        #[test]
        fn random_bytes_never_panic_and_accepted_ones_are_canonical(
            bytes in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            if let Ok(value) = decode::<Sample>(&bytes, 4096) {
                prop_assert_eq!(&encode(&value), &bytes);
            }
            if let Ok(value) = decode::<Vec<String>>(&bytes, 4096) {
                prop_assert_eq!(&encode(&value), &bytes);
            }
        }
    }

    #[test]
    fn integers_are_fixed_width_little_endian() {
        assert_eq!(encode(&1u64), vec![1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode(&0x0102u16), vec![2, 1]);
        // Lengths are u64 as well.
        assert_eq!(encode(&vec![7u8]), vec![1, 0, 0, 0, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn input_over_the_limit_is_refused_before_decoding() {
        let bytes = encode(&vec![0u8; 100]);
        assert_eq!(
            decode::<Vec<u8>>(&bytes, 99),
            Err(WireError::TooLarge {
                what: "encoded value",
                len: bytes.len(),
                max: 99
            })
        );
        assert!(decode::<Vec<u8>>(&bytes, bytes.len()).is_ok());
    }

    #[test]
    fn hostile_length_prefix_does_not_allocate() {
        // A String claiming u64::MAX bytes, followed by almost nothing.
        let mut bytes = vec![0xff; 8];
        bytes.extend_from_slice(b"abc");
        assert_eq!(
            decode::<String>(&bytes, 1 << 20),
            Err(WireError::AllocationLimit { max_bytes: 1 << 20 })
        );
        // Just over the tier: refused by the limit, not by running out of input.
        let mut bytes = ((1u64 << 10) + 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        assert_eq!(
            decode::<String>(&bytes, 1000),
            Err(WireError::AllocationLimit { max_bytes: 1 << 10 })
        );
        // A sequence prefix is bounded by the input actually present.
        assert!(matches!(
            decode::<Vec<u64>>(&[0xff; 16], 1 << 20),
            Err(WireError::Malformed(_) | WireError::AllocationLimit { .. })
        ));
    }

    #[test]
    fn exact_limit_is_enough_for_honest_input() {
        // Fixed-width: the allocation charge equals the bytes consumed.
        let value = vec![u64::MAX; 300];
        let bytes = encode(&value);
        assert_eq!(decode::<Vec<u64>>(&bytes, bytes.len()), Ok(value));
    }

    #[test]
    fn unsorted_set_is_non_canonical() {
        // The same bytes a BTreeSet {1, 2} would have, but in the wrong order.
        let unsorted = encode(&vec![2u32, 1u32]);
        assert_eq!(
            decode::<BTreeSet<u32>>(&unsorted, 64),
            Err(WireError::NonCanonical)
        );
        let duplicated = encode(&vec![1u32, 1u32]);
        assert_eq!(
            decode::<BTreeSet<u32>>(&duplicated, 64),
            Err(WireError::NonCanonical)
        );
        let sorted = encode(&vec![1u32, 2u32]);
        assert_eq!(
            decode::<BTreeSet<u32>>(&sorted, 64),
            Ok(BTreeSet::from([1, 2]))
        );
    }

    #[test]
    fn invalid_bool_and_tag_are_malformed() {
        assert!(matches!(
            decode::<bool>(&[2], 8),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Option<u8>>(&[2, 0], 8),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Kind>(&[9, 0, 0, 0], 8),
            Err(WireError::Malformed(_))
        ));
    }

    struct UnknownLength;
    impl Serialize for UnknownLength {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = serializer.serialize_seq(None)?;
            seq.serialize_element(&1u8)?;
            seq.end()
        }
    }

    #[test]
    fn unencodable_values_are_reported_by_try_encode() {
        assert!(matches!(
            try_encode(&UnknownLength),
            Err(WireError::Unencodable(_))
        ));
    }
}

//! DNS names as TrustChain knows them: validated, lowercase LDH names.
//!
//! A [`DnsName`] is a dot-separated sequence of labels of 1..=63 bytes of
//! `[a-z0-9-]`, no label starting or ending with `-`, at most 253 bytes in
//! all, without the trailing dot. [`DnsName::parse`] accepts upper case and
//! one trailing dot and normalises both away, so two spellings of one name
//! are one value. On the wire a name is its string; decoding re-validates
//! it, and since hm-wire decoding is canonical, a non-normalised spelling
//! (`"Node.HM"`) is refused rather than silently rewritten.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest name in bytes without the trailing dot (RFC 1035 §2.3.4: 255
/// octets on the wire, i.e. 253 characters in presentation form).
pub const NAME_BYTES_MAX: usize = 253;

/// Longest label in bytes (RFC 1035 §2.3.4).
pub const LABEL_BYTES_MAX: usize = 63;

/// How much of a refused name an error message quotes: names come from the
/// network, and an error must not carry an attacker's megabyte.
const QUOTE_BYTES_MAX: usize = 80;

/// Why a string is not a [`DnsName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a DNS name cannot be empty")]
    Empty,
    #[error("DNS name {name:?} is {len} bytes, more than {NAME_BYTES_MAX}")]
    TooLong { name: String, len: usize },
    #[error("DNS name {name:?} has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel { name: String },
    #[error("label {label:?} of DNS name {name:?} is {len} bytes, more than {LABEL_BYTES_MAX}")]
    LabelTooLong {
        name: String,
        label: String,
        len: usize,
    },
    #[error(
        "DNS name {name:?} contains {character:?}; only letters, digits, '-' and '.' are allowed"
    )]
    BadCharacter { name: String, character: char },
    #[error("label {label:?} of DNS name {name:?} starts or ends with '-'")]
    HyphenAtEdge { name: String, label: String },
}

/// A validated, normalised (lowercase, no trailing dot) DNS name.
///
/// Ordered as strings, so maps keyed by names iterate in a fixed order.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsName(String);

impl DnsName {
    /// Validates and normalises `text`: ASCII letters are lowercased and one
    /// trailing dot is dropped.
    pub fn parse(text: &str) -> Result<DnsName, NameError> {
        let trimmed = text.strip_suffix('.').unwrap_or(text);
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        if trimmed.len() > NAME_BYTES_MAX {
            return Err(NameError::TooLong {
                name: quote(text),
                len: trimmed.len(),
            });
        }
        if let Some(character) = trimmed
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
        {
            return Err(NameError::BadCharacter {
                name: quote(text),
                character,
            });
        }
        let normalised = trimmed.to_ascii_lowercase();
        for label in normalised.split('.') {
            if label.is_empty() {
                return Err(NameError::EmptyLabel { name: quote(text) });
            }
            if label.len() > LABEL_BYTES_MAX {
                return Err(NameError::LabelTooLong {
                    name: quote(text),
                    label: quote(label),
                    len: label.len(),
                });
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(NameError::HyphenAtEdge {
                    name: quote(text),
                    label: label.to_owned(),
                });
            }
        }
        Ok(DnsName(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` is a strict subdomain of `zone`: `a.hm` is under
    /// `hm`, `hm` is not under itself, and `xhm` is not under `hm`.
    pub fn is_under(&self, zone: &DnsName) -> bool {
        self.0.len() > zone.0.len()
            && self.0.ends_with(zone.as_str())
            && self.0.as_bytes()[self.0.len() - zone.0.len() - 1] == b'.'
    }

    /// The labels, leftmost first.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

/// At most [`QUOTE_BYTES_MAX`] bytes of `text` (on a character boundary),
/// with an ellipsis when cut.
fn quote(text: &str) -> String {
    if text.len() <= QUOTE_BYTES_MAX {
        return text.to_owned();
    }
    let mut end = QUOTE_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DnsName({})", self.0)
    }
}

impl TryFrom<String> for DnsName {
    type Error = NameError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        DnsName::parse(&text)
    }
}

impl From<DnsName> for String {
    fn from(name: DnsName) -> String {
        name.0
    }
}

impl std::str::FromStr for DnsName {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DnsName::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(text: &str) -> DnsName {
        DnsName::parse(text).expect("test name is valid")
    }

    #[test]
    fn normalises_case_and_one_trailing_dot() {
        assert_eq!(name("Node-1.HM.").as_str(), "node-1.hm");
        assert_eq!(name("a"), name("A."));
        assert_eq!(
            DnsName::parse("a.."),
            Err(NameError::EmptyLabel { name: "a..".into() })
        );
    }

    #[test]
    fn refuses_what_ldh_forbids() {
        assert_eq!(DnsName::parse(""), Err(NameError::Empty));
        assert_eq!(DnsName::parse("."), Err(NameError::Empty));
        assert!(matches!(
            DnsName::parse(".a"),
            Err(NameError::EmptyLabel { .. })
        ));
        assert!(matches!(
            DnsName::parse("a..b"),
            Err(NameError::EmptyLabel { .. })
        ));
        assert!(matches!(
            DnsName::parse("a_b.hm"),
            Err(NameError::BadCharacter { character: '_', .. })
        ));
        assert!(matches!(
            DnsName::parse("é.hm"),
            Err(NameError::BadCharacter {
                character: 'é', ..
            })
        ));
        assert!(matches!(
            DnsName::parse("-a.hm"),
            Err(NameError::HyphenAtEdge { .. })
        ));
        assert!(matches!(
            DnsName::parse("a-.hm"),
            Err(NameError::HyphenAtEdge { .. })
        ));
        assert!(DnsName::parse("a-b.hm").is_ok());
    }

    #[test]
    fn length_limits_are_exact() {
        let label = "a".repeat(LABEL_BYTES_MAX);
        assert!(DnsName::parse(&label).is_ok());
        assert!(matches!(
            DnsName::parse(&format!("{label}a")),
            Err(NameError::LabelTooLong { len: 64, .. })
        ));
        // 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253.
        let longest = format!("{label}.{label}.{label}.{}", "b".repeat(61));
        assert_eq!(longest.len(), NAME_BYTES_MAX);
        assert!(DnsName::parse(&longest).is_ok());
        assert!(DnsName::parse(&format!("{longest}.")).is_ok());
        assert!(matches!(
            DnsName::parse(&format!("c{longest}")),
            Err(NameError::TooLong { len: 254, .. })
        ));
        // A hostile megabyte is quoted, not copied, into the error.
        let huge = "x".repeat(1 << 20);
        let message = DnsName::parse(&huge).expect_err("too long").to_string();
        assert!(message.len() < 300, "{message}");
    }

    #[test]
    fn is_under_means_strict_subdomain() {
        let zone = name("hm");
        assert!(name("a.hm").is_under(&zone));
        assert!(name("b.a.hm").is_under(&zone));
        assert!(!name("hm").is_under(&zone));
        assert!(!name("xhm").is_under(&zone));
        assert!(!name("a.hm.org").is_under(&zone));
        assert!(name("b.a.hm").is_under(&name("a.hm")));
        assert!(!name("a.hm").is_under(&name("b.a.hm")));
    }

    #[test]
    fn wire_form_is_the_string_and_decoding_revalidates() {
        let value = name("node.hm");
        let bytes = hm_wire::encode(&value);
        assert_eq!(bytes, hm_wire::encode(&"node.hm".to_string()));
        assert_eq!(hm_wire::decode::<DnsName>(&bytes, 512), Ok(value));
        // A valid name spelled in upper case decodes to another string, so
        // the canonical check refuses it.
        let upper = hm_wire::encode(&"NODE.hm".to_string());
        assert_eq!(
            hm_wire::decode::<DnsName>(&upper, 512),
            Err(hm_wire::WireError::NonCanonical)
        );
        let invalid = hm_wire::encode(&"no_de.hm".to_string());
        assert!(matches!(
            hm_wire::decode::<DnsName>(&invalid, 512),
            Err(hm_wire::WireError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_is_idempotent(text in ".{0,300}") {
            if let Ok(parsed) = DnsName::parse(&text) {
                prop_assert_eq!(DnsName::parse(parsed.as_str()), Ok(parsed.clone()));
                prop_assert!(parsed.as_str().len() <= NAME_BYTES_MAX);
            }
        }

        #[test]
        fn generated_names_are_accepted(
            labels in proptest::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", 1..6),
        ) {
            let text = labels.join(".");
            let parsed = DnsName::parse(&text).expect("LDH labels are valid");
            prop_assert_eq!(parsed.as_str(), text.to_ascii_lowercase());
        }

        #[test]
        fn random_bytes_decode_only_to_canonical_names(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(value) = hm_wire::decode::<DnsName>(&bytes, 512) {
                prop_assert_eq!(hm_wire::encode(&value), bytes);
            }
        }
    }
}

//! The one error type of `hm-wire`. Every decoder, verifier and opener in
//! this crate reports through it, so callers can tell "the peer sent
//! garbage" (drop it, maybe score the peer) from "our own limit was hit".

/// What was wrong with bytes, keys, signatures, proofs or envelopes.
///
/// Messages name the thing that failed and what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Input is longer than the limit the caller (or this crate) set.
    #[error(
        "{what} is {len} bytes, more than the limit of {max} bytes; drop it, or raise the limit if values this large are legitimate"
    )]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },

    /// Decoding would have allocated more than the limit: a length prefix
    /// claims more data than the caller allows.
    #[error(
        "decoding would allocate more than {max_bytes} bytes (a length prefix claims more than the limit allows); the input is hostile or the limit too small"
    )]
    AllocationLimit { max_bytes: usize },

    /// A complete value was decoded but bytes were left over.
    #[error(
        "bytes remain after a complete value; the sender appended data or used another encoding"
    )]
    TrailingBytes,

    /// The input decodes, but not from its one canonical encoding (for
    /// example a set whose elements are not sorted). Canonical form is what
    /// makes hashes and signatures over encodings well defined.
    #[error(
        "input decodes but is not the canonical encoding of its value; re-encode with hm_wire::encode before hashing or signing"
    )]
    NonCanonical,

    /// The bytes do not have the expected structure.
    #[error("malformed input: {0}")]
    Malformed(String),

    /// A value of ours could not be encoded (a type whose `Serialize` is not
    /// supported by the wire format, e.g. a sequence of unknown length).
    #[error("value cannot be encoded: {0}; this is a bug in the type's Serialize impl")]
    Unencodable(String),

    /// A versioned format carried a version this build does not know.
    #[error("{what} has version {version}, which this build does not support; upgrade the node")]
    UnsupportedVersion { what: &'static str, version: u8 },

    /// The signature does not verify under this key, domain and message.
    #[error(
        "signature does not verify for this key, domain and message; the message was altered, signed by another key or for another purpose"
    )]
    BadSignature,

    /// Key bytes do not decode to a valid key of the expected algorithm.
    #[error(
        "key bytes are not a valid key of the expected kind (FALCON-1024 signing/verifying key or ML-KEM-1024 key) and size; the key is corrupt or of another algorithm"
    )]
    BadKey,

    /// A sealed envelope could not be opened: wrong recipient key, wrong
    /// associated data, or the envelope was altered. AES-GCM cannot tell
    /// these apart, by design.
    #[error(
        "sealed envelope does not open: it was altered, sealed for another key, or the associated data differs"
    )]
    DecryptionFailed,

    /// A Merkle proof does not prove what it claims.
    #[error("Merkle proof invalid: {0}")]
    ProofInvalid(String),

    /// Decompression stopped because the output would exceed the cap.
    #[error(
        "decompressed data would exceed {max} bytes; the input is a decompression bomb or the cap is too small"
    )]
    DecompressedTooLarge { max: usize },
}

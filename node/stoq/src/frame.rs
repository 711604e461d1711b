//! Stream framing: the bytes STOQ puts on QUIC streams, and their decoders.
//!
//! Every stream starts with one kind byte. Everything after it is a fixed-size
//! header followed by a payload whose announced length is checked against a
//! limit *before* a byte of it is buffered. Decoders here are pure functions of
//! bytes so they can be property-tested with random input; they return
//! [`FrameError`] and never panic.
//!
//! ```text
//! identity  (bi, first stream, client opens): 0x01 | len u32 | IdentityBinding
//! message   (uni, one per stream):            0x02 | len u32 | payload
//! chunk     (uni, one per stream):            0x03 | message_id u64 | total_len u64 | offset u64 | chunk_len u32 | payload
//! request   (bi):                             0x04 | len u32 | payload
//! response  (the request stream's answer):    status u8 | len u32 | payload
//! reauth    (uni, one per stream):            0x05 | len u32 | ReauthFrame
//!
//! IdentityBinding = version u8 | key_len u16 | key | sig_len u16 | signature | extra_len u32 | extra
//! ReauthFrame     = version u8 | generation u64 | extra_len u32 | extra
//! ```
//! Integers are big-endian.

/// Kind byte of the identity-binding stream.
pub const KIND_IDENTITY: u8 = 0x01;
/// Kind byte of a one-message uni stream.
pub const KIND_MESSAGE: u8 = 0x02;
/// Kind byte of a uni stream carrying one chunk of a large message.
pub const KIND_CHUNK: u8 = 0x03;
/// Kind byte of a request/response bi stream.
pub const KIND_REQUEST: u8 = 0x04;
/// Kind byte of a uni stream carrying one re-authentication frame.
pub const KIND_REAUTH: u8 = 0x05;

/// Response status: the handler answered.
pub const STATUS_OK: u8 = 0x00;

/// Bytes of a length prefix.
pub const LENGTH_BYTES: usize = 4;
/// Bytes of a chunk header after the kind byte.
pub const CHUNK_HEADER_BYTES: usize = 8 + 8 + 8 + 4;

/// Smallest chunk except a message's last one. Bounds the bookkeeping of a
/// reassembly to total_len / 16 KiB + 1 ranges, whatever the peer sends.
pub const LARGE_CHUNK_BYTES_MIN: usize = 16 * 1024;

/// Current identity binding version. A peer with another version is refused
/// (with a reason naming both) rather than guessed at.
pub const IDENTITY_VERSION: u8 = 1;
/// Largest FALCON public key accepted (FALCON-1024 keys are 1,793 bytes; the
/// margin allows a future encoding without letting a peer make us buffer much).
pub const PUBLIC_KEY_BYTES_MAX: usize = 4096;
/// Largest signature accepted (FALCON-1024 signatures are at most 1,462 bytes).
pub const SIGNATURE_BYTES_MAX: usize = 4096;
/// Largest application blob carried with the identity (e.g. a TrustChain
/// certificate in bootstrap phase 1); signed together with the exporter value.
pub const IDENTITY_EXTRA_BYTES_MAX: usize = 16 * 1024;
/// Largest identity frame: every field at its maximum plus the field headers.
pub const IDENTITY_FRAME_BYTES_MAX: usize =
    1 + 2 + PUBLIC_KEY_BYTES_MAX + 2 + SIGNATURE_BYTES_MAX + 4 + IDENTITY_EXTRA_BYTES_MAX;

/// Current re-authentication frame version; another is refused with a
/// reason naming both, like [`IDENTITY_VERSION`]. Version 1 carried a
/// signature of its own (see [`ReauthFrame`] for why 2 does not).
pub const REAUTH_VERSION: u8 = 2;
/// Bytes of a re-authentication frame before its identity bytes: version,
/// generation, length of the bytes.
pub const REAUTH_HEADER_BYTES: usize = 1 + 8 + 4;
/// Largest re-authentication frame: its header plus the largest identity
/// bytes. A peer announcing more has its connection closed before we
/// buffer a byte.
pub const REAUTH_FRAME_BYTES_MAX: usize = REAUTH_HEADER_BYTES + IDENTITY_EXTRA_BYTES_MAX;

/// What a stream is for, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Identity,
    Message,
    Chunk,
    Request,
    /// New identity bytes for a live connection (uni, one frame per stream).
    Reauth,
}

/// Malformed or over-limit bytes from the peer. Always the peer's fault (or a
/// version mismatch): the connection is closed with this text as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown stream kind 0x{0:02x}; the peer speaks another protocol or version")]
    UnknownKind(u8),
    #[error(
        "frame of {len_bytes} bytes exceeds the {len_bytes_max}-byte limit; raise frame_bytes_max on both sides or send it with send_large"
    )]
    TooLarge { len_bytes: u64, len_bytes_max: u64 },
    #[error("truncated frame: need {needed_bytes} bytes, have {have_bytes}")]
    Truncated {
        needed_bytes: usize,
        have_bytes: usize,
    },
    #[error("{0} trailing bytes after the frame")]
    TrailingBytes(usize),
    #[error(
        "identity binding version {got} is not supported (this node speaks {IDENTITY_VERSION})"
    )]
    UnsupportedVersion { got: u8 },
    #[error("chunk [{offset}, +{chunk_len}) lies outside the {total_len}-byte message")]
    ChunkOutOfRange {
        offset: u64,
        chunk_len: u64,
        total_len: u64,
    },
    #[error("empty chunk: every chunk carries at least one byte")]
    EmptyChunk,
    #[error(
        "chunk of {chunk_len} bytes is below the {LARGE_CHUNK_BYTES_MIN}-byte minimum and is not the message's last"
    )]
    ChunkTooSmall { chunk_len: u32 },
    #[error("unknown response status 0x{0:02x}")]
    UnknownStatus(u8),
    #[error(
        "re-authentication frame version {got} is not supported (this node speaks {REAUTH_VERSION})"
    )]
    UnsupportedReauthVersion { got: u8 },
    #[error(
        "re-authentication generation 0 is reserved for the handshake's identity; re-authentications start at 1"
    )]
    ReauthGenerationZero,
}

impl StreamKind {
    pub fn decode(byte: u8) -> Result<Self, FrameError> {
        match byte {
            KIND_IDENTITY => Ok(Self::Identity),
            KIND_MESSAGE => Ok(Self::Message),
            KIND_CHUNK => Ok(Self::Chunk),
            KIND_REQUEST => Ok(Self::Request),
            KIND_REAUTH => Ok(Self::Reauth),
            other => Err(FrameError::UnknownKind(other)),
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            Self::Identity => KIND_IDENTITY,
            Self::Message => KIND_MESSAGE,
            Self::Chunk => KIND_CHUNK,
            Self::Request => KIND_REQUEST,
            Self::Reauth => KIND_REAUTH,
        }
    }
}

/// Decodes a length prefix and checks it against `len_bytes_max` before the
/// caller allocates anything.
pub fn decode_length(bytes: [u8; LENGTH_BYTES], len_bytes_max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(bytes);
    let len_bytes = u64::from(len);
    if len_bytes > len_bytes_max as u64 {
        return Err(FrameError::TooLarge {
            len_bytes,
            len_bytes_max: len_bytes_max as u64,
        });
    }
    usize::try_from(len).map_err(|_| FrameError::TooLarge {
        len_bytes,
        len_bytes_max: len_bytes_max as u64,
    })
}

/// A kind byte plus length prefix, ready to go in front of a payload.
/// `payload_len` must already be within the caller's limit (it is ours).
pub fn encode_prefixed_header(first: u8, payload_len: usize) -> [u8; 1 + LENGTH_BYTES] {
    let len = u32::try_from(payload_len).unwrap_or(u32::MAX);
    assert_eq!(
        len as usize, payload_len,
        "callers check frame limits (< 4 GiB) before encoding"
    );
    let mut header = [0u8; 1 + LENGTH_BYTES];
    header[0] = first;
    header[1..].copy_from_slice(&len.to_be_bytes());
    header
}

/// Decodes a response status byte.
pub fn decode_status(byte: u8) -> Result<(), FrameError> {
    if byte == STATUS_OK {
        Ok(())
    } else {
        Err(FrameError::UnknownStatus(byte))
    }
}

/// Header of one chunk of a large message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub message_id: u64,
    pub total_len: u64,
    pub offset: u64,
    pub chunk_len: u32,
}

impl ChunkHeader {
    pub fn encode(&self) -> [u8; 1 + CHUNK_HEADER_BYTES] {
        let mut out = [0u8; 1 + CHUNK_HEADER_BYTES];
        out[0] = KIND_CHUNK;
        out[1..9].copy_from_slice(&self.message_id.to_be_bytes());
        out[9..17].copy_from_slice(&self.total_len.to_be_bytes());
        out[17..25].copy_from_slice(&self.offset.to_be_bytes());
        out[25..29].copy_from_slice(&self.chunk_len.to_be_bytes());
        out
    }

    /// Decodes the header bytes after the kind byte and checks them against
    /// the limits: the message is at most `total_bytes_max`, the chunk at most
    /// `chunk_bytes_max`, non-empty, and inside the message.
    pub fn decode(
        bytes: &[u8; CHUNK_HEADER_BYTES],
        total_bytes_max: usize,
        chunk_bytes_max: usize,
    ) -> Result<Self, FrameError> {
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(word)
        };
        let mut len_word = [0u8; 4];
        len_word.copy_from_slice(&bytes[24..28]);
        let header = Self {
            message_id: u64_at(0),
            total_len: u64_at(8),
            offset: u64_at(16),
            chunk_len: u32::from_be_bytes(len_word),
        };
        if header.total_len > total_bytes_max as u64 {
            return Err(FrameError::TooLarge {
                len_bytes: header.total_len,
                len_bytes_max: total_bytes_max as u64,
            });
        }
        if u64::from(header.chunk_len) > chunk_bytes_max as u64 {
            return Err(FrameError::TooLarge {
                len_bytes: u64::from(header.chunk_len),
                len_bytes_max: chunk_bytes_max as u64,
            });
        }
        if header.chunk_len == 0 {
            return Err(FrameError::EmptyChunk);
        }
        let end = header.offset.checked_add(u64::from(header.chunk_len));
        if end.is_none_or(|end| end > header.total_len) {
            return Err(FrameError::ChunkOutOfRange {
                offset: header.offset,
                chunk_len: u64::from(header.chunk_len),
                total_len: header.total_len,
            });
        }
        let is_last = header.offset + u64::from(header.chunk_len) == header.total_len;
        if (header.chunk_len as usize) < LARGE_CHUNK_BYTES_MIN && !is_last {
            return Err(FrameError::ChunkTooSmall {
                chunk_len: header.chunk_len,
            });
        }
        Ok(header)
    }
}

/// What each side sends on the identity stream: its FALCON public key and a
/// signature over the TLS exporter value (plus `extra`), so the key is bound to
/// this very QUIC session (RFC 9261 exported-authenticator style).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityBinding {
    pub version: u8,
    pub public_key: Vec<u8>,
    pub signature: Vec<u8>,
    pub extra: Vec<u8>,
}

impl IdentityBinding {
    /// Encodes the body (without the stream's kind/length prefix). Fields over
    /// their limits are a local bug, so they are asserted.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.public_key.len() <= PUBLIC_KEY_BYTES_MAX);
        assert!(self.signature.len() <= SIGNATURE_BYTES_MAX);
        assert!(self.extra.len() <= IDENTITY_EXTRA_BYTES_MAX);
        let mut out = Vec::with_capacity(
            1 + 2 + self.public_key.len() + 2 + self.signature.len() + 4 + self.extra.len(),
        );
        out.push(self.version);
        out.extend_from_slice(&(self.public_key.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&(self.signature.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&(self.extra.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.extra);
        debug_assert!(out.len() <= IDENTITY_FRAME_BYTES_MAX);
        out
    }

    /// Decodes a body; rejects over-limit fields, truncation and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let mut reader = Reader { bytes, at: 0 };
        let version = reader.take(1)?[0];
        if version != IDENTITY_VERSION {
            return Err(FrameError::UnsupportedVersion { got: version });
        }
        let public_key = reader.field(2, PUBLIC_KEY_BYTES_MAX)?.to_vec();
        let signature = reader.field(2, SIGNATURE_BYTES_MAX)?.to_vec();
        let extra = reader.field(4, IDENTITY_EXTRA_BYTES_MAX)?.to_vec();
        let trailing = bytes.len() - reader.at;
        if trailing > 0 {
            return Err(FrameError::TrailingBytes(trailing));
        }
        Ok(Self {
            version,
            public_key,
            signature,
            extra,
        })
    }
}

/// What a node sends on a live connection when its identity bytes change
/// (e.g. it obtained or renewed a certificate): the new bytes, numbered by
/// the sender's endpoint-wide `generation` so the receiver keeps only the
/// newest.
///
/// Unsigned on purpose. The frame travels inside the QUIC connection, whose
/// packets only the holder of this session's keys can produce, and the
/// handshake binding already tied those keys to the sender's FALCON key: a
/// signature would prove again what the connection proves. (Version 1
/// signed each frame with FALCON-1024 — one signature per live connection
/// per certificate change, 7 % of a 1,000-node bootstrap in the simulator.)
/// The new bytes still go through the [`crate::PeerVerifier`], which checks
/// the certificate in them against the peer's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReauthFrame {
    /// The sender's identity generation; at least 1 (0 is the handshake's).
    pub generation: u64,
    /// The new identity bytes (e.g. a certificate bundle).
    pub extra: Vec<u8>,
}

impl ReauthFrame {
    /// Encodes the body (without the stream's kind/length prefix). A zero
    /// generation or over-limit bytes are a local bug, so they are asserted.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.generation > 0, "generation 0 is the handshake's");
        assert!(self.extra.len() <= IDENTITY_EXTRA_BYTES_MAX);
        let mut out = Vec::with_capacity(REAUTH_HEADER_BYTES + self.extra.len());
        out.push(REAUTH_VERSION);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&(self.extra.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.extra);
        debug_assert!(out.len() <= REAUTH_FRAME_BYTES_MAX);
        out
    }

    /// Decodes a body; rejects other versions, generation 0, over-limit
    /// bytes, truncation and trailing bytes. Accepted input re-encodes to
    /// the same bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let mut reader = Reader { bytes, at: 0 };
        let version = reader.take(1)?[0];
        if version != REAUTH_VERSION {
            return Err(FrameError::UnsupportedReauthVersion { got: version });
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(reader.take(8)?);
        let generation = u64::from_be_bytes(word);
        if generation == 0 {
            return Err(FrameError::ReauthGenerationZero);
        }
        let extra = reader.field(4, IDENTITY_EXTRA_BYTES_MAX)?.to_vec();
        let trailing = bytes.len() - reader.at;
        if trailing > 0 {
            return Err(FrameError::TrailingBytes(trailing));
        }
        Ok(Self { generation, extra })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], FrameError> {
        let have_bytes = self.bytes.len() - self.at;
        if len > have_bytes {
            return Err(FrameError::Truncated {
                needed_bytes: len,
                have_bytes,
            });
        }
        let out = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(out)
    }

    /// A field with a `prefix_bytes`-wide big-endian length, at most `len_max`.
    fn field(&mut self, prefix_bytes: usize, len_max: usize) -> Result<&'a [u8], FrameError> {
        let prefix = self.take(prefix_bytes)?;
        let len = prefix
            .iter()
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
        if len > len_max as u64 {
            return Err(FrameError::TooLarge {
                len_bytes: len,
                len_bytes_max: len_max as u64,
            });
        }
        // `len <= len_max`, a usize, so the cast is exact.
        self.take(len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kinds_round_trip_and_unknown_kinds_are_errors() {
        for kind in [
            StreamKind::Identity,
            StreamKind::Message,
            StreamKind::Chunk,
            StreamKind::Request,
            StreamKind::Reauth,
        ] {
            assert_eq!(StreamKind::decode(kind.byte()), Ok(kind));
        }
        assert_eq!(StreamKind::decode(0xff), Err(FrameError::UnknownKind(0xff)));
    }

    #[test]
    fn length_over_the_limit_is_refused_before_allocation() {
        assert_eq!(decode_length(16u32.to_be_bytes(), 16), Ok(16));
        assert_eq!(
            decode_length(17u32.to_be_bytes(), 16),
            Err(FrameError::TooLarge {
                len_bytes: 17,
                len_bytes_max: 16
            })
        );
    }

    #[test]
    fn chunk_must_lie_inside_its_message() {
        let header = ChunkHeader {
            message_id: 7,
            total_len: 10,
            offset: 8,
            chunk_len: 3,
        };
        let bytes = header.encode();
        let body: &[u8; CHUNK_HEADER_BYTES] = bytes[1..].try_into().expect("size");
        assert!(matches!(
            ChunkHeader::decode(body, 100, 100),
            Err(FrameError::ChunkOutOfRange { .. })
        ));
        let ok = ChunkHeader {
            chunk_len: 2,
            ..header
        };
        let bytes = ok.encode();
        let body: &[u8; CHUNK_HEADER_BYTES] = bytes[1..].try_into().expect("size");
        assert_eq!(ChunkHeader::decode(body, 100, 100), Ok(ok));
        assert!(matches!(
            ChunkHeader::decode(body, 9, 100),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn identity_binding_rejects_trailing_bytes_and_other_versions() {
        let binding = IdentityBinding {
            version: IDENTITY_VERSION,
            public_key: vec![1; 10],
            signature: vec![2; 20],
            extra: vec![3; 3],
        };
        let mut bytes = binding.encode();
        assert_eq!(IdentityBinding::decode(&bytes), Ok(binding));
        bytes.push(0);
        assert_eq!(
            IdentityBinding::decode(&bytes),
            Err(FrameError::TrailingBytes(1))
        );
        bytes[0] = 9;
        assert_eq!(
            IdentityBinding::decode(&bytes),
            Err(FrameError::UnsupportedVersion { got: 9 })
        );
    }

    fn sample_reauth(generation: u64) -> ReauthFrame {
        ReauthFrame {
            generation,
            extra: b"cert".to_vec(),
        }
    }

    #[test]
    fn reauth_frame_layout_is_version_generation_length_bytes() {
        let frame = sample_reauth(0x0102_0304_0506_0708);
        let bytes = frame.encode();
        assert_eq!(bytes[0], REAUTH_VERSION);
        assert_eq!(&bytes[1..9], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[9..13], &[0, 0, 0, 4]);
        assert_eq!(&bytes[13..], b"cert");
        assert_eq!(ReauthFrame::decode(&bytes), Ok(frame));
    }

    #[test]
    fn reauth_frame_rejects_other_versions_generation_zero_and_trailing_bytes() {
        let mut bytes = sample_reauth(3).encode();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            ReauthFrame::decode(&trailing),
            Err(FrameError::TrailingBytes(1))
        );
        let mut zero = bytes.clone();
        zero[1..9].copy_from_slice(&0u64.to_be_bytes());
        assert_eq!(
            ReauthFrame::decode(&zero),
            Err(FrameError::ReauthGenerationZero)
        );
        bytes[0] = 7;
        assert_eq!(
            ReauthFrame::decode(&bytes),
            Err(FrameError::UnsupportedReauthVersion { got: 7 })
        );
        assert!(matches!(
            ReauthFrame::decode(&[REAUTH_VERSION, 0, 0]),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn the_largest_reauth_frame_fits_its_limit() {
        let frame = ReauthFrame {
            generation: u64::MAX,
            extra: vec![0; IDENTITY_EXTRA_BYTES_MAX],
        };
        assert_eq!(frame.encode().len(), REAUTH_FRAME_BYTES_MAX);
        let mut over = frame.encode();
        over[9..13].copy_from_slice(&(IDENTITY_EXTRA_BYTES_MAX as u32 + 1).to_be_bytes());
        over.push(0);
        assert!(ReauthFrame::decode(&over).is_err(), "bytes over the limit");
    }

    proptest! {
        #[test]
        fn reauth_decoder_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(frame) = ReauthFrame::decode(&bytes) {
                // Anything accepted is canonical: it re-encodes to the same bytes.
                prop_assert!(frame.generation > 0);
                prop_assert_eq!(frame.encode(), bytes);
            }
        }

        #[test]
        fn reauth_decoder_never_panics_on_mutated_frames(
            generation in 1u64..,
            extra in prop::collection::vec(any::<u8>(), 0..64),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
        ) {
            // Random bytes rarely get past the version byte; mutate a valid
            // frame instead so the length field is reached too.
            let mut frame = sample_reauth(generation);
            frame.extra = extra;
            let mut bytes = frame.encode();
            for (at, byte) in flips {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            if let Ok(decoded) = ReauthFrame::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }

        #[test]
        fn reauth_frame_round_trips(
            generation in 1u64..,
            extra in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let frame = ReauthFrame { generation, extra };
            prop_assert_eq!(ReauthFrame::decode(&frame.encode()), Ok(frame));
        }

        #[test]
        fn identity_decoder_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(binding) = IdentityBinding::decode(&bytes) {
                // Anything accepted is canonical: it re-encodes to the same bytes.
                prop_assert_eq!(binding.encode(), bytes);
            }
        }

        #[test]
        fn identity_binding_round_trips(
            public_key in prop::collection::vec(any::<u8>(), 0..64),
            signature in prop::collection::vec(any::<u8>(), 0..64),
            extra in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let binding = IdentityBinding { version: IDENTITY_VERSION, public_key, signature, extra };
            prop_assert_eq!(IdentityBinding::decode(&binding.encode()), Ok(binding));
        }

        #[test]
        fn chunk_decoder_accepts_only_in_range_headers(
            bytes in prop::array::uniform28(any::<u8>()),
            total_max in 0usize..1 << 40,
            chunk_max in 0usize..1 << 24,
        ) {
            if let Ok(header) = ChunkHeader::decode(&bytes, total_max, chunk_max) {
                prop_assert!(header.total_len <= total_max as u64);
                prop_assert!(header.chunk_len as usize <= chunk_max);
                prop_assert!(header.chunk_len > 0);
                let end = header.offset + u64::from(header.chunk_len);
                prop_assert!(end <= header.total_len);
                prop_assert!(header.chunk_len as usize >= LARGE_CHUNK_BYTES_MIN || end == header.total_len);
                prop_assert_eq!(&header.encode()[1..], &bytes[..]);
            }
        }

        #[test]
        fn length_and_kind_decoders_never_panic(bytes in prop::array::uniform4(any::<u8>()), max in any::<usize>(), kind in any::<u8>(), status in any::<u8>()) {
            if let Ok(len) = decode_length(bytes, max) {
                prop_assert!(len <= max);
            }
            let _ = StreamKind::decode(kind);
            prop_assert_eq!(decode_status(status).is_ok(), status == STATUS_OK);
        }
    }
}

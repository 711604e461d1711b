//! Brotli compression with a hard cap on decompressed size.
//!
//! [`compress`] uses quality [`COMPRESS_QUALITY`] (4) and a 4 MiB window
//! ([`COMPRESS_WINDOW_BITS`] = 22): on message-sized inputs quality 4 runs at
//! hundreds of MB/s while still beating gzip's ratio; the slow qualities
//! (10-11) buy a few percent for 100× the time, which a node compressing on
//! the hot path cannot afford.
//!
//! [`decompress`] drives the decoder in [`DECOMPRESS_CHUNK_BYTES`] steps and
//! stops with [`WireError::DecompressedTooLarge`] as soon as the output would
//! pass the caller's cap, so a tiny bomb cannot make it allocate more than
//! `max_bytes` of output. Its other memory is the decoder's window, at most
//! 16 MiB (large-window streams, an extension allowing 1 GiB windows, are
//! refused). A complete stream followed by more bytes is refused as
//! [`WireError::TrailingBytes`], a stream that stops early as malformed.

use crate::WireError;
use brotli::{BrotliDecompressStream, BrotliResult, BrotliState, HeapAlloc};

/// Brotli quality (0-11) used by [`compress`]; see the module doc.
pub const COMPRESS_QUALITY: i32 = 4;
/// log2 of the compression window used by [`compress`].
pub const COMPRESS_WINDOW_BITS: i32 = 22;
/// Output produced per decoder step in [`decompress`]: the most the output
/// can overshoot the cap before we notice (it is then discarded).
pub const DECOMPRESS_CHUNK_BYTES: usize = 16 << 10;

/// Compressions and decompressions remembered process-wide when memos are
/// on (see [`hm_env::memo`]): every simulated node compresses the blocks it
/// stores and decompresses the blocks it serves, the same bytes on every
/// node.
mod memo {
    use hm_env::memo::Memo;

    /// Total bytes of outputs each memo keeps.
    pub const MEMO_BYTES_MAX: usize = 256 << 20;
    pub const MEMO_ENTRIES_MAX: usize = 1 << 14;

    pub static COMPRESSED: Memo<Vec<u8>> = Memo::new(MEMO_ENTRIES_MAX, MEMO_BYTES_MAX);
    pub static DECOMPRESSED: Memo<Result<Vec<u8>, crate::WireError>> =
        Memo::new(MEMO_ENTRIES_MAX, MEMO_BYTES_MAX);
}

/// Compresses `data` (see the module doc for the settings).
pub fn compress(data: &[u8]) -> Vec<u8> {
    memo::COMPRESSED.get_or_compute(
        || hm_env::memo::memo_id("hm/memo/compress", &[data]),
        Vec::len,
        || compress_uncached(data),
    )
}

/// [`compress`] of the bytes `content` produces, for callers that can name
/// those bytes more cheaply than by hashing them: when memos are on the
/// result is remembered under the parts `identity` returns, and `content`
/// runs only when it is not. The caller guarantees that equal identities
/// mean equal content (e.g. a block's header hash, which commits to its
/// body, with its proofs). When memos are off this is `compress(&content())`
/// and `identity` never runs.
pub fn compress_named(
    identity: impl FnOnce() -> Vec<Vec<u8>>,
    content: impl FnOnce() -> Vec<u8>,
) -> Vec<u8> {
    let id = || {
        let parts = identity();
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        hm_env::memo::memo_id("hm/memo/compress-named", &parts)
    };
    memo::COMPRESSED.get_or_compute(id, Vec::len, || compress_uncached(&content()))
}

fn compress_uncached(data: &[u8]) -> Vec<u8> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: COMPRESS_QUALITY,
        lgwin: COMPRESS_WINDOW_BITS,
        size_hint: data.len(),
        ..brotli::enc::BrotliEncoderParams::default()
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut input = data;
    // Reading a slice and writing a Vec cannot fail, so neither can this.
    if let Err(error) = brotli::BrotliCompress(&mut input, &mut out, &params) {
        panic!("brotli compression into memory failed: {error}");
    }
    out
}

/// Decompresses a complete Brotli stream, refusing to produce more than
/// `max_bytes`.
pub fn decompress(data: &[u8], max_bytes: usize) -> Result<Vec<u8>, WireError> {
    memo::DECOMPRESSED.get_or_compute(
        || {
            hm_env::memo::memo_id(
                "hm/memo/decompress",
                &[data, &(max_bytes as u64).to_le_bytes()],
            )
        },
        |result| result.as_ref().map_or(0, Vec::len),
        || decompress_uncached(data, max_bytes),
    )
}

fn decompress_uncached(data: &[u8], max_bytes: usize) -> Result<Vec<u8>, WireError> {
    let mut state = BrotliState::new_strict(
        HeapAlloc::<u8>::new(0),
        HeapAlloc::<u32>::new(0),
        HeapAlloc::<brotli::HuffmanCode>::new(brotli::HuffmanCode::default()),
    );
    let mut out = Vec::new();
    let mut chunk = vec![0u8; DECOMPRESS_CHUNK_BYTES];
    let mut available_in = data.len();
    let mut input_offset = 0;
    let mut total_out = 0;
    // Every step either ends the stream or fills the whole chunk (the
    // decoder asks for more output only when the chunk is full), so the
    // cap bounds the number of steps.
    let steps_max = max_bytes / DECOMPRESS_CHUNK_BYTES + 2;
    for _ in 0..steps_max {
        let mut available_out = chunk.len();
        let mut output_offset = 0;
        let result = BrotliDecompressStream(
            &mut available_in,
            &mut input_offset,
            data,
            &mut available_out,
            &mut output_offset,
            &mut chunk,
            &mut total_out,
            &mut state,
        );
        let produced = &chunk[..output_offset];
        if produced.len() > max_bytes - out.len() {
            return Err(WireError::DecompressedTooLarge { max: max_bytes });
        }
        out.extend_from_slice(produced);
        match result {
            BrotliResult::ResultSuccess => {
                if available_in != 0 {
                    return Err(WireError::TrailingBytes);
                }
                return Ok(out);
            }
            BrotliResult::NeedsMoreOutput => {}
            BrotliResult::NeedsMoreInput => {
                return Err(WireError::Malformed(
                    "brotli stream ends before its last block; it was truncated".into(),
                ));
            }
            BrotliResult::ResultFailure => {
                return Err(WireError::Malformed(format!(
                    "not a valid brotli stream (decoder error {:?})",
                    state.error_code
                )));
            }
        }
    }
    // Only reachable if a step produced less than a full chunk yet asked
    // for more output: treat it as over the cap rather than loop on.
    Err(WireError::DecompressedTooLarge { max: max_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bomb_stops_at_the_cap() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = compress(&zeros);
        assert!(
            bomb.len() < 4096,
            "8 MiB of zeros compress to {} bytes",
            bomb.len()
        );
        assert_eq!(
            decompress(&bomb, 1 << 20),
            Err(WireError::DecompressedTooLarge { max: 1 << 20 })
        );
        assert_eq!(decompress(&bomb, 8 << 20).map(|out| out.len()), Ok(8 << 20));
        assert_eq!(
            decompress(&bomb, (8 << 20) - 1),
            Err(WireError::DecompressedTooLarge { max: (8 << 20) - 1 })
        );
    }

    #[test]
    fn empty_and_trailing_and_truncated() {
        assert_eq!(decompress(&compress(b""), 0), Ok(vec![]));
        assert!(decompress(&[], 10).is_err());
        let mut stream = compress(b"hello hello hello");
        stream.push(0);
        assert_eq!(decompress(&stream, 100), Err(WireError::TrailingBytes));
        let stream = compress(&[7u8; 10_000]);
        assert!(decompress(&stream[..stream.len() - 1], 20_000).is_err());
    }

    #[test]
    fn named_content_compresses_like_its_bytes_and_without_memos_is_produced_each_time() {
        assert!(
            !hm_env::memo::enabled(),
            "hm-wire's unit tests run as a real node does, with memos off"
        );
        let content = b"named named named content".repeat(50);
        let mut produced = 0;
        let packed = compress_named(
            || vec![b"test/named".to_vec(), b"1".to_vec()],
            || {
                produced += 1;
                content.clone()
            },
        );
        assert_eq!(produced, 1);
        assert_eq!(packed, compress(&content));
        let again = compress_named(
            || vec![b"test/named".to_vec(), b"1".to_vec()],
            || {
                produced += 1;
                content.clone()
            },
        );
        assert_eq!(decompress(&again, content.len()), Ok(content.clone()));
        // Memos are off in this test binary: the second call produces the
        // content again (tests/memo.rs checks the memo reuses the first).
        assert_eq!(produced, 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..5000), repeat in 1usize..8) {
            let data = data.repeat(repeat);
            let packed = compress(&data);
            prop_assert_eq!(decompress(&packed, data.len()), Ok(data.clone()));
            if !data.is_empty() {
                prop_assert_eq!(
                    decompress(&packed, data.len() - 1),
                    Err(WireError::DecompressedTooLarge { max: data.len() - 1 })
                );
            }
        }

        #[test]
        fn random_bytes_never_panic_or_overflow(bytes in proptest::collection::vec(any::<u8>(), 0..2000), cap in 0usize..100_000) {
            if let Ok(out) = decompress(&bytes, cap) {
                prop_assert!(out.len() <= cap);
            }
        }
    }
}

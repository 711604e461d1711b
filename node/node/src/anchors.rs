//! Anchor heads: the certificate-log heads of every [`ANCHOR_BLOCKS`]-th
//! block, which certificates presented on connections are proven against.
//!
//! A light node holds no log, so it can check a peer's certificate only by
//! an inclusion proof against a log head it trusts — one a certified header
//! named. It cannot verify every header (that is what being light saves),
//! so everyone agrees on which heads to staple proofs to: those of the
//! anchor heights (multiples of [`ANCHOR_BLOCKS`]). Light nodes verify each
//! anchor header as the chain passes it; presenters (light and full) prove
//! their certificate against an anchor at least [`ANCHOR_SETTLE_BLOCKS`]
//! old, so the judging light node has had time to verify it, and refresh
//! the proof once it is [`ANCHOR_REFRESH_BLOCKS`] old, so a light node that
//! booted later still knows the anchor.
//!
//! Owns the bounded set of anchor heads and the choice of anchor. Must not
//! know where the heads come from (verified headers on a light node,
//! committed blocks on a replica).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hm_kernel::block::{Height, LogHead};
use serde::{Deserialize, Serialize};

/// Every this many blocks a header's log head is an anchor.
pub const ANCHOR_BLOCKS: u64 = 8;
/// A presenter staples a proof against an anchor at least this many
/// blocks below the head it knows.
pub const ANCHOR_SETTLE_BLOCKS: u64 = 4;
/// A presented proof older than this many blocks is refreshed.
pub const ANCHOR_REFRESH_BLOCKS: u64 = 64;
/// Anchor heads kept (the oldest go first): 1,024 anchors of 8 blocks are
/// over two hours of one-second blocks, far more than a refresh period.
pub const ANCHOR_HEADS_MAX: usize = 1_024;
/// Largest encoded set (persisted by light nodes).
pub const ANCHOR_HEADS_BYTES_MAX: usize = 16 + ANCHOR_HEADS_MAX * (8 + 8 + 32 + 8);

/// Whether a presenter goes on presenting the certificate it presents now
/// instead of a newer one (a renewal) that no settled anchor holds yet.
///
/// A light node judges a certificate only by a proof against an anchor it
/// verified. Presenting the newer certificate before an anchor holds it
/// would make every light peer refuse it, and close each connection it is
/// re-authenticated on: each side then suspects the other, and the
/// suspicions and refutations flood the membership (the 1,000-node
/// headline took 20–35 s to converge after its faults, most of it this).
/// The presented certificate serves while its proof is anchored and it
/// is still usable; renewal comes halfway through its validity, so an
/// anchor (every [`ANCHOR_BLOCKS`] blocks) holds the new one long before.
/// `presented_usable` is asked last, only when the rest would keep it (a
/// replica reads the certificate's standing from its state for it).
pub fn keep_presenting(
    presented_anchored: bool,
    newer_anchored: bool,
    presented_usable: impl FnOnce() -> bool,
) -> bool {
    presented_anchored && !newer_anchored && presented_usable()
}

/// Whether `height` is an anchor height.
pub fn is_anchor(height: Height) -> bool {
    height > 0 && height.is_multiple_of(ANCHOR_BLOCKS)
}

/// The anchor heads known, by height.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorHeads {
    heads: BTreeMap<Height, LogHead>,
    /// The highest chain height known (committed, or claimed by a full
    /// node's head): how settled an anchor is.
    chain_height: Height,
}

/// Shared between whoever learns anchors and the certificate validator.
pub type SharedAnchors = Arc<Mutex<AnchorHeads>>;

impl AnchorHeads {
    /// Records the log head of anchor `height` (other heights are ignored).
    pub fn insert(&mut self, height: Height, head: LogHead) {
        if !is_anchor(height) {
            return;
        }
        self.heads.insert(height, head);
        while self.heads.len() > ANCHOR_HEADS_MAX {
            self.heads.pop_first();
        }
    }

    /// The chain reached `height` (as far as this node knows).
    pub fn note_height(&mut self, height: Height) {
        self.chain_height = self.chain_height.max(height);
    }

    pub fn chain_height(&self) -> Height {
        self.chain_height
    }

    pub fn len(&self) -> usize {
        self.heads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    pub fn latest_height(&self) -> Option<Height> {
        self.heads.last_key_value().map(|(height, _)| *height)
    }

    pub fn contains(&self, height: Height) -> bool {
        self.heads.contains_key(&height)
    }

    /// An anchor head of a log of `size` entries (the log grows only, so
    /// all anchors of one size share one head).
    pub fn head_of_size(&self, size: u64) -> Option<LogHead> {
        self.heads.values().find(|head| head.size == size).copied()
    }

    /// The anchor to prove a certificate logged at `log_index` against,
    /// given the chain's head is at `head_height`: the newest anchor that
    /// is settled (at least [`ANCHOR_SETTLE_BLOCKS`] below the head) and
    /// whose log holds the certificate.
    pub fn anchor_for(&self, log_index: u64, head_height: Height) -> Option<(Height, LogHead)> {
        let settled = head_height.checked_sub(ANCHOR_SETTLE_BLOCKS)?;
        self.heads
            .range(..=settled)
            .next_back()
            .filter(|(_, head)| head.size > log_index)
            .map(|(height, head)| (*height, *head))
    }

    /// Whether a proof against anchor `presented` (None: none yet) should
    /// be replaced by one against `candidate`.
    pub fn should_refresh(presented: Option<Height>, candidate: Height) -> bool {
        match presented {
            None => true,
            Some(presented) => candidate >= presented.saturating_add(ANCHOR_REFRESH_BLOCKS),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<AnchorHeads, hm_wire::WireError> {
        let heads: AnchorHeads = hm_wire::decode(bytes, ANCHOR_HEADS_BYTES_MAX)?;
        if heads.heads.len() > ANCHOR_HEADS_MAX || heads.heads.keys().any(|h| !is_anchor(*h)) {
            return Err(hm_wire::WireError::Malformed(
                "anchor heads: too many, or one not at an anchor height".into(),
            ));
        }
        Ok(heads)
    }
}

#[cfg(test)]
mod tests {
    use hm_wire::Hash;

    use super::*;

    fn head(size: u64) -> LogHead {
        LogHead {
            size,
            root: Hash([size as u8; 32]),
        }
    }

    #[test]
    fn only_anchor_heights_are_kept_and_the_set_is_bounded() {
        let mut heads = AnchorHeads::default();
        heads.insert(7, head(1));
        heads.insert(0, head(1));
        assert!(heads.is_empty());
        for anchor in 1..=(ANCHOR_HEADS_MAX as u64 + 3) {
            heads.insert(anchor * ANCHOR_BLOCKS, head(anchor));
        }
        assert_eq!(heads.len(), ANCHOR_HEADS_MAX);
        assert!(!heads.contains(ANCHOR_BLOCKS), "the oldest went first");
        assert_eq!(
            heads.latest_height(),
            Some((ANCHOR_HEADS_MAX as u64 + 3) * ANCHOR_BLOCKS)
        );
        let decoded = AnchorHeads::decode(&heads.encode()).expect("round trip");
        assert_eq!(decoded, heads);
    }

    #[test]
    fn a_certificate_is_proven_against_the_newest_settled_anchor_holding_it() {
        let mut heads = AnchorHeads::default();
        heads.insert(8, head(3));
        heads.insert(16, head(5));
        heads.insert(24, head(9));
        // Head at 27: anchor 24 is not settled yet (27 - 4 = 23).
        assert_eq!(heads.anchor_for(2, 27), Some((16, head(5))));
        assert_eq!(heads.anchor_for(2, 28), Some((24, head(9))));
        // Logged at index 5: not in anchor 16's log of 5 entries.
        assert_eq!(heads.anchor_for(5, 27), None);
        assert_eq!(heads.anchor_for(5, 28), Some((24, head(9))));
        assert_eq!(heads.anchor_for(0, 3), None);
        assert_eq!(heads.head_of_size(5), Some(head(5)));
        assert_eq!(heads.head_of_size(4), None);
    }

    #[test]
    fn proofs_are_refreshed_only_when_missing_or_old() {
        assert!(AnchorHeads::should_refresh(None, 8));
        assert!(!AnchorHeads::should_refresh(Some(8), 64));
        assert!(AnchorHeads::should_refresh(
            Some(8),
            8 + ANCHOR_REFRESH_BLOCKS
        ));
    }

    #[test]
    fn a_persisted_set_with_a_stray_height_is_refused() {
        let mut bad = AnchorHeads::default();
        bad.heads.insert(5, head(1));
        assert!(AnchorHeads::decode(&bad.encode()).is_err());
        assert!(AnchorHeads::decode(&[0xff; 4]).is_err());
    }
}

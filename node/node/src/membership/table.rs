//! The full membership table with SWIM precedence, an incrementally kept
//! order-independent digest, and the indexes the timers need (suspicion
//! deadlines, dead members). Knows nothing about the overlay or messages.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV6;

use super::rng::mix64;
use super::types::{MemberState, NodeId, Status, Update};

/// Incarnations above this are refused: a hostile peer must not push a
/// member (or us, through refutation) to `u64::MAX`, where `+ 1` would
/// overflow and the member could never refute again. 2^48 refutations or
/// restarts is far beyond any real node's lifetime.
pub const INCARNATION_MAX: u64 = 1 << 48;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Applied {
    /// The table changed: this is news worth gossiping.
    New,
    /// Old or equal news.
    Stale,
    /// Invalid (absurd incarnation) or no room in a full table.
    Rejected,
}

#[derive(Debug)]
pub(crate) struct Table {
    members_max: usize,
    suspicion_timeout_ms: u64,
    entries: BTreeMap<NodeId, MemberState>,
    /// Wrapping sum of `entry_hash` over all entries: independent of order,
    /// updated in O(1) per change.
    digest: u64,
    /// The same sum per bucket of ids (see [`bucket_of`]), so anti-entropy
    /// can ship only the buckets that differ.
    bucket_digests: [u64; DIGEST_BUCKETS],
    /// (deadline_ms, id) of every Suspect entry.
    suspect_deadlines: BTreeSet<(u64, NodeId)>,
    dead: BTreeSet<NodeId>,
}

/// Buckets of the anti-entropy digest. 32 keeps a Digest message small
/// (256 bytes of bucket hashes) while a few differing members in a table of a
/// thousand cost ~1/32 of the table each to repair.
pub const DIGEST_BUCKETS: usize = 32;

/// The digest bucket of a member.
pub fn bucket_of(id: &NodeId) -> usize {
    usize::from(id.0[0]) % DIGEST_BUCKETS
}

/// FNV-1a over (id, incarnation, status rank), then a full mix so that the
/// sum of many hashes does not cancel structure.
fn entry_hash(id: &NodeId, incarnation: u64, status: Status) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    let bytes =
        id.0.into_iter()
            .chain(incarnation.to_le_bytes())
            .chain([status.rank()]);
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    mix64(hash)
}

impl Table {
    pub(crate) fn new(members_max: usize, suspicion_timeout_ms: u64) -> Self {
        assert!(
            members_max >= 2,
            "the table must hold at least self and one peer"
        );
        Self {
            members_max,
            suspicion_timeout_ms,
            entries: BTreeMap::new(),
            digest: 0,
            bucket_digests: [0; DIGEST_BUCKETS],
            suspect_deadlines: BTreeSet::new(),
            dead: BTreeSet::new(),
        }
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&MemberState> {
        self.entries.get(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn digest(&self) -> u64 {
        self.digest
    }

    pub(crate) fn bucket_digests(&self) -> &[u64; DIGEST_BUCKETS] {
        &self.bucket_digests
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &MemberState)> {
        self.entries.iter()
    }

    /// Members that are Alive or Suspect (a suspect is still a member until
    /// its suspicion times out).
    pub(crate) fn alive_count(&self) -> usize {
        self.entries.len() - self.dead.len()
    }

    pub(crate) fn dead_ids(&self) -> &BTreeSet<NodeId> {
        &self.dead
    }

    pub(crate) fn next_suspect_deadline(&self) -> Option<u64> {
        self.suspect_deadlines
            .first()
            .map(|(deadline, _)| *deadline)
    }

    /// Suspects whose deadline has passed (the caller declares them Dead).
    pub(crate) fn expired_suspects(&self, now_ms: u64) -> Vec<NodeId> {
        self.suspect_deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Apply an update under SWIM precedence: higher incarnation wins; at
    /// equal incarnation Dead > Suspect > Alive.
    pub(crate) fn apply(&mut self, update: &Update, now_ms: u64) -> Applied {
        let incarnation = update.incarnation();
        if incarnation > INCARNATION_MAX {
            return Applied::Rejected;
        }
        let id = update.id();
        let addr = match self.entries.get(&id) {
            Some(current) => {
                if update.precedence() <= (current.incarnation, current.status.rank()) {
                    return Applied::Stale;
                }
                // At equal incarnation only the status changes; the address is
                // the member's own claim (a new address comes with a restart,
                // which bumps the incarnation).
                if incarnation == current.incarnation {
                    current.addr
                } else {
                    update.addr()
                }
            }
            None => {
                if self.entries.len() >= self.members_max && !self.evict_oldest_dead() {
                    return Applied::Rejected;
                }
                update.addr()
            }
        };
        self.set(
            id,
            MemberState {
                addr,
                incarnation,
                status: update.status(),
                reporter: update.reporter(),
                changed_ms: now_ms,
            },
        );
        Applied::New
    }

    /// Overwrite an entry (used for our own entry, which only we decide).
    pub(crate) fn set(&mut self, id: NodeId, state: MemberState) {
        if let Some(old) = self.entries.insert(id, state) {
            self.unindex(id, &old);
        }
        self.index(id, &state);
        debug_assert!(self.entries.len() <= self.members_max);
    }

    fn index(&mut self, id: NodeId, state: &MemberState) {
        let hash = entry_hash(&id, state.incarnation, state.status);
        self.digest = self.digest.wrapping_add(hash);
        let bucket = &mut self.bucket_digests[bucket_of(&id)];
        *bucket = bucket.wrapping_add(hash);
        match state.status {
            Status::Alive => {}
            Status::Suspect => {
                let deadline = state.changed_ms.saturating_add(self.suspicion_timeout_ms);
                self.suspect_deadlines.insert((deadline, id));
            }
            Status::Dead => {
                self.dead.insert(id);
            }
        }
    }

    fn unindex(&mut self, id: NodeId, state: &MemberState) {
        let hash = entry_hash(&id, state.incarnation, state.status);
        self.digest = self.digest.wrapping_sub(hash);
        let bucket = &mut self.bucket_digests[bucket_of(&id)];
        *bucket = bucket.wrapping_sub(hash);
        match state.status {
            Status::Alive => {}
            Status::Suspect => {
                let deadline = state.changed_ms.saturating_add(self.suspicion_timeout_ms);
                let removed = self.suspect_deadlines.remove(&(deadline, id));
                debug_assert!(removed, "every suspect has a deadline");
            }
            Status::Dead => {
                let removed = self.dead.remove(&id);
                debug_assert!(removed, "every dead member is indexed");
            }
        }
    }

    /// Make room in a full table by forgetting the member that has been dead
    /// the longest. Alive and Suspect members are never evicted.
    fn evict_oldest_dead(&mut self) -> bool {
        let oldest = self
            .dead
            .iter()
            .filter_map(|id| self.entries.get(id).map(|state| (state.changed_ms, *id)))
            .min();
        let Some((_, id)) = oldest else {
            return false;
        };
        if let Some(old) = self.entries.remove(&id) {
            self.unindex(id, &old);
        }
        true
    }

    /// The id of a member at `addr`, if any (linear: used on connect failures).
    pub(crate) fn id_by_addr(&self, addr: &SocketAddrV6) -> Option<NodeId> {
        self.entries
            .iter()
            .find(|(_, state)| state.addr == *addr)
            .map(|(id, _)| *id)
    }

    /// Recompute the digest from scratch (tests check the incremental one).
    #[cfg(test)]
    pub(crate) fn digest_recomputed(&self) -> u64 {
        self.entries.iter().fold(0u64, |sum, (id, state)| {
            sum.wrapping_add(entry_hash(id, state.incarnation, state.status))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    fn addr(i: u16) -> SocketAddrV6 {
        SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i), 4000, 0, 0)
    }

    fn update(id: u8, incarnation: u64, status: u8) -> Update {
        let (id, addr, by) = (NodeId([id; 32]), addr(u16::from(id)), NodeId([0; 32]));
        match status % 3 {
            0 => Update::Alive {
                id,
                addr,
                incarnation,
            },
            1 => Update::Suspect {
                id,
                addr,
                incarnation,
                by,
            },
            _ => Update::Dead {
                id,
                addr,
                incarnation,
                by,
            },
        }
    }

    #[test]
    fn precedence_higher_incarnation_then_dead_suspect_alive() {
        let mut table = Table::new(16, 1_000);
        assert_eq!(table.apply(&update(1, 1, 0), 0), Applied::New);
        assert_eq!(table.apply(&update(1, 1, 0), 0), Applied::Stale);
        assert_eq!(table.apply(&update(1, 1, 1), 0), Applied::New);
        assert_eq!(
            table.apply(&update(1, 1, 0), 0),
            Applied::Stale,
            "alive does not beat suspect"
        );
        assert_eq!(table.apply(&update(1, 1, 2), 0), Applied::New);
        assert_eq!(
            table.apply(&update(1, 1, 1), 0),
            Applied::Stale,
            "suspect does not beat dead"
        );
        assert_eq!(
            table.apply(&update(1, 2, 0), 0),
            Applied::New,
            "refutation beats dead"
        );
        assert_eq!(
            table.get(&NodeId([1; 32])).map(|s| s.status),
            Some(Status::Alive)
        );
        assert_eq!(
            table.apply(&update(1, INCARNATION_MAX + 1, 2), 0),
            Applied::Rejected
        );
    }

    #[test]
    fn full_table_evicts_oldest_dead_but_never_the_living() {
        let mut table = Table::new(2, 1_000);
        assert_eq!(table.apply(&update(1, 0, 0), 0), Applied::New);
        assert_eq!(table.apply(&update(2, 0, 2), 5), Applied::New);
        assert_eq!(
            table.apply(&update(3, 0, 0), 6),
            Applied::New,
            "dead 2 evicted"
        );
        assert!(table.get(&NodeId([2; 32])).is_none());
        assert_eq!(
            table.apply(&update(4, 0, 0), 7),
            Applied::Rejected,
            "no dead left to evict"
        );
        assert_eq!(table.len(), 2);
    }

    proptest! {
        /// The final state does not depend on the order updates arrive in
        /// (precedence is a join-semilattice), and the incremental digest and
        /// indexes match a recomputation.
        #[test]
        fn merge_is_order_independent(
            updates in proptest::collection::vec((0u8..6, 0u64..4, 0u8..3), 0..40),
            rotate in 0usize..40,
        ) {
            let updates: Vec<Update> = updates.iter().map(|(i, n, s)| update(*i, *n, *s)).collect();
            let mut a = Table::new(64, 1_000);
            let mut b = Table::new(64, 1_000);
            for u in &updates {
                a.apply(u, 0);
            }
            let mut rotated = updates.clone();
            if !rotated.is_empty() {
                let k = rotate % rotated.len();
                rotated.rotate_left(k);
                rotated.reverse();
            }
            for u in &rotated {
                b.apply(u, 0);
            }
            let snapshot = |t: &Table| -> Vec<(NodeId, u64, Status)> {
                t.iter().map(|(id, s)| (*id, s.incarnation, s.status)).collect()
            };
            prop_assert_eq!(snapshot(&a), snapshot(&b));
            prop_assert_eq!(a.digest(), b.digest());
            prop_assert_eq!(a.digest(), a.digest_recomputed());
            let dead = a.iter().filter(|(_, s)| s.status == Status::Dead).count();
            prop_assert_eq!(a.dead_ids().len(), dead);
            let suspects = a.iter().filter(|(_, s)| s.status == Status::Suspect).count();
            prop_assert_eq!(a.suspect_deadlines.len(), suspects);
        }
    }
}

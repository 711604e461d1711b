//! The chain service's link policy, sans-I/O: which peers it keeps chain
//! links with ([`wanted`]), which side of a pair dials ([`dials`]), and
//! which linked peers a replica's [`Destination`] reaches ([`resolve`]).
//! The shell holds the links and moves bytes; these functions decide, and
//! are tested without a network.
//!
//! Owns no state but the caller's relay turn; must not know about
//! connections, tasks or time.

use std::collections::BTreeSet;
use std::net::SocketAddrV6;

use hm_kernel::block::Height;
use hm_kernel::replica::{Destination, TX_RELAY_PEERS};
use hm_wire::Hash;

/// What the link policy needs to know about this node.
#[derive(Debug, Clone, Copy)]
pub struct LinkPolicy<'a> {
    pub me: Hash,
    pub is_validator: bool,
    /// Every genesis validator and its chain address.
    pub validator_addrs: &'a [(Hash, SocketAddrV6)],
    /// Overlay peers kept for block sync.
    pub sync_peers_max: usize,
}

/// The links this node wants: every other validator (if it is one) and up
/// to `sync_peers_max` overlay peers. A follower whose overlay is short of
/// peers (still joining, or kept out of the overlay until it holds a
/// certificate phase-3 nodes accept) fills up with validators, picked by
/// its node id so followers spread over them: chain links need no
/// certificate, and without them a newcomer could never sync the chain that
/// would certify it.
pub fn wanted(
    policy: &LinkPolicy<'_>,
    overlay: Vec<(Hash, SocketAddrV6)>,
) -> Vec<(Hash, SocketAddrV6)> {
    let me = policy.me;
    let mut wanted: Vec<(Hash, SocketAddrV6)> = Vec::new();
    if policy.is_validator {
        wanted.extend(
            policy
                .validator_addrs
                .iter()
                .filter(|(id, _)| *id != me)
                .copied(),
        );
    }
    wanted.extend(
        overlay
            .into_iter()
            .filter(|(id, _)| *id != me)
            .take(policy.sync_peers_max),
    );
    let validators = policy.validator_addrs;
    if !policy.is_validator && wanted.len() < policy.sync_peers_max && !validators.is_empty() {
        let base = u64::from_le_bytes(me.0[..8].try_into().unwrap_or([0; 8]));
        let missing = policy.sync_peers_max - wanted.len();
        for k in 0..validators.len().min(missing) {
            let pick = validators[(base as usize).wrapping_add(k) % validators.len()];
            if !wanted.iter().any(|(id, _)| *id == pick.0) {
                wanted.push(pick);
            }
        }
    }
    wanted
}

/// Whether this node dials `peer` (rather than waiting for its dial):
/// between two validators only the smaller id dials, so they do not race
/// to two connections; everyone else dials whom it wants.
pub fn dials(me: Hash, me_validator: bool, peer: Hash, peer_validator: bool) -> bool {
    !(me_validator && peer_validator && peer < me)
}

/// The linked peers a message for `to` goes to. `linked`: peers with a
/// link, in order; `validators`: the committee's ids; `peer_holds`: whether
/// a peer announced holding a height; `relay_turn` spreads relayed
/// transactions over peers and advances on each relay.
pub fn resolve(
    to: &Destination,
    linked: &[Hash],
    validators: &BTreeSet<Hash>,
    is_validator: bool,
    peer_holds: impl Fn(&Hash, Height) -> bool,
    relay_turn: &mut u64,
) -> Vec<Hash> {
    let linked_iter = || linked.iter().copied();
    match to {
        Destination::Peer(peer) => vec![*peer],
        Destination::Peers => linked_iter().collect(),
        Destination::Followers => linked_iter()
            .filter(|peer| !validators.contains(peer))
            .collect(),
        Destination::PeersBehind { height } => linked_iter()
            .filter(|peer| !peer_holds(peer, *height))
            .collect(),
        Destination::FollowersBehind { height } => linked_iter()
            .filter(|peer| !validators.contains(peer) && !peer_holds(peer, *height))
            .collect(),
        Destination::Validators | Destination::TowardValidators { .. } => {
            let linked_validators: Vec<Hash> = linked_iter()
                .filter(|peer| validators.contains(peer))
                .collect();
            if !linked_validators.is_empty() || is_validator {
                linked_validators
            } else if let Destination::TowardValidators { from } = to {
                *relay_turn = relay_turn.wrapping_add(1);
                relay_targets(linked_iter(), *from, *relay_turn)
            } else {
                // Our own: through every peer (which relay them on).
                linked_iter().collect()
            }
        }
    }
}

/// The peers a relayed transaction goes to: at most [`TX_RELAY_PEERS`] of
/// them, never back to `from`, starting at a turn-dependent offset so
/// relays spread over peers.
pub fn relay_targets(peers: impl Iterator<Item = Hash>, from: Hash, turn: u64) -> Vec<Hash> {
    let others: Vec<Hash> = peers.filter(|peer| *peer != from).collect();
    if others.is_empty() {
        return others;
    }
    let start = (turn % others.len() as u64) as usize;
    others
        .iter()
        .cycle()
        .skip(start)
        .take(others.len().min(TX_RELAY_PEERS))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Hash {
        Hash([n; 32])
    }

    fn addr(n: u16) -> SocketAddrV6 {
        SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, 7000 + n, 0, 0)
    }

    fn validator_addrs() -> Vec<(Hash, SocketAddrV6)> {
        (1..=4u8).map(|n| (id(n), addr(u16::from(n)))).collect()
    }

    #[test]
    fn a_validator_wants_every_other_validator_and_a_few_overlay_peers() {
        let validators = validator_addrs();
        let policy = LinkPolicy {
            me: id(2),
            is_validator: true,
            validator_addrs: &validators,
            sync_peers_max: 2,
        };
        let overlay = vec![
            (id(9), addr(9)),
            (id(2), addr(2)),
            (id(8), addr(8)),
            (id(7), addr(7)),
        ];
        let wanted: Vec<Hash> = wanted(&policy, overlay).iter().map(|(id, _)| *id).collect();
        // Never itself; overlay capped after dropping itself.
        assert_eq!(wanted, vec![id(1), id(3), id(4), id(9), id(8)]);
    }

    #[test]
    fn a_follower_short_of_overlay_peers_fills_up_with_validators_spread_by_its_id() {
        let validators = validator_addrs();
        let follower = |me: u8| LinkPolicy {
            me: id(me),
            is_validator: false,
            validator_addrs: &validators,
            sync_peers_max: 3,
        };
        let alone: Vec<Hash> = wanted(&follower(10), Vec::new())
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(alone.len(), 3, "{alone:?}");
        assert!(
            alone
                .iter()
                .all(|peer| validators.iter().any(|(v, _)| v == peer))
        );
        // Another follower starts elsewhere in the committee.
        let other: Vec<Hash> = wanted(&follower(11), Vec::new())
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_ne!(alone, other);
        // With a full overlay, no validators.
        let overlay = vec![(id(20), addr(20)), (id(21), addr(21)), (id(22), addr(22))];
        let full: Vec<Hash> = wanted(&follower(10), overlay)
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(full, vec![id(20), id(21), id(22)]);
    }

    #[test]
    fn between_validators_only_the_smaller_id_dials() {
        assert!(dials(id(1), true, id(2), true));
        assert!(!dials(id(2), true, id(1), true));
        assert!(dials(id(2), false, id(1), true), "a follower always dials");
        assert!(
            dials(id(2), true, id(1), false),
            "a validator dials followers it wants"
        );
    }

    #[test]
    fn destinations_reach_the_right_linked_peers() {
        let validators: BTreeSet<Hash> = [id(1), id(2)].into();
        let linked = [id(1), id(2), id(5), id(6)];
        let holds = |peer: &Hash, height: Height| *peer == id(2) || (*peer == id(6) && height <= 3);
        let mut turn = 0;
        let mut resolve_to = |to: Destination, is_validator: bool| {
            resolve(&to, &linked, &validators, is_validator, holds, &mut turn)
        };
        assert_eq!(resolve_to(Destination::Peer(id(9)), false), vec![id(9)]);
        assert_eq!(resolve_to(Destination::Peers, false), linked.to_vec());
        assert_eq!(
            resolve_to(Destination::Followers, false),
            vec![id(5), id(6)]
        );
        assert_eq!(
            resolve_to(Destination::PeersBehind { height: 4 }, false),
            vec![id(1), id(5), id(6)]
        );
        assert_eq!(
            resolve_to(Destination::FollowersBehind { height: 3 }, false),
            vec![id(5)]
        );
        assert_eq!(
            resolve_to(Destination::Validators, false),
            vec![id(1), id(2)]
        );
    }

    #[test]
    fn without_validator_links_own_messages_go_through_every_peer_and_relays_through_a_few() {
        let validators: BTreeSet<Hash> = [id(1)].into();
        let linked: Vec<Hash> = (5..=9u8).map(id).collect();
        let mut turn = 0;
        let own = resolve(
            &Destination::Validators,
            &linked,
            &validators,
            false,
            |_, _| false,
            &mut turn,
        );
        assert_eq!(own, linked);
        assert_eq!(turn, 0, "own messages take no relay turn");
        let relayed = resolve(
            &Destination::TowardValidators { from: id(6) },
            &linked,
            &validators,
            false,
            |_, _| false,
            &mut turn,
        );
        assert_eq!(relayed.len(), TX_RELAY_PEERS.min(linked.len() - 1));
        assert!(!relayed.contains(&id(6)), "never back to the sender");
        assert_eq!(turn, 1);
        // A validator with no validator links reaches nobody rather than
        // flooding followers.
        let validator_alone = resolve(
            &Destination::Validators,
            &linked,
            &validators,
            true,
            |_, _| false,
            &mut turn,
        );
        assert!(validator_alone.is_empty());
    }

    #[test]
    fn relayed_transactions_go_to_a_few_peers_never_back_and_spread_over_turns() {
        let peers: Vec<Hash> = (1..=5u8).map(|n| Hash([n; 32])).collect();
        let from = peers[2];
        let mut reached = BTreeSet::new();
        for turn in 0..8 {
            let targets = relay_targets(peers.iter().copied(), from, turn);
            assert_eq!(targets.len(), TX_RELAY_PEERS);
            assert!(!targets.contains(&from));
            assert_eq!(
                targets.iter().collect::<BTreeSet<_>>().len(),
                targets.len(),
                "no peer twice"
            );
            reached.extend(targets);
        }
        assert_eq!(
            reached.len(),
            peers.len() - 1,
            "every other peer gets a turn"
        );
        // Fewer peers than the fanout: all of them but the sender.
        assert_eq!(
            relay_targets([from, peers[0]].into_iter(), from, 3),
            vec![peers[0]]
        );
        assert!(relay_targets([from].into_iter(), from, 0).is_empty());
    }
}

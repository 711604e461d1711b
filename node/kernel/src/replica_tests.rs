//! Replicas wired together by an in-memory network with a seeded delivery
//! order: validators commit blocks with real proofs and transactions,
//! followers sync them, a crashed validator recovers from its disk.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use hm_env::Entropy;
use hm_env::mem::{MemDisk, SeededEntropy};
use hm_wire::{Hash, SigningKey};

use super::*;
use crate::app::{KvApp, KvWorkload};
use crate::consensus::Signer;
use crate::genesis::{Genesis, ProofParams};
use crate::proof::{GENESIS_PLOT_NONCE, SpacePlot};

type TestSigner = Signer<MemDisk, Arc<SeededEntropy>>;
type TestReplica = Replica<MemDisk, KvApp, TestSigner, Arc<SeededEntropy>>;

const GENESIS_TIME_MS: u64 = 1_700_000_000_000;
/// Simulated time a test may run before it is declared stuck.
const TEST_TIME_MAX_MS: u64 = 600_000;

struct Member {
    id: Hash,
    disk: MemDisk,
    key_bytes: Option<Vec<u8>>,
    replica: Option<TestReplica>,
}

struct Net {
    genesis: Genesis,
    members: Vec<Member>,
    validator_ids: Vec<Hash>,
    queue: VecDeque<(Hash, Hash, ChainMessage)>,
    order: SeededEntropy,
    mono_ms: u64,
    /// (height → block hash) every node committed, to check agreement.
    committed: BTreeMap<Hash, BTreeMap<Height, Hash>>,
    /// Messages dropped with this probability (per mille) while > 0.
    drop_per_mille: u64,
    /// Messages sent, by kind.
    sent: BTreeMap<&'static str, usize>,
}

fn genesis_for(keys: &[SigningKey], params: ProofParams) -> (Genesis, Vec<SpacePlot>) {
    let members: Vec<_> = keys.iter().map(|key| (key.verifying_key(), 10)).collect();
    Genesis::with_plots("replica-test", GENESIS_TIME_MS, &members, params).expect("small plots")
}

fn fast_config() -> ReplicaConfig {
    let mut config = ReplicaConfig::default();
    config.consensus.propose_timeout_base_ms = 500;
    config.consensus.prevote_timeout_base_ms = 200;
    config.consensus.precommit_timeout_base_ms = 200;
    config.consensus.rebroadcast_timeout_base_ms = 1_000;
    config.status_interval_ms = 500;
    config.block_interval_ms = 100;
    config
}

impl Net {
    fn new(validators: usize, followers: usize, seed: u64) -> Net {
        let entropy = SeededEntropy::new(seed, b"replica-keys");
        let keys: Vec<SigningKey> = (0..validators)
            .map(|_| SigningKey::generate(&entropy))
            .collect();
        let (genesis, _) = genesis_for(&keys, ProofParams::for_simulation());
        let mut members = Vec::new();
        for key in &keys {
            members.push(Member {
                id: key.verifying_key().fingerprint(),
                disk: MemDisk::new(REPLICA_COLUMN_FAMILIES),
                key_bytes: Some(key.to_bytes()),
                replica: None,
            });
        }
        for index in 0..followers {
            members.push(Member {
                id: hm_wire::hash("follower", &index.to_le_bytes()),
                disk: MemDisk::new(REPLICA_COLUMN_FAMILIES),
                key_bytes: None,
                replica: None,
            });
        }
        let validator_ids = members[..validators].iter().map(|m| m.id).collect();
        let mut net = Net {
            genesis,
            members,
            validator_ids,
            queue: VecDeque::new(),
            order: SeededEntropy::new(seed, b"replica-order"),
            mono_ms: 0,
            committed: BTreeMap::new(),
            drop_per_mille: 0,
            sent: BTreeMap::new(),
        };
        for index in 0..net.members.len() {
            net.boot(index);
        }
        net
    }

    fn now(&self) -> Now {
        Now {
            mono_ms: self.mono_ms,
            wall_ms: GENESIS_TIME_MS + self.mono_ms,
        }
    }

    fn boot(&mut self, index: usize) {
        let now = self.now();
        let genesis = self.genesis.clone();
        let member = &mut self.members[index];
        let entropy = Arc::new(SeededEntropy::new(index as u64, b"replica-node"));
        let identity = member.key_bytes.as_ref().map(|bytes| {
            let key = SigningKey::from_bytes(bytes).expect("own key");
            let plot = SpacePlot::generate(
                &key.verifying_key().fingerprint(),
                GENESIS_PLOT_NONCE,
                genesis.proof.space_leaves_log2,
            )
            .expect("small plot");
            let signer = Signer::open(
                SigningKey::from_bytes(bytes).expect("own key"),
                genesis.chain_id(),
                member.disk.clone(),
                entropy.clone(),
            )
            .expect("signer opens");
            ValidatorIdentity {
                signer,
                block_key: key,
                plot,
            }
        });
        let replica = Replica::new(
            genesis,
            member.disk.clone(),
            KvApp::new(),
            identity,
            fast_config(),
            entropy,
            now,
        )
        .expect("replica opens");
        member.replica = Some(replica);
        self.drain(index);
    }

    fn crash(&mut self, index: usize) {
        self.members[index].replica = None;
        self.members[index].disk.crash(0);
    }

    fn drain(&mut self, index: usize) {
        let from = self.members[index].id;
        let Some(replica) = self.members[index].replica.as_mut() else {
            return;
        };
        let mut outputs = Vec::new();
        while let Some(output) = replica.poll_output() {
            outputs.push(output);
        }
        for output in outputs {
            match output {
                ReplicaOutput::Send { to, message } => {
                    let targets: Vec<Hash> = match to {
                        Destination::Validators | Destination::TowardValidators { .. } => {
                            self.validator_ids.clone()
                        }
                        Destination::Peers => self.members.iter().map(|m| m.id).collect(),
                        Destination::Followers => self
                            .members
                            .iter()
                            .map(|m| m.id)
                            .filter(|id| !self.validator_ids.contains(id))
                            .collect(),
                        Destination::PeersBehind { height } => {
                            let sender = self.members[index].replica.as_ref();
                            self.members
                                .iter()
                                .map(|m| m.id)
                                .filter(|id| !sender.is_some_and(|r| r.peer_holds(id, height)))
                                .collect()
                        }
                        Destination::FollowersBehind { height } => {
                            let sender = self.members[index].replica.as_ref();
                            self.members
                                .iter()
                                .map(|m| m.id)
                                .filter(|id| {
                                    !self.validator_ids.contains(id)
                                        && !sender.is_some_and(|r| r.peer_holds(id, height))
                                })
                                .collect()
                        }
                        Destination::Peer(id) => vec![id],
                    };
                    *self.sent.entry(message.kind()).or_default() += targets.len();
                    for target in targets.into_iter().filter(|t| *t != from) {
                        self.queue.push_back((from, target, message.clone()));
                    }
                }
                ReplicaOutput::Committed {
                    height, block_hash, ..
                } => {
                    let previous = self
                        .committed
                        .entry(from)
                        .or_default()
                        .insert(height, block_hash);
                    assert!(
                        previous.is_none_or(|p| p == block_hash),
                        "node changed its committed block at {height}"
                    );
                }
                ReplicaOutput::Failed { reason } => {
                    panic!("node {from} failed: {reason}");
                }
                ReplicaOutput::Misbehaviour { peer, what } => {
                    if std::env::var_os("HM_TEST_VERBOSE").is_some() {
                        eprintln!("{from}: misbehaviour {peer:?}: {what}");
                    }
                }
            }
        }
    }

    /// Delivers queued messages in a seeded order, then advances time to
    /// the next timer. Returns false when nothing can happen any more.
    fn step(&mut self) {
        if !self.queue.is_empty() {
            let pick = self.order.below(self.queue.len() as u64) as usize;
            let (from, to, message) = self.queue.remove(pick).expect("in range");
            if self.drop_per_mille > 0 && self.order.below(1000) < self.drop_per_mille {
                return;
            }
            let now = self.now();
            if let Some(index) = self.members.iter().position(|m| m.id == to)
                && let Some(replica) = self.members[index].replica.as_mut()
            {
                replica.handle_message(now, from, message);
                self.drain(index);
            }
            return;
        }
        let next = self
            .members
            .iter()
            .filter_map(|m| m.replica.as_ref().map(Replica::poll_timeout))
            .min()
            .expect("some replica runs");
        self.mono_ms = next.max(self.mono_ms + 1);
        let now = self.now();
        for index in 0..self.members.len() {
            if let Some(replica) = self.members[index].replica.as_mut() {
                replica.handle_tick(now);
                self.drain(index);
            }
        }
    }

    fn run_until(&mut self, mut done: impl FnMut(&Net) -> bool) {
        while !done(self) {
            assert!(
                self.mono_ms < TEST_TIME_MAX_MS,
                "stuck: heights {:?}",
                self.heights()
            );
            self.step();
        }
    }

    fn heights(&self) -> Vec<Height> {
        self.members
            .iter()
            .map(|m| m.replica.as_ref().map_or(0, Replica::height))
            .collect()
    }

    fn submit(&mut self, index: usize, tx: Transaction) {
        let now = self.now();
        let replica = self.members[index].replica.as_mut().expect("running");
        replica.submit_transaction(now, tx).expect("admitted");
        self.drain(index);
    }

    /// Every pair of nodes agrees on every height both committed.
    fn assert_agreement(&self) {
        let mut canonical: BTreeMap<Height, Hash> = BTreeMap::new();
        for blocks in self.committed.values() {
            for (height, hash) in blocks {
                let first = canonical.entry(*height).or_insert(*hash);
                assert_eq!(
                    first, hash,
                    "two nodes committed different blocks at {height}"
                );
            }
        }
    }
}

#[test]
fn validators_commit_transactions_and_followers_sync() {
    let mut net = Net::new(4, 2, 1);
    let entropy = SeededEntropy::new(9, b"workload");
    let mut workload = KvWorkload::new(32, 16, 0);
    for _ in 0..20 {
        let tx = workload.next_tx(&entropy);
        net.submit(5, tx);
    }
    net.run_until(|net| net.heights().iter().all(|height| *height >= 5));
    net.assert_agreement();
    let total: usize = (1..=5)
        .map(|height| {
            let replica = net.members[4].replica.as_ref().expect("running");
            let block = replica
                .store()
                .block(height)
                .expect("reads")
                .expect("stored");
            block
                .verify_commit(&replica.chain_id(), replica.validators())
                .expect("certificate verifies");
            block.body.transactions.len()
        })
        .sum();
    assert_eq!(total, 20, "every submitted transaction is committed once");
    // Nodes at the same height hold the same state.
    let mut roots: BTreeMap<Height, Hash> = BTreeMap::new();
    for member in &net.members {
        let replica = member.replica.as_ref().expect("running");
        let root = *roots
            .entry(replica.height())
            .or_insert(replica.app().state_root());
        assert_eq!(root, replica.app().state_root());
    }
}

#[test]
fn a_resubmitted_pending_transaction_is_sent_again_and_committed_once() {
    let mut net = Net::new(4, 1, 3);
    let entropy = SeededEntropy::new(10, b"workload");
    let tx = KvWorkload::new(8, 16, 0).next_tx(&entropy);
    let id = tx.id();
    net.submit(4, tx.clone());
    // Every copy on its way to the validators is lost.
    let lost = net.queue.len();
    assert!(lost > 0, "the follower sent the transaction on");
    net.queue.clear();
    // The client asks again: still pending at the follower, sent again.
    net.submit(4, tx);
    assert_eq!(net.queue.len(), lost, "the same copies again");
    let committed = |net: &Net| {
        let replica = net.members[4].replica.as_ref().expect("running");
        (1..=replica.height())
            .filter_map(|height| replica.store().block(height).expect("reads"))
            .flat_map(|block| block.body.transactions)
            .filter(|committed| committed.id() == id)
            .count()
    };
    net.run_until(|net| committed(net) > 0);
    let target = net.heights()[0] + 2;
    net.run_until(|net| net.heights().iter().all(|height| *height >= target));
    assert_eq!(committed(&net), 1, "committed once");
    net.assert_agreement();
}

#[test]
fn a_validator_hands_outside_transactions_to_the_next_proposers_only() {
    let mut net = Net::new(7, 1, 4);
    let entropy = SeededEntropy::new(11, b"workload");
    let mut workload = KvWorkload::new(8, 16, 0);
    let follower = net.members[7].id;
    let validator = net.members[0].id;
    let (chain_id, set, height) = {
        let replica = net.members[0].replica.as_ref().expect("running");
        (
            replica.chain_id(),
            replica.validators().clone(),
            replica.height(),
        )
    };
    let mut expected: BTreeSet<Hash> = (1..=TX_PROPOSERS_AHEAD)
        .map(|ahead| {
            let index = crate::consensus::proposer(&chain_id, &set, height + ahead, 0);
            set.get(index).expect("member").id
        })
        .collect();
    expected.remove(&validator);
    assert!(!expected.is_empty(), "seed 4 draws other proposers");
    let deliver = |net: &mut Net, from: Hash, tx: Transaction| {
        net.queue.clear();
        let now = net.now();
        let replica = net.members[0].replica.as_mut().expect("running");
        replica.handle_message(now, from, ChainMessage::Transactions(vec![tx]));
        net.drain(0);
        net.queue
            .iter()
            .filter(|(_, _, message)| matches!(message, ChainMessage::Transactions(_)))
            .map(|(_, to, _)| *to)
            .collect::<BTreeSet<Hash>>()
    };
    // From a follower: on to the upcoming proposers, nobody else.
    assert_eq!(
        deliver(&mut net, follower, workload.next_tx(&entropy)),
        expected
    );
    // From another validator: kept (it did the handing on).
    let other = net.members[1].id;
    assert!(deliver(&mut net, other, workload.next_tx(&entropy)).is_empty());
}

#[test]
fn a_follower_sends_its_own_transactions_to_validators_and_relays_others_toward_them() {
    let mut net = Net::new(4, 2, 5);
    let entropy = SeededEntropy::new(12, b"workload");
    let mut workload = KvWorkload::new(8, 16, 0);
    let peer = net.members[5].id;
    let sent = |net: &mut Net| -> Vec<Destination> {
        let replica = net.members[4].replica.as_mut().expect("running");
        let mut destinations = Vec::new();
        while let Some(output) = replica.poll_output() {
            if let ReplicaOutput::Send {
                to,
                message: ChainMessage::Transactions(_),
            } = output
            {
                destinations.push(to);
            }
        }
        destinations
    };
    let now = net.now();
    let own = workload.next_tx(&entropy);
    let replica = net.members[4].replica.as_mut().expect("running");
    replica.submit_transaction(now, own).expect("admitted");
    assert_eq!(sent(&mut net), vec![Destination::Validators]);
    let relayed = workload.next_tx(&entropy);
    let replica = net.members[4].replica.as_mut().expect("running");
    replica.handle_message(now, peer, ChainMessage::Transactions(vec![relayed.clone()]));
    assert_eq!(
        sent(&mut net),
        vec![Destination::TowardValidators { from: peer }]
    );
    // Already pooled: relayed once only.
    let replica = net.members[4].replica.as_mut().expect("running");
    replica.handle_message(now, peer, ChainMessage::Transactions(vec![relayed]));
    assert!(sent(&mut net).is_empty());
}

#[test]
fn sync_serves_recent_blocks_from_memory_and_older_ones_from_the_store() {
    let mut net = Net::new(4, 1, 5);
    net.run_until(|net| net.heights().iter().all(|height| *height >= 5));
    let follower = net.members[4].id;
    let ask = |net: &mut Net, from: Height| {
        net.queue.clear();
        let now = net.now();
        let replica = net.members[0].replica.as_mut().expect("running");
        let head = replica.height();
        replica.handle_message(now, follower, ChainMessage::GetBlocks { from, count: 16 });
        net.drain(0);
        let served: Vec<Block> = net
            .queue
            .iter()
            .filter_map(|(_, to, message)| match message {
                ChainMessage::Blocks(blocks) if *to == follower => Some(blocks.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let replica = net.members[0].replica.as_ref().expect("running");
        let stored: Vec<Block> = (from..=head)
            .map(|height| {
                replica
                    .store()
                    .block(height)
                    .expect("reads")
                    .expect("stored")
            })
            .collect();
        (served, stored)
    };
    let head = net.members[0].replica.as_ref().expect("running").height();
    // The newest blocks (kept in memory), and a range reaching back to 1.
    for from in [head, head + 1 - RECENT_BLOCKS_KEPT as Height, 1] {
        let (served, stored) = ask(&mut net, from);
        assert!(!served.is_empty(), "blocks from {from} are served");
        assert_eq!(served, stored, "from {from}");
    }
    assert!(
        ask(&mut net, head + 1).0.is_empty(),
        "nothing beyond the head"
    );
}

#[test]
fn a_crashed_validator_recovers_from_disk_and_catches_up() {
    let mut net = Net::new(4, 0, 2);
    net.run_until(|net| net.heights().iter().all(|height| *height >= 3));
    let before = net.members[3].replica.as_ref().expect("running").height();
    net.crash(3);
    // Three of four validators (30 of 40 stake) keep committing.
    net.run_until(|net| net.heights()[0] >= before + 3);
    net.boot(3);
    let recovered = net.members[3].replica.as_ref().expect("running").height();
    assert_eq!(
        recovered, before,
        "every committed block survived the crash"
    );
    let target = net.heights()[0] + 2;
    net.run_until(|net| net.heights().iter().all(|height| *height >= target));
    net.assert_agreement();
    net.members[3]
        .replica
        .as_ref()
        .expect("running")
        .store()
        .verify_links()
        .expect("chain links");
}

#[test]
fn two_of_four_down_stops_commits_safely_and_they_resume() {
    let mut net = Net::new(4, 0, 3);
    net.run_until(|net| net.heights().iter().all(|height| *height >= 2));
    net.crash(2);
    net.crash(3);
    let stalled = net.heights()[0];
    // 20 of 40 stake is not a quorum: let a minute of timeouts pass.
    let until = net.mono_ms + 60_000;
    while net.mono_ms < until {
        net.step();
    }
    assert!(
        net.heights()[0] <= stalled + 1,
        "committed without a quorum: {:?}",
        net.heights()
    );
    net.boot(2);
    net.boot(3);
    let target = net.heights()[0] + 2;
    net.run_until(|net| net.heights().iter().all(|height| *height >= target));
    net.assert_agreement();
}

#[test]
fn a_client_transaction_survives_a_crash_of_the_node_that_acknowledged_it() {
    let mut net = Net::new(4, 1, 11);
    net.run_until(|net| net.heights().iter().all(|height| *height >= 2));
    // The follower acknowledges a client's put, then loses power before
    // anything it sent could arrive: the message queue forgets its sends.
    let follower = 4;
    let tx = KvWorkload::new(8, 16, 0).next_tx(&SeededEntropy::new(7, b"client"));
    let id = tx.id();
    let now = net.now();
    let replica = net.members[follower].replica.as_mut().expect("running");
    let outcomes = replica.submit_transactions(now, vec![tx]);
    assert_eq!(outcomes, vec![Ok(id)]);
    assert_eq!(replica.transaction_status(&id), TransactionStatus::Pending);
    net.queue
        .retain(|(from, _, _)| *from != net.members[follower].id);
    net.crash(follower);
    net.boot(follower);
    // Back from its disk, it sends the transaction again; it commits.
    net.run_until(|net| {
        net.members[follower].replica.as_ref().is_some_and(|r| {
            matches!(
                r.transaction_status(&id),
                TransactionStatus::Committed { .. }
            )
        })
    });
    let TransactionStatus::Committed { height } = net.members[follower]
        .replica
        .as_ref()
        .expect("running")
        .transaction_status(&id)
    else {
        unreachable!("checked above");
    };
    assert!(height >= 2);
    // Committed, it is forgotten on disk: a later restart resends nothing.
    net.crash(follower);
    net.boot(follower);
    let replica = net.members[follower].replica.as_ref().expect("running");
    assert_eq!(
        replica.mempool_len(),
        0,
        "a committed transaction came back"
    );
    assert!(matches!(
        replica.transaction_status(&id),
        TransactionStatus::Committed { height: h } if h == height
    ));
    net.assert_agreement();
}

/// The acknowledging node keeps sending until the transaction commits:
/// its first relay reached validators that all crashed before proposing it
/// (a relayed transaction lives only in their memory), and nothing else
/// held it but the follower's disk.
#[test]
fn an_acknowledged_transaction_whose_relay_was_lost_is_sent_again_until_it_commits() {
    let mut net = Net::new(4, 1, 12);
    net.run_until(|net| net.heights().iter().all(|height| *height >= 2));
    let follower = 4;
    let tx = KvWorkload::new(8, 16, 0).next_tx(&SeededEntropy::new(8, b"client"));
    let id = tx.id();
    let now = net.now();
    let replica = net.members[follower].replica.as_mut().expect("running");
    assert_eq!(replica.submit_transactions(now, vec![tx]), vec![Ok(id)]);
    net.drain(follower);
    // The relay is lost on the way (the validators crash, or the links
    // were down): the follower itself stays up.
    let follower_id = net.members[follower].id;
    let dropped = net.queue.len();
    net.queue.retain(|(from, _, _)| *from != follower_id);
    assert!(
        net.queue.len() < dropped,
        "the follower relayed the transaction"
    );
    let committed = |net: &Net| {
        net.members[follower].replica.as_ref().is_some_and(|r| {
            matches!(
                r.transaction_status(&id),
                TransactionStatus::Committed { .. }
            )
        })
    };
    net.run_until(committed);
    net.assert_agreement();
}

#[test]
fn every_validator_crashing_mid_height_resumes_and_commits() {
    // Power loss of the whole committee at arbitrary moments within a
    // height, several times: each comes back from its disk (its signed
    // round statements, its lock and the proposed blocks it may vote for)
    // and the chain goes on.
    for seed in 20..26 {
        let mut net = Net::new(4, 0, seed);
        net.run_until(|net| net.heights().iter().all(|height| *height >= 2));
        for round in 0..4u64 {
            // A few deliveries into the height, then everybody dies.
            for _ in 0..(5 + 7 * round + seed % 5) {
                net.step();
            }
            net.queue.clear();
            for index in 0..4 {
                net.crash(index);
            }
            for index in 0..4 {
                net.boot(index);
            }
        }
        let target = net.heights().iter().max().copied().unwrap_or(0) + 2;
        net.run_until(|net| net.heights().iter().all(|height| *height >= target));
        net.assert_agreement();
    }
}

#[test]
fn transient_disk_errors_on_validators_do_not_stop_the_chain() {
    // A burst of I/O errors on two of four validators' disks (a proposed
    // block not kept, a vote not signed, ...), then the disks work again:
    // the chain must go on, whatever the errors hit.
    for seed in 30..36 {
        let mut net = Net::new(4, 0, seed);
        net.run_until(|net| net.heights().iter().all(|height| *height >= 2));
        for index in [1, 3] {
            net.members[index].disk.inject_io_errors(8);
        }
        let target = net.heights().iter().max().copied().unwrap_or(0) + 3;
        net.run_until(|net| net.heights().iter().all(|height| *height >= target));
        net.assert_agreement();
    }
}

#[test]
fn lossy_network_still_agrees_and_progresses() {
    // Loss forces later rounds, where locked blocks are proposed again by
    // other proposers: the path a too-strict validity check once broke.
    for seed in 4..10 {
        let mut net = Net::new(4, 1, seed);
        net.drop_per_mille = 150;
        net.run_until(|net| net.heights().iter().all(|height| *height >= 4));
        net.assert_agreement();
    }
}

#[test]
fn chain_messages_from_random_bytes_never_panic() {
    let entropy = SeededEntropy::new(5, b"garbage");
    for len in 0..512 {
        let mut bytes = vec![0u8; len];
        entropy.fill_bytes(&mut bytes);
        if let Ok(message) = ChainMessage::decode(&bytes) {
            assert_eq!(message.encode(), bytes);
        }
    }
}

/// Conflicting prevotes from validator 3 for validator 0's current height.
fn equivocate(net: &mut Net, tag: &[u8]) {
    let offender = net.members[3].id;
    let key = SigningKey::from_bytes(net.members[3].key_bytes.as_ref().expect("validator"))
        .expect("own key");
    let replica = net.members[0].replica.as_ref().expect("running");
    let chain_id = replica.chain_id();
    let index = replica.validators().index_of(&offender).expect("validator");
    let height = replica.height() + 1;
    let entropy = SeededEntropy::new(height, b"equivocator");
    for side in [b"a", b"b"] {
        let vote = crate::block::Vote {
            kind: crate::block::VoteKind::Prevote,
            height,
            round: 0,
            block_hash: Some(hm_wire::hash_parts("phantom", &[tag, side])),
            validator: index,
        };
        let signed = SignedVote::sign(&chain_id, vote, &key, &entropy);
        for target in net.validator_ids.clone() {
            if target != offender {
                net.queue
                    .push_back((offender, target, ChainMessage::Vote(signed.clone())));
            }
        }
    }
}

#[test]
fn a_repeat_equivocator_is_put_on_record_once() {
    let mut net = Net::new(4, 1, 12);
    net.run_until(|net| net.heights().iter().all(|height| *height >= 1));
    let offender = net.members[3].id;
    let recorded = |net: &Net, index: usize| {
        net.members[index]
            .replica
            .as_ref()
            .expect("running")
            .committed_evidence(&offender)
            .expect("evidence index reads")
            .len()
    };
    equivocate(&mut net, b"first");
    net.run_until(|net| recorded(net, 0) > 0);
    let gossiped = net.sent.get("evidence").copied().unwrap_or(0);
    assert!(gossiped > 0, "the first offence was gossiped");
    // It double-signs again at two later heights: already tombstoned, so
    // nobody gossips or commits more evidence against it.
    for tag in [&b"second"[..], b"third"] {
        let target = net.heights()[0] + 2;
        net.run_until(|net| net.heights()[0] >= target);
        equivocate(&mut net, tag);
    }
    let target = net.heights().into_iter().max().unwrap_or(0) + 3;
    net.run_until(|net| net.heights().iter().all(|height| *height >= target));
    net.assert_agreement();
    for index in 0..5 {
        assert_eq!(
            recorded(&net, index),
            1,
            "node {index}: one offence on record"
        );
    }
    assert_eq!(
        net.sent.get("evidence").copied().unwrap_or(0),
        gossiped,
        "later offences of a recorded offender are not gossiped"
    );
    let pooled = net.members[0]
        .replica
        .as_ref()
        .expect("running")
        .evidence_pool
        .len();
    assert_eq!(pooled, 0, "no redundant evidence left pooled");
}

/// Height `height` of the chain node `index` committed, forked: another
/// state root, precommitted in the same round by the validators `signers`
/// (member indices), as a light client would have been shown it.
fn forked_evidence(net: &Net, index: usize, height: Height, signers: &[usize]) -> Misbehaviour {
    let replica = net.members[index].replica.as_ref().expect("running");
    let block = replica
        .store()
        .block(height)
        .expect("store reads")
        .expect("committed");
    let header_b = BlockHeader {
        state_root: hm_wire::hash("forked-state", &height.to_le_bytes()),
        ..block.header.clone()
    };
    let block_hash = header_b.hash();
    let entropy = SeededEntropy::new(height, b"fork-signers");
    let mut signatures: Vec<(ValidatorIndex, hm_wire::Signature)> = signers
        .iter()
        .map(|member| {
            let key =
                SigningKey::from_bytes(net.members[*member].key_bytes.as_ref().expect("validator"))
                    .expect("own key");
            let validator = replica
                .validators()
                .index_of(&net.members[*member].id)
                .expect("validator");
            let vote = crate::block::Vote {
                kind: crate::block::VoteKind::Precommit,
                height,
                round: header_b.round,
                block_hash: Some(block_hash),
                validator,
            };
            let signed = SignedVote::sign(&replica.chain_id(), vote, &key, &entropy);
            (validator, signed.signature)
        })
        .collect();
    signatures.sort_by_key(|(validator, _)| *validator);
    Misbehaviour {
        header_a: block.header,
        certificate_a: block.commit,
        certificate_b: CommitCertificate {
            height,
            round: header_b.round,
            block_hash,
            signatures,
        },
        header_b,
    }
}

#[test]
fn a_light_clients_fork_evidence_is_committed_as_the_double_signers_votes() {
    let mut net = Net::new(4, 1, 13);
    net.run_until(|net| net.heights().iter().all(|height| *height >= 2));
    let evidence = forked_evidence(&net, 4, 2, &[1, 2, 3]);
    let signed_both: Vec<Hash> = {
        let replica = net.members[4].replica.as_ref().expect("running");
        evidence
            .certificate_a
            .signatures
            .iter()
            .filter_map(|(index, _)| replica.validators().get(*index).map(|v| v.id))
            .filter(|id| net.members[1..4].iter().any(|member| member.id == *id))
            .collect()
    };
    assert!(!signed_both.is_empty(), "the two quorums overlap");

    let now = net.now();
    let follower = net.members[4].replica.as_mut().expect("running");
    let verdict = follower
        .report_misbehaviour(now, &evidence)
        .expect("valid evidence");
    assert_eq!(verdict.conflict, Conflict::Fork { height: 2 });
    assert_eq!(verdict.suspects, Vec::new());
    let mut reported = verdict.convicted.clone();
    reported.sort();
    let mut expected = signed_both.clone();
    expected.sort();
    assert_eq!(reported, expected);
    assert_eq!(verdict.pooled, signed_both.len());
    // The same evidence again pools nothing new.
    let again = follower
        .report_misbehaviour(now, &evidence)
        .expect("still valid");
    assert_eq!(again.pooled, 0);

    // Too few signers on the fork: not evidence of anything.
    let thin = forked_evidence(&net, 4, 2, &[1]);
    let follower = net.members[4].replica.as_mut().expect("running");
    assert!(matches!(
        follower.report_misbehaviour(now, &thin),
        Err(LightError::Certificate(_))
    ));

    // The follower gossiped the votes; the validators commit them.
    let on_record = |net: &Net, member: usize, offender: &Hash| {
        net.members[member]
            .replica
            .as_ref()
            .expect("running")
            .committed_evidence(offender)
            .expect("evidence index reads")
            .len()
    };
    net.run_until(|net| {
        signed_both
            .iter()
            .all(|offender| (0..5).all(|member| on_record(net, member, offender) == 1))
    });
    net.assert_agreement();
}

#[test]
fn commit_news_skips_peers_that_announced_the_height_first() {
    let mut net = Net::new(4, 2, 11);
    net.run_until(|net| net.heights().iter().all(|height| *height >= 3));
    let peer = net.members[5].id;
    let stranger = hm_wire::hash("follower", b"never seen");
    let now = net.now();
    let follower = net.members[4].replica.as_mut().expect("running");
    let height = follower.height();
    follower.handle_message(now, peer, ChainMessage::Status { height: height + 2 });
    assert!(follower.peer_holds(&peer, height + 2));
    assert!(follower.peer_holds(&peer, height + 1));
    assert!(!follower.peer_holds(&peer, height + 3));
    assert!(
        !follower.peer_holds(&stranger, 1),
        "unknown peers get the news"
    );
    // The follower asks that peer for the blocks; a peer that serves nothing
    // usable is forgotten, and hears our commits again.
    follower.handle_message(now, peer, ChainMessage::Blocks(Vec::new()));
    assert!(!follower.peer_holds(&peer, height + 1));
    net.drain(4);
    // Followers still reach the validators' height with news cut this way.
    let target = net.heights().into_iter().max().unwrap_or(0) + 3;
    net.run_until(|net| net.heights().iter().all(|height| *height >= target));
    net.assert_agreement();
}

/// A build whose state root is computed differently from the build that
/// committed the chain (same transactions, same write sets).
struct OtherRootApp(KvApp);

impl Application for OtherRootApp {
    fn check_tx(&self, tx: &Transaction) -> Result<(), crate::app::TxError> {
        self.0.check_tx(tx)
    }

    fn execute_block(&self, block: BlockContext, transactions: &[Transaction]) -> Execution {
        self.0.execute_block(block, transactions)
    }

    fn commit(
        &mut self,
        height: Height,
        updates: &[crate::block::StateUpdate],
    ) -> Result<(), crate::app::CommitError> {
        self.0.commit(height, updates)
    }

    fn state_root(&self) -> Hash {
        hm_wire::hash("other-build", &self.0.state_root().0)
    }

    fn committed_height(&self) -> Height {
        self.0.committed_height()
    }
}

#[test]
fn a_replay_that_disagrees_with_a_committed_block_names_the_height_and_both_roots() {
    let mut net = Net::new(1, 1, 4);
    net.run_until(|net| net.heights().iter().all(|height| *height >= 3));
    let follower = &net.members[1];
    let committed_root = follower
        .replica
        .as_ref()
        .expect("running")
        .store()
        .block(1)
        .expect("reads")
        .expect("stored")
        .header
        .state_root;
    let disk = follower.disk.clone();
    net.crash(1);
    let opened = Replica::new(
        net.genesis.clone(),
        disk,
        OtherRootApp(KvApp::new()),
        None::<ValidatorIdentity<TestSigner>>,
        fast_config(),
        Arc::new(SeededEntropy::new(1, b"replay")),
        net.now(),
    );
    let error = match opened {
        Ok(_) => panic!("a replay giving another state root must not open"),
        Err(error) => error,
    };
    let message = error.to_string();
    let ReplicaError::ReplayMismatch {
        height,
        what,
        committed,
        replayed,
    } = error
    else {
        panic!("expected a replay mismatch, got: {message}");
    };
    assert_eq!((height, what), (1, "state root"));
    assert_eq!(committed, committed_root);
    // The inner application replayed correctly; only the root's recipe differs.
    assert_eq!(replayed, hm_wire::hash("other-build", &committed_root.0));
    for needle in [
        "block 1".to_string(),
        committed.to_string(),
        replayed.to_string(),
        "syncs the chain".to_string(),
    ] {
        assert!(message.contains(&needle), "{message:?} lacks {needle:?}");
    }
}

/// Signs `block`'s header with every key: a certificate as a real
/// committee would give it (the smallest quorum is kept).
fn certify(replica: &TestReplica, keys: &[SigningKey], block: ProposedBlock) -> Block {
    let (chain_id, validators) = (replica.chain_id(), replica.validators());
    let hash = block.hash();
    let height = block.header.height;
    let entropy = SeededEntropy::new(height, b"test-certificate");
    let precommits: Vec<SignedVote> = keys
        .iter()
        .map(|key| {
            let vote = crate::block::Vote {
                kind: crate::block::VoteKind::Precommit,
                height,
                round: block.header.round,
                block_hash: Some(hash),
                validator: validators
                    .index_of(&key.verifying_key().fingerprint())
                    .expect("validator"),
            };
            SignedVote::sign(&chain_id, vote, key, &entropy)
        })
        .collect();
    let commit = CommitCertificate::from_precommits(
        height,
        block.header.round,
        hash,
        &precommits,
        validators,
    )
    .expect("every validator signed");
    Block {
        header: block.header,
        body: block.body,
        proof: block.proof,
        commit,
    }
}

#[test]
fn a_block_naming_another_validator_set_is_refused_as_proposal_and_by_sync() {
    let mut net = Net::new(4, 1, 13);
    net.run_until(|net| {
        let heights = net.heights();
        heights[0] >= 2 && heights[4] == heights[0]
    });
    let now = net.now();
    let height = net.heights()[0] + 1;
    let keys: Vec<SigningKey> = net.members[..4]
        .iter()
        .map(|member| {
            SigningKey::from_bytes(member.key_bytes.as_ref().expect("validator")).expect("key")
        })
        .collect();
    let builder = net.members[0].replica.as_mut().expect("running");
    let set_hash = builder.validators().hash();
    let timestamp_ms = now.wall_ms.max(builder.parent_info().timestamp_ms + 1);
    let (honest, _) = builder
        .build_block(height, 0, BlockBody::default(), timestamp_ms)
        .expect("builds");
    assert_eq!(
        (
            honest.header.validators_hash,
            honest.header.next_validators_hash
        ),
        (set_hash, set_hash),
        "a replica names the genesis set as current and next"
    );
    // The same block naming another set, proved afresh by the same
    // proposer: only the named set is wrong.
    let builder = net.members[0].replica.as_ref().expect("running");
    let other_set = hm_wire::hash("test", b"another validator set");
    let named = |current: Hash, next: Hash| {
        let mut header = honest.header.clone();
        header.validators_hash = current;
        header.next_validators_hash = next;
        let proof = BlockProver::new(
            builder.plot.as_ref().expect("validator"),
            builder.block_key.as_ref().expect("validator"),
        )
        .and_then(|prover| {
            prover.prove(
                &header,
                honest.proof.time.clone(),
                builder.validators(),
                &builder.genesis.proof,
                &SeededEntropy::new(1, b"re-prove"),
            )
        })
        .expect("proves");
        ProposedBlock {
            header,
            body: honest.body.clone(),
            proof,
        }
    };
    let wrong_current = named(other_set, set_hash);
    let wrong_next = named(set_hash, other_set);

    // As a proposal: another validator judges it with `validate_block`.
    let judge = net.members[1].replica.as_ref().expect("running");
    assert_eq!(judge.height(), height - 1);
    let judged = |block: &ProposedBlock| {
        judge
            .validate_block(&block.header, &block.body, &block.proof, now.wall_ms, None)
            .map(|_| ())
    };
    judged(&honest).expect("the honest block is valid");
    for (block, field) in [
        (&wrong_current, "validators_hash"),
        (&wrong_next, "next_validators_hash"),
    ] {
        let reason = judged(block).expect_err("names another set");
        assert!(
            reason.contains(&format!("header's {field}")),
            "{field}: {reason}"
        );
    }

    // By sync: certified by the real committee, still refused.
    let builder = net.members[0].replica.as_ref().expect("running");
    let from = net.members[0].id;
    let synced = [
        certify(builder, &keys, wrong_current),
        certify(builder, &keys, wrong_next),
        certify(builder, &keys, honest),
    ];
    let follower = net.members[4].replica.as_mut().expect("running");
    assert_eq!(follower.height(), height - 1);
    while follower.poll_output().is_some() {}
    for block in &synced[..2] {
        follower.handle_message(now, from, ChainMessage::Blocks(vec![block.clone()]));
        assert_eq!(follower.height(), height - 1, "refused");
        let reports: Vec<String> = std::iter::from_fn(|| follower.poll_output())
            .filter_map(|output| match output {
                ReplicaOutput::Misbehaviour { what, .. } => Some(what),
                _ => None,
            })
            .collect();
        assert!(
            reports
                .iter()
                .any(|what| what.contains("validators_hash") && what.contains("is invalid")),
            "{reports:?}"
        );
    }
    follower.handle_message(now, from, ChainMessage::Blocks(vec![synced[2].clone()]));
    assert_eq!(follower.height(), height, "the honest block is accepted");
}

//! A light client's proven reads against a full node that answers
//! honestly, and one that lies: forged values and proofs, a forged header,
//! a stale state, a missing header. Headers are certified with real
//! FALCON-1024 precommits of a four-validator committee.

use std::collections::BTreeMap;

use hm_kernel::block::{BLOCK_VERSION, BlockHeader, CommitCertificate, LogHead};
use hm_kernel::light::{TrustParams, TrustRoot};
use hm_kernel::state::{ModuleProof, StateTree, key_hash, modules_root, value_digest};
use hm_wire::SigningKey;

use super::*;

const LABEL: &str = "proven-committee";
/// Answers older than this are stale (headers are a second apart).
const MAX_AGE_MS: u64 = 10_000;
const START_MS: u64 = 1_700_000_000_000;
const PARAMS: TrustParams = TrustParams {
    trusting_period_ms: 3_600_000,
    max_clock_drift_ms: 5_000,
};

fn chain_id() -> Hash {
    hm_wire::hash("test", b"proven chain")
}

fn keys() -> Vec<&'static SigningKey> {
    (0..4)
        .map(|index| hm_testkit::signing_key(LABEL, index))
        .collect()
}

fn validators() -> ValidatorSet {
    ValidatorSet::new(keys().iter().map(|key| (key.verifying_key(), 10))).expect("a valid set")
}

/// A certificate for `header` with the precommits of `signers` (test key
/// positions), whether or not they make a quorum.
fn certify(header: &BlockHeader, signers: &[u64]) -> CommitCertificate {
    let keys: Vec<&SigningKey> = signers
        .iter()
        .map(|position| hm_testkit::signing_key(LABEL, *position))
        .collect();
    crate::test_chain::certify(&chain_id(), &validators(), &keys, header)
}

/// The key-value module's tree holding `entries`, and an empty TrustChain
/// module: the application root a header commits to.
fn state(entries: &[(&[u8], &[u8])]) -> (StateTree, Hash) {
    let tree = StateTree::new().updated(&hm_kernel::state::sorted_writes(
        entries
            .iter()
            .map(|(key, value)| (key_hash(key), Some(value_digest(value))))
            .collect(),
    ));
    let root = modules_root(&[tree.root(), StateTree::new().root()]);
    (tree, root)
}

fn module_proof(tree: &StateTree, key: &[u8]) -> ModuleProof {
    ModuleProof {
        module: 0,
        module_roots: vec![tree.root(), StateTree::new().root()],
        proof: tree.prove(key),
    }
}

/// An honest chain: at height h the key `name` holds `v<h>`.
struct Chain {
    headers: BTreeMap<Height, CertifiedHeader>,
    trees: BTreeMap<Height, StateTree>,
}

impl Chain {
    fn new(top: Height) -> Chain {
        let set = validators();
        let mut headers = BTreeMap::new();
        let mut trees = BTreeMap::new();
        let mut previous_hash = Hash::ZERO;
        for height in 1..=top {
            let value = format!("v{height}");
            let (tree, state_root) = state(&[(b"name", value.as_bytes())]);
            let header = BlockHeader {
                version: BLOCK_VERSION,
                chain_id: chain_id(),
                height,
                round: 0,
                previous_hash,
                transactions_root: hm_wire::merkle::empty_root(),
                updates_root: hm_kernel::block::updates_root(&[]),
                evidence_root: Hash::ZERO,
                state_root,
                log_head: LogHead::empty(),
                validators_hash: set.hash(),
                next_validators_hash: set.hash(),
                timestamp_ms: START_MS + height * 1_000,
                difficulty: 0,
                time_output: Hash::ZERO,
                time_ticks: 1,
                proposer: keys()[0].verifying_key().fingerprint(),
            };
            previous_hash = header.hash();
            let commit = certify(&header, &[0, 1, 2]);
            headers.insert(height, CertifiedHeader { header, commit });
            trees.insert(height, tree);
        }
        Chain { headers, trees }
    }

    /// A light client trusting height `root`.
    fn client_at(&self, root: Height) -> LightClient {
        let certified = self.headers[&root].clone();
        LightClient::new(
            chain_id(),
            TrustRoot {
                header: certified.header,
                certificate: certified.commit,
                validators: validators(),
                next_validators: None,
            },
            PARAMS,
        )
        .expect("a consistent trust root")
    }

    /// The honest answer to `ProveState` for `name` at `height`.
    fn proved(&self, height: Height) -> ApiResponse {
        let tree = &self.trees[&height];
        ApiResponse::ProvedState {
            height,
            entries: vec![ProvedEntry {
                value: Some(format!("v{height}").into_bytes()),
                proof: module_proof(tree, b"name"),
            }],
        }
    }

    fn header(&self, height: Height) -> ApiResponse {
        ApiResponse::Headers(vec![self.headers[&height].clone()])
    }
}

fn now(height: Height) -> u64 {
    START_MS + height * 1_000 + 500
}

/// Runs a query for `name` in module 0, answering each request with the
/// next of `answers`; returns the outcome and the requests sent.
fn run(
    client: &mut LightClient,
    answers: Vec<ApiResponse>,
    now_ms: u64,
) -> (Result<Proven, ProvenRefusal>, Vec<ApiRequest>) {
    let (mut query, mut step) = ProvenQuery::new(0, vec![b"name".to_vec()], MAX_AGE_MS);
    let mut asked = Vec::new();
    let mut answers = answers.into_iter();
    loop {
        match step {
            Step::Done(outcome) => return (outcome, asked),
            Step::Ask(request) => {
                asked.push(request);
                let answer = answers.next().expect("the test answers every request");
                step = query.on_answer(client, &validators(), answer, now_ms);
            }
        }
    }
}

#[test]
fn an_honest_answer_is_proven_against_a_newly_verified_header() {
    let chain = Chain::new(5);
    let mut client = chain.client_at(1);
    let (outcome, asked) = run(&mut client, vec![chain.proved(5), chain.header(5)], now(5));
    assert_eq!(
        outcome,
        Ok(Proven {
            height: 5,
            header_hash: chain.headers[&5].header.hash(),
            entries: vec![ProvedEntry {
                value: Some(b"v5".to_vec()),
                proof: module_proof(&chain.trees[&5], b"name"),
            }],
        })
    );
    assert_eq!(
        asked,
        vec![
            ApiRequest::ProveState {
                module: 0,
                keys: vec![b"name".to_vec()]
            },
            ApiRequest::Headers { from: 5, count: 1 },
        ]
    );
    // At a height already trusted, no header is asked for.
    let (outcome, asked) = run(&mut client, vec![chain.proved(5)], now(5));
    assert_eq!(outcome.map(Proven::into_value), Ok(Some(b"v5".to_vec())));
    assert_eq!(asked.len(), 1);
}

#[test]
fn a_forged_value_or_a_proof_of_another_state_is_refused() {
    let chain = Chain::new(5);
    // The honest proof with a forged value.
    let forged_value = ApiResponse::ProvedState {
        height: 5,
        entries: vec![ProvedEntry {
            value: Some(b"evil".to_vec()),
            proof: module_proof(&chain.trees[&5], b"name"),
        }],
    };
    let (outcome, _) = run(
        &mut chain.client_at(1),
        vec![forged_value, chain.header(5)],
        now(5),
    );
    let refusal = outcome.expect_err("a forged value is refused");
    assert!(matches!(
        refusal,
        ProvenRefusal::Proof(LightError::Proof { height: 5, .. })
    ));
    assert!(refusal.to_string().contains("not proven"), "{refusal}");
    // A consistent forgery: a tree where the name holds "evil", proven
    // against that tree's root, which no certified header commits to.
    let (evil, _) = state(&[(b"name", b"evil")]);
    let forged_state = ApiResponse::ProvedState {
        height: 5,
        entries: vec![ProvedEntry {
            value: Some(b"evil".to_vec()),
            proof: module_proof(&evil, b"name"),
        }],
    };
    let (outcome, _) = run(
        &mut chain.client_at(1),
        vec![forged_state, chain.header(5)],
        now(5),
    );
    assert!(matches!(
        outcome,
        Err(ProvenRefusal::Proof(LightError::Proof {
            error: hm_kernel::state::ProofError::WrongRoot { .. },
            ..
        }))
    ));
    // Hiding the name: the proof shows it is there.
    let hidden = ApiResponse::ProvedState {
        height: 5,
        entries: vec![ProvedEntry {
            value: None,
            proof: module_proof(&chain.trees[&5], b"name"),
        }],
    };
    let (outcome, _) = run(
        &mut chain.client_at(1),
        vec![hidden, chain.header(5)],
        now(5),
    );
    assert!(matches!(outcome, Err(ProvenRefusal::Proof(_))));
}

#[test]
fn a_forged_header_is_refused_and_the_client_keeps_its_trust() {
    let chain = Chain::new(5);
    let (evil, evil_root) = state(&[(b"name", b"evil")]);
    let forged_answer = ApiResponse::ProvedState {
        height: 5,
        entries: vec![ProvedEntry {
            value: Some(b"evil".to_vec()),
            proof: module_proof(&evil, b"name"),
        }],
    };
    // A header committing to the forged state, certified by one validator
    // (a third of the stake) — all a lying full node can get signed.
    let mut forged = chain.headers[&5].clone();
    forged.header.state_root = evil_root;
    forged.commit = certify(&forged.header, &[3]);
    let mut client = chain.client_at(1);
    let (outcome, _) = run(
        &mut client,
        vec![forged_answer, ApiResponse::Headers(vec![forged])],
        now(5),
    );
    let refusal = outcome.expect_err("a forged header is refused");
    assert!(
        matches!(refusal, ProvenRefusal::Header { height: 5, .. }),
        "{refusal:?}"
    );
    assert!(refusal.to_string().contains("not trusted"), "{refusal}");
    // Nothing was trusted on its account, and honest answers still pass.
    assert_eq!(client.latest().map(|latest| latest.height()), Some(1));
    let (outcome, _) = run(&mut client, vec![chain.proved(5), chain.header(5)], now(5));
    assert!(outcome.is_ok(), "{outcome:?}");
}

#[test]
fn a_stale_answer_below_the_trusted_head_is_refused() {
    let chain = Chain::new(5);
    let mut client = chain.client_at(1);
    let (outcome, _) = run(&mut client, vec![chain.proved(5), chain.header(5)], now(5));
    assert!(outcome.is_ok());
    // Height 3 was the chain's state once, but the client trusts 5 and
    // never trusted 3: an old state served as current is refused.
    let (outcome, asked) = run(&mut client, vec![chain.proved(3)], now(5));
    assert_eq!(
        outcome,
        Err(ProvenRefusal::Stale {
            height: 3,
            trusted: 5
        })
    );
    assert_eq!(asked.len(), 1, "no header is asked for a stale answer");
}

#[test]
fn a_missing_header_a_wrong_module_or_an_off_script_answer_is_refused() {
    let chain = Chain::new(5);
    let (outcome, _) = run(
        &mut chain.client_at(1),
        vec![chain.proved(5), ApiResponse::Headers(vec![])],
        now(5),
    );
    assert_eq!(outcome, Err(ProvenRefusal::MissingHeader { height: 5 }));
    // The header of another height does not stand in for the one asked.
    let (outcome, _) = run(
        &mut chain.client_at(1),
        vec![chain.proved(5), chain.header(4)],
        now(5),
    );
    assert_eq!(outcome, Err(ProvenRefusal::MissingHeader { height: 5 }));
    let mut other_module = module_proof(&chain.trees[&5], b"name");
    other_module.module = 1;
    let wrong = ApiResponse::ProvedState {
        height: 5,
        entries: vec![ProvedEntry {
            value: Some(b"v5".to_vec()),
            proof: other_module,
        }],
    };
    let (outcome, _) = run(&mut chain.client_at(1), vec![wrong], now(5));
    assert_eq!(
        outcome,
        Err(ProvenRefusal::WrongModule {
            asked: 0,
            module: 1
        })
    );
    let (outcome, _) = run(&mut chain.client_at(1), vec![chain.header(5)], now(5));
    assert!(matches!(outcome, Err(ProvenRefusal::Unexpected { .. })));
    let (outcome, _) = run(
        &mut chain.client_at(1),
        vec![ApiResponse::Error("no such module".into())],
        now(5),
    );
    assert_eq!(
        outcome,
        Err(ProvenRefusal::Refused("no such module".into()))
    );
}

#[test]
fn an_old_state_served_to_a_fresh_client_is_refused_as_too_old() {
    // A fresh client trusts only height 1; the liar serves height 3's
    // state, truly committed once, a minute after height 5 was made.
    let chain = Chain::new(5);
    let later = now(5) + 60_000;
    let (outcome, _) = run(
        &mut chain.client_at(1),
        vec![chain.proved(3), chain.header(3)],
        later,
    );
    let refusal = outcome.expect_err("an old state is refused");
    assert!(
        matches!(
            refusal,
            ProvenRefusal::TooOld {
                height: 3,
                max_age_ms: MAX_AGE_MS,
                ..
            }
        ),
        "{refusal:?}"
    );
    assert!(refusal.to_string().contains("stale"), "{refusal}");
    // Within the bound the same answer is accepted.
    let (outcome, _) = run(
        &mut chain.client_at(1),
        vec![chain.proved(3), chain.header(3)],
        now(3),
    );
    assert!(outcome.is_ok(), "{outcome:?}");
}

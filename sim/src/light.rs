//! The light-client checker.
//!
//! * `light-proven` — no honest light node accepted an unproven or wrongly
//!   proven answer: every header it verified, in any of its lives, is the
//!   audited chain's header at that height, and every answer it accepted
//!   names the audited header at its height and carries a proof that
//!   verifies, for the value it took, against that header's state root.
//!
//! A light node's status lists only its latest headers and answers
//! (`hm_node::LIGHT_HEADERS_SHOWN_MAX`, `hm_node::LIGHT_ANSWERS_SHOWN_MAX`)
//! and starts again from nothing at every restart, so the checker samples
//! them at every observation and keeps what it has not seen, deduplicated
//! over all light nodes (honest light nodes mostly verify the same
//! headers), within stated bounds. It also keeps the names light nodes
//! resolved, which `names-resolve` judges.
//!
//! Headers and answers above the audited chain's height (the audited node
//! may trail the node that served them by a block or two) are counted, not
//! judged.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use hm_node::{AcceptedAnswer, LightStatus};
use hm_wire::Hash;

use crate::chain::Audit;
use crate::outcome::{NOT_EXERCISED, PropertyResult};
use crate::trust::TrustView;

/// Distinct `(height, header hash)` pairs kept from all light nodes: one
/// per height while the chain does not fork, so a run of 200,000 blocks
/// (6.4 MB).
pub const HEADERS_KEPT_MAX: usize = 200_000;
/// Distinct accepted answers kept, each with its proof: typically well
/// under a kilobyte (`log2(keys)` siblings), at most
/// `hm_kernel::state::MODULE_PROOF_BYTES_MAX` (~11 KB).
pub const ANSWERS_KEPT_MAX: usize = 10_000;
/// Distinct `(name, address)` pairs kept.
pub const NAMES_KEPT_MAX: usize = 10_000;
/// Violations listed in a failed property's detail.
const SHOWN_MAX: usize = 6;
/// Key and value bytes shown in a detail.
const BYTES_SHOWN_MAX: usize = 24;
/// Domain of the digest answers are deduplicated by.
const ANSWER_DIGEST_DOMAIN: &str = "hm-sim/light-answer/v1";

/// A name an honest light node resolved with proofs, and to what.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResolvedName {
    /// The first node seen to resolve it so.
    pub node: usize,
    pub name: String,
    /// `None`: the node took the name to be unregistered.
    pub addr: Option<Ipv6Addr>,
}

/// What the checker keeps of one light node between observations.
#[derive(Default)]
struct NodeLight {
    /// The life observed last (`ChainStatus::boots`).
    boots: u32,
    /// The newest header and answer already merged from this life's lists.
    last_header: Option<(u64, Hash)>,
    last_answer: Option<AcceptedAnswer>,
    /// This life's `answers_accepted`, as last observed.
    answers_counted: u64,
    /// `answers_accepted` summed over the lives that ended.
    answers_ended: u64,
    /// This life's `names_resolved`, as last merged (its length).
    names_merged: usize,
    /// The client froze in some life (two conflicting certified headers).
    frozen: bool,
}

/// Watches honest light nodes while the run goes on.
#[derive(Default)]
pub struct LightChecker {
    nodes: BTreeMap<usize, NodeLight>,
    /// Every distinct header an honest light node verified or trusted, with
    /// the first node that did.
    headers: BTreeMap<(u64, Hash), usize>,
    /// Every distinct answer an honest light node accepted, by its digest,
    /// with the first node that did.
    answers: BTreeMap<Hash, (usize, AcceptedAnswer)>,
    /// Every distinct `(name, address)` an honest light node resolved.
    names: BTreeMap<(String, Option<Ipv6Addr>), usize>,
    /// Entries not kept: accepted between two observations beyond what the
    /// status lists, or beyond the bounds above.
    answers_unsampled: u64,
    headers_dropped: u64,
    answers_dropped: u64,
    /// The lowest trusted height among live honest light nodes at the last
    /// observation (`None`: none was live).
    trusted_min: Option<u64>,
}

impl LightChecker {
    /// Samples every honest light node among `nodes`.
    pub fn observe<'a>(&mut self, nodes: impl Iterator<Item = TrustView<'a>>) {
        let mut trusted_min: Option<u64> = None;
        for view in nodes.filter(|view| view.light && view.honest) {
            let node = self.nodes.entry(view.index).or_default();
            let kept = view.status.with(|status| {
                if status.chain.boots == 0 {
                    // No chain service started in this process yet.
                    return None;
                }
                if status.chain.boots != node.boots {
                    node.boots = status.chain.boots;
                    node.answers_ended += node.answers_counted;
                    node.answers_counted = 0;
                    node.last_header = None;
                    node.last_answer = None;
                    node.names_merged = 0;
                }
                let light = status.chain.light.as_ref()?;
                Some(merge(node, light))
            });
            let Some((trusted_height, new)) = kept else {
                if view.alive {
                    trusted_min = Some(0);
                }
                continue;
            };
            if view.alive {
                trusted_min =
                    Some(trusted_min.map_or(trusted_height, |min| min.min(trusted_height)));
            }
            self.keep(view.index, new);
        }
        self.trusted_min = trusted_min;
    }

    /// Adds what node `index` reported since the last observation.
    fn keep(&mut self, index: usize, new: New) {
        for header in new.headers {
            if self.headers.contains_key(&header) {
                continue;
            }
            if self.headers.len() >= HEADERS_KEPT_MAX {
                self.headers_dropped += 1;
                continue;
            }
            self.headers.insert(header, index);
        }
        for answer in new.answers {
            let digest = hm_wire::hash(ANSWER_DIGEST_DOMAIN, &hm_wire::encode(&answer));
            if self.answers.contains_key(&digest) {
                continue;
            }
            if self.answers.len() >= ANSWERS_KEPT_MAX {
                self.answers_dropped += 1;
                continue;
            }
            self.answers.insert(digest, (index, answer));
        }
        self.answers_unsampled += new.answers_unsampled;
        for name in new.names {
            if self.names.len() >= NAMES_KEPT_MAX {
                break;
            }
            self.names.entry(name).or_insert(index);
        }
    }

    /// The lowest height a live honest light node trusts a header at, at
    /// the last observation (`None`: no live honest light node; 0 for one
    /// that reports nothing yet).
    pub fn trusted_min(&self) -> Option<u64> {
        self.trusted_min
    }

    /// Every distinct name honest light nodes resolved, and to what.
    pub fn names_resolved(&self) -> Vec<ResolvedName> {
        self.names
            .iter()
            .map(|((name, addr), node)| ResolvedName {
                node: *node,
                name: name.clone(),
                addr: *addr,
            })
            .collect()
    }

    /// Answers honest light nodes accepted (all lives, counted by them).
    fn answers_accepted(&self) -> u64 {
        self.nodes
            .values()
            .map(|node| node.answers_ended + node.answers_counted)
            .sum()
    }

    /// `light-proven`, judged against the audited chain.
    pub fn property(&self, audit: &Result<Audit, String>) -> PropertyResult {
        let name = "light-proven".to_string();
        let audit = match audit {
            Ok(audit) => audit,
            Err(error) => {
                return PropertyResult {
                    name,
                    passed: false,
                    detail: format!("no audited chain to judge against: {error}"),
                };
            }
        };
        let mut violations = Vec::new();
        let mut offenders: Vec<usize> = Vec::new();
        let mut violation = |node: usize, what: String| {
            if !offenders.contains(&node) {
                offenders.push(node);
            }
            violations.push(what);
        };
        let (mut headers_judged, mut above) = (0u64, 0u64);
        for ((height, hash), node) in &self.headers {
            match audit.header(*height) {
                Some(audited) if audited.hash == *hash => headers_judged += 1,
                Some(audited) => violation(
                    *node,
                    format!(
                        "n{node} trusted header {} at height {height}, the audited header is {}",
                        short(hash),
                        short(&audited.hash)
                    ),
                ),
                None if *height == 0 => violation(
                    *node,
                    format!("n{node} trusted a header at height 0, where there is none"),
                ),
                None => above += 1,
            }
        }
        let mut answers_judged = 0u64;
        for (node, answer) in self.answers.values() {
            let what = || {
                format!(
                    "module {} key {} = {} at height {}",
                    answer.module,
                    show_bytes(&answer.key),
                    answer
                        .value
                        .as_deref()
                        .map_or_else(|| "nothing".to_string(), show_bytes),
                    answer.height
                )
            };
            let audited = match audit.header(answer.height) {
                Some(audited) => audited,
                None if answer.height == 0 => {
                    violation(
                        *node,
                        format!("n{node} accepted {} against no header (height 0)", what()),
                    );
                    continue;
                }
                None => {
                    above += 1;
                    continue;
                }
            };
            answers_judged += 1;
            if answer.header_hash != audited.hash {
                violation(
                    *node,
                    format!(
                        "n{node} accepted {} against header {}, not the audited header {}",
                        what(),
                        short(&answer.header_hash),
                        short(&audited.hash)
                    ),
                );
                continue;
            }
            if let Err(error) = answer.proof.verify(
                &audited.state_root,
                answer.module,
                &answer.key,
                answer.value.as_deref(),
            ) {
                violation(
                    *node,
                    format!(
                        "n{node} accepted {} with a proof that does not verify against the audited state root: {error}",
                        what()
                    ),
                );
            }
        }
        let frozen = self.nodes.values().filter(|node| node.frozen).count();
        let mut notes = Vec::new();
        if above > 0 {
            notes.push(format!(
                "{above} headers and answers above the audited height {} not judged",
                audit.blocks
            ));
        }
        let unsampled = self.answers_unsampled + self.answers_dropped;
        if unsampled > 0 {
            notes.push(format!(
                "{unsampled} accepted answers not sampled (between observations beyond the status list, or past {ANSWERS_KEPT_MAX} kept)"
            ));
        }
        if self.headers_dropped > 0 {
            notes.push(format!(
                "{} headers past the {HEADERS_KEPT_MAX} kept not judged",
                self.headers_dropped
            ));
        }
        if frozen > 0 {
            notes.push(format!("{frozen} light nodes froze on conflicting headers"));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        };
        if !violations.is_empty() {
            let total = violations.len();
            let named: Vec<String> = offenders
                .iter()
                .take(SHOWN_MAX)
                .map(|node| format!("n{node}"))
                .collect();
            let mut detail = format!(
                "light clients accepted unproven or wrongly proven data ({total} findings, by {}{}): {}",
                named.join(", "),
                if offenders.len() > SHOWN_MAX {
                    format!(" and {} more nodes", offenders.len() - SHOWN_MAX)
                } else {
                    String::new()
                },
                violations
                    .iter()
                    .take(SHOWN_MAX)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            if total > SHOWN_MAX {
                detail.push_str(&format!("; and {} more", total - SHOWN_MAX));
            }
            detail.push_str(&notes);
            return PropertyResult {
                name,
                passed: false,
                detail,
            };
        }
        if answers_judged == 0 {
            return PropertyResult {
                name,
                passed: false,
                detail: format!(
                    "{NOT_EXERCISED}: no honest light node accepted an answer the audit reaches ({} accepted, {headers_judged} headers judged){notes}",
                    self.answers_accepted()
                ),
            };
        }
        PropertyResult {
            name,
            passed: true,
            detail: format!(
                "all {answers_judged} distinct answers honest light nodes accepted ({} acceptances) carry a proof against the audited header at their height, and all {headers_judged} headers they verified are the audited ones{notes}",
                self.answers_accepted()
            ),
        }
    }
}

/// What one observation of one node added.
struct New {
    headers: Vec<(u64, Hash)>,
    answers: Vec<AcceptedAnswer>,
    answers_unsampled: u64,
    names: Vec<(String, Option<Ipv6Addr>)>,
}

/// Takes what `light` lists that `node` has not merged yet in this life,
/// and moves `node` past it. Returns the trusted height and the new entries.
fn merge(node: &mut NodeLight, light: &LightStatus) -> (u64, New) {
    node.frozen |= light.frozen;
    // The lists are newest last and drop their oldest: new entries are
    // those after the newest one merged before (all of them when it is no
    // longer listed).
    let headers_from = node
        .last_header
        .and_then(|last| light.verified_headers.iter().rposition(|h| *h == last))
        .map_or(0, |at| at + 1);
    let mut headers = light.verified_headers[headers_from..].to_vec();
    if let (Some(hash), true) = (light.trusted_hash, light.trusted_height > 0) {
        headers.push((light.trusted_height, hash));
    }
    node.last_header = light.verified_headers.last().copied();
    let answers_from = node
        .last_answer
        .as_ref()
        .and_then(|last| light.accepted.iter().rposition(|answer| answer == last))
        .map_or(0, |at| at + 1);
    let answers = light.accepted[answers_from..].to_vec();
    node.last_answer = light.accepted.last().cloned();
    // Accepted since the last observation, beyond what the list still shows.
    let accepted_since = light.answers_accepted.saturating_sub(node.answers_counted);
    let answers_unsampled = accepted_since.saturating_sub(answers.len() as u64);
    node.answers_counted = node.answers_counted.max(light.answers_accepted);
    let names = if light.names_resolved.len() == node.names_merged {
        Vec::new()
    } else {
        node.names_merged = light.names_resolved.len();
        light.names_resolved.clone()
    };
    (
        light.trusted_height,
        New {
            headers,
            answers,
            answers_unsampled,
            names,
        },
    )
}

/// A hash as a reader compares them: its first 12 hex digits.
fn short(hash: &Hash) -> String {
    hash.to_hex()[..12].to_string()
}

/// Key or value bytes: as text when printable, else hex; shortened.
fn show_bytes(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(BYTES_SHOWN_MAX)];
    let more = if bytes.len() > shown.len() { "…" } else { "" };
    match std::str::from_utf8(shown) {
        Ok(text) if text.chars().all(|c| c.is_ascii_graphic() || c == ' ') => {
            format!("{text:?}{more}")
        }
        _ => {
            let hex: String = shown.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("0x{hex}{more}")
        }
    }
}

#[cfg(test)]
mod tests {
    use hm_kernel::state::{
        ModuleProof, StateTree, key_hash, modules_root, sorted_writes, value_digest,
    };
    use hm_node::{NodeStatus, StatusHandle};

    use super::*;
    use crate::chain::AuditedHeader;
    use crate::testkit::{assert_fails, assert_passes};

    /// At height `h` (1..=3) the key-value module holds `key` = `v<h>`; the
    /// TrustChain module is empty.
    fn tree_at(height: u64) -> StateTree {
        let value = format!("v{height}");
        StateTree::new().updated(&sorted_writes(vec![
            (key_hash(b"key"), Some(value_digest(value.as_bytes()))),
            (key_hash(b"other"), Some(value_digest(b"o"))),
        ]))
    }

    fn module_roots(height: u64) -> Vec<Hash> {
        vec![tree_at(height).root(), StateTree::new().root()]
    }

    /// The header hash at `height` of the audited chain.
    fn header(height: u64) -> Hash {
        Hash([height as u8; 32])
    }

    /// A three-block audited chain.
    fn audit() -> Result<Audit, String> {
        Ok(Audit {
            blocks: 3,
            headers: (1..=3)
                .map(|height| AuditedHeader {
                    hash: header(height),
                    state_root: modules_root(&module_roots(height)),
                })
                .collect(),
            ..Audit::default()
        })
    }

    /// An honest answer: `key` at `height`, proven against that height.
    fn answer(height: u64) -> AcceptedAnswer {
        AcceptedAnswer {
            height,
            header_hash: header(height),
            module: 0,
            key: b"key".to_vec(),
            value: Some(format!("v{height}").into_bytes()),
            proof: ModuleProof {
                module: 0,
                module_roots: module_roots(height),
                proof: tree_at(height).prove(b"key"),
            },
        }
    }

    /// A light node in its `boots`-th life that verified `headers` of the
    /// audited chain and accepted `answers`.
    fn light(status: &StatusHandle, boots: u32, headers: &[u64], answers: &[AcceptedAnswer]) {
        status.update(|status| {
            status.running = true;
            status.chain.boots = boots;
            status.chain.light = Some(LightStatus {
                trusted_height: headers.last().copied().unwrap_or(0),
                trusted_hash: headers.last().map(|height| header(*height)),
                verified_headers: headers.iter().map(|h| (*h, header(*h))).collect(),
                headers_verified: headers.len() as u64,
                answers_accepted: answers.len() as u64,
                accepted: answers.to_vec(),
                ..LightStatus::default()
            });
        });
    }

    /// `(status, honest)` per node, all alive light nodes.
    fn observe(checker: &mut LightChecker, nodes: &[(&StatusHandle, bool)]) {
        checker.observe(
            nodes
                .iter()
                .enumerate()
                .map(|(index, (status, honest))| TrustView {
                    index,
                    status,
                    alive: true,
                    honest: *honest,
                    light: true,
                    group: 0,
                }),
        );
    }

    fn verdict(checker: &LightChecker) -> PropertyResult {
        checker.property(&audit())
    }

    #[test]
    fn an_honest_history_passes() {
        let (a, b) = (StatusHandle::default(), StatusHandle::default());
        let mut checker = LightChecker::default();
        light(&a, 1, &[1, 2], &[answer(1), answer(2)]);
        light(&b, 1, &[1], &[answer(1)]);
        observe(&mut checker, &[(&a, true), (&b, true)]);
        light(&a, 1, &[1, 2, 3], &[answer(1), answer(2), answer(3)]);
        observe(&mut checker, &[(&a, true), (&b, true)]);
        let verdict = verdict(&checker);
        assert_passes(&verdict);
        assert!(
            verdict
                .detail
                .starts_with("all 3 distinct answers honest light nodes accepted (4 acceptances)"),
            "{}",
            verdict.detail
        );
        assert!(
            verdict.detail.contains("all 3 headers"),
            "{}",
            verdict.detail
        );
        assert_eq!(checker.trusted_min(), Some(1));
    }

    #[test]
    fn an_empty_history_does_not_pass() {
        let checker = LightChecker::default();
        assert_fails(&verdict(&checker), NOT_EXERCISED);
        // Headers alone, without an answer, prove nothing was proven.
        let a = StatusHandle::default();
        let mut checker = LightChecker::default();
        light(&a, 1, &[1, 2], &[]);
        observe(&mut checker, &[(&a, true)]);
        assert_fails(&verdict(&checker), NOT_EXERCISED);
        // A light node whose client has not reported yet.
        let quiet = StatusHandle::default();
        quiet.update(|status| status.chain.boots = 1);
        let mut checker = LightChecker::default();
        observe(&mut checker, &[(&quiet, true)]);
        assert_fails(&verdict(&checker), NOT_EXERCISED);
        assert_eq!(checker.trusted_min(), Some(0));
        // Nothing to judge against.
        assert_fails(
            &checker.property(&Err("no honest node to audit".into())),
            "no audited chain to judge against",
        );
    }

    #[test]
    fn a_header_that_is_not_the_audited_one_fails() {
        let a = StatusHandle::default();
        light(&a, 1, &[1], &[answer(1)]);
        a.update(|status| {
            if let Some(light) = status.chain.light.as_mut() {
                light.verified_headers.push((2, Hash([9; 32])));
            }
        });
        let mut checker = LightChecker::default();
        observe(&mut checker, &[(&a, true)]);
        assert_fails(
            &verdict(&checker),
            &format!(
                "by n0): n0 trusted header {} at height 2, the audited header is {}",
                short(&Hash([9; 32])),
                short(&header(2))
            ),
        );
    }

    #[test]
    fn an_answer_against_another_header_fails() {
        let a = StatusHandle::default();
        let mut forged = answer(2);
        forged.header_hash = Hash([9; 32]);
        light(&a, 1, &[1, 2], &[forged]);
        let mut checker = LightChecker::default();
        observe(&mut checker, &[(&a, true)]);
        assert_fails(
            &verdict(&checker),
            &format!(
                "n0 accepted module 0 key \"key\" = \"v2\" at height 2 against header {}, not the audited header {}",
                short(&Hash([9; 32])),
                short(&header(2))
            ),
        );
    }

    #[test]
    fn a_proof_against_another_root_fails() {
        let a = StatusHandle::default();
        // Height 1's value and proof, presented as height 2's.
        let stale = AcceptedAnswer {
            height: 2,
            header_hash: header(2),
            ..answer(1)
        };
        light(&a, 1, &[1, 2], &[answer(1), stale]);
        let mut checker = LightChecker::default();
        observe(&mut checker, &[(&a, true)]);
        assert_fails(
            &verdict(&checker),
            "n0 accepted module 0 key \"key\" = \"v1\" at height 2 with a proof that does not verify against the audited state root",
        );
    }

    #[test]
    fn a_tampered_value_fails() {
        let a = StatusHandle::default();
        let tampered = AcceptedAnswer {
            value: Some(b"forged".to_vec()),
            ..answer(3)
        };
        light(&a, 1, &[3], &[tampered]);
        let mut checker = LightChecker::default();
        observe(&mut checker, &[(&a, true)]);
        assert_fails(
            &verdict(&checker),
            "n0 accepted module 0 key \"key\" = \"forged\" at height 3 with a proof that does not verify",
        );
        // An absence claimed for a key the state holds fails the same way.
        let denied = AcceptedAnswer {
            value: None,
            ..answer(3)
        };
        light(&a, 1, &[3], &[denied]);
        let mut checker = LightChecker::default();
        observe(&mut checker, &[(&a, true)]);
        assert_fails(&verdict(&checker), "key \"key\" = nothing at height 3");
    }

    #[test]
    fn a_wrong_answer_accepted_in_an_earlier_life_still_fails() {
        let a = StatusHandle::default();
        let tampered = AcceptedAnswer {
            value: Some(b"forged".to_vec()),
            ..answer(1)
        };
        light(&a, 1, &[1], &[tampered]);
        let mut checker = LightChecker::default();
        observe(&mut checker, &[(&a, true)]);
        // The restarted node's status starts again from nothing.
        a.update(|status| *status = NodeStatus::default());
        light(&a, 2, &[2], &[answer(2)]);
        observe(&mut checker, &[(&a, true)]);
        assert_fails(&verdict(&checker), "\"forged\" at height 1");
    }

    #[test]
    fn answers_rolled_out_of_the_status_between_observations_are_kept_or_counted() {
        let a = StatusHandle::default();
        let mut checker = LightChecker::default();
        light(&a, 1, &[1], &[answer(1)]);
        observe(&mut checker, &[(&a, true)]);
        // Two more accepted; the list (of one, here) shows only the last,
        // and the one before it is gone unseen.
        light(&a, 1, &[1, 2, 3], &[answer(3)]);
        a.update(|status| {
            if let Some(light) = status.chain.light.as_mut() {
                light.answers_accepted = 3;
            }
        });
        observe(&mut checker, &[(&a, true)]);
        let verdict = verdict(&checker);
        assert_passes(&verdict);
        assert!(
            verdict.detail.contains("all 2 distinct answers")
                && verdict.detail.contains("1 accepted answers not sampled"),
            "{}",
            verdict.detail
        );
    }

    #[test]
    fn a_byzantine_light_node_is_not_judged_and_above_the_audit_is_not_judged() {
        let (honest, byzantine) = (StatusHandle::default(), StatusHandle::default());
        let tampered = AcceptedAnswer {
            value: Some(b"forged".to_vec()),
            ..answer(1)
        };
        light(&byzantine, 1, &[1], &[tampered]);
        // Height 4 is above the audited chain's 3 blocks.
        let ahead = AcceptedAnswer {
            height: 4,
            header_hash: Hash([4; 32]),
            ..answer(3)
        };
        light(&honest, 1, &[3, 4], &[answer(3), ahead]);
        let mut checker = LightChecker::default();
        observe(&mut checker, &[(&honest, true), (&byzantine, false)]);
        let verdict = verdict(&checker);
        assert_passes(&verdict);
        assert!(
            verdict
                .detail
                .contains("2 headers and answers above the audited height 3 not judged"),
            "{}",
            verdict.detail
        );
    }

    #[test]
    fn names_resolved_are_kept_over_lives() {
        let a = StatusHandle::default();
        let addr = Ipv6Addr::LOCALHOST;
        light(&a, 1, &[1], &[]);
        a.update(|status| {
            if let Some(light) = status.chain.light.as_mut() {
                light.names_resolved = vec![("n0.mesh".into(), Some(addr))];
            }
        });
        let mut checker = LightChecker::default();
        observe(&mut checker, &[(&a, true)]);
        a.update(|status| *status = NodeStatus::default());
        light(&a, 2, &[1], &[]);
        a.update(|status| {
            if let Some(light) = status.chain.light.as_mut() {
                light.names_resolved = vec![("n1.mesh".into(), None)];
            }
        });
        observe(&mut checker, &[(&a, true)]);
        assert_eq!(
            checker.names_resolved(),
            vec![
                ResolvedName {
                    node: 0,
                    name: "n0.mesh".into(),
                    addr: Some(addr)
                },
                ResolvedName {
                    node: 0,
                    name: "n1.mesh".into(),
                    addr: None
                },
            ]
        );
    }

    #[test]
    fn bytes_are_shown_as_text_or_hex() {
        assert_eq!(show_bytes(b"n0.mesh"), "\"n0.mesh\"");
        assert_eq!(show_bytes(&[0, 255]), "0x00ff");
        assert_eq!(show_bytes(&[b'a'; 30]), format!("{:?}…", "a".repeat(24)));
    }
}

//! The bootstrap phase machine (DESIGN §6, seed §3): sans-I/O, one per node.
//!
//! A node climbs from plain self-signed identities to trust anchored in
//! consensus. Transitions happen on *observed conditions*, never on a clock:
//!
//! * **0 → 1 (trust)**: the node holds a certificate issued by a genesis
//!   validator acting as a CA, and has verified its inclusion in the
//!   certificate-transparency log (against a tree head an authority signed,
//!   or one committed in a block it holds).
//! * **1 → 2 (partial federation)**: the chain is live (the node committed a
//!   block certified by more than 2/3 of the stake recently) and its
//!   certificate is in its own committed chain state.
//! * **2 → 3 (full federation)**: the node's certificate was issued by the
//!   chain itself (a committed `IssueCertificate` transaction), validators
//!   holding more than 2/3 of the stake have chain-issued certificates (so
//!   consensus alone can vouch for every validator), and the node's own name
//!   resolves through HyperMesh DNS to its address and certificate.
//!
//! Phases never go back: a phase is a statement about what the network has
//! proved to this node, and the proof stays on chain. A restarted node
//! starts from its persisted phase and fast-forwards through every phase
//! whose condition already holds in its persisted state (one call to
//! [`PhaseMachine::observe`] can climb several phases). What each phase
//! changes in the node's behaviour is [`Phase::policy`].

use serde::{Deserialize, Serialize};

/// Where a node stands in the bootstrap.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub enum Phase {
    /// Self-signed identities, static seeds, traditional DNS.
    #[default]
    Traditional = 0,
    /// A logged CA certificate: PKI trust, consensus optional.
    Trust = 1,
    /// Consensus-anchored certificate, HyperMesh DNS primary, PKI fallback.
    PartialFederation = 2,
    /// Consensus only: no PKI fallback, no traditional DNS.
    FullFederation = 3,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Traditional,
        Phase::Trust,
        Phase::PartialFederation,
        Phase::FullFederation,
    ];

    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn from_number(number: u8) -> Option<Phase> {
        Phase::ALL.get(usize::from(number)).copied()
    }

    fn next(self) -> Option<Phase> {
        Phase::from_number(self.number() + 1)
    }

    /// What the node does differently in this phase.
    pub fn policy(self) -> PhasePolicy {
        match self {
            Phase::Traditional => PhasePolicy {
                accept_uncertified_peers: true,
                pki_fallback: true,
                request_ca_certificate: true,
                renew_through_chain: false,
                register_name: false,
                traditional_dns: true,
            },
            Phase::Trust => PhasePolicy {
                accept_uncertified_peers: true,
                pki_fallback: true,
                request_ca_certificate: true,
                renew_through_chain: false,
                register_name: true,
                traditional_dns: true,
            },
            Phase::PartialFederation => PhasePolicy {
                accept_uncertified_peers: true,
                pki_fallback: true,
                request_ca_certificate: false,
                renew_through_chain: true,
                register_name: true,
                traditional_dns: true,
            },
            Phase::FullFederation => PhasePolicy {
                accept_uncertified_peers: false,
                pki_fallback: false,
                request_ca_certificate: false,
                renew_through_chain: true,
                register_name: true,
                traditional_dns: false,
            },
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Phase::Traditional => "0 (traditional)",
            Phase::Trust => "1 (trust)",
            Phase::PartialFederation => "2 (partial federation)",
            Phase::FullFederation => "3 (full federation)",
        };
        f.write_str(name)
    }
}

/// What a phase changes in the node (the seed's `HybridCertValidator` and
/// `AdaptiveResolver` read these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhasePolicy {
    /// Peers that present no certificate are still let in (they may be
    /// bootstrapping). Phase 3 refuses them on every protocol but the API,
    /// where a newcomer asks for its first certificate.
    pub accept_uncertified_peers: bool,
    /// A certificate not (yet) in the node's committed chain state may be
    /// accepted on an authority's signature plus a log inclusion proof
    /// against an authority-signed tree head.
    pub pki_fallback: bool,
    /// Without a usable certificate, ask a genesis validator (CA) for one
    /// (phases 0 and 1; later phases ask the chain).
    pub request_ca_certificate: bool,
    /// Renew (and replace CA certificates) with `IssueCertificate`
    /// transactions.
    pub renew_through_chain: bool,
    /// Register and keep up to date the node's own DNS name.
    pub register_name: bool,
    /// The traditional resolver (seed list / OS / scenario table) may answer.
    pub traditional_dns: bool,
}

/// What the node observed about itself and the network, refreshed by the
/// shell from its chain state and its certificate exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conditions {
    /// The node holds a certificate whose log inclusion it verified.
    pub certificate_logged: bool,
    /// That certificate is in the node's own committed chain state.
    pub certificate_committed: bool,
    /// A block certified by more than 2/3 of the stake was committed
    /// recently (the shell decides "recently").
    pub chain_live: bool,
    /// The node's current certificate was issued by the chain.
    pub chain_issued_certificate: bool,
    /// Validators with current chain-issued certificates hold more than 2/3
    /// of the stake.
    pub validators_certified: bool,
    /// The node's own name resolves through HyperMesh DNS to its address and
    /// current certificate.
    pub own_name_resolves: bool,
}

impl Conditions {
    /// Whether the condition for leaving `phase` holds.
    fn allows_leaving(&self, phase: Phase) -> bool {
        match phase {
            Phase::Traditional => self.certificate_logged,
            Phase::Trust => {
                self.certificate_logged && self.certificate_committed && self.chain_live
            }
            Phase::PartialFederation => {
                self.certificate_committed
                    && self.chain_live
                    && self.chain_issued_certificate
                    && self.validators_certified
                    && self.own_name_resolves
            }
            Phase::FullFederation => false,
        }
    }

    /// The first unmet condition for leaving `phase`, for status displays.
    pub fn missing_for(&self, phase: Phase) -> Option<&'static str> {
        let checks: &[(bool, &'static str)] = match phase {
            Phase::Traditional => &[(self.certificate_logged, "a logged CA certificate")],
            Phase::Trust => &[
                (self.certificate_logged, "a logged certificate"),
                (self.chain_live, "a live chain"),
                (
                    self.certificate_committed,
                    "the certificate in a committed block",
                ),
            ],
            Phase::PartialFederation => &[
                (self.chain_live, "a live chain"),
                (
                    self.chain_issued_certificate,
                    "a certificate issued by the chain",
                ),
                (
                    self.certificate_committed,
                    "the certificate in a committed block",
                ),
                (
                    self.validators_certified,
                    "validators with 2/3 of the stake certified by the chain",
                ),
                (self.own_name_resolves, "its own name in HyperMesh DNS"),
            ],
            Phase::FullFederation => &[],
        };
        checks
            .iter()
            .find(|(met, _)| !met)
            .map(|(_, missing)| *missing)
    }
}

/// A move from one phase to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Phase,
    pub to: Phase,
    pub at_ms: u64,
}

/// One node's phase and when it entered each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseMachine {
    phase: Phase,
    /// When each phase was entered (ms on the node's monotone clock); the
    /// starting phase counts as entered at the machine's creation.
    entered_at_ms: [Option<u64>; 4],
}

impl PhaseMachine {
    /// Starts at `persisted` (phase 0 on a fresh node).
    pub fn new(persisted: Phase, now_ms: u64) -> PhaseMachine {
        let mut entered_at_ms = [None; 4];
        entered_at_ms[usize::from(persisted.number())] = Some(now_ms);
        PhaseMachine {
            phase: persisted,
            entered_at_ms,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn entered_at_ms(&self, phase: Phase) -> Option<u64> {
        self.entered_at_ms[usize::from(phase.number())]
    }

    /// Advances through every phase whose exit condition holds; returns the
    /// transitions made (at most three), in order. The caller persists the
    /// new phase before acting on it.
    pub fn observe(&mut self, now_ms: u64, conditions: &Conditions) -> Vec<Transition> {
        let mut transitions = Vec::new();
        while conditions.allows_leaving(self.phase) {
            let Some(next) = self.phase.next() else {
                break;
            };
            transitions.push(Transition {
                from: self.phase,
                to: next,
                at_ms: now_ms,
            });
            self.phase = next;
            self.entered_at_ms[usize::from(next.number())] = Some(now_ms);
        }
        debug_assert!(transitions.len() <= 3);
        transitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_met() -> Conditions {
        Conditions {
            certificate_logged: true,
            certificate_committed: true,
            chain_live: true,
            chain_issued_certificate: true,
            validators_certified: true,
            own_name_resolves: true,
        }
    }

    #[test]
    fn a_fresh_node_climbs_one_condition_at_a_time() {
        let mut machine = PhaseMachine::new(Phase::Traditional, 0);
        let mut seen = Conditions::default();
        assert!(machine.observe(1, &seen).is_empty());
        assert_eq!(
            seen.missing_for(Phase::Traditional),
            Some("a logged CA certificate")
        );

        seen.certificate_logged = true;
        let moved = machine.observe(10, &seen);
        assert_eq!(
            moved,
            vec![Transition {
                from: Phase::Traditional,
                to: Phase::Trust,
                at_ms: 10
            }]
        );

        // A live chain is not enough while the certificate is not committed.
        seen.chain_live = true;
        assert!(machine.observe(20, &seen).is_empty());
        seen.certificate_committed = true;
        assert_eq!(machine.observe(30, &seen).len(), 1);
        assert_eq!(machine.phase(), Phase::PartialFederation);

        // Phase 3 needs all of its conditions.
        seen.chain_issued_certificate = true;
        seen.validators_certified = true;
        assert_eq!(
            seen.missing_for(Phase::PartialFederation),
            Some("its own name in HyperMesh DNS")
        );
        assert!(machine.observe(40, &seen).is_empty());
        seen.own_name_resolves = true;
        assert_eq!(machine.observe(50, &seen).len(), 1);
        assert_eq!(machine.phase(), Phase::FullFederation);
        assert_eq!(machine.entered_at_ms(Phase::Trust), Some(10));
        assert_eq!(machine.entered_at_ms(Phase::FullFederation), Some(50));
        assert!(machine.observe(60, &seen).is_empty(), "3 is the last phase");
    }

    #[test]
    fn a_restarted_node_fast_forwards_in_one_observation() {
        let mut machine = PhaseMachine::new(Phase::Trust, 5);
        let moved = machine.observe(6, &all_met());
        let path: Vec<(Phase, Phase)> = moved.iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(
            path,
            vec![
                (Phase::Trust, Phase::PartialFederation),
                (Phase::PartialFederation, Phase::FullFederation)
            ]
        );
    }

    #[test]
    fn phases_never_go_back() {
        let mut machine = PhaseMachine::new(Phase::PartialFederation, 0);
        // Everything lost (e.g. the certificate expired): the phase stays.
        assert!(machine.observe(1, &Conditions::default()).is_empty());
        assert_eq!(machine.phase(), Phase::PartialFederation);
    }

    #[test]
    fn policies_tighten_with_the_phase() {
        assert!(Phase::Traditional.policy().request_ca_certificate);
        assert!(!Phase::Trust.policy().renew_through_chain);
        assert!(Phase::PartialFederation.policy().pki_fallback);
        let full = Phase::FullFederation.policy();
        assert!(!full.pki_fallback && !full.traditional_dns && !full.accept_uncertified_peers);
        assert_eq!(Phase::from_number(4), None);
        assert_eq!(Phase::from_number(2), Some(Phase::PartialFederation));
    }

    proptest! {
        /// Whatever the sequence of observations, the phase only grows, each
        /// transition moves one step, and reaching phase p means p's entry
        /// condition held at that moment.
        #[test]
        fn the_phase_is_monotone_and_transitions_are_single_steps(
            observations in prop::collection::vec(any::<[bool; 6]>(), 0..40)
        ) {
            let mut machine = PhaseMachine::new(Phase::Traditional, 0);
            let mut last = machine.phase();
            for (step, bits) in observations.iter().enumerate() {
                let conditions = Conditions {
                    certificate_logged: bits[0],
                    certificate_committed: bits[1],
                    chain_live: bits[2],
                    chain_issued_certificate: bits[3],
                    validators_certified: bits[4],
                    own_name_resolves: bits[5],
                };
                for transition in machine.observe(step as u64, &conditions) {
                    prop_assert_eq!(transition.to.number(), transition.from.number() + 1);
                    prop_assert!(conditions.allows_leaving(transition.from));
                }
                prop_assert!(machine.phase() >= last);
                last = machine.phase();
            }
        }
    }
}

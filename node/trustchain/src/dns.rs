//! HyperMesh DNS: name records on chain, signed claims that create and
//! update them, and the resolver that chooses between HyperMesh and
//! traditional DNS by bootstrap phase.
//!
//! Names are first come, first served: the first valid claim of a name
//! under the zone owns it, and from then on only its owner updates it (with
//! a higher sequence number). A claim must point at a logged, unrevoked,
//! current certificate of the owner.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use hm_env::Entropy;
use hm_kernel::block::Height;
use hm_wire::{Hash, Signature, SigningKey, VerifyingKey, WireError};
use serde::{Deserialize, Serialize};

use crate::cert::NAME_SIGN_DOMAIN;
use crate::name::DnsName;

/// Most addresses one record carries: enough for a multi-homed node, few
/// enough that an answer stays one small datagram.
pub const ADDRS_PER_RECORD_MAX: usize = 4;

/// Most names one owner may hold: bounds the state one key can occupy.
pub const NAMES_PER_OWNER_MAX: usize = 16;

/// Largest encoded record or claim (a claim is ≈ 3.4 KB: a FALCON key and
/// signature, a 253-byte name, four addresses).
pub const DNS_MESSAGE_BYTES_MAX: usize = 8 << 10;

/// Why a claim or record is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("DNS message does not decode: {0}")]
    Decode(#[from] WireError),
    #[error("a record carries 1..={ADDRS_PER_RECORD_MAX} addresses; this one has {count}")]
    Addresses { count: usize },
    #[error("the claim for {name} is not signed by its owner key")]
    BadSignature { name: DnsName },
}

/// A name as the chain records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub name: DnsName,
    /// Node id of the owner.
    pub owner: Hash,
    /// 1..=[`ADDRS_PER_RECORD_MAX`] addresses.
    pub addrs: Vec<Ipv6Addr>,
    /// Fingerprint of the owner's certificate the claim pointed at.
    pub certificate: Hash,
    /// The claim's sequence; updates must raise it.
    pub sequence: u64,
    /// Height of the block that last changed the record.
    pub updated_height: Height,
    /// Timestamp of the block that first registered the name: from then on
    /// it is owned, and an authority certifying it to someone else is
    /// provable misbehaviour.
    pub registered_ms: u64,
}

impl DnsRecord {
    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<DnsRecord, DnsError> {
        let record: DnsRecord = hm_wire::decode(bytes, DNS_MESSAGE_BYTES_MAX)?;
        check_addrs(&record.addrs)?;
        Ok(record)
    }
}

/// What an owner asks the chain to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameClaim {
    pub name: DnsName,
    /// The owner's FALCON key; its fingerprint is the owner's node id.
    pub owner_key: VerifyingKey,
    pub addrs: Vec<Ipv6Addr>,
    /// Fingerprint of a logged certificate of the owner.
    pub certificate: Hash,
    /// Higher than the recorded one for an update (any value to register).
    pub sequence: u64,
}

impl NameClaim {
    pub fn owner(&self) -> Hash {
        self.owner_key.fingerprint()
    }

    pub fn check_limits(&self) -> Result<(), DnsError> {
        check_addrs(&self.addrs)
    }
}

/// A claim and the owner's signature over it ([`NAME_SIGN_DOMAIN`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedNameClaim {
    pub claim: NameClaim,
    pub signature: Signature,
}

impl SignedNameClaim {
    pub fn sign<E: Entropy + ?Sized>(
        claim: NameClaim,
        key: &SigningKey,
        entropy: &E,
    ) -> SignedNameClaim {
        let signature = key.sign(NAME_SIGN_DOMAIN, &hm_wire::encode(&claim), entropy);
        SignedNameClaim { claim, signature }
    }

    /// Limits, then the owner key's signature.
    pub fn verify(&self) -> Result<(), DnsError> {
        self.claim.check_limits()?;
        self.claim
            .owner_key
            .verify(
                NAME_SIGN_DOMAIN,
                &hm_wire::encode(&self.claim),
                &self.signature,
            )
            .map_err(|_| DnsError::BadSignature {
                name: self.claim.name.clone(),
            })
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<SignedNameClaim, DnsError> {
        let signed: SignedNameClaim = hm_wire::decode(bytes, DNS_MESSAGE_BYTES_MAX)?;
        signed.claim.check_limits()?;
        Ok(signed)
    }
}

fn check_addrs(addrs: &[Ipv6Addr]) -> Result<(), DnsError> {
    if addrs.is_empty() || addrs.len() > ADDRS_PER_RECORD_MAX {
        return Err(DnsError::Addresses { count: addrs.len() });
    }
    Ok(())
}

/// HyperMesh DNS: names recorded on chain.
pub trait NameLookup {
    fn lookup(&self, name: &DnsName) -> Option<DnsRecord>;
}

/// Traditional DNS: the simulator's scenario table, the real node's seed
/// list or system resolver.
pub trait TraditionalResolver {
    fn resolve(&self, name: &DnsName) -> Option<Vec<Ipv6Addr>>;
}

/// A fixed table of names and addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticTable {
    entries: BTreeMap<DnsName, Vec<Ipv6Addr>>,
}

impl StaticTable {
    pub fn new() -> StaticTable {
        StaticTable::default()
    }

    /// Sets the addresses of `name`, replacing any earlier ones.
    pub fn insert(&mut self, name: DnsName, addrs: Vec<Ipv6Addr>) {
        self.entries.insert(name, addrs);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl FromIterator<(DnsName, Vec<Ipv6Addr>)> for StaticTable {
    fn from_iter<I: IntoIterator<Item = (DnsName, Vec<Ipv6Addr>)>>(iter: I) -> Self {
        StaticTable {
            entries: iter.into_iter().collect(),
        }
    }
}

impl TraditionalResolver for StaticTable {
    fn resolve(&self, name: &DnsName) -> Option<Vec<Ipv6Addr>> {
        self.entries
            .get(name)
            .filter(|addrs| !addrs.is_empty())
            .cloned()
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    HyperMesh(DnsRecord),
    Traditional(Vec<Ipv6Addr>),
}

impl Resolution {
    pub fn addrs(&self) -> &[Ipv6Addr] {
        match self {
            Resolution::HyperMesh(record) => &record.addrs,
            Resolution::Traditional(addrs) => addrs,
        }
    }
}

/// A source of answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    HyperMesh,
    Traditional,
}

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{name} did not resolve in phase {phase}; tried {tried:?}, none had it")]
    NotFound {
        name: DnsName,
        phase: u8,
        tried: Vec<Source>,
    },
    #[error("bootstrap phase {phase} does not exist (phases are 0..=3); cannot resolve {name}")]
    UnknownPhase { name: DnsName, phase: u8 },
}

/// Answers by source, for the status report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolverStats {
    pub hypermesh: u64,
    pub traditional: u64,
    /// Answers from traditional DNS after HyperMesh had none.
    pub fallbacks: u64,
    pub failures: u64,
}

/// Chooses the source by bootstrap phase:
///
/// | phase | policy |
/// |---|---|
/// | 0 | traditional only |
/// | 1 | HyperMesh first, traditional fallback |
/// | 2 | HyperMesh primary, traditional fallback |
/// | 3 | HyperMesh only |
#[derive(Debug, Clone, Default)]
pub struct AdaptiveResolver {
    stats: ResolverStats,
}

impl AdaptiveResolver {
    pub fn new() -> AdaptiveResolver {
        AdaptiveResolver::default()
    }

    pub fn stats(&self) -> ResolverStats {
        self.stats
    }

    /// The sources phase `phase` tries, in order.
    pub fn sources(phase: u8) -> Option<&'static [Source]> {
        match phase {
            0 => Some(&[Source::Traditional]),
            1 | 2 => Some(&[Source::HyperMesh, Source::Traditional]),
            3 => Some(&[Source::HyperMesh]),
            _ => None,
        }
    }

    pub fn resolve(
        &mut self,
        phase: u8,
        name: &DnsName,
        hypermesh: &impl NameLookup,
        traditional: &impl TraditionalResolver,
    ) -> Result<Resolution, ResolveError> {
        let Some(sources) = Self::sources(phase) else {
            self.stats.failures += 1;
            return Err(ResolveError::UnknownPhase {
                name: name.clone(),
                phase,
            });
        };
        for (position, source) in sources.iter().enumerate() {
            match source {
                Source::HyperMesh => {
                    if let Some(record) = hypermesh.lookup(name) {
                        self.stats.hypermesh += 1;
                        return Ok(Resolution::HyperMesh(record));
                    }
                }
                Source::Traditional => {
                    if let Some(addrs) = traditional.resolve(name) {
                        self.stats.traditional += 1;
                        if position > 0 {
                            self.stats.fallbacks += 1;
                        }
                        return Ok(Resolution::Traditional(addrs));
                    }
                }
            }
        }
        self.stats.failures += 1;
        Err(ResolveError::NotFound {
            name: name.clone(),
            phase,
            tried: sources.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, entropy};
    use proptest::prelude::*;

    fn name(text: &str) -> DnsName {
        DnsName::parse(text).expect("valid test name")
    }

    fn addr(last: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last)
    }

    struct Records(BTreeMap<DnsName, DnsRecord>);

    impl NameLookup for Records {
        fn lookup(&self, name: &DnsName) -> Option<DnsRecord> {
            self.0.get(name).cloned()
        }
    }

    fn record(text: &str, last: u16) -> DnsRecord {
        DnsRecord {
            name: name(text),
            owner: Hash([1; 32]),
            addrs: vec![addr(last)],
            certificate: Hash([2; 32]),
            sequence: 0,
            updated_height: 1,
            registered_ms: 0,
        }
    }

    #[test]
    fn phase_policy() {
        let both = name("both.hm");
        let chain_only = name("chain.hm");
        let table_only = name("table.hm");
        let records = Records(BTreeMap::from([
            (both.clone(), record("both.hm", 1)),
            (chain_only.clone(), record("chain.hm", 2)),
        ]));
        let table: StaticTable = [
            (both.clone(), vec![addr(10)]),
            (table_only.clone(), vec![addr(11)]),
        ]
        .into_iter()
        .collect();
        let mut resolver = AdaptiveResolver::new();

        // Phase 0: traditional only, even when the chain has the name.
        assert_eq!(
            resolver.resolve(0, &both, &records, &table),
            Ok(Resolution::Traditional(vec![addr(10)]))
        );
        assert_eq!(
            resolver.resolve(0, &chain_only, &records, &table),
            Err(ResolveError::NotFound {
                name: chain_only.clone(),
                phase: 0,
                tried: vec![Source::Traditional]
            })
        );
        // Phases 1 and 2: HyperMesh first, traditional fallback.
        for phase in [1, 2] {
            assert_eq!(
                resolver.resolve(phase, &both, &records, &table),
                Ok(Resolution::HyperMesh(record("both.hm", 1)))
            );
            assert_eq!(
                resolver.resolve(phase, &table_only, &records, &table),
                Ok(Resolution::Traditional(vec![addr(11)]))
            );
        }
        // Phase 3: HyperMesh only.
        assert_eq!(
            resolver
                .resolve(3, &chain_only, &records, &table)
                .map(|r| r.addrs().to_vec()),
            Ok(vec![addr(2)])
        );
        let error = resolver
            .resolve(3, &table_only, &records, &table)
            .expect_err("no fallback");
        assert_eq!(
            error,
            ResolveError::NotFound {
                name: table_only.clone(),
                phase: 3,
                tried: vec![Source::HyperMesh]
            }
        );
        assert!(error.to_string().contains("table.hm") && error.to_string().contains("phase 3"));
        assert!(matches!(
            resolver.resolve(4, &both, &records, &table),
            Err(ResolveError::UnknownPhase { phase: 4, .. })
        ));
        assert_eq!(
            resolver.stats(),
            ResolverStats {
                hypermesh: 3,
                traditional: 3,
                fallbacks: 2,
                failures: 3
            }
        );
    }

    #[test]
    fn static_table_replaces_and_ignores_empty_entries() {
        let mut table = StaticTable::new();
        table.insert(name("a.hm"), vec![addr(1)]);
        table.insert(name("a.hm"), vec![addr(2)]);
        table.insert(name("empty.hm"), vec![]);
        assert_eq!(table.len(), 2);
        assert_eq!(table.resolve(&name("a.hm")), Some(vec![addr(2)]));
        assert_eq!(table.resolve(&name("empty.hm")), None);
        assert_eq!(table.resolve(&name("b.hm")), None);
    }

    fn claim(addrs: Vec<Ipv6Addr>) -> NameClaim {
        NameClaim {
            name: name("node.hm"),
            owner_key: testkit::subject_key(0).verifying_key(),
            addrs,
            certificate: Hash([3; 32]),
            sequence: 1,
        }
    }

    #[test]
    fn claims_are_signed_by_their_owner_and_bounded() {
        let signed =
            SignedNameClaim::sign(claim(vec![addr(1)]), testkit::subject_key(0), &entropy(1));
        assert_eq!(signed.verify(), Ok(()));
        assert_eq!(
            SignedNameClaim::decode(&signed.encode()),
            Ok(signed.clone())
        );
        let by_other =
            SignedNameClaim::sign(claim(vec![addr(1)]), testkit::subject_key(1), &entropy(2));
        assert_eq!(
            by_other.verify(),
            Err(DnsError::BadSignature {
                name: name("node.hm")
            })
        );
        let mut altered = signed.clone();
        altered.claim.sequence = 2;
        assert!(altered.verify().is_err());
        for count in [0, ADDRS_PER_RECORD_MAX + 1] {
            let addrs = (0..count as u16).map(addr).collect();
            let signed = SignedNameClaim::sign(claim(addrs), testkit::subject_key(0), &entropy(3));
            assert_eq!(signed.verify(), Err(DnsError::Addresses { count }));
            assert_eq!(
                SignedNameClaim::decode(&signed.encode()),
                Err(DnsError::Addresses { count })
            );
        }
    }

    #[test]
    fn record_round_trips() {
        let value = record("a.hm", 7);
        assert_eq!(DnsRecord::decode(&value.encode()), Ok(value));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn mutated_claims_and_records_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let claim = SignedNameClaim::sign(claim(vec![addr(1), addr(2)]), testkit::subject_key(0), &entropy(4));
            for original in [claim.encode(), record("x.hm", 3).encode()] {
                let mut bytes = original;
                for (at, value) in &flips {
                    let at = at.index(bytes.len());
                    bytes[at] = *value;
                }
                if truncate {
                    bytes.truncate(cut.index(bytes.len()));
                }
                if let Ok(decoded) = SignedNameClaim::decode(&bytes) {
                    prop_assert_eq!(decoded.encode(), bytes.clone());
                    // The claim is signed whole: only the original verifies.
                    let verified = decoded.verify();
                    prop_assert_eq!(verified.is_ok(), decoded == claim, "{:?}", verified);
                }
                if let Ok(decoded) = DnsRecord::decode(&bytes) {
                    prop_assert_eq!(decoded.encode(), bytes);
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(decoded) = DnsRecord::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes.clone());
            }
            if let Ok(decoded) = SignedNameClaim::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }
    }
}

//! The light client's core: trusted headers, kept current by verifying
//! commit certificates, in the model of the Tendermint light client and
//! IBC ICS-07.
//!
//! A [`LightClient`] starts from a trust root — a header, its certificate
//! and the validator set the header names, obtained out of band — and
//! accepts a newer header when the certificate carries more than two
//! thirds of the stake of the set the header names, and that set is linked
//! to trust: named as next by the trusted header just below (adjacent), or
//! holding, among the signers, more than one third of the stake the
//! trusted header's next set has (skipping: Tendermint's trust level 1/3).
//! The header it is verified from must still be inside the trusting
//! period. Two certified headers that cannot both be on one chain (a fork
//! at one height, a broken parent link, time running backwards) freeze the
//! client with [`Misbehaviour`] evidence any full node can check.
//!
//! What it owns: which headers are trusted and why, the trusted
//! `state_root` of each ([`LightClient::trusted_state_root`]: the seam where
//! state proofs are checked), and the freeze. What it must not know:
//! networks, peers and which one to ask (the shell fetches headers,
//! certificates and validator sets and decides whom to send evidence to),
//! clocks (every call takes `now_ms`), storage, randomness, and the proof
//! format ([`LightClient::verify_state`] hands the trusted root to
//! `hm_kernel::state`, which verifies the proof).

use std::collections::BTreeMap;
use std::sync::Arc;

use hm_wire::sign::SIGNATURE_BYTES;
use hm_wire::{Hash, WireError};
use serde::{Deserialize, Serialize};

use crate::block::{
    BLOCK_VERSION, BlockError, BlockHeader, CommitCertificate, HEADER_BYTES_MAX, Height,
    VALIDATORS_MAX,
};
use crate::state::{ModuleProof, ProofError};
use crate::validators::ValidatorSet;

/// Trusted headers kept. The oldest are dropped first, never the latest:
/// enough to answer state proofs for the recent past and to catch a
/// conflicting header near the head; each costs at most a header and a
/// certificate (≤ [`VALIDATORS_MAX`] signatures of 1.3 KB), validator sets
/// are shared between headers that name the same one.
pub const TRUSTED_HEADERS_MAX: usize = 64;
const _: () = assert!(TRUSTED_HEADERS_MAX >= 2, "the latest and one below it");

/// An encoded certificate with the most signatures: height, round, block
/// hash, the signature count, and per signature its index and its length
/// prefixed bytes.
const CERTIFICATE_BYTES_MAX: usize = 8 + 4 + 32 + 8 + VALIDATORS_MAX * (2 + 8 + SIGNATURE_BYTES);

/// An encoded [`Misbehaviour`]: two headers and their certificates.
pub const MISBEHAVIOUR_BYTES_MAX: usize = 2 * (HEADER_BYTES_MAX + CERTIFICATE_BYTES_MAX);

/// How long a header stays a base for verification, and how far ahead of
/// our clock a header's time may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustParams {
    /// A trusted header can verify others until its timestamp plus this.
    /// It must be shorter than the time a misbehaving validator's stake
    /// stays at risk (the unbonding period), so that whoever could fork
    /// the client can still be punished.
    pub trusting_period_ms: u64,
    /// How far a header's timestamp may be ahead of `now_ms`.
    pub max_clock_drift_ms: u64,
}

/// What a light client starts from, obtained out of band (a genesis file,
/// a friend, a checkpoint in the software release): a header, its commit
/// certificate and the validator set the header names.
#[derive(Debug, Clone)]
pub struct TrustRoot {
    pub header: BlockHeader,
    pub certificate: CommitCertificate,
    /// The set whose hash is `header.validators_hash`.
    pub validators: ValidatorSet,
    /// The set whose hash is `header.next_validators_hash`, if it differs
    /// from `validators` (needed to skip from the root; adjacent headers
    /// do without).
    pub next_validators: Option<ValidatorSet>,
}

/// A header the client trusts, with the certificate that got it trusted
/// (kept as evidence should a conflicting header turn up).
#[derive(Debug, Clone)]
pub struct TrustedHeader {
    header: BlockHeader,
    hash: Hash,
    certificate: CommitCertificate,
    validators: Arc<ValidatorSet>,
    /// Known when the header names its own set as next, or when the
    /// caller gave it.
    next_validators: Option<Arc<ValidatorSet>>,
}

impl TrustedHeader {
    pub fn header(&self) -> &BlockHeader {
        &self.header
    }

    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn height(&self) -> Height {
        self.header.height
    }

    pub fn timestamp_ms(&self) -> u64 {
        self.header.timestamp_ms
    }

    /// The application state root after this block: what state proofs for
    /// this height are checked against.
    pub fn state_root(&self) -> Hash {
        self.header.state_root
    }

    pub fn certificate(&self) -> &CommitCertificate {
        &self.certificate
    }

    /// The set that certified this header.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// The set this header names as next, if known.
    pub fn next_validators(&self) -> Option<&ValidatorSet> {
        self.next_validators.as_deref()
    }

    /// From this time on the header verifies no other (the end of its
    /// trusting period).
    fn expires_at_ms(&self, params: &TrustParams) -> u64 {
        self.header
            .timestamp_ms
            .saturating_add(params.trusting_period_ms)
    }
}

/// How a header came to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// It was trusted already (the same header again); nothing changed.
    AlreadyTrusted,
    /// Height `from + 1`: its set is the one the trusted header at `from`
    /// named as next.
    Adjacent { from: Height },
    /// Beyond `from + 1`: signers holding more than a third of the stake
    /// trusted at `from` vouch for it.
    Skipping { from: Height },
}

/// A header accepted by [`LightClient::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub height: Height,
    pub hash: Hash,
    pub state_root: Hash,
    pub verification: Verification,
}

/// Whether the client can still verify headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LightStatus {
    Active,
    /// The latest trusted header left its trusting period: re-initialise
    /// from a fresh trust root.
    Expired,
    /// Conflicting certified headers were seen: see
    /// [`LightClient::misbehaviour`].
    Frozen,
}

/// What two certified headers contradict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Conflict {
    /// Two different headers at one height.
    Fork { height: Height },
    /// The header at `height + 1` names another parent than the header at
    /// `height`.
    BrokenLink { height: Height },
    /// The lower header's time is not before the higher one's (block time
    /// is strictly monotone along one chain).
    TimeReversal { lower: Height, upper: Height },
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conflict::Fork { height } => write!(f, "two certified headers at height {height}"),
            Conflict::BrokenLink { height } => write!(
                f,
                "the certified header at height {} names another parent than the one at {height}",
                height + 1
            ),
            Conflict::TimeReversal { lower, upper } => write!(
                f,
                "the certified header at height {lower} is not older than the one at {upper}"
            ),
        }
    }
}

/// Two headers, each with a certificate, that cannot both be on one chain:
/// proof that more than a third of the stake signed conflicting blocks
/// (or that the validator sets were not what the client was told). The
/// light client sends it to full nodes; they check it with
/// [`Misbehaviour::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Misbehaviour {
    /// The header the client trusted.
    pub header_a: BlockHeader,
    pub certificate_a: CommitCertificate,
    /// The certified header that contradicts it.
    pub header_b: BlockHeader,
    pub certificate_b: CommitCertificate,
}

impl Misbehaviour {
    /// What the two headers contradict, judged from the headers alone
    /// (`None`: they could be on one chain).
    pub fn conflict(&self) -> Option<Conflict> {
        conflict_between(&self.header_a, &self.header_b)
    }

    /// Checks the evidence independently: the headers conflict, and each is
    /// certified by more than two thirds of the set given for it, which
    /// must be the set it names. Pass the sets *your* chain had at those
    /// heights (never sets that came with the evidence): then valid
    /// evidence means validators of your chain signed both.
    pub fn verify(
        &self,
        chain_id: &Hash,
        validators_a: &ValidatorSet,
        validators_b: &ValidatorSet,
    ) -> Result<Conflict, LightError> {
        let conflict = self.conflict().ok_or(LightError::NoConflict)?;
        let sides = [
            (&self.header_a, &self.certificate_a, validators_a),
            (&self.header_b, &self.certificate_b, validators_b),
        ];
        for (header, certificate, validators) in sides {
            check_certified(
                chain_id,
                header,
                &header.hash(),
                certificate,
                &validators.hash(),
                None,
            )?;
            certificate
                .verify(chain_id, validators)
                .map_err(LightError::Certificate)?;
        }
        Ok(conflict)
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    /// Decodes evidence from untrusted bytes: bounded and canonical. The
    /// signatures are checked by [`Misbehaviour::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Misbehaviour, LightError> {
        let evidence: Misbehaviour = hm_wire::decode(bytes, MISBEHAVIOUR_BYTES_MAX)?;
        for certificate in [&evidence.certificate_a, &evidence.certificate_b] {
            if certificate.signatures.len() > VALIDATORS_MAX {
                return Err(LightError::Certificate(BlockError::TooLarge {
                    what: "certificate signatures",
                    len: certificate.signatures.len(),
                    max: VALIDATORS_MAX,
                }));
            }
        }
        Ok(evidence)
    }
}

fn conflict_between(a: &BlockHeader, b: &BlockHeader) -> Option<Conflict> {
    if a.chain_id != b.chain_id {
        return None;
    }
    if a.height == b.height {
        return (a.hash() != b.hash()).then_some(Conflict::Fork { height: a.height });
    }
    let (lower, upper) = if a.height < b.height { (a, b) } else { (b, a) };
    if lower.height + 1 == upper.height && upper.previous_hash != lower.hash() {
        return Some(Conflict::BrokenLink {
            height: lower.height,
        });
    }
    (lower.timestamp_ms >= upper.timestamp_ms).then_some(Conflict::TimeReversal {
        lower: lower.height,
        upper: upper.height,
    })
}

/// The sans-I/O light client: see the module doc.
#[derive(Debug, Clone)]
pub struct LightClient {
    chain_id: Hash,
    params: TrustParams,
    /// By height; heights and timestamps strictly increase together; never
    /// empty, at most [`TRUSTED_HEADERS_MAX`].
    trusted: BTreeMap<Height, TrustedHeader>,
    /// Set once, when two certified headers conflict; the client is frozen
    /// from then on.
    misbehaviour: Option<Misbehaviour>,
}

/// Where a header stands relative to the trusted ones.
enum Position<'a> {
    /// Above the latest: verified from it and, if valid, trusted.
    Newer { from: &'a TrustedHeader },
    /// At a trusted height with another hash: a fork if it is certified by
    /// the set that certified the trusted header.
    Fork { trusted: &'a TrustedHeader },
    /// Between two trusted heights: verified from the lower one, checked
    /// for a conflict with both, and, if valid, trusted.
    Between {
        from: &'a TrustedHeader,
        above: &'a TrustedHeader,
    },
}

impl LightClient {
    /// A client trusting `root`, after checking the root is self-consistent:
    /// for this chain, certified by more than two thirds of the set it
    /// names. Whether the root is still inside its trusting period shows
    /// at the first [`LightClient::verify`] (or [`LightClient::status`]).
    pub fn new(
        chain_id: Hash,
        root: TrustRoot,
        params: TrustParams,
    ) -> Result<LightClient, LightError> {
        if params.trusting_period_ms == 0 {
            return Err(LightError::BadParams(
                "the trusting period must be longer than zero",
            ));
        }
        let TrustRoot {
            header,
            certificate,
            validators,
            next_validators,
        } = root;
        let hash = header.hash();
        let bad_root = |error: LightError| LightError::Root(Box::new(error));
        check_certified(
            &chain_id,
            &header,
            &hash,
            &certificate,
            &validators.hash(),
            next_validators.as_ref().map(ValidatorSet::hash).as_ref(),
        )
        .map_err(bad_root)?;
        certificate
            .verify(&chain_id, &validators)
            .map_err(|error| bad_root(LightError::Certificate(error)))?;
        let validators = Arc::new(validators);
        let next_validators = match next_validators {
            Some(next) => Some(Arc::new(next)),
            None => {
                (header.next_validators_hash == header.validators_hash).then(|| validators.clone())
            }
        };
        let trusted = TrustedHeader {
            header,
            hash,
            certificate,
            validators,
            next_validators,
        };
        Ok(LightClient {
            chain_id,
            params,
            trusted: BTreeMap::from([(trusted.height(), trusted)]),
            misbehaviour: None,
        })
    }

    pub fn chain_id(&self) -> Hash {
        self.chain_id
    }

    pub fn params(&self) -> TrustParams {
        self.params
    }

    /// The newest trusted header; `None` once frozen (a frozen client
    /// vouches for nothing).
    pub fn latest(&self) -> Option<&TrustedHeader> {
        if self.misbehaviour.is_some() {
            return None;
        }
        self.trusted.values().next_back()
    }

    /// The trusted header at `height`, if kept; `None` once frozen.
    pub fn trusted(&self, height: Height) -> Option<&TrustedHeader> {
        if self.misbehaviour.is_some() {
            return None;
        }
        self.trusted.get(&height)
    }

    /// The state root a state proof for `height` must be checked against:
    /// `Some` only for a trusted header still kept, and never once frozen.
    /// It does not judge the trusting period; callers that hold a root for
    /// long check [`LightClient::status`].
    pub fn trusted_state_root(&self, height: Height) -> Option<Hash> {
        self.trusted(height).map(TrustedHeader::state_root)
    }

    /// Checks a full node's answer about the application state at
    /// `height` — `value` for `key` in `module`, or its absence — against
    /// the state root of the trusted header at that height. The one door
    /// through which state reaches a light client: an answer at a height
    /// not trusted (yet), or whose proof fails, is refused.
    pub fn verify_state(
        &self,
        height: Height,
        module: u8,
        key: &[u8],
        value: Option<&[u8]>,
        proof: &ModuleProof,
    ) -> Result<(), LightError> {
        if let Some(evidence) = &self.misbehaviour {
            return Err(LightError::Frozen {
                height: evidence.header_b.height,
            });
        }
        let root = self
            .trusted_state_root(height)
            .ok_or(LightError::NotTrusted {
                height,
                latest: self.latest().map_or(0, TrustedHeader::height),
            })?;
        proof
            .verify(&root, module, key, value)
            .map_err(|error| LightError::Proof { height, error })
    }

    /// Trusted headers kept (at most [`TRUSTED_HEADERS_MAX`]).
    pub fn trusted_len(&self) -> usize {
        self.trusted.len()
    }

    pub fn status(&self, now_ms: u64) -> LightStatus {
        match self.latest() {
            None => LightStatus::Frozen,
            Some(latest) if now_ms >= latest.expires_at_ms(&self.params) => LightStatus::Expired,
            Some(_) => LightStatus::Active,
        }
    }

    /// The evidence that froze the client, to send to full nodes.
    pub fn misbehaviour(&self) -> Option<&Misbehaviour> {
        self.misbehaviour.as_ref()
    }

    /// Verifies `header` with its `certificate`, given the validator set it
    /// names (and the next one, if the caller has it), and trusts it if it
    /// is newer than the latest trusted header.
    ///
    /// A header at or below the latest trusted height is never trusted
    /// (the client moves forward only), but it is checked against the
    /// trusted headers: one that is certified by trusted validators and
    /// contradicts them freezes the client ([`LightError::Frozen`], with
    /// [`LightClient::misbehaviour`] set). A header that fails any check —
    /// a bad signature, too little stake, an unknown set — is only refused:
    /// nobody without trusted validators' keys can freeze the client.
    pub fn verify(
        &mut self,
        header: &BlockHeader,
        certificate: &CommitCertificate,
        validators: &ValidatorSet,
        next_validators: Option<&ValidatorSet>,
        now_ms: u64,
    ) -> Result<Verified, LightError> {
        if let Some(evidence) = &self.misbehaviour {
            return Err(LightError::Frozen {
                height: evidence.header_b.height,
            });
        }
        let hash = header.hash();
        if let Some(trusted) = self.trusted.get(&header.height)
            && trusted.hash == hash
        {
            return Ok(Verified {
                height: header.height,
                hash,
                state_root: header.state_root,
                verification: Verification::AlreadyTrusted,
            });
        }
        // Cheap checks first, the signatures last.
        let validators_hash = validators.hash();
        let next_validators_hash = next_validators.map(ValidatorSet::hash);
        check_certified(
            &self.chain_id,
            header,
            &hash,
            certificate,
            &validators_hash,
            next_validators_hash.as_ref(),
        )?;
        let position = self.position(header)?;
        let base = match &position {
            Position::Newer { from } | Position::Between { from, .. } => from,
            Position::Fork { trusted } => trusted,
        };
        let expires_at_ms = base.expires_at_ms(&self.params);
        if now_ms >= expires_at_ms {
            return Err(LightError::Expired {
                height: base.height(),
                expired_at_ms: expires_at_ms,
                now_ms,
            });
        }
        let latest_allowed_ms = now_ms.saturating_add(self.params.max_clock_drift_ms);
        if header.timestamp_ms > latest_allowed_ms {
            return Err(LightError::FromTheFuture {
                height: header.height,
                timestamp_ms: header.timestamp_ms,
                latest_allowed_ms,
            });
        }
        // Which stake vouches for the header's set.
        let (verification, vouching) = match &position {
            Position::Newer { from } | Position::Between { from, .. } => {
                if header.timestamp_ms <= from.timestamp_ms() {
                    return Err(LightError::NonMonotoneTime {
                        height: header.height,
                        timestamp_ms: header.timestamp_ms,
                        trusted_height: from.height(),
                        trusted_timestamp_ms: from.timestamp_ms(),
                    });
                }
                if header.height == from.height() + 1 {
                    if header.validators_hash != from.header.next_validators_hash {
                        return Err(LightError::NotTheNextSet {
                            height: header.height,
                            named: header.validators_hash,
                            expected: from.header.next_validators_hash,
                        });
                    }
                    (
                        Verification::Adjacent {
                            from: from.height(),
                        },
                        None,
                    )
                } else {
                    let next = from
                        .next_validators()
                        .ok_or(LightError::NextValidatorsUnknown {
                            height: from.height(),
                            next_validators_hash: from.header.next_validators_hash,
                        })?;
                    (
                        Verification::Skipping {
                            from: from.height(),
                        },
                        Some((from.height(), next)),
                    )
                }
            }
            // The set that certified the trusted header vouches for (or
            // against) the other header at its height.
            Position::Fork { trusted } => (
                Verification::Skipping {
                    from: trusted.height(),
                },
                Some((trusted.height(), trusted.validators())),
            ),
        };
        certificate
            .verify(&self.chain_id, validators)
            .map_err(LightError::Certificate)?;
        if let Some((trusted_height, trusted_set)) = vouching {
            let signed_stake = trusted_stake_signed(trusted_set, certificate, validators);
            if !trusted_set.is_one_third(signed_stake) {
                return Err(LightError::NotEnoughTrust {
                    trusted_height,
                    signed_stake,
                    trusted_stake: trusted_set.total_stake(),
                });
            }
        }
        // Certified by validators the client trusts: now look for
        // contradictions with the trusted headers around it.
        let contradicted = match &position {
            Position::Fork { trusted } => Some(*trusted),
            Position::Newer { from } => conflict_between(&from.header, header)
                .is_some()
                .then_some(*from),
            Position::Between { from, above } => [*from, *above]
                .into_iter()
                .find(|trusted| conflict_between(&trusted.header, header).is_some()),
        };
        if let Some(trusted) = contradicted {
            let evidence = Misbehaviour {
                header_a: trusted.header.clone(),
                certificate_a: trusted.certificate.clone(),
                header_b: header.clone(),
                certificate_b: certificate.clone(),
            };
            debug_assert!(evidence.conflict().is_some());
            tracing::warn!(
                height = header.height,
                trusted_height = trusted.height(),
                "light client frozen: two certified headers conflict"
            );
            self.misbehaviour = Some(evidence);
            return Err(LightError::Frozen {
                height: header.height,
            });
        }
        // Newer headers and consistent ones between two trusted heights
        // (verified from the lower one like any skip, and contradicting
        // neither) are taken in: a light node fetches the headers it needs
        // as it needs them, not in height order.
        if let Position::Fork { .. } = position {
            debug_assert!(false, "a fork at a trusted height is always contradicted");
            return Err(LightError::NotNewer {
                height: header.height,
                latest: self.latest_height(),
            });
        }
        let newest = header.height > self.latest_height();
        let validators = self.share(&validators_hash, validators);
        let next_validators = match (next_validators, next_validators_hash) {
            (Some(next), Some(next_hash)) => Some(self.share(&next_hash, next)),
            _ => (header.next_validators_hash == validators_hash).then(|| validators.clone()),
        };
        self.trusted.insert(
            header.height,
            TrustedHeader {
                header: header.clone(),
                hash,
                certificate: certificate.clone(),
                validators,
                next_validators,
            },
        );
        while self.trusted.len() > TRUSTED_HEADERS_MAX {
            self.trusted.pop_first();
        }
        debug_assert!(
            !newest || self.latest_height() == header.height,
            "the latest is kept"
        );
        debug_assert!(self.is_ordered(), "heights and times increase together");
        Ok(Verified {
            height: header.height,
            hash,
            state_root: header.state_root,
            verification,
        })
    }

    fn latest_height(&self) -> Height {
        self.trusted.keys().next_back().copied().unwrap_or(0)
    }

    fn position(&self, header: &BlockHeader) -> Result<Position<'_>, LightError> {
        let height = header.height;
        let not_newer = || LightError::NotNewer {
            height,
            latest: self.latest_height(),
        };
        if let Some(trusted) = self.trusted.get(&height) {
            return Ok(Position::Fork { trusted });
        }
        let from = self
            .trusted
            .range(..height)
            .next_back()
            .map(|(_, trusted)| trusted);
        let above = self
            .trusted
            .range(height..)
            .next()
            .map(|(_, trusted)| trusted);
        match (from, above) {
            (Some(from), None) => Ok(Position::Newer { from }),
            (Some(from), Some(above)) => Ok(Position::Between { from, above }),
            // Below every kept header: nothing to verify it from.
            (None, _) => Err(not_newer()),
        }
    }

    /// `set` as an `Arc`, shared with a trusted header naming the same set
    /// (so memory grows with distinct sets, not with headers).
    fn share(&self, hash: &Hash, set: &ValidatorSet) -> Arc<ValidatorSet> {
        self.trusted
            .values()
            .flat_map(|trusted| {
                [
                    (trusted.header.validators_hash, Some(&trusted.validators)),
                    (
                        trusted.header.next_validators_hash,
                        trusted.next_validators.as_ref(),
                    ),
                ]
            })
            .find_map(|(named, kept)| kept.filter(|_| named == *hash).cloned())
            .unwrap_or_else(|| Arc::new(set.clone()))
    }

    fn is_ordered(&self) -> bool {
        let headers: Vec<&TrustedHeader> = self.trusted.values().collect();
        !headers.is_empty()
            && headers.len() <= TRUSTED_HEADERS_MAX
            && headers.windows(2).all(|pair| {
                pair[0].height() < pair[1].height()
                    && pair[0].timestamp_ms() < pair[1].timestamp_ms()
            })
    }
}

/// The stateless checks that say `certificate` is for `header` and that
/// the given sets are the ones `header` names; the signatures are checked
/// after.
fn check_certified(
    chain_id: &Hash,
    header: &BlockHeader,
    hash: &Hash,
    certificate: &CommitCertificate,
    validators_hash: &Hash,
    next_validators_hash: Option<&Hash>,
) -> Result<(), LightError> {
    if header.chain_id != *chain_id {
        return Err(LightError::WrongChain {
            expected: *chain_id,
            got: header.chain_id,
        });
    }
    if header.version != BLOCK_VERSION {
        return Err(LightError::Version {
            version: header.version,
        });
    }
    if certificate.height != header.height || certificate.block_hash != *hash {
        return Err(LightError::CertificateMismatch {
            height: header.height,
            hash: *hash,
            certificate_height: certificate.height,
            certificate_hash: certificate.block_hash,
        });
    }
    if header.validators_hash != *validators_hash {
        return Err(LightError::WrongValidatorSet {
            field: "validators_hash",
            named: header.validators_hash,
            given: *validators_hash,
        });
    }
    if let Some(next_hash) = next_validators_hash
        && header.next_validators_hash != *next_hash
    {
        return Err(LightError::WrongValidatorSet {
            field: "next_validators_hash",
            named: header.next_validators_hash,
            given: *next_hash,
        });
    }
    Ok(())
}

/// Stake of `trusted` held by the certificate's signers: a signer counts
/// when the trusted set has a validator with its id and the same key.
/// The certificate's signatures were checked against `validators`.
fn trusted_stake_signed(
    trusted: &ValidatorSet,
    certificate: &CommitCertificate,
    validators: &ValidatorSet,
) -> u64 {
    certificate
        .signatures
        .iter()
        .filter_map(|(index, _)| validators.get(*index))
        .filter_map(|signer| {
            trusted
                .index_of(&signer.id)
                .and_then(|index| trusted.get(index))
                .filter(|member| member.key == signer.key)
        })
        .map(|member| member.stake)
        .sum()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LightError {
    #[error(
        "the light client is frozen: two certified headers conflict at height {height}; send its misbehaviour evidence to full nodes and re-initialise it from a trust root checked out of band"
    )]
    Frozen { height: Height },
    #[error(
        "the trusted header at height {height} left its trusting period at {expired_at_ms} ms (now {now_ms} ms) and can no longer vouch for headers; re-initialise the light client from a fresh trust root obtained out of band"
    )]
    Expired {
        height: Height,
        expired_at_ms: u64,
        now_ms: u64,
    },
    #[error(
        "the header belongs to chain {got}, not {expected}; ask a full node of the right chain"
    )]
    WrongChain { expected: Hash, got: Hash },
    #[error(
        "header version {version} is not supported (this build speaks {BLOCK_VERSION}); upgrade the light client"
    )]
    Version { version: u16 },
    #[error(
        "the certificate is for block {certificate_hash} at height {certificate_height}, not this header ({hash} at height {height}); fetch the certificate for this header"
    )]
    CertificateMismatch {
        height: Height,
        hash: Hash,
        certificate_height: Height,
        certificate_hash: Hash,
    },
    #[error(
        "the header's {field} is {named}, but the validator set given for it hashes to {given}; fetch the set the header names"
    )]
    WrongValidatorSet {
        field: &'static str,
        named: Hash,
        given: Hash,
    },
    #[error(
        "the certificate does not verify ({0}); the header is not certified: fetch it from another full node"
    )]
    Certificate(BlockError),
    #[error(
        "header {height} names validator set {named}, but the trusted header below it named {expected} as the next set; it is not the trusted chain's next block"
    )]
    NotTheNextSet {
        height: Height,
        named: Hash,
        expected: Hash,
    },
    #[error(
        "skipping from trusted height {height} needs the next validator set it names ({next_validators_hash}); verify the header at {height} again with its next validators, or verify the next header"
    )]
    NextValidatorsUnknown {
        height: Height,
        next_validators_hash: Hash,
    },
    #[error(
        "the certificate's signers hold {signed_stake} of the {trusted_stake} stake trusted at height {trusted_height}, not more than a third; verify a header in between first (bisect)"
    )]
    NotEnoughTrust {
        trusted_height: Height,
        signed_stake: u64,
        trusted_stake: u64,
    },
    #[error(
        "header {height}'s time ({timestamp_ms} ms) is not after trusted header {trusted_height}'s ({trusted_timestamp_ms} ms); it does not extend the trusted chain"
    )]
    NonMonotoneTime {
        height: Height,
        timestamp_ms: u64,
        trusted_height: Height,
        trusted_timestamp_ms: u64,
    },
    #[error(
        "header {height}'s time ({timestamp_ms} ms) is beyond now plus the allowed clock drift ({latest_allowed_ms} ms); check the local clock, or try again later"
    )]
    FromTheFuture {
        height: Height,
        timestamp_ms: u64,
        latest_allowed_ms: u64,
    },
    #[error(
        "height {height} is below every header this client keeps (the latest is {latest}), so nothing can vouch for it; start a client from a trust root at or below it"
    )]
    NotNewer { height: Height, latest: Height },
    #[error("the trust root is not self-consistent ({0}); obtain a trust root again out of band")]
    Root(Box<LightError>),
    #[error("invalid trust parameters: {0}")]
    BadParams(&'static str),
    #[error("the two headers do not conflict (they can be on one chain); this is not misbehaviour")]
    NoConflict,
    #[error(
        "no trusted header at height {height} (the latest trusted is {latest}); verify that height's header before its state, or ask for the state at a trusted height"
    )]
    NotTrusted { height: Height, latest: Height },
    #[error("the full node's answer about the state at height {height} is not proven: {error}")]
    Proof { height: Height, error: ProofError },
    #[error("misbehaviour evidence does not decode: {0}")]
    Wire(#[from] WireError),
}

#[cfg(test)]
#[path = "light_tests.rs"]
mod tests;

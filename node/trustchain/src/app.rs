//! `TrustApp`: TrustChain's transactions as an [`Application`] of the chain,
//! and the queries hm-node serves from its committed state.
//!
//! **Execution** runs a block's transactions in order on an overlay of the
//! committed state: reads see the committed entries and the block's earlier
//! writes, writes go to the overlay, and log appends go to a copy of the
//! log's right edge (≤ 64 hashes). Nothing committed is mutated or cloned;
//! the write set, the state root (only the written paths re-hashed; the crate
//! README has the scheme) and the log head come out. A transaction that breaks a
//! rule changes nothing: every rule checks everything before it writes.
//!
//! **Commit** applies a write set — the only way the state changes, so
//! crash recovery (replaying write sets) rebuilds exactly the same state,
//! root and log.

use std::collections::BTreeMap;

use hm_kernel::app::{Application, BlockContext, CommitError, CommitHint, Execution, TxError};
use hm_kernel::block::{Height, StateUpdate, Transaction};
use hm_kernel::validators::ValidatorSet;
use hm_wire::{Hash, merkle};

use crate::cert::{Authorities, Certificate, Issuer, SignedRequest};
use crate::dns::{DnsRecord, NAMES_PER_OWNER_MAX, NameLookup, SignedNameClaim};
use crate::error::RuleError;
use crate::keys::{self, CertRecord, Revoked, SubjectRevocation};
use crate::log::{CertificateLog, ConsistencyProof, Frontier, InclusionProof, LogHead};
use crate::name::DnsName;
use crate::tx::{Finding, FindingKind, Report, SignedRevocation, TrustTx, UNLOGGED_GRACE_MS};
use hm_kernel::store::{PreparedWrites, Store, merge_scan, prefix_bounds};

/// Most certificates one subject may ever have logged. Every logged
/// certificate stays in the state (the log is append-only), so one key must
/// not grow it without bound, and per-subject scans (current certificate,
/// certified validators) stay bounded. At one renewal a week this is about
/// five years; a subject that needs more uses a new key.
pub const CERTIFICATES_PER_SUBJECT_MAX: u64 = 256;

/// Most state writes one transaction makes (a report: the finding, its
/// key, the authority's revocation and the certificate's or subject's
/// revocation; a certificate: entry, record, subject index, request).
/// Every transaction that writes carries a FALCON signature; the smallest
/// (a false-tree-head report) is ≈ 1.4 KB, so a full block
/// (`BLOCK_TRANSACTION_BYTES_MAX`) writes at most ≈ 12,300 keys, inside
/// `STATE_UPDATES_PER_BLOCK_MAX` (tested).
pub const WRITES_PER_TX_MAX: usize = 4;

/// What TrustApp is built with; the same on every node (from genesis).
#[derive(Debug, Clone, PartialEq)]
pub struct TrustConfig {
    /// Every certified or registered name must be under this zone.
    pub zone: DnsName,
    /// The certificate authorities (the genesis validators).
    pub authorities: Authorities,
    /// Chain id and validator set, to verify equivocation evidence.
    pub chain_id: Hash,
    pub validators: ValidatorSet,
}

/// Where a logged certificate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertStatus {
    pub log_index: u64,
    /// Revoked by its subject, by a finding against it, or because its
    /// subject equivocated.
    pub revoked: bool,
    /// Issued by an authority that has since been revoked.
    pub issuer_revoked: bool,
}

impl CertStatus {
    /// Neither the certificate nor its issuer is revoked.
    pub fn is_usable(&self) -> bool {
        !self.revoked && !self.issuer_revoked
    }
}

/// TrustChain's state machine.
#[derive(Debug)]
pub struct TrustApp {
    config: TrustConfig,
    store: Store,
    log: CertificateLog,
    height: Height,
}

impl TrustApp {
    pub fn new(config: TrustConfig) -> TrustApp {
        TrustApp {
            config,
            store: Store::new(),
            log: CertificateLog::new(),
            height: 0,
        }
    }

    pub fn config(&self) -> &TrustConfig {
        &self.config
    }

    pub fn authorities(&self) -> &Authorities {
        &self.config.authorities
    }

    pub fn zone(&self) -> &DnsName {
        &self.config.zone
    }

    /// The committed certificate log.
    pub fn log(&self) -> &CertificateLog {
        &self.log
    }

    /// Number of committed state entries.
    pub fn state_len(&self) -> usize {
        self.store.len()
    }

    /// The committed value of a raw state key (or `None`) with its proof
    /// against the committed state root: what a full node sends a light
    /// client, which checks it with [`hm_kernel::state::StateProof::verify`]
    /// against the root of a header it trusts.
    pub fn prove(&self, key: &[u8]) -> (Option<Vec<u8>>, hm_kernel::state::StateProof) {
        (
            self.store.get(key).map(<[u8]>::to_vec),
            self.store.prove(key),
        )
    }

    fn view(&self) -> State<'_> {
        State::new(self)
    }

    /// A logged certificate and its status.
    pub fn certificate(&self, fingerprint: &Hash) -> Option<(Certificate, CertStatus)> {
        let view = self.view();
        let record = view.cert_record(fingerprint)?;
        let certificate = view.logged_certificate(record.log_index)?;
        Some((certificate, view.status(&record)))
    }

    /// The subject's most recently logged certificate that is usable and
    /// current at `now_ms`.
    pub fn current_certificate(
        &self,
        subject: &Hash,
        now_ms: u64,
    ) -> Option<(Certificate, CertStatus)> {
        let view = self.view();
        let (record, status) = view.current_record(subject, now_ms, |_| true)?;
        Some((view.logged_certificate(record.log_index)?, status))
    }

    /// Inclusion proof of a logged certificate at the current head.
    pub fn inclusion_proof(&self, fingerprint: &Hash) -> Option<InclusionProof> {
        let record = self.view().cert_record(fingerprint)?;
        self.log
            .inclusion_proof(record.log_index, self.log.len())
            .ok()
    }

    /// Inclusion proof of a logged certificate in the log of `tree_size`
    /// entries (a head a certified header named), or why there is none.
    pub fn inclusion_proof_at(
        &self,
        fingerprint: &Hash,
        tree_size: u64,
    ) -> Result<InclusionProof, String> {
        let record = self
            .view()
            .cert_record(fingerprint)
            .ok_or_else(|| format!("certificate {fingerprint} is not in this node's log"))?;
        if record.log_index >= tree_size {
            return Err(format!(
                "certificate {fingerprint} was logged at index {}, after the log had {tree_size} entries",
                record.log_index
            ));
        }
        self.log
            .inclusion_proof(record.log_index, tree_size)
            .map_err(|error| error.to_string())
    }

    /// Consistency proof from the log at `old_size` to the current head.
    pub fn consistency_proof(&self, old_size: u64) -> Option<ConsistencyProof> {
        self.log.consistency_proof(old_size, self.log.len()).ok()
    }

    /// The committed record of `name`.
    /// The raw state key of a name's DNS record: what a light client asks
    /// a full node to prove ([`TrustApp::prove`]).
    pub fn record_key(name: &DnsName) -> Vec<u8> {
        keys::name(name)
    }

    pub fn record(&self, name: &DnsName) -> Option<DnsRecord> {
        self.view().dns_record(name)
    }

    pub fn is_authority_revoked(&self, id: &Hash) -> bool {
        self.view().authority_revocation(id).is_some()
    }

    /// Whether the certificate is revoked: a logged one by its subject, a
    /// finding or its subject's equivocation; an unlogged one by being on
    /// the revocation list (forged or unlogged, by a finding).
    pub fn is_revoked(&self, fingerprint: &Hash) -> bool {
        let view = self.view();
        match view.cert_record(fingerprint) {
            Some(record) => view.status(&record).revoked,
            None => view.blocklisted(fingerprint).is_some(),
        }
    }

    /// The findings against `offender`, one per kind at most.
    pub fn findings_against(&self, offender: &Hash) -> Vec<Finding> {
        let view = self.view();
        view.scan(
            &keys::finding_key_prefix(offender),
            false,
            FindingKind::ALL.len(),
        )
        .into_iter()
        .filter_map(|(_, n)| view.finding(keys::parse_u64(&n)?))
        .collect()
    }

    /// Whether a finding of `kind` against `offender` is on record.
    pub fn has_finding(&self, offender: &Hash, kind: FindingKind) -> bool {
        self.view().finding_exists(offender, kind)
    }

    /// Number of findings on record.
    pub fn findings(&self) -> u64 {
        self.view().finding_count()
    }

    /// Validators holding a usable, current, chain-issued certificate.
    pub fn certified_validators(&self, now_ms: u64) -> Vec<Hash> {
        let view = self.view();
        self.config
            .validators
            .iter()
            .map(|(_, validator)| validator.id)
            .filter(|id| {
                view.current_record(id, now_ms, |record| {
                    matches!(record.issuer, Issuer::Chain { .. })
                })
                .is_some()
            })
            .collect()
    }

    /// Whether `certificate` (authority-issued, signature already checked)
    /// binds a name another subject owned for longer than the grace before
    /// its `not_before`: proof the authority certified a name to the wrong
    /// subject.
    pub fn stolen_name(&self, certificate: &Certificate) -> Option<DnsName> {
        self.view().stolen_name(certificate)
    }

    /// Checks everything an `UnloggedCertificate` report needs against the
    /// committed state at `now_ms`; `Ok` means the report would be accepted.
    pub fn check_unlogged(
        &self,
        certificate: &Certificate,
        now_ms: u64,
    ) -> Result<Hash, RuleError> {
        self.view().unlogged_offender(certificate, now_ms)
    }
}

impl NameLookup for TrustApp {
    fn lookup(&self, name: &DnsName) -> Option<DnsRecord> {
        self.record(name)
    }
}

/// Every certified or registered name must be under the chain's zone;
/// checked before execution (`check_tx`) and again by the rules.
fn check_zone(name: &DnsName, zone: &DnsName) -> Result<(), RuleError> {
    if name.is_under(zone) {
        Ok(())
    } else {
        Err(RuleError::NotInZone {
            name: name.clone(),
            zone: zone.clone(),
        })
    }
}

/// What executing a block worked out that committing it reuses (the
/// [`CommitHint`] of TrustApp's executions): a simulator's thousand nodes
/// commit each block from one shared execution, so the entry hashes, log
/// leaf hashes and interned values are computed once, not once per node.
#[derive(Debug)]
struct PreparedCommit {
    store: PreparedWrites,
    /// The log's size before the block, and the leaf hashes it appends.
    log_size: u64,
    log_leaves: Vec<Hash>,
}

impl TrustApp {
    /// Commits `updates`, reusing `hint` when it was made by executing them
    /// on the state committed now (otherwise hashing everything again).
    ///
    /// # Panics
    ///
    /// If the write set rewrites or skips log entries. Committed write sets
    /// are what execution produced (agreed by consensus, or replayed from
    /// our own disk), and execution only appends; anything else is a bug or
    /// corrupted storage, and going on would fork the log.
    pub fn commit_with_hint(
        &mut self,
        height: Height,
        updates: &[StateUpdate],
        hint: &CommitHint,
    ) -> Result<(), CommitError> {
        if height != self.height + 1 {
            return Err(CommitError::OutOfOrder {
                committed: self.height,
                got: height,
            });
        }
        let mut appended: Vec<&[u8]> = Vec::new();
        for update in updates
            .iter()
            .filter(|update| update.key.starts_with(keys::LOG))
        {
            let expected = self.log.len() + appended.len() as u64;
            let index = keys::log_index(&update.key);
            match (&update.value, index) {
                (Some(value), Some(index)) if index == expected => appended.push(value),
                _ => panic!(
                    "commit of height {height}: log write {index:?} (value present: {}) is not the append of entry {expected}; the log is append-only",
                    update.value.is_some()
                ),
            }
        }
        let prepared = hint.get::<PreparedCommit>().filter(|prepared| {
            prepared.log_size == self.log.len() && prepared.log_leaves.len() == appended.len()
        });
        let leaves = match prepared {
            Some(prepared) if self.store.apply_prepared(updates, &prepared.store) => {
                prepared.log_leaves.clone()
            }
            _ => {
                self.store.apply(updates);
                appended.into_iter().map(merkle::leaf_hash).collect()
            }
        };
        for leaf in leaves {
            if let Err(error) = self.log.append_leaf_hash(leaf) {
                panic!(
                    "commit of height {height}: {error}; execution checks room before appending"
                );
            }
        }
        self.height = height;
        Ok(())
    }
}

impl Application for TrustApp {
    /// Decoding, limits and names under the zone; signatures and state
    /// rules are checked at execution (verifying here would cost every node
    /// a signature check per gossiped transaction, twice).
    fn check_tx(&self, tx: &Transaction) -> Result<(), TxError> {
        let decoded = TrustTx::from_transaction(tx)?;
        let zone = &self.config.zone;
        let names: &[DnsName] = match &decoded {
            TrustTx::LogCertificate(certificate) => certificate.dns_names(),
            TrustTx::IssueCertificate(request) => &request.request.dns_names,
            TrustTx::RegisterName(claim) => std::slice::from_ref(&claim.claim.name),
            TrustTx::Revoke(_) | TrustTx::Report(_) => &[],
        };
        names
            .iter()
            .try_for_each(|name| check_zone(name, zone))
            .map_err(|error| TxError::Rejected(error.to_string()))
    }

    fn execute_block(&self, block: BlockContext, transactions: &[Transaction]) -> Execution {
        let mut state = State::new(self);
        let results = transactions
            .iter()
            .map(|tx| {
                let decoded = TrustTx::from_transaction(tx)?;
                // The kernel's generic boundary records the reason as text.
                state
                    .execute(block, &decoded)
                    .map_err(|error| TxError::Rejected(error.to_string()))
            })
            .collect();
        let store = self.store.prepare(&state.writes);
        let log_head = state.log_head();
        let state_root = store.root;
        let prepared = PreparedCommit {
            store,
            log_size: self.log.len(),
            log_leaves: std::mem::take(&mut state.pending_leaves),
        };
        let updates: Vec<StateUpdate> = state
            .writes
            .into_iter()
            .map(|(key, value)| StateUpdate { key, value })
            .collect();
        debug_assert!(updates.len() <= hm_kernel::block::STATE_UPDATES_PER_BLOCK_MAX);
        Execution {
            updates,
            state_root,
            log_head,
            results,
            hint: CommitHint::new(prepared),
        }
    }

    fn commit_execution(
        &mut self,
        height: Height,
        execution: &Execution,
    ) -> Result<(), CommitError> {
        self.commit_with_hint(height, &execution.updates, &execution.hint)
    }

    /// # Panics
    ///
    /// As [`TrustApp::commit_with_hint`].
    fn commit(&mut self, height: Height, updates: &[StateUpdate]) -> Result<(), CommitError> {
        self.commit_with_hint(height, updates, &CommitHint::default())
    }

    fn state_root(&self) -> Hash {
        self.store.root()
    }

    fn log_head(&self) -> LogHead {
        self.log.head()
    }

    fn committed_height(&self) -> Height {
        self.height
    }
}

/// The committed state with a block's pending writes on top.
struct State<'a> {
    app: &'a TrustApp,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The log's right edge with the pending appends; `None` until the
    /// first append (queries never copy it).
    log: Option<Frontier>,
    /// Root after each pending append: `pending_roots[i]` is the root at
    /// size `committed + i + 1`.
    pending_roots: Vec<Hash>,
    /// Leaf hash of each pending append, in order.
    pending_leaves: Vec<Hash>,
    /// Writes by the transaction being executed.
    tx_writes: usize,
}

impl<'a> State<'a> {
    fn new(app: &'a TrustApp) -> State<'a> {
        State {
            app,
            writes: BTreeMap::new(),
            log: None,
            pending_roots: Vec::new(),
            pending_leaves: Vec::new(),
            tx_writes: 0,
        }
    }

    // ------------------------------------------------------------ reading

    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        match self.writes.get(key) {
            Some(value) => value.as_deref(),
            None => self.app.store.get(key),
        }
    }

    fn record<T: serde::Serialize + serde::de::DeserializeOwned>(&self, key: &[u8]) -> Option<T> {
        keys::decode_record(self.get(key)?).ok()
    }

    /// Up to `limit` live entries under `prefix`, ascending or descending.
    fn scan(&self, prefix: &[u8], reverse: bool, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let base = self.app.store.prefix_range(prefix);
        let over = self.writes.range::<Vec<u8>, _>(prefix_bounds(prefix));
        if reverse {
            merge_scan(base.rev(), over.rev(), true, limit)
        } else {
            merge_scan(base, over, false, limit)
        }
    }

    fn log_size(&self) -> u64 {
        match &self.log {
            Some(frontier) => frontier.size(),
            None => self.app.log.len(),
        }
    }

    fn log_head(&self) -> LogHead {
        match &self.log {
            Some(frontier) => frontier.head(),
            None => self.app.log.head(),
        }
    }

    /// The log's root when it had `size` entries, pending appends included.
    fn log_root_at(&self, size: u64) -> Option<Hash> {
        let committed = self.app.log.len();
        if size <= committed {
            return self.app.log.head_at(size).ok().map(|head| head.root);
        }
        let offset = usize::try_from(size - committed - 1).ok()?;
        self.pending_roots.get(offset).copied()
    }

    fn logged_certificate(&self, index: u64) -> Option<Certificate> {
        Certificate::decode(self.get(&keys::log(index))?).ok()
    }

    fn cert_record(&self, fingerprint: &Hash) -> Option<CertRecord> {
        self.record(&keys::cert(fingerprint))
    }

    fn blocklisted(&self, fingerprint: &Hash) -> Option<Revoked> {
        self.record(&keys::revoked(fingerprint))
    }

    fn authority_revocation(&self, id: &Hash) -> Option<Revoked> {
        self.record(&keys::revoked_authority(id))
    }

    fn subject_revocation(&self, subject: &Hash) -> Option<SubjectRevocation> {
        self.record(&keys::revoked_subject(subject))
    }

    fn status(&self, record: &CertRecord) -> CertStatus {
        let cut = self
            .subject_revocation(&record.subject)
            .is_some_and(|revocation| record.log_index < revocation.log_size);
        let issuer_revoked = match record.issuer {
            Issuer::Authority(id) => self.authority_revocation(&id).is_some(),
            Issuer::Chain { .. } => false,
        };
        CertStatus {
            log_index: record.log_index,
            revoked: record.revoked || cut,
            issuer_revoked,
        }
    }

    /// The newest record of `subject` that is usable, current at `now_ms`
    /// and passes `filter`.
    fn current_record(
        &self,
        subject: &Hash,
        now_ms: u64,
        filter: impl Fn(&CertRecord) -> bool,
    ) -> Option<(CertRecord, CertStatus)> {
        self.scan(
            &keys::subject_prefix(subject),
            true,
            CERTIFICATES_PER_SUBJECT_MAX as usize,
        )
        .into_iter()
        .filter_map(|(_, fingerprint)| self.cert_record(&Hash::from_slice(&fingerprint).ok()?))
        .filter(|record| record.is_current(now_ms) && filter(record))
        .map(|record| {
            let status = self.status(&record);
            (record, status)
        })
        .find(|(_, status)| status.is_usable())
    }

    fn subject_cert_count(&self, subject: &Hash) -> u64 {
        self.scan(&keys::subject_prefix(subject), true, 1)
            .first()
            .and_then(|(key, _)| keys::subject_n(key))
            .map_or(0, |n| n + 1)
    }

    fn dns_record(&self, name: &DnsName) -> Option<DnsRecord> {
        DnsRecord::decode(self.get(&keys::name(name))?).ok()
    }

    fn owner_name_count(&self, owner: &Hash) -> usize {
        self.scan(&keys::owner_prefix(owner), false, NAMES_PER_OWNER_MAX + 1)
            .len()
    }

    fn finding(&self, n: u64) -> Option<Finding> {
        Finding::decode(self.get(&keys::finding(n))?).ok()
    }

    fn finding_count(&self) -> u64 {
        self.scan(keys::FINDING, true, 1)
            .first()
            .and_then(|(key, _)| keys::finding_n(key))
            .map_or(0, |n| n + 1)
    }

    fn finding_exists(&self, offender: &Hash, kind: FindingKind) -> bool {
        self.get(&keys::finding_key(offender, kind)).is_some()
    }

    /// Every name is under the zone and unowned or owned by `subject`.
    fn check_names(&self, subject: &Hash, names: &[DnsName]) -> Result<(), RuleError> {
        for name in names {
            check_zone(name, &self.app.config.zone)?;
            if let Some(record) = self.dns_record(name)
                && record.owner != *subject
            {
                return Err(RuleError::NameOwnedByOther {
                    name: name.clone(),
                    owner: record.owner,
                    subject: *subject,
                });
            }
        }
        Ok(())
    }

    /// A name of `certificate` that another subject owned since more than
    /// [`UNLOGGED_GRACE_MS`] before the certificate's `not_before` (so an
    /// authority with a slightly stale view is not blamed for a race).
    fn stolen_name(&self, certificate: &Certificate) -> Option<DnsName> {
        let subject = certificate.subject();
        certificate
            .dns_names()
            .iter()
            .find(|name| {
                self.dns_record(name).is_some_and(|record| {
                    record.owner != subject
                        && record.registered_ms.saturating_add(UNLOGGED_GRACE_MS)
                            < certificate.not_before_ms
                })
            })
            .cloned()
    }

    // ------------------------------------------------------------ writing

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.tx_writes += 1;
        self.writes.insert(key, Some(value));
    }

    fn has_log_room(&self) -> bool {
        self.log_size() < merkle::MERKLE_LOG_LEAVES_MAX
    }

    /// Appends a certificate to the log with its record and indexes.
    /// Callers have checked room, duplicates and the subject's count.
    fn append(&mut self, certificate: &Certificate) {
        let encoded = certificate.encode();
        let fingerprint = merkle::leaf_hash(&encoded);
        let subject = certificate.subject();
        let n = self.subject_cert_count(&subject);
        let app = self.app;
        let frontier = self.log.get_or_insert_with(|| app.log.frontier().clone());
        let index = frontier.size();
        frontier.push(fingerprint);
        let root = frontier.root();
        self.pending_roots.push(root);
        self.pending_leaves.push(fingerprint);
        let record = CertRecord {
            log_index: index,
            subject,
            issuer: certificate.issuer,
            not_before_ms: certificate.not_before_ms,
            not_after_ms: certificate.not_after_ms,
            revoked: false,
        };
        self.put(keys::log(index), encoded);
        self.put(keys::cert(&fingerprint), keys::encode_record(&record));
        self.put(keys::subject(&subject, n), fingerprint.0.to_vec());
        self.put(
            keys::request(&certificate.request.id()),
            keys::u64_value(index),
        );
    }

    // ------------------------------------------------------------ rules

    fn execute(&mut self, block: BlockContext, tx: &TrustTx) -> Result<(), RuleError> {
        self.tx_writes = 0;
        let result = self.execute_rules(block, tx);
        assert!(
            self.tx_writes <= WRITES_PER_TX_MAX,
            "a transaction wrote {} keys, more than WRITES_PER_TX_MAX",
            self.tx_writes
        );
        debug_assert!(
            result.is_ok() || self.tx_writes == 0,
            "a rejected transaction wrote"
        );
        result
    }

    fn execute_rules(&mut self, block: BlockContext, tx: &TrustTx) -> Result<(), RuleError> {
        match tx {
            TrustTx::LogCertificate(certificate) => self.log_certificate(block, certificate),
            TrustTx::IssueCertificate(request) => self.issue_certificate(block, request),
            TrustTx::Revoke(revocation) => self.revoke(revocation),
            TrustTx::RegisterName(claim) => self.register_name(block, claim),
            TrustTx::Report(report) => self.report(block, report),
        }
    }

    /// Checks shared by both ways into the log: names, duplicates, the
    /// subject's count and room.
    fn check_loggable(&self, certificate: &Certificate) -> Result<(), RuleError> {
        let subject = certificate.subject();
        self.check_names(&subject, certificate.dns_names())?;
        let fingerprint = certificate.fingerprint();
        if let Some(record) = self.cert_record(&fingerprint) {
            return Err(RuleError::AlreadyLogged {
                fingerprint,
                log_index: record.log_index,
            });
        }
        if self.blocklisted(&fingerprint).is_some() {
            return Err(RuleError::Blocklisted { fingerprint });
        }
        let request_id = certificate.request.id();
        if let Some(log_index) = self
            .get(&keys::request(&request_id))
            .and_then(keys::parse_u64)
        {
            return Err(RuleError::RequestAlreadyCertified {
                request_id,
                log_index,
            });
        }
        let count = self.subject_cert_count(&subject);
        if count >= CERTIFICATES_PER_SUBJECT_MAX {
            return Err(RuleError::SubjectCertificatesFull {
                subject,
                count,
                max: CERTIFICATES_PER_SUBJECT_MAX,
            });
        }
        if !self.has_log_room() {
            return Err(RuleError::LogFull {
                size: self.log_size(),
            });
        }
        Ok(())
    }

    fn log_certificate(
        &mut self,
        block: BlockContext,
        certificate: &Certificate,
    ) -> Result<(), RuleError> {
        let Issuer::Authority(authority) = certificate.issuer else {
            return Err(RuleError::ChainIssuedLogged);
        };
        if let Some(revoked) = self.authority_revocation(&authority) {
            return Err(RuleError::AuthorityRevoked {
                authority,
                height: revoked.height,
            });
        }
        if certificate.not_after_ms <= block.timestamp_ms {
            return Err(RuleError::Expired {
                not_after_ms: certificate.not_after_ms,
                block_ms: block.timestamp_ms,
            });
        }
        self.check_loggable(certificate)?;
        certificate.verify_signatures(&self.app.config.authorities)?;
        self.append(certificate);
        Ok(())
    }

    fn issue_certificate(
        &mut self,
        block: BlockContext,
        request: &SignedRequest,
    ) -> Result<(), RuleError> {
        let certificate =
            Certificate::issue_by_chain(request.clone(), block.height, block.timestamp_ms);
        self.check_loggable(&certificate)?;
        request.verify()?;
        self.append(&certificate);
        Ok(())
    }

    fn revoke(&mut self, signed: &SignedRevocation) -> Result<(), RuleError> {
        let revocation = &signed.revocation;
        let fingerprint = revocation.certificate;
        let Some(mut record) = self.cert_record(&fingerprint) else {
            return Err(RuleError::NotLogged { fingerprint });
        };
        let signer = revocation.subject_key.fingerprint();
        if record.subject != signer {
            return Err(RuleError::NotRevokersCertificate {
                fingerprint,
                subject: record.subject,
                signer,
            });
        }
        if self.status(&record).revoked {
            return Err(RuleError::AlreadyRevoked { fingerprint });
        }
        signed
            .verify()
            .map_err(|source| RuleError::RevocationUnsigned {
                fingerprint,
                source,
            })?;
        record.revoked = true;
        self.put(keys::cert(&fingerprint), keys::encode_record(&record));
        Ok(())
    }

    fn register_name(
        &mut self,
        block: BlockContext,
        signed: &SignedNameClaim,
    ) -> Result<(), RuleError> {
        let claim = &signed.claim;
        let name = &claim.name;
        let owner = claim.owner();
        check_zone(name, &self.app.config.zone)?;
        let existing = self.dns_record(name);
        if let Some(record) = &existing {
            if record.owner != owner {
                return Err(RuleError::NameTaken {
                    name: name.clone(),
                    owner: record.owner,
                });
            }
            if claim.sequence <= record.sequence {
                return Err(RuleError::StaleSequence {
                    name: name.clone(),
                    sequence: record.sequence,
                    got: claim.sequence,
                });
            }
        } else if self.owner_name_count(&owner) >= NAMES_PER_OWNER_MAX {
            return Err(RuleError::OwnerNamesFull {
                owner,
                max: NAMES_PER_OWNER_MAX,
            });
        }
        let fingerprint = claim.certificate;
        let record = self
            .cert_record(&fingerprint)
            .ok_or(RuleError::NotLogged { fingerprint })?;
        if record.subject != owner {
            return Err(RuleError::NotOwnersCertificate {
                fingerprint,
                subject: record.subject,
                owner,
            });
        }
        if !self.status(&record).is_usable() {
            return Err(RuleError::CertificateUnusable { fingerprint });
        }
        if !record.is_current(block.timestamp_ms) {
            return Err(RuleError::CertificateNotCurrent {
                fingerprint,
                not_before_ms: record.not_before_ms,
                not_after_ms: record.not_after_ms,
                block_ms: block.timestamp_ms,
            });
        }
        signed.verify()?;
        let registered_ms = existing
            .as_ref()
            .map_or(block.timestamp_ms, |record| record.registered_ms);
        let updated = DnsRecord {
            name: name.clone(),
            owner,
            addrs: claim.addrs.clone(),
            certificate: fingerprint,
            sequence: claim.sequence,
            updated_height: block.height,
            registered_ms,
        };
        if existing.is_none() {
            self.put(keys::owner(&owner, name), name.as_str().as_bytes().to_vec());
        }
        self.put(keys::name(name), updated.encode());
        Ok(())
    }

    /// Everything an `UnloggedCertificate` report needs, at `now_ms`;
    /// returns the offending authority.
    fn unlogged_offender(&self, certificate: &Certificate, now_ms: u64) -> Result<Hash, RuleError> {
        let authority = certificate
            .authority()
            .ok_or(RuleError::ChainIssuedUnlogged)?;
        certificate
            .verify_signatures(&self.app.config.authorities)
            .map_err(|source| RuleError::NotAuthorityCertificate { source })?;
        let fingerprint = certificate.fingerprint();
        if let Some(record) = self.cert_record(&fingerprint) {
            return Err(RuleError::UnloggedIsLogged {
                fingerprint,
                log_index: record.log_index,
            });
        }
        if certificate.not_before_ms.saturating_add(UNLOGGED_GRACE_MS) >= now_ms {
            return Err(RuleError::WithinGrace {
                fingerprint,
                not_before_ms: certificate.not_before_ms,
                grace_ms: UNLOGGED_GRACE_MS,
                now_ms,
            });
        }
        // Reasons the certificate could not be logged that are not the
        // authority's doing (a subject racing its own request through the
        // chain, a third party registering a name first) excuse it; a name
        // owned long before issue is a forgery, reported as such.
        let request_id = certificate.request.id();
        if self.get(&keys::request(&request_id)).is_some() {
            return Err(RuleError::RequestCertifiedOtherwise { request_id });
        }
        self.check_names(&certificate.subject(), certificate.dns_names())
            .map_err(|reason| RuleError::Unloggable {
                source: Box::new(reason),
            })?;
        Ok(authority)
    }

    fn report(&mut self, block: BlockContext, report: &Report) -> Result<(), RuleError> {
        let kind = report.kind();
        let app = self.app;
        let authorities = &app.config.authorities;
        // The offender, named by the report; checked below.
        let offender = match report {
            Report::ForgedCertificate(certificate) | Report::UnloggedCertificate(certificate) => {
                certificate
                    .authority()
                    .ok_or(RuleError::NoAuthorityToBlame)?
            }
            Report::FalseTreeHead(head) => head.signer,
            Report::Equivocation(evidence) => {
                let index = evidence.validator();
                app.config
                    .validators
                    .get(index)
                    .ok_or(RuleError::UnknownValidator { index })?
                    .id
            }
        };
        if self.finding_exists(&offender, kind) {
            return Err(RuleError::DuplicateFinding { offender, kind });
        }
        let mut blocklist = None;
        match report {
            Report::ForgedCertificate(certificate) => {
                certificate
                    .verify_issuer_signature(authorities)
                    .map_err(|source| RuleError::IssuerSignatureInvalid { source })?;
                let forged_request = certificate.request.verify().is_err();
                if !forged_request && self.stolen_name(certificate).is_none() {
                    return Err(RuleError::NotForged);
                }
                blocklist = Some(certificate.fingerprint());
            }
            Report::UnloggedCertificate(certificate) => {
                self.unlogged_offender(certificate, block.timestamp_ms)?;
                blocklist = Some(certificate.fingerprint());
            }
            Report::FalseTreeHead(head) => {
                head.verify(authorities)?;
                let size = head.head.size;
                let Some(root) = self.log_root_at(size) else {
                    return Err(RuleError::HeadBeyondLog {
                        size,
                        log_size: self.log_size(),
                    });
                };
                if root == head.head.root {
                    return Err(RuleError::TrueHead { size });
                }
            }
            Report::Equivocation(evidence) => {
                evidence
                    .verify(&app.config.chain_id, &app.config.validators)
                    .map_err(|source| RuleError::EvidenceInvalid { source })?;
            }
        }
        let n = self.finding_count();
        let finding = Finding {
            offender,
            kind,
            height: block.height,
            report: report.id(),
        };
        let revoked = keys::encode_record(&Revoked {
            height: block.height,
            finding: n,
        });
        self.put(keys::finding(n), finding.encode());
        self.put(keys::finding_key(&offender, kind), keys::u64_value(n));
        if authorities.contains(&offender) && self.authority_revocation(&offender).is_none() {
            self.put(keys::revoked_authority(&offender), revoked.clone());
        }
        if let Some(fingerprint) = blocklist {
            match self.cert_record(&fingerprint) {
                Some(mut record) => {
                    record.revoked = true;
                    self.put(keys::cert(&fingerprint), keys::encode_record(&record));
                }
                None => self.put(keys::revoked(&fingerprint), revoked),
            }
        }
        if kind == FindingKind::Equivocation {
            let revocation = SubjectRevocation {
                height: block.height,
                log_size: self.log_size(),
                finding: n,
            };
            self.put(
                keys::revoked_subject(&offender),
                keys::encode_record(&revocation),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;

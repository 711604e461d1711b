//! Committed blocks on `hm_env::Disk`, and per-asset private chains.
//!
//! Public blocks are stored Brotli-compressed, keyed by big-endian height,
//! with the head record in [`CHAIN_META_CF`]. The stored form is
//! [`encode_stored`]: the header, body and proofs compressed, the commit
//! certificate — signatures, which do not compress — after them; the two
//! parts go to [`BLOCKS_CF`] and [`BLOCK_COMMITS_CF`], because each node
//! holds its own quorum of signatures for a block, while the compressed
//! part is the same everywhere (one shared copy for a simulator's thousand
//! nodes, `hm_env::intern`). A block and
//! the head that names it are written in one atomic batch and synced before
//! `append` returns, so after a crash the store holds exactly the blocks
//! whose `append` returned (plus possibly the one in flight, whole): never a
//! head without its block, never a block altered. Every read decompresses
//! under a cap and decodes canonically, so a corrupted disk is an error, not
//! a panic or a different block.
//!
//! Private chains hold an asset's history sealed (ML-KEM-1024 + AES-256-GCM)
//! to its owner; the public chain anchors only each private header's hash.

use hm_env::{Disk, DiskError, Entropy, WriteBatch};
use hm_wire::{Hash, KemPublicKey, KemSecretKey, WireError, hash, merkle};
use serde::{Deserialize, Serialize};

use crate::block::{BLOCK_BYTES_MAX, Block, BlockError, Height};

pub const BLOCKS_CF: &str = "blocks";
/// Each block's commit certificate (the uncompressed tail of its stored form).
pub const BLOCK_COMMITS_CF: &str = "block_commits";
pub const CHAIN_META_CF: &str = "chain_meta";
pub const PRIVATE_BLOCKS_CF: &str = "private_blocks";
/// Column families a node's disk must have for the chain.
pub const CHAIN_COLUMN_FAMILIES: &[&str] = &[
    BLOCKS_CF,
    BLOCK_COMMITS_CF,
    CHAIN_META_CF,
    PRIVATE_BLOCKS_CF,
];

const HEAD_KEY: &[u8] = b"head";
const CHAIN_ID_KEY: &[u8] = b"chain_id";
/// Prefix of a private chain's head record (then the asset id).
const PRIVATE_HEAD_PREFIX: &[u8] = b"private-head/";
/// Blocks returned by one range read (block sync pages through).
pub const BLOCK_RANGE_MAX: usize = 64;

/// What the head record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub height: Height,
    pub hash: Hash,
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("disk: {0}")]
    Disk(#[from] DiskError),
    #[error("stored data is corrupted: {what}: {source}")]
    Corrupted {
        what: String,
        #[source]
        source: WireError,
    },
    #[error("stored block at height {height} is corrupted: {reason}")]
    CorruptedBlock { height: Height, reason: String },
    #[error("block {got} does not extend the head {head}: {reason}")]
    DoesNotExtend {
        head: Height,
        got: Height,
        reason: &'static str,
    },
    #[error(
        "this data directory belongs to chain {stored}, not {expected}; use another directory or the right genesis"
    )]
    WrongChain { stored: Hash, expected: Hash },
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("sealing failed: {0}")]
    Seal(WireError),
}

fn height_key(height: Height) -> [u8; 8] {
    height.to_be_bytes()
}

/// The public chain's committed blocks.
#[derive(Debug)]
pub struct ChainStore<D: Disk> {
    disk: D,
    chain_id: Hash,
    head: Option<Head>,
}

impl<D: Disk> ChainStore<D> {
    /// Opens the store, binding an empty one to `chain_id` and refusing one
    /// that belongs to another chain. Reads and checks the head block.
    pub fn open(disk: D, chain_id: Hash) -> Result<ChainStore<D>, ChainError> {
        match disk.get(CHAIN_META_CF, CHAIN_ID_KEY)? {
            Some(stored) => {
                let stored = Hash::from_slice(&stored).map_err(|source| ChainError::Corrupted {
                    what: "chain id record".into(),
                    source,
                })?;
                if stored != chain_id {
                    return Err(ChainError::WrongChain {
                        stored,
                        expected: chain_id,
                    });
                }
            }
            None => {
                let mut batch = WriteBatch::new();
                batch.put(CHAIN_META_CF, CHAIN_ID_KEY, chain_id.as_bytes().to_vec());
                disk.write(batch)?;
                disk.sync()?;
            }
        }
        let head = match disk.get(CHAIN_META_CF, HEAD_KEY)? {
            Some(bytes) => Some(hm_wire::decode::<Head>(&bytes, 64).map_err(|source| {
                ChainError::Corrupted {
                    what: "head record".into(),
                    source,
                }
            })?),
            None => None,
        };
        let store = ChainStore {
            disk,
            chain_id,
            head,
        };
        if let Some(head) = head {
            let block = store
                .block(head.height)?
                .ok_or_else(|| ChainError::CorruptedBlock {
                    height: head.height,
                    reason: "the head record names a block that is not stored".into(),
                })?;
            if block.hash() != head.hash {
                return Err(ChainError::CorruptedBlock {
                    height: head.height,
                    reason: "the head block's hash differs from the head record".into(),
                });
            }
        }
        Ok(store)
    }

    /// Whether `disk` holds a chain at all (`open` would create one).
    pub fn exists(disk: &D) -> Result<bool, ChainError> {
        Ok(disk.get(CHAIN_META_CF, CHAIN_ID_KEY)?.is_some())
    }

    pub fn chain_id(&self) -> Hash {
        self.chain_id
    }

    pub fn head(&self) -> Option<Head> {
        self.head
    }

    /// Height of the head (0 before the first block).
    pub fn height(&self) -> Height {
        self.head.map_or(0, |head| head.height)
    }

    /// Hash the next block must name as its parent.
    pub fn head_hash(&self) -> Hash {
        self.head.map_or(Hash::default(), |head| head.hash)
    }

    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Appends the next committed block and makes it durable. The caller
    /// has verified its certificate and proofs, and that its body matches
    /// its header (`block::check_structure`); this checks it links.
    pub fn append(&mut self, block: &Block) -> Result<Head, ChainError> {
        let height = block.header.height;
        let expected = self.height() + 1;
        if height != expected {
            return Err(ChainError::DoesNotExtend {
                head: self.height(),
                got: height,
                reason: "height is not head + 1",
            });
        }
        if block.header.previous_hash != self.head_hash() {
            return Err(ChainError::DoesNotExtend {
                head: self.height(),
                got: height,
                reason: "previous hash is not the head's hash",
            });
        }
        if block.header.chain_id != self.chain_id {
            return Err(BlockError::WrongChain.into());
        }
        let head = Head {
            height,
            hash: block.hash(),
        };
        let (compressed, commit) = stored_parts(block, true);
        let mut batch = WriteBatch::new();
        batch.put(BLOCKS_CF, height_key(height), compressed);
        batch.put(BLOCK_COMMITS_CF, height_key(height), commit);
        batch.put(CHAIN_META_CF, HEAD_KEY, hm_wire::encode(&head));
        self.disk.write(batch)?;
        self.disk.sync()?;
        self.head = Some(head);
        Ok(head)
    }

    /// The block at `height`, checked to decode canonically and to be at
    /// that height.
    pub fn block(&self, height: Height) -> Result<Option<Block>, ChainError> {
        let Some(mut stored) = self.disk.get(BLOCKS_CF, &height_key(height))? else {
            return Ok(None);
        };
        let corrupted = |reason: String| ChainError::CorruptedBlock { height, reason };
        // Written in one batch with the compressed part: never missing alone.
        let Some(commit) = self.disk.get(BLOCK_COMMITS_CF, &height_key(height))? else {
            return Err(corrupted("its commit certificate is missing".into()));
        };
        stored.extend_from_slice(&commit);
        let block = decode_stored(&stored).map_err(corrupted)?;
        if block.header.height != height {
            return Err(corrupted(format!("it says height {}", block.header.height)));
        }
        Ok(Some(block))
    }

    /// Up to `limit` (≤ [`BLOCK_RANGE_MAX`]) consecutive blocks from `from`.
    pub fn blocks(&self, from: Height, limit: usize) -> Result<Vec<Block>, ChainError> {
        let mut blocks = Vec::new();
        let last = self.height();
        let mut height = from.max(1);
        while height <= last && blocks.len() < limit.min(BLOCK_RANGE_MAX) {
            match self.block(height)? {
                Some(block) => blocks.push(block),
                None => break,
            }
            height += 1;
        }
        Ok(blocks)
    }

    /// Walks the whole chain checking that every block is stored, decodes,
    /// and links to its parent. For recovery checks and tests: O(height).
    pub fn verify_links(&self) -> Result<(), ChainError> {
        let mut previous = Hash::default();
        for height in 1..=self.height() {
            let block = self
                .block(height)?
                .ok_or_else(|| ChainError::CorruptedBlock {
                    height,
                    reason: "missing below the head".into(),
                })?;
            if block.header.previous_hash != previous {
                return Err(ChainError::CorruptedBlock {
                    height,
                    reason: "does not link to its parent".into(),
                });
            }
            previous = block.hash();
        }
        Ok(())
    }
}

// ------------------------------------------------------------ private chains

/// The stored form of a block: `u32` (big-endian) length of the Brotli
/// part, Brotli of the canonical encoding of header, body and proofs, then
/// the canonical encoding of the commit certificate. Concatenated, the two
/// encodings are exactly [`Block::encode`]. The certificate stays out of
/// the compressed part because each node assembles its own quorum of
/// precommits: kept apart, the compressed bytes are the same on every node
/// (and the certificate's signatures would not compress anyway).
pub fn encode_stored(block: &Block) -> Vec<u8> {
    let (mut stored, commit) = stored_parts(block, false);
    stored.extend_from_slice(&commit);
    stored
}

/// [`encode_stored`] cut where the commit certificate starts: the length
/// prefix with the compressed part, and the certificate.
///
/// `checked`: the block's body matches its header's roots (the replica
/// checks every block's structure before it appends it). The header, which
/// commits to the body, and the proofs then name the content, so the
/// compression memo is asked by that name without encoding and hashing the
/// whole block. An unchecked block (any decoded bytes, e.g. a fuzzer's) is
/// compressed by its content.
fn stored_parts(block: &Block, checked: bool) -> (Vec<u8>, Vec<u8>) {
    let content = || hm_wire::encode(&(&block.header, &block.body, &block.proof));
    let compressed = if checked {
        let name = || {
            vec![
                block.header.hash().as_bytes().to_vec(),
                hm_wire::encode(&block.proof),
            ]
        };
        hm_wire::compress::compress_named(name, content)
    } else {
        hm_wire::compress::compress(&content())
    };
    let compressed_len = u32::try_from(compressed.len()).expect("a block compresses below 4 GiB");
    let mut head = Vec::with_capacity(4 + compressed.len());
    head.extend_from_slice(&compressed_len.to_be_bytes());
    head.extend_from_slice(&compressed);
    (head, hm_wire::encode(&block.commit))
}

/// Decodes [`encode_stored`]'s form from untrusted bytes: the compressed
/// part decompresses under [`BLOCK_BYTES_MAX`], the whole must decode
/// canonically as one block. Errors say which part was wrong.
pub fn decode_stored(stored: &[u8]) -> Result<Block, String> {
    let Some((prefix, rest)) = stored.split_first_chunk::<4>() else {
        return Err(format!(
            "{} bytes, too short for a stored block",
            stored.len()
        ));
    };
    let compressed_len = u32::from_be_bytes(*prefix) as usize;
    if compressed_len > rest.len() {
        return Err(format!(
            "the compressed part claims {compressed_len} bytes, {} present",
            rest.len()
        ));
    }
    let (compressed, commit) = rest.split_at(compressed_len);
    let mut bytes = hm_wire::compress::decompress(compressed, BLOCK_BYTES_MAX)
        .map_err(|error| format!("compressed part: {error}"))?;
    if bytes.len() + commit.len() > BLOCK_BYTES_MAX {
        return Err(format!(
            "{} bytes decompressed plus {} of certificate exceed a block's {BLOCK_BYTES_MAX}",
            bytes.len(),
            commit.len()
        ));
    }
    bytes.extend_from_slice(commit);
    Block::decode(&bytes).map_err(|error| error.to_string())
}

pub const PRIVATE_HEADER_DOMAIN: &str = "hm/private-header/v1";
pub const PRIVATE_ENTRIES_ROOT_DOMAIN: &str = "hm/private-entries/v1";
/// Entries in one private block.
pub const PRIVATE_ENTRIES_MAX: usize = 1_024;
/// One private entry.
pub const PRIVATE_ENTRY_BYTES_MAX: usize = 64 << 10;
/// A sealed private block, envelope included.
pub const SEALED_BLOCK_BYTES_MAX: usize = 4 << 20;
/// A private block's plaintext (before compression and sealing).
pub const PRIVATE_BLOCK_BYTES_MAX: usize = 2 << 20;

/// Header of one block of an asset's private chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateHeader {
    pub asset_id: Hash,
    pub height: Height,
    pub previous_hash: Hash,
    pub entries_root: Hash,
    pub timestamp_ms: u64,
}

impl PrivateHeader {
    pub fn hash(&self) -> Hash {
        hash(PRIVATE_HEADER_DOMAIN, &hm_wire::encode(self))
    }
}

/// A private block: opaque entries the asset's owner records (usage,
/// ownership changes, allocations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateBlock {
    pub header: PrivateHeader,
    pub entries: Vec<Vec<u8>>,
}

impl PrivateBlock {
    /// Builds the next block after `previous` (`None` for the first).
    pub fn new(
        asset_id: Hash,
        previous: Option<&PrivateHeader>,
        entries: Vec<Vec<u8>>,
        timestamp_ms: u64,
    ) -> PrivateBlock {
        let header = PrivateHeader {
            asset_id,
            height: previous.map_or(1, |p| p.height + 1),
            previous_hash: previous.map_or(Hash::default(), PrivateHeader::hash),
            entries_root: entries_root(&entries),
            timestamp_ms,
        };
        PrivateBlock { header, entries }
    }

    pub fn check(&self) -> Result<(), BlockError> {
        if self.entries.len() > PRIVATE_ENTRIES_MAX {
            return Err(BlockError::TooLarge {
                what: "private entries",
                len: self.entries.len(),
                max: PRIVATE_ENTRIES_MAX,
            });
        }
        if let Some(entry) = self
            .entries
            .iter()
            .find(|e| e.len() > PRIVATE_ENTRY_BYTES_MAX)
        {
            return Err(BlockError::TooLarge {
                what: "private entry bytes",
                len: entry.len(),
                max: PRIVATE_ENTRY_BYTES_MAX,
            });
        }
        if self.header.entries_root != entries_root(&self.entries) {
            return Err(BlockError::RootMismatch {
                what: "private entries",
            });
        }
        Ok(())
    }
}

fn entries_root(entries: &[Vec<u8>]) -> Hash {
    let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
    hm_wire::hash_parts(
        PRIVATE_ENTRIES_ROOT_DOMAIN,
        &[merkle::root(&refs).as_bytes()],
    )
}

/// What the public chain records for a private block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateAnchor {
    pub asset_id: Hash,
    pub height: Height,
    pub header_hash: Hash,
}

/// A private block sealed to its owner: anyone can store and forward it,
/// only the owner can read it, and the anchor binds it (the anchor is the
/// envelope's associated data, so a swapped anchor fails to open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBlock {
    pub anchor: PrivateAnchor,
    pub envelope: Vec<u8>,
}

impl SealedBlock {
    /// Compresses, then seals `block` to `owner`.
    pub fn seal<E: Entropy + ?Sized>(
        block: &PrivateBlock,
        owner: &KemPublicKey,
        entropy: &E,
    ) -> Result<SealedBlock, ChainError> {
        block.check()?;
        let plaintext = hm_wire::encode(block);
        if plaintext.len() > PRIVATE_BLOCK_BYTES_MAX {
            return Err(BlockError::TooLarge {
                what: "private block bytes",
                len: plaintext.len(),
                max: PRIVATE_BLOCK_BYTES_MAX,
            }
            .into());
        }
        let anchor = PrivateAnchor {
            asset_id: block.header.asset_id,
            height: block.header.height,
            header_hash: block.header.hash(),
        };
        let compressed = hm_wire::compress::compress(&plaintext);
        let envelope = hm_wire::seal(owner, &hm_wire::encode(&anchor), &compressed, entropy)
            .map_err(ChainError::Seal)?;
        Ok(SealedBlock { anchor, envelope })
    }

    /// Opens with the owner's key and checks the block matches its anchor.
    pub fn open(&self, owner: &KemSecretKey) -> Result<PrivateBlock, ChainError> {
        let compressed = hm_wire::open(owner, &hm_wire::encode(&self.anchor), &self.envelope)
            .map_err(ChainError::Seal)?;
        let plaintext = hm_wire::compress::decompress(&compressed, PRIVATE_BLOCK_BYTES_MAX)
            .map_err(ChainError::Seal)?;
        let block: PrivateBlock =
            hm_wire::decode(&plaintext, PRIVATE_BLOCK_BYTES_MAX).map_err(ChainError::Seal)?;
        block.check()?;
        let header = &block.header;
        if header.hash() != self.anchor.header_hash
            || header.asset_id != self.anchor.asset_id
            || header.height != self.anchor.height
        {
            return Err(BlockError::BadCertificate(
                "the sealed private block does not match its public anchor",
            )
            .into());
        }
        Ok(block)
    }

    /// Decodes a sealed block from untrusted bytes (bounded, canonical).
    pub fn decode(bytes: &[u8]) -> Result<SealedBlock, WireError> {
        hm_wire::decode(bytes, SEALED_BLOCK_BYTES_MAX)
    }
}

/// Sealed private blocks on disk, keyed by asset then height. The store
/// cannot read them; it keeps them in order and checks each matches the
/// anchor the caller saw committed on the public chain.
#[derive(Debug)]
pub struct PrivateChainStore<D: Disk> {
    disk: D,
}

impl<D: Disk> PrivateChainStore<D> {
    pub fn new(disk: D) -> PrivateChainStore<D> {
        PrivateChainStore { disk }
    }

    fn key(asset_id: &Hash, height: Height) -> Vec<u8> {
        let mut key = asset_id.as_bytes().to_vec();
        key.extend_from_slice(&height_key(height));
        key
    }

    /// Stores `sealed` if it is the next block of its asset (height 1 or
    /// its predecessor is stored).
    pub fn append(&self, sealed: &SealedBlock) -> Result<(), ChainError> {
        let anchor = sealed.anchor;
        if sealed.envelope.len() > SEALED_BLOCK_BYTES_MAX {
            return Err(BlockError::TooLarge {
                what: "sealed block bytes",
                len: sealed.envelope.len(),
                max: SEALED_BLOCK_BYTES_MAX,
            }
            .into());
        }
        let last = self.height(&anchor.asset_id)?;
        if anchor.height != last + 1 {
            return Err(ChainError::DoesNotExtend {
                head: last,
                got: anchor.height,
                reason: "private height is not the asset's last height + 1",
            });
        }
        let mut batch = WriteBatch::new();
        batch.put(
            PRIVATE_BLOCKS_CF,
            Self::key(&anchor.asset_id, anchor.height),
            hm_wire::encode(sealed),
        );
        batch.put(
            CHAIN_META_CF,
            Self::head_key(&anchor.asset_id),
            height_key(anchor.height),
        );
        self.disk.write(batch)?;
        self.disk.sync()?;
        Ok(())
    }

    pub fn get(&self, asset_id: &Hash, height: Height) -> Result<Option<SealedBlock>, ChainError> {
        let Some(bytes) = self
            .disk
            .get(PRIVATE_BLOCKS_CF, &Self::key(asset_id, height))?
        else {
            return Ok(None);
        };
        SealedBlock::decode(&bytes)
            .map(Some)
            .map_err(|source| ChainError::Corrupted {
                what: format!("private block {asset_id} at {height}"),
                source,
            })
    }

    /// The asset's last stored height (0 when none).
    pub fn height(&self, asset_id: &Hash) -> Result<Height, ChainError> {
        let Some(bytes) = self.disk.get(CHAIN_META_CF, &Self::head_key(asset_id))? else {
            return Ok(0);
        };
        <[u8; 8]>::try_from(bytes.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| ChainError::CorruptedBlock {
                height: 0,
                reason: format!("private head record of asset {asset_id} is not 8 bytes"),
            })
    }

    fn head_key(asset_id: &Hash) -> Vec<u8> {
        let mut key = PRIVATE_HEAD_PREFIX.to_vec();
        key.extend_from_slice(asset_id.as_bytes());
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{
        BLOCK_VERSION, BlockBody, BlockHeader, CommitCertificate, LogHead, SignedVote, Vote,
        VoteKind,
    };
    use crate::proof::{ConsensusProof, SpaceProof, StakeProof, TimeProof, WorkProof};
    use crate::validators::ValidatorSet;
    use hm_env::mem::{MemDisk, SeededEntropy};
    use hm_wire::SigningKey;
    use proptest::prelude::*;

    struct Fixture {
        key: SigningKey,
        set: ValidatorSet,
        entropy: SeededEntropy,
        chain_id: Hash,
    }

    fn fixture() -> Fixture {
        let entropy = SeededEntropy::new(3, b"chain-tests");
        let key = SigningKey::generate(&entropy);
        let set = ValidatorSet::new([(key.verifying_key(), 10)]).expect("valid set");
        Fixture {
            key,
            set,
            entropy,
            chain_id: hash("test", b"chain"),
        }
    }

    /// A structurally valid, certified block (proof contents are not
    /// checked by the store).
    fn block(f: &Fixture, height: Height, previous_hash: Hash) -> Block {
        let body = BlockBody {
            transactions: vec![crate::block::Transaction(height.to_le_bytes().to_vec())],
            ..BlockBody::default()
        };
        let header = BlockHeader {
            version: BLOCK_VERSION,
            chain_id: f.chain_id,
            height,
            round: 0,
            previous_hash,
            transactions_root: body.transactions_root(),
            updates_root: crate::block::updates_root(&[]),
            evidence_root: body.evidence_root(),
            state_root: Hash::default(),
            log_head: LogHead::empty(),
            timestamp_ms: height * 1000,
            difficulty: 0,
            time_output: Hash::default(),
            time_ticks: 1,
            proposer: f.key.verifying_key().fingerprint(),
            validators_hash: f.set.hash(),
            next_validators_hash: f.set.hash(),
        };
        let signature = f.key.sign("test", b"proof", &f.entropy);
        let proof = ConsensusProof {
            space: SpaceProof {
                commitment_root: Hash::default(),
                openings: vec![],
            },
            stake: StakeProof {
                validator: 0,
                stake: 10,
                signature,
            },
            work: WorkProof { nonce: 0 },
            time: TimeProof {
                checkpoints: vec![],
            },
            combined: Hash::default(),
        };
        let vote = SignedVote::sign(
            &f.chain_id,
            Vote {
                kind: VoteKind::Precommit,
                height,
                round: 0,
                block_hash: Some(header.hash()),
                validator: 0,
            },
            &f.key,
            &f.entropy,
        );
        let commit = CommitCertificate::from_precommits(height, 0, header.hash(), [&vote], &f.set)
            .expect("one validator with all stake is a quorum");
        Block {
            header,
            body,
            proof,
            commit,
        }
    }

    fn disk() -> MemDisk {
        MemDisk::new(CHAIN_COLUMN_FAMILIES)
    }

    #[test]
    fn appends_reads_back_and_verifies_certificates() {
        let f = fixture();
        let mut store = ChainStore::open(disk(), f.chain_id).expect("opens");
        let first = block(&f, 1, Hash::default());
        let second = block(&f, 2, first.hash());
        store.append(&first).expect("extends");
        store.append(&second).expect("extends");
        assert_eq!(store.block(2).expect("reads"), Some(second.clone()));
        second
            .verify_commit(&f.chain_id, &f.set)
            .expect("certificate verifies");
        assert_eq!(store.blocks(1, 10).expect("reads").len(), 2);
        store.verify_links().expect("links");
    }

    #[test]
    fn refuses_blocks_that_do_not_extend() {
        let f = fixture();
        let mut store = ChainStore::open(disk(), f.chain_id).expect("opens");
        assert!(matches!(
            store.append(&block(&f, 2, Hash::default())),
            Err(ChainError::DoesNotExtend { .. })
        ));
        store
            .append(&block(&f, 1, Hash::default()))
            .expect("extends");
        assert!(matches!(
            store.append(&block(&f, 2, Hash::default())),
            Err(ChainError::DoesNotExtend { .. })
        ));
    }

    #[test]
    fn crash_keeps_every_appended_block_and_refuses_other_chains() {
        let f = fixture();
        let disk = disk();
        let mut store = ChainStore::open(disk.clone(), f.chain_id).expect("opens");
        let mut previous = Hash::default();
        let mut blocks = Vec::new();
        for height in 1..=5 {
            let next = block(&f, height, previous);
            previous = next.hash();
            store.append(&next).expect("extends");
            blocks.push(next);
        }
        disk.crash(0);
        let reopened = ChainStore::open(disk.clone(), f.chain_id).expect("reopens");
        assert_eq!(reopened.height(), 5);
        for expected in &blocks {
            assert_eq!(
                reopened
                    .block(expected.header.height)
                    .expect("reads")
                    .as_ref(),
                Some(expected)
            );
        }
        assert!(matches!(
            ChainStore::open(disk, hash("test", b"other")),
            Err(ChainError::WrongChain { .. })
        ));
    }

    #[test]
    fn corruption_is_an_error_not_a_different_block() {
        let f = fixture();
        let disk = disk();
        let mut store = ChainStore::open(disk.clone(), f.chain_id).expect("opens");
        store
            .append(&block(&f, 1, Hash::default()))
            .expect("extends");
        assert!(disk.corrupt(BLOCKS_CF, &height_key(1), 10));
        assert!(store.block(1).is_err());
        assert!(ChainStore::open(disk, f.chain_id).is_err());
        // The certificate half, corrupted or gone, is an error too.
        let disk = MemDisk::new(CHAIN_COLUMN_FAMILIES);
        let mut store = ChainStore::open(disk.clone(), f.chain_id).expect("opens");
        store
            .append(&block(&f, 1, Hash::default()))
            .expect("extends");
        assert!(disk.corrupt(BLOCK_COMMITS_CF, &height_key(1), 3));
        assert!(store.block(1).is_err());
        let mut batch = WriteBatch::new();
        batch.delete(BLOCK_COMMITS_CF, height_key(1));
        disk.write(batch).expect("writes");
        assert!(
            store
                .block(1)
                .is_err_and(|error| error.to_string().contains("commit certificate is missing"))
        );
    }

    #[test]
    fn the_stored_form_round_trips_and_its_compressed_part_ignores_the_certificate() {
        let f = fixture();
        let block = block(&f, 1, Hash::default());
        let stored = encode_stored(&block);
        assert_eq!(decode_stored(&stored).expect("decodes"), block);
        // Another quorum of precommits: the compressed part is unchanged.
        let mut other = block.clone();
        other.commit.round += 1;
        let other_stored = encode_stored(&other);
        let compressed_len = u32::from_be_bytes(stored[..4].try_into().expect("4 bytes")) as usize;
        assert_eq!(
            other_stored[..4 + compressed_len],
            stored[..4 + compressed_len]
        );
        assert_ne!(other_stored, stored);
        assert_eq!(decode_stored(&other_stored).expect("decodes"), other);
        // Truncated, overlong and lying length prefixes are errors.
        for bad in [
            &stored[..3],
            &stored[..4 + compressed_len / 2],
            &stored[..stored.len() - 1],
        ] {
            assert!(decode_stored(bad).is_err());
        }
        let mut lying = stored.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_stored(&lying).is_err_and(|error| error.contains("claims")));
        let mut trailing = stored.clone();
        trailing.push(0);
        assert!(decode_stored(&trailing).is_err());
    }

    #[test]
    fn decoded_block_tamper_breaks_certificate() {
        let f = fixture();
        let mut block = block(&f, 1, Hash::default());
        block.header.timestamp_ms += 1;
        assert!(block.verify_commit(&f.chain_id, &f.set).is_err());
    }

    #[test]
    fn private_blocks_seal_to_owner_and_bind_their_anchor() {
        let entropy = SeededEntropy::new(5, b"private");
        let owner = KemSecretKey::generate(&entropy);
        let stranger = KemSecretKey::generate(&entropy);
        let asset = hash("test", b"asset");
        let first = PrivateBlock::new(asset, None, vec![b"allocated".to_vec()], 1);
        let second = PrivateBlock::new(asset, Some(&first.header), vec![b"used 3 s".to_vec()], 2);
        let store = PrivateChainStore::new(disk());
        for block in [&first, &second] {
            let sealed = SealedBlock::seal(block, &owner.public_key(), &entropy).expect("seals");
            store.append(&sealed).expect("next height");
        }
        assert_eq!(store.height(&asset).expect("reads"), 2);
        let sealed = store.get(&asset, 2).expect("reads").expect("stored");
        assert_eq!(sealed.open(&owner).expect("owner opens"), second);
        assert_eq!(second.header.previous_hash, first.header.hash());
        assert!(sealed.open(&stranger).is_err());
        let mut swapped = sealed.clone();
        swapped.anchor.height = 1;
        assert!(swapped.open(&owner).is_err());
        let out_of_order =
            SealedBlock::seal(&second, &owner.public_key(), &entropy).expect("seals");
        assert!(
            PrivateChainStore::new(disk())
                .append(&out_of_order)
                .is_err()
        );
    }

    /// A valid block's wire form and stored form, made once.
    fn valid_encodings() -> &'static (Vec<u8>, Vec<u8>) {
        static ENCODINGS: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
        ENCODINGS.get_or_init(|| {
            let f = fixture();
            let first = block(&f, 1, Hash::default());
            (first.encode(), encode_stored(&first))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random bytes rarely get past the first fields; mutations of a
        /// valid block reach every decoder below them (header, body,
        /// proofs, certificate, the stored form's compressed part): none
        /// panics, and what decodes re-encodes to exactly the input.
        #[test]
        fn mutated_valid_blocks_never_panic_and_decode_canonically(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
            stored in any::<bool>(),
        ) {
            let (wire, at_rest) = valid_encodings();
            let mut bytes = if stored { at_rest.clone() } else { wire.clone() };
            for (at, value) in flips {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            if stored {
                if let Ok(block) = decode_stored(&bytes) {
                    prop_assert_eq!(Block::decode(&block.encode()).ok(), Some(block));
                }
            } else if let Ok(block) = Block::decode(&bytes) {
                prop_assert_eq!(block.encode(), bytes);
            }
        }

        #[test]
        fn random_bytes_never_decode_to_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Block::decode(&bytes);
            let _ = SealedBlock::decode(&bytes);
            let _ = hm_wire::compress::decompress(&bytes, BLOCK_BYTES_MAX).map(|b| Block::decode(&b));
            let _ = decode_stored(&bytes);
        }
    }
}

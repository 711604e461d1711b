//! Names on the wire and on disk: the protocol ids (ALPN) a node serves,
//! its column families and the keys it keeps outside them. A leaf: the
//! node, chain and trust services all refer to these, so none has to
//! import another for a name.

/// ALPN id of membership connections (the endpoint's default protocol).
pub const MEMBERSHIP_PROTOCOL: &[u8] = b"hm/membership/1";
/// ALPN id of chain connections.
pub const CHAIN_PROTOCOL: &[u8] = b"hm/chain/1";
/// ALPN id of API connections.
pub const API_PROTOCOL: &[u8] = b"hm/api/1";

/// The node's identity key.
pub const CF_IDENTITY: &str = "identity";
/// The membership incarnation.
pub const CF_MEMBERSHIP: &str = "membership";
/// TrustChain's node-local state: the bootstrap phase, the ML-KEM key and
/// the certificate presented last.
pub const TRUST_CF: &str = "trust";

/// Column families of a node's disk (the node's own, then the chain's).
pub const COLUMN_FAMILIES: &[&str] = &[
    "default",
    CF_IDENTITY,
    CF_MEMBERSHIP,
    hm_kernel::chain::BLOCKS_CF,
    hm_kernel::chain::BLOCK_COMMITS_CF,
    hm_kernel::chain::CHAIN_META_CF,
    hm_kernel::chain::PRIVATE_BLOCKS_CF,
    hm_kernel::replica::EVIDENCE_CF,
    hm_kernel::consensus::SIGNER_COLUMN_FAMILY,
    TRUST_CF,
];

/// In [`CF_IDENTITY`]: the FALCON-1024 signing key.
pub const KEY_SIGNING_KEY: &[u8] = b"falcon-1024/signing-key";
/// In [`CF_MEMBERSHIP`]: the last incarnation used.
pub const KEY_INCARNATION: &[u8] = b"incarnation";
/// In [`TRUST_CF`]: the ML-KEM-1024 secret key.
pub const KEY_KEM_SECRET: &[u8] = b"ml-kem-1024/secret-key";
/// In [`TRUST_CF`]: the bootstrap phase reached.
pub const KEY_PHASE: &[u8] = b"bootstrap-phase";
/// In [`TRUST_CF`]: the certificate bundle presented last (a restarted node
/// presents it from its first handshake).
pub const KEY_PRESENTED: &[u8] = b"presented-certificate";

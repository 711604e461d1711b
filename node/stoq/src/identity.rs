//! Node identity over a QUIC session (RFC 9261 exported-authenticator style).
//!
//! After the TLS handshake both sides derive the same 32-byte exporter value
//! per role, `export_keying_material(EXPORTER_LABEL, context = [role])`. Each
//! signs its own role's value (plus its `extra` bytes) with its FALCON key and
//! sends the key and signature on the identity stream. The receiver checks the
//! signature against the value *it* derived, so a binding cannot be replayed
//! into another session, reflected to the other role, or relayed by a
//! man in the middle (whose session would have a different exporter). Then a
//! [`PeerVerifier`] decides whether this key is welcome.
//!
//! Later, a node whose identity bytes change (it obtained or renewed a
//! certificate) re-authenticates every live connection: it sends the new
//! bytes with a generation number on the connection itself
//! ([`crate::frame::ReauthFrame`]). Only the party that holds this
//! session's keys can send on it, and the handshake bound those keys to its
//! FALCON key, so the frame needs no signature of its own; the receiver
//! keeps only the newest generation and asks the [`PeerVerifier`] again.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use hm_env::Entropy;

use crate::error::IdentityError;
use crate::frame::{IDENTITY_VERSION, IdentityBinding};
use crate::keys::{Hash, Signature, SigningKey, VerifyingKey};

/// Signature domain of the binding.
pub const IDENTITY_DOMAIN: &str = "hm/stoq/identity/v1";
/// TLS exporter label (RFC 8446 §7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-hm-stoq-identity-v1";
/// Bytes of exporter output signed.
pub const EXPORTER_BYTES: usize = 32;

/// A node's id: the fingerprint (SHA-256) of its FALCON public key.
pub type NodeId = Hash;

/// Which end of the connection signs; part of the exporter context so a
/// binding made as client cannot be reflected back as the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// Whose exporter value an endpoint signs in its identity binding. Honest
/// endpoints sign their own role's ([`HonestPresenter`]); this is the one
/// point where an endpoint could present a false identity binding, and
/// misbehaving ones are injected from outside (`hm-faults`' impersonator,
/// which a correct peer must refuse). No code in this crate misbehaves.
pub trait Presenter: Send + Sync + 'static {
    fn signed_role(&self, own: Role) -> Role;
}

/// Signs the binding over this endpoint's own role's exporter value.
#[derive(Debug, Clone, Copy, Default)]
pub struct HonestPresenter;

impl Presenter for HonestPresenter {
    fn signed_role(&self, own: Role) -> Role {
        own
    }
}

impl Role {
    /// The other end's role.
    pub fn peer(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }

    fn context(self) -> [u8; 1] {
        match self {
            Role::Client => [0x01],
            Role::Server => [0x02],
        }
    }
}

/// A peer whose FALCON key has been proven bound to this session.
pub struct PeerIdentity {
    pub node_id: NodeId,
    pub public_key: VerifyingKey,
    /// Signed application bytes the peer sent with its identity (at the
    /// handshake, or in a re-authentication when passed to
    /// [`PeerVerifier::verify`] for one).
    pub extra: Vec<u8>,
    /// The application protocol (ALPN id) of the connection, so a verifier
    /// can be stricter on some protocols than on others.
    pub protocol: Vec<u8>,
    /// True when this is a re-authentication of a live connection rather
    /// than its handshake.
    pub reauthentication: bool,
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("node_id", &node_id_hex(&self.node_id))
            .field("extra_bytes", &self.extra.len())
            .finish_non_exhaustive()
    }
}

/// Lower-case hex of a node id, for logs and error messages.
pub fn node_id_hex(node_id: &NodeId) -> String {
    node_id.0.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Decides whether a peer that proved its key is allowed in. Called once per
/// connection at the handshake, after the binding signature verified, and
/// again whenever the peer re-authenticates the connection with new `extra`
/// bytes (same key, same node id). Called from the connection's tasks: keep
/// it quick and never block on I/O.
pub trait PeerVerifier: Send + Sync + 'static {
    /// `Err` refuses the peer; the refusal goes to the log and, as the
    /// close reason, to the peer. Refusing a re-authentication closes the
    /// connection.
    fn verify(&self, peer: &PeerIdentity) -> Result<(), PeerRefused>;
}

/// Why a [`PeerVerifier`] refused a peer: the verifier's own typed error,
/// kept whole (STOQ cannot know the application's error types; callers
/// that do can [`PeerRefused::reason`] and downcast).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PeerRefused(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl PeerRefused {
    pub fn new(reason: impl std::error::Error + Send + Sync + 'static) -> PeerRefused {
        PeerRefused(Arc::new(reason))
    }

    /// The verifier's error.
    pub fn reason(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

/// Two refusals are the same when they say the same: the reason's type is
/// the verifier's and unknown here (this keeps [`crate::IdentityError`]
/// comparable in tests).
impl PartialEq for PeerRefused {
    fn eq(&self, other: &PeerRefused) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Eq for PeerRefused {}

/// Bootstrap phase 0: any key whose binding verifies is accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelfSignedVerifier;

impl PeerVerifier for SelfSignedVerifier {
    fn verify(&self, _peer: &PeerIdentity) -> Result<(), PeerRefused> {
        Ok(())
    }
}

/// [`AllowListVerifier`]'s refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node_id} is not on the allow list; add it to the list or connect to another node")]
pub struct NotAllowed {
    pub node_id: String,
}

/// Accepts only the listed node ids.
#[derive(Debug, Clone, Default)]
pub struct AllowListVerifier {
    pub allowed: BTreeSet<NodeId>,
}

impl PeerVerifier for AllowListVerifier {
    fn verify(&self, peer: &PeerIdentity) -> Result<(), PeerRefused> {
        if self.allowed.contains(&peer.node_id) {
            Ok(())
        } else {
            Err(PeerRefused::new(NotAllowed {
                node_id: node_id_hex(&peer.node_id),
            }))
        }
    }
}

/// The exporter value for `role` on `connection`.
pub(crate) fn exporter(
    connection: &quinn::Connection,
    role: Role,
) -> Result<[u8; EXPORTER_BYTES], IdentityError> {
    let mut out = [0u8; EXPORTER_BYTES];
    connection
        .export_keying_material(&mut out, EXPORTER_LABEL, &role.context())
        .map_err(|error| IdentityError::Exporter(format!("{error:?}")))?;
    Ok(out)
}

/// What is signed: the exporter value, then the length-prefixed extra bytes
/// (so extra bytes are authenticated too, and the split is unambiguous).
fn signed_message(exporter: &[u8; EXPORTER_BYTES], extra: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(EXPORTER_BYTES + 8 + extra.len());
    message.extend_from_slice(exporter);
    message.extend_from_slice(&(extra.len() as u64).to_be_bytes());
    message.extend_from_slice(extra);
    message
}

pub(crate) fn make_binding<R: Entropy + ?Sized>(
    key: &SigningKey,
    exporter: &[u8; EXPORTER_BYTES],
    extra: &[u8],
    entropy: &R,
) -> IdentityBinding {
    let signature = key.sign(IDENTITY_DOMAIN, &signed_message(exporter, extra), entropy);
    IdentityBinding {
        version: IDENTITY_VERSION,
        public_key: key.verifying_key().to_bytes(),
        signature: signature.to_bytes(),
        extra: extra.to_vec(),
    }
}

/// Verifies a peer's binding against the exporter value we derived for the
/// peer's role. Does not consult the [`PeerVerifier`].
pub(crate) fn check_binding(
    binding: &IdentityBinding,
    exporter: &[u8; EXPORTER_BYTES],
) -> Result<PeerIdentity, IdentityError> {
    let public_key = VerifyingKey::from_bytes(&binding.public_key)
        .map_err(|error| IdentityError::BadPublicKey(error.to_string()))?;
    let signature = Signature::from_bytes(&binding.signature)
        .map_err(|error| IdentityError::BadSignature(error.to_string()))?;
    public_key
        .verify(
            IDENTITY_DOMAIN,
            &signed_message(exporter, &binding.extra),
            &signature,
        )
        .map_err(|error| IdentityError::BadSignature(error.to_string()))?;
    Ok(PeerIdentity {
        node_id: public_key.fingerprint(),
        public_key,
        extra: binding.extra.clone(),
        protocol: Vec::new(),
        reauthentication: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::mem::SeededEntropy;

    #[test]
    fn the_allow_list_refuses_strangers_with_a_typed_reason_the_caller_can_read() {
        let entropy = SeededEntropy::new(4, b"identity");
        let key = SigningKey::generate(&entropy);
        let mut peer = check_binding(
            &make_binding(&key, &[1u8; EXPORTER_BYTES], b"", &entropy),
            &[1u8; EXPORTER_BYTES],
        )
        .expect("verifies");
        let verifier = AllowListVerifier::default();
        let refused = verifier.verify(&peer).expect_err("not on the list");
        let reason = refused
            .reason()
            .downcast_ref::<NotAllowed>()
            .expect("the verifier's own error type survives");
        assert_eq!(reason.node_id, node_id_hex(&peer.node_id));
        assert!(refused.to_string().contains("not on the allow list"));
        let error = IdentityError::Refused {
            node_id: node_id_hex(&peer.node_id),
            reason: refused.clone(),
        };
        assert_eq!(
            std::error::Error::source(&error).map(ToString::to_string),
            Some(refused.to_string())
        );

        let listed = AllowListVerifier {
            allowed: [peer.node_id].into(),
        };
        assert_eq!(listed.verify(&peer), Ok(()));
        peer.node_id = Hash([9; 32]);
        assert!(listed.verify(&peer).is_err());
    }

    #[test]
    fn a_binding_verifies_only_against_its_own_exporter_value() {
        let entropy = SeededEntropy::new(3, b"identity");
        let key = SigningKey::generate(&entropy);
        let exporter = [7u8; EXPORTER_BYTES];
        let binding = make_binding(&key, &exporter, b"cert", &entropy);
        let peer = check_binding(&binding, &exporter).expect("verifies");
        assert_eq!(peer.node_id, key.verifying_key().fingerprint());
        assert_eq!(peer.extra, b"cert");

        let other_session = [8u8; EXPORTER_BYTES];
        assert!(matches!(
            check_binding(&binding, &other_session),
            Err(IdentityError::BadSignature(_))
        ));
        let mut tampered = binding.clone();
        tampered.extra = b"CERT".to_vec();
        assert!(matches!(
            check_binding(&tampered, &exporter),
            Err(IdentityError::BadSignature(_))
        ));
        let mut garbage_key = binding;
        garbage_key.public_key = vec![1, 2, 3];
        assert!(matches!(
            check_binding(&garbage_key, &exporter),
            Err(IdentityError::BadPublicKey(_))
        ));
    }
}

//! TLS for STOQ: rustls on aws-lc-rs with the hybrid X25519MLKEM768 key
//! exchange, mutual self-signed Ed25519 certificates, and verifiers that accept
//! any certificate but still check the TLS 1.3 handshake signatures.
//!
//! Certificates are only the vehicle TLS insists on. Who a peer *is* is proven
//! after the handshake by the FALCON binding over the exporter secret
//! (`identity.rs`), because FALCON has no IANA TLS code point. The handshake
//! signature check still matters: it proves the peer holds the private key of
//! the certificate it sent, so the exporter value is shared with exactly that
//! party and nobody can splice themselves into the session.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hm_env::{Clock, Entropy};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::time_provider::TimeProvider;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::ConfigError;

/// The default ALPN protocol id; a peer offering none of an endpoint's
/// protocols fails the TLS handshake.
pub const ALPN: &[u8] = b"hm-stoq/1";
/// SNI name sent by clients. Certificates are not checked against it (the
/// FALCON binding authenticates), but TLS needs some valid name.
pub const SERVER_NAME: &str = "hm-stoq";

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410 §7); the 32-byte seed
/// follows. Lets us build the key from Env entropy without another crate.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A certificate and its key for one endpoint.
pub struct TlsIdentity {
    pub cert: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_bytes", &self.cert.len())
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A self-signed Ed25519 certificate whose key comes from `entropy`.
    /// Ed25519 signatures are deterministic and the serial is derived from the
    /// key, so the same entropy gives the same certificate bytes (the
    /// simulator's replay depends on sizes staying identical).
    pub fn generate<R: Entropy + ?Sized>(entropy: &R) -> Result<Self, ConfigError> {
        let mut seed = [0u8; 32];
        entropy.fill_bytes(&mut seed);
        let mut key_pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        key_pkcs8.extend_from_slice(&seed);
        let der = PrivatePkcs8KeyDer::from(key_pkcs8.clone());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
            .map_err(|error| ConfigError::Tls(format!("Ed25519 key: {error}")))?;
        let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
            .map_err(|error| ConfigError::Tls(format!("certificate parameters: {error}")))?;
        let cert = params
            .self_signed(&key_pair)
            .map_err(|error| ConfigError::Tls(format!("self-signing: {error}")))?;
        Ok(Self {
            cert: cert.der().clone(),
            key_pkcs8,
        })
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }
}

/// The crypto provider: aws-lc-rs, TLS 1.3 suites only, X25519MLKEM768 first
/// (alone when `post_quantum_only`).
pub fn provider(post_quantum_only: bool) -> Arc<CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = if post_quantum_only {
        vec![aws_lc_rs::kx_group::X25519MLKEM768]
    } else {
        vec![
            aws_lc_rs::kx_group::X25519MLKEM768,
            aws_lc_rs::kx_group::X25519,
        ]
    };
    provider
        .cipher_suites
        .retain(|suite| suite.version() == &rustls::version::TLS13);
    Arc::new(provider)
}

/// rustls reads wall time (ticket ages, certificate validity) through this,
/// so it follows the node's Env clock, skew included, instead of the OS.
pub struct EnvTime<C: Clock>(pub Arc<C>);

impl<C: Clock> fmt::Debug for EnvTime<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvTime")
    }
}

impl<C: Clock> TimeProvider for EnvTime<C> {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_millis(
            self.0.wall_ms(),
        )))
    }
}

/// Accepts any certificate, checks every TLS 1.3 handshake signature, and
/// offers only Ed25519 (the only key type STOQ certificates use).
#[derive(Debug)]
pub struct BindingOnlyVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl BindingOnlyVerifier {
    pub fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is never used by STOQ".to_string())
}

impl ServerCertVerifier for BindingOnlyVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for BindingOnlyVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

fn tls_error(what: &str, error: impl fmt::Display) -> ConfigError {
    ConfigError::Tls(format!("{what}: {error}"))
}

/// The rustls server side: TLS 1.3, mutual certificates, ALPN, no tickets or
/// early data (every connection is a full handshake with a fresh binding).
pub fn rustls_server_config<C: Clock>(
    identity: &TlsIdentity,
    post_quantum_only: bool,
    clock: Arc<C>,
    protocols: &[Vec<u8>],
) -> Result<rustls::ServerConfig, ConfigError> {
    let provider = provider(post_quantum_only);
    let verifier = Arc::new(BindingOnlyVerifier::new(&provider));
    let mut config = rustls::ServerConfig::builder_with_details(provider, Arc::new(EnvTime(clock)))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| tls_error("server protocol versions", error))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key())
        .map_err(|error| tls_error("server certificate", error))?;
    config.alpn_protocols = protocols.to_vec();
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(config)
}

/// The rustls client side, mirror of [`rustls_server_config`].
pub fn rustls_client_config<C: Clock>(
    identity: &TlsIdentity,
    post_quantum_only: bool,
    clock: Arc<C>,
    protocol: &[u8],
) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = provider(post_quantum_only);
    let verifier = Arc::new(BindingOnlyVerifier::new(&provider));
    let mut config = rustls::ClientConfig::builder_with_details(provider, Arc::new(EnvTime(clock)))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| tls_error("client protocol versions", error))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key())
        .map_err(|error| tls_error("client certificate", error))?;
    config.alpn_protocols = vec![protocol.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_early_data = false;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::RuntimeClock;
    use hm_env::mem::SeededEntropy;
    use rustls::NamedGroup;

    /// Runs a TLS 1.3 handshake between the two configs in memory (plain TLS
    /// records, not QUIC: the negotiation is the same) and returns the group
    /// the server picked.
    fn negotiate(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> Result<NamedGroup, rustls::Error> {
        let name = ServerName::try_from(SERVER_NAME).expect("name");
        let mut client = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut server = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..20 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            let mut buffer = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buffer).expect("write");
            }
            let mut slice = &buffer[..];
            while !slice.is_empty() {
                server.read_tls(&mut slice).expect("read");
                server.process_new_packets()?;
            }
            let mut buffer = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buffer).expect("write");
            }
            let mut slice = &buffer[..];
            while !slice.is_empty() {
                client.read_tls(&mut slice).expect("read");
                client.process_new_packets()?;
            }
        }
        assert!(!server.is_handshaking(), "handshake did not finish");
        assert_eq!(server.alpn_protocol(), Some(ALPN));
        assert!(server.peer_certificates().is_some(), "mutual TLS");
        Ok(server
            .negotiated_key_exchange_group()
            .expect("negotiated")
            .name())
    }

    fn identity(name: &str) -> TlsIdentity {
        TlsIdentity::generate(&SeededEntropy::new(1, name.as_bytes())).expect("identity")
    }

    #[test]
    fn the_key_exchange_is_hybrid_post_quantum() {
        let clock = Arc::new(RuntimeClock);
        for (client_pq_only, server_pq_only) in
            [(true, true), (false, true), (true, false), (false, false)]
        {
            let client = rustls_client_config(&identity("a"), client_pq_only, clock.clone(), ALPN)
                .expect("client");
            let server = rustls_server_config(
                &identity("b"),
                server_pq_only,
                clock.clone(),
                &[ALPN.to_vec()],
            )
            .expect("server");
            assert_eq!(
                negotiate(client, server).expect("handshake"),
                NamedGroup::X25519MLKEM768
            );
        }
    }

    #[test]
    fn certificates_replay_from_entropy() {
        assert_eq!(identity("a").cert, identity("a").cert);
        assert_ne!(identity("a").cert, identity("b").cert);
    }

    /// Serves certificate "b" but signs the handshake with key "a".
    #[derive(Debug)]
    struct Mismatched(Arc<rustls::sign::CertifiedKey>);

    impl rustls::server::ResolvesServerCert for Mismatched {
        fn resolve(
            &self,
            _hello: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    #[test]
    fn a_tampered_handshake_signature_is_refused() {
        // The verifiers accept any certificate, but the CertificateVerify
        // signature must still match it; otherwise the exporter secret could
        // be shared with someone other than the certificate holder.
        let clock = Arc::new(RuntimeClock);
        let provider = provider(true);
        let signer = provider
            .key_provider
            .load_private_key(identity("a").key())
            .expect("key");
        let lying = Arc::new(rustls::sign::CertifiedKey::new(
            vec![identity("b").cert],
            signer,
        ));
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_client_cert_verifier(Arc::new(BindingOnlyVerifier::new(&provider)))
            .with_cert_resolver(Arc::new(Mismatched(lying)));
        let mut server = server;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let client =
            rustls_client_config(&identity("c"), true, clock.clone(), ALPN).expect("client");
        let error = negotiate(client, server).expect_err("forged CertificateVerify");
        assert!(
            matches!(
                error,
                rustls::Error::InvalidCertificate(_) | rustls::Error::PeerMisbehaved(_)
            ),
            "{error:?}"
        );

        // Control: the honest pair of the same certificates handshakes.
        let server = rustls_server_config(&identity("b"), true, clock.clone(), &[ALPN.to_vec()])
            .expect("server");
        let client = rustls_client_config(&identity("c"), true, clock, ALPN).expect("client");
        assert!(negotiate(client, server).is_ok());
    }
}

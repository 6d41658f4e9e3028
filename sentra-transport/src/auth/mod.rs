//! HMAC authentication: turns a `tonic::Request<SignedBatch>` into a
//! [`Verified`](sentra_core::Verified) envelope for the inner service, or fails with
//! [`AuthError`].
//!
//! Verification is [`sentra_core::Verifier::verify`] against a pluggable
//! [`Keyring`](sentra_core::Keyring), for the [`Method`](sentra_core::Method) this stack
//! serves (an envelope signed for `Push` does not verify as `FetchDesiredState`). The
//! payload is not decoded here; the inner service does that after verification.
//!
//! With mutual TLS, the client certificate of the connection (found in the request's
//! [`PeerInfo`](crate::server::PeerInfo) extension) must be valid for the envelope's agent
//! id as a DNS subject alternative name (`DNS:edge-01` for agent `edge-01`), so a stolen HMAC
//! key alone cannot be used from another agent's machine. [`AuthLayer::require_client_cert`]
//! additionally refuses requests from connections without a certificate.
//!
//! All authentication failures (unknown agent, unknown or expired key, bad tag) map to the
//! same `UNAUTHENTICATED` status; the detail only goes to the server's debug log.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use sentra_core::{AgentId, KeyId, MemoryKeyring, Method, Nonce, SecretKey,
//!     Seq, Signer, UnixMillis, Validity, Verified};
//! use sentra_transport::{BoxError, auth::AuthLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! let agent = AgentId::new("edge-01").unwrap();
//! let secret = SecretKey::from_bytes([7; 32]);
//! let mut keyring = MemoryKeyring::new();
//! keyring.insert(agent.clone(), KeyId::new(1), &secret, Validity::always());
//!
//! let svc = AuthLayer::new(Arc::new(keyring), Method::Push).layer(service_fn(
//!     |v: Verified| async move { Ok::<_, BoxError>(v.seq().get()) },
//! ));
//! let env = Signer::new(agent, KeyId::new(1), &secret).sign(
//!     Method::Push, Seq::new(9).unwrap(), UnixMillis::now(), Nonce::random(), "x".into());
//! assert_eq!(svc.oneshot(tonic::Request::new(env)).await.unwrap(), 9);
//! # }
//! ```

mod error;
pub mod future;
mod layer;
mod service;

use std::sync::Arc;

pub use error::AuthError;
pub use layer::AuthLayer;
use sentra_core::{AgentId, UnixMillis};
pub use service::Auth;

/// Source of server time for verification (tests inject a fixed clock).
pub type Clock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

/// The system wall clock.
#[must_use]
pub fn system_clock() -> UnixMillis {
    UnixMillis::now()
}

/// Whether the DER certificate `cert` is valid for `agent` as a DNS name.
pub(crate) fn cert_matches_agent(
    cert: &rustls_pki_types::CertificateDer<'_>,
    agent: &AgentId,
) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Ok(name) = rustls_pki_types::ServerName::try_from(agent.as_str()) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sentra_core::{
        AgentId, KeyId, MemoryKeyring, Method, Nonce, SecretKey, Seq, Signer, UnixMillis, Validity,
        Verified, proto::SignedBatch,
    };
    use tonic::Code;
    use tower::{ServiceExt, service_fn};
    use tower_layer::Layer;

    use super::*;
    use crate::{BoxError, server::PeerInfo, status};

    const NOW: i64 = 1_760_000_000_000;

    fn setup() -> (AuthLayer<MemoryKeyring>, Signer) {
        let agent = AgentId::new("edge-01").unwrap();
        let secret = SecretKey::from_bytes([3; 32]);
        let mut ring = MemoryKeyring::new();
        ring.insert(agent.clone(), KeyId::new(1), &secret, Validity::always());
        let layer = AuthLayer::new(Arc::new(ring), Method::Push)
            .clock(Arc::new(|| UnixMillis::from_millis(NOW)));
        (layer, Signer::new(agent, KeyId::new(1), &secret))
    }

    fn sign(s: &Signer, method: Method, at: i64) -> SignedBatch {
        s.sign(
            method,
            Seq::new(5).unwrap(),
            UnixMillis::from_millis(at),
            Nonce::from_bytes([1; 16]),
            "payload".into(),
        )
    }

    fn svc(
        layer: &AuthLayer<MemoryKeyring>,
    ) -> Auth<
        impl tower_service::Service<Verified, Response = String, Error = BoxError, Future = impl Send>
        + Clone,
        MemoryKeyring,
    > {
        layer.layer(service_fn(|v: Verified| async move {
            Ok::<_, BoxError>(v.agent_id().as_str().to_owned())
        }))
    }

    async fn code_of(layer: &AuthLayer<MemoryKeyring>, env: SignedBatch) -> tonic::Status {
        let err = svc(layer)
            .oneshot(tonic::Request::new(env))
            .await
            .unwrap_err();
        assert!(err.is::<AuthError>(), "{err}");
        status::to_status(err)
    }

    #[tokio::test]
    async fn valid_envelope_reaches_inner_as_verified() {
        let (layer, signer) = setup();
        let out = svc(&layer)
            .oneshot(tonic::Request::new(sign(&signer, Method::Push, NOW)))
            .await
            .unwrap();
        assert_eq!(out, "edge-01");
    }

    #[tokio::test]
    async fn bad_tag_unknown_key_and_unknown_agent_look_the_same() {
        let (layer, signer) = setup();
        let mut tampered = sign(&signer, Method::Push, NOW);
        tampered.seq += 1;
        let mut unknown_key = sign(&signer, Method::Push, NOW);
        unknown_key.key_id = 9;
        let other = Signer::new(
            AgentId::new("nobody").unwrap(),
            KeyId::new(1),
            &SecretKey::from_bytes([3; 32]),
        );
        let wrong_method = sign(&signer, Method::FetchDesiredState, NOW);
        let mut seen = Vec::new();
        for env in [
            tampered,
            unknown_key,
            sign(&other, Method::Push, NOW),
            wrong_method,
        ] {
            let s = code_of(&layer, env).await;
            assert_eq!(s.code(), Code::Unauthenticated);
            seen.push(s.message().to_owned());
        }
        seen.dedup();
        assert_eq!(seen, ["unauthenticated"]);
    }

    #[tokio::test]
    async fn skew_is_failed_precondition_with_server_time() {
        let (layer, signer) = setup();
        let s = code_of(&layer, sign(&signer, Method::Push, NOW - 3_600_000)).await;
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(status::server_time(&s), Some(UnixMillis::from_millis(NOW)));
    }

    #[tokio::test]
    async fn malformed_envelope_is_invalid_argument() {
        let (layer, signer) = setup();
        let mut env = sign(&signer, Method::Push, NOW);
        env.nonce.truncate(3);
        assert_eq!(code_of(&layer, env).await.code(), Code::InvalidArgument);
        let env = SignedBatch::default();
        assert_eq!(code_of(&layer, env).await.code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn required_client_cert_missing_is_permission_denied() {
        let (layer, signer) = setup();
        let layer = layer.require_client_cert(true);
        let mut req = tonic::Request::new(sign(&signer, Method::Push, NOW));
        req.extensions_mut().insert(PeerInfo::default());
        let err = svc(&layer).oneshot(req).await.unwrap_err();
        assert_eq!(status::to_status(err).code(), Code::PermissionDenied);
    }
}

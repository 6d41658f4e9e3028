//! Ed25519 signatures over module bytes, for `sentra plugin install`.

use ring::signature::{ED25519, UnparsedPublicKey};

use crate::error::{Error, Result};

/// Length of an Ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// Verifies `signature` (64 bytes, Ed25519, over the exact module bytes) with
/// `public_key` (32 bytes). `plugin` names the plugin in the error.
///
/// # Errors
///
/// [`Error::Signature`] when a length is wrong or the signature does not verify (the
/// module was changed, or signed by another key).
pub fn verify_module(plugin: &str, wasm: &[u8], signature: &[u8], public_key: &[u8]) -> Result<()> {
    let err = |message: String| Error::Signature {
        plugin: plugin.to_owned(),
        message,
    };
    if public_key.len() != PUBLIC_KEY_LEN {
        return Err(err(format!(
            "public key is {} bytes, expected {PUBLIC_KEY_LEN}",
            public_key.len()
        )));
    }
    if signature.len() != SIGNATURE_LEN {
        return Err(err(format!(
            "signature is {} bytes, expected {SIGNATURE_LEN}",
            signature.len()
        )));
    }
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(wasm, signature)
        .map_err(|_| err("Ed25519 signature does not match the module bytes".to_owned()))
}

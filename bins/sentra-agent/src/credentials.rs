//! The agent's identity and signing key, and the file that holds them.
//!
//! ```toml
//! # sentra-agent credentials. Secret: keep mode 0600.
//! agent_id = "edge-01"
//! key_id = 3
//! secret = "<32 bytes, standard base64>"
//! ```
//!
//! The file is replaced atomically (write a temporary file with mode 0600, `fsync` it,
//! rename it over the old one, `fsync` the directory), so a crash leaves either the old or
//! the new key, never a torn file. The secret is never logged: [`Credentials`]' `Debug`
//! redacts it.

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sentra_core::{AgentId, KeyId, SecretKey, Signer};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// File name of the credentials inside the state directory.
pub const CREDENTIALS_FILE: &str = "credentials.toml";

/// An agent id with its current signing key.
#[derive(Clone)]
pub struct Credentials {
    agent_id: AgentId,
    key_id: KeyId,
    secret: SecretKey,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("agent_id", &self.agent_id)
            .field("key_id", &self.key_id)
            .field("secret", &"redacted")
            .finish()
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    agent_id: String,
    key_id: u32,
    secret: String,
}

impl Credentials {
    /// Credentials from their parts (for embedding: `sentra-server --local-agent` hands the
    /// agent its id and key directly, without enrolment).
    #[must_use]
    pub fn new(agent_id: AgentId, key_id: KeyId, secret: SecretKey) -> Self {
        Self {
            agent_id,
            key_id,
            secret,
        }
    }

    /// Decodes a base64 secret as the enrolment and key-rotation endpoints return it.
    ///
    /// # Errors
    ///
    /// [`Error::Credentials`] if it is not base64 of exactly 32 bytes (the secret itself is
    /// never echoed).
    pub fn decode_secret(b64: &str) -> Result<SecretKey> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(b64.trim())
                .map_err(|_| Error::Credentials("secret is not valid base64".into()))?,
        );
        SecretKey::from_slice(&bytes).map_err(|_| {
            Error::Credentials(format!("secret is {} bytes, expected 32", bytes.len()))
        })
    }

    /// The agent id.
    #[must_use]
    pub fn agent_id(&self) -> &AgentId {
        &self.agent_id
    }

    /// The id of the current key.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The current secret.
    #[must_use]
    pub fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// A signer for the current key.
    #[must_use]
    pub fn signer(&self) -> Signer {
        Signer::new(self.agent_id.clone(), self.key_id, &self.secret)
    }

    /// Reads a credentials file.
    ///
    /// # Errors
    ///
    /// [`Error::NotEnrolled`] if it does not exist, [`Error::Io`], or
    /// [`Error::Credentials`] if it is invalid.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotEnrolled {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(Error::io("read", path)(e)),
        };
        let raw: RawFile = toml::from_str(&text).map_err(|e| {
            // toml's message can quote the offending line, which may be the secret.
            Error::Credentials(format!(
                "{} is not a valid credentials file ({})",
                path.display(),
                e.message()
            ))
        })?;
        let agent_id = AgentId::new(raw.agent_id)
            .map_err(|e| Error::Credentials(format!("{}: {e}", path.display())))?;
        let raw_secret = Zeroizing::new(raw.secret);
        let secret = Self::decode_secret(&raw_secret)?;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "credentials file is readable by other users; it should be mode 0600"
            );
        }
        Ok(Self {
            agent_id,
            key_id: KeyId::new(raw.key_id),
            secret,
        })
    }

    /// Writes the credentials to `path` atomically and durably with mode 0600.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the step that failed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
        let body = Zeroizing::new(format!(
            "# sentra-agent credentials. Secret: keep this file mode 0600.\n\
             agent_id = \"{}\"\nkey_id = {}\nsecret = \"{}\"\n",
            self.agent_id,
            self.key_id.get(),
            Zeroizing::new(STANDARD.encode(self.secret.expose_secret())).as_str()
        ));
        crate::atomic_file::write_atomic(path, body.as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(key: u32, byte: u8) -> Credentials {
        Credentials::new(
            AgentId::new("edge-01").expect("id"),
            KeyId::new(key),
            SecretKey::from_bytes([byte; 32]),
        )
    }

    #[test]
    fn round_trip_mode_and_redaction() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sub").join(CREDENTIALS_FILE);
        creds(1, 7).save(&path).expect("save");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Credentials::load(&path).expect("load");
        assert_eq!(back.agent_id().as_str(), "edge-01");
        assert_eq!(back.key_id(), KeyId::new(1));
        assert_eq!(back.secret().expose_secret(), &[7; 32]);
        let dbg = format!("{back:?}");
        assert!(dbg.contains("redacted") && !dbg.contains("BwcH"), "{dbg}");
        // Replacing keeps one file and no temporary.
        creds(2, 9).save(&path).expect("save again");
        let back = Credentials::load(&path).expect("load");
        assert_eq!(back.key_id(), KeyId::new(2));
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn missing_and_invalid() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(CREDENTIALS_FILE);
        assert!(matches!(
            Credentials::load(&path),
            Err(Error::NotEnrolled { .. })
        ));
        std::fs::write(
            &path,
            "agent_id = \"edge-01\"\nkey_id = 1\nsecret = \"c2hvcnQ=\"\n",
        )
        .expect("write");
        let e = Credentials::load(&path)
            .expect_err("short secret")
            .to_string();
        assert!(e.contains("5 bytes"), "{e}");
        std::fs::write(&path, "agent_id = \"Bad Id\"\nkey_id = 1\nsecret = \"x\"\n")
            .expect("write");
        assert!(Credentials::load(&path).is_err());
        std::fs::write(&path, "secret = \"TOPSECRETVALUE\"\nnot toml at all").expect("write");
        let e = Credentials::load(&path).expect_err("garbage").to_string();
        assert!(!e.contains("TOPSECRETVALUE"), "{e}");
    }
}

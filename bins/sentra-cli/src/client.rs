//! A small client for the Sentra REST API: server address, bearer token storage and JSON
//! error decoding shared by every command that talks to a running server.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// Where the server is and how to authenticate, shared by all API commands.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Conn {
    /// Base URL of the sentra-server REST API.
    #[arg(
        long,
        env = "SENTRA_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub(crate) server: String,
    /// Bearer token to use instead of the one saved by `sentra login`.
    #[arg(long, env = "SENTRA_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
    /// CA certificate (PEM) to trust for an https server with a private CA.
    #[arg(
        long,
        env = "SENTRA_CA_CERT",
        visible_alias = "ca-file",
        value_name = "FILE",
        global = true
    )]
    pub(crate) ca_cert: Option<PathBuf>,
}

/// The token `sentra login` saved, with its expiry.
#[derive(Debug, Serialize, Deserialize)]
struct SavedToken {
    server: String,
    access_token: String,
    expires_at_s: u64,
}

/// Directory for the CLI's own state (`$SENTRA_CLI_DIR`, else `$XDG_CONFIG_HOME/sentra`,
/// else `~/.config/sentra`).
pub(crate) fn cli_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SENTRA_CLI_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(d).join("sentra");
    }
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
        .join(".config/sentra")
}

fn token_path() -> PathBuf {
    cli_dir().join("token.json")
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Saves a token readable by the owner only.
pub(crate) fn save_token(
    server: &str,
    access_token: &str,
    expires_in_s: u64,
) -> anyhow::Result<PathBuf> {
    let path = token_path();
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let saved = SavedToken {
        server: server.trim_end_matches('/').to_owned(),
        access_token: access_token.to_owned(),
        expires_at_s: now_s() + expires_in_s,
    };
    write_private_atomic(&path, &serde_json::to_vec(&saved)?)?;
    Ok(path)
}

/// Replaces `path` with `bytes`, readable by the owner only, atomically and durably: a
/// temporary file in the same directory (`tempfile`: `O_EXCL`, mode 0600 from creation, a
/// random name, removed again on any failure) is written and `fsync`ed, renamed over `path`
/// (`persist`), then the directory is `fsync`ed so the rename survives a crash. Readers see
/// the old token or the new one, never a torn or world-readable file.
pub(crate) fn write_private_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".token.").suffix(".tmp");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
    let mut tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("replacing {}", path.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(())
}

/// An API client bound to one server.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// A JSON error body from the server: `{"error": {"code", "message"}}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

impl Api {
    /// A client for `conn`; the token comes from `--token`/`SENTRA_TOKEN` or from the file
    /// `sentra login` wrote for the same server.
    pub(crate) fn new(conn: &Conn) -> anyhow::Result<Self> {
        let base = conn.server.trim_end_matches('/').to_owned();
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("sentra-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &conn.ca_cert {
            let pem = fs::read(ca).with_context(|| format!("reading CA {}", ca.display()))?;
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_pem(&pem).context("CA certificate is not valid PEM")?,
            );
        }
        let token = conn.token.clone().or_else(|| {
            let saved: SavedToken = serde_json::from_slice(&fs::read(token_path()).ok()?).ok()?;
            (saved.server == base && saved.expires_at_s > now_s() + 5).then_some(saved.access_token)
        });
        Ok(Self {
            http: builder.build()?,
            base,
            token,
        })
    }

    /// The base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            if bytes.is_empty() {
                return serde_json::from_slice(b"null").context("empty response");
            }
            return serde_json::from_slice(&bytes)
                .context("server sent an unexpected response body");
        }
        let hint = match status.as_u16() {
            401 if self.token.is_none() => " — run `sentra login` first (or pass --token)",
            401 => " — your token may have expired: run `sentra login`",
            403 => " — this needs the admin role",
            _ => "",
        };
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => bail!("{} ({}): {}{hint}", status, e.error.code, e.error.message),
            Err(_) => bail!("{status}{hint}"),
        }
    }

    /// The error for a request that got no HTTP response, with a hint: a certificate the
    /// client does not trust (private CA) is the usual cause with https, else a server that
    /// is not running.
    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        let mut tls = false;
        while let Some(s) = source {
            tls |= s.to_string().contains("certificate");
            source = s.source();
        }
        let hint = if tls {
            "its TLS certificate is not trusted: pass --ca-cert <CA PEM file> (or SENTRA_CA_CERT) \
             if a private CA issued it"
        } else {
            "is sentra-server running?"
        };
        anyhow::Error::new(e).context(format!(
            "cannot reach the Sentra server at {} ({hint})",
            self.base
        ))
    }

    /// GET `path` and decode JSON.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// GET `path` and return the status code with the body as JSON (`Null` when the body is
    /// not JSON), without turning an error status into an error: for `/readyz`, whose 503
    /// body says why.
    pub(crate) async fn get_with_status(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// POST a JSON body to `path` and return the status code with the body as JSON (`Null`
    /// when it is not JSON), without turning an error status into an error: for `login`,
    /// whose 401 means a wrong password, not a missing login.
    pub(crate) async fn post_with_status<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach the Sentra server at {} (is sentra-server running?)",
                    self.base
                )
            })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// GET `path` and return the raw body text (CSV exports).
    pub(crate) async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            match serde_json::from_str::<ErrorBody>(&text) {
                Ok(e) => bail!("{status} ({}): {}", e.error.code, e.error.message),
                Err(_) => bail!("{status}"),
            }
        }
        Ok(text)
    }

    /// POST a JSON body to `path` and decode JSON.
    pub(crate) async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// PUT a JSON body to `path` and decode JSON.
    pub(crate) async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::PUT, path).json(body))
            .await
    }

    /// DELETE `path`.
    pub(crate) async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }
}

/// Percent-encodes one URL path segment or query value.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::{enc, write_private_atomic};

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn entries(d: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn token_file_is_private_and_replaced_atomically() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("token.json");
        write_private_atomic(&p, b"{\"a\":1}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"a\":1}");
        assert_eq!(mode(&p), 0o600);
        // An existing world-readable file (an old CLI, a hand copy) is replaced, not
        // rewritten in place: the new file is 0600 and no temporary file is left behind.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let old_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap());
        write_private_atomic(&p, b"{\"a\":2}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"a\":2}");
        assert_eq!(mode(&p), 0o600);
        let new_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap());
        assert_ne!(old_inode, new_inode, "written in place instead of renamed");
        assert_eq!(entries(d.path()), ["token.json"]);
    }

    #[test]
    fn failed_write_leaves_the_old_token_and_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("token.json");
        write_private_atomic(&p, b"old").unwrap();
        // The target is now a non-empty directory: the rename fails after the temporary
        // file was written; the temporary file must be gone and the error must say what.
        let target = d.path().join("dir");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"x").unwrap();
        let e = write_private_atomic(&target, b"new").unwrap_err();
        assert!(format!("{e:#}").contains("replacing"), "{e:#}");
        assert_eq!(entries(d.path()), ["dir", "token.json"]);
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        // A missing directory is a clear error too.
        let e = write_private_atomic(&d.path().join("nope/token.json"), b"x").unwrap_err();
        assert!(
            format!("{e:#}").contains("creating a temporary file"),
            "{e:#}"
        );
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
        assert_eq!(enc("node_load1"), "node_load1");
        assert_eq!(enc("{x=\"y\"}"), "%7Bx%3D%22y%22%7D");
    }
}

//! Notifiers: the [`Notifier`] trait and the generic [`Webhook`].
//!
//! The webhook POSTs a JSON body compatible with Alertmanager's webhook payload
//! (`version: "4"`, `groupKey`, `status`, `receiver`, `groupLabels`, `commonLabels`,
//! `commonAnnotations`, `externalURL`, `alerts[]` with `status`, `labels`, `annotations`,
//! `startsAt`, `endsAt`, `generatorURL`, `fingerprint`), so receivers written for
//! Alertmanager work unchanged.
//!
//! **Signature.** With a [`Secret`], every attempt carries
//! `Sentra-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` — the
//! scheme of Stripe's webhook signatures: the receiver recomputes the HMAC over the
//! timestamp and the raw body, compares in constant time and rejects old timestamps
//! (replays). See [`signature`].
//!
//! **Delivery.** Each attempt has a timeout ([`WebhookConfig::timeout`]). Connection
//! failures, timeouts, 5xx, 408 and 429 are retried up to [`WebhookConfig::max_attempts`]
//! with exponential backoff (`backoff`, doubled per retry, capped at `max_backoff`); any
//! other 4xx is final at once (the request will not get better). Redirects are not
//! followed. The outcome is a [`Delivery`] or one clear error: [`Error::Timeout`],
//! [`Error::Unreachable`], [`Error::Rejected`]. Errors and logs name the receiver and the
//! URL's scheme, host and port only — webhook URLs often carry a token in the path.

use std::{fmt, future::Future, pin::Pin, time::Duration};

use sentra_core::UnixMillis;
use zeroize::Zeroizing;

use crate::{
    error::{Error, Result},
    eval::Status,
    route::Notification,
};

/// A boxed future, as returned by [`Notifier::notify`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A successful delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// Attempts it took (1 = first try).
    pub attempts: u32,
    /// The receiver's HTTP status.
    pub status: u16,
    /// The start of the receiver's answer (at most 256 bytes, lossy UTF-8).
    pub body: String,
}

/// Something that delivers notifications to one receiver.
pub trait Notifier: Send + Sync + fmt::Debug {
    /// The receiver name routes refer to.
    fn name(&self) -> &str;

    /// Delivers one notification, retrying as the notifier sees fit.
    ///
    /// # Errors
    ///
    /// A delivery error of [`Error`] naming the receiver, after the notifier gave up.
    fn notify<'a>(&'a self, notification: &'a Notification) -> BoxFuture<'a, Result<Delivery>>;
}

/// A webhook signing secret: zeroized on drop, never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps secret bytes.
    #[must_use]
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(bytes.into()))
    }

    /// The secret from environment variable `var` (its value as bytes, as set).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable (never its value) when it is unset, empty or
    /// not valid Unicode.
    pub fn from_env(var: &str) -> Result<Self> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Self::new(v.into_bytes())),
            Ok(_) => Err(Error::Config(format!("secret variable {var} is empty"))),
            Err(std::env::VarError::NotPresent) => {
                Err(Error::Config(format!("secret variable {var} is not set")))
            }
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::Config(format!(
                "secret variable {var} is not valid Unicode"
            ))),
        }
    }

    /// The secret from a file (e.g. a systemd credential or a mounted secret); one trailing
    /// newline (`\n` or `\r\n`) is removed.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the path (never the content) when it cannot be read or is
    /// empty.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let mut bytes = Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| Error::Config(format!("secret file {}: {e}", path.display())))?,
        );
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(Error::Config(format!(
                "secret file {} is empty",
                path.display()
            )));
        }
        Ok(Self(bytes))
    }

    /// The secret bytes.
    #[must_use]
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The `Sentra-Signature` header value for `body` sent at `timestamp` (Unix seconds):
/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
///
/// ```
/// use sentra_alerts::notify::{Secret, signature};
///
/// let sig = signature(&Secret::new("s3cret"), 1_700_000_000, br#"{"a":1}"#);
/// assert!(sig.starts_with("t=1700000000,v1="));
/// assert_eq!(sig.len(), "t=1700000000,v1=".len() + 64);
/// ```
#[must_use]
pub fn signature(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={timestamp},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Webhook settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// Receiver name (routes refer to it).
    pub name: String,
    /// `http://` or `https://` URL.
    pub url: String,
    /// Signing secret (none: no `Sentra-Signature` header).
    pub secret: Option<Secret>,
    /// Per-attempt timeout, connecting included (default 10 s).
    pub timeout: Duration,
    /// Attempts in all, at least 1 (default 3).
    pub max_attempts: u32,
    /// Wait before the first retry, doubled per retry (default 1 s).
    pub backoff: Duration,
    /// Longest wait between retries (default 30 s).
    pub max_backoff: Duration,
    /// `externalURL` in the payload (this server's address for humans; default empty).
    pub external_url: String,
    /// At most this many alerts per request (0: all); the rest is counted in
    /// `truncatedAlerts`.
    pub max_alerts: usize,
}

impl WebhookConfig {
    /// Defaults for a receiver `name` at `url`.
    #[must_use]
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            secret: None,
            timeout: Duration::from_secs(10),
            max_attempts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            external_url: String::new(),
            max_alerts: 0,
        }
    }
}

/// The generic webhook notifier. See the [module documentation](self).
#[derive(Debug)]
pub struct Webhook {
    config: WebhookConfig,
    endpoint: String,
    client: reqwest::Client,
}

const BODY_SNIPPET: usize = 256;

fn snippet(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_SNIPPET)]).into_owned()
}

impl Webhook {
    /// A webhook notifier.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a URL that does not parse or is not http(s), a zero timeout
    /// or zero attempts, or an HTTP client that cannot be built.
    pub fn new(config: WebhookConfig) -> Result<Self> {
        let url = reqwest::Url::parse(&config.url).map_err(|e| {
            Error::Config(format!(
                "receiver {:?}: webhook URL does not parse: {e}",
                config.name
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "receiver {:?}: webhook URL must be http or https, not {:?}",
                config.name,
                url.scheme()
            )));
        }
        if config.timeout.is_zero() || config.max_attempts == 0 {
            return Err(Error::Config(format!(
                "receiver {:?}: timeout and max_attempts must be positive",
                config.name
            )));
        }
        let endpoint = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        );
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sentra-alerts/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            config,
            endpoint,
            client,
        })
    }

    /// Scheme, host and port of the URL (what errors show).
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The JSON body sent for `n` (Alertmanager webhook payload, version 4).
    #[must_use]
    pub fn payload(&self, n: &Notification) -> Vec<u8> {
        payload(
            n,
            &self.config.name,
            &self.config.external_url,
            self.config.max_alerts,
        )
    }

    async fn attempt(&self, body: &[u8]) -> std::result::Result<(u16, String), Failure> {
        let mut req = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(secret) = &self.config.secret {
            let t = UnixMillis::now().as_millis() / 1000;
            req = req.header("Sentra-Signature", signature(secret, t, body));
        }
        let resp = req.send().await.map_err(|e| classify(&e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| classify(&e))?;
        Ok((status, snippet(&bytes)))
    }
}

enum Failure {
    Timeout,
    Unreachable(String),
}

fn classify(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        return Failure::Timeout;
    }
    // the chain without the URL (it may carry a token)
    let mut msg = if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    Failure::Unreachable(msg)
}

impl Notifier for Webhook {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Delivery>> {
        Box::pin(async move {
            let body = self.payload(n);
            let mut wait = self.config.backoff;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let last = attempt >= self.config.max_attempts;
                let outcome = self.attempt(&body).await;
                let err = match outcome {
                    Ok((status, body)) if (200..300).contains(&status) => {
                        tracing::debug!(receiver = %self.config.name, attempt, status, "notification delivered");
                        return Ok(Delivery {
                            attempts: attempt,
                            status,
                            body,
                        });
                    }
                    Ok((status, body)) => {
                        let e = Error::Rejected {
                            receiver: self.config.name.clone(),
                            endpoint: self.endpoint.clone(),
                            attempts: attempt,
                            status,
                            body,
                        };
                        if !(status >= 500 || status == 408 || status == 429) {
                            return Err(e);
                        }
                        e
                    }
                    Err(Failure::Timeout) => Error::Timeout {
                        receiver: self.config.name.clone(),
                        endpoint: self.endpoint.clone(),
                        attempts: attempt,
                        timeout: self.config.timeout,
                    },
                    Err(Failure::Unreachable(message)) => Error::Unreachable {
                        receiver: self.config.name.clone(),
                        endpoint: self.endpoint.clone(),
                        attempts: attempt,
                        message,
                    },
                };
                if last {
                    return Err(err);
                }
                tracing::warn!(receiver = %self.config.name, attempt, error = %err, retry_in = ?wait, "notification attempt failed");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(self.config.max_backoff);
            }
        })
    }
}

fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

fn status_str(s: Status) -> &'static str {
    match s {
        Status::Resolved => "resolved",
        _ => "firing",
    }
}

/// A label set serialized as a JSON object.
struct Object<'a>(&'a [(String, String)]);

impl serde::Serialize for Object<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct AlertBody<'a> {
    status: &'static str,
    labels: Object<'a>,
    annotations: Object<'a>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'static str,
    fingerprint: String,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    version: &'static str,
    group_key: &'a str,
    truncated_alerts: usize,
    status: &'static str,
    receiver: &'a str,
    group_labels: Object<'a>,
    common_labels: Object<'a>,
    common_annotations: Object<'a>,
    #[serde(rename = "externalURL")]
    external_url: &'a str,
    alerts: Vec<AlertBody<'a>>,
}

/// The Alertmanager-compatible webhook body (version 4) for `n`, as bytes.
fn payload(n: &Notification, receiver: &str, external_url: &str, max_alerts: usize) -> Vec<u8> {
    let keep = if max_alerts == 0 {
        n.alerts.len()
    } else {
        max_alerts.min(n.alerts.len())
    };
    let common_labels = n.common_labels();
    let common_annotations = n.common_annotations();
    let body = Body {
        version: "4",
        group_key: &n.group_key,
        truncated_alerts: n.alerts.len() - keep,
        status: status_str(n.status),
        receiver,
        group_labels: Object(&n.group_labels),
        common_labels: Object(&common_labels),
        common_annotations: Object(&common_annotations),
        external_url,
        alerts: n.alerts[..keep]
            .iter()
            .map(|a| AlertBody {
                status: status_str(a.status),
                labels: Object(&a.labels),
                annotations: Object(&a.annotations),
                starts_at: rfc3339(a.starts_at.as_millis()),
                ends_at: a.ends_at.map_or_else(
                    || "0001-01-01T00:00:00Z".to_owned(),
                    |e| rfc3339(e.as_millis()),
                ),
                generator_url: "",
                fingerprint: a.fingerprint.to_string(),
            })
            .collect(),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The log notifier: each notification becomes one `tracing` event at info level
/// (target `sentra_alerts::notify`) with the receiver, status, group labels and each
/// alert's name, labels and summary. For a server without receivers, and to see what a
/// route would send. Always delivers (`status` 200, empty body).
#[derive(Debug, Clone)]
pub struct Log {
    name: String,
}

impl Log {
    /// A log notifier for receiver `name`.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

fn flat(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Notifier for Log {
    fn name(&self) -> &str {
        &self.name
    }

    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Delivery>> {
        Box::pin(async move {
            let status = match n.status {
                Status::Resolved => "resolved",
                _ => "firing",
            };
            for a in &n.alerts {
                let alert_status = match a.status {
                    Status::Resolved => "resolved",
                    _ => "firing",
                };
                let summary = a
                    .annotations
                    .iter()
                    .find(|(k, _)| k == "summary")
                    .map_or("", |(_, v)| v.as_str());
                tracing::info!(
                    receiver = %self.name,
                    notification = status,
                    group = %flat(&n.group_labels),
                    status = alert_status,
                    fingerprint = %a.fingerprint,
                    labels = %flat(&a.labels),
                    summary,
                    "alert notification"
                );
            }
            Ok(Delivery {
                attempts: 1,
                status: 200,
                body: String::new(),
            })
        })
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: String,
    url: Option<String>,
    url_file: Option<std::path::PathBuf>,
    secret_file: Option<std::path::PathBuf>,
    secret_env: Option<String>,
    timeout: Option<String>,
    max_attempts: Option<u32>,
    backoff: Option<String>,
    max_backoff: Option<String>,
    external_url: Option<String>,
    max_alerts: Option<usize>,
}

#[derive(serde::Deserialize)]
struct RawReceivers {
    #[serde(default)]
    receiver: Vec<toml::Spanned<RawReceiver>>,
}

/// Parses the `[[receiver]]` tables of a routing file (other tables are left to
/// [`crate::route::parse_routing`]) into webhook settings.
///
/// Fields: `name` (1–64 of `A-Z a-z 0-9 _ . -`), `url` or `url_file` (a file holding the
/// URL, for URLs carrying a token), `secret_file` or `secret_env` (the HMAC signing secret:
/// never in the file itself), `timeout`, `backoff`, `max_backoff` (humantime durations),
/// `max_attempts`, `external_url`, `max_alerts`. Secrets and URLs are read here; errors
/// name files and variables, never their contents.
///
/// ```
/// let receivers = sentra_alerts::notify::parse_receivers(r#"
/// [[receiver]]
/// name = "ops"
/// url = "https://hooks.example.net/sentra"
/// timeout = "5s"
///
/// [[route]]
/// receiver = "ops"
/// "#)?;
/// assert_eq!(receivers[0].name, "ops");
/// # Ok::<(), sentra_alerts::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Syntax`] for TOML that does not parse or an unknown field; [`Error::Invalid`]
/// listing every bad receiver with its line (duplicate or malformed name, no URL or both
/// `url` and `url_file`, both secret sources, a bad duration, an unreadable file or unset
/// variable).
pub fn parse_receivers(src: &str) -> Result<Vec<WebhookConfig>> {
    use crate::error::Problem;
    let raw: RawReceivers = toml::from_str(src).map_err(|e| {
        Error::Syntax(Problem {
            line: e.span().map(|s| crate::rule::line_of(src, s.start)),
            rule: None,
            message: e.message().trim().to_owned(),
        })
    })?;
    let mut problems = Vec::new();
    let mut out: Vec<WebhookConfig> = Vec::new();
    for spanned in raw.receiver {
        let line = crate::rule::line_of(src, spanned.span().start);
        let r = spanned.into_inner();
        let mut problem = |message: String| {
            problems.push(Problem {
                line: Some(line),
                rule: None,
                message: format!("receiver {:?}: {message}", r.name),
            });
        };
        if r.name.is_empty()
            || r.name.len() > 64
            || !r
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            problem("receiver name must be 1-64 of A-Z a-z 0-9 _ . -".to_owned());
        }
        if out.iter().any(|w| w.name == r.name) {
            problem("duplicate receiver name".to_owned());
        }
        let url = match (r.url, &r.url_file) {
            (Some(u), None) => Some(u),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(u) if !u.trim().is_empty() => Some(u.trim().to_owned()),
                Ok(_) => {
                    problem(format!("url_file {} is empty", path.display()));
                    None
                }
                Err(e) => {
                    problem(format!("url_file {}: {e}", path.display()));
                    None
                }
            },
            (Some(_), Some(_)) => {
                problem("set url or url_file, not both".to_owned());
                None
            }
            (None, None) => {
                problem("a receiver needs url or url_file".to_owned());
                None
            }
        };
        let secret = match (&r.secret_file, &r.secret_env) {
            (None, None) => None,
            (Some(path), None) => Secret::from_file(path)
                .map_err(|e| problem(e.to_string()))
                .ok(),
            (None, Some(var)) => Secret::from_env(var)
                .map_err(|e| problem(e.to_string()))
                .ok(),
            (Some(_), Some(_)) => {
                problem("set secret_file or secret_env, not both".to_owned());
                None
            }
        };
        let mut config = WebhookConfig::new(r.name.clone(), url.unwrap_or_default());
        config.secret = secret;
        let mut duration = |field: &str, v: Option<&String>, default: Duration| match v {
            None => default,
            Some(s) => humantime::parse_duration(s).unwrap_or_else(|e| {
                problem(format!("`{field}` {s:?}: {e}"));
                default
            }),
        };
        config.timeout = duration("timeout", r.timeout.as_ref(), config.timeout);
        config.backoff = duration("backoff", r.backoff.as_ref(), config.backoff);
        config.max_backoff = duration("max_backoff", r.max_backoff.as_ref(), config.max_backoff);
        if let Some(n) = r.max_attempts {
            config.max_attempts = n;
        }
        if let Some(u) = r.external_url {
            config.external_url = u;
        }
        if let Some(n) = r.max_alerts {
            config.max_alerts = n;
        }
        out.push(config);
    }
    if !problems.is_empty() {
        return Err(Error::Invalid(problems));
    }
    Ok(out)
}

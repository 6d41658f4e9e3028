//! `sentra doctor`: checks what a working installation needs, one line per check.

use std::{net::ToSocketAddrs as _, path::PathBuf, time::Duration};

use serde::Serialize;
use serde_json::Value;

use crate::{
    admin::runtime,
    client::{Api, Conn},
    table::Table,
};

/// `sentra doctor`.
#[derive(Debug, clap::Args)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    conn: Conn,
    /// The server's gRPC ingest address to probe (host:port).
    #[arg(long, env = "SENTRA_GRPC", default_value = "127.0.0.1:7443")]
    grpc: String,
    /// A data directory to check (disk space, file permissions), if on this host.
    #[arg(long, env = "SENTRA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// An agent state directory to check (credentials file, WAL), if on this host.
    #[arg(long)]
    agent_state: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Ok,
    Warn,
    Fail,
    #[cfg_attr(
        target_os = "linux",
        allow(
            dead_code,
            reason = "on Linux every check runs; only other systems skip some"
        )
    )]
    Skip,
}

#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    outcome: Outcome,
    detail: String,
}

fn check(check: &'static str, outcome: Outcome, detail: impl Into<String>) -> Check {
    Check {
        check,
        outcome,
        detail: detail.into(),
    }
}

pub(crate) fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let mut checks = Vec::new();
    runtime()?.block_on(async {
        let api = Api::new(&args.conn)?;
        checks.push(match api.get::<Value>("/healthz").await {
            Ok(_) => check(
                "rest api",
                Outcome::Ok,
                format!("{} answers /healthz", api.base()),
            ),
            Err(e) => check("rest api", Outcome::Fail, format!("{e:#}")),
        });
        checks.push(match api.get_with_status("/readyz").await {
            Ok((200..=299, _)) => check("readiness", Outcome::Ok, "server reports ready"),
            Ok((status, body)) => check("readiness", Outcome::Fail, not_ready(status, &body)),
            Err(e) => check("readiness", Outcome::Fail, format!("{e:#}")),
        });
        checks.push(match api.get::<Value>("/api/v1/auth/me").await {
            Ok(v) => check(
                "credentials",
                Outcome::Ok,
                format!(
                    "logged in as {} ({})",
                    v["username"].as_str().unwrap_or("?"),
                    v["role"].as_str().unwrap_or("?")
                ),
            ),
            Err(e) => check("credentials", Outcome::Warn, format!("{e:#}")),
        });
        let grpc = probe_tcp(&args.grpc).await;
        checks.push(match grpc {
            Ok(()) => check(
                "grpc ingest",
                Outcome::Ok,
                format!("{} accepts connections", args.grpc),
            ),
            Err(e) => check("grpc ingest", Outcome::Fail, format!("{}: {e}", args.grpc)),
        });
        anyhow::Ok(())
    })?;
    checks.push(wireguard_check());
    if let Some(dir) = &args.data_dir {
        checks.push(disk_check("server disk", dir));
        checks.push(private_file_check("control.db", &dir.join("control.db")));
        let (metrics, control) = runtime()?.block_on(async {
            (
                integrity_check("metrics.db integrity", &dir.join("metrics.db")).await,
                integrity_check("control.db integrity", &dir.join("control.db")).await,
            )
        });
        checks.push(metrics);
        checks.push(control);
    }
    if let Some(dir) = &args.agent_state {
        checks.push(disk_check("agent disk", dir));
        checks.push(private_file_check(
            "agent credentials",
            &dir.join("credentials.toml"),
        ));
    }
    let failed = checks.iter().any(|c| c.outcome == Outcome::Fail);
    if args.json {
        println!("{}", crate::safe::json_pretty(&checks)?);
    } else {
        let mut t = Table::new(["CHECK", "RESULT", "DETAIL"]);
        for c in &checks {
            let r = match c.outcome {
                Outcome::Ok => "ok",
                Outcome::Warn => "warn",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "skip",
            };
            t.row([c.check.to_owned(), r.to_owned(), c.detail.clone()]);
        }
        print!("{t}");
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// Why `/readyz` said no: the reasons of its JSON body (`{"status": "unavailable",
/// "reasons": [{"component", "message"} | "text", …]}`), else the status code.
fn not_ready(status: u16, body: &Value) -> String {
    let reasons: Vec<String> = body["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .map(
            |r| match (r.as_str(), r["component"].as_str(), r["message"].as_str()) {
                (Some(text), _, _) => text.to_owned(),
                (None, Some(c), Some(m)) => format!("{c}: {m}"),
                (None, None, Some(m)) => m.to_owned(),
                _ => r.to_string(),
            },
        )
        .collect();
    if reasons.is_empty() {
        match body["error"]["message"].as_str() {
            Some(m) => format!("server not ready ({status}): {m}"),
            None => format!("server not ready ({status})"),
        }
    } else {
        format!("server not ready ({status}): {}", reasons.join("; "))
    }
}

/// Messages `PRAGMA integrity_check` prints at most (it stops after 100 by default).
const INTEGRITY_MESSAGES: usize = 5;

/// SQLite's `PRAGMA integrity_check` on `path`, opened read-only (safe while the server runs:
/// a reader in WAL mode does not block the writer). `Fail` with the first messages unless the
/// answer is `ok`; `Warn` if the file is missing.
async fn integrity_check(name: &'static str, path: &std::path::Path) -> Check {
    use sqlx::{Connection as _, sqlite::SqliteConnectOptions};
    if let Err(e) = std::fs::metadata(path) {
        return check(name, Outcome::Warn, format!("{}: {e}", path.display()));
    }
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(5));
    let result = async {
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
        let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>(rows)
    }
    .await;
    match result {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => check(
            name,
            Outcome::Ok,
            format!("{}: SQLite integrity check ok", path.display()),
        ),
        Ok(rows) => {
            let more = rows.len().saturating_sub(INTEGRITY_MESSAGES);
            let mut detail = format!(
                "{}: SQLite integrity check FAILED: {}",
                path.display(),
                rows.iter()
                    .take(INTEGRITY_MESSAGES)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            if more > 0 {
                detail.push_str(&format!(" (and {more} more)"));
            }
            check(name, Outcome::Fail, detail)
        }
        Err(e) => check(
            name,
            Outcome::Fail,
            format!(
                "{}: SQLite integrity check could not run: {e}",
                path.display()
            ),
        ),
    }
}

async fn probe_tcp(addr: &str) -> std::io::Result<()> {
    let addrs: Vec<_> = addr.to_socket_addrs()?.collect();
    let first = addrs
        .first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(first),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 3 s"))??;
    Ok(())
}

fn wireguard_check() -> Check {
    #[cfg(target_os = "linux")]
    {
        match sentra_wg::blocking::Client::connect().and_then(|c| c.list_interfaces()) {
            Ok(ifaces) => check(
                "wireguard",
                Outcome::Ok,
                format!(
                    "netlink access works; {} WireGuard interface(s)",
                    ifaces.len()
                ),
            ),
            Err(e) => check(
                "wireguard",
                Outcome::Warn,
                format!("{e} (agents on this host cannot report WireGuard)"),
            ),
        }
    }
    #[cfg(not(target_os = "linux"))]
    check(
        "wireguard",
        Outcome::Skip,
        "WireGuard netlink access needs Linux",
    )
}

fn disk_check(name: &'static str, dir: &std::path::Path) -> Check {
    match rustix::fs::statvfs(dir) {
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let total = st.f_blocks.saturating_mul(st.f_frsize).max(1);
            let pct = free as f64 * 100.0 / total as f64;
            let outcome = if free < 256 << 20 || pct < 2.0 {
                Outcome::Fail
            } else if pct < 10.0 {
                Outcome::Warn
            } else {
                Outcome::Ok
            };
            check(
                name,
                outcome,
                format!(
                    "{}: {:.1} GiB free ({pct:.0} %)",
                    dir.display(),
                    free as f64 / f64::from(1u32 << 30)
                ),
            )
        }
        Err(e) => check(name, Outcome::Fail, format!("{}: {e}", dir.display())),
    }
}

fn private_file_check(name: &'static str, path: &std::path::Path) -> Check {
    match std::fs::metadata(path) {
        Ok(meta) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return check(
                        name,
                        Outcome::Fail,
                        format!(
                            "{} is mode {mode:o}; it holds secrets: chmod 600 it",
                            path.display()
                        ),
                    );
                }
                check(
                    name,
                    Outcome::Ok,
                    format!("{} is private (mode {mode:o})", path.display()),
                )
            }
            #[cfg(not(unix))]
            check(
                name,
                Outcome::Skip,
                format!("{} exists; permissions not checked here", path.display()),
            )
        }
        Err(e) => check(name, Outcome::Warn, format!("{}: {e}", path.display())),
    }
}

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
    #[cfg_attr(target_os = "linux", allow(dead_code))]
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
        checks.push(match api.get::<Value>("/readyz").await {
            Ok(_) => check("readiness", Outcome::Ok, "server reports ready"),
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
        println!("{}", serde_json::to_string_pretty(&checks)?);
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

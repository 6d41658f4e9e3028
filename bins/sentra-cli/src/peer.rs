//! `sentra peer …`: onboard WireGuard clients on an agent's interface over the REST API —
//! address pools, add (the client's wg-quick file and QR code, shown once), list, show,
//! remove, and the file or QR code of an existing peer (without its private key).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::{
    admin::{Output, runtime},
    client::{Api, Conn, enc, write_private_atomic},
    safe::{display_safe, display_safe_lines, json_pretty},
    table::{Table, age_ms},
};

/// `sentra peer …`.
#[derive(Debug, clap::Args)]
pub(crate) struct PeerArgs {
    #[command(subcommand)]
    command: PeerCommand,
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    out: Output,
}

/// The interface a command works on.
#[derive(Debug, clap::Args)]
struct Target {
    /// Agent id.
    agent: String,
    /// WireGuard interface name on the agent (e.g. wg0).
    interface: String,
}

/// What the client's wg-quick file needs besides the peer.
#[derive(Debug, clap::Args)]
struct ClientOpts {
    /// The server as the client reaches it: host:port, ip:port or `[ipv6]:port`.
    #[arg(long)]
    endpoint: String,
    /// The server interface's public key (default: as the agent reported it).
    #[arg(long)]
    server_public_key: Option<String>,
    /// DNS servers for the client (comma-separated IP addresses).
    #[arg(long, value_delimiter = ',')]
    dns: Vec<String>,
    /// Split tunnel: route only these prefixes through the tunnel (comma-separated;
    /// `--split` alone: the interface's pool). Default: full tunnel.
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    split: Option<Vec<String>>,
    /// The client's persistent keepalive, seconds.
    #[arg(long, default_value_t = 0)]
    keepalive: u16,
}

impl ClientOpts {
    fn body(&self) -> serde_json::Map<String, Value> {
        let mut b = serde_json::Map::new();
        b.insert("endpoint".into(), json!(self.endpoint));
        if let Some(k) = &self.server_public_key {
            b.insert("server_public_key".into(), json!(k));
        }
        if !self.dns.is_empty() {
            b.insert("dns".into(), json!(self.dns));
        }
        if let Some(split) = &self.split {
            b.insert("split_tunnel".into(), json!(split));
        }
        if self.keepalive > 0 {
            b.insert("persistent_keepalive_s".into(), json!(self.keepalive));
        }
        b
    }

    fn query(&self) -> String {
        let mut q = vec![format!("endpoint={}", enc(&self.endpoint))];
        if let Some(k) = &self.server_public_key {
            q.push(format!("server_public_key={}", enc(k)));
        }
        if !self.dns.is_empty() {
            q.push(format!("dns={}", enc(&self.dns.join(","))));
        }
        if let Some(split) = &self.split {
            q.push(format!("split_tunnel={}", enc(&split.join(","))));
        }
        if self.keepalive > 0 {
            q.push(format!("persistent_keepalive_s={}", self.keepalive));
        }
        q.join("&")
    }
}

#[derive(Debug, clap::Subcommand)]
enum PeerCommand {
    /// Show the interface's address pool, or set it when prefixes are given.
    Pool {
        #[command(flatten)]
        target: Target,
        /// Prefixes of the pool (IPv4 and/or IPv6), e.g. 10.8.0.0/24 fd00:8::/64.
        prefixes: Vec<String>,
    },
    /// Onboard a client: the next free address, a fresh key pair (or --public-key), the
    /// client's wg-quick file on stdout (or --output) — shown once, never stored.
    Add {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        client: ClientOpts,
        /// The client's own public key (no private key is generated then).
        #[arg(long)]
        public_key: Option<String>,
        /// A static address instead of the pool's next free one.
        #[arg(long)]
        address: Option<String>,
        /// Also generate a preshared key: in the file, and stored by the control plane,
        /// which sends it to the agent for the server interface (never shown again).
        #[arg(long)]
        psk: bool,
        /// Write the file here (mode 0600) instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Also print the QR code of the file to the terminal.
        #[arg(long)]
        qr: bool,
    },
    /// List the declared peers of an interface.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Show one peer.
    Show {
        #[command(flatten)]
        target: Target,
        /// The peer's public key.
        public_key: String,
    },
    /// Remove one peer (its addresses are free again).
    Remove {
        #[command(flatten)]
        target: Target,
        /// The peer's public key.
        public_key: String,
    },
    /// The wg-quick file of an existing peer, WITHOUT its private key (Sentra never keeps
    /// it: the file has a `<client private key>` placeholder) and without a preshared key.
    Config {
        #[command(flatten)]
        target: Target,
        /// The peer's public key.
        public_key: String,
        #[command(flatten)]
        client: ClientOpts,
        /// Write the file here (mode 0600) instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// The QR code of an existing peer's file (without its private key) in the terminal.
    Qr {
        #[command(flatten)]
        target: Target,
        /// The peer's public key.
        public_key: String,
        #[command(flatten)]
        client: ClientOpts,
        /// Write the QR code as a PNG here (mode 0600) instead of printing it.
        #[arg(long)]
        png: Option<PathBuf>,
    },
}

fn base(t: &Target) -> String {
    format!(
        "/api/v1/agents/{}/interfaces/{}",
        enc(&t.agent),
        enc(&t.interface)
    )
}

fn key_segment(key: &str) -> String {
    enc(key.trim())
}

/// Writes `text` to `output` (0600, atomically) or stdout.
fn emit(text: &str, output: Option<&PathBuf>) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            write_private_atomic(path, text.as_bytes())?;
            eprintln!(
                "Wrote {} (mode 0600).",
                display_safe(&path.display().to_string())
            );
        }
        None => print!("{}", display_safe_lines(text)),
    }
    Ok(())
}

/// Prints the terminal QR code of a response (block characters and newlines only).
fn print_qr(v: &Value) -> anyhow::Result<()> {
    let qr = v["client"]["qr_terminal"]
        .as_str()
        .context("no QR code in the response")?;
    if qr.chars().any(|c| c.is_control() && c != '\n') {
        bail!("the server sent a QR code with control characters");
    }
    println!("{qr}");
    Ok(())
}

fn show_peer(peer: &Value) -> String {
    let ips: Vec<&str> = peer["allowed_ips"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ips.join(", ")
}

pub(crate) fn run(args: PeerArgs) -> anyhow::Result<()> {
    let json_out = args.out.json;
    runtime()?.block_on(async {
        let api = Api::new(&args.conn)?;
        match args.command {
            PeerCommand::Pool { target, prefixes } => {
                let path = format!("{}/pool", base(&target));
                let v: Value = if prefixes.is_empty() {
                    api.get(&path).await?
                } else {
                    api.put(&path, &json!({ "prefixes": prefixes })).await?
                };
                if json_out {
                    println!("{}", json_pretty(&v)?);
                } else {
                    let list: Vec<&str> = v["prefixes"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    println!(
                        "Pool of {}/{}: {}",
                        display_safe(&target.agent),
                        display_safe(&target.interface),
                        display_safe(&list.join(", "))
                    );
                }
            }
            PeerCommand::Add {
                target,
                client,
                public_key,
                address,
                psk,
                output,
                qr,
            } => {
                let mut body = client.body();
                if let Some(k) = public_key {
                    body.insert("public_key".into(), json!(k));
                }
                if let Some(a) = address {
                    body.insert("address".into(), json!(a));
                }
                if psk {
                    body.insert("preshared_key".into(), json!(true));
                }
                let v: Value = api
                    .post(&format!("{}/peers", base(&target)), &Value::Object(body))
                    .await?;
                if json_out {
                    println!("{}", json_pretty(&v)?);
                    return Ok(());
                }
                let config = v["client"]["config"]
                    .as_str()
                    .context("no client configuration in the response")?;
                emit(config, output.as_ref())?;
                if qr {
                    print_qr(&v)?;
                }
                eprintln!(
                    "Added peer {} ({}) on {}/{}, revision {}.",
                    display_safe(v["peer"]["public_key"].as_str().unwrap_or("?")),
                    display_safe(&show_peer(&v["peer"])),
                    display_safe(&target.agent),
                    display_safe(&target.interface),
                    v["revision"]
                );
                if v["client"]["contains_private_key"] == true {
                    eprintln!("The file holds the client's private key: it is not shown again.");
                }
                if psk {
                    eprintln!(
                        "The preshared key is in the file and goes to the agent of {} with the \
                         desired peers: it is not shown again.",
                        display_safe(&target.interface)
                    );
                }
            }
            PeerCommand::List { target } => {
                let v: Value = api.get(&format!("{}/peers", base(&target))).await?;
                if json_out {
                    println!("{}", json_pretty(&v)?);
                    return Ok(());
                }
                let mut t = Table::new(["PUBLIC KEY", "ADDRESSES", "ENDPOINT", "KEEPALIVE"]);
                for p in v["peers"].as_array().into_iter().flatten() {
                    t.row([
                        p["public_key"].as_str().unwrap_or("?").to_owned(),
                        show_peer(p),
                        p["endpoint"].as_str().unwrap_or("").to_owned(),
                        p["persistent_keepalive_s"].to_string(),
                    ]);
                }
                print!("{t}");
                println!("revision {}", v["revision"]);
            }
            PeerCommand::Show { target, public_key } => {
                let v: Value = api
                    .get(&format!(
                        "{}/peers/{}",
                        base(&target),
                        key_segment(&public_key)
                    ))
                    .await?;
                if json_out {
                    println!("{}", json_pretty(&v)?);
                    return Ok(());
                }
                let p = &v["peer"];
                println!(
                    "public key:  {}",
                    display_safe(p["public_key"].as_str().unwrap_or("?"))
                );
                println!("allowed IPs: {}", display_safe(&show_peer(p)));
                println!(
                    "endpoint:    {}",
                    display_safe(p["endpoint"].as_str().unwrap_or(""))
                );
                println!("keepalive:   {}", p["persistent_keepalive_s"]);
                println!("revision:    {}", v["revision"]);
                let st = &v["status"];
                if st.is_object() {
                    println!(
                        "reported:    {}, last handshake {}, endpoint {}, rx {} B, tx {} B",
                        if st["online"] == true {
                            "online"
                        } else {
                            "offline"
                        },
                        age_ms(st["last_handshake_ms"].as_i64()),
                        display_safe(st["endpoint"].as_str().unwrap_or("-")),
                        st["rx_bytes"],
                        st["tx_bytes"]
                    );
                } else {
                    println!("reported:    not by the agent yet");
                }
            }
            PeerCommand::Remove { target, public_key } => {
                let v: Value = api
                    .delete(&format!(
                        "{}/peers/{}",
                        base(&target),
                        key_segment(&public_key)
                    ))
                    .await?;
                if json_out {
                    println!("{}", json_pretty(&v)?);
                } else {
                    println!(
                        "Removed peer {} from {}/{}, revision {}.",
                        display_safe(public_key.trim()),
                        display_safe(&target.agent),
                        display_safe(&target.interface),
                        v["revision"]
                    );
                }
            }
            PeerCommand::Config {
                target,
                public_key,
                client,
                output,
            } => {
                let v = existing(&api, &target, &public_key, &client).await?;
                if json_out {
                    println!("{}", json_pretty(&v)?);
                    return Ok(());
                }
                let config = v["client"]["config"]
                    .as_str()
                    .context("no client configuration in the response")?;
                emit(config, output.as_ref())?;
                eprintln!(
                    "Without the private key (Sentra does not keep it): replace the \
                     PrivateKey placeholder with the client's key."
                );
            }
            PeerCommand::Qr {
                target,
                public_key,
                client,
                png,
            } => {
                let v = existing(&api, &target, &public_key, &client).await?;
                match png {
                    Some(path) => {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(v["client"]["qr_png_base64"].as_str().unwrap_or(""))
                            .context("the server sent a PNG that is not base64")?;
                        write_private_atomic(&path, &bytes)?;
                        eprintln!(
                            "Wrote {} (mode 0600).",
                            display_safe(&path.display().to_string())
                        );
                    }
                    None => print_qr(&v)?,
                }
                eprintln!("The QR code holds the file without the private key.");
            }
        }
        anyhow::Ok(())
    })
}

async fn existing(
    api: &Api,
    target: &Target,
    public_key: &str,
    client: &ClientOpts,
) -> anyhow::Result<Value> {
    api.get(&format!(
        "{}/peers/{}/config?{}",
        base(target),
        key_segment(public_key),
        client.query()
    ))
    .await
}

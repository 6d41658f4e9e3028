//! `sentra wg show`: WireGuard state read straight from the kernel, formatted like `wg show`.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use sentra_wg::show::{self, Secrets};
use sentra_wg::{Device, DeviceRef};

/// WireGuard commands.
#[derive(Debug, clap::Args)]
pub(crate) struct WgArgs {
    #[command(subcommand)]
    command: WgCommand,
}

#[derive(Debug, clap::Subcommand)]
enum WgCommand {
    /// Show WireGuard devices exactly like `wg show` (needs CAP_NET_ADMIN).
    ///
    /// `sentra wg show [<interface> | all | interfaces] [dump]`. Unlike `wg show dump`, the
    /// dump format prints `(hidden)` for private and preshared keys unless `--show-keys`.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// An interface name, `all` (the default) or `interfaces`.
    interface: Option<String>,
    /// `dump` for the tab-separated format of `wg show <interface> dump`.
    format: Option<String>,
    /// Print JSON instead of text (never includes private or preshared keys).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Print private and preshared keys instead of `(hidden)` (like WG_HIDE_KEYS=never).
    #[arg(long)]
    show_keys: bool,
}

fn unix(t: Option<SystemTime>) -> Option<u64> {
    t.map(|t| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

fn to_json(d: &Device, names: &show::ScopeNames) -> serde_json::Value {
    serde_json::json!({
        "interface": d.name,
        "ifindex": d.ifindex,
        "public_key": d.public_key.map(|k| k.to_string()),
        "has_private_key": d.private_key.is_some(),
        "listen_port": d.listen_port,
        "fwmark": d.fwmark,
        "peers": d.peers.iter().map(|p| serde_json::json!({
            "public_key": p.public_key.to_string(),
            "has_preshared_key": p.preshared_key.is_some(),
            "endpoint": p.endpoint.map(|e| show::endpoint_named(&e, names)),
            "endpoint_scope_id": match p.endpoint {
                Some(std::net::SocketAddr::V6(a)) if a.scope_id() != 0 => Some(a.scope_id()),
                _ => None,
            },
            "allowed_ips": p.allowed_ips.iter().map(show::allowed_ip).collect::<Vec<_>>(),
            "latest_handshake": unix(p.last_handshake),
            "rx_bytes": p.rx_bytes,
            "tx_bytes": p.tx_bytes,
            "persistent_keepalive": p.persistent_keepalive,
        })).collect::<Vec<_>>(),
    })
}

/// Runs `sentra wg ...`.
pub(crate) fn run(args: WgArgs) -> anyhow::Result<()> {
    match args.command {
        WgCommand::Show(a) => show_cmd(a),
    }
}

fn show_cmd(a: ShowArgs) -> anyhow::Result<()> {
    let dump = match a.format.as_deref() {
        None => false,
        Some("dump") => true,
        Some(other) => anyhow::bail!("unknown format {other:?}: only `dump` is supported"),
    };
    let secrets =
        if a.show_keys || (!dump && std::env::var("WG_HIDE_KEYS").is_ok_and(|v| v == "never")) {
            Secrets::Show
        } else {
            Secrets::Hide
        };
    let client = sentra_wg::blocking::Client::connect().context("opening netlink sockets")?;
    let target = a.interface.as_deref().unwrap_or("all");
    let mut out = std::io::stdout().lock();
    if target == "interfaces" {
        let names: Vec<String> = client
            .list_interfaces()?
            .into_iter()
            .map(|i| i.name)
            .collect();
        if a.json {
            writeln!(out, "{}", crate::safe::json_pretty(&names)?)?;
        } else if !names.is_empty() {
            writeln!(out, "{}", names.join(" "))?;
        }
        return Ok(());
    }
    let all = target == "all";
    let devices = if all {
        client.devices().context("Unable to list interfaces")?
    } else {
        vec![
            client
                .get_device(DeviceRef::from(target))
                .context("Unable to access interface")?,
        ]
    };
    // Like wg (getnameinfo → if_indextoname): scoped link-local endpoints print the
    // interface name; if the link dump fails, the number is printed, as wg does. The link
    // dump is one more netlink round trip over every link, so only when a scope is shown.
    let scoped = devices
        .iter()
        .flat_map(|d| &d.peers)
        .any(|p| matches!(p.endpoint, Some(std::net::SocketAddr::V6(a)) if a.scope_id() != 0));
    let names = if scoped {
        client.link_names().unwrap_or_default()
    } else {
        show::ScopeNames::default()
    };
    if a.json {
        let v: Vec<_> = devices.iter().map(|d| to_json(d, &names)).collect();
        let v = if all {
            serde_json::Value::Array(v)
        } else {
            v.into_iter().next().unwrap_or_default()
        };
        writeln!(out, "{}", crate::safe::json_pretty(&v)?)?;
        return Ok(());
    }
    let now = SystemTime::now();
    for (i, d) in devices.iter().enumerate() {
        if dump {
            out.write_all(show::dump_named(d, all, secrets, &names).as_bytes())?;
        } else {
            out.write_all(show::pretty_named(d, now, secrets, &names).as_bytes())?;
            if i + 1 < devices.len() {
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

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
pub(crate) struct ShowArgs {
    /// An interface name, `all` (the default) or `interfaces`.
    pub(crate) interface: Option<String>,
    /// `dump` for the tab-separated format of `wg show <interface> dump`.
    pub(crate) format: Option<String>,
    /// Print JSON instead of text (never includes private or preshared keys).
    #[arg(long, conflicts_with = "format")]
    pub(crate) json: bool,
    /// Print private and preshared keys instead of `(hidden)` (like WG_HIDE_KEYS=never).
    #[arg(long)]
    pub(crate) show_keys: bool,
}

fn unix(t: Option<SystemTime>) -> Option<u64> {
    t.map(|t| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// A value serialized through its `Display` (no intermediate `String`).
struct Shown<'a, T>(&'a T);

impl<T: std::fmt::Display> serde::Serialize for Shown<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// Allowed IPs as `addr/cidr` strings.
struct AllowedIps<'a>(&'a [sentra_wg::AllowedIp]);

impl serde::Serialize for AllowedIps<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(show::allowed_ip))
    }
}

/// One device of `sentra wg show --json`. Serialized straight from the kernel's answer
/// (building a `serde_json::Value` first cost more than the netlink dump itself); fields in
/// alphabetical order, as the `serde_json::json!` objects of earlier versions printed them.
#[derive(serde::Serialize)]
struct DeviceJson<'a> {
    fwmark: u32,
    has_private_key: bool,
    ifindex: u32,
    interface: &'a str,
    listen_port: u16,
    peers: Vec<PeerJson<'a>>,
    public_key: Option<Shown<'a, sentra_wg::Key>>,
}

#[derive(serde::Serialize)]
struct PeerJson<'a> {
    allowed_ips: AllowedIps<'a>,
    endpoint: Option<String>,
    endpoint_scope_id: Option<u32>,
    has_preshared_key: bool,
    latest_handshake: Option<u64>,
    persistent_keepalive: u16,
    public_key: Shown<'a, sentra_wg::Key>,
    rx_bytes: u64,
    tx_bytes: u64,
}

fn to_json<'a>(d: &'a Device, names: &show::ScopeNames) -> DeviceJson<'a> {
    DeviceJson {
        fwmark: d.fwmark,
        has_private_key: d.private_key.is_some(),
        ifindex: d.ifindex,
        interface: &d.name,
        listen_port: d.listen_port,
        peers: d
            .peers
            .iter()
            .map(|p| PeerJson {
                allowed_ips: AllowedIps(&p.allowed_ips),
                endpoint: p.endpoint.map(|e| show::endpoint_named(&e, names)),
                endpoint_scope_id: match p.endpoint {
                    Some(std::net::SocketAddr::V6(a)) if a.scope_id() != 0 => Some(a.scope_id()),
                    _ => None,
                },
                has_preshared_key: p.preshared_key.is_some(),
                latest_handshake: unix(p.last_handshake),
                persistent_keepalive: p.persistent_keepalive,
                public_key: Shown(&p.public_key),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
            })
            .collect(),
        public_key: d.public_key.as_ref().map(Shown),
    }
}

/// Runs `sentra wg ...`.
pub(crate) fn run(args: WgArgs) -> anyhow::Result<()> {
    match args.command {
        WgCommand::Show(a) => show_cmd(a),
    }
}

/// Runs `sentra wg show`.
pub(crate) fn show_cmd(a: ShowArgs) -> anyhow::Result<()> {
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
        let text = if all {
            crate::safe::json_pretty(&v)?
        } else {
            // one device was asked for and get_device returned it
            crate::safe::json_pretty(&v.first())?
        };
        writeln!(out, "{text}")?;
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

#[cfg(test)]
mod tests {
    use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
    use std::time::{Duration, UNIX_EPOCH};

    use sentra_wg::{Device, Key, Peer, PresharedKey, PrivateKey};

    use super::*;

    /// The `serde_json::json!` form the JSON output had before the typed structs: the
    /// reference the structs must print byte for byte.
    fn value_json(d: &Device, names: &show::ScopeNames) -> serde_json::Value {
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
                    Some(SocketAddr::V6(a)) if a.scope_id() != 0 => Some(a.scope_id()),
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

    fn devices() -> Vec<Device> {
        let mut bare = Device::default();
        bare.name = "wg-empty".to_owned();
        bare.ifindex = 3;
        let mut full = Device::default();
        full.name = "wg0".to_owned();
        full.ifindex = 7;
        full.private_key = Some(PrivateKey::from_bytes([0x41; 32]));
        full.public_key = Some(Key::from_bytes([0x42; 32]));
        full.listen_port = 51820;
        full.fwmark = 0x51;
        let mut p1 = Peer::new(Key::from_bytes([1; 32]));
        p1.preshared_key = Some(PresharedKey::from_bytes([9; 32]));
        p1.endpoint = Some("192.0.2.1:51820".parse().unwrap());
        p1.allowed_ips = vec![
            "10.0.0.2/32".parse().unwrap(),
            "fd00::2/128".parse().unwrap(),
        ];
        p1.last_handshake = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        p1.rx_bytes = u64::MAX;
        p1.tx_bytes = 12_345;
        p1.persistent_keepalive = 25;
        let mut p2 = Peer::new(Key::from_bytes([2; 32]));
        p2.endpoint = Some(SocketAddr::V6(SocketAddrV6::new(
            "fe80::1".parse::<Ipv6Addr>().unwrap(),
            1234,
            0,
            2,
        )));
        p2.allowed_ips = vec!["::1.2.3.4/128".parse().unwrap()];
        let p3 = Peer::new(Key::from_bytes([3; 32]));
        full.peers = vec![p1, p2, p3];
        vec![full, bare]
    }

    #[test]
    fn json_structs_print_what_the_json_values_printed() {
        let devices = devices();
        let names = show::ScopeNames::default();
        let old: Vec<_> = devices.iter().map(|d| value_json(d, &names)).collect();
        let new: Vec<_> = devices.iter().map(|d| to_json(d, &names)).collect();
        // `all`: the array; one interface: the object
        assert_eq!(
            crate::safe::json_pretty(&new).unwrap(),
            crate::safe::json_pretty(&serde_json::Value::Array(old.clone())).unwrap()
        );
        assert_eq!(
            crate::safe::json_pretty(&new.first()).unwrap(),
            crate::safe::json_pretty(&old[0]).unwrap()
        );
        assert!(
            crate::safe::json_pretty(&new)
                .unwrap()
                .contains("\"endpoint_scope_id\": 2")
        );
    }
}

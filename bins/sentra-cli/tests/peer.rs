//! `sentra peer …` against a real `sentra-server` process on loopback: pool, add (the
//! wg-quick file written 0600 and accepted by `wg-quick strip`), list/show with --json,
//! config and QR of an existing peer without its private key, remove, clear errors — and
//! the generated private key and preshared key do not appear in the server's log (at
//! debug level); the private key is in no file of its data directory, the preshared key
//! in none but the control database (which holds it for the server interface).

mod common;

use std::{
    io::{Read as _, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use common::{PASSWORD, free_port, ok, run, server_bin};
use serde_json::Value;

/// A server process started with `RUST_LOG=debug`, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(root: &Path) -> (Proc, String) {
    let (grpc, api) = (free_port(), free_port());
    let child = Command::new(server_bin())
        .arg("--data-dir")
        .arg(root.join("data"))
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--api-listen", &format!("127.0.0.1:{api}")])
        .args(["--status-interval", "0"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    (Proc(child), format!("127.0.0.1:{api}"))
}

/// `POST /api/v1/agents/enroll` over a plain TCP socket (the test has no HTTP client).
fn enroll(addr: &str, token: &str) -> Value {
    let body = serde_json::json!({ "token": token, "name": "edge-peer" }).to_string();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /api/v1/agents/enroll HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

fn all_bytes(dir: &Path) -> Vec<u8> {
    all_bytes_but(dir, "\0")
}

/// Every file under `dir` whose name does not start with `skip`, concatenated.
fn all_bytes_but(dir: &Path, skip: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes_but(&p, skip));
        } else if !p.file_name().unwrap().to_string_lossy().starts_with(skip) {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn value<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('='))
        .map(str::trim)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn is_key(v: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(v)
        .is_ok_and(|b| b.len() == 32)
}

/// Checks that `wg-quick strip` accepts the file and that what it prints is a `wg setconf`
/// file: sections, and only keys wg(8) knows, with valid keys. Skips with a message when
/// wireguard-tools is not installed.
fn check_wg_quick(file: &Path) {
    let out = match Command::new("wg-quick").arg("strip").arg(file).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!(
                "SKIP wg-quick check: cannot run wg-quick ({e}); install wireguard-tools \
                 (apt-get install wireguard-tools) to run it"
            );
            return;
        }
    };
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "wg-quick strip refused the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut section = "";
    let mut seen = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == "[Interface]" || line == "[Peer]" {
            section = if line == "[Interface]" {
                "interface"
            } else {
                "peer"
            };
            seen.push(section);
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .unwrap_or_else(|| panic!("not key = value: {line:?}"));
        match (section, k) {
            ("interface", "PrivateKey") | ("peer", "PublicKey" | "PresharedKey") => {
                assert!(is_key(v), "{k} is not a key: {v:?}");
            }
            ("peer", "AllowedIPs") => {
                for p in v.split(',') {
                    assert!(p.trim().contains('/'), "{p:?}");
                }
            }
            ("peer", "Endpoint") => assert!(v.rsplit_once(':').is_some(), "{v:?}"),
            ("peer", "PersistentKeepalive") => {
                v.parse::<u16>().unwrap();
            }
            _ => panic!("wg setconf does not know {k} in [{section}] (after strip): {text}"),
        }
    }
    assert_eq!(seen, ["interface", "peer"], "{text}");
}

#[test]
fn peer_commands_against_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, addr) = spawn_server(tmp.path());
    let api = format!("http://{addr}");
    let cli = tmp.path().join("cli");
    let sentra = |args: &[&str]| run(&cli, &api, args, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = sentra(&["status"]);
        if String::from_utf8_lossy(&out.stderr).contains("401") {
            break;
        }
        assert!(Instant::now() < deadline, "server never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let data = tmp.path().join("data");
    ok(&run(
        &cli,
        &api,
        &[
            "init",
            "--data-dir",
            data.to_str().unwrap(),
            "--password-stdin",
        ],
        Some(PASSWORD),
    ));
    ok(&run(
        &cli,
        &api,
        &["login", "--password-stdin"],
        Some(PASSWORD),
    ));
    let issued: Value = serde_json::from_str(&ok(&sentra(&["token", "issue", "--json"]))).unwrap();
    let agent = enroll(&addr, issued["token"].as_str().unwrap())["agent_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let server_key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);

    let out = ok(&sentra(&[
        "peer",
        "pool",
        &agent,
        "wg0",
        "10.8.0.0/24",
        "fd00:8::/64",
    ]));
    assert!(out.contains("10.8.0.0/24, fd00:8::/64"), "{out}");

    // Add with a generated key pair and PSK: the file 0600, the QR on the terminal.
    let file = tmp.path().join("client0.conf");
    let out = sentra(&[
        "peer",
        "add",
        &agent,
        "wg0",
        "--endpoint",
        "vpn.example.com:51820",
        "--server-public-key",
        &server_key,
        "--dns",
        "10.8.0.1,fd00:8::1",
        "--split",
        "--keepalive",
        "25",
        "--psk",
        "--qr",
        "--output",
        file.to_str().unwrap(),
    ]);
    let stdout = ok(&out);
    assert!(stdout.contains('█') && stdout.contains('▀'), "{stdout}");
    assert!(
        !stdout.contains("PrivateKey"),
        "the file went to stdout too"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not shown again"), "{stderr}");
    assert_eq!(mode(&file), 0o600);
    let config = std::fs::read_to_string(&file).unwrap();
    let private = value(&config, "PrivateKey").unwrap().to_owned();
    let psk = value(&config, "PresharedKey").unwrap().to_owned();
    assert!(is_key(&private) && is_key(&psk), "{config}");
    assert_eq!(
        value(&config, "Address"),
        Some("10.8.0.2/32, fd00:8::2/128")
    );
    assert_eq!(
        value(&config, "AllowedIPs"),
        Some("10.8.0.0/24, fd00:8::/64")
    );
    check_wg_quick(&file);

    // The client's own key, --json; config to stdout.
    let own = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let added: Value = serde_json::from_str(&ok(&sentra(&[
        "peer",
        "add",
        &agent,
        "wg0",
        "--endpoint",
        "192.0.2.1:51820",
        "--server-public-key",
        &server_key,
        "--public-key",
        &own,
        "--json",
    ])))
    .unwrap();
    assert_eq!(added["client"]["contains_private_key"], false);
    assert_eq!(added["addresses"][0], "10.8.0.3/32");

    // list / show.
    let list: Value =
        serde_json::from_str(&ok(&sentra(&["peer", "list", &agent, "wg0", "--json"]))).unwrap();
    let peers = list["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{list}");
    let generated = peers
        .iter()
        .map(|p| p["public_key"].as_str().unwrap().to_owned())
        .find(|k| *k != own)
        .unwrap();
    let table = ok(&sentra(&["peer", "list", &agent, "wg0"]));
    assert!(
        table.contains(&own) && table.contains("10.8.0.2/32"),
        "{table}"
    );
    let show: Value = serde_json::from_str(&ok(&sentra(&[
        "peer", "show", &agent, "wg0", &generated, "--json",
    ])))
    .unwrap();
    assert_eq!(show["peer"]["allowed_ips"][0], "10.8.0.2/32");
    let human = ok(&sentra(&["peer", "show", &agent, "wg0", &generated]));
    assert!(
        human.contains("10.8.0.2/32") && human.contains("not by the agent yet"),
        "{human}"
    );

    // config / qr of an existing peer: no private key, no PSK.
    let file2 = tmp.path().join("again.conf");
    let out = sentra(&[
        "peer",
        "config",
        &agent,
        "wg0",
        &generated,
        "--endpoint",
        "vpn.example.com:51820",
        "--server-public-key",
        &server_key,
        "--output",
        file2.to_str().unwrap(),
    ]);
    ok(&out);
    assert_eq!(mode(&file2), 0o600);
    let again = std::fs::read_to_string(&file2).unwrap();
    assert_eq!(value(&again, "PrivateKey"), Some("<client private key>"));
    assert_eq!(value(&again, "PresharedKey"), None);
    assert_eq!(value(&again, "Address"), Some("10.8.0.2/32, fd00:8::2/128"));
    let stdout = ok(&sentra(&[
        "peer",
        "config",
        &agent,
        "wg0",
        &generated,
        "--endpoint",
        "vpn.example.com:51820",
        "--server-public-key",
        &server_key,
    ]));
    assert!(stdout.starts_with("[Interface]\n"), "{stdout}");
    let qr = ok(&sentra(&[
        "peer",
        "qr",
        &agent,
        "wg0",
        &generated,
        "--endpoint",
        "vpn.example.com:51820",
        "--server-public-key",
        &server_key,
    ]));
    assert!(qr.contains('█'), "{qr}");
    let png = tmp.path().join("qr.png");
    ok(&sentra(&[
        "peer",
        "qr",
        &agent,
        "wg0",
        &generated,
        "--endpoint",
        "vpn.example.com:51820",
        "--server-public-key",
        &server_key,
        "--png",
        png.to_str().unwrap(),
    ]));
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");

    // Clear errors, non-zero exit.
    let out = sentra(&[
        "peer",
        "add",
        &agent,
        "wg0",
        "--endpoint",
        "no port here",
        "--server-public-key",
        &server_key,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("400") && err.contains("endpoint"), "{err}");
    let out = sentra(&[
        "peer",
        "add",
        &agent,
        "wg0",
        "--endpoint",
        "vpn.example.com:1",
        "--server-public-key",
        &server_key,
        "--address",
        "10.8.0.2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("409") && err.contains(&generated), "{err}");

    // remove; then the peer is gone.
    let out = ok(&sentra(&["peer", "remove", &agent, "wg0", &generated]));
    assert!(out.contains("Removed peer"), "{out}");
    let out = sentra(&["peer", "show", &agent, "wg0", &generated]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));

    // Neither secret reached the server's log; the private key is in no file of the data
    // directory, the preshared key in none but control.db (its WAL and SHM included).
    let log = std::fs::read(tmp.path().join("server.log")).unwrap();
    assert!(
        contains(&log, "peer.add") || contains(&log, "/peers"),
        "the debug log should show the requests (sanity check)"
    );
    let db = all_bytes(&data);
    assert!(
        contains(&db, &generated),
        "sanity: the public key is stored"
    );
    let outside_control_db = all_bytes_but(&data, "control.db");
    assert!(
        outside_control_db.len() < db.len(),
        "sanity: control.db is where the data directory says"
    );
    for (what, secret, files) in [
        ("private key", &private, &db),
        ("preshared key", &psk, &outside_control_db),
    ] {
        assert!(!contains(&log, secret), "the {what} is in the server log");
        assert!(
            !contains(files, secret),
            "the {what} is in the data directory"
        );
    }
}

//! Golden-byte tests on dumps captured from a real kernel (Debian 6.1, see
//! `tests/fixtures/README.md`; re-capture with `SENTRA_WG_CAPTURE=1 scripts/vm-test`), and the
//! replay of the committed `wg_dump` fuzz corpus.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{WireguardAttribute, WireguardMessage, WireguardPeerAttribute};
use sentra_wg::proto::{self, DumpParser};
use sentra_wg::show::{self, Secrets};
use sentra_wg::{Key, PresharedKey};

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Splits a capture into its datagrams-worth of netlink messages (header length words).
fn split_messages(mut b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes(b[..4].try_into().unwrap()) as usize;
        let step = (len + 3) & !3;
        out.push(&b[..len]);
        b = &b[step.min(b.len())..];
    }
    out
}

/// A per-attribute annotation of a capture: offset, nesting, type, length, meaning.
fn annotate(bytes: &[u8]) -> String {
    const DEVICE: &[&str] = &[
        "UNSPEC(pad)",
        "IFINDEX",
        "IFNAME",
        "PRIVATE_KEY",
        "PUBLIC_KEY",
        "FLAGS",
        "LISTEN_PORT",
        "FWMARK",
        "PEERS",
    ];
    const PEER: &[&str] = &[
        "UNSPEC(pad)",
        "PUBLIC_KEY",
        "PRESHARED_KEY",
        "FLAGS",
        "ENDPOINT",
        "PERSISTENT_KEEPALIVE_INTERVAL",
        "LAST_HANDSHAKE_TIME",
        "RX_BYTES",
        "TX_BYTES",
        "ALLOWEDIPS",
        "PROTOCOL_VERSION",
    ];
    let mut out = String::new();
    let mut off = 0;
    for m in split_messages(bytes) {
        let ty = u16::from_ne_bytes([m[4], m[5]]);
        let flags = u16::from_ne_bytes([m[6], m[7]]);
        let _ = writeln!(
            out,
            "{off:6} nlmsghdr len={} type={ty} flags={flags:#x}{}",
            m.len(),
            match ty {
                3 => " NLMSG_DONE",
                2 => " NLMSG_ERROR",
                _ => " (wireguard family)",
            }
        );
        if ty >= 16 {
            let _ = writeln!(
                out,
                "{:6} genlmsghdr cmd={} version={}",
                off + 16,
                m[16],
                m[17]
            );
            let mut tmp = String::new();
            attrs_top(&mut tmp, off + 20, &m[20..], DEVICE);
            out.push_str(&tmp);
        } else if m.len() >= 20 {
            let _ = writeln!(
                out,
                "{:6} errno={}",
                off + 16,
                i32::from_ne_bytes(m[16..20].try_into().unwrap())
            );
        }
        off += (m.len() + 3) & !3;
    }
    fn attrs_top(out: &mut String, base: usize, b: &[u8], names: &[&str]) {
        let mut off = 0;
        while off + 4 <= b.len() {
            let len = u16::from_ne_bytes([b[off], b[off + 1]]) as usize;
            let raw = u16::from_ne_bytes([b[off + 2], b[off + 3]]);
            let kind = raw & 0x3fff;
            let _ = writeln!(
                out,
                "{:6} attr len={len:<5} type={kind}{} {}",
                base + off,
                if raw & 0x8000 != 0 { "|NESTED" } else { "" },
                names.get(kind as usize).copied().unwrap_or("?")
            );
            if len < 4 || off + len > b.len() {
                return;
            }
            if kind == 8 {
                // peers: elements at depth 1 whose attributes are peer attributes
                let inner = &b[off + 4..off + len];
                let mut o2 = 0;
                while o2 + 4 <= inner.len() {
                    let l2 = u16::from_ne_bytes([inner[o2], inner[o2 + 1]]) as usize;
                    let _ = writeln!(out, "{:6}   peer element len={l2}", base + off + 4 + o2);
                    if l2 < 4 || o2 + l2 > inner.len() {
                        break;
                    }
                    let pb = &inner[o2 + 4..o2 + l2];
                    let mut o3 = 0;
                    while o3 + 4 <= pb.len() {
                        let l3 = u16::from_ne_bytes([pb[o3], pb[o3 + 1]]) as usize;
                        let k3 = u16::from_ne_bytes([pb[o3 + 2], pb[o3 + 3]]) & 0x3fff;
                        let name = PEER.get(k3 as usize).copied().unwrap_or("?");
                        if k3 == 9 {
                            let n = {
                                let ips = &pb[o3 + 4..o3 + l3];
                                let mut c = 0;
                                let mut o4 = 0;
                                while o4 + 4 <= ips.len() {
                                    let l4 = u16::from_ne_bytes([ips[o4], ips[o4 + 1]]) as usize;
                                    if l4 < 4 {
                                        break;
                                    }
                                    c += 1;
                                    o4 += (l4 + 3) & !3;
                                }
                                c
                            };
                            let _ = writeln!(
                                out,
                                "{:6}     attr len={l3:<5} type={k3}|NESTED {name} ({n} allowed IPs, 28 B per IPv4, 40 B per IPv6)",
                                base + off + 8 + o2 + o3
                            );
                        } else {
                            let _ = writeln!(
                                out,
                                "{:6}     attr len={l3:<5} type={k3} {name}",
                                base + off + 8 + o2 + o3
                            );
                        }
                        if l3 < 4 {
                            break;
                        }
                        o3 += (l3 + 3) & !3;
                    }
                    o2 += (l2 + 3) & !3;
                }
            }
            off += (len + 3) & !3;
        }
    }
    out
}

fn check_annotation(bin: &str) {
    let bytes = fixture(bin);
    let got = annotate(&bytes);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{bin}.annotated.txt"));
    if std::env::var("UPDATE_FIXTURES").as_deref() == Ok("1") {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_FIXTURES=1 writes it)", path.display()));
    assert_eq!(got, want, "annotation of {bin} changed");
}

#[test]
fn kernel_empty_device() {
    let bytes = fixture("kernel-empty.bin");
    let d = proto::parse_dump(&bytes).unwrap();
    assert_eq!(d.name, "wgfix0");
    assert!(d.ifindex > 0);
    assert!(d.peers.is_empty() && d.private_key.is_none() && d.public_key.is_none());
    assert_eq!((d.listen_port, d.fwmark), (0, 0));
    check_annotation("kernel-empty.bin");
}

#[test]
fn kernel_three_peers_with_continuation() {
    let bytes = fixture("kernel-3peers-continued.bin");
    let msgs = split_messages(&bytes);
    // several data messages + NLMSG_DONE: the 1200-prefix peer did not fit in one
    assert!(msgs.len() >= 3, "{} messages", msgs.len());
    let mut p = DumpParser::new();
    for m in &msgs {
        p.feed(m).unwrap();
    }
    assert!(p.message_count() >= 2);
    let d = p.finish().unwrap();
    assert_eq!(d.name, "wgfix0");
    assert_eq!((d.listen_port, d.fwmark), (51820, 0x42));
    assert_eq!(d.peers.len(), 3, "continuations coalesced");
    assert_eq!(d.peers[0].public_key, Key::from_bytes([0xa1; 32]));
    assert_eq!(
        d.peers[0].preshared_key,
        Some(PresharedKey::from_bytes([0x5a; 32]))
    );
    assert_eq!(
        d.peers[0].endpoint,
        Some("127.0.0.1:51821".parse().unwrap())
    );
    assert_eq!(d.peers[0].persistent_keepalive, 25);
    assert_eq!(d.peers[0].protocol_version, 1);
    assert_eq!(
        d.peers[1].endpoint,
        Some("[fd00::2]:51822".parse().unwrap())
    );
    assert_eq!(
        d.peers[1].allowed_ips,
        vec![
            "10.0.0.2/32".parse().unwrap(),
            "10.2.0.0/16".parse().unwrap()
        ]
    );
    assert_eq!(d.peers[2].allowed_ips.len(), 1200);
    assert_eq!(d.peers[2].allowed_ips[1199].to_string(), "fd01:0:4:af::/64");

    // byte-for-byte what `wg show wgfix0 dump` printed on the same device in the VM
    let wg = String::from_utf8(fixture("kernel-3peers-continued.wg-dump.txt")).unwrap();
    assert_eq!(show::dump(&d, false, Secrets::Show), wg);

    // netlink-packet-wireguard agrees on the raw structure (it does not coalesce)
    let mut fragments = Vec::new();
    for m in &msgs[..msgs.len() - 1] {
        let nl = NetlinkMessage::<GenlMessage<WireguardMessage>>::deserialize(m).unwrap();
        let NetlinkPayload::InnerMessage(g) = nl.payload else {
            panic!("data message")
        };
        for a in &g.payload.attributes {
            if let WireguardAttribute::Peers(peers) = a {
                for peer in peers {
                    let key = peer.iter().find_map(|x| match x {
                        WireguardPeerAttribute::PublicKey(k) => Some(*k),
                        _ => None,
                    });
                    let ips: usize = peer
                        .iter()
                        .map(|x| match x {
                            WireguardPeerAttribute::AllowedIps(v) => v.len(),
                            _ => 0,
                        })
                        .sum();
                    fragments.push((key.unwrap(), ips));
                }
            }
        }
    }
    assert!(
        fragments.len() > 3,
        "the kernel split a peer across messages: {}",
        fragments.len()
    );
    let total: usize = fragments.iter().map(|f| f.1).sum();
    assert_eq!(total, 2 + 2 + 1200);
    assert!(fragments.iter().skip(2).all(|f| f.0 == [0xc3; 32]));
    check_annotation("kernel-3peers-continued.bin");
}

#[test]
fn fuzz_corpus_replays_without_panic() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wg_dump");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        proto::fuzz_dump(&data);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let parsed = proto::parse_dump(&data);
        if name.starts_with("ok-") {
            assert!(parsed.is_ok(), "{name}: {parsed:?}");
        } else if name.starts_with("bad-") {
            assert!(parsed.is_err(), "{name} must be rejected");
        }
        n += 1;
    }
    assert!(n >= 5, "corpus has only {n} entries");
}

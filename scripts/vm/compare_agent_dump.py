#!/usr/bin/env python3
"""Agent-vs-wg check of the WireGuard VM suite (scripts/vm-test, scripts/vm/agent-check).

  compare_agent_dump.py gen DIR
      writes DIR/agent-wg.conf (device "wgagent": a few hundred peers, some with endpoints,
      persistent keepalive, several allowed IPs, a preshared key; one peer is the second
      device "wgpeer" on 127.0.0.1, so real handshakes and traffic counters show up) and
      DIR/agent-wgpeer.conf. Keys are random; public keys come from `wg pubkey`.
  compare_agent_dump.py compare AGENT.json WG-DUMP
      compares `sentra-agent --once --output json` with `wg show all dump`: same devices,
      device public key and listen port, same peer count, and per peer the same (public key,
      endpoint, sorted allowed IPs, latest handshake, rx, tx, persistent keepalive).
      Prints `agent-vs-wg: N peers identical`, or the first differences and exits 1.
"""
import base64
import json
import os
import subprocess
import sys

NPEERS = 300


def key():
    return base64.b64encode(os.urandom(32)).decode()


def pubkey(priv):
    return subprocess.run(["wg", "pubkey"], input=priv + "\n", capture_output=True,
                          text=True, check=True).stdout.strip()


def gen(out):
    a_priv, b_priv = key(), key()
    a_pub, b_pub = pubkey(a_priv), pubkey(b_priv)
    lines = ["[Interface]", f"PrivateKey = {a_priv}", "ListenPort = 51900", ""]
    for i in range(NPEERS):
        lines += ["[Peer]", f"PublicKey = {key()}"]
        if i % 7 == 0:
            lines.append(f"PresharedKey = {key()}")
        if i % 3 == 0:
            lines.append(f"Endpoint = 192.0.2.{i % 250 + 1}:{51820 + i}")
        elif i % 3 == 1 and i % 2 == 0:
            lines.append(f"Endpoint = [2001:db8::{i:x}]:{40000 + i}")
        ips = [f"10.{100 + i // 256}.{i % 256}.0/24"]
        if i % 2 == 0:
            ips.append(f"fd00:{i:x}::/64")
        if i % 5 == 0:
            ips.append(f"172.{16 + i // 256}.{i % 256}.16/28")
        lines.append("AllowedIPs = " + ", ".join(ips))
        if i % 4 == 0:
            lines.append(f"PersistentKeepalive = {15 + i % 50}")
        lines.append("")
    # the loopback peer: handshakes for real with "wgpeer"
    lines += ["[Peer]", f"PublicKey = {b_pub}", f"PresharedKey = {key()}",
              "Endpoint = 127.0.0.1:51901", "AllowedIPs = 10.99.0.2/32, fd99::2/128",
              "PersistentKeepalive = 25", ""]
    with open(os.path.join(out, "agent-wg.conf"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(out, "agent-wgpeer.conf"), "w") as f:
        f.write("\n".join(["[Interface]", f"PrivateKey = {b_priv}", "ListenPort = 51901", "",
                           "[Peer]", f"PublicKey = {a_pub}", "Endpoint = 127.0.0.1:51900",
                           "AllowedIPs = 10.99.0.1/32", ""]))


def from_dump(path):
    devs = {}
    with open(path) as f:
        for line in f:
            c = line.rstrip("\n").split("\t")
            if len(c) == 5:
                devs[c[0]] = {"public_key": None if c[2] == "(none)" else c[2],
                              "listen_port": int(c[3]), "peers": {}}
            elif len(c) == 9:
                devs[c[0]]["peers"][c[1]] = (
                    None if c[3] == "(none)" else c[3],
                    tuple(sorted([] if c[4] == "(none)" else c[4].split(","))),
                    int(c[5]), int(c[6]), int(c[7]),
                    0 if c[8] == "off" else int(c[8]))
            elif line.strip():
                raise SystemExit(f"agent-vs-wg: unexpected line in {path}: {line!r}")
    return devs


def from_agent(path):
    with open(path) as f:
        doc = json.load(f)
    wg = doc["wireguard"]
    if not wg["available"]:
        raise SystemExit(f"agent-vs-wg: the agent reports WireGuard unavailable: {wg['error']}")
    devs = {}
    for d in wg["devices"]:
        peers = {}
        for p in d["peers"]:
            if p["public_key"] in peers:
                raise SystemExit(f"agent-vs-wg: {d['name']}: peer {p['public_key']} reported twice")
            peers[p["public_key"]] = (p["endpoint"], tuple(sorted(p["allowed_ips"])),
                                      p["last_handshake"], p["rx_bytes"], p["tx_bytes"],
                                      p["persistent_keepalive"])
        devs[d["name"]] = {"public_key": d["public_key"], "listen_port": d["listen_port"],
                           "peers": peers}
    return devs


FIELDS = ("endpoint", "allowed_ips", "latest_handshake", "rx", "tx", "keepalive")


def compare(agent_path, dump_path):
    agent, wg = from_agent(agent_path), from_dump(dump_path)
    diffs = []
    if sorted(agent) != sorted(wg):
        diffs.append(f"devices: agent {sorted(agent)} vs wg {sorted(wg)}")
    total = handshaken = 0
    for name in sorted(set(agent) & set(wg)):
        a, w = agent[name], wg[name]
        for k in ("public_key", "listen_port"):
            if a[k] != w[k]:
                diffs.append(f"{name}: {k}: agent {a[k]!r} vs wg {w[k]!r}")
        if len(a["peers"]) != len(w["peers"]):
            diffs.append(f"{name}: peer count: agent {len(a['peers'])} vs wg {len(w['peers'])}")
        for pk in sorted(set(a["peers"]) | set(w["peers"])):
            ap, wp = a["peers"].get(pk), w["peers"].get(pk)
            if ap is None or wp is None:
                diffs.append(f"{name}: peer {pk} only in {'wg' if ap is None else 'agent'}")
            elif ap != wp:
                fs = [f"{f}: agent {x!r} vs wg {y!r}" for f, x, y in zip(FIELDS, ap, wp) if x != y]
                diffs.append(f"{name}: peer {pk}: " + "; ".join(fs))
        total += len(w["peers"])
        handshaken += sum(1 for p in w["peers"].values() if p[2] != 0)
    if diffs:
        print(f"agent-vs-wg: {len(diffs)} difference(s) between sentra-agent and wg show dump:")
        for d in diffs[:10]:
            print("  " + d)
        return 1
    if total == 0:
        print("agent-vs-wg: no peers at all (the guest set-up did not run?)")
        return 1
    print(f"agent-vs-wg: {total} peers identical ({len(wg)} devices, {handshaken} with a handshake)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "gen":
        gen(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)

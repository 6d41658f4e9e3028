//! `sentra wal inspect` against real WAL directories: a live one (writer lock held by this
//! process) and a damaged one.

use std::process::Command;

fn sentra() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sentra"))
}

#[test]
fn inspects_a_live_wal_without_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let opts = sentra_wal::Options::default()
        .segment_size(2048)
        .disk_cap(1 << 20);
    let (wal, _) = sentra_wal::Wal::open(dir.path(), opts).unwrap();
    for i in 0..50u8 {
        wal.append(&[i; 120]).unwrap();
    }
    wal.ack(20).unwrap();

    let out = sentra()
        .args(["wal", "inspect"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("cursor: acknowledged up to lsn 20"), "{text}");
    assert!(text.contains("status: clean"), "{text}");
    assert!(text.contains("SEGMENT"), "{text}");

    let out = sentra()
        .args(["wal", "inspect", "--json"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["cursor"]["acked_lsn"], 20);
    assert_eq!(j["unacked_records"], 30);
    assert_eq!(
        j["segments"].as_array().unwrap().last().unwrap()["last_lsn"],
        50
    );
    // The writer still works: the inspection took no lock.
    assert_eq!(wal.append(b"still writable").unwrap(), 51);
}

#[test]
fn reports_damage_and_check_fails() {
    let dir = tempfile::tempdir().unwrap();
    let opts = sentra_wal::Options::default()
        .segment_size(2048)
        .disk_cap(1 << 20);
    let (wal, _) = sentra_wal::Wal::open(dir.path(), opts).unwrap();
    for i in 0..50u8 {
        wal.append(&[i; 120]).unwrap();
    }
    wal.close().unwrap();
    // Corrupt a byte in the middle of the first (sealed) segment.
    let first = dir.path().join("00000000000000000001.wal");
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[700] ^= 0x55;
    std::fs::write(&first, bytes).unwrap();

    let out = sentra()
        .args(["wal", "inspect", "--json", "--check"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--check exits 2 on damage");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["clean"], false);
    let seg0 = &j["segments"][0];
    assert!(
        seg0["damage"].as_str().unwrap().contains("checksum"),
        "{seg0}"
    );
    let loss = &j["losses"][0];
    assert_eq!(loss["cause"], "corrupt");
    assert!(loss["records"].as_u64().unwrap() > 0);

    let out = sentra()
        .args(["wal", "inspect"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("status: DAMAGED") && text.contains("loss: lsn"),
        "{text}"
    );

    let out = sentra()
        .args(["wal", "inspect"])
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
}

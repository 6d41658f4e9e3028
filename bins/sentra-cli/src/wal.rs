//! `sentra wal inspect <dir>`: segments, LSN ranges, cursor and damage of a write-ahead log.
//!
//! Inspection is read-only and does **not** take the writer lock, so it works on the WAL of a
//! running agent. It verifies every frame of every segment (recovery on open only scans the
//! tail). On a live log the last segment may show an unfinished write at its end, reported as
//! a torn or in-progress tail: that is what recovery would truncate after a crash.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use sentra_wal::Inspection;

use crate::safe::display_safe;

/// Write-ahead log commands.
#[derive(Debug, clap::Args)]
pub(crate) struct WalArgs {
    #[command(subcommand)]
    command: WalCommand,
}

#[derive(Debug, clap::Subcommand)]
enum WalCommand {
    /// Show segments, LSN ranges, the shipped cursor and any damage (read-only, no lock).
    Inspect {
        /// The WAL directory.
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Exit with status 2 if damage or missing records were found.
        #[arg(long)]
        check: bool,
    },
}

pub(crate) fn run(args: WalArgs) -> anyhow::Result<()> {
    match args.command {
        WalCommand::Inspect { dir, json, check } => {
            if !dir.is_dir() {
                anyhow::bail!("{} is not a directory", dir.display());
            }
            let ins = sentra_wal::inspect_dir(&dir)
                .with_context(|| format!("inspecting {}", dir.display()))?;
            let text = if json {
                serde_json::to_string_pretty(&to_json(&ins))? + "\n"
            } else {
                render(&ins)
            };
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            if check && !ins.is_clean() {
                std::process::exit(2);
            }
        }
    }
    Ok(())
}

/// Last LSN of a segment, `None` if it holds no record.
fn last_lsn(s: &sentra_wal::SegmentInfo) -> Option<u64> {
    (s.records > 0).then(|| s.next_lsn - 1)
}

pub(crate) fn to_json(ins: &Inspection) -> serde_json::Value {
    let acked = ins.acked_lsn.unwrap_or(0);
    serde_json::json!({
        "dir": ins.dir.display().to_string(),
        "cursor": { "acked_lsn": ins.acked_lsn },
        "records": ins.records(),
        "unacked_records": ins.segments.iter()
            .map(|s| s.next_lsn.saturating_sub(s.first_lsn.max(acked + 1)).min(s.records))
            .sum::<u64>(),
        "bytes": ins.segments.iter().map(|s| s.size).sum::<u64>(),
        "clean": ins.is_clean(),
        "segments": ins.segments.iter().map(|s| serde_json::json!({
            "name": s.name,
            "segment_id": s.segment_id,
            "first_lsn": s.first_lsn,
            "last_lsn": last_lsn(s),
            "records": s.records,
            "bytes": s.size,
            "valid_end": s.valid_end,
            "sealed": s.sealed,
            "damage": s.damage,
        })).collect::<Vec<_>>(),
        "losses": ins.losses.iter().map(|l| serde_json::json!({
            "first_lsn": l.first,
            "last_lsn": l.last,
            "records": l.records(),
            "cause": l.cause.to_string(),
        })).collect::<Vec<_>>(),
    })
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn render(ins: &Inspection) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "WAL {} (read-only inspection, writer lock not taken)",
        display_safe(&ins.dir.display().to_string())
    );
    match ins.acked_lsn {
        Some(a) => {
            let _ = writeln!(o, "cursor: acknowledged up to lsn {a}");
        }
        None => {
            let _ = writeln!(o, "cursor: none (nothing acknowledged yet)");
        }
    }
    if ins.segments.is_empty() {
        let _ = writeln!(o, "no segments");
    } else {
        let _ = writeln!(
            o,
            "{:<26} {:>5} {:>12} {:>12} {:>9} {:>10} {:>6}  STATUS",
            "SEGMENT", "ID", "FIRST LSN", "LAST LSN", "RECORDS", "SIZE", "SEALED"
        );
        for s in &ins.segments {
            let _ = writeln!(
                o,
                "{:<26} {:>5} {:>12} {:>12} {:>9} {:>10} {:>6}  {}",
                display_safe(&s.name),
                s.segment_id
                    .map_or_else(|| "?".to_owned(), |i| i.to_string()),
                s.first_lsn,
                last_lsn(s).map_or_else(|| "-".to_owned(), |l| l.to_string()),
                s.records,
                human_bytes(s.size),
                if s.sealed { "yes" } else { "no" },
                display_safe(s.damage.as_deref().unwrap_or("ok")),
            );
        }
    }
    let bytes: u64 = ins.segments.iter().map(|s| s.size).sum();
    let _ = writeln!(
        o,
        "total: {} segments, {} records, {}",
        ins.segments.len(),
        ins.records(),
        human_bytes(bytes)
    );
    for l in &ins.losses {
        let _ = writeln!(
            o,
            "loss: lsn {}..={} ({} records, {})",
            l.first,
            l.last,
            l.records(),
            display_safe(&l.cause.to_string())
        );
    }
    let _ = writeln!(
        o,
        "status: {}",
        if ins.is_clean() { "clean" } else { "DAMAGED" }
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (tempfile::TempDir, Inspection) {
        let dir = tempfile::tempdir().unwrap();
        let opts = sentra_wal::Options::default()
            .segment_size(1024)
            .disk_cap(1 << 20);
        let (wal, _) = sentra_wal::Wal::open(dir.path(), opts).unwrap();
        for i in 0..30u8 {
            wal.append(&[i; 100]).unwrap();
        }
        wal.ack(5).unwrap();
        let ins = sentra_wal::inspect_dir(dir.path()).unwrap();
        drop(wal);
        (dir, ins)
    }

    #[test]
    fn table_lists_segments_cursor_and_status() {
        let (_d, ins) = sample();
        let t = render(&ins);
        assert!(t.contains("cursor: acknowledged up to lsn 5"), "{t}");
        assert!(t.contains("00000000000000000001.wal"), "{t}");
        assert!(t.contains("total: "), "{t}");
        assert!(t.contains("status: clean"), "{t}");
        assert_eq!(
            t.lines()
                .filter(|l| l.ends_with(".wal") || l.contains(".wal "))
                .count(),
            ins.segments.len()
        );
    }

    #[test]
    fn json_has_ranges() {
        let (_d, ins) = sample();
        let j = to_json(&ins);
        assert_eq!(j["cursor"]["acked_lsn"], 5);
        assert_eq!(j["records"], 30);
        assert_eq!(j["unacked_records"], 25);
        assert_eq!(j["clean"], true);
        let segs = j["segments"].as_array().unwrap();
        assert_eq!(segs[0]["first_lsn"], 1);
        assert_eq!(segs.last().unwrap()["last_lsn"], 30);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
    }
}

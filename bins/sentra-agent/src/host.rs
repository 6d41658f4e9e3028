//! Host metrics from `/proc` and `statvfs(2)`, named like Prometheus' node_exporter.
//!
//! The parsers are pure functions of the file's text (sans-IO) so they are tested with
//! real captured `/proc` files and with hostile input; [`HostCollector`] is the thin I/O
//! shell that reads the files. Hand-written parsing was chosen over the `procfs` crate:
//! the five formats are a few lines each, the output has to be node_exporter-shaped samples
//! anyway (so a typed intermediate model would only be converted again), and every
//! malformed line must be *counted and skipped* rather than fail the whole read.
//!
//! | source | metrics |
//! |---|---|
//! | `/proc/stat` | `node_cpu_seconds_total{cpu,mode}`, `node_cpu_guest_seconds_total{cpu,mode}`, `node_context_switches_total`, `node_forks_total`, `node_intr_total`, `node_boot_time_seconds`, `node_procs_running`, `node_procs_blocked` |
//! | `/proc/meminfo` | `node_memory_<Field>_bytes` (`node_memory_<Field>` for fields without a unit) |
//! | `/proc/loadavg` | `node_load1`, `node_load5`, `node_load15` |
//! | `/proc/net/dev` | `node_network_{receive,transmit}_<field>_total{device}` |
//! | `/proc/diskstats` | `node_disk_*{device}` (reads, writes, bytes, times, I/O in progress, discards, flushes) |
//! | `/proc/self/mountinfo` + `statvfs` | `node_filesystem_{size,free,avail}_bytes`, `node_filesystem_files`, `node_filesystem_files_free`, `node_filesystem_readonly` `{device,fstype,mountpoint}` |
//!
//! Cumulative totals measured in (fractional) seconds — CPU time, disk busy time — are sent
//! as gauges holding the exact float value, because the wire protocol's counter type is an
//! unsigned integer; byte, packet and operation totals are integer counters.

use std::path::{Path, PathBuf};

use crate::samples::SampleSet;

/// CPU modes of a `/proc/stat` `cpuN` line, in column order (node_exporter's names).
const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// Parses `/proc/stat`. `ticks_per_second` is `sysconf(_SC_CLK_TCK)` (`USER_HZ`, 100 on
/// every mainstream Linux build).
pub fn parse_stat(text: &str, ticks_per_second: u64, out: &mut SampleSet) {
    let hz = ticks_per_second.max(1) as f64;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        if let Some(cpu) = key.strip_prefix("cpu") {
            // The aggregate `cpu` line is skipped: it is the sum of the per-CPU lines.
            if cpu.is_empty() {
                continue;
            }
            if cpu.parse::<u32>().is_err() {
                out.note_invalid(1);
                continue;
            }
            let values: Vec<u64> = match fields.map(str::parse::<u64>).collect() {
                Ok(v) => v,
                Err(_) => {
                    out.note_invalid(1);
                    continue;
                }
            };
            if values.len() < 4 {
                out.note_invalid(1);
                continue;
            }
            for (mode, v) in CPU_MODES.iter().zip(&values) {
                out.gauge(
                    "node_cpu_seconds_total",
                    &[("cpu", cpu), ("mode", mode)],
                    *v as f64 / hz,
                );
            }
            for (mode, v) in ["user", "nice"].iter().zip(values.iter().skip(8)) {
                out.gauge(
                    "node_cpu_guest_seconds_total",
                    &[("cpu", cpu), ("mode", mode)],
                    *v as f64 / hz,
                );
            }
            continue;
        }
        let (name, counter) = match key {
            "ctxt" => ("node_context_switches_total", true),
            "processes" => ("node_forks_total", true),
            "intr" => ("node_intr_total", true),
            "btime" => ("node_boot_time_seconds", false),
            "procs_running" => ("node_procs_running", false),
            "procs_blocked" => ("node_procs_blocked", false),
            _ => continue,
        };
        match fields.next().map(str::parse::<u64>) {
            Some(Ok(v)) if counter => out.counter(name, &[], v),
            Some(Ok(v)) => out.gauge(name, &[], v as f64),
            _ => out.note_invalid(1),
        }
    }
}

/// node_exporter's meminfo field name: `Active(anon)` becomes `Active_anon`.
fn meminfo_field(name: &str) -> String {
    name.chars()
        .filter_map(|c| match c {
            '(' => Some('_'),
            ')' => None,
            c => Some(c),
        })
        .collect()
}

/// Parses `/proc/meminfo`: `Field:   value [kB]`.
pub fn parse_meminfo(text: &str, out: &mut SampleSet) {
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((field, rest)) = line.split_once(':') else {
            out.note_invalid(1);
            continue;
        };
        let mut parts = rest.split_ascii_whitespace();
        let Some(Ok(value)) = parts.next().map(str::parse::<u64>) else {
            out.note_invalid(1);
            continue;
        };
        let field = meminfo_field(field.trim());
        match parts.next() {
            None => out.gauge(&format!("node_memory_{field}"), &[], value as f64),
            Some("kB") => out.gauge(
                &format!("node_memory_{field}_bytes"),
                &[],
                value.saturating_mul(1024) as f64,
            ),
            Some(_) => out.note_invalid(1),
        }
    }
}

/// Parses `/proc/loadavg`: `0.52 0.58 0.59 2/1234 5678`.
pub fn parse_loadavg(text: &str, out: &mut SampleSet) {
    let mut fields = text.split_ascii_whitespace();
    for name in ["node_load1", "node_load5", "node_load15"] {
        match fields.next().map(str::parse::<f64>) {
            Some(Ok(v)) if v.is_finite() => out.gauge(name, &[], v),
            _ => {
                out.note_invalid(1);
                return;
            }
        }
    }
}

const NET_FIELDS: [&str; 16] = [
    "node_network_receive_bytes_total",
    "node_network_receive_packets_total",
    "node_network_receive_errs_total",
    "node_network_receive_drop_total",
    "node_network_receive_fifo_total",
    "node_network_receive_frame_total",
    "node_network_receive_compressed_total",
    "node_network_receive_multicast_total",
    "node_network_transmit_bytes_total",
    "node_network_transmit_packets_total",
    "node_network_transmit_errs_total",
    "node_network_transmit_drop_total",
    "node_network_transmit_fifo_total",
    "node_network_transmit_colls_total",
    "node_network_transmit_carrier_total",
    "node_network_transmit_compressed_total",
];

/// Parses `/proc/net/dev` (two header lines, then `iface: 16 numbers`).
pub fn parse_net_dev(text: &str, out: &mut SampleSet) {
    for line in text.lines() {
        // Header lines contain '|' and no ':' before it; data lines are `name: numbers`.
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if line.contains('|') {
            continue;
        }
        let device = name.trim();
        let values: Result<Vec<u64>, _> = rest.split_ascii_whitespace().map(str::parse).collect();
        match values {
            Ok(v) if v.len() >= NET_FIELDS.len() && !device.is_empty() => {
                for (metric, value) in NET_FIELDS.iter().zip(v) {
                    out.counter(metric, &[("device", device)], value);
                }
            }
            _ => out.note_invalid(1),
        }
    }
}

/// node_exporter's default `--collector.diskstats.device-exclude`:
/// `^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$` — RAM disks, loop devices, floppies
/// and partitions (whose I/O is already counted on the whole disk).
#[must_use]
pub fn disk_excluded(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(|c: char| c.is_ascii_digit()) else {
        return false;
    };
    let stem = stem.trim_end_matches(|c: char| c.is_ascii_digit());
    if matches!(stem, "ram" | "zram" | "loop" | "fd") {
        return true;
    }
    let b = stem.as_bytes();
    // (h|s|v|xv)d[a-z]
    if b.len() >= 3 && b[b.len() - 2] == b'd' && b[b.len() - 1].is_ascii_lowercase() {
        let prefix = &stem[..stem.len() - 2];
        if matches!(prefix, "h" | "s" | "v" | "xv") {
            return true;
        }
    }
    // nvme\d+n\d+p
    if let Some(rest) = stem.strip_prefix("nvme")
        && let Some(rest) = rest.strip_suffix('p')
        && let Some((ctrl, ns)) = rest.split_once('n')
    {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        return digits(ctrl) && digits(ns);
    }
    false
}

/// Fields of a `/proc/diskstats` line after `major minor name`, with their metric and how to
/// scale them: `Some(m)` multiplies into an integer counter, `None` is milliseconds turned
/// into float seconds. `node_disk_io_now` (field 9) is a gauge, handled separately.
const DISK_FIELDS: [(&str, Option<u64>); 17] = [
    ("node_disk_reads_completed_total", Some(1)),
    ("node_disk_reads_merged_total", Some(1)),
    ("node_disk_read_bytes_total", Some(512)),
    ("node_disk_read_time_seconds_total", None),
    ("node_disk_writes_completed_total", Some(1)),
    ("node_disk_writes_merged_total", Some(1)),
    ("node_disk_written_bytes_total", Some(512)),
    ("node_disk_write_time_seconds_total", None),
    ("node_disk_io_now", Some(1)),
    ("node_disk_io_time_seconds_total", None),
    ("node_disk_io_time_weighted_seconds_total", None),
    ("node_disk_discards_completed_total", Some(1)),
    ("node_disk_discards_merged_total", Some(1)),
    ("node_disk_discarded_sectors_total", Some(1)),
    ("node_disk_discard_time_seconds_total", None),
    ("node_disk_flush_requests_total", Some(1)),
    ("node_disk_flush_requests_time_seconds_total", None),
];

/// Parses `/proc/diskstats` (11, 15 or 17 statistics per line depending on the kernel).
pub fn parse_diskstats(text: &str, out: &mut SampleSet) {
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(_major), Some(_minor), Some(device)) =
            (fields.next(), fields.next(), fields.next())
        else {
            if !line.trim().is_empty() {
                out.note_invalid(1);
            }
            continue;
        };
        let values: Vec<u64> = match fields.map(str::parse::<u64>).collect() {
            Ok(v) => v,
            Err(_) => {
                out.note_invalid(1);
                continue;
            }
        };
        if values.len() < 11 {
            out.note_invalid(1);
            continue;
        }
        if disk_excluded(device) {
            continue;
        }
        let labels = [("device", device)];
        for ((metric, scale), v) in DISK_FIELDS.iter().zip(&values) {
            match scale {
                _ if *metric == "node_disk_io_now" => out.gauge(metric, &labels, *v as f64),
                Some(m) => out.counter(metric, &labels, v.saturating_mul(*m)),
                None => out.gauge(metric, &labels, *v as f64 / 1000.0),
            }
        }
    }
}

/// A mounted file system worth reporting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Source device (`/dev/vda1`, `server:/export`).
    pub device: String,
    /// Mount point.
    pub mountpoint: String,
    /// File system type.
    pub fstype: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// node_exporter's default `--collector.filesystem.fs-types-exclude`.
const FS_TYPES_EXCLUDED: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// node_exporter's default `--collector.filesystem.mount-points-exclude`:
/// `^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)`.
fn mountpoint_excluded(mp: &str) -> bool {
    let under = |p: &str| mp == p || mp.starts_with(&format!("{p}/"));
    let strictly_under = |p: &str| mp.len() > p.len() + 1 && mp.starts_with(&format!("{p}/"));
    under("/dev")
        || under("/proc")
        || under("/sys")
        || strictly_under("/run/credentials")
        || strictly_under("/var/lib/docker")
        || strictly_under("/var/lib/containers/storage")
}

/// Undoes the octal escapes the kernel uses in mountinfo (`\040` for a space).
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (u32::from(b[i + 1] - b'0') << 6)
                | (u32::from(b[i + 2] - b'0') << 3)
                | u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo` into the mounts worth reporting (excluded types and mount
/// points removed, one entry per mount point — the last mount wins, as it hides the others).
/// Returns the mounts and the number of malformed lines.
#[must_use]
pub fn parse_mountinfo(text: &str) -> (Vec<Mount>, usize) {
    let mut mounts: Vec<Mount> = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        // id parent major:minor root mountpoint options [optional...] - fstype source superopts
        let Some((left, right)) = line.split_once(" - ") else {
            bad += 1;
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 6 || right.len() < 2 {
            bad += 1;
            continue;
        }
        let mountpoint = unescape_octal(left[4]);
        let fstype = right[0].to_owned();
        if FS_TYPES_EXCLUDED.contains(&fstype.as_str()) || mountpoint_excluded(&mountpoint) {
            continue;
        }
        let read_only = left[5].split(',').any(|o| o == "ro");
        let m = Mount {
            device: unescape_octal(right[1]),
            mountpoint,
            fstype,
            read_only,
        };
        mounts.retain(|x| x.mountpoint != m.mountpoint);
        mounts.push(m);
    }
    (mounts, bad)
}

/// `statvfs(2)` numbers of one file system, already in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsUsage {
    /// Total size.
    pub size: u64,
    /// Free, including blocks reserved for root.
    pub free: u64,
    /// Available to unprivileged users.
    pub avail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub files_free: u64,
}

/// Adds the samples of one file system.
pub fn push_filesystem(m: &Mount, u: FsUsage, out: &mut SampleSet) {
    let labels = [
        ("device", m.device.as_str()),
        ("fstype", m.fstype.as_str()),
        ("mountpoint", m.mountpoint.as_str()),
    ];
    out.gauge("node_filesystem_size_bytes", &labels, u.size as f64);
    out.gauge("node_filesystem_free_bytes", &labels, u.free as f64);
    out.gauge("node_filesystem_avail_bytes", &labels, u.avail as f64);
    out.gauge("node_filesystem_files", &labels, u.files as f64);
    out.gauge("node_filesystem_files_free", &labels, u.files_free as f64);
    out.gauge(
        "node_filesystem_readonly",
        &labels,
        if m.read_only { 1.0 } else { 0.0 },
    );
}

fn statvfs(path: &str) -> std::io::Result<FsUsage> {
    let s = rustix::fs::statvfs(path)?;
    let frsize = if s.f_frsize == 0 {
        s.f_bsize
    } else {
        s.f_frsize
    };
    Ok(FsUsage {
        size: s.f_blocks.saturating_mul(frsize),
        free: s.f_bfree.saturating_mul(frsize),
        avail: s.f_bavail.saturating_mul(frsize),
        files: s.f_files,
        files_free: s.f_ffree,
    })
}

/// Reads the host metrics. Blocking (it reads files and calls `statvfs`): run it on a
/// blocking thread.
#[derive(Clone, Debug)]
pub struct HostCollector {
    proc_root: PathBuf,
    filesystems: bool,
}

impl Default for HostCollector {
    fn default() -> Self {
        Self::new("/proc")
    }
}

/// What a host collection produced besides samples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostReport {
    /// Sources that could not be read at all, with the reason (for example a missing
    /// `/proc/diskstats` in a container).
    pub unreadable: Vec<(String, String)>,
}

impl HostCollector {
    /// A collector reading `<proc_root>/stat`, `<proc_root>/meminfo`, … (`/proc` normally;
    /// a directory of captured files in tests).
    #[must_use]
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            filesystems: true,
        }
    }

    /// Whether to report file systems (mountinfo + `statvfs`); on by default.
    #[must_use]
    pub fn filesystems(mut self, on: bool) -> Self {
        self.filesystems = on;
        self
    }

    fn read(&self, rel: &str, report: &mut HostReport) -> Option<String> {
        let path: PathBuf = Path::new(&self.proc_root).join(rel);
        match std::fs::read_to_string(&path) {
            Ok(s) => Some(s),
            Err(e) => {
                report
                    .unreadable
                    .push((path.display().to_string(), e.to_string()));
                None
            }
        }
    }

    /// Collects every host metric into `out`.
    pub fn collect(&self, out: &mut SampleSet) -> HostReport {
        let mut report = HostReport::default();
        if let Some(t) = self.read("stat", &mut report) {
            parse_stat(&t, clock_ticks(), out);
        }
        if let Some(t) = self.read("meminfo", &mut report) {
            parse_meminfo(&t, out);
        }
        if let Some(t) = self.read("loadavg", &mut report) {
            parse_loadavg(&t, out);
        }
        if let Some(t) = self.read("net/dev", &mut report) {
            parse_net_dev(&t, out);
        }
        if let Some(t) = self.read("diskstats", &mut report) {
            parse_diskstats(&t, out);
        }
        if self.filesystems
            && let Some(t) = self.read("self/mountinfo", &mut report)
        {
            let (mounts, bad) = parse_mountinfo(&t);
            out.note_invalid(bad);
            for m in &mounts {
                match statvfs(&m.mountpoint) {
                    Ok(u) => push_filesystem(m, u, out),
                    // Permission denied on a mount point we cannot see into (another user's
                    // FUSE mount) is normal; node_exporter skips those too.
                    Err(_) => continue,
                }
            }
        }
        report
    }
}

fn clock_ticks() -> u64 {
    rustix::param::clock_ticks_per_second()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentra_core::{UnixMillis, Value};

    fn set() -> SampleSet {
        SampleSet::new(UnixMillis::from_millis(1_700_000_000_000))
    }

    fn find<'a>(s: &'a SampleSet, name: &str, labels: &[(&str, &str)]) -> Option<&'a Value> {
        s.samples()
            .iter()
            .find(|x| {
                x.name.as_str() == name
                    && x.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
            })
            .map(|x| &x.value)
    }

    fn fixture(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/proc")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn stat_captured() {
        let mut s = set();
        parse_stat(&fixture("stat"), 100, &mut s);
        assert_eq!(s.invalid(), 0);
        // cpu0 44708 0 8251 63199 168 0 39 290 0 0
        assert_eq!(
            find(
                &s,
                "node_cpu_seconds_total",
                &[("cpu", "0"), ("mode", "user")]
            ),
            Some(&Value::Gauge(447.08))
        );
        assert_eq!(
            find(
                &s,
                "node_cpu_seconds_total",
                &[("cpu", "1"), ("mode", "steal")]
            ),
            Some(&Value::Gauge(3.0))
        );
        // two CPUs × 8 modes + 2 guest modes
        let cpu = s
            .samples()
            .iter()
            .filter(|x| x.name.as_str().starts_with("node_cpu_"))
            .count();
        assert_eq!(cpu, 2 * 10);
        assert_eq!(
            find(&s, "node_context_switches_total", &[]),
            Some(&Value::Counter(1_484_523))
        );
        assert_eq!(
            find(&s, "node_boot_time_seconds", &[]),
            Some(&Value::Gauge(1_795_464_975.0))
        );
        assert_eq!(
            find(&s, "node_procs_running", &[]),
            Some(&Value::Gauge(11.0))
        );
        assert_eq!(
            find(&s, "node_intr_total", &[]),
            Some(&Value::Counter(652_792))
        );
    }

    #[test]
    fn stat_hostile() {
        let mut s = set();
        parse_stat(
            "cpu0 1 2\ncpuX 1 2 3 4\ncpu1 a b c d\ncpu2 1 2 3 4 5\nctxt\nctxt -1\nbtime 99999999999999999999999\n\0\0\n",
            100,
            &mut s,
        );
        // cpu0 (too short), cpuX, cpu1, ctxt (missing), ctxt (negative), btime (overflow)
        assert_eq!(s.invalid(), 6);
        // cpu2 has 5 columns: user nice system idle iowait
        assert_eq!(s.len(), 5);
        let mut s = set();
        parse_stat("", 100, &mut s);
        assert!(s.is_empty());
        // A line truncated mid-number still parses the complete columns only if all are numbers.
        let mut s = set();
        parse_stat("cpu0 10 20 30 40 5", 0, &mut s);
        assert_eq!(s.len(), 5, "hz 0 is treated as 1, not a division by zero");
    }

    #[test]
    fn meminfo_captured() {
        let text = fixture("meminfo");
        let mut s = set();
        parse_meminfo(&text, &mut s);
        assert_eq!(s.invalid(), 0);
        assert_eq!(s.len(), text.lines().count());
        assert_eq!(
            find(&s, "node_memory_MemTotal_bytes", &[]),
            Some(&Value::Gauge(24_683_656.0 * 1024.0))
        );
        assert!(find(&s, "node_memory_MemAvailable_bytes", &[]).is_some());
        assert!(find(&s, "node_memory_Active_anon_bytes", &[]).is_some());
        assert!(find(&s, "node_memory_HugePages_Total", &[]).is_some());
    }

    #[test]
    fn meminfo_hostile() {
        let mut s = set();
        parse_meminfo(
            "MemTotal 12 kB\nMemFree: x kB\nOdd: 5 MB\nBad Name: 5 kB\nOk: 7\n\n:\n",
            &mut s,
        );
        assert_eq!(s.len(), 1, "{:?}", s.samples());
        assert_eq!(s.invalid(), 5);
    }

    #[test]
    fn loadavg_captured_and_hostile() {
        let mut s = set();
        parse_loadavg(&fixture("loadavg"), &mut s);
        assert_eq!(s.len(), 3);
        assert_eq!(s.invalid(), 0);
        let mut s = set();
        parse_loadavg("0.5 NaN", &mut s);
        assert_eq!((s.len(), s.invalid()), (1, 1));
        let mut s = set();
        parse_loadavg("", &mut s);
        assert_eq!((s.len(), s.invalid()), (0, 1));
    }

    #[test]
    fn net_dev_captured() {
        let mut s = set();
        parse_net_dev(&fixture("net_dev"), &mut s);
        assert_eq!(s.invalid(), 0);
        assert_eq!(s.len(), 4 * 16);
        assert_eq!(
            find(
                &s,
                "node_network_receive_bytes_total",
                &[("device", "eth0")]
            ),
            Some(&Value::Counter(272_497_081))
        );
        assert_eq!(
            find(
                &s,
                "node_network_transmit_packets_total",
                &[("device", "eth0")]
            ),
            Some(&Value::Counter(8658))
        );
    }

    #[test]
    fn net_dev_hostile() {
        let text = fixture("net_dev");
        // Truncated in the middle of the last line.
        let cut = &text[..text.len() - 20];
        let mut s = set();
        parse_net_dev(cut, &mut s);
        assert_eq!(s.len(), 3 * 16);
        assert_eq!(s.invalid(), 1);
        let mut s = set();
        parse_net_dev(
            "eth0: 1 2 3\n: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\nx: -1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
            &mut s,
        );
        assert_eq!((s.len(), s.invalid()), (0, 3));
    }

    #[test]
    fn diskstats_captured() {
        let mut s = set();
        parse_diskstats(&fixture("diskstats"), &mut s);
        assert_eq!(s.invalid(), 0);
        // loop* and zram0 are excluded; vda has 17 fields.
        assert_eq!(s.len(), 17, "{:?}", s.samples());
        // vda 73693 8297 5642426 60875 ...
        assert_eq!(
            find(&s, "node_disk_reads_completed_total", &[("device", "vda")]),
            Some(&Value::Counter(73_693))
        );
        assert_eq!(
            find(&s, "node_disk_read_bytes_total", &[("device", "vda")]),
            Some(&Value::Counter(5_642_426 * 512))
        );
        assert_eq!(
            find(
                &s,
                "node_disk_read_time_seconds_total",
                &[("device", "vda")]
            ),
            Some(&Value::Gauge(60.875))
        );
        assert_eq!(
            find(&s, "node_disk_io_now", &[("device", "vda")]),
            Some(&Value::Gauge(0.0))
        );
    }

    #[test]
    fn diskstats_old_kernel_and_hostile() {
        let mut s = set();
        // 11 fields (kernel < 4.18), then garbage.
        parse_diskstats(
            "   8       0 sda 1 2 3 4 5 6 7 8 9 10 11\n 8 0 sdb 1 2\n 8 0\n 8 0 sdc 1 2 3 4 5 6 7 8 9 10 x\n",
            &mut s,
        );
        assert_eq!(s.len(), 11);
        assert_eq!(s.invalid(), 3);
    }

    #[test]
    fn disk_exclusion_matches_node_exporter() {
        for ex in [
            "loop0",
            "loop12",
            "ram0",
            "zram0",
            "fd0",
            "sda1",
            "vda2",
            "xvda1",
            "hdb3",
            "nvme0n1p1",
            "nvme10n2p13",
        ] {
            assert!(disk_excluded(ex), "{ex}");
        }
        for keep in [
            "sda", "vda", "xvdb", "nvme0n1", "dm-0", "md0", "mmcblk0", "loop", "sr0", "nvme0n1p",
        ] {
            assert!(!disk_excluded(keep), "{keep}");
        }
    }

    #[test]
    fn mountinfo_captured() {
        let (mounts, bad) = parse_mountinfo(&fixture("mountinfo"));
        assert_eq!(bad, 0);
        let points: Vec<&str> = mounts.iter().map(|m| m.mountpoint.as_str()).collect();
        assert!(points.contains(&"/"), "{points:?}");
        assert!(
            !points
                .iter()
                .any(|p| p.starts_with("/sys") || p.starts_with("/proc") || p.starts_with("/dev"))
        );
        let root = mounts.iter().find(|m| m.mountpoint == "/").expect("root");
        assert_eq!(root.device, "/dev/vda");
        assert!(!root.read_only);
    }

    #[test]
    fn mountinfo_escapes_and_hostile() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space ro,noatime master:1 - ext3 /dev/root rw\n\
                    garbage\n\
                    1 2 3 - x\n\
                    37 35 98:0 / /run/credentials/x rw - tmpfs none rw\n";
        let (mounts, bad) = parse_mountinfo(text);
        assert_eq!(bad, 2);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mountpoint, "/mnt/with space");
        assert!(mounts[0].read_only);
        assert_eq!(unescape_octal("a\\0"), "a\\0");
        assert_eq!(unescape_octal("\\777"), "\\777");
    }

    #[test]
    fn collector_reads_a_proc_tree() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        std::fs::create_dir_all(root.join("net")).expect("mkdir");
        for (src, dst) in [
            ("stat", "stat"),
            ("meminfo", "meminfo"),
            ("loadavg", "loadavg"),
            ("net_dev", "net/dev"),
        ] {
            std::fs::write(root.join(dst), fixture(src)).expect("write");
        }
        let mut s = set();
        let report = HostCollector::new(root).filesystems(false).collect(&mut s);
        assert_eq!(
            report.unreadable.len(),
            1,
            "diskstats is missing: {report:?}"
        );
        assert!(report.unreadable[0].0.ends_with("diskstats"));
        assert!(find(&s, "node_load1", &[]).is_some());
        assert_eq!(s.invalid(), 0);
    }

    #[test]
    fn collector_on_this_host() {
        let mut s = set();
        let report = HostCollector::default().collect(&mut s);
        assert!(report.unreadable.is_empty(), "{report:?}");
        assert!(find(&s, "node_load1", &[]).is_some());
        assert!(
            s.samples()
                .iter()
                .any(|x| x.name.as_str() == "node_filesystem_size_bytes"),
            "statvfs of at least / works"
        );
    }
}

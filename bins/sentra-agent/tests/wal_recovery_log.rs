//! Issue 10 item 9, agent side: a loss found by WAL recovery is logged as an error by the
//! start that found it, and not again as if new by the next start (which says, at info, that
//! the known loss is still ahead of the shipper).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use sentra_agent::{Agent, Config, Credentials, WalFullPolicy};
use sentra_core::{AgentId, KeyId, SecretKey, proto};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn take(&self) -> String {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&std::mem::take(&mut *v)).into_owned()
    }
}

async fn run_agent_briefly(state: &std::path::Path) {
    let creds = Credentials::new(
        AgentId::new("edge-log").expect("id"),
        KeyId::new(1),
        SecretKey::from_bytes([3; 32]),
    );
    let mut c = Config::new(state);
    // Nothing listens there: the shipper retries; only the start-up log matters here.
    c.server = Some("http://127.0.0.1:9".into());
    c.credentials = Some(creds);
    c.host_interval = Duration::from_secs(3600);
    c.collect_filesystems = false;
    let agent = Agent::new(c).expect("agent").without_wireguard().spawn();
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_loss_is_logged_once() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("agent");
    // A WAL with 5 records; the length field of record 3 is damaged afterwards.
    let mut lens = Vec::new();
    {
        let (store, _) =
            sentra_agent::store::Store::open(&state, 1 << 30, WalFullPolicy::DropNewest)
                .expect("open");
        for i in 1..=5u64 {
            let b = proto::MetricBatch {
                agent_id: "edge-log".into(),
                seq: store.seq_base() + i,
                created_ms: 1_700_000_000_000 + i as i64,
                ..Default::default()
            }
            .encode_to_vec();
            lens.push(b.len());
            assert_eq!(store.wal().append(&b).expect("append"), i);
        }
    }
    let seg = state.join("wal").join(sentra_wal::format::segment_name(1));
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let at = sentra_wal::format::SEGMENT_HEADER_LEN
        + sentra_wal::format::frame_len(lens[0])
        + sentra_wal::format::frame_len(lens[1]);
    bytes[at] ^= 0x40;
    std::fs::write(&seg, bytes).expect("write segment");

    run_agent_briefly(&state).await;
    let first = capture.take();
    let errors = first
        .lines()
        .filter(|l| l.contains("WAL recovery found lost records"))
        .collect::<Vec<_>>();
    assert_eq!(errors.len(), 1, "first start logs the loss once:\n{first}");
    assert!(
        errors[0].contains("ERROR") && errors[0].contains("3..=3"),
        "with its LSN range: {}",
        errors[0]
    );

    run_agent_briefly(&state).await;
    let second = capture.take();
    assert!(
        !second.contains("WAL recovery found lost records"),
        "the second start must not report the old loss as new:\n{second}"
    );
    assert!(
        second.contains("reported before") && second.contains("3..=3"),
        "it says the known loss is still ahead of the shipper:\n{second}"
    );
}

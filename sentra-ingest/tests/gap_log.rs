//! Issue 10 item 4: an accepted sequence gap is logged as a warning naming the agent, the
//! expected and the received seq. Its own test binary: a scoped subscriber only sees every
//! callsite reliably when no other test hits them first from another thread.

mod support;

use sentra_core::{UnixMillis, proto::AckStatus};
use sentra_ingest::{Config, Ingest};
use support::*;

fn now() -> i64 {
    UnixMillis::now().as_millis()
}

fn one(a: &sentra_core::AgentId, seq: u64, ts: i64) -> sentra_core::Verified {
    verify(&batch(a, seq, ts, vec![gauge("g", &[], ts, seq as f64)]))
}

/// A `MakeWriter` collecting log output in memory.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_accepted_gap_is_logged_with_agent_expected_and_received_seq() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    // a current-thread runtime: the writer task logs on this thread, under this subscriber
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let a = agent("gaplog-1");
            let t = now();
            let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
            for seq in [1, 2, 9] {
                let ack = ingest.service().push(one(&a, seq, t + seq as i64)).await;
                assert_eq!(ack.unwrap().status(), AckStatus::Accepted);
            }
            ingest.shutdown().await.unwrap();
        });
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("sequence gap accepted"))
        .unwrap_or_else(|| panic!("no gap warning in:\n{text}"));
    assert!(line.contains("WARN"), "{line}");
    for want in ["agent_id=gaplog-1", "expected=3", "received=9", "missing=6"] {
        assert!(line.contains(want), "{want} missing in: {line}");
    }
    assert_eq!(text.matches("sequence gap accepted").count(), 1, "{text}");
}

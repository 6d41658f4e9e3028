//! Both clients against the real kernel of the machine running the tests, without needing
//! WireGuard or root: the rtnetlink side (link dump, link lookup by name) always works, and
//! the generic-netlink side either finds the `wireguard` family or reports it missing.
//! The WireGuard round trips themselves are in `tests/kernel.rs` (a VM with the module).
#![cfg(target_os = "linux")]

use sentra_wg::{Error, blocking};

/// A name no test machine has.
const MISSING: &str = "sentra-nx0";

fn check_unavailable_or_no_device(e: &Error) {
    assert!(
        e.is_unavailable() || e.is_no_device(),
        "expected NotAvailable/PermissionDenied or NoDevice, got {e:?}"
    );
}

#[test]
fn blocking_client_talks_to_the_kernel_without_a_runtime() {
    let c = blocking::Client::connect().expect("netlink sockets");
    let names = c.link_names().expect("rtnetlink link dump");
    // Every network namespace has the loopback device, index 1.
    assert_eq!(names.get(1), Some("lo"), "{names:?}");
    // WireGuard interfaces are a subset of all links, with the same names.
    for i in c.list_interfaces().expect("rtnetlink link dump") {
        assert_eq!(names.get(i.index), Some(i.name.as_str()), "{i:?}");
    }
    // A lookup by name that finds nothing is NoDevice (ENODEV from RTM_GETLINK).
    let e = c.set_mtu(MISSING, 1420).expect_err("no such link");
    assert!(e.is_no_device(), "{e:?}");
    let e = c.delete_link(MISSING).expect_err("no such link");
    assert!(e.is_no_device(), "{e:?}");
    // The generic-netlink side: the family resolves, or WireGuard is reported missing.
    match c.probe() {
        Ok(()) => assert_eq!(c.stats().family_resolutions, 1),
        Err(e) => assert!(e.is_unavailable(), "{e:?}"),
    }
    check_unavailable_or_no_device(&c.get_device(MISSING).expect_err("no such device"));
    // Many requests on one socket pair: replies never get mixed up between requests.
    for _ in 0..50 {
        assert_eq!(c.link_names().expect("dump").get(1), Some("lo"));
        assert!(
            c.set_link_up(MISSING, true)
                .expect_err("missing")
                .is_no_device()
        );
    }
}

#[test]
fn blocking_client_is_shared_between_threads() {
    let c = std::sync::Arc::new(blocking::Client::connect().expect("netlink sockets"));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let names = c.link_names().expect("dump");
                    assert_eq!(names.get(1), Some("lo"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn async_client_gives_the_blocking_clients_answers() {
    let a = sentra_wg::Client::connect().await.expect("netlink sockets");
    let names = a.link_names().await.expect("rtnetlink link dump");
    let b = tokio::task::spawn_blocking(|| {
        blocking::Client::connect()
            .and_then(|c| c.link_names())
            .expect("blocking dump")
    })
    .await
    .expect("join");
    assert_eq!(names, b);
    assert!(
        a.set_mtu(MISSING, 1420)
            .await
            .expect_err("missing")
            .is_no_device()
    );
    match a.probe().await {
        Ok(()) => {}
        Err(e) => assert!(e.is_unavailable(), "{e:?}"),
    }
    check_unavailable_or_no_device(&a.get_device(MISSING).await.expect_err("missing"));
    // Concurrent callers share the client's sockets.
    let calls = (0..8).map(|_| {
        let a = a.clone();
        async move { a.link_names().await.expect("dump") }
    });
    for n in futures_join(calls).await {
        assert_eq!(n.get(1), Some("lo"));
    }
}

#[cfg(feature = "tokio")]
async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("join"));
    }
    out
}

//! Failed authentications charged to their source: the client address and the connection.

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use super::{Gcra, Limiter, Quota, SourceLimited};
use crate::server::PeerInfo;

/// Per-connection state of the source limit, shared by the connection's requests (through
/// [`PeerInfo`]).
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// A request on this connection passed authentication.
    authenticated: AtomicBool,
    /// Requests seen by the auth layer.
    requests: AtomicU64,
    /// GCRA state of this connection's failure budget.
    failure_tat: Mutex<Option<Instant>>,
}

impl ConnState {
    fn failure_tat(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.failure_tat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The address key failures are charged to: IPv4 addresses (also IPv4-mapped IPv6) as they
/// are, IPv6 addresses by their /64 prefix (one host usually owns a whole /64).
#[must_use]
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Charges failed authentications (bad tag, unknown agent or key, malformed envelope,
/// clock skew, certificate mismatch) to their source, never to the agent the envelope
/// claims to be: a budget ([`Quota`]) per client address ([`source_key`]) and the same
/// budget per connection.
///
/// Before verification, a request is refused with [`SourceLimited`] when its connection
/// has used up its failure budget, or when its address has and the connection has not yet
/// carried an authenticated request (its very first request is still verified, so a valid
/// agent can connect during a flood from its address). Connections that authenticated are
/// only limited by their own failures, so agents behind one NAT keep working while a
/// forger there is limited. Memory: one entry per address with recent failures, at most
/// [`Quota::max_tracked_agents`]; per connection a few words.
///
/// Requests without a known peer address (in-process) are not limited. Cheap to clone;
/// clones share the state.
#[derive(Clone, Debug)]
pub struct SourceLimiter {
    addrs: Arc<Limiter<IpAddr>>,
    gcra: Gcra,
}

/// The source of one request: address key and connection.
pub(crate) struct Source {
    key: IpAddr,
    conn: Arc<ConnState>,
}

impl SourceLimiter {
    /// Allows each address, and each connection, `quota` failed authentications.
    #[must_use]
    pub fn new(quota: Quota) -> Self {
        Self {
            addrs: Arc::new(Limiter::new(quota)),
            gcra: quota.gcra(),
        }
    }

    /// The source of a request on the connection `peer`, if it is limited at all.
    pub(crate) fn source(peer: &PeerInfo) -> Option<Source> {
        Some(Source {
            key: source_key(peer.remote_addr?.ip()),
            conn: peer.conn.clone()?,
        })
    }

    /// Whether a request from `src` may be verified at `now`. Reserves one failure in the
    /// budgets that apply (so concurrent requests cannot overshoot them); settle with
    /// [`SourceLimiter::failed`] or [`SourceLimiter::succeeded`].
    pub(crate) fn admit(&self, src: &Source, now: Instant) -> Result<Admission, SourceLimited> {
        let first = src.conn.requests.fetch_add(1, Ordering::Relaxed) == 0;
        {
            let mut tat = src.conn.failure_tat();
            *tat = Some(
                self.gcra
                    .try_charge(*tat, now)
                    .map_err(SourceLimited::new)?,
            );
        }
        let address = !first && !src.conn.authenticated.load(Ordering::Relaxed);
        if address && let Err(wait) = self.addrs.check(&src.key, now) {
            self.refund_conn(src, now);
            return Err(SourceLimited::new(wait));
        }
        Ok(Admission { address, now })
    }

    fn refund_conn(&self, src: &Source, now: Instant) {
        let mut tat = src.conn.failure_tat();
        *tat = self.gcra.refunded(*tat, now);
    }

    /// Settles an admitted request whose authentication failed: the failure stays charged
    /// to the connection and to the address.
    pub(crate) fn failed(&self, src: &Source, admission: Admission) {
        if !admission.address {
            self.addrs.charge(&src.key, admission.now);
        }
    }

    /// Settles an admitted request that authenticated: gives the reservations back and
    /// marks the connection as authenticated.
    pub(crate) fn succeeded(&self, src: &Source, admission: Admission) {
        src.conn.authenticated.store(true, Ordering::Relaxed);
        self.refund_conn(src, admission.now);
        if admission.address {
            self.addrs.refund(&src.key, admission.now);
        }
    }
}

/// What [`SourceLimiter::admit`] reserved for one request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Admission {
    address: bool,
    now: Instant,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn conn(ip: &str) -> PeerInfo {
        PeerInfo {
            remote_addr: Some(format!("{ip}:1000").parse().unwrap()),
            client_cert: None,
            conn: Some(Arc::default()),
        }
    }

    #[test]
    fn failures_limit_the_source_but_not_authenticated_connections_there() {
        let l = SourceLimiter::new(Quota::per_second(0.001).burst(2));
        let now = Instant::now();
        let (good, bad, late) = (conn("10.0.0.1"), conn("10.0.0.1"), conn("10.0.0.1"));
        let (good, bad, late) = (
            SourceLimiter::source(&good).unwrap(),
            SourceLimiter::source(&bad).unwrap(),
            SourceLimiter::source(&late).unwrap(),
        );
        let a = l.admit(&good, now).unwrap();
        l.succeeded(&good, a);
        for _ in 0..2 {
            let a = l.admit(&bad, now).unwrap();
            l.failed(&bad, a);
        }
        let err = l.admit(&bad, now).unwrap_err();
        assert!(err.retry_after() > Duration::from_secs(100), "{err}");
        // The authenticated connection from the same address is not limited.
        for _ in 0..10 {
            let a = l.admit(&good, now).unwrap();
            l.succeeded(&good, a);
        }
        // A new connection from the address gets one probation request, then is limited.
        let a = l.admit(&late, now).unwrap();
        l.failed(&late, a);
        assert!(l.admit(&late, now).is_err());
        // Another address is unaffected; an IPv6 /64 is one source.
        let other = SourceLimiter::source(&conn("10.0.0.2")).unwrap();
        for _ in 0..2 {
            let a = l.admit(&other, now).unwrap();
            l.failed(&other, a);
        }
        assert_eq!(
            source_key("2001:db8:1:2:aa::1".parse().unwrap()),
            source_key("2001:db8:1:2:bb::9".parse().unwrap())
        );
        assert_eq!(
            source_key("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_connection_that_authenticated_is_limited_by_its_own_failures() {
        let l = SourceLimiter::new(Quota::per_second(0.001).burst(3));
        let now = Instant::now();
        let c = SourceLimiter::source(&conn("10.0.0.1")).unwrap();
        let a = l.admit(&c, now).unwrap();
        l.succeeded(&c, a);
        // Valid requests are given back: any number of them.
        for _ in 0..10 {
            let a = l.admit(&c, now).unwrap();
            l.succeeded(&c, a);
        }
        for _ in 0..3 {
            let a = l.admit(&c, now).unwrap();
            l.failed(&c, a);
        }
        assert!(l.admit(&c, now).is_err());
    }

    #[test]
    fn tracked_addresses_stay_bounded() {
        let l = SourceLimiter::new(Quota::per_second(0.001).max_tracked_agents(4));
        let now = Instant::now();
        for i in 0..100 {
            let c = SourceLimiter::source(&conn(&format!("10.0.1.{i}"))).unwrap();
            let a = l.admit(&c, now).unwrap();
            l.failed(&c, a);
        }
        assert!(l.addrs.tracked() <= 4, "{}", l.addrs.tracked());
    }
}

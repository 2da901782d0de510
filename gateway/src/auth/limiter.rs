//! The failed-authentication limiter: past [`limits::MAX_AUTH_FAILURES`] failures within the
//! window, a client address is refused with 429 until the window ends.
//!
//! Loopback clients are never limited (OpenClaw's `exemptLoopback` default): a gateway on
//! loopback is its owner's, and locking the owner out is the attack. IPv6 clients are counted per
//! /64, the block one host usually controls. Each failure costs O(1): the map holds at most
//! `capacity` addresses and, when full, drops the one that entered first (kept in a FIFO beside
//! the map), with no scan; an attacker with more addresses than that can churn its own entries
//! out, which the window would have forgiven soon anyway.
//!
//! [`limits::MAX_AUTH_FAILURES`]: crate::limits::MAX_AUTH_FAILURES

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy)]
struct Entry {
    since: Instant,
    count: u32,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<IpAddr, Entry>,
    /// Keys in insertion order: the eviction order.
    order: VecDeque<IpAddr>,
}

#[derive(Debug)]
pub struct AuthLimiter {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    table: Mutex<Table>,
}

/// The key an address is counted under: IPv4 (also v4-mapped IPv6) as is, IPv6 per /64;
/// `None` for loopback, which is never limited.
fn key(ip: IpAddr) -> Option<IpAddr> {
    let ip = ip.to_canonical();
    if ip.is_loopback() {
        return None;
    }
    Some(match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
    })
}

impl AuthLimiter {
    pub fn new(max_failures: u32, window: Duration, capacity: usize) -> AuthLimiter {
        AuthLimiter { max_failures, window, capacity: capacity.max(1), table: Mutex::new(Table::default()) }
    }

    /// `Some(retry after)` while `ip` is over the limit.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let key = key(ip)?;
        let table = self.table.lock().expect("auth limiter");
        let entry = table.entries.get(&key)?;
        let left = self.window.checked_sub(entry.since.elapsed())?;
        (entry.count >= self.max_failures).then_some(left)
    }

    pub fn record_failure(&self, ip: IpAddr) {
        let Some(key) = key(ip) else { return };
        let mut table = self.table.lock().expect("auth limiter");
        let now = Instant::now();
        if let Some(entry) = table.entries.get_mut(&key) {
            if entry.since.elapsed() >= self.window {
                *entry = Entry { since: now, count: 0 };
            }
            entry.count = entry.count.saturating_add(1);
            return;
        }
        if table.entries.len() >= self.capacity {
            if let Some(oldest) = table.order.pop_front() {
                table.entries.remove(&oldest);
            }
        }
        table.entries.insert(key, Entry { since: now, count: 1 });
        table.order.push_back(key);
    }

    /// Addresses refused right now (for the status page; a scan, but not on the failure path).
    pub fn blocked_count(&self) -> usize {
        let table = self.table.lock().expect("auth limiter");
        table
            .entries
            .values()
            .filter(|e| e.count >= self.max_failures && e.since.elapsed() < self.window)
            .count()
    }

    /// Addresses tracked (at most the capacity).
    pub fn tracked(&self) -> usize {
        self.table.lock().expect("auth limiter").entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_addresses_are_limited_loopback_never() {
        let limiter = AuthLimiter::new(2, Duration::from_secs(60), 16);
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        limiter.record_failure(remote);
        assert!(limiter.blocked(remote).is_none());
        limiter.record_failure(remote);
        assert!(limiter.blocked(remote).is_some());
        assert!(limiter.blocked("192.0.2.8".parse().unwrap()).is_none());
        for loopback in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = loopback.parse().unwrap();
            for _ in 0..100 {
                limiter.record_failure(ip);
            }
            assert!(limiter.blocked(ip).is_none(), "{loopback}");
        }
        assert_eq!((limiter.blocked_count(), limiter.tracked()), (1, 1));
    }

    #[test]
    fn ipv6_counts_per_64_and_v4_mapped_as_v4() {
        let limiter = AuthLimiter::new(2, Duration::from_secs(60), 16);
        limiter.record_failure("2001:db8::1".parse().unwrap());
        limiter.record_failure("2001:db8::ffff:2".parse().unwrap());
        assert!(limiter.blocked("2001:db8::3".parse().unwrap()).is_some());
        assert!(limiter.blocked("2001:db8:0:1::3".parse().unwrap()).is_none());
        limiter.record_failure("::ffff:192.0.2.1".parse().unwrap());
        limiter.record_failure("192.0.2.1".parse().unwrap());
        assert!(limiter.blocked("192.0.2.1".parse().unwrap()).is_some());
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_oldest() {
        let limiter = AuthLimiter::new(1, Duration::from_secs(60), 100);
        let ip = |n: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        for n in 0..1000 {
            limiter.record_failure(ip(n));
        }
        assert_eq!(limiter.tracked(), 100);
        assert!(limiter.blocked(ip(0)).is_none(), "evicted first");
        assert!(limiter.blocked(ip(999)).is_some());
        assert_eq!(limiter.table.lock().unwrap().order.len(), 100);
    }
}

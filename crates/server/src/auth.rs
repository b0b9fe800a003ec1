//! AUTH's guard against password guessing: failed attempts are counted per client address
//! (an IPv4 address, or the /64 of an IPv6 one, since one host owns a whole /64), and past
//! `max_failures` within `failure_window` that address gets `454` for AUTH until its oldest
//! failure ages out. Every failure is also answered `failure_delay` late (in the connection
//! task, which this only advises).
//!
//! Memory is bounded: at most [`MAX_TRACKED`] addresses are remembered; past that, addresses
//! without a recent failure are forgotten first, then everything (failing open rather than
//! growing without bound under a distributed attack).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses remembered at once.
pub const MAX_TRACKED: usize = 100_000;

/// The operator's rules for AUTH (`config/auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Where AUTH is offered without TLS.
    pub plaintext: PlaintextAuth,
    /// Failed attempts per address within `failure_window` before AUTH is refused; 0 = no limit.
    pub max_failures: u32,
    pub failure_window: Duration,
    /// How late a failure is answered.
    pub failure_delay: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            plaintext: PlaintextAuth::Loopback,
            max_failures: 5,
            failure_window: Duration::from_secs(60),
            failure_delay: Duration::from_secs(1),
        }
    }
}

/// Where AUTH may be used on a connection without TLS (passwords would cross the wire in clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaintextAuth {
    Never,
    /// Only from 127.0.0.0/8 and ::1, which never leave the machine.
    Loopback,
    Always,
}

impl PlaintextAuth {
    pub fn allows(self, ip: IpAddr) -> bool {
        match self {
            PlaintextAuth::Never => false,
            PlaintextAuth::Loopback => ip.to_canonical().is_loopback(),
            PlaintextAuth::Always => true,
        }
    }
}

/// Failed AUTH attempts by address.
#[derive(Debug)]
pub struct AuthFailures {
    max_failures: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl AuthFailures {
    pub fn new(settings: &AuthSettings) -> AuthFailures {
        AuthFailures {
            max_failures: settings.max_failures,
            window: settings.failure_window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` may try AUTH now.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        if self.max_failures == 0 {
            return true;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let Some(times) = seen.get_mut(&key(ip)) else {
            return true;
        };
        let now = Instant::now();
        while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            times.pop_front();
        }
        (times.len() as u32) < self.max_failures
    }

    /// Counts a failed attempt from `ip`.
    pub fn record(&self, ip: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if seen.len() >= MAX_TRACKED && !seen.contains_key(&key(ip)) {
            let window = self.window;
            seen.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < window));
            if seen.len() >= MAX_TRACKED {
                tracing::warn!(
                    tracked = seen.len(),
                    "too many addresses with failed AUTH attempts; forgetting them all"
                );
                seen.clear();
            }
        }
        let times = seen.entry(key(ip)).or_default();
        times.push_back(now);
        // Only the newest `max_failures` matter.
        while times.len() > self.max_failures as usize {
            times.pop_front();
        }
    }
}

/// The unit that is limited: an IPv4 address, or an IPv6 /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_within_the_window() {
        let settings =
            AuthSettings { max_failures: 3, failure_window: Duration::from_millis(200), ..Default::default() };
        let f = AuthFailures::new(&settings);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(f.allowed(a));
            f.record(a);
        }
        assert!(!f.allowed(a), "fourth attempt refused");
        assert!(f.allowed(b), "another address is not affected");
        std::thread::sleep(Duration::from_millis(250));
        assert!(f.allowed(a), "the failures aged out");
    }

    #[test]
    fn ipv6_is_limited_per_64() {
        let f = AuthFailures::new(&AuthSettings { max_failures: 1, ..Default::default() });
        f.record("2001:db8:1:2::1".parse().unwrap());
        assert!(!f.allowed("2001:db8:1:2:ffff::9".parse().unwrap()));
        assert!(f.allowed("2001:db8:1:3::1".parse().unwrap()));
        // An IPv4-mapped address is the IPv4 address.
        f.record("::ffff:192.0.2.9".parse().unwrap());
        assert!(!f.allowed("192.0.2.9".parse().unwrap()));
    }

    #[test]
    fn plaintext_policy() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let far: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(PlaintextAuth::Loopback.allows(lo) && !PlaintextAuth::Loopback.allows(far));
        assert!(PlaintextAuth::Loopback.allows("::1".parse().unwrap()));
        assert!(!PlaintextAuth::Never.allows(lo));
        assert!(PlaintextAuth::Always.allows(far));
    }
}

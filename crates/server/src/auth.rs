//! AUTH's guard against password guessing: failed attempts are counted per client address
//! (an IPv4 address, or the /64 of an IPv6 one, since one host owns a whole /64), and past
//! `max_failures` within `failure_window` that address gets `454` for AUTH until its oldest
//! failure ages out. Every failure is also answered `failure_delay` late (in the connection
//! task, which this only advises).
//!
//! An attempt is counted *before* the plugin checks the credentials, in the same critical
//! section as the check ([`AuthFailures::attempt`]); an attempt that turns out not to be a
//! failure (a success, a temporary failure) is given back when its [`Attempt`] is dropped.
//! Checking first and counting after the plugin answered would let parallel connections all
//! pass the check while the first of them is still being answered: twenty guesses in flight
//! against a limit of five.
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

    /// Whether `ip` may try AUTH now (to refuse a client before it sends its password; the
    /// binding check is [`AuthFailures::attempt`]).
    pub fn allowed(&self, ip: IpAddr) -> bool {
        if self.max_failures == 0 {
            return true;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let Some(times) = seen.get_mut(&key(ip)) else {
            return true;
        };
        self.age_out(times, Instant::now());
        (times.len() as u32) < self.max_failures
    }

    /// Counts an attempt from `ip` as a failure now, before its credentials are checked, if
    /// the address has failures to spare; `None` if it has not (the caller answers 454 and no
    /// plugin runs). Check and count are one critical section, so parallel attempts cannot all
    /// slip under the limit. The count stands if [`Attempt::failed`] is called, and is given
    /// back when the `Attempt` is dropped otherwise.
    pub fn attempt(&self, ip: IpAddr) -> Option<Attempt<'_>> {
        if self.max_failures == 0 {
            return Some(Attempt { failures: self, ip, at: None });
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
        self.age_out(times, now);
        if times.len() as u32 >= self.max_failures {
            return None;
        }
        times.push_back(now);
        Some(Attempt { failures: self, ip, at: Some(now) })
    }

    fn age_out(&self, times: &mut VecDeque<Instant>, now: Instant) {
        while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            times.pop_front();
        }
    }

    /// Takes back an attempt counted at `at` (one entry of that instant).
    fn give_back(&self, ip: IpAddr, at: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let Some(times) = seen.get_mut(&key(ip)) else {
            return; // forgotten meanwhile
        };
        if let Some(i) = times.iter().rposition(|t| *t == at) {
            times.remove(i);
        }
        if times.is_empty() {
            seen.remove(&key(ip));
        }
    }
}

/// An AUTH attempt counted in advance (see [`AuthFailures::attempt`]): given back on drop
/// unless it [`failed`](Attempt::failed).
#[derive(Debug)]
#[must_use = "dropping the attempt gives it back at once"]
pub struct Attempt<'a> {
    failures: &'a AuthFailures,
    ip: IpAddr,
    /// When it was counted; `None` when nothing is counted (no limit).
    at: Option<Instant>,
}

impl Attempt<'_> {
    /// The credentials were wrong: the attempt stays counted.
    pub fn failed(mut self) {
        self.at = None;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(at) = self.at {
            self.failures.give_back(self.ip, at);
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
            f.attempt(a).unwrap().failed();
        }
        assert!(!f.allowed(a), "fourth attempt refused");
        assert!(f.attempt(a).is_none(), "and not counted");
        assert!(f.allowed(b), "another address is not affected");
        std::thread::sleep(Duration::from_millis(250));
        assert!(f.allowed(a), "the failures aged out");
    }

    #[test]
    fn ipv6_is_limited_per_64() {
        let f = AuthFailures::new(&AuthSettings { max_failures: 1, ..Default::default() });
        f.attempt("2001:db8:1:2::1".parse().unwrap()).unwrap().failed();
        assert!(!f.allowed("2001:db8:1:2:ffff::9".parse().unwrap()));
        assert!(f.allowed("2001:db8:1:3::1".parse().unwrap()));
        // An IPv4-mapped address is the IPv4 address.
        f.attempt("::ffff:192.0.2.9".parse().unwrap()).unwrap().failed();
        assert!(!f.allowed("192.0.2.9".parse().unwrap()));
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit() {
        let f = AuthFailures::new(&AuthSettings { max_failures: 5, ..Default::default() });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        // Twenty parallel attempts, none answered yet: five get through.
        let barrier = std::sync::Barrier::new(20);
        let granted = std::thread::scope(|s| {
            let handles: Vec<_> = (0..20)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        f.attempt(a).map(std::mem::forget).is_some()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).filter(|&g| g).count()
        });
        assert_eq!(granted, 5);
        assert!(!f.allowed(a));
    }

    #[test]
    fn an_attempt_that_did_not_fail_is_given_back() {
        let f = AuthFailures::new(&AuthSettings { max_failures: 2, ..Default::default() });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = f.attempt(a).unwrap();
        let second = f.attempt(a).unwrap();
        assert!(f.attempt(a).is_none(), "two in flight use up the allowance");
        drop(first); // a success, or a temporary failure
        let third = f.attempt(a).expect("the attempt was given back");
        second.failed();
        third.failed();
        assert!(!f.allowed(a));
        // No limit: nothing is counted.
        let f = AuthFailures::new(&AuthSettings { max_failures: 0, ..Default::default() });
        for _ in 0..100 {
            f.attempt(a).unwrap().failed();
        }
        assert!(f.allowed(a));
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

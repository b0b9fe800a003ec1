//! The circuit breaker: a plugin that keeps faulting is disabled for a cool-down, during which
//! its fault policy applies without running it (a temporary failure, or DECLINED if the
//! operator chose to fail open). One breaker per plugin, shared by every connection.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the breaker trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Faults within `window` that trip the breaker; 0 = never.
    pub faults: u32,
    pub window: Duration,
    /// How long the plugin stays disabled.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        // Conservative: a client that can crash a plugin on purpose could otherwise trip the
        // breaker, and so apply the plugin's fault policy to everyone, with a few messages.
        BreakerSettings { faults: 20, window: Duration::from_secs(60), cooldown: Duration::from_secs(30) }
    }
}

#[derive(Debug, Default)]
struct State {
    recent: VecDeque<Instant>,
    open_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker { settings, state: Mutex::new(State::default()) }
    }

    /// Whether the plugin is disabled now.
    pub fn is_open(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.open_until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                // Cool-down over: try the plugin again, with a clean record.
                s.open_until = None;
                s.recent.clear();
                false
            }
            None => false,
        }
    }

    /// Records a fault; returns true if this fault tripped the breaker.
    pub fn record_fault(&self) -> bool {
        if self.settings.faults == 0 {
            return false;
        }
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.recent.push_back(now);
        while s.recent.front().is_some_and(|t| now.duration_since(*t) > self.settings.window) {
            s.recent.pop_front();
        }
        if s.recent.len() >= self.settings.faults as usize && s.open_until.is_none() {
            s.open_until = Some(now + self.settings.cooldown);
            return true;
        }
        false
    }

    pub fn settings(&self) -> BreakerSettings {
        self.settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_after_n_faults_and_recovers_after_the_cooldown() {
        let b = Breaker::new(BreakerSettings {
            faults: 3,
            window: Duration::from_secs(10),
            cooldown: Duration::from_millis(50),
        });
        assert!(!b.record_fault());
        assert!(!b.record_fault());
        assert!(!b.is_open());
        assert!(b.record_fault(), "third fault trips it");
        assert!(b.is_open());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!b.is_open(), "cool-down over");
        assert!(!b.record_fault(), "the record was cleared");
        let never = Breaker::new(BreakerSettings { faults: 0, ..BreakerSettings::default() });
        assert!((0..100).all(|_| !never.record_fault()));
    }
}

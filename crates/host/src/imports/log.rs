//! A plugin's log lines, bounded three ways: each line is cut at [`MAX_LOG_LINE`] octets; a
//! plugin writes at most [`MAX_LOG_LINES`] lines per connection, whichever of its instances
//! write them (so MAIL/RSET cycles, which make new instances, do not reset it); and each plugin
//! has a server-wide rate ([`LogRate`]), so many connections do not multiply it either. Lines
//! of a level the log does not show cost nothing. Each muting is logged once.

use std::sync::Mutex;
use std::time::Instant;

use crate::bindings::wit::LogLevel;
use crate::state::PluginState;

/// Longest log line kept from a plugin.
pub const MAX_LOG_LINE: usize = 4096;
/// Log lines a plugin may write per connection before it is muted there.
pub const MAX_LOG_LINES: u32 = 1000;
/// A plugin's server-wide log rate: octets a second, and the burst it may save up. 256 KiB/s is
/// thousands of lines a second (no standard plugin logs per message at all) and bounds a
/// flooding plugin to about 21 GiB a day; the burst is a full connection's worth of long lines
/// (1000 lines of 4 KiB).
pub const LOG_RATE: u64 = 256 << 10;
pub const LOG_BURST: u64 = 4 << 20;
/// What a line costs beyond its text: the log's own fields (time, level, plugin, connection).
const LINE_OVERHEAD: u64 = 128;

/// A plugin's server-wide log rate: a token bucket of octets, shared by all its instances.
#[derive(Debug)]
pub struct LogRate(Mutex<Bucket>);

#[derive(Debug)]
struct Bucket {
    tokens: u64,
    refilled: Instant,
    muted: bool,
}

/// What the rate says about a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// No, and this is the first line refused since the plugin was last allowed: say so.
    MutedNow,
    No,
}

impl Default for LogRate {
    fn default() -> Self {
        LogRate(Mutex::new(Bucket { tokens: LOG_BURST, refilled: Instant::now(), muted: false }))
    }
}

impl LogRate {
    /// Takes `octets` from the bucket, if it holds them (refilled at [`LOG_RATE`]).
    pub fn admit(&self, octets: u64) -> Admit {
        self.admit_at(octets, Instant::now())
    }

    fn admit_at(&self, octets: u64, now: Instant) -> Admit {
        let mut b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let earned = now.saturating_duration_since(b.refilled).as_micros() as u64 * LOG_RATE / 1_000_000;
        if earned > 0 {
            b.tokens = (b.tokens + earned).min(LOG_BURST);
            b.refilled = now;
        }
        if b.tokens >= octets {
            b.tokens -= octets;
            b.muted = false;
            return Admit::Yes;
        }
        match std::mem::replace(&mut b.muted, true) {
            false => Admit::MutedNow,
            true => Admit::No,
        }
    }
}

/// `host.log`: writes the line if the plugin's budgets allow it.
pub fn write(state: &mut PluginState, level: LogLevel, mut message: String) {
    if !shown(level) {
        return;
    }
    let plugin = state.meta.name.as_str();
    let conn = state.call.connection.id.as_str();
    state.log_lines += 1;
    if state.log_lines > MAX_LOG_LINES {
        if state.log_lines == MAX_LOG_LINES + 1 {
            tracing::warn!(
                plugin,
                conn,
                "plugin logged more than {MAX_LOG_LINES} lines; muted for the rest of this connection"
            );
        }
        return;
    }
    if message.len() > MAX_LOG_LINE {
        let mut cut = MAX_LOG_LINE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" [cut]");
    }
    match state.meta.log_rate.admit(message.len() as u64 + LINE_OVERHEAD) {
        Admit::Yes => {}
        Admit::MutedNow => {
            return tracing::warn!(
                plugin,
                "plugin logs more than {} KiB a second; muted until it logs less",
                LOG_RATE >> 10
            );
        }
        Admit::No => return,
    }
    let message = message.escape_debug().to_string();
    match level {
        LogLevel::Error => tracing::error!(plugin, conn, "{message}"),
        LogLevel::Warn => tracing::warn!(plugin, conn, "{message}"),
        LogLevel::Info => tracing::info!(plugin, conn, "{message}"),
        LogLevel::Debug => tracing::debug!(plugin, conn, "{message}"),
        LogLevel::Trace => tracing::trace!(plugin, conn, "{message}"),
    }
}

/// Whether the log shows lines of `level` from here.
fn shown(level: LogLevel) -> bool {
    match level {
        LogLevel::Error => tracing::enabled!(tracing::Level::ERROR),
        LogLevel::Warn => tracing::enabled!(tracing::Level::WARN),
        LogLevel::Info => tracing::enabled!(tracing::Level::INFO),
        LogLevel::Debug => tracing::enabled!(tracing::Level::DEBUG),
        LogLevel::Trace => tracing::enabled!(tracing::Level::TRACE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_rate_refills_and_mutes_once() {
        let rate = LogRate::default();
        let t0 = Instant::now();
        assert_eq!(rate.admit_at(LOG_BURST, t0), Admit::Yes, "a full burst");
        assert_eq!(rate.admit_at(1000, t0), Admit::MutedNow);
        assert_eq!(rate.admit_at(1000, t0), Admit::No, "said once");
        let later = t0 + Duration::from_secs(1);
        assert_eq!(rate.admit_at(LOG_RATE, later), Admit::Yes, "a second's worth came back");
        assert_eq!(rate.admit_at(1, later), Admit::MutedNow, "muted again, and said again");
        let much_later = t0 + Duration::from_secs(3600);
        assert_eq!(rate.admit_at(LOG_BURST, much_later), Admit::Yes);
        assert_eq!(rate.admit_at(1, much_later), Admit::MutedNow, "never more than the burst saved up");
    }
}

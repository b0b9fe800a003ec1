//! headers (qpsmtpd): checks the header fields RFC 5322 requires or allows once, and
//! optionally how far the Date is from now.
//!
//! Arguments, with qpsmtpd's defaults:
//! - `require FIELD,FIELD` (default `From`): the fields that must be present and not empty;
//!   qpsmtpd does not require Date by default, since a good deal of legitimate mail (bank and
//!   photo services, bounces) has none.
//! - `future DAYS`, `past DAYS` (default: not checked): a Date further in the future or the
//!   past than that is refused. A Date that cannot be parsed is let through (and logged),
//!   unless Date is required: then it is refused as missing.
//! - The fields RFC 5322 section 3.6 allows once (Date, From, Sender, Reply-To, To, Cc, Bcc,
//!   Message-ID, In-Reply-To, References, Subject) are refused when repeated.
//! - `reject 0|1` (default 1: refuse; 0: only log), `reject_type perm|temp` (default perm:
//!   552; temp: 452), and `disconnect`/`temp_disconnect` as every plugin's `reject_type`.
//!
//! Replies (qpsmtpd's texts, enhanced code 5.6.0): `We require a valid From header`,
//! `Only one Subject header allowed. See RFC 5322, Section 3.6`, `The Date header is too far
//! in the past`, `The Date header is too far in the future`, `Headers are missing`. Relay
//! clients and authenticated senders are not checked.

use std::time::{SystemTime, UNIX_EPOCH};

use policy::{Options, RejectType};
use wasmtpd_plugin::{HookResult, Plugin, host};

const ARGUMENTS: &[&str] = &["require", "future", "past", "reject", "reject_type", "loglevel"];
/// RFC 5322 section 3.6: the fields a message has at most once.
const SINGULAR: &[&str] =
    &["Date", "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Message-ID", "In-Reply-To", "References", "Subject"];

struct Headers;

#[wasmtpd_plugin::plugin]
impl Plugin for Headers {
    fn data_post() -> HookResult {
        if policy::is_immune() {
            return HookResult::declined();
        }
        let o = Options::from_args(ARGUMENTS);
        let fields = match host::headers() {
            Ok(f) => f,
            Err(e) => return HookResult::deny_soft(format!("cannot read the header: {e}")),
        };
        let Some(problem) = problem(&o, &fields) else {
            wasmtpd_plugin::debug("pass");
            return HookResult::declined();
        };
        wasmtpd_plugin::info(format!("fail, {problem}"));
        if !o.flag("reject", true) {
            return HookResult::declined();
        }
        o.reject_type(RejectType::Perm).refuse(problem, "5.6.0")
    }
}

/// What is wrong with the header, in qpsmtpd's words; `None`: nothing.
fn problem(o: &Options, fields: &[wasmtpd_plugin::Header]) -> Option<String> {
    if fields.is_empty() {
        return Some("Headers are missing".into());
    }
    fn values<'f>(fields: &'f [wasmtpd_plugin::Header], name: &'f str) -> impl Iterator<Item = &'f str> {
        fields.iter().filter(move |f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value.trim())
    }
    let required = o.get("require").unwrap_or("From");
    let date = values(fields, "Date").next();
    let when = date.and_then(parse_date);
    if date.is_some() && when.is_none() {
        wasmtpd_plugin::info(format!("skip, date not parseable ({})", date.unwrap_or_default()));
    }
    for name in required.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let present = values(fields, name).any(|v| !v.is_empty());
        let valid = present && !(name.eq_ignore_ascii_case("Date") && when.is_none());
        if !valid {
            return Some(format!("We require a valid {name} header"));
        }
    }
    for name in SINGULAR {
        if values(fields, name).count() > 1 {
            return Some(format!("Only one {name} header allowed. See RFC 5322, Section 3.6"));
        }
    }
    let when = when?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let days = |key: &str| i64::from(o.number(key, 0));
    if days("past") > 0 && when < now - days("past") * 86400 {
        return Some("The Date header is too far in the past".into());
    }
    if days("future") > 0 && when > now + days("future") * 86400 {
        return Some("The Date header is too far in the future".into());
    }
    None
}

/// RFC 5322 date-time: `[Day,] DD Mon YYYY HH:MM[:SS] (+|-)HHMM` (obsolete zone names
/// UT/GMT/Z accepted). Returns seconds since the epoch.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.split('(').next()?.trim(); // drop a trailing comment such as "(UTC)"
    let s = s.split_once(',').map_or(s, |(_, rest)| rest).trim();
    let mut w = s.split_whitespace();
    let day: i64 = w.next()?.parse().ok()?;
    let month = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        .iter()
        .position(|m| w.clone().next().is_some_and(|x| x.eq_ignore_ascii_case(m)))? as i64
        + 1;
    w.next();
    let mut year: i64 = w.next()?.parse().ok()?;
    if year < 50 {
        year += 2000;
    } else if year < 1000 {
        year += 1900;
    }
    let mut hms = w.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m) = (hms.next()??, hms.next()??);
    let sec = hms.next().flatten().unwrap_or(0);
    let zone = w.next().unwrap_or("+0000");
    let offset = match zone.to_ascii_uppercase().as_str() {
        "UT" | "GMT" | "Z" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let v: i64 = z[1..].parse().ok()?;
            let secs = (v / 100) * 3600 + (v % 100) * 60;
            if z.starts_with('-') { -secs } else { secs }
        }
        _ => 0,
    };
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + sec - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::parse_date;

    #[test]
    fn dates() {
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 +0000"), Some(0));
        assert_eq!(parse_date("Wed, 25 Nov 2026 17:17:54 +0000"), Some(1795627074));
        assert_eq!(parse_date("25 Nov 2026 18:17:54 +0100 (CET)"), Some(1795627074));
        assert_eq!(parse_date("Wed, 25 Nov 2026 17:17 GMT"), Some(1795627020));
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date("Wed, 32 Nov 2026 17:17:54 +0000"), None);
    }
}

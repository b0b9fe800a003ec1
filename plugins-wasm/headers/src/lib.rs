//! headers (qpsmtpd): refuses messages without the header fields every message must have, or
//! with a Date far in the future or the past.
//!
//! Arguments (all optional): `require From,Date` (the fields that must be present, default
//! `From,Date`, RFC 5322 3.6), `future DAYS` (default 2), `past DAYS` (default 15; 0 = no
//! check). A missing field or an implausible Date is a permanent refusal (552 5.6.0).

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtpd_plugin::{HookResult, Plugin, host};

struct Headers;

#[wasmtpd_plugin::plugin]
impl Plugin for Headers {
    fn data_post() -> HookResult {
        let args = host::args();
        let arg = |key: &str| args.iter().position(|a| a == key).and_then(|i| args.get(i + 1)).cloned();
        let required = arg("require").unwrap_or_else(|| "From,Date".to_string());
        let future_days: i64 = arg("future").and_then(|v| v.parse().ok()).unwrap_or(2);
        let past_days: i64 = arg("past").and_then(|v| v.parse().ok()).unwrap_or(15);
        let fields = match host::headers() {
            Ok(f) => f,
            Err(e) => return HookResult::deny_soft(format!("cannot read the header: {e}")),
        };
        for name in required.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !fields.iter().any(|f| f.name.eq_ignore_ascii_case(name)) {
                return HookResult::deny(format!("We require a valid {name} header")).with_enhanced_code("5.6.0");
            }
        }
        let Some(date) = fields.iter().find(|f| f.name.eq_ignore_ascii_case("Date")) else {
            return HookResult::declined();
        };
        let Some(when) = parse_date(&date.value) else {
            return HookResult::deny("We require a valid Date header").with_enhanced_code("5.6.0");
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        if future_days > 0 && when > now + future_days * 86400 {
            return HookResult::deny(format!(
                "The Date header is too far in the future (more than {future_days} days)"
            ))
            .with_enhanced_code("5.6.0");
        }
        if past_days > 0 && when < now - past_days * 86400 {
            return HookResult::deny(format!("The Date header is too far in the past (more than {past_days} days)"))
                .with_enhanced_code("5.6.0");
        }
        HookResult::declined()
    }
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

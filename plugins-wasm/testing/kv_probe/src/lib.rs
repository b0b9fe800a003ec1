//! Test fixture: at RCPT, makes the key-value store calls its arguments say, in order, and
//! answers 550 with one line per answer, so a test sees exactly what a plugin gets from
//! `wit/key-value.wit`.
//!
//! Arguments, each one call (fields separated by `:`):
//! - `get:STORE:KEY`
//! - `set:STORE:KEY:VALUE[:ttl=MS][:if-absent|:if-version=N|:if-version=last]`
//! - `delete:STORE:KEY[:if-version=N|:if-version=last]`
//! - `incr:STORE:KEY:DELTA[:ttl=MS]`
//!
//! `last` is the version the previous call of this RCPT read or wrote. A KEY or VALUE `@N` is
//! N octets of `k` or `v` (for size limits). `N*CALL` makes the call N times and answers once,
//! with how many calls succeeded and the first failure. An argument `TAG=CALL` is made only for
//! recipients whose local part is TAG; one without a tag for every recipient.
//!
//! Each answer line is `CALL -> RESULT`, where RESULT is `ok "VALUE" version=N
//! expires-in=MS|never` or `none` (get), `ok version=N` (set), `ok deleted` or `ok absent`
//! (delete), `ok N` (incr), or an error: `not-granted: TEXT`, `over-budget: TEXT`,
//! `too-large: TEXT`, `quota: TEXT`, `invalid: TEXT`, `conflict`, `not-an-integer`,
//! `backend-unavailable: TEXT`, `timeout`. A call it cannot read answers `bad argument: ARG`.
//! With no call for the recipient it declines.

use wasmtpd_plugin::key_value::{self, Condition, StoreError};
use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct KvProbe;

fn error(e: &StoreError) -> String {
    match e {
        StoreError::NotGranted(t) => format!("not-granted: {t}"),
        StoreError::OverBudget(t) => format!("over-budget: {t}"),
        StoreError::TooLarge(t) => format!("too-large: {t}"),
        StoreError::Quota(t) => format!("quota: {t}"),
        StoreError::Invalid(t) => format!("invalid: {t}"),
        StoreError::Conflict => "conflict".into(),
        StoreError::NotAnInteger => "not-an-integer".into(),
        StoreError::BackendUnavailable(t) => format!("backend-unavailable: {t}"),
        StoreError::Timeout => "timeout".into(),
    }
}

/// `@N` as N octets of `fill`, anything else as itself.
fn sized(text: &str, fill: char) -> String {
    match text.strip_prefix('@').and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => std::iter::repeat_n(fill, n).collect(),
        None => text.to_string(),
    }
}

/// The options after a call's fixed fields.
#[derive(Default)]
struct Options {
    ttl: Option<u64>,
    condition: Option<Condition>,
}

fn options(fields: &[&str], last: Option<u64>) -> Option<Options> {
    let mut o = Options::default();
    for f in fields {
        match *f {
            "if-absent" => o.condition = Some(Condition::IfAbsent),
            "if-version=last" => o.condition = Some(Condition::IfVersion(last.unwrap_or(0))),
            f => {
                if let Some(ms) = f.strip_prefix("ttl=") {
                    o.ttl = Some(ms.parse().ok()?);
                } else if let Some(v) = f.strip_prefix("if-version=") {
                    o.condition = Some(Condition::IfVersion(v.parse().ok()?));
                } else {
                    return None;
                }
            }
        }
    }
    Some(o)
}

/// Makes one call; its result (`Ok` text or `Err` text), or `None` if it cannot be read.
fn call(spec: &str, last: &mut Option<u64>) -> Option<Result<String, String>> {
    let fields: Vec<&str> = spec.split(':').collect();
    Some(match fields.as_slice() {
        ["get", store, key] => match key_value::get(store, &sized(key, 'k')) {
            Ok(Some(e)) => {
                *last = Some(e.version);
                let expires = e.expires_in_ms.map_or("never".to_string(), |ms| ms.to_string());
                Ok(format!("ok {:?} version={} expires-in={expires}", String::from_utf8_lossy(&e.value), e.version))
            }
            Ok(None) => Ok("none".into()),
            Err(e) => Err(error(&e)),
        },
        ["set", store, key, value, rest @ ..] => {
            let o = options(rest, *last)?;
            let condition = o.condition.unwrap_or(Condition::Always);
            match key_value::set(store, &sized(key, 'k'), sized(value, 'v').as_bytes(), o.ttl, condition) {
                Ok(v) => {
                    *last = Some(v);
                    Ok(format!("ok version={v}"))
                }
                Err(e) => Err(error(&e)),
            }
        }
        ["delete", store, key, rest @ ..] => {
            let o = options(rest, *last)?;
            let version = match o.condition {
                Some(Condition::IfVersion(v)) => Some(v),
                None => None,
                _ => return None,
            };
            match key_value::delete(store, &sized(key, 'k'), version) {
                Ok(true) => Ok("ok deleted".into()),
                Ok(false) => Ok("ok absent".into()),
                Err(e) => Err(error(&e)),
            }
        }
        ["incr", store, key, delta, rest @ ..] => {
            let o = options(rest, *last)?;
            match key_value::increment(store, &sized(key, 'k'), delta.parse().ok()?, o.ttl) {
                Ok(n) => Ok(format!("ok {n}")),
                Err(e) => Err(error(&e)),
            }
        }
        _ => return None,
    })
}

/// The answer line of one argument.
fn answer(arg: &str, last: &mut Option<u64>) -> String {
    let (times, spec) = match arg.split_once('*') {
        Some((n, spec)) if n.parse::<u32>().is_ok() => (n.parse::<u32>().unwrap_or(1), spec),
        _ => (1, arg),
    };
    let mut ok = 0;
    let mut first_failure = None;
    let mut only = String::new();
    for _ in 0..times {
        match call(spec, last) {
            None => return format!("bad argument: {arg}"),
            Some(Ok(text)) => {
                ok += 1;
                only = text;
            }
            Some(Err(text)) => {
                first_failure.get_or_insert(text.clone());
                only = text;
            }
        }
    }
    match times {
        1 => format!("{spec} -> {only}"),
        _ => format!("{times}*{spec} -> {ok} ok, first failure: {}", first_failure.unwrap_or("none".into())),
    }
}

#[wasmtpd_plugin::plugin]
impl Plugin for KvProbe {
    fn rcpt(recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        let mut last = None;
        let lines: Vec<String> = host::args()
            .iter()
            .filter_map(|arg| match arg.split_once('=') {
                Some((tag, call)) if !tag.contains(':') && !tag.contains('*') => {
                    (tag == recipient.local_part).then(|| call.to_string())
                }
                _ => Some(arg.clone()),
            })
            .map(|call| answer(&call, &mut last))
            .collect();
        if lines.is_empty() {
            return HookResult::declined();
        }
        HookResult::deny(lines.join("\n"))
    }
}

//! rspamd (Haraka's `rspamd`): asks rspamd about each message after DATA and applies its
//! answer.
//!
//! The message is POSTed to `/checkv2` through the HTTP helper of `upstream` (the body sent by
//! the host from where the message is), with the envelope and the connection as rspamd's
//! headers: `IP`, `Helo`, `From`, one `Rcpt` per recipient, `User` (who authenticated),
//! `Queue-Id` (the transaction id), `TLS-Cipher` and `TLS-Version`. rspamd's JSON answer
//! gives an `action`, applied so:
//!
//! | action | what the client gets |
//! |---|---|
//! | `reject` | `550 5.7.1` with rspamd's SMTP message (`messages.smtp_message`) or `Spam message rejected` (with `reject 0`: as `add header`) |
//! | `soft reject` | `452 4.7.1` with rspamd's SMTP message or `Try again later` |
//! | `greylist` | `452 4.7.1 Greylisted, please try again later` (with `greylist 0`: nothing) |
//! | `add header` | the message gets `X-Spam: Yes` |
//! | `rewrite subject` | its `Subject` becomes rspamd's `subject` (or `*** SPAM *** ` before it) |
//! | `no action` | nothing |
//!
//! and, whatever the action, the `milter` block's `remove_headers` (a name and how many, 0
//! for all) and `add_headers` (a name and a value, an object with `value`, or a list of them).
//! The score, the threshold, the action and the symbols are in the transaction note `rspamd`
//! (`score=S required=T action=A symbols=X,Y`), and with `score_header 1` in `X-Rspamd-Score`
//! and `X-Rspamd-Symbols`.
//!
//! Arguments (`key value` pairs): `upstream NAME` (default `rspamd`, granted with `upstream
//! NAME` in `config/sandbox`), `reject 0|1` and `greylist 0|1` (default 1), `score_header
//! 0|1` (default 0), `max_size SIZE` (default `20M`: a larger message is not scanned, which is
//! logged and noted), `fail_policy tempfail|declined` (default tempfail: `452 4.7.1` when
//! rspamd cannot be asked; declined: fail open).

use policy::{FailPolicy, Options};
use serde_json::Value;
use wasmtpd_plugin::upstream::{self, HttpBody, HttpRequest};
use wasmtpd_plugin::{HookResult, Plugin, host};

const NOTE: &str = "rspamd";
const ARGS: &[&str] = &["upstream", "reject", "greylist", "score_header", "max_size", "fail_policy"];
const DEFAULT_MAX_SIZE: u64 = 20 << 20;
/// The most of rspamd's answer read (a JSON object of symbols and a few headers).
const MAX_ANSWER: u32 = 512 << 10;
/// The most headers the milter block may add or remove.
const MAX_MILTER: usize = 32;

struct Rspamd;

/// rspamd's answer, as far as it is applied.
#[derive(Debug, Default, PartialEq)]
struct Answer {
    action: String,
    score: f64,
    required: f64,
    symbols: Vec<String>,
    smtp_message: Option<String>,
    subject: Option<String>,
    add_headers: Vec<(String, String)>,
    remove_headers: Vec<(String, u64)>,
}

fn parse_answer(body: &[u8]) -> Result<Answer, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("rspamd's answer is not JSON: {e}"))?;
    let action = v.get("action").and_then(Value::as_str).ok_or("rspamd's answer has no action")?;
    let mut a = Answer {
        action: action.to_string(),
        score: v.get("score").and_then(Value::as_f64).unwrap_or(0.0),
        required: v.get("required_score").and_then(Value::as_f64).unwrap_or(0.0),
        ..Answer::default()
    };
    if let Some(symbols) = v.get("symbols").and_then(Value::as_object) {
        a.symbols = symbols.keys().cloned().collect();
    }
    a.smtp_message = v.pointer("/messages/smtp_message").and_then(Value::as_str).map(clean);
    a.subject = v.get("subject").and_then(Value::as_str).map(clean);
    if let Some(add) = v.pointer("/milter/add_headers").and_then(Value::as_object) {
        for (name, value) in add {
            let values: Vec<&Value> = match value {
                Value::Array(list) => list.iter().collect(),
                other => vec![other],
            };
            for value in values {
                let text = match value {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o) => o.get("value").and_then(Value::as_str),
                    _ => None,
                };
                if let Some(text) = text {
                    a.add_headers.push((name.clone(), clean(text)));
                }
            }
        }
    }
    if let Some(remove) = v.pointer("/milter/remove_headers").and_then(Value::as_object) {
        for (name, count) in remove {
            a.remove_headers.push((name.clone(), count.as_u64().unwrap_or(0)));
        }
    }
    a.add_headers.truncate(MAX_MILTER);
    a.remove_headers.truncate(MAX_MILTER);
    Ok(a)
}

/// Text from rspamd as one header or reply line: no controls (folding included).
fn clean(s: &str) -> String {
    let t: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(900).collect();
    t.trim().to_string()
}

/// rspamd's headers for the message: the envelope and the connection.
fn facts() -> Vec<(String, String)> {
    let mut h = Vec::new();
    let c = host::connection();
    h.push(("IP".to_string(), c.remote_ip.clone()));
    if let Some(helo) = &c.hello_host {
        h.push(("Helo".into(), clean(helo)));
    }
    if let Some(auth) = &c.auth {
        h.push(("User".into(), clean(&auth.user)));
    }
    if let Some(tls) = &c.tls {
        h.push(("TLS-Cipher".into(), clean(&tls.cipher)));
        h.push(("TLS-Version".into(), clean(&tls.version)));
    }
    if let Some(t) = host::transaction() {
        h.push(("Queue-Id".into(), clean(&t.id)));
        h.push(("From".into(), t.sender.as_ref().map(|a| clean(&a.to_plain())).unwrap_or_default()));
        for r in t.recipients.iter().take(100) {
            h.push(("Rcpt".into(), clean(&r.address.to_plain())));
        }
    }
    h.push(("Pass".into(), "none".into()));
    h
}

fn subject() -> String {
    host::headers()
        .unwrap_or_default()
        .into_iter()
        .find(|h| h.name.eq_ignore_ascii_case("Subject"))
        .map(|h| clean(&h.value))
        .unwrap_or_default()
}

fn set_subject(subject: &str) {
    let _ = host::remove_header("Subject");
    let _ = host::add_header("Subject", subject);
}

/// The milter block's edits: removals (all, or the first N), then additions.
fn milter(a: &Answer) {
    for (name, count) in &a.remove_headers {
        if *count == 0 {
            let _ = host::remove_header(name);
        } else {
            // Only some: the rest are put back as they were, in order.
            let all: Vec<_> =
                host::headers().unwrap_or_default().into_iter().filter(|h| h.name.eq_ignore_ascii_case(name)).collect();
            let _ = host::remove_header(name);
            for h in all.iter().skip(*count as usize).rev() {
                let _ = host::add_header(&h.name, &clean(&h.value));
            }
        }
    }
    for (name, value) in &a.add_headers {
        if let Err(e) = host::add_header(name, value) {
            wasmtpd_plugin::warn(format!("rspamd's header {name} not added: {e}"));
        }
    }
}

#[wasmtpd_plugin::plugin]
impl Plugin for Rspamd {
    fn data_post() -> HookResult {
        let options = Options::from_args(ARGS);
        let fail = FailPolicy::from_options(&options);
        let name = options.get("upstream").unwrap_or("rspamd").to_string();
        let max_size = options.get("max_size").and_then(policy::parse_size).unwrap_or(DEFAULT_MAX_SIZE);
        let size = host::message_size().unwrap_or(0);
        if size > max_size {
            let why = format!("the message of {size} octets is over max_size {max_size}");
            wasmtpd_plugin::info(format!("skip: {why}"));
            let _ = host::set_transaction_note(NOTE, Some(&format!("not scanned: {why}")));
            return HookResult::declined();
        }
        let request = HttpRequest {
            method: "POST".into(),
            path: "/checkv2".into(),
            headers: facts(),
            body: HttpBody::Message,
            max_body: MAX_ANSWER,
        };
        let response = match upstream::http_call(&name, &request) {
            Ok(r) => r,
            Err(e) => {
                return fail.failed(NOTE, &format!("upstream `{name}`: {}", policy::describe_upstream_error(&e)));
            }
        };
        if response.status != 200 {
            return fail
                .failed(NOTE, &format!("upstream `{name}`: HTTP {} {}", response.status, clean(&response.reason)));
        }
        let a = match parse_answer(&response.body) {
            Ok(a) => a,
            Err(why) => return fail.failed(NOTE, &format!("upstream `{name}`: {why}")),
        };
        let note = format!(
            "score={:.2} required={:.2} action={} symbols={}",
            a.score,
            a.required,
            a.action,
            a.symbols.join(",")
        );
        let _ = host::set_transaction_note(NOTE, Some(&note));
        wasmtpd_plugin::info(note.clone());
        match a.action.as_str() {
            "reject" if options.flag("reject", true) => {
                let text = a.smtp_message.clone().unwrap_or_else(|| "Spam message rejected".into());
                return HookResult::deny(text).with_enhanced_code("5.7.1");
            }
            "soft reject" => {
                let text = a.smtp_message.clone().unwrap_or_else(|| "Try again later".into());
                return HookResult::deny_soft(text).with_enhanced_code("4.7.1");
            }
            "greylist" if options.flag("greylist", true) => {
                return HookResult::deny_soft("Greylisted, please try again later").with_enhanced_code("4.7.1");
            }
            "reject" | "add header" => {
                let _ = host::remove_header("X-Spam");
                let _ = host::add_header("X-Spam", "Yes");
            }
            "rewrite subject" => {
                let subject = a.subject.clone().unwrap_or_else(|| format!("*** SPAM *** {}", subject()));
                set_subject(&subject);
            }
            _ => {}
        }
        milter(&a);
        if options.flag("score_header", false) {
            let _ = host::add_header("X-Rspamd-Score", &format!("{:.2} / {:.2}", a.score, a.required));
            let _ = host::add_header("X-Rspamd-Symbols", &a.symbols.join(", "));
        }
        HookResult::declined()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rspamds_answer() {
        let body = br#"{"is_skipped":false,"score":7.0,"required_score":15.0,"action":"add header","symbols":{"WASMTPD_TEST_HEADER":{"score":7.0}},"messages":{"smtp_message":"go\r\naway"},"milter":{"remove_headers":{"X-Remove-Me":0},"add_headers":{"X-A":"added","X-B":{"value":"b","order":0},"X-C":["1",{"value":"2"}]}}}"#;
        let a = parse_answer(body).unwrap();
        assert_eq!((a.action.as_str(), a.score, a.required), ("add header", 7.0, 15.0));
        assert_eq!(a.symbols, ["WASMTPD_TEST_HEADER"]);
        assert_eq!(a.smtp_message.as_deref(), Some("go  away"));
        assert_eq!(a.remove_headers, [("X-Remove-Me".to_string(), 0)]);
        assert_eq!(a.add_headers.len(), 4);
        assert!(parse_answer(b"not json").is_err());
        assert!(parse_answer(br#"{"score":1}"#).is_err());
    }
}

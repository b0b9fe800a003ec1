//! spamassassin (qpsmtpd's `spamassassin`, Haraka's `spamassassin`): scores each message with
//! SpamAssassin's spamd, after DATA.
//!
//! The message goes to spamd in the spamd protocol (`HEADERS SPAMC/1.5` or `SYMBOLS
//! SPAMC/1.5`, its `Content-length` the message's size), sent by the host from where the
//! message is (`upstream.write-message`), and spamd answers `SPAMD/1.1 0 EX_OK` with `Spam:
//! True ; 15.0 / 5.0` and, for `HEADERS`, the header it would give the message (its
//! `X-Spam-*` fields are taken from it), for `SYMBOLS` the names of the rules that hit (from
//! which `X-Spam-Status` is made).
//!
//! Before the scan, the `X-Spam-*` fields the message came with (which anyone can write) are
//! renamed `X-Old-Spam-*` (`leave_old_headers rename`, the default), removed (`drop`), or left
//! (`keep`). Then `X-Spam-Status` (`Yes, score=15.0 required=5.0 tests=...`) and, for spam,
//! `X-Spam-Flag: YES` are added.
//!
//! Arguments (`key value` pairs):
//! - `upstream NAME`: the upstream of `config/upstreams` spamd is (default `spamd`), granted
//!   with `upstream NAME` in `config/sandbox`.
//! - `reject_threshold N`: refuse a message scoring N or more (`552 5.7.1 Spam score exceeded
//!   threshold`); default: never refuse.
//! - `munge_subject_threshold N`: prefix the subject of a message scoring N or more with
//!   `subject_prefix` (default `*** SPAM ***`).
//! - `leave_old_headers rename|drop|keep` (default rename).
//! - `spamd_user NAME`: the user whose preferences spamd applies (`User:`).
//! - `mode headers|symbols` (default headers).
//! - `max_size SIZE` (default `512k`, spamc's own): a larger message is not scanned; that is
//!   logged and noted.
//! - `fail_policy tempfail|declined` (default tempfail, `452 4.7.1`; declined: fail open).
//!
//! The result is in the transaction note `spamassassin`: `score=S required=T spam=yes|no
//! tests=...`, or `not scanned: WHY`.

use policy::{FailPolicy, Options};
use wasmtpd_plugin::upstream::{self, Framing};
use wasmtpd_plugin::{HookResult, Plugin, host};

const NOTE: &str = "spamassassin";
const ARGS: &[&str] = &[
    "upstream",
    "reject_threshold",
    "munge_subject_threshold",
    "subject_prefix",
    "leave_old_headers",
    "spamd_user",
    "mode",
    "max_size",
    "fail_policy",
];
const DEFAULT_MAX_SIZE: u64 = 512 << 10;
/// The most of spamd's answer read (a header block, or a list of rule names).
const MAX_ANSWER: u32 = 256 << 10;

struct SpamAssassin;

/// spamd's verdict.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    spam: bool,
    score: f64,
    threshold: f64,
    /// The rules that hit (SYMBOLS).
    tests: Vec<String>,
    /// The `X-Spam-*` fields of the header spamd gave the message (HEADERS), in order.
    headers: Vec<(String, String)>,
}

/// Parses spamd's answer: `SPAMD/1.x 0 EX_OK`, header lines (`Spam: True ; 15.0 / 5.0`,
/// `Content-length`), an empty line, then the body (the header block, or the rule names).
fn parse_answer(raw: &[u8], symbols: bool) -> Result<Verdict, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "spamd's answer is not UTF-8".to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("spamd's answer has no end of head")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut words = status.split_whitespace();
    if !words.next().is_some_and(|v| v.starts_with("SPAMD/1.")) {
        return Err(format!("not a spamd answer: `{}`", shown(status)));
    }
    if words.next() != Some("0") {
        return Err(format!("spamd failed: `{}`", shown(status)));
    }
    let mut verdict = None;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { return Err("a spamd header without a colon".into()) };
        match name.trim().to_ascii_lowercase().as_str() {
            "spam" => verdict = Some(parse_spam_line(value).ok_or_else(|| format!("`Spam:{}`", shown(value)))?),
            "content-length" => length = value.trim().parse::<usize>().ok(),
            _ => {}
        }
    }
    let (spam, score, threshold) = verdict.ok_or("spamd's answer has no Spam line")?;
    if length.is_some_and(|l| l != body.len()) {
        return Err("spamd's answer is not as long as its Content-length says".into());
    }
    let mut v = Verdict { spam, score, threshold, tests: Vec::new(), headers: Vec::new() };
    if symbols {
        v.tests = body.trim().split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    } else {
        v.headers = spam_fields(body);
    }
    Ok(v)
}

/// `True ; 15.0 / 5.0`.
fn parse_spam_line(value: &str) -> Option<(bool, f64, f64)> {
    let (flag, scores) = value.split_once(';')?;
    let spam = match flag.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => true,
        "false" | "no" => false,
        _ => return None,
    };
    let (score, threshold) = scores.split_once('/')?;
    Some((spam, score.trim().parse().ok()?, threshold.trim().parse().ok()?))
}

/// The `X-Spam-*` fields of a header block, unfolded (`X-Spam-Checker-Version` left out).
fn spam_fields(block: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in block.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push((name.to_string(), value.trim().to_string()));
        }
    }
    fields.retain(|(n, _)| {
        let n = n.to_ascii_lowercase();
        n.starts_with("x-spam-") && n != "x-spam-checker-version"
    });
    fields
}

fn shown(s: &str) -> String {
    s.chars().take(200).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The `X-Spam-*` fields the message arrived with: renamed, removed or kept.
fn old_headers(how: &str) {
    if how == "keep" {
        return;
    }
    let old: Vec<_> = host::headers()
        .unwrap_or_default()
        .into_iter()
        .filter(|h| h.name.to_ascii_lowercase().starts_with("x-spam-"))
        .collect();
    let mut names: Vec<String> = old.iter().map(|h| h.name.to_ascii_lowercase()).collect();
    names.dedup();
    for name in &names {
        let _ = host::remove_header(name);
    }
    if how != "drop" {
        for h in &old {
            let value: String = h.value.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
            let _ = host::add_header(&format!("X-Old-{}", &h.name[2..]), value.trim());
        }
    }
    if !old.is_empty() {
        wasmtpd_plugin::info(format!("{} X-Spam field(s) the client sent: {how}", old.len()));
    }
}

/// Sends the message and reads spamd's answer; the connection is closed either way.
fn ask(name: &str, command: &str, user: Option<&str>) -> Result<Vec<u8>, String> {
    let size = host::message_size().map_err(|e| format!("no message: {e}"))?;
    let mut head = format!("{command} SPAMC/1.5\r\nContent-length: {size}\r\n");
    if let Some(user) = user {
        head.push_str(&format!("User: {user}\r\n"));
    }
    head.push_str("\r\n");
    let describe = |e: upstream::UpstreamError| policy::describe_upstream_error(&e);
    let conn = upstream::connect(name).map_err(describe)?;
    let asked = (|| {
        upstream::write(conn, head.as_bytes())?;
        upstream::write_message(conn, 0, None, Framing::None)?;
        upstream::read_to_end(conn, MAX_ANSWER)
    })();
    let _ = upstream::close(conn);
    asked.map_err(describe)
}

fn number(options: &Options, key: &str) -> Option<f64> {
    let v = options.get(key)?;
    v.parse().map_err(|_| wasmtpd_plugin::warn(format!("`{key} {v}`: not a number; ignored"))).ok()
}

#[wasmtpd_plugin::plugin]
impl Plugin for SpamAssassin {
    fn data_post() -> HookResult {
        let options = Options::from_args(ARGS);
        let fail = FailPolicy::from_options(&options);
        let name = options.get("upstream").unwrap_or("spamd").to_string();
        let symbols = match options.get("mode").unwrap_or("headers") {
            "symbols" => true,
            "headers" => false,
            other => {
                wasmtpd_plugin::warn(format!("`mode {other}`: expected headers or symbols; using headers"));
                false
            }
        };
        let max_size = options.get("max_size").and_then(policy::parse_size).unwrap_or(DEFAULT_MAX_SIZE);
        let size = host::message_size().unwrap_or(0);
        if size > max_size {
            let why = format!("the message of {size} octets is over max_size {max_size}");
            wasmtpd_plugin::info(format!("skip: {why}"));
            let _ = host::set_transaction_note(NOTE, Some(&format!("not scanned: {why}")));
            return HookResult::declined();
        }
        old_headers(options.get("leave_old_headers").unwrap_or("rename"));
        let command = if symbols { "SYMBOLS" } else { "HEADERS" };
        let raw = match ask(&name, command, options.get("spamd_user")) {
            Ok(raw) => raw,
            Err(why) => return fail.failed(NOTE, &format!("upstream `{name}`: {why}")),
        };
        let v = match parse_answer(&raw, symbols) {
            Ok(v) => v,
            Err(why) => return fail.failed(NOTE, &format!("upstream `{name}`: {why}")),
        };
        let yes = if v.spam { "Yes" } else { "No" };
        let mut status = None;
        for (field, value) in &v.headers {
            if field.eq_ignore_ascii_case("X-Spam-Status") {
                status = Some(value.clone());
            }
        }
        let status = status.unwrap_or_else(|| {
            format!("{yes}, score={:.1} required={:.1} tests={}", v.score, v.threshold, v.tests.join(","))
        });
        let tests = status.split("tests=").nth(1).and_then(|t| t.split_whitespace().next()).unwrap_or("");
        let note = format!(
            "score={:.1} required={:.1} spam={} tests={tests}",
            v.score,
            v.threshold,
            if v.spam { "yes" } else { "no" }
        );
        let _ = host::set_transaction_note(NOTE, Some(&note));
        if let Some(t) = number(&options, "reject_threshold")
            && v.score >= t
        {
            wasmtpd_plugin::info(format!("fail, spam: {note} (reject_threshold {t})"));
            return HookResult::deny("Spam score exceeded threshold").with_enhanced_code("5.7.1");
        }
        let _ = host::add_header("X-Spam-Status", &status);
        if v.spam {
            let _ = host::add_header("X-Spam-Flag", "YES");
        }
        for (field, value) in &v.headers {
            if field.eq_ignore_ascii_case("X-Spam-Level") {
                let _ = host::add_header("X-Spam-Level", value);
            }
        }
        if let Some(t) = number(&options, "munge_subject_threshold")
            && v.score >= t
        {
            let prefix = options.get("subject_prefix").unwrap_or("*** SPAM ***");
            let subject = host::headers()
                .unwrap_or_default()
                .into_iter()
                .find(|h| h.name.eq_ignore_ascii_case("Subject"))
                .map(|h| h.value)
                .unwrap_or_default();
            let _ = host::remove_header("Subject");
            let _ = host::add_header("Subject", format!("{prefix} {subject}").trim());
        }
        wasmtpd_plugin::info(format!("pass, {note}"));
        HookResult::declined()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_spamds_answers() {
        let symbols = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 18\r\nSpam: True ; 20.0 / 5.0\r\n\r\nWASMTPD_TEST_TOKEN";
        let v = parse_answer(symbols, true).unwrap();
        assert_eq!(
            (v.spam, v.score, v.threshold, v.tests.as_slice()),
            (true, 20.0, 5.0, &["WASMTPD_TEST_TOKEN".to_string()][..])
        );
        let headers = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 79\r\nSpam: False ; 0.0 / 5.0\r\n\r\nX-Spam-Status: No, score=0.0 required=5.0\r\n\ttests=NONE\r\nSubject: hi\r\n\r\n";
        let v = parse_answer(headers, false).unwrap();
        assert_eq!(v.headers, [("X-Spam-Status".to_string(), "No, score=0.0 required=5.0 tests=NONE".to_string())]);
        for bad in [
            &b"SPAMD/1.1 76 Bad header line: x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nSpam: maybe\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 1\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 99\r\nSpam: True ; 1 / 5\r\n\r\nx",
        ] {
            assert!(parse_answer(bad, true).is_err(), "{bad:?}");
        }
    }
}

//! clamd (qpsmtpd's `virus/clamdscan`, Haraka's `clamd`): scans each message for viruses with
//! ClamAV's clamd, after DATA.
//!
//! The message goes to clamd with `zINSTREAM` (its chunks framed by their 4-octet big-endian
//! length, a zero-length chunk ending the stream), sent by the host from where the message is
//! (`upstream.write-message`): however large it is, it never passes through this plugin's
//! memory. clamd answers `stream: OK` (clean) or `stream: NAME FOUND` (infected).
//!
//! Arguments (`key value` pairs):
//! - `upstream NAME`: the upstream of `config/upstreams` clamd is (default `clamd`); it must be
//!   granted with `upstream NAME` in `config/sandbox`.
//! - `deny_viruses 0|1` (default 1): refuse an infected message with `552 5.7.1 Virus found:
//!   NAME`; with 0 it is delivered with `X-Virus-Found: Yes` and `X-Virus-Details: NAME`.
//! - `max_size SIZE` (default `25M`, clamd's own default `StreamMaxLength`): a larger message is
//!   not scanned; that is logged and noted (`not scanned: ...`), and the message goes on.
//! - `fail_policy tempfail|declined` (default tempfail): when clamd cannot be asked (down, no
//!   answer by the deadline, an answer that is not clamd's), refuse with `452 4.7.1` so the
//!   client tries again later, or let the message through unscanned (`declined`, fail open).
//!
//! The result is in the transaction note `clamd`: `clean`, `infected: NAME`, or `not scanned:
//! WHY`.

use policy::{FailPolicy, Options};
use wasmtpd_plugin::upstream::{self, Framing};
use wasmtpd_plugin::{HookResult, Plugin, host};

const NOTE: &str = "clamd";
const ARGS: &[&str] = &["upstream", "deny_viruses", "max_size", "fail_policy"];
/// clamd's default `StreamMaxLength`.
const DEFAULT_MAX_SIZE: u64 = 25 << 20;
/// The longest answer clamd gives (a virus name is short); more is not clamd.
const MAX_ANSWER: u32 = 4096;

struct Clamd;

/// What clamd said.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Clean,
    Infected(String),
    Error(String),
}

/// clamd's answer to a stream scan: `stream: OK`, `stream: NAME FOUND`, or `... ERROR`, ended
/// by NUL (the `z` commands) or a newline.
fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\0', '\n', '\r']).trim();
    if text.contains('\0') || text.contains('\n') {
        return Answer::Error(format!("more than one answer: {}", text.escape_debug()));
    }
    let Some(result) = text.strip_prefix("stream: ") else {
        return Answer::Error(format!("not a clamd stream answer: `{}`", shown(text)));
    };
    if result == "OK" {
        return Answer::Clean;
    }
    if let Some(name) = result.strip_suffix(" FOUND") {
        let name = name.trim();
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic()) {
            return Answer::Infected(name.to_string());
        }
    }
    Answer::Error(format!("clamd: `{}`", shown(result)))
}

fn shown(s: &str) -> String {
    s.chars().take(200).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// Sends the message and reads the answer; the connection is closed either way.
fn scan(name: &str) -> Result<Vec<u8>, String> {
    let describe = |e: upstream::UpstreamError| policy::describe_upstream_error(&e);
    let conn = upstream::connect(name).map_err(describe)?;
    let asked = (|| {
        upstream::write(conn, b"zINSTREAM\0")?;
        upstream::write_message(conn, 0, None, Framing::LengthPrefixed)?;
        upstream::write(conn, &[0, 0, 0, 0])?;
        upstream::read_to_end(conn, MAX_ANSWER)
    })();
    let _ = upstream::close(conn);
    asked.map_err(describe)
}

#[wasmtpd_plugin::plugin]
impl Plugin for Clamd {
    fn data_post() -> HookResult {
        let options = Options::from_args(ARGS);
        let fail = FailPolicy::from_options(&options);
        let name = options.get("upstream").unwrap_or("clamd").to_string();
        let max_size = match options.get("max_size") {
            None => DEFAULT_MAX_SIZE,
            Some(v) => policy::parse_size(v).unwrap_or_else(|| {
                wasmtpd_plugin::warn(format!("`max_size {v}`: not a size; using 25M"));
                DEFAULT_MAX_SIZE
            }),
        };
        let size = match host::message_size() {
            Ok(s) => s,
            Err(e) => return fail.failed(NOTE, &format!("no message: {e}")),
        };
        if size > max_size {
            let why = format!("the message of {size} octets is over max_size {max_size}");
            wasmtpd_plugin::info(format!("skip: {why}"));
            let _ = host::set_transaction_note(NOTE, Some(&format!("not scanned: {why}")));
            return HookResult::declined();
        }
        let raw = match scan(&name) {
            Ok(raw) => raw,
            Err(why) => return fail.failed(NOTE, &format!("upstream `{name}`: {why}")),
        };
        match parse_answer(&raw) {
            Answer::Clean => {
                wasmtpd_plugin::info(format!("pass, clean ({size} octets scanned)"));
                let _ = host::set_transaction_note(NOTE, Some("clean"));
                HookResult::declined()
            }
            Answer::Infected(virus) => {
                let _ = host::set_transaction_note(NOTE, Some(&format!("infected: {virus}")));
                if options.flag("deny_viruses", true) {
                    wasmtpd_plugin::info(format!("fail, virus found: {virus}"));
                    return HookResult::deny(format!("Virus found: {virus}")).with_enhanced_code("5.7.1");
                }
                wasmtpd_plugin::info(format!("virus found: {virus}; delivered with X-Virus-Found (deny_viruses 0)"));
                let _ = host::add_header("X-Virus-Found", "Yes");
                let _ = host::add_header("X-Virus-Details", &virus);
                HookResult::declined()
            }
            Answer::Error(why) => fail.failed(NOTE, &format!("upstream `{name}`: {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_clamds_answers() {
        assert_eq!(parse_answer(b"stream: OK\0"), Answer::Clean);
        assert_eq!(parse_answer(b"stream: Wasmtpd.Test.Sig-1 FOUND\0"), Answer::Infected("Wasmtpd.Test.Sig-1".into()));
        assert_eq!(parse_answer(b"stream: Eicar-Signature FOUND\n"), Answer::Infected("Eicar-Signature".into()));
        for bad in [
            &b"INSTREAM size limit exceeded. ERROR\0"[..],
            b"stream: OK\0stream: OK\0",
            b"220 mail.example ESMTP",
            b"stream:  FOUND\0",
            b"",
        ] {
            assert!(matches!(parse_answer(bad), Answer::Error(_)), "{bad:?}");
        }
    }
}

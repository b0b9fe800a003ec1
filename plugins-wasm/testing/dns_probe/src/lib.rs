//! Test fixture: at RCPT, makes the DNS calls its arguments say, in order, and answers 550
//! with one line per answer, so a test sees exactly what a plugin gets from `wit/dns.wit`.
//!
//! Arguments, each one call: `lookup:TYPE:NAME`, `lookup-all:TYPE:NAME,TYPE:NAME,...`,
//! `reverse:IP`, `check-lists:ZONE,ZONE,...:SUBJECT` (SUBJECT `client` is the client's
//! address). TYPE is a, aaaa, mx, txt, ptr, ns or cname. An argument `TAG=CALL` is made only
//! for recipients whose local part is TAG; one without a tag for every recipient but those
//! whose local part is `skip` (for which the probe always declines).
//!
//! Each answer line is `CALL -> RESULT`, where CALL is `TYPE NAME` (lookup, lookup-all),
//! `reverse IP` or `ZONE SUBJECT` (check-lists), and RESULT one of:
//! - `ok N: RECORD; RECORD; ...` with N the number of records and each RECORD
//!   `A 192.0.2.1 ttl=300`, `AAAA 2001:db8::1 ttl=300`, `MX 10 mx.example ttl=300`,
//!   `TXT "text" ttl=300` (the text Rust-escaped), `PTR name ttl=300`, `NS name ttl=300`,
//!   `CNAME name ttl=300` (for reverse: `ok N: name; name`);
//! - `listed codes=127.0.0.2,127.0.0.3 reason="text"` (or `reason=none`), `not listed`;
//! - an error: `no-such-domain`, `no-records`, `timeout`, `server-failure: TEXT`,
//!   `refused: TEXT`, `invalid-name: TEXT`.
//!
//! A call it cannot read answers `bad argument: ARG`. With no call for the recipient it
//! declines. A reply line is cut at 500 octets, and a reply at 32 lines, by the server.

use wasmtpd_plugin::dns::{self, DnsError, Question, RecordData, RecordType, ResourceRecord};
use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct DnsProbe;

fn record_type(name: &str) -> Option<RecordType> {
    Some(match name {
        "a" => RecordType::A,
        "aaaa" => RecordType::Aaaa,
        "mx" => RecordType::Mx,
        "txt" => RecordType::Txt,
        "ptr" => RecordType::Ptr,
        "ns" => RecordType::Ns,
        "cname" => RecordType::Cname,
        _ => return None,
    })
}

fn type_name(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "a",
        RecordType::Aaaa => "aaaa",
        RecordType::Mx => "mx",
        RecordType::Txt => "txt",
        RecordType::Ptr => "ptr",
        RecordType::Ns => "ns",
        RecordType::Cname => "cname",
    }
}

fn record(r: &ResourceRecord) -> String {
    let data = match &r.data {
        RecordData::A(a) => format!("A {a}"),
        RecordData::Aaaa(a) => format!("AAAA {a}"),
        RecordData::Mx(mx) => format!("MX {} {}", mx.preference, mx.exchange),
        RecordData::Txt(t) => format!("TXT {t:?}"),
        RecordData::Ptr(n) => format!("PTR {n}"),
        RecordData::Ns(n) => format!("NS {n}"),
        RecordData::Cname(n) => format!("CNAME {n}"),
    };
    format!("{data} ttl={}", r.ttl)
}

fn error(e: &DnsError) -> String {
    match e {
        DnsError::NoSuchDomain => "no-such-domain".into(),
        DnsError::NoRecords => "no-records".into(),
        DnsError::Timeout => "timeout".into(),
        DnsError::ServerFailure(t) => format!("server-failure: {t}"),
        DnsError::Refused(t) => format!("refused: {t}"),
        DnsError::InvalidName(t) => format!("invalid-name: {t}"),
    }
}

fn records(answer: &Result<Vec<ResourceRecord>, DnsError>) -> String {
    match answer {
        Ok(rs) => format!("ok {}: {}", rs.len(), rs.iter().map(record).collect::<Vec<_>>().join("; ")),
        Err(e) => error(e),
    }
}

fn question(spec: &str) -> Option<Question> {
    let (t, name) = spec.split_once(':')?;
    Some(Question { name: name.to_string(), record_type: record_type(t)? })
}

/// The answer lines of one call, or `None` if `call` is not one.
fn make(call: &str, client: &str) -> Option<Vec<String>> {
    let (kind, rest) = call.split_once(':')?;
    Some(match kind {
        "lookup" => {
            let q = question(rest)?;
            let answer = dns::lookup(&q.name, q.record_type);
            vec![format!("{} {} -> {}", type_name(q.record_type), q.name, records(&answer))]
        }
        "lookup-all" => {
            let questions: Vec<Question> = rest.split(',').map(question).collect::<Option<_>>()?;
            let answers = dns::lookup_all(&questions);
            questions
                .iter()
                .zip(&answers)
                .map(|(q, a)| format!("{} {} -> {}", type_name(q.record_type), q.name, records(a)))
                .collect()
        }
        "reverse" => {
            let answer = match dns::reverse(rest) {
                Ok(names) => format!("ok {}: {}", names.len(), names.join("; ")),
                Err(e) => error(&e),
            };
            vec![format!("reverse {rest} -> {answer}")]
        }
        "check-lists" => {
            let (zones, subject) = rest.split_once(':')?;
            let subject = if subject == "client" { client } else { subject };
            let zones: Vec<String> = zones.split(',').map(str::to_string).collect();
            let answers = dns::check_lists(subject, &zones);
            zones
                .iter()
                .zip(&answers)
                .map(|(zone, a)| {
                    let answer = match a {
                        Ok(Some(l)) => format!(
                            "listed zone={} codes={} reason={}",
                            l.zone,
                            l.codes.join(","),
                            l.reason.as_ref().map_or("none".to_string(), |r| format!("{r:?}"))
                        ),
                        Ok(None) => "not listed".into(),
                        Err(e) => error(e),
                    };
                    format!("{zone} {subject} -> {answer}")
                })
                .collect()
        }
        _ => return None,
    })
}

#[wasmtpd_plugin::plugin]
impl Plugin for DnsProbe {
    fn rcpt(recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        if recipient.local_part == "skip" {
            return HookResult::declined();
        }
        let client = host::connection().remote_ip;
        let mut lines = Vec::new();
        for arg in host::args() {
            let call = match arg.split_once('=') {
                Some((tag, call)) if tag == recipient.local_part => call.to_string(),
                Some(_) => continue,
                None => arg.clone(),
            };
            match make(&call, &client) {
                Some(answers) => lines.extend(answers),
                None => lines.push(format!("bad argument: {arg}")),
            }
        }
        if lines.is_empty() {
            return HookResult::declined();
        }
        HookResult::deny(lines.join("\n"))
    }
}

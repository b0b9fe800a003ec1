//! XCLIENT (Postfix's extension, XCLIENT_README): a trusted front end (a proxy, a filter, a
//! Postfix before us) tells us the facts of the client it speaks for. Parsed here; who may send
//! it is the operator's choice (`config/frontends`), and what it changes is
//! [`crate::Session::accept_xclient`].
//!
//! `XCLIENT SP attribute=value *(SP attribute=value)`: the names are NAME, ADDR, PORT, PROTO,
//! HELO, LOGIN, DESTADDR and DESTPORT (any case); each value is xtext, and `[UNAVAILABLE]` (or
//! `[TEMPUNAVAIL]`) means the front end does not know it. ADDR and DESTADDR are an IPv4 address
//! or `IPV6:` and an IPv6 address; PORT and DESTPORT 0 to 65535; PROTO `SMTP` or `ESMTP`. An
//! attribute given twice, an unknown name, or a value that does not parse is a syntax error
//! (501), as in Postfix, and nothing of the command takes effect.

use std::net::{IpAddr, Ipv6Addr};

use crate::address::MAX_DOMAIN;
use crate::xtext;

/// The attribute names, as EHLO advertises them.
pub const ATTRIBUTES: [&str; 8] = ["NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT"];

/// What one XCLIENT command says; `None` in an attribute given as `[UNAVAILABLE]`, and an
/// attribute not given at all is not changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Xclient {
    pub name: Option<Option<String>>,
    pub addr: Option<Option<IpAddr>>,
    pub port: Option<Option<u16>>,
    /// `Some(true)` for ESMTP.
    pub proto: Option<Option<bool>>,
    pub helo: Option<Option<String>>,
    pub login: Option<Option<String>>,
    pub dest_addr: Option<Option<IpAddr>>,
    pub dest_port: Option<Option<u16>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XclientError {
    #[error("XCLIENT attribute=value ...")]
    NoAttributes,
    #[error("bad XCLIENT attribute name: {0}")]
    UnknownAttribute(String),
    #[error("XCLIENT attribute {0} given twice")]
    Repeated(&'static str),
    #[error("bad {0} syntax")]
    BadValue(&'static str),
}

/// Parses the arguments of XCLIENT (the line after the verb).
pub fn parse(rest: &str) -> Result<Xclient, XclientError> {
    let mut x = Xclient::default();
    let mut any = false;
    for word in rest.split(' ').filter(|w| !w.is_empty()) {
        any = true;
        let (name, value) = word.split_once('=').ok_or_else(|| XclientError::UnknownAttribute(word.to_string()))?;
        let upper = name.to_ascii_uppercase();
        let Some(&name) = ATTRIBUTES.iter().find(|a| **a == upper) else {
            return Err(XclientError::UnknownAttribute(name.to_string()));
        };
        let bad = || XclientError::BadValue(name);
        let value = xtext::decode(value).map_err(|_| bad())?;
        let known = !(value.eq_ignore_ascii_case("[UNAVAILABLE]") || value.eq_ignore_ascii_case("[TEMPUNAVAIL]"));
        let first = match name {
            "NAME" => set(&mut x.name, known.then(|| host_name(&value)), bad)?,
            "HELO" => set(&mut x.helo, known.then(|| host_name(&value)), bad)?,
            "LOGIN" => set(&mut x.login, known.then(|| login(&value)), bad)?,
            "ADDR" => set(&mut x.addr, known.then(|| ip(&value)), bad)?,
            "DESTADDR" => set(&mut x.dest_addr, known.then(|| ip(&value)), bad)?,
            "PORT" => set(&mut x.port, known.then(|| value.parse().ok()), bad)?,
            "DESTPORT" => set(&mut x.dest_port, known.then(|| value.parse().ok()), bad)?,
            _ => set(&mut x.proto, known.then(|| proto(&value)), bad)?,
        };
        if !first {
            return Err(XclientError::Repeated(name));
        }
    }
    if !any {
        return Err(XclientError::NoAttributes);
    }
    Ok(x)
}

/// Stores one attribute: `value` is `None` for `[UNAVAILABLE]`, `Some(None)` for a value that
/// does not parse. `Ok(false)`: it was given already.
fn set<T>(
    slot: &mut Option<Option<T>>,
    value: Option<Option<T>>,
    bad: impl Fn() -> XclientError,
) -> Result<bool, XclientError> {
    let value = match value {
        None => None,
        Some(Some(v)) => Some(v),
        Some(None) => return Err(bad()),
    };
    Ok(slot.replace(value).is_none())
}

/// A host name as a HELO or a reverse DNS name: one word of printable ASCII, at most 255 octets.
fn host_name(v: &str) -> Option<String> {
    let ok = !v.is_empty() && v.len() <= MAX_DOMAIN && v.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| v.to_string())
}

/// A SASL login name: printable, at most 255 octets (UTF-8 allowed, controls never: xtext
/// decoding refused them).
fn login(v: &str) -> Option<String> {
    (!v.is_empty() && v.len() <= 255 && !v.contains(' ')).then(|| v.to_string())
}

/// `192.0.2.1` or `IPV6:2001:db8::1` (any case).
fn ip(v: &str) -> Option<IpAddr> {
    match v.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("IPV6:") => v[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        _ => v.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

fn proto(v: &str) -> Option<bool> {
    match v.to_ascii_uppercase().as_str() {
        "SMTP" => Some(false),
        "ESMTP" => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postfix_attributes() {
        let x = parse("ADDR=192.0.2.9 PORT=4711 NAME=client.example HELO=[192.0.2.9] PROTO=esmtp LOGIN=alice+40x DESTADDR=IPV6:2001:db8::25 destport=25").unwrap();
        assert_eq!(x.addr, Some(Some("192.0.2.9".parse().unwrap())));
        assert_eq!(x.port, Some(Some(4711)));
        assert_eq!(x.name, Some(Some("client.example".into())));
        assert_eq!(x.helo, Some(Some("[192.0.2.9]".into())));
        assert_eq!(x.proto, Some(Some(true)));
        assert_eq!(x.login, Some(Some("alice@x".into())));
        assert_eq!(x.dest_addr, Some(Some("2001:db8::25".parse().unwrap())));
        assert_eq!(x.dest_port, Some(Some(25)));
        let x = parse("NAME=[UNAVAILABLE] ADDR=[TEMPUNAVAIL]").unwrap();
        assert_eq!((x.name, x.addr, x.port), (Some(None), Some(None), None));
    }

    #[test]
    fn refuses_what_postfix_refuses() {
        assert_eq!(parse(""), Err(XclientError::NoAttributes));
        assert_eq!(parse("FOO=1"), Err(XclientError::UnknownAttribute("FOO".into())));
        assert_eq!(parse("ADDR"), Err(XclientError::UnknownAttribute("ADDR".into())));
        assert_eq!(parse("ADDR=999.1.1.1"), Err(XclientError::BadValue("ADDR")));
        assert_eq!(parse("ADDR=2001:db8::1"), Err(XclientError::BadValue("ADDR")), "IPv6 needs IPV6:");
        assert_eq!(parse("PORT=65536"), Err(XclientError::BadValue("PORT")));
        assert_eq!(parse("PROTO=LMTP"), Err(XclientError::BadValue("PROTO")));
        assert_eq!(parse("HELO=a+0D+0Ab"), Err(XclientError::BadValue("HELO")), "no CR LF by xtext");
        assert_eq!(parse("ADDR=192.0.2.1 addr=192.0.2.2"), Err(XclientError::Repeated("ADDR")));
    }
}

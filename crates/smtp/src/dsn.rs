//! Delivery Status Notification parameters (RFC 3461): `RET` and `ENVID` on MAIL, `NOTIFY`
//! and `ORCPT` on RCPT, parsed and checked here, so a queue that passes them on, or sends a
//! DSN itself, gets typed values that cannot carry a control character.
//!
//! - `RET=FULL|HDRS` (any case).
//! - `ENVID=xtext`: at most 100 octets as written; decoded (see [`crate::xtext`]).
//! - `NOTIFY=NEVER` or a comma list of `SUCCESS`, `FAILURE`, `DELAY` (any case; NEVER alone;
//!   no item twice).
//! - `ORCPT=addr-type;xtext`: addr-type an atom (`rfc822`, `utf-8`, ...), the address decoded;
//!   at most 500 octets as written.
//!
//! A malformed value is a syntax error (501); a repeated keyword is refused as every repeated
//! parameter is.

use crate::xtext;

/// `RET` (RFC 3461 4.3): what a failure DSN carries of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// The DSN parameters of MAIL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailDsn {
    pub ret: Option<Ret>,
    /// The envelope id, decoded.
    pub envid: Option<String>,
}

/// `NOTIFY` (RFC 3461 4.1): when a DSN is wanted; all `false` is NEVER.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

/// `ORCPT` (RFC 3461 4.2): the original recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orcpt {
    /// The address type, as written (`rfc822`).
    pub addr_type: String,
    /// The address, decoded.
    pub address: String,
}

/// The DSN parameters of one RCPT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptDsn {
    pub notify: Option<Notify>,
    pub orcpt: Option<Orcpt>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsnError {
    #[error("RET must be FULL or HDRS")]
    Ret,
    #[error("ENVID must be xtext of at most 100 octets")]
    Envid,
    #[error("NOTIFY must be NEVER or a list of SUCCESS, FAILURE and DELAY")]
    Notify,
    #[error("ORCPT must be addr-type;xtext")]
    Orcpt,
}

pub const MAX_ENVID: usize = 100;
pub const MAX_ORCPT: usize = 500;

/// RET's value.
pub fn ret(v: Option<&str>) -> Result<Ret, DsnError> {
    match v.map(str::to_ascii_uppercase).as_deref() {
        Some("FULL") => Ok(Ret::Full),
        Some("HDRS") => Ok(Ret::Hdrs),
        _ => Err(DsnError::Ret),
    }
}

/// ENVID's value, decoded.
pub fn envid(v: Option<&str>) -> Result<String, DsnError> {
    match v {
        Some(v) if !v.is_empty() && v.len() <= MAX_ENVID => xtext::decode(v).map_err(|_| DsnError::Envid),
        _ => Err(DsnError::Envid),
    }
}

/// NOTIFY's value.
pub fn notify(v: Option<&str>) -> Result<Notify, DsnError> {
    let v = v.ok_or(DsnError::Notify)?;
    if v.eq_ignore_ascii_case("NEVER") {
        return Ok(Notify::default());
    }
    let mut n = Notify::default();
    for item in v.split(',') {
        let slot = match item.to_ascii_uppercase().as_str() {
            "SUCCESS" => &mut n.success,
            "FAILURE" => &mut n.failure,
            "DELAY" => &mut n.delay,
            _ => return Err(DsnError::Notify),
        };
        if std::mem::replace(slot, true) {
            return Err(DsnError::Notify);
        }
    }
    Ok(n)
}

/// ORCPT's value, decoded.
pub fn orcpt(v: Option<&str>) -> Result<Orcpt, DsnError> {
    let v = v.filter(|v| v.len() <= MAX_ORCPT).ok_or(DsnError::Orcpt)?;
    let (addr_type, address) = v.split_once(';').ok_or(DsnError::Orcpt)?;
    let atom = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !atom(addr_type) || address.is_empty() {
        return Err(DsnError::Orcpt);
    }
    let address = xtext::decode(address).map_err(|_| DsnError::Orcpt)?;
    Ok(Orcpt { addr_type: addr_type.to_string(), address })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(ret(Some("hdrs")), Ok(Ret::Hdrs));
        assert_eq!(ret(Some("FULL")), Ok(Ret::Full));
        assert_eq!(ret(Some("ALL")), Err(DsnError::Ret));
        assert_eq!(ret(None), Err(DsnError::Ret));
        assert_eq!(envid(Some("QQ314159+2Bx")).unwrap(), "QQ314159+x");
        assert_eq!(envid(Some("a+0D+0AX-Injected: 1")), Err(DsnError::Envid));
        assert_eq!(envid(Some(&"x".repeat(101))), Err(DsnError::Envid));
        assert_eq!(notify(Some("never")), Ok(Notify::default()));
        assert_eq!(notify(Some("SUCCESS,delay")), Ok(Notify { success: true, failure: false, delay: true }));
        for bad in ["NEVER,SUCCESS", "SUCCESS,SUCCESS", "", "SUCCESS,", "ALWAYS"] {
            assert_eq!(notify(Some(bad)), Err(DsnError::Notify), "{bad}");
        }
        let o = orcpt(Some("rfc822;Bob+40Example.com")).unwrap();
        assert_eq!((o.addr_type.as_str(), o.address.as_str()), ("rfc822", "Bob@Example.com"));
        for bad in ["rfc822", ";a@b", "rfc822;", "rfc 822;a@b", "rfc822;a+00b"] {
            assert_eq!(orcpt(Some(bad)), Err(DsnError::Orcpt), "{bad}");
        }
    }
}

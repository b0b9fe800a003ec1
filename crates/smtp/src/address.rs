//! The RFC 5321 path grammar (section 4.1.2), strict: what may stand between `<` and `>` in
//! `MAIL FROM:` and `RCPT TO:`.
//!
//! - A source route (`<@a,@b:user@c>`) is accepted and dropped, as RFC 5321 4.1.1.3 requires.
//! - Local parts are dot-strings or quoted strings; domains are LDH labels or address literals
//!   (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
//! - Non-ASCII (RFC 6531 UTF-8) is accepted by the grammar; whether it is *allowed* depends on
//!   the SMTPUTF8 parameter and is decided by the session.
//! - Control characters (CR, LF, NUL, ...) are never part of an address, quoted or not.
//! - Lengths follow RFC 5321 4.5.3.1: local part 64, domain 255, whole path 256 octets.

use std::fmt;

pub const MAX_LOCAL_PART: usize = 64;
pub const MAX_DOMAIN: usize = 255;
pub const MAX_PATH: usize = 256;

/// A mailbox: `local@domain`, or the bare `postmaster` of RFC 5321 4.5.1 (domain is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    local_part: String,
    domain: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address must be enclosed in <>")]
    NotBracketed,
    #[error("address is too long")]
    TooLong,
    #[error("invalid local part")]
    LocalPart,
    #[error("invalid domain")]
    Domain,
    #[error("address has no domain")]
    NoDomain,
    #[error("invalid source route")]
    SourceRoute,
}

impl Address {
    /// The part before the `@`, as the client wrote it (a quoted local part keeps its quotes).
    pub fn local_part(&self) -> &str {
        &self.local_part
    }

    /// The domain, or `None` for the bare `<postmaster>` recipient.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// True when every octet is ASCII (no SMTPUTF8 needed).
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.as_deref().is_none_or(str::is_ascii)
    }

    /// True for the bare `<postmaster>` recipient (any case).
    pub fn is_bare_postmaster(&self) -> bool {
        self.domain.is_none()
    }

    /// Builds an address from parts; used by tests and plugins' rewrites. Validates like the parser.
    pub fn new(local_part: &str, domain: &str) -> Result<Self, AddressError> {
        parse_mailbox(&format!("{local_part}@{domain}"))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            Some(d) => write!(f, "{}@{}", self.local_part, d),
            None => f.write_str(&self.local_part),
        }
    }
}

/// Parses a bracketed path. Returns `Ok(None)` for the null path `<>`.
/// `allow_postmaster` accepts the bare `<postmaster>` (RCPT only).
pub fn parse_path(s: &str, allow_postmaster: bool) -> Result<Option<Address>, AddressError> {
    let inner = s.strip_prefix('<').and_then(|s| s.strip_suffix('>')).ok_or(AddressError::NotBracketed)?;
    if s.len() > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    if inner.is_empty() {
        return Ok(None);
    }
    let mailbox = strip_source_route(inner)?;
    if allow_postmaster && mailbox.eq_ignore_ascii_case("postmaster") {
        return Ok(Some(Address { local_part: mailbox.to_string(), domain: None }));
    }
    parse_mailbox(mailbox).map(Some)
}

/// `@a,@b:mailbox` → `mailbox`, validating each route domain.
fn strip_source_route(s: &str) -> Result<&str, AddressError> {
    if !s.starts_with('@') {
        return Ok(s);
    }
    let colon = s.find(':').ok_or(AddressError::SourceRoute)?;
    for hop in s[..colon].split(',') {
        let d = hop.strip_prefix('@').ok_or(AddressError::SourceRoute)?;
        if !is_domain(d) {
            return Err(AddressError::SourceRoute);
        }
    }
    Ok(&s[colon + 1..])
}

/// Parses `local@domain` (no brackets).
pub fn parse_mailbox(s: &str) -> Result<Address, AddressError> {
    let at = local_part_end(s)?;
    let (local, rest) = s.split_at(at);
    let domain = rest.strip_prefix('@').ok_or(AddressError::NoDomain)?;
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::TooLong);
    }
    if domain.len() > MAX_DOMAIN {
        return Err(AddressError::TooLong);
    }
    if !(is_domain(domain) || is_address_literal(domain)) {
        return Err(AddressError::Domain);
    }
    Ok(Address { local_part: local.to_string(), domain: Some(domain.to_string()) })
}

/// Returns the byte index just past a valid local part.
fn local_part_end(s: &str) -> Result<usize, AddressError> {
    if let Some(rest) = s.strip_prefix('"') {
        // Quoted-string: qtextSMTP (printable ASCII but `"` and `\`, or UTF-8) and
        // quoted-pairSMTP (`\` followed by printable ASCII).
        let mut escaped = false;
        for (j, c) in rest.char_indices() {
            if c.is_control() {
                return Err(AddressError::LocalPart);
            }
            if escaped {
                if !(' '..='~').contains(&c) {
                    return Err(AddressError::LocalPart);
                }
                escaped = false;
                continue;
            }
            match c {
                '\\' => escaped = true,
                '"' if j == 0 => return Err(AddressError::LocalPart),
                '"' => return Ok(1 + j + 1),
                _ => {}
            }
        }
        return Err(AddressError::LocalPart);
    }
    // Dot-string: Atom *("." Atom)
    let end = s.rfind('@').ok_or(AddressError::NoDomain)?;
    let local = &s[..end];
    if local.is_empty() || local.split('.').any(|atom| atom.is_empty() || !atom.chars().all(is_atext)) {
        return Err(AddressError::LocalPart);
    }
    Ok(end)
}

/// RFC 5322 atext, plus RFC 6531's UTF8-non-ascii.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || (!c.is_ascii() && !c.is_control())
}

/// `sub-domain *("." sub-domain)`; sub-domain = Let-dig [Ldh-str], or a U-label (RFC 6531).
pub fn is_domain(d: &str) -> bool {
    if d.is_empty() || d.len() > MAX_DOMAIN {
        return false;
    }
    d.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| {
                c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
            })
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

/// `[IPv4]`, `[IPv6:addr]`, or a general literal `[tag:content]` (RFC 5321 4.1.3).
fn is_address_literal(d: &str) -> bool {
    let Some(inner) = d.strip_prefix('[').and_then(|d| d.strip_suffix(']')) else {
        return false;
    };
    if let Some(v6) = inner.strip_prefix("IPv6:").or_else(|| inner.strip_prefix("ipv6:")) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if inner.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    // General-address-literal: Standardized-tag ":" 1*dcontent (dcontent = %d33-90 / %d94-126)
    match inner.split_once(':') {
        Some((tag, content)) => {
            is_domain(tag)
                && !tag.contains('.')
                && !content.is_empty()
                && content.bytes().all(|b| matches!(b, 33..=90 | 94..=126))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        parse_path(s, true).unwrap_or_else(|e| panic!("{s}: {e}")).map(|a| a.to_string()).unwrap_or_default()
    }

    #[test]
    fn accepts_valid_paths() {
        assert_eq!(ok("<>"), "");
        assert_eq!(ok("<user@example.com>"), "user@example.com");
        assert_eq!(ok("<first.last+tag@sub.example.org>"), "first.last+tag@sub.example.org");
        assert_eq!(ok("<\"john doe\"@example.com>"), "\"john doe\"@example.com");
        assert_eq!(ok("<\"a\\\"b\"@example.com>"), "\"a\\\"b\"@example.com");
        assert_eq!(ok("<@relay.example,@other.example:user@example.com>"), "user@example.com");
        assert_eq!(ok("<user@[192.0.2.1]>"), "user@[192.0.2.1]");
        assert_eq!(ok("<user@[IPv6:2001:db8::1]>"), "user@[IPv6:2001:db8::1]");
        assert_eq!(ok("<PostMaster>"), "PostMaster");
        assert_eq!(ok("<jürgen@bücher.example>"), "jürgen@bücher.example");
    }

    #[test]
    fn rejects_invalid_paths() {
        for bad in [
            "user@example.com",
            "<user@example.com",
            "<user>",
            "<@example.com>",
            "<user@>",
            "<.user@example.com>",
            "<user.@example.com>",
            "<us..er@example.com>",
            "<user@-example.com>",
            "<user@exa mple.com>",
            "<user@example..com>",
            "<us er@example.com>",
            "<user\r\n@example.com>",
            "<\"a\rb\"@example.com>",
            "<\"a\nb\"@example.com>",
            "<\"a\0b\"@example.com>",
            "<user@exam\0ple.com>",
            "<user@[300.1.1.1]>",
            "<user@[IPv6:zz::1]>",
            "<\"\"@example.com>",
            "<\"unterminated@example.com>",
            "<@bad route:user@example.com>",
        ] {
            assert!(parse_path(bad, true).is_err(), "{bad:?} accepted");
        }
        let long_local = format!("<{}@example.com>", "a".repeat(65));
        assert_eq!(parse_path(&long_local, false), Err(AddressError::TooLong));
        assert!(parse_path("<postmaster>", false).is_err());
    }
}

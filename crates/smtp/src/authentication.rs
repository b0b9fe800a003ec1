//! The results of the server's email authentication checks (RFC 8601's methods iprev, spf,
//! dkim and dmarc), as the session keeps them for plugins to read and for the
//! `Authentication-Results` header field. How they are computed is the server's business;
//! this is only what they say.

use std::fmt;

/// A check's result, with RFC 8601's meaning (section 2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    Policy,
    TempError,
    PermError,
}

impl AuthResult {
    /// The result's name in an `Authentication-Results` field.
    pub fn name(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::Policy => "policy",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
        }
    }
}

impl fmt::Display for AuthResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCheck {
    pub result: AuthResult,
    /// What was checked: the client's name (iprev), the HELO or MAIL FROM domain (SPF), the
    /// signing domain (DKIM), the From domain (DMARC).
    pub domain: Option<String>,
    /// Why, in words, when the check says more than its result.
    pub reason: Option<String>,
}

/// What a domain's DMARC record asks receivers to do with mail that fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

/// The DMARC check and the policy that applies when it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcCheck {
    pub check: AuthCheck,
    pub policy: DmarcPolicy,
}

/// The checks of one transaction; `None` (or empty) until computed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageAuthentication {
    pub spf_helo: Option<AuthCheck>,
    pub spf_mail_from: Option<AuthCheck>,
    pub dkim: Vec<AuthCheck>,
    pub dmarc: Option<DmarcCheck>,
}

//! The email authentication checks the server makes when the operator enables them in
//! `config/authentication` (RFC 8601's methods): iprev when a client connects, SPF (RFC 7208)
//! for the HELO name and the MAIL FROM domain when it sends MAIL, DKIM (RFC 6376) for every
//! signature and DMARC (RFC 7489) once the message is in. Computed with mail-auth over the
//! server's one resolver (`wasmtpd_host::resolver`), so plugins' lookups and these share a
//! cache. Plugins read the results (`wit/authentication-results.wit`) and decide; the server
//! records them in one `Authentication-Results` field ([`header_value`]).
//!
//! Bounded: each check has at most twice the resolver's timeout (SPF may ask ten names in
//! turn), and past it is `temperror`; at most [`MAX_SIGNATURES`] DKIM signatures are verified,
//! and only in messages of at most [`MAX_VERIFIED_SIZE`] octets (mail-auth reads a message
//! whole).

use std::net::IpAddr;
use std::time::Duration;

use mail_auth::dmarc::Policy;
use mail_auth::{
    AuthenticatedMessage, DkimResult, DmarcResult, IprevResult, MessageAuthenticator, SpfOutput, SpfResult,
    dmarc::verify::DmarcParameters, spf::verify::SpfParameters,
};
use tracing::debug;
use wasmtpd_host::resolver::Resolver;
use wasmtpd_smtp::authentication::{AuthCheck, AuthResult, DmarcCheck, DmarcPolicy, MessageAuthentication};
use wasmtpd_smtp::session::Connection;
use wasmtpd_smtp::{Content, Transaction};

/// Most DKIM signatures verified in one message; the rest are not looked at.
pub const MAX_SIGNATURES: usize = 16;
/// Largest message whose DKIM signatures are verified (larger ones get `dkim=neutral`, and
/// DMARC then rests on SPF alone).
pub const MAX_VERIFIED_SIZE: u64 = 32 << 20;

/// Which checks are made (`config/authentication`; none by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checks {
    pub iprev: bool,
    pub spf: bool,
    pub dkim: bool,
    pub dmarc: bool,
}

impl Checks {
    /// Turns on the check named `name`. DMARC needs SPF and DKIM, so it turns them on too.
    pub fn enable(&mut self, name: &str) -> Result<(), String> {
        match name {
            "iprev" => self.iprev = true,
            "spf" => self.spf = true,
            "dkim" => self.dkim = true,
            "dmarc" => *self = Checks { spf: true, dkim: true, dmarc: true, ..*self },
            _ => return Err(format!("unknown check `{name}`; the checks are iprev, spf, dkim and dmarc")),
        }
        Ok(())
    }

    pub fn any(self) -> bool {
        self.iprev || self.spf || self.dkim || self.dmarc
    }
}

/// The checks, ready to run.
pub struct Authenticator {
    checks: Checks,
    verifier: MessageAuthenticator,
    /// Our host name: the authserv-id, and SPF's `%{r}`.
    me: String,
    limit: Duration,
}

impl Authenticator {
    pub fn new(checks: Checks, resolver: &Resolver, me: &str) -> Authenticator {
        Authenticator {
            checks,
            verifier: MessageAuthenticator(resolver.hickory().clone()),
            me: me.to_string(),
            limit: resolver.timeout() * 2,
        }
    }

    /// iprev for the client, if enabled.
    pub async fn iprev(&self, remote: IpAddr) -> Option<AuthCheck> {
        if !self.checks.iprev {
            return None;
        }
        let Ok(output) = tokio::time::timeout(self.limit, self.verifier.verify_iprev(remote)).await else {
            return Some(timed_out());
        };
        let (result, reason) = match &output.result {
            IprevResult::Pass => (AuthResult::Pass, None),
            IprevResult::Fail(e) => (AuthResult::Fail, Some(e.to_string())),
            IprevResult::TempError(e) => (AuthResult::TempError, Some(e.to_string())),
            IprevResult::PermError(e) => (AuthResult::PermError, Some(e.to_string())),
            IprevResult::None => (AuthResult::None, None),
        };
        let name = match result {
            AuthResult::Pass => {
                output.ptr.as_ref().and_then(|p| p.first()).map(|n| n.trim_end_matches('.').to_string())
            }
            _ => None,
        };
        Some(AuthCheck { result, domain: name, reason })
    }

    /// SPF for the HELO name and the MAIL FROM domain of `txn`, if enabled.
    pub async fn spf(&self, connection: &Connection, txn: &mut Transaction) {
        if !self.checks.spf {
            return;
        }
        let ip = connection.remote.ip();
        let helo = connection.hello.as_ref().map_or("", |h| h.host.as_str());
        let sender = txn.sender.as_ref().map(|a| a.to_string()).unwrap_or_default();
        let helo_check = async {
            if helo.is_empty() || helo.starts_with('[') {
                return AuthCheck {
                    result: AuthResult::None,
                    domain: None,
                    reason: Some("no HELO name to check".into()),
                };
            }
            let params = SpfParameters::verify_ehlo(ip, helo, &self.me);
            self.bounded(self.verifier.verify_spf(params)).await.map_or_else(timed_out, |o| spf_check(&o, helo))
        };
        let mail_from_check = async {
            match sender.rsplit_once('@') {
                // The null sender's identity is postmaster@ its HELO name (RFC 7208 2.4).
                None => None,
                Some((_, domain)) => {
                    let params = SpfParameters::verify_mail_from(ip, helo, &self.me, &sender);
                    Some(
                        self.bounded(self.verifier.verify_spf(params))
                            .await
                            .map_or_else(timed_out, |o| spf_check(&o, domain)),
                    )
                }
            }
        };
        let (helo_result, mail_from_result) = tokio::join!(helo_check, mail_from_check);
        txn.authentication.spf_mail_from = Some(mail_from_result.unwrap_or_else(|| helo_result.clone()));
        txn.authentication.spf_helo = Some(helo_result);
    }

    /// DKIM and DMARC for the message of `txn` (now spooled), if enabled; then the value of
    /// the `Authentication-Results` field with every result of the session.
    pub async fn message(&self, connection: &Connection, txn: &mut Transaction) {
        if self.checks.dkim || self.checks.dmarc {
            let auth = &mut txn.authentication;
            let mail_from_domain = txn.sender.as_ref().and_then(|a| a.domain().map(str::to_string)).unwrap_or_default();
            if let Some(message) = &txn.message {
                let (dkim, dmarc) = self.check_message(&message.content, message.size, &mail_from_domain, auth).await;
                auth.dkim = dkim;
                auth.dmarc = dmarc;
            }
        }
        if self.checks.any() {
            let value = header_value(&self.me, connection, txn);
            if let Some(message) = &mut txn.message {
                message.authentication_results = Some(value);
            }
        }
    }

    async fn check_message(
        &self,
        content: &Content,
        size: u64,
        mail_from_domain: &str,
        auth: &MessageAuthentication,
    ) -> (Vec<AuthCheck>, Option<DmarcCheck>) {
        if size > MAX_VERIFIED_SIZE {
            let reason = format!("not verified: the message is over {} MiB", MAX_VERIFIED_SIZE >> 20);
            return (vec![AuthCheck { result: AuthResult::Neutral, domain: None, reason: Some(reason) }], None);
        }
        let bytes = match content {
            Content::Memory(m) => m.to_vec(),
            Content::File(path) => match tokio::fs::read(path).await {
                Ok(b) => b,
                Err(e) => {
                    let reason = Some(format!("the message could not be read: {e}"));
                    return (vec![AuthCheck { result: AuthResult::TempError, domain: None, reason }], None);
                }
            },
        };
        let Some(mut parsed) = AuthenticatedMessage::parse(&bytes) else {
            let reason = Some("the message has no header to check".into());
            return (vec![AuthCheck { result: AuthResult::PermError, domain: None, reason }], None);
        };
        parsed.dkim_headers.truncate(MAX_SIGNATURES);
        let outputs = match self.bounded(self.verifier.verify_dkim(&parsed)).await {
            Some(o) => o,
            None => return (vec![timed_out()], None),
        };
        let dkim: Vec<AuthCheck> = if outputs.is_empty() {
            vec![AuthCheck { result: AuthResult::None, domain: None, reason: Some("no signature".into()) }]
        } else {
            outputs.iter().map(dkim_check).collect()
        };
        if !self.checks.dmarc {
            return (dkim, None);
        }
        // DMARC reads SPF's result for the MAIL FROM identity, as mail-auth computed it.
        let spf_output = spf_output_of(auth.spf_mail_from.as_ref(), mail_from_domain);
        let params = DmarcParameters::new(&parsed, &outputs, mail_from_domain, &spf_output);
        let dmarc = match self.bounded(self.verifier.verify_dmarc(params)).await {
            None => DmarcCheck { check: timed_out(), policy: DmarcPolicy::None },
            Some(output) => {
                let (result, reason) = match output.result() {
                    DmarcResult::Pass => (AuthResult::Pass, None),
                    DmarcResult::Fail(e) => (AuthResult::Fail, Some(e.to_string())),
                    DmarcResult::TempError(e) => (AuthResult::TempError, Some(e.to_string())),
                    DmarcResult::PermError(e) => (AuthResult::PermError, Some(e.to_string())),
                    DmarcResult::None => (AuthResult::None, None),
                };
                let policy = match output.policy() {
                    Policy::Reject => DmarcPolicy::Reject,
                    Policy::Quarantine => DmarcPolicy::Quarantine,
                    Policy::None | Policy::Unspecified => DmarcPolicy::None,
                };
                let domain = Some(output.domain().to_string()).filter(|d| !d.is_empty());
                DmarcCheck { check: AuthCheck { result, domain, reason }, policy }
            }
        };
        debug!(dkim = dkim.len(), dmarc = %dmarc.check.result, "message authenticated");
        (dkim, Some(dmarc))
    }

    async fn bounded<F: Future>(&self, f: F) -> Option<F::Output> {
        tokio::time::timeout(self.limit, f).await.ok()
    }
}

fn timed_out() -> AuthCheck {
    AuthCheck { result: AuthResult::TempError, domain: None, reason: Some("DNS lookups timed out".into()) }
}

fn spf_check(output: &SpfOutput, domain: &str) -> AuthCheck {
    let result = match output.result() {
        SpfResult::Pass => AuthResult::Pass,
        SpfResult::Fail => AuthResult::Fail,
        SpfResult::SoftFail => AuthResult::SoftFail,
        SpfResult::Neutral => AuthResult::Neutral,
        SpfResult::TempError => AuthResult::TempError,
        SpfResult::PermError => AuthResult::PermError,
        SpfResult::None => AuthResult::None,
    };
    let reason = output.explanation().map(str::to_string);
    AuthCheck { result, domain: Some(domain.to_ascii_lowercase()), reason }
}

/// mail-auth's SPF output for DMARC, from the result we keep.
fn spf_output_of(check: Option<&AuthCheck>, domain: &str) -> SpfOutput {
    let result = match check.map(|c| c.result) {
        Some(AuthResult::Pass) => SpfResult::Pass,
        Some(AuthResult::Fail) => SpfResult::Fail,
        Some(AuthResult::SoftFail) => SpfResult::SoftFail,
        Some(AuthResult::Neutral) => SpfResult::Neutral,
        Some(AuthResult::TempError) => SpfResult::TempError,
        Some(AuthResult::PermError) => SpfResult::PermError,
        _ => SpfResult::None,
    };
    SpfOutput::new(domain.to_string()).with_result(result)
}

fn dkim_check(output: &mail_auth::DkimOutput<'_>) -> AuthCheck {
    let (result, reason) = match output.result() {
        DkimResult::Pass => (AuthResult::Pass, None),
        // mail-auth calls a body that changed after signing "neutral"; RFC 6376 section 6.1.3
        // makes it a permanent failure, which RFC 8601 section 2.7.1 reports as `fail`.
        DkimResult::Neutral(e @ mail_auth::Error::Dkim(mail_auth::dkim::DkimError::FailedBodyHashMatch)) => {
            (AuthResult::Fail, Some(e.to_string()))
        }
        DkimResult::Neutral(e) => (AuthResult::Neutral, Some(e.to_string())),
        DkimResult::Fail(e) => (AuthResult::Fail, Some(e.to_string())),
        DkimResult::PermError(e) => (AuthResult::PermError, Some(e.to_string())),
        DkimResult::TempError(e) => (AuthResult::TempError, Some(e.to_string())),
        DkimResult::None => (AuthResult::None, None),
    };
    AuthCheck { result, domain: output.signature().map(|s| s.d.to_ascii_lowercase()), reason }
}

/// The value of the server's `Authentication-Results` field (RFC 8601 section 2.2): our
/// authserv-id, then each result computed, with its property (`smtp.mailfrom`, `header.d`,
/// ...) and its reason as a comment. One line: the field is folded by nobody.
pub fn header_value(me: &str, connection: &Connection, txn: &Transaction) -> String {
    let mut parts = vec![me.to_string()];
    let mut push = |method: &str, check: &AuthCheck, property: Option<String>| {
        let mut part = format!("{method}={}", check.result);
        if let Some(reason) = &check.reason {
            part.push_str(&format!(" ({})", comment(reason)));
        }
        if let Some(p) = property {
            part.push(' ');
            part.push_str(&p);
        }
        parts.push(part);
    };
    if let Some(iprev) = &connection.iprev {
        push("iprev", iprev, Some(format!("policy.iprev={}", connection.remote.ip())));
    }
    let auth = &txn.authentication;
    if let Some(spf) = &auth.spf_helo
        && let Some(h) = &connection.hello
    {
        push("spf", spf, Some(format!("smtp.helo={}", pvalue(&h.host))));
    }
    if let Some(spf) = &auth.spf_mail_from {
        let from = txn.sender.as_ref().map_or_else(|| "<>".to_string(), |a| pvalue(&a.to_string()));
        push("spf", spf, Some(format!("smtp.mailfrom={from}")));
    }
    for dkim in &auth.dkim {
        push("dkim", dkim, dkim.domain.as_ref().map(|d| format!("header.d={}", pvalue(d))));
    }
    if let Some(dmarc) = &auth.dmarc {
        let policy = match dmarc.policy {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        };
        let from = dmarc.check.domain.as_deref().map_or(String::new(), |d| format!("header.from={} ", pvalue(d)));
        push("dmarc", &dmarc.check, Some(format!("{from}policy.dmarc={policy}")));
    }
    if parts.len() == 1 {
        parts.push("none".into());
    }
    parts.join("; ")
}

/// Text safe inside an RFC 5322 comment: printable ASCII without parentheses or backslashes,
/// at most 200 characters.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_graphic() && !matches!(c, '(' | ')' | '\\') { c } else { ' ' })
        .take(200)
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A property value: a token as it is, anything else quoted (RFC 8601 section 2.2, `pvalue`).
fn pvalue(value: &str) -> String {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.@".contains(c);
    if !value.is_empty() && value.chars().all(token) {
        value.to_string()
    } else {
        let escaped: String = value
            .chars()
            .filter(|c| !c.is_control())
            .flat_map(|c| if matches!(c, '"' | '\\') { vec!['\\', c] } else { vec![c] })
            .collect();
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtpd_smtp::Address;

    #[test]
    fn the_header_lists_every_result_with_its_property() {
        let mut conn = Connection::new("c".into(), "192.0.2.7:4000".parse().unwrap(), "192.0.2.1:25".parse().unwrap());
        conn.iprev = Some(AuthCheck { result: AuthResult::Pass, domain: Some("mail.example".into()), reason: None });
        let sender = Some(Address::new("a", "send.example").unwrap());
        let mut txn = Transaction::new("t".into(), sender, Default::default());
        txn.authentication.spf_mail_from = Some(AuthCheck {
            result: AuthResult::SoftFail,
            domain: Some("send.example".into()),
            reason: Some("transitioning (see) \\ it".into()),
        });
        txn.authentication.dkim =
            vec![AuthCheck { result: AuthResult::Fail, domain: Some("send.example".into()), reason: None }];
        txn.authentication.dmarc = Some(DmarcCheck {
            check: AuthCheck { result: AuthResult::Fail, domain: Some("send.example".into()), reason: None },
            policy: DmarcPolicy::Reject,
        });
        assert_eq!(
            header_value("mx.example", &conn, &txn),
            "mx.example; iprev=pass policy.iprev=192.0.2.7; \
             spf=softfail (transitioning see it) smtp.mailfrom=a@send.example; \
             dkim=fail header.d=send.example; dmarc=fail header.from=send.example policy.dmarc=reject"
        );
        assert_eq!(pvalue("a b\"c"), "\"a b\\\"c\"");
    }

    #[test]
    fn dmarc_turns_on_what_it_needs() {
        let mut c = Checks::default();
        assert!(!c.any());
        c.enable("dmarc").unwrap();
        assert_eq!(c, Checks { iprev: false, spf: true, dkim: true, dmarc: true });
        assert!(c.enable("arc").unwrap_err().contains("unknown check `arc`"));
    }
}

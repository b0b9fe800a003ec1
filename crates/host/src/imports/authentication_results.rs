//! The host side of `wit/authentication-results.wit`: the server's iprev, SPF, DKIM and DMARC
//! results, as the session holds them (`wasmtpd_smtp::authentication`). Reading them needs no
//! grant; they are computed by the server, not on a plugin's behalf.

use wasmtpd_smtp::authentication::{AuthCheck, AuthResult, DmarcPolicy};

use crate::bindings::authentication_results::{self as wit, Check, DmarcCheck};
use crate::state::PluginState;

impl wit::Host for PluginState {
    fn iprev(&mut self) -> Option<Check> {
        self.call.connection.iprev.as_ref().map(check)
    }

    fn spf_helo(&mut self) -> Option<Check> {
        self.call.transaction.as_ref()?.authentication.spf_helo.as_ref().map(check)
    }

    fn spf_mail_from(&mut self) -> Option<Check> {
        self.call.transaction.as_ref()?.authentication.spf_mail_from.as_ref().map(check)
    }

    fn dkim(&mut self) -> Vec<Check> {
        self.call.transaction.as_ref().map_or_else(Vec::new, |t| t.authentication.dkim.iter().map(check).collect())
    }

    fn dmarc(&mut self) -> Option<DmarcCheck> {
        let d = self.call.transaction.as_ref()?.authentication.dmarc.as_ref()?;
        let policy = match d.policy {
            DmarcPolicy::None => wit::DmarcPolicy::None,
            DmarcPolicy::Quarantine => wit::DmarcPolicy::Quarantine,
            DmarcPolicy::Reject => wit::DmarcPolicy::Reject,
        };
        Some(DmarcCheck { check: check(&d.check), policy })
    }
}

fn check(c: &AuthCheck) -> Check {
    let result = match c.result {
        AuthResult::Pass => wit::AuthResult::Pass,
        AuthResult::Fail => wit::AuthResult::Fail,
        AuthResult::SoftFail => wit::AuthResult::Softfail,
        AuthResult::Neutral => wit::AuthResult::Neutral,
        AuthResult::None => wit::AuthResult::None,
        AuthResult::Policy => wit::AuthResult::Policy,
        AuthResult::TempError => wit::AuthResult::Temperror,
        AuthResult::PermError => wit::AuthResult::Permerror,
    };
    Check { result, domain: c.domain.clone(), reason: c.reason.clone() }
}

//! The only `bindgen!` site: Rust types for `wit/`, and the conversions between them and the
//! engine's own types (`wasmtpd_smtp`). Nothing else in the host touches generated types'
//! internals.

use wasmtpd_smtp::command::{EsmtpParam, MailParams};
use wasmtpd_smtp::{Address, EnhancedCode, HookResult, Verdict};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "wasmtpd:plugin/plugin",
    exports: { default: async },
});

pub use wasmtpd::plugin::host;
pub use wasmtpd::plugin::types as wit;

impl From<&Address> for wit::Address {
    fn from(a: &Address) -> Self {
        wit::Address { local_part: a.local_part().to_string(), domain: a.domain().map(str::to_string) }
    }
}

impl From<&EsmtpParam> for wit::EsmtpParam {
    fn from(p: &EsmtpParam) -> Self {
        wit::EsmtpParam { keyword: p.keyword.clone(), value: p.value.clone() }
    }
}

pub fn params(ps: &[EsmtpParam]) -> Vec<wit::EsmtpParam> {
    ps.iter().map(Into::into).collect()
}

/// MAIL FROM's parameters as the client sent them (the engine keeps SIZE/BODY/SMTPUTF8 parsed).
pub fn mail_params(p: &MailParams) -> Vec<wit::EsmtpParam> {
    let mut out = Vec::new();
    if let Some(size) = p.size {
        out.push(wit::EsmtpParam { keyword: "SIZE".into(), value: Some(size.to_string()) });
    }
    if p.body_8bitmime {
        out.push(wit::EsmtpParam { keyword: "BODY".into(), value: Some("8BITMIME".into()) });
    }
    if p.smtputf8 {
        out.push(wit::EsmtpParam { keyword: "SMTPUTF8".into(), value: None });
    }
    out.extend(p.other.iter().map(Into::into));
    out
}

impl From<wit::Verdict> for Verdict {
    fn from(v: wit::Verdict) -> Self {
        match v {
            wit::Verdict::Ok => Verdict::Ok,
            wit::Verdict::Deny => Verdict::Deny,
            wit::Verdict::DenySoft => Verdict::DenySoft,
            wit::Verdict::DenyDisconnect => Verdict::DenyDisconnect,
            wit::Verdict::DenySoftDisconnect => Verdict::DenySoftDisconnect,
            wit::Verdict::Declined => Verdict::Declined,
            wit::Verdict::Done => Verdict::Done,
        }
    }
}

impl From<Verdict> for wit::Verdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Ok => wit::Verdict::Ok,
            Verdict::Deny => wit::Verdict::Deny,
            Verdict::DenySoft => wit::Verdict::DenySoft,
            Verdict::DenyDisconnect => wit::Verdict::DenyDisconnect,
            Verdict::DenySoftDisconnect => wit::Verdict::DenySoftDisconnect,
            Verdict::Declined => wit::Verdict::Declined,
            Verdict::Done => wit::Verdict::Done,
        }
    }
}

/// A plugin's answer, as the engine sees it. An enhanced code that does not parse is dropped
/// (the hook's default is used); the message is cleaned later by `Reply`.
pub fn hook_result(r: wit::HookResult, plugin: &str) -> HookResult {
    let mut out = HookResult::new(r.verdict.into()).from_plugin(plugin);
    out.message = r.message;
    out.enhanced = r.enhanced_code.as_deref().and_then(EnhancedCode::parse);
    out
}

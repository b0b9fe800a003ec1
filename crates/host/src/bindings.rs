//! The only `bindgen!` site: Rust types for `wit/`, and the conversions between them and the
//! engine's own types (`wasmtpd_smtp`). Nothing else in the host touches generated types'
//! internals.
//!
//! Calling a hook is generated from the one hook table (`wasmtpd_smtp::for_each_hook!`):
//! [`HookExports`] finds each hook's interface in a component, and [`HookExports::call`] turns
//! the hook's [`HookArgs`] into the WIT function's arguments (each engine value through
//! [`ToWit`]) and calls it. A hook the table names but the WIT lacks does not compile.

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};
use wasmtpd_smtp::command::{EsmtpParam, MailParams};
use wasmtpd_smtp::{Address, EnhancedCode, Hook, HookArgs, HookResult, Mechanism, Secret, Verdict};

use crate::state::PluginState;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "wasmtpd:plugin/plugin",
    exports: { default: async },
    // A DNS lookup waits on the network: it suspends the plugin's call (its fiber), and the
    // worker thread serves other sessions meanwhile.
    // So does a key-value store's operation (a disk write, a round trip to Redis).
    // And a delivery to a downstream server (a connection, a round trip per command).
    // And an upstream's connect, write and read (a scanner's answer).
    imports: {
        "wasmtpd:plugin/dns": async,
        "wasmtpd:plugin/key-value": async,
        "wasmtpd:plugin/delivery": async,
        "wasmtpd:plugin/upstream": async,
    },
});

use exports::wasmtpd::plugin as hooks;
pub use wasmtpd::plugin::authentication_results;
pub use wasmtpd::plugin::delivery;
pub use wasmtpd::plugin::dns;
pub use wasmtpd::plugin::host;
pub use wasmtpd::plugin::key_value;
pub use wasmtpd::plugin::server_load;
pub use wasmtpd::plugin::types as wit;
pub use wasmtpd::plugin::upstream;

/// The host's side of every hook, made from the rows of `wasmtpd_smtp::for_each_hook!`.
macro_rules! hook_exports {
    ($( $(#[$doc:meta])* $variant:ident $name:ident $call:ident ($args:pat)
        [$($param:ident = $value:expr),*] ),* $(,)?) => {
        /// Which hook interfaces a plugin exports, with the indices to call them.
        pub struct HookExports {
            $( $name: Option<hooks::$name::GuestIndices>, )*
        }

        impl HookExports {
            /// Looks each hook's interface up in the component; absent ones are `None`.
            pub fn discover(pre: &InstancePre<PluginState>) -> HookExports {
                HookExports { $( $name: hooks::$name::GuestIndices::new(pre).ok(), )* }
            }

            pub fn implements(&self, hook: Hook) -> bool {
                match hook { $( Hook::$variant => self.$name.is_some(), )* }
            }

            pub fn hooks(&self) -> Vec<Hook> {
                let mut out = Vec::new();
                $( if self.$name.is_some() { out.push(Hook::$variant); } )*
                out
            }

            /// Calls `hook` on an instance, with its arguments converted to WIT values. Arguments
            /// of another hook's kind are an error (the engine's bug, reported as a fault).
            pub async fn call(
                &self,
                store: &mut Store<PluginState>,
                instance: &Instance,
                hook: Hook,
                args: HookArgs<'_>,
            ) -> wasmtime::Result<wit::HookResult> {
                let not_exported = || wasmtime::format_err!("{} not exported", hook.name());
                match (hook, args) {
                    $( (Hook::$variant, $args) => {
                        let guest = self.$name.as_ref().ok_or_else(not_exported)?.load(&mut *store, instance)?;
                        let ($($param,)*) = ($(ToWit::to_wit($value),)*);
                        guest.$call(&mut *store, $(WitArg::arg(&$param)),*).await
                    } )*
                    _ => Err(wasmtime::format_err!("{} called with the arguments of another hook", hook.name())),
                }
            }
        }
    };
}

wasmtpd_smtp::for_each_hook!(hook_exports);

/// An engine value as a hook's WIT argument (owned where WIT needs a value the engine does
/// not hold in that form, such as an address or a parameter list).
pub trait ToWit {
    type Wit: WitArg;
    fn to_wit(self) -> Self::Wit;
}

/// A converted argument as the generated call takes it (borrowed where it is not `Copy`).
pub trait WitArg {
    type Arg<'a>
    where
        Self: 'a;
    fn arg(&self) -> Self::Arg<'_>;
}

impl<'s> ToWit for &'s str {
    type Wit = &'s str;
    fn to_wit(self) -> &'s str {
        self
    }
}

impl<'s> ToWit for Option<&'s str> {
    type Wit = Option<&'s str>;
    fn to_wit(self) -> Option<&'s str> {
        self
    }
}

impl<'s> ToWit for &'s [String] {
    type Wit = &'s [String];
    fn to_wit(self) -> &'s [String] {
        self
    }
}

impl ToWit for &Address {
    type Wit = wit::Address;
    fn to_wit(self) -> wit::Address {
        self.into()
    }
}

impl ToWit for Option<&Address> {
    type Wit = Option<wit::Address>;
    fn to_wit(self) -> Option<wit::Address> {
        self.map(wit::Address::from)
    }
}

impl ToWit for &MailParams {
    type Wit = Vec<wit::EsmtpParam>;
    fn to_wit(self) -> Vec<wit::EsmtpParam> {
        mail_params(self)
    }
}

impl ToWit for &[EsmtpParam] {
    type Wit = Vec<wit::EsmtpParam>;
    fn to_wit(self) -> Vec<wit::EsmtpParam> {
        params(self)
    }
}

/// A hook is named by its qpsmtpd name (`data_post`).
impl ToWit for Hook {
    type Wit = &'static str;
    fn to_wit(self) -> &'static str {
        self.name()
    }
}

impl ToWit for Verdict {
    type Wit = wit::Verdict;
    fn to_wit(self) -> wit::Verdict {
        self.into()
    }
}

/// A mechanism is named by its SASL name (`PLAIN`).
impl ToWit for Mechanism {
    type Wit = &'static str;
    fn to_wit(self) -> &'static str {
        self.name()
    }
}

/// The one place a password leaves its [`Secret`]: to the plugin that checks it.
impl<'s> ToWit for &'s Secret {
    type Wit = &'s str;
    fn to_wit(self) -> &'s str {
        self.expose()
    }
}

impl WitArg for &str {
    type Arg<'a>
        = &'a str
    where
        Self: 'a;
    fn arg(&self) -> &str {
        self
    }
}

impl WitArg for Option<&str> {
    type Arg<'a>
        = Option<&'a str>
    where
        Self: 'a;
    fn arg(&self) -> Option<&str> {
        *self
    }
}

impl WitArg for &[String] {
    type Arg<'a>
        = &'a [String]
    where
        Self: 'a;
    fn arg(&self) -> &[String] {
        self
    }
}

impl WitArg for wit::Address {
    type Arg<'a> = &'a wit::Address;
    fn arg(&self) -> &wit::Address {
        self
    }
}

impl WitArg for Option<wit::Address> {
    type Arg<'a> = Option<&'a wit::Address>;
    fn arg(&self) -> Option<&wit::Address> {
        self.as_ref()
    }
}

impl WitArg for Vec<wit::EsmtpParam> {
    type Arg<'a> = &'a [wit::EsmtpParam];
    fn arg(&self) -> &[wit::EsmtpParam] {
        self
    }
}

impl WitArg for wit::Verdict {
    type Arg<'a> = wit::Verdict;
    fn arg(&self) -> wit::Verdict {
        *self
    }
}

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
    if p.binarymime {
        out.push(wit::EsmtpParam { keyword: "BODY".into(), value: Some("BINARYMIME".into()) });
    }
    if p.smtputf8 {
        out.push(wit::EsmtpParam { keyword: "SMTPUTF8".into(), value: None });
    }
    // DSN's (RFC 3461), as a queue passes them on: the envelope id xtext-encoded again.
    if let Some(ret) = p.dsn.ret {
        let value = match ret {
            wasmtpd_smtp::dsn::Ret::Full => "FULL",
            wasmtpd_smtp::dsn::Ret::Hdrs => "HDRS",
        };
        out.push(wit::EsmtpParam { keyword: "RET".into(), value: Some(value.into()) });
    }
    if let Some(envid) = &p.dsn.envid {
        out.push(wit::EsmtpParam { keyword: "ENVID".into(), value: Some(wasmtpd_smtp::xtext::encode(envid)) });
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

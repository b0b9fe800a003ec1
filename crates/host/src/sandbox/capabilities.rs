//! Which of `wit/`'s interfaces reach beyond the plugin's own transaction, so that importing
//! one needs a grant, and whether a plugin that imports one was granted it.
//!
//! A component's imports are what it can ask for. The host interface and the server's
//! authentication results and the server's load are every plugin's; DNS, key-value stores,
//! delivery to downstreams and upstream connections are capabilities the operator grants in
//! `config/sandbox`. A plugin that imports a capability without its grant
//! would be refused at its first call, in production; it is refused at start-up instead, with
//! the line that would grant it: deny by default, made visible.

use super::SandboxSettings;

/// The package every interface of ours is in, with its version.
pub const PACKAGE: &str = "wasmtpd:plugin";

/// One capability interface: its name in `wit/`, whether `settings` grant it, and the
/// `config/sandbox` line (for plugin `{}`) that would.
#[derive(Debug)]
pub struct Capability {
    pub interface: &'static str,
    pub granted: fn(&SandboxSettings) -> bool,
    /// What to write in `config/sandbox`, with `{}` for the plugin's instance name.
    pub grant_line: &'static str,
    /// What the grant gives, for the message.
    pub what: &'static str,
}

/// Every interface of ours that needs a grant. Interfaces not listed here (`host`,
/// `authentication-results`, `server-load`, the hook exports' types) are every plugin's.
pub const CAPABILITIES: &[Capability] = &[
    Capability {
        interface: "dns",
        granted: |s| !matches!(s.dns, super::DnsGrant::Nothing),
        grant_line: "{} dns any",
        what: "DNS lookups (or `dns ZONE...` for names under those zones only)",
    },
    Capability {
        interface: "key-value",
        granted: |s| !s.stores.is_empty(),
        grant_line: "{} store local",
        what: "a key-value store of config/stores (`local` is the embedded default)",
    },
    Capability {
        interface: "delivery",
        granted: |s| !s.downstreams.is_empty(),
        grant_line: "{} downstream NAME",
        what: "delivery to a downstream of config/downstreams",
    },
    Capability {
        interface: "upstream",
        granted: |s| !s.upstreams.is_empty(),
        grant_line: "{} upstream NAME",
        what: "connections to an upstream of config/upstreams",
    },
];

/// A capability a plugin imports without its grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "plugin `{plugin}` imports {import}, which needs a grant it does not have: {what}; add `{line}` to config/sandbox, or remove the import from the plugin"
)]
pub struct UngrantedImport {
    pub plugin: String,
    /// The import as the component names it (`wasmtpd:plugin/dns@0.1.0`).
    pub import: String,
    pub what: &'static str,
    /// The `config/sandbox` line that would grant it.
    pub line: String,
}

/// The interface of ours a name is, without package and version: `wasmtpd:plugin/dns@0.1.0`
/// is `dns`; another package's name is `None`.
pub fn interface_of(name: &str) -> Option<&str> {
    name.strip_prefix(PACKAGE)?.strip_prefix('/')?.split('@').next()
}

/// The capability an import name is, if it is one: `wasmtpd:plugin/dns@0.1.0` is `dns`.
pub fn capability(import: &str) -> Option<&'static Capability> {
    let interface = interface_of(import)?;
    CAPABILITIES.iter().find(|c| c.interface == interface)
}

/// Checks a plugin's imports against its grants: the first capability imported without a
/// grant is an error.
pub fn check_imports<'a>(
    plugin: &str,
    imports: impl IntoIterator<Item = &'a str>,
    settings: &SandboxSettings,
) -> Result<(), UngrantedImport> {
    for import in imports {
        if let Some(c) = capability(import)
            && !(c.granted)(settings)
        {
            return Err(UngrantedImport {
                plugin: plugin.to_string(),
                import: import.to_string(),
                what: c.what,
                line: c.grant_line.replace("{}", plugin),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{DnsGrant, Origin, StoreGrant};

    #[test]
    fn names_are_parsed_by_package_and_interface() {
        assert_eq!(capability("wasmtpd:plugin/dns@0.1.0").map(|c| c.interface), Some("dns"));
        assert_eq!(capability("wasmtpd:plugin/key-value@0.1.0").map(|c| c.interface), Some("key-value"));
        assert!(capability("wasmtpd:plugin/host@0.1.0").is_none());
        assert!(capability("wasmtpd:plugin/authentication-results@0.1.0").is_none());
        assert!(capability("other:plugin/dns@0.1.0").is_none());
        assert!(capability("wasi:sockets/ip-name-lookup@0.2.6").is_none());
    }

    #[test]
    fn an_ungranted_capability_names_the_line_that_would_grant_it() {
        let none = SandboxSettings::default();
        let err = check_imports("dnsbl", ["wasmtpd:plugin/host@0.1.0", "wasmtpd:plugin/dns@0.1.0"], &none).unwrap_err();
        assert_eq!(err.import, "wasmtpd:plugin/dns@0.1.0");
        assert_eq!(err.line, "dnsbl dns any");
        assert!(err.to_string().contains("add `dnsbl dns any` to config/sandbox"), "{err}");
        let err = check_imports("limit:2", ["wasmtpd:plugin/key-value@0.1.0"], &none).unwrap_err();
        assert_eq!(err.line, "limit:2 store local");
    }

    #[test]
    fn granted_capabilities_and_free_interfaces_pass() {
        let mut granted = SandboxSettings { dns: DnsGrant::Zones(vec!["zen.example".into()]), ..Default::default() };
        granted.stores.push(StoreGrant {
            store: "local".into(),
            shared: None,
            origin: Origin { file: "sandbox".into(), line: 1 },
        });
        let imports = ["wasmtpd:plugin/dns@0.1.0", "wasmtpd:plugin/key-value@0.1.0", "wasmtpd:plugin/host@0.1.0"];
        assert_eq!(check_imports("p", imports, &granted), Ok(()));
        assert_eq!(
            check_imports("p", ["wasmtpd:plugin/authentication-results@0.1.0"], &SandboxSettings::default()),
            Ok(())
        );
    }
}

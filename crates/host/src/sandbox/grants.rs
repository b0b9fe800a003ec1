//! What the operator grants a plugin beyond nothing, and which grants the host refuses: host
//! directories (`grant-dir`), the [`Rights`] to loosen policy (`rights`), DNS ([`DnsGrant`],
//! `dns`), key-value stores ([`StoreGrant`], `store`) and downstreams to deliver to
//! ([`DownstreamGrant`], `downstream`). (The config files
//! `dns`), key-value stores ([`StoreGrant`], `store`) and named upstreams ([`UpstreamGrant`],
//! `upstream`). (The config files
//! it may read are named in [`SandboxSettings::config_files`](super::SandboxSettings) and
//! checked by `state::ConfigGrant`.)
//!
//! A granted directory may not be, contain or lie inside a directory the server itself keeps
//! (the server names them: the spool with the plugins' temporary directories, the plugin cache,
//! the plugins, the config): a plugin could otherwise read or change other connections'
//! messages, the machine code the server runs, or its own sandbox ([`grant_dirs`]).

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a setting was written: a configuration file (as it is named in messages) and a line of
/// it, from 1. Shown as `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A host directory granted to a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
    /// Where it was granted, for error messages.
    pub origin: Origin,
}

/// The server's own directories, which no grant may overlap, each with what it is (for the
/// error), resolved (symlinks followed) once.
pub struct ReservedDirs(Vec<(&'static str, PathBuf)>);

impl ReservedDirs {
    /// Those of `dirs` that exist, resolved; one that does not exist yet (the temporary
    /// directories' root is made on first use) is resolved through its parent.
    pub fn new(dirs: impl IntoIterator<Item = (&'static str, PathBuf)>) -> ReservedDirs {
        ReservedDirs(dirs.into_iter().filter_map(|(what, p)| Some((what, resolve(&p)?))).collect())
    }
}

fn resolve(path: &Path) -> Option<PathBuf> {
    path.canonicalize().ok().or_else(|| Some(path.parent()?.canonicalize().ok()?.join(path.file_name()?)))
}

/// A `grant-dir` the host does not give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {what}")]
pub struct GrantRefused {
    pub origin: Origin,
    pub what: String,
}

/// Makes `grants` ready to give: each host directory taken relative to `state_dir` and created
/// if missing, and refused if it is, contains or lies inside one of `reserved`.
pub fn grant_dirs(grants: &mut [DirGrant], state_dir: &Path, reserved: &ReservedDirs) -> Result<(), GrantRefused> {
    for grant in grants {
        grant.host = state_dir.join(&grant.host);
        let refused = |what: String| GrantRefused { origin: grant.origin.clone(), what };
        std::fs::create_dir_all(&grant.host)
            .map_err(|e| refused(format!("grant-dir {}: {e}", grant.host.display())))?;
        check_grant(grant, reserved).map_err(refused)?;
    }
    Ok(())
}

fn check_grant(grant: &DirGrant, reserved: &ReservedDirs) -> Result<(), String> {
    let host = grant.host.canonicalize().map_err(|e| format!("grant-dir {}: {e}", grant.host.display()))?;
    for (what, dir) in &reserved.0 {
        if host.starts_with(dir) || dir.starts_with(&host) {
            return Err(format!(
                "grant-dir {} overlaps {what} ({}): a plugin may not reach the server's own files",
                grant.host.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Something a plugin may do that loosens policy, granted per plugin with `rights` in
/// `config/sandbox`. Without the right, the call fails or the verdict counts as DECLINED (see
/// `chain.rs`), and a warning names the plugin, the hook and the right: plugins can only make
/// things stricter unless the operator says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// `set-relay-client(true)`: the client may send anywhere.
    RelayClient,
    /// OK at `auth`, `auth_plain`, `auth_login`: a successful AUTH makes the client a relay
    /// client.
    Authenticate,
    /// OK at `rcpt`: the recipient is accepted.
    AcceptRecipient,
    /// OK or DONE at `queue`, and DONE at `data_post`: the client gets 250 for its message.
    Queue,
}

impl Right {
    pub const ALL: [Right; 4] = [Right::RelayClient, Right::Authenticate, Right::AcceptRecipient, Right::Queue];

    /// The name in `config/sandbox`.
    pub fn name(self) -> &'static str {
        match self {
            Right::RelayClient => "relay-client",
            Right::Authenticate => "authenticate",
            Right::AcceptRecipient => "accept-recipient",
            Right::Queue => "queue",
        }
    }

    pub fn parse(name: &str) -> Option<Right> {
        Right::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// The rights a plugin was granted (none by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rights(u8);

impl Rights {
    pub fn grant(&mut self, right: Right) {
        self.0 |= 1 << right as u8;
    }

    pub fn has(self, right: Right) -> bool {
        self.0 & (1 << right as u8) != 0
    }
}

/// The names a plugin may look up in DNS (`dns` in `config/sandbox`). A DNS query carries its
/// name to whoever serves the zone, so a grant limited to zones keeps a plugin from sending
/// data anywhere else that way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DnsGrant {
    /// No DNS at all (the default).
    #[default]
    Nothing,
    /// Any name (`dns any`).
    Any,
    /// Only names at or under these zones (`dns zen.example dbl.example`), lower case, without
    /// the final dot.
    Zones(Vec<String>),
}

impl DnsGrant {
    /// `dns` followed by `values`: `any`, `none`, or zones.
    pub fn parse(values: &[&str]) -> Result<DnsGrant, String> {
        match values {
            [] => Err("dns takes `any`, `none`, or one or more zones".into()),
            ["any"] => Ok(DnsGrant::Any),
            ["none"] => Ok(DnsGrant::Nothing),
            zones => {
                let mut granted = Vec::new();
                for zone in zones {
                    let z = zone.trim_end_matches('.').to_ascii_lowercase();
                    let label_ok = |l: &str| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    };
                    if z.is_empty() || z.len() > 253 || !z.split('.').all(label_ok) {
                        return Err(format!("dns: `{zone}` is not a zone name (or `any`, or `none`)"));
                    }
                    granted.push(z);
                }
                Ok(DnsGrant::Zones(granted))
            }
        }
    }

    /// Whether the plugin may look up the name of these `labels` (as the query carries them,
    /// leftmost first, without the root; case does not matter). Labels, not text: the text
    /// `secret\.zen.example` ends in `.zen.example` but is the label `secret.zen` in the zone
    /// `example`, and its query goes to example's name servers.
    pub fn allows(&self, labels: &[&[u8]]) -> bool {
        match self {
            DnsGrant::Nothing => false,
            DnsGrant::Any => true,
            DnsGrant::Zones(zones) => zones.iter().any(|zone| {
                let zone: Vec<&[u8]> = zone.split('.').map(str::as_bytes).collect();
                labels.len() >= zone.len()
                    && labels[labels.len() - zone.len()..].iter().zip(&zone).all(|(l, z)| l.eq_ignore_ascii_case(z))
            }),
        }
    }
}

/// A downstream granted to a plugin (`downstream NAME` in `config/sandbox`): a server of
/// `config/downstreams` it may deliver the current message to (`wit/delivery.wit`). None by
/// default; the plugin names the downstream, never an address, and never sees its
/// credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamGrant {
    /// The downstream's name in `config/downstreams`.
    pub downstream: String,
    /// Where it was granted, for error messages.
    pub origin: Origin,
}

impl DownstreamGrant {
    /// `downstream` followed by `values`: one or more names, or `none` (`Ok(vec![])`: every
    /// downstream withdrawn).
    pub fn parse(values: &[&str], origin: &Origin) -> Result<Vec<DownstreamGrant>, String> {
        match values {
            [] => Err("downstream takes one or more downstream names (of config/downstreams), or none".into()),
            ["none"] => Ok(Vec::new()),
            names => names
                .iter()
                .map(|n| {
                    crate::downstream::check_name(n)?;
                    Ok(DownstreamGrant { downstream: n.to_string(), origin: origin.clone() })
                })
                .collect(),
        }
    }
}

/// A store granted to a plugin (`store NAME` in `config/sandbox`), and the namespace its keys
/// are in: its own (named after its instance name), or one the operator shares between
/// plugins on purpose (`store NAME shared NAMESPACE`). A plugin reaches no other namespace: the
/// host puts the namespace, never the plugin, in front of every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreGrant {
    /// The store's name in `config/stores`.
    pub store: String,
    /// The shared namespace; `None`: the plugin's own.
    pub shared: Option<String>,
    /// Where it was granted, for error messages.
    pub origin: Origin,
}

impl StoreGrant {
    /// `store` followed by `values`: `NAME`, `NAME shared NAMESPACE`, or `none` (`Ok(None)`:
    /// every store withdrawn).
    pub fn parse(values: &[&str], origin: &Origin) -> Result<Option<StoreGrant>, String> {
        let (store, shared) = match values {
            ["none"] => return Ok(None),
            [store] => (store, None),
            [store, "shared", namespace] => {
                crate::store::check_namespace(namespace).map_err(|e| format!("store {store} shared: {e}"))?;
                (store, Some(namespace.to_string()))
            }
            _ => return Err("store takes NAME, NAME shared NAMESPACE, or none".into()),
        };
        crate::store::check_store_name(store)?;
        Ok(Some(StoreGrant { store: store.to_string(), shared, origin: origin.clone() }))
    }

    /// The namespace of the keys of plugin `instance` in this store: `plugin:INSTANCE`, or
    /// `shared:NAMESPACE` (the prefixes keep a plugin's namespace and a shared one apart,
    /// whatever their names).
    pub fn namespace(&self, instance: &str) -> String {
        match &self.shared {
            Some(shared) => format!("shared:{shared}"),
            None => format!("plugin:{instance}"),
        }
    }
}

/// An upstream of `config/upstreams` granted to a plugin (`upstream NAME` in `config/sandbox`):
/// the plugin may connect to it by that name, and to nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamGrant {
    /// The upstream's name in `config/upstreams`.
    pub upstream: String,
    /// Where it was granted, for error messages.
    pub origin: Origin,
}

impl UpstreamGrant {
    /// `upstream` followed by `values`: `NAME...`, or `none` (`Ok(None)`: every upstream
    /// withdrawn).
    pub fn parse(values: &[&str], origin: &Origin) -> Result<Option<Vec<UpstreamGrant>>, String> {
        match values {
            [] => Err("upstream takes one or more NAMEs of config/upstreams, or none".into()),
            ["none"] => Ok(None),
            names => names
                .iter()
                .map(|n| {
                    crate::upstream::check_upstream_name(n)?;
                    Ok(UpstreamGrant { upstream: n.to_string(), origin: origin.clone() })
                })
                .collect::<Result<Vec<_>, String>>()
                .map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(host: &str, line: usize) -> DirGrant {
        let origin = Origin { file: "sandbox".into(), line };
        DirGrant { host: host.into(), guest: "/g".into(), writable: true, origin }
    }

    #[test]
    fn a_grant_may_not_overlap_the_servers_own_directories() {
        let root = std::env::temp_dir().join(format!("wasmtpd-grants-test-{}", std::process::id()));
        std::fs::create_dir_all(root.join("spool")).unwrap();
        let reserved = ReservedDirs::new([
            ("the spool", root.join("spool")),
            ("the plugins' temporary directories", root.join("spool/plugins")),
            ("nothing (it does not exist)", root.join("nowhere/at/all")),
        ]);
        assert_eq!(reserved.0.len(), 2, "the root of temp directories resolves through its parent");
        let mut fine = [grant("maildir", 3)];
        grant_dirs(&mut fine, &root, &reserved).unwrap();
        assert_eq!(fine[0].host, root.join("maildir"));
        assert!(fine[0].host.is_dir(), "made");
        for (host, what) in [("spool/mine", "overlaps the spool"), (".", "overlaps the spool")] {
            let e = grant_dirs(&mut [grant(host, 7)], &root, &reserved).unwrap_err();
            assert_eq!(e.origin, Origin { file: "sandbox".into(), line: 7 });
            assert!(e.what.contains(what) && e.what.contains("a plugin may not reach"), "{e}");
            assert!(e.to_string().starts_with("sandbox:7: grant-dir "), "{e}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_dns_grant_of_zones_allows_only_names_under_them() {
        let labels = |name: &'static str| -> Vec<&'static [u8]> {
            name.split('.').filter(|l| !l.is_empty()).map(str::as_bytes).collect()
        };
        let grant = DnsGrant::parse(&["zen.Example.", "dbl.example"]).unwrap();
        for name in ["zen.example", "2.0.0.127.zen.example", "x.DBL.example."] {
            assert!(grant.allows(&labels(name)), "{name}");
        }
        for name in ["example", "xzen.example", "zen.example.evil", "data.exfil.example", ""] {
            assert!(!grant.allows(&labels(name)), "{name}");
        }
        // `secret\.zen.example`: two labels, in the zone `example`.
        assert!(!grant.allows(&[b"secret.zen", b"example"]));
        assert!(grant.allows(&[b"a.b", b"zen", b"example"]), "a dot inside a label below the zone is its business");
        assert!(DnsGrant::Any.allows(&labels("anything.example")));
        assert!(!DnsGrant::default().allows(&labels("zen.example")));
        assert_eq!(DnsGrant::parse(&["none"]), Ok(DnsGrant::Nothing));
        for bad in [&[][..], &["a..b"], &["zen example"], &["127.0.0.1:53"]] {
            assert!(DnsGrant::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_downstream_grant_names_downstreams() {
        let origin = Origin { file: "sandbox".into(), line: 9 };
        let g = DownstreamGrant::parse(&["postfix", "dovecot-lmtp"], &origin).unwrap();
        assert_eq!(g.iter().map(|g| g.downstream.as_str()).collect::<Vec<_>>(), ["postfix", "dovecot-lmtp"]);
        assert_eq!(DownstreamGrant::parse(&["none"], &origin), Ok(vec![]));
        for bad in [&[][..], &["127.0.0.1:25"], &["Postfix"], &["a/b"]] {
            assert!(DownstreamGrant::parse(bad, &origin).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_store_grant_names_its_namespace() {
        let origin = Origin { file: "sandbox".into(), line: 4 };
        let own = StoreGrant::parse(&["main"], &origin).unwrap().unwrap();
        assert_eq!(own.namespace("greylisting"), "plugin:greylisting");
        assert_eq!(own.namespace("rcpt_ok:2"), "plugin:rcpt_ok:2");
        let shared = StoreGrant::parse(&["main", "shared", "reputation"], &origin).unwrap().unwrap();
        assert_eq!(shared.namespace("karma"), "shared:reputation");
        assert_eq!(shared.origin, origin);
        assert_eq!(StoreGrant::parse(&["none"], &origin), Ok(None));
        for bad in [&[][..], &["Main"], &["main", "shared"], &["main", "shared", "a{b}"], &["main", "private", "x"]] {
            assert!(StoreGrant::parse(bad, &origin).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_upstream_grant_is_a_name_never_an_address() {
        let origin = Origin { file: "sandbox".into(), line: 2 };
        let grants = UpstreamGrant::parse(&["clamd", "spamd"], &origin).unwrap().unwrap();
        assert_eq!(grants.iter().map(|g| g.upstream.as_str()).collect::<Vec<_>>(), ["clamd", "spamd"]);
        assert_eq!(UpstreamGrant::parse(&["none"], &origin), Ok(None));
        for bad in [&[][..], &["127.0.0.1:3310"], &["/run/clamav/clamd.ctl"], &["Clamd"]] {
            assert!(UpstreamGrant::parse(bad, &origin).is_err(), "{bad:?}");
        }
    }
}

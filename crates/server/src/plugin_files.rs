//! Which config files each plugin may read with `host.config(name)`.
//!
//! A plugin reads only the files meant for it (everything else reads as missing, and the refusal
//! is logged; see `wasmtpd_host::state::ConfigGrant`):
//! - the files its documentation names, for the plugins that ship in `plugins-wasm/`
//!   ([`DOCUMENTED`], the one table of them);
//! - the file named like its last path segment (`hosts_allow`; `maildir` for `queue/maildir`),
//!   unless that is one of the server's files;
//! - the files the operator lists with `config-file` in `config/sandbox`.
//!
//! Never the server's own files ([`crate::config::SERVER_FILES`]: `tls`, `sandbox`, ...), nor
//! anything with a `/` (the private keys under `certs/`): `config-file` refuses them.

use crate::config::{PluginLine, SERVER_FILES};

/// The files each standard plugin reads, by plugin name (grep `host::config(` in
/// `plugins-wasm/` when a plugin changes). Kept in the README's plugin table too.
pub const DOCUMENTED: &[(&str, &[&str])] = &[
    ("rcpt_ok", &["rcpthosts", "morercpthosts", "me"]),
    ("check_badmailfrom", &["badmailfrom"]),
    ("check_badrcptto", &["badrcptto"]),
    ("check_spamhelo", &["badhelo"]),
    ("hosts_allow", &["hosts_allow"]),
    ("auth_flat_file", &["auth_users"]),
    ("dnsbl", &["dnsbl_zones", "dnsbl_allow", "dnsbl_rejectmsg"]),
    ("rhsbl", &["rhsbl_zones"]),
    ("resolvable_fromhost", &["invalid_resolvable_fromhost"]),
    ("helo", &["badhelo", "me"]),
    ("relay", &["relayclients", "morerelayclients", "norelayclients"]),
];

/// Files a plugin never gets by its name alone: the server's, and `auth_users` (the password
/// hashes go to `auth_flat_file`, or to a plugin the operator names with `config-file`).
fn never_by_name(file: &str) -> bool {
    SERVER_FILES.contains(&file) || file == "auth_users"
}

/// Every config file the plugin of `line` may read.
pub fn granted(line: &PluginLine) -> Vec<String> {
    let mut files: Vec<String> = DOCUMENTED
        .iter()
        .filter(|(plugin, _)| *plugin == line.name)
        .flat_map(|(_, files)| files.iter().map(|f| f.to_string()))
        .collect();
    let own = line.name.rsplit('/').next().unwrap_or_default();
    if !never_by_name(own) {
        files.push(own.to_string());
    }
    files.extend(line.sandbox.config_files.iter().cloned());
    files.sort();
    files.dedup();
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtpd_host::sandbox::SandboxSettings;

    fn line(name: &str, extra: &[&str]) -> PluginLine {
        let sandbox =
            SandboxSettings { config_files: extra.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        PluginLine {
            name: name.into(),
            instance: format!("{name}:2"),
            args: vec![],
            pin: None,
            origin: crate::config::Origin { file: "plugins".into(), line: 1 },
            sandbox,
        }
    }

    #[test]
    fn own_documented_and_granted_files() {
        assert_eq!(granted(&line("rcpt_ok", &[])), ["me", "morercpthosts", "rcpt_ok", "rcpthosts"]);
        assert_eq!(granted(&line("hosts_allow", &[])), ["hosts_allow"]);
        assert_eq!(granted(&line("auth_flat_file", &[])), ["auth_flat_file", "auth_users"]);
        assert_eq!(granted(&line("queue/maildir", &[])), ["maildir"]);
        assert_eq!(granted(&line("spam/filter", &["spamrules", "whitelist"])), ["filter", "spamrules", "whitelist"]);
        // A plugin named like a server file does not get it.
        assert_eq!(granted(&line("x/tls", &[])), Vec::<String>::new());
        assert_eq!(granted(&line("sandbox", &[])), Vec::<String>::new());
        assert_eq!(granted(&line("evil/auth_users", &[])), Vec::<String>::new());
    }

    /// Every `host::config("NAME")` of a standard plugin is in the table (or the plugin's own
    /// name), so none of them loses a file it reads.
    #[test]
    fn the_table_covers_every_standard_plugin() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins-wasm");
        for (plugin, files) in DOCUMENTED {
            let src = std::fs::read_to_string(root.join(plugin).join("src/lib.rs")).unwrap();
            for file in *files {
                assert!(src.contains(&format!("\"{file}\"")), "{plugin} does not read {file}");
            }
        }
        for entry in std::fs::read_dir(&root).unwrap().flatten() {
            let src = entry.path().join("src/lib.rs");
            let Ok(text) = std::fs::read_to_string(&src) else { continue };
            let name = entry.file_name().to_string_lossy().to_string();
            for call in text.split("host::config(\"").skip(1) {
                let file = call.split('"').next().unwrap();
                assert!(granted(&line(&name, &[])).iter().any(|f| f == file), "{name} reads {file}, not in DOCUMENTED");
            }
        }
    }
}

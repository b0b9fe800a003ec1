//! BUILT-IN FALLBACK PLUGINS, used until the WebAssembly plugin host lands.
//!
//! Two plugins of the standard chain exist here in Rust, so that the server can accept mail on
//! its default configuration:
//! - `rcpt_ok`: OK for recipients whose domain is in `config/rcpthosts` (a leading dot matches
//!   subdomains) and for the bare `<postmaster>`; DENY "Relaying denied" otherwise. Relay clients
//!   are let through.
//! - `queue/maildir DIR`: delivers to a maildir, durably: the message is written to `tmp/`,
//!   fsynced, renamed into `new/`, and the directory is fsynced before OK is returned.
//!
//! Any other name in `config/plugins` stops start-up. Once WebAssembly plugins exist, these
//! are replaced by components built from `plugins-wasm/`.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtpd_smtp::{Hook, HookArgs, HookContext, HookResult, HookRunner, Verdict};

use crate::config::{Config, ConfigError, PluginLine};

#[derive(Debug)]
enum Builtin {
    RcptOk {
        hosts: HashSet<String>,
        instance: String,
    },
    QueueMaildir {
        dir: PathBuf,
        instance: String,
    },
}

/// The chain of built-in plugins.
#[derive(Debug)]
pub struct Builtins {
    chain: Vec<Builtin>,
    me: String,
}

impl Builtins {
    pub fn from_config(config: &Config, state_dir: &Path) -> Result<Builtins, ConfigError> {
        let mut chain = Vec::new();
        for line in &config.plugins {
            chain.push(builtin(config, line, state_dir)?);
        }
        Ok(Builtins {
            chain,
            me: config.me.clone(),
        })
    }
}

fn builtin(config: &Config, line: &PluginLine, state_dir: &Path) -> Result<Builtin, ConfigError> {
    let err = |what: String| {
        let (path, n) = line
            .origin
            .rsplit_once(':')
            .map_or((line.origin.clone(), None), |(p, n)| {
                (p.to_string(), n.parse().ok())
            });
        ConfigError {
            path,
            line: n,
            what,
        }
    };
    match line.name.as_str() {
        "rcpt_ok" => {
            let mut hosts = HashSet::new();
            for file in ["rcpthosts", "morercpthosts"] {
                for (_, h) in config.source.lines(file)?.unwrap_or_default() {
                    hosts.insert(h.to_ascii_lowercase());
                }
            }
            Ok(Builtin::RcptOk {
                hosts,
                instance: line.instance.clone(),
            })
        }
        "queue/maildir" => {
            let [dir] = line.args.as_slice() else {
                return Err(err(
                    "queue/maildir takes one argument: the maildir's path".into()
                ));
            };
            let dir = state_dir.join(dir);
            for sub in ["tmp", "new", "cur"] {
                std::fs::create_dir_all(dir.join(sub))
                    .map_err(|e| err(format!("{}: {e}", dir.join(sub).display())))?;
            }
            Ok(Builtin::QueueMaildir {
                dir,
                instance: line.instance.clone(),
            })
        }
        other => Err(err(format!(
            "no built-in plugin named `{other}`: only `rcpt_ok` and `queue/maildir` exist until the WebAssembly plugin host lands"
        ))),
    }
}

impl HookRunner for Builtins {
    type Scope = ();

    fn open_scope(&self) {}

    async fn run(
        &self,
        _: &mut (),
        hook: Hook,
        args: HookArgs<'_>,
        ctx: HookContext<'_>,
    ) -> HookResult {
        for plugin in &self.chain {
            let result = match (plugin, hook, args) {
                (Builtin::RcptOk { hosts, instance }, Hook::Rcpt, HookArgs::Rcpt { to, .. }) => {
                    let ok = ctx.connection.relay_client
                        || match to.domain() {
                            None => true, // <postmaster>
                            Some(d) => domain_listed(hosts, d),
                        };
                    if ok {
                        HookResult::new(Verdict::Ok).from_plugin(instance)
                    } else {
                        HookResult::new(Verdict::Deny)
                            .with_message("Relaying denied")
                            .from_plugin(instance)
                    }
                }
                (Builtin::QueueMaildir { dir, instance }, Hook::Queue, _) => {
                    let Some(txn) = ctx.transaction.as_deref() else {
                        continue;
                    };
                    let Some(msg) = &txn.message else { continue };
                    let (dir, src, me) = (dir.clone(), msg.path.clone(), self.me.clone());
                    let return_path = txn.sender_path();
                    match tokio::task::spawn_blocking(move || {
                        deliver_maildir(&dir, &src, &me, &return_path)
                    })
                    .await
                    {
                        Ok(Ok(name)) => HookResult::new(Verdict::Ok)
                            .with_message(format!("Queued as {name}"))
                            .from_plugin(instance),
                        Ok(Err(e)) => {
                            tracing::error!(plugin = %instance, error = %e, "maildir delivery failed");
                            let verdict = HookResult::new(Verdict::DenySoft).from_plugin(instance);
                            if e.raw_os_error() == Some(28) {
                                verdict.with_message("Insufficient system storage, try again later")
                            } else {
                                verdict.with_message("Local error in delivery, try again later")
                            }
                        }
                        Err(e) => {
                            tracing::error!(plugin = %instance, error = %e, "maildir delivery panicked");
                            HookResult::new(Verdict::DenySoft).from_plugin(instance)
                        }
                    }
                }
                _ => continue,
            };
            return result;
        }
        HookResult::declined()
    }
}

fn domain_listed(hosts: &HashSet<String>, domain: &str) -> bool {
    let d = domain.to_ascii_lowercase();
    if hosts.contains(&d) {
        return true;
    }
    // `.example.com` in rcpthosts matches every subdomain of example.com.
    d.char_indices()
        .filter(|(_, c)| *c == '.')
        .any(|(i, _)| hosts.contains(&d[i..]))
}

/// Maildir delivery (the maildir(5) protocol), durable before it returns.
fn deliver_maildir(dir: &Path, src: &Path, me: &str, return_path: &str) -> std::io::Result<String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        me.replace(['/', ':'], "_")
    );
    let tmp = dir.join("tmp").join(&name);
    let result = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        out.write_all(format!("Return-Path: {return_path}\r\n").as_bytes())?;
        let mut input = std::fs::File::open(src)?;
        std::io::copy(&mut input, &mut out)?;
        out.sync_all()?;
        drop(out);
        let new = dir.join("new").join(&name);
        std::fs::rename(&tmp, &new)?;
        std::fs::File::open(dir.join("new"))?.sync_all()?;
        Ok(name)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcpthosts_matching() {
        let hosts: HashSet<String> = ["localhost", ".example.org"].map(String::from).into();
        assert!(domain_listed(&hosts, "LOCALHOST"));
        assert!(domain_listed(&hosts, "mail.example.org"));
        assert!(domain_listed(&hosts, "a.b.example.org"));
        assert!(!domain_listed(&hosts, "example.org"));
        assert!(!domain_listed(&hosts, "evil-localhost"));
    }
}

//! What plugins cost, through the real chain (`PluginHost` as the server runs it), with the
//! components built by `cargo xtask build-plugins` from their precompiled cache, no sockets:
//!
//! - `hook_call/bare`: one hook call into an instance that exists already, to a plugin that
//!   answers without calling the host (`testing/nothing`): the component boundary alone.
//! - `hook_call/rcpt_ok`: the same for `rcpt_ok`, which asks the host for the connection and
//!   two config files.
//! - `new_instance/rcpt_ok`: a call in a new transaction: the previous instance is dropped,
//!   a fresh one is instantiated (pooled), then called. Minus `hook_call/rcpt_ok`, that is the
//!   per-transaction cost of instantiating a plugin.
//! - `transaction/six_plugins`: MAIL, RCPT, DATA, the message, data_post and queue through the
//!   benchmark chain (count_unrecognized_commands, check_badmailfrom, check_badrcptto,
//!   rcpt_ok, headers, queue/discard), a new transaction each time.
//!
//! - `dns/cached_check_lists`: `dnsbl`'s connect hook, one `check-lists` call for a client
//!   that one zone lists (its A and TXT lookups), answered from the resolver's cache (a name
//!   server of the benchmark's own, `name_server.rs`, answers the first time). Minus
//!   `hook_call/bare`, that is what a cached lookup costs a plugin.
//!
//! `cargo xtask build-plugins && cargo bench -p wasmtpd-host`.

mod name_server;

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmtpd_host::plugin::PluginSpec;
use wasmtpd_host::resolver::{Resolver, ResolverSettings};
use wasmtpd_host::sandbox::DnsGrant;
use wasmtpd_host::sandbox::{Right, SandboxSettings};
use wasmtpd_host::{PluginHost, Services};
use wasmtpd_smtp::{
    Address, Connection, Content, Hook, HookArgs, HookContext, HookRunner, MailParams, Message, Recipient, Transaction,
};

struct Files;
impl wasmtpd_host::ConfigFiles for Files {
    fn lines(&self, name: &str) -> Option<Vec<String>> {
        let lines: &[&str] = match name {
            "rcpthosts" => &["example.com"],
            "badmailfrom" => &["spammer@bad.test", "@spam.test"],
            "badrcptto" => &["nobody@example.com"],
            "dnsbl_zones" => &["bl.bench"],
            _ => return None,
        };
        Some(lines.iter().map(|s| s.to_string()).collect())
    }
}

/// The sandbox the server gives these plugins: the config files they read, and the rights of
/// the default configuration (rcpt_ok accepts recipients, the queue plugin queues).
fn settings() -> SandboxSettings {
    let mut s = SandboxSettings {
        config_files: ["rcpthosts", "morercpthosts", "badmailfrom", "badrcptto"].map(String::from).to_vec(),
        ..Default::default()
    };
    s.rights.grant(Right::AcceptRecipient);
    s.rights.grant(Right::Queue);
    s
}

fn plugin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins")
}

fn host(plugins: &[(&str, &[&str])]) -> PluginHost {
    host_with(plugins, settings(), &Default::default())
}

fn host_with(plugins: &[(&str, &[&str])], settings: SandboxSettings, services: &Services) -> PluginHost {
    let specs: Vec<PluginSpec> = plugins
        .iter()
        .map(|(name, args)| {
            let path = plugin_dir().join(format!("{name}.wasm"));
            assert!(path.is_file(), "{} is missing: run `cargo xtask build-plugins` first", path.display());
            PluginSpec {
                name: name.to_string(),
                args: args.iter().map(|a| a.to_string()).collect(),
                path,
                pin: None,
                settings: settings.clone(),
            }
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("wasmtpd-bench-{}", std::process::id()));
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-plugin-cache");
    PluginHost::load(&specs, Arc::new(Files), services, &dir.join("spool"), &cache, 1000).expect("loading the plugins")
}

fn ctx<'a>(connection: &'a mut Connection, transaction: &'a mut Transaction) -> HookContext<'a> {
    HookContext { connection, transaction: Some(transaction) }
}

fn connection() -> Connection {
    Connection::new("bench".into(), "192.0.2.1:40000".parse().unwrap(), "192.0.2.25:25".parse().unwrap())
}

fn hook_calls(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let to = Address::new("someone", "example.com").unwrap();
    let mut g = c.benchmark_group("hook_call");

    let nothing = host(&[("testing/nothing", &[])]);
    let mut scope = nothing.open_scope();
    let mut conn = connection();
    g.bench_function("bare", |b| {
        b.iter(|| {
            rt.block_on(nothing.run(
                &mut scope,
                Hook::Noop,
                HookArgs::None,
                HookContext { connection: &mut conn, transaction: None },
            ))
        })
    });

    let rcpt_ok = host(&[("rcpt_ok", &[])]);
    let mut scope = rcpt_ok.open_scope();
    let mut txn = Transaction { id: "t".into(), ..Default::default() };
    g.bench_function("rcpt_ok", |b| {
        b.iter(|| {
            rt.block_on(rcpt_ok.run(
                &mut scope,
                Hook::Rcpt,
                HookArgs::Rcpt { to: &to, params: &[] },
                HookContext { connection: &mut conn, transaction: Some(&mut txn) },
            ))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("new_instance");
    let mut scope = rcpt_ok.open_scope();
    let mut n = 0u64;
    g.bench_function("rcpt_ok", |b| {
        b.iter(|| {
            n += 1;
            let mut txn = Transaction { id: format!("t{n}"), ..Default::default() };
            rt.block_on(rcpt_ok.run(
                &mut scope,
                Hook::Rcpt,
                HookArgs::Rcpt { to: &to, params: &[] },
                HookContext { connection: &mut conn, transaction: Some(&mut txn) },
            ))
        })
    });
    g.finish();
}

fn transaction(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let chain = host(&[
        ("count_unrecognized_commands", &["4"]),
        ("check_badmailfrom", &[]),
        ("check_badrcptto", &[]),
        ("rcpt_ok", &[]),
        ("headers", &["require", "From,Date"]),
        ("queue/discard", &[]),
    ]);
    let from = Address::new("sender", "remote.test").unwrap();
    let to = Address::new("someone", "example.com").unwrap();
    let body: Arc<[u8]> = Arc::from(
        &b"Received: from client.test ([192.0.2.1])\r\n\tby mx.test (wasmtpd) with ESMTP id x;\r\n\tMon, 1 Dec 2026 00:00:00 +0000\r\nFrom: sender@remote.test\r\nTo: someone@example.com\r\nDate: Mon, 1 Dec 2026 00:00:00 +0000\r\nSubject: bench\r\n\r\nhello\r\n"[..],
    );
    let mut scope = chain.open_scope();
    let mut conn = connection();
    let mut n = 0u64;
    let mut g = c.benchmark_group("transaction");
    g.bench_function("six_plugins", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(async {
                let params = MailParams::default();
                let mut txn = Transaction::new(format!("t{n}"), Some(from.clone()), params.clone());
                let args = HookArgs::Mail { from: Some(&from), params: &params };
                chain.run(&mut scope, Hook::Mail, args, ctx(&mut conn, &mut txn)).await;
                let args = HookArgs::Rcpt { to: &to, params: &[] };
                let r = chain.run(&mut scope, Hook::Rcpt, args, ctx(&mut conn, &mut txn)).await;
                assert_eq!(r.verdict, wasmtpd_smtp::Verdict::Ok);
                txn.recipients.push(Recipient { address: to.clone(), params: vec![], dsn: Default::default() });
                chain.run(&mut scope, Hook::Data, HookArgs::None, ctx(&mut conn, &mut txn)).await;
                txn.message = Some(Message {
                    content: Content::Memory(body.clone()),
                    size: body.len() as u64,
                    authentication_results: None,
                });
                chain.run(&mut scope, Hook::DataPost, HookArgs::None, ctx(&mut conn, &mut txn)).await;
                let r = chain.run(&mut scope, Hook::Queue, HookArgs::None, ctx(&mut conn, &mut txn)).await;
                assert_eq!(r.verdict, wasmtpd_smtp::Verdict::Ok);
                chain.run(&mut scope, Hook::ResetTransaction, HookArgs::None, ctx(&mut conn, &mut txn)).await;
            })
        })
    });
    g.finish();
}

fn dns(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let settings = ResolverSettings { name_servers: vec![name_server::start()], ..Default::default() };
    let resolver = rt.block_on(async { Resolver::new(&settings) }).expect("the resolver");
    let mut sandbox = SandboxSettings { config_files: vec!["dnsbl_zones".into()], ..Default::default() };
    sandbox.dns = DnsGrant::Zones(vec!["bl.bench".into()]);
    sandbox.dns_queries = u32::MAX;
    let dnsbl = host_with(&[("dnsbl", &[])], sandbox, &Services { resolver: Some(resolver), ..Default::default() });
    let mut scope = dnsbl.open_scope();
    let mut conn = connection();
    let mut g = c.benchmark_group("dns");
    g.bench_function("cached_check_lists", |b| {
        b.iter(|| {
            let r = rt.block_on(dnsbl.run(
                &mut scope,
                Hook::Connect,
                HookArgs::None,
                HookContext { connection: &mut conn, transaction: None },
            ));
            assert_eq!(r.verdict, wasmtpd_smtp::Verdict::Declined);
        })
    });
    g.finish();
}

criterion_group!(benches, hook_calls, transaction, dns);
criterion_main!(benches);

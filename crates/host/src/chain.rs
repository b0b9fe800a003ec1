//! The hook chain: plugins run in configured order until one answers something other than
//! DECLINED (qpsmtpd's rule), each in its own instance. This is also where a plugin fault is
//! caught: a trap, a timeout, an out-of-memory or an instantiation failure is logged with the
//! plugin's name and the fault, the instance is dropped, and the hook gets a temporary failure
//! (or DECLINED, if the operator chose that policy for the plugin). Nothing else is affected.
//! And it is where a verdict that loosens policy is held to the plugin's rights
//! ([`within_rights`]).
//!
//! Running out of instance slots is not a plugin fault: the pool is sized so that every
//! connection can hold an instance of every plugin (`sandbox::pool`), so it means the server
//! is short of something. The hook gets a temporary failure whatever the plugin's fault policy
//! (failing open would let whoever exhausts the pool skip the plugin), it is logged as resource
//! exhaustion, and the circuit breaker does not count it.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use std::time::Instant;

use wasmtime::component::Instance;
use wasmtime::{Store, Trap};
use wasmtpd_smtp::{Hook, HookArgs, HookContext, HookResult, Verdict};

use crate::PluginHost;
use crate::bindings::{self, wit};
use crate::imports::message::MessageView;
use crate::imports::temp::{self, TempArea, TempLocation};
use crate::plugin::LoadedPlugin;
use crate::sandbox::{self, BLOCKED_GRACE, FaultPolicy, InstanceScope, Right};
use crate::state::{CallData, PluginState};

/// Why a plugin did not answer.
enum Failure {
    /// Its own doing (a trap, its time, memory or temp quota): its fault policy applies and the
    /// circuit breaker counts it.
    Fault(String),
    /// The instance pool is exhausted: the server's problem, not the plugin's.
    Exhausted(String),
}

/// A live plugin instance.
struct Live {
    store: Store<PluginState>,
    instance: Instance,
}

/// The plugin instances of one connection. Transaction-scoped instances are dropped (with
/// their temporary directories) when the transaction changes; the connection phase before
/// MAIL counts as a scope of its own.
pub struct Scope {
    /// `<temp root>/<connection id>`, set on the first hook.
    dir: Option<Arc<Path>>,
    /// The transaction the transaction-scoped instances belong to (`None`: connection phase).
    key: Option<String>,
    generation: u32,
    slots: Vec<Option<Live>>,
    message: Option<MessageView>,
    /// Some instance created its temporary directory under `dir` (else there is nothing to
    /// remove, and no file system call is made).
    temp_used: bool,
    /// Log lines each plugin has written on this connection, whichever instances wrote them
    /// (moved into the instance's store for each call, see `imports::log`).
    log_lines: Vec<u32>,
}

impl Scope {
    pub fn new(plugins: usize) -> Scope {
        Scope {
            dir: None,
            key: None,
            generation: 0,
            slots: (0..plugins).map(|_| None).collect(),
            message: None,
            temp_used: false,
            log_lines: vec![0; plugins],
        }
    }

    /// Moves to the scope of `key`, ending every transaction-scoped instance of the old one.
    fn enter(&mut self, key: Option<&str>, plugins: &[LoadedPlugin]) {
        if self.key.as_deref() == key {
            return;
        }
        for (slot, plugin) in self.slots.iter_mut().zip(plugins) {
            if plugin.settings.scope == InstanceScope::Transaction
                && let Some(live) = slot.take()
            {
                end_instance(live, &plugin.meta.name);
            }
        }
        if let Some(dir) = &self.dir
            && self.temp_used
        {
            temp::discard(&dir.join(format!("s{}", self.generation)));
        }
        self.generation += 1;
        self.key = key.map(str::to_string);
        self.message = None;
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let Some(live) = slot.take() {
                let name = live.store.data().meta.name.clone();
                end_instance(live, &name);
            }
        }
        if let Some(dir) = &self.dir
            && self.temp_used
        {
            temp::discard(dir);
        }
    }
}

/// Drops an instance, passing on what it wrote to stderr; its temporary directory is removed
/// off the event loop (`temp::discard`).
fn end_instance(mut live: Live, plugin: &str) {
    let stderr = live.store.data_mut().stderr.take();
    live.store.data_mut().temp.remove_all();
    if !stderr.is_empty() {
        tracing::info!(plugin, "stderr: {}", String::from_utf8_lossy(&stderr).trim_end().escape_debug());
    }
}

impl PluginHost {
    pub(crate) async fn run_chain(
        &self,
        scope: &mut Scope,
        hook: Hook,
        args: HookArgs<'_>,
        mut ctx: HookContext<'_>,
    ) -> HookResult {
        if scope.dir.is_none() {
            scope.dir = Some(Arc::from(self.temp_root.join(&ctx.connection.id)));
        }
        let key = ctx.transaction.as_ref().map(|t| t.id.clone());
        scope.enter(key.as_deref(), &self.plugins);
        for (index, plugin) in self.plugins.iter().enumerate() {
            if !plugin.exports.implements(hook) {
                continue;
            }
            let name = plugin.meta.name.as_str();
            let policy = || match plugin.settings.on_fault {
                FaultPolicy::Declined => HookResult::declined().from_plugin(name),
                FaultPolicy::TempFail => HookResult::fault(name),
            };
            if plugin.breaker.is_open() {
                // Disabled after repeated faults: its fault policy applies without running it.
                tracing::debug!(plugin = name, hook = hook.name(), "plugin disabled by its circuit breaker");
                let result = policy();
                if result.fault {
                    return result;
                }
                continue;
            }
            let started = Instant::now();
            let outcome = self.call_plugin(scope, index, hook, args, &mut ctx).await;
            let result = match outcome {
                Ok(r) => within_rights(bindings::hook_result(r, name), plugin, hook, &ctx.connection.id),
                Err(Failure::Exhausted(why)) => {
                    tracing::warn!(
                        plugin = name,
                        hook = hook.name(),
                        conn = %ctx.connection.id,
                        "resource exhaustion (not a plugin fault), temporary failure: {why}"
                    );
                    HookResult::fault(name)
                }
                Err(Failure::Fault(fault)) => {
                    tracing::error!(plugin = name, hook = hook.name(), conn = %ctx.connection.id, "plugin fault: {fault}");
                    if plugin.breaker.record_fault() {
                        let b = plugin.breaker.settings();
                        tracing::error!(
                            plugin = name,
                            "plugin disabled for {:?} after {} faults within {:?}; its fault policy ({:?}) applies meanwhile",
                            b.cooldown,
                            b.faults,
                            b.window,
                            plugin.settings.on_fault
                        );
                    }
                    policy()
                }
            };
            tracing::debug!(
                plugin = name,
                hook = hook.name(),
                verdict = result.verdict.name(),
                us = started.elapsed().as_micros() as u64,
                "plugin answered"
            );
            // qpsmtpd's record of every plugin's answer, read by plugins as `<plugin>.hook_<hook>`
            // (kept apart from plugins' notes, so no plugin can change it).
            let notes = match ctx.transaction.as_deref_mut() {
                Some(t) => &mut t.notes,
                None => &mut ctx.connection.notes,
            };
            let recorded = if result.fault { "FAULT" } else { result.verdict.name() };
            notes.set_record(self.plugins.len(), index, hook, recorded);
            if result.fault || result.verdict != Verdict::Declined {
                return result;
            }
        }
        HookResult::declined()
    }

    /// Runs one plugin's hook in its instance (creating it if needed), with the session state
    /// moved into the instance's store for the duration of the call.
    async fn call_plugin(
        &self,
        scope: &mut Scope,
        index: usize,
        hook: Hook,
        args: HookArgs<'_>,
        ctx: &mut HookContext<'_>,
    ) -> Result<wit::HookResult, Failure> {
        let plugin = &self.plugins[index];
        if scope.slots[index].is_none() {
            let scope_dir = scope.dir.clone().expect("set on the first hook");
            let generation = match plugin.settings.scope {
                InstanceScope::Transaction => Some(scope.generation),
                InstanceScope::Connection => None,
            };
            let temp = TempLocation { scope_dir, generation, plugin: index };
            // With `wasi-temp` its directory is made before instantiation, which may fail.
            scope.temp_used |= plugin.settings.wasi_temp;
            let live = self.instantiate(plugin, temp).await?;
            scope.slots[index] = Some(live);
        }
        let Live { store, instance } = scope.slots[index].as_mut().expect("just created");
        scope.temp_used |= store.data().temp.is_open();
        let data = store.data_mut();
        data.call = CallData {
            hook: Some(hook),
            connection: std::mem::take(ctx.connection),
            transaction: ctx.transaction.as_deref_mut().map(std::mem::take),
            message: scope.message.take(),
        };
        data.log_lines = scope.log_lines[index];
        data.limits.deadline = Some(Instant::now() + plugin.settings.timeout);
        // Epochs stop wasm that computes; a plugin blocked in a host call (WASI sleep or poll)
        // is stopped here instead, by dropping the call (the instance is then unusable).
        let limit = plugin.settings.timeout + BLOCKED_GRACE;
        let result = within(limit, plugin.exports.call(store, instance, hook, args)).await;
        let data = store.data_mut();
        data.limits.deadline = None;
        scope.temp_used |= data.temp.is_open();
        scope.log_lines[index] = data.log_lines;
        let call = std::mem::take(&mut data.call);
        *ctx.connection = call.connection;
        if let (Some(slot), Some(t)) = (ctx.transaction.as_deref_mut(), call.transaction) {
            *slot = t;
        }
        scope.message = call.message;
        let fault = match result {
            // What it wrote through WASI is only seen now: a bounded walk of its directory.
            Ok(Ok(r)) if plugin.settings.wasi_temp => match data.temp.check() {
                Ok(()) => return Ok(r),
                Err(over) => over,
            },
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => describe_fault(&e, store, plugin),
            Err(_) => format!(
                "ran past its time limit of {:?} while blocked outside wasm (sleeping or waiting)",
                plugin.settings.timeout
            ),
        };
        let live = scope.slots[index].take().expect("still there");
        end_instance(live, &plugin.meta.name);
        Err(Failure::Fault(fault))
    }

    async fn instantiate(&self, plugin: &LoadedPlugin, temp_dir: TempLocation) -> Result<Live, Failure> {
        let settings = &plugin.settings;
        let mut temp = TempArea::new(temp_dir, settings.temp_quota);
        if settings.wasi_temp {
            temp.open().map_err(Failure::Fault)?;
        }
        let mut store = sandbox::store(&self.engine, settings, plugin.meta.clone(), temp)
            .map_err(|e| Failure::Fault(format!("sandbox: {e:#}")))?;
        store.data_mut().limits.deadline = Some(Instant::now() + settings.timeout);
        let limit = settings.timeout + BLOCKED_GRACE;
        let instantiated = match within(limit, plugin.pre.instantiate_async(&mut store)).await {
            Ok(r) => r,
            Err(_) => Err(wasmtime::format_err!("instantiation blocked past the time limit of {:?}", settings.timeout)),
        };
        match instantiated {
            Ok(instance) => {
                store.data_mut().limits.deadline = None;
                Ok(Live { store, instance })
            }
            Err(e) => {
                store.data_mut().temp.remove_all();
                if e.is::<wasmtime::PoolConcurrencyLimitError>() {
                    return Err(Failure::Exhausted(format!("no instance slot: {e:#}")));
                }
                Err(Failure::Fault(format!("could not be instantiated: {}", describe_error(&e, &store, plugin))))
            }
        }
    }
}

/// The right a verdict needs at a hook, if it loosens policy: OK at `rcpt` accepts a recipient;
/// OK at an auth hook authenticates the client (which makes it a relay client); OK or DONE at
/// `queue`, and DONE at `data_post`, answer 250 for a message (DONE without delivering it).
/// Every other verdict only refuses, or leaves the decision to others.
pub fn right_needed(hook: Hook, verdict: Verdict) -> Option<Right> {
    match (hook, verdict) {
        (Hook::Rcpt, Verdict::Ok) => Some(Right::AcceptRecipient),
        (Hook::Auth | Hook::AuthPlain | Hook::AuthLogin, Verdict::Ok) => Some(Right::Authenticate),
        (Hook::Queue, Verdict::Ok | Verdict::Done) | (Hook::DataPost, Verdict::Done) => Some(Right::Queue),
        _ => None,
    }
}

/// A plugin's verdict as it counts: one it has no right to give is DECLINED, with a warning
/// naming the plugin, the hook and the missing right.
fn within_rights(result: HookResult, plugin: &LoadedPlugin, hook: Hook, conn: &str) -> HookResult {
    match right_needed(hook, result.verdict) {
        Some(right) if !plugin.settings.rights.has(right) => {
            tracing::warn!(
                plugin = plugin.meta.name.as_str(),
                hook = hook.name(),
                right = right.name(),
                conn,
                "verdict {} refused: the plugin lacks the right (grant it with `rights` in config/sandbox); counted as DECLINED",
                result.verdict.name()
            );
            HookResult::declined().from_plugin(plugin.meta.name.as_str())
        }
        _ => result,
    }
}

/// `fut` within `limit`, like `tokio::time::timeout`, but without arming a timer for a future
/// that finishes in its first poll, as most hook calls do (a timer costs more than the call).
async fn within<F: Future>(limit: Duration, fut: F) -> Result<F::Output, ()> {
    let started = Instant::now();
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(v) = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Ok(v);
    }
    tokio::time::timeout(limit.saturating_sub(started.elapsed()), fut).await.map_err(|_| ())
}

fn describe_fault(e: &wasmtime::Error, store: &Store<PluginState>, plugin: &LoadedPlugin) -> String {
    let mut s = describe_error(e, store, plugin);
    // A Rust panic message, a Python traceback: the end of stderr says what happened.
    let stderr = store.data().stderr.take();
    let text = String::from_utf8_lossy(&stderr);
    let mut tail: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).rev().take(4).collect();
    tail.reverse();
    if !tail.is_empty() {
        let mut tail = tail.join(" | ");
        if tail.len() > 1000 {
            let mut cut = tail.len() - 1000;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail = tail[cut..].to_string();
        }
        s.push_str(&format!(" (stderr: {})", tail.escape_debug()));
    }
    s
}

fn describe_error(e: &wasmtime::Error, store: &Store<PluginState>, plugin: &LoadedPlugin) -> String {
    let limits = &store.data().limits;
    if limits.out_of_memory {
        return format!("out of memory (limit {} MiB)", plugin.settings.memory >> 20);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            format!("ran past its time limit of {:?}", plugin.settings.timeout)
        }
        Some(Trap::StackOverflow) => "stack overflow".to_string(),
        Some(trap) => format!("trapped: {trap}"),
        None => format!("{e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exactly the verdicts that accept something need a right; refusing never does.
    #[test]
    fn which_verdicts_need_which_right() {
        use Verdict::*;
        for hook in Hook::ALL {
            for verdict in [Ok, Deny, DenySoft, DenyDisconnect, DenySoftDisconnect, Declined, Done] {
                let expected = match (hook, verdict) {
                    (Hook::Rcpt, Ok) => Some(Right::AcceptRecipient),
                    (Hook::Auth | Hook::AuthPlain | Hook::AuthLogin, Ok) => Some(Right::Authenticate),
                    (Hook::Queue, Ok | Done) | (Hook::DataPost, Done) => Some(Right::Queue),
                    _ => None,
                };
                assert_eq!(right_needed(hook, verdict), expected, "{} {}", hook.name(), verdict.name());
                if verdict.is_deny() || verdict == Declined {
                    assert_eq!(right_needed(hook, verdict), None);
                }
            }
        }
    }
}

//! The host side of `wit/key-value.wit`: a plugin's store calls, each admitted by its grant
//! (`sandbox::StoreGrant`: the store, and the namespace its keys go in) and its budget
//! (`store-operations` per transaction), its arguments checked (`store::check_key` and the
//! others), then made on the store by a deadline within the hook's time. A refusal is an error
//! the plugin sees, and a log line naming it (a few per instance; a flood is not logged).
//!
//! The deadline is the store's own timeout or what is left of the hook's time less a tenth
//! of it (at most 500 ms) for the plugin to act on the answer, whichever comes first, so a
//! store that does not answer makes the call fail with `timeout`, not the hook run out of
//! time.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::bindings::key_value::{self, Condition, Entry, StoreError};
use crate::sandbox::StoreGrant;
use crate::state::PluginState;
use crate::store::{self, Store, Stores};

/// Refusals logged per instance; past that, one line says the rest are not.
const MAX_REFUSALS_LOGGED: u32 = 4;
/// The most of its remaining hook time a call leaves the plugin.
const TIME_TO_ACT: Duration = Duration::from_millis(500);

/// A store as one plugin may use it.
pub struct GrantedStore {
    /// Its name in `config/stores`.
    pub name: String,
    /// Where this plugin's keys are (`plugin:INSTANCE`, or `shared:NAMESPACE`).
    pub namespace: String,
    pub store: Arc<dyn Store>,
}

/// The stores `grants` give plugin `instance`, from those the server runs. A grant of a store
/// the server does not run, or a namespace that cannot be made from the instance name, is an
/// error naming where it was granted.
pub fn granted_stores(instance: &str, grants: &[StoreGrant], stores: &Stores) -> anyhow::Result<Vec<GrantedStore>> {
    grants
        .iter()
        .map(|g| {
            let store = stores
                .get(&g.store)
                .ok_or_else(|| anyhow::anyhow!("{}: store `{}` is not defined in config/stores", g.origin, g.store))?;
            let namespace = g.namespace(instance);
            store::check_namespace(&namespace).map_err(|e| anyhow::anyhow!("{}: store {}: {e}", g.origin, g.store))?;
            Ok(GrantedStore { name: g.store.clone(), namespace, store: store.clone() })
        })
        .collect()
}

/// The store calls a plugin instance made in the current transaction.
#[derive(Debug, Default)]
pub struct StoreUse {
    /// The transaction they were made in (`None`: the connection phase).
    transaction: Option<String>,
    made: u32,
    refusals_logged: u32,
}

impl PluginState {
    /// Counts a call on `store` against the grant and the budget: the store, its namespace for
    /// this plugin, and the call's deadline.
    fn admit_call(&mut self, store: &str) -> Result<(Arc<dyn Store>, String, Instant), StoreError> {
        let transaction = self.call.transaction.as_ref().map(|t| t.id.as_str());
        if self.store_use.transaction.as_deref() != transaction {
            self.store_use.transaction = transaction.map(str::to_string);
            self.store_use.made = 0;
        }
        let granted = self.meta.stores.iter().find(|g| g.name == store);
        let refusal = match granted {
            None => StoreError::NotGranted(format!(
                "not granted: the operator has not granted this plugin the store `{}` (`store` in config/sandbox)",
                shown(store)
            )),
            Some(_) if self.store_use.made >= self.meta.store_operations => StoreError::OverBudget(format!(
                "over budget: this plugin may make {} store calls per transaction (`store-operations` in config/sandbox)",
                self.meta.store_operations
            )),
            Some(g) => {
                self.store_use.made += 1;
                let deadline = self.store_deadline(g.store.timeout());
                return Ok((g.store.clone(), g.namespace.clone(), deadline));
            }
        };
        self.log_store_refusal(&refusal);
        Err(refusal)
    }

    fn log_store_refusal(&mut self, refusal: &StoreError) {
        let plugin = self.meta.name.as_str();
        let conn = self.call.connection.id.as_str();
        let reason = match refusal {
            StoreError::NotGranted(s) | StoreError::OverBudget(s) | StoreError::Quota(s) => s.as_str(),
            _ => return,
        };
        match self.store_use.refusals_logged {
            n if n < MAX_REFUSALS_LOGGED => tracing::warn!(plugin, conn, "store call refused: {reason}"),
            MAX_REFUSALS_LOGGED => tracing::warn!(plugin, conn, "more store calls refused; no longer logged"),
            _ => {}
        }
        self.store_use.refusals_logged = self.store_use.refusals_logged.saturating_add(1);
    }

    /// When a call must have its answer: the store's timeout, or what is left of the hook's
    /// time less time to act, whichever comes first.
    fn store_deadline(&self, timeout: Duration) -> Instant {
        let now = Instant::now();
        let own = now + timeout;
        match self.limits.deadline {
            Some(d) => {
                let left = Instant::from_std(d).saturating_duration_since(now);
                own.min(now + left - (left / 10).min(TIME_TO_ACT))
            }
            None => own,
        }
    }

    /// What a call's answer tells the plugin; a quota refusal is logged like the host's own.
    fn answer<T>(&mut self, r: Result<T, store::StoreError>) -> Result<T, StoreError> {
        let r = r.map_err(error);
        if let Err(e @ StoreError::Quota(_)) = &r {
            self.log_store_refusal(&e.clone());
        }
        r
    }
}

impl key_value::Host for PluginState {
    async fn get(&mut self, store: String, key: String) -> Result<Option<Entry>, StoreError> {
        let (s, namespace, deadline) = self.admit_call(&store)?;
        store::check_key(&key).map_err(error)?;
        let got = s.get(&namespace, &key, deadline).await;
        Ok(self.answer(got)?.map(|e| Entry {
            value: e.value,
            version: e.version,
            expires_in_ms: e.expires_in.map(|d| d.as_millis().max(1) as u64),
        }))
    }

    async fn set(
        &mut self,
        store: String,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        condition: Condition,
    ) -> Result<u64, StoreError> {
        let (s, namespace, deadline) = self.admit_call(&store)?;
        store::check_key(&key).map_err(error)?;
        store::check_value(&value).map_err(error)?;
        let ttl = store::check_ttl(ttl_ms).map_err(error)?;
        let condition = match condition {
            Condition::Always => store::Condition::Always,
            Condition::IfAbsent => store::Condition::IfAbsent,
            Condition::IfVersion(v) => store::Condition::IfVersion(v),
        };
        let set = s.set(&namespace, &key, value, ttl, condition, deadline).await;
        self.answer(set)
    }

    async fn delete(&mut self, store: String, key: String, if_version: Option<u64>) -> Result<bool, StoreError> {
        let (s, namespace, deadline) = self.admit_call(&store)?;
        store::check_key(&key).map_err(error)?;
        let deleted = s.delete(&namespace, &key, if_version, deadline).await;
        self.answer(deleted)
    }

    async fn increment(
        &mut self,
        store: String,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, StoreError> {
        let (s, namespace, deadline) = self.admit_call(&store)?;
        store::check_key(&key).map_err(error)?;
        let ttl = store::check_ttl(ttl_ms).map_err(error)?;
        let sum = s.increment(&namespace, &key, delta, ttl, deadline).await;
        self.answer(sum)
    }
}

/// A name as it may be shown in a message: escaped, and cut.
fn shown(name: &str) -> String {
    let mut s: String = name.escape_debug().take(64).collect();
    if s.len() < name.escape_debug().count() {
        s.push('…');
    }
    s
}

fn error(e: store::StoreError) -> StoreError {
    match e {
        store::StoreError::TooLarge(s) => StoreError::TooLarge(s),
        store::StoreError::Quota(s) => StoreError::Quota(s),
        store::StoreError::Invalid(s) => StoreError::Invalid(s),
        store::StoreError::Conflict => StoreError::Conflict,
        store::StoreError::NotAnInteger => StoreError::NotAnInteger,
        store::StoreError::Unavailable(s) => StoreError::BackendUnavailable(s),
        store::StoreError::Timeout => StoreError::Timeout,
    }
}

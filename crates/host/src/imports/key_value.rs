//! The host side of `wit/key-value.wit` (work in progress: every store is refused until the
//! stores and grants land).

use crate::bindings::key_value::{self, Condition, Entry, StoreError};
use crate::state::PluginState;

fn refused(store: &str) -> StoreError {
    StoreError::NotGranted(format!("store `{}` is not granted to this plugin", store.escape_debug()))
}

impl key_value::Host for PluginState {
    async fn get(&mut self, store: String, _key: String) -> Result<Option<Entry>, StoreError> {
        Err(refused(&store))
    }

    async fn set(
        &mut self,
        store: String,
        _key: String,
        _value: Vec<u8>,
        _ttl_ms: Option<u64>,
        _condition: Condition,
    ) -> Result<u64, StoreError> {
        Err(refused(&store))
    }

    async fn delete(&mut self, store: String, _key: String, _if_version: Option<u64>) -> Result<bool, StoreError> {
        Err(refused(&store))
    }

    async fn increment(
        &mut self,
        store: String,
        _key: String,
        _delta: i64,
        _ttl_ms: Option<u64>,
    ) -> Result<i64, StoreError> {
        Err(refused(&store))
    }
}

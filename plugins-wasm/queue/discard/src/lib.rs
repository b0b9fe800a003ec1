//! queue/discard: accepts every message and keeps nothing. For tests and benchmarks, or a
//! sink domain; never use it where mail matters.

use wasmtpd_plugin::{HookResult, Plugin};

struct QueueDiscard;

#[wasmtpd_plugin::plugin]
impl Plugin for QueueDiscard {
    fn queue() -> HookResult {
        HookResult::ok_with("Queued (discarded)")
    }
}

//! Test fixture: answers `noop` with DECLINED and calls nothing, so a benchmark of it measures
//! one hook call through the component boundary and nothing else.

use wasmtpd_plugin::{HookResult, Plugin};

struct Nothing;

#[wasmtpd_plugin::plugin]
impl Plugin for Nothing {
    fn noop() -> HookResult {
        HookResult::declined()
    }
}

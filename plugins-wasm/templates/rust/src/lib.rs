//! my_plugin: refuses recipients at the domains its arguments list
//! (`my_plugin blocked.example other.example` in config/plugins). One hook, `rcpt`; every
//! other hook is not exported, so the server never calls it.
//!
//! Build: `cargo xtask build-plugins`. Test offline:
//! `wasmtpd plugin test target/plugins/my_plugin.wasm blocked.example --session plugins-wasm/my_plugin/my_plugin.session`

use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct MyPlugin;

#[wasmtpd_plugin::plugin]
impl Plugin for MyPlugin {
    fn rcpt(recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        let domain = recipient.domain.clone().unwrap_or_default().to_ascii_lowercase();
        if host::args().iter().any(|d| d.eq_ignore_ascii_case(&domain)) {
            return HookResult::deny(format!("my_plugin does not take mail for {domain}"));
        }
        HookResult::declined()
    }
}

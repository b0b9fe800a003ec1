//! random_error (qpsmtpd): a testing aid that fails at random, so an operator can see how
//! clients and the MTAs behind them cope. Never in production.
//!
//! Argument: how often a message fails, in percent (default 1; a negative number: never).
//! The chance is spread over the seven hooks a message passes (connect, HELO/EHLO, MAIL,
//! RCPT, DATA, and after the message): each fails with `1 - (1 - P/100)^(1/6)`, as in qpsmtpd.
//! A failure is `random failure`: 2 in 5 a temporary refusal that closes the connection, the
//! others a temporary refusal.

use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct RandomError;

#[wasmtpd_plugin::plugin]
impl Plugin for RandomError {
    fn connect() -> HookResult {
        random_fail()
    }

    fn helo(_host: String) -> HookResult {
        random_fail()
    }

    fn ehlo(_host: String) -> HookResult {
        random_fail()
    }

    fn mail(_sender: Option<Address>, _params: Vec<EsmtpParam>) -> HookResult {
        random_fail()
    }

    fn rcpt(_recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        random_fail()
    }

    fn data() -> HookResult {
        random_fail()
    }

    fn data_post() -> HookResult {
        random_fail()
    }
}

fn random_fail() -> HookResult {
    let percent = match host::args().first() {
        None => 1.0,
        Some(p) => p.parse::<f64>().unwrap_or_else(|_| {
            wasmtpd_plugin::warn(format!("`{p}`: expected a percentage; using 1"));
            1.0
        }),
    };
    let pass = (1.0 - percent / 100.0).max(0.0).powf(1.0 / 6.0);
    if random() < pass {
        return HookResult::declined();
    }
    wasmtpd_plugin::info("fail, random failure");
    if random() * 5.0 < 2.0 {
        HookResult::deny_soft_disconnect("random failure")
    } else {
        HookResult::deny_soft("random failure")
    }
}

/// A number in [0, 1), from the random seed WASI gives every hasher.
fn random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

//! auth_flat_file (qpsmtpd's, with hashes instead of clear-text passwords): checks AUTH
//! credentials against `config/auth_users`.
//!
//! The file has one user per line, `name:hash`, the hash an argon2id PHC string; add users with
//! `wasmtpd --config DIR add-user NAME`. Changes count within a second (the server re-checks
//! config files that often).
//!
//! - Known user, right password: OK (`235`; the client may relay).
//! - Known user, wrong password: DENY (`535 5.7.8`).
//! - Unknown user: DECLINED, so a later auth plugin may know them (with none, `535` too). The
//!   password is still hashed, so an unknown user takes as long as a known one and the timing
//!   does not tell which user names exist.
//!
//! The hash comparison is constant-time (the `password-hash` crate compares outputs with
//! `subtle`). The password is never logged.
//!
//! It implements the generic `auth` hook, so the server offers every mechanism it has (PLAIN
//! and LOGIN).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use wasmtpd_plugin::{HookResult, Plugin, host};

/// The users file in the config directory.
const USERS: &str = "auth_users";

struct AuthFlatFile;

#[wasmtpd_plugin::plugin]
impl Plugin for AuthFlatFile {
    fn auth(_mechanism: String, user: String, password: String) -> HookResult {
        let lines = host::config(USERS).unwrap_or_default();
        let hash = lines.iter().find_map(|l| l.split_once(':').filter(|(name, _)| *name == user).map(|(_, h)| h));
        let Some(hash) = hash else {
            burn_the_same_time(&password);
            return HookResult::declined();
        };
        let parsed = match PasswordHash::new(hash) {
            Ok(p) => p,
            Err(e) => {
                host::log(
                    wasmtpd_plugin::LogLevel::Error,
                    &format!("{USERS}: the hash of a user is not a PHC string: {e}"),
                );
                return HookResult::deny_soft("Temporary authentication failure").with_enhanced_code("4.7.0");
            }
        };
        match Argon2::default().verify_password(password.as_bytes(), &parsed) {
            Ok(()) => HookResult::ok(),
            Err(argon2::password_hash::Error::Password) => {
                HookResult::deny("Authentication credentials invalid").with_enhanced_code("5.7.8")
            }
            Err(e) => {
                host::log(wasmtpd_plugin::LogLevel::Error, &format!("{USERS}: cannot verify a hash: {e}"));
                HookResult::deny_soft("Temporary authentication failure").with_enhanced_code("4.7.0")
            }
        }
    }
}

/// Hashes the password as a verification would (default argon2id parameters, those
/// `wasmtpd add-user` writes), and throws the result away.
fn burn_the_same_time(password: &str) {
    let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0c2FsdA").expect("a valid salt");
    let _ = Argon2::default().hash_password(password.as_bytes(), &salt);
}

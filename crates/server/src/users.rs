//! `config/auth_users`, the users file of the `auth_flat_file` plugin, and `wasmtpd add-user`,
//! which writes it.
//!
//! One user per line: `name:hash`, where the hash is an argon2id PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`, OWASP's recommended parameters, the
//! `argon2` crate's defaults). Passwords are never stored. Plugins see config files through a
//! cache re-checked every second, so a user added or changed counts within a second, without a
//! restart.

use std::path::Path;

use argon2::password_hash::{PasswordHasher, SaltString};
use password_hash::rand_core::OsRng;

/// The users file's name in the config directory.
pub const USERS_FILE: &str = "auth_users";

/// Hashes `password` with argon2id and a random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    Ok(hash.to_string())
}

/// Adds `user` to `<config dir>/auth_users`, or replaces its hash if it is there. The file is
/// written whole to a temporary name and renamed, so the plugin never reads half a file.
pub fn add_user(config_dir: &Path, user: &str, password: &str) -> anyhow::Result<bool> {
    if user.is_empty() || user.len() > 255 || user.contains(':') || user.chars().any(|c| c.is_control() || c == ' ') {
        anyhow::bail!("`{user}` is not a user name (no spaces, colons or control characters, at most 255 octets)");
    }
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    let path = config_dir.join(USERS_FILE);
    let old = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    let entry = format!("{user}:{}", hash_password(password)?);
    let mut replaced = false;
    let mut lines: Vec<String> = old
        .lines()
        .map(|l| match l.split_once(':') {
            Some((name, _)) if name.trim() == user && !l.trim_start().starts_with('#') => {
                replaced = true;
                entry.clone()
            }
            _ => l.to_string(),
        })
        .collect();
    if !replaced {
        if lines.is_empty() {
            lines.push(
                "# Users of the auth_flat_file plugin: `name:argon2id hash` (add with `wasmtpd add-user`).".into(),
            );
        }
        lines.push(entry);
    }
    let tmp = config_dir.join(format!(".{USERS_FILE}.tmp{}", std::process::id()));
    write_private(&tmp, &(lines.join("\n") + "\n"))?;
    std::fs::rename(&tmp, &path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(replaced)
}

/// Writes a file readable by its owner only (the hashes are still worth protecting).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};

    use super::*;

    #[test]
    fn add_then_replace() {
        let dir = std::env::temp_dir().join(format!("wasmtpd-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!add_user(&dir, "alice@example.com", "first").unwrap());
        assert!(!add_user(&dir, "bob", "other").unwrap());
        assert!(add_user(&dir, "alice@example.com", "second").unwrap(), "replaced");
        let text = std::fs::read_to_string(dir.join(USERS_FILE)).unwrap();
        let alice: Vec<&str> = text.lines().filter(|l| l.starts_with("alice@example.com:")).collect();
        assert_eq!(alice.len(), 1);
        let hash = PasswordHash::new(alice[0].split_once(':').unwrap().1).unwrap();
        assert_eq!(hash.algorithm.as_str(), "argon2id");
        assert!(argon2::Argon2::default().verify_password(b"second", &hash).is_ok());
        assert!(argon2::Argon2::default().verify_password(b"first", &hash).is_err());
        assert!(!text.contains("second"), "no password in the file");
        for bad in ["", "a:b", "a b", "a\nb"] {
            assert!(add_user(&dir, bad, "pw").is_err(), "{bad:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

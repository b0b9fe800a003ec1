//! Notes: small key/value state shared between plugins, bounded so that a plugin cannot make
//! the server hold more than a little memory per connection.

use std::collections::BTreeMap;

pub const MAX_KEY: usize = 256;
pub const MAX_VALUE: usize = 64 * 1024;
pub const MAX_TOTAL: usize = 1024 * 1024;

/// Sets (or with `None` removes) a note, within the caps.
pub fn set(notes: &mut BTreeMap<String, String>, key: String, value: Option<String>) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(format!("note keys are 1 to {MAX_KEY} octets"));
    }
    let Some(value) = value else {
        notes.remove(&key);
        return Ok(());
    };
    if value.len() > MAX_VALUE {
        return Err(format!("note values are at most {MAX_VALUE} octets"));
    }
    let total: usize = notes.iter().filter(|(k, _)| **k != key).map(|(k, v)| k.len() + v.len()).sum();
    if total + key.len() + value.len() > MAX_TOTAL {
        return Err(format!("notes are full ({MAX_TOTAL} octets in all)"));
    }
    notes.insert(key, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps() {
        let mut n = BTreeMap::new();
        assert!(set(&mut n, "k".into(), Some("v".into())).is_ok());
        assert!(set(&mut n, "".into(), Some("v".into())).is_err());
        assert!(set(&mut n, "k".repeat(257), Some("v".into())).is_err());
        assert!(set(&mut n, "big".into(), Some("x".repeat(MAX_VALUE + 1))).is_err());
        for i in 0..15 {
            assert!(set(&mut n, format!("k{i}"), Some("x".repeat(MAX_VALUE))).is_ok());
        }
        assert!(set(&mut n, "k99".into(), Some("x".repeat(MAX_VALUE))).is_err(), "total cap");
        assert!(set(&mut n, "k1".into(), Some("small".into())).is_ok(), "replacing frees room");
        assert!(set(&mut n, "k".into(), None).is_ok());
        assert!(!n.contains_key("k"));
    }
}

//! xtext (RFC 3461 section 4): the encoding of ESMTP parameter values that may hold any octet.
//! `+XX` (two upper-case hex digits) stands for one octet; every other character from `!` to
//! `~` except `+` and `=` stands for itself. Used by DSN's ENVID and ORCPT and by XCLIENT.

/// Why an xtext value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XtextError {
    #[error("a character outside xtext")]
    BadCharacter,
    #[error("`+` not followed by two upper-case hex digits")]
    BadEscape,
    #[error("a control character, encoded")]
    Control,
    #[error("not UTF-8 once decoded")]
    NotUtf8,
}

/// Decodes `value`. A decoded control character (CR, LF, NUL, DEL ...) is refused: a value must
/// never carry one into a header, a log line or a plugin.
pub fn decode(value: &str) -> Result<String, XtextError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(XtextError::BadEscape)?;
                let digit = |b: u8| match b {
                    b'0'..=b'9' => Some(b - b'0'),
                    b'A'..=b'F' => Some(b - b'A' + 10),
                    _ => None,
                };
                let (Some(hi), Some(lo)) = (digit(hex[0]), digit(hex[1])) else {
                    return Err(XtextError::BadEscape);
                };
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'!'..=b'~' if bytes[i] != b'=' => {
                out.push(bytes[i]);
                i += 1;
            }
            _ => return Err(XtextError::BadCharacter),
        }
    }
    let text = String::from_utf8(out).map_err(|_| XtextError::NotUtf8)?;
    if text.chars().any(char::is_control) {
        return Err(XtextError::Control);
    }
    Ok(text)
}

/// Encodes `text` as xtext (for passing a decoded value on).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_refuses() {
        assert_eq!(decode("a+2Bb+3Dc").unwrap(), "a+b=c");
        assert_eq!(decode("rfc822;jo+40example.com").unwrap(), "rfc822;jo@example.com");
        assert_eq!(decode("+C3+BC").unwrap(), "ü");
        assert_eq!(decode("a+0D+0A"), Err(XtextError::Control));
        assert_eq!(decode("a+00"), Err(XtextError::Control));
        assert_eq!(decode("a+2b"), Err(XtextError::BadEscape), "lower-case hex");
        assert_eq!(decode("a+2"), Err(XtextError::BadEscape));
        assert_eq!(decode("a b"), Err(XtextError::BadCharacter));
        assert_eq!(decode("a=b"), Err(XtextError::BadCharacter));
        assert_eq!(decode("+FF"), Err(XtextError::NotUtf8));
        for s in ["plain", "a+b=c d", "ü@x"] {
            assert_eq!(decode(&encode(s)).unwrap(), s);
        }
    }
}

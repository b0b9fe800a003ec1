//! An SMTP reply, and every fixed reply text the engine sends.
//!
//! A [`Reply`] is a basic code, an optional RFC 3463 enhanced status code, and one or more lines
//! of text. The enhanced code's class is always forced to agree with the basic code (a 4xx reply
//! never carries a 5.x.x code), so the two can never drift apart. Text from plugins is cleaned
//! here: control characters (CR, LF, NUL, ...) never reach the wire, so a plugin cannot inject a
//! second reply.
//!
//! The canned replies are the functions at the bottom of this file; replies that depend on a
//! hook's verdict live in [`crate::verdict`].

use std::fmt;

/// Longest text we put on one reply line (RFC 5321 4.5.3.1.5 allows 512 octets with the code).
pub const MAX_REPLY_TEXT: usize = 500;
/// Most lines a single reply may have; a plugin cannot make us send a megabyte of replies.
pub const MAX_REPLY_LINES: usize = 32;

/// An RFC 3463 enhanced status code `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedCode(pub u8, pub u16, pub u16);

impl EnhancedCode {
    /// Parses `"5.7.1"`; class must be 2, 4 or 5, and each part at most three digits.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('.');
        let class = it.next()?;
        let subject = it.next()?;
        let detail = it.next()?;
        if it.next().is_some() {
            return None;
        }
        let num = |p: &str| -> Option<u16> {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let class = num(class)?;
        if !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(EnhancedCode(class as u8, num(subject)?, num(detail)?))
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply: `code`, optional enhanced code, text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    enhanced: Option<EnhancedCode>,
    lines: Vec<String>,
}

impl Reply {
    /// A reply with a single line of text. `code` must be 200..=599.
    pub fn new(code: u16, enhanced: Option<EnhancedCode>, text: impl AsRef<str>) -> Self {
        Self::multiline(code, enhanced, text.as_ref().split('\n'))
    }

    /// A reply with several lines; each is cleaned, empty trailing lines are dropped.
    pub fn multiline<I, S>(code: u16, enhanced: Option<EnhancedCode>, lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        assert!((200..600).contains(&code), "reply code {code} out of range");
        let class = (code / 100) as u8;
        let enhanced = enhanced.map(|e| EnhancedCode(class, e.1, e.2));
        let mut lines: Vec<String> = lines.into_iter().take(MAX_REPLY_LINES).map(|l| clean_text(l.as_ref())).collect();
        while lines.len() > 1 && lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        if lines.is_empty() {
            lines.push(String::new());
        }
        Reply { code, enhanced, lines }
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Whether this is a 4xx or 5xx reply.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// The same reply without its enhanced code (for the greeting and the EHLO/HELO replies,
    /// which RFC 2034 section 3 exempts).
    pub fn without_enhanced(mut self) -> Self {
        self.enhanced = None;
        self
    }

    /// Appends the wire form (`250-first\r\n250 last\r\n`) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len() - 1;
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let mut s = format!("{}{}", self.code, sep);
            if let Some(e) = self.enhanced {
                s.push_str(&e.to_string());
                if !line.is_empty() {
                    s.push(' ');
                }
            }
            s.push_str(line);
            s.push_str("\r\n");
            out.extend_from_slice(s.as_bytes());
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write_to(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

/// Removes every control character (CR, LF, NUL, TAB, DEL, C1) and caps the length, so that a
/// text from anywhere (a plugin, a client's HELO name echoed back) is one harmless line.
pub fn clean_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REPLY_TEXT));
    for c in text.chars() {
        if c.is_control() {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_REPLY_TEXT {
            break;
        }
        out.push(c);
    }
    out
}

const fn e(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
    Some(EnhancedCode(class, subject, detail))
}

// ---- The fixed replies of the engine (no plugin involved). ----

pub fn syntax_error(what: &str) -> Reply {
    Reply::new(501, e(5, 5, 4), format!("Syntax error: {what}"))
}
pub fn command_unrecognized() -> Reply {
    Reply::new(500, e(5, 5, 1), "Unrecognized command")
}
pub fn command_not_implemented(verb: &str) -> Reply {
    Reply::new(502, e(5, 5, 1), format!("{verb} is not implemented"))
}
pub fn line_too_long(limit: usize) -> Reply {
    Reply::new(500, e(5, 5, 6), format!("Line too long (limit is {limit} octets with CRLF)"))
}
pub fn bare_newline_in_command() -> Reply {
    Reply::new(500, e(5, 5, 2), "Syntax error: command lines must end with CRLF")
}
pub fn bad_sequence(what: &str) -> Reply {
    Reply::new(503, e(5, 5, 1), what)
}
pub fn no_valid_recipients() -> Reply {
    Reply::new(554, e(5, 5, 1), "No valid recipients")
}
pub fn parameter_not_recognized(keyword: &str) -> Reply {
    Reply::new(555, e(5, 5, 4), format!("Parameter {keyword} is not recognized"))
}
pub fn too_many_recipients() -> Reply {
    Reply::new(452, e(4, 5, 3), "Too many recipients")
}
pub fn size_exceeds_limit(limit: u64) -> Reply {
    Reply::new(552, e(5, 3, 4), format!("Message size exceeds fixed limit of {limit} octets"))
}
pub fn message_too_big() -> Reply {
    Reply::new(552, e(5, 3, 4), "Message too big")
}
pub fn smtputf8_required() -> Reply {
    Reply::new(553, e(5, 6, 7), "Non-ASCII address requires the SMTPUTF8 extension")
}
pub fn bare_newline_in_data() -> Reply {
    Reply::new(550, e(5, 6, 0), "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)")
}
pub fn nul_in_data() -> Reply {
    Reply::new(550, e(5, 6, 0), "Message contains a NUL octet, which message text may not hold (RFC 5321 2.3.8)")
}
pub fn data_line_too_long(limit: usize) -> Reply {
    Reply::new(550, e(5, 6, 0), format!("Message has a line longer than {limit} octets"))
}
pub fn reset_ok() -> Reply {
    Reply::new(250, e(2, 0, 0), "OK")
}
pub fn early_talker() -> Reply {
    Reply::new(554, e(5, 5, 0), "Protocol violation: talking before the greeting")
}
pub fn data_before_354() -> Reply {
    Reply::new(554, e(5, 5, 0), "Improper pipelining: message data sent before the 354 reply")
}
pub fn too_many_errors() -> Reply {
    Reply::new(421, e(4, 7, 0), "Too many errors, closing connection")
}
pub fn command_timeout() -> Reply {
    Reply::new(421, e(4, 4, 2), "Timeout waiting for a command, closing connection")
}
pub fn command_deadline() -> Reply {
    Reply::new(421, e(4, 4, 2), "Command took too long, closing connection")
}
pub fn data_deadline() -> Reply {
    Reply::new(421, e(4, 4, 2), "Message took too long to send, closing connection")
}
/// BDAT without a valid chunk size: where its chunk ends is unknown, so the connection closes.
pub fn bdat_bad_size() -> Reply {
    Reply::new(501, e(5, 5, 4), "Syntax error: BDAT <chunk-size> [LAST]; closing connection")
}
/// A BDAT chunk larger than we would skip; the connection closes (its end cannot be found
/// without reading it).
pub fn bdat_chunk_too_big(limit: u64) -> Reply {
    Reply::new(
        552,
        e(5, 3, 4),
        format!("BDAT chunk exceeds the message size limit of {limit} octets; closing connection"),
    )
}
/// A BDAT chunk was taken and more may follow (RFC 3030 section 2).
pub fn bdat_chunk_received(size: u64) -> Reply {
    Reply::new(250, e(2, 0, 0), format!("{size} octets received"))
}
/// A BDAT chunk after a refused one of the same transaction (its octets were read and dropped).
pub fn bdat_after_failure() -> Reply {
    Reply::new(503, e(5, 5, 1), "An earlier BDAT chunk of this transaction was refused; send RSET")
}
pub fn invalid_characters() -> Reply {
    Reply::new(500, e(5, 5, 2), "Syntax error: control characters or invalid UTF-8 in command")
}
/// Whether a reply tells the client it spoke the protocol wrongly (these count towards
/// `max_errors`; policy rejections such as 550 do not).
pub fn is_protocol_error(code: u16) -> bool {
    matches!(code, 500..=504 | 555)
}
pub fn data_timeout() -> Reply {
    Reply::new(421, e(4, 4, 2), "Timeout waiting for message data, closing connection")
}
pub fn shutting_down() -> Reply {
    Reply::new(421, e(4, 3, 2), "Service shutting down, try again later")
}
pub fn too_many_connections() -> Reply {
    Reply::new(421, e(4, 7, 0), "Too many connections, try again later")
}
pub fn too_many_connections_from_ip() -> Reply {
    Reply::new(421, e(4, 7, 0), "Too many connections from your address, try again later")
}
pub fn local_error() -> Reply {
    Reply::new(451, e(4, 3, 0), "Local error in processing, try again later")
}
pub fn insufficient_storage() -> Reply {
    Reply::new(452, e(4, 3, 1), "Insufficient system storage, try again later")
}

// ---- STARTTLS (RFC 3207) ----

/// XCLIENT from a client that is not a trusted front end (Postfix's reply).
pub fn xclient_unauthorized() -> Reply {
    Reply::new(550, e(5, 7, 0), "Error: insufficient authorization")
}
pub fn starttls_ready() -> Reply {
    Reply::new(220, e(2, 0, 0), "Ready to start TLS")
}
pub fn tls_already_active() -> Reply {
    Reply::new(503, e(5, 5, 1), "TLS already active")
}

// ---- AUTH (RFC 4954); the outcome of the credential check is in `verdict.rs` ----

/// A SASL challenge: `334 <base64>` (no enhanced code: it is not a final reply).
pub fn sasl_challenge(challenge: &str) -> Reply {
    Reply::new(334, None, challenge)
}
pub fn auth_cancelled() -> Reply {
    Reply::new(501, e(5, 7, 0), "Authentication cancelled")
}
pub fn auth_bad_response() -> Reply {
    Reply::new(501, e(5, 5, 2), "Cannot decode the authentication response")
}
pub fn auth_response_too_long() -> Reply {
    Reply::new(500, e(5, 5, 6), "Authentication exchange line is too long")
}
pub fn auth_failed() -> Reply {
    Reply::new(535, e(5, 7, 8), "Authentication credentials invalid")
}
pub fn auth_mechanism_unknown() -> Reply {
    Reply::new(504, e(5, 5, 4), "Unrecognized authentication mechanism")
}
pub fn auth_encryption_required() -> Reply {
    Reply::new(538, e(5, 7, 11), "Encryption required for requested authentication mechanism")
}
/// A line a client sent for an AUTH exchange that was refused (see the server's
/// `connection/auth.rs`): ignored, never run as a command.
pub fn auth_response_ignored() -> Reply {
    Reply::new(503, e(5, 5, 1), "AUTH was refused: authentication response ignored")
}
pub fn auth_too_many_failures() -> Reply {
    Reply::new(454, e(4, 7, 0), "Too many failed authentication attempts, try again later")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_wire_form() {
        let r = Reply::multiline(250, None, ["a", "b", "c"]);
        assert_eq!(r.to_string(), "250-a\r\n250-b\r\n250 c\r\n");
    }

    #[test]
    fn enhanced_class_follows_code() {
        let r = Reply::new(451, Some(EnhancedCode(5, 7, 1)), "x");
        assert_eq!(r.to_string(), "451 4.7.1 x\r\n");
    }

    #[test]
    fn control_characters_never_reach_the_wire() {
        let r = Reply::new(550, None, "evil\r\n250 OK\0\x1b[31m");
        // The LF splits lines (qpsmtpd's multi-line convention), CR/NUL/ESC are dropped.
        assert_eq!(r.to_string(), "550-evil\r\n550 250 OK[31m\r\n");
        let long = "x".repeat(10_000);
        let r = Reply::new(550, None, &long);
        assert!(r.lines()[0].len() <= MAX_REPLY_TEXT);
        let many = "x\n".repeat(1000);
        assert_eq!(Reply::new(550, None, many).lines().len(), MAX_REPLY_LINES);
    }

    #[test]
    fn enhanced_code_parsing() {
        assert_eq!(EnhancedCode::parse("5.7.1"), Some(EnhancedCode(5, 7, 1)));
        assert_eq!(EnhancedCode::parse("4.10.999"), Some(EnhancedCode(4, 10, 999)));
        for bad in ["3.1.1", "5.7", "5.7.1.1", "5..1", "5.7.1000", "a.b.c", ""] {
            assert_eq!(EnhancedCode::parse(bad), None, "{bad}");
        }
    }
}

//! The client side of SMTP and LMTP, as pure data: reading a downstream server's replies
//! ([`ReplyReader`]: CRLF only, bounded lines, a multi-line reply's lines agreeing on their
//! code) and making what leaves us clean ([`OutboundMessage`]: CRLF only, every leading dot
//! stuffed, no bare CR or LF, lines within [`MAX_OUTBOUND_LINE`]), and XCLIENT's xtext.
//!
//! What a downstream sends is untrusted input like a client's: a bare LF, an endless line, a
//! reply of a thousand lines or one whose code is not three digits is a [`ReplyError`], never
//! a reply read two ways.

use crate::reply::EnhancedCode;

/// Longest reply line read from a downstream, CRLF included (RFC 5321 4.5.3.1.5 says 512; a
/// little room for servers that say more).
pub const MAX_REPLY_LINE: usize = 2048;
/// Most lines of one downstream reply (an EHLO reply has a dozen or two).
pub const MAX_REPLY_LINES: usize = 64;
/// Longest line we send, CRLF excluded (RFC 5321 4.5.3.1.6: 998 octets and CRLF).
pub const MAX_OUTBOUND_LINE: usize = 998;

/// One reply from a downstream: its code, the enhanced code of its first line (RFC 2034) if it
/// has one, and its lines' text (the enhanced code taken off the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamReply {
    pub code: u16,
    pub enhanced: Option<EnhancedCode>,
    pub lines: Vec<String>,
}

impl DownstreamReply {
    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx (354 after DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The lines joined by spaces, for a log line or a reply of ours.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

/// A downstream's reply that cannot be read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("a bare LF in the downstream's reply")]
    BareLf,
    #[error("a reply line longer than {MAX_REPLY_LINE} octets")]
    LineTooLong,
    #[error("a reply of more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    #[error("not a reply line: {0:?}")]
    Garbage(String),
}

/// Frames and parses replies from bytes as they arrive. Feed it with [`ReplyReader::feed`]
/// and take complete replies with [`ReplyReader::next_reply`].
#[derive(Debug, Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
    lines: Vec<String>,
    code: Option<u16>,
}

impl ReplyReader {
    pub fn new() -> ReplyReader {
        ReplyReader::default()
    }

    /// Adds bytes read from the downstream. The reader's buffer is bounded: more than a line
    /// without its CRLF is an error at the next [`next_reply`](ReplyReader::next_reply).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether bytes are buffered that no reply has taken yet (a reply that came unasked).
    pub fn has_pending(&self) -> bool {
        !self.buf.is_empty() || !self.lines.is_empty()
    }

    /// The next complete reply, `Ok(None)` if more bytes are needed.
    pub fn next_reply(&mut self) -> Result<Option<DownstreamReply>, ReplyError> {
        loop {
            let Some(lf) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() >= MAX_REPLY_LINE {
                    return Err(ReplyError::LineTooLong);
                }
                return Ok(None);
            };
            if lf + 1 > MAX_REPLY_LINE {
                return Err(ReplyError::LineTooLong);
            }
            if lf == 0 || self.buf[lf - 1] != b'\r' {
                return Err(ReplyError::BareLf);
            }
            let line: Vec<u8> = self.buf.drain(..=lf).collect();
            let line = &line[..line.len() - 2];
            if line.contains(&b'\r') {
                return Err(ReplyError::Garbage(String::from_utf8_lossy(line).into_owned()));
            }
            let garbage = || ReplyError::Garbage(String::from_utf8_lossy(line).chars().take(80).collect());
            if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&line[0]) {
                return Err(garbage());
            }
            let code = (line[0] - b'0') as u16 * 100 + (line[1] - b'0') as u16 * 10 + (line[2] - b'0') as u16;
            let last = match line.get(3) {
                None | Some(b' ') => true,
                Some(b'-') => false,
                Some(_) => return Err(garbage()),
            };
            if self.code.is_some_and(|c| c != code) {
                return Err(garbage());
            }
            self.code = Some(code);
            if self.lines.len() == MAX_REPLY_LINES {
                return Err(ReplyError::TooManyLines);
            }
            let text = line.get(4..).unwrap_or_default();
            self.lines.push(String::from_utf8_lossy(text).into_owned());
            if last {
                let mut lines = std::mem::take(&mut self.lines);
                self.code = None;
                let enhanced = split_enhanced(code, &mut lines[0]);
                return Ok(Some(DownstreamReply { code, enhanced, lines }));
            }
        }
    }
}

/// Takes an enhanced code of the reply's class off the front of `first`.
fn split_enhanced(code: u16, first: &mut String) -> Option<EnhancedCode> {
    let word = first.split(' ').next().unwrap_or_default();
    let e = EnhancedCode::parse(word)?;
    if e.0 as u16 != code / 100 {
        return None;
    }
    *first = first[word.len()..].trim_start().to_string();
    Some(e)
}

/// The ESMTP extensions a downstream offers, from its EHLO (or LHLO) reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub pipelining: bool,
    pub starttls: bool,
    pub eight_bit: bool,
    pub smtputf8: bool,
    /// SASL mechanisms of `AUTH`, upper case.
    pub auth: Vec<String>,
    /// The attributes of `XCLIENT`, upper case (`ADDR`, `NAME`, ...); `None`: not offered.
    pub xclient: Option<Vec<String>>,
    /// `SIZE`'s limit, if it gave one (0: none).
    pub size: Option<u64>,
}

impl Extensions {
    /// From the lines of a 250 EHLO reply (the first is the greeting and is skipped).
    pub fn parse(reply: &DownstreamReply) -> Extensions {
        let mut x = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else { continue };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => x.pipelining = true,
                "STARTTLS" => x.starttls = true,
                "8BITMIME" => x.eight_bit = true,
                "SMTPUTF8" => x.smtputf8 = true,
                "AUTH" => x.auth = words.map(str::to_ascii_uppercase).collect(),
                "XCLIENT" => x.xclient = Some(words.map(str::to_ascii_uppercase).collect()),
                "SIZE" => x.size = Some(words.next().and_then(|w| w.parse().ok()).unwrap_or(0)),
                _ => {}
            }
        }
        x
    }
}

/// xtext (RFC 3461 section 4), as XCLIENT's values are written: `+XX` for `+`, `=`, and
/// everything outside `!`..`~`.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Turns a message, fed in chunks of any size, into what goes on the wire after `DATA`'s 354:
/// every line ended by CRLF (a bare CR or a bare LF becomes CRLF), a dot at the start of a line
/// doubled, a line longer than [`MAX_OUTBOUND_LINE`] broken (with CRLF and a space while in the
/// header, so it stays a folded field; with CRLF in the body), and, from [`finish`](Self::finish),
/// the final line end and `.CRLF`. So the downstream reads exactly one message, and never a
/// line end or an end of data that was not meant as one.
#[derive(Debug)]
pub struct OutboundMessage {
    /// Octets on the current line so far.
    column: usize,
    /// The previous chunk ended with a CR whose LF may follow.
    pending_cr: bool,
    in_header: bool,
    /// The current line so far is empty (to find the header's end).
    line_empty: bool,
}

impl Default for OutboundMessage {
    fn default() -> Self {
        OutboundMessage { column: 0, pending_cr: false, in_header: true, line_empty: true }
    }
}

impl OutboundMessage {
    pub fn new() -> OutboundMessage {
        OutboundMessage::default()
    }

    /// Appends the wire form of `chunk` to `out`.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 8);
        for &b in chunk {
            if self.pending_cr {
                self.pending_cr = false;
                self.end_line(out);
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => self.end_line(out),
                _ => {
                    if self.column == MAX_OUTBOUND_LINE {
                        out.extend_from_slice(b"\r\n");
                        self.column = 0;
                        if self.in_header {
                            out.push(b' ');
                            self.column = 1;
                        }
                    }
                    if self.column == 0 && b == b'.' {
                        out.push(b'.');
                        self.column = 1;
                    }
                    out.push(b);
                    self.column += 1;
                    self.line_empty = false;
                }
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        if self.line_empty {
            self.in_header = false;
        }
        self.column = 0;
        self.line_empty = true;
    }

    /// Ends the message: the last line's CRLF if it lacks one, then `.CRLF`.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.end_line(out);
        }
        if self.column != 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Result<Vec<DownstreamReply>, ReplyError> {
        let mut r = ReplyReader::new();
        r.feed(bytes);
        let mut out = Vec::new();
        while let Some(reply) = r.next_reply()? {
            out.push(reply);
        }
        Ok(out)
    }

    #[test]
    fn replies_single_and_multiline() {
        let got =
            read_all(b"250-mx.example\r\n250-PIPELINING\r\n250 XCLIENT ADDR NAME\r\n550 5.1.1 <a@b>: no\r\n").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].code, 250);
        let x = Extensions::parse(&got[0]);
        assert!(x.pipelining && x.xclient == Some(vec!["ADDR".into(), "NAME".into()]));
        assert_eq!(got[1].enhanced, Some(EnhancedCode(5, 1, 1)));
        assert_eq!(got[1].lines, ["<a@b>: no"]);
        assert_eq!(read_all(b"354\r\n").unwrap()[0].lines, [""]);
    }

    #[test]
    fn replies_in_pieces() {
        let mut r = ReplyReader::new();
        r.feed(b"250-a\r");
        assert_eq!(r.next_reply(), Ok(None));
        r.feed(b"\n250 b\r\n");
        assert_eq!(r.next_reply().unwrap().unwrap().lines, ["a", "b"]);
    }

    #[test]
    fn bad_replies_are_errors() {
        assert_eq!(read_all(b"250 ok\n"), Err(ReplyError::BareLf));
        assert!(matches!(read_all(b"hello there\r\n"), Err(ReplyError::Garbage(_))));
        assert!(matches!(read_all(b"250-a\r\n251 b\r\n"), Err(ReplyError::Garbage(_))));
        assert!(matches!(read_all(b"250xok\r\n"), Err(ReplyError::Garbage(_))));
        assert!(matches!(read_all(b"650 ok\r\n"), Err(ReplyError::Garbage(_))));
        assert_eq!(read_all(&[b'2'; MAX_REPLY_LINE + 1]), Err(ReplyError::LineTooLong));
        assert_eq!(read_all(&b"250-x\r\n".repeat(MAX_REPLY_LINES + 1)), Err(ReplyError::TooManyLines));
    }

    fn encode(chunks: &[&[u8]]) -> Vec<u8> {
        let mut m = OutboundMessage::new();
        let mut out = Vec::new();
        for c in chunks {
            m.encode(c, &mut out);
        }
        m.finish(&mut out);
        out
    }

    #[test]
    fn outbound_is_clean() {
        assert_eq!(encode(&[b"A: b\r\n\r\n.hi\r\n..\r\nend\r\n"]), b"A: b\r\n\r\n..hi\r\n...\r\nend\r\n.\r\n");
        assert_eq!(encode(&[b"A: b\r", b"\n\r\nx\ny\rz"]), b"A: b\r\n\r\nx\r\ny\r\nz\r\n.\r\n");
        assert_eq!(encode(&[b"A: b\r\n\r\n.\r\n", b"more\r\n"]), b"A: b\r\n\r\n..\r\nmore\r\n.\r\n");
        assert_eq!(encode(&[b"A: b\r\n\r\nend\r"]), b"A: b\r\n\r\nend\r\n.\r\n");
        let long = [b'x'; 2000];
        let body = encode(&[b"A: b\r\n\r\n", &long]);
        assert!(body.split(|&b| b == b'\n').all(|l| l.len() <= MAX_OUTBOUND_LINE + 1));
        let header = encode(&[b"A: ", &long, b"\r\n\r\n"]);
        assert!(header.windows(3).any(|w| w == b"\r\n "), "a long header line is folded");
    }

    #[test]
    fn xtext_escapes() {
        assert_eq!(xtext("mx.example"), "mx.example");
        assert_eq!(xtext("a b+c=d\u{e9}"), "a+20b+2Bc+3Dd+C3+A9");
    }
}

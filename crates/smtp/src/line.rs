//! Command-line framing: where one command ends and the next begins.
//!
//! - A command line ends with CRLF and nothing else. A bare LF is reported as
//!   [`LineEvent::BareNewline`] (the session answers 500), never silently accepted, so the
//!   command stream and the DATA stream agree on what a line is.
//! - A line longer than the limit is reported once as [`LineEvent::TooLong`] and the rest of it
//!   is skipped up to its end; memory stays bounded by the limit, whatever the client sends.
//!
//! The reader works on the caller's buffer: [`LineReader::next`] looks at the bytes, and says
//! how many it consumed. It keeps only the "skipping an overlong line" flag between calls.

use memchr::memchr;

/// RFC 5321 4.5.3.1.4: 512 octets including CRLF.
pub const DEFAULT_MAX_COMMAND_LINE: usize = 512;

#[derive(Debug, PartialEq, Eq)]
pub enum LineEvent<'a> {
    /// A complete line, without its CRLF.
    Line(&'a [u8]),
    /// A line ended with a bare LF (no CR before it).
    BareNewline,
    /// A line exceeded the limit; its remaining bytes are being skipped.
    TooLong,
}

#[derive(Debug)]
pub struct LineReader {
    /// Maximum line length including CRLF.
    max: usize,
    /// We are inside an overlong line already reported; drop bytes up to its LF.
    skipping: bool,
}

impl LineReader {
    pub fn new(max: usize) -> Self {
        LineReader { max: max.max(3), skipping: false }
    }

    /// Looks for the next event in `buf`. Returns the number of bytes consumed and the event,
    /// or `(consumed, None)` when more data is needed (consumed bytes are skipped garbage).
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> (usize, Option<LineEvent<'a>>) {
        if self.skipping {
            return match memchr(b'\n', buf) {
                Some(i) => {
                    self.skipping = false;
                    (i + 1, None)
                }
                None => (buf.len(), None),
            };
        }
        match memchr(b'\n', buf) {
            Some(i) if i + 1 > self.max => {
                // The line is complete but too long: consume it, report it.
                (i + 1, Some(LineEvent::TooLong))
            }
            Some(i) => {
                if i == 0 || buf[i - 1] != b'\r' {
                    return (i + 1, Some(LineEvent::BareNewline));
                }
                (i + 1, Some(LineEvent::Line(&buf[..i - 1])))
            }
            None if buf.len() >= self.max => {
                self.skipping = true;
                (buf.len(), Some(LineEvent::TooLong))
            }
            None => (0, None),
        }
    }

    /// Changes the limit (AUTH's responses may be longer than commands); a line being skipped
    /// is still skipped to its end.
    pub fn set_max(&mut self, max: usize) {
        self.max = max.max(3);
    }

    /// True while the reader is skipping the tail of an overlong line.
    pub fn is_skipping(&self) -> bool {
        self.skipping
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_crlf_only() {
        let mut r = LineReader::new(512);
        let buf = b"NOOP\r\nQUIT\r\nPART";
        assert_eq!(r.next(buf), (6, Some(LineEvent::Line(b"NOOP"))));
        assert_eq!(r.next(&buf[6..]), (6, Some(LineEvent::Line(b"QUIT"))));
        assert_eq!(r.next(&buf[12..]), (0, None));
        assert_eq!(r.next(b"NOOP\nQUIT\r\n"), (5, Some(LineEvent::BareNewline)));
        // A bare CR is just a byte inside the line (the parser then refuses it).
        assert_eq!(r.next(b"NO\rOP\r\n"), (7, Some(LineEvent::Line(b"NO\rOP"))));
    }

    #[test]
    fn overlong_lines_are_reported_once_and_skipped() {
        let mut r = LineReader::new(10);
        // 11 octets with CRLF: one over.
        assert_eq!(r.next(b"123456789\r\n"), (11, Some(LineEvent::TooLong)));
        assert_eq!(r.next(b"12345678\r\n"), (10, Some(LineEvent::Line(b"12345678"))));
        // Arriving in pieces: reported as soon as the limit is passed, then skipped.
        assert_eq!(r.next(b"0123456789ab"), (12, Some(LineEvent::TooLong)));
        assert!(r.is_skipping());
        assert_eq!(r.next(b"more bytes"), (10, None));
        assert_eq!(r.next(b"end\r\nQUIT\r\n"), (5, None));
        assert_eq!(r.next(b"QUIT\r\n"), (6, Some(LineEvent::Line(b"QUIT"))));
    }
}

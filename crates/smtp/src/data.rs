//! DATA framing (RFC 5321 4.1.1.4 and 4.5.2): where a message ends, dot-unstuffing, and the
//! limits enforced while the message streams.
//!
//! The end of a message is `CRLF . CRLF` and nothing else. This is the SMTP-smuggling defence:
//! `LF . LF`, `LF . CRLF`, `CR . CR`, `CRLF . CR CRLF`, NUL around the dot and every other
//! look-alike are message content, so a message can never end early or be split in two.
//!
//! Policy for bare CR and bare LF inside a message (a CR not followed by LF, or an LF not
//! preceded by CR): the message is **rejected** with `550 5.6.0` once it has been read to its
//! real end. RFC 5321 2.3.8 forbids them; normalising them would mean guessing what the sender
//! meant, and a message that a downstream server could frame differently is exactly what
//! smuggling attacks rely on. Lines longer than the text-line limit (RFC 5321 4.5.3.1.6: 1000
//! octets with CRLF, configurable) are rejected the same way, and a message over the size limit
//! gets `552 5.3.4`. In all three cases the rest of the message is read and discarded (so the
//! client sees the reply at the right moment), and nothing more is written out.
//!
//! NUL octets (RFC 5321 2.3.8 and RFC 6152: 7BIT and 8BITMIME text has none) are the
//! operator's choice (`nul_in_data` in `config/limits`): **refused** by default, with `550
//! 5.6.0` once the message is read to its end, as a bare CR or LF is; or kept as they are
//! ([`DataReader::refusing_nul`]).
//!
//! The reader keeps a few bytes of state and no buffer of its own: memory does not grow with
//! the message.

use memchr::memchr2;

/// RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF.
pub const DEFAULT_MAX_TEXT_LINE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Just after a CRLF (or at the start of the message).
    LineStart,
    /// Inside a line.
    Text,
    /// Saw CR; a LF makes a line end.
    Cr,
    /// Saw `.` at the start of a line.
    Dot,
    /// Saw `.` CR at the start of a line; a LF ends the message.
    DotCr,
    Done,
}

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEnd {
    /// The message is whole and within every limit; `size` octets were written out.
    Complete { size: u64 },
    /// The message passed the size limit.
    TooBig,
    /// The message held a bare CR or bare LF.
    BareNewline,
    /// A line passed the text-line limit.
    LineTooLong,
    /// The message held a NUL octet, and NULs are refused.
    Nul,
}

#[derive(Debug)]
pub struct DataReader {
    state: State,
    /// Maximum message size in octets (after unstuffing); 0 = no limit.
    max_size: u64,
    /// Maximum text line including CRLF; 0 = no limit.
    max_line: usize,
    size: u64,
    line_len: usize,
    too_big: bool,
    bare_newline: bool,
    line_too_long: bool,
    refuse_nul: bool,
    nul: bool,
}

impl DataReader {
    pub fn new(max_size: u64, max_line: usize) -> Self {
        DataReader {
            state: State::LineStart,
            max_size,
            max_line,
            size: 0,
            line_len: 0,
            too_big: false,
            bare_newline: false,
            line_too_long: false,
            refuse_nul: false,
            nul: false,
        }
    }

    /// The same reader, refusing a message with a NUL octet (`true`) or keeping it as it is.
    pub fn refusing_nul(mut self, refuse: bool) -> Self {
        self.refuse_nul = refuse;
        self
    }

    /// Octets of message content so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the message is already known to be rejected (output has stopped).
    pub fn is_rejected(&self) -> bool {
        self.too_big || self.bare_newline || self.line_too_long || self.nul
    }

    /// Consumes bytes from `input`, appending unstuffed message content to `out`.
    /// Returns how many bytes were consumed and, once the terminating `CRLF.CRLF` has been
    /// seen, how the message ended. Bytes after the terminator are not consumed: they are the
    /// next (pipelined) command.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Option<DataEnd>) {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::Text => {
                    // Fast path: copy everything up to the next CR or LF at once.
                    let run = memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                    if run > 0 {
                        if self.refuse_nul && memchr::memchr(0, &input[i..i + run]).is_some() {
                            self.nul = true;
                        }
                        // Emit exactly up to the octet that breaks the line limit, so that
                        // what comes out never depends on how the input was segmented.
                        let allowed = match self.max_line {
                            0 => run,
                            max => max.saturating_sub(self.line_len).min(run),
                        };
                        self.emit(&input[i..i + allowed], out);
                        if allowed < run {
                            self.line_too_long = true;
                            self.emit(&input[i + allowed..i + run], out);
                        }
                        self.line_len += run;
                        i += run;
                        continue;
                    }
                    i += 1;
                    if b == b'\r' {
                        self.state = State::Cr;
                    } else {
                        // A LF with no CR before it: content, flagged, and NOT a line start.
                        self.bare_newline = true;
                        self.line_len += 1;
                        self.emit(b"\n", out);
                    }
                }
                State::LineStart => {
                    if b == b'.' {
                        i += 1;
                        self.line_len = 1;
                        self.state = State::Dot;
                    } else {
                        self.line_len = 0;
                        self.state = State::Text;
                    }
                }
                State::Cr => {
                    if b == b'\n' {
                        i += 1;
                        self.line_len += 2;
                        self.check_line();
                        self.emit(b"\r\n", out);
                        self.line_len = 0;
                        self.state = State::LineStart;
                    } else {
                        // A CR not followed by LF: content, flagged; `b` is looked at again.
                        self.bare_newline = true;
                        self.line_len += 1;
                        self.emit(b"\r", out);
                        self.state = State::Text;
                    }
                }
                State::Dot => {
                    if b == b'\r' {
                        i += 1;
                        self.state = State::DotCr;
                    } else {
                        // Dot-unstuffing: the leading dot is dropped, the rest is content.
                        self.state = State::Text;
                    }
                }
                State::DotCr => {
                    if b == b'\n' {
                        i += 1;
                        self.state = State::Done;
                        return (i, Some(self.end()));
                    }
                    // `.` CR x: the dot was stuffing, the CR is bare.
                    self.bare_newline = true;
                    self.line_len += 1;
                    self.emit(b"\r", out);
                    self.state = State::Text;
                }
            }
        }
        (i, None)
    }

    fn end(&self) -> DataEnd {
        if self.too_big {
            DataEnd::TooBig
        } else if self.bare_newline {
            DataEnd::BareNewline
        } else if self.nul {
            DataEnd::Nul
        } else if self.line_too_long {
            DataEnd::LineTooLong
        } else {
            DataEnd::Complete { size: self.size }
        }
    }

    fn check_line(&mut self) {
        if self.max_line != 0 && self.line_len > self.max_line {
            self.line_too_long = true;
        }
    }

    /// Appends message content to `out`, unless the message is already rejected; output stops
    /// at exactly the octet that breaks the size limit.
    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let before = self.size;
        self.size += bytes.len() as u64;
        let mut allowed = bytes.len();
        if self.max_size != 0 && self.size > self.max_size {
            allowed = self.max_size.saturating_sub(before).min(bytes.len() as u64) as usize;
        }
        if !self.is_rejected() {
            out.extend_from_slice(&bytes[..allowed]);
        }
        if allowed < bytes.len() {
            self.too_big = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every position in `splits`, returns (content, end, consumed).
    fn run(input: &[u8], chunk: usize, max_size: u64, max_line: usize) -> (Vec<u8>, Option<DataEnd>, usize) {
        let mut r = DataReader::new(max_size, max_line);
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + chunk).min(input.len());
            // The caller keeps unconsumed bytes; emulate by offering from `pos`.
            let (n, done) = r.feed(&input[pos..end], &mut out);
            pos += n;
            if done.is_some() {
                return (out, done, pos);
            }
            if n == 0 && end == input.len() {
                break;
            }
        }
        (out, None, pos)
    }

    fn every_split(input: &[u8]) -> (Vec<u8>, Option<DataEnd>, usize) {
        let whole = run(input, input.len().max(1), 0, 1000);
        for chunk in 1..8 {
            assert_eq!(run(input, chunk, 0, 1000), whole, "chunk size {chunk}");
        }
        whole
    }

    #[test]
    fn ends_only_on_crlf_dot_crlf() {
        let (out, end, n) = every_split(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
        assert_eq!(out, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(end, Some(DataEnd::Complete { size: 21 }));
        assert_eq!(n, 24, "the pipelined QUIT is left for the command reader");
        assert_eq!(every_split(b".\r\n"), (vec![], Some(DataEnd::Complete { size: 0 }), 3));
    }

    #[test]
    fn dot_unstuffing() {
        let (out, end, _) = every_split(b"..leading\r\n...\r\n.x\r\n.\r\n");
        assert_eq!(out, b".leading\r\n..\r\nx\r\n");
        assert!(matches!(end, Some(DataEnd::Complete { .. })));
    }

    #[test]
    fn smuggling_look_alikes_never_end_the_message() {
        use DataEnd::*;
        let complete = Complete { size: 0 };
        for (fake, verdict) in [
            (&b"a\n.\nMAIL FROM:<x@y>\r\n"[..], BareNewline),
            (b"a\n.\r\nMAIL FROM:<x@y>\r\n", BareNewline),
            (b"a\r.\rMAIL FROM:<x@y>\r\n", BareNewline),
            (b"a\r\n.\r\r\nMAIL FROM:<x@y>\r\n", BareNewline),
            (b"a\r\n.\n\r\nMAIL FROM:<x@y>\r\n", BareNewline),
            (b"a\r\n.\r.\r\nMAIL FROM:<x@y>\r\n", BareNewline),
            (b"a\r\n\0.\r\nMAIL FROM:<x@y>\r\n", complete),
            (b"a\r\n.\0\r\nMAIL FROM:<x@y>\r\n", complete),
            (b"a\r\n\r.\r\nMAIL FROM:<x@y>\r\n", BareNewline),
        ] {
            let name = String::from_utf8_lossy(fake);
            let (_, end, _) = every_split(fake);
            assert_eq!(end, None, "{name:?} ended the message");
            let msg = [fake, b"\r\n.\r\n"].concat();
            let (_, end, n) = every_split(&msg);
            assert_eq!(n, msg.len(), "{name:?}");
            match (end, verdict) {
                (Some(Complete { .. }), Complete { .. }) => {}
                (e, v) => assert_eq!(e, Some(v), "{name:?}"),
            }
        }
    }

    #[test]
    fn size_limit_is_enforced_while_streaming() {
        let msg = [b"x".repeat(100), b"\r\n.\r\n".to_vec()].concat();
        let (out, end, n) = run(&msg, 7, 50, 1000);
        assert_eq!(end, Some(DataEnd::TooBig));
        assert!(out.len() <= 50, "output stops at the limit");
        assert_eq!(n, msg.len(), "the rest is still read to the real end");
        let (_, end, _) = run(&msg, 7, 102, 1000);
        assert_eq!(end, Some(DataEnd::Complete { size: 102 }));
    }

    #[test]
    fn output_never_depends_on_segmentation() {
        // Found by the fuzzer: a long line without CR/LF, cut into chunks, used to emit the
        // part before the limit only when it arrived in pieces.
        let crash = [b"x".repeat(1005)].concat();
        for limit in [(0, 1000), (100, 0), (100, 1000)] {
            let whole = run(&crash, crash.len(), limit.0, limit.1);
            for chunk in [1, 3, 7, 64, 999] {
                assert_eq!(run(&crash, chunk, limit.0, limit.1), whole, "chunk {chunk}, limits {limit:?}");
            }
        }
    }

    #[test]
    fn nul_is_refused_or_kept_as_the_operator_chose() {
        for msg in [&b"a\0b\r\n.\r\n"[..], b"\0\r\n.\r\n", b".\0\r\n.\r\n", b"x\r\n\0.\r\n.\r\n"] {
            for chunk in [1, 2, 64] {
                let mut r = DataReader::new(0, 1000).refusing_nul(true);
                let (mut out, mut pos) = (Vec::new(), 0);
                let end = loop {
                    let end = (pos + chunk).min(msg.len());
                    let (n, done) = r.feed(&msg[pos..end], &mut out);
                    pos += n;
                    if let Some(d) = done {
                        break d;
                    }
                };
                assert_eq!((end, pos), (DataEnd::Nul, msg.len()), "{msg:?} read to its end and refused");
            }
            assert!(matches!(run(msg, 64, 0, 1000).1, Some(DataEnd::Complete { .. })), "kept: {msg:?}");
        }
    }

    #[test]
    fn text_line_limit_counts_crlf() {
        let ok = [b"x".repeat(998), b"\r\n.\r\n".to_vec()].concat();
        assert!(matches!(run(&ok, 64, 0, 1000).1, Some(DataEnd::Complete { .. })));
        let long = [b"x".repeat(999), b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(run(&long, 64, 0, 1000).1, Some(DataEnd::LineTooLong));
        assert!(matches!(run(&long, 64, 0, 0).1, Some(DataEnd::Complete { .. })));
    }
}

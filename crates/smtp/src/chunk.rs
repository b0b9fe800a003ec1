//! BDAT framing (RFC 3030): a message sent in chunks, each exactly as many octets as its BDAT
//! line says, with no dot-stuffing and no end marker (the chunk of `BDAT n LAST` is the last).
//! What reaches the spool obeys DATA's rules ([`crate::data`]): the same size limit; in a
//! message declared 7BIT or 8BITMIME no bare CR or LF, no line over the text-line limit and
//! (by the operator's choice) no NUL. A CR that ends one chunk may be followed by the LF that
//! begins the next. `BODY=BINARYMIME` (RFC 3030 section 3) lifts every rule but the size.
//!
//! Like [`crate::data::DataReader`], output stops at the first octet that breaks a rule, and
//! the rest of the message is only counted; the server reads each chunk whole whatever it holds,
//! so the chunk framing is never lost.

use crate::data::DataEnd;

#[derive(Debug)]
pub struct ChunkReader {
    max_size: u64,
    max_line: usize,
    /// Text rules apply (7BIT, 8BITMIME); `false` for BINARYMIME.
    text: bool,
    refuse_nul: bool,
    size: u64,
    line_len: usize,
    /// The last octet so far was a CR (its LF may come in the next chunk).
    cr: bool,
    /// That CR is not written out yet: it is, once its LF comes (so what is written never
    /// depends on where the input was cut).
    held_cr: bool,
    failure: Option<DataEnd>,
}

impl ChunkReader {
    /// `max_size` and `max_line` as for DATA (0 = no limit); `binary` for BODY=BINARYMIME.
    pub fn new(max_size: u64, max_line: usize, binary: bool, refuse_nul: bool) -> Self {
        ChunkReader {
            max_size,
            max_line,
            text: !binary,
            refuse_nul,
            size: 0,
            line_len: 0,
            cr: false,
            held_cr: false,
            failure: None,
        }
    }

    /// Octets of message so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Why the message is refused, as soon as that is known.
    pub fn failure(&self) -> Option<DataEnd> {
        self.failure
    }

    /// Takes `input` (part of a chunk), appending what may be kept to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        if std::mem::take(&mut self.held_cr) && input[0] == b'\n' && self.failure.is_none() {
            out.push(b'\r');
        }
        let mut kept = input.len();
        for (i, &b) in input.iter().enumerate() {
            if self.failure.is_some() {
                kept = kept.min(i);
                break;
            }
            self.size += 1;
            if self.max_size != 0 && self.size > self.max_size {
                self.fail(DataEnd::TooBig, &mut kept, i);
                continue;
            }
            if !self.text {
                continue;
            }
            match (self.cr, b) {
                (true, b'\n') => {
                    self.cr = false;
                    self.line_len = 0;
                    continue;
                }
                (true, _) => self.fail(DataEnd::BareNewline, &mut kept, i.saturating_sub(1)),
                (false, b'\n') => self.fail(DataEnd::BareNewline, &mut kept, i),
                (false, 0) if self.refuse_nul => self.fail(DataEnd::Nul, &mut kept, i),
                _ => {}
            }
            self.cr = b == b'\r';
            self.line_len += 1;
            // The line limit counts the CRLF: a line's text may be `max_line - 2` octets.
            if self.max_line != 0 && !self.cr && self.line_len + 2 > self.max_line {
                self.fail(DataEnd::LineTooLong, &mut kept, i);
            }
        }
        if self.failure.is_none() {
            kept = input.len();
            if self.cr {
                kept -= 1;
                self.held_cr = true;
            }
        }
        out.extend_from_slice(&input[..kept]);
    }

    fn fail(&mut self, why: DataEnd, kept: &mut usize, at: usize) {
        if self.failure.is_none() {
            self.failure = Some(why);
            *kept = (*kept).min(at);
        }
    }

    /// The last chunk is in: how the message ended (a CR at its very end is a bare CR).
    pub fn finish(&mut self) -> DataEnd {
        if self.text && self.cr && self.failure.is_none() {
            self.failure = Some(DataEnd::BareNewline);
        }
        self.failure.unwrap_or(DataEnd::Complete { size: self.size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` (each split into `piece`-octet reads); returns the output and the end.
    fn run(chunks: &[&[u8]], piece: usize, reader: ChunkReader) -> (Vec<u8>, DataEnd) {
        let mut r = reader;
        let mut out = Vec::new();
        for c in chunks {
            for p in c.chunks(piece.max(1)) {
                r.feed(p, &mut out);
            }
        }
        let end = r.finish();
        (out, end)
    }

    fn text() -> ChunkReader {
        ChunkReader::new(100, 20, false, true)
    }

    #[test]
    fn chunks_join_into_the_message_whatever_their_boundaries() {
        let msg = b"Subject: x\r\n\r\n.a dot\r\n";
        for at in 0..=msg.len() {
            let (a, b) = msg.split_at(at);
            for piece in [1, 3, 100] {
                let (out, end) = run(&[a, b], piece, text());
                assert_eq!(out, msg, "no unstuffing, nothing added");
                assert_eq!(end, DataEnd::Complete { size: msg.len() as u64 });
            }
        }
    }

    #[test]
    fn text_rules_are_datas() {
        assert_eq!(run(&[b"a\nb\r\n"], 1, text()).1, DataEnd::BareNewline);
        assert_eq!(run(&[b"a\rb\r\n"], 1, text()).1, DataEnd::BareNewline);
        assert_eq!(run(&[b"a\r"], 1, text()).1, DataEnd::BareNewline, "a CR at the very end");
        assert_eq!(run(&[b"a\r", b"\nb\r\n"], 1, text()).1, DataEnd::Complete { size: 6 });
        assert_eq!(run(&[b"a\0b\r\n"], 1, text()).1, DataEnd::Nul);
        assert_eq!(run(&[b"a\0b\r\n"], 1, ChunkReader::new(100, 20, false, false)).1, DataEnd::Complete { size: 5 });
        let line = [b"x".repeat(18), b"\r\n".to_vec()].concat();
        assert_eq!(run(&[&line], 1, text()).1, DataEnd::Complete { size: 20 }, "20 with CRLF is allowed");
        let long = [b"x".repeat(19), b"\r\n".to_vec()].concat();
        assert_eq!(run(&[&long], 1, text()).1, DataEnd::LineTooLong);
        let (out, end) = run(&[&b"y".repeat(101)], 7, ChunkReader::new(100, 0, false, true));
        assert_eq!((out.len(), end), (100, DataEnd::TooBig), "output stops at the limit");
        assert_eq!(
            run(&[&b"y".repeat(100)], 7, ChunkReader::new(100, 0, false, true)).1,
            DataEnd::Complete { size: 100 }
        );
    }

    #[test]
    fn binarymime_keeps_every_octet_but_not_past_the_size() {
        let binary = b"\0\r\n\n\r\x7f\xff".repeat(5);
        let (out, end) = run(&[&binary], 2, ChunkReader::new(100, 20, true, true));
        assert_eq!((out, end), (binary.clone(), DataEnd::Complete { size: 35 }));
        assert_eq!(run(&[&binary, &binary, &binary], 5, ChunkReader::new(100, 20, true, true)).1, DataEnd::TooBig);
    }

    #[test]
    fn output_stops_at_the_first_broken_rule_at_every_segmentation() {
        // The second found by the bdat fuzz target: a bare CR at the end of a read.
        for msg in [&b"ok\r\nbad\nmore text\r\n"[..], b"a\rb\nNOOP\r\n", b"a\r\nb\r", b"x\r\r\n"] {
            let whole = run(&[msg], 100, text());
            for piece in 1..8 {
                assert_eq!(run(&[msg], piece, text()), whole, "{msg:?} in pieces of {piece}");
            }
        }
        assert_eq!(run(&[b"ok\r\nbad\nmore text\r\n"], 1, text()).0, b"ok\r\nbad");
        assert_eq!(run(&[b"a\rb\n"], 1, text()).0, b"a");
    }
}

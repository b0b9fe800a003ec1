//! The message as plugins see it: the received message (in memory, or in its spool file), with
//! header edits applied on the fly.
//!
//! The header block (at most [`MAX_HEADER`] octets) is read once into one buffer and parsed
//! into fields that are ranges into it (12 octets a field, however short the field: a header of
//! many tiny fields costs little more than its size). Fields plugins add are rendered into a
//! second buffer, also as ranges. Reads serve the header from memory (the received bytes while
//! nothing was edited, a rendering of the fields after an edit) and the body straight from
//! where the message is, in bounded chunks. Unedited fields keep their exact original bytes.
//!
//! What a message view can hold: the received header (`MAX_HEADER`), the added fields (their
//! live bytes count against `MAX_HEADER` too; dead ones are compacted away), one rendering
//! (`MAX_HEADER`) and at most [`MAX_FIELDS`] field ranges: about 3.2 MiB at worst, one view per
//! connection.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use wasmtpd_smtp::{Content, Message};

use crate::bindings::host::Header;

/// Largest header block we parse (and let plugins grow it to).
pub const MAX_HEADER: usize = 1024 * 1024;
/// Most fields a header is parsed into, and may grow to. Real mail has a few dozen (a Received
/// chain is cut at about 100 hops by loop detection); 10,000 fields cost 120 KiB of ranges. As
/// with a header larger than `MAX_HEADER`, parsing stops at the cap and the rest of the block is
/// read as body (its bytes are unchanged).
pub const MAX_FIELDS: usize = 10_000;
/// Largest read a plugin gets in one call.
pub const MAX_READ: u32 = 64 * 1024;

/// One header field, as a range of its buffer (the received header, or the added fields):
/// `start..colon` is the name, `colon + 1..end - 2` the value, `end - 2..end` its CRLF.
#[derive(Debug, Clone, Copy)]
struct Field {
    start: u32,
    colon: u32,
    end: u32,
}

impl Field {
    fn name(self, buf: &[u8]) -> &[u8] {
        &buf[self.start as usize..self.colon as usize]
    }

    /// The value as plugins see it: continuation lines joined with their CRLF, the one space
    /// after the colon left out.
    fn value(self, buf: &[u8]) -> &[u8] {
        let v = &buf[self.colon as usize + 1..self.end as usize - 2];
        v.strip_prefix(b" ").unwrap_or(v)
    }

    fn raw(self, buf: &[u8]) -> &[u8] {
        &buf[self.start as usize..self.end as usize]
    }

    fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    fn header(self, buf: &[u8]) -> Header {
        Header {
            name: String::from_utf8_lossy(self.name(buf)).into_owned(),
            value: String::from_utf8_lossy(self.value(buf)).into_owned(),
        }
    }
}

/// The authserv-id of an `Authentication-Results` value: what comes before its first `;`,
/// without spaces, comments (`(...)`) and the version that may follow the id.
fn authserv_id(value: &[u8]) -> &[u8] {
    let end = value.iter().position(|&b| b == b';' || b == b'(').unwrap_or(value.len());
    let id = value[..end].trim_ascii();
    let id_end = id.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(id.len());
    &id[..id_end]
}

/// Where the received bytes are read from.
enum Source {
    Memory(Arc<[u8]>),
    File(File),
}

impl Source {
    /// Reads at most `buf.len()` octets at `pos`; fewer only at the end.
    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::Memory(m) => {
                let start = (pos as usize).min(m.len());
                let n = buf.len().min(m.len() - start);
                buf[..n].copy_from_slice(&m[start..start + n]);
                Ok(n)
            }
            Source::File(f) => {
                f.seek(SeekFrom::Start(pos))?;
                let mut filled = 0;
                while filled < buf.len() {
                    match f.read(&mut buf[filled..])? {
                        0 => break,
                        n => filled += n,
                    }
                }
                Ok(filled)
            }
        }
    }
}

pub struct MessageView {
    source: Source,
    /// The start of the message as received: the header block, at most `MAX_HEADER` octets.
    head: Vec<u8>,
    /// The received fields still in the header, in order (ranges of `head`).
    fields: Vec<Field>,
    /// Fields added by plugins, rendered `Name: value\r\n` back to back (removed ones stay
    /// until the buffer is compacted).
    added: Vec<u8>,
    /// The added fields, oldest first (ranges of `added`); each new one goes on top.
    top: Vec<Field>,
    /// Whether a blank line separated the header from the body.
    separator: bool,
    body_offset: u64,
    file_size: u64,
    /// Octets of the header as plugins read it, separator included.
    header_len: usize,
    /// Whether a plugin changed the header (else it is served from `head` as received).
    edited: bool,
    /// The edited header, rendered on the first read after an edit.
    rendered: Option<Vec<u8>>,
}

impl MessageView {
    pub fn open(message: &Message) -> Result<MessageView, String> {
        let mut source = match &message.content {
            Content::Memory(m) => Source::Memory(m.clone()),
            Content::File(path) => Source::File(File::open(path).map_err(|e| format!("cannot open the message: {e}"))?),
        };
        let file_size = message.size;
        let mut head = vec![0; file_size.min(MAX_HEADER as u64) as usize];
        let n = source.read_at(0, &mut head).map_err(|e| e.to_string())?;
        head.truncate(n);
        let (fields, separator, header_len) = parse_header(&head);
        head.truncate(header_len);
        head.shrink_to_fit();
        Ok(MessageView {
            source,
            head,
            fields,
            added: Vec::new(),
            top: Vec::new(),
            separator,
            body_offset: header_len as u64,
            file_size,
            header_len,
            edited: false,
            rendered: None,
        })
        .and_then(|mut view| {
            if let Some(value) = &message.authentication_results {
                view.add_authentication_results(value)?;
            }
            Ok(view)
        })
    }

    /// The header as plugins read it.
    fn header_bytes(&mut self) -> &[u8] {
        if !self.edited {
            return &self.head;
        }
        self.rendered.get_or_insert_with(|| {
            let mut out = Vec::with_capacity(self.header_len);
            for f in self.top.iter().rev() {
                out.extend_from_slice(f.raw(&self.added));
            }
            for f in &self.fields {
                out.extend_from_slice(f.raw(&self.head));
            }
            if self.separator {
                out.extend_from_slice(b"\r\n");
            }
            out
        })
    }

    pub fn headers(&self) -> Vec<Header> {
        let top = self.top.iter().rev().map(|f| f.header(&self.added));
        top.chain(self.fields.iter().map(|f| f.header(&self.head))).collect()
    }

    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
            return Err(format!("{name:?} is not a header field name"));
        }
        // No CR, LF or other control: a plugin cannot add a second field or end the header.
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err("header values may not contain control characters".into());
        }
        let len = name.len() + value.len() + 4;
        if self.header_len + len > MAX_HEADER {
            return Err(format!("the header would exceed {MAX_HEADER} octets"));
        }
        if self.top.len() + self.fields.len() >= MAX_FIELDS {
            return Err(format!("the header already has {MAX_FIELDS} fields"));
        }
        if self.added.len() + len > MAX_HEADER {
            self.compact_added();
        }
        let start = self.added.len();
        self.added.extend_from_slice(name.as_bytes());
        let colon = self.added.len();
        self.added.extend_from_slice(b": ");
        self.added.extend_from_slice(value.as_bytes());
        self.added.extend_from_slice(b"\r\n");
        self.top.push(Field { start: start as u32, colon: colon as u32, end: self.added.len() as u32 });
        self.header_len += len;
        if !self.separator && self.top.len() + self.fields.len() == 1 && self.body_offset == 0 && self.file_size > 0 {
            // A message without a header gets one: the blank line keeps its text the body.
            self.separator = true;
            self.header_len += 2;
        }
        self.edited();
        Ok(())
    }

    pub fn remove_header(&mut self, name: &str) -> u32 {
        self.remove_fields(|field_name, _| field_name.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// Removes every field for which `matches(name, value)` holds; returns how many.
    fn remove_fields(&mut self, matches: impl Fn(&[u8], &[u8]) -> bool) -> u32 {
        let before = self.top.len() + self.fields.len();
        let mut gone = 0;
        let keep = |f: &Field, buf: &[u8], gone: &mut usize| {
            let hit = matches(f.name(buf), f.value(buf));
            if hit {
                *gone += f.len();
            }
            !hit
        };
        let added = &self.added;
        self.top.retain(|f| keep(f, added, &mut gone));
        let head = &self.head;
        self.fields.retain(|f| keep(f, head, &mut gone));
        let removed = (before - self.top.len() - self.fields.len()) as u32;
        if removed > 0 {
            self.header_len -= gone;
            self.edited();
        }
        removed
    }

    /// The server's own `Authentication-Results` field (RFC 8601), `value` starting with its
    /// authserv-id: fields that claim that id are forged (section 5) and removed, then ours is
    /// added on top.
    fn add_authentication_results(&mut self, value: &str) -> Result<(), String> {
        let id = authserv_id(value.as_bytes()).to_vec();
        self.remove_fields(|name, value| {
            name.eq_ignore_ascii_case(b"Authentication-Results") && authserv_id(value).eq_ignore_ascii_case(&id)
        });
        self.add_header("Authentication-Results", value)
    }

    /// Drops the bytes of removed added fields (their live bytes are at most `MAX_HEADER`).
    fn compact_added(&mut self) {
        let mut packed = Vec::with_capacity(self.top.iter().map(|f| f.len()).sum());
        for f in &mut self.top {
            let shift = f.start as usize - packed.len();
            packed.extend_from_slice(f.raw(&self.added));
            *f = Field { start: f.start - shift as u32, colon: f.colon - shift as u32, end: f.end - shift as u32 };
        }
        self.added = packed;
    }

    fn edited(&mut self) {
        self.edited = true;
        self.rendered = None;
    }

    pub fn size(&self) -> u64 {
        self.header_len as u64 + (self.file_size - self.body_offset)
    }

    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        let len = len.min(MAX_READ) as u64;
        let body_offset = self.body_offset;
        let body_len = self.file_size - body_offset;
        let header = self.header_bytes();
        let head = header.len() as u64;
        let mut out = Vec::with_capacity(len as usize);
        if offset < head {
            let end = (offset + len).min(head);
            out.extend_from_slice(&header[offset as usize..end as usize]);
        }
        let want = len - out.len() as u64;
        let body_pos = offset.max(head) - head;
        if want > 0 && body_pos < body_len {
            let start = out.len();
            out.resize(start + want as usize, 0);
            let n = self.source.read_at(body_offset + body_pos, &mut out[start..]).map_err(|e| e.to_string())?;
            out.truncate(start + n);
        }
        Ok(out)
    }
}

/// Splits the header block into fields. It ends at the first empty line (the separator), at
/// the first line that is neither a field nor a continuation (then the body starts there), or
/// at a new field past [`MAX_FIELDS`] (likewise).
fn parse_header(head: &[u8]) -> (Vec<Field>, bool, usize) {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < head.len() {
        let Some(nl) = head[pos..].windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let line = &head[pos..pos + nl];
        let end = (pos + nl + 2) as u32;
        if line.is_empty() {
            return (fields, true, pos + 2);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            match fields.last_mut() {
                Some(f) => f.end = end,
                None => break,
            }
        } else {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                break;
            };
            let name = &line[..colon];
            if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) || fields.len() == MAX_FIELDS {
                break;
            }
            fields.push(Field { start: pos as u32, colon: (pos + colon) as u32, end });
        }
        pos += nl + 2;
    }
    (fields, false, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same message in a file and in memory: both views must read alike.
    fn views(content: &[u8]) -> (MessageView, MessageView, std::path::PathBuf) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "wasmtpd-msg-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&p, content).unwrap();
        let size = content.len() as u64;
        let file =
            MessageView::open(&Message { content: Content::File(p.clone()), size, authentication_results: None })
                .unwrap();
        let memory = MessageView::open(&Message {
            content: Content::Memory(Arc::from(content)),
            size,
            authentication_results: None,
        })
        .unwrap();
        (file, memory, p)
    }

    fn all(v: &mut MessageView) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let chunk = v.read(out.len() as u64, 7).unwrap();
            if chunk.is_empty() {
                return out;
            }
            out.extend(chunk);
        }
    }

    #[test]
    fn reads_back_exactly_and_applies_edits() {
        let msg = b"Received: from a\r\n\tby b\r\nSubject:  odd  spacing\r\nX-Spam: yes\r\n\r\nbody line\r\n";
        let (file, memory, p) = views(msg);
        for v in [file, memory] {
            check_edits(v, msg);
        }
        let _ = std::fs::remove_file(p);
    }

    fn check_edits(mut v: MessageView, msg: &[u8]) {
        assert_eq!(all(&mut v), msg);
        assert_eq!(v.size(), msg.len() as u64);
        let h = v.headers();
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].value, "from a\r\n\tby b");
        assert_eq!(h[1].value, " odd  spacing");
        assert_eq!(v.remove_header("x-spam"), 1);
        v.add_header("X-Checked", "ok").unwrap();
        assert_eq!(
            all(&mut v),
            b"X-Checked: ok\r\nReceived: from a\r\n\tby b\r\nSubject:  odd  spacing\r\n\r\nbody line\r\n"
        );
        assert!(v.add_header("X-Evil", "a\r\nBcc: victim").is_err());
        assert!(v.add_header("Bad Name", "x").is_err());
    }

    #[test]
    fn the_servers_authentication_results_replace_forged_ones() {
        let msg = b"Authentication-Results: mx.example; spf=pass (forged)\r\n\
Authentication-Results: MX.example (v1); dkim=pass\r\n\
Authentication-Results: upstream.example; spf=fail\r\n\
Subject: hi\r\n\r\nbody\r\n";
        let message = Message {
            content: Content::Memory(Arc::from(&msg[..])),
            size: msg.len() as u64,
            authentication_results: Some("mx.example; spf=softfail smtp.mailfrom=a.example".into()),
        };
        let mut v = MessageView::open(&message).unwrap();
        assert_eq!(
            all(&mut v),
            b"Authentication-Results: mx.example; spf=softfail smtp.mailfrom=a.example\r\n\
Authentication-Results: upstream.example; spf=fail\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        assert_eq!(authserv_id(b" mx.example (comment) 1; none"), b"mx.example");
    }

    #[test]
    fn a_message_without_header_is_all_body() {
        let (file, memory, p) = views(b"no header here\r\njust text\r\n");
        for mut v in [file, memory] {
            assert!(v.headers().is_empty());
            assert_eq!(all(&mut v), b"no header here\r\njust text\r\n");
        }
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn a_header_of_tiny_fields_costs_about_its_size() {
        // 1 MiB of `a:` lines: 262,144 fields, each three allocations before (23 MiB in all).
        let header = b"a:\r\n".repeat(MAX_HEADER / 4);
        let msg = [&header[..], b"\r\nbody\r\n"].concat();
        let message = Message {
            content: Content::Memory(Arc::from(&msg[..])),
            size: msg.len() as u64,
            authentication_results: None,
        };
        let (view, peak) = counting::measure(|| MessageView::open(&message).unwrap());
        let held = counting::measure(|| drop(view)).1;
        assert!(peak <= 2 * MAX_HEADER, "parsing peaked at {peak} octets");
        assert!(held <= MAX_HEADER + MAX_HEADER / 4, "the view holds {held} octets");
        // Capped: the fields past MAX_FIELDS are read as body, and no byte is lost.
        let mut view = MessageView::open(&message).unwrap();
        assert_eq!(view.headers().len(), MAX_FIELDS);
        assert!(view.add_header("X-One-More", "x").unwrap_err().contains("10000 fields"));
        assert_eq!(all(&mut view), msg);
    }

    #[test]
    fn adding_and_removing_in_a_loop_stays_bounded() {
        let (_, mut v, p) = views(b"Subject: s\r\n\r\nbody\r\n");
        let value = "v".repeat(60_000);
        for _ in 0..100 {
            for _ in 0..10 {
                v.add_header("X-Churn", &value).unwrap();
            }
            assert_eq!(v.remove_header("x-churn"), 10);
        }
        assert!(v.added.capacity() <= 2 * MAX_HEADER, "{} octets of added fields", v.added.capacity());
        v.add_header("X-Last", "1").unwrap();
        assert_eq!(all(&mut v), b"X-Last: 1\r\nSubject: s\r\n\r\nbody\r\n");
        assert_eq!(v.size(), all(&mut v).len() as u64);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn a_header_on_a_message_without_one_keeps_the_body_a_body() {
        let (file, memory, p) = views(b"just text\r\n");
        for mut v in [file, memory] {
            v.add_header("X-A", "1").unwrap();
            assert_eq!(all(&mut v), b"X-A: 1\r\n\r\njust text\r\n");
            assert_eq!(v.size(), 21);
            assert_eq!(v.headers()[0].name, "X-A");
        }
        let _ = std::fs::remove_file(p);
    }

    /// Counts the heap octets allocated on the current thread (tests run on many threads).
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static LIVE: Cell<isize> = const { Cell::new(0) };
            static PEAK: Cell<isize> = const { Cell::new(0) };
        }

        struct Counting;

        fn add(n: isize) {
            let _ = LIVE.try_with(|l| {
                l.set(l.get() + n);
                let _ = PEAK.try_with(|p| p.set(p.get().max(l.get())));
            });
        }

        // SAFETY: every call is passed on to the system allocator unchanged; we only count.
        #[allow(unsafe_code)]
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                add(layout.size() as isize);
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                add(-(layout.size() as isize));
                unsafe { System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                add(new_size as isize - layout.size() as isize);
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        #[global_allocator]
        static COUNTING: Counting = Counting;

        /// Runs `f`; returns its result and how far the thread's heap grew at its peak (for a
        /// `drop`, how much it gave back).
        pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
            let start = LIVE.with(Cell::get);
            PEAK.with(|p| p.set(start));
            let out = f();
            let end = LIVE.with(Cell::get);
            let peak = PEAK.with(Cell::get);
            (out, (peak - start).max(start - end) as usize)
        }
    }
}

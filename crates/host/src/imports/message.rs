//! The message as plugins see it: the received message (in memory, or in its spool file), with
//! header edits applied on the fly.
//!
//! The header block (at most [`MAX_HEADER`] octets) is parsed once into fields; edits change
//! that list; reads serve the rendered header from memory and the body straight from where the
//! message is, in bounded chunks. Unedited fields keep their exact original bytes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use wasmtpd_smtp::{Content, Message};

use crate::bindings::host::Header;

/// Largest header block we parse (and let plugins grow it to).
pub const MAX_HEADER: usize = 1024 * 1024;
/// Largest read a plugin gets in one call.
pub const MAX_READ: u32 = 64 * 1024;

struct Field {
    name: String,
    value: String,
    /// The field as received, CRLF included; `None` once added by a plugin.
    raw: Option<Vec<u8>>,
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
    fields: Vec<Field>,
    /// Whether a blank line separated the header from the body.
    separator: bool,
    body_offset: u64,
    file_size: u64,
    /// The rendered header block (with the separator), rebuilt after an edit.
    rendered: Vec<u8>,
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
        let mut view =
            MessageView { source, fields, separator, body_offset: header_len as u64, file_size, rendered: Vec::new() };
        view.render();
        Ok(view)
    }

    fn render(&mut self) {
        let mut out = Vec::new();
        for f in &self.fields {
            match &f.raw {
                Some(raw) => out.extend_from_slice(raw),
                None => out.extend_from_slice(format!("{}: {}\r\n", f.name, f.value).as_bytes()),
            }
        }
        if self.separator {
            out.extend_from_slice(b"\r\n");
        }
        self.rendered = out;
    }

    pub fn headers(&self) -> Vec<Header> {
        self.fields.iter().map(|f| Header { name: f.name.clone(), value: f.value.clone() }).collect()
    }

    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
            return Err(format!("{name:?} is not a header field name"));
        }
        // No CR, LF or other control: a plugin cannot add a second field or end the header.
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err("header values may not contain control characters".into());
        }
        if self.rendered.len() + name.len() + value.len() + 4 > MAX_HEADER {
            return Err(format!("the header would exceed {MAX_HEADER} octets"));
        }
        self.fields.insert(0, Field { name: name.to_string(), value: value.to_string(), raw: None });
        if !self.separator && self.fields.len() == 1 {
            self.separator = self.body_offset == 0 && self.file_size > 0;
        }
        self.render();
        Ok(())
    }

    pub fn remove_header(&mut self, name: &str) -> u32 {
        let before = self.fields.len();
        self.fields.retain(|f| !f.name.eq_ignore_ascii_case(name));
        let removed = (before - self.fields.len()) as u32;
        if removed > 0 {
            self.render();
        }
        removed
    }

    pub fn size(&self) -> u64 {
        self.rendered.len() as u64 + (self.file_size - self.body_offset)
    }

    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        let len = len.min(MAX_READ) as u64;
        let head = self.rendered.len() as u64;
        let mut out = Vec::with_capacity(len as usize);
        if offset < head {
            let end = (offset + len).min(head);
            out.extend_from_slice(&self.rendered[offset as usize..end as usize]);
        }
        let want = len - out.len() as u64;
        let body_pos = offset.max(head) - head;
        if want > 0 && body_pos < self.file_size - self.body_offset {
            let start = out.len();
            out.resize(start + want as usize, 0);
            let n = self.source.read_at(self.body_offset + body_pos, &mut out[start..]).map_err(|e| e.to_string())?;
            out.truncate(start + n);
        }
        Ok(out)
    }
}

/// Splits the header block into fields. It ends at the first empty line (the separator) or at
/// the first line that is neither a field nor a continuation (then the body starts there).
fn parse_header(head: &[u8]) -> (Vec<Field>, bool, usize) {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < head.len() {
        let Some(nl) = head[pos..].windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let line = &head[pos..pos + nl];
        let raw = &head[pos..pos + nl + 2];
        if line.is_empty() {
            return (fields, true, pos + 2);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            match fields.last_mut() {
                Some(f) => {
                    f.value.push_str("\r\n");
                    f.value.push_str(&String::from_utf8_lossy(line));
                    if let Some(r) = &mut f.raw {
                        r.extend_from_slice(raw);
                    }
                }
                None => break,
            }
        } else {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                break;
            };
            let name = &line[..colon];
            if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
                break;
            }
            let value = String::from_utf8_lossy(&line[colon + 1..]);
            fields.push(Field {
                name: String::from_utf8_lossy(name).to_string(),
                value: value.strip_prefix(' ').unwrap_or(&value).to_string(),
                raw: Some(raw.to_vec()),
            });
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
        let file = MessageView::open(&Message { content: Content::File(p.clone()), size }).unwrap();
        let memory = MessageView::open(&Message { content: Content::Memory(Arc::from(content)), size }).unwrap();
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
    fn a_message_without_header_is_all_body() {
        let (file, memory, p) = views(b"no header here\r\njust text\r\n");
        for mut v in [file, memory] {
            assert!(v.headers().is_empty());
            assert_eq!(all(&mut v), b"no header here\r\njust text\r\n");
        }
        let _ = std::fs::remove_file(p);
    }
}

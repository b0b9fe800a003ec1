//! BDAT framing on arbitrary bytes: a stream of `BDAT n [LAST]` lines and chunks, cut into
//! arbitrary segments. The chunk reader never panics, never emits more than it was given, its
//! result does not depend on the segmentation, and a chunk's octets are never parsed as a
//! command: the command lines found are exactly those at the offsets the sizes say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtpd_smtp::chunk::ChunkReader;
use wasmtpd_smtp::{Command, DataEnd, LineEvent, LineReader};

/// Walks `data` as a server does; returns the commands read and the message's end.
fn walk(data: &[u8], piece: usize, binary: bool) -> (Vec<Command>, Option<DataEnd>, Vec<u8>) {
    let mut lines = LineReader::new(512);
    let mut commands = Vec::new();
    let mut reader = ChunkReader::new(1 << 12, 100, binary, true);
    let mut out = Vec::new();
    let mut fed = 0;
    let mut pos = 0;
    while pos < data.len() {
        let (n, event) = lines.next(&data[pos..]);
        pos += n;
        let Some(LineEvent::Line(line)) = event else {
            if n == 0 {
                break;
            }
            continue;
        };
        let Ok(cmd) = Command::parse(line.strip_suffix(b"\r\n").unwrap_or(line)) else { continue };
        commands.push(cmd.clone());
        if let Command::Bdat { size, last } = cmd {
            let size = usize::try_from(size).unwrap_or(usize::MAX).min(data.len() - pos);
            for p in data[pos..pos + size].chunks(piece) {
                fed += p.len();
                reader.feed(p, &mut out);
                assert!(out.len() <= fed, "more out than in");
            }
            pos += size;
            if last {
                return (commands, Some(reader.finish()), out);
            }
        }
    }
    (commands, None, out)
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, data)) = input.split_first() else { return };
    let binary = flags & 1 == 1;
    let whole = walk(data, data.len().max(1), binary);
    let cut = walk(data, (flags as usize >> 1) % 13 + 1, binary);
    assert_eq!(whole, cut, "segmentation changed the result");
    if let (_, Some(DataEnd::Complete { size }), out) = &whole {
        assert_eq!(*size as usize, out.len(), "a whole message is every octet of its chunks");
    }
});

//! The command parser and the line reader on arbitrary bytes: never panic, and nothing with a
//! control character ever comes out as part of a command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtpd_smtp::{Command, LineEvent, LineReader, UnbracketedPath};

fuzz_target!(|data: &[u8]| {
    // Whole input as one line.
    check(data);
    // Through the line reader, as the server does.
    let mut reader = LineReader::new(512);
    let mut pos = 0;
    while pos < data.len() {
        let (n, event) = reader.next(&data[pos..]);
        assert!(n <= data.len() - pos);
        if let Some(LineEvent::Line(line)) = event {
            assert!(line.len() <= 510);
            check(line);
        }
        if n == 0 {
            break;
        }
        pos += n;
    }
});

fn check(line: &[u8]) {
    // The path a `*_pre` plugin may rewrite: bracketing it must give a line the parser either
    // accepts or refuses cleanly, never one with controls inside.
    if let Some(u) = UnbracketedPath::find(line) {
        assert!(!u.path.chars().any(char::is_control));
        let _ = Command::parse(&u.rewrite(&format!("<{}>", u.path)));
    }
    let Ok(cmd) = Command::parse(line) else { return };
    let text = format!("{cmd:?}");
    // Debug escapes controls; the raw strings must hold none.
    match &cmd {
        Command::Mail { from, params } => {
            if let Some(a) = from {
                assert!(!a.to_string().chars().any(char::is_control), "{text}");
            }
            for p in &params.other {
                assert!(!p.value.as_deref().unwrap_or("").chars().any(char::is_control), "{text}");
            }
        }
        Command::Rcpt { to, params } => {
            assert!(!to.to_string().chars().any(char::is_control), "{text}");
            for p in params {
                assert!(!p.value.as_deref().unwrap_or("").chars().any(char::is_control), "{text}");
            }
        }
        Command::Helo(h) | Command::Ehlo(h) | Command::Vrfy(h) | Command::Help(h) => {
            assert!(!h.chars().any(char::is_control), "{text}");
        }
        _ => {}
    }
}

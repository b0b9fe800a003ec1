//! Test fixture: a plugin that misbehaves, in the hook and the way its arguments say:
//! `HOOKS BEHAVIOUR [ARG...]` (HOOKS: one or more of connect, helo, mail, rcpt, data_post,
//! queue, auth, separated by commas), against clients that said HELO/EHLO `attacker.test` (at
//! connect: every client).
//!
//! Behaviours: `trap` (panics), `loop` (spins forever), `alloc` (allocates without bound),
//! `stack` (recurses without bound), each of the last three bounded by a number if one follows
//! (`loop MS` spins that many milliseconds, `alloc MIB` holds that many MiB, `stack DEPTH`
//! recurses that deep, then they answer DENYSOFT saying so), `passwd` (reads /etc/passwd), `escape` (writes outside its
//! temp dir with `..`), `tcp` (opens a TCP connection), `env` (reads the environment), `crlf`
//! (answers with CR/LF in its message), `logflood`, `noteflood`, `headerflood` (data_post),
//! `tempfill`, `wasi-escape` (with the `wasi-temp` grant), `bigmessage` (a 10 MB reply), `sleep`
//! (blocks in a WASI sleep for an hour), `config-read NAME...` (reads those config files),
//! `note-forge [KEY]` (overwrites the server's record KEY, default `rcpt_ok.hook_rcpt`, and
//! reads it back), `fine` (behaves). Every attempt that does not trap reports what happened in
//! its DENYSOFT message ("passwd: denied: ...") so a test can tell.
//!
//! Silent attacks (they answer DECLINED, so the chain goes on, and log what they did):
//! `note-fill` (fills the transaction's notes until not even an empty note fits), `note-squat KEY` (writes the
//! transaction note KEY where it is missing, and removes it where it is there: run at mail and
//! rcpt before check_badmailfrom, it takes the key first and then erases it), `note-erase KEY`
//! (removes the transaction note KEY), `relay` (calls `set-relay-client(true)`).
//!
//! Verdicts that loosen policy: `ok` and `done` answer OK and DONE (`rcpt ok` accepts any
//! recipient, `queue done` swallows the message with a 250, `auth ok` authenticates anyone).
//!
//! More: `logflood-long` (1500 lines of 4000 octets), `symlink` and `hardlink` (plant links in
//! the read-write grant `/grant`, the symlink pointing out of it), `tempdirs` (makes temp
//! directories until refused), `tempsparse` (writes one octet 1 TiB into a temp file), and with
//! `wasi-temp`: `wasi-tempdirs [N]` (makes N directories in `/tmp`, default 5000), `wasi-tempsparse` (one
//! octet 1 TiB into `/tmp/sparse`).

use std::io::Write;

use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct Hostile;

fn act(hook: &str) -> HookResult {
    let args = host::args();
    if !args.first().is_some_and(|hooks| hooks.split(',').any(|h| h == hook)) {
        return HookResult::declined();
    }
    // Only clients that say HELO/EHLO attacker.test are attacked (connect: everyone), so a
    // test can run a well-behaved client through the same server at the same time.
    let hello = host::connection().hello_host;
    if hook != "connect" && hello.as_deref() != Some("attacker.test") {
        return HookResult::declined();
    }
    match args.get(1).map(String::as_str).unwrap_or("fine") {
        "trap" => panic!("hostile plugin panics on purpose"),
        "loop" if args.len() > 2 => {
            let ms: u64 = args[2].parse().expect("loop MS");
            let started = std::time::Instant::now();
            let mut x: u64 = 1;
            while started.elapsed().as_millis() < ms as u128 {
                for _ in 0..1000 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            HookResult::deny_soft(format!("loop: spun {ms} ms"))
        }
        "alloc" if args.len() > 2 => {
            let mib: usize = args[2].parse().expect("alloc MIB");
            let hoard: Vec<Vec<u8>> = (0..mib).map(|i| vec![i as u8; 1 << 20]).collect();
            HookResult::deny_soft(format!("alloc: held {} MiB", std::hint::black_box(hoard).len()))
        }
        "stack" if args.len() > 2 => {
            let depth: u64 = args[2].parse().expect("stack DEPTH");
            recurse_to(1, depth);
            HookResult::deny_soft(format!("stack: {depth} deep"))
        }
        "loop" => {
            let mut x: u64 = 1;
            loop {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                if x == 0 {
                    break HookResult::declined();
                }
            }
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut block = vec![0u8; 1 << 20];
                block[0] = hoard.len() as u8;
                hoard.push(block);
                if hoard.len() == usize::MAX {
                    break HookResult::declined();
                }
            }
        }
        "stack" => HookResult::deny_soft(format!("stack {}", recurse(1))),
        "passwd" => report("passwd", std::fs::read_to_string("/etc/passwd").map(|s| s.len().to_string())),
        "escape" => report(
            "escape",
            std::fs::File::create("/tmp/../wasmtpd-escaped")
                .and_then(|mut f| f.write_all(b"x"))
                .map(|_| "written".into()),
        ),
        "tcp" => report("tcp", std::net::TcpStream::connect("127.0.0.1:25").map(|_| "connected".into())),
        "env" => HookResult::deny_soft(format!("env: {} variables", std::env::vars().count())),
        "logflood" => {
            for i in 0..100_000 {
                host::log(wasmtpd_plugin::LogLevel::Info, &format!("flood line {i}"));
            }
            HookResult::deny_soft("logflood: done")
        }
        "logflood-long" => {
            let line = "L".repeat(4000);
            for _ in 0..1500 {
                host::log(wasmtpd_plugin::LogLevel::Info, &line);
            }
            HookResult::deny_soft("logflood-long: done")
        }
        "symlink" => {
            #[allow(deprecated)] // `std::os::wasi::fs::symlink_path` is unstable; this is the same call
            let made = std::fs::soft_link("../../../../etc/passwd", "/grant/rel");
            report("symlink", made.map(|_| "made".into()))
        }
        "hardlink" => {
            let made =
                std::fs::write("/grant/file", b"x").and_then(|_| std::fs::hard_link("/grant/file", "/grant/link"));
            report("hardlink", made.map(|_| "made".into()))
        }
        "tempdirs" => {
            let mut made = 0;
            let err = loop {
                match host::temp_dir() {
                    Ok(_) => made += 1,
                    Err(e) => break e,
                }
                if made == 1_000_000 {
                    break "never refused".into();
                }
            };
            HookResult::deny_soft(format!("tempdirs: refused after {made} directories: {err}"))
        }
        "tempsparse" => {
            let Ok(name) = host::temp_file() else { return HookResult::deny_soft("tempsparse: no temp file") };
            match host::write_file(&name, 1 << 40, b"x") {
                Ok(()) => HookResult::deny_soft("tempsparse: allowed: written"),
                Err(e) => HookResult::deny_soft(format!("tempsparse: denied: {e}")),
            }
        }
        "wasi-tempdirs" => {
            let n: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(5000);
            let made = (0..n).take_while(|i| std::fs::create_dir(format!("/tmp/d{i}")).is_ok()).count();
            HookResult::deny_soft(format!("wasi-tempdirs: made {made}"))
        }
        "wasi-tempsparse" => {
            use std::io::{Seek, SeekFrom};
            let written = std::fs::File::create("/tmp/sparse")
                .and_then(|mut f| f.seek(SeekFrom::Start(1 << 40)).and_then(|_| f.write_all(b"x")));
            report("wasi-tempsparse", written.map(|_| "written".into()))
        }
        "noteflood" => {
            let value = "n".repeat(64 * 1024);
            let mut i = 0;
            let err = loop {
                if let Err(e) = host::set_transaction_note(&format!("flood{i}"), Some(&value)) {
                    break e;
                }
                i += 1;
            };
            HookResult::deny_soft(format!("noteflood: refused after {i} notes: {err}"))
        }
        "headerflood" => {
            let mut i = 0;
            let err = loop {
                if let Err(e) = host::add_header("X-Flood", &"h".repeat(900)) {
                    break e;
                }
                i += 1;
            };
            HookResult::deny_soft(format!("headerflood: refused after {i} fields: {err}"))
        }
        "tempfill" => {
            let Ok(name) = host::temp_file() else { return HookResult::deny_soft("tempfill: no temp file") };
            let chunk = vec![b'x'; 60 * 1024];
            let mut written = 0u64;
            let err = loop {
                if let Err(e) = host::write_file(&name, written, &chunk) {
                    break e;
                }
                written += chunk.len() as u64;
            };
            HookResult::deny_soft(format!("tempfill: refused after {written} octets: {err}"))
        }
        "wasi-escape" => {
            report("wasi-escape", std::fs::write("/tmp/../../wasmtpd-escaped", b"x").map(|_| "written".into()))
        }
        "bigmessage" => HookResult::deny("big ".repeat(2_500_000)),
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            HookResult::declined()
        }
        "crlf" => HookResult::deny("first line\r\n250 2.0.0 injected\r\nMAIL FROM:<x@y>"),
        "config-read" => {
            let got: Vec<String> = args[2..]
                .iter()
                .map(|name| match host::config(name) {
                    Some(lines) => format!("{name}={}", lines.len()),
                    None => format!("{name}=none"),
                })
                .collect();
            HookResult::deny_soft(format!("config-read: {}", got.join(" ")))
        }
        "note-forge" => {
            let key = args.get(2).map_or("rcpt_ok.hook_rcpt", String::as_str);
            let wrote = match host::set_transaction_note(key, Some("FORGED")) {
                Ok(()) => "written".to_string(),
                Err(e) => format!("refused ({e})"),
            };
            let now = host::transaction_note(key).unwrap_or_else(|| "-".into());
            HookResult::deny_soft(format!("note-forge: {wrote}; {key} = {now}"))
        }
        "note-fill" => {
            // Large notes first, then ever smaller ones, until not even an empty one fits.
            let mut size = 64 * 1024;
            let mut i = 0;
            loop {
                if host::set_transaction_note(&format!("fill{i}"), Some(&"n".repeat(size))).is_ok() {
                    i += 1;
                } else if size == 0 {
                    break;
                } else {
                    size /= 2;
                }
            }
            wasmtpd_plugin::info(format!("note-fill: {i} notes"));
            HookResult::declined()
        }
        "note-squat" => {
            let key = args.get(2).map_or("badmailfrom", String::as_str);
            let done = match host::transaction_note(key) {
                None => host::set_transaction_note(key, Some("squatted")).map(|()| "taken"),
                Some(_) => host::set_transaction_note(key, None).map(|()| "erased"),
            };
            wasmtpd_plugin::info(format!("note-squat {key}: {done:?}"));
            HookResult::declined()
        }
        "note-erase" => {
            let key = args.get(2).map_or("badmailfrom", String::as_str);
            let done = host::set_transaction_note(key, None);
            wasmtpd_plugin::info(format!("note-erase {key}: {done:?}"));
            HookResult::declined()
        }
        "relay" => {
            let done = host::set_relay_client(true);
            wasmtpd_plugin::info(format!("relay: {done:?}"));
            HookResult::declined()
        }
        "ok" => HookResult::ok_with("hostile says ok"),
        "done" => HookResult::done(),
        _ => HookResult::declined(),
    }
}

fn report(what: &str, r: std::io::Result<String>) -> HookResult {
    match r {
        Ok(v) => HookResult::deny_soft(format!("{what}: allowed: {v}")),
        Err(e) => HookResult::deny_soft(format!("{what}: denied: {e}")),
    }
}

/// Recursion LLVM cannot turn into a loop, with scalar frames only (so it exhausts the wasm
/// stack the engine limits, not the shadow stack in linear memory).
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let deeper = recurse(std::hint::black_box(n + 1));
    std::hint::black_box(deeper) + n
}

/// [`recurse`] that stops at `depth`.
fn recurse_to(n: u64, depth: u64) -> u64 {
    if n >= depth {
        return n;
    }
    let deeper = recurse_to(std::hint::black_box(n + 1), depth);
    std::hint::black_box(deeper) + n
}

#[wasmtpd_plugin::plugin]
impl Plugin for Hostile {
    fn connect() -> HookResult {
        act("connect")
    }
    fn helo(_host: String) -> HookResult {
        act("helo")
    }
    fn mail(_sender: Option<Address>, _params: Vec<EsmtpParam>) -> HookResult {
        act("mail")
    }
    fn rcpt(_recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        act("rcpt")
    }
    fn data_post() -> HookResult {
        act("data_post")
    }
    fn queue() -> HookResult {
        act("queue")
    }
    fn auth(_mechanism: String, _user: String, _password: String) -> HookResult {
        act("auth")
    }
}

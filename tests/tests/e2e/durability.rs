//! Nothing accepted is lost: a message answered with 250 survives SIGKILL, and no half-written
//! file is ever visible as a message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtpd_tests::{Client, TestServer};

/// Sends messages on one connection until the server goes away; returns the ids that got 250.
fn sender(addr: std::net::SocketAddr, worker: usize, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>) {
    let mut c = Client::connect(addr);
    let mut n = 0;
    let ok = |c: &mut Client, line: &str, code: u16| {
        c.try_send(format!("{line}\r\n")) && c.read_reply().is_some_and(|r| r.code == code)
    };
    if c.read_reply().is_none() || !ok(&mut c, "EHLO loader.test", 250) {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = format!("w{worker}-m{n}");
        if !ok(&mut c, "MAIL FROM:<load@remote.test>", 250) || !ok(&mut c, "RCPT TO:<sink@example.com>", 250) {
            return;
        }
        if !ok(&mut c, "DATA", 354) {
            return;
        }
        let filler = format!("{}\r\n", "0123456789abcdef".repeat(4)).repeat(500); // 33 KiB in 66-octet lines
        let body = format!("Subject: {id}\r\n\r\n{filler}\r\nEND {id}\r\n.\r\n");
        if !c.try_send(body) {
            return;
        }
        match c.read_reply() {
            Some(r) if r.code == 250 => acked.lock().unwrap().push(id),
            _ => return,
        }
    }
}

#[test]
fn every_acknowledged_message_survives_sigkill() {
    let mut s = TestServer::start_delivering(&[]);
    let mut total_acked = 0;
    // WASMTPD_CRASH_ROUNDS=100 for a long run; CI does 5.
    let rounds: usize = std::env::var("WASMTPD_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (stop, acked, addr) = (stop.clone(), acked.clone(), s.addr);
                std::thread::spawn(move || sender(addr, round * 10 + w, stop, acked))
            })
            .collect();
        // Let the load run until some messages are through, then kill the server in the
        // middle of it (the workers keep sending; some transactions are always in flight).
        let started = std::time::Instant::now();
        while acked.lock().unwrap().len() < 3 + round && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(37 * round as u64));
        s.crash_and_restart();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        total_acked += acked.len();
        let delivered: Vec<String> = s.delivered().into_iter().map(|m| String::from_utf8(m).unwrap()).collect();
        // No half-written message is visible: every file in new/ is whole.
        for m in &delivered {
            let id = m.lines().find_map(|l| l.strip_prefix("Subject: ")).expect("a Subject line");
            assert!(m.ends_with(&format!("\r\nEND {id}\r\n")), "message {id} is not whole ({} octets)", m.len());
        }
        // Every message that got a 250 is there.
        for id in &acked {
            assert!(
                delivered.iter().any(|m| m.contains(&format!("Subject: {id}\r\n"))),
                "round {round}: {id} was acknowledged but is missing"
            );
        }
        // The restarted server works, and cleaned up the spool of the killed one.
        let mut c = s.greeted();
        c.envelope("after@remote.test", &["b@example.com"]);
        assert_eq!(c.data(b"Subject: after-crash\r\n\r\nx\r\nEND after-crash").code, 250);
        assert_eq!(s.spool_files(), 0, "the spool is clean");
    }
    assert!(total_acked >= 3 * rounds, "the load generator got only {total_acked} messages through");
}

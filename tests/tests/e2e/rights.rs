//! What a plugin may read and do (issue 11): only the config files meant for it; notes it
//! cannot use against other plugins (the server's records are read-only, a note belongs to its
//! writer, budgets are per plugin); and nothing that loosens policy (relay, accept a
//! recipient, authenticate, answer 250 for a message) unless the operator grants the right.
//! The attacker is `testing/hostile`, which attacks only clients saying EHLO `attacker.test`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use wasmtpd_tests::tls::TestCa;
use wasmtpd_tests::{Client, TestServer};

/// EHLO as the attacker, then MAIL FROM `sender`; returns the client and MAIL's reply.
fn attacker(s: &TestServer, sender: &str) -> (Client, wasmtpd_tests::Reply) {
    let mut c = s.greeted();
    c.cmd("EHLO attacker.test", 250);
    c.line(&format!("MAIL FROM:<{sender}>"));
    let r = c.read_reply().unwrap();
    (c, r)
}

/// The log lines that mention all of `words`.
fn logged(s: &TestServer, words: &[&str]) -> usize {
    s.log().lines().filter(|l| words.iter().all(|w| l.contains(w))).count()
}

#[test]
fn a_plugin_reads_only_the_config_files_meant_for_it() {
    let ca = TestCa::new();
    let cert = ca.issue(&["mx.test"]);
    let names = "tls sandbox auth_users certs/key.pem rcpthosts not_granted extra hostile ../config/tls";
    let chain = format!("testing/hostile mail config-read {names}\nrcpt_ok");
    let sandbox = "queue/maildir grant-dir maildir /maildir rw\ntesting/hostile config-file extra\n";
    let s = TestServer::start_with_chain(
        &chain,
        &[
            ("sandbox", sandbox),
            ("tls", "certificate certs/cert.pem certs/key.pem\n"),
            ("certs/cert.pem", &cert.chain_pem),
            ("certs/key.pem", &cert.key_pem),
            ("auth_users", "alice@example.com:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\n"),
            ("not_granted", "secret\n"),
            ("extra", "# granted with config-file\none\ntwo\n"),
            ("hostile", "its own file\n"),
        ],
    );
    for _ in 0..3 {
        let (mut c, r) = attacker(&s, "a@remote.test");
        assert_eq!(r.code, 450, "{r:?}");
        assert_eq!(
            r.text(),
            "4.7.1 config-read: tls=none sandbox=none auth_users=none certs/key.pem=none rcpthosts=none \
             not_granted=none extra=2 hostile=1 ../config/tls=none",
        );
        c.cmd("QUIT", 221);
    }
    // Each refused name is logged once, with the plugin's name, however often it is asked for.
    assert_eq!(logged(&s, &["config file not granted", "testing/hostile", "not_granted"]), 1, "{}", s.log());
    assert_eq!(logged(&s, &["config file not granted", "testing/hostile", "certs/key.pem"]), 1);
    // rcpt_ok still reads its own rcpthosts.
    let mut c = s.greeted();
    c.envelope("friend@remote.test", &["b@example.com"]);
    assert_eq!(c.data(b"Subject: x\r\n\r\ny").code, 250);
}

#[test]
fn the_servers_records_cannot_be_forged() {
    let s = TestServer::start_with_chain("rcpt_ok\ntesting/hostile data_post note-forge rcpt_ok.hook_rcpt", &[]);
    let (mut c, r) = attacker(&s, "a@remote.test");
    assert_eq!(r.code, 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    let r = c.data(b"Subject: x\r\n\r\ny");
    assert_eq!(r.code, 452, "{r:?}");
    assert!(r.text().contains("note-forge: refused ("), "{r:?}");
    assert!(r.text().contains("read-only"), "{r:?}");
    assert!(r.text().ends_with("; rcpt_ok.hook_rcpt = OK"), "the real record stands: {r:?}");
}

#[test]
fn one_plugins_notes_cannot_stop_check_badmailfrom() {
    // Before check_badmailfrom: fill the notes to the cap; take its key first (and erase it at
    // RCPT); erase its note at RCPT. Each time the listed sender is refused, at MAIL or at
    // every RCPT, and nothing is delivered.
    for attack in ["mail note-fill", "mail,rcpt note-squat badmailfrom", "rcpt note-erase badmailfrom"] {
        let chain = format!("testing/hostile {attack}\ncheck_badmailfrom\nrcpt_ok");
        let s = TestServer::start_with_chain(&chain, &[("badmailfrom", "spammer@bad.test Listed sender\n")]);
        let (mut c, r) = attacker(&s, "spammer@bad.test");
        if r.code == 250 {
            c.line("RCPT TO:<b@example.com>");
            let r = c.read_reply().unwrap();
            assert_eq!((r.code, r.text().as_str()), (550, "5.7.1 Listed sender"), "{attack}");
        } else {
            assert_eq!((r.code, r.text().as_str()), (550, "5.7.1 Listed sender"), "{attack}: refused at MAIL");
        }
        c.cmd("RSET", 250);
        // A sender that is not listed still gets through the same chain, attacked the same way.
        c.cmd("MAIL FROM:<friend@remote.test>", 250);
        c.cmd("RCPT TO:<b@example.com>", 250);
        assert_eq!(c.data(b"Subject: x\r\n\r\ny").code, 250, "{attack}");
        assert_eq!(s.delivered().len(), 1, "{attack}");
    }
}

#[test]
fn without_the_right_a_plugin_cannot_make_an_open_relay() {
    for granted in [false, true] {
        let rights = if granted { "testing/hostile rights relay-client\n" } else { "" };
        let s = TestServer::start_with_chain(
            "testing/hostile mail relay\nrcpt_ok",
            &[("sandbox", &format!("queue/maildir grant-dir maildir /maildir rw\n{rights}"))],
        );
        let (mut c, r) = attacker(&s, "a@remote.test");
        assert_eq!(r.code, 250);
        c.line("RCPT TO:<victim@elsewhere.test>");
        let r = c.read_reply().unwrap();
        if granted {
            assert_eq!(r.code, 250, "{r:?}");
        } else {
            assert_eq!((r.code, r.text().as_str()), (550, "5.7.1 Relaying denied"));
            // The call failed where the plugin could see it, and the server said why.
            assert_eq!(logged(&s, &["relay: Err(", "not allowed"]), 1, "{}", s.log());
            assert_eq!(logged(&s, &["refused", "testing/hostile", "hook=\"mail\"", "relay-client"]), 1, "{}", s.log());
        }
    }
}

#[test]
fn without_the_right_a_plugin_cannot_accept_a_recipient() {
    for granted in [false, true] {
        let rights = if granted { "testing/hostile rights accept-recipient\n" } else { "" };
        let s = TestServer::start_with_chain(
            "testing/hostile rcpt ok\nrcpt_ok",
            &[("sandbox", &format!("queue/maildir grant-dir maildir /maildir rw\n{rights}"))],
        );
        let (mut c, _) = attacker(&s, "a@remote.test");
        c.line("RCPT TO:<victim@elsewhere.test>");
        let r = c.read_reply().unwrap();
        if granted {
            assert_eq!((r.code, r.text().as_str()), (250, "2.1.5 hostile says ok"));
        } else {
            // Its OK counts as DECLINED: rcpt_ok decides.
            assert_eq!((r.code, r.text().as_str()), (550, "5.7.1 Relaying denied"));
            assert_eq!(
                logged(&s, &["refused", "testing/hostile", "hook=\"rcpt\"", "accept-recipient"]),
                1,
                "{}",
                s.log()
            );
        }
    }
}

#[test]
fn without_the_right_a_plugin_cannot_swallow_a_message() {
    for attack in ["queue done", "queue ok", "data_post done"] {
        for granted in [false, true] {
            let rights = if granted { "testing/hostile rights queue\n" } else { "" };
            let s = TestServer::start_with_chain(
                &format!("testing/hostile {attack}\nrcpt_ok"),
                &[("sandbox", &format!("queue/maildir grant-dir maildir /maildir rw\n{rights}"))],
            );
            let (mut c, _) = attacker(&s, "a@remote.test");
            c.cmd("RCPT TO:<b@example.com>", 250);
            assert_eq!(c.data(b"Subject: x\r\n\r\ny").code, 250, "{attack}, granted {granted}");
            // Without the right its verdict counts as DECLINED and queue/maildir delivers.
            assert_eq!(s.delivered().len(), usize::from(!granted), "{attack}, granted {granted}");
            if !granted {
                let hook = attack.split(' ').next().unwrap();
                let words = ["refused", "testing/hostile", &format!("hook=\"{hook}\""), "right=\"queue\""];
                assert_eq!(logged(&s, &words), 1, "{attack}: {}", s.log());
            }
        }
    }
    // With no queue plugin after it, an OK it may not give is no 250.
    let s = TestServer::start_delivering(&[("plugins", "testing/hostile queue ok\nrcpt_ok\n")]);
    let (mut c, _) = attacker(&s, "a@remote.test");
    c.cmd("RCPT TO:<b@example.com>", 250);
    assert_eq!(c.data(b"Subject: x\r\n\r\ny").code, 451);
}

#[test]
fn without_the_right_a_plugin_cannot_authenticate_anyone() {
    let plain = B64.encode("\0mallory\0guess");
    for granted in [false, true] {
        let rights = if granted { "testing/hostile rights authenticate\n" } else { "" };
        let s = TestServer::start_with_chain(
            "testing/hostile auth ok\nrcpt_ok",
            &[
                ("auth", "failure_delay 0\n"),
                ("sandbox", &format!("queue/maildir grant-dir maildir /maildir rw\n{rights}")),
            ],
        );
        let mut c = s.greeted();
        c.cmd("EHLO attacker.test", 250);
        if granted {
            c.cmd(&format!("AUTH PLAIN {plain}"), 235);
            c.cmd("MAIL FROM:<mallory@remote.test>", 250);
            c.cmd("RCPT TO:<victim@elsewhere.test>", 250); // a relay client now
        } else {
            c.cmd(&format!("AUTH PLAIN {plain}"), 535);
            c.cmd("MAIL FROM:<mallory@remote.test>", 250);
            c.cmd("RCPT TO:<victim@elsewhere.test>", 550);
            assert_eq!(logged(&s, &["refused", "testing/hostile", "hook=\"auth\"", "authenticate"]), 1, "{}", s.log());
        }
    }
}

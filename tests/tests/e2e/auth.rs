//! AUTH (RFC 4954) with SASL PLAIN and LOGIN: the server does the exchange, plugins check the
//! credentials (`auth_flat_file` with users added by `wasmtpd add-user`, or the scripted
//! fixture). Real clients: swaks and Python's smtplib, over STARTTLS.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use wasmtpd_tests::tls::TestCa;
use wasmtpd_tests::{Client, TempDir, TestServer, server_binary};

const PASSWORD: &str = "correct horse battery staple";

/// `wasmtpd --config DIR add-user USER`, the password on stdin, as an operator would.
fn add_user(config: &std::path::Path, user: &str, password: &str) -> String {
    let mut child = Command::new(server_binary())
        .arg("--config")
        .arg(config)
        .args(["add-user", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A server with a certificate for mx.test, auth_flat_file (alice, with PASSWORD), rcpt_ok for
/// example.com and queue/maildir; `auth` is the `config/auth` file.
fn server(ca: &TestCa, auth: &str) -> TestServer {
    let dir = TempDir::new("auth");
    let config = dir.0.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let said = add_user(&config, "alice@example.com", PASSWORD);
    assert!(said.starts_with("added alice@example.com"), "{said}");
    let cert = ca.issue(&["mx.test", "127.0.0.1"]);
    let files = [
        ("me", "mx.test"),
        ("rcpthosts", "example.com\n"),
        ("plugins", "auth_flat_file\nrcpt_ok\nqueue/maildir /maildir\n"),
        ("sandbox", "queue/maildir grant-dir maildir /maildir rw\n"),
        ("tls", "certificate mx.pem mx.key\n"),
        ("mx.pem", cert.chain_pem.as_str()),
        ("mx.key", cert.key_pem.as_str()),
        ("auth", auth),
    ];
    TestServer::start_with_args(dir, &files, &[])
}

fn plain(user: &str, password: &str) -> String {
    B64.encode(format!("\0{user}\0{password}"))
}

/// EHLO, STARTTLS, EHLO again; returns the EHLO keywords over TLS.
fn over_tls(c: &mut Client, ca: &TestCa) -> Vec<String> {
    c.cmd("EHLO client.test", 250);
    c.cmd("STARTTLS", 220);
    c.start_tls(ca, "mx.test").unwrap();
    c.cmd("EHLO client.test", 250).lines[1..].to_vec()
}

#[test]
fn auth_is_refused_before_tls_and_works_after() {
    let ca = TestCa::new();
    let s = server(&ca, "plaintext never\nfailure_delay 0\n");
    let mut c = s.greeted();
    let keywords = c.cmd("EHLO client.test", 250).lines;
    assert!(!keywords.iter().any(|k| k.starts_with("AUTH")), "not offered in plaintext: {keywords:?}");
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("alice@example.com", PASSWORD)), 538);
    assert_eq!(r.text(), "5.7.11 Encryption required for requested authentication mechanism");
    c.cmd("STARTTLS", 220);
    c.start_tls(&ca, "mx.test").unwrap();
    c.cmd("AUTH PLAIN", 503); // EHLO again first
    let keywords = c.cmd("EHLO client.test", 250).lines;
    assert!(keywords.contains(&"AUTH PLAIN LOGIN".to_string()), "{keywords:?}");
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("alice@example.com", PASSWORD)), 235);
    assert_eq!(r.text(), "2.7.0 Authentication successful");
    c.cmd(&format!("AUTH PLAIN {}", plain("alice@example.com", PASSWORD)), 503); // once only
}

#[test]
fn plaintext_auth_from_loopback_when_allowed() {
    let ca = TestCa::new();
    let s = server(&ca, "plaintext loopback\nfailure_delay 0\n");
    let mut c = s.greeted();
    let keywords = c.cmd("EHLO client.test", 250).lines;
    assert!(keywords.contains(&"AUTH PLAIN LOGIN".to_string()), "{keywords:?}");
    // LOGIN, step by step.
    assert_eq!(c.cmd("AUTH LOGIN", 334).text(), "VXNlcm5hbWU6");
    assert_eq!(c.cmd(&B64.encode("alice@example.com"), 334).text(), "UGFzc3dvcmQ6");
    c.cmd(&B64.encode(PASSWORD), 235);
    c.cmd("MAIL FROM:<alice@example.com>", 250);
    c.cmd("RCPT TO:<friend@elsewhere.test>", 250); // authenticated: may relay
    let r = c.data(b"Subject: relayed\r\n\r\nhi\r\n");
    assert_eq!(r.code, 250);
    let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
    assert!(m.contains("with ESMTPA id"), "{m}");
}

#[test]
fn an_authenticated_client_may_relay_an_anonymous_one_may_not() {
    let ca = TestCa::new();
    let s = server(&ca, "failure_delay 0\n");
    let mut anonymous = s.greeted();
    over_tls(&mut anonymous, &ca);
    anonymous.cmd("MAIL FROM:<a@remote.test>", 250);
    let r = anonymous.cmd("RCPT TO:<friend@elsewhere.test>", 550);
    assert_eq!(r.text(), "5.7.1 Relaying denied");
    anonymous.cmd("RCPT TO:<b@example.com>", 250); // local mail is fine

    let mut c = s.greeted();
    over_tls(&mut c, &ca);
    c.cmd(&format!("AUTH PLAIN {}", plain("alice@example.com", PASSWORD)), 235);
    c.cmd("MAIL FROM:<alice@example.com>", 250);
    c.cmd("RCPT TO:<friend@elsewhere.test>", 250);
    assert_eq!(c.data(b"Subject: out\r\n\r\nx\r\n").code, 250);
    let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
    let received: String = m.lines().skip_while(|l| !l.starts_with("Received:")).take(4).collect();
    assert!(received.contains("with ESMTPSA id"), "{m}");
    assert!(!received.contains("alice"), "the Received header does not name the user: {m}");
}

#[test]
fn wrong_passwords_get_535_and_the_sixth_attempt_454() {
    let ca = TestCa::new();
    let s = server(&ca, "plaintext loopback\nmax_failures 5\nfailure_window 1m\nfailure_delay 200ms\n");
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    for attempt in 1..=10 {
        let started = Instant::now();
        c.line(&format!("AUTH PLAIN {}", plain("alice@example.com", &format!("guess {attempt}"))));
        let r = c.read_reply().unwrap();
        if attempt <= 5 {
            assert_eq!((r.code, r.text().as_str()), (535, "5.7.8 Authentication credentials invalid"), "{attempt}");
            assert!(started.elapsed() >= Duration::from_millis(200), "a failure is answered late");
        } else {
            assert_eq!(r.code, 454, "attempt {attempt}: {r:?}");
            assert_eq!(r.text(), "4.7.0 Too many failed authentication attempts, try again later");
        }
    }
    // Refused before any plugin looks, whatever the password, from any connection of that address.
    c.cmd(&format!("AUTH PLAIN {}", plain("alice@example.com", PASSWORD)), 454);
    let mut other = s.greeted();
    other.cmd("EHLO client.test", 250);
    other.cmd(&format!("AUTH PLAIN {}", plain("alice@example.com", PASSWORD)), 454);
    // An unknown user fails like a wrong password.
    let s = server(&ca, "failure_delay 0\n");
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd(&format!("AUTH PLAIN {}", plain("mallory@example.com", PASSWORD)), 535);
}

#[test]
fn parallel_wrong_passwords_cannot_race_past_the_failure_limit() {
    // Twenty connections send a wrong password at the same moment, against a limit of five:
    // an attempt is counted before the plugin checks it, so five reach the plugin (535) and the
    // rest are refused (454) without it.
    let ca = TestCa::new();
    let s = server(&ca, "plaintext loopback\nmax_failures 5\nfailure_window 1m\nfailure_delay 0\n");
    let barrier = Barrier::new(20);
    let codes: Vec<u16> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..20)
            .map(|i| {
                let (s, barrier) = (&s, &barrier);
                scope.spawn(move || {
                    let mut c = s.greeted();
                    c.cmd("EHLO client.test", 250);
                    barrier.wait();
                    c.line(&format!("AUTH PLAIN {}", plain("alice@example.com", &format!("guess {i}"))));
                    c.read_reply().expect("a reply to AUTH").code
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let failed = codes.iter().filter(|&&c| c == 535).count();
    let refused = codes.iter().filter(|&&c| c == 454).count();
    assert_eq!((failed, refused), (5, 15), "{codes:?}");
    // What reached the plugin, as the server logs each hook's decision.
    let log = s.log();
    let checked = log.lines().filter(|l| l.contains("hook decided") && l.contains("plugin=auth_flat_file")).count();
    assert_eq!(checked, 5, "five reached the plugin:\n{log}");
    // The limit holds afterwards too, for the right password.
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd(&format!("AUTH PLAIN {}", plain("alice@example.com", PASSWORD)), 454);
}

#[test]
fn responses_sent_for_a_refused_auth_never_run_as_commands() {
    // AUTH is refused without TLS here (538). A client that does not wait for the 334s sends
    // its responses behind AUTH; they must reach neither a plugin (count_unrecognized_commands
    // logs every unrecognized command it is given) nor the log.
    let s = TestServer::start_delivering(&[
        ("plugins", "testing/scripted\ncount_unrecognized_commands 3\nrcpt_ok\nqueue/maildir /maildir\n"),
        ("auth", "plaintext never\nfailure_delay 0\n"),
    ]);
    let user = B64.encode("alice@example.com");
    let password = B64.encode(PASSWORD);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    // LOGIN: user name and password.
    c.send(format!("AUTH LOGIN\r\n{user}\r\n{password}\r\n"));
    c.expect(538);
    assert_eq!(c.expect(503).text(), "5.5.1 AUTH was refused: authentication response ignored");
    c.expect(503);
    // LOGIN with the user name on the command: the password follows.
    c.send(format!("AUTH LOGIN {user}\r\n{password}\r\n"));
    c.expect(538);
    c.expect(503);
    // PLAIN without an initial response: one response.
    c.send(format!("AUTH PLAIN\r\n{}\r\n", plain("alice@example.com", PASSWORD)));
    c.expect(538);
    c.expect(503);
    // A client that waits for the refusal sends a command next, and it runs.
    c.cmd("AUTH LOGIN", 538);
    c.cmd("HELP", 214);
    c.cmd("AUTH LOGIN", 538);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RSET", 250);
    // Past the exchange's lines, an unknown command is a command again (and reaches the plugin).
    c.cmd("XFOO", 500);
    c.cmd("QUIT", 221);

    // Refused part-way (a user name that is not base64): the password behind it is not a command.
    let s2 = TestServer::start_delivering(&[
        ("plugins", "testing/scripted\ncount_unrecognized_commands 3\nrcpt_ok\nqueue/maildir /maildir\n"),
        ("auth", "plaintext loopback\nfailure_delay 0\n"),
    ]);
    let mut c = s2.greeted();
    c.cmd("EHLO client.test", 250);
    c.send(format!("AUTH LOGIN\r\n!!{user}\r\n{password}\r\n"));
    c.expect(334);
    c.expect(501);
    c.expect(503);
    c.cmd("NOOP", 250);
    c.cmd("QUIT", 221);

    for log in [s.log(), s2.log()] {
        for secret in [PASSWORD, &password, &user, &plain("alice@example.com", PASSWORD)] {
            assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
        }
    }
    // count_unrecognized_commands logs each command it is given (quotes escaped in the log).
    let seen = |log: &str| log.matches(r#"unrecognized command \""#).count();
    assert_eq!(seen(&s.log()), 1, "the plugin saw XFOO only: {}", s.log());
    assert!(s.log().contains(r#"unrecognized command \"XFOO\", 1 of 3"#), "{}", s.log());
    assert_eq!(seen(&s2.log()), 0, "{}", s2.log());
}

#[test]
fn passwords_never_reach_the_log() {
    let ca = TestCa::new();
    let s = server(&ca, "failure_delay 0\n");
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd(&format!("AUTH PLAIN {}", plain("alice@example.com", "hunter2-wrong")), 535);
    c.cmd(&format!("AUTH PLAIN {}", plain("alice@example.com", PASSWORD)), 235);
    c.cmd("QUIT", 221);
    let log = s.log();
    for secret in ["hunter2-wrong", PASSWORD, &plain("alice@example.com", PASSWORD)] {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
    assert!(log.contains("authentication failed"), "{log}");
    assert!(log.contains("user=alice@example.com mechanism=PLAIN") && log.contains("authenticated"), "{log}");
}

#[test]
fn sasl_exchange_edges() {
    let ca = TestCa::new();
    let s = server(&ca, "failure_delay 0\n");
    let mut c = s.greeted();
    c.cmd("AUTH PLAIN", 503); // EHLO first
    c.cmd("HELO client.test", 250);
    c.cmd("AUTH PLAIN", 503); // and not HELO
    c.cmd("EHLO client.test", 250);
    c.cmd("AUTH CRAM-MD5", 504);
    c.cmd("AUTH", 501);
    assert_eq!(c.cmd("AUTH PLAIN", 334).lines, [""]); // empty challenge: "334 "
    assert_eq!(c.cmd("*", 501).text(), "5.7.0 Authentication cancelled");
    c.cmd("AUTH PLAIN", 334);
    c.cmd("!!not base64!!", 501);
    c.cmd("AUTH PLAIN =", 501); // an empty PLAIN message
    c.cmd(&format!("AUTH PLAIN {}", B64.encode("root\0alice@example.com\0x")), 535); // authzid
    // A response longer than RFC 4954's 12288 octets: refused, and its tail is not a command.
    c.cmd("AUTH LOGIN", 334);
    c.send(format!("{}NOOP\r\n", "A".repeat(20_000)));
    c.expect(500);
    // The user name may come with AUTH LOGIN.
    c.cmd(&format!("AUTH LOGIN {}", B64.encode("alice@example.com")), 334);
    c.cmd(&B64.encode(PASSWORD), 235);
    c.cmd("MAIL FROM:<alice@example.com>", 250);
    c.cmd("RSET", 250);
    c.cmd("MAIL FROM:<alice@example.com>", 250);
    c.cmd("AUTH LOGIN", 503); // authenticated already, and in a transaction
}

#[test]
fn auth_hooks_run_mechanism_first_and_faults_are_temporary() {
    // The scripted fixture decides per hook; auth_plain before auth (qpsmtpd's order).
    let cases: &[(&str, u16)] = &[
        ("auth_plain=ok", 235),
        ("auth_plain=deny", 535),
        ("auth_plain=denysoft", 454),
        ("auth_plain=declined auth=ok", 235),
        ("auth_plain=declined auth=declined", 535),
        ("auth_plain=done", 535),
        ("auth_plain=denydisconnect", 535),
    ];
    for (args, code) in cases {
        let s = TestServer::start_delivering(&[
            ("plugins", &format!("testing/scripted {args}\nrcpt_ok\nqueue/maildir /maildir\n")),
            ("sandbox", "queue/maildir grant-dir maildir /maildir rw\ntesting/scripted rights authenticate\n"),
            ("auth", "failure_delay 0\n"),
        ]);
        let mut c = s.greeted();
        c.cmd("EHLO client.test", 250);
        c.cmd(&format!("AUTH PLAIN {}", plain("bob", "pw")), *code);
        if args.contains("denydisconnect") {
            assert!(c.is_closed(), "{args}");
            continue;
        }
        if *code == 235 {
            c.cmd("MAIL FROM:<bob@remote.test>", 250);
            c.cmd("RCPT TO:<x@elsewhere.test>", 250);
            assert_eq!(c.data(b"Subject: t\r\n\r\nx\r\n").code, 250);
            let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
            assert!(m.contains("X-Scripted-Auth: bob PLAIN\r\n"), "plugins see who authenticated: {m}");
        }
    }
    // A plugin that traps in the auth hook: 454, and the server carries on.
    let s = TestServer::start_delivering(&[
        ("plugins", "testing/hostile auth trap\nrcpt_ok\nqueue/maildir /maildir\n"),
        ("auth", "failure_delay 0\n"),
    ]);
    let mut c = s.greeted();
    c.cmd("EHLO attacker.test", 250);
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("bob", "pw")), 454);
    assert_eq!(r.text(), "4.7.0 Temporary authentication failure");
    c.cmd("NOOP", 250);
    assert!(s.log().contains("plugin fault") && s.log().contains("hook=\"auth\""), "{}", s.log());
}

#[test]
fn add_user_changes_a_password_and_the_change_counts_at_once() {
    let ca = TestCa::new();
    let s = server(&ca, "failure_delay 0\n");
    let said = add_user(&s.config_dir(), "alice@example.com", "a new password");
    assert!(said.starts_with("changed the password of alice@example.com"), "{said}");
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd(&format!("AUTH PLAIN {}", plain("alice@example.com", PASSWORD)), 535);
    c.cmd(&format!("AUTH PLAIN {}", plain("alice@example.com", "a new password")), 235);
    let users = std::fs::read_to_string(s.config_dir().join("auth_users")).unwrap();
    assert!(users.contains("alice@example.com:$argon2id$") && !users.contains("a new password"), "{users}");
}

#[test]
fn swaks_auth_plain_and_login_over_starttls() {
    let ca = TestCa::new();
    let s = server(&ca, "plaintext never\nfailure_delay 0\n");
    for mechanism in ["PLAIN", "LOGIN"] {
        let out = Command::new("swaks")
            .args(["--server", &s.addr.to_string(), "--tls", "--auth", mechanism])
            .args(["--auth-user", "alice@example.com", "--auth-password", PASSWORD])
            .args(["--from", "alice@example.com", "--to", "friend@elsewhere.test"])
            .output()
            .unwrap();
        let transcript = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{mechanism}: {transcript}");
        assert!(transcript.contains("<~  235 2.7.0 Authentication successful"), "{transcript}");
        assert!(transcript.contains("<~  250 2.0.0 Queued"), "{transcript}");
    }
    let out = Command::new("swaks")
        .args(["--server", &s.addr.to_string(), "--tls", "--auth", "PLAIN"])
        .args(["--auth-user", "alice@example.com", "--auth-password", "wrong"])
        .args(["--from", "alice@example.com", "--to", "friend@elsewhere.test"])
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("<~* 535 5.7.8 Authentication credentials invalid"), "{transcript}");
    assert_eq!(s.delivered().len(), 2);
}

const SMTPLIB_LOGIN: &str = r#"
import smtplib, ssl, sys
host, port, cafile, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=cafile)
with smtplib.SMTP(host, port, timeout=20) as s:
    s.starttls(context=context)
    s.ehlo("python.test")
    assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"], s.esmtp_features
    try:
        s.login("alice@example.com", "wrong")
        raise SystemExit("a wrong password was accepted")
    except smtplib.SMTPAuthenticationError as e:
        assert e.smtp_code == 535, e
    code, _ = s.login("alice@example.com", password)
    assert code == 235, code
    refused = s.sendmail("alice@example.com", ["friend@elsewhere.test"], b"Subject: python\r\n\r\nhi\r\n")
    assert refused == {}, refused
with smtplib.SMTP(host, port, timeout=20) as s:
    s.starttls(context=context)
    s.ehlo("python.test")
    s.user, s.password = "alice@example.com", password
    code, _ = s.auth("LOGIN", s.auth_login)
    assert code == 235, code
print("ok")
"#;

#[test]
fn python_smtplib_starttls_and_login() {
    let ca = TestCa::new();
    let s = server(&ca, "plaintext never\nfailure_delay 0\n");
    let ca_file = ca.write_pem(&s.dir.0);
    let out = Command::new("python3")
        .args(["-c", SMTPLIB_LOGIN, "127.0.0.1", &s.addr.port().to_string()])
        .arg(&ca_file)
        .arg(PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.delivered().len(), 1);
}

//! STARTTLS (RFC 3207) and implicit TLS (RFC 8314) over real sockets, with real TLS clients:
//! rustls, `openssl s_client`, swaks and Python's smtplib. Certificates come from a CA made
//! for each test.

use std::process::Command;

use wasmtpd_tests::tls::{Issued, TestCa};
use wasmtpd_tests::{Client, TempDir, TestServer};

/// The config files for a server with these certificates (the first is the default), the
/// scripted plugin (which records TLS facts in the message), rcpt_ok and queue/maildir.
fn tls_files(certs: &[(&str, &Issued)]) -> Vec<(String, String)> {
    let mut files = vec![
        ("me".to_string(), "mx.test".to_string()),
        ("rcpthosts".into(), "example.com\n".into()),
        ("plugins".into(), "testing/scripted\nrcpt_ok\nqueue/maildir /maildir\n".into()),
        ("sandbox".into(), "queue/maildir grant-dir maildir /maildir rw\n".into()),
    ];
    let mut list = String::new();
    for (name, issued) in certs {
        files.push((format!("certs/{name}.pem"), issued.chain_pem.clone()));
        files.push((format!("certs/{name}.key"), issued.key_pem.clone()));
        list.push_str(&format!("certificate certs/{name}.pem certs/{name}.key\n"));
    }
    files.push(("tls".into(), list));
    files
}

fn start(files: &[(String, String)], args: &[&str]) -> TestServer {
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    TestServer::start_with_args(TempDir::new("tls"), &files, args)
}

/// A server with one certificate for mx.test (and 127.0.0.1, which Python's smtplib checks).
fn server(ca: &TestCa) -> TestServer {
    start(&tls_files(&[("mx", &ca.issue(&["mx.test", "127.0.0.1"]))]), &[])
}

fn ehlo_keywords(c: &mut Client) -> Vec<String> {
    c.cmd("EHLO client.test", 250).lines[1..].to_vec()
}

#[test]
fn starttls_then_a_message_over_tls() {
    let ca = TestCa::new();
    let s = server(&ca);
    let mut c = s.greeted();
    assert!(ehlo_keywords(&mut c).contains(&"STARTTLS".to_string()));
    let r = c.cmd("STARTTLS", 220);
    assert_eq!(r.text(), "2.0.0 Ready to start TLS");
    c.start_tls(&ca, "mx.test").unwrap();
    assert_eq!(c.tls_version().as_deref(), Some("TLSv1_3"));
    // RFC 3207 4.2: the session starts over; a new EHLO is required, STARTTLS is not offered.
    c.cmd("MAIL FROM:<a@remote.test>", 503);
    let keywords = ehlo_keywords(&mut c);
    assert!(!keywords.contains(&"STARTTLS".to_string()), "{keywords:?}");
    c.cmd("STARTTLS", 503);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    let r = c.data(b"Subject: over TLS\r\n\r\nsecret\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    c.cmd("QUIT", 221);
    let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
    assert!(m.contains("with ESMTPS id"), "{m}");
    assert!(m.contains("(using TLSv1.3 with cipher TLS13_"), "{m}");
    // Plugins see the session's facts (the SNI name the client asked for included).
    assert!(m.contains("X-Scripted-Tls: TLSv1.3 TLS13_") && m.contains(" mx.test\r\n"), "{m}");
}

#[test]
fn plaintext_sent_after_starttls_is_never_executed() {
    // CVE-2011-0411: a man in the middle appends a command to the client's STARTTLS in the
    // same packet; it must not run inside the TLS session.
    let ca = TestCa::new();
    let s = server(&ca);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.send("STARTTLS\r\nNOOP\r\nRSET\r\n");
    c.expect(220);
    c.start_tls(&ca, "mx.test").unwrap();
    // Had NOOP or RSET run, their 250s would come before the QUIT's 221.
    c.cmd("QUIT", 221);
    assert!(s.log().contains("discarded plaintext sent after STARTTLS"), "{}", s.log());
}

#[test]
fn starttls_rules() {
    let ca = TestCa::new();
    let s = server(&ca);
    let mut c = s.greeted();
    c.cmd("STARTTLS", 503); // EHLO first
    c.cmd("HELO client.test", 250);
    c.cmd("STARTTLS", 503); // HELO is not enough
    c.cmd("EHLO client.test", 250);
    c.cmd("STARTTLS now", 501);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("STARTTLS", 503); // not during a transaction
    c.cmd("RSET", 250);
    c.cmd("STARTTLS", 220);
    c.start_tls(&ca, "mx.test").unwrap();
    c.cmd("EHLO client.test", 250);
    c.cmd("STARTTLS", 503); // TLS already active

    // No certificate: STARTTLS is neither offered nor accepted.
    let plain = TestServer::start_delivering(&[]);
    let mut c = plain.greeted();
    assert!(!ehlo_keywords(&mut c).contains(&"STARTTLS".to_string()));
    c.cmd("STARTTLS", 502);
}

#[test]
fn a_failed_handshake_closes_only_that_connection() {
    let ca = TestCa::new();
    let s = server(&ca);
    let mut bad = s.greeted();
    bad.cmd("EHLO client.test", 250);
    bad.cmd("STARTTLS", 220);
    bad.send("this is not a TLS ClientHello\r\n");
    assert!(bad.read_reply().is_none(), "the server closes it");
    // A client that trusts another CA fails too, and the server carries on.
    let mut untrusting = s.greeted();
    untrusting.cmd("EHLO client.test", 250);
    untrusting.cmd("STARTTLS", 220);
    assert!(untrusting.start_tls(&TestCa::new(), "mx.test").is_err());
    let mut good = s.greeted();
    good.cmd("EHLO client.test", 250);
    good.cmd("STARTTLS", 220);
    good.start_tls(&ca, "mx.test").unwrap();
    good.cmd("EHLO client.test", 250);
    good.cmd("QUIT", 221);
    assert!(s.log().contains("TLS handshake failed"), "{}", s.log());
}

#[test]
fn sni_picks_the_certificate() {
    let ca = TestCa::new();
    let (mx, other) = (ca.issue(&["mx.test"]), ca.issue(&["other.test", "*.other.test"]));
    let s = start(&tls_files(&[("mx", &mx), ("other", &other)]), &[]);
    for (name, expected) in [("mx.test", &mx), ("other.test", &other), ("www.other.test", &other)] {
        let mut c = s.greeted();
        c.cmd("EHLO client.test", 250);
        c.cmd("STARTTLS", 220);
        let presented = c.start_tls(&ca, name).unwrap();
        assert!(presented == expected.der, "SNI {name} got the wrong certificate");
    }
    // A name no certificate has: the default (first) one, which the client then rejects.
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("STARTTLS", 220);
    assert!(c.start_tls(&ca, "unknown.test").is_err());
}

#[test]
fn implicit_tls_listener() {
    let ca = TestCa::new();
    let s = start(&tls_files(&[("mx", &ca.issue(&["mx.test"]))]), &["--listen-tls", "127.0.0.1:0"]);
    let mut c = Client::connect_tls(s.tls_addr.unwrap(), &ca, "mx.test");
    c.expect(220);
    let keywords = ehlo_keywords(&mut c);
    assert!(!keywords.contains(&"STARTTLS".to_string()), "{keywords:?}");
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    assert_eq!(c.data(b"Subject: implicit\r\n\r\nhi\r\n").code, 250);
    assert!(String::from_utf8_lossy(&s.delivered()[0]).contains("with ESMTPS id"));
    // Plaintext to the TLS port gets nothing but a closed connection.
    let mut plain = Client::connect(s.tls_addr.unwrap());
    plain.send("EHLO client.test\r\n");
    assert!(plain.read_reply().is_none());
}

#[test]
fn listen_tls_without_a_certificate_stops_startup() {
    let dir = TempDir::new("notls");
    std::fs::create_dir_all(dir.0.join("config")).unwrap();
    let out = wasmtpd_tests::server_command(&dir.0)
        .arg("--config")
        .arg(dir.0.join("config"))
        .args(["--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config/tls: --listen-tls needs a certificate"), "{err}");
    // A certificate file that does not exist names the line and the file.
    std::fs::write(dir.0.join("config/tls"), "# certs\ncertificate missing.pem missing.key\n").unwrap();
    let out = wasmtpd_tests::server_command(&dir.0)
        .arg("--config")
        .arg(dir.0.join("config"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("config/tls:2: cannot read") && err.contains("missing.pem"), "{err}");
}

#[test]
fn sighup_reloads_certificates_without_dropping_sessions() {
    let ca = TestCa::new();
    let first = ca.issue(&["mx.test"]);
    let s = start(&tls_files(&[("mx", &first)]), &[]);
    let mut open = s.greeted();
    open.cmd("EHLO client.test", 250);
    open.cmd("STARTTLS", 220);
    assert!(open.start_tls(&ca, "mx.test").unwrap() == first.der);
    open.cmd("EHLO client.test", 250);

    let second = ca.issue(&["mx.test"]);
    std::fs::write(s.config_dir().join("certs/mx.pem"), &second.chain_pem).unwrap();
    std::fs::write(s.config_dir().join("certs/mx.key"), &second.key_pem).unwrap();
    s.signal("HUP");
    let reloaded = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        s.log().contains("certificates reloaded")
    });
    assert!(reloaded, "{}", s.log());
    let mut fresh = s.greeted();
    fresh.cmd("EHLO client.test", 250);
    fresh.cmd("STARTTLS", 220);
    assert!(fresh.start_tls(&ca, "mx.test").unwrap() == second.der, "new handshakes get the new certificate");
    // The session opened before the reload goes on, on its old certificate.
    open.cmd("MAIL FROM:<a@remote.test>", 250);
    open.cmd("RCPT TO:<b@example.com>", 250);
    assert_eq!(open.data(b"Subject: still here\r\n\r\nx\r\n").code, 250);

    // A broken certificate file keeps the working ones.
    std::fs::write(s.config_dir().join("certs/mx.pem"), "garbage").unwrap();
    s.signal("HUP");
    let refused = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        s.log().contains("certificates not reloaded")
    });
    assert!(refused, "{}", s.log());
    let mut after = s.greeted();
    after.cmd("EHLO client.test", 250);
    after.cmd("STARTTLS", 220);
    assert!(after.start_tls(&ca, "mx.test").unwrap() == second.der);
}

#[test]
fn openssl_s_client_starttls_handshake() {
    let ca = TestCa::new();
    let s = server(&ca);
    let ca_file = ca.write_pem(&s.dir.0);
    for version in ["-tls1_3", "-tls1_2"] {
        let out = Command::new("openssl")
            .args(["s_client", "-starttls", "smtp", "-connect", &s.addr.to_string(), "-servername", "mx.test"])
            .arg("-CAfile")
            .arg(&ca_file)
            .args(["-verify_return_error", "-verify_hostname", "mx.test", "-ign_eof", version])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(b"EHLO openssl.test\r\nQUIT\r\n")?;
                child.wait_with_output()
            })
            .expect("openssl is installed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Verify return code: 0 (ok)"), "{version}: {text}");
        let expected = if version == "-tls1_3" { "TLSv1.3" } else { "TLSv1.2" };
        assert!(
            text.contains(&format!("Protocol  : {expected}")) || text.contains(&format!("New, {expected}")),
            "{text}"
        );
        assert!(text.contains("250-mx.test Hi openssl.test"), "EHLO over TLS: {text}");
        assert!(text.contains("221 2.0.0"), "{text}");
    }
}

#[test]
fn swaks_starttls_delivers() {
    let ca = TestCa::new();
    let s = server(&ca);
    let out = Command::new("swaks")
        .args(["--server", &s.addr.to_string(), "--tls", "--from", "a@remote.test", "--to", "b@example.com"])
        .args(["--header", "Subject: swaks over TLS"])
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(transcript.contains("<-  220 2.0.0 Ready to start TLS"), "{transcript}");
    assert!(transcript.contains("=== TLS started with cipher TLSv1.3"), "{transcript}");
    assert!(transcript.contains("<~  250 2.0.0 Queued"), "the message went over TLS: {transcript}");
    assert!(String::from_utf8_lossy(&s.delivered()[0]).contains("with ESMTPS id"));
}

const SMTPLIB_STARTTLS: &str = r#"
import smtplib, ssl, sys
host, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
context = ssl.create_default_context(cafile=cafile)
with smtplib.SMTP(host, port, timeout=20) as s:
    s.ehlo("python.test")
    assert s.has_extn("starttls")
    code, _ = s.starttls(context=context)
    assert code == 220, code
    assert s.sock.version() in ("TLSv1.3", "TLSv1.2"), s.sock.version()
    s.ehlo("python.test")
    assert not s.has_extn("starttls")
    s.sendmail("a@remote.test", ["b@example.com"], b"Subject: smtplib over TLS\r\n\r\nhi\r\n")
print("ok")
"#;

#[test]
fn python_smtplib_starttls() {
    let ca = TestCa::new();
    let s = server(&ca);
    let ca_file = ca.write_pem(&s.dir.0);
    let out = Command::new("python3")
        .args(["-c", SMTPLIB_STARTTLS, "127.0.0.1", &s.addr.port().to_string()])
        .arg(&ca_file)
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

#[test]
fn notes_and_the_relay_flag_learnt_in_plaintext_are_forgotten_after_starttls() {
    // scripted: VRFY is denied, so its deny hook leaves a connection note (which data_post puts
    // in X-Scripted-Last-Deny), and VRFY makes the client a relay client (rcpt_ok then accepts
    // any recipient).
    let ca = TestCa::new();
    let mut files = tls_files(&[("mx", &ca.issue(&["mx.test"]))]);
    for (name, text) in &mut files {
        if name == "plugins" {
            *text = "testing/scripted vrfy=deny relay=vrfy\nrcpt_ok\nqueue/maildir /maildir\n".into();
        }
        if name == "sandbox" {
            text.push_str("testing/scripted rights relay-client\n");
        }
    }
    let s = start(&files, &[]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("VRFY someone", 554);
    // In plaintext, both took effect.
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<friend@elsewhere.test>", 250);
    assert_eq!(c.data(b"Subject: plaintext\r\n\r\nx\r\n").code, 250);
    let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
    assert!(m.contains("X-Scripted-Last-Deny: "), "the note was set: {m}");
    // After the handshake, neither is there any more.
    c.cmd("STARTTLS", 220);
    c.start_tls(&ca, "mx.test").unwrap();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    let r = c.cmd("RCPT TO:<friend@elsewhere.test>", 550);
    assert_eq!(r.text(), "5.7.1 Relaying denied", "the relay flag was forgotten");
    c.cmd("RCPT TO:<b@example.com>", 250);
    assert_eq!(c.data(b"Subject: over TLS\r\n\r\nx\r\n").code, 250);
    let m = String::from_utf8(s.delivered()[1].clone()).unwrap();
    assert!(m.contains("with ESMTPS id"), "{m}");
    // Over TLS, rcpt_ok's deny sets the note again; the plaintext one (the VRFY deny) is gone.
    assert!(!m.contains(":vrfy:"), "the connection note was forgotten: {m}");
}

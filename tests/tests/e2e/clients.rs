//! Interoperability with real clients: swaks and Python's smtplib.

use std::process::Command;

use wasmtpd_tests::TestServer;

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

#[test]
fn swaks_delivers_a_message() {
    assert!(have("swaks"), "swaks is not installed: run `cargo xtask test`, which installs it");
    let s = TestServer::start_delivering(&[]);
    let out = Command::new("swaks")
        .args(["--server", &s.addr.to_string(), "--from", "sender@remote.test", "--to", "rcpt@example.com"])
        .args(["--header", "Subject: from swaks", "--body", "hello from swaks\n.leading dot"])
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(transcript.contains("<-  250 2.0.0 Queued as"), "{transcript}");
    let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
    assert!(m.contains("Subject: from swaks\r\n"));
    assert!(m.contains("\r\n.leading dot"), "swaks stuffs the dot, we unstuff it: {m}");
}

#[test]
fn swaks_pipelining_and_rejections() {
    let s = TestServer::start_delivering(&[]);
    let out = Command::new("swaks")
        .args(["--server", &s.addr.to_string(), "--pipeline", "--from", "a@remote.test"])
        .args(["--to", "one@example.com,two@elsewhere.test,three@example.com"])
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("<** 550 5.7.1 Relaying denied"), "{transcript}");
    assert!(transcript.contains("<-  250 2.0.0 Queued as"), "{transcript}");
    assert_eq!(s.delivered().len(), 1);
}

const SMTPLIB_SCRIPT: &str = r#"
import smtplib, sys
from email.message import EmailMessage
host, port = sys.argv[1], int(sys.argv[2])
with smtplib.SMTP(host, port, timeout=20) as s:
    code, text = s.ehlo("python.test")
    assert code == 250, (code, text)
    for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "smtputf8"):
        assert s.has_extn(ext), ext
    msg = EmailMessage()
    msg["From"] = "sender@remote.test"
    msg["To"] = "rcpt@example.com"
    msg["Subject"] = "from smtplib"
    msg.set_content("line one\n.line with a dot\nlast\n")
    refused = s.send_message(msg)
    assert refused == {}, refused
    # A refused recipient among accepted ones.
    refused = s.sendmail("sender@remote.test", ["rcpt@example.com", "x@elsewhere.test"], b"Subject: two\r\n\r\nbody\r\n")
    assert list(refused) == ["x@elsewhere.test"] and refused["x@elsewhere.test"][0] == 550, refused
    # SMTPUTF8 with an internationalised address.
    msg = EmailMessage()
    msg["From"] = "jürgen@remote.test"
    msg["To"] = "kätchen@example.com"
    msg["Subject"] = "grüße"
    msg.set_content("hallo\n")
    s.send_message(msg)  # smtplib asks for SMTPUTF8 itself
    # ... and again when the caller asked for it too: MAIL FROM:<...> SMTPUTF8 SMTPUTF8.
    s.send_message(msg, mail_options=["SMTPUTF8"])
    # Every refusal is an exception with the right code.
    try:
        s.sendmail("sender@remote.test", ["x@elsewhere.test"], b"x")
        raise SystemExit("expected a refusal")
    except smtplib.SMTPRecipientsRefused as e:
        assert e.recipients["x@elsewhere.test"][0] == 550
    print("ok")
"#;

#[test]
fn python_smtplib_sends_four_messages() {
    let s = TestServer::start_delivering(&[]);
    let out = Command::new("python3")
        .args(["-c", SMTPLIB_SCRIPT, &s.addr.ip().to_string(), &s.addr.port().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = s.delivered();
    assert_eq!(msgs.len(), 4);
    assert!(msgs.iter().any(|m| String::from_utf8_lossy(m).contains("\r\n.line with a dot\r\n")));
    assert!(msgs.iter().any(|m| String::from_utf8_lossy(m).contains("for <kätchen@example.com>")));
}

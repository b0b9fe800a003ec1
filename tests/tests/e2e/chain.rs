//! The plugin chain through real SMTP with real components: order, `$include`, every verdict
//! of every hook, notes and `hook_<name>` records, temporary files.

use wasmtpd_tests::{Client, TestServer};

/// What the scripted fixture needs to accept recipients and messages like a real plugin would.
const SCRIPTED_RIGHTS: &str = "testing/scripted rights accept-recipient queue\n";

/// `config/sandbox` for [`TestServer::start_with_chain`], granting `instance` those rights too.
fn scripted_may_accept(instance: &str) -> String {
    format!("queue/maildir grant-dir maildir /maildir rw\n{instance} rights accept-recipient queue\n")
}

/// Drives a session up to `hook` and returns the code of the reply that hook decided.
fn code_at(s: &TestServer, hook: &str) -> u16 {
    let mut c = s.connect();
    let greeting = c.read_reply().unwrap().code;
    if hook == "connect" {
        return greeting;
    }
    let simple = |c: &mut Client, line: &str| {
        c.line(line);
        c.read_reply().unwrap().code
    };
    match hook {
        "helo" => return simple(&mut c, "HELO client.test"),
        "ehlo" => return simple(&mut c, "EHLO client.test"),
        "vrfy" => return simple(&mut c, "VRFY someone"),
        "noop" => return simple(&mut c, "NOOP"),
        "help" => return simple(&mut c, "HELP"),
        "quit" => return simple(&mut c, "QUIT"),
        "unrecognized_command" => return simple(&mut c, "XYZZY plugh"),
        _ => {}
    }
    c.cmd("EHLO client.test", 250);
    if hook == "mail" {
        return simple(&mut c, "MAIL FROM:<a@remote.test>");
    }
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    if hook == "rcpt" {
        return simple(&mut c, "RCPT TO:<b@example.com>");
    }
    c.cmd("RCPT TO:<b@example.com>", 250);
    if hook == "data" {
        return simple(&mut c, "DATA");
    }
    c.data(b"Subject: verdicts\r\nFrom: a@remote.test\r\n\r\nbody").code
}

#[test]
fn every_verdict_of_every_hook_gives_the_right_reply() {
    let verdicts = ["ok", "deny", "denysoft", "denydisconnect", "denysoftdisconnect", "declined", "done"];
    // The expected code for each verdict above, per hook (qpsmtpd's table, see verdict.rs).
    let table: &[(&str, [u16; 7])] = &[
        ("connect", [220, 550, 450, 550, 450, 220, 220]),
        ("helo", [250, 550, 450, 550, 450, 250, 250]),
        ("ehlo", [250, 550, 450, 550, 450, 250, 250]),
        ("mail", [250, 550, 450, 550, 421, 250, 250]),
        ("rcpt", [250, 550, 450, 550, 421, 450, 250]),
        ("data", [354, 554, 451, 554, 451, 354, 354]),
        ("data_post", [250, 552, 452, 552, 452, 250, 250]),
        ("queue", [250, 552, 452, 451, 451, 451, 250]),
        ("vrfy", [250, 554, 252, 252, 252, 252, 250]),
        ("noop", [250, 500, 250, 500, 250, 250, 250]),
        ("help", [214, 500, 214, 214, 214, 214, 214]),
        ("quit", [221, 221, 221, 221, 221, 221, 221]),
        ("unrecognized_command", [500, 500, 500, 521, 500, 500, 250]),
    ];
    std::thread::scope(|scope| {
        for (hook, codes) in table {
            scope.spawn(move || {
                for (verdict, expected) in verdicts.iter().zip(codes) {
                    // rcpt must say ok to reach the later hooks; the queue hook is only ours
                    // when it is the hook under test.
                    let rcpt = if *hook == "rcpt" { String::new() } else { "rcpt=ok".to_string() };
                    let queue = if *hook == "queue" { "" } else { "\nqueue/maildir /maildir" };
                    let plugins = format!("testing/scripted {hook}={verdict} {rcpt}{queue}\n");
                    // The fixture may give every verdict (accepting a recipient and queueing
                    // need rights, see rights.rs).
                    let mut sandbox = SCRIPTED_RIGHTS.to_string();
                    if !queue.is_empty() {
                        sandbox.push_str("queue/maildir grant-dir maildir /maildir rw\n");
                    }
                    let s = TestServer::start_delivering(&[("plugins", &plugins), ("sandbox", &sandbox)]);
                    assert_eq!(code_at(&s, hook), *expected, "hook {hook}, verdict {verdict}");
                }
            });
        }
    });
}

#[test]
fn a_plugin_message_and_enhanced_code_reach_the_client_cleaned() {
    let s = TestServer::start_with_chain("testing/scripted rcpt=deny:no_such_user_here", &[]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.com>", 550).text(), "5.7.1 no such user here");
}

#[test]
fn chain_order_and_include_order() {
    let s = TestServer::start_delivering(&[
        ("plugins", "testing/scripted:1 tag=first\n$include plugins.d\nrcpt_ok\nqueue/maildir /maildir\n"),
        ("plugins.d/20_b", "testing/scripted:3 tag=third\n"),
        ("plugins.d/10_a", "# runs before 20_b\ntesting/scripted:2 tag=second\n"),
    ]);
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    assert_eq!(c.data(b"Subject: order\r\n\r\nx").code, 250);
    let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
    let order = m.lines().find_map(|l| l.strip_prefix("X-Scripted-Order: ")).unwrap();
    assert!(
        order.starts_with(
            "first:mail second:mail third:mail first:rcpt second:rcpt third:rcpt first:data second:data third:data"
        ),
        "{order}"
    );
}

#[test]
fn the_first_answer_other_than_declined_wins() {
    // The first plugin denies: the second (which would accept) never runs for rcpt.
    let s = TestServer::start_with_chain(
        "testing/scripted:1 tag=a rcpt=deny:first\ntesting/scripted:2 tag=b rcpt=ok",
        &[("sandbox", &scripted_may_accept("testing/scripted:2"))],
    );
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.com>", 550).text(), "5.7.1 first");
    // Declined passes on: the second one accepts.
    let s = TestServer::start_with_chain(
        "testing/scripted:1 tag=a\ntesting/scripted:2 tag=b rcpt=ok",
        &[("sandbox", &scripted_may_accept("testing/scripted:2"))],
    );
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    assert_eq!(c.data(b"Subject: x\r\n\r\ny").code, 250);
    let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
    assert!(m.contains("a:rcpt b:rcpt"), "{m}");
}

#[test]
fn the_deny_hook_hears_of_every_denial() {
    // Plugin 1 denies VRFY; plugin 2's deny hook is told which plugin, which hook and which
    // verdict (it keeps them in a connection note, and writes it into the next message). The
    // reply is plugin 1's.
    let s = TestServer::start_with_chain(
        "testing/scripted:1 tag=a vrfy=deny\ntesting/scripted:2 tag=b rcpt=ok",
        &[("sandbox", &scripted_may_accept("testing/scripted:2"))],
    );
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("VRFY x", 554);
    c.envelope("a@remote.test", &["b@example.com"]);
    assert_eq!(c.data(b"Subject: after a denial\r\n\r\nx").code, 250);
    let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
    assert!(m.contains("X-Scripted-Last-Deny: testing/scripted:1:vrfy:Verdict::Deny\r\n"), "{m}");
}

#[test]
fn notes_hook_records_and_temp_files() {
    let s = TestServer::start_with_chain(
        "testing/scripted tag=s\ntesting/notes_temp testing/scripted.hook_rcpt\nrcpt_ok",
        &[],
    );
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    assert_eq!(c.data(b"Subject: one\r\n\r\nx").code, 250);
    // A second transaction on the same connection: a fresh instance and a fresh directory.
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<c@example.com>", 250);
    assert_eq!(c.data(b"Subject: two\r\n\r\nx").code, 250);
    c.cmd("QUIT", 221);
    let msgs: Vec<String> = s.delivered().into_iter().map(|m| String::from_utf8(m).unwrap()).collect();
    assert_eq!(msgs.len(), 2);
    for (m, rcpt) in msgs.iter().zip(["b@example.com", "c@example.com"]) {
        // The temp file written at RCPT is read back at data_post (same transaction).
        assert!(m.contains(&format!("X-Notes-Temp-File: {rcpt}\r\n")), "{m}");
        // The host recorded the earlier plugin's verdict as a note the later one can read.
        assert!(m.contains("X-Notes-Temp-Seen: DECLINED\r\n"), "{m}");
        // The previous transaction's temp file is gone.
        assert!(m.contains("X-Notes-Temp-Leaked: no\r\n"), "{m}");
    }
    // Nothing is left in the plugins' temp area once the connection is over.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let left: Vec<_> = walk(&s.dir.0.join("state/spool/plugins"));
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_connection_scoped_plugin_keeps_its_temp_files_across_transactions() {
    // Its directory is not the transaction's: a new transaction must not remove it.
    let s = TestServer::start_with_chain(
        "testing/notes_temp -\nrcpt_ok",
        &[("sandbox", "queue/maildir grant-dir maildir /maildir rw\ntesting/notes_temp scope connection\n")],
    );
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    assert_eq!(c.data(b"Subject: one\r\n\r\nx").code, 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<c@example.com>", 250);
    assert_eq!(c.data(b"Subject: two\r\n\r\nx").code, 250);
    let second = String::from_utf8(s.delivered()[1].clone()).unwrap();
    assert!(second.contains("X-Notes-Temp-File: c@example.com\r\n"), "{second}");
    // The same instance: the first transaction's file is still there.
    assert!(second.contains("X-Notes-Temp-Leaked: yes\r\n"), "{second}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

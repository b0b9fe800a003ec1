//! The DNS capability (`wit/dns.wit`) end to end: the real server, a real name server (a
//! private nsd with the test's zones, or one that never answers, or one that answers
//! SERVFAIL), and `testing/dns_probe`, which makes the calls its arguments say at RCPT and
//! answers 550 with one line per answer, so each test reads exactly what a plugin gets.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use wasmtpd_tests::dns::{DnsServer, FailingNameServer, SilentNameServer, resolver_config};
use wasmtpd_tests::{Client, TestServer};

/// The test zone: every record type a plugin may ask for, with TTLs of their own.
const ZONE: (&str, &str) = (
    "zone.test",
    r#"www 3600 A 192.0.2.1
www 3600 A 192.0.2.2
www 1800 AAAA 2001:db8::1
@ 600 MX 20 mx2
@ 600 MX 10 mx1.zone.test.
nullmx 700 MX 0 .
txt 120 TXT "v=spf1 " "ip4:192.0.2.0/24 " "-all"
txt 120 TXT "second record"
alias 900 CNAME www
leaf.branch 300 A 192.0.2.9
odd 60 TXT "\255abc" "say \"hi\"" ""
"#,
);

/// The reverse zone of 192.0.2.0/24.
const REVERSE: (&str, &str) = ("2.0.192.in-addr.arpa", "7 700 PTR mail.zone.test.\n");

/// The reverse zone of 2001:db8::/32: 2001:db8::1 is v6.zone.test.
const REVERSE6: (&str, &str) =
    ("8.b.d.0.1.0.0.2.ip6.arpa", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0 PTR v6.zone.test.\n");

/// A DNS list in the usual form (RFC 5782): 127.0.0.2 listed with a reason, 127.0.0.6 listed
/// without one, 127.0.0.4 answered with an address outside 127/8 (a list that has gone
/// wrong, or a wildcard), 127.0.0.5 with Spamhaus's "you may not query us"; nothing else listed.
const LIST: (&str, &str) = (
    "bl.test",
    r#"2.0.0.127 A 127.0.0.2
2.0.0.127 TXT "listed: see http://bl.test/?127.0.0.2"
6.0.0.127 A 127.0.0.6
6.0.0.127 A 127.0.0.10
2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2 A 127.0.0.2
4.0.0.127 A 10.0.0.4
5.0.0.127 A 127.255.255.254
spammer.example A 127.0.0.2
"#,
);

/// The resolver's timeout in most tests: short, so failures come fast.
const TIMEOUT: Duration = Duration::from_secs(1);
/// The resolver's timeout where a test shows that something did not wait for it.
const LONG_TIMEOUT: Duration = Duration::from_secs(5);

/// A server whose chain is `testing/dns_probe ARGS` then `rcpt_ok`, asking the name server
/// at `resolver` (a `config/resolver` text), with `sandbox` lines added.
fn probe(args: &str, resolver: &str, sandbox: &str) -> TestServer {
    let chain = format!("testing/dns_probe {args}\nrcpt_ok");
    let sandbox = format!("queue/maildir grant-dir maildir /maildir rw\n{sandbox}");
    TestServer::start_with_chain(&chain, &[("sandbox", &sandbox), ("resolver", resolver)])
}

/// The probe's answer lines at `RCPT TO:<to>`, in the transaction open on `c`.
#[track_caller]
fn answers(c: &mut Client, to: &str) -> Vec<String> {
    let r = c.cmd(&format!("RCPT TO:<{to}>"), 550);
    r.lines.iter().map(|l| l.strip_prefix("5.7.1 ").unwrap_or(l).to_string()).collect()
}

/// The probe's answer lines at RCPT in a transaction of their own on `c`.
#[track_caller]
fn ask(c: &mut Client, to: &str) -> Vec<String> {
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    let lines = answers(c, to);
    c.cmd("RSET", 250);
    lines
}

/// The start of a long line, for a failure message.
fn short(line: &str) -> &str {
    line.get(..200).unwrap_or(line)
}

/// A new session from 127.0.0.1, after EHLO.
fn session(s: &TestServer) -> Client {
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c
}

/// The session goes on: a whole transaction to a recipient the probe skips.
fn delivers(c: &mut Client) {
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<skip@example.com>", 250);
    assert_eq!(c.data(b"Subject: after DNS\r\n\r\nx").code, 250);
}

#[test]
fn lookups_give_typed_records_with_their_ttls() {
    let dns = DnsServer::start(&[ZONE, REVERSE, REVERSE6]);
    let args = "lookup:a:www.zone.test lookup:aaaa:WWW.Zone.Test. lookup:mx:zone.test lookup:mx:nullmx.zone.test \
                lookup:txt:txt.zone.test lookup:txt:odd.zone.test lookup:a:alias.zone.test \
                lookup:cname:alias.zone.test lookup:ns:zone.test reverse:192.0.2.7 reverse:2001:db8::1";
    let s = probe(args, &resolver_config(dns.addr(), TIMEOUT), "testing/dns_probe dns any\n");
    let mut c = session(&s);
    assert_eq!(
        ask(&mut c, "b@example.com"),
        [
            "a www.zone.test -> ok 2: A 192.0.2.1 ttl=3600; A 192.0.2.2 ttl=3600",
            "aaaa WWW.Zone.Test. -> ok 1: AAAA 2001:db8::1 ttl=1800",
            "mx zone.test -> ok 2: MX 10 mx1.zone.test ttl=600; MX 20 mx2.zone.test ttl=600",
            // A null MX (RFC 7505): the root as the exchange, shown as ".".
            "mx nullmx.zone.test -> ok 1: MX 0 . ttl=700",
            // Each record's character-strings joined without separators, one TXT per record.
            r#"txt txt.zone.test -> ok 2: TXT "v=spf1 ip4:192.0.2.0/24 -all" ttl=120; TXT "second record" ttl=120"#,
            // An octet that is not UTF-8 becomes U+FFFD; quotes are data; an empty string adds nothing.
            "txt odd.zone.test -> ok 1: TXT \"\u{fffd}abcsay \\\"hi\\\"\" ttl=60",
            // The CNAME is followed: the answer is the A records of its end, with their TTLs.
            "a alias.zone.test -> ok 2: A 192.0.2.1 ttl=3600; A 192.0.2.2 ttl=3600",
            "cname alias.zone.test -> ok 1: CNAME www.zone.test ttl=900",
            "ns zone.test -> ok 1: NS ns.harness.invalid ttl=300",
            "reverse 192.0.2.7 -> ok 1: mail.zone.test",
            // IPv6: reversed nibbles under ip6.arpa.
            "reverse 2001:db8::1 -> ok 1: v6.zone.test",
        ]
    );
    delivers(&mut c);
}

#[test]
fn no_such_domain_and_no_records_are_told_apart() {
    let dns = DnsServer::start(&[ZONE, REVERSE]);
    let args = "lookup:a:nothere.zone.test lookup:mx:www.zone.test lookup:a:branch.zone.test \
                lookup:txt:nullmx.zone.test reverse:192.0.2.8 lookup:a:bad..name lookup:a: reverse:192.0.2";
    let s = probe(args, &resolver_config(dns.addr(), TIMEOUT), "testing/dns_probe dns any\n");
    let mut c = session(&s);
    let lines = ask(&mut c, "b@example.com");
    assert_eq!(
        lines[..5],
        [
            "a nothere.zone.test -> no-such-domain",
            "mx www.zone.test -> no-records",
            // An empty non-terminal exists (a name below it does), with no records.
            "a branch.zone.test -> no-records",
            "txt nullmx.zone.test -> no-records",
            "reverse 192.0.2.8 -> no-such-domain",
        ]
    );
    assert!(lines[5].starts_with("a bad..name -> invalid-name: "), "{lines:?}");
    assert!(lines[6].starts_with("a  -> invalid-name: "), "{lines:?}");
    assert_eq!(lines[7], "reverse 192.0.2 -> invalid-name: not an IP address: 192.0.2");
    assert_eq!(lines.len(), 8, "{lines:?}");
}

#[test]
fn outside_its_dns_grant_every_call_is_refused_without_asking_and_logged() {
    let failing = FailingNameServer::start();
    let args = "lookup:a:www.zone.test lookup-all:a:www.zone.test,mx:zone.test reverse:192.0.2.7 \
                check-lists:bl.test:client";
    // Granted only a zone it does not ask (a plugin granted no DNS at all is refused at
    // start-up: `vetting.rs`); a second instance is granted any name, so the refusals are for
    // want of the first one's grant, not of a resolver.
    let chain = format!("testing/dns_probe {args}\ntesting/dns_probe:granted\nrcpt_ok");
    let sandbox = "queue/maildir grant-dir maildir /maildir rw\ntesting/dns_probe dns unasked.test\n\
                   testing/dns_probe:granted dns any\n";
    let resolver = resolver_config(failing.addr(), TIMEOUT);
    let s = TestServer::start_with_chain(&chain, &[("sandbox", sandbox), ("resolver", &resolver)]);
    let mut c = session(&s);
    let lines = ask(&mut c, "b@example.com");
    let refused = "refused: not granted: the operator has not granted this plugin DNS for";
    let calls = ["a www.zone.test", "a www.zone.test", "mx zone.test", "reverse 192.0.2.7", "bl.test 127.0.0.1"];
    assert_eq!(lines.len(), calls.len(), "{lines:?}");
    for (line, call) in lines.iter().zip(calls) {
        assert!(line.starts_with(&format!("{call} -> {refused} `")), "{line}");
    }
    assert!(lines[0].ends_with("`www.zone.test` (`dns` in config/sandbox)"), "{}", lines[0]);
    assert_eq!(failing.queries(), 0, "no question left the server");
    let log = s.log();
    let logged = log.lines().filter(|l| l.contains("DNS question refused")).collect::<Vec<_>>();
    // Five refusals: four lines, then one saying the rest are not logged (a flood is not).
    assert_eq!(logged.len(), 4, "the refusals are logged:\n{log}");
    assert!(logged.iter().all(|l| l.contains("testing/dns_probe")), "the log names the plugin: {logged:?}");
    assert!(logged[0].contains("not granted") && logged[0].contains("www.zone.test"), "{}", logged[0]);
    let rest: Vec<&str> = log.lines().filter(|l| l.contains("more DNS questions refused; no longer logged")).collect();
    assert!(rest.len() == 1 && rest[0].contains("testing/dns_probe"), "{rest:?}");
    // The next transaction has an instance of its own, which may log four again: per instance,
    // never more.
    ask(&mut c, "b@example.com");
    let log = s.log();
    assert_eq!(log.lines().filter(|l| l.contains("DNS question refused")).count(), 4 + 4);
    assert_eq!(log.lines().filter(|l| l.contains("more DNS questions refused; no longer logged")).count(), 2);
    delivers(&mut c);
}

#[test]
fn a_zones_grant_lets_names_under_its_zones_through_and_refuses_the_others() {
    let dns = DnsServer::start(&[ZONE, REVERSE, LIST]);
    let args = [
        "lookup:a:www.zone.test",
        "lookup:a:WWW.ZONE.TEST.",
        "lookup:mx:zone.test",
        "lookup:a:www.other.test",
        "lookup:a:evilzone.test",
        "lookup:a:zone.test.evil",
        // One label, `secret.zone`, in the zone `test`: a query that goes to test's name
        // servers, not zone.test's.
        r"lookup:a:secret\.zone.test",
        "reverse:192.0.2.7",
        "check-lists:bl.test:client",
    ];
    let s = probe(&args.join(" "), &resolver_config(dns.addr(), TIMEOUT), "testing/dns_probe dns zone.test\n");
    let mut c = session(&s);
    let lines = ask(&mut c, "b@example.com");
    assert_eq!(lines.len(), 9, "{lines:?}");
    assert_eq!(lines[0], "a www.zone.test -> ok 2: A 192.0.2.1 ttl=3600; A 192.0.2.2 ttl=3600");
    assert!(lines[1].starts_with("a WWW.ZONE.TEST. -> ok 2: "), "case and a final dot do not matter: {}", lines[1]);
    assert!(lines[2].starts_with("mx zone.test -> ok 2: "), "the zone itself is granted: {}", lines[2]);
    let refused = [
        "www.other.test",
        "evilzone.test",
        "zone.test.evil",
        r"secret\\.zone.test",
        "7.2.0.192.in-addr.arpa",
        "1.0.0.127.bl.test",
    ];
    for (line, name) in lines[3..].iter().zip(refused) {
        assert!(
            line.contains(&format!(
                "-> refused: not granted: the operator has not granted this plugin DNS for `{name}`"
            )),
            "{line}"
        );
    }
    delivers(&mut c);
}

#[test]
fn the_query_budget_refuses_questions_past_it_and_starts_again_with_the_next_transaction() {
    let dns = DnsServer::start(&[ZONE]);
    // Four questions per RCPT (lookup-all counts each of its questions), a budget of three;
    // one instance for the whole connection, so only the transaction resets the count.
    let args = "lookup-all:a:www.zone.test,mx:zone.test lookup:a:nothere.zone.test lookup:aaaa:www.zone.test";
    let sandbox = "testing/dns_probe dns any\ntesting/dns_probe dns-queries 3\ntesting/dns_probe scope connection\n";
    let s = probe(args, &resolver_config(dns.addr(), TIMEOUT), sandbox);
    let mut c = session(&s);
    let over =
        "refused: over budget: this plugin may ask 3 DNS questions per transaction (`dns-queries` in config/sandbox)";
    let first = [
        "a www.zone.test -> ok 2: A 192.0.2.1 ttl=3600; A 192.0.2.2 ttl=3600".to_string(),
        "mx zone.test -> ok 2: MX 10 mx1.zone.test ttl=600; MX 20 mx2.zone.test ttl=600".to_string(),
        "a nothere.zone.test -> no-such-domain".to_string(),
        format!("aaaa www.zone.test -> {over}"),
    ];
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    assert_eq!(answers(&mut c, "b@example.com"), first);
    // The same transaction: the budget is spent.
    let spent = answers(&mut c, "c@example.com");
    assert_eq!(spent.len(), 4, "{spent:?}");
    assert!(spent.iter().all(|l| l.ends_with(over)), "{spent:?}");
    c.cmd("RSET", 250);
    // The next transactions: three questions again (the TTLs may have gone down in the cache).
    for _ in 0..2 {
        c.cmd("MAIL FROM:<a@remote.test>", 250);
        let again = answers(&mut c, "b@example.com");
        assert!(again[0].starts_with("a www.zone.test -> ok 2: "), "{again:?}");
        assert!(again[1].starts_with("mx zone.test -> ok 2: "), "{again:?}");
        assert_eq!(again[2..], first[2..]);
        c.cmd("RSET", 250);
    }
    assert!(
        s.log().lines().any(|l| l.contains("DNS question refused: over budget") && l.contains("testing/dns_probe")),
        "the budget's refusal is logged, naming the plugin:\n{}",
        s.log()
    );
    delivers(&mut c);
}

#[test]
fn each_zone_of_check_lists_counts_against_the_budget_but_not_its_reason() {
    let dns = DnsServer::start(&[LIST, ("bl2.test", ""), ("bl3.test", "")]);
    let s = probe(
        "check-lists:bl.test,bl2.test,bl3.test,bl4.test:client",
        &resolver_config(dns.addr(), TIMEOUT),
        "testing/dns_probe dns any\ntesting/dns_probe dns-queries 3\n",
    );
    // Listed in bl.test, with a reason: its TXT lookup is not a question of the plugin's.
    let mut c = s.greeted_from("127.0.0.2".parse().unwrap());
    c.cmd("EHLO client.test", 250);
    assert_eq!(
        ask(&mut c, "b@example.com"),
        [
            r#"bl.test 127.0.0.2 -> listed zone=bl.test codes=127.0.0.2 reason="listed: see http://bl.test/?127.0.0.2""#,
            "bl2.test 127.0.0.2 -> not listed",
            "bl3.test 127.0.0.2 -> not listed",
            "bl4.test 127.0.0.2 -> refused: over budget: this plugin may ask 3 DNS questions per transaction (`dns-queries` in config/sandbox)",
        ]
    );
}

#[test]
fn a_silent_name_server_gives_timeout_before_the_hook_runs_out_of_time() {
    let silent = SilentNameServer::start();
    // The resolver would wait 10 s; the hook may take 2 s: the lookup must give up first.
    let sandbox = "testing/dns_probe dns any\ntesting/dns_probe timeout 2s\n";
    let s = probe("lookup:a:www.zone.test", &resolver_config(silent.addr(), Duration::from_secs(10)), sandbox);
    let mut c = session(&s);
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(ask(&mut c, "b@example.com"), ["a www.zone.test -> timeout"]);
        let took = started.elapsed();
        // The deadline is 1.8 s (2 s less a tenth); the reply is the plugin's own, so its hook
        // did not run out of time (that would be a 451 from the server).
        assert!(took >= Duration::from_millis(1500) && took < Duration::from_millis(2500), "answered after {took:?}");
    }
    assert!(silent.queries() > 0, "the question was sent");
    assert!(!s.log().contains("plugin fault"), "the hook did not run out of time:\n{}", s.log());
    delivers(&mut c);
}

#[test]
fn parallel_calls_against_a_silent_name_server_take_one_deadline_not_the_sum() {
    let silent = SilentNameServer::start();
    let questions = "a:one.zone.test,a:two.zone.test,mx:three.zone.test,txt:four.zone.test,aaaa:five.zone.test";
    let s = probe(
        &format!("all=lookup-all:{questions} lists=check-lists:bl.test,bl2.test,bl3.test,bl4.test,bl5.test:client"),
        &resolver_config(silent.addr(), TIMEOUT),
        "testing/dns_probe dns any\n",
    );
    let mut c = session(&s);
    for (to, calls) in [("all@example.com", 5), ("lists@example.com", 5)] {
        let started = Instant::now();
        let lines = ask(&mut c, to);
        let took = started.elapsed();
        assert_eq!(lines.len(), calls, "{lines:?}");
        assert!(lines.iter().all(|l| l.ends_with(" -> timeout")), "{lines:?}");
        // One deadline (1 s) for all five at once; one after the other would be five.
        assert!(took >= Duration::from_millis(900) && took < 3 * TIMEOUT, "{to}: took {took:?}");
    }
    assert!(silent.queries() >= 10, "every question was sent: {}", silent.queries());
    delivers(&mut c);
}

#[test]
fn a_name_server_answering_servfail_gives_server_failure() {
    let failing = FailingNameServer::start();
    let s = probe(
        "lookup:a:www.zone.test lookup:txt:txt.zone.test reverse:192.0.2.7 check-lists:bl.test:client",
        &resolver_config(failing.addr(), LONG_TIMEOUT),
        "testing/dns_probe dns any\n",
    );
    let mut c = session(&s);
    let started = Instant::now();
    let lines = ask(&mut c, "b@example.com");
    assert!(started.elapsed() < LONG_TIMEOUT / 2, "a failure is an answer, not a wait: {:?}", started.elapsed());
    let calls = ["a www.zone.test", "txt txt.zone.test", "reverse 192.0.2.7", "bl.test 127.0.0.1"];
    assert_eq!(lines.len(), calls.len(), "{lines:?}");
    for (line, call) in lines.iter().zip(calls) {
        // "Could not ask" stays apart from "not there": a DNS list that fails does not say "not listed".
        assert!(line.starts_with(&format!("{call} -> server-failure: ")), "{line}");
        assert!(line.contains("SERVFAIL") || line.contains("Server Failure"), "the text says how: {line}");
    }
    assert!(failing.queries() >= 4);
    delivers(&mut c);
}

#[test]
fn an_oversized_answer_is_cut_to_64_records_and_nothing_breaks() {
    // 300 A records and 100 TXT records of 200 octets: too big for UDP (nsd sets TC and the
    // resolver asks again over TCP), and far more than a plugin gets.
    let mut records = String::new();
    for i in 0..300 {
        records.push_str(&format!("many A 10.0.{}.{}\n", i / 256, i % 256));
    }
    for i in 0..100 {
        records.push_str(&format!("bigtxt TXT \"{i:03}{}\"\n", "x".repeat(197)));
    }
    let dns = DnsServer::start(&[("big.test", &records)]);
    // Over UDP the answer does not fit: the whole answer could only have come over TCP.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    udp.send_to(&wasmtpd_tests::dns::query(7, "bigtxt.big.test", 16), dns.addr()).unwrap();
    let mut buf = [0u8; 65535];
    let n = udp.recv(&mut buf).unwrap();
    assert!(n >= 12 && buf[2] & 0x02 != 0, "nsd truncates the TXT answer over UDP");

    let s = probe(
        "lookup:a:many.big.test lookup:txt:bigtxt.big.test lookup-all:a:many.big.test,txt:bigtxt.big.test",
        &resolver_config(dns.addr(), TIMEOUT),
        "testing/dns_probe dns any\n",
    );
    let mut c = session(&s);
    for _ in 0..2 {
        let lines = ask(&mut c, "b@example.com");
        assert_eq!(lines.len(), 4, "{lines:?}");
        for (line, call) in lines.iter().zip(["a many.big.test", "txt bigtxt.big.test"].iter().cycle()) {
            assert!(line.starts_with(&format!("{call} -> ok 64: ")), "{}", short(line));
        }
        assert!(lines[1].contains(&format!("TXT \"000{}\" ttl=300", "x".repeat(197))), "{}", short(&lines[1]));
    }
    delivers(&mut c);
}

#[test]
fn check_lists_tells_listed_from_not_listed_from_could_not_ask() {
    let dns = DnsServer::start(&[LIST, ("bl2.test", "3.0.0.127 A 127.0.0.3\n")]);
    let s = probe(
        "ip=check-lists:bl.test,bl2.test:client rhs=check-lists:bl.test,bl2.test.:spammer.example \
         rhs=check-lists:bl.test:friend.example v6=check-lists:bl.test:2001:db8::2 v6=check-lists:bl.test:2001:db8::3",
        &resolver_config(dns.addr(), TIMEOUT),
        "testing/dns_probe dns bl.test bl2.test\n",
    );
    let from = |ip: &str| {
        let mut c = s.greeted_from(ip.parse::<IpAddr>().unwrap());
        c.cmd("EHLO client.test", 250);
        ask(&mut c, "ip@example.com")
    };
    assert_eq!(
        from("127.0.0.2"),
        [
            r#"bl.test 127.0.0.2 -> listed zone=bl.test codes=127.0.0.2 reason="listed: see http://bl.test/?127.0.0.2""#,
            "bl2.test 127.0.0.2 -> not listed",
        ]
    );
    assert_eq!(
        from("127.0.0.3"),
        ["bl.test 127.0.0.3 -> not listed", "bl2.test 127.0.0.3 -> listed zone=bl2.test codes=127.0.0.3 reason=none"]
    );
    let mut codes = from("127.0.0.6");
    assert!(
        codes[0] == "bl.test 127.0.0.6 -> listed zone=bl.test codes=127.0.0.6,127.0.0.10 reason=none"
            || codes[0] == "bl.test 127.0.0.6 -> listed zone=bl.test codes=127.0.0.10,127.0.0.6 reason=none",
        "every code of the listing: {codes:?}"
    );
    assert_eq!(codes.pop().unwrap(), "bl2.test 127.0.0.6 -> not listed");
    let outside = from("127.0.0.4");
    assert_eq!(
        outside[0],
        "bl.test 127.0.0.4 -> server-failure: bl.test answered 10.0.0.4, outside 127.0.0.0/8: not a listing"
    );
    let refusal = from("127.0.0.5");
    assert_eq!(
        refusal[0],
        "bl.test 127.0.0.5 -> server-failure: bl.test refused the query (127.255.255.254): not a listing"
    );
    // A domain, as RHSBLs list them.
    let mut c = session(&s);
    assert_eq!(
        ask(&mut c, "rhs@example.com"),
        [
            "bl.test spammer.example -> listed zone=bl.test codes=127.0.0.2 reason=none",
            "bl2.test. spammer.example -> not listed",
            "bl.test friend.example -> not listed",
        ]
    );
    // An IPv6 address, as reversed nibbles.
    assert_eq!(
        ask(&mut c, "v6@example.com"),
        ["bl.test 2001:db8::2 -> listed zone=bl.test codes=127.0.0.2 reason=none", "bl.test 2001:db8::3 -> not listed"]
    );
}

#[test]
fn cname_chains_are_followed_and_their_dead_ends_are_answers_not_waits() {
    let dns = DnsServer::start(&[(
        "zone.test",
        "www A 192.0.2.1\nalias CNAME www\nchain 60 CNAME alias\ndangling CNAME nowhere\n\
         loop1 CNAME loop2\nloop2 CNAME loop1\n",
    )]);
    let s = probe(
        "lookup:a:chain.zone.test lookup:txt:chain.zone.test lookup:cname:chain.zone.test \
         lookup:a:dangling.zone.test lookup:a:loop1.zone.test lookup:cname:www.zone.test",
        &resolver_config(dns.addr(), LONG_TIMEOUT),
        "testing/dns_probe dns any\n",
    );
    let mut c = session(&s);
    let started = Instant::now();
    let lines = ask(&mut c, "b@example.com");
    assert!(started.elapsed() < LONG_TIMEOUT / 2, "no call waited for a deadline: {:?}", started.elapsed());
    assert_eq!(
        lines[..4],
        [
            // Two links to the A record, which keeps its own TTL.
            "a chain.zone.test -> ok 1: A 192.0.2.1 ttl=300",
            "txt chain.zone.test -> no-records",
            // Asked for the CNAME itself, the first link.
            "cname chain.zone.test -> ok 1: CNAME alias.zone.test ttl=60",
            // The end of the chain does not exist.
            "a dangling.zone.test -> no-such-domain",
        ]
    );
    // A loop has no end: an error, not records (and no wait).
    assert!(lines[4].starts_with("a loop1.zone.test -> ") && !lines[4].contains("-> ok"), "{}", lines[4]);
    assert_eq!(lines[5], "cname www.zone.test -> no-records");
}

#[test]
fn at_most_16_questions_or_zones_at_once() {
    let dns = DnsServer::start(&[ZONE]);
    let questions: Vec<String> = (0..17).map(|i| format!("a:q{i}.zone.test")).collect();
    let zones: Vec<String> = (0..17).map(|i| format!("bl{i}.test")).collect();
    let sixteen = questions[..16].join(",");
    let s = probe(
        &format!(
            "many=lookup-all:{} lists=check-lists:{}:client sixteen=lookup-all:{sixteen}",
            questions.join(","),
            zones.join(",")
        ),
        &resolver_config(dns.addr(), TIMEOUT),
        "testing/dns_probe dns any\n",
    );
    let mut c = session(&s);
    for (to, what) in [("many", "questions"), ("lists", "zones")] {
        let lines = ask(&mut c, &format!("{to}@example.com"));
        assert_eq!(lines.len(), 17, "{lines:?}");
        let refused = format!("-> refused: at most 16 {what} at once, not 17");
        assert!(lines.iter().all(|l| l.ends_with(&refused)), "{lines:?}");
    }
    // Nothing was asked, so nothing was counted: sixteen still fit in the budget (64).
    let lines = ask(&mut c, "sixteen@example.com");
    assert_eq!(lines.len(), 16, "{lines:?}");
    assert!(lines.iter().all(|l| l.ends_with("-> no-such-domain")), "{lines:?}");
}

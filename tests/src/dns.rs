//! Name servers for the DNS tests, all on 127.0.0.1 and a port of their own:
//!
//! - [`DnsServer`]: a private nsd (Debian's `nsd`, which `cargo xtask test` installs),
//!   authoritative for the zones the test gives, over UDP and TCP, with its config, zone files,
//!   pidfile and log in a directory of its own; stopped by its PID on drop.
//! - [`SilentNameServer`]: takes queries over UDP and connections over TCP and never answers.
//! - [`FailingNameServer`]: answers every query with SERVFAIL.
//! - [`resolver_config`]: the server's `config/resolver` pointing at one of them.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::TempDir;

/// Where Debian installs nsd.
const NSD: &str = "/usr/sbin/nsd";
const NSD_CHECKZONE: &str = "/usr/sbin/nsd-checkzone";
/// How long nsd may take to answer after it is started.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How many ports are tried when nsd cannot bind the one picked (another process took it).
const START_ATTEMPTS: u32 = 5;
/// How long nsd may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// How long each of the start-up probe's queries is given to be answered.
const PROBE_WAIT: Duration = Duration::from_millis(100);
/// How often the name server threads look whether they should stop.
const POLL: Duration = Duration::from_millis(20);

/// The `config/resolver` of a server that asks only `addr`, once, with this timeout.
pub fn resolver_config(addr: SocketAddr, timeout: Duration) -> String {
    format!("nameserver {addr}\ntimeout {}ms\nattempts 1\n", timeout.as_millis())
}

/// A private nsd, authoritative for the test's zones.
pub struct DnsServer {
    addr: SocketAddr,
    child: Child,
    dir: TempDir,
}

impl DnsServer {
    /// Starts nsd for `zones`, each `(origin, records)`: records in zone-file syntax, names
    /// relative to the origin (`www 3600 A 192.0.2.1`), default TTL 300. The SOA and NS records
    /// are added. Returns once nsd answers for every zone; panics if a zone does not load
    /// (`nsd-checkzone`), or nsd does not answer within 10 s.
    pub fn start(zones: &[(&str, &str)]) -> DnsServer {
        assert!(
            Path::new(NSD).is_file(),
            "{NSD} is missing: `cargo xtask test` installs Debian's nsd (or `apt-get install nsd`)"
        );
        let mut dir = TempDir::new("nsd");
        let mut zone_list = String::new();
        for (origin, records) in zones {
            let origin = origin.trim_end_matches('.');
            let file = format!("{origin}.zone");
            std::fs::write(dir.0.join(&file), zone_file(origin, records)).unwrap();
            // A zone nsd cannot load would only show as a server that never answers for it.
            let checked = Command::new(NSD_CHECKZONE).arg(origin).arg(dir.0.join(&file)).output().unwrap();
            assert!(
                checked.status.success(),
                "the test zone {origin} does not load:\n{}{}",
                String::from_utf8_lossy(&checked.stdout),
                String::from_utf8_lossy(&checked.stderr)
            );
            zone_list.push_str(&format!("zone:\n    name: \"{origin}\"\n    zonefile: \"{file}\"\n"));
        }
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            std::fs::write(dir.0.join("nsd.conf"), nsd_conf(&dir.0, port, &zone_list)).unwrap();
            let log = std::fs::File::create(dir.0.join("nsd.stderr")).unwrap();
            let child = Command::new(NSD)
                .args(["-d", "-c"])
                .arg(dir.0.join("nsd.conf"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting nsd");
            let mut server = DnsServer { addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)), child, dir };
            match server.wait_until_answering(zones) {
                Ok(()) => return server,
                Err(why) => {
                    failures.push(format!("port {port}: {why}\n{}", server.log()));
                    // Only an nsd that exited (could not bind the port, most likely) is tried again.
                    let exited = server.child.try_wait().ok().flatten().is_some();
                    server.stop();
                    if !exited {
                        break;
                    }
                    dir = std::mem::replace(&mut server.dir, TempDir(PathBuf::new()));
                }
            }
        }
        panic!("nsd did not start:\n{}", failures.join("\n"));
    }

    /// Where it answers (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What nsd logged.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.0.join(name)).unwrap_or_default();
        format!("{}{}", read("nsd.stderr"), read("nsd.log"))
    }

    /// Waits until nsd answers the SOA query of each zone with an authoritative answer.
    ///
    /// nsd binds its sockets before it has loaded its zones, so queries sent meanwhile queue up
    /// and are answered late, all at once: every answer that comes is read, and one to any of
    /// the queries for the zone will do (reading one answer per query sent, and wanting the
    /// latest, would trail the queue forever).
    fn wait_until_answering(&mut self, zones: &[(&str, &str)]) -> Result<(), String> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let started = Instant::now();
        let mut id: u16 = 0;
        for (origin, _) in zones {
            let origin = origin.trim_end_matches('.');
            let first = id.wrapping_add(1);
            'asking: loop {
                if started.elapsed() > START_LIMIT {
                    return Err(format!("no answer for {origin} within {START_LIMIT:?}"));
                }
                if let Some(status) = self.child.try_wait().unwrap() {
                    return Err(format!("nsd exited with {status}"));
                }
                id = id.wrapping_add(1);
                let _ = socket.send_to(&query(id, origin, SOA), self.addr);
                let asked = Instant::now();
                while let Some(left) = PROBE_WAIT.checked_sub(asked.elapsed()).filter(|l| !l.is_zero()) {
                    socket.set_read_timeout(Some(left)).unwrap();
                    let mut buf = [0u8; 4096];
                    let Ok((n, _)) = socket.recv_from(&mut buf) else { break };
                    let answer = &buf[..n];
                    if n < 12 {
                        continue;
                    }
                    let answer_id = u16::from_be_bytes([answer[0], answer[1]]);
                    let ours = answer_id.wrapping_sub(first) <= id.wrapping_sub(first);
                    let authoritative = answer[2] & 0x84 == 0x84;
                    let (rcode, answers) = (answer[3] & 0xf, &answer[6..8]);
                    if ours && authoritative && rcode == 0 && answers != [0, 0] {
                        break 'asking;
                    }
                }
            }
        }
        Ok(())
    }

    /// SIGTERM (nsd then stops its own server processes), SIGKILL if it has not gone in 5 s.
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < STOP_LIMIT {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free on 127.0.0.1 for both UDP and TCP when asked (another process may take it
/// before nsd binds it: [`DnsServer::start`] then tries another).
fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1 in 100 tries");
}

/// nsd's config: authoritative only, on `port` of 127.0.0.1, everything under `dir`, no
/// chroot, no privilege drop, no database, no remote control, little logging.
fn nsd_conf(dir: &Path, port: u16, zones: &str) -> String {
    let d = dir.display();
    format!(
        "server:
    ip-address: 127.0.0.1
    port: {port}
    do-ip4: yes
    do-ip6: no
    server-count: 1
    username: \"\"
    chroot: \"\"
    zonesdir: \"{d}\"
    pidfile: \"{d}/nsd.pid\"
    database: \"\"
    zonelistfile: \"{d}/zone.list\"
    xfrdfile: \"{d}/xfrd.state\"
    xfrdir: \"{d}\"
    logfile: \"{d}/nsd.log\"
    verbosity: 0
    hide-version: yes
    hide-identity: yes
    refuse-any: yes
    tcp-count: 64
    tcp-timeout: 10
remote-control:
    control-enable: no
{zones}"
    )
}

/// A zone file for `origin` with `records`, and the SOA and NS records every zone has.
fn zone_file(origin: &str, records: &str) -> String {
    format!(
        "$ORIGIN {origin}.
$TTL 300
@ IN SOA ns.harness.invalid. hostmaster.harness.invalid. 1 3600 600 86400 300
@ IN NS ns.harness.invalid.
{records}
"
    )
}

/// The SOA record type.
const SOA: u16 = 6;

/// A DNS query (RFC 1035 section 4.1) for `name` of type `qtype`, class IN, no recursion.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// The SERVFAIL answer to `query`: its ID and question, QR set, RCODE 2. `None` for what is
/// not a query (too short, a response, a question that does not parse).
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    let mut end = 12;
    if qdcount >= 1 {
        // The name: labels up to the root label (a query has no compression pointers).
        loop {
            let len = *query.get(end)? as usize;
            if len & 0xc0 != 0 {
                return None;
            }
            end += 1 + len;
            if len == 0 {
                break;
            }
        }
        end += 4; // type and class
        if end > query.len() {
            return None;
        }
    }
    let mut answer = Vec::with_capacity(end);
    answer.extend_from_slice(&query[..2]);
    // QR, the opcode and RD of the query; RA; RCODE 2 (SERVFAIL).
    answer.push(0x80 | (query[2] & 0x79));
    answer.push(0x80 | 2);
    answer.extend_from_slice(&[0, qdcount.min(1) as u8, 0, 0, 0, 0, 0, 0]);
    answer.extend_from_slice(&query[12..end]);
    Some(answer)
}

/// A name server on a thread: a UDP socket and a TCP listener on one port of 127.0.0.1,
/// answering each query with what `respond` makes of it (nothing for `None`). Stopped on drop.
struct LoopbackNameServer {
    addr: SocketAddr,
    /// Queries received so far, over UDP and TCP.
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Most TCP connections a test name server holds; older ones are closed past that.
const MAX_TCP_CONNECTIONS: usize = 64;

impl LoopbackNameServer {
    fn start(respond: fn(&[u8]) -> Option<Vec<u8>>) -> LoopbackNameServer {
        let (udp, tcp) = (0..100)
            .find_map(|_| {
                let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
                let port = udp.local_addr().unwrap().port();
                TcpListener::bind((Ipv4Addr::LOCALHOST, port)).ok().map(|tcp| (udp, tcp))
            })
            .expect("a port free for both UDP and TCP on 127.0.0.1");
        let addr = udp.local_addr().unwrap();
        udp.set_read_timeout(Some(POLL)).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::spawn({
            let (stop, queries) = (stop.clone(), queries.clone());
            move || serve(&udp, &tcp, respond, &queries, &stop)
        });
        LoopbackNameServer { addr, queries, stop, thread: Some(thread) }
    }
}

impl Drop for LoopbackNameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The name server's loop, until `stop`: each pass waits at most [`POLL`] for a datagram,
/// then looks at the TCP listener and connections without waiting.
fn serve(
    udp: &UdpSocket,
    tcp: &TcpListener,
    respond: fn(&[u8]) -> Option<Vec<u8>>,
    queries: &AtomicUsize,
    stop: &AtomicBool,
) {
    let mut connections: Vec<(TcpStream, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; 65535];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, peer)) = udp.recv_from(&mut buf) {
            queries.fetch_add(1, Ordering::Relaxed);
            if let Some(answer) = respond(&buf[..n]) {
                let _ = udp.send_to(&answer, peer);
            }
        }
        while let Ok((stream, _)) = tcp.accept() {
            if stream.set_nonblocking(true).is_ok() {
                if connections.len() == MAX_TCP_CONNECTIONS {
                    connections.remove(0);
                }
                connections.push((stream, Vec::new()));
            }
        }
        connections.retain_mut(|(stream, pending)| {
            match stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
            // Each message over TCP comes after its length in two octets (RFC 1035 4.2.2).
            while pending.len() >= 2 {
                let len = u16::from_be_bytes([pending[0], pending[1]]) as usize;
                if pending.len() < 2 + len {
                    break;
                }
                let message: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
                queries.fetch_add(1, Ordering::Relaxed);
                if let Some(answer) = respond(&message) {
                    let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&answer);
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                    let written = stream.write_all(&framed).is_ok();
                    let _ = stream.set_nonblocking(true);
                    if !written {
                        return false;
                    }
                }
            }
            true
        });
    }
}

/// A name server that never answers: queries over UDP are read and dropped, TCP connections
/// are accepted and held open, silent.
pub struct SilentNameServer(LoopbackNameServer);

impl SilentNameServer {
    pub fn start() -> SilentNameServer {
        SilentNameServer(LoopbackNameServer::start(|_| None))
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// How many queries it has received (over UDP and TCP).
    pub fn queries(&self) -> usize {
        self.0.queries.load(Ordering::Relaxed)
    }
}

/// A name server that answers every query, over UDP and TCP, with SERVFAIL ([`servfail`]).
pub struct FailingNameServer(LoopbackNameServer);

impl FailingNameServer {
    pub fn start() -> FailingNameServer {
        FailingNameServer(LoopbackNameServer::start(servfail))
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// How many queries it has received (over UDP and TCP).
    pub fn queries(&self) -> usize {
        self.0.queries.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The processes whose parent is `pid` (nsd's server and xfrd processes).
    fn children(pid: u32) -> Vec<u32> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // `pid (comm) state ppid ...`; comm may hold spaces, so read after the last `)`.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if ppid == Some(&pid.to_string()) {
                found.push(child);
            }
        }
        found
    }

    /// The answer to a query over TCP (length-prefixed, RFC 1035 4.2.2).
    fn ask_tcp(addr: SocketAddr, q: &[u8]) -> Vec<u8> {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
        tcp.write_all(q).unwrap();
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).unwrap();
        let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
        tcp.read_exact(&mut answer).unwrap();
        answer
    }

    fn ask_udp(addr: SocketAddr, q: &[u8], wait: Duration) -> Option<Vec<u8>> {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        udp.set_read_timeout(Some(wait)).unwrap();
        udp.send_to(q, addr).unwrap();
        let mut buf = [0u8; 4096];
        udp.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    }

    #[test]
    fn nsd_answers_its_zones_over_udp_and_tcp_and_is_gone_after_drop() {
        let dns = DnsServer::start(&[("one.test", "www A 192.0.2.1\n"), ("two.test", "")]);
        let (addr, pid) = (dns.addr(), dns.child.id());
        let q = query(9, "www.one.test", 1);
        let udp = ask_udp(addr, &q, Duration::from_secs(5)).expect("an answer over UDP");
        let tcp = ask_tcp(addr, &q);
        for answer in [&udp, &tcp] {
            assert_eq!(&answer[..2], &[0, 9]);
            assert_eq!(answer[2] & 0x84, 0x84, "a response, authoritative");
            assert_eq!((answer[3] & 0x0f, &answer[6..8]), (0, &[0u8, 1][..]), "NOERROR, one answer");
            assert!(answer.windows(6).any(|w| w == [0, 4, 192, 0, 2, 1]), "the A record: {answer:?}");
        }
        let processes: Vec<u32> = std::iter::once(pid).chain(children(pid)).collect();
        assert!(processes.len() > 1, "nsd runs server processes: {processes:?}");
        let dir = dns.dir.0.clone();
        drop(dns);
        let gone = |p: &u32| !Path::new(&format!("/proc/{p}")).exists();
        let started = Instant::now();
        while !processes.iter().all(gone) && started.elapsed() < STOP_LIMIT {
            std::thread::sleep(POLL);
        }
        assert!(processes.iter().all(gone), "every nsd process is gone: {processes:?}");
        assert!(!dir.exists(), "its directory is removed");
        assert_eq!(ask_udp(addr, &q, Duration::from_millis(300)), None, "nothing answers on its port");
    }

    #[test]
    fn several_nsds_start_at_once() {
        // Under load nsd takes a while between binding its port and answering; the start-up
        // probe must not fall behind the answers to its early queries.
        let starts: Vec<_> = (0..8)
            .map(|i| {
                std::thread::spawn(move || {
                    let zone = format!("www A 192.0.2.{i}\n");
                    let dns = DnsServer::start(&[("zone.test", &zone), ("other.test", "")]);
                    let answer = ask_udp(dns.addr(), &query(1, "www.zone.test", 1), Duration::from_secs(5)).unwrap();
                    assert!(answer.windows(6).any(|w| w == [0, 4, 192, 0, 2, i]), "its own zone: {answer:?}");
                })
            })
            .collect();
        for start in starts {
            start.join().expect("every nsd started and answered for its own zone");
        }
    }

    #[test]
    #[should_panic(expected = "the test zone bad.test does not load")]
    fn a_zone_nsd_cannot_load_fails_the_start_at_once() {
        DnsServer::start(&[("bad.test", "www A 999.0.0.1\n")]);
    }

    #[test]
    fn the_silent_name_server_takes_queries_and_never_answers() {
        let silent = SilentNameServer::start();
        let q = query(3, "www.zone.test", 1);
        assert_eq!(ask_udp(silent.addr(), &q, Duration::from_millis(300)), None);
        let mut tcp = TcpStream::connect(silent.addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        tcp.write_all(&[0, q.len() as u8]).unwrap();
        tcp.write_all(&q).unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(tcp.read(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut),
            "held open, silent"
        );
        assert_eq!(silent.queries(), 2);
    }

    #[test]
    fn the_failing_name_server_answers_servfail_over_udp_and_tcp() {
        let failing = FailingNameServer::start();
        let q = query(4, "www.zone.test", 1);
        let udp = ask_udp(failing.addr(), &q, Duration::from_secs(5)).expect("an answer over UDP");
        let tcp = ask_tcp(failing.addr(), &q);
        assert_eq!(udp, servfail(&q).unwrap());
        assert_eq!(tcp, udp);
        assert_eq!(failing.queries(), 2);
    }

    #[test]
    fn servfail_copies_the_id_and_question_and_sets_qr_and_rcode_2() {
        let q = query(0xbeef, "www.zone.test", 1);
        let a = servfail(&q).unwrap();
        assert_eq!(&a[..2], &[0xbe, 0xef]);
        assert_eq!(a[2] & 0x80, 0x80, "QR");
        assert_eq!(a[3] & 0x0f, 2, "RCODE");
        assert_eq!(&a[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&a[12..], &q[12..]);
        assert_eq!(servfail(&a), None, "a response is not answered");
        assert_eq!(servfail(&q[..15]), None, "a cut question is not answered");
    }
}

//! The server's DNS resolver: one hickory-resolver with one cache, shared by every connection,
//! every plugin (`imports/dns.rs`) and the server's authentication checks. Configured from
//! `/etc/resolv.conf`, or from the name servers the operator lists in `config/resolver`.
//!
//! Every lookup has a deadline: the resolver's timeout, or the caller's deadline (what is left
//! of a hook's time), whichever comes first. Answers are cut to [`MAX_RECORDS`] records and
//! [`MAX_ANSWER_OCTETS`] octets of data, so an answer flood costs a plugin nothing it did not
//! ask for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio::time::Instant;

/// Most records of one answer a caller gets.
pub const MAX_RECORDS: usize = 64;
/// Most octets of record data (names, TXT strings) of one answer a caller gets.
pub const MAX_ANSWER_OCTETS: usize = 64 << 10;

/// How the resolver is set up (`config/resolver`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// The name servers to ask, in order. Empty: those of `/etc/resolv.conf`.
    pub name_servers: Vec<SocketAddr>,
    /// How long one lookup may take, all attempts included.
    pub timeout: Duration,
    /// How many times a query is sent to a name server that does not answer.
    pub attempts: usize,
    /// Most answers the cache keeps.
    pub cache_size: u64,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        // Five seconds is what resolv.conf's default is; a mail filter wants less than a
        // hook's time (10 s), so a slow list fails one lookup, not the hook.
        ResolverSettings { name_servers: Vec::new(), timeout: Duration::from_secs(5), attempts: 2, cache_size: 8192 }
    }
}

/// The resolver. Cheap to clone: clones share the cache and the connections.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    timeout: Duration,
}

/// The record types the server looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryType {
    A,
    Aaaa,
    Mx,
    Txt,
    Ptr,
    Ns,
    Cname,
}

impl QueryType {
    fn hickory(self) -> RecordType {
        match self {
            QueryType::A => RecordType::A,
            QueryType::Aaaa => RecordType::AAAA,
            QueryType::Mx => RecordType::MX,
            QueryType::Txt => RecordType::TXT,
            QueryType::Ptr => RecordType::PTR,
            QueryType::Ns => RecordType::NS,
            QueryType::Cname => RecordType::CNAME,
        }
    }
}

/// The data of one record. Names are without the final dot (the root is ".").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx {
        preference: u16,
        exchange: String,
    },
    /// The character-strings joined; octets that are not UTF-8 replaced.
    Txt(String),
    Ptr(String),
    Ns(String),
    Cname(String),
}

impl RecordData {
    fn octets(&self) -> usize {
        match self {
            RecordData::A(_) => 4,
            RecordData::Aaaa(_) => 16,
            RecordData::Mx { exchange, .. } => 2 + exchange.len(),
            RecordData::Txt(s) | RecordData::Ptr(s) | RecordData::Ns(s) | RecordData::Cname(s) => s.len(),
        }
    }
}

/// One record of an answer and its TTL in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    pub data: RecordData,
    pub ttl: u32,
}

/// Why a lookup has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no such domain")]
    NoSuchDomain,
    #[error("no records of that type")]
    NoRecords,
    #[error("server failure: {0}")]
    ServerFailure(String),
    #[error("timed out")]
    Timeout,
    #[error("refused: {0}")]
    Refused(String),
    #[error("invalid name: {0}")]
    InvalidName(String),
}

impl Resolver {
    /// A resolver as `settings` say; without name servers, those of `/etc/resolv.conf` (its
    /// `timeout` and `attempts` options are replaced by ours).
    pub fn new(settings: &ResolverSettings) -> Result<Resolver, String> {
        let config = if settings.name_servers.is_empty() {
            let (config, _) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("reading /etc/resolv.conf: {e}"))?;
            config
        } else {
            let servers = settings
                .name_servers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            ResolverConfig::from_parts(None, Vec::new(), servers)
        };
        let mut opts = ResolverOpts::default();
        // One attempt's timeout, so that all of them fit the lookup's.
        opts.attempts = settings.attempts.max(1);
        opts.timeout = settings.timeout / opts.attempts as u32;
        opts.cache_size = settings.cache_size;
        opts.edns0 = true;
        // Names are always asked as given (absolute): no search list, no /etc/hosts.
        opts.ndots = 0;
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        // Many sessions ask at once; the default (32 in flight per connection) would answer
        // "busy" under load.
        opts.max_active_requests = 1024;
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| format!("setting up the resolver: {e}"))?;
        Ok(Resolver { inner, timeout: settings.timeout })
    }

    /// The hickory resolver (for the authentication checks, which use it through mail-auth).
    pub fn hickory(&self) -> &TokioResolver {
        &self.inner
    }

    /// How long a lookup may take at most.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The records of `qtype` for `name` (absolute; a final dot is optional), by `deadline` at
    /// the latest.
    pub async fn lookup(
        &self,
        name: &str,
        qtype: QueryType,
        deadline: Instant,
    ) -> Result<Vec<ResourceRecord>, LookupError> {
        let name = parse_name(name)?;
        let deadline = deadline.min(Instant::now() + self.timeout);
        let lookup = match tokio::time::timeout_at(deadline, self.inner.lookup(name, qtype.hickory())).await {
            Err(_) => return Err(LookupError::Timeout),
            Ok(Err(e)) => return Err(failure(&e)),
            Ok(Ok(lookup)) => lookup,
        };
        let mut records = Vec::new();
        let mut octets = 0;
        for record in lookup.answers() {
            let Some(data) = record_data(&record.data) else { continue };
            // The answer to a CNAME chain holds the chain's records too; keep those asked for.
            if std::mem::discriminant(&data) != std::mem::discriminant(&empty_of(qtype)) {
                continue;
            }
            octets += data.octets();
            if records.len() == MAX_RECORDS || octets > MAX_ANSWER_OCTETS {
                break;
            }
            records.push(ResourceRecord { data, ttl: record.ttl });
        }
        if records.is_empty() {
            return Err(LookupError::NoRecords);
        }
        // Mail exchangers in the order a sender tries them (RFC 5321 section 5.1), as
        // `wit/dns.wit` promises; the name server's order is arbitrary.
        records.sort_by_key(|r| match r.data {
            RecordData::Mx { preference, .. } => preference,
            _ => 0,
        });
        Ok(records)
    }
}

/// A name to look up, made absolute, or why it is not one.
pub fn parse_name(name: &str) -> Result<Name, LookupError> {
    let invalid = |why: String| LookupError::InvalidName(why);
    if name.is_empty() || name.len() > 254 {
        return Err(invalid(format!("a domain name is 1 to 253 octets, not {}", name.len())));
    }
    let mut parsed = Name::from_utf8(name).map_err(|e| invalid(format!("{}: {e}", name.escape_debug())))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// A value of the variant `qtype` answers with (only its discriminant is used).
fn empty_of(qtype: QueryType) -> RecordData {
    match qtype {
        QueryType::A => RecordData::A(Ipv4Addr::UNSPECIFIED),
        QueryType::Aaaa => RecordData::Aaaa(Ipv6Addr::UNSPECIFIED),
        QueryType::Mx => RecordData::Mx { preference: 0, exchange: String::new() },
        QueryType::Txt => RecordData::Txt(String::new()),
        QueryType::Ptr => RecordData::Ptr(String::new()),
        QueryType::Ns => RecordData::Ns(String::new()),
        QueryType::Cname => RecordData::Cname(String::new()),
    }
}

fn name_text(name: &Name) -> String {
    let text = name.to_utf8();
    match text.strip_suffix('.') {
        Some("") | None => text,
        Some(stripped) => stripped.to_string(),
    }
}

fn record_data(data: &RData) -> Option<RecordData> {
    Some(match data {
        RData::A(a) => RecordData::A(a.0),
        RData::AAAA(a) => RecordData::Aaaa(a.0),
        RData::MX(mx) => RecordData::Mx { preference: mx.preference, exchange: name_text(&mx.exchange) },
        RData::TXT(txt) => {
            let joined: Vec<u8> = txt.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
            RecordData::Txt(String::from_utf8_lossy(&joined).into_owned())
        }
        RData::PTR(p) => RecordData::Ptr(name_text(&p.0)),
        RData::NS(n) => RecordData::Ns(name_text(&n.0)),
        RData::CNAME(c) => RecordData::Cname(name_text(&c.0)),
        _ => return None,
    })
}

/// What a resolver error means to a caller.
fn failure(e: &NetError) -> LookupError {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(no)) => match no.response_code {
            ResponseCode::NXDomain => LookupError::NoSuchDomain,
            ResponseCode::NoError => LookupError::NoRecords,
            code => LookupError::ServerFailure(format!("the name server answered {code}")),
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => LookupError::NoSuchDomain,
        NetError::Dns(DnsError::ResponseCode(code)) => {
            LookupError::ServerFailure(format!("the name server answered {code}"))
        }
        NetError::Timeout => LookupError::Timeout,
        other => LookupError::ServerFailure(other.to_string()),
    }
}

/// The name under which DNS lists list an address: IPv4 as reversed octets, IPv6 as reversed
/// nibbles (RFC 5782 section 2.1 and 2.4), joined to `zone`.
pub fn list_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(64 + zone.len());
            for octet in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", octet & 0xf, octet >> 4));
            }
            name.push_str(zone);
            name
        }
    }
}

/// The PTR name of an address (`in-addr.arpa`, `ip6.arpa`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => list_name(ip, "in-addr.arpa"),
        IpAddr::V6(_) => list_name(ip, "ip6.arpa"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_names_reverse_octets_and_nibbles() {
        assert_eq!(list_name("127.0.0.2".parse().unwrap(), "zen.example."), "2.0.0.127.zen.example");
        assert_eq!(
            list_name("2001:db8::1".parse().unwrap(), "list.example"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.list.example"
        );
        assert_eq!(reverse_name("192.0.2.7".parse().unwrap()), "7.2.0.192.in-addr.arpa");
    }

    #[test]
    fn names_are_checked_before_they_are_asked() {
        assert!(matches!(parse_name(""), Err(LookupError::InvalidName(_))));
        assert!(matches!(parse_name(&"a".repeat(300)), Err(LookupError::InvalidName(_))));
        assert!(matches!(parse_name(&format!("{}.example", "a".repeat(64))), Err(LookupError::InvalidName(_))));
        assert!(parse_name("mail.example.org").unwrap().is_fqdn());
        assert!(parse_name("mail.example.org.").unwrap().is_fqdn());
    }
}

//! `config/frontends`: the front ends the operator trusts to speak for their clients. A front
//! end named here may tell us its client's facts (XCLIENT, or a PROXY protocol header on a
//! listener started with `--listen-proxy`); from anyone else XCLIENT gets `550 5.7.0` and a
//! PROXY header closes the connection.
//!
//! | line | meaning |
//! |---|---|
//! | `xclient ADDR[/PREFIX] ...` | these clients may send XCLIENT (Postfix's `smtpd_authorized_xclient_hosts`) |
//! | `proxy ADDR[/PREFIX] ...` | these peers may (and on a `--listen-proxy` listener must) send a PROXY v1 or v2 header |
//! | `proxy_timeout DURATION` | how long a PROXY header may take to arrive (default `5s`) |
//!
//! Nothing is trusted by default.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::{ConfigError, ConfigSource};

/// An address, or a network as `ADDR/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// `192.0.2.1`, `192.0.2.0/24`, `2001:db8::/32`. Host bits set below the prefix are an
    /// error (`192.0.2.1/24` is probably not what was meant).
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let (addr, len) = s.split_once('/').map_or((s, None), |(a, l)| (a, Some(l)));
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{s}` is not an address or ADDR/PREFIX"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}`: the prefix length must be from 0 to {max}")),
            },
        };
        let p = Prefix { addr, len };
        if !p.contains(addr) || bits(addr) & !mask(addr, len) != 0 {
            return Err(format!("`{s}` has host bits set past its prefix length"));
        }
        Ok(p)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        bits(ip) & mask(ip, self.len) == bits(self.addr) & mask(self.addr, self.len)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn mask(ip: IpAddr, len: u8) -> u128 {
    let width = if ip.is_ipv4() { 32 } else { 128 };
    let all = if width == 32 { u32::MAX as u128 } else { u128::MAX };
    if len == 0 { 0 } else { all & !(all >> len) }
}

/// What `config/frontends` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontends {
    pub xclient: Vec<Prefix>,
    pub proxy: Vec<Prefix>,
    pub proxy_timeout: Duration,
}

impl Default for Frontends {
    fn default() -> Self {
        Frontends { xclient: Vec::new(), proxy: Vec::new(), proxy_timeout: Duration::from_secs(5) }
    }
}

impl Frontends {
    pub fn may_xclient(&self, ip: IpAddr) -> bool {
        self.xclient.iter().any(|p| p.contains(ip))
    }

    pub fn may_proxy(&self, ip: IpAddr) -> bool {
        self.proxy.iter().any(|p| p.contains(ip))
    }
}

/// Reads `frontends`; every error names the line.
pub fn load(source: &ConfigSource) -> Result<Frontends, ConfigError> {
    let mut f = Frontends::default();
    for (n, line) in source.lines("frontends")?.unwrap_or_default() {
        let err = |what: String| ConfigError { path: source.display("frontends"), line: Some(n), what };
        let mut words = line.split_whitespace();
        let key = words.next().unwrap_or_default();
        let values: Vec<&str> = words.collect();
        if values.is_empty() {
            return Err(err(format!("`{key}` needs a value")));
        }
        match key {
            "xclient" | "proxy" => {
                let list = if key == "xclient" { &mut f.xclient } else { &mut f.proxy };
                for v in values {
                    list.push(Prefix::parse(v).map_err(err)?);
                }
            }
            "proxy_timeout" => {
                let [v] = values.as_slice() else {
                    return Err(err("expected `proxy_timeout DURATION`".into()));
                };
                f.proxy_timeout = crate::config::parse_nonzero_duration(v).map_err(err)?;
            }
            _ => return Err(err(format!("unknown setting `{key}` (xclient, proxy, proxy_timeout)"))),
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p = Prefix::parse("192.0.2.0/24").unwrap();
        assert!(p.contains("192.0.2.200".parse().unwrap()));
        assert!(p.contains("::ffff:192.0.2.1".parse().unwrap()), "IPv4-mapped");
        assert!(!p.contains("192.0.3.1".parse().unwrap()));
        assert!(!p.contains("2001:db8::1".parse().unwrap()));
        assert!(Prefix::parse("127.0.0.2").unwrap().contains("127.0.0.2".parse().unwrap()));
        assert!(!Prefix::parse("127.0.0.2").unwrap().contains("127.0.0.3".parse().unwrap()));
        assert!(Prefix::parse("2001:db8::/32").unwrap().contains("2001:db8:1::9".parse().unwrap()));
        assert!(Prefix::parse("0.0.0.0/0").unwrap().contains("203.0.113.1".parse().unwrap()));
        for bad in ["192.0.2.1/24", "192.0.2.0/33", "host.example", "192.0.2.0/x"] {
            assert!(Prefix::parse(bad).is_err(), "{bad}");
        }
    }
}

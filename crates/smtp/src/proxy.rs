//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2): the header a load
//! balancer sends before anything else, naming the client it accepted. Pure data: the server
//! reads as many octets as [`parse`] asks for (never more, so not one octet of what follows, an
//! SMTP command or a TLS ClientHello, is taken), and decides who may send one.
//!
//! - v1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT CRLF`, or `PROXY UNKNOWN ... CRLF`; at most 107
//!   octets; addresses of the family named, ports 0 to 65535 without leading zeros.
//! - v2: the 12-octet signature, version 2 with command LOCAL or PROXY, the family and
//!   transport, a length, the addresses (TCP over IPv4 or IPv6), then TLVs (skipped). A header
//!   longer than [`MAX_V2_LENGTH`] is refused.
//! - LOCAL, UNKNOWN and the families that are not TCP/IP (UNSPEC, UNIX) carry no client: the
//!   connection's own addresses stay. A datagram transport is refused (SMTP is a stream).
//!
//! Anything else is an error, and the server closes the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, with its CRLF.
pub const MAX_V1_LINE: usize = 107;
/// The longest v2 header we accept (16 octets, then addresses and TLVs).
pub const MAX_V2_LENGTH: usize = 16 + 1024;
/// Neither version's header is shorter (`PROXY UNKNOWN\r\n`).
const MIN_HEADER: usize = 15;

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address and the address it connected to; `None` for LOCAL, UNKNOWN and
    /// families without one (the connection's own addresses stay).
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    pub version: u8,
}

/// How far [`parse`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// At least this many more octets are needed (reading exactly that many never takes an
    /// octet past the header).
    Incomplete(usize),
    /// The header, `len` octets long.
    Header { header: ProxyHeader, len: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("PROXY v1 line longer than 107 octets")]
    V1TooLong,
    #[error("malformed PROXY v1 line: {0}")]
    V1(&'static str),
    #[error("PROXY v2 header longer than {MAX_V2_LENGTH} octets")]
    V2TooLong,
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
}

/// Parses the header at the start of `input`.
pub fn parse(input: &[u8]) -> Result<Parsed, ProxyError> {
    if input.len() < MIN_HEADER {
        let n = input.len();
        if b"PROXY "[..n.min(6)] != input[..n.min(6)] && V2_SIGNATURE[..n.min(12)] != input[..n.min(12)] {
            return Err(ProxyError::NotProxy);
        }
        return Ok(Parsed::Incomplete(MIN_HEADER - n));
    }
    if input.starts_with(b"PROXY ") {
        return v1(input);
    }
    if input.starts_with(V2_SIGNATURE) {
        return v2(input);
    }
    Err(ProxyError::NotProxy)
}

fn v1(input: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &input[..input.len().min(MAX_V1_LINE)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return match input.len() >= MAX_V1_LINE {
            true => Err(ProxyError::V1TooLong),
            false => Ok(Parsed::Incomplete(1)),
        };
    };
    if lf == 0 || input[lf - 1] != b'\r' {
        return Err(ProxyError::V1("a line must end with CRLF"));
    }
    let line = std::str::from_utf8(&input[6..lf - 1]).map_err(|_| ProxyError::V1("not ASCII"))?;
    if line.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
        return Err(ProxyError::V1("control characters"));
    }
    let len = lf + 1;
    let mut words = line.split(' ');
    let family = words.next().unwrap_or_default();
    if family == "UNKNOWN" {
        return Ok(Parsed::Header { header: ProxyHeader { addresses: None, version: 1 }, len });
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(ProxyError::V1("the protocol is TCP4, TCP6 or UNKNOWN")),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) =
        (words.next(), words.next(), words.next(), words.next(), words.next())
    else {
        return Err(ProxyError::V1("expected SRC DST SPORT DPORT"));
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        let ip = if v6 { s.parse::<Ipv6Addr>().map(IpAddr::V6) } else { s.parse::<Ipv4Addr>().map(IpAddr::V4) };
        ip.map_err(|_| ProxyError::V1("an address not of the protocol's family"))
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        let ok =
            !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
        ok.then(|| s.parse().ok()).flatten().ok_or(ProxyError::V1("a port is 0 to 65535"))
    };
    let addresses = (SocketAddr::new(ip(src)?, port(sport)?), SocketAddr::new(ip(dst)?, port(dport)?));
    Ok(Parsed::Header { header: ProxyHeader { addresses: Some(addresses), version: 1 }, len })
}

fn v2(input: &[u8]) -> Result<Parsed, ProxyError> {
    if input.len() < 16 {
        return Ok(Parsed::Incomplete(16 - input.len()));
    }
    let (ver_cmd, fam, length) = (input[12], input[13], u16::from_be_bytes([input[14], input[15]]) as usize);
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2("the version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::V2("the command is LOCAL or PROXY")),
    };
    let len = 16 + length;
    if len > MAX_V2_LENGTH {
        return Err(ProxyError::V2TooLong);
    }
    if input.len() < len {
        return Ok(Parsed::Incomplete(len - input.len()));
    }
    let body = &input[16..len];
    let header = |addresses| Ok(Parsed::Header { header: ProxyHeader { addresses, version: 2 }, len });
    let (family, transport) = (fam >> 4, fam & 0x0f);
    if family > 3 || transport > 2 {
        return Err(ProxyError::V2("unknown address family or transport"));
    }
    if local {
        return header(None);
    }
    if transport == 2 {
        return Err(ProxyError::V2("a datagram transport"));
    }
    match family {
        1 if transport == 1 => {
            let Some(a) = body.get(..12) else { return Err(ProxyError::V2("shorter than its IPv4 addresses")) };
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            header(Some((SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10)))))
        }
        2 if transport == 1 => {
            let Some(a) = body.get(..36) else { return Err(ProxyError::V2("shorter than its IPv6 addresses")) };
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            header(Some((SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34)))))
        }
        // UNSPEC, UNIX, or TCP/IP with an unspecified transport: no client to take.
        _ => header(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` as a server does: exactly as many octets as asked for.
    fn read(input: &[u8]) -> Result<(ProxyHeader, usize), ProxyError> {
        let mut have = 0;
        loop {
            match parse(&input[..have])? {
                Parsed::Header { header, len } => return Ok((header, len)),
                Parsed::Incomplete(n) => {
                    assert!(have + n <= input.len(), "asked past the input: {have} + {n}");
                    have += n;
                }
            }
        }
    }

    fn v2_header(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x20 | cmd, fam]);
        h.extend((body.len() as u16).to_be_bytes());
        h.extend(body);
        h
    }

    #[test]
    fn v1() {
        let line = b"PROXY TCP4 203.0.113.5 192.0.2.25 4711 25\r\nEHLO x\r\n";
        let (h, len) = read(line).unwrap();
        assert_eq!(len, line.len() - 8, "nothing of the EHLO is taken");
        assert_eq!(h.addresses, Some(("203.0.113.5:4711".parse().unwrap(), "192.0.2.25:25".parse().unwrap())));
        let (h, _) = read(b"PROXY TCP6 2001:db8::5 2001:db8::25 65535 0\r\n").unwrap();
        assert_eq!(h.addresses.unwrap().0, "[2001:db8::5]:65535".parse().unwrap());
        assert_eq!(read(b"PROXY UNKNOWN\r\n").unwrap().0.addresses, None);
        assert_eq!(read(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").unwrap().0.addresses, None);
        for bad in [
            &b"PROXY TCP4 203.0.113.5 192.0.2.25 4711\r\n"[..],
            b"PROXY TCP4 2001:db8::1 192.0.2.25 1 2\r\n",
            b"PROXY TCP6 203.0.113.5 192.0.2.25 1 2\r\n",
            b"PROXY TCP4 203.0.113.5 192.0.2.25 65536 25\r\n",
            b"PROXY TCP4 203.0.113.5 192.0.2.25 025 25\r\n",
            b"PROXY TCP4 203.0.113.5  192.0.2.25 1 25\r\n",
            b"PROXY UDP4 203.0.113.5 192.0.2.25 1 25\r\n",
            b"PROXY TCP4 203.0.113.5 192.0.2.25 1 25\n",
            b"PROXY TCP4 203.0.113.5 192.0.2.25 1 25 \r\n",
            b"PROXY TCP4 203.0.113.5\t192.0.2.25 1 25\r\n",
        ] {
            assert!(read(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100], b"\r\n"].concat();
        assert_eq!(read(&long), Err(ProxyError::V1TooLong));
    }

    #[test]
    fn v2() {
        let body = [203, 0, 113, 5, 192, 0, 2, 25, 0x12, 0x67, 0, 25];
        let mut h = v2_header(1, 0x11, &body);
        let (header, len) = read(&h).unwrap();
        assert_eq!(header.addresses, Some(("203.0.113.5:4711".parse().unwrap(), "192.0.2.25:25".parse().unwrap())));
        assert_eq!(len, 28);
        // TLVs after the addresses are skipped, and counted in the length.
        let mut with_tlv = body.to_vec();
        with_tlv.extend([0x04, 0, 3, b'a', b'b', b'c']);
        h = v2_header(1, 0x11, &with_tlv);
        h.extend(b"EHLO x\r\n");
        assert_eq!(read(&h).unwrap().1, 16 + with_tlv.len());
        let mut v6 = [0u8; 36];
        v6[15] = 5;
        v6[31] = 25;
        v6[33] = 99;
        v6[35] = 25;
        assert_eq!(read(&v2_header(1, 0x21, &v6)).unwrap().0.addresses.unwrap().0, "[::5]:99".parse().unwrap());
        assert_eq!(read(&v2_header(0, 0x00, &[])).unwrap().0.addresses, None, "LOCAL");
        assert_eq!(read(&v2_header(1, 0x00, &[])).unwrap().0.addresses, None, "UNSPEC");
        assert!(read(&v2_header(1, 0x11, &body[..8])).is_err(), "short addresses");
        assert!(read(&v2_header(1, 0x12, &body)).is_err(), "datagram");
        assert!(read(&v2_header(2, 0x11, &body)).is_err(), "bad command");
        let mut bad_version = v2_header(1, 0x11, &body);
        bad_version[12] = 0x11;
        assert!(read(&bad_version).is_err());
        let mut huge = v2_header(1, 0x11, &body);
        huge[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(read(&huge), Err(ProxyError::V2TooLong));
    }

    #[test]
    fn not_a_header_is_seen_early() {
        assert_eq!(parse(b"EHLO"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"\x16\x03\x01"), Err(ProxyError::NotProxy), "a TLS ClientHello");
        assert_eq!(parse(b""), Ok(Parsed::Incomplete(15)));
        assert_eq!(parse(b"PRO"), Ok(Parsed::Incomplete(12)));
    }
}

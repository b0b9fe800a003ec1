//! A minimal authoritative name server for the benchmarks: answers every A question with
//! 127.0.0.2 and every TXT question with "listed", TTL one hour, over UDP on a loopback port.
//! Only the first lookup of a name reaches it; the benchmark measures the resolver's cache and
//! everything between the plugin and it.

use std::net::{SocketAddr, UdpSocket};

/// Starts the server on a thread of its own (it lives as long as the process); its address.
pub fn start() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binding the bench name server");
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            if let Some(reply) = answer(&buf[..n]) {
                let _ = socket.send_to(&reply, peer);
            }
        }
    });
    addr
}

/// The reply to one query (RFC 1035 section 4): the question copied, one answer pointing at it.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    // The question's name ends at the first zero-length label; then QTYPE and QCLASS.
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + *query.get(end)? as usize;
    }
    let question_end = end + 5;
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let mut reply = query.get(..question_end)?.to_vec();
    reply[2] = 0x84 | (query[2] & 0x01); // QR, AA, RD copied
    reply[3] = 0x00;
    reply[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]); // one answer, no authority, no additional
    reply[4..6].copy_from_slice(&[0, 1]);
    let rdata: Vec<u8> = match qtype {
        1 => vec![127, 0, 0, 2],
        16 => [&[6u8][..], b"listed"].concat(),
        _ => {
            reply[7] = 0; // NODATA
            return Some(reply);
        }
    };
    reply.extend_from_slice(&[0xc0, 12]); // the name: a pointer to the question's
    reply.extend_from_slice(&qtype.to_be_bytes());
    reply.extend_from_slice(&[0, 1]); // IN
    reply.extend_from_slice(&3600u32.to_be_bytes());
    reply.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    reply.extend_from_slice(&rdata);
    Some(reply)
}

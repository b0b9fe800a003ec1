//! Admission: the limits on simultaneous connections, in total and per client IP address.
//! A client past either limit gets 421 and is closed (by its connection task).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use wasmtpd_smtp::reply::{self, Reply};

#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Held for as long as a connection is open; dropping it frees the connection's place.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    /// Connections open from `ip` when this one was admitted, this one included.
    pub from_ip: usize,
}

impl Admission {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Admission { max_total, max_per_ip, state: Mutex::new(Counts::default()) })
    }

    /// Takes a place for a connection from `ip`, or says why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Reply> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.total >= self.max_total {
            return Err(reply::too_many_connections());
        }
        let n = s.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(reply::too_many_connections_from_ip());
        }
        *n += 1;
        let from_ip = *n;
        s.total += 1;
        Ok(Ticket { admission: self.clone(), ip, from_ip })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.admission.state.lock().unwrap_or_else(|e| e.into_inner());
        s.total -= 1;
        if let Some(n) = s.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_and_per_ip() {
        let a = Admission::new(3, 2);
        let ip1: IpAddr = "192.0.2.1".parse().unwrap();
        let ip2: IpAddr = "192.0.2.2".parse().unwrap();
        let t1 = a.admit(ip1).unwrap();
        let t2 = a.admit(ip1).unwrap();
        assert_eq!((t1.from_ip, t2.from_ip), (1, 2), "each counts the connections open from its address");
        assert_eq!(a.admit(ip1).unwrap_err().code(), 421);
        let _t3 = a.admit(ip2).unwrap();
        assert_eq!(a.admit(ip2).unwrap_err(), reply::too_many_connections());
        drop(t1);
        assert_eq!(a.open(), 2);
        assert!(a.admit(ip1).is_ok());
    }
}

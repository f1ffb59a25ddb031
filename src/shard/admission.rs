//! Connection slots: the `--max-connections` cap over all shards and the
//! optional `--max-connections-per-ip` cap per client address. Taken once
//! per accepted connection and given back when its slot drops; nothing here
//! is touched per message.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::ShardState;
use crate::stats::Metric;

/// Open connections per client address, shared by every shard; locked only
/// when a connection opens or closes, and only with the cap on.
type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The caps shared by every shard.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Connections open on every shard.
    open: Arc<AtomicUsize>,
    /// The cap on `open`.
    max: usize,
    /// Connections per client address, when `--max-connections-per-ip` is on.
    per_ip: Option<(PerAddress, usize)>,
}

impl Admission {
    /// Caps of `max` connections in all, and `max_per_ip` per address (0: off).
    pub fn new(max: usize, max_per_ip: usize) -> Self {
        Admission {
            open: Arc::new(AtomicUsize::new(0)),
            max,
            per_ip: (max_per_ip > 0).then(|| (Arc::default(), max_per_ip)),
        }
    }

    /// Takes a slot for a connection from `ip`, or says which cap refused it.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnectionSlot, &'static str> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        let mut slot = ConnectionSlot {
            open: self.open.clone(),
            ip: None,
        };
        if open >= self.max {
            return Err("too many connections"); // dropping `slot` gives it back
        }
        if let Some((shared, max)) = &self.per_ip {
            // Poisoning needs a panic while held, which aborts the process.
            let mut counts = shared.lock().unwrap_or_else(|e| e.into_inner());
            let count = counts.entry(ip).or_default();
            if *count >= *max {
                return Err("too many connections from this address");
            }
            *count += 1;
            slot.ip = Some((ip, shared.clone()));
        }
        Ok(slot)
    }

    /// Connections open on every shard now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One connection's slot; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    open: Arc<AtomicUsize>,
    ip: Option<(IpAddr, PerAddress)>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if let Some((ip, counts)) = self.ip.take() {
            let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = counts.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

impl ShardState {
    /// Takes a connection slot for a client at `ip`; `Err` names the cap
    /// that refused it (the client is answered HTTP 503).
    pub fn admit(&self, ip: IpAddr) -> Result<ConnectionSlot, &'static str> {
        let slot = self.admission.admit(ip);
        if slot.is_err() {
            self.stats.add(Metric::RefusedConnections, 1);
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_address_and_slots_come_back() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let admission = Admission::new(3, 2);
        let s1 = admission.admit(a).unwrap();
        let _s2 = admission.admit(a).unwrap();
        assert!(admission.admit(a).is_err(), "per-address cap");
        let _s3 = admission.admit(b).unwrap();
        assert!(admission.admit(b).is_err(), "total cap");
        assert_eq!(admission.open(), 3);
        drop(s1);
        assert!(admission.admit(a).is_ok(), "a slot came back");
        let unlimited = Admission::new(10, 0);
        let slots: Vec<_> = (0..10).map(|_| unlimited.admit(a).unwrap()).collect();
        assert_eq!(slots.len(), 10);
    }
}

//! Pod address allocation from the slot's own range, `127.<128+slot>.1.1` upwards
//! (`.0.x` are the Nodes' addresses).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::slot;

/// Host indexes per /24 (`.1` to `.254`).
const HOSTS: u32 = 254;
/// Pod subnets (`.1.x` to `.254.x`).
const SUBNETS: u32 = 254;

/// Hands out Pod addresses; an address is not reused until the whole range has been
/// cycled through, so a stale client of a deleted Pod does not reach its successor.
#[derive(Debug)]
pub struct Ipam {
    prefix: [u8; 2],
    next: u32,
    used: HashSet<Ipv4Addr>,
}

impl Ipam {
    /// An allocator for slot `slot`.
    pub fn new(slot: u8) -> Ipam {
        Ipam {
            prefix: slot::pod_prefix(slot),
            next: 0,
            used: HashSet::new(),
        }
    }

    /// A free address, or `None` when all 64,516 are in use.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        for _ in 0..HOSTS * SUBNETS {
            let index = self.next;
            self.next = (self.next + 1) % (HOSTS * SUBNETS);
            let ip = self.address(index);
            if self.used.insert(ip) {
                return Some(ip);
            }
        }
        None
    }

    /// Returns `ip` to the pool.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }

    fn address(&self, index: u32) -> Ipv4Addr {
        let [a, b] = self.prefix;
        // Both quotients are below 255 by construction.
        let subnet = u8::try_from(index / HOSTS + 1).unwrap_or(u8::MAX);
        let host = u8::try_from(index % HOSTS + 1).unwrap_or(u8::MAX);
        Ipv4Addr::new(a, b, subnet, host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_and_in_the_slots_range() {
        let mut ipam = Ipam::new(3);
        let a = ipam.allocate().unwrap();
        let b = ipam.allocate().unwrap();
        assert_eq!(a, Ipv4Addr::new(127, 131, 1, 1));
        assert_eq!(b, Ipv4Addr::new(127, 131, 1, 2));
        for _ in 0..300 {
            ipam.allocate().unwrap();
        }
        assert_eq!(ipam.allocate().unwrap(), Ipv4Addr::new(127, 131, 2, 49));
    }

    #[test]
    fn released_addresses_come_back_only_after_a_full_cycle() {
        let mut ipam = Ipam::new(0);
        let first = ipam.allocate().unwrap();
        ipam.release(first);
        assert_ne!(ipam.allocate().unwrap(), first);
        let mut seen = 1;
        while ipam.allocate() != Some(first) {
            seen += 1;
            assert!(seen < 70_000, "never came back");
        }
    }

    #[test]
    fn a_full_range_says_so() {
        let mut ipam = Ipam::new(0);
        for _ in 0..HOSTS * SUBNETS {
            assert!(ipam.allocate().is_some());
        }
        assert_eq!(ipam.allocate(), None);
    }
}

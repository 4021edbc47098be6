//! A network's forwarding table inside a worker: its pod addresses
//! (routing keys) to port slots, with a one-entry cache of the last
//! lookup, and its uplink.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::counters::{Local, UplinkCounters};
use super::underlay::PeerCounters;
use crate::link::Tun;
use crate::mac::Mac;
use crate::packet::IpKey;

/// A multiplicative hasher for routing keys (addresses are not chosen by
/// an attacker who could benefit from collisions: only pods' own /32s and
/// /128s are in the table, put there by the control plane).
#[derive(Default)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    #[inline]
    fn write_u128(&mut self, v: u128) {
        let x = (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
        let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 32);
    }
}

/// Routing keys to port slots.
pub(super) type Routes = HashMap<IpKey, usize, BuildHasherDefault<KeyHasher>>;

/// A network's uplink TUN, as its worker uses it.
pub(super) struct Uplink {
    pub(super) tun: Tun,
    pub(super) counters: Arc<UplinkCounters>,
    pub(super) local: Local,
    pub(super) readable: bool,
}

/// One network of a worker: its routes and its uplink.
pub(super) struct Network {
    pub(super) name: String,
    pub(super) routes: Routes,
    /// The last lookup (key, port slot): consecutive frames mostly go to
    /// the same pod. Key 0 (never a unicast key) means empty; cleared on
    /// every route change.
    pub(super) last: (IpKey, usize),
    pub(super) uplink: Option<Uplink>,
    pub(super) ports: usize,
    /// The network's VXLAN network identifier.
    pub(super) vni: u32,
    /// Pods of the network on other nodes, consulted when no local port
    /// owns a destination.
    pub(super) remotes: HashMap<IpKey, Remote, BuildHasherDefault<KeyHasher>>,
    /// The other nodes serving the network.
    pub(super) peers: Vec<Peer>,
}

/// A pod on another node.
#[derive(Debug, Clone, Copy)]
pub(super) struct Remote {
    /// Its node, an index into [`Network::peers`].
    pub(super) peer: usize,
    /// The inner destination MAC of what is sent to it (its memif's MAC on
    /// ethernet networks; the fixed one of ip networks otherwise).
    pub(super) mac: Option<Mac>,
}

/// Another node serving a network.
pub(super) struct Peer {
    pub(super) addr: std::net::SocketAddr,
    pub(super) counters: Arc<PeerCounters>,
}

impl Network {
    #[inline]
    pub(super) fn lookup(&mut self, k: IpKey) -> Option<usize> {
        if self.last.0 == k {
            return Some(self.last.1);
        }
        let to = *self.routes.get(&k)?;
        self.last = (k, to);
        Some(to)
    }

    pub(super) fn set_route(&mut self, k: IpKey, slot: Option<usize>) -> Option<usize> {
        self.last = (0, 0);
        match slot {
            Some(s) => self.routes.insert(k, s),
            None => self.routes.remove(&k),
        }
    }
}

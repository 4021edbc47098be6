//! Counters: per attachment (rx/tx packets and bytes, drops by
//! [`DropReason`], errors, connects), per uplink, per ring (interrupts).
//! They are atomics the control plane reads for `show stats` and the
//! metrics; a worker counts in plain integers (`Local`) and adds them
//! to the atomics once per burst or before it sleeps.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::IfStats;

/// Why the dataplane dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// No port owns the destination (frames from the uplink), or the
    /// network has no uplink.
    NoRoute,
    /// Multicast, broadcast, link-local or other destinations that are
    /// never routed.
    NotRoutable,
    /// An ethertype other than IPv4, IPv6, ARP (ethernet ports).
    Ethertype,
    /// Too short, or not IPv4/IPv6 where an IP packet was expected.
    Malformed,
    /// TTL or hop limit would reach 0 crossing the uplink.
    TtlExpired,
    /// ARP or neighbour discovery that needs no answer (the pod's own
    /// address, replies, duplicate address detection, router discovery).
    Neighbor,
    /// The destination's ring had no free buffer.
    TxRingFull,
    /// The destination port has no connected client.
    TxDown,
    /// Larger than the destination can ever take.
    TooLong,
    /// The uplink refused the packet (write error).
    Uplink,
    /// Larger than the underlay carries to a remote pod (the network's
    /// MTU is above the underlay's less the VXLAN overhead).
    TooBig,
    /// The underlay refused the packet (send error).
    UnderlayError,
    /// From the underlay: not a VXLAN packet memifd takes (too short,
    /// flags other than I, truncated).
    VxlanMalformed,
    /// From the underlay: a VNI of no network this node serves.
    UnknownVni,
}

impl DropReason {
    pub const ALL: [DropReason; 14] = [
        DropReason::NoRoute,
        DropReason::NotRoutable,
        DropReason::Ethertype,
        DropReason::Malformed,
        DropReason::TtlExpired,
        DropReason::Neighbor,
        DropReason::TxRingFull,
        DropReason::TxDown,
        DropReason::TooLong,
        DropReason::Uplink,
        DropReason::TooBig,
        DropReason::UnderlayError,
        DropReason::VxlanMalformed,
        DropReason::UnknownVni,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// The name in `show stats` and the metrics' `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoRoute => "no-route",
            DropReason::NotRoutable => "not-routable",
            DropReason::Ethertype => "ethertype",
            DropReason::Malformed => "malformed",
            DropReason::TtlExpired => "ttl-expired",
            DropReason::Neighbor => "neighbor",
            DropReason::TxRingFull => "tx-ring-full",
            DropReason::TxDown => "tx-down",
            DropReason::TooLong => "too-long",
            DropReason::Uplink => "uplink-error",
            DropReason::TooBig => "too-big",
            DropReason::UnderlayError => "underlay-error",
            DropReason::VxlanMalformed => "vxlan-malformed",
            DropReason::UnknownVni => "vni-unknown",
        }
    }

    #[inline]
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one attachment, across its connections.
#[derive(Debug, Default)]
pub struct IfCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Indexed by [`DropReason`].
    pub drops: [AtomicU64; DropReason::COUNT],
    pub errors: AtomicU64,
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
}

impl IfCounters {
    /// Frames dropped for `r` so far.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()].load(Ordering::Relaxed)
    }

    /// A consistent-enough snapshot for display.
    pub fn snapshot(&self) -> IfStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IfStats {
            rx_packets: l(&self.rx_packets),
            rx_bytes: l(&self.rx_bytes),
            tx_packets: l(&self.tx_packets),
            tx_bytes: l(&self.tx_bytes),
            drops: drops_map(&self.drops),
            errors: l(&self.errors),
            connects: l(&self.connects),
            disconnects: l(&self.disconnects),
        }
    }
}

fn drops_map(d: &[AtomicU64; DropReason::COUNT]) -> BTreeMap<String, u64> {
    DropReason::ALL
        .iter()
        .filter_map(|r| {
            let n = d[r.index()].load(Ordering::Relaxed);
            (n > 0).then(|| (r.name().to_string(), n))
        })
        .collect()
}

/// Counters of a network's uplink: rx is what the host sent towards the
/// pods, tx what the pods sent to the host.
#[derive(Debug, Default)]
pub struct UplinkCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
}

/// Per-ring interrupt counts of one connection (for `show memif`).
#[derive(Debug)]
pub struct RingCounters {
    pub s2m_interrupts: Box<[AtomicU64]>,
    pub m2s_interrupts: Box<[AtomicU64]>,
}

impl RingCounters {
    pub fn new(s2m: usize, m2s: usize) -> RingCounters {
        let z = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        RingCounters {
            s2m_interrupts: z(s2m),
            m2s_interrupts: z(m2s),
        }
    }
}

/// Counts not yet added to the shared atomics.
#[derive(Default)]
pub(super) struct Local {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl Local {
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }
}

/// Adds `n` to `a` (nothing when 0: no store to a shared line).
#[inline]
pub(super) fn add(a: &AtomicU64, n: u64) {
    if n > 0 {
        a.fetch_add(n, Ordering::Relaxed);
    }
}

impl Local {
    /// Adds these counts to `rx_packets`..`drops` and starts again at 0.
    pub(super) fn publish(&mut self, to: &Published<'_>) {
        let l = std::mem::take(self);
        add(to.rx_packets, l.rx_packets);
        add(to.rx_bytes, l.rx_bytes);
        add(to.tx_packets, l.tx_packets);
        add(to.tx_bytes, l.tx_bytes);
        for (a, n) in to.drops.iter().zip(l.drops) {
            add(a, n);
        }
    }
}

/// The shared counters a [`Local`] is published to.
pub(super) struct Published<'a> {
    pub rx_packets: &'a AtomicU64,
    pub rx_bytes: &'a AtomicU64,
    pub tx_packets: &'a AtomicU64,
    pub tx_bytes: &'a AtomicU64,
    pub drops: &'a [AtomicU64; DropReason::COUNT],
}

impl IfCounters {
    pub(super) fn published(&self) -> Published<'_> {
        Published {
            rx_packets: &self.rx_packets,
            rx_bytes: &self.rx_bytes,
            tx_packets: &self.tx_packets,
            tx_bytes: &self.tx_bytes,
            drops: &self.drops,
        }
    }
}

/// A snapshot of plain traffic counters.
pub(super) fn snapshot_of(
    rx_packets: &AtomicU64,
    rx_bytes: &AtomicU64,
    tx_packets: &AtomicU64,
    tx_bytes: &AtomicU64,
    drops: &[AtomicU64; DropReason::COUNT],
) -> IfStats {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    IfStats {
        rx_packets: l(rx_packets),
        rx_bytes: l(rx_bytes),
        tx_packets: l(tx_packets),
        tx_bytes: l(tx_bytes),
        drops: drops_map(drops),
        ..IfStats::default()
    }
}

impl UplinkCounters {
    pub(super) fn published(&self) -> Published<'_> {
        Published {
            rx_packets: &self.rx_packets,
            rx_bytes: &self.rx_bytes,
            tx_packets: &self.tx_packets,
            tx_bytes: &self.tx_bytes,
            drops: &self.drops,
        }
    }

    /// A snapshot for display.
    pub fn snapshot(&self) -> IfStats {
        snapshot_of(
            &self.rx_packets,
            &self.rx_bytes,
            &self.tx_packets,
            &self.tx_bytes,
            &self.drops,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_have_distinct_names_and_indices() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}

//! What an ethernet memif hears back from memifd: its pod's MAC learned
//! from the source of its frames, ARP requests and IPv6 neighbour
//! solicitations answered with the port's MAC for any address but the
//! pod's own (so any next hop the pod picks works).

use super::counters::DropReason;
use super::forward::{Out, Plane, ScratchRefs};
use crate::mac::{self, Mac};
use crate::packet::decide;
use crate::packet::ETH_HLEN;

impl Plane {
    /// Learns the pod's MAC from the source of its frame.
    #[inline]
    pub(super) fn learn(&mut self, src: usize, smac: &[u8]) {
        let p = self.port(src);
        if mac::is_unicast(smac) && p.peer_mac.is_none_or(|m| m.0[..] != *smac) {
            let m = Mac::from_slice(smac).expect("six bytes");
            tracing::debug!(id = %p.id, mac = %m, "learned the pod's MAC");
            p.set_peer_mac(Some(m));
        }
    }

    /// An ARP frame from an ethernet port: requests for anything but the
    /// pod's own addresses are answered with the port's MAC.
    pub(super) fn arp(&mut self, sc: &mut ScratchRefs<'_>, src: usize, q: usize, n: usize) {
        let p = self.port(src);
        let r = match decide::arp_request(&sc.head[ETH_HLEN..n]) {
            Some(r) if !p.ips.contains(&decide::key_of(r.target_ip.into())) => r,
            _ => {
                p.local.drop(DropReason::Neighbor);
                return;
            }
        };
        let to = if mac::is_unicast(&r.sender_mac) {
            Mac(r.sender_mac)
        } else {
            Mac::from_slice(&sc.head[6..12]).expect("six bytes")
        };
        let len = decide::answer_arp(&mut sc.answer[..], p.mac, to, &r);
        self.push(src, q, &[], &Out::local(&sc.answer[..len]));
    }

    /// Neighbour discovery from an ethernet port: solicitations for
    /// anything but the pod's own addresses (and not duplicate address
    /// detection) are answered with the port's MAC; the rest is consumed.
    pub(super) fn neighbor_solicit(
        &mut self,
        sc: &mut ScratchRefs<'_>,
        src: usize,
        q: usize,
        n: usize,
    ) {
        let p = self.port(src);
        let s = match decide::solicit(&sc.head[ETH_HLEN..n]) {
            Some(s) if s.src != [0; 16] && !p.ips.contains(&u128::from_be_bytes(s.target)) => s,
            _ => {
                p.local.drop(DropReason::Neighbor);
                return;
            }
        };
        let to = s
            .source_mac
            .map(Mac)
            .unwrap_or_else(|| Mac::from_slice(&sc.head[6..12]).expect("six bytes"));
        let len = decide::answer_solicit(&mut sc.answer[..], p.mac, to, &s);
        self.push(src, q, &[], &Out::local(&sc.answer[..len]));
    }
}

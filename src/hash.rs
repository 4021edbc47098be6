//! FNV-1a (64-bit), the one hash behind every name and number memif-cni
//! derives from a string so that an operator can compute it too: uplink
//! device names and steering tables (`dataplane::uplink`), derived MACs
//! ([`crate::mac::Mac::derived`]), a network's worker, and a network's
//! default VXLAN VNI.
//!
//! Not for tables an attacker fills: it is not keyed.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ b as u64).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}

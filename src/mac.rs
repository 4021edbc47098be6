//! The Ethernet MAC address, one type for the whole crate: parsed from and
//! shown as `aa:bb:cc:dd:ee:ff`, (de)serialized as that string.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    pub const ZERO: Mac = Mac([0; 6]);

    /// Group bit set (broadcast included).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// Neither a group address nor all zeros: one station's address.
    pub fn is_unicast(&self) -> bool {
        is_unicast(&self.0)
    }

    /// The first six bytes of `b`, if it has them.
    pub fn from_slice(b: &[u8]) -> Option<Mac> {
        Some(Mac(b.get(..6)?.try_into().ok()?))
    }

    /// A locally administered address derived from `seed` (stable for
    /// the same seed): `02:fe` and four bytes of its FNV-1a hash.
    pub fn derived(seed: &str) -> Mac {
        let h = crate::hash::fnv1a64(seed.as_bytes());
        let t = ((h >> 32) as u32 ^ h as u32).to_be_bytes();
        Mac([0x02, 0xfe, t[0], t[1], t[2], t[3]])
    }
}

/// Whether the six bytes at `m` are one station's address (group bit clear,
/// not all zeros).
#[inline]
pub fn is_unicast(m: &[u8]) -> bool {
    m.first().is_some_and(|b| b & 1 == 0) && m.iter().any(|&b| b != 0)
}

impl From<[u8; 6]> for Mac {
    fn from(b: [u8; 6]) -> Mac {
        Mac(b)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A string that is not `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?} (expected aa:bb:cc:dd:ee:ff)")]
pub struct MacError(pub String);

impl std::str::FromStr for Mac {
    type Err = MacError;
    /// Six groups of two hex digits (either case), separated by `:` or
    /// `-`.
    fn from_str(s: &str) -> Result<Mac, MacError> {
        let bad = || MacError(s.to_string());
        let mut m = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut m {
            let p = parts.next().ok_or_else(bad)?;
            // Two hex digits: `from_str_radix` alone also takes a sign ("+a").
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        match parts.next() {
            None => Ok(Mac(m)),
            Some(_) => Err(bad()),
        }
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: Mac = Mac([0x02, 0, 0, 0, 0, 0xaa]);

    #[test]
    fn mac_parse_and_display() {
        let m: Mac = "02:00:00:00:00:AA".parse().unwrap();
        assert_eq!(m, MAC_A);
        assert_eq!(m.to_string(), "02:00:00:00:00:aa");
        assert_eq!("02-00-00-00-00-aa".parse::<Mac>().unwrap(), MAC_A);
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:aa:bb",
            "0g:00:00:00:00:00",
            "002:0:0:0:0:0",
            "02::00:00:00:00",
            "2:00:0a:ff:00:01",
            "zz:00:0a:ff:00:01",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
        assert!(Mac::BROADCAST.is_multicast() && !MAC_A.is_multicast());
        assert!(MAC_A.is_unicast() && !Mac::ZERO.is_unicast() && !Mac::BROADCAST.is_unicast());
    }

    /// Found by the `plugin_input` fuzz target: a group with a sign
    /// ("+0") parsed as a hex digit pair.
    #[test]
    fn mac_groups_are_two_hex_digits_without_sign() {
        for bad in [
            "02:00:00:00:+0:11",
            "+2:00:00:00:00:11",
            "02-00-00-00-00-+a",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<Mac>("\"02:00:00:00:+0:11\"").is_err());
    }

    #[test]
    fn macs_derived_are_local_and_stable() {
        let d = Mac::derived("c1/memif-eth1");
        assert_eq!(&d.0[..2], &[0x02, 0xfe]);
        assert_eq!(d, Mac::derived("c1/memif-eth1"));
        assert_ne!(d, Mac::derived("c2/memif-eth1"));
    }

    #[test]
    fn serde_is_the_string_form() {
        let j = serde_json::to_string(&MAC_A).unwrap();
        assert_eq!(j, "\"02:00:00:00:00:aa\"");
        assert_eq!(serde_json::from_str::<Mac>(&j).unwrap(), MAC_A);
        assert!(serde_json::from_str::<Mac>("\"02:00\"").is_err());
    }
}

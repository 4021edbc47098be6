//! CalicoVPP's PBL ("port-based balancer") port list: the pod annotation
//! `cni.projectcalico.org/vppExtraMemifPorts`, e.g.
//! `"tcp:4444-20000,udp:4444-20000"`. Traffic to the pod's address whose
//! protocol and destination port fall in one of the ranges is steered to
//! the pod's extra memif; everything else keeps using its primary
//! interface.
//!
//! Grammar: a comma list of `proto:port` or `proto:start-end`. Whitespace
//! around items and their parts is trimmed; `proto` is `tcp` or `udp` in
//! any case (CalicoVPP also parses `sctp` and `icmp` but never steers
//! them: here they are an error that names them); ports are `u16`; a single
//! port means start = end; start must not exceed end; ranges of one
//! protocol must not overlap (CalicoVPP checks neither; we refuse both).

use serde::{Deserialize, Serialize};

/// The annotation with the steered ports.
pub const EXTRA_MEMIF_PORTS_ANNOTATION: &str = "cni.projectcalico.org/vppExtraMemifPorts";
/// The annotation with the extra memif's spec (one spec object).
pub const EXTRA_MEMIF_SPEC_ANNOTATION: &str = "cni.projectcalico.org/vppExtraMemifSpec";

/// A steerable transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number (`ipproto` of a policy routing rule).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One steered range: `proto` destination ports `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    pub proto: Proto,
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    /// Whether `port` of `proto` is steered by this range.
    pub fn contains(&self, proto: Proto, port: u16) -> bool {
        self.proto == proto && (self.start..=self.end).contains(&port)
    }

    fn overlaps(&self, o: &PortRange) -> bool {
        self.proto == o.proto && self.start <= o.end && o.start <= self.end
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.start == self.end {
            write!(f, "{}:{}", self.proto, self.start)
        } else {
            write!(f, "{}:{}-{}", self.proto, self.start, self.end)
        }
    }
}

/// Why a port list was refused; the message names the offending item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortsError {
    #[error("the port list is empty")]
    Empty,
    #[error("item {item:?} is not of the form proto:port or proto:start-end")]
    Syntax { item: String },
    #[error("item {item:?}: protocol {proto:?} cannot be steered (only tcp and udp)")]
    Proto { item: String, proto: String },
    #[error("item {item:?}: {port:?} is not a port number (0-65535)")]
    Port { item: String, port: String },
    #[error("item {item:?}: the range starts after it ends")]
    Reversed { item: String },
    #[error("{a} and {b} overlap")]
    Overlap { a: PortRange, b: PortRange },
}

/// Parses the annotation's value.
pub fn parse(text: &str) -> Result<Vec<PortRange>, PortsError> {
    let mut out = Vec::new();
    for raw in text.split(',') {
        let item = raw.trim();
        if item.is_empty() {
            if text.trim().is_empty() {
                return Err(PortsError::Empty);
            }
            return Err(PortsError::Syntax {
                item: raw.to_string(),
            });
        }
        let syntax = || PortsError::Syntax {
            item: item.to_string(),
        };
        let (proto, ports) = item.split_once(':').ok_or_else(syntax)?;
        let proto = match proto.trim().to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "" => return Err(syntax()),
            _ => {
                return Err(PortsError::Proto {
                    item: item.to_string(),
                    proto: proto.trim().to_string(),
                })
            }
        };
        let port = |s: &str| {
            let s = s.trim();
            s.parse::<u16>().map_err(|_| PortsError::Port {
                item: item.to_string(),
                port: s.to_string(),
            })
        };
        let (start, end) = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(ports)?;
                (p, p)
            }
        };
        if start > end {
            return Err(PortsError::Reversed {
                item: item.to_string(),
            });
        }
        out.push(PortRange { proto, start, end });
    }
    validate(&out)?;
    Ok(out)
}

/// Checks a list as memifd receives it: not empty, each range ordered, no
/// two ranges of one protocol overlapping.
pub fn validate(ranges: &[PortRange]) -> Result<(), PortsError> {
    if ranges.is_empty() {
        return Err(PortsError::Empty);
    }
    for (i, r) in ranges.iter().enumerate() {
        if r.start > r.end {
            return Err(PortsError::Reversed {
                item: r.to_string(),
            });
        }
        if let Some(o) = ranges[..i].iter().find(|o| o.overlaps(r)) {
            return Err(PortsError::Overlap { a: *o, b: *r });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(proto: Proto, start: u16, end: u16) -> PortRange {
        PortRange { proto, start, end }
    }

    #[test]
    fn calicovpp_example_and_variants() {
        assert_eq!(
            parse("tcp:4444-20000,udp:4444-20000").unwrap(),
            vec![r(Proto::Tcp, 4444, 20000), r(Proto::Udp, 4444, 20000)]
        );
        // Whitespace everywhere, any case, single ports, the extremes.
        assert_eq!(
            parse(" TCP : 80 , Udp:0 - 65535,\ttcp:443\n").unwrap(),
            vec![
                r(Proto::Tcp, 80, 80),
                r(Proto::Udp, 0, 65535),
                r(Proto::Tcp, 443, 443)
            ]
        );
        // The same ports on both protocols do not overlap.
        assert!(parse("tcp:1-10,udp:5-6").is_ok());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let msg = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(parse("").unwrap_err(), PortsError::Empty);
        assert_eq!(parse("  ").unwrap_err(), PortsError::Empty);
        assert!(msg("sctp:80").contains("\"sctp\""), "{}", msg("sctp:80"));
        assert!(msg("ICMP:0").contains("\"ICMP\""));
        assert!(msg("tcp:70000").contains("\"70000\""));
        assert!(msg("tcp:-1").contains("not a port"));
        assert!(msg("tcp:80-").contains("not a port"));
        assert!(msg("tcp:x").contains("\"x\""));
        assert!(msg("tcp").contains("proto:port"));
        assert!(msg(":80").contains("proto:port"));
        assert!(msg("tcp:80,,udp:1").contains("proto:port"));
        assert!(msg("tcp:80,").contains("proto:port"));
        assert!(msg("udp:20-10").contains("starts after it ends"));
        assert_eq!(
            parse("tcp:1-100, udp:1-5, tcp:100-200").unwrap_err(),
            PortsError::Overlap {
                a: r(Proto::Tcp, 1, 100),
                b: r(Proto::Tcp, 100, 200)
            }
        );
        assert!(msg("udp:5,udp:5").contains("udp:5 and udp:5 overlap"));
    }

    #[test]
    fn validate_and_contains() {
        assert_eq!(validate(&[]).unwrap_err(), PortsError::Empty);
        assert!(validate(&[r(Proto::Udp, 9, 3)]).is_err());
        let x = r(Proto::Tcp, 10, 20);
        assert!(x.contains(Proto::Tcp, 10) && x.contains(Proto::Tcp, 20));
        assert!(!x.contains(Proto::Tcp, 21) && !x.contains(Proto::Udp, 15));
        assert_eq!(x.to_string(), "tcp:10-20");
        // The wire form memifd stores.
        assert_eq!(
            serde_json::to_string(&x).unwrap(),
            r#"{"proto":"tcp","start":10,"end":20}"#
        );
    }
}

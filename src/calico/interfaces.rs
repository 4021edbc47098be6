//! The interface spec: CalicoVPP's `cni.projectcalico.org/vppInterfacesSpec`
//! keys (`rx`, `tx`, `rxqsz`, `txqsz`, `isl3`, `rxMode`), read from the pod
//! annotation, from `args.cni` (Multus cni-args) and from the network
//! config, and resolved key by key, highest source first, over the built-in
//! defaults (1, 1, 1024, 1024, false, adaptive). Every value is checked and
//! an error names the source, the key and the value.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::memif::wire::Mode;

/// A spec that cannot be used: the message names the source, the key and
/// the value (the plugin returns it as CNI error 7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct SpecError {
    pub msg: String,
}

fn invalid_config(msg: impl Into<String>) -> SpecError {
    SpecError { msg: msg.into() }
}

/// How the dataplane reads an interface's rx rings (the `rxMode` key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RxMode {
    /// Busy-poll the rings: lowest latency, one core at 100%.
    Polling,
    /// Sleep until the peer signals the ring's eventfd.
    Interrupt,
    /// Poll while traffic flows, fall back to interrupts when idle.
    #[default]
    Adaptive,
}

impl std::str::FromStr for RxMode {
    type Err = String;
    fn from_str(s: &str) -> Result<RxMode, String> {
        match s {
            "polling" => Ok(RxMode::Polling),
            "interrupt" => Ok(RxMode::Interrupt),
            // CalicoVPP's "default" leaves the choice to the dataplane.
            "adaptive" | "default" => Ok(RxMode::Adaptive),
            other => Err(format!(
                "unknown rx mode {other:?} (expected polling, interrupt, adaptive or default)"
            )),
        }
    }
}

impl std::fmt::Display for RxMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RxMode::Polling => "polling",
            RxMode::Interrupt => "interrupt",
            RxMode::Adaptive => "adaptive",
        })
    }
}

/// The node-wide upper bound of interface specs (memifd's
/// `maxInterfaceSpec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaxSpec {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub ring_size: u32,
    pub buffer_size: u32,
}

impl Default for MaxSpec {
    fn default() -> MaxSpec {
        MaxSpec {
            rx_queues: 16,
            tx_queues: 16,
            ring_size: 16384,
            buffer_size: 65536,
        }
    }
}

/// Which bound a spec breaks ([`MaxSpec::check`]); the plugin and memifd
/// word it each their own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Queue counts: 1..=max.
    RxQueues {
        value: u16,
        max: u16,
    },
    TxQueues {
        value: u16,
        max: u16,
    },
    /// Ring sizes: powers of two in 2..=max.
    RxRingSize {
        value: u32,
        max: u32,
    },
    TxRingSize {
        value: u32,
        max: u32,
    },
}

impl Violation {
    /// The spec key (`vppInterfacesSpec`) the bound is about.
    pub fn key(&self) -> &'static str {
        match self {
            Violation::RxQueues { .. } => "rx",
            Violation::TxQueues { .. } => "tx",
            Violation::RxRingSize { .. } => "rxqsz",
            Violation::TxRingSize { .. } => "txqsz",
        }
    }
}

impl MaxSpec {
    /// The one check of queue counts and ring sizes against this node's
    /// maximum, shared by the plugin ([`resolve`]) and memifd.
    pub fn check(&self, rx: u16, tx: u16, rxqsz: u32, txqsz: u32) -> Result<(), Violation> {
        let ring_ok = |v: u32| v.is_power_of_two() && v >= 2 && v <= self.ring_size;
        if rx == 0 || rx > self.rx_queues {
            return Err(Violation::RxQueues {
                value: rx,
                max: self.rx_queues,
            });
        }
        if tx == 0 || tx > self.tx_queues {
            return Err(Violation::TxQueues {
                value: tx,
                max: self.tx_queues,
            });
        }
        if !ring_ok(rxqsz) {
            return Err(Violation::RxRingSize {
                value: rxqsz,
                max: self.ring_size,
            });
        }
        if !ring_ok(txqsz) {
            return Err(Violation::TxRingSize {
                value: txqsz,
                max: self.ring_size,
            });
        }
        Ok(())
    }
}

/// The pod annotation with per-interface specs.
pub const INTERFACES_SPEC_ANNOTATION: &str = "cni.projectcalico.org/vppInterfacesSpec";

/// The spec keys.
pub const KEYS: &[&str] = &["rx", "tx", "rxqsz", "txqsz", "isl3", "rxMode"];

/// One source's spec: only the keys it sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecEntry {
    pub source: String,
    pub rx: Option<u16>,
    pub tx: Option<u16>,
    pub rxqsz: Option<u32>,
    pub txqsz: Option<u32>,
    pub isl3: Option<bool>,
    pub rx_mode: Option<RxMode>,
}

/// The resolved spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub rx: u16,
    pub tx: u16,
    pub rxqsz: u32,
    pub txqsz: u32,
    pub isl3: bool,
    pub rx_mode: RxMode,
}

impl Default for Resolved {
    fn default() -> Resolved {
        Resolved {
            rx: 1,
            tx: 1,
            rxqsz: 1024,
            txqsz: 1024,
            isl3: false,
            rx_mode: RxMode::Adaptive,
        }
    }
}

impl Resolved {
    pub fn mode(&self) -> Mode {
        if self.isl3 {
            Mode::Ip
        } else {
            Mode::Ethernet
        }
    }
}

fn bad(source: &str, key: &str, v: &Value, why: &str) -> SpecError {
    invalid_config(format!("{source}: {key}={v} {why}"))
}

fn count(source: &str, key: &str, v: &Value) -> Result<u16, SpecError> {
    match v.as_u64() {
        Some(0) => Err(bad(source, key, v, "must be at least 1")),
        Some(n) if n <= u16::MAX as u64 => Ok(n as u16),
        _ => Err(bad(source, key, v, "must be a positive integer")),
    }
}

fn size(source: &str, key: &str, v: &Value) -> Result<u32, SpecError> {
    match v.as_u64() {
        Some(0) => Err(bad(source, key, v, "must be at least 2")),
        Some(n) if n <= u32::MAX as u64 && (n as u32).is_power_of_two() && n >= 2 => Ok(n as u32),
        Some(n) if n <= u32::MAX as u64 => Err(bad(source, key, v, "must be a power of two")),
        _ => Err(bad(source, key, v, "must be a positive integer")),
    }
}

impl SpecEntry {
    /// A spec object as written in the annotation or the network config:
    /// every key must be known and well-typed.
    pub fn from_value(v: &Value, source: &str) -> Result<SpecEntry, SpecError> {
        let obj = v.as_object().ok_or_else(|| {
            invalid_config(format!("{source}: the spec must be a JSON object, got {v}"))
        })?;
        if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(invalid_config(format!(
                "{source}: unknown key {k:?} (known: {})",
                KEYS.join(", ")
            )));
        }
        Self::from_map(obj, source)
    }

    /// The spec keys found in `args.cni`; other keys there belong to others.
    pub fn from_cni_args(m: &Map<String, Value>) -> Result<SpecEntry, SpecError> {
        Self::from_map(m, "args.cni")
    }

    fn from_map(m: &Map<String, Value>, source: &str) -> Result<SpecEntry, SpecError> {
        let mut e = SpecEntry {
            source: source.to_string(),
            ..SpecEntry::default()
        };
        for (k, v) in m {
            match k.as_str() {
                "rx" => e.rx = Some(count(source, k, v)?),
                "tx" => e.tx = Some(count(source, k, v)?),
                "rxqsz" => e.rxqsz = Some(size(source, k, v)?),
                "txqsz" => e.txqsz = Some(size(source, k, v)?),
                "isl3" => {
                    e.isl3 = Some(
                        v.as_bool()
                            .ok_or_else(|| bad(source, k, v, "must be true or false"))?,
                    )
                }
                "rxMode" => {
                    let s = v
                        .as_str()
                        .ok_or_else(|| bad(source, k, v, "must be a string"))?;
                    e.rx_mode = Some(s.parse().map_err(|m: String| {
                        invalid_config(format!("{source}: rxMode={v}: {m}"))
                    })?);
                }
                _ => {}
            }
        }
        Ok(e)
    }
}

/// This interface's entry of a `vppInterfacesSpec` annotation, if it has
/// one. The annotation must be a JSON object of objects.
pub fn from_annotation(text: &str, ifname: &str) -> Result<Option<SpecEntry>, SpecError> {
    let source = format!("annotation {INTERFACES_SPEC_ANNOTATION}");
    let v: Value = serde_json::from_str(text)
        .map_err(|e| invalid_config(format!("{source} is not valid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| {
        invalid_config(format!(
            "{source} must be a JSON object keyed by interface name, got {v}"
        ))
    })?;
    match obj.get(ifname) {
        None => Ok(None),
        Some(e) => SpecEntry::from_value(e, &format!("{source}[{ifname:?}]")).map(Some),
    }
}

/// Resolves key by key, `layers` highest first, and checks the result
/// against the node's maximum.
pub fn resolve(layers: &[&SpecEntry], max: &MaxSpec) -> Result<Resolved, SpecError> {
    let mut r = Resolved::default();
    let source_of = |key: &str| {
        layers
            .iter()
            .find(|e| match key {
                "rx" => e.rx.is_some(),
                "tx" => e.tx.is_some(),
                "rxqsz" => e.rxqsz.is_some(),
                _ => e.txqsz.is_some(),
            })
            .map_or("default", |e| e.source.as_str())
    };
    if let Some(v) = layers.iter().find_map(|e| e.rx) {
        r.rx = v;
    }
    if let Some(v) = layers.iter().find_map(|e| e.tx) {
        r.tx = v;
    }
    if let Some(v) = layers.iter().find_map(|e| e.rxqsz) {
        r.rxqsz = v;
    }
    if let Some(v) = layers.iter().find_map(|e| e.txqsz) {
        r.txqsz = v;
    }
    if let Some(b) = layers.iter().find_map(|e| e.isl3) {
        r.isl3 = b;
    }
    if let Some(m) = layers.iter().find_map(|e| e.rx_mode) {
        r.rx_mode = m;
    }
    max.check(r.rx, r.tx, r.rxqsz, r.txqsz).map_err(|v| {
        let (value, max) = match v {
            Violation::RxQueues { value, max } | Violation::TxQueues { value, max } => {
                (value as u64, max as u64)
            }
            Violation::RxRingSize { value, max } | Violation::TxRingSize { value, max } => {
                (value as u64, max as u64)
            }
        };
        invalid_config(format!(
            "{}: {}={value} is above this node's maximum {max} (memifd maxInterfaceSpec)",
            source_of(v.key()),
            v.key()
        ))
    })?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn max() -> MaxSpec {
        MaxSpec::default()
    }

    #[test]
    fn every_key_takes_effect_and_sources_layer_per_key() {
        let ann = from_annotation(
            r#"{"memif-eth1": {"rx": 2, "tx": 3, "rxqsz": 2048, "txqsz": 512, "isl3": true, "rxMode": "polling"},
                "memif-eth2": {"rx": "bad"}}"#,
            "memif-eth1",
        )
        .unwrap()
        .unwrap();
        let r = resolve(&[&ann], &max()).unwrap();
        assert_eq!(
            r,
            Resolved {
                rx: 2,
                tx: 3,
                rxqsz: 2048,
                txqsz: 512,
                isl3: true,
                rx_mode: RxMode::Polling
            }
        );
        assert_eq!(r.mode(), Mode::Ip);

        let args = SpecEntry::from_cni_args(
            json!({"rx": 4, "rxMode": "interrupt", "other-plugin": "x"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let net = SpecEntry::from_value(&json!({"tx": 2, "isl3": true, "rx": 8}), "net").unwrap();
        let partial = SpecEntry::from_value(&json!({"txqsz": 256}), "ann").unwrap();
        let r = resolve(&[&partial, &args, &net], &max()).unwrap();
        assert_eq!((r.rx, r.tx, r.rxqsz, r.txqsz), (4, 2, 1024, 256));
        assert!(r.isl3);
        assert_eq!(r.rx_mode, RxMode::Interrupt);
        assert_eq!(resolve(&[], &max()).unwrap(), Resolved::default());
        // CalicoVPP's "default" rx mode is adaptive here.
        let d = SpecEntry::from_value(&json!({"rxMode": "default"}), "a").unwrap();
        assert_eq!(resolve(&[&d], &max()).unwrap().rx_mode, RxMode::Adaptive);
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let msg = |v: Value| SpecEntry::from_value(&v, "src").unwrap_err().msg;
        assert_eq!(msg(json!({"rx": 0})), "src: rx=0 must be at least 1");
        assert_eq!(
            msg(json!({"rxqsz": 1000})),
            "src: rxqsz=1000 must be a power of two"
        );
        assert_eq!(msg(json!({"txqsz": 0})), "src: txqsz=0 must be at least 2");
        assert_eq!(
            msg(json!({"tx": -1})),
            "src: tx=-1 must be a positive integer"
        );
        assert_eq!(
            msg(json!({"isl3": "yes"})),
            "src: isl3=\"yes\" must be true or false"
        );
        assert!(msg(json!({"rxMode": "turbo"})).contains("rxMode=\"turbo\""));
        assert!(msg(json!({"rxq": 1})).contains("unknown key \"rxq\""));
        assert!(msg(json!([1])).contains("must be a JSON object"));
        let big = SpecEntry::from_value(&json!({"tx": 17}), "ann").unwrap();
        assert_eq!(
            resolve(&[&big], &max()).unwrap_err().msg,
            "ann: tx=17 is above this node's maximum 16 (memifd maxInterfaceSpec)"
        );
        let big = SpecEntry::from_value(&json!({"rxqsz": 32768}), "ann").unwrap();
        assert!(resolve(&[&big], &max())
            .unwrap_err()
            .msg
            .contains("rxqsz=32768"));
        let e = from_annotation("{nope", "memif-eth1").unwrap_err();
        assert_eq!(crate::cni::error::CniError::from(e.clone()).code, 7);
        assert!(e.msg.contains("not valid JSON"), "{}", e.msg);
        assert!(from_annotation("[]", "memif-eth1").is_err());
        assert_eq!(from_annotation("{}", "memif-eth1").unwrap(), None);
    }
}

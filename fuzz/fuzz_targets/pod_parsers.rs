//! The parsers of what pods and operators write: the `vppInterfacesSpec`
//! annotation (and a spec object as the network config or the extra
//! memif's annotation carries it), the `vppExtraMemifPorts` list, the
//! feature gates, and memifd's config file.
//!
//! Input: a first line naming the parser, then its text:
//! `interfaces <ifname>`, `spec`, `ports`, `gates` or `config` (memifd's
//! config file; a second line of gates from the environment may follow
//! after a line `---`). Another first line feeds the whole input to every
//! parser.
//!
//! Checked: what parses is within the rules the parser states; a port
//! list prints back to itself; a valid memifd config prints and parses
//! back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use memif_cni::agent::config::Config;
use memif_cni::calico::gates::FeatureGates;
use memif_cni::calico::interfaces::{self, MaxSpec, SpecEntry, KEYS};
use memif_cni::calico::ports;

fn spec_ok(e: &SpecEntry) {
    assert!(e.rx.is_none_or(|v| v >= 1));
    assert!(e.tx.is_none_or(|v| v >= 1));
    assert!(e.rxqsz.is_none_or(|v| v >= 2 && v.is_power_of_two()));
    assert!(e.txqsz.is_none_or(|v| v >= 2 && v.is_power_of_two()));
    let max = MaxSpec::default();
    if let Ok(r) = interfaces::resolve(&[e], &max) {
        assert_eq!(max.check(r.rx, r.tx, r.rxqsz, r.txqsz), Ok(()));
    }
}

fn annotation(text: &str, ifname: &str) {
    match interfaces::from_annotation(text, ifname) {
        Ok(Some(e)) => spec_ok(&e),
        Ok(None) => {}
        Err(e) => assert!(e.msg.contains("vppInterfacesSpec"), "{}", e.msg),
    }
}

fn spec(text: &str) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    if let Ok(e) = SpecEntry::from_value(&v, "fuzz") {
        spec_ok(&e);
        assert!(v
            .as_object()
            .unwrap()
            .keys()
            .all(|k| KEYS.contains(&k.as_str())));
    }
    if let Some(m) = v.as_object() {
        if let Ok(e) = SpecEntry::from_cni_args(m) {
            spec_ok(&e);
        }
    }
}

fn port_list(text: &str) {
    let Ok(ranges) = ports::parse(text) else {
        return;
    };
    assert!(!ranges.is_empty());
    assert_eq!(ports::validate(&ranges), Ok(()));
    for (i, r) in ranges.iter().enumerate() {
        assert!(r.start <= r.end);
        assert!(r.contains(r.proto, r.start) && r.contains(r.proto, r.end));
        assert!(ranges[..i]
            .iter()
            .all(|o| o.proto != r.proto || o.end < r.start || r.end < o.start));
    }
    let printed: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        ports::parse(&printed.join(",")).as_ref(),
        Ok(&ranges),
        "round trip"
    );
}

fn gates(text: &str) {
    if let Ok(g) = FeatureGates::parse(text) {
        let s = serde_json::to_string(&g).unwrap();
        assert_eq!(FeatureGates::parse(&s).unwrap(), g);
        let mut m = FeatureGates::default();
        m.merge(&g);
        assert_eq!(m.memif_enabled(), g.memif_enabled());
    }
}

/// As `Config::load` does with a file's text and the gates variable.
fn config(text: &str) {
    let (file, env) = match text.split_once("\n---\n") {
        Some((f, e)) => (f, Some(e)),
        None => (text, None),
    };
    let Ok(mut cfg) = serde_json::from_str::<Config>(file) else {
        return;
    };
    if let Some(g) = env.and_then(|e| FeatureGates::parse(e).ok()) {
        cfg.feature_gates.merge(&g);
    }
    if cfg.validate().is_err() {
        return;
    }
    let m = cfg.max_interface_spec;
    assert!(m.ring_size.is_power_of_two() && m.ring_size <= 16384);
    assert!(cfg.workers >= 1);
    let s = serde_json::to_string(&cfg).expect("config serializes");
    let back: Config = serde_json::from_str(&s).expect("a printed config parses");
    assert_eq!(back, cfg, "round trip");
    assert!(back.validate().is_ok());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    match first.split_once(' ').map_or((first, ""), |(a, b)| (a, b)) {
        ("interfaces", ifname) => annotation(rest, ifname),
        ("spec", _) => spec(rest),
        ("ports", _) => port_list(rest),
        ("gates", _) => gates(rest),
        ("config", _) => config(rest),
        _ => {
            annotation(text, "memif-eth1");
            spec(text);
            port_list(text);
            gates(text);
            config(text);
        }
    }
});

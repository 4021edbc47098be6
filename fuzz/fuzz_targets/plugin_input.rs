//! The CNI plugin's input, parsed and validated only: the `CNI_*`
//! environment and the network configuration on stdin. Nothing here acts
//! (no IPAM, netlink or memifd): only the answers that need none go
//! through `plugin::run` (VERSION, the about line, environment errors).
//!
//! Input: `KEY=VALUE` lines (the environment), a NUL byte, then stdin.
//!
//! Checked: every error prints as the spec's error object in the config's
//! version; a valid environment obeys the spec's rules; a result read from
//! `prevResult` prints in 1.1.0 and reads back the same, and prints in
//! every version it is accepted in; a resolved spec is within the node's
//! maximum.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use memif_cni::calico::interfaces::{self, MaxSpec, SpecEntry};
use memif_cni::cni::env::{check_container_id, check_ifname, Env};
use memif_cni::cni::error::CniError;
use memif_cni::cni::plugin;
use memif_cni::cni::types::{CniResult, NetConf};
use memif_cni::cni::version::{self, Version};
use memif_cni::mac::Mac;
use serde_json::Value;

/// A printed error: one JSON object with the spec's keys.
fn check_error(e: &CniError, cni_version: &str) {
    let v: Value = serde_json::from_str(&e.to_json(cni_version)).expect("error object is JSON");
    assert_eq!(v["code"].as_u64(), Some(e.code as u64));
    assert_eq!(v["cniVersion"].as_str(), Some(cni_version));
    assert!(v["msg"].is_string());
    assert!(e.code > 0);
}

fn check_env(env: &Env) {
    match env.command.as_str() {
        "" | "VERSION" => return,
        "ADD" | "DEL" | "CHECK" | "STATUS" | "GC" => {}
        other => panic!("CNI_COMMAND {other:?} accepted"),
    }
    if matches!(env.command.as_str(), "STATUS" | "GC") {
        return;
    }
    check_container_id(&env.container_id).expect("container id checked");
    check_ifname(&env.ifname).expect("ifname checked");
    assert!(!env.ifname.is_empty() && env.ifname.len() <= 15);
    assert!(env.netns.is_some() || env.command == "DEL");
    if let Some(pod) = env.pod() {
        assert!(!pod.namespace.is_empty() && !pod.name.is_empty());
    }
}

/// A result read from a config prints and reads back in 1.1.0, and prints
/// in every supported version.
fn check_result(r: &CniResult) {
    let back = CniResult::from_value(&r.to_version("1.1.0", Version::V1_1_0), "again")
        .expect("a printed result reads back");
    let mut want = r.clone();
    want.cni_version = "1.1.0".into();
    assert_eq!(back, want, "1.1.0 round trip");
    for v in version::SUPPORTED {
        let p = Version::parse(v).expect("supported versions parse");
        let out = r.to_version(v, p);
        assert_eq!(out["cniVersion"].as_str(), Some(*v));
    }
}

fuzz_target!(|data: &[u8]| {
    let (env_part, stdin) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let vars: BTreeMap<String, String> = String::from_utf8_lossy(env_part)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let env = Env::from_lookup(|k| vars.get(k).cloned());

    // The answers given without acting.
    let acts = matches!(&env, Ok(e) if !matches!(e.command.as_str(), "" | "VERSION"));
    if !acts {
        let out = plugin::run(env.clone(), stdin);
        match &env {
            Ok(e) if e.command.is_empty() => {
                assert_eq!(out.exit, 0);
                assert!(out.stdout.is_empty() && !out.stderr.is_empty());
            }
            Ok(_) => {
                assert_eq!(out.exit, 0);
                let v: Value = serde_json::from_str(&out.stdout).expect("VERSION is JSON");
                assert!(v["supportedVersions"].is_array());
            }
            Err(_) => {
                assert_eq!(out.exit, 1);
                let v: Value = serde_json::from_str(&out.stdout).expect("error is JSON");
                assert!(v["code"].is_u64());
            }
        }
    }
    let verb = match &env {
        Ok(e) => {
            check_env(e);
            e.command.clone()
        }
        Err(e) => {
            check_error(e, "1.1.0");
            String::new()
        }
    };

    // The configuration, in the order the verbs check it.
    let conf = match NetConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => return check_error(&e, "1.1.0"),
    };
    let v = match version::check(&conf.cni_version) {
        Ok(v) => v,
        Err(e) => return check_error(&e, "1.1.0"),
    };
    assert!(version::SUPPORTED.contains(&conf.cni_version.as_str()));
    let cv = conf.cni_version.as_str();
    if let Err(e) = version::require(&verb, v, cv) {
        check_error(&e, cv);
    }
    if let Ok(e) = &env {
        let _ = e.ifname.starts_with(conf.prefix());
        let _ = memif_cni::cni::pbl::socket_name(&e.ifname);
        let _ = memif_cni::cni::pbl::interface_name(&e.ifname);
    }
    if let Some(m) = &conf.runtime_config.mac {
        if let Ok(mac) = m.parse::<Mac>() {
            // The accepted spelling is six pairs of hex digits.
            assert_eq!(m.len(), 17, "{m:?}");
            assert_eq!(mac.to_string(), m.to_ascii_lowercase().replace('-', ":"));
        }
    }
    for s in &conf.runtime_config.ips {
        let _ = s.parse::<ipnetwork::IpNetwork>();
    }
    let mut layers = Vec::new();
    if let Some(m) = conf.cni_args() {
        match SpecEntry::from_cni_args(m) {
            Ok(e) => layers.push(e),
            Err(e) => check_error(&e.into(), cv),
        }
    }
    match conf.default_spec() {
        Ok(Some(e)) => layers.push(e),
        Ok(None) => {}
        Err(e) => check_error(&e, cv),
    }
    let refs: Vec<&SpecEntry> = layers.iter().collect();
    let max = MaxSpec::default();
    match interfaces::resolve(&refs, &max) {
        Ok(r) => assert_eq!(max.check(r.rx, r.tx, r.rxqsz, r.txqsz), Ok(())),
        Err(e) => check_error(&e.into(), cv),
    }
    if let Some(prev) = &conf.prev_result {
        match CniResult::from_value(prev, "prevResult") {
            Ok(r) => check_result(&r),
            Err(e) => check_error(&e, cv),
        }
    }
});

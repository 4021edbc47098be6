//! The network configuration the runtime sends and the result the plugin
//! prints. Unknown keys are tolerated everywhere and passed through in
//! `prevResult`; results are held in the 1.1.0 shape and converted to the
//! config's version on output.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{code, invalid_config, CniError};
use super::version::Version;
use crate::calico::interfaces::SpecEntry;

/// The default memif interface-name prefix.
pub const DEFAULT_PREFIX: &str = "memif";

/// The network configuration on stdin (one plugin of a list, as the runtime
/// hands it over).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub plugin_type: String,
    /// Delegated IPAM; the whole config goes to `CNI_PATH/<ipam.type>`.
    #[serde(default)]
    pub ipam: Option<Map<String, Value>>,
    #[serde(default)]
    pub dns: Option<Value>,
    #[serde(default)]
    pub capabilities: BTreeMap<String, bool>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub args: Option<Args>,
    /// Chained: the previous plugin's result (any version).
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// GC: the attachments to keep.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<crate::api::AttachmentKey>>,

    // This plugin's keys (see conf/README.md).
    /// memifd's API socket.
    #[serde(default)]
    pub memifd_socket: Option<PathBuf>,
    /// Interface names served; others are refused (default `memif`).
    #[serde(default)]
    pub ifname_prefix: Option<String>,
    /// The network's default interface spec (CalicoVPP's keys).
    #[serde(default)]
    pub interface_spec: Option<Value>,
    /// MTU of the dummy interface and the result (default: memifd's pod
    /// MTU across nodes, else the kernel's, 1500).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The network's VXLAN network identifier across nodes (1..16777215;
    /// default: derived from `name` by memifd).
    #[serde(default)]
    pub vni: Option<u32>,
    /// memifd API timeout in milliseconds (default 10000).
    #[serde(default)]
    pub memifd_timeout_ms: Option<u64>,
    /// PBL mode: chained after the cluster network's primary plugin; pods
    /// annotated `vppExtraMemifPorts` get a memif next to `CNI_IFNAME`
    /// sharing its addresses (see `cni::pbl`).
    #[serde(default)]
    pub pbl: bool,
}

/// Capability arguments the runtime (Multus) injects.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    /// `ips` capability: static addresses for this attachment.
    #[serde(default)]
    pub ips: Vec<String>,
    /// `mac` capability.
    #[serde(default)]
    pub mac: Option<String>,
    /// `CNIDeviceInfoFile` capability: where to write device-info.
    #[serde(default, rename = "CNIDeviceInfoFile")]
    pub device_info_file: Option<PathBuf>,
}

/// `args` as Multus sets it: `args.cni` carries the selection's `cni-args`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Args {
    #[serde(default)]
    pub cni: Map<String, Value>,
}

impl NetConf {
    /// Parses stdin: code 6 when it is not JSON, code 7 when a key has the
    /// wrong type.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(code::DECODE, "network configuration is not valid JSON")
                .with_details(e.to_string())
        })?;
        if !v.is_object() {
            return Err(CniError::new(
                code::DECODE,
                "network configuration must be a JSON object",
            ));
        }
        serde_json::from_value(v).map_err(|e| {
            invalid_config("network configuration has a key of the wrong type")
                .with_details(e.to_string())
        })
    }

    pub fn prefix(&self) -> &str {
        self.ifname_prefix.as_deref().unwrap_or(DEFAULT_PREFIX)
    }

    /// `args.cni` (Multus cni-args), if any.
    pub fn cni_args(&self) -> Option<&Map<String, Value>> {
        self.args.as_ref().map(|a| &a.cni).filter(|m| !m.is_empty())
    }

    /// The network's default spec, parsed.
    pub fn default_spec(&self) -> Result<Option<SpecEntry>, CniError> {
        match &self.interface_spec {
            None => Ok(None),
            Some(v) => Ok(Some(SpecEntry::from_value(
                v,
                "network config interfaceSpec",
            )?)),
        }
    }
}

/// A result interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A result address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A result route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A result in the 1.1.0 shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Route keys that exist only from 1.1.0 on.
const ROUTE_1_1_KEYS: &[&str] = &["mtu", "advmss", "priority", "table", "scope"];

impl CniResult {
    /// Reads a result of any version from 0.3.0 on (a previous plugin's or
    /// an IPAM plugin's); `what` names it in errors.
    pub fn from_value(v: &Value, what: &str) -> Result<CniResult, CniError> {
        let bad = |m: String| CniError::new(code::DECODE, m);
        let obj = v
            .as_object()
            .ok_or_else(|| bad(format!("{what} is not a JSON object")))?;
        if obj.contains_key("ip4") || obj.contains_key("ip6") {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("{what} is a 0.2.0 result (ip4/ip6); results from 0.3.0 on are supported"),
            ));
        }
        let mut r: CniResult = serde_json::from_value(v.clone())
            .map_err(|e| bad(format!("{what} cannot be read: {e}")))?;
        for ip in &mut r.ips {
            // 0.3.x/0.4.0 carry "version"; it is implied by the address.
            ip.extra.remove("version");
        }
        Ok(r)
    }

    /// The result as the config's version prints it.
    pub fn to_version(&self, cni_version: &str, v: Version) -> Value {
        let mut r = self.clone();
        r.cni_version = cni_version.to_string();
        if v < Version::V1_1_0 {
            for i in &mut r.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for rt in &mut r.routes {
                for k in ROUTE_1_1_KEYS {
                    rt.extra.remove(*k);
                }
            }
        }
        let mut out = serde_json::to_value(&r).expect("result serializes");
        if v < Version::V1_0_0 {
            if let Some(ips) = out.get_mut("ips").and_then(Value::as_array_mut) {
                for (ip, cfg) in ips.iter_mut().zip(&r.ips) {
                    let ver = if cfg.address.is_ipv4() { "4" } else { "6" };
                    ip.as_object_mut()
                        .expect("ip object")
                        .insert("version".into(), Value::from(ver));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        CniResult::from_value(
            &json!({
                "cniVersion": "1.1.0",
                "interfaces": [{"name": "memif-eth1", "mac": "02:00:00:00:00:01", "mtu": 1500,
                                "sandbox": "/run/netns/a", "socketPath": "@memif-eth1"}],
                "ips": [{"address": "10.1.0.5/32", "interface": 0},
                        {"address": "fd00::5/128", "interface": 0}],
                "routes": [{"dst": "10.1.0.0/24", "mtu": 1400}],
                "dns": {"nameservers": ["10.0.0.10"]}
            }),
            "test",
        )
        .unwrap()
    }

    #[test]
    fn down_conversion_drops_what_older_versions_lack() {
        let r = sample();
        let v11 = r.to_version("1.1.0", Version::V1_1_0);
        assert_eq!(v11["interfaces"][0]["socketPath"], "@memif-eth1");
        assert_eq!(v11["interfaces"][0]["mtu"], 1500);
        assert_eq!(v11["routes"][0]["mtu"], 1400);
        assert!(v11["ips"][0].get("version").is_none());

        let v10 = r.to_version("1.0.0", Version::V1_0_0);
        assert!(v10["interfaces"][0].get("socketPath").is_none());
        assert!(v10["interfaces"][0].get("mtu").is_none());
        assert!(v10["routes"][0].get("mtu").is_none());
        assert!(v10["ips"][0].get("version").is_none());
        assert_eq!(v10["cniVersion"], "1.0.0");

        let v04 = r.to_version("0.4.0", Version::V0_4_0);
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["ips"][1]["version"], "6");
        assert_eq!(v04["ips"][1]["interface"], 0);
        assert_eq!(v04["dns"]["nameservers"][0], "10.0.0.10");
    }

    #[test]
    fn old_results_read_and_unknown_keys_pass_through() {
        let r = CniResult::from_value(
            &json!({"cniVersion": "0.3.1",
                    "interfaces": [{"name": "eth0", "sandbox": "/x", "vendor": 7}],
                    "ips": [{"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0}],
                    "custom": {"a": 1}}),
            "prevResult",
        )
        .unwrap();
        assert_eq!(r.ips[0].gateway, Some("10.0.0.1".parse().unwrap()));
        let out = r.to_version("1.0.0", Version::V1_0_0);
        assert_eq!(out["custom"]["a"], 1);
        assert_eq!(out["interfaces"][0]["vendor"], 7);
        let e = CniResult::from_value(&json!({"ip4": {"ip": "10.0.0.2/24"}}), "prevResult")
            .unwrap_err();
        assert_eq!(e.code, 1);
    }

    #[test]
    fn config_errors_have_their_codes() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, 6);
        assert_eq!(NetConf::parse(b"[1]").unwrap_err().code, 6);
        let e = NetConf::parse(br#"{"cniVersion": "1.0.0", "mtu": "big"}"#).unwrap_err();
        assert_eq!(e.code, 7);
        let c = NetConf::parse(
            br#"{"cniVersion": "1.0.0", "name": "blue", "type": "memif-cni", "unknown": 1,
                 "args": {"cni": {"rx": 2}}, "runtimeConfig": {"mac": "02:00:00:00:00:09"}}"#,
        )
        .unwrap();
        assert_eq!(c.cni_args().unwrap()["rx"], 2);
        assert_eq!(c.runtime_config.mac.as_deref(), Some("02:00:00:00:00:09"));
        assert_eq!(c.prefix(), "memif");
    }
}

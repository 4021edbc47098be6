//! memifd's configuration: a JSON file (all keys optional), then the
//! `CALICOVPP_FEATURE_GATES` environment variable, then command-line flags,
//! each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::{MaxSpec, DEFAULT_SOCKET};
use crate::calico::gates::{self, FeatureGates};

/// Where memifd looks for its config file when none is named.
pub const DEFAULT_CONFIG: &str = "/etc/memif-cni/memifd.json";
/// Where memifd keeps its state file by default.
pub const DEFAULT_STATE_DIR: &str = "/run/memif-cni";

/// Everything memifd can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// The API socket (mode 0600).
    pub api_socket: PathBuf,
    /// Directory of the state file `state.json`.
    pub state_dir: PathBuf,
    /// CalicoVPP-shaped feature gates; the environment variable overrides.
    pub feature_gates: FeatureGates,
    /// Node-wide maximum of every interface spec.
    pub max_interface_spec: MaxSpec,
    /// Read pod annotations from the Kubernetes API when a configuration is
    /// found (explicit kubeconfig, $KUBECONFIG, in-cluster, ~/.kube/config).
    pub kubernetes: bool,
    /// A kubeconfig to use instead of discovery.
    pub kubeconfig: Option<PathBuf>,
    /// Serve Prometheus metrics on this address; off when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// Dataplane worker threads.
    pub workers: usize,
    /// A memif client must finish its handshake within this many ms.
    pub handshake_timeout_ms: u64,
    /// Carry networks to other nodes (VXLAN on the underlay) when a source
    /// of nodes exists: the MemifNode resource in the Kubernetes API, or
    /// `peersFile`.
    pub cross_node: bool,
    /// This node's name (its MemifNode object's); default `$NODE_NAME`,
    /// else the host name.
    pub node_name: Option<String>,
    /// The other nodes' MemifNode objects without Kubernetes (a JSON List
    /// or array); read whenever it changes.
    pub peers_file: Option<PathBuf>,
    /// The underlay.
    pub underlay: UnderlaySettings,
}

/// Where memifd meets the other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct UnderlaySettings {
    /// The node's underlay address; default: the source address of the
    /// default route (IPv4 first).
    pub address: Option<std::net::IpAddr>,
    /// The VXLAN port (receive side and destination).
    pub port: u16,
    /// The underlay MTU; default: the MTU of the device holding the
    /// address.
    pub mtu: Option<u32>,
}

impl Default for UnderlaySettings {
    fn default() -> UnderlaySettings {
        UnderlaySettings {
            address: None,
            port: crate::packet::vxlan::VXLAN_PORT,
            mtu: None,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            api_socket: DEFAULT_SOCKET.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            feature_gates: FeatureGates::default(),
            max_interface_spec: MaxSpec::default(),
            kubernetes: true,
            kubeconfig: None,
            metrics_listen: None,
            workers: 1,
            handshake_timeout_ms: 5000,
            cross_node: true,
            node_name: None,
            peers_file: None,
            underlay: UnderlaySettings::default(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("environment variable {var} is not valid")]
    Env {
        var: &'static str,
        #[source]
        source: gates::GatesError,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads `path`, or [`DEFAULT_CONFIG`] if it exists, else the defaults;
    /// then applies `gates_env` (the value of `CALICOVPP_FEATURE_GATES`).
    pub fn load(path: Option<&Path>, gates_env: Option<&str>) -> Result<Config, ConfigError> {
        let mut cfg = match path {
            Some(p) => Config::from_file(p)?,
            None if Path::new(DEFAULT_CONFIG).exists() => {
                Config::from_file(Path::new(DEFAULT_CONFIG))?
            }
            None => Config::default(),
        };
        if let Some(text) = gates_env.filter(|t| !t.trim().is_empty()) {
            let env = FeatureGates::parse(text).map_err(|source| ConfigError::Env {
                var: gates::ENV,
                source,
            })?;
            cfg.feature_gates.merge(&env);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.max_interface_spec;
        let bad = |s: String| Err(ConfigError::Invalid(s));
        if m.rx_queues == 0 || m.tx_queues == 0 || m.rx_queues > 256 || m.tx_queues > 256 {
            return bad(format!(
                "maxInterfaceSpec: rxQueues and txQueues must be 1..=256 (got {} and {})",
                m.rx_queues, m.tx_queues
            ));
        }
        if !m.ring_size.is_power_of_two() || !(2..=16384).contains(&m.ring_size) {
            return bad(format!(
                "maxInterfaceSpec.ringSize must be a power of two in 2..=16384 (got {})",
                m.ring_size
            ));
        }
        if !(128..=65536).contains(&m.buffer_size) {
            return bad(format!(
                "maxInterfaceSpec.bufferSize must be 128..=65536 (got {})",
                m.buffer_size
            ));
        }
        if self.workers == 0 || self.workers > 64 {
            return bad(format!("workers must be 1..=64 (got {})", self.workers));
        }
        if self.handshake_timeout_ms == 0 {
            return bad("handshakeTimeoutMs must be above 0".into());
        }
        if self.underlay.port == 0 {
            return bad("underlay.port must be 1..=65535".into());
        }
        if let Some(m) = self.underlay.mtu {
            if !(576..=65535).contains(&m) {
                return bad(format!("underlay.mtu must be 576..=65535 (got {m})"));
            }
        }
        if self.node_name.as_deref().is_some_and(|n| n.is_empty()) {
            return bad("nodeName must not be empty".into());
        }
        Ok(())
    }

    /// The state file inside the state directory.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_in_conf_parses_to_the_defaults() {
        let text = include_str!("../../conf/memifd.json");
        let cfg: Config = serde_json::from_str(text).expect("conf/memifd.json");
        let want = Config {
            feature_gates: FeatureGates::parse(r#"{"memifEnabled": true}"#).unwrap(),
            ..Config::default()
        };
        assert_eq!(cfg, want);
    }

    fn write(text: &str) -> (tempdir::Dir, PathBuf) {
        let d = tempdir::Dir::new();
        let p = d.0.join("memifd.json");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "memifd-cfg-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn file_then_env() {
        let (_d, p) = write(
            r#"{"featureGates": {"memifEnabled": true, "vclEnabled": true},
                "maxInterfaceSpec": {"rxQueues": 4, "txQueues": 4, "ringSize": 4096, "bufferSize": 2048},
                "workers": 2}"#,
        );
        let c = Config::load(Some(&p), Some(r#"{"memifEnabled": false}"#)).unwrap();
        assert!(!c.feature_gates.memif_enabled());
        assert_eq!(c.feature_gates.0.get("vclEnabled"), Some(&true));
        assert_eq!(c.max_interface_spec.ring_size, 4096);
        assert_eq!(c.workers, 2);
        assert_eq!(c.api_socket, PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn errors_name_the_problem() {
        let (_d, p) = write(r#"{"workerz": 2}"#);
        let e = Config::load(Some(&p), None).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
        let (_d, p) = write(
            r#"{"maxInterfaceSpec": {"rxQueues": 1, "txQueues": 1, "ringSize": 1000, "bufferSize": 2048}}"#,
        );
        let e = Config::load(Some(&p), None).unwrap_err().to_string();
        assert!(e.contains("ringSize") && e.contains("1000"), "{e}");
        let e = Config::load(Some(Path::new("/nonexistent/memifd.json")), None).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        let (_d, p) = write("{}");
        let e = Config::load(Some(&p), Some("memifEnabled")).unwrap_err();
        assert!(e.to_string().contains("CALICOVPP_FEATURE_GATES"), "{e}");
    }
}

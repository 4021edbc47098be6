//! IPAM delegation: run `CNI_PATH/<ipam.type>` with this invocation's
//! environment and the whole network config on stdin, as the spec says.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::error::{code, CniError};
use super::types::CniResult;

/// The delegated plugin of a config.
#[derive(Debug, Clone)]
pub struct Ipam {
    pub plugin: String,
    pub exe: PathBuf,
}

impl Ipam {
    /// Finds `ipam.type` in `path`.
    pub fn find(plugin: &str, path: &[PathBuf]) -> Result<Ipam, CniError> {
        if plugin.is_empty() || plugin.contains('/') {
            return Err(super::error::invalid_config(format!(
                "ipam.type {plugin:?} is not a plugin name"
            )));
        }
        path.iter()
            .map(|d| d.join(plugin))
            .find(|p| is_executable(p))
            .map(|exe| Ipam {
                plugin: plugin.to_string(),
                exe,
            })
            .ok_or_else(|| {
                super::error::invalid_config(format!(
                    "IPAM plugin {plugin:?} not found in CNI_PATH ({})",
                    path.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ))
            })
    }

    /// Runs `verb` with `stdin`; returns its stdout on success and its
    /// error (its own code, its message prefixed) on failure.
    pub fn exec(&self, verb: &str, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
        let mut child = Command::new(&self.exe)
            .env("CNI_COMMAND", verb)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                CniError::new(
                    code::IO,
                    format!("cannot run IPAM plugin {}: {e}", self.exe.display()),
                )
            })?;
        // A plugin that exits without reading stdin closes the pipe: not
        // our error, its exit status tells.
        let _ = child.stdin.take().expect("piped").write_all(stdin);
        let out = child.wait_with_output().map_err(|e| {
            CniError::new(code::IO, format!("IPAM plugin {} failed: {e}", self.plugin))
        })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        let (c, msg, details) = match parsed {
            Some(v) if v.get("code").is_some() => (
                v["code"].as_u64().unwrap_or(code::IPAM as u64) as u32,
                v["msg"].as_str().unwrap_or("").to_string(),
                v["details"].as_str().unwrap_or("").to_string(),
            ),
            _ => (
                code::IPAM,
                format!("exited with {}", out.status),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            ),
        };
        let details = [details, stderr]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Err(CniError::new(c, format!("IPAM {} {verb}: {msg}", self.plugin)).with_details(details))
    }

    /// ADD: the allocated addresses and routes.
    pub fn add(&self, stdin: &[u8]) -> Result<CniResult, CniError> {
        let out = self.exec("ADD", stdin)?;
        let v: Value = serde_json::from_slice(&out).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("IPAM {} returned an unreadable result: {e}", self.plugin),
            )
        })?;
        CniResult::from_value(&v, &format!("IPAM {} result", self.plugin))
    }

    /// The versions the plugin supports (VERSION verb); empty if it
    /// cannot tell.
    pub fn versions(&self) -> Vec<String> {
        let Ok(out) = self.exec("VERSION", br#"{"cniVersion":"0.4.0"}"#) else {
            return Vec::new();
        };
        serde_json::from_slice::<Value>(&out)
            .ok()
            .and_then(|v| v.get("supportedVersions").cloned())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    }

    /// Whether the plugin speaks `version`.
    pub fn supports(&self, version: &str) -> bool {
        self.versions().iter().any(|v| v == version)
    }

    /// The config for this plugin: as given when it speaks the config's
    /// version; else (a 1.1.0 config and an IPAM plugin that stops at
    /// 1.0.0, like host-local 1.1.1) with `cniVersion` lowered to the
    /// newest version both speak, 0.3.0 or later. Results of any of those
    /// versions are read alike.
    pub fn adapt(&self, stdin: &[u8], cni_version: &str) -> Vec<u8> {
        use super::version::Version;
        let Some(want) = Version::parse(cni_version) else {
            return stdin.to_vec();
        };
        if want < Version::V1_1_0 {
            return stdin.to_vec();
        }
        let theirs = self.versions();
        if theirs.iter().any(|v| v == cni_version) {
            return stdin.to_vec();
        }
        let best = theirs
            .iter()
            .filter_map(|v| Version::parse(v).map(|p| (p, v)))
            .filter(|(p, _)| *p <= want && *p >= Version(0, 3, 0))
            .max_by_key(|(p, _)| *p)
            .map(|(_, v)| v.clone());
        let (Some(best), Ok(mut v)) = (best, serde_json::from_slice::<Value>(stdin)) else {
            return stdin.to_vec();
        };
        tracing::debug!(
            plugin = %self.plugin,
            "IPAM speaks up to {best}, not {cni_version}: delegating with cniVersion {best}"
        );
        if let Some(prev) = v.get("prevResult") {
            // The prevResult goes down with the config.
            if let Ok(r) = CniResult::from_value(prev, "prevResult") {
                let bv = Version::parse(&best).expect("parsed above");
                v["prevResult"] = r.to_version(&best, bv);
            }
        }
        v["cniVersion"] = Value::from(best);
        serde_json::to_vec(&v).expect("config serializes")
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

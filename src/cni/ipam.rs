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

    /// The versions the plugin supports (for STATUS and GC forwarding).
    pub fn supports(&self, version: &str) -> bool {
        let Ok(out) = self.exec("VERSION", br#"{"cniVersion":"0.4.0"}"#) else {
            return false;
        };
        serde_json::from_slice::<Value>(&out)
            .ok()
            .and_then(|v| v.get("supportedVersions").cloned())
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(version)))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

//! The `CNI_*` environment: read once, validated as the spec says (code 4
//! naming the variable).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::error::{invalid_env, CniError};

/// The environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    /// Empty when unset (allowed for DEL).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` pairs.
    pub args: BTreeMap<String, String>,
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Result<Env, CniError> {
        Env::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads from `get` (tests use a map). Checks what the command needs.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let val = |k: &str| get(k).filter(|v| !v.is_empty());
        let command = val("CNI_COMMAND").unwrap_or_default();
        let mut env = Env {
            command: command.clone(),
            ..Env::default()
        };
        if command == "VERSION" || command.is_empty() {
            return Ok(env);
        }
        if !matches!(command.as_str(), "ADD" | "DEL" | "CHECK" | "STATUS" | "GC") {
            return Err(invalid_env(format!(
                "CNI_COMMAND={command:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"
            )));
        }
        env.path = val("CNI_PATH")
            .ok_or_else(|| invalid_env("CNI_PATH is not set (needed to find IPAM plugins)"))?
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        if let Some(a) = val("CNI_ARGS") {
            env.args = parse_args(&a)?;
        }
        if matches!(command.as_str(), "STATUS" | "GC") {
            return Ok(env);
        }
        env.container_id = val("CNI_CONTAINERID").ok_or_else(|| {
            CniError::new(
                super::error::code::UNKNOWN_CONTAINER,
                "CNI_CONTAINERID is not set",
            )
        })?;
        check_container_id(&env.container_id)?;
        env.ifname = val("CNI_IFNAME").ok_or_else(|| invalid_env("CNI_IFNAME is not set"))?;
        check_ifname(&env.ifname)?;
        env.netns = val("CNI_NETNS").map(PathBuf::from);
        if env.netns.is_none() && command != "DEL" {
            return Err(invalid_env(format!(
                "CNI_NETNS is not set (needed for {command})"
            )));
        }
        Ok(env)
    }

    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` from `CNI_ARGS`.
    pub fn pod(&self) -> Option<crate::api::PodRef> {
        let ns = self.args.get("K8S_POD_NAMESPACE")?;
        let name = self.args.get("K8S_POD_NAME")?;
        (!ns.is_empty() && !name.is_empty()).then(|| crate::api::PodRef {
            namespace: ns.clone(),
            name: name.clone(),
        })
    }
}

/// `K=V;K=V`; an item without `=` is an error.
pub fn parse_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut m = BTreeMap::new();
    for item in s.split(';').filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| {
            invalid_env(format!(
                "CNI_ARGS item {item:?} is not of the form KEY=VALUE"
            ))
        })?;
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

/// The spec's container id syntax: alphanumeric first, then alphanumerics,
/// `_`, `.` or `-`.
pub fn check_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(invalid_env(format!(
            "CNI_CONTAINERID={id:?} must start with a letter or digit, then letters, digits, '_', '.' or '-'"
        )));
    }
    Ok(())
}

/// The spec's interface name rules: at most 15 bytes, not `.` or `..`, no
/// `/`, `:` or whitespace.
pub fn check_ifname(name: &str) -> Result<(), CniError> {
    let why = if name.len() > 15 {
        Some("is longer than 15 characters")
    } else if name == "." || name == ".." {
        Some("is not a valid name")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match why {
        Some(w) => Err(invalid_env(format!("CNI_IFNAME={name:?} {w}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| m.get(k).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "memif-eth1"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=true;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=app",
        ),
    ];

    #[test]
    fn reads_and_validates() {
        let e = env(ADD).unwrap();
        assert_eq!(e.path.len(), 2);
        assert_eq!(e.pod().unwrap().name, "app");
        let without = |k: &str| -> Vec<(&str, &str)> {
            ADD.iter().copied().filter(|(n, _)| *n != k).collect()
        };
        assert_eq!(env(&without("CNI_IFNAME")).unwrap_err().code, 4);
        assert_eq!(env(&without("CNI_NETNS")).unwrap_err().code, 4);
        assert_eq!(env(&without("CNI_PATH")).unwrap_err().code, 4);
        assert_eq!(env(&without("CNI_CONTAINERID")).unwrap_err().code, 3);
        let mut del = without("CNI_NETNS");
        del[0] = ("CNI_COMMAND", "DEL");
        assert!(env(&del).unwrap().netns.is_none());
        let mut bad = ADD.to_vec();
        bad[3] = ("CNI_IFNAME", "memif-eth1-too-long");
        assert!(env(&bad).unwrap_err().msg.contains("15"));
        bad[3] = ("CNI_IFNAME", "me:m");
        assert_eq!(env(&bad).unwrap_err().code, 4);
        bad[3] = ("CNI_IFNAME", "..");
        assert_eq!(env(&bad).unwrap_err().code, 4);
        let mut bad = ADD.to_vec();
        bad[1] = ("CNI_CONTAINERID", "-abc");
        assert_eq!(env(&bad).unwrap_err().code, 4);
        let mut bad = ADD.to_vec();
        bad[5] = ("CNI_ARGS", "K8S_POD_NAME");
        assert_eq!(env(&bad).unwrap_err().code, 4);
        assert_eq!(env(&[("CNI_COMMAND", "FROB")]).unwrap_err().code, 4);
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")]).is_ok());
    }
}

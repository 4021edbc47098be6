//! CNI errors: the spec's JSON error object on stdout with a code.
//!
//! Codes 1-11 and 50/51 are the spec's; 100 and up are this plugin's and
//! are listed in the README's troubleshooting section.

use serde::Serialize;

/// The spec's and this plugin's error codes.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist (here: its netns is gone).
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config (and invalid interface specs).
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (memifd not reachable).
    pub const TRY_AGAIN: u32 = 11;
    /// The plugin is not available.
    pub const NOT_AVAILABLE: u32 = 50;
    /// The memif feature gate is off on this node.
    pub const MEMIF_DISABLED: u32 = 101;
    /// This kernel cannot create `dummy` links.
    pub const NO_DUMMY: u32 = 102;
    /// A netlink operation in the pod netns failed.
    pub const NETLINK: u32 = 103;
    /// An interface named `CNI_IFNAME` already exists in the pod netns.
    pub const IFACE_EXISTS: u32 = 104;
    /// memifd refused or failed the request.
    pub const MEMIFD: u32 = 105;
    /// The delegated IPAM plugin failed (its own code is in `details`).
    pub const IPAM: u32 = 106;
    /// CHECK found the interface different from what ADD made.
    pub const CHECK_MISMATCH: u32 = 107;
}

/// A CNI error, printed as the spec's error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{msg} (code {code}){}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The error object as the spec prints it, in `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            #[serde(flatten)]
            err: &'a CniError,
        }
        serde_json::to_string(&Out {
            cni_version,
            err: self,
        })
        .expect("error object serializes")
    }
}

/// Shorthand constructors.
pub fn invalid_config(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

pub fn invalid_env(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_ENV, msg)
}

impl From<crate::calico::interfaces::SpecError> for CniError {
    /// A bad spec is a bad config (7).
    fn from(e: crate::calico::interfaces::SpecError) -> CniError {
        invalid_config(e.msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_object_has_the_spec_shape() {
        let e = CniError::new(code::INVALID_ENV, "CNI_IFNAME is missing");
        assert_eq!(
            e.to_json("1.0.0"),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"CNI_IFNAME is missing"}"#
        );
        let e = e.with_details("set it to the interface name");
        assert_eq!(
            e.to_json("0.4.0"),
            r#"{"cniVersion":"0.4.0","code":4,"msg":"CNI_IFNAME is missing","details":"set it to the interface name"}"#
        );
    }
}

//! Feature gates in the shape of CalicoVPP's `CALICOVPP_FEATURE_GATES`:
//! a JSON object of booleans, e.g. `{"memifEnabled": true,
//! "multinetEnabled": true}`, so CalicoVPP's ConfigMap carries over.
//!
//! Gates this project does not know (CalicoVPP's `vclEnabled`, ...) are
//! kept and shown, never an error. An absent `memifEnabled` means on:
//! serving memifs is this project's whole purpose; set it to false to
//! refuse every memif request with a clear error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The environment variable CalicoVPP uses.
pub const ENV: &str = "CALICOVPP_FEATURE_GATES";
/// The gate for every memif.
pub const MEMIF_ENABLED: &str = "memifEnabled";

/// Parsed feature gates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FeatureGates(pub BTreeMap<String, bool>);

/// A gates document that is not a JSON object of booleans.
#[derive(Debug, thiserror::Error)]
#[error("feature gates must be a JSON object of booleans like {{\"memifEnabled\": true}}")]
pub struct GatesError(#[source] pub serde_json::Error);

impl FeatureGates {
    /// Parses the JSON text (as found in the environment variable).
    pub fn parse(text: &str) -> Result<FeatureGates, GatesError> {
        serde_json::from_str(text).map_err(GatesError)
    }

    /// Whether memifs may be served (default: yes).
    pub fn memif_enabled(&self) -> bool {
        self.0.get(MEMIF_ENABLED).copied().unwrap_or(true)
    }

    /// Gates from `other` override ours.
    pub fn merge(&mut self, other: &FeatureGates) {
        for (k, v) in &other.0 {
            self.0.insert(k.clone(), *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calicovpp_shape() {
        let g = FeatureGates::parse(r#"{"memifEnabled": false, "vclEnabled": true}"#).unwrap();
        assert!(!g.memif_enabled());
        assert_eq!(g.0.get("vclEnabled"), Some(&true));
        assert!(FeatureGates::default().memif_enabled());
    }

    #[test]
    fn non_boolean_is_refused() {
        assert!(FeatureGates::parse(r#"{"memifEnabled": "yes"}"#).is_err());
        assert!(FeatureGates::parse(r#"["memifEnabled"]"#).is_err());
    }

    #[test]
    fn merge_overrides() {
        let mut g = FeatureGates::parse(r#"{"memifEnabled": true, "a": true}"#).unwrap();
        g.merge(&FeatureGates::parse(r#"{"memifEnabled": false}"#).unwrap());
        assert!(!g.memif_enabled());
        assert_eq!(g.0.get("a"), Some(&true));
    }
}

//! The peers file: the other nodes' MemifNode objects without Kubernetes.
//!
//! The file holds what `kubectl get memifnodes -o json` prints (a `List`
//! with `items`), or a bare JSON array of objects; each object has
//! `metadata.name` and the `spec` of [`super::NodeSpec`]. memifd reads it
//! at start and whenever its modification time or size changes (checked
//! every [`POLL`]); a file that cannot be read or parsed is reported and
//! the last good tables stay.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{NodeSpec, Nodes};

/// How often the file is checked for changes.
pub const POLL: Duration = Duration::from_millis(250);

/// The objects of a peers file (or of a List from the API): node name to
/// spec. An object without a name or with a bad spec is an error naming
/// it.
pub fn parse_objects(text: &str) -> Result<BTreeMap<String, NodeSpec>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let items = match &v {
        Value::Array(a) => a.clone(),
        Value::Object(o) => match o.get("items") {
            Some(Value::Array(a)) => a.clone(),
            _ => {
                return Err(
                    "expected a List with \"items\" or an array of MemifNode objects".into(),
                )
            }
        },
        _ => return Err("expected a List with \"items\" or an array of MemifNode objects".into()),
    };
    let mut out = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let name = item
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("item {i} has no metadata.name"))?;
        let spec = item
            .get("spec")
            .ok_or_else(|| format!("node {name}: no spec"))?;
        let spec: NodeSpec = serde_json::from_value(spec.clone())
            .map_err(|e| format!("node {name}: bad spec: {e}"))?;
        out.insert(name.to_string(), spec);
    }
    Ok(out)
}

/// Watches `path` for the life of the process.
pub(super) fn spawn(nodes: Arc<Nodes>, path: PathBuf) {
    tokio::spawn(async move {
        let mut seen: Option<(SystemTime, u64)> = None;
        loop {
            let meta = tokio::fs::metadata(&path).await;
            let stamp = meta
                .as_ref()
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
            if stamp != seen {
                seen = stamp;
                let r = match tokio::fs::read_to_string(&path).await {
                    Ok(text) => parse_objects(&text).map(|objects| {
                        tracing::info!(file = %path.display(), nodes = objects.len(), "peers file read");
                        nodes.replace_all(objects);
                    }),
                    Err(e) => Err(format!("cannot read {}: {e}", path.display())),
                };
                nodes.source_result(r);
            }
            tokio::time::sleep(POLL).await;
        }
    });
}

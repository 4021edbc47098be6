//! The MemifNode objects through the Kubernetes API: ours published with
//! server-side apply, everyone's watched (kube-rs's watcher: list, then
//! watch, re-listing after errors with backoff).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

use super::{object_json, NodeSpec, Nodes, API_GROUP, API_VERSION, FIELD_MANAGER, KIND, PLURAL};
use crate::logging::error_chain;

/// The MemifNode resource.
pub fn resource() -> ApiResource {
    ApiResource {
        group: API_GROUP.into(),
        version: API_VERSION.into(),
        api_version: format!("{API_GROUP}/{API_VERSION}"),
        kind: KIND.into(),
        plural: PLURAL.into(),
    }
}

/// Whether the API serves MemifNode objects (the CRD is installed).
pub async fn served(client: &kube::Client) -> Result<bool, kube::Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource());
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// How long changes gather before one apply.
const BATCH: Duration = Duration::from_millis(200);

pub(super) fn spawn(nodes: Arc<Nodes>, client: kube::Client) {
    tokio::spawn(publish(nodes.clone(), client.clone()));
    tokio::spawn(watch(nodes, client));
}

fn spec_of(o: &DynamicObject) -> Result<NodeSpec, String> {
    let spec = o.data.get("spec").cloned().unwrap_or_default();
    serde_json::from_value(spec).map_err(|e| e.to_string())
}

/// Applies our object whenever our spec changes (and at start), a batch
/// at a time; retries with backoff while the API is away.
async fn publish(nodes: Arc<Nodes>, client: kube::Client) {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource());
    let mut owner: Option<serde_json::Value> = None;
    let mut backoff = Duration::from_millis(500);
    let mut published: Option<NodeSpec> = None;
    loop {
        let Some(spec) = nodes.local() else {
            nodes.kick.notified().await;
            continue;
        };
        if published.as_ref() == Some(&spec) {
            nodes.kick.notified().await;
            tokio::time::sleep(BATCH).await;
            continue;
        }
        if owner.is_none() {
            owner = match Api::<Node>::all(client.clone()).get(&nodes.node).await {
                Ok(n) => n.metadata.uid.map(|uid| {
                    serde_json::json!([{
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": nodes.node,
                        "uid": uid,
                    }])
                }),
                Err(e) => {
                    tracing::warn!(node = %nodes.node, error = %error_chain(&e),
                        "cannot read this node's Node object; the MemifNode object is published without its owner");
                    None
                }
            };
        }
        let mut obj = object_json(&nodes.node, &spec);
        if let Some(o) = &owner {
            obj["metadata"]["ownerReferences"] = o.clone();
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(&nodes.node, &params, &Patch::Apply(&obj)).await {
            Ok(_) => {
                tracing::info!(node = %nodes.node, networks = spec.networks.len(),
                    endpoints = spec.networks.iter().map(|n| n.endpoints.len()).sum::<usize>(),
                    "node object published");
                published = Some(spec);
                backoff = Duration::from_millis(500);
                nodes.source_result(Ok(()));
                // Gather what follows before the next apply.
                tokio::time::sleep(BATCH).await;
            }
            Err(e) => {
                nodes.source_result(Err(format!(
                    "publishing the node object: {}",
                    error_chain(&e)
                )));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Follows every MemifNode object.
async fn watch(nodes: Arc<Nodes>, client: kube::Client) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource());
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: BTreeMap<String, NodeSpec> = BTreeMap::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(o)) => {
                if let Some(name) = o.metadata.name.clone() {
                    match spec_of(&o) {
                        Ok(s) => {
                            listing.insert(name, s);
                        }
                        Err(e) => {
                            tracing::warn!(node = %name, error = %e, "ignoring a bad node object")
                        }
                    }
                }
            }
            Ok(Event::InitDone) => {
                tracing::info!(nodes = listing.len(), "node objects listed");
                nodes.replace_all(std::mem::take(&mut listing));
                nodes.source_result(Ok(()));
            }
            Ok(Event::Apply(o)) => {
                if let Some(name) = o.metadata.name.clone() {
                    match spec_of(&o) {
                        Ok(s) => nodes.apply(name, s),
                        Err(e) => {
                            tracing::warn!(node = %name, error = %e, "ignoring a bad node object")
                        }
                    }
                }
                nodes.source_result(Ok(()));
            }
            Ok(Event::Delete(o)) => {
                if let Some(name) = o.metadata.name.as_deref() {
                    nodes.delete(name);
                }
            }
            Err(e) => {
                nodes.source_result(Err(format!("watching node objects: {}", error_chain(&e))))
            }
        }
    }
}

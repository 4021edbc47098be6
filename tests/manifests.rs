//! The Kubernetes manifests (`manifests/*.yaml`), checked offline: no
//! cluster, no root.
//!
//! Every YAML document must be a known kind and deserialize into its
//! Kubernetes type (k8s-openapi) or, for the NetworkAttachmentDefinition
//! CRD, into a local strict type. k8s-openapi ignores unknown fields, so
//! "no unknown fields" is checked by a round trip: each document is
//! deserialized, serialized back, and every key of the original must come
//! back with the same value; a lost key is a misspelt or misplaced field
//! that the API server would drop or refuse.
//!
//! Then the objects must fit together and fit the code: the networks'
//! configs are accepted by the plugin's own parser, the ConfigMap's
//! memifd.json by memifd's, the DaemonSet finds its ServiceAccount, RBAC,
//! ConfigMap keys and config file, shares the API socket's directory and the
//! netns directories with the host, and the example pods name networks
//! that exist, with interface specs that resolve within memifd's limits and
//! clients whose socket and mode match.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Pod, PodSpec, ServiceAccount, Volume,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Resource;
use memif_cni::agent::config::Config;
use memif_cni::api::DEFAULT_SOCKET;
use memif_cni::calico::gates::{self, FeatureGates};
use memif_cni::calico::interfaces::{self, Resolved};
use memif_cni::cni::types::NetConf;
use memif_cni::cni::version;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Multus' pod annotation selecting secondary networks.
const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// The ConfigMap key holding memifd's config file.
const MEMIFD_JSON: &str = "memifd.json";
/// Capability keys Multus knows how to fill.
const MULTUS_CAPABILITIES: &[&str] = &[
    "ips",
    "mac",
    "portMappings",
    "bandwidth",
    "infinibandGUID",
    "deviceID",
    "CNIDeviceInfoFile",
];

/// The NetworkAttachmentDefinition CRD (k8s.cni.cncf.io/v1), strict.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NetworkAttachmentDefinition {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: NadSpec,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct NadSpec {
    /// A CNI network config or conflist, as a JSON string.
    config: String,
}

const NAD_API_VERSION: &str = "k8s.cni.cncf.io/v1";
const NAD_KIND: &str = "NetworkAttachmentDefinition";

/// An object and where it was found (`manifests/x.yaml#2 Kind/name`).
struct Found<T> {
    at: String,
    obj: T,
}

/// Every object of every manifest, by kind.
#[derive(Default)]
struct Manifests {
    namespaces: Vec<Found<Namespace>>,
    service_accounts: Vec<Found<ServiceAccount>>,
    config_maps: Vec<Found<ConfigMap>>,
    daemon_sets: Vec<Found<DaemonSet>>,
    cluster_roles: Vec<Found<ClusterRole>>,
    cluster_role_bindings: Vec<Found<ClusterRoleBinding>>,
    pods: Vec<Found<Pod>>,
    nads: Vec<Found<NetworkAttachmentDefinition>>,
    crds: Vec<Found<CustomResourceDefinition>>,
}

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

/// The YAML files, sorted.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .expect("manifests/ is readable")
        .map(|e| e.expect("manifests/ entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    files
}

/// The non-empty documents of one YAML file, as JSON values. Duplicate
/// keys are an error (the YAML mapping type refuses them).
fn documents(path: &Path) -> Result<Vec<(usize, Value)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut docs = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let yaml = serde_norway::Value::deserialize(de)
            .map_err(|e| format!("document {}: not valid YAML: {e}", i + 1))?;
        if yaml.is_null() {
            continue;
        }
        let json = serde_json::to_value(&yaml)
            .map_err(|e| format!("document {}: not representable as JSON: {e}", i + 1))?;
        docs.push((i + 1, json));
    }
    Ok(docs)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Every difference that makes `back` lose something of `orig`: a key
/// gone (unknown field), an array of another length, a changed scalar.
/// Keys only `back` has (defaults the type writes) are fine.
fn lost(orig: &Value, back: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = join(path, k);
                match b.get(k) {
                    Some(vb) => lost(va, vb, &p, out),
                    None => out.push(format!("unknown field `{p}`")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                lost(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ if orig == back => {}
        // JSON Schema bounds are f64 in the API types: 1 and 1.0 are one.
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        _ => out.push(format!(
            "`{path}`: {orig} does not survive the round trip ({back})"
        )),
    }
}

/// Deserializes `v` as `T` and requires the round trip to keep every key
/// and value.
fn strict<T: DeserializeOwned + Serialize>(
    v: &Value,
    at: &str,
    errs: &mut Vec<String>,
) -> Option<T> {
    let obj: T = match serde_json::from_value(v.clone()) {
        Ok(o) => o,
        Err(e) => {
            errs.push(format!("{at}: {e}"));
            return None;
        }
    };
    let back = serde_json::to_value(&obj).expect("a deserialized object serializes");
    let mut out = Vec::new();
    lost(v, &back, "", &mut out);
    errs.extend(out.into_iter().map(|e| format!("{at}: {e}")));
    Some(obj)
}

fn is<T: Resource>(api_version: &str, kind: &str) -> bool {
    api_version == T::API_VERSION && kind == T::KIND
}

fn push<T: DeserializeOwned + Serialize>(
    list: &mut Vec<Found<T>>,
    v: &Value,
    at: String,
    errs: &mut Vec<String>,
) {
    if let Some(obj) = strict::<T>(v, &at, errs) {
        list.push(Found { at, obj });
    }
}

/// Loads every manifest; `Err` lists every problem found.
fn try_load() -> Result<Manifests, Vec<String>> {
    let mut m = Manifests::default();
    let mut errs = Vec::new();
    let files = manifest_files();
    if files.is_empty() {
        errs.push("manifests/ has no .yaml file".into());
    }
    for path in files {
        let file = format!("manifests/{}", path.file_name().unwrap().to_string_lossy());
        let docs = match documents(&path) {
            Ok(d) => d,
            Err(e) => {
                errs.push(format!("{file}: {e}"));
                continue;
            }
        };
        for (n, v) in docs {
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
            let (av, kind) = (s("apiVersion"), s("kind"));
            let name = v
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let at = format!("{file}#{n} {kind}/{name}");
            if is::<Namespace>(av, kind) {
                push(&mut m.namespaces, &v, at, &mut errs);
            } else if is::<ServiceAccount>(av, kind) {
                push(&mut m.service_accounts, &v, at, &mut errs);
            } else if is::<ConfigMap>(av, kind) {
                push(&mut m.config_maps, &v, at, &mut errs);
            } else if is::<DaemonSet>(av, kind) {
                push(&mut m.daemon_sets, &v, at, &mut errs);
            } else if is::<ClusterRole>(av, kind) {
                push(&mut m.cluster_roles, &v, at, &mut errs);
            } else if is::<ClusterRoleBinding>(av, kind) {
                push(&mut m.cluster_role_bindings, &v, at, &mut errs);
            } else if is::<Pod>(av, kind) {
                push(&mut m.pods, &v, at, &mut errs);
            } else if is::<CustomResourceDefinition>(av, kind) {
                push(&mut m.crds, &v, at, &mut errs);
            } else if av == NAD_API_VERSION && kind == NAD_KIND {
                push(&mut m.nads, &v, at, &mut errs);
            } else {
                errs.push(format!(
                    "{at}: unexpected apiVersion {av:?} kind {kind:?} (add it to tests/manifests.rs)"
                ));
            }
        }
    }
    if errs.is_empty() {
        Ok(m)
    } else {
        Err(errs)
    }
}

fn load() -> Manifests {
    try_load().unwrap_or_else(|errs| panic!("manifests do not load:\n  {}", errs.join("\n  ")))
}

/// Fails with every message at once.
fn report(what: &str, errs: Vec<String>) {
    assert!(errs.is_empty(), "{what}:\n  {}", errs.join("\n  "));
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

/// The namespace an object lands in when applied without `-n`.
fn ns(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

impl Manifests {
    fn service_account(&self, namespace: &str, n: &str) -> Option<&ServiceAccount> {
        self.service_accounts
            .iter()
            .map(|f| &f.obj)
            .find(|o| ns(&o.metadata) == namespace && name(&o.metadata) == n)
    }

    fn config_map(&self, namespace: &str, n: &str) -> Option<&ConfigMap> {
        self.config_maps
            .iter()
            .map(|f| &f.obj)
            .find(|o| ns(&o.metadata) == namespace && name(&o.metadata) == n)
    }

    fn nad(&self, namespace: &str, n: &str) -> Option<&NetworkAttachmentDefinition> {
        self.nads
            .iter()
            .map(|f| &f.obj)
            .find(|o| ns(&o.metadata) == namespace && name(&o.metadata) == n)
    }

    /// memifd's configuration as the DaemonSet gives it: the ConfigMap's
    /// memifd.json (the tests below check that the DaemonSet points there).
    fn memifd_config(&self) -> Config {
        let texts: Vec<&String> = self
            .config_maps
            .iter()
            .filter_map(|f| f.obj.data.as_ref()?.get(MEMIFD_JSON))
            .collect();
        assert_eq!(
            texts.len(),
            1,
            "exactly one ConfigMap must carry {MEMIFD_JSON}"
        );
        serde_json::from_str(texts[0]).expect("memifd.json parses (checked by its own test)")
    }

    /// All (kind, namespace, name) triples, to find duplicates.
    fn identities(&self) -> Vec<(String, String, String)> {
        fn ids<'a, T: 'a>(
            kind: &str,
            list: &'a [Found<T>],
            meta: impl Fn(&'a T) -> &'a ObjectMeta,
        ) -> Vec<(String, String, String)> {
            list.iter()
                .map(|f| {
                    let m = meta(&f.obj);
                    (kind.to_string(), ns(m).to_string(), name(m).to_string())
                })
                .collect()
        }
        let mut all = Vec::new();
        all.extend(ids("Namespace", &self.namespaces, |o| &o.metadata));
        all.extend(ids("ServiceAccount", &self.service_accounts, |o| {
            &o.metadata
        }));
        all.extend(ids("ConfigMap", &self.config_maps, |o| &o.metadata));
        all.extend(ids("DaemonSet", &self.daemon_sets, |o| &o.metadata));
        all.extend(ids("ClusterRole", &self.cluster_roles, |o| &o.metadata));
        all.extend(ids(
            "ClusterRoleBinding",
            &self.cluster_role_bindings,
            |o| &o.metadata,
        ));
        all.extend(ids("Pod", &self.pods, |o| &o.metadata));
        all.extend(ids(NAD_KIND, &self.nads, |o| &o.metadata));
        all
    }
}

#[test]
fn every_document_is_a_known_kind_without_unknown_fields() {
    let m = match try_load() {
        Ok(m) => m,
        Err(errs) => return report("manifests do not load", errs),
    };
    let mut errs = Vec::new();
    let counts = [
        ("Namespace", m.namespaces.len()),
        ("ServiceAccount", m.service_accounts.len()),
        ("ConfigMap", m.config_maps.len()),
        ("DaemonSet", m.daemon_sets.len()),
        ("ClusterRole", m.cluster_roles.len()),
        ("ClusterRoleBinding", m.cluster_role_bindings.len()),
        ("Pod", m.pods.len()),
        (NAD_KIND, m.nads.len()),
    ];
    for (kind, n) in counts {
        if n == 0 {
            errs.push(format!("no {kind} in manifests/"));
        }
    }
    let mut seen = BTreeSet::new();
    for id in m.identities() {
        if id.2.is_empty() {
            errs.push(format!("a {} has no metadata.name", id.0));
        } else if !seen.insert(id.clone()) {
            errs.push(format!("{} {}/{} is defined twice", id.0, id.1, id.2));
        }
    }
    report("manifests", errs);
}

#[test]
fn namespaces_are_defined_and_cluster_objects_have_none() {
    let m = load();
    let defined: BTreeSet<&str> = m.namespaces.iter().map(|f| name(&f.obj.metadata)).collect();
    let mut errs = Vec::new();
    let cluster_scoped = m
        .namespaces
        .iter()
        .map(|f| (&f.at, &f.obj.metadata))
        .chain(m.cluster_roles.iter().map(|f| (&f.at, &f.obj.metadata)))
        .chain(
            m.cluster_role_bindings
                .iter()
                .map(|f| (&f.at, &f.obj.metadata)),
        );
    for (at, meta) in cluster_scoped {
        if meta.namespace.is_some() {
            errs.push(format!(
                "{at}: cluster-scoped, must not set metadata.namespace"
            ));
        }
    }
    // The agent's objects go to their own namespace, which must be here.
    let agent = m
        .service_accounts
        .iter()
        .map(|f| (&f.at, &f.obj.metadata))
        .chain(m.config_maps.iter().map(|f| (&f.at, &f.obj.metadata)))
        .chain(m.daemon_sets.iter().map(|f| (&f.at, &f.obj.metadata)));
    for (at, meta) in agent {
        match meta.namespace.as_deref() {
            None => errs.push(format!("{at}: metadata.namespace must be set")),
            Some(n) if !defined.contains(n) => errs.push(format!(
                "{at}: namespace {n:?} is not defined in manifests/"
            )),
            Some(_) => {}
        }
    }
    // Networks and example pods follow the user's namespace; if one is
    // written, it must exist.
    let user = m
        .pods
        .iter()
        .map(|f| (&f.at, &f.obj.metadata))
        .chain(m.nads.iter().map(|f| (&f.at, &f.obj.metadata)));
    for (at, meta) in user {
        if let Some(n) = meta.namespace.as_deref() {
            if n != "default" && !defined.contains(n) {
                errs.push(format!(
                    "{at}: namespace {n:?} is not defined in manifests/"
                ));
            }
        }
    }
    report("namespaces", errs);
}

/// Whether a rule grants `verb` on core `resource`.
fn grants(role: &ClusterRole, resource: &str, verb: &str) -> bool {
    grants_in(role, "", resource, verb)
}

#[test]
fn memifd_service_account_may_get_pods() {
    let m = load();
    let mut errs = Vec::new();
    for ds in &m.daemon_sets {
        let namespace = ns(&ds.obj.metadata);
        let spec = pod_spec_of(ds);
        let Some(sa) = spec.service_account_name.as_deref() else {
            errs.push(format!("{}: no serviceAccountName", ds.at));
            continue;
        };
        if m.service_account(namespace, sa).is_none() {
            errs.push(format!(
                "{}: ServiceAccount {namespace}/{sa} is not defined",
                ds.at
            ));
        }
        if spec.automount_service_account_token == Some(false) {
            errs.push(format!(
                "{}: the service account token must be mounted (memifd reads pods)",
                ds.at
            ));
        }
        let bound = m.cluster_role_bindings.iter().any(|b| {
            let subject = b.obj.subjects.iter().flatten().any(|s| {
                s.kind == "ServiceAccount"
                    && s.name == sa
                    && s.namespace.as_deref() == Some(namespace)
            });
            let r = &b.obj.role_ref;
            let role = (r.api_group == "rbac.authorization.k8s.io" && r.kind == "ClusterRole")
                .then(|| {
                    m.cluster_roles
                        .iter()
                        .find(|c| name(&c.obj.metadata) == r.name)
                })
                .flatten();
            if subject && role.is_none() {
                errs.push(format!(
                    "{}: roleRef names ClusterRole {:?}, which is not defined",
                    b.at, r.name
                ));
            }
            subject && role.is_some_and(|c| grants(&c.obj, "pods", "get"))
        });
        if !bound {
            errs.push(format!(
                "{}: no ClusterRoleBinding grants ServiceAccount {namespace}/{sa} `get` on pods",
                ds.at
            ));
        }
    }
    report("RBAC", errs);
}

fn pod_spec_of(ds: &Found<DaemonSet>) -> &PodSpec {
    ds.obj
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .unwrap_or_else(|| panic!("{}: no pod template spec", ds.at))
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

#[test]
fn config_map_references_resolve() {
    let m = load();
    let mut errs = Vec::new();
    let specs = m
        .daemon_sets
        .iter()
        .map(|f| (&f.at, ns(&f.obj.metadata), pod_spec_of(f)))
        .chain(
            m.pods
                .iter()
                .filter_map(|f| Some((&f.at, ns(&f.obj.metadata), f.obj.spec.as_ref()?))),
        );
    for (at, namespace, spec) in specs {
        let has_key = |cm: &str, key: &str| {
            m.config_map(namespace, cm)
                .is_some_and(|c| c.data.as_ref().is_some_and(|d| d.contains_key(key)))
        };
        for c in all_containers(spec) {
            for env in c.env.iter().flatten() {
                let Some(r) = env
                    .value_from
                    .as_ref()
                    .and_then(|v| v.config_map_key_ref.as_ref())
                else {
                    continue;
                };
                if r.optional != Some(true) && !has_key(&r.name, &r.key) {
                    errs.push(format!(
                        "{at}: container {} env {}: ConfigMap {namespace}/{} has no key {:?}",
                        c.name, env.name, r.name, r.key
                    ));
                }
            }
            for from in c.env_from.iter().flatten() {
                if let Some(r) = &from.config_map_ref {
                    if r.optional != Some(true) && m.config_map(namespace, &r.name).is_none() {
                        errs.push(format!(
                            "{at}: container {} envFrom: no ConfigMap {namespace}/{}",
                            c.name, r.name
                        ));
                    }
                }
            }
        }
        for v in spec.volumes.iter().flatten() {
            let Some(cm) = &v.config_map else { continue };
            if cm.optional == Some(true) {
                continue;
            }
            if m.config_map(namespace, &cm.name).is_none() {
                errs.push(format!(
                    "{at}: volume {}: no ConfigMap {namespace}/{}",
                    v.name, cm.name
                ));
                continue;
            }
            for item in cm.items.iter().flatten() {
                if !has_key(&cm.name, &item.key) {
                    errs.push(format!(
                        "{at}: volume {}: ConfigMap {namespace}/{} has no key {:?}",
                        v.name, cm.name, item.key
                    ));
                }
            }
        }
    }
    report("ConfigMap references", errs);
}

#[test]
fn config_map_holds_a_valid_memifd_config_and_gates() {
    let m = load();
    let mut errs = Vec::new();
    let mut configs = 0;
    for f in &m.config_maps {
        let Some(data) = &f.obj.data else { continue };
        if let Some(text) = data.get(MEMIFD_JSON) {
            configs += 1;
            match serde_json::from_str::<Config>(text) {
                Ok(cfg) => {
                    if let Err(e) = cfg.validate() {
                        errs.push(format!("{}: {MEMIFD_JSON}: {e}", f.at));
                    }
                    if !cfg.feature_gates.memif_enabled() {
                        errs.push(format!("{}: {MEMIFD_JSON}: memifEnabled is off", f.at));
                    }
                }
                Err(e) => errs.push(format!(
                    "{}: {MEMIFD_JSON} is not a valid memifd config: {e}",
                    f.at
                )),
            }
        }
        if let Some(text) = data.get(gates::ENV) {
            match FeatureGates::parse(text) {
                Ok(g) if !g.memif_enabled() => {
                    errs.push(format!("{}: {}: memifEnabled is off", f.at, gates::ENV))
                }
                Ok(_) => {}
                Err(e) => errs.push(format!("{}: {}: {e}", f.at, gates::ENV)),
            }
        }
    }
    if configs != 1 {
        errs.push(format!(
            "exactly one ConfigMap must carry {MEMIFD_JSON} (found {configs})"
        ));
    }
    report("memifd configuration", errs);
}

/// The value after `flag` in a command line (`--flag value` or
/// `--flag=value`).
fn flag_value<'a>(words: &'a [String], flag: &str) -> Option<&'a str> {
    let eq = format!("{flag}=");
    words.iter().enumerate().find_map(|(i, w)| {
        if w == flag {
            words.get(i + 1).map(String::as_str)
        } else {
            w.strip_prefix(&eq)
        }
    })
}

/// A container's command and args, split into words (shell scripts too,
/// roughly: on whitespace).
fn words(c: &Container) -> Vec<String> {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .flat_map(|s| s.split_whitespace())
        .map(|w| w.trim_matches(|ch| ch == '"' || ch == '\'').to_string())
        .filter(|w| w != "\\")
        .collect()
}

/// The hostPath volume mounted in `c` over `path`, if the host path and the
/// container path are the same directory (what the host sees there, the
/// container sees at the same name, and the other way round).
fn same_path_host_mount<'a>(
    c: &'a Container,
    volumes: &'a [Volume],
    path: &Path,
) -> Option<(&'a k8s_openapi::api::core::v1::VolumeMount, &'a Volume)> {
    c.volume_mounts.iter().flatten().find_map(|vm| {
        let v = volumes.iter().find(|v| v.name == vm.name)?;
        let hp = v.host_path.as_ref()?;
        let under = path.starts_with(&vm.mount_path);
        (under && Path::new(&hp.path) == Path::new(&vm.mount_path) && vm.sub_path.is_none())
            .then_some((vm, v))
    })
}

#[test]
fn daemonset_runs_memifd_with_its_config_and_the_host_paths_it_shares() {
    let m = load();
    let mut errs = Vec::new();
    let networks_sockets: Vec<(String, PathBuf)> = m
        .nads
        .iter()
        .flat_map(|f| {
            memif_plugins(&f.obj.spec.config)
                .unwrap_or_default()
                .into_iter()
                .map(|c| {
                    let s = c.memifd_socket.unwrap_or_else(|| DEFAULT_SOCKET.into());
                    (f.at.clone(), s)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for ds in &m.daemon_sets {
        let at = &ds.at;
        let namespace = ns(&ds.obj.metadata);
        let spec = pod_spec_of(ds);
        let volumes = spec.volumes.as_deref().unwrap_or_default();
        if spec.host_network != Some(true) {
            errs.push(format!("{at}: hostNetwork must be true (memifd's uplinks live in the host's network namespace)"));
        }
        // memifd by command, or by the image's entrypoint.
        let memifd: Vec<&Container> = spec
            .containers
            .iter()
            .filter(|c| match &c.command {
                Some(cmd) => cmd.first().map(String::as_str) == Some("memifd"),
                None => c.image.as_deref().is_some_and(is_our_image),
            })
            .collect();
        if memifd.len() != 1 {
            errs.push(format!("{at}: exactly one container must run memifd"));
            continue;
        }
        let c = memifd[0];
        let w = words(c);

        // --config names the ConfigMap's memifd.json through a mount.
        let Some(config_path) = flag_value(&w, "--config") else {
            errs.push(format!("{at}: memifd is started without --config"));
            continue;
        };
        let config_path = Path::new(config_path);
        let key = c.volume_mounts.iter().flatten().find_map(|vm| {
            let rel = config_path.strip_prefix(&vm.mount_path).ok()?;
            let cm = volumes
                .iter()
                .find(|v| v.name == vm.name)?
                .config_map
                .as_ref()?;
            let rel = rel.to_str()?;
            let key = match &cm.items {
                Some(items) => items.iter().find(|i| i.path == rel)?.key.clone(),
                None => rel.to_string(),
            };
            Some((cm.name.clone(), key))
        });
        let text = key.as_ref().and_then(|(cm, key)| {
            let data = m.config_map(namespace, cm)?.data.as_ref()?;
            (key == MEMIFD_JSON).then(|| data.get(key)).flatten()
        });
        // Whether it is valid is another test's business.
        let cfg: Config = match text.map(|t| serde_json::from_str(t)) {
            Some(Ok(cfg)) => cfg,
            Some(Err(_)) => continue,
            None => {
                let other = key;
                errs.push(format!(
                    "{at}: --config {} is not the {MEMIFD_JSON} of a ConfigMap mounted in the container (found {other:?})",
                    config_path.display()
                ));
                continue;
            }
        };

        // The API socket: where memifd listens, where the plugin (on the
        // host) and the probes connect.
        let socket = flag_value(&w, "--api-socket")
            .map(PathBuf::from)
            .unwrap_or_else(|| cfg.api_socket.clone());
        let state_dir = flag_value(&w, "--state-dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| cfg.state_dir.clone());
        let socket_dir = socket.parent().unwrap_or(Path::new("/"));
        for (what, dir) in [
            ("the API socket's directory", socket_dir),
            ("stateDir", &state_dir),
        ] {
            if same_path_host_mount(c, volumes, dir).is_none() {
                errs.push(format!(
                    "{at}: {what} {} is not on a hostPath volume mounted at the same path",
                    dir.display()
                ));
            }
        }
        for (nad, s) in &networks_sockets {
            if *s != socket {
                errs.push(format!(
                    "{nad}: the plugin connects to {} but memifd listens on {}",
                    s.display(),
                    socket.display()
                ));
            }
        }
        for (kind, probe) in [
            ("readinessProbe", &c.readiness_probe),
            ("livenessProbe", &c.liveness_probe),
        ] {
            let Some(cmd) = probe
                .as_ref()
                .and_then(|p| p.exec.as_ref()?.command.as_ref())
            else {
                errs.push(format!("{at}: memifd has no exec {kind}"));
                continue;
            };
            let env_socket = c
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "MEMIFD_SOCKET")
                .and_then(|e| e.value.clone());
            let asks = flag_value(cmd, "--api")
                .map(str::to_string)
                .or(env_socket)
                .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
            if cmd.first().map(String::as_str) != Some("memifctl") || Path::new(&asks) != socket {
                errs.push(format!(
                    "{at}: {kind} {cmd:?} must be memifctl asking memifd at {}",
                    socket.display()
                ));
            }
        }

        // Pod network namespaces, as the runtime names them in CNI_NETNS.
        for dir in ["/run/netns", "/var/run/netns"] {
            match same_path_host_mount(c, volumes, Path::new(dir)) {
                None => errs.push(format!(
                    "{at}: {dir} is not mounted from the host at the same path"
                )),
                Some((vm, _)) => {
                    let p = vm.mount_propagation.as_deref();
                    if !matches!(p, Some("HostToContainer" | "Bidirectional")) {
                        errs.push(format!(
                            "{at}: {dir} needs mountPropagation HostToContainer (namespaces are mounted after memifd starts), has {p:?}"
                        ));
                    }
                }
            }
        }
        let privileged = c.security_context.as_ref().and_then(|s| s.privileged);
        if privileged != Some(true) {
            errs.push(format!(
                "{at}: memifd must be privileged (setns, TUN devices)"
            ));
        }

        // The plugin installer writes into the host's CNI directory.
        let installs = spec.init_containers.iter().flatten().any(|ic| {
            words(ic).iter().any(|w| w.ends_with("/memif-cni"))
                && ic.volume_mounts.iter().flatten().any(|vm| {
                    volumes.iter().any(|v| {
                        v.name == vm.name
                            && v.host_path
                                .as_ref()
                                .is_some_and(|h| h.path == "/opt/cni/bin")
                    })
                })
        });
        if !installs {
            errs.push(format!(
                "{at}: no init container installs memif-cni into the host's /opt/cni/bin"
            ));
        }
    }
    report("DaemonSet", errs);
}

/// The memif-cni plugin configs in a NAD's `spec.config` (a single config
/// or a conflist, whose `cniVersion` and `name` each plugin inherits, as
/// the runtime hands them over).
fn memif_plugins(config: &str) -> Result<Vec<NetConf>, String> {
    let v: Value =
        serde_json::from_str(config).map_err(|e| format!("spec.config is not JSON: {e}"))?;
    let confs: Vec<Value> = match v.get("plugins") {
        None => vec![v.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|p| {
                let mut p = p.clone();
                if let Some(o) = p.as_object_mut() {
                    for k in ["cniVersion", "name"] {
                        if let Some(x) = v.get(k) {
                            o.insert(k.to_string(), x.clone());
                        }
                    }
                }
                p
            })
            .collect(),
        Some(other) => return Err(format!("`plugins` must be a list, got {other}")),
    };
    let mut out = Vec::new();
    for c in confs {
        if c.get("type").and_then(Value::as_str) != Some("memif-cni") {
            continue;
        }
        let bytes = serde_json::to_vec(&c).expect("a JSON value serializes");
        out.push(NetConf::parse(&bytes).map_err(|e| format!("the plugin refuses it: {e}"))?);
    }
    if out.is_empty() {
        return Err("no plugin of type memif-cni".into());
    }
    Ok(out)
}

#[test]
fn network_configs_are_accepted_by_the_plugin() {
    let m = load();
    let mut errs = Vec::new();
    for f in &m.nads {
        let at = &f.at;
        let nad_name = name(&f.obj.metadata);
        let confs = match memif_plugins(&f.obj.spec.config) {
            Ok(c) => c,
            Err(e) => {
                errs.push(format!("{at}: {e}"));
                continue;
            }
        };
        for c in confs {
            if let Err(e) = version::check(&c.cni_version) {
                errs.push(format!("{at}: {e}"));
            }
            if c.name != nad_name {
                errs.push(format!(
                    "{at}: the config's name {:?} differs from the NAD's name",
                    c.name
                ));
            }
            if let Err(e) = c.default_spec() {
                errs.push(format!("{at}: interfaceSpec: {e}"));
            }
            for k in c.capabilities.keys() {
                if !MULTUS_CAPABILITIES.contains(&k.as_str()) {
                    errs.push(format!("{at}: capability {k:?} is not one Multus supplies"));
                }
            }
            match &c.ipam {
                Some(ipam) if ipam.get("type").and_then(Value::as_str).is_none() => {
                    errs.push(format!("{at}: ipam has no type"))
                }
                None if !c.capabilities.get("ips").copied().unwrap_or(false) => errs.push(format!(
                    "{at}: neither ipam nor the ips capability: the pod gets no address"
                )),
                _ => {}
            }
        }
    }
    report("NetworkAttachmentDefinitions", errs);
}

/// One network a pod selects: namespace (if written), name, interface.
#[derive(Debug)]
struct Selection {
    namespace: Option<String>,
    name: String,
    interface: Option<String>,
}

/// Parses Multus' networks annotation: `[ns/]name[@ifname],...` or a
/// JSON list of `{name, namespace, interface, ...}`.
fn selections(text: &str) -> Result<Vec<Selection>, String> {
    let text = text.trim();
    if text.starts_with('[') {
        #[derive(Deserialize)]
        struct Element {
            name: String,
            namespace: Option<String>,
            interface: Option<String>,
        }
        let list: Vec<Element> = serde_json::from_str(text)
            .map_err(|e| format!("not a JSON list of selections: {e}"))?;
        return Ok(list
            .into_iter()
            .map(|e| Selection {
                namespace: e.namespace,
                name: e.name,
                interface: e.interface,
            })
            .collect());
    }
    text.split(',')
        .map(str::trim)
        .map(|item| {
            let (namespace, rest) = match item.split_once('/') {
                Some((n, r)) => (Some(n.to_string()), r),
                None => (None, item),
            };
            let (name, interface) = match rest.split_once('@') {
                Some((n, i)) => (n, Some(i.to_string())),
                None => (rest, None),
            };
            if name.is_empty() {
                return Err(format!("empty network name in {item:?}"));
            }
            Ok(Selection {
                namespace,
                name: name.to_string(),
                interface,
            })
        })
        .collect()
}

/// The memif sockets a container's command connects to, with the mode it
/// speaks: memifctl's `--socket @name [--mode m]` and DPDK's
/// `--vdev=net_memif...,socket=name,socket-abstract=yes` (ethernet only).
fn memif_clients(c: &Container) -> Vec<(String, &'static str)> {
    let w = words(c);
    let mut out = Vec::new();
    if let Some(s) = flag_value(&w, "--socket") {
        if let Some(n) = s.strip_prefix('@') {
            let mode = match flag_value(&w, "--mode") {
                Some("ip") => "ip",
                Some("ethernet") | None => "ethernet",
                Some(_) => "unknown",
            };
            out.push((n.to_string(), mode));
        }
    }
    for word in &w {
        let Some(args) = word
            .strip_prefix("--vdev=")
            .filter(|a| a.starts_with("net_memif"))
        else {
            continue;
        };
        let kv: BTreeMap<&str, &str> = args.split(',').filter_map(|p| p.split_once('=')).collect();
        if let (Some(s), Some("yes")) = (
            kv.get("socket").copied(),
            kv.get("socket-abstract").copied(),
        ) {
            let mode = match kv.get("mode").copied() {
                None | Some("ethernet") => "ethernet",
                Some(_) => "unknown",
            };
            out.push((s.to_string(), mode));
        }
    }
    out
}

#[test]
fn pods_select_defined_networks_with_valid_specs_and_matching_clients() {
    let m = load();
    let max = m.memifd_config().max_interface_spec;
    let mut errs = Vec::new();
    for f in &m.pods {
        let at = &f.at;
        let pod_ns = ns(&f.obj.metadata);
        let annotations = f.obj.metadata.annotations.clone().unwrap_or_default();
        let Some(text) = annotations.get(NETWORKS_ANNOTATION) else {
            errs.push(format!("{at}: no {NETWORKS_ANNOTATION} annotation"));
            continue;
        };
        let sels = match selections(text) {
            Ok(s) => s,
            Err(e) => {
                errs.push(format!("{at}: {NETWORKS_ANNOTATION}: {e}"));
                continue;
            }
        };
        let spec_text = annotations.get(interfaces::INTERFACES_SPEC_ANNOTATION);
        // Every interface this pod gets, with its resolved spec.
        let mut memifs: BTreeMap<String, Resolved> = BTreeMap::new();
        for s in &sels {
            let namespace = s.namespace.as_deref().unwrap_or(pod_ns);
            let Some(nad) = m.nad(namespace, &s.name) else {
                errs.push(format!(
                    "{at}: network {namespace}/{} is not defined in manifests/",
                    s.name
                ));
                continue;
            };
            let Ok(confs) = memif_plugins(&nad.spec.config) else {
                continue; // reported by network_configs_are_accepted_by_the_plugin
            };
            let conf = &confs[0];
            let Some(ifname) = &s.interface else {
                errs.push(format!(
                    "{at}: network {} has no @interface: Multus would name it net<N>, which memif-cni refuses",
                    s.name
                ));
                continue;
            };
            if !ifname.starts_with(conf.prefix()) || ifname.len() > 15 {
                errs.push(format!(
                    "{at}: interface {ifname:?} must start with {:?} and have at most 15 characters",
                    conf.prefix()
                ));
            }
            let from_pod = match spec_text.map(|t| interfaces::from_annotation(t, ifname)) {
                None => None,
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    errs.push(format!("{at}: {e}"));
                    None
                }
            };
            let from_net = conf.default_spec().ok().flatten();
            let layers: Vec<_> = from_pod.iter().chain(from_net.iter()).collect();
            match interfaces::resolve(&layers, &max) {
                Ok(r) => {
                    if memifs.insert(ifname.clone(), r).is_some() {
                        errs.push(format!("{at}: interface {ifname:?} selected twice"));
                    }
                }
                Err(e) => errs.push(format!("{at}: interface {ifname:?}: {e}")),
            }
        }
        if let Some(t) = spec_text {
            let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, Value>>(t)
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            for k in keys {
                if !memifs.contains_key(&k) {
                    errs.push(format!(
                        "{at}: {} names {k:?}, which the pod does not select",
                        interfaces::INTERFACES_SPEC_ANNOTATION
                    ));
                }
            }
        }
        for c in f.obj.spec.iter().flat_map(all_containers) {
            for (socket, mode) in memif_clients(c) {
                match memifs.get(&socket) {
                    None => errs.push(format!(
                        "{at}: container {} connects to @{socket}, which is none of the pod's memifs {:?}",
                        c.name,
                        memifs.keys().collect::<Vec<_>>()
                    )),
                    Some(r) => {
                        let want = if r.isl3 { "ip" } else { "ethernet" };
                        if mode != want {
                            errs.push(format!(
                                "{at}: container {} speaks {mode} mode to @{socket}, whose memif is in {want} mode",
                                c.name
                            ));
                        }
                    }
                }
            }
        }
    }
    report("example pods", errs);
}

/// Whether an image reference names this project's image (any registry).
fn is_our_image(image: &str) -> bool {
    let repo = image.split(['@', ':']).next().unwrap_or("");
    repo == "memif-cni" || repo.ends_with("/memif-cni")
}

#[test]
fn images_of_this_project_agree() {
    let m = load();
    let mut refs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let specs = m.daemon_sets.iter().map(|f| (&f.at, pod_spec_of(f))).chain(
        m.pods
            .iter()
            .filter_map(|f| Some((&f.at, f.obj.spec.as_ref()?))),
    );
    for (at, spec) in specs {
        for c in all_containers(spec) {
            let image = c.image.clone().unwrap_or_default();
            if is_our_image(&image) {
                refs.entry(image)
                    .or_default()
                    .push(format!("{at} {}", c.name));
            }
        }
    }
    assert!(!refs.is_empty(), "no container uses the memif-cni image");
    assert_eq!(
        refs.len(),
        1,
        "containers use different memif-cni images: {refs:#?}"
    );
    let image = refs.keys().next().unwrap();
    let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
    assert_eq!(
        tag,
        env!("CARGO_PKG_VERSION"),
        "the memif-cni image tag should be the crate's version"
    );
}

/// Whether a rule grants `verb` on `resource` of API group `group`.
fn grants_in(role: &ClusterRole, group: &str, resource: &str, verb: &str) -> bool {
    let any = |list: &[String], want: &str| list.iter().any(|s| s == want || s == "*");
    role.rules.iter().flatten().any(|r| {
        any(r.api_groups.as_deref().unwrap_or_default(), group)
            && any(r.resources.as_deref().unwrap_or_default(), resource)
            && any(&r.verbs, verb)
    })
}

/// Every way `v` breaks the OpenAPI `schema` (the subset the CRD uses:
/// type, required, properties, items, enum, minimum, maximum, minLength,
/// maxLength, pattern by shape), each with its path. Unknown keys count
/// too: the API server would prune them.
fn violations(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        _ => {
            out.push(format!("{path}: schema has no type"));
            return;
        }
    };
    if !ok {
        out.push(format!("{path}: {v} is not of type {ty}"));
        return;
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(v) {
            out.push(format!("{path}: {v} is not one of {e:?}"));
        }
    }
    if let Some(n) = v.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|m| n < m)
            || schema["maximum"].as_f64().is_some_and(|m| n > m)
        {
            out.push(format!("{path}: {n} is out of the schema's range"));
        }
    }
    if let Some(t) = v.as_str() {
        if schema["minLength"]
            .as_u64()
            .is_some_and(|m| (t.len() as u64) < m)
            || schema["maxLength"]
                .as_u64()
                .is_some_and(|m| (t.len() as u64) > m)
        {
            out.push(format!(
                "{path}: {t:?} has a length out of the schema's range"
            ));
        }
    }
    if let Some(items) = v.as_array() {
        for (i, item) in items.iter().enumerate() {
            violations(&schema["items"], item, &format!("{path}[{i}]"), out);
        }
    }
    if let Some(obj) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or("");
            if !obj.contains_key(r) {
                out.push(format!("{}: required, missing", join(path, r)));
            }
        }
        for (k, val) in obj {
            match schema["properties"].get(k) {
                Some(s) => violations(s, val, &join(path, k), out),
                None => out.push(format!("{}: not in the schema (pruned)", join(path, k))),
            }
        }
    }
}

/// What memifd writes, in every shape it can take: both address families,
/// every mode, MACs in ethernet networks, the VNI bounds.
fn memif_node_samples() -> Vec<Value> {
    use memif_cni::agent::nodes::{object_json, EndpointSpec, NetworkSpec, NodeSpec, UnderlaySpec};
    use memif_cni::memif::wire::Mode;
    let mac = Some(memif_cni::mac::Mac([0x02, 0xfe, 0, 0x12, 0x34, 0x56]));
    let net = |name: &str, vni, mode, endpoints| NetworkSpec {
        name: name.into(),
        vni,
        mode,
        endpoints,
    };
    let spec = |address: &str, networks| NodeSpec {
        underlay: UnderlaySpec {
            address: address.parse().unwrap(),
            port: 4789,
        },
        networks,
    };
    vec![
        object_json("node-a", &spec("192.0.2.10", vec![])),
        object_json(
            "node-b",
            &spec(
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                vec![
                    net(
                        "network-blue",
                        1,
                        Mode::Ethernet,
                        vec![
                            EndpointSpec {
                                ip: "10.1.0.2".parse().unwrap(),
                                mac,
                            },
                            EndpointSpec {
                                ip: "fd00::2".parse().unwrap(),
                                mac,
                            },
                        ],
                    ),
                    net(
                        "network-red",
                        16_777_215,
                        Mode::Ip,
                        vec![EndpointSpec {
                            ip: "10.2.0.2".parse().unwrap(),
                            mac: None,
                        }],
                    ),
                    net("network-punt", 77, Mode::PuntInject, vec![]),
                ],
            ),
        ),
    ]
}

#[test]
fn the_memif_node_crd_accepts_what_memifd_writes() {
    use memif_cni::agent::nodes::{API_GROUP, API_VERSION, KIND, PLURAL};
    let m = load();
    let want = format!("{PLURAL}.{API_GROUP}");
    let crd = m
        .crds
        .iter()
        .find(|c| name(&c.obj.metadata) == want)
        .unwrap_or_else(|| panic!("no CustomResourceDefinition {want} in manifests/"));
    let s = &crd.obj.spec;
    assert_eq!(s.group, API_GROUP, "{}", crd.at);
    assert_eq!(s.names.kind, KIND, "{}", crd.at);
    assert_eq!(s.names.plural, PLURAL, "{}", crd.at);
    assert_eq!(
        s.scope, "Cluster",
        "{}: one object per node, cluster-scoped",
        crd.at
    );
    let v = s
        .versions
        .iter()
        .find(|v| v.name == API_VERSION)
        .unwrap_or_else(|| panic!("{}: no version {API_VERSION}", crd.at));
    assert!(
        v.served && v.storage,
        "{}: {API_VERSION} served and stored",
        crd.at
    );
    let schema = serde_json::to_value(
        v.schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap_or_else(|| panic!("{}: no openAPIV3Schema", crd.at)),
    )
    .unwrap();
    let mut errs = Vec::new();
    for obj in memif_node_samples() {
        let at = format!("{} {}", crd.at, obj["metadata"]["name"]);
        let mut found = Vec::new();
        violations(&schema, &json_only(&obj, "spec"), "", &mut found);
        errs.extend(found.into_iter().map(|e| format!("{at}: {e}")));
    }
    report("MemifNode schema against what memifd writes", errs);
    // The schema is not a pass-all: it refuses what memifd never writes.
    for (bad, what) in [
        (
            serde_json::json!({"spec": {"underlay": {"address": "192.0.2.1"}}}),
            "no port",
        ),
        (
            serde_json::json!({"spec": {"underlay": {"address": "192.0.2.1", "port": 4789},
                "networks": [{"name": "n", "vni": 16_777_216, "mode": "ip"}]}}),
            "a VNI above 24 bits",
        ),
        (
            serde_json::json!({"spec": {"underlay": {"address": "192.0.2.1", "port": 4789},
                "networks": [{"name": "n", "vni": 5, "mode": "tap"}]}}),
            "an unknown mode",
        ),
    ] {
        let mut found = Vec::new();
        violations(&schema, &bad, "", &mut found);
        assert!(!found.is_empty(), "the schema accepts {what}: {bad}");
    }
}

/// `obj` with only `key` kept at the top (the schema covers the object's
/// own fields; apiVersion, kind and metadata are the API server's).
fn json_only(obj: &Value, key: &str) -> Value {
    serde_json::json!({ key: obj[key].clone() })
}

#[test]
fn memifd_may_publish_and_watch_memif_nodes_and_knows_its_node() {
    let m = load();
    let mut errs = Vec::new();
    for ds in &m.daemon_sets {
        let namespace = ns(&ds.obj.metadata);
        let spec = pod_spec_of(ds);
        let sa = spec.service_account_name.as_deref().unwrap_or("default");
        let roles: Vec<&ClusterRole> = m
            .cluster_role_bindings
            .iter()
            .filter(|b| {
                b.obj.subjects.iter().flatten().any(|s| {
                    s.kind == "ServiceAccount"
                        && s.name == sa
                        && s.namespace.as_deref() == Some(namespace)
                })
            })
            .filter_map(|b| {
                m.cluster_roles
                    .iter()
                    .find(|c| name(&c.obj.metadata) == b.obj.role_ref.name)
            })
            .map(|c| &c.obj)
            .collect();
        let may = |group: &str, res: &str, verb: &str| {
            roles.iter().any(|r| grants_in(r, group, res, verb))
        };
        for verb in ["get", "list", "watch", "create", "patch"] {
            if !may(memif_cni::agent::nodes::API_GROUP, "memifnodes", verb) {
                errs.push(format!(
                    "{}: ServiceAccount {namespace}/{sa} may not {verb} memifnodes",
                    ds.at
                ));
            }
        }
        if !may("", "nodes", "get") {
            errs.push(format!(
                "{}: ServiceAccount {namespace}/{sa} may not get nodes (the owner)",
                ds.at
            ));
        }
        let memifd = all_containers(spec).find(|c| c.name == "memifd");
        let node_name = memifd.and_then(|c| {
            c.env
                .iter()
                .flatten()
                .find(|e| e.name == "NODE_NAME")?
                .value_from
                .as_ref()?
                .field_ref
                .as_ref()
        });
        if node_name.map(|f| f.field_path.as_str()) != Some("spec.nodeName") {
            errs.push(format!(
                "{}: container memifd has no NODE_NAME from spec.nodeName",
                ds.at
            ));
        }
    }
    report("cross-node RBAC and node name", errs);
}

//! Pod annotations from the Kubernetes API.
//!
//! memifd reads a pod's `k8s.v1.cni.cncf.io/*` and `cni.projectcalico.org/*`
//! annotations (the Multus network selection and CalicoVPP's
//! `vppInterfacesSpec`) with one `GET /api/v1/namespaces/{ns}/pods/{name}`.
//! Kubernetes access is optional: [`PodLookup::discover`] returns `None` when
//! no configuration exists, and memifd then takes specs from `args.cni` and
//! the network config only.
//!
//! Where the configuration comes from, first found wins:
//! 1. an explicit kubeconfig path (memifd's `--kubeconfig`);
//! 2. `$KUBECONFIG`, a list of files merged as kubectl merges them (files that
//!    do not exist are skipped, as kubectl does);
//! 3. the in-cluster configuration: `KUBERNETES_SERVICE_HOST` and
//!    `KUBERNETES_SERVICE_PORT` plus the pod's service account token;
//! 4. `~/.kube/config`, only when `$KUBECONFIG` is not set (as kubectl: a set
//!    `$KUBECONFIG` replaces the default file).
//!
//! A source that exists but cannot be used (unreadable or invalid YAML, a
//! context without a cluster, a bad CA bundle, a bad service port) is an
//! error, not a reason to fall through to the next source: memifd must not
//! silently run without the cluster its operator configured.
//!
//! Kubernetes sets `KUBERNETES_SERVICE_HOST` in every pod, also in pods whose
//! service account token is not mounted; the in-cluster source therefore
//! counts as present only when the token file exists.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, KubeconfigError, NamedAuthInfo,
    NamedCluster, NamedContext,
};
use kube::{Api, Client, Config};

use crate::api::PodRef;
use crate::logging::error_chain;

/// Annotation key prefixes memifd reads; everything else stays private to
/// the pod.
pub const ANNOTATION_PREFIXES: [&str; 2] = ["cni.projectcalico.org/", "k8s.v1.cni.cncf.io/"];

/// Where a pod's service account credentials are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Default bound on one lookup (connect, request and answer together).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether an annotation key is one memifd reads (the key filter shared by
/// memifd and the tests).
pub fn is_memif_related(key: &str) -> bool {
    ANNOTATION_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Failures of configuration discovery and of lookups.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// A kubeconfig (or the in-cluster configuration) exists but cannot be
    /// used.
    #[error("Kubernetes configuration from {origin} is unusable")]
    Config {
        origin: String,
        #[source]
        source: KubeconfigError,
    },
    /// `KUBERNETES_SERVICE_PORT` is not a port number.
    #[error("in-cluster configuration: KUBERNETES_SERVICE_PORT {value:?} is not a port")]
    ServicePort {
        value: String,
        #[source]
        source: std::num::ParseIntError,
    },
    /// The configuration was read but no client could be built from it
    /// (TLS setup, credentials).
    #[error("cannot build a Kubernetes client from {origin}")]
    Client {
        origin: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The namespace or name cannot be a Kubernetes object name; refused
    /// before anything is sent.
    #[error("invalid pod reference {pod:?}: {reason}")]
    InvalidPod { pod: String, reason: &'static str },
    /// The API server answered 404.
    #[error("pod {pod} not found")]
    NotFound {
        pod: String,
        #[source]
        source: kube::Error,
    },
    /// The API server answered 403: memifd's service account lacks
    /// `get pods`.
    #[error("not allowed to get pod {pod}")]
    Forbidden {
        pod: String,
        #[source]
        source: kube::Error,
    },
    /// Any other error status (401, 5xx, ...).
    #[error("the Kubernetes API answered HTTP {code} for pod {pod}")]
    Api {
        pod: String,
        code: u16,
        #[source]
        source: kube::Error,
    },
    /// The request did not complete: connection, TLS, credentials, or an
    /// unreadable answer.
    #[error("request for pod {pod} to the Kubernetes API failed")]
    Transport {
        pod: String,
        #[source]
        source: kube::Error,
    },
    /// No answer within the lookup's timeout.
    #[error("the Kubernetes API did not answer for pod {pod} within {after:?}")]
    Timeout { pod: String, after: Duration },
}

/// The inputs of configuration discovery, separate from the process
/// environment so discovery is testable (tests run in parallel threads and
/// must not mutate the environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSources {
    /// An explicit kubeconfig path; when set, nothing else is consulted.
    pub kubeconfig: Option<PathBuf>,
    /// The value of `$KUBECONFIG` (a `:`-separated list of paths).
    pub kubeconfig_env: Option<OsString>,
    /// `$KUBERNETES_SERVICE_HOST`.
    pub service_host: Option<String>,
    /// `$KUBERNETES_SERVICE_PORT`.
    pub service_port: Option<String>,
    /// Directory holding `token`, `ca.crt` and `namespace`
    /// ([`SERVICE_ACCOUNT_DIR`] in a pod).
    pub service_account_dir: PathBuf,
    /// `$HOME`, for `~/.kube/config`.
    pub home: Option<PathBuf>,
}

impl ConfigSources {
    /// The sources of this process: `kubeconfig` and the environment.
    pub fn from_env(kubeconfig: Option<&Path>) -> ConfigSources {
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
        ConfigSources {
            kubeconfig: kubeconfig.map(Path::to_path_buf),
            kubeconfig_env: std::env::var_os("KUBECONFIG"),
            service_host: nonempty(std::env::var("KUBERNETES_SERVICE_HOST").ok()),
            service_port: nonempty(std::env::var("KUBERNETES_SERVICE_PORT").ok()),
            service_account_dir: PathBuf::from(SERVICE_ACCOUNT_DIR),
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// Reads pods from the Kubernetes API; cheap to clone.
#[derive(Clone)]
pub struct PodLookup {
    client: Client,
    timeout: Duration,
    origin: String,
}

impl std::fmt::Debug for PodLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodLookup")
            .field("origin", &self.origin)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PodLookup {
    /// Builds a client from an explicit kubeconfig path, else `$KUBECONFIG`,
    /// else the in-cluster configuration (`KUBERNETES_SERVICE_HOST` and the
    /// service account token), else `~/.kube/config` (see the module
    /// documentation for the exact rules). Returns `Ok(None)` when no
    /// configuration exists at all (memifd then runs without Kubernetes),
    /// `Err` when one exists but is broken.
    pub async fn discover(kubeconfig: Option<&Path>) -> Result<Option<PodLookup>, KubeError> {
        PodLookup::discover_from(&ConfigSources::from_env(kubeconfig)).await
    }

    /// [`PodLookup::discover`] with explicit inputs instead of the process
    /// environment.
    pub async fn discover_from(sources: &ConfigSources) -> Result<Option<PodLookup>, KubeError> {
        let Some((origin, config)) = load_config(sources).await? else {
            tracing::debug!("no Kubernetes configuration found; running without Kubernetes");
            return Ok(None);
        };
        PodLookup::from_config(origin, config).map(Some)
    }

    /// A lookup with a client made from `config` (found at `origin`).
    // KubeError is as large as the kube errors it carries, as in the rest
    // of this module; it is made once, at start.
    #[allow(clippy::result_large_err)]
    pub fn from_config(origin: String, mut config: Config) -> Result<PodLookup, KubeError> {
        // kube's defaults wait minutes for a response; memifd answers a CNI
        // ADD and must not, whatever the outer timeout does.
        config.connect_timeout = Some(DEFAULT_TIMEOUT);
        config.read_timeout = Some(DEFAULT_TIMEOUT);
        config.write_timeout = Some(DEFAULT_TIMEOUT);
        tracing::debug!(%origin, cluster = %config.cluster_url, "Kubernetes configuration loaded");
        let client = Client::try_from(config).map_err(|source| KubeError::Client {
            origin: origin.clone(),
            source: Box::new(source),
        })?;
        Ok(PodLookup {
            client,
            timeout: DEFAULT_TIMEOUT,
            origin,
        })
    }

    /// Wraps an existing client (with the default timeout).
    pub fn from_client(c: Client) -> PodLookup {
        PodLookup {
            client: c,
            timeout: DEFAULT_TIMEOUT,
            origin: "a provided client".to_string(),
        }
    }

    /// The same lookup with another bound on each request.
    pub fn with_timeout(mut self, timeout: Duration) -> PodLookup {
        self.timeout = timeout;
        self
    }

    /// The bound on each request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Where the configuration came from, for logs and `status`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `GET /api/v1/namespaces/{ns}/pods/{name}`; returns only the
    /// annotations whose key starts with `cni.projectcalico.org/` or
    /// `k8s.v1.cni.cncf.io/`. Bounded by the lookup's timeout.
    pub async fn annotations(&self, pod: &PodRef) -> Result<BTreeMap<String, String>, KubeError> {
        let id = format!("{}/{}", pod.namespace, pod.name);
        let result = self.get_annotations(pod, &id).await;
        match &result {
            Ok(a) => tracing::debug!(pod = %id, count = a.len(), "pod annotations read"),
            Err(e) => {
                tracing::warn!(pod = %id, error = %error_chain(e), "pod annotations lookup failed")
            }
        }
        result
    }

    async fn get_annotations(
        &self,
        pod: &PodRef,
        id: &str,
    ) -> Result<BTreeMap<String, String>, KubeError> {
        check_pod_ref(pod).map_err(|reason| KubeError::InvalidPod {
            pod: id.to_string(),
            reason,
        })?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let found = tokio::time::timeout(self.timeout, api.get(&pod.name))
            .await
            .map_err(|_| KubeError::Timeout {
                pod: id.to_string(),
                after: self.timeout,
            })?
            .map_err(|e| classify(id, e))?;
        Ok(found
            .metadata
            .annotations
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| is_memif_related(k))
            .collect())
    }
}

/// Maps a client error to ours by HTTP status.
fn classify(pod: &str, e: kube::Error) -> KubeError {
    let pod = pod.to_string();
    match &e {
        kube::Error::Api(r) if r.code == 404 => KubeError::NotFound { pod, source: e },
        kube::Error::Api(r) if r.code == 403 => KubeError::Forbidden { pod, source: e },
        kube::Error::Api(r) => KubeError::Api {
            pod,
            code: r.code,
            source: e,
        },
        _ => KubeError::Transport { pod, source: e },
    }
}

/// Refuses what cannot be a namespace or pod name, so that no request path
/// can be bent (`/`, `?`, `%`, `..`). Lenient otherwise: the API server has
/// the last word.
fn check_pod_ref(pod: &PodRef) -> Result<(), &'static str> {
    fn check(s: &str) -> Result<(), &'static str> {
        if s.is_empty() {
            return Err("empty name");
        }
        if s.len() > 253 {
            return Err("name longer than 253 characters");
        }
        if s == "." || s == ".." {
            return Err("name is a path component");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err("name has characters other than a-z, 0-9, '-' and '.'");
        }
        Ok(())
    }
    check(&pod.namespace)?;
    check(&pod.name)
}

/// Finds the first configuration source present and loads it; `None` when
/// there is none.
async fn load_config(sources: &ConfigSources) -> Result<Option<(String, Config)>, KubeError> {
    if let Some(path) = &sources.kubeconfig {
        let origin = format!("kubeconfig {}", path.display());
        return from_files(origin, std::slice::from_ref(path))
            .await
            .map(Some);
    }

    let env_paths: Option<Vec<PathBuf>> = sources.kubeconfig_env.as_ref().and_then(|v| {
        let paths: Vec<PathBuf> = std::env::split_paths(v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        (!paths.is_empty()).then_some(paths)
    });
    if let Some(paths) = &env_paths {
        let existing: Vec<PathBuf> = paths.iter().filter(|p| p.exists()).cloned().collect();
        if existing.is_empty() {
            tracing::debug!(?paths, "no file named by KUBECONFIG exists");
        } else {
            let list: Vec<String> = existing.iter().map(|p| p.display().to_string()).collect();
            let origin = format!("KUBECONFIG {}", list.join(":"));
            return from_files(origin, &existing).await.map(Some);
        }
    }

    if let Some(found) = in_cluster(sources).await? {
        return Ok(Some(found));
    }

    if env_paths.is_none() {
        if let Some(home) = &sources.home {
            let path = home.join(".kube").join("config");
            if path.exists() {
                let origin = format!("kubeconfig {}", path.display());
                return from_files(origin, &[path]).await.map(Some);
            }
        }
    }
    Ok(None)
}

/// Loads and merges kubeconfig files (the first file's current context wins).
async fn from_files(origin: String, paths: &[PathBuf]) -> Result<(String, Config), KubeError> {
    let kc = paths
        .iter()
        .try_fold(Kubeconfig::default(), |merged, p| {
            Kubeconfig::read_from(p).and_then(|c| merged.merge(c))
        })
        .map_err(|source| KubeError::Config {
            origin: origin.clone(),
            source,
        })?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|source| KubeError::Config {
            origin: origin.clone(),
            source,
        })?;
    Ok((origin, config))
}

/// The in-cluster configuration, expressed as a kubeconfig so that kube's
/// loader reads the CA bundle and keeps re-reading the (rotated, bound)
/// token file.
async fn in_cluster(sources: &ConfigSources) -> Result<Option<(String, Config)>, KubeError> {
    let (Some(host), Some(port)) = (&sources.service_host, &sources.service_port) else {
        return Ok(None);
    };
    let dir = &sources.service_account_dir;
    let token = dir.join("token");
    if !token.exists() {
        tracing::debug!(
            token = %token.display(),
            "KUBERNETES_SERVICE_HOST is set but no service account token is mounted"
        );
        return Ok(None);
    }
    let port: u16 = port.parse().map_err(|source| KubeError::ServicePort {
        value: port.clone(),
        source,
    })?;
    let server = service_url(host, port);
    let origin = format!("in-cluster configuration ({server}, {})", dir.display());
    // The namespace file only sets a default we never use (every lookup
    // names its namespace); a missing one is not an error.
    let namespace = std::fs::read_to_string(dir.join("namespace"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let kc = Kubeconfig {
        clusters: vec![NamedCluster {
            name: "in-cluster".into(),
            cluster: Some(Cluster {
                server: Some(server),
                certificate_authority: Some(dir.join("ca.crt").display().to_string()),
                ..Cluster::default()
            }),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "service-account".into(),
            auth_info: Some(AuthInfo {
                token_file: Some(token.display().to_string()),
                ..AuthInfo::default()
            }),
        }],
        contexts: vec![NamedContext {
            name: "in-cluster".into(),
            context: Some(Context {
                cluster: "in-cluster".into(),
                user: Some("service-account".into()),
                namespace,
                extensions: None,
            }),
        }],
        current_context: Some("in-cluster".into()),
        ..Kubeconfig::default()
    };
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|source| KubeError::Config {
            origin: origin.clone(),
            source,
        })?;
    Ok(Some((origin, config)))
}

/// `https://host:port`, with IPv6 addresses bracketed (as client-go does).
fn service_url(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => format!("https://{}", SocketAddr::new(ip, port)),
        Err(_) => format!("https://{host}:{port}"),
    }
}

impl super::AnnotationSource for PodLookup {
    fn annotations<'a>(&'a self, pod: &'a PodRef) -> super::AnnotationsFuture<'a> {
        Box::pin(async move {
            PodLookup::annotations(self, pod)
                .await
                .map_err(|e| error_chain(&e))
        })
    }
}

/// memifd's start-up discovery: the lookup when a configuration exists,
/// `None` (logged) when none does or when it is broken — memifd then runs
/// without Kubernetes and specs come from `args.cni` and the network config.
pub async fn discover_source(
    kubeconfig: Option<&Path>,
) -> Option<std::sync::Arc<dyn super::AnnotationSource>> {
    discover(kubeconfig).await.map(|(l, _)| l)
}

/// What memifd does with the Kubernetes API: pod annotation lookups, and a
/// client for the node objects (without the lookups' read timeout: a
/// watch may stay quiet for minutes). `None` without a configuration (or
/// with a broken one, logged).
#[allow(clippy::result_large_err)]
pub async fn discover(
    kubeconfig: Option<&Path>,
) -> Option<(std::sync::Arc<dyn super::AnnotationSource>, Client)> {
    let found = load_config(&ConfigSources::from_env(kubeconfig))
        .await
        .and_then(|found| match found {
            None => Ok(None),
            Some((origin, config)) => {
                let mut watch_config = config.clone();
                watch_config.read_timeout = None;
                watch_config.connect_timeout = Some(DEFAULT_TIMEOUT);
                let watch = Client::try_from(watch_config).map_err(|source| KubeError::Client {
                    origin: origin.clone(),
                    source: Box::new(source),
                })?;
                Ok(Some((PodLookup::from_config(origin, config)?, watch)))
            }
        });
    match found {
        Ok(Some((l, watch))) => {
            tracing::info!(origin = %l.origin(), "pod annotations from the Kubernetes API");
            Some((std::sync::Arc::new(l), watch))
        }
        Ok(None) => {
            tracing::info!(
                "no Kubernetes configuration found; running without pod annotation lookups"
            );
            None
        }
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "Kubernetes configuration is broken; running without pod annotation lookups");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str) -> PodRef {
        PodRef {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn filter_keeps_only_cni_prefixes() {
        assert!(is_memif_related("k8s.v1.cni.cncf.io/networks"));
        assert!(is_memif_related("cni.projectcalico.org/vppInterfacesSpec"));
        assert!(is_memif_related("cni.projectcalico.org/vppExtraMemifPorts"));
        assert!(!is_memif_related(
            "kubectl.kubernetes.io/last-applied-configuration"
        ));
        // Prefixes must match whole, with their slash.
        assert!(!is_memif_related("cni.projectcalico.org"));
        assert!(!is_memif_related("x.cni.projectcalico.org/ipAddrs"));
        assert!(!is_memif_related("k8s.v1.cni.cncf.io.evil/networks"));
        assert!(!is_memif_related(""));
    }

    #[test]
    fn pod_refs_that_could_bend_the_path_are_refused() {
        assert_eq!(check_pod_ref(&pod("demo", "app-7d9c.x-1")), Ok(()));
        for (ns, name) in [
            ("", "a"),
            ("demo", ""),
            ("demo", "a/b"),
            ("..", "a"),
            ("demo", "a?watch=1"),
            ("demo", "a%2Fb"),
            ("Demo", "a"),
            ("demo", "a b"),
        ] {
            assert!(check_pod_ref(&pod(ns, name)).is_err(), "{ns:?}/{name:?}");
        }
        assert!(check_pod_ref(&pod("demo", &"a".repeat(254))).is_err());
        assert!(check_pod_ref(&pod("demo", &"a".repeat(253))).is_ok());
    }

    #[test]
    fn status_codes_map_to_variants() {
        let api = |code: u16| {
            kube::Error::Api(kube::core::ErrorResponse {
                status: "Failure".into(),
                message: String::new(),
                reason: String::new(),
                code,
            })
        };
        assert!(matches!(
            classify("a/b", api(404)),
            KubeError::NotFound { .. }
        ));
        assert!(matches!(
            classify("a/b", api(403)),
            KubeError::Forbidden { .. }
        ));
        assert!(matches!(
            classify("a/b", api(500)),
            KubeError::Api { code: 500, .. }
        ));
        assert!(matches!(
            classify("a/b", kube::Error::LinesCodecMaxLineLengthExceeded),
            KubeError::Transport { .. }
        ));
    }

    #[test]
    fn service_urls_bracket_ipv6() {
        assert_eq!(service_url("10.96.0.1", 443), "https://10.96.0.1:443");
        assert_eq!(service_url("fd00::1", 6443), "https://[fd00::1]:6443");
        assert_eq!(
            service_url("kubernetes.default.svc", 443),
            "https://kubernetes.default.svc:443"
        );
    }

    #[test]
    fn errors_keep_their_cause_chain() {
        let e = classify(
            "demo/app",
            kube::Error::Api(kube::core::ErrorResponse {
                status: "Failure".into(),
                message: "pods \"app\" not found".into(),
                reason: "NotFound".into(),
                code: 404,
            }),
        );
        let s = error_chain(&e);
        assert!(s.starts_with("pod demo/app not found: "), "{s}");
        // The API's own message follows, through the cause chain.
        assert!(s.contains("not found: ApiError: "), "{s}");
        assert!(s.contains("NotFound"), "{s}");
    }

    #[tokio::test]
    async fn no_sources_means_no_kubernetes() {
        let sources = ConfigSources {
            service_account_dir: "/nonexistent/memif-cni/serviceaccount".into(),
            ..ConfigSources::default()
        };
        assert!(load_config(&sources).await.unwrap().is_none());
    }
}

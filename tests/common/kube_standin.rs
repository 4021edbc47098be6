//! A stand-in Kubernetes API server for tests: HTTP/1.1 (or https) on
//! 127.0.0.1 with an ephemeral port, answering the real pod path
//! `GET /api/v1/namespaces/{ns}/pods/{name}` with a full Pod object as an
//! API server returns it, and errors as real `Status` objects.
//!
//! It checks the bearer token, records every request (method, path,
//! headers), and writes in its own temporary directory a kubeconfig
//! pointing at itself and a service account directory (`token`, `ca.crt`,
//! `namespace`) as a pod has it mounted. Everything stops, and the directory
//! is removed, when the stand-in is dropped; open connections are shut down
//! so a client cannot keep talking to a stopped server.
//!
//! Threads, not tokio: the stand-in works under any test runtime and never
//! competes with the client under test for its executor.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

/// The bearer token the stand-in accepts.
pub const TOKEN: &str = "memifd-standin-token-6c1f0e";
/// Namespace and name of the pod served from the start.
pub const POD_NAMESPACE: &str = "demo";
pub const POD_NAME: &str = "memif-app-6f7c9d8b5-x2x7k";
/// Its Multus network selection and CalicoVPP interface spec.
pub const NETWORKS: &str = "network-blue@memif-eth1";
pub const INTERFACES_SPEC: &str = "{\"memif-eth1\": {\"rx\": 1, \"tx\": 2, \"isl3\": true}}";
/// The network status Multus writes back on the pod.
pub const NETWORK_STATUS: &str = r#"[{
    "name": "kube-system/calico",
    "interface": "eth0",
    "ips": ["10.244.1.7"],
    "default": true,
    "dns": {}
},{
    "name": "demo/network-blue",
    "interface": "memif-eth1",
    "ips": ["192.168.100.5"],
    "dns": {}
}]"#;

/// Test-only CA (EC P-256, valid 2000-2100) that signed [`SERVER_CERT`].
pub const CA_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBajCCARGgAwIBAgIBATAKBggqhkjOPQQDAjAcMRowGAYDVQQDDBFtZW1pZi1j
bmkgdGVzdCBDQTAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFowHDEa
MBgGA1UEAwwRbWVtaWYtY25pIHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMB
BwNCAASizRMyidRM1EEsrQeNvXFZ2UOfSsttcJSKMYHKhCjjD254xEvwx06rGRjo
2jRBE6IoLn6k449L71mh9mkHw4aso0IwQDAPBgNVHRMBAf8EBTADAQH/MA4GA1Ud
DwEB/wQEAwIBBjAdBgNVHQ4EFgQUlxsdsdEcyuWH20FNCkvdT2AkG2gwCgYIKoZI
zj0EAwIDRwAwRAIgNIfJjwOgOZE4vyjjTGWNR2bDQ9KSR5mbOqE+Mm/UqUUCIGUp
LUvBUL2Sys6OhseANa5xKm+SipsjUw6vxghINFaD
-----END CERTIFICATE-----
";

/// Test-only server certificate for IP 127.0.0.1 and `localhost`.
pub const SERVER_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBtDCCAVqgAwIBAgIBAjAKBggqhkjOPQQDAjAcMRowGAYDVQQDDBFtZW1pZi1j
bmkgdGVzdCBDQTAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFowFzEV
MBMGA1UEAwwMa3ViZS1zdGFuZGluMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
szi9a23N1DATVSsukCtHYk2SapWoh/7txLQx3KPSN47Rc9c+LPMwsZa8a5UqqbF5
G5C+vJM0XdIjUPixvTFjlqOBjzCBjDAJBgNVHRMEAjAAMA4GA1UdDwEB/wQEAwIH
gDATBgNVHSUEDDAKBggrBgEFBQcDATAaBgNVHREEEzARhwR/AAABgglsb2NhbGhv
c3QwHwYDVR0jBBgwFoAUlxsdsdEcyuWH20FNCkvdT2AkG2gwHQYDVR0OBBYEFMvx
7sbjRQsMA14dLJy9UYpPJCrDMAoGCCqGSM49BAMCA0gAMEUCIGX7Fd6GeqBcldHx
Ix7vHmWqM4UzPfauonFfjXIXirvtAiEApUjiHxI+4Uprq2W13+kjncAsTGItTSK0
A5sNAM+K+A4=
-----END CERTIFICATE-----
";

/// The private key of [`SERVER_CERT`]; a test fixture, secret to nothing.
pub const SERVER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgaRo44nNuX3XPJs2r
FTupzJc+77IG2z8XSxmjrjgC/kShRANCAASzOL1rbc3UMBNVKy6QK0diTZJqlaiH
/u3EtDHco9I3jtFz1z4s8zCxlrxrlSqpsXkbkL68kzRd0iNQ+LG9MWOW
-----END PRIVATE KEY-----
";

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Like an API server with memifd allowed to get pods.
    Serve,
    /// 403 for every request, as without the RBAC rule.
    Forbid,
    /// Read the request and never answer (a hung API server).
    Silent,
    /// Unreachable: every connection is closed at once (an API server
    /// that went away); setting it cuts the open ones too.
    Down,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The request body (a PATCH's).
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The MemifNode objects and their change log (for watches).
#[derive(Default)]
struct Objects {
    items: BTreeMap<String, Value>,
    rv: u64,
    /// (resourceVersion, event type, object), oldest first.
    events: Vec<(u64, &'static str, Value)>,
}

struct Shared {
    stop: AtomicBool,
    /// Whether the MemifNode resource is served (its CRD installed).
    crd: AtomicBool,
    nodes: Mutex<BTreeMap<String, Value>>,
    memifnodes: Mutex<Objects>,
    changed: std::sync::Condvar,
    behaviour: Mutex<Behaviour>,
    pods: Mutex<BTreeMap<(String, String), Value>>,
    requests: Mutex<Vec<Recorded>>,
    conns: Mutex<Vec<TcpStream>>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// A running stand-in; stops when dropped.
pub struct KubeStandin {
    addr: SocketAddr,
    dir: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The network namespace the listener lives in, if not the test's own:
    /// the wake-up connection at drop must come from there.
    netns: Option<PathBuf>,
}

impl KubeStandin {
    /// A plain-HTTP stand-in (as `kubectl proxy` or a test cluster on
    /// http), serving [`POD_NAMESPACE`]/[`POD_NAME`].
    pub fn start() -> KubeStandin {
        KubeStandin::spawn(None)
    }

    /// An https stand-in with [`SERVER_CERT`], as a real API server.
    pub fn start_tls() -> KubeStandin {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = vec![pem_cert(SERVER_CERT)];
        let key = pem_key(SERVER_KEY);
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
        KubeStandin::spawn(Some(Arc::new(config)))
    }

    /// A plain-HTTP stand-in listening on `ip` inside network namespace
    /// `netns` (for clients that live in other namespaces than the test).
    pub fn start_in(netns: &Path, ip: std::net::IpAddr) -> KubeStandin {
        let ns = netns.to_path_buf();
        let listener = std::thread::spawn(move || {
            let _g = memif_cni::netns::NetnsGuard::enter(&ns).expect("enter the stand-in's netns");
            TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind the stand-in")
        })
        .join()
        .expect("bind thread");
        let mut standin = KubeStandin::spawn_on(listener, None);
        standin.netns = Some(netns.to_path_buf());
        standin
    }

    fn spawn(tls: Option<Arc<rustls::ServerConfig>>) -> KubeStandin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in");
        KubeStandin::spawn_on(listener, tls)
    }

    fn spawn_on(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> KubeStandin {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let addr = listener.local_addr().unwrap();
        let dir = std::env::temp_dir().join(format!(
            "memif-kube-standin-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("serviceaccount")).unwrap();
        let mut pods = BTreeMap::new();
        pods.insert(
            (POD_NAMESPACE.to_string(), POD_NAME.to_string()),
            pod_json(POD_NAMESPACE, POD_NAME, &default_annotations()),
        );
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            crd: AtomicBool::new(false),
            nodes: Mutex::new(BTreeMap::new()),
            memifnodes: Mutex::new(Objects::default()),
            changed: std::sync::Condvar::new(),
            behaviour: Mutex::new(Behaviour::Serve),
            pods: Mutex::new(pods),
            requests: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            tls,
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("kube-standin".into())
            .spawn(move || accept_loop(listener, s))
            .unwrap();
        let standin = KubeStandin {
            addr,
            dir,
            shared,
            thread: Some(thread),
            netns: None,
        };
        let sa = standin.service_account_dir();
        std::fs::write(sa.join("token"), TOKEN).unwrap();
        std::fs::write(sa.join("ca.crt"), CA_CERT).unwrap();
        std::fs::write(sa.join("namespace"), "kube-system").unwrap();
        std::fs::write(standin.dir.join("ca.crt"), CA_CERT).unwrap();
        std::fs::write(standin.kubeconfig(), standin.kubeconfig_yaml(TOKEN)).unwrap();
        standin
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://...`.
    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The stand-in's private directory (removed on drop); tests may put
    /// their own files there.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kubeconfig pointing at the stand-in with a token user.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A kubeconfig document for this stand-in presenting `token`.
    pub fn kubeconfig_yaml(&self, token: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster:
    server: {url}
    certificate-authority: {ca}
contexts:
- name: memifd@standin
  context:
    cluster: standin
    user: memifd
    namespace: kube-system
current-context: memifd@standin
preferences: {{}}
users:
- name: memifd
  user:
    token: {token}
",
            url = self.url(),
            ca = self.dir.join("ca.crt").display(),
        )
    }

    /// `token`, `ca.crt` and `namespace`, as mounted in a pod.
    pub fn service_account_dir(&self) -> PathBuf {
        self.dir.join("serviceaccount")
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = b;
        if b == Behaviour::Down {
            for c in self.shared.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
            self.shared.changed.notify_all();
        }
    }

    /// Serves the MemifNode resource (as if its CRD were installed).
    pub fn serve_memifnodes(&self) {
        self.shared.crd.store(true, Ordering::SeqCst);
    }

    /// Serves a Node object `name`; returns its uid.
    pub fn insert_node(&self, name: &str) -> String {
        let uid = format!(
            "0f6e2a7c-1b3d-4e5f-8a9b-{:012x}",
            name.len() * 7919 + name.bytes().map(usize::from).sum::<usize>()
        );
        self.shared.nodes.lock().unwrap().insert(
            name.to_string(),
            json!({
                "kind": "Node",
                "apiVersion": "v1",
                "metadata": {"name": name, "uid": uid, "resourceVersion": "1"},
                "spec": {},
            }),
        );
        uid
    }

    /// The MemifNode object `name`, if any.
    pub fn memifnode(&self, name: &str) -> Option<Value> {
        self.shared
            .memifnodes
            .lock()
            .unwrap()
            .items
            .get(name)
            .cloned()
    }

    /// Deletes MemifNode `name` (as Kubernetes does with its Node); the
    /// watches see it.
    pub fn delete_memifnode(&self, name: &str) -> bool {
        let mut o = self.shared.memifnodes.lock().unwrap();
        let Some(obj) = o.items.remove(name) else {
            return false;
        };
        o.rv += 1;
        let rv = o.rv;
        o.events.push((rv, "DELETED", obj));
        self.shared.changed.notify_all();
        true
    }

    /// Serves another pod (or replaces one) with these annotations.
    pub fn insert_pod(&self, namespace: &str, name: &str, annotations: &BTreeMap<String, String>) {
        self.shared.pods.lock().unwrap().insert(
            (namespace.to_string(), name.to_string()),
            pod_json(namespace, name, annotations),
        );
    }

    /// The Pod object served for `namespace`/`name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .pods
            .lock()
            .unwrap()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for KubeStandin {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop (from the listener's own namespace: from
        // another, its address may be unroutable and connect would hang),
        // then cut every connection.
        let addr = self.addr;
        match self.netns.clone() {
            None => drop(TcpStream::connect_timeout(&addr, Duration::from_secs(2))),
            Some(ns) => {
                let _ = std::thread::spawn(move || {
                    if let Ok(_g) = memif_cni::netns::NetnsGuard::enter(&ns) {
                        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
                    }
                })
                .join();
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The annotations of the default pod: two memif-related ones, Multus's
/// network status, and unrelated ones that must not pass the filter.
pub fn default_annotations() -> BTreeMap<String, String> {
    let last_applied = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": {
                "cni.projectcalico.org/vppInterfacesSpec": INTERFACES_SPEC,
                "k8s.v1.cni.cncf.io/networks": NETWORKS,
            },
            "name": POD_NAME,
            "namespace": POD_NAMESPACE,
        },
    });
    BTreeMap::from([
        (
            "k8s.v1.cni.cncf.io/networks".to_string(),
            NETWORKS.to_string(),
        ),
        (
            "cni.projectcalico.org/vppInterfacesSpec".to_string(),
            INTERFACES_SPEC.to_string(),
        ),
        (
            "k8s.v1.cni.cncf.io/network-status".to_string(),
            NETWORK_STATUS.to_string(),
        ),
        (
            "kubectl.kubernetes.io/last-applied-configuration".to_string(),
            format!("{last_applied}\n"),
        ),
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        (
            "kubernetes.io/psp".to_string(),
            "privileged-memif".to_string(),
        ),
    ])
}

/// A Pod as `GET /api/v1/namespaces/{ns}/pods/{name}` returns it, running
/// on a node, owned by a ReplicaSet.
pub fn pod_json(namespace: &str, name: &str, annotations: &BTreeMap<String, String>) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "generateName": "memif-app-6f7c9d8b5-",
            "namespace": namespace,
            "uid": "3b0f6a3e-8f2d-4c7a-9e61-2f4d8c9a1b57",
            "resourceVersion": "184467",
            "creationTimestamp": "2025-03-14T09:26:53Z",
            "labels": {
                "app": "memif-app",
                "pod-template-hash": "6f7c9d8b5"
            },
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "memif-app-6f7c9d8b5",
                "uid": "a5e2c1d4-0b7f-4e3a-8d2c-6f1e9b0a3c28",
                "controller": true,
                "blockOwnerDeletion": true
            }],
            "managedFields": [{
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2025-03-14T09:26:53Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {
                        "f:generateName": {},
                        "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}}
                    }
                }
            }, {
                "manager": "kubelet",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2025-03-14T09:27:01Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {"f:phase": {}, "f:podIP": {}}},
                "subresource": "status"
            }]
        },
        "spec": {
            "volumes": [{
                "name": "kube-api-access-x7k2p",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                    ],
                    "defaultMode": 420
                }
            }],
            "containers": [{
                "name": "testpmd",
                "image": "registry.example/dpdk-testpmd:22.11",
                "command": ["dpdk-testpmd"],
                "args": ["-l", "0,1", "--vdev=net_memif0,role=client,socket=memif-eth1,socket-abstract=yes"],
                "resources": {
                    "limits": {"cpu": "2", "hugepages-2Mi": "512Mi", "memory": "1Gi"},
                    "requests": {"cpu": "2", "hugepages-2Mi": "512Mi", "memory": "1Gi"}
                },
                "volumeMounts": [{
                    "name": "kube-api-access-x7k2p",
                    "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"
                }],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
                "securityContext": {"capabilities": {"add": ["IPC_LOCK"]}}
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "nodeName": "node-1",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2025-03-14T09:26:58Z"},
                {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2025-03-14T09:26:53Z"},
                {"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2025-03-14T09:27:01Z"},
                {"type": "ContainersReady", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2025-03-14T09:27:01Z"},
                {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2025-03-14T09:26:53Z"}
            ],
            "hostIP": "192.168.122.11",
            "hostIPs": [{"ip": "192.168.122.11"}],
            "podIP": "10.244.1.7",
            "podIPs": [{"ip": "10.244.1.7"}],
            "startTime": "2025-03-14T09:26:53Z",
            "containerStatuses": [{
                "name": "testpmd",
                "state": {"running": {"startedAt": "2025-03-14T09:27:00Z"}},
                "lastState": {},
                "ready": true,
                "restartCount": 0,
                "image": "registry.example/dpdk-testpmd:22.11",
                "imageID": "registry.example/dpdk-testpmd@sha256:5f0c2d9e7b1a4c3d8e6f0a9b2c4d6e8f0a1b3c5d7e9f1a2b4c6d8e0f2a4b6c8d",
                "containerID": "containerd://9d1c0b7e4f2a6c8d3e5b7a9f1c3e5d7b9a1c3e5f7d9b1a3c5e7f9d1b3a5c7e9f",
                "started": true
            }],
            "qosClass": "Guaranteed"
        }
    })
}

/// A `Status` object as the API server sends with an error.
fn status_json(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut v = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(d) = details {
        v["details"] = d;
    }
    v
}

fn pem_cert(pem: &str) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM")
}

fn pem_key(pem: &str) -> rustls::pki_types::PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("key PEM")
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        if *shared.behaviour.lock().unwrap() == Behaviour::Down {
            let _ = conn.shutdown(Shutdown::Both);
            continue;
        }
        // Bounded reads: a connection thread never outlives a test by long.
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        if let Ok(c) = conn.try_clone() {
            shared.conns.lock().unwrap().push(c);
        }
        let s = Arc::clone(&shared);
        std::thread::spawn(move || match s.tls.clone() {
            None => serve_conn(conn, &s),
            Some(config) => {
                let Ok(tls) = rustls::ServerConnection::new(config) else {
                    return;
                };
                serve_conn(rustls::StreamOwned::new(tls, conn), &s);
            }
        });
    }
}

/// Serves requests on one connection (keep-alive, as the API server does)
/// until the client closes it or the stand-in stops.
fn serve_conn<S: Read + Write>(stream: S, shared: &Shared) {
    let mut reader = BufReader::new(stream);
    loop {
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        shared.requests.lock().unwrap().push(req.clone());
        let behaviour = *shared.behaviour.lock().unwrap();
        if behaviour == Behaviour::Silent {
            while !shared.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        if is_watch(&req) && req.header("authorization") == Some(&format!("Bearer {TOKEN}")) {
            watch(reader.get_mut(), &req, shared);
            return;
        }
        let (code, reason, body) = answer(&req, behaviour, shared);
        let body = serde_json::to_vec(&body).unwrap();
        let head = format!(
            "HTTP/1.1 {code} {reason}\r\n\
             Audit-Id: 7c4e2a1b-9d3f-4e8a-b6c5-0f1d2e3a4b5c\r\n\
             Cache-Control: no-cache, private\r\n\
             Content-Type: application/json\r\n\
             X-Kubernetes-Pf-Flowschema-Uid: 2b8a6c4e-1d3f-4a5b-9c7e-8f0a1b2c3d4e\r\n\
             X-Kubernetes-Pf-Prioritylevel-Uid: 5e7f9a1b-3c5d-4e6f-8a0b-1c2d3e4f5a6b\r\n\
             Date: Fri, 14 Mar 2025 09:30:00 GMT\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let w = reader.get_mut();
        if w.write_all(head.as_bytes()).is_err()
            || w.write_all(&body).is_err()
            || w.flush().is_err()
        {
            return;
        }
        if req
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            return;
        }
    }
}

/// Reads one request head (and discards a body); `None` at the end of the
/// connection or on anything malformed.
fn read_request<R: BufRead>(r: &mut R) -> Option<Recorded> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.trim_end().split(' ');
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        if headers.len() > 100 {
            return None;
        }
    }
    let mut req = Recorded {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    let len: u64 = req
        .header("content-length")
        .map_or(Some(0), |v| v.parse().ok())?;
    r.take(len).read_to_end(&mut req.body).ok()?;
    Some(req)
}

/// Status code, reason phrase and JSON body for a request.
fn answer(req: &Recorded, behaviour: Behaviour, shared: &Shared) -> (u16, &'static str, Value) {
    if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
        return (
            401,
            "Unauthorized",
            status_json(401, "Unauthorized", "Unauthorized", None),
        );
    }
    let path = req.path.split('?').next().unwrap_or("");
    if let Some(a) = cluster_answer(req, path, shared) {
        return a;
    }
    let pod = path.strip_prefix("/api/v1/namespaces/").and_then(|rest| {
        let (ns, rest) = rest.split_once('/')?;
        let name = rest.strip_prefix("pods/")?;
        (!ns.is_empty() && !name.is_empty() && !name.contains('/'))
            .then(|| (ns.to_string(), name.to_string()))
    });
    let Some((ns, name)) = pod else {
        return (
            404,
            "Not Found",
            status_json(
                404,
                "NotFound",
                "the server could not find the requested resource",
                Some(json!({})),
            ),
        );
    };
    if behaviour == Behaviour::Forbid {
        return (
            403,
            "Forbidden",
            status_json(
                403,
                "Forbidden",
                &format!(
                    "pods \"{name}\" is forbidden: User \"system:serviceaccount:kube-system:memifd\" \
                     cannot get resource \"pods\" in API group \"\" in the namespace \"{ns}\""
                ),
                Some(json!({"name": name, "kind": "pods"})),
            ),
        );
    }
    if req.method != "GET" {
        return (
            405,
            "Method Not Allowed",
            status_json(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                Some(json!({})),
            ),
        );
    }
    match shared.pods.lock().unwrap().get(&(ns, name.clone())) {
        Some(p) => (200, "OK", p.clone()),
        None => (
            404,
            "Not Found",
            status_json(
                404,
                "NotFound",
                &format!("pods \"{name}\" not found"),
                Some(json!({"name": name, "kind": "pods"})),
            ),
        ),
    }
}

const MEMIFNODES: &str = "/apis/memif-cni.io/v1alpha1/memifnodes";

/// The value of query parameter `k`.
fn query<'a>(req: &'a Recorded, k: &str) -> Option<&'a str> {
    let q = req.path.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (a, b) = kv.split_once('=').unwrap_or((kv, ""));
        (a == k).then_some(b)
    })
}

fn is_watch(req: &Recorded) -> bool {
    let path = req.path.split('?').next().unwrap_or("");
    path == MEMIFNODES && matches!(query(req, "watch"), Some("true" | "1"))
}

fn not_found(what: &str) -> (u16, &'static str, Value) {
    (
        404,
        "Not Found",
        status_json(404, "NotFound", what, Some(json!({}))),
    )
}

/// Nodes and MemifNode objects; `None` for other paths.
fn cluster_answer(
    req: &Recorded,
    path: &str,
    shared: &Shared,
) -> Option<(u16, &'static str, Value)> {
    if let Some(name) = path.strip_prefix("/api/v1/nodes/") {
        return Some(match shared.nodes.lock().unwrap().get(name) {
            Some(n) if req.method == "GET" => (200, "OK", n.clone()),
            _ => not_found(&format!("nodes \"{name}\" not found")),
        });
    }
    if !path.starts_with(MEMIFNODES) {
        return None;
    }
    if !shared.crd.load(Ordering::SeqCst) {
        return Some(not_found(
            "the server could not find the requested resource",
        ));
    }
    let mut o = shared.memifnodes.lock().unwrap();
    if path == MEMIFNODES && req.method == "GET" {
        return Some((
            200,
            "OK",
            json!({
                "apiVersion": "memif-cni.io/v1alpha1",
                "kind": "MemifNodeList",
                "metadata": {"resourceVersion": o.rv.to_string()},
                "items": o.items.values().cloned().collect::<Vec<_>>(),
            }),
        ));
    }
    let name = path.strip_prefix(&format!("{MEMIFNODES}/"))?.to_string();
    match req.method.as_str() {
        "GET" => Some(match o.items.get(&name) {
            Some(v) => (200, "OK", v.clone()),
            None => not_found(&format!("memifnodes.memif-cni.io \"{name}\" not found")),
        }),
        "PATCH" => {
            // Server-side apply: the body is the whole intent.
            let ct = req.header("content-type").unwrap_or("");
            if ct != "application/apply-patch+yaml" {
                return Some((
                    415,
                    "Unsupported Media Type",
                    status_json(415, "UnsupportedMediaType", "apply only", None),
                ));
            }
            let Ok(mut body) = serde_json::from_slice::<Value>(&req.body) else {
                return Some((
                    400,
                    "Bad Request",
                    status_json(400, "BadRequest", "not JSON", None),
                ));
            };
            o.rv += 1;
            let rv = o.rv;
            let existed = o.items.contains_key(&name);
            body["metadata"]["resourceVersion"] = json!(rv.to_string());
            body["metadata"]["uid"] = json!(format!("memifnode-{name}"));
            body["metadata"]["name"] = json!(name);
            o.items.insert(name, body.clone());
            o.events
                .push((rv, if existed { "MODIFIED" } else { "ADDED" }, body.clone()));
            shared.changed.notify_all();
            Some((
                if existed { 200 } else { 201 },
                if existed { "OK" } else { "Created" },
                body,
            ))
        }
        _ => Some((
            405,
            "Method Not Allowed",
            status_json(405, "MethodNotAllowed", "not here", None),
        )),
    }
}

/// A watch of the MemifNode objects: every event after the request's
/// resourceVersion, as chunks, until the watch times out, the stand-in
/// stops or goes down.
fn watch<W: Write>(w: &mut W, req: &Recorded, shared: &Shared) {
    let from: u64 = query(req, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let secs: u64 = query(req, "timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290);
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if w.write_all(head.as_bytes())
        .and_then(|()| w.flush())
        .is_err()
    {
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut seen = from;
    let mut o = shared.memifnodes.lock().unwrap();
    loop {
        if shared.stop.load(Ordering::SeqCst)
            || *shared.behaviour.lock().unwrap() == Behaviour::Down
            || std::time::Instant::now() >= deadline
        {
            break;
        }
        let new: Vec<(u64, &'static str, Value)> = o
            .events
            .iter()
            .filter(|(rv, _, _)| *rv > seen)
            .cloned()
            .collect();
        if !new.is_empty() {
            drop(o);
            for (rv, kind, obj) in new {
                let line = format!("{}\n", json!({"type": kind, "object": obj}));
                let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                if w.write_all(chunk.as_bytes())
                    .and_then(|()| w.flush())
                    .is_err()
                {
                    return;
                }
                seen = rv;
            }
            o = shared.memifnodes.lock().unwrap();
            continue;
        }
        o = shared
            .changed
            .wait_timeout(o, Duration::from_millis(200))
            .unwrap()
            .0;
    }
    drop(o);
    let _ = w.write_all(b"0\r\n\r\n");
    let _ = w.flush();
}

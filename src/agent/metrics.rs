//! The Prometheus metrics endpoint (off by default).
//!
//! [`render`] writes memifd's state in the Prometheus text exposition format
//! 0.0.4; [`serve`] answers `GET /metrics` with it on a TCP listener, with
//! hyper's HTTP/1 server: bounded request heads read under a timeout, a
//! bounded number of connections, and nothing but `/metrics`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE as CT};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::api::{AttachmentInfo, StatusInfo};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Largest request head read, in bytes.
pub const MAX_REQUEST_HEAD: usize = 8192;
/// Time a client has to send its request head, and to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Prometheus text exposition (format 0.0.4) of memifd's state.
///
/// Per-attachment series carry the labels `network`, `container_id`,
/// `ifname`, `pod_namespace`, `pod_name` (empty without a pod) and `socket`;
/// drops carry a `reason` label besides.
pub fn render(status: &StatusInfo, items: &[AttachmentInfo]) -> String {
    let mut out = String::new();
    let bool_value = |b: bool| u64::from(b);

    family(&mut out, "memifd_up", "gauge", "Whether memifd is running.");
    sample(&mut out, "memifd_up", "", 1);
    family(
        &mut out,
        "memifd_attachments",
        "gauge",
        "Attachments (memif listeners) memifd holds.",
    );
    sample(
        &mut out,
        "memifd_attachments",
        "",
        status.attachments as u64,
    );
    family(
        &mut out,
        "memifd_connected_interfaces",
        "gauge",
        "Attachments with a connected memif client.",
    );
    sample(
        &mut out,
        "memifd_connected_interfaces",
        "",
        status.connected as u64,
    );
    family(
        &mut out,
        "memifd_memif_enabled",
        "gauge",
        "Whether the memifEnabled feature gate is on.",
    );
    sample(
        &mut out,
        "memifd_memif_enabled",
        "",
        bool_value(status.memif_enabled),
    );

    let labels: Vec<String> = items.iter().map(attachment_labels).collect();

    type Value = fn(&AttachmentInfo) -> u64;
    let counters = |out: &mut String, families: &[(&str, &str, &str, Value)]| {
        for (name, kind, help, value) in families {
            family(out, name, kind, help);
            for (a, l) in items.iter().zip(&labels) {
                sample(out, name, l, value(a));
            }
        }
    };
    counters(
        &mut out,
        &[
            (
                "memif_connected",
                "gauge",
                "Whether a memif client is connected.",
                |a| u64::from(a.connection.is_some()),
            ),
            (
                "memif_rx_packets_total",
                "counter",
                "Packets received from the pod.",
                |a| a.stats.rx_packets,
            ),
            (
                "memif_rx_bytes_total",
                "counter",
                "Bytes received from the pod.",
                |a| a.stats.rx_bytes,
            ),
            (
                "memif_tx_packets_total",
                "counter",
                "Packets sent to the pod.",
                |a| a.stats.tx_packets,
            ),
            (
                "memif_tx_bytes_total",
                "counter",
                "Bytes sent to the pod.",
                |a| a.stats.tx_bytes,
            ),
        ],
    );
    family(
        &mut out,
        "memif_drops_total",
        "counter",
        "Frames dropped, by reason.",
    );
    for (a, l) in items.iter().zip(&labels) {
        for (reason, n) in &a.stats.drops {
            let l = format!("{l},reason=\"{}\"", escape_label(reason));
            sample(&mut out, "memif_drops_total", &l, *n);
        }
    }
    counters(
        &mut out,
        &[
            (
                "memif_errors_total",
                "counter",
                "Bad descriptors and other errors of the memif client.",
                |a| a.stats.errors,
            ),
            (
                "memif_connects_total",
                "counter",
                "Times a memif client connected.",
                |a| a.stats.connects,
            ),
            (
                "memif_disconnects_total",
                "counter",
                "Times a memif client disconnected.",
                |a| a.stats.disconnects,
            ),
        ],
    );
    out
}

/// The labels of an attachment's series, without braces.
fn attachment_labels(a: &AttachmentInfo) -> String {
    let r = &a.request;
    let (ns, pod) = r
        .pod
        .as_ref()
        .map_or(("", ""), |p| (p.namespace.as_str(), p.name.as_str()));
    format!(
        "network=\"{}\",container_id=\"{}\",ifname=\"{}\",pod_namespace=\"{}\",pod_name=\"{}\",socket=\"{}\"",
        escape_label(&r.network),
        escape_label(&r.key.container_id),
        escape_label(&r.key.ifname),
        escape_label(ns),
        escape_label(pod),
        escape_label(&r.socket_name()),
    )
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // HELP texts are ours and hold no backslash or newline to escape.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// Series of networks across nodes: per network its peers, remote pods
/// and address conflicts; per peer the traffic exchanged; the underlay's
/// own counters; whether the node source (Kubernetes API or peers file)
/// answers.
pub fn render_remote(r: &crate::api::RemoteInfo) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "memifd_node_source_up",
        "gauge",
        "Whether the source of the other nodes (Kubernetes API or peers file) answered last time.",
    );
    sample(
        &mut out,
        "memifd_node_source_up",
        "",
        u64::from(r.status.source_ok),
    );
    let net = |n: &str| format!("network=\"{}\"", escape_label(n));
    for (name, help, get) in [
        (
            "memifd_remote_peers",
            "Other nodes serving the network.",
            (|n: &crate::api::RemoteNetwork| n.peers.len() as u64)
                as fn(&crate::api::RemoteNetwork) -> u64,
        ),
        (
            "memifd_remote_endpoints",
            "Pod addresses of the network on other nodes.",
            |n| n.endpoints.len() as u64,
        ),
        (
            "memifd_remote_conflicts",
            "Addresses (or VNIs) of the network published by more than one node.",
            |n| n.conflicts.len() as u64,
        ),
    ] {
        family(&mut out, name, "gauge", help);
        for n in &r.networks {
            sample(&mut out, name, &net(&n.name), get(n));
        }
    }
    for (name, help, get) in [
        (
            "memifd_remote_tx_packets_total",
            "Frames sent to the peer node (VXLAN).",
            (|p: &crate::api::RemotePeerInfo| p.tx_packets)
                as fn(&crate::api::RemotePeerInfo) -> u64,
        ),
        (
            "memifd_remote_tx_bytes_total",
            "UDP payload bytes sent to the peer node.",
            |p| p.tx_bytes,
        ),
        (
            "memifd_remote_rx_packets_total",
            "Frames received from the peer node.",
            |p| p.rx_packets,
        ),
        (
            "memifd_remote_rx_bytes_total",
            "UDP payload bytes received from the peer node.",
            |p| p.rx_bytes,
        ),
        (
            "memifd_remote_drops_total",
            "Frames for the peer node that were not sent.",
            |p| p.drops,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for n in &r.networks {
            for p in &n.peers {
                let labels = format!("{},node=\"{}\"", net(&n.name), escape_label(&p.node));
                sample(&mut out, name, &labels, get(p));
            }
        }
    }
    let u = &r.underlay;
    for (name, help, v) in [
        (
            "memifd_underlay_rx_packets_total",
            "VXLAN packets received on the underlay.",
            u.rx_packets,
        ),
        (
            "memifd_underlay_rx_bytes_total",
            "UDP payload bytes received on the underlay.",
            u.rx_bytes,
        ),
        (
            "memifd_underlay_tx_packets_total",
            "VXLAN packets sent on the underlay.",
            u.tx_packets,
        ),
        (
            "memifd_underlay_tx_bytes_total",
            "UDP payload bytes sent on the underlay.",
            u.tx_bytes,
        ),
    ] {
        family(&mut out, name, "counter", help);
        sample(&mut out, name, "", v);
    }
    family(
        &mut out,
        "memifd_underlay_drops_total",
        "counter",
        "Underlay packets dropped by reason (garbage, unknown VNI, send errors).",
    );
    for (reason, v) in &u.drops {
        sample(
            &mut out,
            "memifd_underlay_drops_total",
            &format!("reason=\"{}\"", escape_label(reason)),
            *v,
        );
    }
    out
}

/// What [`serve`] exposes.
pub trait Exposition {
    fn exposition(self) -> String;
}

impl Exposition for (StatusInfo, Vec<AttachmentInfo>) {
    fn exposition(self) -> String {
        render(&self.0, &self.1)
    }
}

impl Exposition
    for (
        StatusInfo,
        Vec<AttachmentInfo>,
        Option<crate::api::RemoteInfo>,
    )
{
    fn exposition(self) -> String {
        let mut s = render(&self.0, &self.1);
        if let Some(r) = &self.2 {
            s.push_str(&render_remote(r));
        }
        s
    }
}

/// Escapes a label value as the text format requires: backslash, double
/// quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Serves `GET /metrics` (and `HEAD`) on `listener` until the future is
/// dropped (which also ends every connection in progress); other paths get
/// 404, other methods 405. Every answer says `Connection: close`.
///
/// Returns only when the listener itself fails; errors of single
/// connections and transient accept errors (e.g. out of file descriptors)
/// are logged and the server goes on.
pub async fn serve<F, T>(listener: TcpListener, snapshot: F) -> io::Result<()>
where
    F: Fn() -> T + Send + Sync + 'static,
    T: Exposition,
{
    let snapshot = Arc::new(snapshot);
    // Owned here so that dropping this future aborts the connections.
    let mut conns = JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics");
    }
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) if is_transient(&e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if conns.len() >= MAX_CONNECTIONS {
            tracing::warn!(%peer, "metrics: too many connections; closing one");
            continue;
        }
        let snapshot = Arc::clone(&snapshot);
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let snapshot = Arc::clone(&snapshot);
                async move { Ok::<_, Infallible>(answer(&req, || snapshot())) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(IO_TIMEOUT)
                .max_buf_size(MAX_REQUEST_HEAD)
                .keep_alive(false)
                .title_case_headers(true)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(IO_TIMEOUT * 2, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection failed"),
                Err(_) => tracing::debug!(%peer, "metrics connection timed out"),
            }
        });
    }
}

/// Accept errors that concern one connection or a passing shortage, not the
/// listener.
fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut
    ) || matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
    )
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    /// GET or HEAD of a path other than /metrics.
    NotFound,
    /// A method other than GET or HEAD.
    BadMethod,
}

fn route(method: &Method, path: &str) -> Route {
    if method != Method::GET && method != Method::HEAD {
        Route::BadMethod
    } else if path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

/// The answer to one request (hyper leaves the body out for `HEAD`).
fn answer<F, T>(req: &Request<Incoming>, snapshot: F) -> Response<Full<Bytes>>
where
    F: FnOnce() -> T,
    T: Exposition,
{
    let (status, body, content_type) = match route(req.method(), req.uri().path()) {
        Route::Metrics => (StatusCode::OK, snapshot().exposition(), CONTENT_TYPE),
        Route::NotFound => (
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n".to_string(),
            "text/plain; charset=utf-8",
        ),
        Route::BadMethod => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".to_string(),
            "text/plain; charset=utf-8",
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CT, HeaderValue::from_static(content_type));
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        AttachRequest, AttachmentKey, ConnectionInfo, IfStats, MaxSpec, MemifSpec, PodRef,
    };
    use crate::memif::wire::Mode;
    use std::collections::BTreeMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn status(attachments: usize, connected: usize) -> StatusInfo {
        StatusInfo {
            version: "0.1.0".into(),
            api: 1,
            memif_enabled: true,
            feature_gates: BTreeMap::from([("memifEnabled".to_string(), true)]),
            max_spec: MaxSpec::default(),
            attachments,
            connected,
            kube: false,
            uptime_secs: 12,
            state_file: "/run/memif-cni/state.json".into(),
            cross_node: None,
        }
    }

    fn attachment(container_id: &str, ifname: &str, pod: Option<(&str, &str)>) -> AttachmentInfo {
        AttachmentInfo {
            request: AttachRequest {
                key: AttachmentKey {
                    container_id: container_id.into(),
                    ifname: ifname.into(),
                },
                network: "blue".into(),
                netns: "/var/run/netns/p".into(),
                socket: None,
                spec: MemifSpec::default(),
                ips: vec!["10.0.0.1".parse().unwrap()],
                pod: pod.map(|(ns, name)| PodRef {
                    namespace: ns.into(),
                    name: name.into(),
                }),
                steer: None,
                vni: None,
            },
            socket_id: crate::ids::AttachmentId(1),
            listener_fd: 7,
            created: 1_700_000_000,
            connection: None,
            stats: IfStats::default(),
        }
    }

    fn fixture() -> (StatusInfo, Vec<AttachmentInfo>) {
        let mut a = attachment("c1", "memif-eth1", Some(("demo", "app")));
        a.connection = Some(ConnectionInfo {
            peer_name: "dpdk".into(),
            mode: Mode::Ethernet,
            conn_fd: 9,
            buffer_size: 2048,
            regions: vec![],
            s2m: vec![],
            m2s: vec![],
        });
        a.stats = IfStats {
            rx_packets: 10,
            rx_bytes: 640,
            tx_packets: 8,
            tx_bytes: 512,
            drops: BTreeMap::from([("no-route".to_string(), 3), ("tx-ring-full".to_string(), 1)]),
            errors: 2,
            connects: 1,
            disconnects: 0,
        };
        let mut b = attachment("c2", "memif-eth2", None);
        b.request.socket = Some("@custom".into());
        (status(2, 1), vec![a, b])
    }

    const L1: &str = r#"network="blue",container_id="c1",ifname="memif-eth1",pod_namespace="demo",pod_name="app",socket="@memif-eth1""#;
    const L2: &str = r#"network="blue",container_id="c2",ifname="memif-eth2",pod_namespace="",pod_name="",socket="@custom""#;

    fn expected() -> String {
        format!(
            "# HELP memifd_up Whether memifd is running.
# TYPE memifd_up gauge
memifd_up 1
# HELP memifd_attachments Attachments (memif listeners) memifd holds.
# TYPE memifd_attachments gauge
memifd_attachments 2
# HELP memifd_connected_interfaces Attachments with a connected memif client.
# TYPE memifd_connected_interfaces gauge
memifd_connected_interfaces 1
# HELP memifd_memif_enabled Whether the memifEnabled feature gate is on.
# TYPE memifd_memif_enabled gauge
memifd_memif_enabled 1
# HELP memif_connected Whether a memif client is connected.
# TYPE memif_connected gauge
memif_connected{{{L1}}} 1
memif_connected{{{L2}}} 0
# HELP memif_rx_packets_total Packets received from the pod.
# TYPE memif_rx_packets_total counter
memif_rx_packets_total{{{L1}}} 10
memif_rx_packets_total{{{L2}}} 0
# HELP memif_rx_bytes_total Bytes received from the pod.
# TYPE memif_rx_bytes_total counter
memif_rx_bytes_total{{{L1}}} 640
memif_rx_bytes_total{{{L2}}} 0
# HELP memif_tx_packets_total Packets sent to the pod.
# TYPE memif_tx_packets_total counter
memif_tx_packets_total{{{L1}}} 8
memif_tx_packets_total{{{L2}}} 0
# HELP memif_tx_bytes_total Bytes sent to the pod.
# TYPE memif_tx_bytes_total counter
memif_tx_bytes_total{{{L1}}} 512
memif_tx_bytes_total{{{L2}}} 0
# HELP memif_drops_total Frames dropped, by reason.
# TYPE memif_drops_total counter
memif_drops_total{{{L1},reason=\"no-route\"}} 3
memif_drops_total{{{L1},reason=\"tx-ring-full\"}} 1
# HELP memif_errors_total Bad descriptors and other errors of the memif client.
# TYPE memif_errors_total counter
memif_errors_total{{{L1}}} 2
memif_errors_total{{{L2}}} 0
# HELP memif_connects_total Times a memif client connected.
# TYPE memif_connects_total counter
memif_connects_total{{{L1}}} 1
memif_connects_total{{{L2}}} 0
# HELP memif_disconnects_total Times a memif client disconnected.
# TYPE memif_disconnects_total counter
memif_disconnects_total{{{L1}}} 0
memif_disconnects_total{{{L2}}} 0
"
        )
    }

    #[test]
    fn renders_exact_text() {
        let (s, items) = fixture();
        assert_eq!(render(&s, &items), expected());
    }

    #[test]
    fn renders_families_without_attachments() {
        let mut s = status(0, 0);
        s.memif_enabled = false;
        let text = render(&s, &[]);
        assert!(text.contains("\nmemifd_memif_enabled 0\n"), "{text}");
        assert!(text.contains("\nmemifd_attachments 0\n"), "{text}");
        // Every family is announced, none has a labelled sample.
        assert!(text.contains("# TYPE memif_drops_total counter\n"));
        assert!(!text.contains('{'), "{text}");
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("l1\nl2"), r"l1\nl2");
        assert_eq!(escape_label("plain-é"), "plain-é");

        let mut a = attachment("c\"1", "memif-eth1", Some(("ns", "p\\od\nx")));
        a.request.network = "bl\"ue".into();
        a.stats.drops = BTreeMap::from([("we\"ird\n".to_string(), 5)]);
        let text = render(&status(1, 0), &[a]);
        assert!(
            text.contains(
                r#"memif_drops_total{network="bl\"ue",container_id="c\"1",ifname="memif-eth1",pod_namespace="ns",pod_name="p\\od\nx",socket="@memif-eth1",reason="we\"ird\n"} 5"#
            ),
            "{text}"
        );
        // No raw newline inside any sample line: every line is a comment,
        // or a name followed by exactly one value.
        for line in text.lines() {
            assert!(
                line.starts_with("# ") || line.rsplit_once(' ').unwrap().1.parse::<u64>().is_ok(),
                "{line:?}"
            );
        }
    }

    #[test]
    fn routes_requests() {
        assert_eq!(route(&Method::GET, "/metrics"), Route::Metrics);
        assert_eq!(route(&Method::HEAD, "/metrics"), Route::Metrics);
        assert_eq!(route(&Method::GET, "/"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/metricsx"), Route::NotFound);
        assert_eq!(route(&Method::POST, "/metrics"), Route::BadMethod);
    }

    /// Sends `request` raw and returns everything the server sent until it
    /// closed the connection.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("the server closes the connection")
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn split(reply: &str) -> (&str, &str) {
        reply
            .split_once("\r\n\r\n")
            .expect("a complete HTTP answer")
    }

    #[tokio::test]
    async fn serves_metrics_and_404_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let server = tokio::spawn(serve(listener, move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            fixture()
        }));

        // A client that connects and says nothing must not block others.
        let _idle = TcpStream::connect(addr).await.unwrap();

        let reply = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: node\r\nAccept: */*\r\n\r\n",
        )
        .await;
        let (head, body) = split(&reply);
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"));
        let headers: Vec<&str> = lines.collect();
        assert!(headers.contains(&"Content-Type: text/plain; version=0.0.4; charset=utf-8"));
        assert!(headers.contains(&"Connection: close"));
        assert!(headers.contains(&format!("Content-Length: {}", body.len()).as_str()));
        assert_eq!(body, expected());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

        let reply = exchange(addr, b"GET /other HTTP/1.1\r\nHost: node\r\n\r\n").await;
        let (head, body) = split(&reply);
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert!(!body.contains("memifd_up"));

        let reply = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        let (head, body) = split(&reply);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, "");

        let reply = exchange(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 405 "), "{reply}");
        assert!(reply.contains("\r\nAllow: GET, HEAD\r\n"));

        let mut huge = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 2 * MAX_REQUEST_HEAD));
        huge.extend_from_slice(b"\r\n\r\n");
        let reply = exchange(addr, &huge).await;
        assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");

        // Not HTTP/1: refused before any snapshot.
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET /metrics SPDY/3\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            let reply = exchange(addr, bad).await;
            assert!(
                reply.is_empty() || reply.starts_with("HTTP/1.1 400 "),
                "{reply}"
            );
        }
        // The query string does not change the path.
        let reply = exchange(addr, b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n").await;
        assert!(
            reply.starts_with("HTTP/1.0 200 ") || reply.starts_with("HTTP/1.1 200 "),
            "{reply}"
        );

        // Only the GETs of /metrics (and the HEAD) took a snapshot.
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(!server.is_finished());
        server.abort();
    }
}

//! memifd, the real binary, against real network namespaces: the API
//! contract and its errors, traffic from a client inside the pod netns
//! (ours and DPDK's testpmd), restarts, crashes during bursts, concurrent
//! callers, unusable state files and hostile memif clients.
//!
//! Needs root and `ip netns` (and `dpdk-testpmd` for one test); without
//! them the tests FAIL with the reason, they never skip. Each test has its
//! own namespaces, state directory and API socket (names carry the process
//! id), so they run in parallel; the testpmd test serializes itself.

#[path = "common/kube_standin.rs"]
#[allow(dead_code)]
mod kube_standin;
#[path = "common/memifd.rs"]
mod memifd_common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use memif_cni::api::{
    AttachRequest, AttachmentInfo, AttachmentKey, ClientError, ErrorCode, PodRef, Reply,
    ReplyEnvelope, API_VERSION, MAX_MESSAGE,
};
use memif_cni::memif::socket::{Listener, SocketError};
use memif_cni::memif::wire::{Message, Mode};
use memif_cni::memif::{SlaveConfig, SocketAddr};
use memifd_common::*;

/// The listeners memifd should have in `ns`, according to `list`.
fn expected_listeners(list: &[AttachmentInfo], ns: &Netns) -> BTreeSet<String> {
    list.iter()
        .filter(|a| a.request.netns == ns.path())
        .map(|a| a.request.socket_name())
        .collect()
}

/// Every listener in `nses` belongs to an attachment memifd lists and every
/// listed attachment (all in `nses`) has its listener.
#[track_caller]
fn assert_listeners_match(m: &Memifd, nses: &[&Netns]) -> Vec<AttachmentInfo> {
    let list = m.client().list(None).expect("list");
    for a in &list {
        assert!(
            nses.iter().any(|n| n.path() == a.request.netns),
            "attachment {} in an unexpected netns {}",
            a.request.key,
            a.request.netns.display()
        );
    }
    for ns in nses {
        ns.wait_listeners(&expected_listeners(&list, ns));
    }
    list
}

/// The state file holds exactly the attachments of `list`.
#[track_caller]
fn assert_state_matches(m: &Memifd, list: &[AttachmentInfo]) {
    let mut state: Vec<(AttachmentKey, u32, AttachRequest)> = m
        .state()
        .expect("a state file")
        .into_iter()
        .map(|(r, sid)| (r.key.clone(), sid, r))
        .collect();
    state.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(state, identity(list), "state file and list differ");
}

// ---------------------------------------------------------------------
// 1. The API: round trips and error cases.
// ---------------------------------------------------------------------

const LIMITED: &str = r#"{
    "featureGates": {"memifEnabled": true, "vclEnabled": true},
    "maxInterfaceSpec": {"rxQueues": 4, "txQueues": 4, "ringSize": 4096, "bufferSize": 4096}
}"#;

/// status reports what memifd was configured with; attach returns the
/// attachment (request echoed, socketId, a listener fd) and binds
/// `@<ifname>` in the pod netns only; an identical attach returns the same
/// attachment, a different one under the same key is a conflict; get,
/// list (with and without a network), gc (only the named network, only
/// the attachments not listed valid), detach (unknown: false; known: true
/// and the listener is gone, a client is refused). The state file follows.
#[test]
fn api_round_trips() {
    preflight();
    let dir = TempDir::new("api");
    let ns1 = Netns::new("api1");
    let ns2 = Netns::new("api2");
    let m = Memifd::start_with(&dir.path, LIMITED, &[]);
    let mut c = m.client();

    let st = m.status();
    assert_eq!(st.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(st.api, API_VERSION);
    assert!(st.memif_enabled);
    assert_eq!(
        st.feature_gates,
        BTreeMap::from([("memifEnabled".into(), true), ("vclEnabled".into(), true)])
    );
    assert_eq!(
        (
            st.max_spec.rx_queues,
            st.max_spec.tx_queues,
            st.max_spec.ring_size,
            st.max_spec.buffer_size
        ),
        (4, 4, 4096, 4096)
    );
    assert_eq!((st.attachments, st.connected), (0, 0));
    assert!(!st.kube, "--no-kubernetes, yet kube is configured");
    assert!(st.uptime_secs < 60, "{st:?}");
    assert_eq!(st.state_file, m.state_file());

    // attach
    let mut a = request(&ns1, "ctr-a", "memif-eth1", "blue");
    a.spec.rx_queues = 2;
    a.spec.tx_queues = 3;
    a.spec.rx_ring_size = 2048;
    a.spec.tx_ring_size = 512;
    a.spec.mode = Mode::Ip;
    a.spec.secret = Some("s3cret".into());
    a.spec.mac = Some("02:00:00:00:00:01".into());
    a.ips = vec!["10.1.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ia = c.attach(a.clone()).expect("attach a");
    assert_eq!(ia.request, a, "the request is echoed");
    assert!(ia.listener_fd >= 0, "{ia:?}");
    assert!(ia.connection.is_none());
    assert_eq!(ia.stats, Default::default());
    assert!(ia.created >= t0 && ia.created <= t0 + 60, "{ia:?}");
    assert_eq!(
        ns1.listener_set(),
        BTreeSet::from(["@memif-eth1".to_string()])
    );
    assert!(ns2.listeners().is_empty(), "a listener leaked into ns2");
    assert_eq!(
        m.state(),
        Some(vec![(a.clone(), ia.socket_id.0)]),
        "attach answered before the state file had it"
    );

    // identical again: the same attachment
    let again = c.attach(a.clone()).expect("identical attach");
    assert_eq!(
        (again.socket_id, again.listener_fd, &again.request),
        (ia.socket_id, ia.listener_fd, &a)
    );
    assert_eq!(ns1.listeners(), vec!["@memif-eth1".to_string()]);

    // same key, different parameters
    let mut a2 = a.clone();
    a2.spec.rx_ring_size = 1024;
    let (code, msg) = api_code(c.attach(a2));
    assert_eq!(code, ErrorCode::Conflict, "{msg}");
    assert!(msg.contains("ctr-a/memif-eth1"), "{msg}");
    let mut a3 = a.clone();
    a3.netns = ns2.path();
    assert_eq!(api_code(c.attach(a3)).0, ErrorCode::Conflict);
    assert_eq!(
        identity(&c.list(None).unwrap()),
        identity(std::slice::from_ref(&ia))
    );
    assert!(ns2.listeners().is_empty());

    // get
    let (code, msg) = api_code(c.get(key("ctr-zz", "memif-eth1")));
    assert_eq!(code, ErrorCode::NotFound, "{msg}");
    let ga = c.get(a.key.clone()).expect("get a");
    assert_eq!((ga.socket_id, &ga.request), (ia.socket_id, &a));

    // two more, another network and another netns
    let b = request(&ns2, "ctr-b", "memif-eth1", "red");
    let ib = c.attach(b.clone()).expect("attach b");
    let cc = request(&ns1, "ctr-c", "memif-eth2", "blue");
    let ic = c.attach(cc.clone()).expect("attach c");
    let ids = BTreeSet::from([ia.socket_id, ib.socket_id, ic.socket_id]);
    assert_eq!(ids.len(), 3, "socket ids are not unique: {ids:?}");
    assert_eq!(
        ns1.listener_set(),
        BTreeSet::from(["@memif-eth1".to_string(), "@memif-eth2".to_string()])
    );
    assert_eq!(
        ns2.listener_set(),
        BTreeSet::from(["@memif-eth1".to_string()])
    );
    assert_eq!(m.status().attachments, 3);

    // list, with and without a network
    let all = c.list(None).expect("list");
    assert_eq!(
        identity(&all),
        identity(&[ia.clone(), ib.clone(), ic.clone()])
    );
    let sorted: Vec<u32> = all.iter().map(|x| x.socket_id.0).collect();
    assert!(sorted.windows(2).all(|w| w[0] < w[1]), "{sorted:?}");
    let blue = c.list(Some("blue".into())).expect("list blue");
    assert_eq!(identity(&blue), identity(&[ia.clone(), ic.clone()]));
    let red = c.list(Some("red".into())).expect("list red");
    assert_eq!(identity(&red), identity(std::slice::from_ref(&ib)));
    assert!(c.list(Some("green".into())).unwrap().is_empty());
    assert_state_matches(&m, &all);

    // gc: only blue, only what is not valid; b is valid in another
    // network's sense and must not matter.
    let removed = c
        .gc("blue".into(), vec![a.key.clone(), b.key.clone()])
        .expect("gc blue");
    assert_eq!(removed, vec![cc.key.clone()]);
    assert!(c.gc("green".into(), vec![]).unwrap().is_empty());
    assert!(c.gc("blue".into(), vec![a.key.clone()]).unwrap().is_empty());
    let all = assert_listeners_match(&m, &[&ns1, &ns2]);
    assert_eq!(identity(&all), identity(&[ia.clone(), ib.clone()]));
    assert_eq!(
        ns1.listener_set(),
        BTreeSet::from(["@memif-eth1".to_string()])
    );
    assert_state_matches(&m, &all);

    // detach
    assert!(!c
        .detach(key("ctr-zz", "memif-eth1"))
        .expect("detach unknown"));
    assert!(c.detach(a.key.clone()).expect("detach a"));
    ns1.wait_listeners(&BTreeSet::new());
    match ns1.connect(&SocketAddr::Abstract("memif-eth1".into())) {
        Err(SocketError::Io("connect", nix::Error::ECONNREFUSED)) => {}
        other => panic!("connect after detach: {other:?}"),
    }
    assert_eq!(api_code(c.get(a.key.clone())).0, ErrorCode::NotFound);
    assert!(!c.detach(a.key.clone()).expect("detach twice"));
    let all = assert_listeners_match(&m, &[&ns1, &ns2]);
    assert_eq!(identity(&all), identity(std::slice::from_ref(&ib)));
    assert_state_matches(&m, &all);
    assert_eq!(m.status().attachments, 1);
}

/// `Client::status` decodes memifd's answer to `status` (what memifctl and
/// the plugin use) and agrees with the fields memifd sent.
#[test]
fn client_status_decodes() {
    let dir = TempDir::new("status");
    let m = Memifd::start_with(&dir.path, LIMITED, &[]);
    let raw = m.status();
    let mut c = m.client();
    let st = c
        .status()
        .unwrap_or_else(|e| panic!("Client::status: {}", error_chain(&e)));
    assert_eq!(
        (st.api, &st.version, &st.feature_gates),
        (raw.api, &raw.version, &raw.feature_gates)
    );
    assert_eq!(
        (st.max_spec, st.attachments, st.kube),
        (raw.max_spec, raw.attachments, raw.kube)
    );
}

/// Every refused request leaves nothing behind: the list, the listeners
/// in both namespaces and the state file are as before. Covers: another
/// API version (and none), malformed JSON (the connection stays usable),
/// a request missing fields, an oversize request (answered, then the
/// connection closes), spec errors naming the field, a netns that does not
/// exist or is not a netns, a socket name already bound in the netns.
#[test]
fn api_errors_leave_nothing_behind() {
    preflight();
    let dir = TempDir::new("err");
    let ns1 = Netns::new("err1");
    let ns2 = Netns::new("err2");
    let m = Memifd::start_with(&dir.path, LIMITED, &[]);
    let mut c = m.client();
    let kept = c
        .attach(request(&ns1, "ctr-kept", "memif-eth1", "blue"))
        .expect("attach");
    let before = identity(&c.list(None).unwrap());
    let state_before = m.state();
    let unchanged = |c: &mut memif_cni::api::Client, what: &str| {
        assert_eq!(identity(&c.list(None).unwrap()), before, "after {what}");
        ns1.wait_listeners(&BTreeSet::from(["@memif-eth1".to_string()]));
        assert!(
            ns2.listeners().is_empty(),
            "after {what}: {:?}",
            ns2.listeners()
        );
        assert_eq!(m.state(), state_before, "after {what}");
    };

    // Raw lines on one connection: the connection survives each error.
    let mut raw = m.raw();
    let expect_err = |raw: &mut std::os::unix::net::UnixStream, line: &str, want: ErrorCode| {
        let v = Memifd::raw_line(raw, line.as_bytes())
            .unwrap_or_else(|| panic!("memifd closed the connection after {line:?}"));
        let r: ReplyEnvelope =
            serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("reply {v}: {e}"));
        assert_eq!(r.api, API_VERSION);
        match r.reply {
            Reply::Error(e) => {
                assert_eq!(e.code, want, "{line:?}: {}", e.message);
                e.message
            }
            other => panic!("{line:?} answered {other:?}"),
        }
    };
    let msg = expect_err(&mut raw, r#"{"api":2,"op":"status"}"#, ErrorCode::Version);
    assert!(msg.contains('2') && msg.contains('1'), "{msg}");
    expect_err(&mut raw, r#"{"op":"status"}"#, ErrorCode::Version);
    expect_err(
        &mut raw,
        r#"{"api":1,"op":"attach","#,
        ErrorCode::BadRequest,
    );
    expect_err(&mut raw, "\u{1}garbage\u{7f}", ErrorCode::BadRequest);
    expect_err(
        &mut raw,
        r#"{"api":1,"op":"attach"}"#,
        ErrorCode::BadRequest,
    );
    expect_err(
        &mut raw,
        r#"{"api":1,"op":"launch"}"#,
        ErrorCode::BadRequest,
    );
    expect_err(
        &mut raw,
        r#"{"api":2,"op":"attach","containerId":"x","ifname":"memif-eth9"}"#,
        ErrorCode::Version,
    );
    let v = Memifd::raw_line(&mut raw, br#"{"api":1,"op":"list"}"#)
        .expect("the connection is still open after the errors");
    let r: ReplyEnvelope = serde_json::from_value(v).expect("list reply");
    match r.reply {
        Reply::Attachments { items } => assert_eq!(identity(&items), before),
        other => panic!("list after errors on the same connection: {other:?}"),
    }
    drop(raw);
    unchanged(&mut c, "raw errors");

    // Oversize: answered, then closed.
    let mut raw = m.raw();
    raw.write_all(&vec![b'x'; MAX_MESSAGE + 1]).expect("write");
    let mut reply = Vec::new();
    raw.read_to_end(&mut reply).expect("read until close");
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("bad-request") && text.contains("longer"),
        "{text}"
    );
    m.assert_alive();

    // Spec errors name the field.
    let spec_case = |f: &dyn Fn(&mut AttachRequest), want: ErrorCode, words: &[&str]| {
        let mut r = request(&ns1, "ctr-bad", "memif-eth2", "blue");
        f(&mut r);
        let mut c = m.client();
        let (code, msg) = api_code(c.attach(r.clone()));
        assert_eq!(code, want, "{r:?}: {msg}");
        for w in words {
            assert!(msg.contains(w), "{msg:?} does not name {w:?}");
        }
        unchanged(&mut c, &msg);
    };
    use ErrorCode::{BadRequest, InvalidSpec};
    spec_case(&|r| r.spec.rx_queues = 0, InvalidSpec, &["rx queues", "0"]);
    spec_case(
        &|r| r.spec.rx_queues = 5,
        InvalidSpec,
        &["rx queues", "5", "4"],
    );
    spec_case(&|r| r.spec.tx_queues = 0, InvalidSpec, &["tx queues"]);
    spec_case(
        &|r| r.spec.tx_queues = 17,
        InvalidSpec,
        &["tx queues", "17"],
    );
    spec_case(
        &|r| r.spec.rx_ring_size = 1000,
        InvalidSpec,
        &["rx ring size", "1000"],
    );
    spec_case(
        &|r| r.spec.tx_ring_size = 8192,
        InvalidSpec,
        &["tx ring size", "4096"],
    );
    spec_case(&|r| r.spec.rx_ring_size = 1, InvalidSpec, &["rx ring size"]);
    spec_case(
        &|r| r.spec.buffer_size = 8192,
        InvalidSpec,
        &["buffer size"],
    );
    spec_case(&|r| r.spec.buffer_size = 64, InvalidSpec, &["buffer size"]);
    spec_case(&|r| r.spec.mode = Mode::PuntInject, InvalidSpec, &["punt"]);
    spec_case(
        &|r| r.spec.mac = Some("02:00:zz:00:00:01".into()),
        InvalidSpec,
        &["mac"],
    );
    spec_case(
        &|r| r.spec.secret = Some("x".repeat(25)),
        InvalidSpec,
        &["secret"],
    );
    spec_case(&|r| r.socket = Some("@".into()), InvalidSpec, &["socket"]);
    spec_case(
        &|r| r.key.container_id.clear(),
        BadRequest,
        &["containerId"],
    );
    spec_case(&|r| r.key.ifname.clear(), BadRequest, &["ifname"]);
    spec_case(&|r| r.network.clear(), BadRequest, &["network"]);
    spec_case(&|r| r.netns = "run/netns/x".into(), BadRequest, &["netns"]);

    // A netns that does not exist, a directory, a file that is no netns.
    let absent = PathBuf::from("/run/netns").join(unique("absent"));
    let absent_s = absent.display().to_string();
    spec_case(
        &|r| r.netns = absent.clone(),
        ErrorCode::Netns,
        &[&absent_s],
    );
    spec_case(&|r| r.netns = "/tmp".into(), ErrorCode::Netns, &["/tmp"]);
    let not_ns = dir.path.join("memifd.json");
    let not_ns_s = not_ns.display().to_string();
    spec_case(
        &|r| r.netns = not_ns.clone(),
        ErrorCode::Netns,
        &[&not_ns_s],
    );

    // A name already bound in the netns (by us, inside it).
    let busy = SocketAddr::Abstract("memif-busy".into());
    let b2 = busy.clone();
    let ours = memif_cni::netns::run_in(Some(&ns1.path()), move || Listener::bind(&b2))
        .expect("enter ns1")
        .expect("bind @memif-busy in ns1");
    let busy_req = request(&ns1, "ctr-busy", "memif-busy", "blue");
    let (code, msg) = api_code(c.attach(busy_req.clone()));
    assert_eq!(code, ErrorCode::Bind, "{msg}");
    assert!(msg.contains("@memif-busy"), "{msg}");
    assert_eq!(identity(&c.list(None).unwrap()), before);
    assert_eq!(
        ns1.listener_set(),
        BTreeSet::from(["@memif-eth1".to_string(), "@memif-busy".to_string()])
    );
    assert_eq!(m.state(), state_before);
    drop(ours);
    ns1.wait_listeners(&BTreeSet::from(["@memif-eth1".to_string()]));

    // Nothing of the refused attaches lingers: the same keys attach now,
    // and the first attachment is untouched.
    let ok = c
        .attach(busy_req.clone())
        .expect("attach once the name is free");
    assert!(ok.socket_id != kept.socket_id);
    let ok2 = c
        .attach(request(&ns1, "ctr-bad", "memif-eth2", "blue"))
        .expect("attach the key refused before");
    let all = assert_listeners_match(&m, &[&ns1, &ns2]);
    assert_eq!(identity(&all), identity(&[kept.clone(), ok, ok2]));
    assert_state_matches(&m, &all);
    m.assert_alive();
}

/// `CALICOVPP_FEATURE_GATES={"memifEnabled":false}`: status says so and
/// every attach is refused with code disabled, leaving nothing behind.
#[test]
fn disabled_gate_refuses_attach() {
    preflight();
    let dir = TempDir::new("gate");
    let ns = Netns::new("gate");
    let m = Memifd::start_with(
        &dir.path,
        "{}",
        &[("CALICOVPP_FEATURE_GATES", r#"{"memifEnabled":false}"#)],
    );
    let mut c = m.client();
    let st = m.status();
    assert!(!st.memif_enabled);
    assert_eq!(st.feature_gates.get("memifEnabled"), Some(&false));
    let (code, msg) = api_code(c.attach(request(&ns, "ctr", "memif-eth1", "blue")));
    assert_eq!(code, ErrorCode::Disabled, "{msg}");
    assert!(msg.contains("memifEnabled"), "{msg}");
    assert!(c.list(None).unwrap().is_empty());
    assert!(ns.listeners().is_empty());
    assert!(
        m.state().unwrap_or_default().is_empty(),
        "a refused attach reached the state file"
    );
    // detach, list, get still answer.
    assert!(!c.detach(key("ctr", "memif-eth1")).unwrap());
    assert_eq!(
        api_code(c.get(key("ctr", "memif-eth1"))).0,
        ErrorCode::NotFound
    );
    m.assert_alive();
}

// ---------------------------------------------------------------------
// 2. Traffic from inside the pod netns; nothing from the host.
// ---------------------------------------------------------------------

/// A client inside the pod netns connects (memifd reports the connection:
/// peer, rings, region) and its frames are counted exactly per queue, the
/// rings read back live; a client in the host netns is refused
/// (ECONNREFUSED). After the client leaves, the listener takes another.
#[test]
fn client_in_pod_netns_passes_traffic_host_cannot_connect() {
    preflight();
    let dir = TempDir::new("traffic");
    let ns = Netns::new("traffic");
    let m = Memifd::start(&dir.path);
    let mut c = m.client();
    let mut req = request(&ns, "ctr-t", "memif-eth1", "blue");
    // A name no one else binds in the host netns, so the refusal there
    // means the name is not there.
    let name = unique("traffic");
    req.socket = Some(format!("@{name}"));
    req.spec.rx_queues = 2;
    req.spec.tx_queues = 2;
    let info = c.attach(req.clone()).expect("attach");
    let addr = SocketAddr::Abstract(name.clone());
    ns.wait_listeners(&BTreeSet::from([format!("@{name}")]));

    match memif_cni::memif::socket::Channel::connect(&addr) {
        Err(SocketError::Io("connect", nix::Error::ECONNREFUSED)) => {}
        other => panic!("a client in the host netns: {other:?}"),
    }
    assert_eq!(c.get(req.key.clone()).unwrap().stats.connects, 0);

    let cfg = SlaveConfig {
        s2m_queues: 2,
        m2s_queues: 2,
        ..slave_cfg("pod-app")
    };
    let mut slave = ns.slave(&addr, &cfg).expect("client inside the netns");
    let a = wait_connected(&m, &req.key, true);
    let conn = a.connection.as_ref().unwrap();
    assert_eq!(a.socket_id, info.socket_id);
    assert_eq!(conn.peer_name, "pod-app");
    assert_eq!(conn.mode, Mode::Ethernet);
    assert_eq!(conn.buffer_size, 2048);
    assert!(conn.conn_fd >= 0);
    assert_eq!((conn.s2m.len(), conn.m2s.len()), (2, 2), "{conn:?}");
    assert!(conn
        .s2m
        .iter()
        .chain(&conn.m2s)
        .all(|r| r.size == 64 && r.int_fd >= 0));
    assert_eq!(conn.regions.len(), 1, "{conn:?}");
    assert_eq!(conn.regions[0].size, slave.region.len() as u64);
    assert_eq!(a.stats.connects, 1);
    assert_eq!(m.status().connected, 1);

    send_frames(&mut slave, 0, 1000, 100);
    send_frames(&mut slave, 1, 500, 60);
    let a = wait_rx(&m, &req.key, 1500);
    assert_eq!(a.stats.rx_bytes, 1000 * 100 + 500 * 60);
    assert_eq!(a.stats.errors, 0);
    let conn = a.connection.unwrap();
    assert_eq!(
        (
            conn.s2m[0].head,
            conn.s2m[0].tail,
            conn.s2m[1].head,
            conn.s2m[1].tail
        ),
        (1000, 1000, 500, 500),
        "rings as memifd reads them"
    );

    slave.disconnect("pod stops");
    let a = wait_connected(&m, &req.key, false);
    assert_eq!((a.stats.connects, a.stats.disconnects), (1, 1));
    assert_eq!(m.status().connected, 0);
    ns.wait_listeners(&BTreeSet::from([format!("@{name}")]));

    // The listener takes the next client.
    let mut again = ns.slave(&addr, &slave_cfg("pod-app-2")).expect("reconnect");
    let a = wait_connected(&m, &req.key, true);
    assert_eq!(a.connection.unwrap().peer_name, "pod-app-2");
    send_frames(&mut again, 0, 10, 64);
    let a = wait_rx(&m, &req.key, 1510);
    assert_eq!(a.stats.connects, 2);
}

/// Serializes the tests that run dpdk-testpmd: both it and memifd poll.
static TESTPMD: Mutex<()> = Mutex::new(());
const TESTPMD_STARTUP: Duration = Duration::from_secs(20);
const PROMPT: &str = "testpmd> ";

/// An interactive `dpdk-testpmd` memif client inside a netns, driven
/// through stdin; killed on drop, its runtime directory removed.
struct Testpmd {
    child: Child,
    stdin: Option<ChildStdin>,
    out: PathBuf,
    prefix: String,
    prompts: usize,
}

impl Testpmd {
    /// `socket` is DPDK's spelling of the abstract name (no '@').
    fn client(ns: &Netns, dir: &Path, socket: &str, args: &[&str]) -> Testpmd {
        let prefix = unique("testpmd");
        let out = dir.join("testpmd.out");
        let file = File::create(&out).expect("testpmd output file");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "stdbuf", "-oL", "dpdk-testpmd"])
            .args(["-l", "0,1", "--main-lcore", "0", "--no-huge", "-m", "1024"])
            .args(["--no-pci", "--file-prefix", &prefix])
            .arg(format!(
                "--vdev=net_memif0,role=client,socket={socket},socket-abstract=yes,id=0"
            ))
            .args(["--", "-i", "--no-mlockall", "--total-num-mbufs=32768"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(file.try_clone().expect("dup output file"))
            .stderr(file)
            .spawn()
            .expect("spawn dpdk-testpmd");
        let stdin = child.stdin.take();
        let mut t = Testpmd {
            child,
            stdin,
            out,
            prefix,
            prompts: 0,
        };
        t.wait_prompt(1);
        t
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.out).unwrap_or_default()).into_owned()
    }

    #[track_caller]
    fn wait_prompt(&mut self, n: usize) {
        let deadline = Instant::now() + TESTPMD_STARTUP;
        loop {
            let text = self.output();
            if text.matches(PROMPT).count() >= n {
                self.prompts = n;
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("testpmd exited ({st}) early:\n{text}");
            }
            assert!(Instant::now() < deadline, "testpmd: no prompt:\n{text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs a command; returns what it printed before the next prompt.
    #[track_caller]
    fn cmd(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("testpmd stdin");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("testpmd: write {line:?}: {e}"));
        let n = self.prompts + 1;
        self.wait_prompt(n);
        self.output()
            .split(PROMPT)
            .nth(n - 1)
            .unwrap_or_default()
            .to_string()
    }

    #[track_caller]
    fn wait_link_up(&mut self) {
        let deadline = Instant::now() + TESTPMD_STARTUP;
        while !self.cmd("show port info 0").contains("Link status: up") {
            assert!(
                Instant::now() < deadline,
                "testpmd: the memif link never came up:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[track_caller]
    fn quit(&mut self) -> String {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "quit");
        }
        let deadline = Instant::now() + TESTPMD_STARTUP;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                let text = self.output();
                assert!(st.success(), "testpmd exited with {st}:\n{text}");
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "testpmd did not quit:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
        if std::thread::panicking() {
            eprintln!("--- testpmd output ---\n{}", self.output());
        }
    }
}

/// The number after `label` in `text`.
fn number_after(text: &str, label: &str) -> u64 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"));
    text[at + label.len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|e| panic!("{label:?}: {e} in:\n{text}"))
}

/// dpdk-testpmd (DPDK's memif PMD, client role) inside the pod netns,
/// `txonly`: memifd reports the connection and counts exactly the frames
/// testpmd says it sent, 64 bytes each; after testpmd quits memifd counts
/// the disconnect and keeps serving.
#[test]
fn dpdk_testpmd_client_in_pod_netns() {
    let _serial = TESTPMD.lock().unwrap_or_else(|e| e.into_inner());
    preflight();
    for tool in ["dpdk-testpmd", "stdbuf"] {
        assert!(
            in_path(tool),
            "`{tool}` is not in PATH: install Debian packages dpdk, librte-net-memif23 and \
             coreutils (`bash e2e/deps.sh`)"
        );
    }
    let dir = TempDir::new("testpmd");
    let ns = Netns::new("testpmd");
    let m = Memifd::start(&dir.path);
    let req = request(&ns, "ctr-dpdk", "memif-eth1", "blue");
    m.client().attach(req.clone()).expect("attach");
    ns.wait_listeners(&BTreeSet::from(["@memif-eth1".to_string()]));

    let mut tp = Testpmd::client(&ns, &dir.path, "memif-eth1", &["--forward-mode=txonly"]);
    tp.wait_link_up();
    let a = wait_connected(&m, &req.key, true);
    let conn = a.connection.unwrap();
    // DPDK's memif PMD names itself by its version in INIT.
    assert!(conn.peer_name.starts_with("DPDK "), "{conn:?}");
    assert_eq!((conn.s2m.len(), conn.m2s.len()), (1, 1), "{conn:?}");
    assert!(!conn.regions.is_empty());

    tp.cmd("start");
    std::thread::sleep(Duration::from_millis(1500));
    let stop = tp.cmd("stop");
    let at = stop
        .find("Forward statistics for port 0")
        .unwrap_or_else(|| panic!("no forward statistics in:\n{stop}"));
    let sent = number_after(&stop[at..], "TX-packets:");
    assert!(sent >= 1000, "testpmd sent only {sent} frames:\n{stop}");
    // Still connected: memifd drains what testpmd put on the ring.
    let a = wait_rx(&m, &req.key, sent);
    assert_eq!(a.stats.rx_bytes, sent * 64);
    assert_eq!(a.stats.errors, 0);
    let conn = a.connection.expect("still connected");
    assert_eq!(conn.s2m[0].head, conn.s2m[0].tail, "{conn:?}");
    assert_eq!(conn.s2m[0].head, sent as u16, "{conn:?}");

    tp.quit();
    let a = wait_connected(&m, &req.key, false);
    assert_eq!((a.stats.connects, a.stats.disconnects), (1, 1));
    assert_eq!(a.stats.rx_packets, sent);
    m.assert_alive();
    ns.wait_listeners(&BTreeSet::from(["@memif-eth1".to_string()]));
}

// ---------------------------------------------------------------------
// 3. Restart.
// ---------------------------------------------------------------------

/// 20 attachments over 4 namespaces; memifd is stopped with `sig` (and, if
/// `drop_last`, the last namespace deleted while it is down), then started
/// again on the same state directory.
fn restart_case(tag: &str, sig: Stop, drop_last: bool) {
    preflight();
    let dir = TempDir::new(tag);
    let mut nses: Vec<Netns> = (0..4).map(|n| Netns::new(&format!("{tag}{n}"))).collect();
    let mut m = Memifd::start(&dir.path);
    let mut c = m.client();
    for (n, ns) in nses.iter().enumerate() {
        for i in 0..5 {
            let net = if i % 2 == 0 { "blue" } else { "red" };
            c.attach(request(
                ns,
                &format!("ctr{n}-{i}"),
                &format!("memif-eth{i}"),
                net,
            ))
            .expect("attach");
        }
    }
    let before = c.list(None).expect("list");
    assert_eq!(before.len(), 20);
    let names: BTreeSet<String> = (0..5).map(|i| format!("@memif-eth{i}")).collect();
    for ns in &nses {
        assert_eq!(ns.listener_set(), names);
    }
    let first = before[0].request.clone();
    let mut old = nses[0]
        .slave(
            &SocketAddr::parse(&first.socket_name()).unwrap(),
            &slave_cfg("old"),
        )
        .expect("connect before the restart");
    send_frames(&mut old, 0, 10, 64);
    wait_rx(&m, &first.key, 10);
    drop(c);

    let st = m.stop(sig);
    if sig == Stop::Term {
        assert!(
            st.success(),
            "memifd exited with {st} on SIGTERM:\n{}",
            m.log()
        );
        assert!(!m.api_socket().exists(), "the API socket is left behind");
    } else {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(9), "{st}");
    }
    // The old client sees its master gone; no listener outlives memifd.
    wait_for("the old client sees memifd gone", WAIT, || {
        old.poll_disconnect()
    });
    for ns in &nses {
        assert!(ns.listeners().is_empty(), "a listener outlived memifd");
    }
    let in_file = m.state().expect("state file");
    assert_eq!(in_file.len(), 20);
    let mut expected = before.clone();
    if drop_last {
        let mut gone = nses.pop().unwrap();
        gone.delete();
        expected.retain(|a| a.request.netns != gone.path());
    }

    m.restart();
    let mut c = m.client();
    let after = c.list(None).expect("list after restart");
    assert_eq!(
        identity(&after),
        identity(&expected),
        "restored attachments"
    );
    assert!(after
        .iter()
        .all(|a| a.listener_fd >= 0 && a.connection.is_none()));
    let st = m.status();
    assert_eq!((st.attachments, st.connected), (expected.len(), 0));
    for ns in &nses {
        assert_eq!(ns.listener_set(), names, "listeners in {}", ns.name());
    }
    assert_state_matches(&m, &after);
    let log = m.log();
    assert_eq!(
        log.matches("its netns is gone").count(),
        if drop_last { 5 } else { 0 },
        "{log}"
    );

    // Clients connect again, to every restored attachment.
    let mut slaves = Vec::new();
    for (k, a) in after.iter().enumerate() {
        let ns = nses
            .iter()
            .find(|n| n.path() == a.request.netns)
            .expect("netns of a restored attachment");
        let addr = SocketAddr::parse(&a.request.socket_name()).unwrap();
        let mut s = ns
            .slave(&addr, &slave_cfg(&format!("new{k}")))
            .unwrap_or_else(|e| panic!("{}: connect after restart: {e:?}", a.request.key));
        send_frames(&mut s, 0, k + 1, 64);
        slaves.push(s);
    }
    for (k, a) in after.iter().enumerate() {
        let got = wait_rx(&m, &a.request.key, k as u64 + 1);
        assert_eq!(got.connection.unwrap().peer_name, format!("new{k}"));
    }
    assert_eq!(m.status().connected, expected.len());

    // A new attachment gets a socket id of its own.
    let fresh = c
        .attach(request(&nses[0], "ctr-new", "memif-new", "blue"))
        .expect("attach after restart");
    assert!(
        after.iter().all(|a| a.socket_id != fresh.socket_id),
        "socket id {} is taken",
        fresh.socket_id
    );
    m.assert_alive();
}

/// SIGTERM: memifd exits cleanly, keeps the state, and on the next start
/// every listener is back and clients connect again.
#[test]
fn restart_after_sigterm_restores_every_listener() {
    restart_case("rterm", Stop::Term, false);
}

/// SIGKILL, and a pod netns deleted while memifd is down: the other 15
/// come back, the 5 of the deleted netns are dropped from the state file.
#[test]
fn restart_after_sigkill_drops_deleted_netns() {
    restart_case("rkill", Stop::Kill, true);
}

// ---------------------------------------------------------------------
// 4. kill -9 during a burst of attaches.
// ---------------------------------------------------------------------

/// 8 threads × 25 attaches over 4 namespaces; SIGKILL once 50 are
/// acknowledged. The state file parses; after a restart every acknowledged
/// attach is there with its socket id, nothing else but the ones in flight,
/// and every listener in the namespaces belongs to a listed attachment.
#[test]
fn sigkill_during_attach_burst_keeps_every_acknowledged_attach() {
    preflight();
    const THREADS: usize = 8;
    const EACH: usize = 25;
    let dir = TempDir::new("burst");
    let nses: Vec<Netns> = (0..4).map(|n| Netns::new(&format!("burst{n}"))).collect();
    let mut m = Memifd::start(&dir.path);
    let acked = Arc::new(Mutex::new(Vec::<AttachmentInfo>::new()));
    let tried = Arc::new(Mutex::new(Vec::<AttachRequest>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let reqs: Vec<AttachRequest> = (0..EACH)
                .map(|i| {
                    request(
                        &nses[t % 4],
                        &format!("ctr{t}-{i}"),
                        &format!("m{t}x{i}"),
                        "blue",
                    )
                })
                .collect();
            let mut c = m.client();
            let (acked, tried, count) = (acked.clone(), tried.clone(), count.clone());
            std::thread::spawn(move || {
                for r in reqs {
                    tried.lock().unwrap().push(r.clone());
                    match c.attach(r) {
                        Ok(a) => {
                            acked.lock().unwrap().push(a);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(ClientError::Api(e)) => panic!("attach refused: {e}"),
                        // memifd is gone.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    wait_for("50 attaches acknowledged", Duration::from_secs(60), || {
        (count.load(Ordering::SeqCst) >= 50).then_some(())
    });
    m.stop(Stop::Kill);
    let at_kill = count.load(Ordering::SeqCst);
    for t in threads {
        t.join().expect("an attach thread failed");
    }
    let acked = acked.lock().unwrap().clone();
    let tried = tried.lock().unwrap().clone();
    assert!(
        acked.len() < THREADS * EACH,
        "every attach finished before the kill: the test tested nothing"
    );
    eprintln!(
        "{} of {} attaches acknowledged before the kill ({at_kill} seen at the kill)",
        acked.len(),
        tried.len()
    );

    // The state file parses and holds every acknowledged attach.
    let state = m.state().expect("a state file");
    let in_state: BTreeMap<AttachmentKey, u32> =
        state.iter().map(|(r, s)| (r.key.clone(), *s)).collect();
    assert_eq!(in_state.len(), state.len(), "a key twice in the state file");
    for a in &acked {
        assert_eq!(
            in_state.get(&a.request.key),
            Some(&a.socket_id.0),
            "acknowledged {} is not in the state file",
            a.request.key
        );
    }

    m.restart();
    let list = m.client().list(None).expect("list");
    let listed: BTreeMap<AttachmentKey, &AttachmentInfo> =
        list.iter().map(|a| (a.request.key.clone(), a)).collect();
    for a in &acked {
        let l = listed
            .get(&a.request.key)
            .unwrap_or_else(|| panic!("acknowledged {} lost", a.request.key));
        assert_eq!((l.socket_id, &l.request), (a.socket_id, &a.request));
    }
    let tried_keys: BTreeSet<&AttachmentKey> = tried.iter().map(|r| &r.key).collect();
    for a in &list {
        assert!(
            tried_keys.contains(&a.request.key),
            "{} was never asked",
            a.request.key
        );
    }
    let ids: BTreeSet<u32> = list.iter().map(|a| a.socket_id.0).collect();
    assert_eq!(ids.len(), list.len(), "socket ids are not unique");
    let refs: Vec<&Netns> = nses.iter().collect();
    let list = assert_listeners_match(&m, &refs);
    assert_state_matches(&m, &list);
    m.assert_alive();
}

// ---------------------------------------------------------------------
// 5. Concurrent callers.
// ---------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Outcome {
    Attached(AttachmentInfo),
    Refused(ErrorCode, String),
    Detached(bool),
    Got(AttachmentInfo),
    Failed(String),
}

#[derive(Debug, Clone)]
struct Op {
    key: usize,
    /// `Some(variant)` for attach, `None` for detach, get otherwise.
    attach: Option<usize>,
    get: bool,
    start: Instant,
    end: Instant,
    outcome: Outcome,
}

/// Small xorshift: a fixed, per-thread sequence of operations.
fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Identical attaches racing (16 threads, one request) all succeed with one
/// socket id and one listener. Then 16 threads mix attach (two variants
/// per key), detach and get on 6 overlapping keys: memifd stays up, every
/// answer is one of the allowed ones, the final list is what the last
/// successful operation on each key left (linearizable), and no listener
/// exists without an attachment.
#[test]
fn concurrent_callers_stay_consistent() {
    preflight();
    const THREADS: usize = 16;
    const OPS: usize = 40;
    let dir = TempDir::new("conc");
    let nses = [Netns::new("conc0"), Netns::new("conc1")];
    let m = Memifd::start(&dir.path);

    // Identical concurrent attaches.
    for round in 0..3 {
        let req = request(
            &nses[round % 2],
            &format!("same{round}"),
            &format!("memif-same{round}"),
            "blue",
        );
        let barrier = Arc::new(Barrier::new(THREADS));
        let got: Vec<AttachmentInfo> = (0..THREADS)
            .map(|_| {
                let (mut c, req, b) = (m.client(), req.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    c.attach(req)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap().expect("identical attach"))
            .collect();
        let ids: BTreeSet<u32> = got.iter().map(|a| a.socket_id.0).collect();
        assert_eq!(ids.len(), 1, "identical attaches got socket ids {ids:?}");
        assert!(got.iter().all(|a| a.request == req));
        let n = m
            .client()
            .list(None)
            .unwrap()
            .iter()
            .filter(|a| a.request.key == req.key)
            .count();
        assert_eq!(n, 1);
    }
    assert_listeners_match(&m, &[&nses[0], &nses[1]]);

    // Mixed operations on overlapping keys.
    let variants: Vec<[AttachRequest; 2]> = (0..6)
        .map(|k| {
            let base = request(
                &nses[k % 2],
                &format!("ctr{k}"),
                &format!("memif-eth{}", k / 2),
                "red",
            );
            let mut other = base.clone();
            other.spec.tx_ring_size = 512;
            other.ips = vec!["10.9.0.9".parse().unwrap()];
            [base, other]
        })
        .collect();
    let variants = Arc::new(variants);
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (mut c, vs, b) = (m.client(), variants.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ ((t as u64 + 1) * 0x1000_0001);
                let mut ops = Vec::new();
                b.wait();
                for _ in 0..OPS {
                    let r = next(&mut seed);
                    let k = (r % 6) as usize;
                    let pick = (r >> 8) % 100;
                    let start = Instant::now();
                    let (attach, get, outcome) = if pick < 35 {
                        let v = ((r >> 16) % 4 == 0) as usize;
                        let o = match c.attach(vs[k][v].clone()) {
                            Ok(a) => Outcome::Attached(a),
                            Err(ClientError::Api(e)) => Outcome::Refused(e.code, e.message),
                            Err(e) => Outcome::Failed(e.to_string()),
                        };
                        (Some(v), false, o)
                    } else if pick < 70 {
                        let o = match c.detach(vs[k][0].key.clone()) {
                            Ok(x) => Outcome::Detached(x),
                            Err(ClientError::Api(e)) => Outcome::Refused(e.code, e.message),
                            Err(e) => Outcome::Failed(e.to_string()),
                        };
                        (None, false, o)
                    } else {
                        let o = match c.get(vs[k][0].key.clone()) {
                            Ok(a) => Outcome::Got(a),
                            Err(ClientError::Api(e)) => Outcome::Refused(e.code, e.message),
                            Err(e) => Outcome::Failed(e.to_string()),
                        };
                        (None, true, o)
                    };
                    ops.push(Op {
                        key: k,
                        attach,
                        get,
                        start,
                        end: Instant::now(),
                        outcome,
                    });
                }
                ops
            })
        })
        .collect();
    let ops: Vec<Op> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a caller thread panicked"))
        .collect();
    m.assert_alive();

    // Every answer is an allowed one.
    let mut bad = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for op in &ops {
        let vs = &variants[op.key];
        let label = match (&op.outcome, op.attach, op.get) {
            (Outcome::Attached(a), Some(v), _) => {
                if a.request != vs[v] {
                    bad.push(format!(
                        "attach of variant {v} answered with {:?}",
                        a.request
                    ));
                }
                "attached"
            }
            (Outcome::Refused(ErrorCode::Conflict, msg), Some(_), _) => {
                if !msg.contains(&vs[0].key.to_string()) {
                    bad.push(format!("conflict without the key: {msg}"));
                }
                "conflict"
            }
            (Outcome::Detached(true), None, false) => "detached",
            (Outcome::Detached(false), None, false) => "detached-unknown",
            (Outcome::Got(a), None, true) => {
                if a.request != vs[0] && a.request != vs[1] {
                    bad.push(format!("get answered {:?}", a.request));
                }
                "got"
            }
            (Outcome::Refused(ErrorCode::NotFound, _), None, true) => "not-found",
            (Outcome::Refused(code, msg), attach, get) => {
                bad.push(format!(
                    "key {} (attach {attach:?}, get {get}): refused {code:?}: {msg}",
                    op.key
                ));
                "unexpected"
            }
            (Outcome::Failed(e), ..) => {
                bad.push(format!("key {}: no answer: {e}", op.key));
                "failed"
            }
            (other, attach, get) => {
                bad.push(format!("attach {attach:?}, get {get}: {other:?}"));
                "unexpected"
            }
        };
        *counts.entry(label).or_default() += 1;
    }
    eprintln!("outcomes: {counts:?}");
    for want in ["attached", "detached", "got"] {
        assert!(
            counts.get(want).is_some_and(|&n| n > 0),
            "no {want} at all: {counts:?}"
        );
    }

    // The final state of each key is the effect of a successful mutation
    // that no other successful mutation of that key strictly followed.
    let list = assert_listeners_match(&m, &[&nses[0], &nses[1]]);
    for (k, vs) in variants.iter().enumerate() {
        let effects: Vec<(&Op, Option<usize>)> = ops
            .iter()
            .filter(|o| o.key == k)
            .filter_map(|o| match (&o.outcome, o.attach) {
                // What memifd answered it holds (the variant asked for,
                // unless the answer is already counted as wrong above).
                (Outcome::Attached(a), Some(_)) => {
                    Some((o, variants[k].iter().position(|v| *v == a.request)))
                }
                (Outcome::Detached(_), None) => Some((o, None)),
                _ => None,
            })
            .collect();
        let last: BTreeSet<Option<usize>> = effects
            .iter()
            .filter(|(o, _)| !effects.iter().any(|(p, _)| o.end < p.start))
            .map(|(_, e)| *e)
            .collect();
        let now = list.iter().find(|a| a.request.key == vs[0].key).map(|a| {
            vs.iter()
                .position(|v| *v == a.request)
                .expect("a known variant")
        });
        if effects.is_empty() {
            assert_eq!(now, None, "key {k} present without a successful attach");
        } else {
            assert!(
                last.contains(&now),
                "key {k}: final {now:?} is not what the last operations left ({last:?})"
            );
        }
    }
    let ids: BTreeSet<u32> = list.iter().map(|a| a.socket_id.0).collect();
    assert_eq!(ids.len(), list.len());
    assert_state_matches(&m, &list);

    // Checked last, so the state checks above run whatever the answers.
    assert!(bad.is_empty(), "unexpected answers:\n{}", bad.join("\n"));

    // Clean up through the API: nothing is left anywhere.
    let mut c = m.client();
    for a in &list {
        assert!(c.detach(a.request.key.clone()).unwrap());
    }
    assert!(c.list(None).unwrap().is_empty());
    for ns in &nses {
        ns.wait_listeners(&BTreeSet::new());
    }
    assert_eq!(m.state(), Some(vec![]));
}

/// Detach then attach of the same key, one caller, one after the other:
/// each attach must bind, since the detach before it was answered (CNI
/// DEL then ADD of a pod's interface, as on a kubelet retry).
#[test]
fn detach_then_attach_rebinds_at_once() {
    preflight();
    let dir = TempDir::new("rebind");
    let ns = Netns::new("rebind");
    let m = Memifd::start(&dir.path);
    let mut c = m.client();
    let req = request(&ns, "ctr-r", "memif-eth1", "blue");
    let mut refused = Vec::new();
    for i in 0..100 {
        match c.attach(req.clone()) {
            Ok(_) => assert!(c.detach(req.key.clone()).expect("detach")),
            Err(e) => refused.push(format!("round {i}: {}", error_chain(&e))),
        }
    }
    assert!(
        refused.is_empty(),
        "{} of 100 attaches right after a detach were refused:\n{}",
        refused.len(),
        refused.join("\n")
    );
    ns.wait_listeners(&BTreeSet::new());
    assert_eq!(m.state(), Some(vec![]));
}

// ---------------------------------------------------------------------
// 6. Unusable state files.
// ---------------------------------------------------------------------

/// Garbage, and a state file of an unknown version: memifd starts, says
/// so in its log, moves the file aside (`state.json.bad-*`, content
/// intact) and serves normally, writing a fresh state file.
#[test]
fn unusable_state_file_is_moved_aside() {
    preflight();
    let ns = Netns::new("badstate");
    for (tag, body, why) in [
        ("garbage", "\u{0}\u{1}{{{ not json", "not a state file"),
        (
            "version",
            r#"{"version": 99, "attachments": []}"#,
            "version 99",
        ),
    ] {
        let dir = TempDir::new(&format!("bad-{tag}"));
        let state = dir.path.join("state.json");
        fs::write(&state, body).unwrap();
        let m = Memifd::start(&dir.path);
        let log = m.log();
        assert!(
            log.contains("moved aside") && log.contains(why),
            "{tag}: {log}"
        );
        let aside: Vec<PathBuf> = fs::read_dir(&dir.path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("state.json.bad-")
            })
            .collect();
        assert_eq!(aside.len(), 1, "{tag}: {aside:?}");
        assert_eq!(fs::read_to_string(&aside[0]).unwrap(), body, "{tag}");
        assert!(!state.exists(), "{tag}: the bad file is still in place");

        let mut c = m.client();
        assert_eq!(m.status().attachments, 0);
        let req = request(&ns, &format!("ctr-{tag}"), &format!("memif-{tag}"), "blue");
        let a = c
            .attach(req.clone())
            .expect("attach after a bad state file");
        assert_eq!(m.state(), Some(vec![(req.clone(), a.socket_id.0)]));
        assert!(ns.listener_set().contains(&req.socket_name()));
        assert!(c.detach(req.key).unwrap());
    }
}

// ---------------------------------------------------------------------
// 7. Hostile memif clients.
// ---------------------------------------------------------------------

/// On pod A's socket: a client that sends garbage during the handshake is
/// refused and closed; a connected client that publishes a descriptor of
/// a region it never gave is disconnected with the reason. memifd counts
/// both, stays up, pod B's client keeps passing traffic throughout, and A
/// serves a well-behaved client again.
#[test]
fn hostile_clients_are_disconnected_others_keep_working() {
    preflight();
    let dir = TempDir::new("hostile");
    let (nsa, nsb) = (Netns::new("hostA"), Netns::new("hostB"));
    let m = Memifd::start(&dir.path);
    let mut c = m.client();
    let a = request(&nsa, "ctr-a", "memif-eth1", "blue");
    let b = request(&nsb, "ctr-b", "memif-eth1", "blue");
    c.attach(a.clone()).expect("attach a");
    c.attach(b.clone()).expect("attach b");
    let addr = SocketAddr::Abstract("memif-eth1".into());
    let mut good = nsb.slave(&addr, &slave_cfg("good")).expect("b connects");
    send_frames(&mut good, 0, 100, 64);
    wait_rx(&m, &b.key, 100);

    // Garbage after HELLO.
    let chan = nsa.connect(&addr).expect("connect to a");
    match chan.recv().expect("HELLO").msg {
        Message::Hello(_) => {}
        other => panic!("expected HELLO, got {other:?}"),
    }
    chan.send_raw(b"\xffgarbage", None).expect("send garbage");
    loop {
        match chan.recv() {
            Ok(r) if matches!(r.msg, Message::Disconnect(_)) => continue,
            Err(SocketError::Closed) => break,
            other => panic!("memifd did not close a garbage-sending client: {other:?}"),
        }
    }
    wait_for("the refusal is counted", WAIT, || {
        (c.get(a.key.clone()).unwrap().stats.errors >= 1).then_some(())
    });

    // A bad descriptor after connecting.
    let mut evil = nsa.slave(&addr, &slave_cfg("evil")).expect("a connects");
    send_frames(&mut evil, 0, 10, 64);
    wait_rx(&m, &a.key, 10);
    post_bad_descriptor(&evil);
    let reason = wait_for("memifd disconnects the bad client", WAIT, || {
        evil.poll_disconnect()
    });
    assert!(reason.contains("bad descriptor"), "{reason}");
    let ia = wait_connected(&m, &a.key, false);
    assert_eq!(
        ia.stats.rx_packets, 10,
        "the bad descriptor was counted as a frame"
    );
    assert!(ia.stats.errors >= 2, "{:?}", ia.stats);
    assert_eq!((ia.stats.connects, ia.stats.disconnects), (1, 1));

    // B never noticed; A serves again.
    m.assert_alive();
    send_frames(&mut good, 0, 100, 64);
    let ib = wait_rx(&m, &b.key, 200);
    assert_eq!(
        (ib.stats.connects, ib.stats.disconnects, ib.stats.errors),
        (1, 0, 0)
    );
    assert!(ib.connection.is_some());
    let mut again = nsa
        .slave(&addr, &slave_cfg("good-a"))
        .expect("a connects again");
    send_frames(&mut again, 0, 5, 64);
    wait_rx(&m, &a.key, 15);
    // memifd marks a connection up in its API just after the worker took
    // it, so its first frames may be counted a moment before.
    wait_for("both pods show connected", WAIT, || {
        (m.status().connected == 2).then_some(())
    });
}

/// The plugin asks memifd for a pod's annotations: memifd reads the pod from
/// the API server named by its kubeconfig (the stand-in, over https with a
/// bearer token) and answers only the memif-related ones. Unknown pods, an
/// API server that forbids the read, and a memifd without API access each
/// answer a `kube` error that says why, and memifd keeps serving.
#[test]
fn pod_annotations_from_the_kubernetes_api() {
    preflight();
    let api = kube_standin::KubeStandin::start_tls();
    let dir = TempDir::new("kube");
    let m = Memifd::start_kube(&dir.path, &api.kubeconfig());
    assert!(m.status().kube, "memifd should report API access");
    let pod = PodRef {
        namespace: kube_standin::POD_NAMESPACE.into(),
        name: kube_standin::POD_NAME.into(),
    };
    let got = m
        .client()
        .pod_annotations(pod.clone())
        .expect("annotations");
    let want: BTreeMap<String, String> = [
        (
            "cni.projectcalico.org/vppInterfacesSpec",
            kube_standin::INTERFACES_SPEC,
        ),
        ("k8s.v1.cni.cncf.io/networks", kube_standin::NETWORKS),
        (
            "k8s.v1.cni.cncf.io/network-status",
            kube_standin::NETWORK_STATUS,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want, "only memif-related annotations, verbatim");
    let reqs = api.requests();
    let last = reqs.last().expect("a request reached the API server");
    assert_eq!(last.method, "GET");
    assert_eq!(
        last.path,
        format!(
            "/api/v1/namespaces/{}/pods/{}",
            kube_standin::POD_NAMESPACE,
            kube_standin::POD_NAME
        )
    );
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {}", kube_standin::TOKEN).as_str())
    );

    let missing = PodRef {
        namespace: "demo".into(),
        name: "no-such-pod".into(),
    };
    match m.client().pod_annotations(missing) {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, ErrorCode::Kube, "{}", e.message);
            assert!(e.message.contains("no-such-pod"), "{}", e.message);
        }
        other => panic!("unknown pod: expected a kube error, got {other:?}"),
    }
    api.set_behaviour(kube_standin::Behaviour::Forbid);
    match m.client().pod_annotations(pod.clone()) {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, ErrorCode::Kube, "{}", e.message);
            assert!(
                e.message.to_lowercase().contains("forbidden"),
                "{}",
                e.message
            );
        }
        other => panic!("forbidden: expected a kube error, got {other:?}"),
    }
    m.assert_alive();

    // Without API access the request is refused, not hung.
    let dir2 = TempDir::new("nokube");
    let m2 = Memifd::start(&dir2.path);
    assert!(!m2.status().kube);
    match m2.client().pod_annotations(pod) {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, ErrorCode::Kube, "{}", e.message);
            assert!(
                e.message.contains("no Kubernetes API access"),
                "{}",
                e.message
            );
        }
        other => panic!("no API access: expected a kube error, got {other:?}"),
    }
}

/// `memifctl show ...` against a live memifd with one connected and one idle
/// attachment: the text names the netns and socket, the connection's rings
/// and the traffic counted, and `--json` decodes to what `list` says.
#[test]
fn memifctl_show_against_live_memifd() {
    preflight();
    let dir = TempDir::new("showlive");
    let ns = Netns::new("showlive");
    let m = Memifd::start(&dir.path);
    let mut c = m.client();
    let name = unique("showlive");
    let mut req = request(&ns, "ctr-show", "memif-eth1", "blue");
    req.socket = Some(format!("@{name}"));
    req.ips = vec!["10.7.0.5".parse().unwrap(), "fd00:7::5".parse().unwrap()];
    let info = c.attach(req.clone()).expect("attach");
    let idle = request(&ns, "ctr-idle", "memif-eth2", "blue");
    c.attach(idle).expect("attach idle");
    ns.wait_listeners(&BTreeSet::from([format!("@{name}"), "@memif-eth2".into()]));
    let mut slave = ns
        .slave(&SocketAddr::Abstract(name.clone()), &slave_cfg("live-app"))
        .expect("client inside the netns");
    wait_connected(&m, &req.key, true);
    send_frames(&mut slave, 0, 7, 100);
    wait_rx(&m, &req.key, 7);
    // The client sleeps on interrupts; memifd answers 3 ARP requests, one
    // at a time: 3 interrupts on the ring towards the pod, counted.
    slave.rx[0].set_interrupts(true);
    let mut bufs = memif_cni::memif::PacketBuf::batch(8, 2048);
    for i in 0..3u8 {
        let arp = memif_cni::packet::build::arp_request(
            memif_cni::mac::Mac([2, 0, 0, 0, 0x77, 1]),
            "10.7.0.5".parse().unwrap(),
            std::net::Ipv4Addr::new(10, 7, 0, 100 + i),
        );
        assert_eq!(slave.tx[0].tx_burst(&[arp.as_slice()]).unwrap(), 1);
        wait_for("memifd's ARP answer", WAIT, || {
            (slave.rx[0].rx_burst(&mut bufs).unwrap() > 0).then_some(())
        });
    }
    let ints = wait_for("3 interrupts towards the pod", WAIT, || {
        let i = c.get(req.key.clone()).ok()?.connection?.m2s[0].interrupts;
        (i >= 3).then_some(i)
    });
    assert_eq!(ints, 3, "one interrupt per answer");

    let run = |args: &[&str]| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_memifctl"))
            .arg("--api")
            .arg(m.api_socket())
            .args(args)
            .output()
            .expect("run memifctl");
        assert!(
            out.status.success(),
            "memifctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let text = run(&["show", "memif", "memif-eth1"]);
    let sid = info.socket_id;
    for want in [
        format!("abstract:{name},netns_name={}", ns.path().display()),
        format!("interface memif{sid}/0 (memif-eth1, network blue, container ctr-show)"),
        format!("socket-id {sid} id 0 mode ethernet"),
        "flags admin-up connected".to_string(),
        "remote-name \"live-app\"".to_string(),
        "num-s2m-rings 1 num-m2s-rings 1".to_string(),
        "head 10 tail 10".to_string(),
        "interrupts 3".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert!(
        !text.contains("memif-eth2"),
        "filtered to one interface:\n{text}"
    );

    let addr = run(&["show", "int", "addr"]);
    for want in [
        format!("memif{sid}/0 (up):\n  unnumbered, use memif-eth1\n"),
        "  L3 10.7.0.5/32\n  L3 fd00:7::5/128\n".to_string(),
        "(dn):\n  unnumbered, use memif-eth2\n  L3 10.1.0.2/32\n".to_string(),
    ] {
        assert!(addr.contains(&want), "missing {want:?} in:\n{addr}");
    }
    let stats = run(&["show", "stats"]);
    assert!(
        stats.lines().any(|l| l.contains("memif-eth1")
            && l.split_whitespace().collect::<Vec<_>>()[4..8] == ["10", "826", "3", "126"]),
        "rx 10 packets / 826 bytes (7 x 100 + 3 ARP x 42), tx 3 / 126 (the answers) for memif-eth1 in:\n{stats}"
    );
    let json: Vec<AttachmentInfo> =
        serde_json::from_str(&run(&["show", "memif", "--json"])).expect("--json decodes");
    let listed = c.list(None).expect("list");
    assert_eq!(json.len(), 2);
    assert_eq!(
        json.iter().map(|a| &a.request).collect::<Vec<_>>(),
        listed.iter().map(|a| &a.request).collect::<Vec<_>>()
    );
    // Every pod names its memif memif-eth1: the operator picks one pod by
    // container id (a prefix, as crictl prints it) or by netns.
    let ns2 = Netns::new("showlive2");
    let other = request(&ns2, "ctr-other", "memif-eth1", "blue");
    c.attach(other).expect("attach the other pod");
    let ifaces = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("interface "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(ifaces(&run(&["show", "memif", "memif-eth1"])).len(), 2);
    let one = ifaces(&run(&[
        "show",
        "memif",
        "memif-eth1",
        "--container",
        "ctr-sh",
    ]));
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(one[0].contains("container ctr-show"), "{one:?}");
    for by_ns in [ns2.name().to_string(), ns2.path().display().to_string()] {
        let one = ifaces(&run(&["show", "memif", "memif-eth1", "--netns", &by_ns]));
        assert_eq!(one.len(), 1, "--netns {by_ns}: {one:?}");
        assert!(one[0].contains("container ctr-other"), "{one:?}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_memifctl"))
        .arg("--api")
        .arg(m.api_socket())
        .args(["show", "memif", "memif-eth1", "--container", "nope"])
        .output()
        .expect("run memifctl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "no match must fail");
    assert!(
        err.contains("no memif interface matches interface \"memif-eth1\", container \"nope\""),
        "{err}"
    );
}

/// The control plane never blocks: `status` answers promptly while 100
/// concurrent attaches (each making host routes through netlink, binding in
/// a netns, writing the state file) and then 100 concurrent detaches run.
/// The target is 10 ms p99; the bound asserted is generous (a shared
/// 2-core machine), the figures are printed.
#[test]
fn status_stays_prompt_under_attach_and_detach_storms() {
    preflight();
    const N: usize = 100;
    let dir = TempDir::new("storm");
    let nses: Vec<Netns> = (0..4).map(|i| Netns::new(&format!("storm{i}"))).collect();
    let m = Memifd::start(&dir.path);
    let reqs: Vec<AttachRequest> = (0..N)
        .map(|i| {
            let mut r = request(
                &nses[i % nses.len()],
                &format!("storm{i}"),
                &format!("memif-s{i}"),
                &format!("storm-net{}", i % 5),
            );
            r.ips = vec![format!("10.77.{}.{}", i / 200, 1 + i % 200)
                .parse()
                .unwrap()];
            r
        })
        .collect();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let (mut c, stop) = (m.client(), stop.clone());
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                c.status().expect("status during the storm");
                lat.push(t.elapsed());
                std::thread::sleep(Duration::from_millis(1));
            }
            lat
        })
    };
    let storm = |f: &(dyn Fn(usize) + Sync)| {
        std::thread::scope(|s| {
            for i in 0..N {
                s.spawn(move || f(i));
            }
        })
    };
    let t0 = Instant::now();
    storm(&|i| {
        m.client()
            .attach(reqs[i].clone())
            .expect("attach in the storm");
    });
    let attach_time = t0.elapsed();
    assert_eq!(m.status().attachments, N);
    let t1 = Instant::now();
    storm(&|i| {
        assert!(m
            .client()
            .detach(reqs[i].key.clone())
            .expect("detach in the storm"));
    });
    let detach_time = t1.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut lat = prober.join().unwrap();
    assert_eq!(m.status().attachments, 0);
    m.assert_alive();
    lat.sort();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let (p50, p99, max) = (q(0.50), q(0.99), *lat.last().unwrap());
    eprintln!(
        "status under load: {} samples, p50 {:?}, p99 {:?}, max {:?}; {N} attaches in {:?}, {N} detaches in {:?}",
        lat.len(),
        p50,
        p99,
        max,
        attach_time,
        detach_time
    );
    assert!(lat.len() >= 20, "too few status samples: {}", lat.len());
    assert!(
        p99 < Duration::from_millis(100),
        "status p99 {p99:?} under the storm (target 10 ms): the control plane blocked"
    );
}

/// Waits up to [`WAIT`] for a memifd that must refuse to start; one that
/// runs on instead is killed and fails the test (never hangs it).
#[track_caller]
fn exits_within(child: &mut Child, what: &str) -> std::process::ExitStatus {
    exit_within(child, WAIT).unwrap_or_else(|| panic!("{what} started and ran"))
}

/// One memifd per state directory: a second one on the same directory
/// (another API socket) refuses to start, naming the directory and the
/// holder's pid, once, and the first one's attachment survives, in its
/// service and in the state file, through the first one's restart.
#[test]
fn a_second_memifd_on_the_same_state_directory_refuses_to_start() {
    preflight();
    let dir = TempDir::new("lock");
    let other = TempDir::new("lock-other");
    let ns = Netns::new("lock0");
    let mut m = Memifd::start(&dir.path);
    let mut c = m.client();
    let req = request(&ns, "ctr-lock", "memif-eth1", "blue");
    c.attach(req.clone()).expect("attach");
    drop(c);
    let holder = m.pid();
    let log = other.path.join("second.log");
    let mut second = Command::new(MEMIFD)
        .arg("--api-socket")
        .arg(other.path.join("api.sock"))
        .arg("--state-dir")
        .arg(&dir.path)
        .arg("--config")
        .arg(dir.path.join("memifd.json"))
        .args(["--no-kubernetes", "--log", "info"])
        .env_remove("MEMIF_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&log).unwrap())
        .stderr(File::create(other.path.join("second.err")).unwrap())
        .spawn()
        .expect("run a second memifd");
    // Bounded: a second memifd that does start must fail the test, not hang it.
    let status = exits_within(
        &mut second,
        &format!("a second memifd on {}", dir.path.display()),
    );
    let text = format!(
        "{}{}",
        fs::read_to_string(&log).unwrap_or_default(),
        fs::read_to_string(other.path.join("second.err")).unwrap_or_default()
    );
    assert!(!status.success(), "the second memifd started:\n{text}");
    let why = format!(
        "state directory {} is in use by another memifd (pid {holder}",
        dir.path.display()
    );
    assert_eq!(text.matches(&why).count(), 1, "want {why:?} once:\n{text}");
    assert!(!text.contains("memifd ready"), "{text}");
    assert!(
        !other.path.join("api.sock").exists(),
        "the refused memifd left its socket"
    );
    // The first one still serves the pod, and its state still holds it.
    m.assert_alive();
    assert_eq!(
        ns.listener_set(),
        BTreeSet::from(["@memif-eth1".to_string()])
    );
    assert_eq!(m.state().expect("state file").len(), 1);
    // Crash and restart: the lock died with the process, the pod is back.
    m.stop(Stop::Kill);
    m.restart();
    let after = m.client().list(None).expect("list after restart");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].request.key, req.key);
}

/// memifd without the privileges it needs refuses to start, naming what it
/// lacks, instead of saying "ready" and failing at the first attach; it
/// leaves nothing in its state directory.
#[test]
fn memifd_without_its_privileges_refuses_to_start() {
    preflight();
    assert!(in_path("setpriv"), "setpriv (util-linux) is needed");
    let dir = TempDir::new("caps");
    fs::write(dir.path.join("memifd.json"), "{}").unwrap();
    for (drop_cap, name) in [
        ("-net_admin", "CAP_NET_ADMIN"),
        ("-sys_admin", "CAP_SYS_ADMIN"),
    ] {
        let mut child = Command::new("setpriv")
            .arg(format!("--bounding-set={drop_cap}"))
            .arg(MEMIFD)
            .arg("--api-socket")
            .arg(dir.path.join("api.sock"))
            .arg("--state-dir")
            .arg(&dir.path)
            .arg("--config")
            .arg(dir.path.join("memifd.json"))
            .args(["--no-kubernetes", "--log", "info"])
            .env_remove("MEMIF_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.path.join("err.log")).unwrap())
            .spawn()
            .expect("run memifd under setpriv");
        let status = exits_within(&mut child, &format!("memifd without {name}"));
        let err = fs::read_to_string(dir.path.join("err.log")).unwrap();
        assert!(!status.success(), "{err}");
        assert!(err.contains(&format!("memifd lacks {name}")), "{err}");
        assert!(!err.contains("memifd ready"), "{err}");
        let left: Vec<_> = fs::read_dir(&dir.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "memifd.json" && n != "err.log")
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

/// `memifctl attach`, `list` and `detach` drive memifd's API without
/// Kubernetes or a CNI runtime: the listener appears in the netns, a client
/// connects, `list` shows it, detach removes it (and again is no error).
#[test]
fn memifctl_attach_list_detach_without_kubernetes() {
    preflight();
    let dir = TempDir::new("ctlattach");
    let ns = Netns::new("ctlattach");
    let m = Memifd::start(&dir.path);
    let ctl = |args: &[&str]| -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_memifctl"))
            .arg("--api")
            .arg(m.api_socket())
            .args(args)
            .output()
            .expect("run memifctl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = ctl(&[
        "attach",
        "--netns",
        ns.name(),
        "--container",
        "by-hand",
        "--ifname",
        "memif-x1",
        "--network",
        "blue",
        "--ip",
        "10.9.0.5",
        "--mode",
        "ip",
        "--queues",
        "2",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("attached by-hand/memif-x1") && text.contains("@memif-x1"),
        "{text}"
    );
    ns.wait_listeners(&BTreeSet::from(["@memif-x1".to_string()]));
    let got = m.client().list(None).expect("list");
    assert_eq!(got.len(), 1);
    let r = &got[0].request;
    assert_eq!(
        (r.spec.mode, r.spec.rx_queues, r.spec.tx_queues),
        (Mode::Ip, 2, 2)
    );
    assert_eq!(r.ips, vec!["10.9.0.5".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(r.netns, ns.path());
    let key = r.key.clone();
    let cfg = SlaveConfig {
        mode: Mode::Ip,
        ..slave_cfg("by-hand")
    };
    let _slave = ns
        .slave(&SocketAddr::Abstract("memif-x1".into()), &cfg)
        .expect("a client connects");
    wait_connected(&m, &key, true);
    let (ok, text) = ctl(&["list"]);
    assert!(ok, "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("by-hand/memif-x1"))
        .unwrap_or("");
    for want in [
        "blue",
        "connected",
        "10.9.0.5",
        &ns.path().display().to_string(),
    ] {
        assert!(line.contains(want), "{want:?} missing in {line:?}:\n{text}");
    }
    let (ok, text) = ctl(&["detach", "--container", "by-hand", "--ifname", "memif-x1"]);
    assert!(ok && text.contains("detached by-hand/memif-x1"), "{text}");
    assert!(ns.listeners().is_empty(), "the listener outlived detach");
    assert!(m.client().list(None).unwrap().is_empty());
    let (ok, text) = ctl(&["detach", "--container", "by-hand", "--ifname", "memif-x1"]);
    assert!(ok && text.contains("already detached"), "{text}");
    // A bad request gets memifd's precise error and a failure.
    let (ok, text) = ctl(&[
        "attach",
        "--netns",
        "/run/netns/does-not-exist",
        "--container",
        "x",
        "--network",
        "blue",
    ]);
    assert!(!ok, "{text}");
    assert!(text.contains("memifctl attach:"), "{text}");
}

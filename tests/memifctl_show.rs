//! `memifctl show`: the renderers against fixtures whose full expected text
//! is written out here (golden tests), the JSON output, and the binary's
//! behaviour when memifd is not there. No memifd and no root needed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Output};

use memif_cni::api::{AttachmentId, Reply, ReplyEnvelope, Request, RequestEnvelope, API_VERSION};

use memif_cni::api::{
    AttachRequest, AttachmentInfo, AttachmentKey, ConnectionInfo, IfStats, MaxSpec, MemifSpec,
    PodRef, RegionInfo, RingState, RxMode, StatusInfo,
};
use memif_cni::ctl::show::{
    render_int_addr, render_json, render_memif, render_stats, render_status,
};
use memif_cni::memif::Mode;

fn ring(index: u16, offset: u32, int_fd: i32, head: u16, tail: u16, interrupts: u64) -> RingState {
    RingState {
        index,
        region: 0,
        offset,
        size: 1024,
        int_fd,
        head,
        tail,
        flags: if index == 1 { 1 } else { 0 },
        interrupts,
    }
}

/// Connected, ethernet, 2 s2m rings + 1 m2s ring in 1 region, with drops.
fn connected() -> AttachmentInfo {
    AttachmentInfo {
        request: AttachRequest {
            key: AttachmentKey {
                container_id: "1234abcd5678ef90aabbccdd".into(),
                ifname: "memif-eth1".into(),
            },
            network: "blue".into(),
            netns: "/var/run/netns/pod1".into(),
            socket: None,
            spec: MemifSpec {
                rx_queues: 2,
                tx_queues: 1,
                ..MemifSpec::default()
            },
            ips: vec!["10.1.2.3".parse().unwrap()],
            pod: Some(PodRef {
                namespace: "default".into(),
                name: "web-1".into(),
            }),
            steer: None,
            vni: None,
        },
        socket_id: AttachmentId(3),
        listener_fd: 41,
        created: 1_700_000_000,
        connection: Some(ConnectionInfo {
            peer_name: "dpdk \"app\"".into(),
            mode: Mode::Ethernet,
            conn_fd: 45,
            buffer_size: 2048,
            regions: vec![RegionInfo {
                index: 0,
                size: 6_294_912,
                fd: 46,
            }],
            s2m: vec![ring(0, 0, 47, 100, 100, 0), ring(1, 16512, 48, 5, 3, 2)],
            m2s: vec![ring(0, 33024, 49, 1024, 1000, 12)],
        }),
        stats: IfStats {
            rx_packets: 105,
            rx_bytes: 6720,
            tx_packets: 1000,
            tx_bytes: 1_514_000,
            drops: BTreeMap::from([
                ("no-route".to_string(), 3),
                ("tx-ring-full".to_string(), 24),
            ]),
            errors: 1,
            connects: 2,
            disconnects: 1,
        },
    }
}

/// Not connected, ip mode, a custom socket name, listener not bound.
fn idle() -> AttachmentInfo {
    AttachmentInfo {
        request: AttachRequest {
            key: AttachmentKey {
                container_id: "c0ffee".into(),
                ifname: "memif-eth2".into(),
            },
            network: "red".into(),
            netns: "/var/run/netns/pod2".into(),
            socket: Some("@vpp/memif-eth2".into()),
            spec: MemifSpec {
                id: 1,
                mode: Mode::Ip,
                rx_ring_size: 2048,
                tx_ring_size: 2048,
                rx_mode: RxMode::Polling,
                ..MemifSpec::default()
            },
            ips: vec!["10.2.0.9".parse().unwrap()],
            pod: None,
            steer: None,
            vni: None,
        },
        socket_id: AttachmentId(1),
        listener_fd: -1,
        created: 1_700_000_100,
        connection: None,
        stats: IfStats::default(),
    }
}

/// Not connected, dual stack (IPv6 first), a MAC in its spec.
fn dual_stack() -> AttachmentInfo {
    AttachmentInfo {
        request: AttachRequest {
            key: AttachmentKey {
                container_id: "feedbeef00112233".into(),
                ifname: "memif1".into(),
            },
            network: "green".into(),
            netns: "/var/run/netns/pod3".into(),
            socket: None,
            spec: MemifSpec {
                mac: Some("02:00:00:00:00:07".into()),
                rx_mode: RxMode::Interrupt,
                ..MemifSpec::default()
            },
            ips: vec!["fd00:10::7".parse().unwrap(), "10.3.0.7".parse().unwrap()],
            pod: Some(PodRef {
                namespace: "kube-system".into(),
                name: "dns-0".into(),
            }),
            steer: None,
            vni: None,
        },
        socket_id: AttachmentId(12),
        listener_fd: 50,
        created: 1_700_000_200,
        connection: None,
        stats: IfStats {
            rx_packets: 7,
            rx_bytes: 700,
            tx_packets: 0,
            tx_bytes: 0,
            drops: BTreeMap::from([("no-route".to_string(), 0)]),
            errors: 0,
            connects: 1,
            disconnects: 1,
        },
    }
}

/// Deliberately not in socket-id order.
fn fixtures() -> Vec<AttachmentInfo> {
    vec![dual_stack(), connected(), idle()]
}

const MEMIF: &str = "\
sockets
  id  listener    filename
  1   no          abstract:vpp/memif-eth2,netns_name=/var/run/netns/pod2
  3   yes (1)     abstract:memif-eth1,netns_name=/var/run/netns/pod1
  12  yes (1)     abstract:memif1,netns_name=/var/run/netns/pod3

interface memif1/1 (memif-eth2, network red, container c0ffee)
  socket-id 1 id 1 mode ip
  flags admin-up
  listener-fd -1 conn-fd 0
  num-s2m-rings 0 num-m2s-rings 0 buffer-size 0 num-regions 0
  spec rx-queues 1 tx-queues 1 rx-ring-size 2048 tx-ring-size 2048 buffer-size 2048 rx-mode polling ips 10.2.0.9

interface memif3/0 (memif-eth1, pod default/web-1, network blue, container 1234abcd5678)
  socket-id 3 id 0 mode ethernet
  flags admin-up connected
  listener-fd 41 conn-fd 45
  num-s2m-rings 2 num-m2s-rings 1 buffer-size 2048 num-regions 1
  spec rx-queues 2 tx-queues 1 rx-ring-size 1024 tx-ring-size 1024 buffer-size 2048 rx-mode adaptive ips 10.1.2.3
  remote-name \"dpdk \\\"app\\\"\"
  region 0 size 6294912 fd 46
  master-to-slave ring 0:
    region 0 offset 33024 ring-size 1024 int-fd 49
    head 1024 tail 1000 flags 0x0000 interrupts 12
  slave-to-master ring 0:
    region 0 offset 0 ring-size 1024 int-fd 47
    head 100 tail 100 flags 0x0000 interrupts 0
  slave-to-master ring 1:
    region 0 offset 16512 ring-size 1024 int-fd 48
    head 5 tail 3 flags 0x0001 interrupts 2

interface memif12/0 (memif1, pod kube-system/dns-0, network green, container feedbeef0011)
  socket-id 12 id 0 mode ethernet
  flags admin-up
  listener-fd 50 conn-fd 0
  num-s2m-rings 0 num-m2s-rings 0 buffer-size 0 num-regions 0
  spec rx-queues 1 tx-queues 1 rx-ring-size 1024 tx-ring-size 1024 buffer-size 2048 rx-mode interrupt mac 02:00:00:00:00:07 ips fd00:10::7,10.3.0.7
";

#[test]
fn show_memif_golden() {
    assert_eq!(render_memif(&fixtures(), None), MEMIF);
    // Input order does not matter.
    let mut rev = fixtures();
    rev.reverse();
    assert_eq!(render_memif(&rev, None), MEMIF);
}

#[test]
fn show_memif_one_interface_by_either_name() {
    let want = "\
sockets
  id  listener    filename
  12  yes (1)     abstract:memif1,netns_name=/var/run/netns/pod3

interface memif12/0 (memif1, pod kube-system/dns-0, network green, container feedbeef0011)
  socket-id 12 id 0 mode ethernet
  flags admin-up
  listener-fd 50 conn-fd 0
  num-s2m-rings 0 num-m2s-rings 0 buffer-size 0 num-regions 0
  spec rx-queues 1 tx-queues 1 rx-ring-size 1024 tx-ring-size 1024 buffer-size 2048 rx-mode interrupt mac 02:00:00:00:00:07 ips fd00:10::7,10.3.0.7
";
    assert_eq!(render_memif(&fixtures(), Some("memif1")), want);
    assert_eq!(render_memif(&fixtures(), Some("memif12/0")), want);
    // No match: an empty sockets table and no interface.
    assert_eq!(
        render_memif(&fixtures(), Some("eth0")),
        "sockets\n  id  listener    filename\n"
    );
}

#[test]
fn show_int_addr_golden() {
    assert_eq!(
        render_int_addr(&fixtures()),
        "\
memif1/1 (dn):
  unnumbered, use memif-eth2
  L3 10.2.0.9/32
memif3/0 (up):
  unnumbered, use memif-eth1
  L3 10.1.2.3/32
memif12/0 (dn):
  unnumbered, use memif1
  L3 fd00:10::7/128
  L3 10.3.0.7/32
"
    );
    assert_eq!(render_int_addr(&[]), "");
}

#[test]
fn show_stats_golden() {
    assert_eq!(
        render_stats(&fixtures()),
        "\
interface  ifname      network  state  rx-packets  rx-bytes  tx-packets  tx-bytes  drops  errors
memif1/1   memif-eth2  red      down            0         0           0         0      0       0
memif3/0   memif-eth1  blue     up            105      6720        1000   1514000     27       1
  drops: no-route=3 tx-ring-full=24
memif12/0  memif1      green    down            7       700           0         0      0       0
"
    );
    assert_eq!(
        render_stats(&[]),
        "interface  ifname  network  state  rx-packets  rx-bytes  tx-packets  tx-bytes  drops  errors\n"
    );
}

fn status() -> StatusInfo {
    StatusInfo {
        version: "0.1.0".into(),
        api: 1,
        memif_enabled: true,
        feature_gates: BTreeMap::from([
            ("multinetEnabled".to_string(), true),
            ("memifEnabled".to_string(), true),
            ("vclEnabled".to_string(), false),
        ]),
        max_spec: MaxSpec::default(),
        attachments: 3,
        connected: 1,
        kube: false,
        uptime_secs: 90061,
        state_file: "/run/memif-cni/state.json".into(),
        cross_node: None,
    }
}

#[test]
fn show_status_golden() {
    assert_eq!(
        render_status(&status()),
        "\
version        0.1.0
api            1
memif gate     enabled
feature gates  memifEnabled=true multinetEnabled=true vclEnabled=false
max spec       rx-queues 16 tx-queues 16 ring-size 16384 buffer-size 65536
attachments    3 (1 connected)
kube           no
uptime         1d 1h 1m 1s
state file     /run/memif-cni/state.json
"
    );
}

#[test]
fn json_round_trips() {
    let items = fixtures();
    let text = render_json(&items);
    assert!(text.ends_with("}\n]\n"), "pretty, one final newline");
    let back: Vec<AttachmentInfo> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, items);
    // The wire names are the API's (camelCase), not Rust's.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v[1]["socketId"], 3);
    assert_eq!(v[1]["connection"]["s2m"][1]["intFd"], 48);
    assert!(v[0].get("connection").is_none(), "idle: no connection key");
    let st: StatusInfo = serde_json::from_str(&render_json(&status())).unwrap();
    assert_eq!(st, status());
}

// ---------------------------------------------------------------------------
// The binary

fn memifctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memifctl"))
        .args(args)
        .env_remove("MEMIFD_SOCKET")
        .output()
        .expect("run memifctl")
}

#[test]
fn binary_without_memifd_names_the_socket_and_fails() {
    let out = memifctl(&["--api", "/nonexistent.sock", "show", "memif"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(out.stdout.is_empty());
    assert!(
        err.contains("cannot reach memifd at /nonexistent.sock"),
        "{err}"
    );
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

/// A stand-in memifd: answers `list` with the fixtures and `status` with
/// [`status`] on a unix socket, one line per request, for `conns`
/// connections.
fn fake_memifd(name: &str, conns: usize) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("memifctl-show-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind fake memifd");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(conns) {
            let mut stream = stream.expect("accept");
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let req: RequestEnvelope = serde_json::from_str(&line).expect("request");
                assert_eq!(req.api, API_VERSION);
                let reply = match req.request {
                    Request::List { network: None } => Reply::Attachments { items: fixtures() },
                    Request::Status => Reply::Status(Box::new(status())),
                    other => panic!("memifctl show sent {other:?}"),
                };
                let mut out = serde_json::to_vec(&ReplyEnvelope {
                    api: API_VERSION,
                    reply,
                })
                .unwrap();
                out.push(b'\n');
                stream.write_all(&out).unwrap();
                line.clear();
            }
        }
    });
    path
}

#[track_caller]
fn ok_stdout(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn binary_renders_what_memifd_reports() {
    let api = fake_memifd("render", 6);
    let a = api.to_str().unwrap();
    assert_eq!(ok_stdout(memifctl(&["--api", a, "show", "memif"])), MEMIF);
    assert_eq!(
        ok_stdout(memifctl(&["show", "int", "addr", "--api", a])),
        render_int_addr(&fixtures())
    );
    assert_eq!(
        ok_stdout(memifctl(&["--api", a, "show", "stats"])),
        render_stats(&fixtures())
    );
    // --json: the API data, sorted by socket id.
    let json = ok_stdout(memifctl(&["--api", a, "show", "memif", "--json"]));
    let items: Vec<AttachmentInfo> = serde_json::from_str(&json).unwrap();
    let ids: Vec<u32> = items.iter().map(|i| i.socket_id.0).collect();
    assert_eq!(ids, [1, 3, 12]);
    let json = ok_stdout(memifctl(&[
        "--api", a, "show", "memif", "memif3/0", "--json",
    ]));
    let items: Vec<AttachmentInfo> = serde_json::from_str(&json).unwrap();
    assert_eq!(items, [connected()]);
    // An unknown interface is an error.
    let out = memifctl(&["--api", a, "show", "memif", "eth9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no memif interface matches interface \"eth9\""));
    let _ = std::fs::remove_file(&api);
}

#[test]
fn binary_takes_the_socket_from_memifd_socket() {
    let api = fake_memifd("env", 1);
    let out = Command::new(env!("CARGO_BIN_EXE_memifctl"))
        .args(["show", "int", "addr"])
        .env("MEMIFD_SOCKET", &api)
        .output()
        .expect("run memifctl");
    assert_eq!(ok_stdout(out), render_int_addr(&fixtures()));
    let _ = std::fs::remove_file(&api);
}

/// `status` over the real API framing: the reply must decode. (It cannot
/// while `StatusInfo` has a field named `api`: flattened into the reply
/// envelope, it duplicates the envelope's own `api` key.)
#[test]
fn binary_show_status_through_the_api() {
    let api = fake_memifd("status", 2);
    let a = api.to_str().unwrap();
    assert_eq!(
        ok_stdout(memifctl(&["--api", a, "show", "status"])),
        render_status(&status())
    );
    let json = ok_stdout(memifctl(&["--api", a, "show", "status", "--json"]));
    let st: StatusInfo = serde_json::from_str(&json).unwrap();
    assert_eq!(st, status());
    let _ = std::fs::remove_file(&api);
}

#[test]
fn connect_hints_tell_permissions_from_a_missing_memifd() {
    use memif_cni::api::ClientError;
    use memif_cni::ctl::show::ShowError;
    let err = |kind| {
        ShowError::Api(ClientError::Connect {
            path: "/run/memif-cni/memifd.sock".into(),
            source: std::io::Error::from(kind),
        })
    };
    let denied = err(std::io::ErrorKind::PermissionDenied).hint().unwrap();
    assert!(
        denied.contains("root") && !denied.contains("running"),
        "{denied}"
    );
    let missing = err(std::io::ErrorKind::NotFound).hint().unwrap();
    assert!(missing.contains("is memifd running"), "{missing}");
}

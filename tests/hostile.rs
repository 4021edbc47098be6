//! Hostile slaves against the master, in one process, no root.
//!
//! Handshake attacks drive the control channel by hand ([`RawPeer`]) with
//! memory and eventfds built here; data-path attacks connect a well-behaved
//! `SlaveConnection` and then corrupt its rings through the accessors the
//! library exposes (`RingRef::set_desc`, `set_head`).
//!
//! Every case checks the specific outcome (the DISCONNECT reason, or the
//! `RingError` and the bad-descriptor counter), that the master reports it
//! as an event, and that afterwards the same socket still serves another
//! interface id (and the attacked id) to a well-behaved slave: the server
//! thread did not panic, hang or leak the id.

mod common;

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use memif_cni::memif::master::MasterConnection;
use memif_cni::memif::shm::{Desc, Region, RingRef, DESC_FLAG_NEXT};
use memif_cni::memif::wire::{
    AddRegion, AddRing, Init, Message, MSG_SIZE, RING_COOKIE, RING_FLAG_S2M, VERSION,
};
use memif_cni::memif::{
    InterfaceConfig, Limits, Mode, PacketBuf, Pushed, RingError, ServerConfig, SlaveConnection,
};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// The interface the attacks target.
const VICTIM: u32 = 1;
/// Another interface on the same socket, which must stay available.
const GOOD: u32 = 2;

/// Ring size of the hand-built memory.
const LOG2: u8 = 4;
const BUF: usize = 256;

/// A server with `victim` (id VICTIM) and a plain interface GOOD.
fn server(name: &str, victim: InterfaceConfig) -> TestServer {
    server_cfg(name, ServerConfig::default(), victim)
}

fn server_cfg(name: &str, cfg: ServerConfig, victim: InterfaceConfig) -> TestServer {
    assert_eq!(victim.id, VICTIM);
    TestServer::start(name, cfg, vec![victim, iface(GOOD)])
}

/// After an attack: no stray event, and both ids serve well-behaved slaves.
#[track_caller]
fn assert_unharmed(s: &TestServer) {
    s.assert_quiet();
    s.assert_serves(GOOD);
    s.assert_serves(VICTIM);
    s.assert_quiet();
}

// ---------------------------------------------------------------------
// Hand-built shared memory and messages.
// ---------------------------------------------------------------------

/// One sealed region: S2M ring at 0, M2S ring after it, then buffers.
/// Its memfd has a unique name, so copies of it can be found in
/// `/proc/self/fd` (see [`fds_named`]).
struct Mem {
    region: Arc<Region>,
    name: String,
}

impl Mem {
    fn ring_bytes() -> usize {
        RingRef::bytes_for(LOG2)
    }

    fn new() -> Mem {
        let size = 2 * Self::ring_bytes() + 2 * (1 << LOG2) * BUF;
        let name = unique_name("region");
        let region = Arc::new(Region::create(&name, size).expect("region"));
        let mem = Mem { region, name };
        mem.ring(0).init_header(0);
        mem.ring(1).init_header(0);
        mem
    }

    fn offset(i: usize) -> u32 {
        (i * Self::ring_bytes()) as u32
    }

    fn ring(&self, i: usize) -> RingRef {
        RingRef::new(self.region.clone(), Self::offset(i), LOG2).expect("ring")
    }

    fn size(&self) -> u64 {
        self.region.len() as u64
    }
}

/// A name no other test uses, for memfds we look for later.
fn unique_name(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "memif-test-{}-{what}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// How many fds of this process point at the memfd called `name`: ours
/// plus any the master (same process) still holds.
fn fds_named(name: &str) -> usize {
    let want = format!("/memfd:{name} ");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.to_string_lossy().starts_with(&want))
        .count()
}

/// Waits (bounded) until no fd for memfd `name` is left: the master closes
/// what a refused peer sent it just after sending DISCONNECT.
#[track_caller]
fn assert_fds_closed(name: &str) {
    let deadline = Instant::now() + WAIT;
    while fds_named(name) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} fd(s) for {name} still open: the master leaked them",
            fds_named(name)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn efd() -> EventFd {
    EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).expect("eventfd")
}

fn init(id: u32) -> Message {
    Message::Init(Init {
        version: VERSION,
        id,
        mode: Mode::Ethernet,
        secret: String::new(),
        name: "hostile".into(),
    })
}

fn add_region(index: u16, size: u64) -> Message {
    Message::AddRegion(AddRegion { index, size })
}

fn add_ring(s2m: bool, index: u16, region: u16, offset: u32, log2: u8) -> Message {
    Message::AddRing(AddRing {
        flags: if s2m { RING_FLAG_S2M } else { 0 },
        index,
        region,
        offset,
        log2_ring_size: log2,
        private_hdr_size: 0,
    })
}

fn connect_msg() -> Message {
    Message::Connect {
        if_name: "hostile".into(),
    }
}

/// INIT, the region and one ring each way, all acknowledged. Returns the
/// ring eventfds (kept open by the caller).
#[track_caller]
fn raw_resources(p: &RawPeer, mem: &Mem) -> [EventFd; 2] {
    p.ack(&init(VICTIM), None);
    p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
    let fds = [efd(), efd()];
    p.ack(
        &add_ring(true, 0, 0, Mem::offset(0), LOG2),
        Some(fds[0].as_fd()),
    );
    p.ack(
        &add_ring(false, 0, 0, Mem::offset(1), LOG2),
        Some(fds[1].as_fd()),
    );
    fds
}

/// Sends one message carrying several fds (the library's `send` carries at
/// most one).
fn send_with_fds(p: &RawPeer, m: &Message, fds: &[RawFd]) {
    let bytes = m.encode();
    let iov = [IoSlice::new(&bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(
        p.fd().as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .expect("sendmsg");
}

/// Runs a handshake attack against a fresh server: `attack` drives the peer
/// and returns the DISCONNECT reason; it must contain `want`, be reported as
/// `Rejected { id }`, and leave the server serving both ids.
#[track_caller]
fn refused_case(
    name: &str,
    victim: InterfaceConfig,
    id: Option<u32>,
    want: &str,
    attack: impl FnOnce(&RawPeer) -> String,
) {
    let s = server(name, victim);
    let p = RawPeer::connect(&s.addr);
    let reason = attack(&p);
    assert_contains(&reason, want);
    s.expect_rejected(id, &reason);
    assert_unharmed(&s);
}

// ---------------------------------------------------------------------
// Control channel: sequence, sizes and file descriptors.
// ---------------------------------------------------------------------

#[test]
fn messages_before_init_are_refused() {
    refused_case(
        "before-init-region",
        iface(VICTIM),
        None,
        "AddRegion before INIT",
        |p| {
            let mem = Mem::new();
            p.refused(&add_region(0, mem.size()), Some(mem.region.fd()))
        },
    );
    refused_case(
        "before-init-connect",
        iface(VICTIM),
        None,
        "Connect before INIT",
        |p| p.refused(&connect_msg(), None),
    );
    refused_case(
        "before-init-ack",
        iface(VICTIM),
        None,
        "Ack before INIT",
        |p| p.refused(&Message::Ack, None),
    );
    refused_case(
        "before-init-hello",
        iface(VICTIM),
        None,
        "Hello before INIT",
        |p| {
            let hello = Message::Hello(p.hello.clone());
            p.refused(&hello, None)
        },
    );
}

#[test]
fn wrong_message_sizes_are_refused() {
    // 64 and 200 bytes, one byte short and long, and more than the
    // receive buffer (truncated by the kernel).
    for n in [64usize, 200, 127, 129, 300] {
        refused_case(
            &format!("size-{n}"),
            iface(VICTIM),
            None,
            "malformed message",
            |p| {
                let mut b = vec![0u8; n];
                let init = init(VICTIM).encode();
                let k = n.min(MSG_SIZE);
                b[..k].copy_from_slice(&init[..k]);
                p.refused_raw(&b, None)
            },
        );
    }
    // The same after INIT, while the id is held.
    refused_case(
        "size-after-init",
        iface(VICTIM),
        Some(VICTIM),
        "malformed message",
        |p| {
            p.ack(&init(VICTIM), None);
            p.refused_raw(&[4u8; 64], None)
        },
    );
}

#[test]
fn malformed_messages_are_refused() {
    type Corrupt = fn(&mut [u8; MSG_SIZE]);
    let cases: [(&str, Corrupt); 4] = [
        ("type-9", |b| b[0] = 9),
        ("type-0", |b| b[0] = 0),
        // ADD_RING with private_hdr_size 8.
        ("private-hdr", |b| {
            b[..MSG_SIZE].copy_from_slice(&add_ring(true, 0, 0, 0, LOG2).encode());
            b[13] = 8;
        }),
        // INIT whose name fills its field with no NUL.
        ("unterminated", |b| {
            b[..MSG_SIZE].copy_from_slice(&init(VICTIM).encode());
            b[33..65].fill(b'x');
        }),
    ];
    for (name, corrupt) in cases {
        refused_case(
            &format!("malformed-{name}"),
            iface(VICTIM),
            None,
            "malformed message",
            |p| {
                let mut b = [0u8; MSG_SIZE];
                corrupt(&mut b);
                p.refused_raw(&b, None)
            },
        );
    }
}

#[test]
fn add_region_and_add_ring_without_fd_are_refused() {
    refused_case(
        "region-no-fd",
        iface(VICTIM),
        Some(VICTIM),
        "AddRegion without a file descriptor",
        |p| {
            p.ack(&init(VICTIM), None);
            p.refused(&add_region(0, 4096), None)
        },
    );
    refused_case(
        "ring-no-fd",
        iface(VICTIM),
        Some(VICTIM),
        "AddRing without a file descriptor",
        |p| {
            let mem = Mem::new();
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
            p.refused(&add_ring(true, 0, 0, 0, LOG2), None)
        },
    );
}

#[test]
fn unexpected_and_extra_fds_are_refused() {
    refused_case(
        "init-with-fd",
        iface(VICTIM),
        None,
        "Init with an unexpected file descriptor",
        |p| {
            let e = efd();
            p.refused(&init(VICTIM), Some(e.as_fd()))
        },
    );
    refused_case(
        "connect-with-fd",
        iface(VICTIM),
        Some(VICTIM),
        "Connect with an unexpected file descriptor",
        |p| {
            let mem = Mem::new();
            let _fds = raw_resources(p, &mem);
            let e = efd();
            p.refused(&connect_msg(), Some(e.as_fd()))
        },
    );
    refused_case(
        "two-fds",
        iface(VICTIM),
        Some(VICTIM),
        "2 file descriptors",
        |p| {
            let mem = Mem::new();
            p.ack(&init(VICTIM), None);
            let e = efd();
            send_with_fds(
                p,
                &add_region(0, mem.size()),
                &[mem.region.fd().as_raw_fd(), e.as_raw_fd()],
            );
            p.expect_disconnect()
        },
    );
}

#[test]
fn a_second_init_is_refused() {
    refused_case(
        "second-init",
        iface(VICTIM),
        Some(VICTIM),
        "unexpected Init during setup",
        |p| {
            p.ack(&init(VICTIM), None);
            p.refused(&init(GOOD), None)
        },
    );
}

#[test]
fn refused_peers_leave_no_fds_behind() {
    let s = server("fd-leaks", iface(VICTIM));

    // Positive control: a connected master holds exactly one copy of the
    // region fd, and lets go of it with the connection.
    let mem = Mem::new();
    let p = RawPeer::connect(&s.addr);
    let fds = raw_resources(&p, &mem);
    p.send(&connect_msg(), None);
    assert!(matches!(p.recv(), Message::Connected { .. }));
    let m = s.connected();
    assert_eq!(fds_named(&mem.name), 2, "ours and the master's");
    drop((p, fds, m));
    s.disconnected();
    let name = mem.name.clone();
    drop(mem);
    assert_fds_closed(&name);

    // Many copies of one memfd in a single message: more than the master
    // accepts (1), up to the kernel's limit per message (SCM_MAX_FD, 253).
    for n in [2usize, 16, 253] {
        let name = unique_name("canary");
        let canary = File::from(memfd_create(name.as_str(), MFdFlags::MFD_CLOEXEC).expect("memfd"));
        let p = RawPeer::connect(&s.addr);
        p.ack(&init(VICTIM), None);
        send_with_fds(&p, &add_region(0, 4096), &vec![canary.as_raw_fd(); n]);
        let reason = p.expect_disconnect();
        assert_eq!(
            reason,
            format!("message carried {n} file descriptors, at most 1 is allowed")
        );
        s.expect_rejected(Some(VICTIM), &reason);
        drop(canary);
        assert_fds_closed(&name);
    }

    // A region the handshake held when it refused a later message, and one
    // refused when mapped at CONNECT.
    let mem = Mem::new();
    let p = RawPeer::connect(&s.addr);
    let e = efd();
    p.ack(&init(VICTIM), None);
    p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
    let reason = p.refused(&add_ring(true, 0, 0, 0, 15), Some(e.as_fd()));
    s.expect_rejected(Some(VICTIM), &reason);
    let name = mem.name.clone();
    drop(mem);
    assert_fds_closed(&name);

    let mem = Mem::new();
    let p = RawPeer::connect(&s.addr);
    let (a, b) = (efd(), efd());
    p.ack(&init(VICTIM), None);
    p.ack(&add_region(0, mem.size() + 1), Some(mem.region.fd()));
    p.ack(&add_ring(true, 0, 0, Mem::offset(0), LOG2), Some(a.as_fd()));
    p.ack(
        &add_ring(false, 0, 0, Mem::offset(1), LOG2),
        Some(b.as_fd()),
    );
    let reason = p.refused(&connect_msg(), None);
    assert_contains(&reason, "smaller than the announced");
    s.expect_rejected(Some(VICTIM), &reason);
    let name = mem.name.clone();
    drop(mem);
    assert_fds_closed(&name);
    assert_unharmed(&s);
}

// ---------------------------------------------------------------------
// Counts, indices and sizes.
// ---------------------------------------------------------------------

fn limited(f: impl FnOnce(&mut Limits)) -> InterfaceConfig {
    let mut c = iface(VICTIM);
    f(&mut c.limits);
    c
}

#[test]
fn too_many_rings_are_refused() {
    refused_case(
        "too-many-s2m",
        limited(|l| l.max_s2m_rings = 1),
        Some(VICTIM),
        "too many s2m rings (max 1)",
        |p| {
            let mem = Mem::new();
            let (a, b) = (efd(), efd());
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
            p.ack(&add_ring(true, 0, 0, Mem::offset(0), LOG2), Some(a.as_fd()));
            p.refused(&add_ring(true, 1, 0, Mem::offset(1), LOG2), Some(b.as_fd()))
        },
    );
    refused_case(
        "too-many-m2s",
        limited(|l| l.max_m2s_rings = 1),
        Some(VICTIM),
        "too many m2s rings (max 1)",
        |p| {
            let mem = Mem::new();
            let _fds = raw_resources(p, &mem);
            let e = efd();
            p.refused(
                &add_ring(false, 1, 0, Mem::offset(0), LOG2),
                Some(e.as_fd()),
            )
        },
    );
    refused_case(
        "too-many-regions",
        limited(|l| l.max_regions = 1),
        Some(VICTIM),
        "too many regions (max 1)",
        |p| {
            let (m0, m1) = (Mem::new(), Mem::new());
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, m0.size()), Some(m0.region.fd()));
            p.refused(&add_region(1, m1.size()), Some(m1.region.fd()))
        },
    );
}

#[test]
fn out_of_sequence_indices_are_refused() {
    refused_case(
        "region-seq",
        iface(VICTIM),
        Some(VICTIM),
        "region index 1 out of sequence (expected 0)",
        |p| {
            let mem = Mem::new();
            p.ack(&init(VICTIM), None);
            p.refused(&add_region(1, mem.size()), Some(mem.region.fd()))
        },
    );
    refused_case(
        "region-dup",
        iface(VICTIM),
        Some(VICTIM),
        "region index 0 out of sequence (expected 1)",
        |p| {
            let mem = Mem::new();
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
            p.refused(&add_region(0, mem.size()), Some(mem.region.fd()))
        },
    );
    refused_case(
        "ring-seq",
        iface(VICTIM),
        Some(VICTIM),
        "s2m ring index 1 out of sequence (expected 0)",
        |p| {
            let mem = Mem::new();
            let e = efd();
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
            p.refused(&add_ring(true, 1, 0, Mem::offset(0), LOG2), Some(e.as_fd()))
        },
    );
    refused_case(
        "ring-dup",
        iface(VICTIM),
        Some(VICTIM),
        "m2s ring index 0 out of sequence (expected 1)",
        |p| {
            let mem = Mem::new();
            let _fds = raw_resources(p, &mem);
            let e = efd();
            p.refused(
                &add_ring(false, 0, 0, Mem::offset(1), LOG2),
                Some(e.as_fd()),
            )
        },
    );
}

#[test]
fn ring_log2_above_max_is_refused() {
    refused_case(
        "log2-15",
        iface(VICTIM),
        Some(VICTIM),
        "s2m ring 0 log2 size 15 above max 14",
        |p| {
            let mem = Mem::new();
            let e = efd();
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
            p.refused(&add_ring(true, 0, 0, 0, 15), Some(e.as_fd()))
        },
    );
    // The interface's own limit applies, not HELLO's socket-wide one.
    refused_case(
        "log2-iface",
        limited(|l| l.max_log2_m2s_ring_size = 8),
        Some(VICTIM),
        "m2s ring 0 log2 size 10 above max 8",
        |p| {
            let mem = Mem::new();
            let e = efd();
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
            p.refused(&add_ring(false, 0, 0, 0, 10), Some(e.as_fd()))
        },
    );
}

#[test]
fn ring_in_unknown_region_is_refused() {
    refused_case(
        "unknown-region",
        iface(VICTIM),
        Some(VICTIM),
        "s2m ring 0 in unknown region 3",
        |p| {
            let mem = Mem::new();
            let e = efd();
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
            p.refused(&add_ring(true, 0, 3, 0, LOG2), Some(e.as_fd()))
        },
    );
}

/// INIT, region, S2M ring `s2m` and a good M2S ring, then CONNECT: the
/// master must refuse at CONNECT (when it maps and checks).
#[track_caller]
fn refused_at_connect(p: &RawPeer, mem: &Mem, s2m: Message) -> String {
    let (a, b) = (efd(), efd());
    p.ack(&init(VICTIM), None);
    p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
    p.ack(&s2m, Some(a.as_fd()));
    p.ack(
        &add_ring(false, 0, 0, Mem::offset(1), LOG2),
        Some(b.as_fd()),
    );
    p.refused(&connect_msg(), None)
}

#[test]
fn ring_outside_its_region_is_refused_at_connect() {
    refused_case(
        "ring-past-end",
        iface(VICTIM),
        Some(VICTIM),
        "does not fit region",
        |p| {
            let mem = Mem::new();
            let off = (mem.size() - 64) as u32;
            refused_at_connect(p, &mem, add_ring(true, 0, 0, off, LOG2))
        },
    );
    refused_case(
        "ring-offset-max",
        iface(VICTIM),
        Some(VICTIM),
        "does not fit region",
        |p| {
            let mem = Mem::new();
            refused_at_connect(p, &mem, add_ring(true, 0, 0, u32::MAX - 7, 0))
        },
    );
    refused_case(
        "ring-too-big",
        iface(VICTIM),
        Some(VICTIM),
        "does not fit region",
        |p| {
            let mem = Mem::new();
            refused_at_connect(p, &mem, add_ring(true, 0, 0, 0, 14))
        },
    );
    refused_case(
        "ring-misaligned",
        iface(VICTIM),
        Some(VICTIM),
        "not 8-byte aligned",
        |p| {
            let mem = Mem::new();
            refused_at_connect(p, &mem, add_ring(true, 0, 0, 4, LOG2))
        },
    );
}

#[test]
fn bad_cookie_is_refused_at_connect() {
    refused_case(
        "bad-cookie",
        iface(VICTIM),
        Some(VICTIM),
        "m2s ring 0: ring cookie is 0xdeadbeef",
        |p| {
            let mem = Mem::new();
            let _fds = raw_resources(p, &mem);
            mem.region
                .write(Mem::offset(1) as usize, &0xdead_beef_u32.to_le_bytes());
            p.refused(&connect_msg(), None)
        },
    );
    refused_case(
        "no-header",
        iface(VICTIM),
        Some(VICTIM),
        "s2m ring 0: ring cookie is 0x0",
        |p| {
            let mem = Mem::new();
            mem.region.write(0, &[0u8; 4]);
            let _fds = raw_resources(p, &mem);
            p.refused(&connect_msg(), None)
        },
    );
}

#[test]
fn connect_without_rings_is_refused() {
    refused_case(
        "no-rings",
        iface(VICTIM),
        Some(VICTIM),
        "at least one ring in each direction",
        |p| {
            let mem = Mem::new();
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
            p.refused(&connect_msg(), None)
        },
    );
    refused_case(
        "s2m-only",
        iface(VICTIM),
        Some(VICTIM),
        "at least one ring in each direction",
        |p| {
            let mem = Mem::new();
            let e = efd();
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
            p.ack(&add_ring(true, 0, 0, 0, LOG2), Some(e.as_fd()));
            p.refused(&connect_msg(), None)
        },
    );
    refused_case(
        "nothing",
        iface(VICTIM),
        Some(VICTIM),
        "at least one ring in each direction",
        |p| {
            p.ack(&init(VICTIM), None);
            p.refused(&connect_msg(), None)
        },
    );
}

// ---------------------------------------------------------------------
// The fds themselves.
// ---------------------------------------------------------------------

#[test]
fn unsealed_region_is_refused() {
    refused_case(
        "unsealed",
        iface(VICTIM),
        Some(VICTIM),
        "region 0: region fd is not sealed against shrinking",
        |p| {
            // A plain memfd (no F_SEAL_SHRINK) with valid ring headers: the
            // seal is the only thing wrong.
            let size = Mem::new().size();
            let fd = memfd_create("unsealed", MFdFlags::MFD_CLOEXEC).expect("memfd");
            let file = File::from(fd);
            file.set_len(size).expect("set_len");
            for i in 0..2 {
                file.write_all_at(&RING_COOKIE.to_le_bytes(), Mem::offset(i) as u64)
                    .expect("cookie");
            }
            let (a, b) = (efd(), efd());
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, size), Some(file.as_fd()));
            p.ack(&add_ring(true, 0, 0, Mem::offset(0), LOG2), Some(a.as_fd()));
            p.ack(
                &add_ring(false, 0, 0, Mem::offset(1), LOG2),
                Some(b.as_fd()),
            );
            p.refused(&connect_msg(), None)
        },
    );
}

#[test]
fn region_larger_than_its_fd_is_refused() {
    refused_case(
        "region-too-big",
        iface(VICTIM),
        Some(VICTIM),
        "smaller than the announced",
        |p| {
            let mem = Mem::new();
            let (a, b) = (efd(), efd());
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, mem.size() * 2), Some(mem.region.fd()));
            p.ack(&add_ring(true, 0, 0, Mem::offset(0), LOG2), Some(a.as_fd()));
            p.ack(
                &add_ring(false, 0, 0, Mem::offset(1), LOG2),
                Some(b.as_fd()),
            );
            p.refused(&connect_msg(), None)
        },
    );
    refused_case(
        "region-size-0",
        iface(VICTIM),
        Some(VICTIM),
        "region 0 size 0 out of range",
        |p| {
            let mem = Mem::new();
            p.ack(&init(VICTIM), None);
            p.refused(&add_region(0, 0), Some(mem.region.fd()))
        },
    );
    refused_case(
        "region-size-huge",
        iface(VICTIM),
        Some(VICTIM),
        "out of range",
        |p| {
            let mem = Mem::new();
            p.ack(&init(VICTIM), None);
            p.refused(&add_region(0, u64::MAX), Some(mem.region.fd()))
        },
    );
}

#[test]
fn ring_fd_that_is_not_an_eventfd_is_refused() {
    refused_case(
        "pipe-fd",
        iface(VICTIM),
        Some(VICTIM),
        "s2m ring 0 fd is not an eventfd",
        |p| {
            let mem = Mem::new();
            let (r, _w) = nix::unistd::pipe().expect("pipe");
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
            p.refused(&add_ring(true, 0, 0, 0, LOG2), Some(r.as_fd()))
        },
    );
    refused_case(
        "memfd-as-eventfd",
        iface(VICTIM),
        Some(VICTIM),
        "m2s ring 0 fd is not an eventfd",
        |p| {
            let mem = Mem::new();
            let a = efd();
            p.ack(&init(VICTIM), None);
            p.ack(&add_region(0, mem.size()), Some(mem.region.fd()));
            p.ack(&add_ring(true, 0, 0, 0, LOG2), Some(a.as_fd()));
            p.refused(
                &add_ring(false, 0, 0, Mem::offset(1), LOG2),
                Some(mem.region.fd()),
            )
        },
    );
}

// ---------------------------------------------------------------------
// Time and state.
// ---------------------------------------------------------------------

#[test]
fn silent_peer_times_out() {
    let cfg = ServerConfig {
        handshake_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let s = server_cfg("timeout", cfg, iface(VICTIM));

    // Silent right after HELLO.
    let t0 = Instant::now();
    let p = RawPeer::connect(&s.addr);
    let reason = p.expect_disconnect();
    let waited = t0.elapsed();
    assert_eq!(reason, "handshake timed out");
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
        "timed out after {waited:?}"
    );
    s.expect_rejected(None, &reason);

    // Silent after INIT: the id it held is released.
    let p = RawPeer::connect(&s.addr);
    p.ack(&init(VICTIM), None);
    assert_eq!(p.expect_disconnect(), "handshake timed out");
    s.expect_rejected(Some(VICTIM), "handshake timed out");

    // A connected slave is not subject to the timeout.
    let slave = connect_slave(&s.addr, &slave_cfg(GOOD)).expect("connect");
    s.connected();
    assert!(
        !readable(slave.control_fd(), 400),
        "connected slave dropped"
    );
    assert_eq!(slave.poll_disconnect(), None);
    drop(slave);
    s.disconnected();
    assert_unharmed(&s);
}

#[test]
fn messages_after_connected_disconnect_the_peer() {
    for (name, want) in [
        (
            "late-region",
            "unexpected AddRegion on a connected interface",
        ),
        ("late-garbage", "malformed message"),
    ] {
        let s = server(name, iface(VICTIM));
        let p = RawPeer::connect(&s.addr);
        let mem = Mem::new();
        let _fds = raw_resources(&p, &mem);
        p.send(&connect_msg(), None);
        match p.recv() {
            Message::Connected { if_name } => assert_eq!(if_name, "if1"),
            other => panic!("expected CONNECTED, got {other:?}"),
        }
        let m = s.connected();
        assert!(m.state.is_up());
        let reason = if name == "late-region" {
            p.refused(&add_region(1, mem.size()), Some(mem.region.fd()))
        } else {
            p.refused_raw(&[7u8; 64], None)
        };
        assert_contains(&reason, want);
        let (id, ev_reason, by_peer) = s.disconnected();
        assert_eq!((id, by_peer), (VICTIM, false));
        assert_eq!(on_wire(&ev_reason), reason);
        assert!(!m.state.is_up(), "link left up after a protocol violation");
        assert_unharmed(&s);
    }
}

#[test]
fn peer_flooding_the_server_with_handshakes_is_bounded() {
    let cfg = ServerConfig {
        max_pending: 4,
        ..ServerConfig::default()
    };
    let s = server_cfg("flood", cfg, iface(VICTIM));
    let pending: Vec<RawPeer> = (0..4).map(|_| RawPeer::connect(&s.addr)).collect();
    let extra = memif_cni::memif::socket::Channel::connect(&s.addr).expect("connect");
    set_recv_timeout(&extra);
    match extra.recv().expect("reply").msg {
        Message::Disconnect(d) => assert_contains(&d.reason, "too many connections"),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    drop(pending);
    for _ in 0..4 {
        assert_eq!(s.rejected().0, None);
    }
    assert_unharmed(&s);
}

// ---------------------------------------------------------------------
// Data path: a connected slave corrupts its rings.
// ---------------------------------------------------------------------

/// A connected well-behaved slave on VICTIM, with a few frames exchanged.
struct Victim {
    s: TestServer,
    slave: SlaveConnection,
    m: Box<MasterConnection>,
}

fn victim(name: &str) -> Victim {
    let s = server(name, iface(VICTIM));
    let mut slave = connect_slave(&s.addr, &slave_cfg(VICTIM)).expect("connect");
    let mut m = s.connected();
    exchange(&mut m, &mut slave, 9, 5, 100);
    Victim { s, slave, m }
}

impl Victim {
    fn bad(&self) -> u64 {
        self.m.state.bad_descriptors.load(Ordering::Relaxed)
    }

    /// The owner reacts to a ring error as a dataplane would: disconnect
    /// with the error as reason. The slave must see that reason, the
    /// server report it, and both ids must still be served.
    #[track_caller]
    fn finish(self, reason: &str) {
        let Victim { s, slave, m } = self;
        s.handle.disconnect(VICTIM, reason);
        assert_eq!(wait_master_disconnect(&slave), on_wire(reason));
        assert!(!slave.state.is_up());
        let (id, got, by_peer) = s.disconnected();
        assert_eq!((id, got.as_str(), by_peer), (VICTIM, reason, false));
        assert!(!m.state.is_up() && !m.rx[0].is_up());
        assert_unharmed(&s);
    }
}

/// A valid S2M descriptor of the victim slave (its own buffer for `slot`).
fn good_s2m_desc(v: &Victim, len: u32, flags: u16) -> Desc {
    let ring = v.slave.tx[0].ring();
    // Slave layout: 2 rings, then each ring's buffers, 2048 bytes each.
    let base = 2 * RingRef::bytes_for(ring.log2_size()) as u32;
    Desc {
        flags,
        region: 0,
        length: len,
        offset: base,
    }
}

/// Publishes `descs` on the victim's S2M ring; the master's next rx_burst
/// must fail with an error `check` accepts, consume nothing, count one bad
/// descriptor per call, and fail the same way again.
#[track_caller]
fn s2m_attack(name: &str, descs: impl FnOnce(&Victim) -> Vec<Desc>, check: fn(&RingError) -> bool) {
    let mut v = victim(name);
    let descs = descs(&v);
    let ring = v.slave.tx[0].ring().clone();
    let head = ring.head();
    for (k, d) in descs.iter().enumerate() {
        ring.set_desc(head.wrapping_add(k as u16), *d);
    }
    ring.set_head(head.wrapping_add(descs.len() as u16));
    let (bad0, tail0, stats0) = (v.bad(), ring.tail(), v.m.rx[0].stats());
    let mut bufs = PacketBuf::batch(8, MAX_FRAME);
    let err = v.m.rx[0]
        .rx_burst(&mut bufs)
        .expect_err("bad descriptor accepted");
    assert!(check(&err), "unexpected error {err:?}");
    assert_eq!(v.bad(), bad0 + 1);
    assert_eq!(ring.tail(), tail0, "tail moved past a bad descriptor");
    assert_eq!(v.m.rx[0].stats(), stats0);
    assert_eq!(v.m.rx[0].rx_burst(&mut bufs), Err(err.clone()));
    assert_eq!(v.bad(), bad0 + 2);
    v.finish(&err.to_string());
}

#[test]
fn descriptor_with_unknown_region_index() {
    s2m_attack(
        "rx-region-1",
        |v| {
            vec![Desc {
                region: 1,
                ..good_s2m_desc(v, 64, 0)
            }]
        },
        |e| matches!(e, RingError::BadRegion { region: 1, .. }),
    );
    s2m_attack(
        "rx-region-max",
        |v| {
            vec![Desc {
                region: u16::MAX,
                ..good_s2m_desc(v, 64, 0)
            }]
        },
        |e| {
            matches!(
                e,
                RingError::BadRegion {
                    region: u16::MAX,
                    ..
                }
            )
        },
    );
}

#[test]
fn descriptor_offset_beyond_region() {
    s2m_attack(
        "rx-offset-end",
        |v| {
            let len = v.slave.region.len() as u32;
            vec![Desc {
                offset: len,
                ..good_s2m_desc(v, 1, 0)
            }]
        },
        |e| matches!(e, RingError::OutOfBounds { length: 1, .. }),
    );
    s2m_attack(
        "rx-offset-straddle",
        |v| {
            let len = v.slave.region.len() as u32;
            vec![Desc {
                offset: len - 10,
                ..good_s2m_desc(v, 64, 0)
            }]
        },
        |e| matches!(e, RingError::OutOfBounds { length: 64, .. }),
    );
}

#[test]
fn descriptor_offset_plus_length_overflows() {
    s2m_attack(
        "rx-overflow-u32",
        |v| {
            vec![Desc {
                offset: u32::MAX - 3,
                ..good_s2m_desc(v, 64, 0)
            }]
        },
        |e| {
            matches!(
                e,
                RingError::OutOfBounds {
                    offset: 0xffff_fffc,
                    length: 64,
                    ..
                }
            )
        },
    );
    s2m_attack(
        "rx-length-max",
        |v| vec![good_s2m_desc(v, u32::MAX, 0)],
        |e| {
            matches!(
                e,
                RingError::OutOfBounds {
                    length: u32::MAX,
                    ..
                }
            )
        },
    );
}

#[test]
fn descriptor_with_zero_length() {
    s2m_attack(
        "rx-zero",
        |v| vec![good_s2m_desc(v, 0, 0)],
        |e| matches!(e, RingError::ZeroLength { .. }),
    );
}

#[test]
fn bad_descriptor_after_good_ones() {
    // A good frame, then a chain whose second link is bad: the burst fails
    // as a whole and nothing is consumed.
    s2m_attack(
        "rx-mixed",
        |v| {
            let g = good_s2m_desc(v, 100, 0);
            let n = good_s2m_desc(v, 100, DESC_FLAG_NEXT);
            vec![g, n, Desc { region: 7, ..g }]
        },
        |e| matches!(e, RingError::BadRegion { region: 7, .. }),
    );
}

#[test]
fn chains_too_long() {
    // 5 x 2048 bytes = 10240 > 9216.
    s2m_attack(
        "rx-frame-long",
        |v| {
            let n = good_s2m_desc(v, 2048, DESC_FLAG_NEXT);
            vec![n, n, n, n, good_s2m_desc(v, 2048, 0)]
        },
        |e| matches!(e, RingError::FrameTooLong { limit: 9216 }),
    );
    // The whole ring is one unfinished chain.
    s2m_attack(
        "rx-chain-ring",
        |v| vec![good_s2m_desc(v, 1, DESC_FLAG_NEXT); 64],
        |e| matches!(e, RingError::ChainTooLong),
    );
}

#[test]
fn partial_chain_waits_for_the_rest() {
    let mut v = victim("rx-partial");
    let ring = v.slave.tx[0].ring().clone();
    let head = ring.head();
    let n = good_s2m_desc(&v, 100, DESC_FLAG_NEXT);
    ring.set_desc(head, n);
    ring.set_desc(head.wrapping_add(1), n);
    ring.set_head(head.wrapping_add(2));
    let mut bufs = PacketBuf::batch(4, MAX_FRAME);
    assert_eq!(v.m.rx[0].rx_burst(&mut bufs), Ok(0), "half a frame");
    assert_eq!(v.bad(), 0);
    ring.set_desc(head.wrapping_add(2), good_s2m_desc(&v, 50, 0));
    ring.set_head(head.wrapping_add(3));
    assert_eq!(v.m.rx[0].rx_burst(&mut bufs), Ok(1));
    assert_eq!(bufs[0].len(), 250);
    assert_eq!(ring.tail(), head.wrapping_add(3));
    v.finish("test done");
}

#[test]
fn head_beyond_ring_size() {
    for (name, ahead) in [("rx-head-65", 65u16), ("rx-head-back", u16::MAX)] {
        let mut v = victim(name);
        let ring = v.slave.tx[0].ring().clone();
        let tail = ring.tail();
        ring.set_head(tail.wrapping_add(ahead));
        let mut bufs = PacketBuf::batch(4, MAX_FRAME);
        let want = RingError::IndexOutOfRange {
            head: tail.wrapping_add(ahead),
            tail,
            size: 64,
        };
        assert_eq!(v.m.rx[0].pending(), Err(want.clone()));
        assert_eq!(v.m.rx[0].rx_burst(&mut bufs), Err(want.clone()));
        assert_eq!(v.bad(), 2);
        assert_eq!(ring.tail(), tail);
        v.finish(&want.to_string());
    }
}

/// Corrupts the descriptor the master would fill next on the M2S ring; the
/// master's tx_burst must fail and write nothing at all into the region.
#[track_caller]
fn m2s_attack(name: &str, corrupt: impl FnOnce(&Victim, &RingRef), check: fn(&RingError) -> bool) {
    let mut v = victim(name);
    let ring = v.slave.rx[0].ring().clone();
    let tail = ring.tail();
    corrupt(&v, &ring);
    let mut before = vec![0u8; v.slave.region.len()];
    assert!(v.slave.region.read(0, &mut before));
    let (bad0, stats0) = (v.bad(), v.m.tx[0].stats());

    let err = v.m.tx[0]
        .tx_burst(&[frame(1, 0, 1500)])
        .expect_err("bad descriptor accepted");
    assert!(check(&err), "unexpected error {err:?}");
    let mut after = vec![0u8; v.slave.region.len()];
    assert!(v.slave.region.read(0, &mut after));
    if let Some(at) = before.iter().zip(&after).position(|(a, b)| a != b) {
        panic!("master wrote into the region at {at} despite {err}");
    }
    assert_eq!(ring.tail(), tail);
    assert_eq!(v.bad(), bad0 + 1);
    assert_eq!(v.m.tx[0].stats(), stats0);
    v.finish(&err.to_string());
}

/// Overwrites the next M2S slot with `f(original)`.
fn rewrite_next(ring: &RingRef, f: impl FnOnce(Desc) -> Desc) {
    let t = ring.tail();
    ring.set_desc(t, f(ring.desc(t)));
}

#[test]
fn master_tx_against_bad_posted_buffers() {
    m2s_attack(
        "tx-region",
        |_, r| rewrite_next(r, |d| Desc { region: 3, ..d }),
        |e| matches!(e, RingError::BadRegion { region: 3, .. }),
    );
    m2s_attack(
        "tx-offset-end",
        |v, r| {
            let len = v.slave.region.len() as u32;
            rewrite_next(r, |d| Desc {
                offset: len - 8,
                ..d
            })
        },
        |e| matches!(e, RingError::OutOfBounds { length: 2048, .. }),
    );
    m2s_attack(
        "tx-offset-overflow",
        |_, r| {
            rewrite_next(r, |d| Desc {
                offset: u32::MAX - 100,
                ..d
            })
        },
        |e| matches!(e, RingError::OutOfBounds { .. }),
    );
    m2s_attack(
        "tx-length-huge",
        |_, r| {
            rewrite_next(r, |d| Desc {
                length: u32::MAX,
                ..d
            })
        },
        |e| matches!(e, RingError::OutOfBounds { .. }),
    );
    m2s_attack(
        "tx-zero",
        |_, r| rewrite_next(r, |d| Desc { length: 0, ..d }),
        |e| matches!(e, RingError::ZeroLength { .. }),
    );
    m2s_attack(
        "tx-head",
        |_, r| r.set_head(r.tail().wrapping_add(65)),
        |e| matches!(e, RingError::IndexOutOfRange { size: 64, .. }),
    );
}

/// Found by the `rings` fuzz target: a slave that moves its M2S head back
/// while the master still counts the buffers posted before made `push`
/// take more buffers off its count than were left (an overflow: a panic
/// with overflow checks, a wrapped count without). It is a ring error.
#[test]
fn head_moved_back_during_push() {
    let mut v = victim("tx-head-back");
    let ring = v.slave.rx[0].ring().clone();
    let tail = ring.tail();
    let fill = |r: &Region, off: usize, _: usize, n: usize| assert!(r.write(off, &vec![7; n]));
    ring.set_head(tail.wrapping_add(3));
    assert_eq!(v.m.tx[0].push(100, fill), Ok(Pushed::Queued));
    // The master counts two more posted buffers; the slave leaves one.
    ring.set_head(tail.wrapping_add(2));
    let bad0 = v.bad();
    let err = v.m.tx[0]
        .push(2 * 2048 + 1, fill)
        .expect_err("buffers taken back were used");
    assert!(
        matches!(err, RingError::IndexOutOfRange { size: 64, .. }),
        "{err:?}"
    );
    assert_eq!(v.bad(), bad0 + 1);
    assert_eq!(ring.tail(), tail, "nothing published");
    v.finish(&err.to_string());
}

// ---------------------------------------------------------------------
// A peer rewriting its rings at random while the master works.
// ---------------------------------------------------------------------

/// xorshift64: enough randomness for fuzzing, no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A descriptor that is valid about half of the time. Offsets that may be
/// valid are at least `lo`.
fn random_desc(rng: &mut Rng, lo: u32, region_len: u32) -> Desc {
    let flags = if rng.below(8) == 0 { DESC_FLAG_NEXT } else { 0 };
    match rng.below(6) {
        0 => Desc {
            flags: rng.next() as u16,
            region: rng.next() as u16,
            length: rng.next() as u32,
            offset: rng.next() as u32,
        },
        1 => Desc {
            flags,
            region: rng.below(3) as u16,
            length: rng.below(4096) as u32,
            offset: lo + rng.below((region_len - lo) as u64 + 4096) as u32,
        },
        2 => Desc {
            flags,
            region: 0,
            length: rng.below(3) as u32,
            offset: region_len - rng.below(4) as u32,
        },
        _ => Desc {
            flags,
            region: 0,
            length: 1 + rng.below(2048) as u32,
            offset: lo + rng.below((region_len - lo) as u64 - 2048) as u32,
        },
    }
}

/// Spawns a peer thread that keeps rewriting descriptors and moving
/// `head` (sometimes past the ring size) until `stop`. Descriptors that
/// may be valid start at offset `lo` or later.
fn spawn_rewriter(
    ring: RingRef,
    lo: u32,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut rng = Rng(seed);
        let size = ring.size() as u64;
        let region_len = ring.region().len() as u32;
        let mut rounds = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let tail = ring.tail();
            let n = rng.below(size + 3) as u16;
            // One round in four posts only valid single-buffer frames, so
            // whole bursts get through between the attacks.
            let clean = rng.below(4) == 0;
            for k in 0..n.min(size as u16) {
                let d = if clean {
                    Desc {
                        flags: 0,
                        region: 0,
                        length: 2048,
                        offset: lo + rng.below((region_len - lo) as u64 - 2048) as u32,
                    }
                } else {
                    random_desc(&mut rng, lo, region_len)
                };
                ring.set_desc(tail.wrapping_add(k), d);
            }
            ring.set_head(tail.wrapping_add(n));
            rounds += 1;
        }
        rounds
    })
}

#[test]
fn descriptor_rewriting_peer_cannot_break_master_rx() {
    let mut v = victim("fuzz-rx");
    let stop = Arc::new(AtomicBool::new(false));
    // Reading is harmless, so buffers may be anywhere, ring headers too.
    let peer = spawn_rewriter(
        v.slave.tx[0].ring().clone(),
        0,
        0x9e37_79b9_7f4a_7c15,
        stop.clone(),
    );
    let mut bufs = PacketBuf::batch(32, MAX_FRAME);
    let (mut frames, mut errors, mut calls) = (0u64, 0u64, 0u64);
    // At least 0.5 s, and on until both outcomes were seen (bounded).
    let (t0, min) = (Instant::now(), Duration::from_millis(500));
    while t0.elapsed() < min || ((frames == 0 || errors == 0) && t0.elapsed() < WAIT) {
        calls += 1;
        match v.m.rx[0].rx_burst(&mut bufs) {
            Ok(n) => {
                assert!(n <= bufs.len());
                for b in &bufs[..n] {
                    assert!(!b.is_empty() && b.len() <= MAX_FRAME, "{} bytes", b.len());
                }
                frames += n as u64;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                errors += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = peer.join().expect("peer thread");
    assert!(rounds > 0 && calls > 0);
    assert!(frames > 0, "no valid frame got through in {calls} calls");
    assert!(errors > 0, "no bad descriptor detected in {calls} calls");
    assert_eq!(v.bad(), errors, "every error is counted once");
    v.finish("fuzzed");
}

#[test]
fn descriptor_rewriting_peer_cannot_break_master_tx() {
    let mut v = victim("fuzz-tx");
    let stop = Arc::new(AtomicBool::new(false));
    // The master may fill any buffer the peer posts, also one overlapping
    // the ring header; then this peer, which derives head from tail, would
    // lose track of the ring and only IndexOutOfRange would follow. Legal,
    // but it would end the test early: posted buffers avoid the rings.
    let rings_end = 2 * RingRef::bytes_for(v.slave.rx[0].ring().log2_size()) as u32;
    let peer = spawn_rewriter(
        v.slave.rx[0].ring().clone(),
        rings_end,
        0x2545_f491_4f6c_dd1d,
        stop.clone(),
    );
    let batch = frames(3, 16, &[64, 1500, 3000, 9000]);
    let (mut sent, mut errors, mut calls) = (0u64, 0u64, 0u64);
    let (t0, min) = (Instant::now(), Duration::from_millis(300));
    while t0.elapsed() < min || ((sent == 0 || errors == 0) && t0.elapsed() < WAIT) {
        calls += 1;
        match v.m.tx[0].tx_burst(&batch) {
            Ok(n) => {
                assert!(n <= batch.len());
                sent += n as u64;
            }
            Err(_) => errors += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    peer.join().expect("peer thread");
    assert!(calls > 0 && errors > 0, "{calls} calls, no error");
    assert!(sent > 0, "no frame sent in {calls} calls");
    assert_eq!(v.bad(), errors);
    v.finish("fuzzed");
}

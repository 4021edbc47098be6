//! The master's handshake state machine (`memif::master::Handshake`) fed
//! control-message sequences as a hostile slave would send them: any
//! bytes, any order, with or without a file descriptor of any kind.
//!
//! Input: 4 header bytes, then records of 1 control byte + 128 message
//! bytes (a trailing partial record is ignored).
//! - header: max regions (1 + h0 % 8), s2m rings (1 + h1 % 8), m2s rings
//!   (1 + h2 % 8), log2 ring size limit (h3 % 16) of every interface;
//! - control byte, bits 0-2: the fd sent with the message: 0 none, 1 a
//!   sealed memfd of the size an ADD_REGION announces, 2 the same unsealed,
//!   3 sealed and one byte short, 4 a non-blocking eventfd, 5 a blocking
//!   eventfd, 6 a pipe, 7 a sealed memfd of 4 KiB whatever is announced;
//!   bit 3: for an ADD_RING, write the ring cookie at its offset in its
//!   region first (as a slave initialising its ring would).
//!
//! Interfaces: id 0 ethernet without secret, id 1 ip with secret
//! "s3cret", id 2 already connected, every other id unknown. The driver's
//! rules are kept: a message that does not decode, or a rejection, ends
//! the connection.

#![no_main]

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use libfuzzer_sys::fuzz_target;
use memif_cni::memif::master::{Handshake, InterfaceConfig, Limits, Lookup, Outcome, Reject};
use memif_cni::memif::socket::Received;
use memif_cni::memif::wire::{Disconnect, Message, Mode, MSG_SIZE, RING_COOKIE};
use memif_cni::memif::{PacketBuf, RingError};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::unistd::ftruncate;

/// Largest memfd made for a region (sparse: only the cookies written use
/// memory): two log2 14 rings fit; a larger announced size gets a memfd
/// this size, too small, refused at CONNECT.
const REGION_CAP: u64 = 1 << 20;

fn memfd(size: u64, sealed: bool) -> File {
    let fd = memfd_create(
        "fuzz-region",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .expect("memfd");
    ftruncate(&fd, size as i64).expect("ftruncate");
    if sealed {
        fcntl(&fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)).expect("seal");
    }
    File::from(fd)
}

/// The fd of `kind` for `msg`; memfds are also returned as a `File` the
/// harness keeps, to write ring cookies into later.
fn make_fd(kind: u8, msg: &Message) -> (Option<OwnedFd>, Option<File>) {
    let announced = match msg {
        Message::AddRegion(r) => r.size,
        _ => 4096,
    };
    let size = announced.min(REGION_CAP);
    let region = |f: File| {
        let keep = f.try_clone().expect("dup");
        (Some(OwnedFd::from(f)), Some(keep))
    };
    match kind {
        0 => (None, None),
        1 => region(memfd(size, true)),
        2 => region(memfd(size, false)),
        3 => region(memfd(size.saturating_sub(1), true)),
        4 | 5 => {
            let flags = if kind == 4 {
                EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC
            } else {
                EfdFlags::EFD_CLOEXEC
            };
            let e = EventFd::from_flags(flags).expect("eventfd");
            (Some(OwnedFd::from(e)), None)
        }
        6 => {
            let (r, _w) = nix::unistd::pipe().expect("pipe");
            (Some(r), None)
        }
        _ => region(memfd(4096, true)),
    }
}

fn limits(h: &[u8]) -> Limits {
    Limits {
        max_regions: 1 + (h[0] % 8) as u16,
        max_s2m_rings: 1 + (h[1] % 8) as u16,
        max_m2s_rings: 1 + (h[2] % 8) as u16,
        max_log2_s2m_ring_size: h[3] % 16,
        max_log2_m2s_ring_size: h[3] % 16,
        ..Limits::default()
    }
}

fn lookup(id: u32, limits: Limits) -> Lookup {
    match id {
        0 => Lookup::Found(InterfaceConfig {
            limits,
            ..InterfaceConfig::new(0, "memif-eth1")
        }),
        1 => Lookup::Found(InterfaceConfig {
            mode: Mode::Ip,
            secret: Some("s3cret".into()),
            limits,
            ..InterfaceConfig::new(1, "memif-eth2")
        }),
        2 => Lookup::AlreadyConnected,
        _ => Lookup::Unknown,
    }
}

/// What the driver sends for a rejection must be a well-formed DISCONNECT.
fn check_reject(r: &Reject) {
    if let Reject::Protocol(reason) = r {
        assert!(!reason.is_empty(), "empty rejection reason");
        let d = Message::Disconnect(Disconnect {
            code: 1,
            reason: reason.clone(),
        });
        assert!(Message::decode(&d.encode()).is_ok());
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, records) = data.split_at(4);
    let lim = limits(head);
    let (mut hs, hello) = Handshake::start("fuzz-master", lim);
    assert_eq!(Message::decode(&hello.encode()).as_ref(), Ok(&hello));

    // The memfds of accepted regions, in index order (the harness's copy).
    let mut regions: Vec<Option<File>> = Vec::new();
    let mut init_accepted = false;
    let mut conn = None;
    for rec in records.chunks_exact(1 + MSG_SIZE) {
        let ctl = rec[0];
        let Ok(msg) = Message::decode(&rec[1..]) else {
            // The driver disconnects on a malformed message.
            break;
        };
        let (fd, keep) = make_fd(ctl & 7, &msg);
        let had_fd = fd.is_some();
        if let Message::AddRing(r) = &msg {
            if ctl & 8 != 0 {
                if let Some(Some(f)) = regions.get(r.region as usize) {
                    // Short writes past the end are fine: the ring is then
                    // out of bounds anyway.
                    let _ = f.write_at(&RING_COOKIE.to_le_bytes(), r.offset as u64);
                }
            }
        }
        let was_init = matches!(msg, Message::Init(_));
        let asked = match &msg {
            Message::Init(i) => Some(i.id),
            _ => None,
        };
        let is_connect = matches!(msg, Message::Connect { .. });
        let is_region = matches!(msg, Message::AddRegion(_));
        let out = hs.on_message(
            Received {
                msg,
                fd,
                creds: None,
            },
            |id| lookup(id, lim),
        );
        if was_init && !init_accepted && !had_fd {
            assert_eq!(hs.asked_id(), asked, "INIT's id is kept for the logs");
        }
        if conn.is_some() {
            assert!(out.is_err(), "a connected handshake accepted {out:?}");
        }
        match out {
            Ok(Outcome::Reply(m)) => {
                assert_eq!(m, Message::Ack, "the master only ever acknowledges");
                if was_init {
                    assert!(!init_accepted, "a second INIT was accepted");
                    init_accepted = true;
                    assert_eq!(hs.id(), asked);
                }
                assert!(init_accepted, "a message was accepted before INIT");
                if is_region {
                    assert!(had_fd);
                    regions.push(keep);
                }
            }
            Ok(Outcome::Connected(c, m)) => {
                assert!(is_connect && init_accepted);
                assert!(matches!(m, Message::Connected { .. }));
                assert!(!c.rx.is_empty() && !c.tx.is_empty());
                assert!(c.rx.len() <= lim.max_s2m_rings as usize);
                assert!(c.tx.len() <= lim.max_m2s_rings as usize);
                assert_eq!(c.regions.len(), regions.len());
                assert_eq!(Some(c.id), hs.id());
                conn = Some(c);
            }
            Err(r) => {
                check_reject(&r);
                break;
            }
        }
    }
    // The queues of a connection work on fresh rings: heads at 0, tails
    // at 0 unless another ring's header landed on one (rings may overlap,
    // and then a head may point at descriptors that are another ring's
    // bytes). A burst then fails with a ring error or stays within its
    // bounds; it never panics.
    if let Some(mut c) = conn {
        let ok = |r: Result<usize, RingError>, max: usize| match r {
            Ok(n) => n <= max,
            Err(_) => true,
        };
        let mut bufs = PacketBuf::batch(2, 2048);
        for q in &mut c.rx {
            assert!(ok(q.rx_burst(&mut bufs), bufs.len()));
        }
        for q in &mut c.tx {
            assert!(ok(q.tx_burst(&[[0u8; 60]]), 1));
        }
    }
});

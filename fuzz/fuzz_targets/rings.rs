//! The master's queues (`MasterRx`, `MasterTx`) against an in-process
//! slave that rewrites descriptors, heads, flags, tails and any region
//! byte between the master's calls. No sockets: the connection comes from
//! the handshake state machine fed a memfd region and eventfds.
//!
//! Layout: region 0 (32 KiB) holds the S2M ring at 0, the M2S ring at
//! 4352 and buffers from 8704; region 1 is 4 KiB of buffers only.
//!
//! Input: 4 header bytes (S2M log2 size h0 % 9, M2S log2 size h1 % 9, the
//! frame limit from h2, the buffer size of `post` from h3), then
//! operations, one opcode byte and its arguments each (the match in
//! `fuzz_target!`: the slave's writes, then the master's calls).
//!
//! Checked after every master call: it fails at most once per call and
//! every failure is counted once; it writes no shared byte but its tails,
//! the S2M ring's flags, and the length, flags and metadata of descriptors
//! and the buffers they describe (region and offset stay the slave's); what
//! it receives is what the descriptors it consumed describe, chains
//! joined; what it sends are whole frames, in order, byte for byte where
//! the slave's buffers do not overlap.

#![no_main]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use memif_cni::memif::master::{Handshake, InterfaceConfig, Limits, Lookup, Outcome};
use memif_cni::memif::shm::{Desc, Region, RingRef, DESC_FLAG_NEXT, DESC_SIZE, RING_HEADER_SIZE};
use memif_cni::memif::socket::Received;
use memif_cni::memif::wire::{AddRegion, AddRing, Init, Message, Mode, RING_FLAG_S2M, VERSION};
use memif_cni::memif::{MasterConnection, PacketBuf, Pushed};
use nix::sys::eventfd::{EfdFlags, EventFd};

const R0: usize = 32 << 10;
const R1: usize = 4 << 10;
const S2M_OFF: usize = 0;
const M2S_OFF: usize = 4352;
const BUF_BASE: usize = 8704;
const FRAME_LIMITS: [usize; 6] = [64, 100, 1500, 2048, 9000, 9216];
const BUFFER_SIZES: [usize; 6] = [64, 128, 256, 1000, 2048, 4096];
/// Regions and eventfds made once; every input zeroes the regions and
/// connects afresh (the master maps its own copy each time).
struct Shared {
    regions: [Arc<Region>; 2],
    efds: [EventFd; 2],
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let efd = || EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).unwrap();
        Shared {
            regions: [
                Arc::new(Region::create("fuzz-rings-0", R0).unwrap()),
                Arc::new(Region::create("fuzz-rings-1", R1).unwrap()),
            ],
            efds: [efd(), efd()],
        }
    })
}

fn dup(fd: std::os::fd::BorrowedFd<'_>) -> Option<OwnedFd> {
    Some(fd.try_clone_to_owned().unwrap())
}

/// Connects a master to the slave's rings, as memifd would.
fn connect(s: &Shared, log2: [u8; 2], max_frame: usize) -> Box<MasterConnection> {
    let limits = Limits {
        max_frame,
        ..Limits::default()
    };
    let (mut hs, _) = Handshake::start("fuzz", limits);
    let ring = |s2m: bool, off: usize, log2: u8| {
        Message::AddRing(AddRing {
            flags: if s2m { RING_FLAG_S2M } else { 0 },
            index: 0,
            region: 0,
            offset: off as u32,
            log2_ring_size: log2,
            private_hdr_size: 0,
        })
    };
    let steps = [
        (
            Message::Init(Init {
                version: VERSION,
                id: 0,
                mode: Mode::Ethernet,
                secret: String::new(),
                name: "slave".into(),
            }),
            None,
        ),
        (
            Message::AddRegion(AddRegion {
                index: 0,
                size: R0 as u64,
            }),
            dup(s.regions[0].fd()),
        ),
        (
            Message::AddRegion(AddRegion {
                index: 1,
                size: R1 as u64,
            }),
            dup(s.regions[1].fd()),
        ),
        (ring(true, S2M_OFF, log2[0]), dup(s.efds[0].as_fd())),
        (ring(false, M2S_OFF, log2[1]), dup(s.efds[1].as_fd())),
        (
            Message::Connect {
                if_name: "slave".into(),
            },
            None,
        ),
    ];
    let mut conn = None;
    for (msg, fd) in steps {
        let rx = Received {
            msg,
            fd,
            creds: None,
        };
        let cfg = || {
            Lookup::Found(InterfaceConfig {
                limits,
                ..InterfaceConfig::new(0, "fuzz")
            })
        };
        match hs.on_message(rx, |_| cfg()).expect("a valid handshake") {
            Outcome::Reply(_) => {}
            Outcome::Connected(c, _) => conn = Some(c),
        }
    }
    conn.expect("connected")
}

/// The input, read from the front.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// Both regions as they were at one moment (the slave's view). Their
/// buffers go back to a pool when dropped: a call takes two or three.
struct Snap([Vec<u8>; 2]);

thread_local! {
    static POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl std::ops::Deref for Snap {
    type Target = [Vec<u8>; 2];
    fn deref(&self) -> &[Vec<u8>; 2] {
        &self.0
    }
}

impl Drop for Snap {
    fn drop(&mut self) {
        POOL.with(|p| p.borrow_mut().extend(self.0.iter_mut().map(std::mem::take)));
    }
}

fn snapshot(s: &Shared) -> Snap {
    Snap(std::array::from_fn(|i| {
        let r = &s.regions[i];
        let mut v = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
        v.resize(r.len(), 0);
        assert!(r.read(0, &mut v));
        v
    }))
}

/// Descriptor `counter` of the ring at `ring_off` (log2 `log2`) in a
/// snapshot of region 0.
fn desc_in(snap: &[u8], ring_off: usize, log2: u8, counter: u16) -> Desc {
    let slot = (counter & ((1u16 << log2) - 1)) as usize;
    let at = ring_off + RING_HEADER_SIZE + slot * DESC_SIZE;
    let b = &snap[at..at + DESC_SIZE];
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Desc {
        flags: u16_at(0),
        region: u16_at(2),
        length: u32_at(4),
        offset: u32_at(8),
    }
}

/// The bytes descriptor `d` describes in a snapshot (it was validated).
fn bytes_of<'a>(snap: &'a [Vec<u8>; 2], d: &Desc) -> &'a [u8] {
    let r = &snap[d.region as usize];
    &r[d.offset as usize..d.offset as usize + d.length as usize]
}

/// Byte ranges of region 0 or 1 the master may write during a call.
#[derive(Default)]
struct Allowed([Vec<(usize, usize)>; 2]);

impl Allowed {
    fn add(&mut self, region: usize, start: usize, len: usize) {
        self.0[region].push((start, start.saturating_add(len)));
    }
}

/// Every byte that changed between `before` and now must be allowed;
/// returns the regions as they are now.
fn check_writes(s: &Shared, before: &[Vec<u8>; 2], allowed: Allowed, what: &str) -> Snap {
    let after = snapshot(s);
    for r in 0..2 {
        if before[r] == after[r] {
            continue;
        }
        let mut diffs = Vec::new();
        for (k, (a, b)) in before[r].chunks(64).zip(after[r].chunks(64)).enumerate() {
            if a != b {
                diffs.extend((0..a.len()).filter(|&j| a[j] != b[j]).map(|j| 64 * k + j));
            }
        }
        let mut covered = vec![false; diffs.len()];
        for &(start, end) in &allowed.0[r] {
            let lo = diffs.partition_point(|&d| d < start);
            let hi = diffs.partition_point(|&d| d < end);
            covered[lo..hi].fill(true);
        }
        if let Some(i) = covered.iter().position(|c| !c) {
            let at = diffs[i];
            panic!(
                "{what}: the master wrote region {r} byte {at} ({:#x} -> {:#x})",
                before[r][at], after[r][at]
            );
        }
    }
    after
}

/// What the master may write on the S2M (receive) side.
fn rx_allowed() -> Allowed {
    let mut a = Allowed::default();
    a.add(0, S2M_OFF + 4, 2); // flags (interrupt mask)
    a.add(0, S2M_OFF + 64, 2); // tail
    a
}

/// What the master may write on the M2S (transmit) side: the tail, the
/// length/flags/metadata of every descriptor, and every buffer the ring
/// describes now.
fn tx_allowed(before: &[Vec<u8>; 2], log2: u8) -> Allowed {
    let mut a = Allowed::default();
    a.add(0, M2S_OFF + 64, 2);
    for slot in 0..1u16 << log2 {
        let at = M2S_OFF + RING_HEADER_SIZE + slot as usize * DESC_SIZE;
        a.add(0, at, 2);
        a.add(0, at + 4, 4);
        a.add(0, at + 12, 4);
        let d = desc_in(&before[0], M2S_OFF, log2, slot);
        if (d.region as usize) < 2 {
            a.add(d.region as usize, d.offset as usize, d.length as usize);
        }
    }
    a
}

/// Whether a buffer the M2S ring describes overlaps the ring itself: the
/// master's fills then rewrite descriptors (or the tail) under it, so what
/// it did can no longer be told from snapshots. Legal; the slave only
/// hurts itself.
fn m2s_clobbered(before: &[Vec<u8>; 2], log2: u8) -> bool {
    let ring_end = (M2S_OFF + RING_HEADER_SIZE + (DESC_SIZE << log2)) as u64;
    (0..1u16 << log2).any(|slot| {
        let d = desc_in(&before[0], M2S_OFF, log2, slot);
        let (s, e) = (d.offset as u64, d.offset as u64 + d.length as u64);
        d.region == 0 && s < ring_end && (M2S_OFF as u64) < e
    })
}

/// Frame bytes as expected (reported by length and first difference).
fn same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: frame of {} bytes, expected {}, first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

/// Frame `i` of a transmit call: `len` bytes of a pattern.
fn frame(seed: u8, i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| {
            seed.wrapping_add(i as u8)
                .wrapping_add((j as u8).wrapping_mul(31))
        })
        .collect()
}

/// The frames the descriptors `from..to` of the M2S ring hold in `snap`,
/// as (descriptors, bytes). Bytes are None when any buffer the master
/// could have written in the call (those posted from `from` up to `head`
/// in `before`) overlaps another or the ring: a write into one (also of a
/// frame that did not fit) may have covered another.
fn sent_frames(
    snap: &[Vec<u8>; 2],
    before: &[Vec<u8>; 2],
    head: u16,
    log2: u8,
    (from, to): (u16, u16),
    max_frame: usize,
) -> Vec<(Vec<Desc>, Option<Vec<u8>>)> {
    assert!(
        to.wrapping_sub(from) <= 1u16 << log2,
        "published {} descriptors on a ring of {}",
        to.wrapping_sub(from),
        1u16 << log2
    );
    let mut out = Vec::new();
    let mut cur = from;
    let size = 1u16 << log2;
    let mut spans: Vec<(u16, u64, u64)> = vec![(
        0,
        M2S_OFF as u64,
        (M2S_OFF + RING_HEADER_SIZE + (DESC_SIZE << log2)) as u64,
    )];
    for k in 0..head.wrapping_sub(from).min(size) {
        let d = desc_in(&before[0], M2S_OFF, log2, from.wrapping_add(k));
        let start = d.offset as u64;
        spans.push((d.region, start, start + d.length as u64));
    }
    while cur != to {
        let mut descs = Vec::new();
        loop {
            assert!(cur != to, "a chain continues past the published tail");
            let d = desc_in(&snap[0], M2S_OFF, log2, cur);
            assert!(d.length > 0 && (d.region as usize) < 2);
            assert!(d.offset as usize + d.length as usize <= snap[d.region as usize].len());
            descs.push(d);
            cur = cur.wrapping_add(1);
            if d.flags & DESC_FLAG_NEXT == 0 {
                break;
            }
            assert_eq!(d.flags, DESC_FLAG_NEXT, "the master writes NEXT or 0");
        }
        let len: usize = descs.iter().map(|d| d.length as usize).sum();
        assert!(len <= max_frame);
        out.push((descs, None));
    }
    let disjoint = spans.iter().enumerate().all(|(i, a)| {
        spans[..i]
            .iter()
            .all(|b| a.0 != b.0 || a.2 <= b.1 || b.2 <= a.1)
    });
    if disjoint {
        for (descs, bytes) in &mut out {
            *bytes = Some(
                descs
                    .iter()
                    .flat_map(|d| bytes_of(snap, d))
                    .copied()
                    .collect(),
            );
        }
    }
    out
}

struct Harness {
    s: &'static Shared,
    c: Box<MasterConnection>,
    log2: [u8; 2],
    max_frame: usize,
    buffer_size: usize,
    /// The master's receive tail (its own index, whatever the slave
    /// scribbles over the shared one).
    rx_tail: u16,
    /// The master's transmit tail, while it can be told from the shared
    /// one (see `Harness::tx_published`).
    tx_tail: Option<u16>,
    /// Frames pushed and not flushed yet (their bytes).
    pushed: Vec<Vec<u8>>,
    /// The slave acted since the first of `pushed`: it may have rewritten
    /// their descriptors, so they are published as they are then.
    tainted: bool,
    seed: u8,
}

impl Harness {
    fn slave_ring(&self, m2s: bool) -> RingRef {
        let (off, log2) = if m2s {
            (M2S_OFF, self.log2[1])
        } else {
            (S2M_OFF, self.log2[0])
        };
        RingRef::new(self.s.regions[0].clone(), off as u32, log2).unwrap()
    }

    fn bad(&self) -> u64 {
        self.c.state.bad_descriptors.load(Ordering::Relaxed)
    }

    /// Checks the failure count of a call that returned `failed`.
    fn counted(&self, before: u64, failed: bool, what: &str) {
        assert_eq!(
            self.bad(),
            before + failed as u64,
            "{what}: failures counted once"
        );
    }

    /// Receive: the frames the S2M descriptors from our tail describe.
    fn expected_rx(&self, snap: &[Vec<u8>; 2], n: usize) -> (Vec<Vec<u8>>, u16) {
        let mut cur = self.rx_tail;
        let mut frames = Vec::new();
        for _ in 0..n {
            let mut f = Vec::new();
            loop {
                let d = desc_in(&snap[0], S2M_OFF, self.log2[0], cur);
                f.extend_from_slice(bytes_of(snap, &d));
                cur = cur.wrapping_add(1);
                if d.flags & DESC_FLAG_NEXT == 0 {
                    break;
                }
            }
            assert!(!f.is_empty() && f.len() <= self.max_frame);
            frames.push(f);
        }
        (frames, cur)
    }

    fn rx_burst(&mut self, nbufs: usize, cap: usize) {
        let before = snapshot(self.s);
        let bad = self.bad();
        let mut bufs = PacketBuf::batch(nbufs, cap);
        let r = self.c.rx[0].rx_burst(&mut bufs);
        self.counted(bad, r.is_err(), "rx_burst");
        check_writes(self.s, &before, rx_allowed(), "rx_burst");
        let tail = self.slave_ring(false).tail();
        match r {
            Ok(n) => {
                assert!(n <= nbufs);
                let (want, end) = self.expected_rx(&before, n);
                for (b, w) in bufs.iter().zip(&want) {
                    same_bytes(b.as_slice(), w, "rx_burst");
                }
                if n > 0 {
                    assert_eq!(tail, end, "rx_burst: tail after the frames taken");
                    self.rx_tail = end;
                }
            }
            Err(_) => assert_eq!(
                tail,
                Self::rx_tail_field(&before),
                "rx_burst failed: tail kept"
            ),
        }
    }

    fn rx_tail_field(snap: &[Vec<u8>; 2]) -> u16 {
        let at = S2M_OFF + 64;
        u16::from_le_bytes([snap[0][at], snap[0][at + 1]])
    }

    fn rx_each(&mut self, max: usize, refuse_at: Option<usize>) {
        let before = snapshot(self.s);
        let bad = self.bad();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let r = self.c.rx[0].rx_each(max, |i, off, region, d| {
            if Some(i) == refuse_at {
                return false;
            }
            if got.len() == i {
                got.push(Vec::new());
            }
            assert_eq!(got[i].len(), off, "rx_each: chunk offsets");
            let mut b = vec![0u8; d.length as usize];
            assert!(
                region.read(d.offset as usize, &mut b),
                "validated out of bounds"
            );
            got[i].extend_from_slice(&b);
            true
        });
        self.counted(bad, r.is_err(), "rx_each");
        check_writes(self.s, &before, rx_allowed(), "rx_each");
        if let Ok(n) = r {
            assert!(n <= max);
            let (want, end) = self.expected_rx(&before, n);
            // `f` also sees the first chunks of a chain not complete yet;
            // that frame is not counted and comes again whole later.
            assert!(got.len() <= n + 1, "rx_each: frames");
            got.truncate(n);
            for (g, w) in got.iter().zip(&want) {
                same_bytes(g, w, "rx_each");
            }
            if n > 0 {
                assert_eq!(self.slave_ring(false).tail(), end);
                self.rx_tail = end;
            }
        }
    }

    fn peek(&mut self, max: usize, release: bool) {
        let before = snapshot(self.s);
        let bad = self.bad();
        // Room for a chain as long as the ring.
        let mut descs = vec![Desc::default(); 1 << self.log2[0]];
        let r = self.c.rx[0].peek(max, &mut descs);
        self.counted(bad, r.is_err(), "peek");
        let Ok(frames) = r else {
            check_writes(self.s, &before, rx_allowed(), "peek");
            return;
        };
        let n = frames.len();
        let all = frames.descs();
        assert!(n <= max);
        let (want, end) = self.expected_rx(&before, n);
        let mut next = 0usize;
        let mut count = 0usize;
        let mut total = 0u64;
        for (f, w) in frames.zip(&want) {
            assert!(
                std::ptr::eq(f.descs.as_ptr(), all[next..].as_ptr()),
                "peek: frames are contiguous"
            );
            let (last, chain) = f.descs.split_last().expect("a frame has a descriptor");
            assert!(chain.iter().all(|d| d.flags & DESC_FLAG_NEXT != 0));
            assert!(
                last.flags & DESC_FLAG_NEXT == 0,
                "peek: a frame ends its chain"
            );
            let bytes: Vec<u8> = f
                .descs
                .iter()
                .flat_map(|d| bytes_of(&before, d))
                .copied()
                .collect();
            assert_eq!(f.len, bytes.len());
            same_bytes(&bytes, w, "peek");
            next += f.descs.len();
            count += 1;
            total += f.len as u64;
        }
        assert_eq!(count, n, "peek: as many frames as it said");
        assert_eq!(next, all.len());
        assert_eq!(self.c.rx[0].peeked_bytes(), total);
        if release {
            self.c.rx[0].release();
            if n > 0 {
                assert_eq!(self.slave_ring(false).tail(), end);
                self.rx_tail = end;
            }
        }
        check_writes(self.s, &before, rx_allowed(), "peek/release");
    }

    /// The descriptors a transmit call published, from the shared tail
    /// before (`f0`) and after (`f1`) it; None when that cannot be told: a
    /// publish writes a new tail, but the slave may have scribbled the
    /// same value there before.
    fn tx_published(&mut self, f0: u16, f1: u16, clobbered: bool) -> Option<(u16, u16)> {
        let known = self.tx_tail;
        if clobbered {
            self.tx_tail = None;
            return None;
        }
        if f1 != f0 {
            self.tx_tail = Some(f1);
            return known.map(|k| (k, f1));
        }
        match known {
            Some(k) if k == f0 => Some((k, k)),
            _ => {
                self.tx_tail = None;
                None
            }
        }
    }

    fn tx_tail_field(snap: &[Vec<u8>; 2]) -> u16 {
        let at = M2S_OFF + 64;
        u16::from_le_bytes([snap[0][at], snap[0][at + 1]])
    }

    fn tx_burst(&mut self, lens: &[usize]) {
        // `tx_burst` first flushes what was pushed: do that as a call of
        // its own, so that each call publishes at most one ring's worth
        // (flush and burst together may publish more when the slave
        // posts more than its ring holds).
        if self.c.tx[0].has_pending() {
            self.flush();
        }
        let frames: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &l)| frame(self.seed, i, l))
            .collect();
        let before = snapshot(self.s);
        let clobbered = m2s_clobbered(&before, self.log2[1]);
        let bad = self.bad();
        let pkts = self.c.tx[0].stats().packets;
        let r = self.c.tx[0].tx_burst(&frames);
        self.counted(bad, r.is_err(), "tx_burst");
        let after = if clobbered {
            snapshot(self.s)
        } else {
            check_writes(
                self.s,
                &before,
                tx_allowed(&before, self.log2[1]),
                "tx_burst",
            )
        };
        let range = self.tx_published(
            Self::tx_tail_field(&before),
            Self::tx_tail_field(&after),
            clobbered,
        );
        let Some((from, to)) = range else {
            return;
        };
        let head = self.slave_ring(true).head();
        let published = sent_frames(
            &after,
            &before,
            head,
            self.log2[1],
            (from, to),
            self.max_frame,
        );
        let mut sendable = Vec::new();
        if let Ok(sent) = r {
            assert!(sent <= frames.len());
            sendable.extend(
                frames[..sent]
                    .iter()
                    .filter(|f| !f.is_empty() && f.len() <= self.max_frame)
                    .cloned(),
            );
            let new = self.c.tx[0].stats().packets - pkts;
            assert_eq!(new as usize, published.len(), "tx_burst: packets counted");
        }
        // Failed: nothing went out.
        self.match_sent(&published, &sendable, "tx_burst");
    }

    /// Every published frame is one of `frames`, in order (frames too
    /// long for the ring are dropped), byte for byte where checkable.
    fn match_sent(
        &self,
        published: &[(Vec<Desc>, Option<Vec<u8>>)],
        frames: &[Vec<u8>],
        what: &str,
    ) {
        let mut it = frames.iter();
        for (descs, bytes) in published {
            let len: usize = descs.iter().map(|d| d.length as usize).sum();
            let f = it
                .find(|f| f.len() == len)
                .unwrap_or_else(|| panic!("{what}: a published frame of {len} bytes was not sent"));
            if let Some(b) = bytes {
                same_bytes(b, f, what);
            }
        }
    }

    fn push(&mut self, len: usize, one: bool) {
        let f = frame(self.seed, self.pushed.len(), len);
        let before = snapshot(self.s);
        let clobbered = m2s_clobbered(&before, self.log2[1]);
        let bad = self.bad();
        let q = &mut self.c.tx[0];
        let r = if one {
            q.push_one(len, |region, off, room| {
                assert!(room >= len);
                assert!(region.write(off, &f), "validated out of bounds");
            })
        } else {
            q.push(len, |region, off, at, n| {
                assert!(region.write(off, &f[at..at + n]), "validated out of bounds");
            })
            .map(Some)
        };
        self.counted(bad, r.is_err(), "push");
        if clobbered {
            self.tx_tail = None;
        } else {
            let after = check_writes(self.s, &before, tx_allowed(&before, self.log2[1]), "push");
            assert_eq!(
                Self::tx_tail_field(&after),
                Self::tx_tail_field(&before),
                "push publishes nothing"
            );
        }
        if let Ok(Some(Pushed::Queued)) = r {
            assert!(len > 0 && len <= self.max_frame);
            self.pushed.push(f);
        }
    }

    fn flush(&mut self) {
        let before = snapshot(self.s);
        let clobbered = m2s_clobbered(&before, self.log2[1]);
        let pending = self.c.tx[0].has_pending();
        let (frames, _) = self.c.tx[0].flush();
        let after = check_writes(self.s, &before, tx_allowed(&before, self.log2[1]), "flush");
        let range = self.tx_published(
            Self::tx_tail_field(&before),
            Self::tx_tail_field(&after),
            clobbered,
        );
        let pushed = std::mem::take(&mut self.pushed);
        let tainted = std::mem::take(&mut self.tainted);
        if !pending {
            assert_eq!(frames, 0);
        }
        let Some((from, to)) = range.filter(|_| !tainted) else {
            return;
        };
        let head = self.slave_ring(true).head();
        let published = sent_frames(
            &after,
            &before,
            head,
            self.log2[1],
            (from, to),
            self.max_frame,
        );
        assert_eq!(frames as usize, published.len(), "flush: frames counted");
        assert_eq!(published.len(), pushed.len(), "flush: every pushed frame");
        self.match_sent(&published, &pushed, "flush");
    }

    /// The slave posts `n` buffers (M2S) or sends `n` one-buffer frames of
    /// `len` bytes (S2M) the way a correct slave does.
    fn post(&mut self, m2s: bool, n: u8, len: u8) {
        let ring = self.slave_ring(m2s);
        let mask = ring.size() - 1;
        let bs = self.buffer_size;
        let nbuf = (R0 - BUF_BASE) / bs;
        let head = ring.head();
        for k in 0..(n as u16).min(ring.size()) {
            let c = head.wrapping_add(k);
            let slot = (c & mask) as usize;
            let length = if m2s { bs } else { 1 + (len as usize * 8) % bs };
            let off = BUF_BASE + (slot % nbuf) * bs;
            if !m2s {
                let fill = frame(len, slot, length);
                self.s.regions[0].write(off, &fill);
            }
            ring.set_desc(
                c,
                Desc {
                    flags: 0,
                    region: 0,
                    length: length as u32,
                    offset: off as u32,
                },
            );
        }
        ring.set_head(head.wrapping_add((n as u16).min(ring.size())));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let (Some(a), Some(b), Some(f), Some(bs)) = (inp.u8(), inp.u8(), inp.u8(), inp.u8()) else {
        return;
    };
    let s = shared();
    for r in &s.regions {
        r.write(0, &vec![0u8; r.len()]);
    }
    let log2 = [a % 9, b % 9];
    RingRef::new(s.regions[0].clone(), S2M_OFF as u32, log2[0])
        .unwrap()
        .init_header(0);
    RingRef::new(s.regions[0].clone(), M2S_OFF as u32, log2[1])
        .unwrap()
        .init_header(0);
    let max_frame = FRAME_LIMITS[f as usize % FRAME_LIMITS.len()];
    let mut h = Harness {
        s,
        c: connect(s, log2, max_frame),
        log2,
        max_frame,
        buffer_size: BUFFER_SIZES[bs as usize % BUFFER_SIZES.len()],
        rx_tail: 0,
        tx_tail: Some(0),
        pushed: Vec::new(),
        tainted: false,
        seed: f,
    };
    let mut ops = 0;
    while let Some(op) = inp.u8() {
        ops += 1;
        if ops > 128 {
            break;
        }
        if op % 16 <= 5 && !h.pushed.is_empty() {
            h.tainted = true;
        }
        let done = (|| -> Option<()> {
            match op % 16 {
                // The slave rewrites a descriptor.
                0 => {
                    let sel = inp.u8()?;
                    let slot = inp.u16()?;
                    let flags = inp.u8()? as u16;
                    let length = inp.u32()?;
                    let offset = inp.u32()?;
                    let region = match (sel >> 1) & 7 {
                        0..=3 => 0,
                        4 | 5 => 1,
                        6 => 2,
                        _ => u16::MAX,
                    };
                    h.slave_ring(sel & 1 != 0).set_desc(
                        slot,
                        Desc {
                            flags,
                            region,
                            length,
                            offset,
                        },
                    );
                }
                // ... sets a head anywhere, or moves it on.
                1 => {
                    let sel = inp.u8()?;
                    let v = inp.u16()?;
                    h.slave_ring(sel & 1 != 0).set_head(v);
                }
                2 => {
                    let sel = inp.u8()?;
                    let n = inp.u8()? as u16;
                    let r = h.slave_ring(sel & 1 != 0);
                    r.set_head(r.head().wrapping_add(n));
                }
                // ... writes any bytes of a region (headers included).
                3 => {
                    let sel = inp.u8()?;
                    let off = inp.u16()? as usize;
                    let n = inp.u8()? as usize % 32;
                    let bytes = inp.bytes(n).to_vec();
                    let r = &h.s.regions[sel as usize & 1];
                    r.write(off % r.len(), &bytes);
                }
                // ... behaves.
                4 => {
                    let sel = inp.u8()?;
                    let n = inp.u8()?;
                    h.post(sel & 1 != 0, n, sel >> 1);
                }
                // ... scribbles flags or a tail.
                5 => {
                    let sel = inp.u8()?;
                    let v = inp.u16()?;
                    let r = h.slave_ring(sel & 1 != 0);
                    if sel & 2 != 0 {
                        r.set_tail(v);
                    } else {
                        r.set_flags(v);
                    }
                }
                // The master receives...
                6 => {
                    let x = inp.u8()?;
                    h.rx_burst(
                        1 + (x % 8) as usize,
                        [64, 2048, 9216][(x >> 3) as usize % 3],
                    );
                }
                7 => {
                    let x = inp.u8()?;
                    let refuse = (x & 0x80 != 0).then_some(((x >> 4) & 7) as usize);
                    h.rx_each((x % 9) as usize, refuse);
                }
                8 => {
                    let x = inp.u8()?;
                    h.peek((x % 9) as usize, x & 0x80 != 0);
                }
                // ... and sends.
                9 => {
                    let n = inp.u8()? % 5;
                    let mut lens = Vec::new();
                    for _ in 0..n {
                        lens.push(inp.u16()? as usize % 10000);
                    }
                    h.tx_burst(&lens);
                }
                10 | 11 => {
                    let len = inp.u16()? as usize % 10000;
                    h.push(len, op % 16 == 11);
                }
                12 => h.flush(),
                13 => {
                    let n = inp.u8()?;
                    let before = snapshot(h.s);
                    h.c.tx[0].prefetch_burst(n as usize);
                    check_writes(h.s, &before, Allowed::default(), "prefetch_burst");
                }
                14 => {
                    let x = inp.u8()?;
                    let before = snapshot(h.s);
                    let bad = h.bad();
                    let failed = match x % 4 {
                        0 => h.c.rx[0].pending().is_err(),
                        1 => h.c.tx[0].free().is_err(),
                        2 => {
                            h.c.rx[0].set_interrupts(x & 4 != 0);
                            false
                        }
                        _ => {
                            h.c.rx[0].ack_interrupt();
                            false
                        }
                    };
                    h.counted(bad, failed, "pending/free");
                    check_writes(h.s, &before, rx_allowed(), "pending/free/interrupts");
                }
                _ => {
                    // The connection goes down: queues say so.
                    h.c.state.set_down();
                    assert!(!h.c.rx[0].is_up() && !h.c.tx[0].is_up());
                    return None;
                }
            }
            Some(())
        })();
        if done.is_none() {
            break;
        }
    }
});

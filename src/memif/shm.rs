//! Shared memory: regions (memfd mappings) and ring headers inside them.
//!
//! This is the crate's shared-memory `unsafe` (the only other is
//! [`crate::sys`], two system calls). The memory it maps is
//! shared with a peer that may rewrite any byte at any time, so:
//! - no `&`/`&mut` to the mapped bytes ever exists; access is volatile
//!   (descriptors), atomic (ring indices and flags) or a bulk copy into or out
//!   of our own memory (packet data);
//! - every access is bounds-checked against the mapping length, with checked
//!   arithmetic, before the pointer is formed;
//! - the mapping lives as long as the [`Region`] (held through `Arc` by every
//!   ring and queue that points into it), so a peer that disconnects or exits
//!   cannot unmap memory we still read.

#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::fstat;
use nix::unistd::ftruncate;

use super::wire::RING_COOKIE;

/// Size of the ring header before the descriptor array.
pub const RING_HEADER_SIZE: usize = 128;
/// Size of one descriptor.
pub const DESC_SIZE: usize = 16;
/// Ring header offsets (see `memif_ring_t`).
const RING_COOKIE_OFF: usize = 0;
const RING_FLAGS_OFF: usize = 4;
const RING_HEAD_OFF: usize = 6;
const RING_TAIL_OFF: usize = 64;
/// `flags` bit: the consumer does not want interrupts.
pub const RING_FLAG_MASK_INT: u16 = 1;
/// Descriptor flag: the packet continues in the next descriptor.
pub const DESC_FLAG_NEXT: u16 = 1;
/// Largest region we accept: descriptor offsets are u32, so more is unusable.
pub const MAX_REGION_SIZE: u64 = 1 << 32;
/// Largest ring: log2 14 descriptors.
pub const MAX_LOG2_RING_SIZE: u8 = 14;

/// Why a region or ring could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("region size {0} is out of range (1..=4 GiB)")]
    RegionSize(u64),
    #[error("region fd is {actual} bytes, smaller than the announced {announced}")]
    RegionFdTooSmall { announced: u64, actual: i64 },
    #[error(
        "region fd is not sealed against shrinking (F_SEAL_SHRINK); it could fault the master"
    )]
    NotSealed,
    #[error("region fd cannot be inspected")]
    Inspect(#[source] nix::Error),
    #[error("memfd setup failed")]
    Memfd(#[source] nix::Error),
    #[error("mapping the region failed")]
    Map(#[source] std::io::Error),
    #[error("ring at offset {offset} with {size} descriptors does not fit region of {region_size} bytes")]
    RingOutOfBounds {
        offset: u64,
        size: u64,
        region_size: usize,
    },
    #[error("ring offset {0} is not 8-byte aligned")]
    RingMisaligned(u64),
    #[error("ring log2 size {0} is out of range (0..=14)")]
    RingSize(u8),
    #[error("ring cookie is {0:#x}, expected {RING_COOKIE:#x}")]
    BadCookie(u32),
}

/// One mapped shared-memory region.
pub struct Region {
    map: MmapRaw,
    len: usize,
    // Keeps the memfd open: the slave sends it to the master.
    fd: OwnedFd,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("len", &self.len)
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl Region {
    /// Creates a new memfd region of `size` bytes (slave side), sealed
    /// against shrinking so the master can trust its size.
    pub fn create(name: &str, size: usize) -> Result<Region, ShmError> {
        if size == 0 || size as u64 > MAX_REGION_SIZE {
            return Err(ShmError::RegionSize(size as u64));
        }
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
            .map_err(ShmError::Memfd)?;
        ftruncate(&fd, size as i64).map_err(ShmError::Memfd)?;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)).map_err(ShmError::Memfd)?;
        Self::map(fd, size)
    }

    /// Maps a region received from a peer (master side). The fd must be at
    /// least `size` bytes and sealed against shrinking: otherwise the peer
    /// could truncate it under us and turn our next read into SIGBUS.
    pub fn from_peer(fd: OwnedFd, size: u64) -> Result<Region, ShmError> {
        if size == 0 || size > MAX_REGION_SIZE {
            return Err(ShmError::RegionSize(size));
        }
        let st = fstat(&fd).map_err(ShmError::Inspect)?;
        if st.st_size < 0 || (st.st_size as u64) < size {
            return Err(ShmError::RegionFdTooSmall {
                announced: size,
                actual: st.st_size,
            });
        }
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS).map_err(|_| ShmError::NotSealed)?;
        if SealFlag::from_bits_truncate(seals).contains(SealFlag::F_SEAL_SHRINK) {
            Self::map(fd, size as usize)
        } else {
            Err(ShmError::NotSealed)
        }
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Region, ShmError> {
        let map = MmapOptions::new()
            .len(len)
            .map_raw(fd.as_raw_fd())
            .map_err(ShmError::Map)?;
        Ok(Region { map, len, fd })
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: regions are never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd backing this region.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether `[offset, offset + len)` lies inside the region.
    #[inline]
    pub fn contains(&self, offset: u32, len: u32) -> bool {
        (offset as u64 + len as u64) <= self.len as u64
    }

    /// Copies `dst.len()` bytes at `offset` out of the region.
    /// Returns false (copying nothing) if the range is out of bounds.
    #[inline]
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> bool {
        match offset.checked_add(dst.len()) {
            Some(end) if end <= self.len => {
                // SAFETY: `offset + dst.len() <= self.len` was just checked, so
                // the source range lies inside the live mapping (kept alive by
                // `self.map`). `dst` is our own memory and cannot overlap the
                // mapping. The peer may write these bytes concurrently; we
                // copy them as plain bytes (every bit pattern is a valid u8)
                // and never form a reference to the shared memory.
                unsafe {
                    ptr::copy_nonoverlapping(
                        self.map.as_ptr().add(offset),
                        dst.as_mut_ptr(),
                        dst.len(),
                    )
                };
                true
            }
            _ => false,
        }
    }

    /// Copies `src` into the region at `offset`.
    /// Returns false (copying nothing) if the range is out of bounds.
    #[inline]
    pub fn write(&self, offset: usize, src: &[u8]) -> bool {
        match offset.checked_add(src.len()) {
            Some(end) if end <= self.len => {
                // SAFETY: bounds checked as in `read`; the mapping is writable
                // (MAP_SHARED, read-write) and alive; `src` is our memory and
                // does not overlap it. No reference into the mapping is made.
                unsafe {
                    ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        self.map.as_mut_ptr().add(offset),
                        src.len(),
                    )
                };
                true
            }
            _ => false,
        }
    }

    /// Copies exactly `N` bytes at `offset` into `dst`: a fixed-size copy
    /// the compiler inlines (forwarding reads each frame's headers this
    /// way). False, copying nothing, if out of bounds.
    #[inline]
    pub fn read_fixed<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
        match offset.checked_add(N) {
            Some(end) if end <= self.len => {
                // SAFETY: as in `read`: the N-byte source range was just
                // checked against the live mapping; `dst` is our own memory
                // of exactly N bytes; no reference into the mapping is made.
                unsafe {
                    ptr::copy_nonoverlapping(self.map.as_ptr().add(offset), dst.as_mut_ptr(), N)
                };
                true
            }
            _ => false,
        }
    }

    /// The 64 bytes at `offset` as four little-endian 16-byte lanes (for
    /// editing a frame's first bytes in registers). None if out of bounds.
    #[inline]
    pub fn read_lanes(&self, offset: usize) -> Option<[u128; 4]> {
        match offset.checked_add(64) {
            Some(end) if end <= self.len => {
                // SAFETY: the 64-byte range was just checked against the live
                // mapping; unaligned reads of plain integers (every bit
                // pattern is valid) copy the bytes out, no reference into the
                // mapping is made. The peer may write them concurrently: we
                // get some bytes, which forwarding treats as untrusted data.
                unsafe {
                    let p = self.map.as_ptr().add(offset).cast::<u128>();
                    Some([
                        u128::from_le(ptr::read_unaligned(p)),
                        u128::from_le(ptr::read_unaligned(p.add(1))),
                        u128::from_le(ptr::read_unaligned(p.add(2))),
                        u128::from_le(ptr::read_unaligned(p.add(3))),
                    ])
                }
            }
            _ => None,
        }
    }

    /// Writes four 16-byte lanes (little-endian) as the 64 bytes at
    /// `offset`, nothing staged in memory (the compiler emits them as
    /// 8-byte stores from general registers; 16-byte SSE stores measured
    /// no faster). False, writing nothing, if out of bounds.
    #[inline]
    pub fn write_lanes(&self, offset: usize, lanes: &[u128; 4]) -> bool {
        match offset.checked_add(64) {
            Some(end) if end <= self.len => {
                // SAFETY: the 64-byte range was just checked against the live,
                // writable mapping (MAP_SHARED, read-write); unaligned writes
                // of plain integers, no reference into the mapping is made.
                unsafe {
                    let p = self.map.as_mut_ptr().add(offset).cast::<u128>();
                    for (i, l) in lanes.iter().enumerate() {
                        ptr::write_unaligned(p.add(i), l.to_le());
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Hints the CPU to fetch the cache line at `offset` (the next frame's
    /// bytes, while the current one is forwarded). Out of bounds: nothing.
    #[inline]
    pub fn prefetch(&self, offset: usize) {
        #[cfg(target_arch = "x86_64")]
        if offset < self.len {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: `offset` is inside the live mapping (checked above);
            // a prefetch only hints the cache, it never faults, reads into
            // a register or writes, so the peer's concurrent writes do not
            // matter. SSE is part of the x86-64 baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(self.map.as_ptr().add(offset).cast::<i8>()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = offset;
    }

    /// Hints the CPU to fetch the cache line at `offset` for writing
    /// (`prefetchw` where the CPU has it): a buffer we are about to fill
    /// was last read by the peer's core, and the store would otherwise
    /// wait for the line there. Out of bounds: nothing.
    #[inline]
    pub fn prefetch_write(&self, offset: usize) {
        #[cfg(target_arch = "x86_64")]
        if offset < self.len {
            if has_prefetchw() {
                // SAFETY: `offset` is inside the live mapping (checked
                // above); `prefetchw` only hints the cache (it never faults
                // or changes memory), touches no stack and no flags, and
                // the CPU reported supporting it (CPUID 0x80000001 ECX 8).
                unsafe {
                    std::arch::asm!(
                        "prefetchw [{p}]",
                        p = in(reg) self.map.as_ptr().add(offset),
                        options(nostack, preserves_flags, readonly)
                    )
                };
            } else {
                self.prefetch(offset);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = offset;
    }

    /// Copies `len` bytes from `src` at `src_off` to `self` at `dst_off`:
    /// one copy between two regions, for forwarding. False if either range
    /// is out of bounds.
    #[inline]
    pub fn copy_from_region(
        &self,
        dst_off: usize,
        src: &Region,
        src_off: usize,
        len: usize,
    ) -> bool {
        let ok_dst = dst_off.checked_add(len).is_some_and(|e| e <= self.len);
        let ok_src = src_off.checked_add(len).is_some_and(|e| e <= src.len);
        if !(ok_dst && ok_src) {
            return false;
        }
        // SAFETY: both ranges were checked against their mapping lengths
        // above and both mappings are alive. `ptr::copy` (memmove) is used
        // because src and dst may be the same region.
        unsafe {
            ptr::copy(
                src.map.as_ptr().add(src_off),
                self.map.as_mut_ptr().add(dst_off),
                len,
            )
        };
        true
    }

    /// An atomic u16 inside the region, or None if out of bounds or
    /// misaligned.
    #[inline]
    fn atomic_u16(&self, offset: usize) -> Option<&AtomicU16> {
        if offset % 2 != 0 || offset.checked_add(2)? > self.len {
            return None;
        }
        // SAFETY: in bounds and 2-byte aligned (the mapping is page aligned
        // and `offset` is even), which is what `AtomicU16::from_ptr` needs.
        // The reference borrows `self`, so it cannot outlive the mapping.
        // All accesses through it are atomic, so concurrent writes by the
        // peer (also atomic or plain stores of the same size on x86-64) are
        // not a data race on our side.
        Some(unsafe { AtomicU16::from_ptr(self.map.as_mut_ptr().add(offset).cast::<u16>()) })
    }

    #[inline]
    fn read_u32(&self, offset: usize) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(offset, &mut b).then(|| u32::from_le_bytes(b))
    }
}

/// Whether the CPU has `prefetchw` (CPUID 0x80000001, ECX bit 8), asked
/// once.
#[cfg(target_arch = "x86_64")]
fn has_prefetchw() -> bool {
    use std::sync::atomic::AtomicU8;
    static KNOWN: AtomicU8 = AtomicU8::new(0);
    match KNOWN.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            // SAFETY: CPUID is available on every x86-64 CPU; leaf
            // 0x80000001 exists on all of them (extended leaves start at
            // 0x80000000 and x86-64 itself is reported in 0x80000001).
            // (`__cpuid` is a safe fn since Rust 1.87, unsafe before.)
            #[allow(unused_unsafe)]
            let r = unsafe { std::arch::x86_64::__cpuid(0x8000_0001) };
            let yes = r.ecx & (1 << 8) != 0;
            KNOWN.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// A copy of one ring descriptor (`memif_desc_t`), taken once from shared
/// memory. Metadata is always written as 0 and ignored on read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Desc {
    pub flags: u16,
    pub region: u16,
    pub length: u32,
    pub offset: u32,
}

/// A validated view of one ring inside a region: the header and descriptor
/// array are known to be inside the mapping, so slot accesses need no
/// further checks beyond the slot mask.
#[derive(Debug, Clone)]
pub struct RingRef {
    region: Arc<Region>,
    offset: usize,
    log2_size: u8,
    /// `size - 1`, and where descriptor 0 starts in the region: computed
    /// once, used on every descriptor access.
    mask: u16,
    descs: usize,
}

impl RingRef {
    /// Checks that a ring of `2^log2_size` descriptors at `offset` fits the
    /// region and is aligned.
    pub fn new(region: Arc<Region>, offset: u32, log2_size: u8) -> Result<RingRef, ShmError> {
        if log2_size > MAX_LOG2_RING_SIZE {
            return Err(ShmError::RingSize(log2_size));
        }
        if offset % 8 != 0 {
            return Err(ShmError::RingMisaligned(offset as u64));
        }
        let bytes = Self::bytes_for(log2_size) as u64;
        if offset as u64 + bytes > region.len() as u64 {
            return Err(ShmError::RingOutOfBounds {
                offset: offset as u64,
                size: 1 << log2_size,
                region_size: region.len(),
            });
        }
        Ok(RingRef {
            region,
            offset: offset as usize,
            log2_size,
            mask: (1u16 << log2_size) - 1,
            descs: offset as usize + RING_HEADER_SIZE,
        })
    }

    /// Bytes a ring of `2^log2_size` descriptors occupies.
    pub fn bytes_for(log2_size: u8) -> usize {
        RING_HEADER_SIZE + DESC_SIZE * (1usize << log2_size)
    }

    /// Where descriptor `counter & mask` starts in the region.
    #[inline(always)]
    fn desc_offset(&self, counter: u16) -> usize {
        self.descs + (counter & self.mask) as usize * DESC_SIZE
    }

    /// Number of descriptors.
    #[inline]
    pub fn size(&self) -> u16 {
        // log2 <= 14, so this fits u16.
        1u16 << self.log2_size
    }

    pub fn log2_size(&self) -> u8 {
        self.log2_size
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    #[inline]
    fn field(&self, off: usize) -> &AtomicU16 {
        self.region
            .atomic_u16(self.offset + off)
            .expect("ring header checked in RingRef::new")
    }

    /// The ring cookie as currently in memory.
    pub fn cookie(&self) -> u32 {
        self.region
            .read_u32(self.offset + RING_COOKIE_OFF)
            .expect("ring header checked in RingRef::new")
    }

    /// Checks the cookie (master side, at CONNECT).
    pub fn check_cookie(&self) -> Result<(), ShmError> {
        match self.cookie() {
            RING_COOKIE => Ok(()),
            other => Err(ShmError::BadCookie(other)),
        }
    }

    /// Writes a fresh header: cookie, flags, head and tail 0 (slave side).
    pub fn init_header(&self, flags: u16) {
        self.region
            .write(self.offset + RING_COOKIE_OFF, &RING_COOKIE.to_le_bytes());
        self.field(RING_FLAGS_OFF).store(flags, Ordering::Relaxed);
        self.field(RING_HEAD_OFF).store(0, Ordering::Relaxed);
        self.field(RING_TAIL_OFF).store(0, Ordering::Release);
    }

    /// Loads `head` with Acquire: descriptors and data written before the
    /// producer's Release store of head are visible after this.
    #[inline]
    pub fn head(&self) -> u16 {
        self.field(RING_HEAD_OFF).load(Ordering::Acquire)
    }

    /// Publishes `head` with Release: everything written before is visible to
    /// a consumer that Acquire-loads it.
    #[inline]
    pub fn set_head(&self, v: u16) {
        self.field(RING_HEAD_OFF).store(v, Ordering::Release)
    }

    /// Loads `tail` with Acquire (see [`RingRef::head`]).
    #[inline]
    pub fn tail(&self) -> u16 {
        self.field(RING_TAIL_OFF).load(Ordering::Acquire)
    }

    /// Publishes `tail` with Release (see [`RingRef::set_head`]).
    #[inline]
    pub fn set_tail(&self, v: u16) {
        self.field(RING_TAIL_OFF).store(v, Ordering::Release)
    }

    /// Ring flags (bit 0: MASK_INT).
    #[inline]
    pub fn flags(&self) -> u16 {
        self.field(RING_FLAGS_OFF).load(Ordering::Relaxed)
    }

    /// Sets the flags word. Followed by a SeqCst fence so that a consumer
    /// that clears MASK_INT and then re-checks the ring cannot miss a packet
    /// published between the two (the producer reads flags after its
    /// Release store of the index).
    #[inline]
    pub fn set_flags(&self, v: u16) {
        self.field(RING_FLAGS_OFF).store(v, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Copies descriptor `counter & mask` out of shared memory, once.
    #[inline]
    pub fn desc(&self, counter: u16) -> Desc {
        let offset = self.desc_offset(counter);
        // SAFETY: `RingRef::new` checked that the whole descriptor array
        // (offset + header + size * DESC_SIZE) lies in the region and that
        // `self.offset` is 8-byte aligned (the header and DESC_SIZE are
        // multiples of 8), and `self.region` keeps the mapping alive: every
        // slot of the masked counter is in bounds and aligned for u64
        // reads, so no per-read bounds check is needed on the packet path. Volatile reads copy the descriptor
        // exactly once; the caller validates the copy, never the shared
        // original.
        let (lo, hi) = unsafe {
            let p = self.region.map.as_ptr().add(offset).cast::<u64>();
            (ptr::read_volatile(p), ptr::read_volatile(p.add(1)))
        };
        Desc {
            flags: lo as u16,
            region: (lo >> 16) as u16,
            length: (lo >> 32) as u32,
            offset: hi as u32,
        }
    }

    /// Hints the CPU to fetch descriptor `counter & mask` (its cache line
    /// holds four): the peer wrote it last, so the first access misses.
    #[inline]
    pub fn prefetch_desc(&self, counter: u16) {
        self.region.prefetch(self.desc_offset(counter));
    }

    /// As [`RingRef::prefetch_desc`], for a descriptor we will write.
    #[inline]
    pub fn prefetch_desc_write(&self, counter: u16) {
        self.region.prefetch_write(self.desc_offset(counter));
    }

    /// Writes descriptor `counter & mask`.
    #[inline]
    pub fn set_desc(&self, counter: u16, d: Desc) {
        let offset = self.desc_offset(counter);
        let lo = d.flags as u64 | (d.region as u64) << 16 | (d.length as u64) << 32;
        // SAFETY: in bounds and 8-byte aligned for every slot, as in
        // [`RingRef::desc`] (checked once in `RingRef::new`; the region
        // stays mapped while `self.region` lives, read-write). Volatile
        // writes: the peer reads these bytes from its own address space.
        unsafe {
            let p = self.region.map.as_mut_ptr().add(offset).cast::<u64>();
            ptr::write_volatile(p, lo);
            ptr::write_volatile(p.add(1), d.offset as u64);
        }
    }

    /// Producer side: whether the consumer asked not to be interrupted.
    /// Called after publishing; paired with the fence in `set_flags`.
    #[inline]
    pub fn interrupts_masked(&self) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.flags() & RING_FLAG_MASK_INT != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_sealed_and_accepted_by_from_peer() {
        let r = Region::create("t", 4096).unwrap();
        let fd = r.fd().try_clone_to_owned().unwrap();
        let peer = Region::from_peer(fd, 4096).unwrap();
        assert!(r.write(100, b"hello"));
        let mut b = [0u8; 5];
        assert!(peer.read(100, &mut b));
        assert_eq!(&b, b"hello");
    }

    #[test]
    fn from_peer_rejects_unsealed_small_and_huge() {
        let fd = memfd_create("x", MFdFlags::MFD_CLOEXEC).unwrap();
        ftruncate(&fd, 4096).unwrap();
        assert!(matches!(
            Region::from_peer(fd.try_clone().unwrap(), 4096),
            Err(ShmError::NotSealed)
        ));
        assert!(matches!(
            Region::from_peer(fd.try_clone().unwrap(), 8192),
            Err(ShmError::RegionFdTooSmall { .. })
        ));
        assert!(matches!(
            Region::from_peer(fd.try_clone().unwrap(), 0),
            Err(ShmError::RegionSize(0))
        ));
        assert!(matches!(
            Region::from_peer(fd, MAX_REGION_SIZE + 1),
            Err(ShmError::RegionSize(_))
        ));
    }

    #[test]
    fn bounds_are_checked_with_overflow() {
        let r = Region::create("t", 4096).unwrap();
        let mut b = [0u8; 16];
        assert!(r.read(4080, &mut b));
        assert!(!r.read(4081, &mut b));
        assert!(!r.read(usize::MAX - 4, &mut b));
        assert!(!r.write(usize::MAX, &b));
        assert!(r.contains(4000, 96));
        assert!(!r.contains(u32::MAX, 2));
        let r2 = Region::create("u", 64).unwrap();
        assert!(!r2.copy_from_region(0, &r, 4090, 16));
        assert!(!r2.copy_from_region(60, &r, 0, 16));
        assert!(r2.copy_from_region(48, &r, 0, 16));
    }

    #[test]
    fn ring_bounds_alignment_and_cookie() {
        let r = Arc::new(Region::create("t", 4096).unwrap());
        // 128 + 16 * 2^8 = 4224 > 4096
        assert!(matches!(
            RingRef::new(r.clone(), 0, 8),
            Err(ShmError::RingOutOfBounds { .. })
        ));
        assert!(matches!(
            RingRef::new(r.clone(), 4, 2),
            Err(ShmError::RingMisaligned(4))
        ));
        assert!(matches!(
            RingRef::new(r.clone(), 0, 15),
            Err(ShmError::RingSize(15))
        ));
        assert!(matches!(
            RingRef::new(r.clone(), u32::MAX - 7, 0),
            Err(ShmError::RingOutOfBounds { .. })
        ));
        let ring = RingRef::new(r.clone(), 0, 7).unwrap();
        assert!(matches!(ring.check_cookie(), Err(ShmError::BadCookie(0))));
        ring.init_header(0);
        ring.check_cookie().unwrap();
        ring.set_head(5);
        ring.set_tail(3);
        assert_eq!((ring.head(), ring.tail()), (5, 3));
        let d = Desc {
            flags: 1,
            region: 2,
            length: 3,
            offset: 4,
        };
        ring.set_desc(130, d);
        assert_eq!(ring.desc(2), d);
        let mut raw = [0u8; 16];
        r.read(RING_HEADER_SIZE + 2 * DESC_SIZE, &mut raw);
        assert_eq!(raw, [1, 0, 2, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
    }
}

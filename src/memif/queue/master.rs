//! The master's queues: receive on the S2M ring ([`MasterRx`]), transmit
//! into the buffers the slave posted on the M2S ring ([`MasterTx`]).

use super::*;

/// One frame of a [`MasterRx::peek`]: its descriptors (validated copies;
/// every one but the last has [`DESC_FLAG_NEXT`]) and its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFrame<'a> {
    pub descs: &'a [Desc],
    pub len: usize,
}

/// The frames a [`MasterRx::peek`] found, in ring order: its descriptor
/// copies, split where a chain ends. Only `peek` makes one, so every
/// chain in it is whole and validated.
#[derive(Debug, Clone)]
pub struct RxFrames<'a> {
    descs: &'a [Desc],
    frames: usize,
}

impl<'a> RxFrames<'a> {
    /// The descriptors of the frames not iterated yet.
    pub fn descs(&self) -> &'a [Desc] {
        self.descs
    }
}

impl<'a> Iterator for RxFrames<'a> {
    type Item = RxFrame<'a>;

    #[inline]
    fn next(&mut self) -> Option<RxFrame<'a>> {
        let (d, rest) = self.descs.split_first()?;
        self.frames -= 1;
        if d.flags & DESC_FLAG_NEXT == 0 {
            // One buffer, the common case: no chain to walk.
            let (one, rest) = self.descs.split_at(1);
            self.descs = rest;
            return Some(RxFrame {
                descs: one,
                len: d.length as usize,
            });
        }
        // `peek` keeps only whole chains: this one is `d` and `rest` up to
        // (and with) its first descriptor without NEXT.
        let n = rest
            .iter()
            .position(|d| d.flags & DESC_FLAG_NEXT == 0)
            .map_or(self.descs.len(), |i| i + 2);
        let (chain, rest) = self.descs.split_at(n);
        self.descs = rest;
        Some(RxFrame {
            descs: chain,
            len: chain.iter().map(|d| d.length as usize).sum(),
        })
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.frames, Some(self.frames))
    }
}

impl ExactSizeIterator for RxFrames<'_> {}

/// Master receive: consumes the S2M ring.
#[derive(Debug)]
pub struct MasterRx {
    core: QueueCore,
    /// End of what [`MasterRx::peek`] handed out and
    /// [`MasterRx::release`] has not consumed yet (== `core.ours` when
    /// nothing is peeked).
    peeked: u16,
    peeked_frames: u64,
    peeked_bytes: u64,
}
queue_common!(MasterRx);

impl MasterRx {
    pub(crate) fn new(
        ring: RingRef,
        regions: Arc<[Arc<Region>]>,
        notifier: Notifier,
        state: Arc<ConnState>,
        max_frame: usize,
    ) -> MasterRx {
        let ours = ring.tail();
        MasterRx {
            core: QueueCore::new(ring, regions, notifier, state, ours, max_frame),
            peeked: ours,
            peeked_frames: 0,
            peeked_bytes: 0,
        }
    }

    /// The connection's regions, which every validated descriptor points
    /// into.
    #[inline]
    pub fn regions(&self) -> &Arc<[Arc<Region>]> {
        &self.core.regions
    }

    /// Reads up to `max` whole frames without consuming them: each
    /// descriptor is copied once into `descs`, and validated (region,
    /// bounds, length, frame limit); the frames are returned as runs of
    /// those copies. `descs` should hold the ring's size of descriptors (a
    /// chain may be that long): when it is full, the frames that fit are
    /// returned. The buffers stay the slave's untouchable property until
    /// [`MasterRx::release`] hands them back, so forwarding copies
    /// straight from them, region to region. The first line of each
    /// one-buffer frame is prefetched on the way.
    pub fn peek<'d>(
        &mut self,
        max: usize,
        descs: &'d mut [Desc],
    ) -> Result<RxFrames<'d>, RingError> {
        if self.peeked != self.core.ours {
            // Peeked twice without a release: start over.
            self.peeked = self.core.ours;
        }
        let avail = self.pending()?;
        let c = &self.core;
        let ours = c.ours;
        // The slave wrote these descriptors: start fetching their lines
        // (four per line) before reading them one by one.
        let mut k = 0u16;
        while k < avail.min(max as u16) {
            c.ring.prefetch_desc(ours.wrapping_add(k));
            k += 4;
        }
        // Descriptor `ours + i` is copied to `room[i]`: one index for both,
        // bounded once by what the slave published and what `descs` holds.
        let fits = (avail as usize).min(descs.len());
        let room = &mut descs[..fits];
        let mut n = 0usize;
        let mut frames = 0usize;
        let mut bytes = 0u64;
        'frames: while frames < max && n < room.len() {
            let slot = ours.wrapping_add(n as u16);
            let d = c.ring.desc(slot);
            if d.flags & DESC_FLAG_NEXT == 0 {
                // A frame in one buffer, the common case: no chain to
                // follow. Start fetching its first bytes (the slave's core
                // wrote them) while the rest of the burst is read.
                Self::check(c, slot, &d, 0)?.prefetch(d.offset as usize);
                room[n] = d;
                n += 1;
                frames += 1;
                bytes += d.length as u64;
                continue;
            }
            let first = n;
            let mut frame_len = 0usize;
            loop {
                let Some(to) = room.get_mut(n) else {
                    // The producer has not published the rest of the chain
                    // (or `descs` cannot hold it).
                    if n == avail as usize && n - first >= c.ring.size() as usize {
                        return Err(c.fail(RingError::ChainTooLong));
                    }
                    n = first;
                    break 'frames;
                };
                let slot = ours.wrapping_add(n as u16);
                let d = c.ring.desc(slot);
                Self::check(c, slot, &d, frame_len)?;
                *to = d;
                n += 1;
                frame_len += d.length as usize;
                if d.flags & DESC_FLAG_NEXT == 0 {
                    break;
                }
            }
            frames += 1;
            bytes += frame_len as u64;
        }
        self.peeked = ours.wrapping_add(n as u16);
        self.peeked_frames = frames as u64;
        self.peeked_bytes = bytes;
        Ok(RxFrames {
            descs: &room[..n],
            frames,
        })
    }

    /// Validates descriptor `d` (ring counter `slot`) of a received frame
    /// that already holds `before` bytes: the descriptor itself (see
    /// [`QueueCore::region_for`]), then the frame limit. Returns the region
    /// it points into; a violation is counted.
    #[inline(always)]
    fn check<'c>(
        c: &'c QueueCore,
        slot: u16,
        d: &Desc,
        before: usize,
    ) -> Result<&'c Region, RingError> {
        let r = c.region_for(slot, d).map_err(|e| c.fail(e))?;
        if before + d.length as usize > c.max_frame {
            return Err(c.fail(RingError::FrameTooLong { limit: c.max_frame }));
        }
        Ok(r)
    }

    /// The bytes of the frames the last [`MasterRx::peek`] returned.
    #[inline]
    pub fn peeked_bytes(&self) -> u64 {
        self.peeked_bytes
    }

    /// Consumes what the last [`MasterRx::peek`] returned: publishes the
    /// tail, so the slave may reuse those buffers.
    pub fn release(&mut self) {
        let c = &mut self.core;
        if self.peeked != c.ours {
            c.ours = self.peeked;
            c.ring.set_tail(self.peeked);
        }
        c.stats.packets += std::mem::take(&mut self.peeked_frames);
        c.stats.bytes += std::mem::take(&mut self.peeked_bytes);
    }

    /// Unmasks (interrupt mode) or masks (polling mode) interrupts. After
    /// unmasking, call [`MasterRx::pending`] again before sleeping.
    pub fn set_interrupts(&self, enabled: bool) {
        self.core.set_interrupts(enabled)
    }

    /// Clears the eventfd after a wake-up.
    pub fn ack_interrupt(&self) -> u64 {
        self.core.notifier.drain()
    }

    /// Descriptors ready to be read.
    pub fn pending(&self) -> Result<u16, RingError> {
        self.core.slave_ahead()
    }

    /// Receives up to `bufs.len()` frames, copying each (chains joined) into
    /// a buffer. Returns how many were filled.
    pub fn rx_burst(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, RingError> {
        self.rx_each(bufs.len(), |i, chunk_off, region, d| {
            let b = &mut bufs[i];
            if chunk_off == 0 {
                b.len = 0;
            }
            let end = b.len + d.length as usize;
            if end > b.data.len() {
                return false;
            }
            region.read(d.offset as usize, &mut b.data[b.len..end]);
            b.len = end;
            true
        })
    }

    /// Receives up to `max` frames and hands every validated chunk to `f(i,
    /// offset_in_frame, region, desc)` without copying; `f` returns false if
    /// the frame is too long for it. The descriptor has been validated
    /// against `region`. Used by forwarding to copy region to region.
    pub fn rx_each<F>(&mut self, max: usize, mut f: F) -> Result<usize, RingError>
    where
        F: FnMut(usize, usize, &Region, &Desc) -> bool,
    {
        let avail = self.pending()?;
        let c = &mut self.core;
        let mut cur = c.ours;
        let end = c.ours.wrapping_add(avail);
        let mut frames = 0;
        let mut bytes = 0u64;
        while frames < max && cur != end {
            // One frame: one or more chained descriptors.
            let start = cur;
            let mut frame_len = 0usize;
            loop {
                if cur == end {
                    // The producer has not published the rest of the chain.
                    if cur.wrapping_sub(start) >= c.ring.size() {
                        return Err(c.fail(RingError::ChainTooLong));
                    }
                    cur = start;
                    break;
                }
                let d = c.ring.desc(cur);
                let region = match c.region_for(cur, &d) {
                    Ok(r) => r,
                    Err(e) => return Err(c.fail(e)),
                };
                if frame_len + d.length as usize > c.max_frame || !f(frames, frame_len, region, &d)
                {
                    return Err(c.fail(RingError::FrameTooLong { limit: c.max_frame }));
                }
                frame_len += d.length as usize;
                cur = cur.wrapping_add(1);
                if d.flags & DESC_FLAG_NEXT == 0 {
                    break;
                }
            }
            if cur == start {
                break;
            }
            frames += 1;
            bytes += frame_len as u64;
        }
        if cur != c.ours {
            c.ours = cur;
            c.ring.set_tail(cur);
        }
        c.stats.packets += frames as u64;
        c.stats.bytes += bytes;
        Ok(frames)
    }
}

/// What [`MasterTx::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Written; published by the next [`MasterTx::flush`].
    Queued,
    /// Not enough posted buffers now: nothing written.
    RingFull,
    /// Empty, over the frame limit, or longer than the whole ring can
    /// hold: it can never be sent.
    Unsendable,
}

/// Master transmit: fills the buffers the slave posted on the M2S ring.
#[derive(Debug)]
pub struct MasterTx {
    core: QueueCore,
    /// Descriptors filled by [`MasterTx::push`] end here; `core.ours` (the
    /// published tail) lags until [`MasterTx::flush`].
    pending: u16,
    /// Posted buffers known to lie past `pending` (refreshed from the
    /// slave's head only when short, to read the shared index once per
    /// burst rather than once per frame).
    known_free: u16,
    /// Descriptors pushed since the last flush that continue a chain (all
    /// of a frame's but its first): the frames pending are the descriptors
    /// pending less these, so a one-buffer push counts nothing here.
    pending_links: u16,
    pending_bytes: u64,
}
queue_common!(MasterTx);

impl MasterTx {
    pub(crate) fn new(
        ring: RingRef,
        regions: Arc<[Arc<Region>]>,
        notifier: Notifier,
        state: Arc<ConnState>,
        max_frame: usize,
    ) -> MasterTx {
        let ours = ring.tail();
        MasterTx {
            core: QueueCore::new(ring, regions, notifier, state, ours, max_frame),
            pending: ours,
            known_free: 0,
            pending_links: 0,
            pending_bytes: 0,
        }
    }

    /// Writes one frame of `len` bytes into posted buffers without
    /// publishing it. `fill(region, offset, frame_offset, n)` must write
    /// the `n` bytes of the frame that start at `frame_offset` into
    /// `region` at `offset`: a slave-posted buffer, already validated.
    /// Frames longer than one buffer are chained. [`MasterTx::flush`]
    /// publishes every queued frame at once (one tail store, at most one
    /// interrupt).
    pub fn push<F>(&mut self, len: usize, mut fill: F) -> Result<Pushed, RingError>
    where
        F: FnMut(&Region, usize, usize, usize),
    {
        let c = &mut self.core;
        if len == 0 || len > c.max_frame {
            return Ok(Pushed::Unsendable);
        }
        let mut cur = self.pending;
        let mut off = 0usize;
        let mut used: u16 = 0;
        while off < len {
            if used == self.known_free {
                self.known_free = Self::posted_free(c, self.pending)?;
                if used > self.known_free {
                    // The slave took back buffers it had posted (its head
                    // moved back past those this frame already filled).
                    return Err(c.fail(RingError::IndexOutOfRange {
                        head: c.ring.head(),
                        tail: c.ours,
                        size: c.ring.size(),
                    }));
                }
                if used == self.known_free {
                    return Ok(if used == c.ring.size() {
                        Pushed::Unsendable
                    } else {
                        Pushed::RingFull
                    });
                }
            }
            let mut d = c.ring.desc(cur);
            let region = match c.region_for(cur, &d) {
                Ok(r) => r,
                Err(e) => return Err(c.fail(e)),
            };
            let chunk = (len - off).min(d.length as usize);
            fill(region, d.offset as usize, off, chunk);
            off += chunk;
            d.length = chunk as u32;
            d.flags = if off < len { DESC_FLAG_NEXT } else { 0 };
            // Only length and flags are ours to write; region and offset
            // stay as the slave posted them.
            c.ring.set_desc(cur, d);
            cur = cur.wrapping_add(1);
            used += 1;
        }
        self.pending = cur;
        self.known_free -= used;
        self.pending_links += used - 1;
        self.pending_bytes += len as u64;
        Ok(Pushed::Queued)
    }

    /// [`MasterTx::push`] for a frame that fits the next posted buffer:
    /// `fill(region, offset, room)` writes the whole frame into `region`
    /// at `offset`, where `room >= len` bytes are ours (it may write past
    /// `len` up to `room`: bytes the slave ignores). `Ok(None)`, writing
    /// nothing, when the next posted buffer is shorter than `len` (use
    /// [`MasterTx::push`], which chains). Forwarding's fast path.
    #[inline]
    pub fn push_one<F>(&mut self, len: usize, fill: F) -> Result<Option<Pushed>, RingError>
    where
        F: FnOnce(&Region, usize, usize),
    {
        let c = &mut self.core;
        if len == 0 || len > c.max_frame {
            return Ok(Some(Pushed::Unsendable));
        }
        if self.known_free == 0 {
            self.known_free = Self::posted_free(c, self.pending)?;
            if self.known_free == 0 {
                return Ok(Some(Pushed::RingFull));
            }
        }
        let cur = self.pending;
        let mut d = c.ring.desc(cur);
        let region = match c.region_for(cur, &d) {
            Ok(r) => r,
            Err(e) => return Err(c.fail(e)),
        };
        let room = d.length as usize;
        if room < len {
            return Ok(None);
        }
        fill(region, d.offset as usize, room);
        d.length = len as u32;
        d.flags = 0;
        c.ring.set_desc(cur, d);
        self.pending = cur.wrapping_add(1);
        self.known_free -= 1;
        self.pending_bytes += len as u64;
        Ok(Some(Pushed::Queued))
    }

    /// The slave's head, and the buffers it has posted past `pending`
    /// (None when that head is out of the ring's range).
    #[inline]
    fn posted(c: &QueueCore, pending: u16) -> (u16, Option<u16>) {
        let head = c.ring.head();
        let ahead = head.wrapping_sub(c.ours);
        let queued = pending.wrapping_sub(c.ours);
        let ok = ahead <= c.ring.size() && ahead >= queued;
        (head, ok.then(|| ahead - queued))
    }

    /// [`MasterTx::posted`], a bad head reported (and counted).
    #[inline]
    fn posted_free(c: &QueueCore, pending: u16) -> Result<u16, RingError> {
        match Self::posted(c, pending) {
            (_, Some(free)) => Ok(free),
            (head, None) => Err(c.fail(RingError::IndexOutOfRange {
                head,
                tail: c.ours,
                size: c.ring.size(),
            })),
        }
    }

    /// Starts owning what the next `n` frames will be written into, before
    /// any of them is: the posted descriptors (the slave rewrote them when
    /// it refilled) and their buffers (the slave's core read them last).
    /// Stores into lines another core holds wait in the store buffer, in
    /// order, each for its line; prefetched for writing a burst ahead,
    /// those waits overlap instead of adding up. Reads the slave's head
    /// only if no posted buffer is known.
    #[inline]
    pub fn prefetch_burst(&self, n: usize) {
        let c = &self.core;
        let mut free = self.known_free;
        if free == 0 {
            // A hint: a bad head is for `push` to report.
            let Some(f) = Self::posted(c, self.pending).1 else {
                return;
            };
            free = f;
        }
        let k = n.min(free as usize) as u16;
        if k == 0 {
            return;
        }
        // Four descriptors a line; the last one may start a line of its own.
        let mut i = 0u16;
        while i < k {
            c.ring.prefetch_desc_write(self.pending.wrapping_add(i));
            i += 4;
        }
        c.ring.prefetch_desc_write(self.pending.wrapping_add(k - 1));
        for i in 0..k {
            let d = c.ring.desc(self.pending.wrapping_add(i));
            if let Some(r) = c.regions.get(d.region as usize) {
                r.prefetch_write(d.offset as usize);
            }
        }
    }

    /// Whether pushed frames wait for [`MasterTx::flush`].
    #[inline]
    pub fn has_pending(&self) -> bool {
        self.pending != self.core.ours
    }

    /// Publishes every pushed frame (tail store with Release, then an
    /// interrupt unless the slave masked them). Returns (frames, bytes)
    /// published.
    pub fn flush(&mut self) -> (u64, u64) {
        let c = &mut self.core;
        if self.pending == c.ours {
            return (0, 0);
        }
        let descs = self.pending.wrapping_sub(c.ours);
        c.ours = self.pending;
        c.ring.set_tail(self.pending);
        c.kick();
        let f = (descs - std::mem::take(&mut self.pending_links)) as u64;
        let b = std::mem::take(&mut self.pending_bytes);
        c.stats.packets += f;
        c.stats.bytes += b;
        (f, b)
    }

    /// Buffers the slave has posted and we have not filled.
    pub fn free(&self) -> Result<u16, RingError> {
        self.core.slave_ahead()
    }

    /// Sends frames; returns how many were sent. Frames that do not fit the
    /// posted buffers are not sent (the caller drops or retries them).
    pub fn tx_burst<B: AsRef<[u8]>>(&mut self, frames: &[B]) -> Result<usize, RingError> {
        self.tx_each(
            frames.len(),
            |i| frames[i].as_ref().len(),
            |i, off, region, d| {
                let src = &frames[i].as_ref()[off..off + d.length as usize];
                region.write(d.offset as usize, src);
            },
        )
    }

    /// Sends `n` frames whose lengths `len(i)` gives; `fill(i, offset, region,
    /// desc)` writes `desc.length` bytes of frame `i` from `offset` into
    /// `region` at `desc.offset` (already validated). Returns frames sent.
    pub fn tx_each<L, F>(&mut self, n: usize, len: L, mut fill: F) -> Result<usize, RingError>
    where
        L: Fn(usize) -> usize,
        F: FnMut(usize, usize, &Region, &Desc),
    {
        // Frames pushed before go out first.
        self.flush();
        self.known_free = 0;
        let mut free = self.free()?;
        let c = &mut self.core;
        let mut cur = c.ours;
        let mut sent = 0;
        let mut dropped = 0;
        let mut bytes = 0u64;
        while sent < n {
            let total = len(sent);
            if total == 0 || total > c.max_frame {
                // Never send empty or oversize frames: drop and go on. They
                // count as consumed (`sent`) but not as packets.
                c.stats.drops += 1;
                dropped += 1;
                sent += 1;
                continue;
            }
            let start = cur;
            let mut off = 0usize;
            let mut used: u16 = 0;
            let mut fits = true;
            while off < total {
                if used == free {
                    fits = false;
                    break;
                }
                let mut d = c.ring.desc(cur);
                let region = match c.region_for(cur, &d) {
                    Ok(r) => r,
                    Err(e) => return Err(c.fail(e)),
                };
                let chunk = (total - off).min(d.length as usize);
                d.length = chunk as u32;
                fill(sent, off, region, &d);
                off += chunk;
                d.flags = if off < total { DESC_FLAG_NEXT } else { 0 };
                // Only length and flags are ours to write; region and
                // offset stay as the slave posted them.
                c.ring.set_desc(cur, d);
                cur = cur.wrapping_add(1);
                used += 1;
            }
            if !fits {
                cur = start;
                if used == c.ring.size() {
                    // Needs more buffers than the whole ring holds: it can
                    // never be sent, so drop it rather than stall.
                    c.stats.drops += 1;
                    dropped += 1;
                    sent += 1;
                    continue;
                }
                break;
            }
            free -= used;
            sent += 1;
            bytes += total as u64;
        }
        if cur != c.ours {
            c.ours = cur;
            c.ring.set_tail(cur);
            c.kick();
        }
        self.pending = c.ours;
        c.stats.packets += (sent - dropped) as u64;
        c.stats.bytes += bytes;
        Ok(sent)
    }

    /// Counts `n` frames dropped by the caller (ring full).
    pub fn count_drops(&mut self, n: u64) {
        self.core.stats.drops += n;
    }
}

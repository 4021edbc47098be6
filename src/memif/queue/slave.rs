//! The slave's queues: transmit into its own buffers on the S2M ring
//! ([`SlaveTx`]), receive on the M2S ring and re-post ([`SlaveRx`]).

use super::*;

/// Slave transmit: produces on the S2M ring into its own buffers.
#[derive(Debug)]
pub struct SlaveTx {
    core: QueueCore,
    layout: BufferLayout,
}
queue_common!(SlaveTx);

impl SlaveTx {
    pub(crate) fn new(
        ring: RingRef,
        regions: Arc<[Arc<Region>]>,
        notifier: Notifier,
        state: Arc<ConnState>,
        layout: BufferLayout,
        max_frame: usize,
    ) -> SlaveTx {
        SlaveTx {
            core: QueueCore::new(ring, regions, notifier, state, 0, max_frame),
            layout,
        }
    }

    /// Free descriptors (the master consumed up to tail).
    pub fn free(&self) -> Result<u16, RingError> {
        let tail = self.core.ring.tail();
        let used = self.core.ours.wrapping_sub(tail);
        let size = self.core.ring.size();
        if used > size {
            return Err(RingError::IndexOutOfRange {
                head: self.core.ours,
                tail,
                size,
            });
        }
        Ok(size - used)
    }

    /// Sends frames (chained over several buffers when longer than one);
    /// returns how many were sent.
    pub fn tx_burst<B: AsRef<[u8]>>(&mut self, frames: &[B]) -> Result<usize, RingError> {
        let mut free = self.free()?;
        let c = &mut self.core;
        let mask = c.ring.size() - 1;
        let bs = self.layout.buffer_size as usize;
        let region = &c.regions[self.layout.region as usize];
        let mut cur = c.ours;
        let mut sent = 0;
        for f in frames {
            let f = f.as_ref();
            if f.is_empty() || f.len() > c.max_frame {
                c.stats.drops += 1;
                sent += 1;
                continue;
            }
            let need = f.len().div_ceil(bs);
            if need > c.ring.size() as usize {
                // More buffers than the ring has: can never be sent.
                c.stats.drops += 1;
                sent += 1;
                continue;
            }
            if need > free as usize {
                break;
            }
            for (k, chunk) in f.chunks(bs).enumerate() {
                let off = self.layout.offset(cur, mask);
                region.write(off as usize, chunk);
                c.ring.set_desc(
                    cur,
                    Desc {
                        flags: if k + 1 < need { DESC_FLAG_NEXT } else { 0 },
                        region: self.layout.region,
                        length: chunk.len() as u32,
                        offset: off,
                    },
                );
                cur = cur.wrapping_add(1);
            }
            free -= need as u16;
            sent += 1;
            c.stats.packets += 1;
            c.stats.bytes += f.len() as u64;
        }
        if cur != c.ours {
            c.ours = cur;
            c.ring.set_head(cur);
            c.kick();
        }
        Ok(sent)
    }

    /// Counts frames dropped by the caller.
    pub fn count_drops(&mut self, n: u64) {
        self.core.stats.drops += n;
    }
}

/// Slave receive: posts its own buffers on the M2S ring and reads what the
/// master filled.
#[derive(Debug)]
pub struct SlaveRx {
    core: QueueCore,
    layout: BufferLayout,
    /// Counter up to which we have read (the master's tail we consumed).
    read: u16,
}
queue_common!(SlaveRx);

impl SlaveRx {
    pub(crate) fn new(
        ring: RingRef,
        regions: Arc<[Arc<Region>]>,
        notifier: Notifier,
        state: Arc<ConnState>,
        layout: BufferLayout,
        max_frame: usize,
    ) -> SlaveRx {
        SlaveRx {
            core: QueueCore::new(ring, regions, notifier, state, 0, max_frame),
            layout,
            read: 0,
        }
    }

    fn post(&mut self, upto: u16) {
        let c = &mut self.core;
        let mask = c.ring.size() - 1;
        while c.ours != upto {
            c.ring.set_desc(
                c.ours,
                Desc {
                    flags: 0,
                    region: self.layout.region,
                    length: self.layout.buffer_size,
                    offset: self.layout.offset(c.ours, mask),
                },
            );
            c.ours = c.ours.wrapping_add(1);
        }
        c.ring.set_head(c.ours);
    }

    /// Posts every buffer: call once the link is connected.
    pub(crate) fn post_all(&mut self) {
        let upto = self.read.wrapping_add(self.core.ring.size());
        self.post(upto);
    }

    /// Unmasks (interrupt mode) or masks (polling) interrupts on the ring.
    pub fn set_interrupts(&self, enabled: bool) {
        self.core.set_interrupts(enabled)
    }

    /// Clears the eventfd after a wake-up.
    pub fn ack_interrupt(&self) -> u64 {
        self.core.notifier.drain()
    }

    /// Receives up to `bufs.len()` frames. The master is not trusted either:
    /// lengths are bounded by our buffer size and offsets are our own.
    pub fn rx_burst(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, RingError> {
        let c = &mut self.core;
        let tail = c.ring.tail();
        let avail = tail.wrapping_sub(self.read);
        let size = c.ring.size();
        if avail > size {
            return Err(c.fail(RingError::IndexOutOfRange {
                head: c.ours,
                tail,
                size,
            }));
        }
        let mask = size - 1;
        let region = &c.regions[self.layout.region as usize];
        let end = self.read.wrapping_add(avail);
        let mut cur = self.read;
        let mut n = 0;
        while n < bufs.len() && cur != end {
            let start = cur;
            let b = &mut bufs[n];
            b.len = 0;
            let mut complete = false;
            while cur != end {
                let d = c.ring.desc(cur);
                let len = d.length.min(self.layout.buffer_size) as usize;
                let at = b.len;
                if at + len > b.data.len() || at + len > c.max_frame {
                    return Err(c.fail(RingError::FrameTooLong { limit: c.max_frame }));
                }
                region.read(
                    self.layout.offset(cur, mask) as usize,
                    &mut b.data[at..at + len],
                );
                b.len += len;
                cur = cur.wrapping_add(1);
                if d.flags & DESC_FLAG_NEXT == 0 {
                    complete = true;
                    break;
                }
            }
            if !complete {
                cur = start;
                break;
            }
            c.stats.packets += 1;
            c.stats.bytes += b.len as u64;
            n += 1;
        }
        self.read = cur;
        // Re-post what we consumed.
        self.post(self.read.wrapping_add(size));
        Ok(n)
    }
}

//! The queue operations forwarding is built on, in process (no root):
//! `MasterRx::peek`/`release` (descriptors validated once, buffers held
//! until released) and `MasterTx::push`/`flush` (frames written into the
//! slave's posted buffers, chained, published in one store), including a
//! region-to-region copy from one connection's rx into another's tx.

mod common;

use common::*;
use memif_cni::memif::shm::Desc;
use memif_cni::memif::{PacketBuf, Pushed, SlaveConfig};

fn small(id: u32, buffer_size: u32) -> SlaveConfig {
    SlaveConfig {
        buffer_size,
        ..slave_cfg(id)
    }
}

#[test]
fn peek_holds_buffers_until_release_and_push_chains_into_posted_buffers() {
    let srv = TestServer::with_ids("fwdq", &[1, 2]);
    // Slave 1 sends in 2048-byte buffers; slave 2 receives in 256-byte ones.
    let mut s1 = connect_slave(&srv.addr, &small(1, 2048)).expect("slave 1");
    let mut m1 = srv.connected();
    let mut s2 = connect_slave(&srv.addr, &small(2, 256)).expect("slave 2");
    let mut m2 = srv.connected();
    let lens = [60usize, 2048, 2049, 5000, 1];
    let sent = frames(7, lens.len(), &lens);
    assert_eq!(s1.tx[0].tx_burst(&sent).unwrap(), lens.len());

    let mut descs = vec![Desc::default(); 64];
    let fr = m1.rx[0].peek(64, &mut descs).unwrap();
    assert_eq!(fr.len(), lens.len());
    let counts: Vec<usize> = fr.clone().map(|f| f.descs.len()).collect();
    assert_eq!(counts, [1, 1, 2, 3, 1], "chains as the slave wrote them");
    let got_lens: Vec<usize> = fr.map(|f| f.len).collect();
    assert_eq!(got_lens, lens);
    assert_eq!(m1.rx[0].peeked_bytes(), lens.iter().sum::<usize>() as u64);
    // Not consumed yet: the slave cannot reuse those buffers.
    assert_eq!(s1.tx[0].free().unwrap(), 64 - 8);
    // A second peek without release sees the same frames.
    let fr = m1.rx[0].peek(64, &mut descs).unwrap();
    assert_eq!(fr.len(), lens.len());

    // Copy each frame region to region into slave 2's posted buffers.
    let regions = m1.rx[0].regions().clone();
    for f in fr {
        let d = f.descs;
        let r = m2.tx[0]
            .push(f.len, |dst, off, at, k| {
                // Source chunk that holds frame byte `at` (chunks never
                // straddle here: the destination's 256-byte buffers divide
                // the source's 2048-byte ones).
                let mut start = 0;
                for sd in d {
                    let l = sd.length as usize;
                    if at < start + l {
                        let src = &regions[sd.region as usize];
                        assert!(dst.copy_from_region(off, src, sd.offset as usize + at - start, k));
                        break;
                    }
                    start += l;
                }
            })
            .unwrap();
        assert_eq!(r, Pushed::Queued);
    }
    m1.rx[0].release();
    assert_eq!(s1.tx[0].free().unwrap(), 64);
    // Nothing is visible before the flush.
    let mut bufs = PacketBuf::batch(16, MAX_FRAME);
    assert!(m2.tx[0].has_pending());
    assert_eq!(s2.rx[0].rx_burst(&mut bufs).unwrap(), 0);
    let total: usize = lens.iter().sum();
    assert_eq!(m2.tx[0].flush(), (lens.len() as u64, total as u64));
    assert_eq!(s2.rx[0].rx_burst(&mut bufs).unwrap(), lens.len());
    for (i, b) in bufs[..lens.len()].iter().enumerate() {
        assert!(b.as_slice() == sent[i], "frame {i} differs");
    }
    assert_eq!(m1.rx[0].stats().packets, lens.len() as u64);
    assert_eq!(m2.tx[0].stats().packets, lens.len() as u64);

    // A frame longer than the whole ring can never go; a full ring says so.
    assert_eq!(
        m2.tx[0].push(64 * 256 + 1, |_, _, _, _| {}).unwrap(),
        Pushed::Unsendable
    );
    let mut queued = 0;
    loop {
        match m2.tx[0].push(1000, |_, _, _, _| {}).unwrap() {
            Pushed::Queued => queued += 1,
            Pushed::RingFull => break,
            Pushed::Unsendable => panic!("1000 bytes fit the ring"),
        }
    }
    // 64 buffers of 256 bytes, 4 per frame.
    assert_eq!(queued, 16);
    // Frames, not descriptors, are counted.
    assert_eq!(m2.tx[0].flush(), (16, 16 * 1000));
    s1.disconnect("done");
    s2.disconnect("done");
}

#[test]
fn peek_returns_the_whole_frames_its_descriptor_space_holds() {
    let srv = TestServer::with_ids("fwdq-room", &[1]);
    let mut s1 = connect_slave(&srv.addr, &small(1, 256)).expect("slave 1");
    let mut m1 = srv.connected();
    // One buffer, a chain of 3, one buffer.
    let lens = [100usize, 700, 50];
    let sent = frames(3, lens.len(), &lens);
    assert_eq!(s1.tx[0].tx_burst(&sent).unwrap(), lens.len());

    // Room for 3 descriptors: the first frame, not the chain after it.
    let mut descs = vec![Desc::default(); 3];
    let fr = m1.rx[0].peek(64, &mut descs).unwrap();
    assert_eq!(fr.map(|f| f.len).collect::<Vec<_>>(), [100]);
    assert_eq!(m1.rx[0].peeked_bytes(), 100);
    m1.rx[0].release();
    // Room for 4: the chain and the frame after it.
    let mut descs = vec![Desc::default(); 4];
    let fr = m1.rx[0].peek(64, &mut descs).unwrap();
    assert_eq!(fr.descs().len(), 4);
    assert_eq!(fr.map(|f| f.len).collect::<Vec<_>>(), [700, 50]);
    m1.rx[0].release();
    assert_eq!(m1.rx[0].stats().packets, 3);
    assert_eq!(m1.rx[0].stats().bytes, 850);
    s1.disconnect("done");
}

//! Master <-> slave in one process over real sockets (abstract names in the
//! current network namespace, or a socketpair): no root needed.
//!
//! Covers the handshake and what it reports, traffic on every queue with
//! byte-for-byte checks, chained frames, ring and buffer sizes, both modes,
//! interrupts, disconnect and reconnect from either side, and every refusal
//! a misconfigured (not hostile) slave can meet. Hostile peers are in
//! `hostile.rs`.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use memif_cni::memif::master::{Handshake, Lookup, Outcome};
use memif_cni::memif::shm::{RingRef, RING_FLAG_MASK_INT};
use memif_cni::memif::socket::Channel;
use memif_cni::memif::wire::{Init, Message, VERSION};
use memif_cni::memif::{
    InterfaceConfig, Limits, Mode, PacketBuf, ServerConfig, ServerEvent, SlaveConfig,
    SlaveConnection, SlaveError,
};

/// Connecting must fail with the master's DISCONNECT; returns its reason.
#[track_caller]
fn refused(s: &TestServer, cfg: &SlaveConfig) -> String {
    match connect_slave(&s.addr, cfg) {
        Err(SlaveError::Refused { reason, .. }) => reason,
        Err(e) => panic!("expected a refusal, got {e:?}"),
        Ok(c) => panic!("expected a refusal, connected to {:?}", c.remote_if_name),
    }
}

#[test]
fn handshake_reports_names_mode_and_queue_counts() {
    let cfg = ServerConfig {
        name: "memifd-test".into(),
        ..ServerConfig::default()
    };
    let s = TestServer::start("handshake", cfg, vec![InterfaceConfig::new(7, "pod-eth1")]);
    let scfg = SlaveConfig {
        id: 7,
        name: "app-7".into(),
        s2m_queues: 3,
        m2s_queues: 2,
        log2_ring_size: 5,
        ..SlaveConfig::default()
    };
    let mut slave = connect_slave(&s.addr, &scfg).expect("connect");
    assert_eq!(slave.master_name, "memifd-test");
    assert_eq!(slave.remote_if_name, "pod-eth1");
    assert_eq!((slave.tx.len(), slave.rx.len()), (3, 2));
    assert!(slave.state.is_up());

    let mut m = s.connected();
    assert_eq!(m.id, 7);
    assert_eq!(m.peer_name, "app-7");
    assert_eq!(m.mode, Mode::Ethernet);
    assert_eq!((m.rx.len(), m.tx.len()), (3, 2), "rx = s2m, tx = m2s");
    assert_eq!(m.regions.len(), 1);
    assert_eq!(m.regions[0].len(), slave.region.len());
    assert!(m.state.is_up());
    assert!(m.rx.iter().all(|q| q.is_up()) && m.tx.iter().all(|q| q.is_up()));
    // The slave lays out S2M rings, then M2S rings, back to back.
    let rb = RingRef::bytes_for(5) as u32;
    assert_eq!(m.s2m_rings.len(), 3);
    assert_eq!(m.m2s_rings.len(), 2);
    for (i, r) in m.s2m_rings.iter().enumerate() {
        assert_eq!((r.region, r.offset, r.log2_size), (0, i as u32 * rb, 5));
    }
    for (i, r) in m.m2s_rings.iter().enumerate() {
        assert_eq!(
            (r.region, r.offset, r.log2_size),
            (0, (3 + i) as u32 * rb, 5)
        );
    }
    exchange(&mut m, &mut slave, 1, 40, 64);
    s.assert_quiet();
}

#[test]
fn traffic_on_every_queue_with_1_2_and_4_queues() {
    let s = TestServer::with_ids("queues", &[1, 2, 4]);
    for q in [1u16, 2, 4] {
        let cfg = SlaveConfig {
            s2m_queues: q,
            m2s_queues: q,
            ..slave_cfg(q as u32)
        };
        let mut slave = connect_slave(&s.addr, &cfg).expect("connect");
        let mut m = s.connected();
        assert_eq!((m.rx.len(), m.tx.len()), (q as usize, q as usize));
        // 150 frames per queue: more than the 64-slot ring, so it wraps.
        exchange_lens(
            &mut m,
            &mut slave,
            q as u32,
            150,
            &[60, 64, 128, 1000, 1514],
        );
        for i in 0..q as usize {
            assert_eq!(m.rx[i].stats().packets, 150, "master rx {i}");
            assert_eq!(m.tx[i].stats().packets, 150, "master tx {i}");
            assert_eq!(slave.tx[i].stats().packets, 150, "slave tx {i}");
            assert_eq!(slave.rx[i].stats().packets, 150, "slave rx {i}");
        }
        slave.disconnect("next queue count");
        assert_eq!(s.disconnected().0, q as u32);
    }
}

#[test]
fn queues_run_on_their_own_threads() {
    const Q: u16 = 4;
    const N: usize = 3000;
    let s = TestServer::with_ids("threads", &[1]);
    let cfg = SlaveConfig {
        s2m_queues: Q,
        m2s_queues: Q,
        ..slave_cfg(1)
    };
    let mut slave = connect_slave(&s.addr, &cfg).expect("connect");
    let mut m = s.connected();
    let deadline = Instant::now() + WAIT;
    let lens = [64, 300, 1500];
    std::thread::scope(|sc| {
        let mut joins = Vec::new();
        for (q, (stx, mrx)) in slave.tx.iter_mut().zip(m.rx.iter_mut()).enumerate() {
            let f = Arc::new(frames(q as u32, N, &lens));
            let g = f.clone();
            joins.push(sc.spawn(move || {
                let mut sent = 0;
                while sent < N {
                    let n = stx.tx_burst(&f[sent..]).unwrap();
                    sent += n;
                    if n == 0 {
                        std::thread::yield_now();
                    }
                    assert!(Instant::now() < deadline, "s2m {q}: sent {sent}");
                }
            }));
            joins.push(sc.spawn(move || {
                let mut bufs = PacketBuf::batch(32, MAX_FRAME);
                let mut got = 0;
                while got < N {
                    let n = mrx.rx_burst(&mut bufs).unwrap();
                    if n == 0 {
                        std::thread::yield_now();
                    }
                    for b in &bufs[..n] {
                        assert!(b.as_slice() == &g[got][..], "s2m {q} frame {got}");
                        got += 1;
                    }
                    assert!(Instant::now() < deadline, "s2m {q}: got {got}");
                }
            }));
        }
        for (q, (mtx, srx)) in m.tx.iter_mut().zip(slave.rx.iter_mut()).enumerate() {
            let f = Arc::new(frames(50 + q as u32, N, &lens));
            let g = f.clone();
            joins.push(sc.spawn(move || {
                let mut sent = 0;
                while sent < N {
                    let n = mtx.tx_burst(&f[sent..]).unwrap();
                    sent += n;
                    if n == 0 {
                        std::thread::yield_now();
                    }
                    assert!(Instant::now() < deadline, "m2s {q}: sent {sent}");
                }
            }));
            joins.push(sc.spawn(move || {
                let mut bufs = PacketBuf::batch(32, MAX_FRAME);
                let mut got = 0;
                while got < N {
                    let n = srx.rx_burst(&mut bufs).unwrap();
                    if n == 0 {
                        std::thread::yield_now();
                    }
                    for b in &bufs[..n] {
                        assert!(b.as_slice() == &g[got][..], "m2s {q} frame {got}");
                        got += 1;
                    }
                    assert!(Instant::now() < deadline, "m2s {q}: got {got}");
                }
            }));
        }
        for j in joins {
            j.join().expect("queue thread");
        }
    });
    assert_all_empty(&mut m, &mut slave);
    for q in 0..Q as usize {
        assert_eq!(m.rx[q].stats().packets, N as u64);
        assert_eq!(slave.rx[q].stats().packets, N as u64);
    }
}

#[test]
fn chained_frames_both_directions() {
    let s = TestServer::with_ids("chained", &[1, 2]);
    for (id, bs) in [(1u32, 2048u32), (2, 256)] {
        let cfg = SlaveConfig {
            buffer_size: bs,
            log2_ring_size: 8,
            ..slave_cfg(id)
        };
        let mut slave = connect_slave(&s.addr, &cfg).expect("connect");
        let mut m = s.connected();
        let b = bs as usize;
        exchange_lens(&mut m, &mut slave, id, 30, &[9000]);
        exchange_lens(
            &mut m,
            &mut slave,
            10 + id,
            60,
            &[1, b - 1, b, b + 1, 2 * b, 3000, 9000, MAX_FRAME],
        );

        // A 9000-byte frame takes ceil(9000 / bs) descriptors each way.
        let need = 9000u16.div_ceil(bs as u16);
        let f = frame(99, 0, 9000);
        let head = slave.tx[0].ring().head();
        assert_eq!(slave.tx[0].tx_burst(&[&f]).unwrap(), 1);
        assert_eq!(slave.tx[0].ring().head().wrapping_sub(head), need);
        let mut bufs = PacketBuf::batch(4, MAX_FRAME);
        assert_eq!(m.rx[0].rx_burst(&mut bufs).unwrap(), 1);
        assert!(bufs[0].as_slice() == &f[..]);
        assert_eq!(slave.tx[0].ring().tail(), slave.tx[0].ring().head());

        let tail = slave.rx[0].ring().tail();
        assert_eq!(m.tx[0].tx_burst(&[&f]).unwrap(), 1);
        assert_eq!(slave.rx[0].ring().tail().wrapping_sub(tail), need);
        assert_eq!(slave.rx[0].rx_burst(&mut bufs).unwrap(), 1);
        assert!(bufs[0].as_slice() == &f[..]);
        slave.disconnect("done");
        s.disconnected();
    }
}

#[test]
fn oversize_and_empty_frames_are_dropped_and_counted() {
    let s = TestServer::with_ids("oversize", &[1]);
    let mut slave = connect_slave(&s.addr, &slave_cfg(1)).expect("connect");
    let mut m = s.connected();
    let good = frame(1, 0, 100);
    let batch: [&[u8]; 3] = [&[0u8; MAX_FRAME + 1], &good, &[]];
    let mut bufs = PacketBuf::batch(4, MAX_FRAME);

    // Dropped frames are consumed (so the caller moves on) and counted.
    assert_eq!(slave.tx[0].tx_burst(&batch).unwrap(), 3);
    let st = slave.tx[0].stats();
    assert_eq!((st.packets, st.bytes, st.drops), (1, 100, 2), "slave tx");
    assert_eq!(m.rx[0].rx_burst(&mut bufs).unwrap(), 1);
    assert!(bufs[0].as_slice() == &good[..]);

    assert_eq!(m.tx[0].tx_burst(&batch).unwrap(), 3);
    let st = m.tx[0].stats();
    assert_eq!((st.packets, st.bytes, st.drops), (1, 100, 2), "master tx");
    assert_eq!(slave.rx[0].rx_burst(&mut bufs).unwrap(), 1);
    assert!(bufs[0].as_slice() == &good[..]);
    assert_all_empty(&mut m, &mut slave);
}

#[test]
fn tiny_ring_log2_1() {
    let s = TestServer::with_ids("ring-tiny", &[1]);
    let cfg = SlaveConfig {
        log2_ring_size: 1,
        ..slave_cfg(1)
    };
    let mut slave = connect_slave(&s.addr, &cfg).expect("connect");
    let mut m = s.connected();
    assert_eq!(m.rx[0].ring().size(), 2);
    assert_eq!(m.tx[0].ring().size(), 2);
    // 4000 bytes need both descriptors of the ring.
    exchange_lens(&mut m, &mut slave, 1, 301, &[64, 1500, 4000, 1]);
}

#[test]
fn large_ring_log2_14_and_counter_wrap() {
    const N: usize = 70_000; // more than 2^16: the u16 counters wrap
    let s = TestServer::with_ids("ring-large", &[1]);
    let cfg = SlaveConfig {
        log2_ring_size: 14,
        buffer_size: 128,
        ..slave_cfg(1)
    };
    let mut slave = connect_slave(&s.addr, &cfg).expect("connect");
    let mut m = s.connected();
    assert_eq!(m.rx[0].ring().size(), 1 << 14);
    exchange_lens(&mut m, &mut slave, 1, N, &[64, 100, 128]);
    let wrapped = (N % 65536) as u16;
    assert_eq!(m.rx[0].ring().head(), wrapped);
    assert_eq!(m.rx[0].ring().tail(), wrapped);
    assert_eq!(m.tx[0].ring().tail(), wrapped);
}

#[test]
fn buffer_size_1024() {
    let s = TestServer::with_ids("buf-1024", &[1]);
    let cfg = SlaveConfig {
        buffer_size: 1024,
        ..slave_cfg(1)
    };
    let mut slave = connect_slave(&s.addr, &cfg).expect("connect");
    let mut m = s.connected();
    // Buffers are 1024 bytes apart in the region.
    let need = |len: usize| len.div_ceil(1024) as u16;
    exchange_lens(
        &mut m,
        &mut slave,
        1,
        100,
        &[64, 1023, 1024, 1025, 1500, 4000],
    );
    let head = slave.tx[0].ring().head();
    slave.tx[0].tx_burst(&[frame(5, 0, 1500)]).unwrap();
    assert_eq!(slave.tx[0].ring().head().wrapping_sub(head), need(1500));
    let mut bufs = PacketBuf::batch(1, MAX_FRAME);
    assert_eq!(m.rx[0].rx_burst(&mut bufs).unwrap(), 1);
    assert_eq!(bufs[0].as_slice(), &frame(5, 0, 1500)[..]);
}

#[test]
fn ethernet_and_ip_modes_and_mode_mismatch() {
    let mut ip = iface(2);
    ip.mode = Mode::Ip;
    let s = TestServer::start("modes", ServerConfig::default(), vec![iface(1), ip]);

    let mut slave = connect_slave(&s.addr, &slave_cfg(1)).expect("ethernet");
    let mut m = s.connected();
    assert_eq!(m.mode, Mode::Ethernet);
    exchange(&mut m, &mut slave, 1, 10, 64);

    let ipcfg = SlaveConfig {
        mode: Mode::Ip,
        ..slave_cfg(2)
    };
    let mut slave2 = connect_slave(&s.addr, &ipcfg).expect("ip");
    let mut m2 = s.connected();
    assert_eq!((m2.id, m2.mode), (2, Mode::Ip));
    exchange(&mut m2, &mut slave2, 2, 10, 40);
    slave2.disconnect("mode test");
    s.disconnected();

    // An ethernet slave on the ip interface, and the reverse.
    let eth_on_ip = refused(&s, &slave_cfg(2));
    assert_contains(&eth_on_ip, "mode");
    assert_contains(&eth_on_ip, "ip");
    s.expect_rejected(Some(2), &eth_on_ip);
    slave.disconnect("free id 1");
    s.disconnected();
    let ip_on_eth = refused(
        &s,
        &SlaveConfig {
            mode: Mode::Ip,
            ..slave_cfg(1)
        },
    );
    assert_contains(&ip_on_eth, "mode");
    s.expect_rejected(Some(1), &ip_on_eth);
    // A refused INIT does not keep the id.
    let _ip = connect_slave(&s.addr, &ipcfg).expect("ip again");
    assert_eq!(s.connected().id, 2);
    let _eth = connect_slave(&s.addr, &slave_cfg(1)).expect("ethernet again");
    assert_eq!(s.connected().id, 1);
}

#[test]
fn interrupts_signal_only_when_unmasked() {
    let s = TestServer::with_ids("interrupts", &[1]);
    let mut slave = connect_slave(&s.addr, &slave_cfg(1)).expect("connect");
    let mut m = s.connected();
    let f = |i| frame(1, i, 64);
    let mut bufs = PacketBuf::batch(8, MAX_FRAME);

    // Polling mode: MASK_INT is set and the producer must not signal.
    m.rx[0].set_interrupts(false);
    assert_eq!(slave.tx[0].ring().flags() & RING_FLAG_MASK_INT, 1);
    m.rx[0].ack_interrupt();
    assert!(!readable(m.rx[0].event_fd(), 0));
    assert_eq!(slave.tx[0].tx_burst(&[f(0)]).unwrap(), 1);
    assert!(
        !readable(m.rx[0].event_fd(), 50),
        "masked ring was signalled"
    );
    assert_eq!(
        slave.tx[0].stats().interrupts,
        0,
        "a masked ring counts none"
    );

    // Interrupt mode: unmask, re-check (finds the frame sent while masked),
    // then every publishing burst signals once.
    m.rx[0].set_interrupts(true);
    assert_eq!(slave.tx[0].ring().flags() & RING_FLAG_MASK_INT, 0);
    assert_eq!(m.rx[0].pending().unwrap(), 1);
    assert_eq!(slave.tx[0].tx_burst(&[f(1)]).unwrap(), 1);
    assert!(readable(m.rx[0].event_fd(), 1000), "no interrupt");
    assert_eq!(m.rx[0].ack_interrupt(), 1);
    assert!(!readable(m.rx[0].event_fd(), 0), "ack did not clear");
    slave.tx[0].tx_burst(&[f(2)]).unwrap();
    slave.tx[0].tx_burst(&[f(3), f(4)]).unwrap();
    assert_eq!(m.rx[0].ack_interrupt(), 2);
    assert_eq!(
        slave.tx[0].stats().interrupts,
        3,
        "one per signalling burst"
    );
    assert_eq!(m.rx[0].rx_burst(&mut bufs).unwrap(), 5);
    for (i, b) in bufs[..5].iter().enumerate() {
        assert_eq!(b.as_slice(), &f(i as u32)[..]);
    }

    // A thread asleep on the eventfd is woken by a send from another.
    let fd = m.rx[0].event_fd();
    std::thread::scope(|sc| {
        let waiter = sc.spawn(move || readable(fd, 5000));
        slave.tx[0].tx_burst(&[f(5)]).unwrap();
        assert!(waiter.join().unwrap(), "sleeping consumer not woken");
    });
    assert_eq!(m.rx[0].ack_interrupt(), 1);
    assert_eq!(m.rx[0].rx_burst(&mut bufs).unwrap(), 1);

    // The other direction: the slave consumes M2S, the master kicks.
    slave.rx[0].set_interrupts(true);
    slave.rx[0].ack_interrupt();
    assert_eq!(m.tx[0].tx_burst(&[f(6)]).unwrap(), 1);
    assert!(readable(slave.rx[0].event_fd(), 1000), "no m2s interrupt");
    assert_eq!(slave.rx[0].ack_interrupt(), 1);
    assert_eq!(
        m.tx[0].stats().interrupts,
        1,
        "the master counts its m2s signal"
    );
    slave.rx[0].set_interrupts(false);
    assert_eq!(m.tx[0].ring().flags() & RING_FLAG_MASK_INT, 1);
    assert_eq!(m.tx[0].tx_burst(&[f(7)]).unwrap(), 1);
    assert!(
        !readable(slave.rx[0].event_fd(), 50),
        "masked m2s signalled"
    );
    assert_eq!(
        m.tx[0].stats().interrupts,
        1,
        "a masked m2s ring counts none"
    );
    assert_eq!(slave.rx[0].rx_burst(&mut bufs).unwrap(), 2);
}

#[test]
fn slave_disconnect_then_reconnect() {
    let s = TestServer::with_ids("reconnect", &[1]);
    let mut slave = connect_slave(&s.addr, &slave_cfg(1)).expect("connect");
    let mut m = s.connected();
    exchange(&mut m, &mut slave, 1, 10, 100);

    slave.disconnect("slave going away");
    let (id, reason, by_peer) = s.disconnected();
    assert_eq!((id, by_peer), (1, true));
    assert_contains(&reason, "slave going away");
    assert!(!m.state.is_up());
    assert!(!m.rx[0].is_up() && !m.tx[0].is_up());

    let mut slave = connect_slave(&s.addr, &slave_cfg(1)).expect("reconnect");
    let mut m2 = s.connected();
    assert_eq!(m2.id, 1);
    assert!(m2.state.is_up());
    assert!(!m.state.is_up(), "the old connection stays down");
    exchange(&mut m2, &mut slave, 2, 100, 200);

    // A slave that vanishes without DISCONNECT is noticed too.
    drop(slave);
    let (id, reason, by_peer) = s.disconnected();
    assert_eq!((id, by_peer), (1, true));
    assert_contains(&reason, "closed");
    assert!(!m2.state.is_up());
    s.assert_serves(1);
}

#[test]
fn master_disconnect_reaches_the_slave() {
    let s = TestServer::with_ids("master-disc", &[1]);
    let mut slave = connect_slave(&s.addr, &slave_cfg(1)).expect("connect");
    let mut m = s.connected();
    exchange(&mut m, &mut slave, 1, 10, 100);

    assert_eq!(slave.poll_disconnect(), None, "nothing to report yet");
    s.handle.disconnect(1, "operator says bye");
    assert_eq!(wait_master_disconnect(&slave), "operator says bye");
    assert!(!slave.state.is_up() && !slave.tx[0].is_up());
    let (id, reason, by_peer) = s.disconnected();
    assert_eq!(
        (id, reason.as_str(), by_peer),
        (1, "operator says bye", false)
    );
    assert!(!m.state.is_up());

    // Removing an interface disconnects it and makes the id unknown;
    // adding one makes it available.
    let slave = connect_slave(&s.addr, &slave_cfg(1)).expect("reconnect");
    s.connected();
    s.handle.remove_interface(1);
    assert_eq!(wait_master_disconnect(&slave), "interface deleted");
    assert_eq!(s.disconnected().0, 1);
    let reason = refused(&s, &slave_cfg(1));
    assert_contains(&reason, "unknown interface id 1");
    s.expect_rejected(Some(1), &reason);
    s.handle.add_interface(iface(1));
    s.assert_serves(1);
}

#[test]
fn secret_is_enforced() {
    let mut cfg = iface(1);
    cfg.secret = Some("s3cret".into());
    let s = TestServer::start("secret", ServerConfig::default(), vec![cfg]);

    let reason = refused(&s, &slave_cfg(1));
    assert_eq!(reason, "secret required");
    s.expect_rejected(Some(1), &reason);

    let wrong = SlaveConfig {
        secret: "s3cres".into(),
        ..slave_cfg(1)
    };
    let reason = refused(&s, &wrong);
    assert_eq!(reason, "incorrect secret");
    s.expect_rejected(Some(1), &reason);
    let longer = SlaveConfig {
        secret: "s3cret!".into(),
        ..slave_cfg(1)
    };
    assert_eq!(refused(&s, &longer), "incorrect secret");
    s.rejected();

    let right = SlaveConfig {
        secret: "s3cret".into(),
        ..slave_cfg(1)
    };
    let mut slave = connect_slave(&s.addr, &right).expect("right secret");
    let mut m = s.connected();
    exchange(&mut m, &mut slave, 1, 10, 64);
}

#[test]
fn version_mismatch_is_refused() {
    let s = TestServer::with_ids("version", &[1]);
    let p = RawPeer::connect(&s.addr);
    assert_eq!(
        (p.hello.min_version, p.hello.max_version),
        (VERSION, VERSION)
    );
    assert_eq!(p.hello.max_log2_ring_size, 14);
    assert_eq!(
        (
            p.hello.max_region,
            p.hello.max_s2m_ring,
            p.hello.max_m2s_ring
        ),
        (255, 255, 255),
        "HELLO carries maximum indices"
    );
    let reason = p.refused(
        &Message::Init(Init {
            version: 0x0100,
            id: 1,
            mode: Mode::Ethernet,
            secret: String::new(),
            name: "old-slave".into(),
        }),
        None,
    );
    assert_contains(&reason, "version");
    assert_contains(&reason, "0x0100");
    s.expect_rejected(Some(1), &reason);
    s.assert_serves(1);
}

#[test]
fn unknown_interface_id_is_refused() {
    let s = TestServer::with_ids("unknown-id", &[1]);
    let reason = refused(&s, &slave_cfg(99));
    assert_eq!(reason, "unknown interface id 99");
    s.expect_rejected(Some(99), &reason);
    s.assert_serves(1);
}

#[test]
fn second_slave_for_a_connected_id_is_refused() {
    let s = TestServer::with_ids("busy-id", &[1]);
    let mut first = connect_slave(&s.addr, &slave_cfg(1)).expect("first");
    let mut m = s.connected();

    let reason = refused(&s, &slave_cfg(1));
    assert_contains(&reason, "already connected");
    s.expect_rejected(Some(1), &reason);
    s.assert_quiet();

    assert!(m.state.is_up() && first.state.is_up());
    assert_eq!(first.poll_disconnect(), None);
    exchange(&mut m, &mut first, 1, 100, 300);
}

#[test]
fn several_interface_ids_on_one_socket_are_isolated() {
    let ids = [10u32, 11, 12];
    let s = TestServer::with_ids("multi-id", &ids);
    let mut pairs: Vec<_> = ids
        .iter()
        .map(|&id| {
            let slave = connect_slave(&s.addr, &slave_cfg(id)).expect("connect");
            let m = s.connected();
            assert_eq!(m.id, id);
            assert_eq!(slave.remote_if_name, format!("if{id}"));
            (m, slave)
        })
        .collect();
    for round in 0..2 {
        for i in 0..pairs.len() {
            let (m, slave) = &mut pairs[i];
            exchange(m, slave, ids[i] + 100 * round, 70, 500);
            for (m, slave) in &mut pairs {
                assert_all_empty(m, slave);
            }
        }
    }
    // One going away leaves the others working.
    let (m11, s11) = pairs.remove(1);
    s11.disconnect("leaving");
    assert_eq!(s.disconnected(), (11, "peer: leaving".to_string(), true));
    assert!(!m11.state.is_up());
    for (i, (m, slave)) in pairs.iter_mut().enumerate() {
        assert!(m.state.is_up());
        exchange(m, slave, 500 + i as u32, 20, 64);
    }
    s.assert_serves(11);
}

#[test]
fn handshake_over_a_socketpair_without_a_server() {
    let (mchan, schan) = Channel::pair().expect("socketpair");
    set_recv_timeout(&mchan);
    set_recv_timeout(&schan);
    let master = std::thread::spawn(move || {
        let (mut hs, hello) = Handshake::start("pair-master", Limits::default());
        mchan.send(&hello, None).unwrap();
        loop {
            let rx = mchan.recv().expect("master recv");
            let lookup = |id| {
                if id == 3 {
                    Lookup::Found(InterfaceConfig::new(3, "pair-if"))
                } else {
                    Lookup::Unknown
                }
            };
            match hs.on_message(rx, lookup) {
                Ok(Outcome::Reply(m)) => mchan.send(&m, None).unwrap(),
                Ok(Outcome::Connected(c, m)) => {
                    mchan.send(&m, None).unwrap();
                    assert_eq!(hs.id(), Some(3));
                    return (c, mchan);
                }
                Err(e) => panic!("master refused: {e}"),
            }
        }
    });
    let cfg = SlaveConfig {
        s2m_queues: 2,
        m2s_queues: 3,
        ..slave_cfg(3)
    };
    let mut slave = SlaveConnection::handshake(schan, &cfg).expect("slave handshake");
    let (mut m, _mchan) = master.join().expect("master thread");
    assert_eq!(slave.master_name, "pair-master");
    assert_eq!(slave.remote_if_name, "pair-if");
    assert_eq!((m.rx.len(), m.tx.len()), (2, 3));
    exchange(&mut m, &mut slave, 3, 100, 700);
}

#[test]
fn slave_respects_the_limits_in_hello() {
    let cfg = ServerConfig {
        limits: Limits {
            max_s2m_rings: 2,
            max_log2_s2m_ring_size: 8,
            max_log2_m2s_ring_size: 8,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let s = TestServer::start("hello-limits", cfg, vec![iface(1)]);
    let too_many = SlaveConfig {
        s2m_queues: 3,
        ..slave_cfg(1)
    };
    let err = connect_slave(&s.addr, &too_many).expect_err("3 s2m rings");
    assert!(matches!(err, SlaveError::Limits(_)), "{err:?}");
    let too_big = SlaveConfig {
        log2_ring_size: 9,
        ..slave_cfg(1)
    };
    let err = connect_slave(&s.addr, &too_big).expect_err("log2 9");
    assert!(matches!(err, SlaveError::Limits(_)), "{err:?}");
    // The slave gave up before INIT, closing the channel: the master drops
    // those connections and still serves the id.
    let ok = SlaveConfig {
        s2m_queues: 2,
        log2_ring_size: 8,
        ..slave_cfg(1)
    };
    let mut slave = connect_slave(&s.addr, &ok).expect("within limits");
    let mut closed = 0;
    let mut m = loop {
        match s.event() {
            ServerEvent::Connected(m) => break m,
            ServerEvent::Rejected { id: None, reason } => {
                assert_eq!(reason, "peer closed the connection");
                closed += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    exchange(&mut m, &mut slave, 1, 10, 64);
    while closed < 2 {
        assert!(matches!(s.rejected(), (None, _)));
        closed += 1;
    }
    s.assert_quiet();
}

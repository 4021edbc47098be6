//! memifd's API request lines, decoded and checked as its API server does
//! (`api_server::parse_request`, then `check_request` for an attach) under
//! the node maximums of the default config.
//!
//! Input: one request line (the server hands `handle` the line with its
//! newline).
//!
//! Checked: a refusal is a well-formed error reply; a decoded request
//! prints and decodes back the same (what `Client` sends); an accepted
//! attach names a listener, a VNI in range and a spec memifd can serve.

#![no_main]

use libfuzzer_sys::fuzz_target;
use memif_cni::agent::api_server::parse_request;
use memif_cni::agent::check_request;
use memif_cni::api::{
    MaxSpec, Reply, ReplyEnvelope, Request, RequestEnvelope, API_VERSION, MAX_MESSAGE,
};
use memif_cni::memif::Mode;
use memif_cni::packet::vxlan::MAX_VNI;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_MESSAGE {
        return;
    }
    let req = match parse_request(data) {
        Ok(r) => r,
        Err(reply) => {
            assert!(matches!(reply, Reply::Error(_)), "{reply:?}");
            // As the server sends it: one line of JSON.
            let out = serde_json::to_string(&ReplyEnvelope {
                api: API_VERSION,
                reply,
            })
            .expect("replies serialize");
            assert!(!out.contains('\n'));
            return;
        }
    };
    let env = RequestEnvelope {
        api: API_VERSION,
        request: req.clone(),
    };
    let line = serde_json::to_vec(&env).expect("requests serialize");
    assert!(!line.contains(&b'\n'));
    assert_eq!(parse_request(&line).ok(), Some(req.clone()), "round trip");

    if let Request::Attach(a) = &req {
        let max = MaxSpec::default();
        if check_request(a, &max).is_ok() {
            assert!(!a.key.container_id.is_empty() && !a.key.ifname.is_empty());
            assert!(a.netns.is_absolute());
            assert!(!a.socket_name().is_empty());
            let vni = a.vni();
            assert!((1..=MAX_VNI).contains(&vni), "vni {vni}");
            let s = &a.spec;
            assert!(s.mode != Mode::PuntInject);
            assert!(s.rx_ring_size.is_power_of_two() && s.rx_ring_size <= max.ring_size);
            assert!(s.tx_ring_size.is_power_of_two() && s.tx_ring_size <= max.ring_size);
            assert!(s.rx_queues >= 1 && s.tx_queues >= 1);
            assert!(s.secret.as_ref().is_none_or(|x| x.len() <= 24));
        }
    }
});

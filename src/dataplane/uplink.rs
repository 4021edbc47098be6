//! The uplink: one TUN device per network, in memifd's own (the host's)
//! network namespace, and the host routes that point the network's pod
//! addresses at it. This module decides which devices, routes and rules
//! exist for which ports ([`Uplinks`]); the kernel work itself is
//! [`crate::link`]'s, through [`HostNet`].
//!
//! **Name.** `memifup-` followed by the first 7 hex digits of the 64-bit
//! FNV-1a hash of the network name (15 characters, the kernel's limit), e.g.
//! network `blue` -> [`tun_name`]`("blue")`. It depends on nothing else, so
//! an operator can compute it, and it stays the same across restarts.
//!
//! **Lifetime.** The device is created (not persistent: it lives as long as
//! memifd holds its fd) when a network's first attachment appears and goes
//! away, with every route through it, when the last one is detached or
//! memifd exits. It is set up with MTU [`UPLINK_MTU`], no address and no
//! link-layer header: the kernel hands the dataplane bare IPv4/IPv6
//! packets, one per `read`.
//!
//! **Routes.** For every pod address of the network memifd installs
//! `<ip>/32` (or `/128`) `dev <tun> scope link` in the main table on
//! attach (replacing an existing route for the same prefix) and deletes
//! exactly that route (matched on the device) on detach. So `ping <pod ip>`
//! from the host goes into the TUN, the dataplane routes it to the pod's
//! memif, and the reply comes back through the TUN.
//!
//! **PBL steering.** A PBL attachment (`steer` ranges in its request)
//! shares its address with the pod's primary interface, so its address
//! gets no main-table route (that would take all of the pod's traffic).
//! Instead, per network, memifd uses its own routing table
//! [`steer_table`]`(network)` = `0x4d50_0000` + the first 4 hex digits of
//! the same hash that names the uplink (uplink `memifup-abcd123` ->
//! table `0x4d50abcd` = 1297132493), holding `<ip>/32 dev <tun> scope
//! link`, and one policy rule per range and address at priority
//! [`STEER_PRIORITY`]:
//! `to <ip>/32 ipproto tcp|udp dport A-B lookup <table> proto 109`
//! (`ip rule` shows them). Priority 2000 sits after `local` (0) and
//! before `main` (32766); protocol
//! [`RTPROT_MEMIFD`](crate::link::route::RTPROT_MEMIFD) (109) marks them as
//! memifd's. The route is added before the rules and removed after them,
//! so a rule of ours whose table has no route for its address is stale
//! (its memifd crashed; the TUN, and the route with it, went away):
//! [`Uplinks::clean_stale_steering`] deletes exactly those, which is safe
//! while other memifd instances (tests) run. The TUN of a network with
//! PBL ports has `rp_filter` 2 (loose): the memif's replies enter the host
//! through the TUN with the pod's address as source, which the main
//! table routes via the primary interface; strict mode would drop them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::counters::UplinkCounters;
use crate::calico::ports::PortRange;
use crate::ids::AttachmentId;
use crate::link::route::RT_TABLE_MAIN;
use crate::link::{HostNet, HostRoute, SteerRule, Tun};
use crate::logging::error_chain;

/// MTU of every uplink device.
pub const UPLINK_MTU: u32 = 1500;
/// Prefix of uplink device names.
pub const NAME_PREFIX: &str = "memifup-";
/// Priority of memifd's PBL steering rules.
pub const STEER_PRIORITY: u32 = 2000;
/// Base of memifd's per-network steering tables (see [`steer_table`]).
pub const STEER_TABLE_BASE: u32 = 0x4d50_0000;

fn fnv(network: &str) -> u64 {
    crate::hash::fnv1a64(network.as_bytes())
}

/// The uplink device name of `network` (see the module docs).
pub fn tun_name(network: &str) -> String {
    format!("{NAME_PREFIX}{:07x}", fnv(network) >> 36)
}

/// The routing table of `network`'s PBL steering (see the module docs).
pub fn steer_table(network: &str) -> u32 {
    STEER_TABLE_BASE + (fnv(network) >> 48) as u32
}

/// The steering rules of address `ip` for `ranges` into `table`.
fn steer_rules(ip: IpAddr, table: u32, ranges: &[PortRange]) -> Vec<SteerRule> {
    ranges
        .iter()
        .map(|r| SteerRule {
            ip,
            proto: r.proto.number(),
            start: r.start,
            end: r.end,
            table,
            priority: STEER_PRIORITY,
        })
        .collect()
}

/// A network's uplink as `status` shows it.
#[derive(Debug, Clone)]
pub struct UplinkView {
    pub network: String,
    /// The TUN device; `None` when it could not be created (see `error`).
    pub device: Option<String>,
    pub error: Option<String>,
    pub counters: Arc<UplinkCounters>,
}

/// The control side's view of one network.
struct CtlNet {
    ports: usize,
    /// Name and ifindex of the TUN, once created.
    tun: Option<(String, u32)>,
    error: Option<String>,
    counters: Arc<UplinkCounters>,
}

struct CtlPort {
    network: String,
    ips: Vec<IpAddr>,
    steer: Option<Vec<PortRange>>,
}

/// What adding a port did.
pub struct Added {
    /// The network's uplink, created for this port: for its worker.
    pub new_uplink: Option<(Tun, Arc<UplinkCounters>)>,
    /// Why the port works without a (complete) uplink, if it does.
    pub error: Option<String>,
}

/// What removing a port did.
pub struct Removed {
    pub network: String,
    /// It was the network's last port: the uplink must go.
    pub last: bool,
}

/// Which uplinks, routes and rules exist, for which ports.
pub struct Uplinks {
    host: Box<dyn HostNet>,
    ports: HashMap<AttachmentId, CtlPort>,
    nets: HashMap<String, CtlNet>,
}

impl Uplinks {
    pub fn new(host: Box<dyn HostNet>) -> Uplinks {
        Uplinks {
            host,
            ports: HashMap::new(),
            nets: HashMap::new(),
        }
    }

    pub fn contains(&self, id: AttachmentId) -> bool {
        self.ports.contains_key(&id)
    }

    /// Routes `ip` to the uplink: a main-table host route, or (PBL) a route
    /// in the network's steering table and then one rule per range.
    fn install(
        &mut self,
        network: &str,
        ip: IpAddr,
        ifindex: u32,
        steer: Option<&[PortRange]>,
    ) -> Result<(), crate::link::LinkError> {
        match steer {
            None => self.host.add_route(&HostRoute {
                ip,
                ifindex,
                table: RT_TABLE_MAIN,
            }),
            Some(ranges) => {
                let table = steer_table(network);
                self.host.add_route(&HostRoute { ip, ifindex, table })?;
                for r in steer_rules(ip, table, ranges) {
                    self.host.add_rule(&r)?;
                }
                Ok(())
            }
        }
    }

    /// Undoes [`Uplinks::install`]: the rules, then (when `route`) the
    /// route.
    fn uninstall(
        &mut self,
        network: &str,
        ip: IpAddr,
        ifindex: u32,
        steer: Option<&[PortRange]>,
        route: bool,
    ) -> Result<(), crate::link::LinkError> {
        match steer {
            None if route => self.host.del_route(&HostRoute {
                ip,
                ifindex,
                table: RT_TABLE_MAIN,
            }),
            None => Ok(()),
            Some(ranges) => {
                let table = steer_table(network);
                for r in steer_rules(ip, table, ranges) {
                    self.host.del_rule(&r)?;
                }
                if route {
                    self.host.del_route(&HostRoute { ip, ifindex, table })?;
                }
                Ok(())
            }
        }
    }

    /// Adds port `id` of `network` with its addresses. The first port of a
    /// network creates the network's uplink (returned for its worker); the
    /// port's addresses get host routes (or steering) to it. The port
    /// works without an uplink: the error is returned for the caller to
    /// report, and shown in [`Uplinks::views`].
    pub fn add_port(
        &mut self,
        id: AttachmentId,
        network: &str,
        ips: &[IpAddr],
        steer: Option<&[PortRange]>,
    ) -> Added {
        let mut added = Added {
            new_uplink: None,
            error: None,
        };
        let net = self
            .nets
            .entry(network.to_string())
            .or_insert_with(|| CtlNet {
                ports: 0,
                tun: None,
                error: None,
                counters: Arc::default(),
            });
        net.ports += 1;
        // (address, steering) pairs to route to the uplink.
        let mut routes_for: Vec<(IpAddr, Option<Vec<PortRange>>)> = ips
            .iter()
            .map(|ip| (*ip, steer.map(<[PortRange]>::to_vec)))
            .collect();
        if net.tun.is_none() {
            let name = tun_name(network);
            match self.host.create_tun(&name, UPLINK_MTU) {
                Ok(tun) => {
                    tracing::info!(network, device = %tun.name(), "uplink created");
                    if let Err(e) = self.host.isolate(tun.name()) {
                        let msg = format!(
                            "network {network}: cannot isolate uplink {}: {}",
                            tun.name(),
                            error_chain(&e)
                        );
                        tracing::error!("{msg}");
                        added.error = Some(msg);
                    }
                    net.tun = Some((tun.name().to_string(), tun.ifindex()));
                    net.error = None;
                    added.new_uplink = Some((tun, net.counters.clone()));
                    // Ports added while the uplink was missing get their
                    // routes now.
                    routes_for.extend(
                        self.ports
                            .values()
                            .filter(|p| p.network == network)
                            .flat_map(|p| p.ips.iter().map(|ip| (*ip, p.steer.clone()))),
                    );
                }
                Err(e) => {
                    let msg = format!("network {network}: no uplink: {}", error_chain(&e));
                    tracing::error!("{msg}");
                    net.error = Some(msg.clone());
                    added.error = Some(msg);
                }
            }
        }
        let tun = self.nets[network].tun.clone();
        if let Some((dev, ifindex)) = tun {
            if routes_for.iter().any(|(_, s)| s.is_some()) {
                if let Err(e) = self.host.set_rp_filter(&dev, 2) {
                    tracing::warn!(network, device = %dev, error = %error_chain(&e),
                        "cannot set rp_filter 2 (loose) on the uplink; PBL replies may be dropped");
                }
            }
            for (ip, steer) in routes_for {
                if let Err(e) = self.install(network, ip, ifindex, steer.as_deref()) {
                    let msg = format!(
                        "network {network}: host route for {ip}: {}",
                        error_chain(&e)
                    );
                    tracing::error!("{msg}");
                    added.error = Some(msg);
                }
            }
        }
        self.ports.insert(
            id,
            CtlPort {
                network: network.to_string(),
                ips: ips.to_vec(),
                steer: steer.map(<[PortRange]>::to_vec),
            },
        );
        added
    }

    /// Removes port `id`: its host routes (and, for a PBL port, its
    /// steering rules and table routes). The last port of a network takes
    /// the uplink with it (the caller has the worker close it). Unknown
    /// ids are ignored.
    pub fn remove_port(&mut self, id: AttachmentId) -> Option<Removed> {
        let p = self.ports.remove(&id)?;
        let net = self.nets.get_mut(&p.network)?;
        net.ports -= 1;
        let last = net.ports == 0;
        let tun = net.tun.clone();
        if let Some((name, ifindex)) = &tun {
            // Another port of the network may hold the same address (in
            // the same table: both steered or both plain).
            let still: Vec<IpAddr> = self
                .ports
                .values()
                .filter(|o| o.network == p.network && o.steer.is_some() == p.steer.is_some())
                .flat_map(|o| o.ips.iter().copied())
                .collect();
            for ip in &p.ips {
                // Rules first, then the route: see the module docs. The
                // last port's routes go with the TUN; rules do not.
                let route = !last && !still.contains(ip);
                if let Err(e) = self.uninstall(&p.network, *ip, *ifindex, p.steer.as_deref(), route)
                {
                    tracing::warn!(network = %p.network, device = %name, %ip,
                        error = %error_chain(&e), "cannot delete a host route or steering rule");
                }
            }
        }
        if last {
            self.nets.remove(&p.network);
            if let Some((name, _)) = &tun {
                if let Err(e) = self.host.unisolate(name) {
                    tracing::warn!(network = %p.network, device = %name, error = %error_chain(&e),
                        "cannot delete the uplink's isolation rules");
                }
            }
            if let Some((name, _)) = tun {
                tracing::info!(network = %p.network, device = %name, "uplink removed");
            }
        }
        Some(Removed {
            network: p.network,
            last,
        })
    }

    /// Deletes every rule installed here, steering and isolation (on
    /// shutdown: the TUNs, and the routes with them, go when memifd exits;
    /// rules would stay). Ports and routes are left as they are.
    pub fn remove_steering(&mut self) {
        let tuns: Vec<String> = self
            .nets
            .values()
            .filter_map(|n| n.tun.as_ref().map(|t| t.0.clone()))
            .collect();
        for t in tuns {
            if let Err(e) = self.host.unisolate(&t) {
                tracing::warn!(device = %t, error = %error_chain(&e), "cannot delete isolation rules");
            }
        }
        let rules: Vec<SteerRule> = self
            .ports
            .values()
            .filter(|p| self.nets.get(&p.network).is_some_and(|n| n.tun.is_some()))
            .flat_map(|p| {
                let table = steer_table(&p.network);
                p.ips.iter().flat_map(move |ip| {
                    steer_rules(*ip, table, p.steer.as_deref().unwrap_or_default())
                })
            })
            .collect();
        for r in rules {
            if let Err(e) = self.host.del_rule(&r) {
                tracing::warn!(rule = %r, error = %error_chain(&e), "cannot delete a steering rule");
            }
        }
    }

    /// Deletes steering rules left by a memifd that did not stop cleanly:
    /// every rule of ours whose table has no route to its address (see the
    /// module docs); call before restoring. Returns them.
    pub fn clean_stale_steering(&mut self) -> Vec<SteerRule> {
        match self.host.stale_isolated() {
            Ok(v) => {
                for t in v {
                    match self.host.unisolate(&t) {
                        Ok(()) => {
                            tracing::info!(device = %t, "deleted the isolation rules of a gone uplink")
                        }
                        Err(e) => {
                            tracing::warn!(device = %t, error = %error_chain(&e), "cannot delete stale isolation rules")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot look for stale isolation rules")
            }
        }
        let found = self.host.steer_rules().and_then(|rules| {
            Ok((
                rules.clone(),
                if rules.is_empty() {
                    Vec::new()
                } else {
                    self.host.host_routes()?
                },
            ))
        });
        let (rules, routes) = match found {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot look for stale steering rules");
                return Vec::new();
            }
        };
        let mut gone = Vec::new();
        for r in rules {
            if !routes.contains(&(r.table, r.ip)) {
                match self.host.del_rule(&r) {
                    Ok(()) => {
                        tracing::info!(rule = %r, "deleted a stale steering rule");
                        gone.push(r);
                    }
                    Err(e) => tracing::warn!(rule = %r, error = %error_chain(&e),
                        "cannot delete a stale steering rule"),
                }
            }
        }
        gone
    }

    /// Every network's uplink.
    pub fn views(&self) -> Vec<UplinkView> {
        let mut v: Vec<UplinkView> = self
            .nets
            .iter()
            .map(|(name, n)| UplinkView {
                network: name.clone(),
                device: n.tun.as_ref().map(|t| t.0.clone()),
                error: n.error.clone(),
                counters: n.counters.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.network.cmp(&b.network));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calico::ports::Proto;
    use crate::link::host::SharedRecording;

    #[test]
    fn names_are_short_stable_and_distinct() {
        let a = tun_name("blue");
        assert_eq!(a.len(), 15, "{a}");
        assert!(a.starts_with(NAME_PREFIX));
        assert_eq!(a, tun_name("blue"));
        assert_ne!(a, tun_name("red"));
        // A long name still gives 15 characters.
        assert_eq!(tun_name(&"x".repeat(300)).len(), 15);
        // FNV-1a 64 of "" is cbf29ce484222325: the first 7 hex digits.
        assert_eq!(tun_name(""), "memifup-cbf29ce");
    }

    #[test]
    fn steer_tables_follow_the_uplink_name() {
        let t = steer_table("blue");
        let hex = &tun_name("blue")[NAME_PREFIX.len()..NAME_PREFIX.len() + 4];
        assert_eq!(format!("{t:08x}"), format!("4d50{hex}"));
        assert_ne!(t, steer_table("red"));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn setup() -> (Uplinks, SharedRecording) {
        let rec = SharedRecording::default();
        (Uplinks::new(Box::new(rec.clone())), rec)
    }

    #[test]
    fn first_port_makes_the_uplink_and_the_last_takes_it() {
        let (mut u, rec) = setup();
        let a = u.add_port(
            AttachmentId(1),
            "blue",
            &[ip("10.0.0.2"), ip("fd00::2")],
            None,
        );
        assert!(a.error.is_none());
        let (tun, _) = a.new_uplink.expect("first port makes the uplink");
        let ifindex = tun.ifindex();
        let b = u.add_port(AttachmentId(2), "blue", &[ip("10.0.0.3")], None);
        assert!(b.new_uplink.is_none(), "one uplink per network");
        {
            let r = rec.lock().unwrap();
            let routes: Vec<_> = r
                .routes
                .iter()
                .map(|r| (r.ip, r.ifindex, r.table))
                .collect();
            assert_eq!(
                routes,
                vec![
                    (ip("10.0.0.2"), ifindex, 254),
                    (ip("10.0.0.3"), ifindex, 254),
                    (ip("fd00::2"), ifindex, 254)
                ]
            );
            assert_eq!(r.tuns, vec![(tun_name("blue"), ifindex)]);
            assert!(r.isolated.contains(&tun_name("blue")));
        }
        // Not the last: its own routes go.
        let r = u.remove_port(AttachmentId(1)).unwrap();
        assert!(!r.last);
        assert_eq!(rec.lock().unwrap().routes.len(), 1);
        // The last: the route goes with the device (not deleted one by one).
        let r = u.remove_port(AttachmentId(2)).unwrap();
        assert!(r.last);
        assert!(!rec
            .lock()
            .unwrap()
            .log
            .iter()
            .any(|l| l.starts_with("del route 10.0.0.3")));
        assert!(u.views().is_empty());
        assert!(rec.lock().unwrap().isolated.is_empty());
        assert!(
            u.remove_port(AttachmentId(2)).is_none(),
            "unknown ids are ignored"
        );
    }

    #[test]
    fn a_shared_address_keeps_its_route_until_its_last_holder_goes() {
        let (mut u, rec) = setup();
        u.add_port(AttachmentId(1), "blue", &[ip("10.0.0.2")], None);
        u.add_port(AttachmentId(2), "blue", &[ip("10.0.0.2")], None);
        u.add_port(AttachmentId(3), "blue", &[ip("10.0.0.9")], None);
        u.remove_port(AttachmentId(1));
        assert!(rec
            .lock()
            .unwrap()
            .routes
            .iter()
            .any(|r| r.ip == ip("10.0.0.2")));
        u.remove_port(AttachmentId(2));
        assert!(!rec
            .lock()
            .unwrap()
            .routes
            .iter()
            .any(|r| r.ip == ip("10.0.0.2")));
    }

    #[test]
    fn steered_ports_get_table_routes_and_rules_and_lose_them_in_order() {
        let (mut u, rec) = setup();
        let ranges = [
            PortRange {
                proto: Proto::Tcp,
                start: 4444,
                end: 5000,
            },
            PortRange {
                proto: Proto::Udp,
                start: 53,
                end: 53,
            },
        ];
        u.add_port(AttachmentId(7), "blue", &[ip("10.0.0.2")], None);
        u.add_port(AttachmentId(8), "blue", &[ip("10.0.0.5")], Some(&ranges));
        let table = steer_table("blue");
        {
            let r = rec.lock().unwrap();
            assert!(r
                .routes
                .iter()
                .any(|x| x.ip == ip("10.0.0.5") && x.table == table));
            assert!(!r
                .routes
                .iter()
                .any(|x| x.ip == ip("10.0.0.5") && x.table == 254));
            assert_eq!(r.rules.len(), 2);
            assert!(r
                .rules
                .iter()
                .all(|x| x.table == table && x.priority == STEER_PRIORITY));
            assert_eq!(r.rp_filter, vec![(tun_name("blue"), 2)]);
            // The route before the rules.
            let pos = |p: &str| r.log.iter().position(|l| l.starts_with(p)).unwrap();
            assert!(pos("add route 10.0.0.5") < pos("add rule"));
        }
        u.remove_port(AttachmentId(8));
        let r = rec.lock().unwrap();
        assert!(r.rules.is_empty());
        let pos = |p: &str| r.log.iter().rposition(|l| l.starts_with(p)).unwrap();
        assert!(pos("del rule") < pos("del route 10.0.0.5"));
    }

    #[test]
    fn stale_rules_are_those_without_a_route_and_shutdown_drops_ours() {
        let (mut u, rec) = setup();
        let ranges = [PortRange {
            proto: Proto::Udp,
            start: 1,
            end: 2,
        }];
        u.add_port(AttachmentId(1), "blue", &[ip("10.0.0.5")], Some(&ranges));
        // A crashed memifd's rule: its table has no route any more.
        let stale = SteerRule {
            ip: ip("10.0.0.99"),
            proto: 17,
            start: 1,
            end: 2,
            table: steer_table("blue"),
            priority: STEER_PRIORITY,
        };
        rec.lock().unwrap().rules.insert(stale);
        assert_eq!(u.clean_stale_steering(), vec![stale]);
        assert_eq!(rec.lock().unwrap().rules.len(), 1, "ours stays");
        u.remove_steering();
        assert!(rec.lock().unwrap().rules.is_empty());
    }

    #[test]
    fn a_missing_uplink_is_reported_and_made_by_a_later_port() {
        let (mut u, rec) = setup();
        rec.lock().unwrap().fail_tun.insert(tun_name("blue"));
        let a = u.add_port(AttachmentId(1), "blue", &[ip("10.0.0.2")], None);
        assert!(a.new_uplink.is_none());
        assert!(a.error.unwrap().contains("no uplink"));
        assert!(u.views()[0].error.is_some());
        rec.lock().unwrap().fail_tun.clear();
        let b = u.add_port(AttachmentId(2), "blue", &[ip("10.0.0.3")], None);
        assert!(b.new_uplink.is_some());
        // The first port's address got its route too.
        assert_eq!(rec.lock().unwrap().routes.len(), 2);
        assert!(u.views()[0].error.is_none());
    }
}

//! What the dataplane asks of the host's kernel, as a trait: the uplink
//! TUNs, the routes and rules that point pod addresses at them, and the
//! dumps that find what a crashed memifd left. [`KernelHost`] does it with
//! netlink; [`Recording`] only records it, so the decisions (which routes
//! and rules for which attach, detach, restart) are unit-tested without
//! root.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::fd::OwnedFd;

use super::route::{self, HostRoute, SteerRule};
use super::{sysctl, LinkError, LinkThread, Netlink, Tun};

/// The host kernel, as the dataplane's control side uses it. Calls block:
/// memifd makes them off its async workers.
pub trait HostNet: Send {
    /// Creates the TUN device `name`, up with `mtu`.
    fn create_tun(&mut self, name: &str, mtu: u32) -> Result<Tun, LinkError>;
    /// Sets `rp_filter` of device `dev`.
    fn set_rp_filter(&mut self, dev: &str, value: u8) -> Result<(), LinkError>;
    /// Adds (replaces) a host route.
    fn add_route(&mut self, r: &HostRoute) -> Result<(), LinkError>;
    /// Deletes a host route; one already gone is fine.
    fn del_route(&mut self, r: &HostRoute) -> Result<(), LinkError>;
    /// Adds a steering rule; an identical one is fine.
    fn add_rule(&mut self, r: &SteerRule) -> Result<(), LinkError>;
    /// Deletes a steering rule; one already gone is fine.
    fn del_rule(&mut self, r: &SteerRule) -> Result<(), LinkError>;
    /// Every rule marked as memifd's.
    fn steer_rules(&mut self) -> Result<Vec<SteerRule>, LinkError>;
    /// `(table, destination)` of every host route, every table.
    fn host_routes(&mut self) -> Result<Vec<(u32, IpAddr)>, LinkError>;
    /// Keeps what enters the host from uplink `tun` out of the other
    /// uplinks (see [`route::isolate`]).
    fn isolate(&mut self, tun: &str) -> Result<(), LinkError>;
    /// Undoes [`HostNet::isolate`].
    fn unisolate(&mut self, tun: &str) -> Result<(), LinkError>;
    /// Uplinks isolated by us whose device is gone.
    fn stale_isolated(&mut self) -> Result<Vec<String>, LinkError>;
}

/// The real host: netlink on a [`LinkThread`] in the namespace the
/// process started in, started on first use.
#[derive(Default)]
pub struct KernelHost {
    thread: Option<LinkThread>,
}

impl KernelHost {
    fn call<T, F>(&mut self, f: F) -> Result<T, LinkError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Netlink) -> Result<T, LinkError> + Send + 'static,
    {
        if self.thread.is_none() {
            self.thread = Some(LinkThread::open(None)?);
        }
        self.thread.as_ref().expect("just set").call(f)
    }
}

impl HostNet for KernelHost {
    fn create_tun(&mut self, name: &str, mtu: u32) -> Result<Tun, LinkError> {
        let name = name.to_string();
        self.call(move |nl| Tun::create(nl, &name, mtu))
    }
    fn set_rp_filter(&mut self, dev: &str, value: u8) -> Result<(), LinkError> {
        sysctl::set_rp_filter(dev, value)
    }
    fn add_route(&mut self, r: &HostRoute) -> Result<(), LinkError> {
        let r = *r;
        self.call(move |nl| route::add_route(nl, &r))
    }
    fn del_route(&mut self, r: &HostRoute) -> Result<(), LinkError> {
        let r = *r;
        self.call(move |nl| route::del_route(nl, &r))
    }
    fn add_rule(&mut self, r: &SteerRule) -> Result<(), LinkError> {
        let r = *r;
        self.call(move |nl| route::add_rule(nl, &r))
    }
    fn del_rule(&mut self, r: &SteerRule) -> Result<(), LinkError> {
        let r = *r;
        self.call(move |nl| route::del_rule(nl, &r))
    }
    fn steer_rules(&mut self) -> Result<Vec<SteerRule>, LinkError> {
        self.call(|nl| route::steer_rules(nl))
    }
    fn host_routes(&mut self) -> Result<Vec<(u32, IpAddr)>, LinkError> {
        self.call(|nl| route::host_routes(nl))
    }
    fn isolate(&mut self, tun: &str) -> Result<(), LinkError> {
        let tun = tun.to_string();
        self.call(move |nl| route::isolate(nl, &tun))
    }
    fn unisolate(&mut self, tun: &str) -> Result<(), LinkError> {
        let tun = tun.to_string();
        self.call(move |nl| route::unisolate(nl, &tun))
    }
    fn stale_isolated(&mut self) -> Result<Vec<String>, LinkError> {
        self.call(|nl| route::stale_isolated(nl))
    }
}

/// A host that only records: its routes, rules and devices are sets the
/// test reads back, `log` the calls in order. TUNs are one end of a
/// `SOCK_SEQPACKET` pair each; the other end is kept in `tun_peers`, so a
/// test can play the host's side of an uplink.
#[derive(Debug, Default)]
pub struct Recording {
    pub log: Vec<String>,
    pub routes: BTreeSet<HostRoute>,
    pub rules: BTreeSet<SteerRule>,
    pub tuns: Vec<(String, u32)>,
    pub tun_peers: Vec<(String, OwnedFd)>,
    pub rp_filter: Vec<(String, u8)>,
    /// Uplinks with isolation rules.
    pub isolated: BTreeSet<String>,
    /// Device names whose creation fails (to test a missing uplink).
    pub fail_tun: BTreeSet<String>,
    next_ifindex: u32,
}

impl HostNet for Recording {
    fn create_tun(&mut self, name: &str, mtu: u32) -> Result<Tun, LinkError> {
        self.log.push(format!("create tun {name} mtu {mtu}"));
        if self.fail_tun.contains(name) {
            return Err(LinkError::Other(format!("{name}: refused by the test")));
        }
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(|e| LinkError::Other(format!("socketpair: {e}")))?;
        self.next_ifindex += 1;
        let ifindex = 1000 + self.next_ifindex;
        self.tuns.push((name.to_string(), ifindex));
        self.tun_peers.push((name.to_string(), b));
        Ok(Tun::from_fd(a, name, ifindex))
    }
    fn set_rp_filter(&mut self, dev: &str, value: u8) -> Result<(), LinkError> {
        self.log.push(format!("rp_filter {dev} {value}"));
        self.rp_filter.push((dev.to_string(), value));
        Ok(())
    }
    fn add_route(&mut self, r: &HostRoute) -> Result<(), LinkError> {
        self.log.push(format!("add route {r}"));
        self.routes
            .retain(|o| !(o.ip == r.ip && o.table == r.table));
        self.routes.insert(*r);
        Ok(())
    }
    fn del_route(&mut self, r: &HostRoute) -> Result<(), LinkError> {
        self.log.push(format!("del route {r}"));
        self.routes.remove(r);
        Ok(())
    }
    fn add_rule(&mut self, r: &SteerRule) -> Result<(), LinkError> {
        self.log.push(format!("add rule {r}"));
        self.rules.insert(*r);
        Ok(())
    }
    fn del_rule(&mut self, r: &SteerRule) -> Result<(), LinkError> {
        self.log.push(format!("del rule {r}"));
        self.rules.remove(r);
        Ok(())
    }
    fn steer_rules(&mut self) -> Result<Vec<SteerRule>, LinkError> {
        Ok(self.rules.iter().copied().collect())
    }
    fn host_routes(&mut self) -> Result<Vec<(u32, IpAddr)>, LinkError> {
        Ok(self.routes.iter().map(|r| (r.table, r.ip)).collect())
    }
    fn isolate(&mut self, tun: &str) -> Result<(), LinkError> {
        self.log.push(format!("isolate {tun}"));
        self.isolated.insert(tun.to_string());
        Ok(())
    }
    fn unisolate(&mut self, tun: &str) -> Result<(), LinkError> {
        self.log.push(format!("unisolate {tun}"));
        self.isolated.remove(tun);
        Ok(())
    }
    fn stale_isolated(&mut self) -> Result<Vec<String>, LinkError> {
        let live: BTreeSet<&String> = self.tuns.iter().map(|t| &t.0).collect();
        Ok(self
            .isolated
            .iter()
            .filter(|t| !live.contains(t))
            .cloned()
            .collect())
    }
}

/// A shared recording: the dataplane owns one handle, the test reads the
/// other.
pub type SharedRecording = std::sync::Arc<std::sync::Mutex<Recording>>;

impl HostNet for SharedRecording {
    fn create_tun(&mut self, name: &str, mtu: u32) -> Result<Tun, LinkError> {
        lock(self).create_tun(name, mtu)
    }
    fn set_rp_filter(&mut self, dev: &str, value: u8) -> Result<(), LinkError> {
        lock(self).set_rp_filter(dev, value)
    }
    fn add_route(&mut self, r: &HostRoute) -> Result<(), LinkError> {
        lock(self).add_route(r)
    }
    fn del_route(&mut self, r: &HostRoute) -> Result<(), LinkError> {
        lock(self).del_route(r)
    }
    fn add_rule(&mut self, r: &SteerRule) -> Result<(), LinkError> {
        lock(self).add_rule(r)
    }
    fn del_rule(&mut self, r: &SteerRule) -> Result<(), LinkError> {
        lock(self).del_rule(r)
    }
    fn steer_rules(&mut self) -> Result<Vec<SteerRule>, LinkError> {
        lock(self).steer_rules()
    }
    fn host_routes(&mut self) -> Result<Vec<(u32, IpAddr)>, LinkError> {
        lock(self).host_routes()
    }
    fn isolate(&mut self, tun: &str) -> Result<(), LinkError> {
        lock(self).isolate(tun)
    }
    fn unisolate(&mut self, tun: &str) -> Result<(), LinkError> {
        lock(self).unisolate(tun)
    }
    fn stale_isolated(&mut self) -> Result<Vec<String>, LinkError> {
        lock(self).stale_isolated()
    }
}

fn lock(r: &SharedRecording) -> std::sync::MutexGuard<'_, Recording> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

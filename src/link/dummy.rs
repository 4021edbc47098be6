//! The pod's dummy interface, inside the pod's netns: created with its
//! /32 and /128 addresses and device routes, inspected (CHECK), deleted.
//! The IPv6 sysctls it needs are set on the way.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkDummy, LinkUnspec, RouteMessageBuilder};

use super::{errno, nl, sysctl, LinkError, Netlink};
use crate::mac::Mac;

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct DummySpec {
    pub name: String,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
    /// Each becomes a /32 or /128.
    pub addrs: Vec<IpAddr>,
    /// Device routes (no gateway) through the dummy.
    pub routes: Vec<IpNetwork>,
}

/// A link as found in the netns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    /// `dummy`, `veth`, ...; `None` for kinds without link info (`lo`).
    pub kind: Option<String>,
    pub mac: Mac,
    pub mtu: u32,
    pub up: bool,
    pub addrs: Vec<IpNetwork>,
}

async fn get(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, LinkError> {
    let mut s = handle.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == nix::libc::ENODEV => Ok(None),
        Err(e) => Err(nl(format!("get link {name}"))(e)),
    }
}

async fn state(handle: &Handle, msg: LinkMessage) -> Result<LinkState, LinkError> {
    let mut st = LinkState {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        mac: Mac::ZERO,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        addrs: Vec::new(),
    };
    for a in msg.attributes {
        match a {
            LinkAttribute::IfName(n) => st.name = n,
            LinkAttribute::Mtu(m) => st.mtu = m,
            LinkAttribute::Address(b) => st.mac = Mac::from_slice(&b).unwrap_or_default(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        st.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let mut addrs = handle
        .address()
        .get()
        .set_link_index_filter(st.index)
        .execute();
    while let Some(m) = addrs.try_next().await.map_err(nl("get addresses"))? {
        let len = m.header.prefix_len;
        for a in m.attributes {
            if let AddressAttribute::Address(ip) = a {
                if let Ok(n) = IpNetwork::new(ip, len) {
                    // Link-local IPv6 addresses are the kernel's, not ours.
                    if !matches!(n, IpNetwork::V6(v6) if v6.ip().segments()[0] & 0xffc0 == 0xfe80) {
                        st.addrs.push(n);
                    }
                }
            }
        }
    }
    Ok(st)
}

/// The link named `name`, if any.
pub fn inspect(link: &Netlink, name: &str) -> Result<Option<LinkState>, LinkError> {
    link.run("inspect", |h| async move {
        match get(&h, name).await? {
            None => Ok(None),
            Some(m) => state(&h, m).await.map(Some),
        }
    })
}

/// Creates the dummy with its addresses and routes, up. On any failure the
/// link is deleted again before the error is returned.
pub fn create_dummy(link: &Netlink, spec: &DummySpec) -> Result<LinkState, LinkError> {
    link.run("create dummy", |h| async move {
        if get(&h, &spec.name).await?.is_some() {
            return Err(LinkError::Exists(spec.name.clone()));
        }
        let mut b = LinkDummy::new(&spec.name);
        if let Some(mac) = spec.mac {
            b = b.append_extra_attribute(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(mtu) = spec.mtu {
            b = b.append_extra_attribute(LinkAttribute::Mtu(mtu));
        }
        if let Err(e) = h.link().add(b.build()).execute().await {
            return Err(match errno(&e) {
                nix::libc::EOPNOTSUPP => LinkError::NoDummy,
                nix::libc::EEXIST => LinkError::Exists(spec.name.clone()),
                _ => nl(format!("create dummy {}", spec.name))(e),
            });
        }
        let r = configure(&h, spec).await;
        match r {
            Ok(st) => Ok(st),
            Err(e) => {
                if let Ok(Some(m)) = get(&h, &spec.name).await {
                    let _ = h.link().del(m.header.index).execute().await;
                }
                Err(e)
            }
        }
    })
}

async fn configure(h: &Handle, spec: &DummySpec) -> Result<LinkState, LinkError> {
    let msg = get(h, &spec.name)
        .await?
        .ok_or_else(|| LinkError::Other(format!("{} vanished after creation", spec.name)))?;
    let index = msg.header.index;
    if spec.addrs.iter().any(IpAddr::is_ipv6) {
        for scope in ["all", "default", "lo", spec.name.as_str()] {
            sysctl::write(&format!("net/ipv6/conf/{scope}/disable_ipv6"), "0")?;
        }
        // Keep the /128 when the pod sets the link down and up again (the
        // kernel drops IPv6 addresses on down otherwise).
        sysctl::write(
            &format!("net/ipv6/conf/{}/keep_addr_on_down", spec.name),
            "1",
        )?;
    }
    for ip in &spec.addrs {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        let mut req = h.address().add(index, *ip, len);
        if ip.is_ipv6() {
            // No duplicate address detection: the address is the pod's
            // alone and must be usable at once.
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute()
            .await
            .map_err(nl(format!("add address {ip}/{len} to {}", spec.name)))?;
    }
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {} up", spec.name)))?;
    for r in &spec.routes {
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(r.network(), r.prefix())
            .map_err(|e| LinkError::Other(format!("route {r}: {e}")))?
            .output_interface(index)
            .scope(if r.is_ipv4() {
                RouteScope::Link
            } else {
                RouteScope::Universe
            })
            .build();
        match h.route().add(msg).execute().await {
            Ok(()) => {}
            // The same route twice (e.g. two IPs in one range) is one route.
            Err(e) if errno(&e) == nix::libc::EEXIST => {}
            Err(e) => return Err(nl(format!("add route {r} dev {}", spec.name))(e)),
        }
    }
    let msg = get(h, &spec.name)
        .await?
        .ok_or_else(|| LinkError::Other(format!("{} vanished", spec.name)))?;
    state(h, msg).await
}

/// Deletes the link `name` if it exists and is a dummy. Returns whether it
/// deleted one; a link of another kind is left alone (and reported).
pub fn delete_dummy(link: &Netlink, name: &str) -> Result<bool, LinkError> {
    link.run("delete dummy", |h| async move {
        let Some(m) = get(&h, name).await? else {
            return Ok(false);
        };
        let is_dummy = m.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(i) if i.iter().any(|x| matches!(x, LinkInfo::Kind(InfoKind::Dummy))))
        });
        if !is_dummy {
            return Err(LinkError::Other(format!(
                "{name} in the pod netns is not a dummy interface; left alone"
            )));
        }
        match h.link().del(m.header.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == nix::libc::ENODEV => Ok(false),
            Err(e) => Err(nl(format!("delete {name}"))(e)),
        }
    })
}

//! PBL mode (`"pbl": true` in the network config): CalicoVPP's second way
//! to give a pod a memif. memif-cni is chained in the cluster network's
//! conflist after the primary plugin (e.g. `[bridge, memif-cni]`);
//! `CNI_IFNAME` is the primary interface (eth0).
//!
//! - A pod without `cni.projectcalico.org/vppExtraMemifPorts` gets
//!   `prevResult` back unchanged. Cost: one memifd connection with two
//!   requests (status, pod annotations); no attach, no netlink. Without
//!   `K8S_POD_NAMESPACE`/`K8S_POD_NAME` in `CNI_ARGS` memifd is not asked
//!   at all.
//! - An annotated pod gets a memif server `@vpp/memif-<ifname>` in its
//!   netns, spec from `cni.projectcalico.org/vppExtraMemifSpec` over the
//!   network's `interfaceSpec`, sharing the primary interface's addresses
//!   from `prevResult`; no dummy, no IPAM. memifd steers traffic to those
//!   addresses whose protocol and destination port match the annotation
//!   to the memif (policy routing, see `dataplane::uplink`). The result is
//!   `prevResult` plus the memif's interface entry (`memif-<ifname>`, with
//!   `socketPath`); the device-info file is written when asked for.
//! - memifd unreachable on ADD: code 11 (try again); the pod cannot be
//!   told apart from one that asked for a memif without memifd. memifd
//!   without Kubernetes access: nothing can ask, so `prevResult` passes
//!   through (logged).

use std::net::IpAddr;

use super::error::{code, invalid_config, CniError};
use super::plugin::{log, memifd_error, write_device_info, Plugin};
use super::types::{CniResult, Interface};
use crate::api::{AttachRequest, ClientError, ErrorCode};
use crate::calico::interfaces::{self, SpecEntry};
use crate::calico::ports::{self, EXTRA_MEMIF_PORTS_ANNOTATION, EXTRA_MEMIF_SPEC_ANNOTATION};

/// The listener of a PBL memif: `@vpp/memif-<ifname>`, as CalicoVPP.
pub fn socket_name(ifname: &str) -> String {
    format!("@vpp/memif-{ifname}")
}

/// The result's name for a PBL memif (no kernel link has it).
pub fn interface_name(ifname: &str) -> String {
    format!("memif-{ifname}")
}

impl Plugin<'_> {
    fn prev(&self) -> Result<CniResult, CniError> {
        let prev = self.conf.prev_result.as_ref().ok_or_else(|| {
            invalid_config(
                "pbl mode chains memif-cni after the pod's primary plugin (e.g. [bridge, memif-cni]); there is no prevResult",
            )
        })?;
        CniResult::from_value(prev, "prevResult")
    }

    fn passthrough(&self, res: &CniResult) -> String {
        res.to_version(&self.conf.cni_version, self.version)
            .to_string()
    }

    /// ADD in PBL mode.
    pub(super) fn add_pbl(&self) -> Result<String, CniError> {
        if self.conf.ipam.is_some() {
            return Err(invalid_config(
                "pbl mode takes the primary interface's addresses from prevResult; remove \"ipam\" from memif-cni's entry",
            ));
        }
        let mut res = self.prev()?;
        let Some(pod) = self.env.pod() else {
            log(format!(
                "ADD {}/{} (pbl): no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS; prevResult passed through",
                self.env.container_id, self.env.ifname
            ));
            return Ok(self.passthrough(&res));
        };
        let mut c = self.client().map_err(|e| memifd_error("status", e))?;
        let st = c.status().map_err(|e| memifd_error("status", e))?;
        if !st.kube {
            log(format!(
                "ADD {}/{} (pbl): memifd has no Kubernetes API access, pod {}/{} annotations not read; prevResult passed through",
                self.env.container_id, self.env.ifname, pod.namespace, pod.name
            ));
            return Ok(self.passthrough(&res));
        }
        let ann = c
            .pod_annotations(pod.clone())
            .map_err(|e| memifd_error("pod annotations", e))?;
        let Some(text) = ann.get(EXTRA_MEMIF_PORTS_ANNOTATION) else {
            if ann.contains_key(EXTRA_MEMIF_SPEC_ANNOTATION) {
                tracing::warn!(
                    "pod {}/{} has {EXTRA_MEMIF_SPEC_ANNOTATION} but no {EXTRA_MEMIF_PORTS_ANNOTATION}: no memif",
                    pod.namespace,
                    pod.name
                );
            }
            return Ok(self.passthrough(&res));
        };
        let ranges = ports::parse(text).map_err(|e| {
            invalid_config(format!(
                "pod {}/{} annotation {EXTRA_MEMIF_PORTS_ANNOTATION}={text:?}: {e}",
                pod.namespace, pod.name
            ))
        })?;
        if !st.memif_enabled {
            return Err(CniError::new(
                code::MEMIF_DISABLED,
                format!(
                    "pod {}/{} asks for a memif ({EXTRA_MEMIF_PORTS_ANNOTATION}) but memif is disabled on this node (feature gate memifEnabled is false): enable memif in memifd's config",
                    pod.namespace, pod.name
                ),
            ));
        }
        let mut layers = Vec::new();
        if let Some(t) = ann.get(EXTRA_MEMIF_SPEC_ANNOTATION) {
            let source = format!("annotation {EXTRA_MEMIF_SPEC_ANNOTATION}");
            let v: serde_json::Value = serde_json::from_str(t)
                .map_err(|e| invalid_config(format!("{source} is not JSON: {e}")))?;
            layers.push(SpecEntry::from_value(&v, &source)?);
        }
        if let Some(e) = self.conf.default_spec()? {
            layers.push(e);
        }
        let refs: Vec<&SpecEntry> = layers.iter().collect();
        let spec = interfaces::resolve(&refs, &st.max_spec)?;

        let netns = self.netns()?.to_path_buf();
        let ifname = &self.env.ifname;
        let ips = primary_ips(&res, ifname);
        if ips.is_empty() {
            return Err(invalid_config(format!(
                "pbl mode: prevResult has no address on {ifname} to share with the memif"
            )));
        }
        let socket = socket_name(ifname);
        let req = AttachRequest {
            key: self.key(),
            network: self.conf.name.clone(),
            netns: netns.clone(),
            socket: Some(socket.clone()),
            spec: crate::api::MemifSpec::from_resolved(&spec),
            ips: ips.clone(),
            pod: Some(pod),
            steer: Some(ranges.clone()),
            vni: None,
        };
        let info = c.attach(req).map_err(|e| memifd_error("attach", e))?;
        if let Some(path) = &self.conf.runtime_config.device_info_file {
            if let Err(e) = write_device_info(path, &socket, spec.mode()) {
                if let Err(d) = c.detach(self.key()) {
                    tracing::warn!("rollback: memifd detach failed: {d}");
                }
                return Err(e);
            }
        }
        res.interfaces.push(Interface {
            name: interface_name(ifname),
            sandbox: Some(netns.display().to_string()),
            socket_path: Some(socket.clone()),
            ..Interface::default()
        });
        log(format!(
            "ADD {}/{} network {} (pbl): memif {} socket id {} mode {} rx {} tx {} sharing {} steering {}",
            self.env.container_id,
            ifname,
            self.conf.name,
            socket,
            info.socket_id,
            spec.mode(),
            spec.rx,
            spec.tx,
            ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","),
            ranges
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ));
        Ok(self.passthrough(&res))
    }

    /// DEL in PBL mode: memifd detach (unknown = nothing was made), the
    /// device-info file. The primary plugin owns the rest.
    pub(super) fn del_pbl(&self) -> Result<(), CniError> {
        match self.client().and_then(|mut c| c.detach(self.key())) {
            Ok(true) => log(format!(
                "DEL {}/{} (pbl): memif removed",
                self.env.container_id, self.env.ifname
            )),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                "DEL {}/{} (pbl): memifd detach failed ({}); memifd drops it when the netns is gone on its next start, or on GC",
                self.env.container_id,
                self.env.ifname,
                crate::logging::error_chain(&e)
            ),
        }
        if let Some(path) = &self.conf.runtime_config.device_info_file {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// CHECK in PBL mode: when ADD added a memif (it is in prevResult),
    /// memifd must still serve it in this netns.
    pub(super) fn check_pbl(&self) -> Result<(), CniError> {
        let netns = self.netns()?;
        let prev = self.prev()?;
        let socket = socket_name(&self.env.ifname);
        if !prev
            .interfaces
            .iter()
            .any(|i| i.socket_path.as_deref() == Some(&socket))
        {
            return Ok(());
        }
        let mismatch = |m: String| CniError::new(code::CHECK_MISMATCH, m);
        let mut c = self.client().map_err(|e| memifd_error("get", e))?;
        let a = c.get(self.key()).map_err(|e| match e {
            ClientError::Api(a) if a.code == ErrorCode::NotFound => mismatch(format!(
                "memifd has no PBL memif for {}/{}",
                self.env.container_id, self.env.ifname
            )),
            e => memifd_error("get", e),
        })?;
        if a.request.netns != netns || a.request.steer.is_none() {
            return Err(mismatch(format!(
                "memifd's attachment {}/{} is not this pod's PBL memif",
                self.env.container_id, self.env.ifname
            )));
        }
        Ok(())
    }
}

/// The addresses `prevResult` gives interface `ifname` (in a sandbox), or
/// that name no interface.
fn primary_ips(res: &CniResult, ifname: &str) -> Vec<IpAddr> {
    let idx = res
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some());
    res.ips
        .iter()
        .filter(|ip| ip.interface.is_none() || ip.interface == idx)
        .map(|ip| ip.address.ip())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn primary_ips_are_those_of_the_sandbox_interface() {
        let r = CniResult::from_value(
            &json!({"cniVersion": "1.0.0",
                "interfaces": [{"name": "cni0", "mac": "02:00:00:00:00:01"},
                               {"name": "veth1", "mac": "02:00:00:00:00:02"},
                               {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/run/netns/p"}],
                "ips": [{"address": "10.5.0.7/24", "gateway": "10.5.0.1", "interface": 2},
                        {"address": "10.6.0.1/24", "interface": 0},
                        {"address": "fd00::7/64"}]}),
            "prevResult",
        )
        .unwrap();
        let ips = primary_ips(&r, "eth0");
        assert_eq!(
            ips,
            vec![
                "10.5.0.7".parse::<IpAddr>().unwrap(),
                "fd00::7".parse().unwrap()
            ]
        );
        assert_eq!(socket_name("eth0"), "@vpp/memif-eth0");
    }
}

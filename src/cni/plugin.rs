//! The verbs: ADD, DEL, CHECK, STATUS, GC, VERSION.
//!
//! ADD does, in order: validate, ask memifd for the gate, the node maximum
//! and the pod's annotations, resolve the spec, get IPs (prevResult, IPAM or
//! the `ips` capability), create the dummy, attach the memif, write the
//! device-info file. A failure at any step undoes the steps before it.
//! With `"pbl": true` the verbs ADD, DEL and CHECK are those of
//! [`super::pbl`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde_json::Value;

use super::env::Env;
use super::error::{code, invalid_config, CniError};
use super::ipam::Ipam;
use super::types::{CniResult, Interface, IpConfig, NetConf};
use super::version::{self, Version};
use crate::api::{
    AttachRequest, AttachmentKey, Client, ClientError, ErrorCode, StatusInfo, DEFAULT_SOCKET,
};
use crate::calico::interfaces::{self, SpecEntry, INTERFACES_SPEC_ANNOTATION};
use crate::link::{dummy, DummySpec, LinkError, LinkThread};
use crate::logging::error_chain;
use crate::mac::Mac;

/// Default memifd API timeout.
const MEMIFD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the plugin prints and how it exits.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub exit: i32,
}

/// One invocation: the environment and stdin; returns what to print.
pub fn run(env: Result<Env, CniError>, stdin: &[u8]) -> Outcome {
    // The version errors are answered in: the config's if readable.
    let conf_version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .filter(|v| version::SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| version::SUPPORTED.last().unwrap().to_string());
    let fail = |e: CniError| Outcome {
        stdout: e.to_json(&conf_version),
        stderr: String::new(),
        exit: 1,
    };
    let env = match env {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    match env.command.as_str() {
        "" => {
            return Outcome {
                stdout: String::new(),
                stderr: version::about(),
                exit: 0,
            }
        }
        "VERSION" => {
            return Outcome {
                stdout: version::version_info(&conf_version),
                stderr: String::new(),
                exit: 0,
            }
        }
        _ => {}
    }
    match dispatch(&env, stdin) {
        Ok(stdout) => Outcome {
            stdout,
            stderr: String::new(),
            exit: 0,
        },
        Err(e) => fail(e),
    }
}

fn dispatch(env: &Env, stdin: &[u8]) -> Result<String, CniError> {
    let conf = NetConf::parse(stdin)?;
    let v = version::check(&conf.cni_version)?;
    version::require(&env.command, v, &conf.cni_version)?;
    if conf.name.is_empty() {
        return Err(invalid_config("network config has no \"name\""));
    }
    let p = Plugin {
        env,
        conf: &conf,
        stdin,
        version: v,
        pod_link: std::cell::OnceCell::new(),
    };
    match env.command.as_str() {
        "ADD" => p.add(),
        "DEL" => p.del().map(|()| String::new()),
        "CHECK" => p.check().map(|()| String::new()),
        "STATUS" => p.status().map(|()| String::new()),
        "GC" => p.gc().map(|()| String::new()),
        other => Err(super::error::invalid_env(format!(
            "CNI_COMMAND={other:?} is not supported"
        ))),
    }
}

pub(super) struct Plugin<'a> {
    pub(super) env: &'a Env,
    pub(super) conf: &'a NetConf,
    pub(super) stdin: &'a [u8],
    pub(super) version: Version,
    /// The one netlink connection in the pod's netns, opened on first use.
    pub(super) pod_link: std::cell::OnceCell<LinkThread>,
}

/// What ADD has done so far, undone in reverse on failure.
#[derive(Default)]
struct Undo {
    ipam: Option<Ipam>,
    dummy: Option<PathBuf>,
    attached: bool,
}

pub(super) fn memifd_error(what: &str, e: ClientError) -> CniError {
    match e {
        ClientError::Connect { .. } => CniError::new(
            code::TRY_AGAIN,
            format!(
                "memifd is not reachable ({what}): is the memifd DaemonSet running on this node?"
            ),
        )
        .with_details(error_chain(&e)),
        ClientError::Api(a) => {
            let c = match a.code {
                ErrorCode::InvalidSpec | ErrorCode::BadRequest => code::INVALID_CONFIG,
                ErrorCode::Disabled => code::MEMIF_DISABLED,
                ErrorCode::Netns => code::UNKNOWN_CONTAINER,
                ErrorCode::Version => code::INCOMPATIBLE_VERSION,
                _ => code::MEMIFD,
            };
            CniError::new(c, format!("memifd {what}: {}", a.message))
        }
        other => CniError::new(
            code::MEMIFD,
            format!("memifd {what}: {}", error_chain(&other)),
        ),
    }
}

fn link_error(e: LinkError) -> CniError {
    let c = match &e {
        LinkError::NoDummy => code::NO_DUMMY,
        LinkError::Exists(_) => code::IFACE_EXISTS,
        LinkError::Netns(_) => code::UNKNOWN_CONTAINER,
        _ => code::NETLINK,
    };
    CniError::new(c, error_chain(&e))
}

pub(super) fn log(msg: impl AsRef<str>) {
    tracing::info!("{}", msg.as_ref());
}

impl Plugin<'_> {
    pub(super) fn key(&self) -> AttachmentKey {
        AttachmentKey {
            container_id: self.env.container_id.clone(),
            ifname: self.env.ifname.clone(),
        }
    }

    pub(super) fn client(&self) -> Result<Client, ClientError> {
        let path = self
            .conf
            .memifd_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        let t = self
            .conf
            .memifd_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(MEMIFD_TIMEOUT);
        Client::connect(&path, t)
    }

    fn ipam(&self) -> Result<Option<Ipam>, CniError> {
        match &self.conf.ipam {
            None => Ok(None),
            Some(m) => {
                let t = m.get("type").and_then(Value::as_str).unwrap_or("");
                if t.is_empty() {
                    return Err(invalid_config("ipam has no \"type\""));
                }
                Ipam::find(t, &self.env.path).map(Some)
            }
        }
    }

    /// Runs `f` with netlink inside the pod's netns `netns` (one thread
    /// and socket there for the whole process).
    fn in_netns<T: Send + 'static>(
        &self,
        netns: &Path,
        f: impl FnOnce(&crate::link::Netlink) -> Result<T, LinkError> + Send + 'static,
    ) -> Result<T, LinkError> {
        if self.pod_link.get().is_none() {
            let l = LinkThread::open(Some(netns))?;
            let _ = self.pod_link.set(l);
        }
        let l = self.pod_link.get().expect("just set");
        debug_assert_eq!(l.netns(), Some(netns));
        l.call(move |nl| f(nl))
    }

    pub(super) fn netns(&self) -> Result<&Path, CniError> {
        let p = self
            .env
            .netns
            .as_deref()
            .expect("checked for ADD and CHECK");
        if !p.exists() {
            return Err(CniError::new(
                code::UNKNOWN_CONTAINER,
                format!(
                    "CNI_NETNS {} does not exist (the pod's network namespace is gone)",
                    p.display()
                ),
            ));
        }
        Ok(p)
    }

    fn check_name(&self) -> Result<(), CniError> {
        let prefix = self.conf.prefix();
        if !self.env.ifname.starts_with(prefix) {
            return Err(invalid_config(format!(
                "memif-cni serves interface names starting with {prefix:?}; CNI_IFNAME={:?} is not one (name the interface e.g. {prefix}-eth1 in the pod's networks annotation, or set ifnamePrefix)",
                self.env.ifname
            )));
        }
        Ok(())
    }

    /// The spec layers this request carries itself, highest first:
    /// args.cni, then the network config (checked before memifd is asked
    /// anything, so a config error is reported as such).
    fn local_spec_layers(&self) -> Result<Vec<SpecEntry>, CniError> {
        let mut layers = Vec::new();
        if let Some(m) = self.conf.cni_args() {
            layers.push(SpecEntry::from_cni_args(m)?);
        }
        if let Some(e) = self.conf.default_spec()? {
            layers.push(e);
        }
        Ok(layers)
    }

    /// The spec layers, highest first: the pod annotation, then `local`
    /// ([`Plugin::local_spec_layers`]).
    fn spec_layers(
        &self,
        c: &mut Client,
        st: &StatusInfo,
        local: Vec<SpecEntry>,
    ) -> Result<Vec<SpecEntry>, CniError> {
        let mut layers = Vec::new();
        if let Some(pod) = self.env.pod() {
            if st.kube {
                let ann = c
                    .pod_annotations(pod.clone())
                    .map_err(|e| memifd_error("pod annotations", e))?;
                if let Some(text) = ann.get(INTERFACES_SPEC_ANNOTATION) {
                    if let Some(e) = interfaces::from_annotation(text, &self.env.ifname)? {
                        layers.push(e);
                    }
                }
            } else {
                log(format!(
                    "memifd has no Kubernetes API access: pod {}/{} annotations not read",
                    pod.namespace, pod.name
                ));
            }
        }
        layers.extend(local);
        Ok(layers)
    }

    /// The network's `vni`, when set, within VXLAN's 24 bits.
    fn check_vni(&self) -> Result<(), CniError> {
        match self.conf.vni {
            Some(v) if v == 0 || v > crate::packet::vxlan::MAX_VNI => {
                Err(invalid_config(format!("vni {v} must be 1..=16777215")))
            }
            _ => Ok(()),
        }
    }

    /// The IP configuration: prevResult (chained), IPAM, or the `ips`
    /// capability.
    fn ips(&self, undo: &mut Undo) -> Result<CniResult, CniError> {
        if let Some(prev) = &self.conf.prev_result {
            return CniResult::from_value(prev, "prevResult");
        }
        if let Some(ipam) = self.ipam()? {
            let r = ipam.add(&ipam.adapt(self.stdin, &self.conf.cni_version))?;
            undo.ipam = Some(ipam);
            return Ok(r);
        }
        let mut r = CniResult::default();
        for s in &self.conf.runtime_config.ips {
            let address: IpNetwork = s.parse().map_err(|e| {
                invalid_config(format!(
                    "runtimeConfig.ips entry {s:?} is not an address: {e}"
                ))
            })?;
            r.ips.push(IpConfig {
                address,
                gateway: None,
                interface: None,
                extra: Default::default(),
            });
        }
        Ok(r)
    }

    fn add(&self) -> Result<String, CniError> {
        if self.conf.pbl {
            return self.add_pbl();
        }
        self.check_name()?;
        let netns = self.netns()?.to_path_buf();
        let mac = match &self.conf.runtime_config.mac {
            None => None,
            Some(m) => Some(m.parse::<Mac>().map_err(|_| {
                invalid_config(format!(
                    "runtimeConfig.mac {m:?} is not of the form aa:bb:cc:dd:ee:ff"
                ))
            })?),
        };
        self.check_vni()?;
        let local = self.local_spec_layers()?;
        let mut c = self.client().map_err(|e| memifd_error("status", e))?;
        let st = c.status().map_err(|e| memifd_error("status", e))?;
        if !st.memif_enabled {
            return Err(CniError::new(
                code::MEMIF_DISABLED,
                "memif is disabled on this node (feature gate memifEnabled is false): enable memif in memifd's config for memif interfaces",
            ));
        }
        let layers = self.spec_layers(&mut c, &st, local)?;
        let refs: Vec<&SpecEntry> = layers.iter().collect();
        let spec = interfaces::resolve(&refs, &st.max_spec)?;

        let mut undo = Undo::default();
        let pod_mtu = st.cross_node.as_ref().map(|x| x.pod_mtu);
        let r = self.add_steps(&mut c, &netns, mac, spec, pod_mtu, &mut undo);
        if r.is_err() {
            self.rollback(&mut c, undo);
        }
        r
    }

    fn add_steps(
        &self,
        c: &mut Client,
        netns: &Path,
        mac: Option<Mac>,
        spec: interfaces::Resolved,
        pod_mtu: Option<u32>,
        undo: &mut Undo,
    ) -> Result<String, CniError> {
        let mut res = self.ips(undo)?;
        // The network's, else what the underlay carries to other nodes.
        let mtu = self.conf.mtu.or(pod_mtu);
        let addrs: Vec<IpAddr> = res.ips.iter().map(|i| i.address.ip()).collect();
        // Device routes: the result's routes and each address's network.
        let mut routes: Vec<IpNetwork> = res.routes.iter().map(|r| r.dst).collect();
        for ip in &res.ips {
            let full = if ip.address.is_ipv4() { 32 } else { 128 };
            if ip.address.prefix() < full {
                let net = IpNetwork::new(ip.address.network(), ip.address.prefix())
                    .expect("a network of a valid prefix");
                if !routes.contains(&net) {
                    routes.push(net);
                }
            }
        }
        let dummy = DummySpec {
            name: self.env.ifname.clone(),
            mac,
            mtu,
            addrs: addrs.clone(),
            routes,
        };
        let made = self
            .in_netns(netns, move |nl| dummy::create_dummy(nl, &dummy))
            .map_err(link_error)?;
        undo.dummy = Some(netns.to_path_buf());

        let req = AttachRequest {
            key: self.key(),
            network: self.conf.name.clone(),
            netns: netns.to_path_buf(),
            socket: None,
            spec: crate::api::MemifSpec::from_resolved(&spec),
            ips: addrs,
            pod: self.env.pod(),
            steer: None,
            vni: self.conf.vni,
        };
        let socket = req.socket_name();
        let info = c.attach(req).map_err(|e| memifd_error("attach", e))?;
        undo.attached = true;

        if let Some(path) = &self.conf.runtime_config.device_info_file {
            write_device_info(path, &socket, spec.mode())?;
        }

        // The result: prevResult's interfaces, then ours.
        let idx = res.interfaces.len();
        res.interfaces.push(Interface {
            name: made.name.clone(),
            mac: Some(made.mac.to_string()),
            mtu: Some(made.mtu),
            sandbox: Some(netns.display().to_string()),
            socket_path: Some(socket.clone()),
            ..Interface::default()
        });
        // The addresses as the dummy holds them: unnumbered /32 and /128.
        for ip in &mut res.ips {
            let host = if ip.address.is_ipv4() { 32 } else { 128 };
            ip.address = IpNetwork::new(ip.address.ip(), host).expect("host prefix");
            ip.interface = Some(idx);
        }
        if res.dns.is_none() {
            res.dns = self.conf.dns.clone();
        }
        log(format!(
            "ADD {}/{} network {}: dummy {} (mac {}, {} addresses) in {}, memif {} socket id {} mode {} rx {} tx {} rxqsz {} txqsz {} rx-mode {}",
            self.env.container_id,
            self.env.ifname,
            self.conf.name,
            made.name,
            made.mac,
            made.addrs.len(),
            netns.display(),
            socket,
            info.socket_id,
            spec.mode(),
            spec.rx,
            spec.tx,
            spec.rxqsz,
            spec.txqsz,
            spec.rx_mode
        ));
        Ok(res
            .to_version(&self.conf.cni_version, self.version)
            .to_string())
    }

    fn rollback(&self, c: &mut Client, undo: Undo) {
        if undo.attached {
            if let Err(e) = c.detach(self.key()) {
                tracing::warn!("rollback: memifd detach failed: {}", error_chain(&e));
            }
        }
        if let Some(p) = undo.dummy {
            let ifname = self.env.ifname.clone();
            if let Err(e) = self.in_netns(&p, move |nl| dummy::delete_dummy(nl, &ifname)) {
                tracing::warn!("rollback: deleting the dummy failed: {}", error_chain(&e));
            }
        }
        if let Some(ipam) = undo.ipam {
            let stdin = ipam.adapt(self.stdin, &self.conf.cni_version);
            if let Err(e) = ipam.exec("DEL", &stdin) {
                tracing::warn!("rollback: IPAM DEL failed: {e}");
            }
        }
        if let Some(path) = &self.conf.runtime_config.device_info_file {
            let _ = std::fs::remove_file(path);
        }
    }

    fn del(&self) -> Result<(), CniError> {
        if self.conf.pbl {
            return self.del_pbl();
        }
        // memifd: best effort; it reconciles on its next start.
        match self.client().and_then(|mut c| c.detach(self.key())) {
            Ok(existed) => log(format!(
                "DEL {}/{}: memifd attachment {}",
                self.env.container_id,
                self.env.ifname,
                if existed { "removed" } else { "was not there" }
            )),
            Err(e) => tracing::warn!(
                "DEL {}/{}: memifd detach failed ({}); memifd drops it when the netns is gone on its next start, or on GC",
                self.env.container_id,
                self.env.ifname,
                error_chain(&e)
            ),
        }
        let mut first_err = None;
        if let Some(ns) = self.env.netns.as_deref().filter(|p| p.exists()) {
            let ifname = self.env.ifname.clone();
            match self.in_netns(ns, move |nl| dummy::delete_dummy(nl, &ifname)) {
                Ok(_) => {}
                Err(LinkError::Netns(e)) => {
                    tracing::warn!(
                        "DEL: netns {} not usable: {}",
                        ns.display(),
                        error_chain(&e)
                    )
                }
                Err(e) => first_err = Some(link_error(e)),
            }
        }
        if let Some(ipam) = self.ipam()? {
            ipam.exec("DEL", &ipam.adapt(self.stdin, &self.conf.cni_version))?;
        }
        if let Some(path) = &self.conf.runtime_config.device_info_file {
            let _ = std::fs::remove_file(path);
        }
        first_err.map_or(Ok(()), Err)
    }

    fn check(&self) -> Result<(), CniError> {
        if self.conf.pbl {
            return self.check_pbl();
        }
        let netns = self.netns()?;
        let prev = self
            .conf
            .prev_result
            .as_ref()
            .ok_or_else(|| invalid_config("CHECK needs prevResult (the result of ADD)"))?;
        let prev = CniResult::from_value(prev, "prevResult")?;
        let mismatch = |m: String| CniError::new(code::CHECK_MISMATCH, m);
        let ifname = &self.env.ifname;
        let idx = prev
            .interfaces
            .iter()
            .position(|i| &i.name == ifname)
            .ok_or_else(|| mismatch(format!("prevResult has no interface {ifname:?}")))?;
        let name = ifname.clone();
        let st = self
            .in_netns(netns, move |nl| dummy::inspect(nl, &name))
            .map_err(link_error)?
            .ok_or_else(|| mismatch(format!("{ifname} is missing from {}", netns.display())))?;
        if st.kind.as_deref() != Some("dummy") {
            return Err(mismatch(format!(
                "{ifname} is a {} link, not a dummy",
                st.kind.as_deref().unwrap_or("kindless")
            )));
        }
        if !st.up {
            return Err(mismatch(format!("{ifname} is down")));
        }
        if let Some(mac) = &prev.interfaces[idx].mac {
            if !mac.eq_ignore_ascii_case(&st.mac.to_string()) {
                return Err(mismatch(format!(
                    "{ifname} has MAC {}, prevResult says {mac}",
                    st.mac
                )));
            }
        }
        for ip in prev
            .ips
            .iter()
            .filter(|i| i.interface.is_none_or(|i| i == idx))
        {
            let want = IpNetwork::new(ip.address.ip(), if ip.address.is_ipv4() { 32 } else { 128 })
                .expect("host prefix");
            if !st.addrs.contains(&want) {
                return Err(mismatch(format!(
                    "{ifname} lacks {want} (has {})",
                    st.addrs
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let mut c = self.client().map_err(|e| memifd_error("get", e))?;
        let a = c.get(self.key()).map_err(|e| match e {
            ClientError::Api(a) if a.code == ErrorCode::NotFound => mismatch(format!(
                "memifd has no attachment for {}/{ifname}",
                self.env.container_id
            )),
            e => memifd_error("get", e),
        })?;
        if a.request.netns != netns {
            return Err(mismatch(format!(
                "memifd's attachment is in {}, not {}",
                a.request.netns.display(),
                netns.display()
            )));
        }
        if let Some(ipam) = self.ipam()? {
            ipam.exec("CHECK", &ipam.adapt(self.stdin, &self.conf.cni_version))?;
        }
        Ok(())
    }

    fn status(&self) -> Result<(), CniError> {
        let unavailable = |m: String| CniError::new(code::NOT_AVAILABLE, m);
        let st = self
            .client()
            .and_then(|mut c| c.status())
            .map_err(|e| unavailable(format!("memifd is not reachable: {}", error_chain(&e))))?;
        if !st.memif_enabled {
            return Err(unavailable(
                "memif is disabled on this node (feature gate memifEnabled is false)".into(),
            ));
        }
        if let Some(ipam) = self.ipam()? {
            if ipam.supports(&self.conf.cni_version) {
                ipam.exec("STATUS", self.stdin)?;
            } else {
                log(format!(
                    "STATUS: IPAM {} does not speak {}; not forwarded",
                    ipam.plugin, self.conf.cni_version
                ));
            }
        }
        Ok(())
    }

    fn gc(&self) -> Result<(), CniError> {
        let valid: Vec<AttachmentKey> = self.conf.valid_attachments.clone().unwrap_or_default();
        let mut errors = Vec::new();
        match self
            .client()
            .and_then(|mut c| c.gc(self.conf.name.clone(), valid))
        {
            Ok(removed) => log(format!(
                "GC network {}: memifd removed {} attachments{}",
                self.conf.name,
                removed.len(),
                removed
                    .iter()
                    .map(|k| format!(" {}/{}", k.container_id, k.ifname))
                    .collect::<String>()
            )),
            Err(e) => errors.push(memifd_error("gc", e)),
        }
        match self.ipam() {
            Ok(Some(ipam)) if ipam.supports(&self.conf.cni_version) => {
                if let Err(e) = ipam.exec("GC", self.stdin) {
                    errors.push(e);
                }
            }
            Ok(Some(ipam)) => log(format!(
                "GC: IPAM {} does not speak {}; not forwarded",
                ipam.plugin, self.conf.cni_version
            )),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => {
                let first = errors.remove(0);
                let rest: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                Err(first.with_details(format!("also: {}", rest.join("; "))))
            }
        }
    }
}

/// device-info-spec 1.1.0: role "slave" (the host creates the socket).
pub(super) fn write_device_info(
    path: &Path,
    socket: &str,
    mode: crate::memif::wire::Mode,
) -> Result<(), CniError> {
    let mode = match mode {
        crate::memif::wire::Mode::Ip => "ip",
        crate::memif::wire::Mode::PuntInject => "inject-punt",
        crate::memif::wire::Mode::Ethernet => "ethernet",
    };
    let doc = serde_json::json!({
        "type": "memif",
        "version": "1.1.0",
        "memif": {"role": "slave", "path": socket, "mode": mode},
    });
    let io = |e: std::io::Error| {
        CniError::new(
            code::IO,
            format!("cannot write device-info file {}: {e}", path.display()),
        )
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, format!("{doc}\n")).map_err(io)
}

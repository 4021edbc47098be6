//! The sysctls memif-cni writes, by their path under `/proc/sys`
//! (`net/ipv6/conf/<dev>/disable_ipv6`): in the calling thread's network
//! namespace, as `/proc/sys/net` shows the namespace of whoever opens it.

use super::LinkError;

/// Writes `value` to `/proc/sys/<key>`.
pub fn write(key: &str, value: &str) -> Result<(), LinkError> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|source| LinkError::Sysctl { path, source })
}

/// Sets `rp_filter` of IPv4 device `dev` (0 off, 1 strict, 2 loose).
pub fn set_rp_filter(dev: &str, value: u8) -> Result<(), LinkError> {
    write(
        &format!("net/ipv4/conf/{dev}/rp_filter"),
        &format!("{value}\n"),
    )
}

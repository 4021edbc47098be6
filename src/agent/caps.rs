//! What memifd must be allowed to do, checked at start: a memifd without
//! it would say "ready" and fail at the first attach.
//!
//! memifd enters pod network namespaces (`setns`: CAP_SYS_ADMIN) and makes
//! links, addresses, routes, rules and TUN devices (CAP_NET_ADMIN).

/// The capabilities memifd needs: (bit, name, what for).
pub const NEEDED: [(u32, &str, &str); 2] = [
    (12, "CAP_NET_ADMIN", "links, routes, rules, TUN uplinks"),
    (21, "CAP_SYS_ADMIN", "entering pod network namespaces"),
];

/// The effective capability set from `/proc/<self>/status` text.
pub fn effective(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The needed capabilities missing from `eff`, as "NAME (what for)".
pub fn missing(eff: u64) -> Vec<String> {
    NEEDED
        .iter()
        .filter(|(bit, _, _)| eff & (1u64 << bit) == 0)
        .map(|(_, name, why)| format!("{name} ({why})"))
        .collect()
}

/// This process's missing capabilities; `Err` when they cannot be read.
pub fn missing_here() -> Result<Vec<String>, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let eff = effective(&status).ok_or("no CapEff line in /proc/self/status")?;
    Ok(missing(eff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set_and_names_what_is_missing() {
        let status = "Name:\tmemifd\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t0000000000001000\n";
        let eff = effective(status).unwrap();
        assert_eq!(eff, 1 << 12);
        assert_eq!(
            missing(eff),
            vec!["CAP_SYS_ADMIN (entering pod network namespaces)"]
        );
        assert!(missing(0x1ff_ffff_ffff).is_empty());
        assert_eq!(missing(0).len(), 2);
        assert_eq!(effective("Name: x\n"), None);
    }
}

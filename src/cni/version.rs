//! CNI spec versions: which ones this plugin speaks, what each verb needs,
//! and the result's shape in each.

use super::error::{code, CniError};

/// Config versions accepted and answered, oldest first.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A parsed `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub const V0_4_0: Version = Version(0, 4, 0);
    pub const V1_0_0: Version = Version(1, 0, 0);
    pub const V1_1_0: Version = Version(1, 1, 0);

    pub fn parse(s: &str) -> Option<Version> {
        let mut it = s.split('.').map(|p| p.parse::<u32>().ok());
        let v = Version(it.next()??, it.next()??, it.next()??);
        it.next().is_none().then_some(v)
    }
}

/// The config's version, if this plugin supports it (else code 1).
pub fn check(cni_version: &str) -> Result<Version, CniError> {
    if SUPPORTED.contains(&cni_version) {
        return Ok(Version::parse(cni_version).expect("supported versions parse"));
    }
    Err(CniError::new(
        code::INCOMPATIBLE_VERSION,
        format!(
            "cniVersion {cni_version:?} is not supported; supported: {}",
            SUPPORTED.join(", ")
        ),
    ))
}

/// The lowest config version a verb exists in (CHECK 0.4.0, STATUS and GC
/// 1.1.0); code 1 below it.
pub fn require(verb: &str, v: Version, cni_version: &str) -> Result<(), CniError> {
    let min = match verb {
        "CHECK" => Version::V0_4_0,
        "STATUS" | "GC" => Version::V1_1_0,
        _ => return Ok(()),
    };
    if v < min {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "{verb} needs cniVersion {}.{}.{} or later; the config says {cni_version}",
                min.0, min.1, min.2
            ),
        ));
    }
    Ok(())
}

/// The VERSION verb's answer.
pub fn version_info(cni_version: &str) -> String {
    serde_json::json!({
        "cniVersion": cni_version,
        "supportedVersions": SUPPORTED,
    })
    .to_string()
}

/// The about line printed when `CNI_COMMAND` is unset.
pub fn about() -> String {
    format!(
        "CNI memif-cni plugin v{} (memif interfaces through memifd); CNI protocol versions supported: {}",
        env!("CARGO_PKG_VERSION"),
        SUPPORTED.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(Version::parse("0.3.1").unwrap() < Version::V0_4_0);
        assert!(Version::parse("1.1.0").unwrap() > Version::V1_0_0);
        assert_eq!(Version::parse("1.0"), None);
        assert_eq!(Version::parse("1.0.0.0"), None);
        assert_eq!(check("0.2.0").unwrap_err().code, 1);
        assert_eq!(check("").unwrap_err().code, 1);
        assert!(check("1.1.0").is_ok());
        let v = check("0.3.1").unwrap();
        assert_eq!(require("CHECK", v, "0.3.1").unwrap_err().code, 1);
        assert!(require("DEL", v, "0.3.1").is_ok());
        let v = check("1.0.0").unwrap();
        assert_eq!(require("GC", v, "1.0.0").unwrap_err().code, 1);
        assert!(require("CHECK", v, "1.0.0").is_ok());
    }
}

//! The CNI plugin `memif-cni`: spec types and version conversion, errors,
//! the environment, IPAM delegation and the verbs. It stays small: the
//! memif itself is memifd's (over the API in `crate::api`).

pub mod env;
pub mod error;
pub mod ipam;
pub mod pbl;
pub mod plugin;
pub mod types;
pub mod version;

//! memif-cni: memif packet interfaces for Kubernetes pods.
//!
//! The library holds all logic; `src/bin/*` are thin entry points. The
//! README's "Layout" section maps every module and says where to change
//! what.
//!
//! `unsafe` is denied everywhere but in [`memif::shm`] (shared memory
//! with the peer) and [`sys`] (the two system calls without a safe
//! wrapper), each block with a `// SAFETY:` comment.

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

/// The version all three binaries print: the crate version and the git
/// commit they were built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MEMIF_CNI_COMMIT"),
    ")"
);

pub mod agent;
pub mod api;
pub mod calico;
pub mod cni;
pub mod ctl;
pub mod dataplane;
pub mod hash;
pub mod ids;
pub mod link;
pub mod logging;
pub mod mac;
pub mod memif;
pub mod netns;
pub mod packet;
pub mod sys;

//! memif-cni: memif packet interfaces for Kubernetes pods.
//!
//! The library holds all logic; `src/bin/*` are thin entry points.
//! See DESIGN.md (in the repository's shared docs) and README.md.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod agent;
pub mod api;
pub mod cni;
pub mod ctl;
pub mod dataplane;
pub mod link;
pub mod memif;
pub mod netns;
pub mod spec;

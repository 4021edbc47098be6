//! memifd, the node agent: the API server, the attachment registry,
//! persistence, Kubernetes lookups and metrics.

pub mod kube;
pub mod metrics;

//! The Prometheus metrics endpoint.

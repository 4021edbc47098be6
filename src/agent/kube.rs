//! Pod annotations from the Kubernetes API.

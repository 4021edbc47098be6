//! Pod- and operator-facing inputs: feature gates (and, with the plugin,
//! the interface-spec annotations).

pub mod gates;

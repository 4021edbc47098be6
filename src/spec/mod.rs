//! Pod- and operator-facing inputs: feature gates, the interface spec
//! (CalicoVPP's `vppInterfacesSpec` keys) and the PBL port list
//! (`vppExtraMemifPorts`).

pub mod gates;
pub mod interfaces;
pub mod ports;

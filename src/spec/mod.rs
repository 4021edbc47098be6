//! Pod- and operator-facing inputs: feature gates and the interface spec
//! (CalicoVPP's `vppInterfacesSpec` keys).

pub mod gates;
pub mod interfaces;

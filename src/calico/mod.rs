//! CalicoVPP's inputs, as memif-cni reads them: the feature gates
//! (`CALICOVPP_FEATURE_GATES`), the interface spec (the
//! `cni.projectcalico.org/vppInterfacesSpec` keys, also accepted from
//! `args.cni` and the network config) with the node's maximum, and the PBL
//! port list (`vppExtraMemifPorts`). Each parser has its own error type;
//! nothing here depends on the plugin or on memifd.

pub mod gates;
pub mod interfaces;
pub mod ports;

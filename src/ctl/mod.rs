//! memifctl: the operator's commands. The binary only parses arguments.

pub mod client;
pub mod manage;
pub mod peer;
pub mod show;

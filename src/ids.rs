//! The attachment number: one newtype for it everywhere.

use serde::{Deserialize, Serialize};

/// The number memifd gives an attachment when it is made and keeps across
/// restarts: its memif socket id (VPP's `socket-id`, `memif<id>/0` in
/// `show memif`), its port in the dataplane, its key in the registry and
/// the state file. On the wire a plain number (`socket_id`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct AttachmentId(pub u32);

impl AttachmentId {
    /// The next number after this one (wrapping).
    pub fn next(self) -> AttachmentId {
        AttachmentId(self.0.wrapping_add(1))
    }
}

impl std::fmt::Display for AttachmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

//! memif 2.0: the shared-memory packet interface, both roles.
//!
//! - [`wire`]: the 128-byte control messages;
//! - [`socket`]: `SOCK_SEQPACKET` control channels with fd passing;
//! - [`shm`]: regions and rings in shared memory (its `unsafe` is confined here);
//! - [`queue`]: burst rx/tx on rings for master and slave;
//! - [`master`]: the master handshake as a state machine;
//! - [`server`]: a master socket served by a thread;
//! - [`slave`]: the slave handshake and allocation.

pub mod master;
pub mod queue;
pub mod server;
pub mod shm;
pub mod slave;
pub mod socket;
pub mod wire;

pub use master::{InterfaceConfig, Limits, MasterConnection};
pub use queue::{
    ConnState, MasterRx, MasterTx, PacketBuf, Pushed, QueueStats, RingError, RxFrame, RxFrames,
    SlaveRx, SlaveTx,
};
pub use server::{ServerConfig, ServerEvent, ServerHandle};
pub use slave::{SlaveConfig, SlaveConnection, SlaveError};
pub use socket::SocketAddr;
pub use wire::Mode;

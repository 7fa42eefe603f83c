//! Flotilla's Raft consensus core.
#![deny(missing_docs)]

mod confchange;
mod config;
mod log;
mod node;
mod progress;
mod quorum;
mod storage;
mod types;

pub use confchange::ConfigChangeError;
#[cfg(feature = "planted-bugs")]
pub use config::PlantedBug;
pub use config::{Config, ConfigError, ProposeError, ReadIndexError, ReadMode, TransferError};
pub use node::{Counters, Node, ProgressStatus, Ready, SoftState, Status};
pub use progress::ReplicationState;
pub use storage::{bootstrap_snapshot, LogStorage, MemoryStorage, StorageError};
pub use types::*;

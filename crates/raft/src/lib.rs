//! Flotilla's Raft consensus core.
#![deny(missing_docs)]

mod storage;
mod types;

pub use storage::{LogStorage, MemoryStorage, StorageError};
pub use types::*;

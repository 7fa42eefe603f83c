//! Durable storage for Flotilla: the segmented write-ahead log, snapshot files, and the small
//! disk trait both are written against, with a real implementation over `std::fs` and a
//! simulated one for deterministic crash tests.
//!
//! [`DiskLog`] puts the WAL and the snapshots together and implements [`raft::LogStorage`].
//! The on-disk format, and what is synced when, is in `FORMAT.md` beside this crate.
//!
//! The driving loop, for one or several queued Readys:
//!
//! ```
//! use bytes::Bytes;
//! use raft::{ConfigState, Entry, EntryPayload, HardState, LogStorage, MemoryStorage};
//! use storage::{Bootstrap, DiskLog, DiskLogOptions, SimDisk};
//!
//! let disk = SimDisk::new();
//! let directory = std::path::Path::new("/node-1");
//! // A founding member starts where the core expects: the bootstrap snapshot at index 1.
//! let founder = Bootstrap::Founder(ConfigState::with_voters([1, 2, 3]));
//! let (mut log, report) =
//!     DiskLog::open(disk.clone(), directory, DiskLogOptions::default(), founder.clone())?;
//! assert_eq!(report.torn_tail, None);
//! let memory = MemoryStorage::new_with_config(ConfigState::with_voters([1, 2, 3]));
//! assert_eq!(log.initial_state(), memory.initial_state());
//! assert_eq!((log.first_index(), log.last_index()), (2, 1));
//!
//! // A Ready: persist its entries and hard state ...
//! let entry = Entry { term: 2, index: 2, payload: EntryPayload::Normal(Bytes::from("put x 1")) };
//! log.stage_ready(Some(HardState { term: 2, vote: Some(1), commit: 1 }), &[entry.clone()])?;
//! // ... with one write and one fdatasync, BEFORE sending the messages that depend on them.
//! log.sync()?;
//! assert_eq!(log.entries(2, 3, u64::MAX).unwrap(), vec![entry.clone()]);
//!
//! // After a crash, what was synced is there; the bootstrap argument no longer matters.
//! disk.crash(storage::CrashMode::DropUnsynced);
//! let (log, _) = DiskLog::open(disk, directory, DiskLogOptions::default(), Bootstrap::Joiner)?;
//! assert_eq!(log.last_index(), 2);
//! # Ok::<(), storage::Error>(())
//! ```
#![deny(missing_docs)]

mod codec;
mod disk;
mod disk_log;
mod error;
pub mod inspect;
mod log_state;
mod sim_disk;
mod snapshot;
mod wal;

pub use disk::{Disk, DiskFile, StdDisk, StdFile};
pub use disk_log::{Bootstrap, DiskLog, DiskLogOptions};
pub use error::{Error, Result};
pub use sim_disk::{CrashMode, SimDisk, SimFile};
pub use snapshot::{SavePacing, SnapshotStore, SNAPSHOT_HEADER_BYTES, SNAPSHOT_MAGIC};
pub use wal::{
    Preallocation, RecoveryReport, TornTail, Wal, WalOptions, FORMAT_VERSION,
    RECORD_ALIGNMENT_BYTES, RECORD_HEADER_BYTES, SEGMENT_MAGIC,
};

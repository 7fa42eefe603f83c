//! Flotilla's Raft consensus core: one deterministic, sans-IO state machine per node.
//!
//! The core does no I/O: no sockets, files, clocks, threads or global randomness. The
//! application drives it with three kinds of input, and it answers with a [`Ready`]:
//!
//! - time, as ticks ([`Node::tick`]; with the defaults one tick is 10 ms, so the election
//!   timeout is 150-300 ms and heartbeats go every 50 ms);
//! - messages from peers ([`Node::step`]);
//! - requests: proposals ([`Node::propose`], [`Node::propose_config_change`]), linearizable reads
//!   ([`Node::read_index`]) and leadership transfers ([`Node::transfer_leadership`]).
//!
//! Whenever [`Node::has_ready`] is true, the application takes a [`Ready`], persists what it
//! says, then sends its messages, applies its committed entries, and calls [`Node::advance`].
//! The order matters and is written on [`Ready`]. There is exactly one way to drive a node.
//!
//! # The driving loop
//!
//! A single-node cluster, driven in one thread with the in-memory [`MemoryStorage`]:
//!
//! ```
//! use bytes::Bytes;
//! use raft::{Config, ConfigState, EntryPayload, MemoryStorage, Node, Role};
//!
//! let storage = MemoryStorage::new_with_config(ConfigState::with_voters([1]));
//! let mut node = Node::new(Config::new(1), storage).unwrap();
//! let mut applied = Vec::new();
//! let mut proposed = false;
//!
//! for _tick in 0..100 {
//!     node.tick();
//!     if node.role() == Role::Leader && !proposed {
//!         node.propose(Bytes::from("set x=1")).unwrap();
//!         proposed = true;
//!     }
//!     while node.has_ready() {
//!         let ready = node.ready();
//!         // 1. Persist: snapshot, entries, hard state (fdatasync when `must_sync`).
//!         if let Some(snapshot) = &ready.snapshot {
//!             node.storage_mut().apply_snapshot(snapshot.clone());
//!         }
//!         node.storage_mut().append(&ready.entries);
//!         if let Some(hard_state) = ready.hard_state {
//!             node.storage_mut().set_hard_state(hard_state);
//!         }
//!         // 2. Only now send the messages (a single node has none, early or not).
//!         assert!(ready.messages.is_empty() && ready.early_messages.is_empty());
//!         // 3. Apply committed entries in order, exactly once.
//!         for entry in &ready.committed_entries {
//!             if let EntryPayload::Normal(data) = &entry.payload {
//!                 applied.push(data.clone());
//!             }
//!         }
//!         // 4. Tell the core it is done.
//!         node.advance();
//!     }
//! }
//! assert_eq!(node.role(), Role::Leader);
//! assert_eq!(applied, vec![Bytes::from("set x=1")]);
//! ```
//!
//! # Where things are
//!
//! - [`Node`] and [`Ready`]: the driver and its contract.
//! - [`Config`]: timeouts, pre-vote, check-quorum, read mode, flow-control limits.
//! - [`LogStorage`]: what the core reads of the stable log; [`MemoryStorage`] implements it.
//! - The protocol's types ([`Message`], [`Entry`], [`HardState`], [`Snapshot`], ...) are plain
//!   Rust; wire formats live in the transport and the WAL.
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

//! Flotilla's deterministic cluster simulator and linearizability checker.
//!
//! [`run`] simulates a whole cluster from one `u64` seed: real [`raft::Node`]s, each inside the
//! server's own node shell (`server::shell::NodeShell`, the one place the Ready contract is
//! carried out, with the simulator's checks as its observer), so the Ready handling, the read
//! queue, the waiters and the snapshots written off the loop and adopted later are the code the
//! server runs; each persisting into the real WAL on its own simulated disk
//! (`storage::DiskLog` over `storage::SimDisk`), a simulated clock (ticks)
//! and network (delays, loss, duplication, reordering, partitions), a nemesis that crashes,
//! pauses and reconfigures nodes, fails their fsyncs and damages their disks, and clients doing
//! puts, gets and compare-and-swaps as etcd requests against the server's own MVCC store. Every step checks
//! Raft's safety properties; the end checks linearizability, durability of acknowledged writes
//! and liveness after the faults heal. The same seed and code always give the same run, and
//! [`Outcome::trace_hash`] proves it.
//!
//! ```
//! use sim::{run, SimConfig};
//!
//! let config = SimConfig { ops: 20, chaos_ticks: 200, ..SimConfig::default() };
//! let outcome = run(7, &config);
//! assert!(outcome.violation.is_none(), "{:?}", outcome.violation);
//! assert_eq!(run(7, &config).trace_hash, outcome.trace_hash);
//! ```
//!
//! [`linearizability`] records what clients asked and were told, and decides whether a real
//! atomic key-value store could have answered that way.
#![deny(missing_docs)]

pub mod config;
pub mod invariants;
pub mod kv;
pub mod linearizability;
mod node_storage;
pub mod rng;
pub mod simulation;
pub mod trace;

#[cfg(feature = "planted-bugs")]
pub use config::PlantedBug;
pub use config::{FaultSet, SimConfig, StorageKind};
pub use invariants::Violation;
pub use simulation::{
    run, Outcome, Stats, LIVENESS_BOUND_BARE_QUORUM_TICKS, LIVENESS_BOUND_TICKS, TICK,
};

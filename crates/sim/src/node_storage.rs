//! What a simulated node persists into: the real WAL and snapshot files
//! ([`storage::DiskLog`]) on the node's own simulated disk, or [`MemoryStorage`].
//!
//! Rationale for one [`SimDisk`] per node: a crash is a power failure of one machine; it must
//! lose that node's unsynced writes and no one else's.

use std::path::PathBuf;

use raft::{
    ConfigState, Entry, HardState, LogStorage, MemoryStorage, Snapshot, SnapshotMeta, StorageError,
};
use server::shell::{ShellLog, SnapshotWriter};
use storage::inspect::RecordContents;
use storage::{
    Bootstrap, CrashMode, DiskLog, DiskLogOptions, Preallocation, RecoveryReport, SavePacing,
    SimDisk, SnapshotStore, WalOptions,
};

use crate::rng::SimRng;

/// Entries a node keeps behind its own snapshot with [`MemoryStorage`], so that a follower
/// slightly behind still gets entries and one far behind gets the snapshot.
pub(crate) const SNAPSHOT_LAG_ENTRIES: u64 = 5;

/// A node's log storage: the one type the simulated [`raft::Node`]s are built over.
///
/// Both variants are boxed: their sizes differ by hundreds of bytes, and each node moves its
/// storage only when it starts.
#[derive(Debug)]
pub(crate) enum NodeStorage {
    Memory(Box<MemoryStorage>),
    Wal(Box<DiskLog<SimDisk>>),
}

impl NodeStorage {
    /// The hard state a crash now would keep (a lazily written commit index may be lost).
    pub(crate) fn durable_hard_state(&self) -> HardState {
        match self {
            NodeStorage::Memory(memory) => memory.hard_state(),
            NodeStorage::Wal(log) => log.hard_state(),
        }
    }
}

/// Writes a snapshot's file: on the node's simulated disk, or nowhere for [`MemoryStorage`],
/// which takes the whole snapshot when it is adopted.
pub(crate) enum NodeSnapshotWriter {
    Memory,
    Wal(SnapshotStore<SimDisk>),
}

impl SnapshotWriter for NodeSnapshotWriter {
    fn save(&self, snapshot: &Snapshot, pacing: Option<SavePacing>) -> Result<(), String> {
        match self {
            NodeSnapshotWriter::Memory => Ok(()),
            NodeSnapshotWriter::Wal(store) => SnapshotWriter::save(store, snapshot, pacing),
        }
    }
}

/// The shell persists into the node's storage as the server does into its [`DiskLog`].
/// `MemoryStorage` has no unsynced writes: everything it is given is durable at once.
impl ShellLog for NodeStorage {
    type SnapshotWriter = NodeSnapshotWriter;

    fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<HardState>,
        must_sync: bool,
    ) -> Result<(), String> {
        match self {
            NodeStorage::Memory(memory) => {
                if let Some(snapshot) = snapshot {
                    memory.apply_snapshot(snapshot.clone());
                }
                memory.append(entries);
                if let Some(hard_state) = hard_state {
                    memory.set_hard_state(hard_state);
                }
                Ok(())
            }
            NodeStorage::Wal(log) => log.persist(snapshot, entries, hard_state, must_sync),
        }
    }

    fn snapshot_meta_at(&self, index: u64, config: ConfigState) -> Option<SnapshotMeta> {
        match self {
            NodeStorage::Memory(memory) => {
                let newest = memory.snapshot().ok()?.meta.index;
                // Rationale: `MemoryStorage` is the durable state itself; a snapshot past its
                // commit index would make a restarted node hold entries applied that its hard
                // state does not call committed.
                if index <= newest || index > memory.last_index() {
                    return None;
                }
                if index > memory.hard_state().commit {
                    return None;
                }
                let term = memory.term(index).ok()?;
                Some(SnapshotMeta {
                    index,
                    term,
                    config,
                })
            }
            NodeStorage::Wal(log) => ShellLog::snapshot_meta_at(log.as_ref(), index, config),
        }
    }

    fn snapshot_writer(&self) -> NodeSnapshotWriter {
        match self {
            NodeStorage::Memory(_) => NodeSnapshotWriter::Memory,
            NodeStorage::Wal(log) => NodeSnapshotWriter::Wal(log.snapshot_store()),
        }
    }

    /// With [`MemoryStorage`] the log is compacted up to [`SNAPSHOT_LAG_ENTRIES`] before the
    /// snapshot, so that a follower slightly behind still gets entries; the WAL compacts up to
    /// it, as the server's does.
    fn adopt_snapshot(&mut self, snapshot: Snapshot) -> Result<bool, String> {
        match self {
            NodeStorage::Memory(memory) => {
                let index = snapshot.meta.index;
                if !memory.create_snapshot(index, snapshot.meta.config, snapshot.data) {
                    return Ok(false);
                }
                memory.compact(index.saturating_sub(SNAPSHOT_LAG_ENTRIES));
                Ok(true)
            }
            NodeStorage::Wal(log) => ShellLog::adopt_snapshot(log.as_mut(), snapshot),
        }
    }
}

impl LogStorage for NodeStorage {
    fn initial_state(&self) -> (HardState, ConfigState) {
        match self {
            NodeStorage::Memory(memory) => memory.initial_state(),
            NodeStorage::Wal(log) => log.initial_state(),
        }
    }

    fn entries(&self, low: u64, high: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        match self {
            NodeStorage::Memory(memory) => memory.entries(low, high, max_bytes),
            NodeStorage::Wal(log) => log.entries(low, high, max_bytes),
        }
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        match self {
            NodeStorage::Memory(memory) => memory.term(index),
            NodeStorage::Wal(log) => log.term(index),
        }
    }

    fn first_index(&self) -> u64 {
        match self {
            NodeStorage::Memory(memory) => memory.first_index(),
            NodeStorage::Wal(log) => log.first_index(),
        }
    }

    fn last_index(&self) -> u64 {
        match self {
            NodeStorage::Memory(memory) => memory.last_index(),
            NodeStorage::Wal(log) => log.last_index(),
        }
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        match self {
            NodeStorage::Memory(memory) => memory.snapshot(),
            NodeStorage::Wal(log) => log.snapshot(),
        }
    }
}

/// A node's simulated disk and how its log is laid out on it.
#[derive(Clone, Debug)]
pub(crate) struct NodeDisk {
    pub(crate) disk: SimDisk,
    pub(crate) directory: PathBuf,
    pub(crate) options: DiskLogOptions,
    /// Founder or joiner: what the first open starts from.
    pub(crate) bootstrap: Bootstrap,
}

impl NodeDisk {
    /// A fresh disk, with small segments and buffers chosen by the seed so that segment
    /// rotation, removal after snapshots and split batches all happen within a short run.
    pub(crate) fn new(id: u64, bootstrap: Bootstrap, rng: &mut SimRng) -> NodeDisk {
        let segment_size_bytes = rng.pick(&[2 << 10, 8 << 10, 32 << 10]);
        let preallocation = rng.pick(&[Preallocation::SetLength, Preallocation::Zeros]);
        let write_buffer_bytes_max = rng.pick(&[256, 2048, 4 << 20]);
        let snapshots_retained_count = rng.range(1, 3) as usize;
        NodeDisk {
            disk: SimDisk::new(),
            directory: PathBuf::from(format!("/n{id}")),
            options: DiskLogOptions {
                wal: WalOptions {
                    segment_size_bytes,
                    preallocation,
                    write_buffer_bytes_max,
                },
                snapshots_retained_count,
            },
            bootstrap,
        }
    }

    /// Opens (or reopens, after a crash) the node's log.
    pub(crate) fn open(&self) -> storage::Result<(DiskLog<SimDisk>, RecoveryReport)> {
        DiskLog::open(
            self.disk.clone(),
            &self.directory,
            self.options.clone(),
            self.bootstrap.clone(),
        )
    }

    /// Flips one bit in an old record of the WAL — any record but the last one of the last
    /// segment, which recovery cannot tell from a torn write — or, one time in five, in the
    /// newest snapshot file. Returns what was damaged.
    pub(crate) fn corrupt_old_record(&self, rng: &mut SimRng) -> Result<String, String> {
        let inspection = storage::inspect::inspect(&self.disk, &self.directory)
            .map_err(|error| format!("cannot inspect {}: {error}", self.directory.display()))?;
        let mut targets: Vec<(PathBuf, u64, u64, &'static str)> = Vec::new();
        let segments_count = inspection.segments.len();
        for (position, segment) in inspection.segments.iter().enumerate() {
            let records_count = segment.records.len();
            for (record_position, record) in segment.records.iter().enumerate() {
                let is_tail = position + 1 == segments_count
                    && record_position + 1 == records_count
                    && matches!(record.contents, RecordContents::Batch(_));
                if is_tail {
                    continue;
                }
                let kind = match record.contents {
                    RecordContents::SegmentHeader { .. } => "segment header",
                    RecordContents::Batch(_) => "batch",
                };
                targets.push((
                    segment.path.clone(),
                    record.offset_bytes,
                    record.length_bytes,
                    kind,
                ));
            }
        }
        let newest_snapshot = inspection
            .snapshots
            .last()
            .filter(|snapshot| snapshot.length_bytes > 0);
        let target = match newest_snapshot {
            Some(snapshot) if targets.is_empty() || rng.chance(200) => {
                (snapshot.path.clone(), 0, snapshot.length_bytes, "snapshot")
            }
            _ if targets.is_empty() => return Err("no old record to damage".into()),
            _ => {
                let position = rng.below(targets.len() as u64) as usize;
                targets.swap_remove(position)
            }
        };
        let (path, offset_bytes, length_bytes, kind) = target;
        let byte = offset_bytes + rng.below(length_bytes);
        let bit = rng.below(8) as u8;
        if !self.disk.flip_bit(&path, byte, bit) {
            return Err(format!("no byte {byte} in {}", path.display()));
        }
        Ok(format!(
            "bit {bit} of byte {byte} of {} ({kind} at byte {offset_bytes})",
            path.display()
        ))
    }
}

/// What a node's log held durably at a crash, to compare with what it reopens: whatever sync
/// made durable must survive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DurableLog {
    pub(crate) hard_state: HardState,
    pub(crate) snapshot_index: u64,
    pub(crate) first_index: u64,
    /// The term at `first_index - 1`.
    pub(crate) base_term: u64,
    pub(crate) entries: Vec<Entry>,
    /// Hard states written without a sync since the last one: a crash may keep any of them.
    pub(crate) unsynced_hard_states: Vec<HardState>,
}

impl DurableLog {
    pub(crate) fn of(log: &DiskLog<SimDisk>, unsynced_hard_states: Vec<HardState>) -> DurableLog {
        let first_index = log.first_index();
        let last_index = log.last_index();
        let entries = if last_index >= first_index {
            log.entries(first_index, last_index + 1, u64::MAX)
                .expect("the durable log holds its own entries")
        } else {
            Vec::new()
        };
        DurableLog {
            hard_state: log.hard_state(),
            snapshot_index: log.snapshot().map_or(0, |snapshot| snapshot.meta.index),
            first_index,
            base_term: log
                .term(first_index - 1)
                .expect("the snapshot's term is known"),
            entries,
            unsynced_hard_states,
        }
    }

    /// Whether `reopened` holds what `self` held. Only the hard state may differ: a record
    /// written without a sync may survive the crash whole.
    pub(crate) fn is_kept_by(&self, reopened: &DurableLog) -> bool {
        let kept = reopened.hard_state;
        (kept == self.hard_state || self.unsynced_hard_states.contains(&kept))
            && self.snapshot_index == reopened.snapshot_index
            && self.first_index == reopened.first_index
            && self.base_term == reopened.base_term
            && self.entries == reopened.entries
    }
}

/// How a power failure treats the unsynced writes: lost, or a prefix kept with its last write
/// torn, as the seed chooses.
pub(crate) fn crash_mode(rng: &mut SimRng) -> CrashMode {
    if rng.chance(500) {
        CrashMode::TearUnsynced {
            seed: rng.next_u64(),
        }
    } else {
        CrashMode::DropUnsynced
    }
}

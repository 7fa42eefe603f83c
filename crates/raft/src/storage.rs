//! The stable log as the core sees it: a read-only trait the application implements over its
//! durable storage, and [`MemoryStorage`], an in-memory implementation for tests, examples and
//! the simulator.

use crate::types::{ConfigState, Entry, HardState, Snapshot, SnapshotMeta};

/// Why a storage read could not be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// The index lies at or below the snapshot: those entries were compacted away.
    Compacted,
    /// The index lies beyond the last entry.
    Unavailable,
    /// No snapshot can be produced right now; the leader tries again later.
    SnapshotTemporarilyUnavailable,
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Compacted => f.write_str("requested index is compacted"),
            StorageError::Unavailable => f.write_str("requested index is beyond the last entry"),
            StorageError::SnapshotTemporarilyUnavailable => {
                f.write_str("snapshot is temporarily unavailable")
            }
        }
    }
}

impl std::error::Error for StorageError {}

/// The durable log, read by the core. The application writes to it (entries, hard state,
/// snapshots) as each [`crate::Ready`] tells it; the core only reads.
///
/// The log holds the entries `first_index()..=last_index()`, preceded by a snapshot whose
/// index is `first_index() - 1` (index 0 and term 0 for an empty log).
pub trait LogStorage {
    /// The hard state and configuration to start from.
    fn initial_state(&self) -> (HardState, ConfigState);

    /// Entries in `[low, high)`. Stops once the total [`Entry::size_bytes`] would exceed
    /// `max_bytes`, but always returns at least one entry when the range is not empty.
    fn entries(&self, low: u64, high: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;

    /// The term of the entry at `index`, for any index in `first_index() - 1 ..= last_index()`.
    fn term(&self, index: u64) -> Result<u64, StorageError>;

    /// The index of the first entry still in the log.
    fn first_index(&self) -> u64;

    /// The index of the last entry in the log (the snapshot's index when the log is empty).
    fn last_index(&self) -> u64;

    /// The latest snapshot, to send to a follower that needs compacted entries.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
}

/// An in-memory [`LogStorage`]: what tests, benchmarks and the simulator persist into.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    /// The last entry removed by compaction (or covered by an installed snapshot):
    /// `(index, term)`, `(0, 0)` for a log never compacted.
    compacted: (u64, u64),
    /// Entries after `compacted.0`, consecutive.
    entries: Vec<Entry>,
}

impl MemoryStorage {
    /// The storage of a founding member of a brand new cluster: a snapshot at index 1, term 1
    /// holding the initial configuration (see [`bootstrap_snapshot`]).
    pub fn new_with_config(config: ConfigState) -> MemoryStorage {
        let mut storage = MemoryStorage::default();
        storage.apply_snapshot(bootstrap_snapshot(config));
        storage.hard_state.term = 1;
        storage
    }

    /// The hard state last written.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Records the hard state, as a Ready asks.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Appends entries, replacing any existing entries from the first new index on.
    ///
    /// # Panics
    /// If the entries would leave a gap or overwrite compacted entries; the core never asks
    /// that.
    pub fn append(&mut self, entries: &[Entry]) {
        self.append_owned(entries.to_vec());
    }

    /// Like [`MemoryStorage::append`], but takes the entries by value: moving a Ready's entries
    /// in spares a reference-count update per entry.
    pub fn append_owned(&mut self, mut entries: Vec<Entry>) {
        let Some(first) = entries.first() else { return };
        let offset = self.compacted.0 + 1;
        assert!(
            first.index >= offset,
            "append at {} overwrites compacted entries",
            first.index
        );
        assert!(
            first.index <= self.last_index() + 1,
            "append at {} leaves a gap",
            first.index
        );
        self.entries.truncate((first.index - offset) as usize);
        if self.entries.is_empty() {
            self.entries = entries;
        } else {
            self.entries.append(&mut entries);
        }
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        if snapshot.meta.index <= self.snapshot.meta.index {
            return;
        }
        self.hard_state.commit = self.hard_state.commit.max(snapshot.meta.index);
        self.compacted = (snapshot.meta.index, snapshot.meta.term);
        self.entries.clear();
        self.snapshot = snapshot;
    }

    /// Records a snapshot of the application's state as of `index`, which the application
    /// has applied. Entries stay until [`MemoryStorage::compact`] removes them.
    ///
    /// Returns false, changing nothing, when `index` is not newer than the current snapshot
    /// or is not in the log.
    pub fn create_snapshot(&mut self, index: u64, config: ConfigState, data: bytes::Bytes) -> bool {
        if index <= self.snapshot.meta.index || index > self.last_index() {
            return false;
        }
        let Ok(term) = self.term(index) else {
            return false;
        };
        self.snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                config,
            },
            data,
        };
        true
    }

    /// Drops every entry up to and including `index`. Only entries the snapshot covers can
    /// go: a larger `index` is lowered to the snapshot's.
    pub fn compact(&mut self, index: u64) {
        let index = index.min(self.snapshot.meta.index);
        if index <= self.compacted.0 {
            return;
        }
        let term = self
            .term(index)
            .expect("a snapshotted index is in the log or compacted");
        let drop_count = (index - self.compacted.0) as usize;
        self.entries.drain(..drop_count);
        self.compacted = (index, term);
    }
}

impl LogStorage for MemoryStorage {
    fn initial_state(&self) -> (HardState, ConfigState) {
        (self.hard_state, self.snapshot.meta.config.clone())
    }

    fn entries(&self, low: u64, high: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if low <= self.compacted.0 {
            return Err(StorageError::Compacted);
        }
        if high > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let offset = self.compacted.0 + 1;
        let slice = &self.entries[(low - offset) as usize..(high - offset) as usize];
        Ok(limit_size(slice, max_bytes).to_vec())
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        let (compacted_index, compacted_term) = self.compacted;
        if index < compacted_index {
            return Err(StorageError::Compacted);
        }
        if index == compacted_index {
            return Ok(compacted_term);
        }
        match self.entries.get((index - compacted_index - 1) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(StorageError::Unavailable),
        }
    }

    fn first_index(&self) -> u64 {
        self.compacted.0 + 1
    }

    fn last_index(&self) -> u64 {
        self.compacted.0 + self.entries.len() as u64
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }
}

/// The snapshot every founding member of a new cluster starts from: index 1, term 1, the
/// initial configuration and no application data.
///
/// Rationale: a node added later starts with an empty log and no configuration. Because the
/// founding members' logs begin after this snapshot, the leader cannot send such a node entries
/// from index 1 and sends it a snapshot instead, and the snapshot carries the configuration.
/// Founding members start at term 1, so the first election is for term 2.
pub fn bootstrap_snapshot(config: ConfigState) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index: 1,
            term: 1,
            config,
        },
        data: bytes::Bytes::new(),
    }
}

/// The longest prefix of `entries` whose total size stays within `max_bytes`, but at least one
/// entry.
pub(crate) fn limit_size(entries: &[Entry], max_bytes: u64) -> &[Entry] {
    let mut total = 0u64;
    for (position, entry) in entries.iter().enumerate() {
        total += entry.size_bytes();
        if total > max_bytes && position > 0 {
            return &entries[..position];
        }
    }
    entries
}

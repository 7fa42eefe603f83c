//! The log as the WAL's records describe it, kept in memory: the entries since the last
//! snapshot, the snapshot's index and term, and the hard state. Recovery builds it by replaying
//! the records; a live WAL changes it only once the records are durable.

use raft::{Entry, HardState, StorageError};

/// One change to the log, as a batch record carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// Consecutive entries; they replace every entry at or after the first one's index.
    Entries(Vec<Entry>),
    /// The new hard state.
    HardState(HardState),
    /// The application took a snapshot at `index`: entries up to it may go.
    Compact { index: u64, term: u64 },
    /// A snapshot received from the leader replaces the whole log.
    InstallSnapshot { index: u64, term: u64 },
}

/// The durable log in memory.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogState {
    pub(crate) hard_state: HardState,
    /// The index of the last entry the snapshot covers; entries start after it.
    pub(crate) snapshot_index: u64,
    /// The term at `snapshot_index`. `None` only during recovery, when the oldest segment left
    /// starts after entries that a later compaction record must cover.
    pub(crate) snapshot_term: Option<u64>,
    /// The entries `snapshot_index + 1 ..= last_index()`.
    pub(crate) entries: Vec<Entry>,
}

impl LogState {
    /// A log whose oldest known entry comes after `snapshot_index`, with that entry's term
    /// known or not.
    pub(crate) fn starting_at(
        snapshot_index: u64,
        snapshot_term: Option<u64>,
        hard_state: HardState,
    ) -> LogState {
        LogState {
            hard_state,
            snapshot_index,
            snapshot_term,
            entries: Vec::new(),
        }
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.snapshot_index + self.entries.len() as u64
    }

    /// Applies one item. An error means the records contradict each other; a live WAL checks
    /// items before writing them, so only a damaged or foreign WAL gets one.
    pub(crate) fn apply(&mut self, item: Item) -> Result<(), String> {
        match item {
            Item::Entries(entries) => self.apply_entries(entries),
            Item::HardState(hard_state) => {
                self.hard_state = hard_state;
                Ok(())
            }
            Item::Compact { index, term } => self.apply_compact(index, term),
            Item::InstallSnapshot { index, term } => {
                if self.snapshot_term.is_some() && index <= self.snapshot_index {
                    return Err(format!(
                        "snapshot {index} installed over newer snapshot {}",
                        self.snapshot_index
                    ));
                }
                self.entries.clear();
                self.snapshot_index = index;
                self.snapshot_term = Some(term);
                // As MemoryStorage does: a snapshot holds only committed entries.
                self.hard_state.commit = self.hard_state.commit.max(index);
                Ok(())
            }
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let first_index = first.index;
        if first_index > self.last_index() + 1 {
            return Err(format!(
                "entries at {first_index} leave a gap after {}",
                self.last_index()
            ));
        }
        if first_index <= self.snapshot_index {
            if self.snapshot_term.is_some() {
                return Err(format!(
                    "entries at {first_index} overwrite snapshot {}",
                    self.snapshot_index
                ));
            }
            // The older entries this replaces were in segments already removed; whatever
            // precedes the new entries stays unknown until a compaction covers it.
            self.snapshot_index = first_index - 1;
            self.entries = entries;
            return Ok(());
        }
        self.entries
            .truncate((first_index - self.snapshot_index - 1) as usize);
        self.entries.extend(entries);
        Ok(())
    }

    fn apply_compact(&mut self, index: u64, term: u64) -> Result<(), String> {
        if self.snapshot_term.is_none() && index < self.snapshot_index {
            // An older compaction, from before the oldest entries still known.
            return Ok(());
        }
        if self.snapshot_term.is_none() && index == self.snapshot_index {
            self.snapshot_term = Some(term);
            return Ok(());
        }
        if index <= self.snapshot_index {
            return Err(format!(
                "compaction to {index} after snapshot {}",
                self.snapshot_index
            ));
        }
        if index > self.last_index() {
            return Err(format!(
                "compaction to {index} beyond the last entry {}",
                self.last_index()
            ));
        }
        let position = (index - self.snapshot_index - 1) as usize;
        let found_term = self.entries[position].term;
        if found_term != term {
            return Err(format!(
                "compaction to {index} in term {term}, but the entry has {found_term}"
            ));
        }
        self.entries.drain(..=position);
        self.snapshot_index = index;
        self.snapshot_term = Some(term);
        Ok(())
    }

    pub(crate) fn first_index(&self) -> u64 {
        self.snapshot_index + 1
    }

    pub(crate) fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index < self.snapshot_index {
            return Err(StorageError::Compacted);
        }
        if index == self.snapshot_index {
            return Ok(self
                .snapshot_term
                .expect("a recovered log knows its snapshot's term"));
        }
        match self.entries.get((index - self.snapshot_index - 1) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(StorageError::Unavailable),
        }
    }

    pub(crate) fn entries(
        &self,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low <= self.snapshot_index {
            return Err(StorageError::Compacted);
        }
        if high > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let offset = self.snapshot_index + 1;
        let slice = &self.entries[(low - offset) as usize..(high - offset) as usize];
        let mut total_bytes = 0u64;
        let mut count = 0;
        for entry in slice {
            total_bytes += entry.size_bytes();
            // At least one entry, as the trait promises, even if it alone is too big.
            if total_bytes > max_bytes && count > 0 {
                break;
            }
            count += 1;
        }
        Ok(slice[..count].to_vec())
    }
}

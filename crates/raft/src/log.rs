//! The log as the core sees it: the application's stable storage followed by the entries (or
//! a snapshot) not yet persisted, plus the commit and applied indexes.

use crate::storage::{limit_size, LogStorage, StorageError};
use crate::types::{Entry, Snapshot};

/// Entries and a snapshot that the core holds but the application has not yet persisted.
#[derive(Debug)]
struct Unstable {
    /// A snapshot received from the leader, to persist and install.
    snapshot: Option<Snapshot>,
    /// The snapshot has been handed out in a Ready.
    snapshot_in_progress: bool,
    /// Consecutive entries starting at `offset`.
    entries: Vec<Entry>,
    /// The index of `entries[0]`, or where it would go.
    offset: u64,
    /// Entries from this index on have not been handed out in a Ready yet.
    offset_in_progress: u64,
}

impl Unstable {
    fn last_index(&self) -> Option<u64> {
        if !self.entries.is_empty() {
            return Some(self.offset + self.entries.len() as u64 - 1);
        }
        self.snapshot.as_ref().map(|snapshot| snapshot.meta.index)
    }

    fn term(&self, index: u64) -> Option<u64> {
        if index < self.offset {
            let snapshot = self.snapshot.as_ref()?;
            return (snapshot.meta.index == index).then_some(snapshot.meta.term);
        }
        self.entries
            .get((index - self.offset) as usize)
            .map(|entry| entry.term)
    }

    /// Takes the entries by value: moving them, rather than cloning, spares a reference-count
    /// update per entry on the hot path.
    fn truncate_and_append(&mut self, mut entries: Vec<Entry>) {
        let first = entries[0].index;
        let end = self.offset + self.entries.len() as u64;
        if first == end {
            if self.entries.is_empty() {
                self.entries = entries;
            } else {
                self.entries.append(&mut entries);
            }
        } else if first <= self.offset {
            // The new entries replace everything unstable, and some stable entries too: the
            // application truncates its storage when it persists them.
            self.offset = first;
            self.entries = entries;
        } else {
            self.entries.truncate((first - self.offset) as usize);
            self.entries.append(&mut entries);
        }
        self.offset_in_progress = self.offset_in_progress.min(first);
    }
}

/// The log: stable storage, unstable entries, and the commit and applied indexes.
#[derive(Debug)]
pub(crate) struct RaftLog<S> {
    pub storage: S,
    unstable: Unstable,
    /// The highest index known to be committed.
    pub committed: u64,
    /// The highest index the application has applied.
    pub applied: u64,
    /// The highest index handed out for applying (at or above `applied`).
    applying: u64,
}

impl<S: LogStorage> RaftLog<S> {
    pub(crate) fn new(storage: S, commit: u64, applied: u64) -> RaftLog<S> {
        let first = storage.first_index();
        let last = storage.last_index();
        let compacted = first - 1;
        let committed = commit.max(compacted);
        assert!(
            committed <= last,
            "hard state commit {commit} beyond the last index {last}"
        );
        let applied = applied.max(compacted);
        assert!(
            applied <= committed,
            "applied index {applied} beyond the commit {committed}"
        );
        RaftLog {
            storage,
            unstable: Unstable {
                snapshot: None,
                snapshot_in_progress: false,
                entries: Vec::new(),
                offset: last + 1,
                offset_in_progress: last + 1,
            },
            committed,
            applied,
            applying: applied,
        }
    }

    pub(crate) fn first_index(&self) -> u64 {
        match &self.unstable.snapshot {
            Some(snapshot) => snapshot.meta.index + 1,
            None => self.storage.first_index(),
        }
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.unstable
            .last_index()
            .unwrap_or_else(|| self.storage.last_index())
    }

    /// Entries below this index are persisted (and match what the core holds).
    pub(crate) fn persisted_index(&self) -> u64 {
        if self.unstable.snapshot.is_some() {
            // Nothing is known to be persisted until the snapshot is; only leaders ask, and a
            // node with a pending snapshot does not campaign.
            return 0;
        }
        self.unstable.offset - 1
    }

    pub(crate) fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index + 1 < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        if let Some(term) = self.unstable.term(index) {
            return Ok(term);
        }
        self.storage.term(index)
    }

    pub(crate) fn last_term(&self) -> u64 {
        let last = self.last_index();
        self.term(last)
            .unwrap_or_else(|error| panic!("term of the last index {last}: {error}"))
    }

    pub(crate) fn matches_term(&self, index: u64, term: u64) -> bool {
        self.term(index) == Ok(term)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up to date as ours:
    /// a later last term wins; with equal last terms, the longer log wins.
    pub(crate) fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let our_term = self.last_term();
        last_term > our_term || (last_term == our_term && last_index >= self.last_index())
    }

    /// The index of the first of `entries` that is not in our log with the same term, or None
    /// if all of them are.
    fn find_conflict(&self, entries: &[Entry]) -> Option<u64> {
        entries
            .iter()
            .find(|entry| !self.matches_term(entry.index, entry.term))
            .map(|entry| entry.index)
    }

    /// Walks back from `index` to the last entry whose term is at most `term`, and returns
    /// that index and its term (0 if unknown). This is the hint that lets a leader skip a whole
    /// conflicting term at a time.
    pub(crate) fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut index = index;
        loop {
            match self.term(index) {
                Ok(our_term) if our_term > term && index > 0 => index -= 1,
                Ok(our_term) => return (index, our_term),
                Err(_) => return (index, 0),
            }
        }
    }

    /// The follower's side of AppendEntries. Returns the index of the last new entry when
    /// the log matched at `previous_index`, None otherwise.
    ///
    /// Only entries from the first real conflict on are replaced, so a stale, duplicated or
    /// reordered request never removes entries that match.
    pub(crate) fn maybe_append(
        &mut self,
        previous_index: u64,
        previous_term: u64,
        leader_commit: u64,
        mut entries: Vec<Entry>,
    ) -> Option<u64> {
        if !self.matches_term(previous_index, previous_term) {
            return None;
        }
        let last_new_index = previous_index + entries.len() as u64;
        if let Some(conflict) = self.find_conflict(&entries) {
            assert!(
                conflict > self.committed,
                "entry {conflict} conflicts with a committed entry"
            );
            let start = (conflict - previous_index - 1) as usize;
            entries.drain(..start);
            self.append(entries);
        }
        self.commit_to(leader_commit.min(last_new_index));
        Some(last_new_index)
    }

    /// The seed sketch's bug, planted for the simulator to catch: drops everything after
    /// `previous_index` and appends `entries`, matching or not, committed or not. The commit
    /// index is pulled back to the new end so that later code keeps running until the
    /// simulator's invariants notice.
    pub(crate) fn truncate_and_append_unchecked(
        &mut self,
        previous_index: u64,
        entries: Vec<Entry>,
    ) {
        let first = previous_index + 1;
        if first < self.unstable.offset {
            // Stable entries after `first` are dropped too: the application overwrites them
            // when it persists the new ones, or keeps stale ones if there are none.
            self.unstable.offset = first;
            self.unstable.entries.clear();
            self.unstable.offset_in_progress = first;
        } else {
            self.unstable
                .entries
                .truncate((first - self.unstable.offset) as usize);
            self.unstable.offset_in_progress = self.unstable.offset_in_progress.min(first);
        }
        self.unstable.entries.extend(entries);
        let last = self.last_index();
        self.committed = self.committed.min(last);
        self.applied = self.applied.min(last);
        self.applying = self.applying.min(last);
    }

    /// Appends entries (replacing any from their first index on); returns the last index.
    pub(crate) fn append(&mut self, entries: Vec<Entry>) -> u64 {
        let Some(first) = entries.first() else {
            return self.last_index();
        };
        assert!(
            first.index > self.committed,
            "append at {} rewrites committed entries",
            first.index
        );
        assert!(
            first.index <= self.last_index() + 1,
            "append at {} leaves a gap",
            first.index
        );
        self.unstable.truncate_and_append(entries);
        self.last_index()
    }

    /// Entries from `low` to the end, at most `max_bytes` (but at least one).
    pub(crate) fn entries_from(
        &self,
        low: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let last = self.last_index();
        if low > last {
            return Ok(Vec::new());
        }
        self.slice(low, last + 1, max_bytes)
    }

    /// Entries in `[low, high)`, at most `max_bytes` (but at least one).
    pub(crate) fn slice(
        &self,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if high > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let offset = self.unstable.offset;
        let mut result = Vec::new();
        if low < offset {
            let stored_high = high.min(offset);
            result = self.storage.entries(low, stored_high, max_bytes)?;
            if (result.len() as u64) < stored_high - low {
                return Ok(result);
            }
        }
        if high > offset {
            let start = (low.max(offset) - offset) as usize;
            let end = (high - offset) as usize;
            let unstable = &self.unstable.entries[start..end];
            if result.is_empty() {
                return Ok(limit_size(unstable, max_bytes).to_vec());
            }
            let mut used: u64 = result.iter().map(Entry::size_bytes).sum();
            for entry in unstable {
                used += entry.size_bytes();
                if used > max_bytes {
                    break;
                }
                result.push(entry.clone());
            }
        }
        Ok(result)
    }

    pub(crate) fn commit_to(&mut self, index: u64) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond the last index"
            );
            self.committed = index;
        }
    }

    /// Commits up to `index` if the entry there is of `term`; returns true if the commit
    /// index moved.
    pub(crate) fn maybe_commit(&mut self, index: u64, term: u64) -> bool {
        if index > self.committed && self.matches_term(index, term) {
            self.commit_to(index);
            return true;
        }
        false
    }

    pub(crate) fn has_pending_snapshot(&self) -> bool {
        self.unstable.snapshot.is_some()
    }

    pub(crate) fn has_next_committed_entries(&self) -> bool {
        !self.has_pending_snapshot() && self.committed > self.applying
    }

    /// The committed entries not yet handed out for applying, at most `max_bytes`; marks them
    /// as handed out.
    pub(crate) fn take_committed_entries(&mut self, max_bytes: u64) -> Vec<Entry> {
        if !self.has_next_committed_entries() {
            return Vec::new();
        }
        let low = self.applying + 1;
        let entries = self
            .slice(low, self.committed + 1, max_bytes)
            .unwrap_or_else(|error| panic!("committed entries from {low}: {error}"));
        if let Some(last) = entries.last() {
            self.applying = last.index;
        }
        entries
    }

    pub(crate) fn applied_to(&mut self, index: u64) {
        assert!(
            index <= self.committed,
            "applied {index} beyond the commit {}",
            self.committed
        );
        self.applied = self.applied.max(index);
        self.applying = self.applying.max(self.applied);
    }

    /// Moves the unstable entries out, to be persisted; [`RaftLog::stable_to`] then counts them
    /// as stored. Rationale for moving rather than cloning: between `ready()` and `advance()`
    /// the node is not driven, so nothing reads them here meanwhile, and afterwards they are
    /// read from storage; a clone would cost a reference-count update per entry.
    pub(crate) fn take_unstable_entries(&mut self) -> Vec<Entry> {
        let unstable = &mut self.unstable;
        assert!(
            unstable.offset_in_progress == unstable.offset,
            "entries handed out by an earlier Ready were not advanced"
        );
        let entries = std::mem::take(&mut unstable.entries);
        unstable.offset_in_progress = unstable.offset + entries.len() as u64;
        entries
    }

    pub(crate) fn has_unstable_entries(&self) -> bool {
        self.unstable.offset_in_progress < self.unstable.offset + self.unstable.entries.len() as u64
    }

    /// The unstable snapshot if not yet handed out; marks it as handed out.
    pub(crate) fn take_unstable_snapshot(&mut self) -> Option<Snapshot> {
        if self.unstable.snapshot_in_progress {
            return None;
        }
        let snapshot = self.unstable.snapshot.clone()?;
        self.unstable.snapshot_in_progress = true;
        Some(snapshot)
    }

    pub(crate) fn has_unstable_snapshot(&self) -> bool {
        self.unstable.snapshot.is_some() && !self.unstable.snapshot_in_progress
    }

    /// The application persisted the entries handed out, up to `index`: they are read from
    /// storage from now on.
    pub(crate) fn stable_to(&mut self, index: u64) {
        let unstable = &mut self.unstable;
        assert!(
            unstable.entries.is_empty(),
            "entries were appended between ready() and advance()"
        );
        assert!(
            index + 1 == unstable.offset_in_progress,
            "advance() does not match the entries handed out"
        );
        unstable.offset = index + 1;
    }

    /// The application persisted and installed the snapshot at `index`.
    pub(crate) fn stable_snapshot_to(&mut self, index: u64) {
        if self
            .unstable
            .snapshot
            .as_ref()
            .is_some_and(|snapshot| snapshot.meta.index == index)
        {
            self.unstable.snapshot = None;
            self.unstable.snapshot_in_progress = false;
            self.applied = self.applied.max(index);
            self.applying = self.applying.max(index);
        }
    }

    /// Replaces the log with a snapshot received from the leader.
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(
            index > self.committed,
            "restoring snapshot {index} at or below the commit"
        );
        self.committed = index;
        self.unstable.offset = index + 1;
        self.unstable.offset_in_progress = index + 1;
        self.unstable.entries.clear();
        self.unstable.snapshot = Some(snapshot);
        self.unstable.snapshot_in_progress = false;
    }

    /// The newest snapshot: a pending one, or the application's.
    pub(crate) fn snapshot(&self) -> Result<Snapshot, StorageError> {
        match &self.unstable.snapshot {
            Some(snapshot) => Ok(snapshot.clone()),
            None => self.storage.snapshot(),
        }
    }
}

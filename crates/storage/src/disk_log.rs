//! [`DiskLog`]: the WAL and the snapshot files together, implementing [`raft::LogStorage`] so
//! that the core reads the durable log.

use std::path::Path;

use bytes::Bytes;
use raft::{ConfigState, Entry, HardState, LogStorage, Snapshot, SnapshotMeta, StorageError};

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::snapshot::SnapshotStore;
use crate::wal::{RecoveryReport, Wal, WalOptions};

/// How a [`DiskLog`] lays out its files.
#[derive(Clone, Debug)]
pub struct DiskLogOptions {
    /// The WAL's options.
    pub wal: WalOptions,
    /// How many snapshot files to keep, the newest included.
    pub snapshots_retained_count: usize,
}

impl Default for DiskLogOptions {
    fn default() -> DiskLogOptions {
        DiskLogOptions {
            wal: WalOptions::default(),
            snapshots_retained_count: 3,
        }
    }
}

/// A node's durable log: the WAL in `<directory>/wal` and the snapshots in
/// `<directory>/snapshots`.
///
/// Driving it from a Ready: [`DiskLog::install_snapshot`] if the Ready has a snapshot, then
/// [`DiskLog::stage_ready`] with its entries and hard state, then [`DiskLog::sync`] — once for
/// several Readys if they queued up — and only after `sync` returned, send the messages that
/// depend on them. An error from `sync` for which [`Error::is_fatal`] holds means: stop the
/// node.
#[derive(Debug)]
pub struct DiskLog<D: Disk> {
    wal: Wal<D>,
    snapshots: SnapshotStore<D>,
    /// The durable snapshot, without its data: the data stays in its file until a follower
    /// needs it (Rationale: an image of the whole state machine is as large as the state, and
    /// holding it in memory between snapshots doubled a node's resident memory).
    snapshot: Snapshot,
    /// An installed snapshot whose WAL record is not yet synced.
    pending_snapshot: Option<Snapshot>,
}

/// What a [`DiskLog`] opened on an empty directory starts from. Once the directory holds
/// anything, later opens ignore it: the disk says what the node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// A founding member of a new cluster, with the cluster's initial configuration (at least
    /// one voter). The log starts from [`raft::bootstrap_snapshot`] of it — index 1, term 1 —
    /// with hard state term 1, no vote, commit 1: what [`raft::MemoryStorage::new_with_config`]
    /// gives.
    Founder(ConfigState),
    /// A founding member of a cluster rebuilt from a backup: the log starts from this snapshot
    /// (which carries the backup's state and the new cluster's configuration), with hard
    /// state term the snapshot's term, no vote, commit at the snapshot. Every founder of the
    /// rebuilt cluster must be given the same snapshot.
    Restored(Snapshot),
    /// A node to be added to a running cluster. The log starts empty — index 0, no
    /// configuration — as [`raft::MemoryStorage::default`], and the leader sends it a snapshot.
    Joiner,
}

impl<D: Disk> DiskLog<D> {
    /// Opens the log in `directory`, replaying the WAL and loading the newest snapshot. On an
    /// empty directory, `bootstrap` says where the log starts; a founder's bootstrap snapshot
    /// and hard state are durable before this returns.
    ///
    /// A founder whose configuration has no voter is an [`Error::InvalidArgument`], and nothing
    /// is written.
    pub fn open(
        disk: D,
        directory: &Path,
        options: DiskLogOptions,
        bootstrap: Bootstrap,
    ) -> Result<(DiskLog<D>, RecoveryReport)> {
        let founding_config = match &bootstrap {
            Bootstrap::Founder(config) => Some(config),
            Bootstrap::Restored(snapshot) => Some(&snapshot.meta.config),
            Bootstrap::Joiner => None,
        };
        if let Some(config) = founding_config {
            if config.voters.is_empty() {
                return Err(Error::InvalidArgument {
                    reason: "a founding member's initial configuration needs a voter".to_owned(),
                });
            }
        }
        let snapshot_directory = directory.join("snapshots");
        let snapshots = SnapshotStore::open(
            disk.clone(),
            &snapshot_directory,
            options.snapshots_retained_count,
        )?;
        let (newest, removed) = snapshots.load_newest()?;
        let (mut wal, mut report) = Wal::open(disk, &directory.join("wal"), options.wal)?;
        report.removed_temporary_files.extend(removed);
        let (wal_index, wal_term) = wal.snapshot_index_and_term();
        let wal_is_empty =
            wal_index == 0 && wal.last_index() == 0 && wal.hard_state() == HardState::default();
        let snapshot = match (newest, bootstrap) {
            (Some(snapshot), _) => snapshot,
            (None, _) if wal_index != 0 => {
                return Err(Error::Inconsistent {
                    path: snapshot_directory,
                    reason: format!(
                        "the WAL is compacted to index {wal_index} but there is no snapshot"
                    ),
                })
            }
            (None, Bootstrap::Founder(config)) if wal_is_empty => {
                // The file first, then (below, as for any snapshot newer than the WAL) the WAL
                // record and the hard state: a crash in between is finished on the next open.
                let snapshot = raft::bootstrap_snapshot(config);
                snapshots.save(&snapshot)?;
                snapshot
            }
            (None, Bootstrap::Restored(snapshot)) if wal_is_empty => {
                // As for a founder: the file first, then the WAL record (below).
                if snapshot.meta.index == 0 {
                    return Err(Error::InvalidArgument {
                        reason: "a restored log's snapshot needs an index of at least 1".to_owned(),
                    });
                }
                snapshots.save(&snapshot)?;
                snapshot
            }
            // A joiner, or a node whose log began at index 1 without a snapshot.
            (None, _) => Snapshot::default(),
        };
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        if index < wal_index || (index == wal_index && term != wal_term) {
            return Err(Error::Inconsistent {
                path: snapshot_directory,
                reason: format!(
                    "the newest snapshot is {index} in term {term}, the WAL is compacted to \
                     {wal_index} in term {wal_term}"
                ),
            });
        }
        if index > wal_index {
            // The snapshot file was saved but the crash came before its WAL record was durable
            // (or this is a founder's first open).
            if wal.term(index) == Ok(term) {
                wal.stage_compaction(index, term)?;
            } else {
                wal.stage_install_snapshot(index, term)?;
            }
            let hard_state = wal.hard_state();
            if hard_state.term < term {
                // Rationale: a node holding a snapshot of term `term` has seen that term; the
                // hard state that said so may have been lost with the crash. Raising the term
                // (and so forgetting a vote of an older term) is always safe. For a founder this
                // is the bootstrap's term 1.
                wal.stage_hard_state(HardState {
                    term,
                    vote: None,
                    commit: hard_state.commit.max(index),
                })?;
            }
            wal.sync()?;
            wal.remove_obsolete_segments()?;
        }
        Ok((
            DiskLog {
                wal,
                snapshots,
                snapshot: without_data(snapshot),
                pending_snapshot: None,
            },
            report,
        ))
    }

    /// Stages one Ready's entries and hard state, in that order so that a commit index never
    /// points past the entries written with it. Durable after [`DiskLog::sync`].
    pub fn stage_ready(&mut self, hard_state: Option<HardState>, entries: &[Entry]) -> Result<()> {
        self.wal.stage_entries(entries)?;
        if let Some(hard_state) = hard_state {
            self.wal.stage_hard_state(hard_state)?;
        }
        Ok(())
    }

    /// Saves a snapshot received from the leader (durably, now) and stages the WAL record that
    /// replaces the log with it; the log shows it after [`DiskLog::sync`]. A snapshot not newer
    /// than the current one is ignored, as [`raft::MemoryStorage`] does.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<()> {
        let newest_index = self
            .pending_snapshot
            .as_ref()
            .unwrap_or(&self.snapshot)
            .meta
            .index;
        if snapshot.meta.index <= newest_index {
            return Ok(());
        }
        self.snapshots.save(&snapshot)?;
        self.wal
            .stage_install_snapshot(snapshot.meta.index, snapshot.meta.term)?;
        self.pending_snapshot = Some(snapshot);
        Ok(())
    }

    /// Makes everything staged durable with one write and one `fdatasync`; see [`Wal::sync`].
    pub fn sync(&mut self) -> Result<()> {
        self.wal.sync()?;
        if let Some(snapshot) = self.pending_snapshot.take() {
            self.snapshot = without_data(snapshot);
            self.wal.remove_obsolete_segments()?;
        }
        Ok(())
    }

    /// Writes everything staged without making it durable; see [`Wal::write`]. For a Ready
    /// whose `must_sync` is false: its commit index may be lost in a crash, and the leader tells
    /// it again.
    pub fn write(&mut self) -> Result<()> {
        self.wal.write()
    }

    /// Records a snapshot of the application's state as of `index`, which must be applied and
    /// so durable: saves it, compacts the log up to it and removes the segments that held only
    /// compacted entries. [`DiskLog::snapshot_store`] and [`DiskLog::adopt_snapshot`] do the
    /// same in two steps, the slow one (writing the file) on another thread.
    ///
    /// Returns false, changing nothing, when `index` is not newer than the current snapshot
    /// or not in the durable log. Anything staged is made durable along with the compaction.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        config: ConfigState,
        data: Bytes,
    ) -> Result<bool> {
        let Some(meta) = self.snapshot_meta_at(index, config) else {
            return Ok(false);
        };
        self.snapshots.save(&Snapshot {
            meta: meta.clone(),
            data,
        })?;
        self.adopt_snapshot(meta)
    }

    /// The metadata a snapshot of the state as of `index` would carry, or None if it would not
    /// be newer than the current snapshot or `index` is not in the log.
    pub fn snapshot_meta_at(&self, index: u64, config: ConfigState) -> Option<SnapshotMeta> {
        let newest_index = self
            .pending_snapshot
            .as_ref()
            .unwrap_or(&self.snapshot)
            .meta
            .index;
        if index <= newest_index || index > self.wal.last_index() {
            return None;
        }
        let term = self.wal.term(index).ok()?;
        Some(SnapshotMeta {
            index,
            term,
            config,
        })
    }

    /// A handle on the snapshot files, to save a snapshot from another thread with
    /// [`SnapshotStore::save`] before [`DiskLog::adopt_snapshot`] takes it.
    pub fn snapshot_store(&self) -> SnapshotStore<D> {
        self.snapshots.clone()
    }

    /// Compacts the log up to a snapshot whose file was saved durably (with the store from
    /// [`DiskLog::snapshot_store`]) AFTER `meta` came from [`DiskLog::snapshot_meta_at`]: the
    /// file first, then the WAL record that drops the entries it covers. Returns false,
    /// changing nothing, if the log moved on meanwhile (a newer snapshot, or the entry at
    /// `meta.index` is gone or of another term).
    pub fn adopt_snapshot(&mut self, meta: SnapshotMeta) -> Result<bool> {
        let still_valid = self
            .snapshot_meta_at(meta.index, meta.config.clone())
            .is_some_and(|current| current.term == meta.term);
        if !still_valid {
            return Ok(false);
        }
        self.wal.stage_compaction(meta.index, meta.term)?;
        self.sync()?;
        self.snapshot = Snapshot {
            meta,
            data: Bytes::new(),
        };
        self.wal.remove_obsolete_segments()?;
        Ok(true)
    }

    /// The durable snapshot with its data, read from its file and verified. What
    /// [`LogStorage::snapshot`] gives, with the reason when the file cannot be read.
    pub fn read_snapshot(&self) -> Result<Snapshot> {
        if self.snapshot.meta.index == 0 {
            // A joiner that has received nothing yet: no file, nothing to read.
            return Ok(self.snapshot.clone());
        }
        let path = self
            .snapshots
            .path_of(self.snapshot.meta.index, self.snapshot.meta.term);
        self.snapshots.load(&path)
    }

    /// The durable hard state.
    pub fn hard_state(&self) -> HardState {
        self.wal.hard_state()
    }

    /// The WAL, for inspection.
    pub fn wal(&self) -> &Wal<D> {
        &self.wal
    }
}

impl<D: Disk> LogStorage for DiskLog<D> {
    fn initial_state(&self) -> (HardState, ConfigState) {
        (self.wal.hard_state(), self.snapshot.meta.config.clone())
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        self.wal.entries(low, high, max_bytes)
    }

    fn term(&self, index: u64) -> std::result::Result<u64, StorageError> {
        self.wal.term(index)
    }

    fn first_index(&self) -> u64 {
        self.wal.first_index()
    }

    fn last_index(&self) -> u64 {
        self.wal.last_index()
    }

    fn snapshot(&self) -> std::result::Result<Snapshot, StorageError> {
        // A file that cannot be read now is retried by the leader later; the next start
        // reports it with its reason.
        self.read_snapshot()
            .map_err(|_| StorageError::SnapshotTemporarilyUnavailable)
    }
}

/// The snapshot's metadata alone.
fn without_data(snapshot: Snapshot) -> Snapshot {
    Snapshot {
        data: Bytes::new(),
        ..snapshot
    }
}

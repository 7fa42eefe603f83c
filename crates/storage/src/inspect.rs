//! Read-only inspection of a node's storage directory: every WAL segment's records and every
//! snapshot file, each checksum checked and the records replayed, for operators (`flotilla wal
//! inspect` and `flotilla wal verify`) and for the simulator, which picks old records to damage.
//!
//! Nothing is changed. Unlike [`crate::DiskLog::open`], a torn tail is reported rather than
//! zeroed, and leftovers of interrupted writes are listed rather than removed. The rules for
//! what is damage are recovery's own (FORMAT.md, "Recovery"): the same code reads the records.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::{HardState, SnapshotMeta};

use crate::disk::{Disk, DiskFile};
use crate::error::{io_error, Error, Result};
use crate::log_state::{Item, LogState};
use crate::snapshot::{load_snapshot_file, parse_snapshot_name};
use crate::wal::{
    check_segment_header, decode_items, parse_segment_name, read_segment, record_length_bytes,
    scan_segment, Damage, Segment, TornTail,
};

/// What a storage directory holds, and the problems found in it.
#[derive(Debug)]
pub struct Inspection {
    /// The directory inspected.
    pub directory: PathBuf,
    /// The WAL segments, in sequence order.
    pub segments: Vec<SegmentReport>,
    /// The snapshot files, oldest first.
    pub snapshots: Vec<SnapshotReport>,
    /// Leftovers of interrupted segment or snapshot creations; the next open removes them.
    pub temporary_files: Vec<PathBuf>,
    /// Files that are not storage's; the next open leaves them alone.
    pub ignored_files: Vec<PathBuf>,
    /// A torn write at the end of the last segment; the next open discards it. Not a problem:
    /// it is what a crash during a write leaves.
    pub torn_tail: Option<TornTail>,
    /// The log the WAL describes, if it could be replayed to the end.
    pub log: Option<LogReport>,
    /// Everything wrong, in the order found: segments first, then snapshots. The next open
    /// would fail on one of them.
    pub problems: Vec<Error>,
}

impl Inspection {
    /// The first problem found, the one to report.
    pub fn first_problem(&self) -> Option<&Error> {
        self.problems.first()
    }
}

/// One WAL segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// Its sequence number, from its name.
    pub sequence: u64,
    /// The index of the first entry it was created for, from its name.
    pub first_index: u64,
    /// The file's length, preallocated space included.
    pub length_bytes: u64,
    /// The valid records in order, the segment header first; empty when the header itself is
    /// damaged.
    pub records: Vec<RecordReport>,
    /// Where the valid records end: damage, a torn write, or the zeroed free space starts here.
    pub end_offset_bytes: u64,
}

/// One valid record of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordReport {
    /// Where the record starts in the file.
    pub offset_bytes: u64,
    /// The whole record: header, body and padding.
    pub length_bytes: u64,
    /// What it holds.
    pub contents: RecordContents,
}

/// What a record holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordContents {
    /// The segment header: the log's state when the segment was created.
    SegmentHeader {
        /// The snapshot index then.
        snapshot_index: u64,
        /// The snapshot term then.
        snapshot_term: u64,
        /// The hard state then.
        hard_state: HardState,
    },
    /// A batch: what one sync (or one buffer flush) wrote. Empty if its checksum matched but
    /// its items could not be decoded (a problem says why).
    Batch(Vec<ItemReport>),
}

/// One item of a batch record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemReport {
    /// Consecutive entries, replacing every entry from `first_index` on.
    Entries {
        /// The first entry's index.
        first_index: u64,
        /// The last entry's index.
        last_index: u64,
        /// The first entry's term.
        first_term: u64,
        /// The last entry's term.
        last_term: u64,
    },
    /// A new hard state.
    HardState(HardState),
    /// A local snapshot covers the log up to `index`.
    Compaction {
        /// The snapshot's index.
        index: u64,
        /// Its term.
        term: u64,
    },
    /// A leader's snapshot replaced the log.
    SnapshotInstalled {
        /// The snapshot's index.
        index: u64,
        /// Its term.
        term: u64,
    },
}

impl ItemReport {
    fn from_item(item: &Item) -> ItemReport {
        match item {
            Item::Entries(entries) => {
                let first = entries
                    .first()
                    .expect("a decoded entries item is not empty");
                let last = entries.last().expect("not empty");
                ItemReport::Entries {
                    first_index: first.index,
                    last_index: last.index,
                    first_term: first.term,
                    last_term: last.term,
                }
            }
            Item::HardState(hard_state) => ItemReport::HardState(*hard_state),
            Item::Compact { index, term } => ItemReport::Compaction {
                index: *index,
                term: *term,
            },
            Item::InstallSnapshot { index, term } => ItemReport::SnapshotInstalled {
                index: *index,
                term: *term,
            },
        }
    }
}

/// One snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The file.
    pub path: PathBuf,
    /// The index its name gives.
    pub index: u64,
    /// The term its name gives.
    pub term: u64,
    /// The file's length.
    pub length_bytes: u64,
    /// Its metadata, when the file is sound.
    pub meta: Option<SnapshotMeta>,
    /// The length of the application's data, when the file is sound.
    pub data_bytes: u64,
}

/// The log as the WAL's records describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogReport {
    /// The index the WAL's snapshot covers.
    pub snapshot_index: u64,
    /// Its term.
    pub snapshot_term: u64,
    /// The last entry's index (the snapshot's when there is none after it).
    pub last_index: u64,
    /// The hard state.
    pub hard_state: HardState,
}

/// Inspects the storage directory `directory` (the one holding `wal/` and `snapshots/`),
/// changing nothing.
///
/// Damage inside the directory is reported in [`Inspection::problems`]; an `Err` means the
/// directory could not be inspected at all: it cannot be listed, or it holds neither a segment
/// nor a snapshot, so it is not a node's storage directory.
pub fn inspect<D: Disk>(disk: &D, directory: &Path) -> Result<Inspection> {
    let wal_directory = directory.join("wal");
    let snapshot_directory = directory.join("snapshots");
    let wal_names = list_if_present(disk, &wal_directory)?;
    let snapshot_names = list_if_present(disk, &snapshot_directory)?;
    let mut inspection = Inspection {
        directory: directory.to_path_buf(),
        segments: Vec::new(),
        snapshots: Vec::new(),
        temporary_files: Vec::new(),
        ignored_files: Vec::new(),
        torn_tail: None,
        log: None,
        problems: Vec::new(),
    };
    let mut segments = Vec::new();
    for name in &wal_names {
        let path = wal_directory.join(name);
        match parse_segment_name(name) {
            Some((sequence, first_index)) => segments.push(Segment {
                sequence,
                first_index,
                path,
            }),
            None if name.ends_with(".wal.tmp") => inspection.temporary_files.push(path),
            None => inspection.ignored_files.push(path),
        }
    }
    let mut snapshot_files = Vec::new();
    for name in &snapshot_names {
        let path = snapshot_directory.join(name);
        match parse_snapshot_name(name) {
            Some((index, term)) => snapshot_files.push((index, term, path)),
            None if name.ends_with(".snap.tmp") => inspection.temporary_files.push(path),
            None => inspection.ignored_files.push(path),
        }
    }
    if segments.is_empty() && snapshot_files.is_empty() {
        return Err(Error::InvalidArgument {
            reason: format!(
                "{} is not a Flotilla storage directory: no WAL segment in {} and no snapshot \
                 in {}",
                directory.display(),
                wal_directory.display(),
                snapshot_directory.display()
            ),
        });
    }
    segments.sort_by_key(|segment| segment.sequence);
    snapshot_files.sort();

    let replayed = inspect_segments(disk, &wal_directory, &segments, &mut inspection);
    inspection.log = replayed.map(|state| LogReport {
        snapshot_index: state.snapshot_index,
        snapshot_term: state.snapshot_term.expect("checked by inspect_segments"),
        last_index: state.last_index(),
        hard_state: state.hard_state,
    });
    inspect_snapshots(disk, &snapshot_directory, snapshot_files, &mut inspection);
    Ok(inspection)
}

/// The names in `directory`, or none if it does not exist.
fn list_if_present<D: Disk>(disk: &D, directory: &Path) -> Result<Vec<String>> {
    match disk.list(directory) {
        Ok(names) => Ok(names),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(io_error("list", directory)(error)),
    }
}

/// Reads every segment, checking every record; replays them as recovery would until the first
/// problem. Returns the replayed log if nothing went wrong.
fn inspect_segments<D: Disk>(
    disk: &D,
    wal_directory: &Path,
    segments: &[Segment],
    inspection: &mut Inspection,
) -> Option<LogState> {
    let mut state: Option<LogState> = None;
    let mut replaying = true;
    for pair in segments.windows(2) {
        if pair[1].sequence != pair[0].sequence + 1 {
            inspection.problems.push(Error::Inconsistent {
                path: wal_directory.to_path_buf(),
                reason: format!(
                    "segment sequence jumps from {} to {}: a segment is missing",
                    pair[0].sequence, pair[1].sequence
                ),
            });
            replaying = false;
        }
    }
    for (position, segment) in segments.iter().enumerate() {
        let is_last = position + 1 == segments.len();
        let mut report = SegmentReport {
            path: segment.path.clone(),
            sequence: segment.sequence,
            first_index: segment.first_index,
            length_bytes: 0,
            records: Vec::new(),
            end_offset_bytes: 0,
        };
        let read = read_segment(disk, segment);
        let data = match read {
            Ok((_, data)) => data,
            Err(error) => {
                inspection.problems.push(error);
                inspection.segments.push(report);
                replaying = false;
                continue;
            }
        };
        report.length_bytes = data.len() as u64;
        let scan = match scan_segment(segment, &data, is_last) {
            Ok(scan) => scan,
            Err(error) => {
                inspection.problems.push(error);
                inspection.segments.push(report);
                replaying = false;
                continue;
            }
        };
        if replaying {
            if let Err(error) = check_segment_header(segment, &scan.header, &mut state) {
                inspection.problems.push(error);
                replaying = false;
            }
        }
        report.records.push(RecordReport {
            offset_bytes: 0,
            length_bytes: scan.data_start as u64,
            contents: RecordContents::SegmentHeader {
                snapshot_index: scan.header.summary.snapshot_index,
                snapshot_term: scan.header.summary.snapshot_term,
                hard_state: scan.header.summary.hard_state,
            },
        });
        let shared = Bytes::from(data);
        for (offset, body) in &scan.batches {
            let corrupt = |reason: String| Error::Corrupt {
                path: segment.path.clone(),
                offset_bytes: *offset as u64,
                reason,
            };
            let items = match decode_items(shared.slice(body.clone())) {
                Ok(items) => items,
                Err(reason) => {
                    inspection.problems.push(corrupt(reason));
                    replaying = false;
                    Vec::new()
                }
            };
            report.records.push(RecordReport {
                offset_bytes: *offset as u64,
                length_bytes: record_length_bytes(body.len()) as u64,
                contents: RecordContents::Batch(items.iter().map(ItemReport::from_item).collect()),
            });
            if !replaying {
                continue;
            }
            let log = state.as_mut().expect("the header set the state up");
            for item in items {
                if let Err(reason) = log.apply(item) {
                    inspection.problems.push(corrupt(reason));
                    replaying = false;
                    break;
                }
            }
        }
        report.end_offset_bytes = scan.end_offset as u64;
        match scan.damage {
            None => {}
            Some(Damage::Corrupt { reason }) => {
                inspection.problems.push(Error::Corrupt {
                    path: segment.path.clone(),
                    offset_bytes: scan.end_offset as u64,
                    reason,
                });
                replaying = false;
            }
            Some(Damage::Torn { discarded_bytes }) => {
                inspection.torn_tail = Some(TornTail {
                    path: segment.path.clone(),
                    offset_bytes: scan.end_offset as u64,
                    discarded_bytes: discarded_bytes as u64,
                });
            }
        }
        inspection.segments.push(report);
    }
    let state = state.filter(|_| replaying)?;
    if state.snapshot_term.is_none() {
        inspection.problems.push(Error::Inconsistent {
            path: segments[0].path.clone(),
            reason: format!(
                "the oldest segment starts after index {}, which no snapshot covers: older \
                 segments are missing",
                state.snapshot_index
            ),
        });
        return None;
    }
    Some(state)
}

/// Checks every snapshot file, and the newest against the WAL as [`crate::DiskLog::open`] does.
fn inspect_snapshots<D: Disk>(
    disk: &D,
    snapshot_directory: &Path,
    files: Vec<(u64, u64, PathBuf)>,
    inspection: &mut Inspection,
) {
    for (index, term, path) in files {
        // The length alone; a file that cannot be opened is reported by the load below.
        let length_bytes = disk
            .open(&path)
            .and_then(|file| file.len_bytes())
            .unwrap_or(0);
        let mut report = SnapshotReport {
            path: path.clone(),
            index,
            term,
            length_bytes,
            meta: None,
            data_bytes: 0,
        };
        match load_snapshot_file(disk, &path) {
            Ok(snapshot) if snapshot.meta.index != index || snapshot.meta.term != term => {
                inspection.problems.push(Error::Corrupt {
                    path,
                    offset_bytes: crate::SNAPSHOT_HEADER_BYTES as u64,
                    reason: format!(
                        "holds snapshot {}/{}, its name says {index}/{term}",
                        snapshot.meta.index, snapshot.meta.term
                    ),
                });
            }
            Ok(snapshot) => {
                report.data_bytes = snapshot.data.len() as u64;
                report.meta = Some(snapshot.meta);
            }
            Err(error) => inspection.problems.push(error),
        }
        inspection.snapshots.push(report);
    }
    let Some(log) = inspection.log else {
        return;
    };
    let newest = inspection
        .snapshots
        .last()
        .map(|report| (report.index, report.term));
    let (index, term) = newest.unwrap_or((0, 0));
    if log.snapshot_index != 0 && newest.is_none() {
        inspection.problems.push(Error::Inconsistent {
            path: snapshot_directory.to_path_buf(),
            reason: format!(
                "the WAL is compacted to index {} but there is no snapshot",
                log.snapshot_index
            ),
        });
    } else if index < log.snapshot_index
        || (index == log.snapshot_index && term != log.snapshot_term)
    {
        inspection.problems.push(Error::Inconsistent {
            path: snapshot_directory.to_path_buf(),
            reason: format!(
                "the newest snapshot is {index} in term {term}, the WAL is compacted to {} in \
                 term {}",
                log.snapshot_index, log.snapshot_term
            ),
        });
    }
}

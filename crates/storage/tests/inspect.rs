//! `storage::inspect`: what it lists, that it finds what recovery finds, and that it changes
//! nothing.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::{ConfigState, Entry, EntryPayload, HardState, LogStorage};
use storage::inspect::{inspect, Inspection, ItemReport, RecordContents};
use storage::{
    Bootstrap, CrashMode, Disk, DiskFile, DiskLog, DiskLogOptions, Error, Preallocation, SimDisk,
    WalOptions,
};

const DIRECTORY: &str = "/node";

fn options() -> DiskLogOptions {
    DiskLogOptions {
        wal: WalOptions {
            segment_size_bytes: 2048,
            preallocation: Preallocation::SetLength,
            ..WalOptions::default()
        },
        snapshots_retained_count: 2,
    }
}

fn config() -> ConfigState {
    ConfigState::with_voters([1, 2, 3])
}

fn open(disk: &SimDisk) -> std::result::Result<DiskLog<SimDisk>, Error> {
    let bootstrap = Bootstrap::Founder(config());
    DiskLog::open(disk.clone(), Path::new(DIRECTORY), options(), bootstrap).map(|(log, _)| log)
}

fn entries(first: u64, last: u64, term: u64) -> Vec<Entry> {
    (first..=last)
        .map(|index| Entry {
            term,
            index,
            payload: EntryPayload::Normal(Bytes::from(format!("command {index}"))),
        })
        .collect()
}

/// A founder's log with entries 2..=121 over several segments, a snapshot at 30, and a hard
/// state.
fn written_log(disk: &SimDisk) -> DiskLog<SimDisk> {
    let mut log = unsnapshotted_log(disk);
    assert!(log
        .create_snapshot(30, config(), Bytes::from("state at 30"))
        .unwrap());
    log
}

/// A founder's log with entries 2..=121 over several segments.
fn unsnapshotted_log(disk: &SimDisk) -> DiskLog<SimDisk> {
    let mut log = open(disk).unwrap();
    for batch in 0..12 {
        let first = 2 + batch * 10;
        let hard_state = HardState {
            term: 2,
            vote: Some(1),
            commit: first - 1,
        };
        log.stage_ready(Some(hard_state), &entries(first, first + 9, 2))
            .unwrap();
        log.sync().unwrap();
    }
    log
}

fn inspect_node(disk: &SimDisk) -> Inspection {
    inspect(disk, Path::new(DIRECTORY)).unwrap()
}

/// Every file's path and contents, to show that inspection changes nothing.
fn all_files(disk: &SimDisk) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for directory in ["wal", "snapshots"] {
        let directory = Path::new(DIRECTORY).join(directory);
        for name in disk.list(&directory).unwrap() {
            let path = directory.join(name);
            let contents = disk.contents(&path).unwrap();
            files.push((path, contents));
        }
    }
    files
}

#[test]
fn a_sound_log_lists_every_record_and_replays_to_the_log_open_gives() {
    let disk = SimDisk::new();
    let log = written_log(&disk);
    let inspection = inspect_node(&disk);
    assert!(inspection.problems.is_empty(), "{:?}", inspection.problems);
    assert_eq!(inspection.torn_tail, None);
    assert_eq!(inspection.segments.len(), log.wal().segments_count());
    let log_report = inspection.log.expect("replayed");
    assert_eq!(log_report.last_index, log.last_index());
    assert_eq!(log_report.snapshot_index, 30);
    assert_eq!(log_report.hard_state, log.hard_state());
    for segment in &inspection.segments {
        // Records follow each other without gaps, the header first.
        assert!(matches!(
            segment.records[0].contents,
            RecordContents::SegmentHeader { .. }
        ));
        let mut offset = 0;
        for record in &segment.records {
            assert_eq!(record.offset_bytes, offset);
            offset += record.length_bytes;
        }
        assert_eq!(segment.end_offset_bytes, offset);
    }
    // Every entry written is listed once, in order, among the remaining segments' items.
    let last_listed = inspection
        .segments
        .iter()
        .flat_map(|segment| &segment.records)
        .filter_map(|record| match &record.contents {
            RecordContents::Batch(items) => Some(items),
            RecordContents::SegmentHeader { .. } => None,
        })
        .flatten()
        .filter_map(|item| match item {
            ItemReport::Entries { last_index, .. } => Some(*last_index),
            _ => None,
        })
        .max();
    assert_eq!(last_listed, Some(121));
    let snapshot_indexes: Vec<u64> = inspection.snapshots.iter().map(|s| s.index).collect();
    assert_eq!(
        snapshot_indexes,
        vec![1, 30],
        "the bootstrap snapshot and the new one"
    );
    let newest = inspection.snapshots.last().unwrap();
    assert_eq!(
        newest.meta.as_ref().map(|meta| meta.config.clone()),
        Some(config())
    );
    assert_eq!(newest.data_bytes, "state at 30".len() as u64);
}

#[test]
fn a_torn_tail_is_reported_as_recovery_finds_it_and_nothing_changes() {
    let mut torn_count = 0;
    for seed in 0..40 {
        let disk = SimDisk::new();
        let mut log = written_log(&disk);
        log.stage_ready(None, &entries(122, 130, 2)).unwrap();
        log.write().unwrap();
        drop(log);
        disk.crash(CrashMode::TearUnsynced { seed });
        let before = all_files(&disk);
        let inspection = inspect_node(&disk);
        assert!(
            inspection.problems.is_empty(),
            "seed {seed}: {:?}",
            inspection.problems
        );
        assert_eq!(all_files(&disk), before, "seed {seed}: inspection wrote");
        let (_, report) = DiskLog::open(
            disk.clone(),
            Path::new(DIRECTORY),
            options(),
            Bootstrap::Joiner,
        )
        .unwrap();
        assert_eq!(inspection.torn_tail, report.torn_tail, "seed {seed}");
        torn_count += usize::from(report.torn_tail.is_some());
    }
    assert!(
        torn_count > 5,
        "the crashes tore the write: {torn_count} of 40"
    );
}

#[test]
fn every_flipped_bit_of_an_old_record_is_the_error_open_gives() {
    let disk = SimDisk::new();
    drop(unsnapshotted_log(&disk));
    let inspection = inspect_node(&disk);
    let segment = &inspection.segments[0];
    assert!(
        inspection.segments.len() > 1,
        "the first segment is not the last"
    );
    let pristine = disk.contents(&segment.path).unwrap();
    let end = segment.end_offset_bytes;
    for offset in (0..end).step_by(3) {
        let bit = (offset % 8) as u8;
        assert!(disk.flip_bit(&segment.path, offset, bit));
        let inspection = inspect_node(&disk);
        let problem = inspection.first_problem().expect("a flipped bit is found");
        let opened = open(&disk).expect_err("a flipped bit stops the node");
        assert_eq!(problem.to_string(), opened.to_string(), "offset {offset}");
        let Error::Corrupt {
            path, offset_bytes, ..
        } = problem
        else {
            panic!("offset {offset}: {problem}");
        };
        assert_eq!(path, &segment.path);
        let record = segment
            .records
            .iter()
            .rfind(|record| record.offset_bytes <= offset)
            .unwrap();
        assert_eq!(
            *offset_bytes, record.offset_bytes,
            "the damaged record's start"
        );
        disk.set_contents(&segment.path, &pristine);
    }
    assert!(inspect_node(&disk).problems.is_empty());
}

#[test]
fn a_damaged_snapshot_is_a_problem_naming_it() {
    let disk = SimDisk::new();
    drop(written_log(&disk));
    let path = inspect_node(&disk).snapshots[0].path.clone();
    assert!(disk.flip_bit(&path, 20, 1));
    let inspection = inspect_node(&disk);
    let problem = inspection.first_problem().expect("found");
    assert!(matches!(problem, Error::Corrupt { .. }), "{problem}");
    assert!(
        problem.to_string().contains(&*path.to_string_lossy()),
        "{problem}"
    );
    assert_eq!(inspection.snapshots[0].meta, None);
}

#[test]
fn leftovers_are_listed_not_removed() {
    let disk = SimDisk::new();
    drop(written_log(&disk));
    let leftover = Path::new(DIRECTORY).join("wal/0000000000000099-0000000000000001.wal.tmp");
    let mut file = disk.create(&leftover).unwrap();
    file.write_all_at(0, b"half a segment").unwrap();
    let inspection = inspect_node(&disk);
    assert_eq!(inspection.temporary_files, vec![leftover.clone()]);
    assert!(inspection.problems.is_empty());
    assert!(disk.contents(&leftover).is_some());
}

#[test]
fn a_directory_without_storage_is_an_error_not_an_empty_report() {
    let disk = SimDisk::new();
    let error = inspect(&disk, Path::new("/nothing-here")).expect_err("not storage");
    assert!(matches!(error, Error::InvalidArgument { .. }), "{error}");
    assert!(error.to_string().contains("/nothing-here"), "{error}");
}

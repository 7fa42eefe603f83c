//! Recovery against damage: a WAL cut at every byte of its last records keeps exactly the
//! whole records before the cut, and every flipped bit is either a torn tail (in the last
//! record) or an error naming the file and offset (anywhere else).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::{ConfigChange, ConfigChangeStep, Entry, EntryPayload, HardState};
use storage::{CrashMode, Disk, DiskFile, Error, Preallocation, SimDisk, Wal, WalOptions};

const DIRECTORY: &str = "/wal";

/// What the WAL shows after a sync: enough to tell any two prefixes of the history apart.
#[derive(Clone, Debug, PartialEq, Eq)]
struct View {
    hard_state: HardState,
    snapshot: (u64, u64),
    first_index: u64,
    entries: Vec<Entry>,
}

fn view(wal: &Wal<SimDisk>) -> View {
    View {
        hard_state: wal.hard_state(),
        snapshot: wal.snapshot_index_and_term(),
        first_index: wal.first_index(),
        entries: wal
            .entries(wal.first_index(), wal.last_index() + 1, u64::MAX)
            .unwrap(),
    }
}

fn entry(index: u64, term: u64) -> Entry {
    let payload = match index % 4 {
        0 => EntryPayload::Empty,
        1 => EntryPayload::ConfigChange(ConfigChange::new([ConfigChangeStep::AddVoter(index)])),
        _ => EntryPayload::Normal(Bytes::from(
            format!("value {index} of term {term}").repeat(3),
        )),
    };
    Entry {
        term,
        index,
        payload,
    }
}

/// A record's place in the last segment and what the WAL shows once it is durable.
struct Record {
    start_bytes: u64,
    end_bytes: u64,
    view_after: View,
}

struct History {
    /// The segments before the last, intact.
    earlier_segments: Vec<(PathBuf, Vec<u8>)>,
    last_segment: PathBuf,
    last_contents: Vec<u8>,
    /// The view before the first record of the last segment.
    view_before: View,
    /// The records of the last segment, in order.
    records: Vec<Record>,
}

/// Writes a history of appends, overwrites, hard states and a compaction, one sync each.
fn build_history(options: &WalOptions, syncs_count: u64) -> History {
    let disk = SimDisk::new();
    let (mut wal, _) = Wal::open(disk.clone(), Path::new(DIRECTORY), options.clone()).unwrap();
    let mut records: Vec<Record> = Vec::new();
    let mut view_before = view(&wal);
    let mut term = 1;
    for step in 0..syncs_count {
        let (segment_before, _) = wal.position();
        let last = wal.last_index();
        match step % 5 {
            0 | 1 => wal
                .stage_entries(&[entry(last + 1, term), entry(last + 2, term)])
                .unwrap(),
            2 => {
                // A new leader overwrites the last entry.
                term += 1;
                wal.stage_entries(&[entry(last, term), entry(last + 1, term)])
                    .unwrap();
            }
            3 => {
                let hard_state = HardState {
                    term,
                    vote: Some(step % 3),
                    commit: last - 1,
                };
                wal.stage_hard_state(hard_state).unwrap();
            }
            _ => {
                let index = wal.last_index() - 2;
                if index > wal.snapshot_index_and_term().0 {
                    wal.stage_compaction(index, wal.term(index).unwrap())
                        .unwrap();
                }
                wal.stage_entries(&[entry(last + 1, term)]).unwrap();
                wal.stage_hard_state(HardState {
                    term,
                    vote: None,
                    commit: last,
                })
                .unwrap();
            }
        }
        let before_sync = view(&wal);
        wal.sync().unwrap();
        let (segment, end_bytes) = wal.position();
        if segment != segment_before {
            records.clear();
            view_before = before_sync;
        }
        let start_bytes = records.last().map_or_else(
            || first_record_start(&disk, &segment),
            |record| record.end_bytes,
        );
        records.push(Record {
            start_bytes,
            end_bytes,
            view_after: view(&wal),
        });
    }
    let paths = wal.segment_paths();
    let (last_segment, earlier) = paths.split_last().unwrap();
    History {
        earlier_segments: earlier
            .iter()
            .map(|path| (path.clone(), disk.contents(path).unwrap()))
            .collect(),
        last_segment: last_segment.clone(),
        last_contents: disk.contents(last_segment).unwrap(),
        view_before,
        records,
    }
}

/// Where the first batch record of a segment starts: right after its header record, whose
/// length is in its first four bytes.
fn first_record_start(disk: &SimDisk, segment: &Path) -> u64 {
    let contents = disk.contents(segment).unwrap();
    let body_length = u32::from_le_bytes(contents[0..4].try_into().unwrap()) as u64;
    (storage::RECORD_HEADER_BYTES as u64 + body_length).next_multiple_of(8)
}

impl History {
    /// True if cutting the last segment at `cut` leaves `record` whole: the cut removed none of
    /// it, or only zeros that the preallocation gives back (or, without preallocation, only its
    /// padding).
    fn survives_cut(&self, record: &Record, cut: u64, zero_fill: bool) -> bool {
        if cut >= record.end_bytes {
            return true;
        }
        if cut <= record.start_bytes {
            return false;
        }
        let start = record.start_bytes as usize;
        if zero_fill {
            return self.last_contents[cut as usize..record.end_bytes as usize]
                .iter()
                .all(|byte| *byte == 0);
        }
        let body_length =
            u32::from_le_bytes(self.last_contents[start..start + 4].try_into().unwrap()) as u64;
        cut >= record.start_bytes + storage::RECORD_HEADER_BYTES as u64 + body_length
    }
}

/// A disk holding the earlier segments and `last_contents` as the last one, all durable.
fn disk_with(history: &History, last_contents: &[u8]) -> SimDisk {
    let disk = SimDisk::new();
    let files = history
        .earlier_segments
        .iter()
        .map(|(path, contents)| (path, contents.as_slice()));
    for (path, contents) in files.chain([(&history.last_segment, last_contents)]) {
        let mut file = disk.create(path).unwrap();
        file.write_all_at(0, contents).unwrap();
        file.sync_data().unwrap();
    }
    disk.sync_directory(Path::new(DIRECTORY)).unwrap();
    disk
}

fn options(segment_size_bytes: u64, preallocation: Preallocation) -> WalOptions {
    WalOptions {
        segment_size_bytes,
        preallocation,
        ..WalOptions::default()
    }
}

#[test]
fn a_cut_at_every_byte_keeps_exactly_the_whole_records_before_it() {
    // Small segments so that the history spans several of them; both preallocations, so the
    // cut leaves zeros after it (preallocated) or nothing (the file grew).
    for (segment_size_bytes, preallocation, zero_fill) in [
        (8192, Preallocation::Zeros, true),
        (1024, Preallocation::SetLength, true),
        (400, Preallocation::SetLength, false),
    ] {
        let history = build_history(&options(segment_size_bytes, preallocation), 16);
        assert!(
            !history.earlier_segments.is_empty() || segment_size_bytes == 8192,
            "several segments"
        );
        let last_records = &history.records[history.records.len().saturating_sub(4)..];
        let first_cut = last_records[0].start_bytes;
        let end = history.records.last().unwrap().end_bytes;
        for cut in first_cut..=end {
            let mut contents = history.last_contents[..cut as usize].to_vec();
            if zero_fill {
                contents.resize(history.last_contents.len(), 0);
            }
            let disk = disk_with(&history, &contents);
            let (wal, report) = Wal::open(
                disk.clone(),
                Path::new(DIRECTORY),
                options(segment_size_bytes, preallocation),
            )
            .unwrap_or_else(|error| panic!("cut at {cut}: {error}"));
            let whole: Vec<&Record> = history
                .records
                .iter()
                .filter(|record| history.survives_cut(record, cut, zero_fill))
                .collect();
            let expected = whole
                .last()
                .map_or(&history.view_before, |record| &record.view_after);
            assert_eq!(&view(&wal), expected, "cut at {cut}");
            let partial_start = whole
                .last()
                .map_or(history.records[0].start_bytes, |record| record.end_bytes);
            let partial_has_data = partial_start < cut
                && history.last_contents[partial_start as usize..cut as usize]
                    .iter()
                    .any(|b| *b != 0);
            assert_eq!(
                report.torn_tail.is_some(),
                partial_has_data,
                "cut at {cut}: {report}"
            );
            if let Some(torn) = &report.torn_tail {
                assert_eq!(torn.offset_bytes, partial_start, "cut at {cut}");
                assert_eq!(torn.path, history.last_segment);
            }
            // The truncation is durable and the WAL appends after it.
            drop(wal);
            disk.crash(CrashMode::DropUnsynced);
            let (mut wal, report) = Wal::open(
                disk.clone(),
                Path::new(DIRECTORY),
                options(segment_size_bytes, preallocation),
            )
            .unwrap();
            assert_eq!(
                report.torn_tail, None,
                "cut at {cut}: the tear was repaired"
            );
            let next = wal.last_index() + 1;
            wal.stage_entries(&[entry(next, 99)]).unwrap();
            wal.sync().unwrap();
            let (wal, _) = Wal::open(
                disk,
                Path::new(DIRECTORY),
                options(segment_size_bytes, preallocation),
            )
            .unwrap();
            assert_eq!(
                wal.entries(next, next + 1, u64::MAX).unwrap(),
                vec![entry(next, 99)],
                "cut at {cut}"
            );
        }
    }
}

#[test]
fn every_flipped_bit_is_a_torn_tail_in_the_last_record_and_an_error_elsewhere() {
    let segment_size_bytes = 4096;
    let wal_options = options(segment_size_bytes, Preallocation::SetLength);
    let history = build_history(&wal_options, 8);
    let last_record = history.records.last().unwrap();
    let before_last = history
        .records
        .iter()
        .rev()
        .nth(1)
        .map_or(&history.view_before, |record| &record.view_after);
    // The whole last segment's data, its header record included, and a little of the zeros after.
    let flipped_end = (last_record.end_bytes + 64).min(history.last_contents.len() as u64);
    for offset in 0..flipped_end {
        for bit in 0..8 {
            let mut contents = history.last_contents.clone();
            contents[offset as usize] ^= 1 << bit;
            let disk = disk_with(&history, &contents);
            let opened = Wal::open(disk, Path::new(DIRECTORY), wal_options.clone());
            let place = format!("bit {bit} of byte {offset}");
            if offset >= last_record.end_bytes {
                // Garbage after the end and nothing valid after it: discarded as a tear.
                let (wal, report) = opened.unwrap_or_else(|error| panic!("{place}: {error}"));
                assert_eq!(view(&wal), last_record.view_after, "{place}");
                assert_eq!(
                    report.torn_tail.unwrap().offset_bytes,
                    last_record.end_bytes,
                    "{place}"
                );
            } else if offset >= last_record.start_bytes {
                // Damage in the last record cannot be told from a torn write.
                let (wal, report) = opened.unwrap_or_else(|error| panic!("{place}: {error}"));
                assert_eq!(&view(&wal), before_last, "{place}");
                assert_eq!(
                    report.torn_tail.unwrap().offset_bytes,
                    last_record.start_bytes,
                    "{place}"
                );
            } else {
                let error = opened.expect_err(&place);
                let Error::Corrupt {
                    path, offset_bytes, ..
                } = &error
                else {
                    panic!("{place}: {error}")
                };
                assert_eq!(path, &history.last_segment, "{place}");
                let record_start = history
                    .records
                    .iter()
                    .map(|record| record.start_bytes)
                    .filter(|start| *start <= offset)
                    .max()
                    .unwrap_or(0);
                assert_eq!(*offset_bytes, record_start, "{place}: {error}");
                assert!(
                    error
                        .to_string()
                        .contains(&*history.last_segment.to_string_lossy()),
                    "{error}"
                );
            }
        }
    }
}

#[test]
fn a_flipped_bit_in_an_earlier_segment_is_an_error_naming_it() {
    let wal_options = options(1024, Preallocation::SetLength);
    let history = build_history(&wal_options, 10);
    let (path, contents) = history.earlier_segments.last().expect("several segments");
    let data_end = contents.iter().rposition(|byte| *byte != 0).unwrap() + 1;
    let disk = disk_with(&history, &history.last_contents);
    for offset in 0..data_end as u64 {
        for bit in [0, 3, 7] {
            assert!(disk.flip_bit(path, offset, bit));
            let error = Wal::open(disk.clone(), Path::new(DIRECTORY), wal_options.clone())
                .expect_err("detected");
            let Error::Corrupt { path: named, .. } = &error else {
                panic!("{error}")
            };
            assert_eq!(named, path);
            assert!(disk.flip_bit(path, offset, bit));
        }
    }
}

#[test]
fn valid_records_after_a_damaged_one_make_it_corruption_even_at_the_end() {
    let wal_options = options(1 << 20, Preallocation::SetLength);
    let history = build_history(&wal_options, 6);
    let second_to_last = &history.records[history.records.len() - 2];
    let mut contents = history.last_contents.clone();
    contents[second_to_last.start_bytes as usize + 13] ^= 0x10;
    let error = Wal::open(
        disk_with(&history, &contents),
        Path::new(DIRECTORY),
        wal_options,
    )
    .expect_err("corruption");
    let Error::Corrupt { offset_bytes, .. } = error else {
        panic!("{error}")
    };
    assert_eq!(offset_bytes, second_to_last.start_bytes);
}

#[test]
fn a_missing_segment_is_an_error() {
    let wal_options = options(512, Preallocation::SetLength);
    let history = build_history(&wal_options, 12);
    assert!(history.earlier_segments.len() >= 2, "several segments");
    let disk = disk_with(&history, &history.last_contents);
    disk.remove(&history.earlier_segments[1].0).unwrap();
    let error = Wal::open(disk, Path::new(DIRECTORY), wal_options).expect_err("a gap");
    assert!(matches!(error, Error::Inconsistent { .. }), "{error}");
}

#[test]
fn a_failed_sync_stops_the_wal_and_nothing_unsynced_is_reported_durable() {
    let disk = SimDisk::new();
    let (mut wal, _) =
        Wal::open(disk.clone(), Path::new(DIRECTORY), WalOptions::default()).unwrap();
    wal.stage_entries(&[entry(1, 1)]).unwrap();
    wal.sync().unwrap();
    wal.stage_entries(&[entry(2, 1)]).unwrap();
    disk.set_fail_syncs(true);
    let error = wal.sync().expect_err("the sync fails");
    assert!(error.is_fatal(), "{error}");
    assert!(wal.is_stopped());
    assert_eq!(
        wal.last_index(),
        1,
        "the failed entry is not reported durable"
    );
    disk.set_fail_syncs(false);
    assert!(matches!(
        wal.stage_entries(&[entry(2, 1)]),
        Err(Error::Stopped)
    ));
    assert!(matches!(wal.sync(), Err(Error::Stopped)));
}

#[test]
fn one_sync_is_one_write_and_one_fdatasync() {
    let disk = SimDisk::new();
    let (mut wal, _) =
        Wal::open(disk.clone(), Path::new(DIRECTORY), WalOptions::default()).unwrap();
    let (writes_before, syncs_before) = (disk.writes_count(), disk.file_syncs_count());
    // Three Readys queued up, synced together.
    for ready in 0..3u64 {
        let entries: Vec<Entry> = (1..=100)
            .map(|offset| entry(ready * 100 + offset, 1))
            .collect();
        wal.stage_entries(&entries).unwrap();
        wal.stage_hard_state(HardState {
            term: 1,
            vote: Some(1),
            commit: ready * 100,
        })
        .unwrap();
    }
    assert_eq!(wal.last_index(), 0, "nothing is visible before the sync");
    wal.sync().unwrap();
    assert_eq!(disk.writes_count() - writes_before, 1);
    assert_eq!(disk.file_syncs_count() - syncs_before, 1);
    assert_eq!(wal.last_index(), 300);
}

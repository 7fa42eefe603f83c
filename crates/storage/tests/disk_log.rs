//! `DiskLog`: the WAL and the snapshot files together, as the core reads them.

use std::path::Path;

use bytes::Bytes;
use raft::{
    ConfigState, Entry, EntryPayload, HardState, LogStorage, MemoryStorage, Snapshot, SnapshotMeta,
    StorageError,
};
use storage::{
    Bootstrap, CrashMode, Disk, DiskFile, DiskLog, DiskLogOptions, Error, Preallocation,
    SavePacing, SimDisk, SnapshotStore, WalOptions,
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

/// Opens the log of a node that joined without a snapshot, so that tests can append from
/// index 1.
fn open(disk: &SimDisk) -> DiskLog<SimDisk> {
    DiskLog::open(
        disk.clone(),
        Path::new(DIRECTORY),
        options(),
        Bootstrap::Joiner,
    )
    .unwrap()
    .0
}

fn open_founder(disk: &SimDisk, config: ConfigState) -> DiskLog<SimDisk> {
    let bootstrap = Bootstrap::Founder(config);
    DiskLog::open(disk.clone(), Path::new(DIRECTORY), options(), bootstrap)
        .unwrap()
        .0
}

/// What the core reads first, compared field by field with an in-memory storage.
fn assert_starts_like(log: &DiskLog<SimDisk>, memory: &MemoryStorage) {
    assert_eq!(log.initial_state(), memory.initial_state());
    assert_eq!(log.first_index(), memory.first_index());
    assert_eq!(log.last_index(), memory.last_index());
    let index = log.first_index() - 1;
    assert_eq!(log.term(index), memory.term(index));
    assert_eq!(log.term(index + 1), memory.term(index + 1));
    assert_eq!(log.snapshot(), memory.snapshot());
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

fn append(log: &mut DiskLog<SimDisk>, first: u64, last: u64, term: u64) {
    log.stage_ready(
        Some(HardState {
            term,
            vote: Some(1),
            commit: first - 1,
        }),
        &entries(first, last, term),
    )
    .unwrap();
    log.sync().unwrap();
}

#[test]
fn a_founder_starts_from_the_bootstrap_snapshot_as_memory_storage_does() {
    let disk = SimDisk::new();
    let log = open_founder(&disk, config());
    let memory = MemoryStorage::new_with_config(config());
    assert_starts_like(&log, &memory);
    assert_eq!((log.first_index(), log.last_index()), (2, 1));
    assert_eq!(log.term(1), Ok(1));
    assert_eq!(
        log.initial_state().0,
        HardState {
            term: 1,
            vote: None,
            commit: 1
        }
    );
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    // A restart passes the same argument or not: the disk decides.
    for bootstrap in [Bootstrap::Joiner, Bootstrap::Founder(config())] {
        let log = DiskLog::open(disk.clone(), Path::new(DIRECTORY), options(), bootstrap)
            .unwrap()
            .0;
        assert_starts_like(&log, &memory);
    }
}

#[test]
fn a_joiner_starts_empty_as_memory_storage_does() {
    let disk = SimDisk::new();
    let log = open(&disk);
    assert_starts_like(&log, &MemoryStorage::default());
    assert_eq!((log.first_index(), log.last_index()), (1, 0));
    assert_eq!(log.initial_state().1, ConfigState::default());
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    assert_starts_like(&open(&disk), &MemoryStorage::default());
}

#[test]
fn a_founder_crashed_between_the_snapshot_file_and_its_record_finishes_on_open() {
    let disk = SimDisk::new();
    // The bootstrap's first step, alone: the snapshot file, durable.
    let store =
        SnapshotStore::open(disk.clone(), &Path::new(DIRECTORY).join("snapshots"), 2).unwrap();
    store.save(&raft::bootstrap_snapshot(config())).unwrap();
    disk.crash(CrashMode::DropUnsynced);
    let log = open(&disk);
    assert_starts_like(&log, &MemoryStorage::new_with_config(config()));
}

#[test]
fn a_founder_without_a_voter_is_refused_and_writes_nothing() {
    let disk = SimDisk::new();
    let learners_only = ConfigState {
        learners: vec![1],
        ..ConfigState::default()
    };
    let result = DiskLog::open(
        disk.clone(),
        Path::new(DIRECTORY),
        options(),
        Bootstrap::Founder(learners_only),
    );
    let error = result.expect_err("no voter");
    assert!(matches!(error, Error::InvalidArgument { .. }), "{error}");
    for directory in ["wal", "snapshots"] {
        let files = disk.list(&Path::new(DIRECTORY).join(directory)).unwrap();
        assert!(files.is_empty(), "{directory}: {files:?}");
    }
    assert_starts_like(&open(&disk), &MemoryStorage::default());
}

#[test]
fn a_founder_appends_after_the_bootstrap_snapshot() {
    let disk = SimDisk::new();
    let mut log = open_founder(&disk, config());
    let hard_state = HardState {
        term: 2,
        vote: Some(1),
        commit: 1,
    };
    log.stage_ready(Some(hard_state), &entries(2, 4, 2))
        .unwrap();
    log.sync().unwrap();
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let log = open_founder(&disk, config());
    assert_eq!(log.entries(2, 5, u64::MAX).unwrap(), entries(2, 4, 2));
    assert_eq!(log.initial_state(), (hard_state, config()));
}

#[test]
fn a_lazily_written_commit_index_is_durable_only_after_a_sync() {
    let disk = SimDisk::new();
    let mut log = open(&disk);
    append(&mut log, 1, 5, 1);
    let lazy = HardState {
        term: 1,
        vote: Some(1),
        commit: 5,
    };
    log.stage_ready(Some(lazy), &[]).unwrap();
    log.write().unwrap();
    assert_eq!(log.hard_state().commit, 0, "not durable yet");
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let mut log = open(&disk);
    assert_eq!(log.hard_state().commit, 0, "lost in the crash");
    log.stage_ready(Some(lazy), &[]).unwrap();
    log.write().unwrap();
    log.sync().unwrap();
    assert_eq!(log.hard_state(), lazy);
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    assert_eq!(open(&disk).hard_state(), lazy);
}

#[test]
fn reads_follow_the_log_storage_contract() {
    let disk = SimDisk::new();
    let mut log = open(&disk);
    append(&mut log, 1, 10, 1);
    assert_eq!(log.entries(3, 6, u64::MAX).unwrap(), entries(3, 5, 1));
    assert_eq!(log.entries(3, 6, 0).unwrap().len(), 1, "at least one entry");
    assert_eq!(log.entries(0, 2, u64::MAX), Err(StorageError::Compacted));
    assert_eq!(log.entries(5, 12, u64::MAX), Err(StorageError::Unavailable));
    assert_eq!(log.term(11), Err(StorageError::Unavailable));
}

#[test]
fn a_snapshot_compacts_the_log_and_removes_old_segments() {
    let disk = SimDisk::new();
    let mut log = open(&disk);
    for batch in 0..20 {
        append(&mut log, batch * 10 + 1, batch * 10 + 10, 2);
    }
    let segments_before = log.wal().segments_count();
    assert!(segments_before > 3, "the log spans several segments");
    assert!(log
        .create_snapshot(150, config(), Bytes::from("state at 150"))
        .unwrap());
    assert!(log.wal().segments_count() < segments_before);
    assert_eq!(log.first_index(), 151);
    assert_eq!(log.term(150), Ok(2));
    assert_eq!(log.term(149), Err(StorageError::Compacted));
    assert!(
        !log.create_snapshot(140, config(), Bytes::new()).unwrap(),
        "not newer"
    );
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let log = open(&disk);
    assert_eq!((log.first_index(), log.last_index()), (151, 200));
    assert_eq!(
        log.entries(151, 201, u64::MAX).unwrap(),
        entries(151, 200, 2)
    );
    assert_eq!(log.snapshot().unwrap().data, Bytes::from("state at 150"));
}

#[test]
fn a_snapshot_saved_on_another_thread_is_adopted_unless_the_log_moved_on() {
    let disk = SimDisk::new();
    let mut log = open(&disk);
    append(&mut log, 1, 200, 2);
    let meta = log.snapshot_meta_at(150, config()).unwrap();
    assert_eq!((meta.index, meta.term), (150, 2));
    let store = log.snapshot_store();
    let saved = std::thread::spawn(move || {
        store.save(&Snapshot {
            meta,
            data: Bytes::from("state at 150"),
        })
    });
    // The log goes on meanwhile.
    append(&mut log, 201, 210, 2);
    saved.join().unwrap().unwrap();
    let meta = log.snapshot_meta_at(150, config()).unwrap();
    assert!(log.adopt_snapshot(meta.clone()).unwrap());
    assert_eq!((log.first_index(), log.last_index()), (151, 210));
    assert!(!log.adopt_snapshot(meta).unwrap(), "not newer any more");
    assert!(log.snapshot_meta_at(120, config()).is_none());
    assert!(
        log.snapshot_meta_at(211, config()).is_none(),
        "beyond the log"
    );
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let log = open(&disk);
    assert_eq!(log.first_index(), 151);
    assert_eq!(log.snapshot().unwrap().data, Bytes::from("state at 150"));
}

#[test]
fn a_paced_save_writes_the_same_file_as_a_whole_one() {
    let disk = SimDisk::new();
    let directory = Path::new(DIRECTORY).join("snapshots");
    let store = SnapshotStore::open(disk.clone(), &directory, 2).unwrap();
    let snapshot = |index: u64| Snapshot {
        meta: SnapshotMeta {
            index,
            term: 3,
            config: config(),
        },
        data: Bytes::from((0..1000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
    };
    let whole = store.save(&snapshot(10)).unwrap();
    let pacing = SavePacing {
        chunk_bytes: 7,
        pause: std::time::Duration::ZERO,
    };
    let paced = store.save_paced(&snapshot(11), Some(pacing)).unwrap();
    assert_eq!(store.load(&paced).unwrap(), snapshot(11));
    assert_eq!(store.load(&whole).unwrap(), snapshot(10));
    let length = |path: &Path| disk.open(path).unwrap().len_bytes().unwrap();
    assert_eq!(length(&whole), length(&paced));
}

#[test]
fn an_installed_snapshot_replaces_the_log_once_synced() {
    let disk = SimDisk::new();
    let mut log = open(&disk);
    append(&mut log, 1, 30, 1);
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: 500,
            term: 4,
            config: ConfigState::with_voters([1, 2, 3, 4]),
        },
        data: Bytes::from("leader's state"),
    };
    log.install_snapshot(snapshot.clone()).unwrap();
    assert_eq!(log.last_index(), 30, "not visible before the sync");
    log.stage_ready(
        Some(HardState {
            term: 4,
            vote: None,
            commit: 500,
        }),
        &entries(501, 502, 4),
    )
    .unwrap();
    log.sync().unwrap();
    assert_eq!((log.first_index(), log.last_index()), (501, 502));
    assert_eq!(log.snapshot().unwrap(), snapshot);
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let log = open(&disk);
    assert_eq!((log.first_index(), log.last_index()), (501, 502));
    assert_eq!(
        log.initial_state().1,
        ConfigState::with_voters([1, 2, 3, 4])
    );
}

#[test]
fn a_snapshot_saved_just_before_a_crash_is_applied_on_open() {
    let disk = SimDisk::new();
    let mut log = open(&disk);
    append(&mut log, 1, 40, 3);
    drop(log);
    // The crash came after the snapshot file was durable, before its WAL record was.
    let store =
        SnapshotStore::open(disk.clone(), &Path::new(DIRECTORY).join("snapshots"), 2).unwrap();
    let meta = SnapshotMeta {
        index: 25,
        term: 3,
        config: config(),
    };
    store
        .save(&Snapshot {
            meta,
            data: Bytes::from("at 25"),
        })
        .unwrap();
    disk.crash(CrashMode::DropUnsynced);
    let log = open(&disk);
    assert_eq!(
        (log.first_index(), log.last_index()),
        (26, 40),
        "compacted, the rest kept"
    );
}

#[test]
fn a_corrupt_newest_snapshot_is_an_error_naming_it() {
    let disk = SimDisk::new();
    let mut log = open(&disk);
    append(&mut log, 1, 10, 1);
    log.create_snapshot(5, config(), Bytes::from("state"))
        .unwrap();
    drop(log);
    let store =
        SnapshotStore::open(disk.clone(), &Path::new(DIRECTORY).join("snapshots"), 2).unwrap();
    let (_, _, path) = store.list().unwrap().pop().unwrap();
    disk.flip_bit(&path, 40, 2);
    let error = DiskLog::open(disk, Path::new(DIRECTORY), options(), Bootstrap::Joiner)
        .expect_err("corrupt");
    assert!(matches!(error, Error::Corrupt { .. }), "{error}");
    assert!(
        error.to_string().contains(&*path.to_string_lossy()),
        "{error}"
    );
}

/// A member of a cluster rebuilt from a backup starts from the backup's snapshot, data and
/// all, durably: after a crash right after opening, the log reopens from it, committed at it.
#[test]
fn a_restored_founder_starts_from_its_snapshot_with_data() {
    let disk = SimDisk::new();
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: 1,
            term: 1,
            config: config(),
        },
        data: Bytes::from_static(b"the backup's state"),
    };
    let (log, _) = DiskLog::open(
        disk.clone(),
        Path::new(DIRECTORY),
        options(),
        Bootstrap::Restored(snapshot.clone()),
    )
    .unwrap();
    assert_eq!(log.read_snapshot().unwrap(), snapshot);
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let reopened = open(&disk);
    assert_eq!(reopened.read_snapshot().unwrap(), snapshot);
    let (hard_state, reopened_config) = reopened.initial_state();
    assert_eq!(hard_state.commit, 1);
    assert_eq!(hard_state.term, 1);
    assert_eq!(reopened_config, config());
    assert_eq!(reopened.first_index(), 2);

    let empty = Snapshot {
        meta: SnapshotMeta {
            index: 1,
            term: 1,
            config: ConfigState::default(),
        },
        data: Bytes::new(),
    };
    let refused = DiskLog::open(
        SimDisk::new(),
        Path::new(DIRECTORY),
        options(),
        Bootstrap::Restored(empty),
    );
    assert!(matches!(refused, Err(Error::InvalidArgument { .. })));
}

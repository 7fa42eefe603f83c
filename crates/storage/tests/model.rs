//! Property test: random appends, overwrites, hard states, compactions, installed snapshots,
//! crashes and failed syncs against a deliberately dumb model (a snapshot and a `Vec`), with
//! small segments so that rotation and segment removal happen often.

use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use raft::{Entry, EntryPayload, HardState};
use storage::{CrashMode, Preallocation, SimDisk, Wal, WalOptions};

#[derive(Clone, Debug)]
enum Operation {
    /// Entries replacing the last `back` entries (as far as the snapshot allows) and going on.
    Append {
        back: u8,
        count: u8,
        new_term: bool,
        payload_bytes: u8,
    },
    HardState {
        vote: Option<u8>,
    },
    /// Compacts to `back` entries before the last staged one.
    Compact {
        back: u8,
    },
    /// Installs a snapshot `ahead` entries after the last staged one.
    Install {
        ahead: u8,
    },
    Sync,
    CrashAndReopen,
    /// A sync whose fdatasync fails, then a crash that may keep a torn part of it.
    FailedSyncThenCrash {
        seed: u64,
    },
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        6 => (0u8..4, 1u8..6, any::<bool>(), 0u8..80).prop_map(|(back, count, new_term, payload_bytes)| {
            Operation::Append { back, count, new_term, payload_bytes }
        }),
        2 => proptest::option::of(0u8..5).prop_map(|vote| Operation::HardState { vote }),
        2 => (0u8..6).prop_map(|back| Operation::Compact { back }),
        1 => (0u8..4).prop_map(|ahead| Operation::Install { ahead }),
        6 => Just(Operation::Sync),
        2 => Just(Operation::CrashAndReopen),
        1 => any::<u64>().prop_map(|seed| Operation::FailedSyncThenCrash { seed }),
    ]
}

/// The log as the WAL should show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    hard_state: HardState,
    snapshot: (u64, u64),
    /// The entries after the snapshot.
    entries: Vec<Entry>,
}

impl Model {
    fn last_index(&self) -> u64 {
        self.snapshot.0 + self.entries.len() as u64
    }

    fn term(&self, index: u64) -> u64 {
        if index == self.snapshot.0 {
            return self.snapshot.1;
        }
        self.entries[(index - self.snapshot.0 - 1) as usize].term
    }
}

fn shown(wal: &Wal<SimDisk>) -> Model {
    Model {
        hard_state: wal.hard_state(),
        snapshot: wal.snapshot_index_and_term(),
        entries: wal
            .entries(wal.first_index(), wal.last_index() + 1, u64::MAX)
            .unwrap(),
    }
}

fn run(operations: Vec<Operation>, options: WalOptions) -> Result<(), TestCaseError> {
    let directory = Path::new("/node/wal");
    let disk = SimDisk::new();
    let (mut wal, _) = Wal::open(disk.clone(), directory, options.clone()).unwrap();
    let mut durable = Model::default();
    let mut staged = Model::default();
    // The states after each operation staged since the last sync: with a small write buffer,
    // records written (not synced) before the sync, or synced when a segment fills, may survive
    // a crash, and a crash may leave any of these.
    let mut since_sync = vec![durable.clone()];
    let mut term = 1;
    // Tears keep a prefix of the records written since the last sync; with a small write
    // buffer there may be several, so only whole-batch outcomes are checked when there is one.
    let one_record_per_sync = options.write_buffer_bytes_max >= 1 << 20;
    for operation in operations {
        let is_staging = matches!(
            operation,
            Operation::Append { .. }
                | Operation::HardState { .. }
                | Operation::Compact { .. }
                | Operation::Install { .. }
        );
        match operation {
            Operation::Append {
                back,
                count,
                new_term,
                payload_bytes,
            } => {
                term += u64::from(new_term);
                let back = u64::from(back).min(staged.entries.len() as u64);
                let first = staged.last_index() + 1 - back;
                let entries: Vec<Entry> = (first..first + u64::from(count))
                    .map(|index| Entry {
                        term,
                        index,
                        payload: match payload_bytes {
                            0 => EntryPayload::Empty,
                            length => EntryPayload::Normal(Bytes::from(vec![
                                index as u8;
                                usize::from(length)
                            ])),
                        },
                    })
                    .collect();
                wal.stage_entries(&entries).unwrap();
                staged
                    .entries
                    .truncate((first - staged.snapshot.0 - 1) as usize);
                staged.entries.extend(entries);
            }
            Operation::HardState { vote } => {
                let hard_state = HardState {
                    term,
                    vote: vote.map(u64::from),
                    commit: staged.last_index(),
                };
                wal.stage_hard_state(hard_state).unwrap();
                staged.hard_state = hard_state;
            }
            Operation::Compact { back } => {
                let Some(index) = staged.last_index().checked_sub(u64::from(back)) else {
                    continue;
                };
                if index <= staged.snapshot.0 {
                    continue;
                }
                let compacted_term = staged.term(index);
                wal.stage_compaction(index, compacted_term).unwrap();
                staged.entries.drain(..(index - staged.snapshot.0) as usize);
                staged.snapshot = (index, compacted_term);
            }
            Operation::Install { ahead } => {
                term += 1;
                let index = staged.last_index() + u64::from(ahead).max(1);
                wal.stage_install_snapshot(index, term).unwrap();
                staged.entries.clear();
                staged.snapshot = (index, term);
                staged.hard_state.commit = staged.hard_state.commit.max(index);
            }
            Operation::Sync => {
                wal.sync().unwrap();
                wal.remove_obsolete_segments().unwrap();
                durable = staged.clone();
                since_sync = vec![durable.clone()];
                prop_assert_eq!(shown(&wal), durable.clone());
            }
            Operation::CrashAndReopen => {
                drop(wal);
                disk.crash(CrashMode::DropUnsynced);
                wal = Wal::open(disk.clone(), directory, options.clone())
                    .unwrap()
                    .0;
                let recovered = shown(&wal);
                if one_record_per_sync {
                    prop_assert_eq!(&recovered, &durable);
                }
                prop_assert!(since_sync.contains(&recovered), "recovered {:?}", recovered);
                durable = recovered;
                staged = durable.clone();
                since_sync = vec![durable.clone()];
            }
            Operation::FailedSyncThenCrash { seed } => {
                disk.set_fail_syncs(true);
                let outcome = wal.sync();
                disk.set_fail_syncs(false);
                drop(wal);
                let mode = if one_record_per_sync {
                    CrashMode::TearUnsynced { seed }
                } else {
                    CrashMode::DropUnsynced
                };
                disk.crash(mode);
                wal = Wal::open(disk.clone(), directory, options.clone())
                    .unwrap()
                    .0;
                let recovered = shown(&wal);
                if outcome.is_ok() {
                    // Nothing was staged, so nothing was written.
                    prop_assert_eq!(&recovered, &durable);
                }
                if one_record_per_sync {
                    prop_assert!(
                        recovered == durable || recovered == staged,
                        "recovered {:?}",
                        recovered
                    );
                }
                prop_assert!(since_sync.contains(&recovered), "recovered {:?}", recovered);
                durable = recovered;
                staged = durable.clone();
                since_sync = vec![durable.clone()];
            }
        }
        if is_staging {
            since_sync.push(staged.clone());
        }
    }
    // Whatever happened, a final crash keeps what was synced, and at most what was staged.
    drop(wal);
    disk.crash(CrashMode::DropUnsynced);
    let (wal, _) = Wal::open(disk, directory, options).unwrap();
    let recovered = shown(&wal);
    if one_record_per_sync {
        prop_assert_eq!(&recovered, &durable);
    }
    prop_assert!(since_sync.contains(&recovered), "recovered {:?}", recovered);
    Ok(())
}

fn wal_options() -> impl Strategy<Value = WalOptions> {
    (
        prop_oneof![Just(300u64), Just(1024), Just(64 << 10)],
        prop_oneof![Just(Preallocation::SetLength), Just(Preallocation::Zeros)],
        prop_oneof![Just(96usize), Just(4 << 20)],
    )
        .prop_map(
            |(segment_size_bytes, preallocation, write_buffer_bytes_max)| WalOptions {
                segment_size_bytes,
                preallocation,
                write_buffer_bytes_max,
            },
        )
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N runs more.
    #[test]
    fn the_wal_matches_the_model_across_crashes(
        operations in proptest::collection::vec(operation(), 1..80),
        options in wal_options(),
    ) {
        run(operations, options)?;
    }
}

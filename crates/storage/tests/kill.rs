//! A real process killed with SIGKILL: the test binary re-executes itself as a writer that
//! appends to a WAL on the real disk and prints each index once its sync returned; the parent
//! kills it at a random moment, reopens the WAL and checks that every index reported durable
//! is there with the right contents. Several rounds continue the same WAL.
//!
//! Replay a failure with `FLOTILLA_KILL_SEED=<seed> cargo test -p flotilla-storage --test kill`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::{Entry, EntryPayload, HardState};
use storage::{Preallocation, StdDisk, Wal, WalOptions};

const CHILD_DIRECTORY_VARIABLE: &str = "FLOTILLA_KILL_CHILD_DIRECTORY";

fn options() -> WalOptions {
    // Small segments, so that kills also land during segment creation.
    WalOptions {
        segment_size_bytes: 256 << 10,
        preallocation: Preallocation::SetLength,
        ..WalOptions::default()
    }
}

fn payload(index: u64) -> Bytes {
    Bytes::from(format!("entry {index} ").repeat(1 + (index % 7) as usize))
}

/// The writer. Does nothing unless started by the parent test.
#[test]
fn child_writer() {
    let Ok(directory) = std::env::var(CHILD_DIRECTORY_VARIABLE) else {
        return;
    };
    let (mut wal, report) = Wal::open(StdDisk, Path::new(&directory), options()).unwrap();
    println!("opened {report}");
    let mut stdout = std::io::stdout().lock();
    let mut next = wal.last_index() + 1;
    let mut batch_size = 1u64;
    loop {
        let entries: Vec<Entry> = (next..next + batch_size)
            .map(|index| Entry {
                term: 1,
                index,
                payload: EntryPayload::Normal(payload(index)),
            })
            .collect();
        wal.stage_entries(&entries).unwrap();
        wal.stage_hard_state(HardState {
            term: 1,
            vote: Some(1),
            commit: next,
        })
        .unwrap();
        wal.sync().unwrap();
        next += batch_size;
        writeln!(stdout, "durable {}", next - 1).unwrap();
        stdout.flush().unwrap();
        batch_size = batch_size % 40 + 1;
    }
}

/// A tiny SplitMix64 step, for the kill delays.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut mixed = *state;
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    mixed ^ (mixed >> 31)
}

#[test]
fn every_index_reported_durable_survives_sigkill() {
    if std::env::var(CHILD_DIRECTORY_VARIABLE).is_ok() {
        return;
    }
    let seed = match std::env::var("FLOTILLA_KILL_SEED") {
        Ok(seed) => seed.parse().unwrap(),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    println!(
        "seed {seed}; replay: FLOTILLA_KILL_SEED={seed} cargo test -p flotilla-storage --test kill"
    );
    let mut random = seed;
    let directory = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let executable = std::env::current_exe().unwrap();
    let mut durable_max = 0;
    for round in 0..6 {
        let mut child = Command::new(&executable)
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIRECTORY_VARIABLE, directory.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut reported = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(index) = line.strip_prefix("durable ") {
                    reported.push(index.parse::<u64>().unwrap());
                }
            }
            reported
        });
        // Let the writer get going, then kill it at a random moment.
        let delay = Duration::from_millis(100 + next_random(&mut random) % 400);
        let started = Instant::now();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL on Unix.
        child.wait().unwrap();
        let reported = reader.join().unwrap();
        let round_max = reported.iter().copied().max().unwrap_or(0);
        println!(
            "round {round}: killed after {:?}, {} syncs reported, up to index {round_max}",
            started.elapsed(),
            reported.len()
        );
        durable_max = durable_max.max(round_max);

        let (wal, report) = Wal::open(StdDisk, directory.path(), options()).unwrap();
        println!("round {round}: reopened: {report}");
        assert!(
            wal.last_index() >= durable_max,
            "index {durable_max} was reported durable, the WAL ends at {}",
            wal.last_index()
        );
        let entries = wal.entries(1, wal.last_index() + 1, u64::MAX).unwrap();
        for (position, entry) in entries.iter().enumerate() {
            assert_eq!(entry.index, position as u64 + 1);
            assert_eq!(
                entry.payload,
                EntryPayload::Normal(payload(entry.index)),
                "seed {seed}"
            );
        }
        assert!(wal.hard_state().commit <= wal.last_index());
    }
    assert!(durable_max > 0, "the writer made progress");
}

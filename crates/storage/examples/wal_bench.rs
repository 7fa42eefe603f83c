//! WAL benchmark: raw append + fdatasync rate against the WAL's, on the same disk, in one run.
//!
//! ```text
//! cargo run --release -p flotilla-storage --example wal_bench -- [DIRECTORY] [--seconds N]
//! ```
//!
//! DIRECTORY defaults to a fresh directory under the current one (not /tmp, which may be
//! tmpfs). Each measurement runs for N seconds (default 3) in its own subdirectory, removed
//! afterwards.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::{Entry, EntryPayload, HardState};
use storage::{Preallocation, StdDisk, Wal, WalOptions};

const ENTRY_PAYLOAD_BYTES: usize = 256;
const SEGMENT_SIZE_BYTES: u64 = 64 << 20;

struct Measurement {
    name: String,
    syncs_count: u64,
    entries_count: u64,
    elapsed: Duration,
}

impl Measurement {
    fn syncs_per_second(&self) -> f64 {
        self.syncs_count as f64 / self.elapsed.as_secs_f64()
    }

    fn entries_per_second(&self) -> f64 {
        self.entries_count as f64 / self.elapsed.as_secs_f64()
    }
}

/// Writes `write_bytes` at increasing offsets of a preallocated file, each followed by
/// fdatasync: the best a WAL could do on this disk.
fn raw_loop(
    directory: &Path,
    preallocation: Preallocation,
    write_bytes: usize,
    duration: Duration,
) -> Measurement {
    let path = directory.join("raw.data");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    match preallocation {
        Preallocation::SetLength => file.set_len(SEGMENT_SIZE_BYTES).unwrap(),
        Preallocation::Zeros => {
            let zeros = vec![0u8; 1 << 20];
            for chunk in 0..SEGMENT_SIZE_BYTES / (1 << 20) {
                file.write_all_at(&zeros, chunk << 20).unwrap();
            }
        }
    }
    file.sync_all().unwrap();
    let data = vec![0xA5u8; write_bytes];
    let started = Instant::now();
    let mut offset = 0u64;
    let mut syncs_count = 0;
    while started.elapsed() < duration && offset + write_bytes as u64 <= SEGMENT_SIZE_BYTES {
        file.write_all_at(&data, offset).unwrap();
        file.sync_data().unwrap();
        offset += write_bytes as u64;
        syncs_count += 1;
    }
    let elapsed = started.elapsed();
    std::fs::remove_file(&path).unwrap();
    Measurement {
        name: format!("raw {write_bytes} B write + fdatasync, {preallocation:?}"),
        syncs_count,
        entries_count: syncs_count,
        elapsed,
    }
}

/// Appends `entries_per_sync` entries of 256 bytes and a hard state, then syncs, in a loop.
fn wal_loop(
    directory: &Path,
    preallocation: Preallocation,
    entries_per_sync: u64,
    duration: Duration,
) -> Measurement {
    let options = WalOptions {
        segment_size_bytes: SEGMENT_SIZE_BYTES,
        preallocation,
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(StdDisk, directory, options).unwrap();
    let payload = Bytes::from(vec![0x5Au8; ENTRY_PAYLOAD_BYTES]);
    let mut next = 1u64;
    let mut syncs_count = 0;
    let started = Instant::now();
    while started.elapsed() < duration {
        let entries: Vec<Entry> = (next..next + entries_per_sync)
            .map(|index| Entry {
                term: 1,
                index,
                payload: EntryPayload::Normal(payload.clone()),
            })
            .collect();
        wal.stage_entries(&entries).unwrap();
        wal.stage_hard_state(HardState {
            term: 1,
            vote: Some(1),
            commit: next - 1,
        })
        .unwrap();
        wal.sync().unwrap();
        next += entries_per_sync;
        syncs_count += 1;
        // Keep memory flat, as a node compacting behind its appends would.
        if next > 100_000 && syncs_count % 64 == 0 {
            let index = next - 50_000;
            wal.stage_compaction(index, 1).unwrap();
            wal.sync().unwrap();
            syncs_count += 1;
            wal.remove_obsolete_segments().unwrap();
        }
    }
    let elapsed = started.elapsed();
    Measurement {
        name: format!(
            "WAL {entries_per_sync} x {ENTRY_PAYLOAD_BYTES} B entries per sync, {preallocation:?}"
        ),
        syncs_count,
        entries_count: next - 1,
        elapsed,
    }
}

fn fresh_subdirectory(root: &Path, name: &str) -> PathBuf {
    let path = root.join(name);
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    path
}

fn main() {
    let mut arguments = std::env::args().skip(1);
    let mut directory: Option<PathBuf> = None;
    let mut seconds = 3u64;
    while let Some(argument) = arguments.next() {
        if argument == "--seconds" {
            seconds = arguments
                .next()
                .expect("--seconds N")
                .parse()
                .expect("a number of seconds");
        } else {
            directory = Some(PathBuf::from(argument));
        }
    }
    let created_root = directory.is_none();
    let root = directory.unwrap_or_else(|| {
        std::env::current_dir()
            .unwrap()
            .join(format!("wal-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&root).unwrap();
    let duration = Duration::from_secs(seconds);
    println!(
        "directory: {} ({seconds} s per measurement)",
        root.display()
    );

    let mut rows = Vec::new();
    for preallocation in [Preallocation::SetLength, Preallocation::Zeros] {
        let label = format!("{preallocation:?}").to_lowercase();
        let raw = raw_loop(
            &fresh_subdirectory(&root, &format!("raw-{label}")),
            preallocation,
            ENTRY_PAYLOAD_BYTES,
            duration,
        );
        let single = wal_loop(
            &fresh_subdirectory(&root, &format!("single-{label}")),
            preallocation,
            1,
            duration,
        );
        let batched = wal_loop(
            &fresh_subdirectory(&root, &format!("batched-{label}")),
            preallocation,
            256,
            duration,
        );
        rows.push((raw, single, batched));
    }
    let raw_4k = raw_loop(
        &fresh_subdirectory(&root, "raw-4k"),
        Preallocation::Zeros,
        4096,
        duration,
    );

    println!();
    println!("| measurement | syncs/s | entries/s | vs raw (same preallocation) |");
    println!("|---|---:|---:|---:|");
    for (raw, single, batched) in &rows {
        println!(
            "| {} | {:.0} | {:.0} | 100% |",
            raw.name,
            raw.syncs_per_second(),
            raw.entries_per_second()
        );
        for measurement in [single, batched] {
            println!(
                "| {} | {:.0} | {:.0} | {:.0}% |",
                measurement.name,
                measurement.syncs_per_second(),
                measurement.entries_per_second(),
                100.0 * measurement.syncs_per_second() / raw.syncs_per_second()
            );
        }
    }
    println!(
        "| {} | {:.0} | {:.0} | |",
        raw_4k.name,
        raw_4k.syncs_per_second(),
        raw_4k.entries_per_second()
    );
    let best_raw = rows
        .iter()
        .map(|(raw, _, _)| raw.syncs_per_second())
        .fold(0.0, f64::max);
    println!();
    for (_, single, batched) in &rows {
        println!(
            "{}: one entry per sync at {:.0}% of the best raw rate (target >= 90%); {:.0} entries/s batched (target >= 500000)",
            single.name,
            100.0 * single.syncs_per_second() / best_raw,
            batched.entries_per_second()
        );
    }
    for name in [
        "raw-setlength",
        "raw-zeros",
        "raw-4k",
        "single-setlength",
        "single-zeros",
        "batched-setlength",
        "batched-zeros",
    ] {
        let _ = std::fs::remove_dir_all(root.join(name));
    }
    if created_root {
        let _ = std::fs::remove_dir(&root);
    }
}

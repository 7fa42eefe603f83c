//! `flotilla wal inspect` and `flotilla wal verify`, run as the built binary on storage
//! directories the storage crate wrote on the real disk: sound, with a torn final write, with a
//! flipped bit in an old record, with a damaged snapshot, given as the data directory around it,
//! and wrong directories.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use raft::{ConfigState, Entry, EntryPayload, HardState};
use storage::inspect::inspect;
use storage::{Bootstrap, DiskLog, DiskLogOptions, Preallocation, StdDisk, WalOptions};

fn flotilla(arguments: &[&str], directory: &Path) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(arguments)
        .arg(directory)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A founder's storage with entries 2..=301 over several small segments and a snapshot at 100.
fn write_storage(directory: &Path) {
    let options = DiskLogOptions {
        wal: WalOptions {
            segment_size_bytes: 4096,
            preallocation: Preallocation::SetLength,
            ..WalOptions::default()
        },
        snapshots_retained_count: 2,
    };
    let config = ConfigState::with_voters([1, 2, 3]);
    let bootstrap = Bootstrap::Founder(config.clone());
    let (mut log, _) = DiskLog::open(StdDisk, directory, options, bootstrap).unwrap();
    for batch in 0..30 {
        let first = 2 + batch * 10;
        let entries: Vec<Entry> = (first..first + 10)
            .map(|index| Entry {
                term: 2,
                index,
                payload: EntryPayload::Normal(Bytes::from(format!("put key{index} value"))),
            })
            .collect();
        let hard_state = HardState {
            term: 2,
            vote: Some(1),
            commit: first - 1,
        };
        log.stage_ready(Some(hard_state), &entries).unwrap();
        log.sync().unwrap();
    }
    assert!(log
        .create_snapshot(100, config, Bytes::from("state at 100"))
        .unwrap());
}

fn written() -> (tempfile::TempDir, PathBuf) {
    let temporary = tempfile::tempdir().unwrap();
    let directory = temporary.path().join("node-1");
    write_storage(&directory);
    (temporary, directory)
}

#[test]
fn a_sound_directory_verifies_and_inspect_lists_it() {
    let (_temporary, directory) = written();
    let verified = flotilla(&["wal", "verify"], &directory);
    assert!(verified.status.success(), "{}", stdout(&verified));
    let text = stdout(&verified);
    assert!(text.contains("no problem found"), "{text}");
    assert!(
        text.contains(
            "log: snapshot 100 in term 2, last index 301, hard state term 2 vote 1 commit 291"
        ),
        "{text}"
    );

    let inspected = flotilla(&["wal", "inspect"], &directory);
    assert!(inspected.status.success(), "{}", stdout(&inspected));
    let text = stdout(&inspected);
    let inspection = inspect(&StdDisk, &directory).unwrap();
    assert!(inspection.segments.len() > 1);
    for segment in &inspection.segments {
        let name = segment.path.file_name().unwrap().to_string_lossy();
        assert!(
            text.contains(&format!("wal/{name}: sequence")),
            "{name}\n{text}"
        );
    }
    assert!(text.contains("segment header: snapshot"), "{text}");
    assert!(text.contains("entries 292..=301 (terms 2..=2)"), "{text}");
    assert!(
        text.contains("snapshots/0000000000000064-0000000000000002.snap: snapshot at index 100"),
        "{text}"
    );
}

#[test]
fn a_flipped_bit_in_an_old_record_is_reported_with_its_file_and_offset() {
    let (_temporary, directory) = written();
    let inspection = inspect(&StdDisk, &directory).unwrap();
    let segment = &inspection.segments[0];
    let record = &segment.records[2];
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment.path)
        .unwrap();
    let offset = record.offset_bytes + 20;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], offset).unwrap();

    let expected = format!(
        "PROBLEM: corruption in {} at byte {}",
        segment.path.display(),
        record.offset_bytes
    );
    for command in ["verify", "inspect"] {
        let output = flotilla(&["wal", command], &directory);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{command}: {}",
            stdout(&output)
        );
        assert!(
            stdout(&output).contains(&expected),
            "{command}: {}",
            stdout(&output)
        );
    }
}

#[test]
fn a_damaged_snapshot_is_reported() {
    let (_temporary, directory) = written();
    let path = directory.join("snapshots/0000000000000064-0000000000000002.snap");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(b"X", 40).unwrap();
    let output = flotilla(&["wal", "verify"], &directory);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains(&format!("PROBLEM: corruption in {}", path.display())),
        "{text}"
    );
}

#[test]
fn a_torn_final_write_is_reported_but_is_not_a_problem() {
    let (_temporary, directory) = written();
    let inspection = inspect(&StdDisk, &directory).unwrap();
    let last = inspection.segments.last().unwrap();
    // Half a record after the last one: what a crash during its write can leave.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&last.path)
        .unwrap();
    file.write_all_at(
        &[0x40, 0, 0, 0, 2, 0, 0, 0, 0xde, 0xad],
        last.end_offset_bytes,
    )
    .unwrap();
    let output = flotilla(&["wal", "verify"], &directory);
    assert!(output.status.success(), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "torn write: 10 bytes at byte {} of {}",
            last.end_offset_bytes,
            last.path.display()
        )),
        "{text}"
    );
    assert!(text.contains("no problem found"), "{text}");
}

#[test]
fn wrong_directories_are_clear_errors() {
    let temporary = tempfile::tempdir().unwrap();
    let missing = temporary.path().join("missing");
    let output = flotilla(&["wal", "verify"], &missing);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("does not exist"),
        "{}",
        stderr(&output)
    );

    let empty = temporary.path();
    let output = flotilla(&["wal", "inspect"], empty);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("is not a Flotilla storage directory"),
        "{}",
        stderr(&output)
    );

    let file = temporary.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let output = flotilla(&["wal", "verify"], &file);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("is not a directory"),
        "{}",
        stderr(&output)
    );

    let (_temporary, directory) = written();
    let output = flotilla(&["wal", "verify"], &directory.join("wal"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("the directory above it"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_data_directory_serve_was_given_is_accepted_for_the_member_directory_inside_it() {
    let temporary = tempfile::tempdir().unwrap();
    let data_directory = temporary.path().join("node-1.data");
    write_storage(&data_directory.join("member"));
    for command in ["verify", "inspect"] {
        let output = flotilla(&["wal", command], &data_directory);
        assert!(output.status.success(), "{}", stderr(&output));
        let text = stdout(&output);
        assert!(text.contains("no problem found"), "{text}");
        assert!(text.contains("last index 301"), "{text}");
    }
    let listing = stdout(&flotilla(&["wal", "inspect"], &data_directory));
    assert!(
        listing.contains(&format!(
            "storage directory {}",
            data_directory.join("member").display()
        )),
        "{listing}"
    );
}

//! `flotilla wal inspect` and `flotilla wal verify`: read a node's storage directory without
//! changing it, list what it holds and check every checksum, with `storage::inspect`.
//!
//! Exit codes: 0 when nothing is wrong (a torn final write is not wrong: the next open discards
//! it), 1 when a problem is found (the first one is reported with its file and byte offset),
//! 2 when the directory cannot be inspected at all.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use storage::inspect::{inspect, Inspection, ItemReport, RecordContents};
use storage::StdDisk;

/// The `wal` subcommands.
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// List the WAL segments with their records, and the snapshot files, checking every
    /// checksum; exit 1 if anything is damaged.
    Inspect(WalArgs),
    /// Check every record and snapshot file and report the first problem with its file and
    /// byte offset; exit 1 if there is one.
    Verify(WalArgs),
}

/// Arguments of the `wal` subcommands.
#[derive(Debug, Args)]
pub struct WalArgs {
    /// A node's data directory (the one `serve --data-dir` was given), or the storage
    /// directory inside it: the one holding `wal/` and `snapshots/`.
    directory: PathBuf,
}

/// Runs a `wal` subcommand.
pub fn run(command: WalCommand) -> ExitCode {
    let (args, listing) = match command {
        WalCommand::Inspect(args) => (args, true),
        WalCommand::Verify(args) => (args, false),
    };
    let inspection = match open(&args.directory) {
        Ok(inspection) => inspection,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let found_problem = inspection.first_problem().is_some();
    let mut out = io::stdout().lock();
    let printed = if listing {
        print_listing(&mut out, &inspection)
    } else {
        Ok(())
    };
    let printed = printed.and_then(|()| print_verdict(&mut out, &inspection));
    // Rationale: a reader that stops early (`| head`) is no failure of the check; the exit code
    // still tells whether the directory is sound.
    if let Err(error) = printed.and_then(|()| out.flush()) {
        if error.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write the report: {error}");
            return ExitCode::from(2);
        }
    }
    if found_problem {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn open(directory: &Path) -> Result<Inspection, String> {
    // Rationale: checked here for a message that names the mistake; to the library, a missing
    // directory is only one more directory without storage in it.
    if !directory.exists() {
        return Err(format!("{} does not exist", directory.display()));
    }
    if !directory.is_dir() {
        return Err(format!("{} is not a directory", directory.display()));
    }
    // `serve --data-dir DIR` keeps its storage in DIR/member, as etcd does; an operator hands
    // this command the directory they gave `serve`.
    let inner = directory.join("member");
    let directory = if !directory.join("wal").exists() && inner.join("wal").is_dir() {
        inner.as_path()
    } else {
        directory
    };
    inspect(&StdDisk, directory).map_err(|error| {
        let mut message = error.to_string();
        if directory.file_name().is_some_and(|name| name == "wal") {
            message.push_str(" (give the directory above it, the one holding wal/)");
        }
        message
    })
}

/// `path` relative to the inspected directory, for shorter lines.
fn short<'a>(inspection: &Inspection, path: &'a Path) -> std::path::Display<'a> {
    path.strip_prefix(&inspection.directory)
        .unwrap_or(path)
        .display()
}

fn print_listing(out: &mut impl Write, inspection: &Inspection) -> io::Result<()> {
    writeln!(out, "storage directory {}", inspection.directory.display())?;
    for segment in &inspection.segments {
        writeln!(
            out,
            "{}: sequence {}, first index {}, {} bytes, records end at byte {}",
            short(inspection, &segment.path),
            segment.sequence,
            segment.first_index,
            segment.length_bytes,
            segment.end_offset_bytes
        )?;
        for record in &segment.records {
            writeln!(
                out,
                "  @{:<8} {:>6} B  {}",
                record.offset_bytes,
                record.length_bytes,
                describe_record(&record.contents)
            )?;
        }
    }
    for snapshot in &inspection.snapshots {
        let contents = match &snapshot.meta {
            Some(meta) => format!(
                "{} bytes of data, voters {:?}, learners {:?}",
                snapshot.data_bytes, meta.config.voters, meta.config.learners
            ),
            None => "damaged".to_owned(),
        };
        writeln!(
            out,
            "{}: snapshot at index {}, term {}, {} bytes, {contents}",
            short(inspection, &snapshot.path),
            snapshot.index,
            snapshot.term,
            snapshot.length_bytes
        )?;
    }
    for path in &inspection.temporary_files {
        writeln!(
            out,
            "{}: leftover of an interrupted write, removed on the next open",
            short(inspection, path)
        )?;
    }
    for path in &inspection.ignored_files {
        writeln!(out, "{}: not storage's, ignored", short(inspection, path))?;
    }
    Ok(())
}

fn describe_record(contents: &RecordContents) -> String {
    match contents {
        RecordContents::SegmentHeader {
            snapshot_index,
            snapshot_term,
            hard_state,
        } => format!(
            "segment header: snapshot {snapshot_index} in term {snapshot_term}, {}",
            describe_item(&ItemReport::HardState(*hard_state))
        ),
        RecordContents::Batch(items) if items.is_empty() => "batch: undecodable".to_owned(),
        RecordContents::Batch(items) => {
            let items: Vec<String> = items.iter().map(describe_item).collect();
            format!("batch: {}", items.join("; "))
        }
    }
}

fn describe_item(item: &ItemReport) -> String {
    match item {
        ItemReport::Entries {
            first_index,
            last_index,
            first_term,
            last_term,
        } => format!("entries {first_index}..={last_index} (terms {first_term}..={last_term})"),
        ItemReport::HardState(hard_state) => {
            let vote = hard_state
                .vote
                .map_or_else(|| "none".to_owned(), |vote| vote.to_string());
            format!(
                "hard state term {} vote {vote} commit {}",
                hard_state.term, hard_state.commit
            )
        }
        ItemReport::Compaction { index, term } => {
            format!("compaction to {index} in term {term}")
        }
        ItemReport::SnapshotInstalled { index, term } => {
            format!("snapshot {index} in term {term} installed")
        }
    }
}

/// Prints the torn write, the log and the problems.
fn print_verdict(out: &mut impl Write, inspection: &Inspection) -> io::Result<()> {
    let records_count: usize = inspection
        .segments
        .iter()
        .map(|segment| segment.records.len())
        .sum();
    if let Some(torn) = &inspection.torn_tail {
        writeln!(
            out,
            "torn write: {} bytes at byte {} of {}, from a crash during a write; the next open \
             discards them",
            torn.discarded_bytes,
            torn.offset_bytes,
            torn.path.display()
        )?;
    }
    if let Some(log) = &inspection.log {
        let vote = log
            .hard_state
            .vote
            .map_or_else(|| "none".to_owned(), |vote| vote.to_string());
        writeln!(
            out,
            "log: snapshot {} in term {}, last index {}, hard state term {} vote {vote} commit {}",
            log.snapshot_index,
            log.snapshot_term,
            log.last_index,
            log.hard_state.term,
            log.hard_state.commit
        )?;
    }
    let Some(first) = inspection.first_problem() else {
        writeln!(
            out,
            "ok: {} segments, {records_count} records and {} snapshot files checked, no problem \
             found",
            inspection.segments.len(),
            inspection.snapshots.len()
        )?;
        return Ok(());
    };
    writeln!(out, "PROBLEM: {first}")?;
    let others = inspection.problems.len() - 1;
    if others > 0 {
        writeln!(out, "and {others} more:")?;
        for problem in &inspection.problems[1..] {
            writeln!(out, "  {problem}")?;
        }
    }
    writeln!(
        out,
        "the node will refuse to start from this directory (see crates/storage/FORMAT.md, Recovery)")?;
    Ok(())
}

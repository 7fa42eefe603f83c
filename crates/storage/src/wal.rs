//! The segmented, append-only write-ahead log. FORMAT.md describes the bytes; this module
//! describes the behaviour.
//!
//! Writing is group commit: `stage_*` calls encode into one buffer, and [`Wal::sync`] writes the
//! buffer as ONE record with ONE write call and makes it durable with ONE `fdatasync`. Only
//! then does the in-memory log (what [`Wal::entries`] and friends read) change, so nothing is
//! ever reported durable before the disk said so.
//!
//! Rationale for one checksum per write rather than per entry: the kernel may write back the
//! pages of an unsynced write in any order, so a crash can leave the middle of the last write
//! missing and its end present. A per-entry checksum would show valid records after a damaged
//! one, which recovery could not tell from rot in synced data. With one checksum per write, the
//! unsynced write is all-or-nothing.

use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::{Entry, HardState, StorageError};

use crate::codec::{self, put_u32, put_u64, put_u8, Decoder};
use crate::disk::{Disk, DiskFile};
use crate::error::{io_error, Error, Result};
use crate::log_state::{Item, LogState};

/// Bytes of a record header: body length (4), type (1), reserved (3), CRC32C (4).
pub const RECORD_HEADER_BYTES: usize = 12;
/// Records start at multiples of this, so that recovery can look for records after a damaged
/// one at few offsets.
pub const RECORD_ALIGNMENT_BYTES: usize = 8;
/// The first bytes of every segment header record's body.
pub const SEGMENT_MAGIC: [u8; 8] = *b"FLOTWAL\0";
/// The version of the format FORMAT.md describes.
pub const FORMAT_VERSION: u32 = 1;

const RECORD_SEGMENT_HEADER: u8 = 1;
const RECORD_BATCH: u8 = 2;

const ITEM_ENTRIES: u8 = 1;
const ITEM_HARD_STATE: u8 = 2;
const ITEM_COMPACT: u8 = 3;
const ITEM_INSTALL_SNAPSHOT: u8 = 4;

/// The largest record body: well under the 4 GiB a length field can say.
const RECORD_BODY_BYTES_MAX: usize = 1 << 30;

/// How a new segment file's space is reserved before use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preallocation {
    /// `set_len`: instant, but the file is sparse, so each sync that fills a new block also
    /// commits file-system metadata.
    SetLength,
    /// Writes zeros over the whole segment once, so later syncs flush only data.
    Zeros,
}

/// How the WAL lays out and buffers its files.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// The size a segment is preallocated to; a new segment starts when a record would not
    /// fit. A single larger record still goes into one (larger) segment.
    pub segment_size_bytes: u64,
    /// How segments are preallocated.
    pub preallocation: Preallocation,
    /// Staged data beyond this is written (not synced) as a record of its own, to bound the
    /// buffer. One staged call larger than this is written whole.
    pub write_buffer_bytes_max: usize,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_size_bytes: 64 << 20,
            // Measured with examples/wal_bench.rs; see FORMAT.md.
            preallocation: Preallocation::Zeros,
            write_buffer_bytes_max: 4 << 20,
        }
    }
}

/// What a torn final record looked like and what recovery did about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The last segment.
    pub path: PathBuf,
    /// Where the damaged record started; the WAL continues from here.
    pub offset_bytes: u64,
    /// How many bytes after it were zeroed (the damaged record and nothing valid after it).
    pub discarded_bytes: u64,
}

/// What recovery found, for the caller to log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments_count: usize,
    /// Batch records replayed.
    pub records_count: u64,
    /// A torn write at the end of the last segment, discarded.
    pub torn_tail: Option<TornTail>,
    /// Leftovers of an interrupted segment or snapshot creation, removed.
    pub removed_temporary_files: Vec<PathBuf>,
    /// Files in the directory that are not the WAL's, left alone.
    pub ignored_files: Vec<PathBuf>,
}

impl RecoveryReport {
    /// Whether recovery found something an operator should hear of: a torn write discarded,
    /// leftovers removed, unknown files. A clean replay is not.
    pub fn is_notable(&self) -> bool {
        self.torn_tail.is_some()
            || !self.removed_temporary_files.is_empty()
            || !self.ignored_files.is_empty()
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "replayed {} records from {} segments",
            self.records_count, self.segments_count
        )?;
        if let Some(torn) = &self.torn_tail {
            write!(
                formatter,
                "; discarded a torn write of {} bytes at byte {} of {}",
                torn.discarded_bytes,
                torn.offset_bytes,
                torn.path.display()
            )?;
        }
        for path in &self.removed_temporary_files {
            write!(formatter, "; removed leftover {}", path.display())?;
        }
        for path in &self.ignored_files {
            write!(formatter, "; ignored unknown file {}", path.display())?;
        }
        Ok(())
    }
}

/// The effect of the records so far, in the few numbers needed to check the next item and to
/// write a segment header.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Summary {
    pub(crate) last_index: u64,
    pub(crate) snapshot_index: u64,
    pub(crate) snapshot_term: u64,
    pub(crate) hard_state: HardState,
}

impl Summary {
    fn record(&mut self, item: &Item) {
        match item {
            Item::Entries(entries) => {
                self.last_index = entries.last().expect("staged entries are not empty").index;
            }
            Item::HardState(hard_state) => self.hard_state = *hard_state,
            Item::Compact { index, term } => {
                self.snapshot_index = *index;
                self.snapshot_term = *term;
            }
            Item::InstallSnapshot { index, term } => {
                self.snapshot_index = *index;
                self.snapshot_term = *term;
                self.last_index = *index;
                self.hard_state.commit = self.hard_state.commit.max(*index);
            }
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub(crate) sequence: u64,
    pub(crate) first_index: u64,
    pub(crate) path: PathBuf,
}

fn segment_name(sequence: u64, first_index: u64) -> String {
    format!("{sequence:016x}-{first_index:016x}.wal")
}

pub(crate) fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (sequence, first_index) = stem.split_once('-')?;
    if sequence.len() != 16 || first_index.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(sequence, 16).ok()?,
        u64::from_str_radix(first_index, 16).ok()?,
    ))
}

/// The segment header's body: what a reader needs to start from this segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentHeader {
    pub(crate) sequence: u64,
    pub(crate) first_index: u64,
    pub(crate) summary: Summary,
}

fn encode_segment_header(header: &SegmentHeader) -> Vec<u8> {
    let mut body = Vec::with_capacity(80);
    body.extend_from_slice(&SEGMENT_MAGIC);
    put_u32(&mut body, FORMAT_VERSION);
    put_u64(&mut body, header.sequence);
    put_u64(&mut body, header.first_index);
    put_u64(&mut body, header.summary.snapshot_index);
    put_u64(&mut body, header.summary.snapshot_term);
    codec::encode_hard_state(&mut body, &header.summary.hard_state);
    body
}

fn decode_segment_header(body: Bytes) -> std::result::Result<SegmentHeader, String> {
    let mut decoder = Decoder::new(body);
    let error = |decode: codec::DecodeError| decode.0;
    let magic = decoder.bytes(SEGMENT_MAGIC.len()).map_err(error)?;
    if magic.as_ref() != SEGMENT_MAGIC {
        return Err("not a Flotilla WAL segment".to_owned());
    }
    let version = decoder.u32().map_err(error)?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, expected {FORMAT_VERSION}"
        ));
    }
    let sequence = decoder.u64().map_err(error)?;
    let first_index = decoder.u64().map_err(error)?;
    let snapshot_index = decoder.u64().map_err(error)?;
    let snapshot_term = decoder.u64().map_err(error)?;
    let hard_state = codec::decode_hard_state(&mut decoder).map_err(error)?;
    let summary = Summary {
        last_index: first_index.saturating_sub(1),
        snapshot_index,
        snapshot_term,
        hard_state,
    };
    Ok(SegmentHeader {
        sequence,
        first_index,
        summary,
    })
}

/// The whole record for `body`: header, body, zero padding to the alignment.
pub(crate) fn record_length_bytes(body_length_bytes: usize) -> usize {
    (RECORD_HEADER_BYTES + body_length_bytes).next_multiple_of(RECORD_ALIGNMENT_BYTES)
}

/// Fills in the header of a record whose body follows the header space in `buffer`, and pads
/// it.
fn finish_record(buffer: &mut Vec<u8>, record_type: u8) {
    let body_length = buffer.len() - RECORD_HEADER_BYTES;
    assert!(body_length > 0, "a record has a body");
    assert!(
        body_length <= RECORD_BODY_BYTES_MAX,
        "a record body fits its length field"
    );
    buffer[0..4].copy_from_slice(&(body_length as u32).to_le_bytes());
    buffer[4] = record_type;
    buffer[5..8].fill(0);
    let checksum = crc32c::crc32c_append(
        crc32c::crc32c(&buffer[0..8]),
        &buffer[RECORD_HEADER_BYTES..],
    );
    buffer[8..12].copy_from_slice(&checksum.to_le_bytes());
    buffer.resize(record_length_bytes(body_length), 0);
}

fn encode_record(record_type: u8, body: &[u8]) -> Vec<u8> {
    let mut buffer = vec![0; RECORD_HEADER_BYTES];
    buffer.extend_from_slice(body);
    finish_record(&mut buffer, record_type);
    buffer
}

/// What lies at an offset of a segment.
enum RecordRead {
    /// A record whose checksum matches.
    Valid {
        record_type: u8,
        body: std::ops::Range<usize>,
        next_offset: usize,
    },
    /// A zero header: the end of the data.
    End,
    /// Anything else.
    Invalid(String),
}

fn read_record(data: &[u8], offset: usize) -> RecordRead {
    let left = data.len() - offset;
    if left < RECORD_HEADER_BYTES {
        if data[offset..].iter().all(|byte| *byte == 0) {
            return RecordRead::End;
        }
        return RecordRead::Invalid(format!("{left} bytes, too short for a record header"));
    }
    let header = &data[offset..offset + RECORD_HEADER_BYTES];
    if header.iter().all(|byte| *byte == 0) {
        return RecordRead::End;
    }
    let body_length = u32::from_le_bytes(header[0..4].try_into().expect("four bytes")) as usize;
    let record_type = header[4];
    if record_type != RECORD_SEGMENT_HEADER && record_type != RECORD_BATCH {
        return RecordRead::Invalid(format!("unknown record type {record_type}"));
    }
    if header[5..8] != [0, 0, 0] {
        return RecordRead::Invalid("reserved header bytes are not zero".to_owned());
    }
    if body_length == 0 || body_length > left - RECORD_HEADER_BYTES {
        return RecordRead::Invalid(format!("body length {body_length} does not fit the file"));
    }
    let body = offset + RECORD_HEADER_BYTES..offset + RECORD_HEADER_BYTES + body_length;
    let stored = u32::from_le_bytes(header[8..12].try_into().expect("four bytes"));
    let computed = crc32c::crc32c_append(crc32c::crc32c(&header[0..8]), &data[body.clone()]);
    if stored != computed {
        return RecordRead::Invalid(format!("checksum {stored:08x}, computed {computed:08x}"));
    }
    // A file cut short inside the padding still holds the whole record: the next one starts
    // at the aligned offset all the same.
    let next_offset = offset + record_length_bytes(body_length);
    // Padding is not checksummed but must be zero, so that no flipped bit goes unnoticed.
    if data[body.end..next_offset.min(data.len())]
        .iter()
        .any(|byte| *byte != 0)
    {
        return RecordRead::Invalid("the padding after the record is not zero".to_owned());
    }
    RecordRead::Valid {
        record_type,
        body,
        next_offset,
    }
}

/// True if a valid record starts at any aligned offset after `offset`.
fn valid_record_after(data: &[u8], offset: usize) -> bool {
    let mut candidate = offset + RECORD_ALIGNMENT_BYTES;
    while candidate + RECORD_HEADER_BYTES <= data.len() {
        if matches!(read_record(data, candidate), RecordRead::Valid { .. }) {
            return true;
        }
        candidate += RECORD_ALIGNMENT_BYTES;
    }
    false
}

fn encode_item(buffer: &mut Vec<u8>, item: &Item) {
    match item {
        Item::Entries(entries) => {
            put_u8(buffer, ITEM_ENTRIES);
            codec::encode_entries(buffer, entries);
        }
        Item::HardState(hard_state) => {
            put_u8(buffer, ITEM_HARD_STATE);
            codec::encode_hard_state(buffer, hard_state);
        }
        Item::Compact { index, term } => {
            put_u8(buffer, ITEM_COMPACT);
            put_u64(buffer, *index);
            put_u64(buffer, *term);
        }
        Item::InstallSnapshot { index, term } => {
            put_u8(buffer, ITEM_INSTALL_SNAPSHOT);
            put_u64(buffer, *index);
            put_u64(buffer, *term);
        }
    }
}

pub(crate) fn decode_items(body: Bytes) -> std::result::Result<Vec<Item>, String> {
    let mut decoder = Decoder::new(body);
    let mut items = Vec::new();
    while !decoder.is_empty() {
        let error = |decode: codec::DecodeError| decode.0;
        let item = match decoder.u8().map_err(error)? {
            ITEM_ENTRIES => Item::Entries(codec::decode_entries(&mut decoder).map_err(error)?),
            ITEM_HARD_STATE => {
                Item::HardState(codec::decode_hard_state(&mut decoder).map_err(error)?)
            }
            ITEM_COMPACT => Item::Compact {
                index: decoder.u64().map_err(error)?,
                term: decoder.u64().map_err(error)?,
            },
            ITEM_INSTALL_SNAPSHOT => Item::InstallSnapshot {
                index: decoder.u64().map_err(error)?,
                term: decoder.u64().map_err(error)?,
            },
            other => return Err(format!("unknown item kind {other}")),
        };
        items.push(item);
    }
    Ok(items)
}

/// The write-ahead log: segments on a [`Disk`], and the durable log in memory.
#[derive(Debug)]
pub struct Wal<D: Disk> {
    disk: D,
    directory: PathBuf,
    options: WalOptions,
    /// Oldest first; the last is the one being written.
    segments: Vec<Segment>,
    file: D::File,
    /// Where the next record goes in the current segment.
    write_offset_bytes: u64,
    /// Where the current segment's first batch record goes.
    segment_data_start_bytes: u64,
    /// The record being built: header space, then the staged items' encoding.
    buffer: Vec<u8>,
    /// The items encoded in `buffer`.
    buffered_items: Vec<Item>,
    /// Items written to the file but not yet synced.
    written_items: Vec<Item>,
    /// The log as of every record written to the file.
    written: Summary,
    /// The log as of everything staged.
    staged: Summary,
    /// Whether the current segment has writes not yet synced.
    unsynced: bool,
    /// The durable log.
    state: LogState,
    /// Set by a fatal error: the WAL refuses every later write.
    stopped: bool,
}

impl<D: Disk> Wal<D> {
    /// Opens the WAL in `directory`, creating it if there is none, and replays it.
    ///
    /// A torn write at the end of the last segment is discarded and reported; any other
    /// damage is an [`Error::Corrupt`] naming the file and byte offset, and nothing is skipped.
    pub fn open(
        disk: D,
        directory: &Path,
        options: WalOptions,
    ) -> Result<(Wal<D>, RecoveryReport)> {
        assert!(options.segment_size_bytes > 0, "a segment has room");
        assert!(
            options.write_buffer_bytes_max <= RECORD_BODY_BYTES_MAX,
            "the buffer fits a record"
        );
        disk.create_directory_all(directory)
            .map_err(io_error("create directory", directory))?;
        let mut report = RecoveryReport::default();
        let segments = list_segments(&disk, directory, &mut report)?;
        if segments.is_empty() {
            let wal = Wal::create(disk, directory, options)?;
            return Ok((wal, report));
        }
        report.segments_count = segments.len();
        let mut state: Option<LogState> = None;
        let mut end_offset_bytes = 0;
        let mut data_start_bytes = 0;
        for (position, segment) in segments.iter().enumerate() {
            let is_last = position + 1 == segments.len();
            let replayed = replay_segment(&disk, segment, is_last, &mut state, &mut report)?;
            end_offset_bytes = replayed.end_offset_bytes;
            data_start_bytes = replayed.data_start_bytes;
        }
        let state = state.expect("at least one segment was replayed");
        if state.snapshot_term.is_none() {
            return Err(Error::Inconsistent {
                path: segments[0].path.clone(),
                reason: format!(
                    "the oldest segment starts after index {}, which no snapshot covers: \
                     older segments are missing",
                    state.snapshot_index
                ),
            });
        }
        let last = segments.last().expect("not empty");
        let file = disk
            .open(&last.path)
            .map_err(io_error("open", &last.path))?;
        let summary = Summary {
            last_index: state.last_index(),
            snapshot_index: state.snapshot_index,
            snapshot_term: state.snapshot_term.expect("checked above"),
            hard_state: state.hard_state,
        };
        let wal = Wal {
            disk,
            directory: directory.to_path_buf(),
            segments,
            file,
            write_offset_bytes: end_offset_bytes,
            segment_data_start_bytes: data_start_bytes,
            buffer: vec![0; RECORD_HEADER_BYTES],
            buffered_items: Vec::new(),
            written_items: Vec::new(),
            written: summary,
            staged: summary,
            unsynced: false,
            state,
            stopped: false,
            options,
        };
        Ok((wal, report))
    }

    /// A new WAL with one empty segment.
    fn create(disk: D, directory: &Path, options: WalOptions) -> Result<Wal<D>> {
        let summary = Summary::default();
        let header = SegmentHeader {
            sequence: 1,
            first_index: 1,
            summary,
        };
        let (segment, file, data_start_bytes) = create_segment(&disk, directory, &options, header)?;
        Ok(Wal {
            disk,
            directory: directory.to_path_buf(),
            segments: vec![segment],
            file,
            write_offset_bytes: data_start_bytes,
            segment_data_start_bytes: data_start_bytes,
            buffer: vec![0; RECORD_HEADER_BYTES],
            buffered_items: Vec::new(),
            written_items: Vec::new(),
            written: summary,
            staged: summary,
            unsynced: false,
            state: LogState::starting_at(0, Some(0), HardState::default()),
            stopped: false,
            options,
        })
    }

    fn check_running(&self) -> Result<()> {
        if self.stopped {
            return Err(Error::Stopped);
        }
        Ok(())
    }

    /// Stages entries: they replace every entry at or after the first one's index. Durable
    /// (and visible to reads) after [`Wal::sync`].
    ///
    /// Fails only if the buffer was full and writing it failed, which is fatal.
    ///
    /// # Panics
    /// If the entries are not consecutive, would leave a gap, or would overwrite the snapshot;
    /// the core never asks that.
    pub fn stage_entries(&mut self, entries: &[Entry]) -> Result<()> {
        self.check_running()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        for (offset, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                first.index + offset as u64,
                "entries are consecutive"
            );
        }
        assert!(
            first.index > self.staged.snapshot_index,
            "entries at {} overwrite the snapshot",
            first.index
        );
        assert!(
            first.index <= self.staged.last_index + 1,
            "entries at {} leave a gap",
            first.index
        );
        self.make_room(1 + codec::encoded_entries_size_bytes(entries))?;
        self.buffer_item(Item::Entries(entries.to_vec()));
        Ok(())
    }

    /// Stages a hard state. Durable after [`Wal::sync`].
    pub fn stage_hard_state(&mut self, hard_state: HardState) -> Result<()> {
        self.check_running()?;
        self.make_room(26)?;
        self.buffer_item(Item::HardState(hard_state));
        Ok(())
    }

    /// Stages a compaction: the application has a durable snapshot as of `index`, whose entry
    /// has `term`, so entries up to it may go. After [`Wal::sync`], reads no longer see them,
    /// and [`Wal::remove_obsolete_segments`] can delete the files that held only them.
    ///
    /// # Panics
    /// If `index` is not after the current snapshot or not in the log.
    pub fn stage_compaction(&mut self, index: u64, term: u64) -> Result<()> {
        self.check_running()?;
        assert!(
            index > self.staged.snapshot_index,
            "compaction to {index} is not after the snapshot"
        );
        assert!(
            index <= self.staged.last_index,
            "compaction to {index} is beyond the log"
        );
        self.make_room(17)?;
        self.buffer_item(Item::Compact { index, term });
        Ok(())
    }

    /// Stages the installation of a snapshot received from the leader: the whole log is
    /// replaced by the snapshot at `index` and `term`. The snapshot's data must be durable
    /// first (see [`crate::SnapshotStore`]).
    ///
    /// # Panics
    /// If `index` is not after the current snapshot.
    pub fn stage_install_snapshot(&mut self, index: u64, term: u64) -> Result<()> {
        self.check_running()?;
        assert!(
            index > self.staged.snapshot_index,
            "snapshot {index} is not newer"
        );
        self.make_room(17)?;
        self.buffer_item(Item::InstallSnapshot { index, term });
        Ok(())
    }

    fn buffer_item(&mut self, item: Item) {
        encode_item(&mut self.buffer, &item);
        self.staged.record(&item);
        self.buffered_items.push(item);
    }

    /// Writes the buffer out if `additional_bytes` more would overflow it.
    fn make_room(&mut self, additional_bytes: usize) -> Result<()> {
        let buffered_bytes = self.buffer.len() - RECORD_HEADER_BYTES;
        if buffered_bytes > 0
            && buffered_bytes + additional_bytes > self.options.write_buffer_bytes_max
        {
            self.write_buffered_record()?;
        }
        Ok(())
    }

    /// Writes everything staged with one write call and makes it durable with one
    /// `fdatasync`; then the reads see it.
    ///
    /// An error is fatal ([`Error::is_fatal`]) unless it came from creating a new segment, which
    /// leaves everything staged for a retry.
    pub fn sync(&mut self) -> Result<()> {
        self.check_running()?;
        if !self.buffered_items.is_empty() {
            self.write_buffered_record()?;
        }
        if self.unsynced {
            let path = self.current_path().to_path_buf();
            if let Err(source) = self.file.sync_data() {
                return Err(self.stop("fdatasync", path, source));
            }
            self.unsynced = false;
        }
        for item in self.written_items.drain(..) {
            let applied = self.state.apply(item);
            assert!(applied.is_ok(), "a checked item applies: {applied:?}");
        }
        Ok(())
    }

    /// Writes everything staged as one record, WITHOUT `fdatasync`: for what may be written
    /// lazily, such as a Ready's new commit index when it does not need a sync. The record is
    /// in the file (so a process crash keeps it) but a power failure may lose or tear it; reads
    /// see it only after the next [`Wal::sync`], which makes it durable.
    ///
    /// An error is fatal as for [`Wal::sync`].
    pub fn write(&mut self) -> Result<()> {
        self.check_running()?;
        if !self.buffered_items.is_empty() {
            self.write_buffered_record()?;
        }
        Ok(())
    }

    /// Removes the oldest segments while the next one starts at or before the entry after the
    /// durable snapshot, so that every entry after the snapshot stays on disk. Returns how many
    /// were removed. Each removal is made durable before the next, so that a crash leaves the
    /// segments contiguous.
    pub fn remove_obsolete_segments(&mut self) -> Result<usize> {
        let mut removed_count = 0;
        while self.segments.len() >= 2
            && self.segments[1].first_index <= self.state.snapshot_index + 1
        {
            let path = self.segments[0].path.clone();
            self.disk.remove(&path).map_err(io_error("remove", &path))?;
            self.segments.remove(0);
            self.disk
                .sync_directory(&self.directory)
                .map_err(io_error("sync directory", &self.directory))?;
            removed_count += 1;
        }
        Ok(removed_count)
    }

    fn current_path(&self) -> &Path {
        &self.segments.last().expect("a WAL has a segment").path
    }

    fn stop(&mut self, operation: &'static str, path: PathBuf, source: std::io::Error) -> Error {
        self.stopped = true;
        Error::SyncFailed {
            operation,
            path,
            source,
        }
    }

    fn write_buffered_record(&mut self) -> Result<()> {
        let body_length = self.buffer.len() - RECORD_HEADER_BYTES;
        let record_length = record_length_bytes(body_length) as u64;
        let segment_has_data = self.write_offset_bytes > self.segment_data_start_bytes;
        if segment_has_data
            && self.write_offset_bytes + record_length > self.options.segment_size_bytes
        {
            self.rotate()?;
        }
        finish_record(&mut self.buffer, RECORD_BATCH);
        if let Err(source) = self
            .file
            .write_all_at(self.write_offset_bytes, &self.buffer)
        {
            // The file now holds an unknown part of the record: only a restart sorts that out.
            let path = self.current_path().to_path_buf();
            return Err(self.stop("write", path, source));
        }
        self.write_offset_bytes += record_length;
        self.unsynced = true;
        for item in &self.buffered_items {
            self.written.record(item);
        }
        self.written_items.append(&mut self.buffered_items);
        self.buffer.clear();
        self.buffer.resize(RECORD_HEADER_BYTES, 0);
        Ok(())
    }

    /// Syncs the current segment and moves on to a new one.
    fn rotate(&mut self) -> Result<()> {
        if self.unsynced {
            let path = self.current_path().to_path_buf();
            if let Err(source) = self.file.sync_data() {
                return Err(self.stop("fdatasync", path, source));
            }
            self.unsynced = false;
        }
        let sequence = self.segments.last().expect("a WAL has a segment").sequence + 1;
        let header = SegmentHeader {
            sequence,
            first_index: self.written.last_index + 1,
            summary: self.written,
        };
        let created = create_segment(&self.disk, &self.directory, &self.options, header);
        let (segment, file, data_start_bytes) = created.inspect_err(|error| {
            // A failed directory sync is fatal; a segment that could not be prepared is not:
            // everything staged stays for a retry.
            if error.is_fatal() {
                self.stopped = true;
            }
        })?;
        self.segments.push(segment);
        self.file = file;
        self.write_offset_bytes = data_start_bytes;
        self.segment_data_start_bytes = data_start_bytes;
        Ok(())
    }

    /// The durable hard state.
    pub fn hard_state(&self) -> HardState {
        self.state.hard_state
    }

    /// The durable snapshot's index and term: `(0, 0)` if there is none.
    pub fn snapshot_index_and_term(&self) -> (u64, u64) {
        (
            self.state.snapshot_index,
            self.state
                .snapshot_term
                .expect("a live WAL knows its snapshot term"),
        )
    }

    /// The index of the first durable entry after the snapshot.
    pub fn first_index(&self) -> u64 {
        self.state.first_index()
    }

    /// The index of the last durable entry (the snapshot's when there is none after it).
    pub fn last_index(&self) -> u64 {
        self.state.last_index()
    }

    /// The term of the entry at `index`, for `first_index() - 1 ..= last_index()`.
    pub fn term(&self, index: u64) -> std::result::Result<u64, StorageError> {
        self.state.term(index)
    }

    /// Durable entries in `[low, high)`, at most `max_bytes` of them by [`Entry::size_bytes`]
    /// but at least one.
    pub fn entries(
        &self,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        self.state.entries(low, high, max_bytes)
    }

    /// The current segment and the offset where the next record goes in it.
    pub fn position(&self) -> (PathBuf, u64) {
        (self.current_path().to_path_buf(), self.write_offset_bytes)
    }

    /// The number of segment files.
    pub fn segments_count(&self) -> usize {
        self.segments.len()
    }

    /// The paths of the segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments
            .iter()
            .map(|segment| segment.path.clone())
            .collect()
    }

    /// True once a fatal error has stopped the WAL.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }
}

/// Lists the segments in order, removing leftovers of interrupted segment creations.
fn list_segments<D: Disk>(
    disk: &D,
    directory: &Path,
    report: &mut RecoveryReport,
) -> Result<Vec<Segment>> {
    let names = disk.list(directory).map_err(io_error("list", directory))?;
    let mut segments = Vec::new();
    for name in names {
        let path = directory.join(&name);
        if let Some((sequence, first_index)) = parse_segment_name(&name) {
            segments.push(Segment {
                sequence,
                first_index,
                path,
            });
        } else if name.ends_with(".wal.tmp") {
            disk.remove(&path).map_err(io_error("remove", &path))?;
            report.removed_temporary_files.push(path);
        } else {
            report.ignored_files.push(path);
        }
    }
    if !report.removed_temporary_files.is_empty() {
        disk.sync_directory(directory)
            .map_err(io_error("sync directory", directory))?;
    }
    segments.sort_by_key(|segment| segment.sequence);
    for pair in segments.windows(2) {
        if pair[1].sequence != pair[0].sequence + 1 {
            return Err(Error::Inconsistent {
                path: directory.to_path_buf(),
                reason: format!(
                    "segment sequence jumps from {} to {}: a segment is missing",
                    pair[0].sequence, pair[1].sequence
                ),
            });
        }
    }
    Ok(segments)
}

/// Creates a segment under a temporary name, preallocates it, writes and syncs its header,
/// then renames it into place and syncs the directory: a segment with its final name always
/// has a valid header.
fn create_segment<D: Disk>(
    disk: &D,
    directory: &Path,
    options: &WalOptions,
    header: SegmentHeader,
) -> Result<(Segment, D::File, u64)> {
    let name = segment_name(header.sequence, header.first_index);
    let path = directory.join(&name);
    let temporary_path = directory.join(format!("{name}.tmp"));
    let record = encode_record(RECORD_SEGMENT_HEADER, &encode_segment_header(&header));
    let prepared = prepare_segment_file(disk, &temporary_path, options, &record);
    let file = match prepared {
        Ok(file) => file,
        Err(error) => {
            // Best effort: recovery removes the leftover anyway.
            let _ = disk.remove(&temporary_path);
            return Err(error);
        }
    };
    disk.rename(&temporary_path, &path)
        .map_err(io_error("rename", &temporary_path))?;
    if let Err(source) = disk.sync_directory(directory) {
        return Err(Error::SyncFailed {
            operation: "sync directory",
            path: directory.to_path_buf(),
            source,
        });
    }
    // The handle follows the rename: no need to reopen.
    let segment = Segment {
        sequence: header.sequence,
        first_index: header.first_index,
        path,
    };
    Ok((segment, file, record.len() as u64))
}

fn prepare_segment_file<D: Disk>(
    disk: &D,
    path: &Path,
    options: &WalOptions,
    header_record: &[u8],
) -> Result<D::File> {
    let mut file = disk.create(path).map_err(io_error("create", path))?;
    match options.preallocation {
        Preallocation::SetLength => {
            file.set_len(options.segment_size_bytes)
                .map_err(io_error("preallocate", path))?;
        }
        Preallocation::Zeros => {
            const CHUNK_BYTES: u64 = 1 << 20;
            let zeros = vec![0u8; CHUNK_BYTES as usize];
            let mut offset = 0;
            while offset < options.segment_size_bytes {
                let length = CHUNK_BYTES.min(options.segment_size_bytes - offset);
                file.write_all_at(offset, &zeros[..length as usize])
                    .map_err(io_error("preallocate", path))?;
                offset += length;
            }
        }
    }
    file.write_all_at(0, header_record)
        .map_err(io_error("write", path))?;
    file.sync_data().map_err(io_error("fdatasync", path))?;
    Ok(file)
}

struct ReplayedSegment {
    end_offset_bytes: u64,
    data_start_bytes: u64,
}

fn corrupt(segment: &Segment, offset: usize, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: segment.path.clone(),
        offset_bytes: offset as u64,
        reason: reason.into(),
    }
}

/// What is wrong after a segment's last valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Damage {
    /// In the last segment with no valid record after it: the write in progress when the node
    /// stopped. Recovery discards these bytes.
    Torn { discarded_bytes: usize },
    /// Anywhere else: corruption. Nothing is skipped.
    Corrupt { reason: String },
}

/// One segment's bytes as read, without changing anything: recovery and inspection share it.
pub(crate) struct SegmentScan {
    pub(crate) header: SegmentHeader,
    /// Where the first batch record starts (the header record's end).
    pub(crate) data_start: usize,
    /// The batch records, in order: (offset of the record, range of its body).
    pub(crate) batches: Vec<(usize, std::ops::Range<usize>)>,
    /// Where the valid records end: the next record would go here.
    pub(crate) end_offset: usize,
    /// Damage at `end_offset`, if any.
    pub(crate) damage: Option<Damage>,
}

/// Reads a segment's records. An `Err` means its header record is damaged or does not match
/// the file name: the segment cannot be read at all.
pub(crate) fn scan_segment(segment: &Segment, data: &[u8], is_last: bool) -> Result<SegmentScan> {
    let (header, data_start) = match read_record(data, 0) {
        RecordRead::Valid {
            record_type: RECORD_SEGMENT_HEADER,
            body,
            next_offset,
        } => {
            let header = decode_segment_header(Bytes::copy_from_slice(&data[body]))
                .map_err(|reason| corrupt(segment, 0, reason))?;
            if header.sequence != segment.sequence || header.first_index != segment.first_index {
                return Err(corrupt(
                    segment,
                    0,
                    "the segment header does not match the file name",
                ));
            }
            (header, next_offset)
        }
        RecordRead::Valid { .. } => {
            return Err(corrupt(
                segment,
                0,
                "the first record is not a segment header",
            ))
        }
        RecordRead::End => return Err(corrupt(segment, 0, "the segment header is missing")),
        RecordRead::Invalid(reason) => return Err(corrupt(segment, 0, reason)),
    };

    let mut batches = Vec::new();
    let mut offset = data_start;
    let stop_reason = loop {
        if offset >= data.len() {
            break None;
        }
        match read_record(data, offset) {
            RecordRead::Valid {
                record_type: RECORD_BATCH,
                body,
                next_offset,
            } => {
                batches.push((offset, body));
                offset = next_offset;
            }
            RecordRead::Valid { .. } => {
                break Some("a segment header in the middle of a segment".to_owned())
            }
            RecordRead::End => break None,
            RecordRead::Invalid(reason) => break Some(reason),
        }
    };
    let rest_is_zero = data
        .get(offset..)
        .is_none_or(|rest| rest.iter().all(|byte| *byte == 0));
    let damage = if rest_is_zero {
        None
    } else {
        let reason = stop_reason.unwrap_or_else(|| "data after the end marker".to_owned());
        if !is_last || valid_record_after(data, offset) {
            Some(Damage::Corrupt { reason })
        } else {
            let last_nonzero = data
                .iter()
                .rposition(|byte| *byte != 0)
                .expect("the rest is not zero");
            Some(Damage::Torn {
                discarded_bytes: last_nonzero + 1 - offset,
            })
        }
    };
    Ok(SegmentScan {
        header,
        data_start,
        batches,
        end_offset: offset,
        damage,
    })
}

/// Reads a whole segment file.
pub(crate) fn read_segment<D: Disk>(disk: &D, segment: &Segment) -> Result<(D::File, Vec<u8>)> {
    let file = disk
        .open(&segment.path)
        .map_err(io_error("open", &segment.path))?;
    let length = file.len_bytes().map_err(io_error("stat", &segment.path))? as usize;
    let mut data = vec![0u8; length];
    file.read_exact_at(0, &mut data)
        .map_err(io_error("read", &segment.path))?;
    Ok((file, data))
}

/// Replays one segment into `state` (created from the first segment's header).
fn replay_segment<D: Disk>(
    disk: &D,
    segment: &Segment,
    is_last: bool,
    state: &mut Option<LogState>,
    report: &mut RecoveryReport,
) -> Result<ReplayedSegment> {
    let (mut file, mut data) = read_segment(disk, segment)?;
    let scan = scan_segment(segment, &data, is_last)?;
    check_segment_header(segment, &scan.header, state)?;
    let offset = scan.end_offset;
    match scan.damage {
        None => {}
        Some(Damage::Corrupt { reason }) => return Err(corrupt(segment, offset, reason)),
        Some(Damage::Torn { discarded_bytes }) => {
            // The last write never completed: discard it, and zero it so that a later append
            // followed by a crash cannot leave its remains after the new end.
            file.write_all_at(offset as u64, &vec![0u8; discarded_bytes])
                .map_err(io_error("write", &segment.path))?;
            file.sync_data()
                .map_err(io_error("fdatasync", &segment.path))?;
            report.torn_tail = Some(TornTail {
                path: segment.path.clone(),
                offset_bytes: offset as u64,
                discarded_bytes: discarded_bytes as u64,
            });
        }
    }

    // Shrink the data to what is used before entry payloads start sharing it.
    data.truncate(offset.min(data.len()));
    data.shrink_to_fit();
    let shared = Bytes::from(data);
    let state = state.as_mut().expect("the header set the state up");
    for (record_offset, body) in scan.batches {
        let items = decode_items(shared.slice(body))
            .map_err(|reason| corrupt(segment, record_offset, reason))?;
        for item in items {
            state
                .apply(item)
                .map_err(|reason| corrupt(segment, record_offset, reason))?;
        }
        report.records_count += 1;
    }
    Ok(ReplayedSegment {
        end_offset_bytes: offset as u64,
        data_start_bytes: scan.data_start as u64,
    })
}

/// Checks a segment header against the segments before it; the first one sets the state up.
pub(crate) fn check_segment_header(
    segment: &Segment,
    header: &SegmentHeader,
    state: &mut Option<LogState>,
) -> Result<()> {
    if header.first_index == 0 {
        return Err(corrupt(segment, 0, "a segment's first index is at least 1"));
    }
    match state {
        None => {
            let summary = header.summary;
            let base_index = header.first_index - 1;
            // The header's snapshot covers everything before the segment only if it reaches
            // its first index; otherwise a later compaction record must.
            let base_term = (summary.snapshot_index == base_index).then_some(summary.snapshot_term);
            *state = Some(LogState::starting_at(
                base_index,
                base_term,
                summary.hard_state,
            ));
        }
        Some(state) => {
            if header.first_index != state.last_index() + 1 {
                return Err(corrupt(
                    segment,
                    0,
                    format!(
                        "the segment starts at index {}, but the segments before end at {}",
                        header.first_index,
                        state.last_index()
                    ),
                ));
            }
        }
    }
    Ok(())
}

//! A deterministic in-memory [`Disk`] for the simulator and for tests, which tells data that
//! was written from data that was made durable, so that a crash loses exactly what a real crash
//! could lose.
//!
//! The model: every file (an inode) has durable contents and a list of writes and resizes not
//! yet synced; every directory has durable names and current names. [`SimDisk::crash`] throws
//! away the current names and the unsynced operations, optionally keeping a random prefix of a
//! file's unsynced operations with the last one torn. Handles opened before a crash fail
//! afterwards, as the process that held them is gone.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::disk::{Disk, DiskFile};

/// What a crash keeps of the data written since the last sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced write and unsynced directory change is lost.
    DropUnsynced,
    /// Unsynced directory changes are lost; of each file's unsynced operations, a prefix chosen
    /// from `seed` survives, and the last write of that prefix keeps only a random prefix of its
    /// bytes (a torn write). The same seed gives the same outcome.
    TearUnsynced {
        /// The caller's random value; the disk has no random source of its own.
        seed: u64,
    },
}

/// One operation on a file's contents not yet made durable.
#[derive(Clone, Debug)]
enum Operation {
    Write { offset_bytes: u64, data: Vec<u8> },
    SetLen { length_bytes: u64 },
}

impl Operation {
    fn apply(&self, contents: &mut Vec<u8>) {
        match self {
            Operation::Write { offset_bytes, data } => write_into(contents, *offset_bytes, data),
            Operation::SetLen { length_bytes } => contents.resize(*length_bytes as usize, 0),
        }
    }
}

fn write_into(contents: &mut Vec<u8>, offset_bytes: u64, data: &[u8]) {
    let start = offset_bytes as usize;
    let end = start + data.len();
    if contents.len() < end {
        contents.resize(end, 0);
    }
    contents[start..end].copy_from_slice(data);
}

#[derive(Clone, Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Operation>,
}

#[derive(Debug, Default)]
struct SimState {
    /// The names as the running process sees them.
    names: BTreeMap<PathBuf, u64>,
    /// The names a crash would leave.
    durable_names: BTreeMap<PathBuf, u64>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// Bumped by every crash; handles from an earlier generation are dead.
    generation: u64,
    /// While set, every file and directory sync fails (fault injection).
    fail_syncs: bool,
    /// The number of successful file syncs, for tests that count them.
    file_syncs_count: u64,
    /// The number of write calls, for tests that count them.
    writes_count: u64,
}

/// The simulated disk. Clones share the same contents, so a test can keep one handle to crash
/// or corrupt the disk while the WAL holds another.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while the lock was held is a bug elsewhere; the data is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Simulates a power failure: see [`CrashMode`]. Every open handle becomes invalid.
    pub fn crash(&self, mode: CrashMode) {
        let mut state = self.lock();
        state.names = state.durable_names.clone();
        let live: Vec<u64> = state.names.values().copied().collect();
        state.inodes.retain(|inode, _| live.contains(inode));
        for (inode_number, inode) in state.inodes.iter_mut() {
            let mut contents = inode.durable.clone();
            if let CrashMode::TearUnsynced { seed } = mode {
                let mut random = SplitMix64::new(seed ^ inode_number.wrapping_mul(0x9E37));
                let kept_count = random.below(inode.unsynced.len() as u64 + 1) as usize;
                for (position, operation) in inode.unsynced[..kept_count].iter().enumerate() {
                    let is_last_kept = position + 1 == kept_count;
                    match operation {
                        Operation::Write { offset_bytes, data } if is_last_kept => {
                            let kept_bytes = random.below(data.len() as u64 + 1) as usize;
                            write_into(&mut contents, *offset_bytes, &data[..kept_bytes]);
                        }
                        _ => operation.apply(&mut contents),
                    }
                }
            }
            inode.durable = contents.clone();
            inode.current = contents;
            inode.unsynced.clear();
        }
        state.generation += 1;
    }

    /// Flips one bit of the file at `path`, in both its current and its durable contents, to
    /// inject corruption. Returns false if there is no such file or byte.
    pub fn flip_bit(&self, path: &Path, offset_bytes: u64, bit: u8) -> bool {
        assert!(bit < 8, "a byte has eight bits");
        let mut state = self.lock();
        let Some(&inode_number) = state.names.get(path) else {
            return false;
        };
        let inode = state
            .inodes
            .get_mut(&inode_number)
            .expect("a named inode exists");
        let offset = offset_bytes as usize;
        if offset >= inode.current.len() {
            return false;
        }
        inode.current[offset] ^= 1 << bit;
        if offset < inode.durable.len() {
            inode.durable[offset] ^= 1 << bit;
        }
        true
    }

    /// Replaces the contents of the file at `path` (current and durable), for tests that build
    /// damaged files. Returns false if there is no such file.
    pub fn set_contents(&self, path: &Path, contents: &[u8]) -> bool {
        let mut state = self.lock();
        let Some(&inode_number) = state.names.get(path) else {
            return false;
        };
        let inode = state
            .inodes
            .get_mut(&inode_number)
            .expect("a named inode exists");
        inode.current = contents.to_vec();
        inode.durable = contents.to_vec();
        inode.unsynced.clear();
        true
    }

    /// The current contents of the file at `path`, if it exists.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let inode_number = state.names.get(path)?;
        Some(state.inodes[inode_number].current.clone())
    }

    /// Makes every later file and directory sync fail (`true`) or succeed again (`false`).
    pub fn set_fail_syncs(&self, fail: bool) {
        self.lock().fail_syncs = fail;
    }

    /// How many file syncs have succeeded so far.
    pub fn file_syncs_count(&self) -> u64 {
        self.lock().file_syncs_count
    }

    /// How many write calls have been made so far.
    pub fn writes_count(&self) -> u64 {
        self.lock().writes_count
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no such file: {}", path.display()),
    )
}

impl Disk for SimDisk {
    type File = SimFile;

    fn create_directory_all(&self, _directory: &Path) -> io::Result<()> {
        // Directories are implicit in the names; nothing to model.
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<SimFile> {
        let mut state = self.lock();
        let inode_number = match state.names.get(path) {
            Some(&existing) => {
                let inode = state
                    .inodes
                    .get_mut(&existing)
                    .expect("a named inode exists");
                inode.current.clear();
                inode.unsynced.push(Operation::SetLen { length_bytes: 0 });
                existing
            }
            None => {
                let fresh = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(fresh, Inode::default());
                state.names.insert(path.to_path_buf(), fresh);
                fresh
            }
        };
        Ok(SimFile {
            disk: self.clone(),
            inode: inode_number,
            generation: state.generation,
        })
    }

    fn open(&self, path: &Path) -> io::Result<SimFile> {
        let state = self.lock();
        let Some(&inode_number) = state.names.get(path) else {
            return Err(not_found(path));
        };
        Ok(SimFile {
            disk: self.clone(),
            inode: inode_number,
            generation: state.generation,
        })
    }

    fn list(&self, directory: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        let names = state
            .names
            .keys()
            .filter(|path| path.parent() == Some(directory))
            .filter_map(|path| {
                path.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .collect();
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let Some(inode_number) = state.names.remove(from) else {
            return Err(not_found(from));
        };
        state.names.insert(to.to_path_buf(), inode_number);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        // The inode stays until the next crash: an open handle may still use it, as on POSIX.
        match state.names.remove(path) {
            Some(_) => Ok(()),
            None => Err(not_found(path)),
        }
    }

    fn sync_directory(&self, directory: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.fail_syncs {
            return Err(io::Error::other("injected directory sync failure"));
        }
        let in_directory = |path: &PathBuf| path.parent() == Some(directory);
        state.durable_names.retain(|path, _| !in_directory(path));
        let current: Vec<(PathBuf, u64)> = state
            .names
            .iter()
            .filter(|(path, _)| in_directory(path))
            .map(|(path, inode)| (path.clone(), *inode))
            .collect();
        state.durable_names.extend(current);
        Ok(())
    }
}

/// A file of [`SimDisk`].
#[derive(Debug)]
pub struct SimFile {
    disk: SimDisk,
    inode: u64,
    generation: u64,
}

impl SimFile {
    fn with_inode<T>(
        &self,
        action: impl FnOnce(&mut SimState, u64) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.disk.lock();
        if state.generation != self.generation || !state.inodes.contains_key(&self.inode) {
            return Err(io::Error::other("file handle from before a crash"));
        }
        action(&mut state, self.inode)
    }
}

impl DiskFile for SimFile {
    fn len_bytes(&self) -> io::Result<u64> {
        self.with_inode(|state, inode| Ok(state.inodes[&inode].current.len() as u64))
    }

    fn read_exact_at(&self, offset_bytes: u64, buffer: &mut [u8]) -> io::Result<()> {
        self.with_inode(|state, inode| {
            let contents = &state.inodes[&inode].current;
            let start = offset_bytes as usize;
            let end = start + buffer.len();
            if end > contents.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end",
                ));
            }
            buffer.copy_from_slice(&contents[start..end]);
            Ok(())
        })
    }

    fn write_all_at(&mut self, offset_bytes: u64, data: &[u8]) -> io::Result<()> {
        self.with_inode(|state, inode_number| {
            state.writes_count += 1;
            let inode = state.inodes.get_mut(&inode_number).expect("checked above");
            write_into(&mut inode.current, offset_bytes, data);
            inode.unsynced.push(Operation::Write {
                offset_bytes,
                data: data.to_vec(),
            });
            Ok(())
        })
    }

    fn set_len(&mut self, length_bytes: u64) -> io::Result<()> {
        self.with_inode(|state, inode_number| {
            let inode = state.inodes.get_mut(&inode_number).expect("checked above");
            inode.current.resize(length_bytes as usize, 0);
            inode.unsynced.push(Operation::SetLen { length_bytes });
            Ok(())
        })
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.with_inode(|state, inode_number| {
            if state.fail_syncs {
                return Err(io::Error::other("injected fdatasync failure"));
            }
            state.file_syncs_count += 1;
            let inode = state.inodes.get_mut(&inode_number).expect("checked above");
            // Replaying the unsynced operations gives the current contents, at the cost of
            // what was written since the last sync rather than of the whole file: the
            // simulator syncs small records into large preallocated segments.
            for operation in inode.unsynced.drain(..) {
                operation.apply(&mut inode.durable);
            }
            Ok(())
        })
    }
}

/// A tiny deterministic generator (SplitMix64), so that a crash's outcome depends on nothing but
/// the caller's seed.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// A value in `0..bound`; `bound` must not be zero.
    fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "an empty range has no values");
        self.next() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> PathBuf {
        PathBuf::from("/data").join(name)
    }

    #[test]
    fn unsynced_writes_are_lost_and_synced_writes_survive() {
        let disk = SimDisk::new();
        let mut file = disk.create(&path("a")).unwrap();
        file.write_all_at(0, b"durable").unwrap();
        file.sync_data().unwrap();
        disk.sync_directory(Path::new("/data")).unwrap();
        file.write_all_at(7, b" and lost").unwrap();
        disk.crash(CrashMode::DropUnsynced);
        assert_eq!(disk.contents(&path("a")).unwrap(), b"durable");
        assert!(
            file.sync_data().is_err(),
            "a handle from before the crash is dead"
        );
    }

    #[test]
    fn a_name_is_lost_without_a_directory_sync() {
        let disk = SimDisk::new();
        let mut file = disk.create(&path("a")).unwrap();
        file.write_all_at(0, b"x").unwrap();
        file.sync_data().unwrap();
        disk.crash(CrashMode::DropUnsynced);
        assert!(disk.contents(&path("a")).is_none());
    }

    #[test]
    fn a_removal_is_undone_without_a_directory_sync() {
        let disk = SimDisk::new();
        let mut file = disk.create(&path("a")).unwrap();
        file.sync_data().unwrap();
        disk.sync_directory(Path::new("/data")).unwrap();
        disk.remove(&path("a")).unwrap();
        disk.crash(CrashMode::DropUnsynced);
        assert!(disk.contents(&path("a")).is_some());
    }

    #[test]
    fn a_torn_crash_keeps_a_prefix_and_is_deterministic() {
        let outcome = |seed: u64| {
            let disk = SimDisk::new();
            let mut file = disk.create(&path("a")).unwrap();
            disk.sync_directory(Path::new("/data")).unwrap();
            file.write_all_at(0, b"first-").unwrap();
            file.write_all_at(6, b"second").unwrap();
            disk.crash(CrashMode::TearUnsynced { seed });
            disk.contents(&path("a")).unwrap()
        };
        for seed in 0..64 {
            let kept = outcome(seed);
            assert!(b"first-second".starts_with(&kept), "{kept:?} is a prefix");
            assert_eq!(kept, outcome(seed));
        }
        let distinct: std::collections::BTreeSet<usize> =
            (0..64).map(|s| outcome(s).len()).collect();
        assert!(
            distinct.len() > 3,
            "different seeds tear at different places"
        );
    }

    #[test]
    fn failing_syncs_are_reported() {
        let disk = SimDisk::new();
        let mut file = disk.create(&path("a")).unwrap();
        disk.set_fail_syncs(true);
        assert!(file.sync_data().is_err());
        assert!(disk.sync_directory(Path::new("/data")).is_err());
    }
}

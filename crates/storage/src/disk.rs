//! The few file-system operations durable storage needs, behind a trait so that the simulator
//! can replace the disk with [`crate::SimDisk`], and the real implementation over `std::fs`.
//!
//! Rationale: the WAL and the snapshot store only ever create, read, write at an offset, resize,
//! fsync, rename, remove and list. Keeping the trait that small keeps the simulated disk honest:
//! every operation it models has a clear crash semantics.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A file system holding the WAL segments and snapshot files.
///
/// Names created, renamed or removed in a directory are durable only after
/// [`Disk::sync_directory`] on that directory; file contents only after [`DiskFile::sync_data`].
pub trait Disk: Clone + std::fmt::Debug {
    /// An open file of this disk.
    type File: DiskFile + std::fmt::Debug;

    /// Creates `directory` and its missing parents. Durable at once.
    fn create_directory_all(&self, directory: &Path) -> io::Result<()>;

    /// Creates an empty file at `path`, or empties the existing one, opened for reading and
    /// writing.
    fn create(&self, path: &Path) -> io::Result<Self::File>;

    /// Opens the existing file at `path` for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Self::File>;

    /// The names of the files directly inside `directory`, sorted.
    fn list(&self, directory: &Path) -> io::Result<Vec<String>>;

    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes the file at `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Makes the creations, renames and removals inside `directory` durable.
    fn sync_directory(&self, directory: &Path) -> io::Result<()>;
}

/// An open file of a [`Disk`].
pub trait DiskFile {
    /// The file's length.
    fn len_bytes(&self) -> io::Result<u64>;

    /// Fills `buffer` with the bytes at `offset_bytes`; fails if the file is too short.
    fn read_exact_at(&self, offset_bytes: u64, buffer: &mut [u8]) -> io::Result<()>;

    /// Writes all of `data` at `offset_bytes`, growing the file if needed.
    fn write_all_at(&mut self, offset_bytes: u64, data: &[u8]) -> io::Result<()>;

    /// Shrinks or grows the file to `length_bytes`; grown space reads as zeros.
    fn set_len(&mut self, length_bytes: u64) -> io::Result<()>;

    /// Makes the file's contents (and the metadata needed to read them back) durable:
    /// `fdatasync`. An error here is fatal for a WAL: the kernel may have dropped the pages.
    fn sync_data(&mut self) -> io::Result<()>;
}

/// The real disk: `std::fs`, with `fdatasync` for files and `fsync` for directories.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdDisk;

impl Disk for StdDisk {
    type File = StdFile;

    fn create_directory_all(&self, directory: &Path) -> io::Result<()> {
        // Each directory created is a new name in its parent, durable only once the parent is
        // synced.
        let missing: Vec<&Path> = directory
            .ancestors()
            .take_while(|path| !path.as_os_str().is_empty() && !path.exists())
            .collect();
        std::fs::create_dir_all(directory)?;
        for created in missing.iter().rev() {
            if let Some(parent) = created
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
            {
                self.sync_directory(parent)?;
            }
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<StdFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(StdFile { file })
    }

    fn open(&self, path: &Path) -> io::Result<StdFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(StdFile { file })
    }

    fn list(&self, directory: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for item in std::fs::read_dir(directory)? {
            let item = item?;
            if item.file_type()?.is_file() {
                names.push(item.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_directory(&self, directory: &Path) -> io::Result<()> {
        File::open(directory)?.sync_all()
    }
}

/// A file of [`StdDisk`].
#[derive(Debug)]
pub struct StdFile {
    file: File,
}

impl DiskFile for StdFile {
    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, offset_bytes: u64, buffer: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buffer, offset_bytes)
    }

    fn write_all_at(&mut self, offset_bytes: u64, data: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(&self.file, data, offset_bytes)
    }

    fn set_len(&mut self, length_bytes: u64) -> io::Result<()> {
        self.file.set_len(length_bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

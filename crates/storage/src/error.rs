//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Why a storage operation failed.
///
/// [`Error::SyncFailed`] and [`Error::Stopped`] are fatal: the node must stop, because the
/// kernel may have dropped the written pages and nothing after them can be trusted. The others
/// leave the WAL as it was and can be retried or reported.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done, e.g. "write", "create".
        operation: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An fsync (or a write whose outcome is unknown) failed: the node must stop. The WAL
    /// refuses every later write.
    #[error("fatal: {operation} {path} failed, the node must stop: {source}")]
    SyncFailed {
        /// What was being done, e.g. "fdatasync".
        operation: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An earlier fatal error stopped the WAL; it accepts no more writes.
    #[error("the WAL stopped after an earlier fatal error and accepts no more writes")]
    Stopped,
    /// A record or file failed its checksum or could not be decoded, somewhere a torn write
    /// cannot explain.
    #[error("corruption in {path} at byte {offset_bytes}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where the damaged record or field starts.
        offset_bytes: u64,
        /// What was wrong.
        reason: String,
    },
    /// The caller asked for something that cannot be done; nothing was changed.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What was wrong.
        reason: String,
    },
    /// The WAL's segments or snapshots do not fit together: a file is missing.
    #[error("inconsistent storage in {path}: {reason}")]
    Inconsistent {
        /// The directory or file concerned.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
}

impl Error {
    /// True for errors after which the node must stop.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::SyncFailed { .. } | Error::Stopped)
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an I/O error with its operation and path.
pub(crate) fn io_error(
    operation: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        operation,
        path,
        source,
    }
}

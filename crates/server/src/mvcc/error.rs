//! The store's errors. Display strings are exactly the messages etcd puts in its gRPC statuses,
//! because etcd's client libraries recognise errors by comparing those strings (clientv3's
//! `rpctypes` maps a status message back to a typed error): a different word and a client's
//! `err == rpctypes.ErrCompacted` check silently stops working.

/// Why a request to the key-value store failed.
///
/// The variants up to [`MvccError::RequestTooLarge`] are operating errors of one request: the
/// store is left exactly as it was. [`MvccError::Corrupt`] is a failure of the store's data
/// (a snapshot image that does not decode).
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// A put, txn or revoke names a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant names a lease id in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A read or a compaction asked for a revision that compaction has already removed.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read or a compaction asked for a revision the store has not reached yet.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The request's key is empty.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A put with `ignore_value` or `ignore_lease` names a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put sets `ignore_value` and also carries a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put sets `ignore_lease` and also carries a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A transaction has more compares or operations in one branch than the server allows.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOperations,
    /// A transaction writes one key twice (two puts, or a put inside a deleted range).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A range names a sort order or sort target that does not exist.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// A request is larger than the server accepts.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// Stored data or a snapshot image does not decode: a bug or disk corruption.
    #[error("etcdserver: corrupt store data: {0}")]
    Corrupt(String),
}

impl MvccError {
    /// The gRPC status code etcd answers this error with.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            MvccError::Compacted | MvccError::FutureRevision => tonic::Code::OutOfRange,
            MvccError::EmptyKey
            | MvccError::KeyNotFound
            | MvccError::ValueProvided
            | MvccError::LeaseProvided
            | MvccError::TooManyOperations
            | MvccError::DuplicateKey
            | MvccError::InvalidSortOption
            | MvccError::RequestTooLarge => tonic::Code::InvalidArgument,
            MvccError::LeaseNotFound => tonic::Code::NotFound,
            MvccError::LeaseExists => tonic::Code::FailedPrecondition,
            MvccError::Corrupt(_) => tonic::Code::DataLoss,
        }
    }

    /// True for failures of the store rather than of one request: the caller cannot answer
    /// the request and move on, because the store could not do its work.
    pub fn is_store_failure(&self) -> bool {
        matches!(self, MvccError::Corrupt(_))
    }
}

/// Builds a status for a gRPC service from the error, with etcd's code and message.
impl From<MvccError> for tonic::Status {
    fn from(error: MvccError) -> Self {
        tonic::Status::new(error.grpc_code(), error.to_string())
    }
}

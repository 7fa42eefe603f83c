//! Backups: what `Maintenance.Snapshot` streams, reading a saved one back, and rebuilding a
//! cluster's members from one (`flotilla snapshot restore`, as `etcdutl snapshot restore`).
//!
//! A backup is laid out as etcd's is, so that `etcdctl snapshot save` accepts it:
//!
//! ```text
//! body:    the MVCC store's snapshot image (mvcc::snapshot's format: versioned, crc32c)
//!          zero bytes, then the image's length as a u64 little-endian, so that the body is a
//!          multiple of 512 bytes long
//! trailer: the SHA-256 of the body, 32 bytes
//! ```
//!
//! Rationale: etcd's database is made of 512-byte multiples and its clients take "length
//! modulo 512 is 32" as the sign that the SHA-256 trailer is there (etcdctl refuses a stream
//! without it). Two checksums: the image's own catches damage inside it wherever it is read;
//! the trailer tells a truncated or damaged transfer apart before anything is decoded.
//!
//! A restore makes one member's data directory of a new cluster: the backup's key-values,
//! history, revisions and leases, with the old cluster's members dropped and the new
//! `--initial-cluster` recorded instead, as the snapshot its log starts from (index 1, term
//! 1). Every member restored with the same backup and the same flags starts from the same
//! snapshot, so the new cluster agrees from its first entry on.

use std::path::{Path, PathBuf};

use raft::{ConfigState, NodeId, Snapshot, SnapshotMeta};
use sha2::{Digest, Sha256};
use storage::{Bootstrap, DiskLog, DiskLogOptions, StdDisk};

use crate::cluster::{cluster_id, member_id, parse_initial_cluster};
use crate::identity::Identity;
use crate::mvcc::{MvccOptions, MvccStore};
use crate::proto::flotillapb::MemberAttributes;

/// Bytes of the SHA-256 trailer after the image.
pub const CHECKSUM_BYTES: usize = 32;

/// Why a backup could not be read or restored. Nothing is left half-written: a restore builds
/// the data directory beside its final name and renames it last.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Fewer bytes than a trailer: not a backup, or cut short.
    #[error("the snapshot is {0} bytes, too short to be one (truncated?)")]
    TooShort(usize),
    /// The trailer does not match the image: damaged or truncated.
    #[error(
        "the snapshot's SHA-256 does not match its contents: the file is damaged or truncated"
    )]
    ChecksumMismatch,
    /// The image does not decode.
    #[error("the snapshot does not decode: {0}")]
    Corrupt(String),
    /// The restore's flags do not describe a member.
    #[error("{0}")]
    InvalidArgument(String),
    /// The data directory to restore into exists already.
    #[error("the data directory {0} exists already; restore into a new one")]
    DataDirectoryExists(PathBuf),
    /// Writing the data directory failed.
    #[error("writing {path}: {reason}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The body's length is a multiple of this.
pub const BODY_ALIGNMENT_BYTES: usize = 512;

/// What follows an image of `image_bytes` in the body: zeros, then the image's length.
pub fn footer(image_bytes: usize) -> Vec<u8> {
    let unpadded = image_bytes + 8;
    let padding = (BODY_ALIGNMENT_BYTES - unpadded % BODY_ALIGNMENT_BYTES) % BODY_ALIGNMENT_BYTES;
    let mut footer = vec![0u8; padding];
    footer.extend_from_slice(&(image_bytes as u64).to_le_bytes());
    footer
}

/// The SHA-256 trailer of a body given in parts.
pub fn checksum(body_parts: &[&[u8]]) -> [u8; CHECKSUM_BYTES] {
    let mut hasher = Sha256::new();
    for part in body_parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// A whole backup of `image`, as [`open_backup`] reads it.
pub fn seal(image: &[u8]) -> Vec<u8> {
    let footer = footer(image.len());
    let trailer = checksum(&[image, &footer]);
    let mut backup = Vec::with_capacity(image.len() + footer.len() + CHECKSUM_BYTES);
    backup.extend_from_slice(image);
    backup.extend_from_slice(&footer);
    backup.extend_from_slice(&trailer);
    backup
}

/// The store a backup holds, after checking its trailer and decoding all of it.
pub fn open_backup(backup: &[u8]) -> Result<MvccStore, BackupError> {
    if backup.len() < CHECKSUM_BYTES + 8 {
        return Err(BackupError::TooShort(backup.len()));
    }
    let (body, trailer) = backup.split_at(backup.len() - CHECKSUM_BYTES);
    if checksum(&[body]) != trailer {
        return Err(BackupError::ChecksumMismatch);
    }
    let (padded, length) = body.split_at(body.len() - 8);
    let image_bytes = u64::from_le_bytes(length.try_into().expect("8 bytes"));
    let image = usize::try_from(image_bytes)
        .ok()
        .filter(|&bytes| bytes <= padded.len())
        .map(|bytes| padded.split_at(bytes))
        .filter(|(_, padding)| padding.iter().all(|&byte| byte == 0))
        .map(|(image, _)| image)
        .ok_or_else(|| {
            BackupError::Corrupt(format!(
                "the image length {image_bytes} does not fit the {} bytes before it",
                padded.len()
            ))
        })?;
    let mut store = MvccStore::new(MvccOptions::default());
    store
        .restore(image)
        .map_err(|error| BackupError::Corrupt(error.to_string()))?;
    Ok(store)
}

/// What `flotilla snapshot status` prints of a backup, as `etcdutl snapshot status` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupStatus {
    /// The store's HashKV at `revision`: equal to `endpoint hashkv` of a member at that
    /// revision (with the same compacted revision).
    pub hash: u32,
    /// The newest revision in the backup.
    pub revision: i64,
    /// Keys that exist at `revision`.
    pub total_keys: u64,
    /// The backup's size.
    pub total_size_bytes: u64,
}

/// Reads a backup's [`BackupStatus`], checking all of it.
pub fn status(backup: &[u8]) -> Result<BackupStatus, BackupError> {
    let store = open_backup(backup)?;
    let hash = store
        .hash_kv(0)
        .map_err(|error| BackupError::Corrupt(error.to_string()))?;
    Ok(BackupStatus {
        hash: hash.hash,
        revision: hash.hash_revision,
        total_keys: hash.keys,
        total_size_bytes: backup.len() as u64,
    })
}

/// The flags of a restore, as `etcdutl snapshot restore` takes them.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// The new member's data directory; must not exist.
    pub data_dir: PathBuf,
    /// The new member's name, one of `initial_cluster`'s.
    pub name: String,
    /// The new cluster's members, `name=url,...`.
    pub initial_cluster: String,
    /// The new cluster's token.
    pub initial_cluster_token: String,
    /// This member's peer URLs; must be its URLs in `initial_cluster`.
    pub initial_advertise_peer_urls: Vec<String>,
}

/// Builds the data directory of one member of a new cluster from `backup`; returns the
/// member's identity (its id and the new cluster's).
pub fn restore(backup: &[u8], options: &RestoreOptions) -> Result<Identity, BackupError> {
    let mut store = open_backup(backup)?;
    let members = parse_initial_cluster(&options.initial_cluster)
        .map_err(|error| BackupError::InvalidArgument(error.to_string()))?;
    let Some(this) = members.iter().find(|member| member.name == options.name) else {
        return Err(BackupError::InvalidArgument(format!(
            "--name {:?} is not in --initial-cluster {:?}",
            options.name, options.initial_cluster
        )));
    };
    let mut advertised = options.initial_advertise_peer_urls.clone();
    let mut listed = this.peer_urls.clone();
    advertised.sort();
    listed.sort();
    if advertised != listed {
        return Err(BackupError::InvalidArgument(format!(
            "--initial-advertise-peer-urls {advertised:?} differ from {:?}'s URLs in \
             --initial-cluster {listed:?}",
            options.name
        )));
    }
    let token = &options.initial_cluster_token;
    let founders: Vec<(NodeId, String, Vec<String>)> = members
        .iter()
        .map(|member| {
            (
                member_id(&member.peer_urls, token),
                member.name.clone(),
                member.peer_urls.clone(),
            )
        })
        .collect();
    let ids: Vec<NodeId> = founders.iter().map(|(id, _, _)| *id).collect();
    let identity = Identity {
        member_id: member_id(&this.peer_urls, token),
        cluster_id: cluster_id(&ids),
        founders: founders.clone(),
    };
    // The new log's first snapshot, at index 1 as a founder's bootstrap snapshot is.
    store.start_new_log(1);
    let attributes: Vec<MemberAttributes> = founders
        .into_iter()
        .map(|(id, name, peer_urls)| MemberAttributes {
            id,
            name,
            peer_urls,
            // Each member publishes its client URLs through the log when it starts.
            client_urls: Vec::new(),
            is_learner: false,
            removed: false,
        })
        .collect();
    crate::members::record_initial_members(
        &mut store,
        &crate::members::encode_initial_members(&attributes),
    );
    let image = store
        .snapshot()
        .map_err(|error| BackupError::Corrupt(error.to_string()))?;
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: 1,
            term: 1,
            config: ConfigState::with_voters(ids),
        },
        data: image,
    };
    write_data_directory(&options.data_dir, snapshot, &identity)?;
    Ok(identity)
}

/// Writes the member directory under a temporary name beside `data_dir`, then renames it into
/// place, so a failed restore leaves no directory that `serve` would take for a member's.
fn write_data_directory(
    data_dir: &Path,
    snapshot: Snapshot,
    identity: &Identity,
) -> Result<(), BackupError> {
    if data_dir.exists() {
        return Err(BackupError::DataDirectoryExists(data_dir.to_path_buf()));
    }
    let io = |path: &Path, reason: String| BackupError::Io {
        path: path.to_path_buf(),
        reason,
    };
    let mut partial_name = data_dir.as_os_str().to_owned();
    partial_name.push(".restoring");
    let partial = PathBuf::from(partial_name);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|error| io(&partial, error.to_string()))?;
    }
    let member_directory = partial.join("member");
    std::fs::create_dir_all(&member_directory)
        .map_err(|error| io(&member_directory, error.to_string()))?;
    let opened = DiskLog::open(
        StdDisk,
        &member_directory,
        DiskLogOptions::default(),
        Bootstrap::Restored(snapshot),
    );
    drop(opened.map_err(|error| io(&member_directory, error.to_string()))?);
    identity
        .save(&member_directory)
        .map_err(|error| io(&member_directory, error.to_string()))?;
    std::fs::rename(&partial, data_dir).map_err(|error| io(data_dir, error.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{PutRequest, RangeRequest};
    use crate::proto::flotillapb::{internal_request::Request, InternalRequest};

    fn backup_of(store: &MvccStore) -> Vec<u8> {
        let backup = seal(&store.snapshot().unwrap());
        // As etcd's clients check that the trailer is there.
        assert_eq!(backup.len() % BODY_ALIGNMENT_BYTES, CHECKSUM_BYTES);
        backup
    }

    fn store_with(keys: &[(&str, &str)]) -> MvccStore {
        let mut store = MvccStore::new(MvccOptions::default());
        let entries: Vec<(u64, InternalRequest)> = keys
            .iter()
            .enumerate()
            .map(|(position, (key, value))| {
                let put = PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.as_bytes().to_vec(),
                    ..PutRequest::default()
                };
                (
                    position as u64 + 2,
                    InternalRequest {
                        id: position as u64,
                        request: Some(Request::Put(put)),
                    },
                )
            })
            .collect();
        store.apply_batch(&entries);
        store
    }

    #[test]
    fn a_backup_reads_back_and_any_damage_is_refused() {
        let store = store_with(&[("a", "1"), ("b", "2"), ("a", "3")]);
        let backup = backup_of(&store);
        let status = status(&backup).unwrap();
        assert_eq!(status.revision, 4);
        assert_eq!(status.total_keys, 2);
        assert_eq!(status.hash, store.hash_kv(0).unwrap().hash);
        assert_eq!(status.total_size_bytes, backup.len() as u64);
        for position in [0, backup.len() / 2, backup.len() - 1] {
            let mut damaged = backup.clone();
            damaged[position] ^= 0x10;
            assert!(matches!(
                open_backup(&damaged),
                Err(BackupError::ChecksumMismatch)
            ));
        }
        assert!(matches!(
            open_backup(&backup[..backup.len() - 1]),
            Err(BackupError::ChecksumMismatch)
        ));
        assert!(matches!(
            open_backup(&[1, 2]),
            Err(BackupError::TooShort(2))
        ));
        for image_bytes in [0, 1, 503, 504, 505, 1000] {
            assert_eq!(
                (image_bytes + footer(image_bytes).len()) % BODY_ALIGNMENT_BYTES,
                0
            );
        }
    }

    #[test]
    fn a_restore_builds_a_member_of_a_new_cluster_that_holds_the_backup() {
        let store = store_with(&[("k", "v")]);
        let backup = backup_of(&store);
        let directory = std::env::temp_dir().join(format!(
            "flotilla-restore-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&directory);
        let options = RestoreOptions {
            data_dir: directory.join("m1"),
            name: "m1".into(),
            initial_cluster: "m1=http://127.0.0.1:1,m2=http://127.0.0.1:2".into(),
            initial_cluster_token: "new-token".into(),
            initial_advertise_peer_urls: vec!["http://127.0.0.1:1".into()],
        };
        let identity = restore(&backup, &options).unwrap();
        assert_eq!(identity.founders.len(), 2);
        let member_directory = options.data_dir.join("member");
        assert_eq!(
            Identity::load(&member_directory).unwrap(),
            Some(identity.clone())
        );
        let (log, _) = DiskLog::open(
            StdDisk,
            &member_directory,
            DiskLogOptions::default(),
            Bootstrap::Joiner,
        )
        .unwrap();
        let snapshot = log.read_snapshot().unwrap();
        assert_eq!(snapshot.meta.index, 1);
        assert_eq!(snapshot.meta.config.voters.len(), 2);
        let mut restored = MvccStore::new(MvccOptions::default());
        restored.restore(&snapshot.data).unwrap();
        assert_eq!(restored.applied_index(), 1);
        let read = restored
            .range(&RangeRequest {
                key: b"k".to_vec(),
                ..RangeRequest::default()
            })
            .unwrap();
        assert_eq!(read.kvs[0].value, b"v");
        let members = crate::members::all_members(&restored.reader());
        let ids: Vec<NodeId> = members.iter().map(|member| member.id).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&identity.member_id));
        // A second restore into the same directory is refused and changes nothing.
        assert!(matches!(
            restore(&backup, &options),
            Err(BackupError::DataDirectoryExists(_))
        ));
        let unknown = RestoreOptions {
            name: "m3".into(),
            data_dir: directory.join("m3"),
            ..options.clone()
        };
        assert!(matches!(
            restore(&backup, &unknown),
            Err(BackupError::InvalidArgument(_))
        ));
        assert!(!directory.join("m3").exists());
        std::fs::remove_dir_all(&directory).unwrap();
    }
}

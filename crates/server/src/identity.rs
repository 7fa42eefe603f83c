//! A member's identity on disk: its member id, its cluster id and, for a founding member, the
//! founding members' names and peer URLs.
//!
//! Rationale: `--initial-cluster`, `--initial-cluster-state` and `--initial-cluster-token` only
//! matter at a member's first start, as in etcd. A restart takes who the member is from its own
//! data directory, so a whole cluster restarted with `--initial-cluster-state existing` (where
//! no member could learn the cluster id from a peer) or with changed flags resumes as it was.
//!
//! The file is `<data dir>/member/identity`, plain text, one `name value` pair a line, written
//! to a temporary file, synced, and renamed over the old one, so a crash leaves the old file or
//! the new one, never a mix.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use raft::NodeId;

/// The file's name inside the member directory.
pub const IDENTITY_FILE: &str = "identity";

/// Who a member is, as its data directory records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The member's id.
    pub member_id: NodeId,
    /// The cluster's id; 0 until a member that joined a running cluster has learned it from
    /// a peer.
    pub cluster_id: u64,
    /// For a founding member, the founding members (id, name, peer URLs): what the founders'
    /// bootstrap snapshot stands for. Empty for a member that joined a running cluster.
    pub founders: Vec<(NodeId, String, Vec<String>)>,
}

/// Why the identity file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file does not say what a member's identity file says.
    #[error("{path}: line {line}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl Identity {
    /// The identity recorded in `member_directory`, or None if there is no file (an empty
    /// data directory, or one written before the file existed).
    pub fn load(member_directory: &Path) -> Result<Option<Identity>, IdentityError> {
        let path = member_directory.join(IDENTITY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(IdentityError::Io { path, source }),
        };
        Identity::parse(&text)
            .map(Some)
            .map_err(|(line, reason)| IdentityError::Malformed { path, line, reason })
    }

    fn parse(text: &str) -> Result<Identity, (usize, String)> {
        let mut member_id = None;
        let mut cluster_id = None;
        let mut founders = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let number = number + 1;
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split('\t');
            let name = fields.next().unwrap_or_default();
            let hex = |field: Option<&str>| -> Result<u64, (usize, String)> {
                let field = field.ok_or((number, format!("{name} has no value")))?;
                u64::from_str_radix(field, 16)
                    .map_err(|_| (number, format!("{field:?} is not a hexadecimal id")))
            };
            match name {
                "member_id" => member_id = Some(hex(fields.next())?),
                "cluster_id" => cluster_id = Some(hex(fields.next())?),
                "founder" => {
                    let id = hex(fields.next())?;
                    let member_name = fields
                        .next()
                        .ok_or((number, "founder has no name".to_string()))?;
                    let urls = fields
                        .next()
                        .ok_or((number, "founder has no peer URLs".to_string()))?;
                    founders.push((
                        id,
                        member_name.to_string(),
                        urls.split(',').map(str::to_string).collect(),
                    ));
                }
                other => return Err((number, format!("unknown field {other:?}"))),
            }
        }
        let member_id = member_id.ok_or((0, "no member_id".to_string()))?;
        let cluster_id = cluster_id.ok_or((0, "no cluster_id".to_string()))?;
        Ok(Identity {
            member_id,
            cluster_id,
            founders,
        })
    }

    fn render(&self) -> String {
        let mut text = format!(
            "member_id\t{:x}\ncluster_id\t{:x}\n",
            self.member_id, self.cluster_id
        );
        for (id, name, urls) in &self.founders {
            text.push_str(&format!("founder\t{id:x}\t{name}\t{}\n", urls.join(",")));
        }
        text
    }

    /// Writes the identity durably into `member_directory`, replacing any earlier one.
    pub fn save(&self, member_directory: &Path) -> Result<(), IdentityError> {
        let path = member_directory.join(IDENTITY_FILE);
        let temporary = member_directory.join(format!("{IDENTITY_FILE}.tmp"));
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        file.write_all(self.render().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&temporary, &path).map_err(io)?;
        // The rename is durable only once the directory is synced.
        std::fs::File::open(member_directory)
            .and_then(|directory| directory.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_identity_loads_back() {
        let directory = tempfile::tempdir().expect("temporary directory");
        assert_eq!(Identity::load(directory.path()).expect("load"), None);
        let identity = Identity {
            member_id: 0x8e9e_05c5_2164_694d,
            cluster_id: 0x0cdf_8181_94e3_a8c3,
            founders: vec![
                (
                    1,
                    "n1".to_string(),
                    vec!["http://127.0.0.11:2380".to_string()],
                ),
                (
                    2,
                    "n2".to_string(),
                    vec![
                        "http://127.0.0.12:2380".to_string(),
                        "http://127.0.0.12:2381".to_string(),
                    ],
                ),
            ],
        };
        identity.save(directory.path()).expect("save");
        assert_eq!(
            Identity::load(directory.path()).expect("load"),
            Some(identity.clone())
        );
        // A second save replaces the first.
        let learned = Identity {
            cluster_id: 7,
            ..identity
        };
        learned.save(directory.path()).expect("save");
        assert_eq!(
            Identity::load(directory.path()).expect("load"),
            Some(learned)
        );
    }

    #[test]
    fn malformed_file_is_refused_with_its_line() {
        let directory = tempfile::tempdir().expect("temporary directory");
        std::fs::write(
            directory.path().join(IDENTITY_FILE),
            "member_id\t1\ncluster_id\tnot-hex\n",
        )
        .expect("write");
        let error = Identity::load(directory.path()).expect_err("malformed");
        let text = error.to_string();
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("not-hex"), "{text}");
    }
}

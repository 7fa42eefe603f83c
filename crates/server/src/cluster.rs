//! Cluster identity: member ids, the cluster id, and etcd's `--initial-cluster` syntax.
//!
//! Member ids are derived, as etcd derives them, from what identifies a member (its peer URLs
//! and the cluster token), so that every node computes the same ids from the same command
//! line without talking to anyone, and a node added later can compute its own.

use std::collections::BTreeMap;

use raft::NodeId;

/// One `name=url` entry of `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    /// The member's name (`--name`).
    pub name: String,
    /// Its peer URLs.
    pub peer_urls: Vec<String>,
}

/// Why `--initial-cluster` could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClusterSpecError {
    /// An entry is not `name=url`.
    #[error("--initial-cluster entry {0:?} is not name=url")]
    MalformedEntry(String),
    /// The list is empty.
    #[error("--initial-cluster names no member")]
    Empty,
    /// A URL is not `http://host:port` or `https://host:port`.
    #[error("{0:?} is not a URL of the form http://host:port")]
    MalformedUrl(String),
    /// The same URL is given to two members.
    #[error("the URL {0:?} is given to more than one member")]
    DuplicateUrl(String),
}

/// Parses `name1=http://host:port,name2=http://host:port,...`. A name may appear several times
/// to give a member several URLs.
pub fn parse_initial_cluster(text: &str) -> Result<Vec<InitialMember>, ClusterSpecError> {
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut order = Vec::new();
    let mut seen_urls = std::collections::BTreeSet::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (name, url) = entry
            .split_once('=')
            .ok_or_else(|| ClusterSpecError::MalformedEntry(entry.to_string()))?;
        if name.is_empty() {
            return Err(ClusterSpecError::MalformedEntry(entry.to_string()));
        }
        host_and_port(url)?;
        if !seen_urls.insert(url.to_string()) {
            return Err(ClusterSpecError::DuplicateUrl(url.to_string()));
        }
        if !members.contains_key(name) {
            order.push(name.to_string());
        }
        members
            .entry(name.to_string())
            .or_default()
            .push(url.to_string());
    }
    if order.is_empty() {
        return Err(ClusterSpecError::Empty);
    }
    Ok(order
        .into_iter()
        .map(|name| {
            let peer_urls = members.remove(&name).expect("every name in order has urls");
            InitialMember { name, peer_urls }
        })
        .collect())
}

/// The `host:port` of an `http://host:port` URL (a trailing `/` is allowed).
pub fn host_and_port(url: &str) -> Result<String, ClusterSpecError> {
    let malformed = || ClusterSpecError::MalformedUrl(url.to_string());
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(malformed)?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(malformed)?;
    if host.is_empty() || rest.contains('/') || port.parse::<u16>().is_err() {
        return Err(malformed());
    }
    Ok(rest.to_string())
}

/// The first 8 bytes of a SHA-1 digest, big-endian: how etcd turns its hashes into ids.
fn first_eight_bytes_of_sha1(bytes: &[u8]) -> u64 {
    use sha1::Digest as _;
    let digest = sha1::Sha1::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A member's id, as etcd derives a founding member's: the first 8 bytes of the SHA-1 of its
/// peer URLs, sorted and concatenated, followed by the cluster token. Rationale: the same ids
/// as etcd from the same flags, so that output compares byte for byte and tools that
/// recompute ids agree. Never 0 (a Raft node id of 0 means none).
pub fn member_id(peer_urls: &[String], cluster_token: &str) -> NodeId {
    let mut urls: Vec<&String> = peer_urls.iter().collect();
    urls.sort();
    let mut bytes: Vec<u8> = urls.iter().flat_map(|url| url.bytes()).collect();
    bytes.extend_from_slice(cluster_token.as_bytes());
    first_eight_bytes_of_sha1(&bytes).max(1)
}

/// The cluster's id, as etcd derives it: the first 8 bytes of the SHA-1 of the founding
/// members' ids, sorted, each as 8 big-endian bytes (the token is in the ids already). Peers
/// with another cluster id refuse each other.
pub fn cluster_id(member_ids: &[NodeId]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    first_eight_bytes_of_sha1(&bytes).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcd_style_initial_cluster() {
        let members =
            parse_initial_cluster("a=http://127.0.0.1:2380,b=http://127.0.0.1:22380").unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].name, "a");
        assert_eq!(
            members[1].peer_urls,
            vec!["http://127.0.0.1:22380".to_string()]
        );
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(parse_initial_cluster(""), Err(ClusterSpecError::Empty));
        assert!(matches!(
            parse_initial_cluster("a"),
            Err(ClusterSpecError::MalformedEntry(_))
        ));
        assert!(matches!(
            parse_initial_cluster("a=ftp://x:1"),
            Err(ClusterSpecError::MalformedUrl(_))
        ));
        assert!(matches!(
            parse_initial_cluster("a=http://x:99999"),
            Err(ClusterSpecError::MalformedUrl(_))
        ));
        assert!(matches!(
            parse_initial_cluster("a=http://x:1,b=http://x:1"),
            Err(ClusterSpecError::DuplicateUrl(_))
        ));
    }

    #[test]
    fn ids_depend_on_urls_and_token_only() {
        let urls = vec!["http://127.0.0.1:2380".to_string()];
        assert_eq!(member_id(&urls, "t"), member_id(&urls, "t"));
        assert_ne!(member_id(&urls, "t"), member_id(&urls, "u"));
        let a = member_id(&urls, "t");
        let b = member_id(&["http://127.0.0.1:22380".to_string()], "t");
        assert_eq!(cluster_id(&[a, b]), cluster_id(&[b, a]));
        assert_ne!(cluster_id(&[a, b]), cluster_id(&[a]));
    }

    /// The ids etcd 3.4.23 printed for `--initial-cluster
    /// n1=http://127.0.0.1:23380,n2=http://127.0.0.1:23390 --initial-cluster-token tok`
    /// ("starting member 599de7774412011f in cluster 29d6ad07b630aba7", "added member
    /// 896ae6e699088f5c"), and for etcd's defaults (`default=http://localhost:2380`, token
    /// `etcd-cluster`: member 8e9e05c52164694d, cluster cdf818194e3a8c32).
    #[test]
    fn ids_are_the_ones_etcd_derives() {
        let n1 = member_id(&["http://127.0.0.1:23380".to_string()], "tok");
        let n2 = member_id(&["http://127.0.0.1:23390".to_string()], "tok");
        assert_eq!(format!("{n1:x}"), "599de7774412011f");
        assert_eq!(format!("{n2:x}"), "896ae6e699088f5c");
        assert_eq!(format!("{:x}", cluster_id(&[n2, n1])), "29d6ad07b630aba7");
        let default = member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{default:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[default])), "cdf818194e3a8c32");
    }
}

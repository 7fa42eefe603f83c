//! `flotilla serve`'s command line: etcd's flag names and meanings, so that an etcd user's
//! command line carries over.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::cluster::{self, ClusterSpecError, InitialMember};

/// Whether this node founds a new cluster or joins a running one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InitialClusterState {
    /// A founding member: the cluster starts from `--initial-cluster`.
    New,
    /// A member added to a running cluster (after `member add`).
    Existing,
}

/// The flags of `flotilla serve`.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Human-readable name of this member; must appear in --initial-cluster.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Where this member keeps its WAL, snapshots and key-value store [default: <name>.flotilla].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// URLs to serve clients on (comma separated).
    #[arg(long, default_value = "http://localhost:2379")]
    pub listen_client_urls: String,
    /// Client URLs to tell the rest of the cluster about (comma separated).
    #[arg(long, default_value = "http://localhost:2379")]
    pub advertise_client_urls: String,
    /// URL to listen on for peer traffic.
    #[arg(long, default_value = "http://localhost:2380")]
    pub listen_peer_urls: String,
    /// This member's peer URLs to tell the rest of the cluster about (comma separated).
    #[arg(long, default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// The initial cluster: name=peer-url pairs, comma separated.
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// `new` to found a cluster, `existing` to join one.
    #[arg(long, value_enum, default_value = "new")]
    pub initial_cluster_state: InitialClusterState,
    /// A token unique to the cluster: members of clusters with other tokens refuse each other.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Time between heartbeats, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Minimum election timeout, in milliseconds (each timeout is random in [t, 2t)).
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// Applied entries between two snapshots of the state machine.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Size limit of the key-value data (keys and values of every version kept); writes
    /// that would pass it are refused.
    #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024)]
    pub quota_backend_bytes: u64,
    /// Largest client request accepted, in bytes.
    #[arg(long, default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,
}

/// The length of one tick of the Raft core.
pub const TICK_INTERVAL: Duration = Duration::from_millis(10);

/// Flags that do not make sense, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--initial-cluster` could not be read.
    #[error(transparent)]
    Cluster(#[from] ClusterSpecError),
    /// `--name` is not in `--initial-cluster`.
    #[error("--name {0:?} does not appear in --initial-cluster")]
    NameNotInCluster(String),
    /// `--initial-advertise-peer-urls` differ from this member's entry in `--initial-cluster`.
    #[error("--initial-advertise-peer-urls {advertised:?} do not match --initial-cluster's {listed:?} for {name:?}")]
    PeerUrlMismatch {
        /// The member's name.
        name: String,
        /// What --initial-advertise-peer-urls says.
        advertised: Vec<String>,
        /// What --initial-cluster says.
        listed: Vec<String>,
    },
    /// The timing flags do not fit together.
    #[error("{0}")]
    Timing(String),
    /// A URL flag is malformed or empty.
    #[error("{flag}: {reason}")]
    Url {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Splits a comma-separated URL list, checking each URL.
pub fn parse_urls(flag: &'static str, text: &str) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        return Err(ConfigError::Url {
            flag,
            reason: "no URL given".to_string(),
        });
    }
    for url in &urls {
        cluster::host_and_port(url).map_err(|error| ConfigError::Url {
            flag,
            reason: error.to_string(),
        })?;
    }
    Ok(urls)
}

/// The checked meaning of the flags.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The flags as given.
    pub args: ServeArgs,
    /// The members of `--initial-cluster`.
    pub initial_members: Vec<InitialMember>,
    /// This member's id.
    pub member_id: u64,
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's advertised peer URLs.
    pub peer_urls: Vec<String>,
    /// This member's advertised client URLs.
    pub client_urls: Vec<String>,
    /// The `host:port` addresses to serve clients on.
    pub client_listen_addresses: Vec<String>,
    /// The `host:port` address to serve peers on.
    pub peer_listen_address: String,
    /// Heartbeat interval, in ticks.
    pub heartbeat_ticks: u64,
    /// Minimum election timeout, in ticks.
    pub election_timeout_ticks: u64,
    /// The data directory.
    pub data_dir: PathBuf,
}

impl ServeArgs {
    /// Checks the flags and works out ids and addresses.
    pub fn resolve(&self) -> Result<ServeConfig, ConfigError> {
        let initial_members = cluster::parse_initial_cluster(&self.initial_cluster)?;
        let peer_urls = parse_urls(
            "--initial-advertise-peer-urls",
            &self.initial_advertise_peer_urls,
        )?;
        let client_urls = parse_urls("--advertise-client-urls", &self.advertise_client_urls)?;
        let client_listen_addresses = parse_urls("--listen-client-urls", &self.listen_client_urls)?
            .iter()
            .map(|url| cluster::host_and_port(url).expect("checked by parse_urls"))
            .collect();
        let peer_listen_urls = parse_urls("--listen-peer-urls", &self.listen_peer_urls)?;
        let peer_listen_address =
            cluster::host_and_port(&peer_listen_urls[0]).expect("checked by parse_urls");
        let own = initial_members
            .iter()
            .find(|member| member.name == self.name)
            .ok_or_else(|| ConfigError::NameNotInCluster(self.name.clone()))?;
        let mut advertised_sorted = peer_urls.clone();
        advertised_sorted.sort();
        let mut listed_sorted = own.peer_urls.clone();
        listed_sorted.sort();
        if advertised_sorted != listed_sorted {
            return Err(ConfigError::PeerUrlMismatch {
                name: self.name.clone(),
                advertised: peer_urls,
                listed: own.peer_urls.clone(),
            });
        }
        let token = &self.initial_cluster_token;
        let member_ids: Vec<u64> = initial_members
            .iter()
            .map(|member| cluster::member_id(&member.peer_urls, token))
            .collect();
        let tick_ms = TICK_INTERVAL.as_millis() as u64;
        if self.heartbeat_interval < tick_ms {
            return Err(ConfigError::Timing(format!(
                "--heartbeat-interval must be at least {tick_ms} ms"
            )));
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(ConfigError::Timing(format!(
                "--election-timeout[{}] should be at least 5 times --heartbeat-interval[{}]",
                self.election_timeout, self.heartbeat_interval
            )));
        }
        if self.max_request_bytes == 0 {
            return Err(ConfigError::Timing(
                "--max-request-bytes must be positive".to_string(),
            ));
        }
        Ok(ServeConfig {
            member_id: cluster::member_id(&peer_urls, token),
            cluster_id: cluster::cluster_id(&member_ids, token),
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.flotilla", self.name))),
            heartbeat_ticks: self.heartbeat_interval / tick_ms,
            election_timeout_ticks: self.election_timeout / tick_ms,
            args: self.clone(),
            initial_members,
            peer_urls,
            client_urls,
            client_listen_addresses,
            peer_listen_address,
        })
    }
}

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
    /// Extra URLs to serve /metrics, /health, /livez and /readyz on (comma separated), at
    /// once from the start (the client URLs serve them too, once the member is ready).
    #[arg(long, default_value = "")]
    pub listen_metrics_urls: String,
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
    /// How often watchers that asked for progress notifications get one (as etcd's flag: a
    /// duration such as 10m, 30s or 1m30s).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub experimental_watch_progress_notify_interval: Duration,
    /// How often the leader records leases' remaining TTLs through the log, so that a new
    /// leader does not give them their whole TTL again (etcd's lease checkpointing; always
    /// on here).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub experimental_lease_checkpoint_interval: Duration,
    /// After start, compare this member's HashKV with its peers' and raise the CORRUPT alarm
    /// for itself on a mismatch.
    #[arg(long)]
    pub experimental_initial_corrupt_check: bool,
    /// How often the leader compares every member's HashKV with its own and raises CORRUPT for
    /// those that differ (a duration such as 10m; 0s: never).
    #[arg(long, default_value = "0s", value_parser = parse_duration_or_zero)]
    pub experimental_corrupt_check_time: Duration,
    /// The least severe log messages written: debug, info, warn or error (RUST_LOG, if set,
    /// overrides it with its finer filters).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// The logger, as etcd's flag (zap, etcd's structured logger, is the one there is).
    #[arg(long, default_value = "zap")]
    pub logger: String,
    /// Where logs go, comma separated: default (standard error), stderr, stdout, or file paths
    /// (appended to).
    #[arg(long, default_value = "default")]
    pub log_outputs: String,
    /// console (readable lines) or json (one JSON object a line).
    #[arg(long, default_value = "console")]
    pub log_format: String,
    /// How history is compacted automatically: `periodic` (keep --auto-compaction-retention
    /// of time) or `revision` (keep that many revisions).
    #[arg(long, default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// For periodic mode, hours (`1`) or a duration (`30m`); for revision mode, a number of
    /// revisions. 0 turns automatic compaction off.
    #[arg(long, default_value = "1")]
    pub auto_compaction_retention: String,
}

/// [`parse_duration`], where zero (`0`, `0s`, ...) means "never".
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let unit_start = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(unit_start);
    let is_zero = !digits.is_empty() && digits.bytes().all(|digit| digit == b'0');
    if is_zero && matches!(unit, "" | "ms" | "s" | "m" | "h") {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// A duration as etcd's flags write them: numbers each followed by a unit (`ms`, `s`, `m`,
/// `h`), such as `10m`, `500ms` or `1m30s`; positive.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration such as 10m, 30s or 500ms");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_length = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_length] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(invalid()),
        };
        rest = &rest[unit_length..];
        let part = u32::try_from(number)
            .ok()
            .and_then(|number| unit.checked_mul(number))
            .ok_or_else(invalid)?;
        total = total.checked_add(part).ok_or_else(invalid)?;
    }
    if total.is_zero() {
        return Err(format!("{text:?} must be longer than zero"));
    }
    Ok(total)
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
    /// The automatic compaction flags are not understood.
    #[error("{0}")]
    Compaction(String),
    /// A URL flag is malformed or empty.
    #[error("{flag}: {reason}")]
    Url {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An `https://` URL, which needs TLS, and Flotilla serves and dials only plain text.
    /// Rationale: serving plain text on a URL that says https would start a member no client
    /// or peer can reach, and that only shows as timeouts; etcd refuses to start without the
    /// key and certificate, and so does Flotilla, in etcd's words, naming the flags etcd would
    /// need so that a user coming from etcd recognises the error.
    #[error(
        "TLS key/cert ({certificate_flags}) must be provided for {kind} url {url} with HTTPS \
         scheme (given in {flag}), and Flotilla does not support TLS yet, so it has no such \
         flags: use http:// URLs"
    )]
    TlsNotSupported {
        /// The flag that gave the URL.
        flag: &'static str,
        /// `client` or `peer`.
        kind: &'static str,
        /// The `https://` URL.
        url: String,
        /// The flags etcd takes the key and certificate from for this kind of URL.
        certificate_flags: &'static str,
    },
}

/// Whether a URL is for clients or for peers: each has its own TLS flags in etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UrlKind {
    Client,
    Peer,
}

/// Refuses any `https://` URL among `urls`, given in `flag` (see
/// [`ConfigError::TlsNotSupported`]).
fn refuse_https<'a>(
    flag: &'static str,
    kind: UrlKind,
    urls: impl IntoIterator<Item = &'a String>,
) -> Result<(), ConfigError> {
    let Some(url) = urls.into_iter().find(|url| url.starts_with("https://")) else {
        return Ok(());
    };
    let (kind, certificate_flags) = match kind {
        UrlKind::Client => ("client", "--cert-file, --key-file"),
        UrlKind::Peer => ("peer", "--peer-cert-file, --peer-key-file"),
    };
    Err(ConfigError::TlsNotSupported {
        flag,
        kind,
        url: url.clone(),
        certificate_flags,
    })
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
    /// The `host:port` addresses to serve metrics and health on.
    pub metrics_listen_addresses: Vec<String>,
    /// How history is compacted automatically.
    pub compaction: crate::compactor::CompactionPolicy,
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
        let client_listen_urls = parse_urls("--listen-client-urls", &self.listen_client_urls)?;
        let peer_listen_urls = parse_urls("--listen-peer-urls", &self.listen_peer_urls)?;
        // The URLs this member serves first, as etcd checks them, then those it tells others.
        refuse_https("--listen-client-urls", UrlKind::Client, &client_listen_urls)?;
        refuse_https("--listen-peer-urls", UrlKind::Peer, &peer_listen_urls)?;
        refuse_https("--advertise-client-urls", UrlKind::Client, &client_urls)?;
        refuse_https("--initial-advertise-peer-urls", UrlKind::Peer, &peer_urls)?;
        refuse_https(
            "--initial-cluster",
            UrlKind::Peer,
            initial_members.iter().flat_map(|member| &member.peer_urls),
        )?;
        let client_listen_addresses = client_listen_urls
            .iter()
            .map(|url| cluster::host_and_port(url).expect("checked by parse_urls"))
            .collect();
        let metrics_listen_addresses = if self.listen_metrics_urls.is_empty() {
            Vec::new()
        } else {
            let urls = parse_urls("--listen-metrics-urls", &self.listen_metrics_urls)?;
            refuse_https("--listen-metrics-urls", UrlKind::Client, &urls)?;
            urls.iter()
                .map(|url| cluster::host_and_port(url).expect("checked by parse_urls"))
                .collect()
        };
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
        let compaction = crate::compactor::CompactionPolicy::parse(
            &self.auto_compaction_mode,
            &self.auto_compaction_retention,
        )
        .map_err(ConfigError::Compaction)?;
        if self.max_request_bytes == 0 {
            return Err(ConfigError::Timing(
                "--max-request-bytes must be positive".to_string(),
            ));
        }
        Ok(ServeConfig {
            member_id: cluster::member_id(&peer_urls, token),
            cluster_id: cluster::cluster_id(&member_ids),
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
            metrics_listen_addresses,
            compaction,
            peer_listen_address,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_etcd_writes_them() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for wrong in ["", "10", "m", "10x", "1.5s", "0s", "-1s"] {
            assert!(parse_duration(wrong).is_err(), "{wrong:?}");
        }
    }
    use clap::Parser;

    /// `flotilla serve`'s flags alone, to parse a command line as the binary does.
    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// One member on loopback, with `overrides` (flag, value) replacing its defaults.
    fn resolve(overrides: &[(&str, &str)]) -> Result<ServeConfig, ConfigError> {
        let mut flags = vec![
            ("--name", "n1"),
            ("--listen-client-urls", "http://127.0.0.1:2379"),
            ("--advertise-client-urls", "http://127.0.0.1:2379"),
            ("--listen-peer-urls", "http://127.0.0.1:2380"),
            ("--initial-advertise-peer-urls", "http://127.0.0.1:2380"),
            ("--initial-cluster", "n1=http://127.0.0.1:2380"),
        ];
        for (flag, value) in overrides {
            let position = flags
                .iter()
                .position(|(known, _)| known == flag)
                .expect("a flag of the base command line");
            flags[position].1 = value;
        }
        let mut command_line = vec!["serve".to_string()];
        for (flag, value) in flags {
            command_line.push(format!("{flag}={value}"));
        }
        Serve::try_parse_from(command_line)
            .expect("the flags parse")
            .args
            .resolve()
    }

    #[test]
    fn http_urls_are_accepted() {
        let config = resolve(&[]).expect("plain http URLs");
        assert_eq!(config.client_listen_addresses, vec!["127.0.0.1:2379"]);
        assert_eq!(config.peer_listen_address, "127.0.0.1:2380");
    }

    #[test]
    fn https_urls_are_refused_naming_the_tls_flags_etcd_needs() {
        let client = "--cert-file, --key-file";
        let peer = "--peer-cert-file, --peer-key-file";
        /// The flags that differ from the base command line: (flag, value).
        type Overrides<'a> = &'a [(&'a str, &'a str)];
        // (the overrides, the flag named, the kind of URL, the URL, etcd's TLS flags for it)
        let cases: [(Overrides, &str, &str, &str, &str); 6] = [
            (
                &[("--listen-client-urls", "https://127.0.0.1:2379")],
                "--listen-client-urls",
                "client",
                "https://127.0.0.1:2379",
                client,
            ),
            (
                // The second of two URLs.
                &[(
                    "--advertise-client-urls",
                    "http://127.0.0.1:2379,https://127.0.0.1:2479",
                )],
                "--advertise-client-urls",
                "client",
                "https://127.0.0.1:2479",
                client,
            ),
            (
                &[("--listen-peer-urls", "https://127.0.0.1:2380")],
                "--listen-peer-urls",
                "peer",
                "https://127.0.0.1:2380",
                peer,
            ),
            (
                &[
                    ("--initial-advertise-peer-urls", "https://127.0.0.1:2380"),
                    ("--initial-cluster", "n1=https://127.0.0.1:2380"),
                ],
                "--initial-advertise-peer-urls",
                "peer",
                "https://127.0.0.1:2380",
                peer,
            ),
            (
                // Another member's URL: this member could never reach it.
                &[(
                    "--initial-cluster",
                    "n1=http://127.0.0.1:2380,n2=https://127.0.0.1:2480",
                )],
                "--initial-cluster",
                "peer",
                "https://127.0.0.1:2480",
                peer,
            ),
            (
                // The URLs served are reported before those advertised, as etcd does.
                &[
                    ("--advertise-client-urls", "https://127.0.0.1:2379"),
                    ("--listen-peer-urls", "https://127.0.0.1:2380"),
                ],
                "--listen-peer-urls",
                "peer",
                "https://127.0.0.1:2380",
                peer,
            ),
        ];
        for (overrides, flag, kind, url, certificate_flags) in cases {
            let error = resolve(overrides).expect_err("an https URL without TLS");
            assert_eq!(
                error.to_string(),
                format!(
                    "TLS key/cert ({certificate_flags}) must be provided for {kind} url {url} \
                     with HTTPS scheme (given in {flag}), and Flotilla does not support TLS \
                     yet, so it has no such flags: use http:// URLs"
                ),
                "{overrides:?}"
            );
        }
    }

    #[test]
    fn zero_durations_mean_never_where_allowed() {
        for zero in ["0", "0s", "00m", "0ms"] {
            assert_eq!(parse_duration_or_zero(zero), Ok(Duration::ZERO), "{zero}");
        }
        assert_eq!(parse_duration_or_zero("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration_or_zero("s").is_err());
        assert!(parse_duration_or_zero("0x").is_err());
        assert!(parse_duration("0s").is_err());
    }
}

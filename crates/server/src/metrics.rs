//! Prometheus metrics, with etcd's names and labels where the meaning is the same, so that
//! etcd's dashboards and alert rules work unchanged; Flotilla's own are under `flotilla_`.
//!
//! Most gauges are read from the node's status and the store when scraped; counters and
//! histograms are updated where things happen: the WAL's fsyncs ([`TimedDisk`]), the write
//! path's proposals, the gRPC calls ([`record_grpc`]) and the leader changes the node reports.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::runtime::NodeStatus;

/// One member's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    has_leader: IntGauge,
    is_leader: IntGauge,
    /// Leader changes this member has seen (its first leader included, as etcd counts).
    pub leader_changes: IntCounter,
    proposals_committed: IntGauge,
    proposals_applied: IntGauge,
    /// Writes waiting for their entry to apply.
    pub proposals_pending: IntGauge,
    /// Writes that failed in the log (no leader, timeout, leadership lost, ...).
    pub proposals_failed: IntCounter,
    database_size_bytes: IntGauge,
    database_size_in_use_bytes: IntGauge,
    quota_backend_bytes: IntGauge,
    current_revision: IntGauge,
    compacted_revision: IntGauge,
    /// The WAL's fdatasync calls.
    pub wal_fsync_seconds: Histogram,
    server_id: IntGaugeVec,
    raft_term: IntGauge,
    grpc_started: IntCounterVec,
    grpc_handled: IntCounterVec,
    grpc_handling_seconds: HistogramVec,
    member_id: u64,
    peer_sent_failures: IntCounterVec,
    peer_messages_sent: IntCounterVec,
    peer_messages_received: IntCounterVec,
    active_peers: IntGaugeVec,
}

/// What a scrape reads besides the counters: the node's status and the store's sizes.
pub struct Snapshot<'a> {
    /// The node's status.
    pub status: &'a NodeStatus,
    /// The store's estimated size, in bytes.
    pub database_size_bytes: u64,
    /// The current and compacted revisions.
    pub revisions: (i64, i64),
    /// The peer transport's counters, by peer.
    pub peers: &'a std::collections::BTreeMap<u64, crate::transport::PeerCounters>,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once, with a valid name");
    metric
}

impl Metrics {
    /// The metrics of member `member_id`, with its quota.
    pub fn new(member_id: u64, quota_backend_bytes: u64) -> Arc<Metrics> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            register(
                &registry,
                IntGauge::new(name, help).expect("a valid metric"),
            )
        };
        let counter = |name: &str, help: &str| {
            register(
                &registry,
                IntCounter::new(name, help).expect("a valid metric"),
            )
        };
        // etcd's buckets for disk latencies: 1 ms to about 8 s, doubling.
        let disk_buckets = prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid buckets");
        let metrics = Metrics {
            has_leader: gauge(
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: gauge(
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            leader_changes: counter(
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            proposals_committed: gauge(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            proposals_applied: gauge(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            proposals_pending: gauge(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            proposals_failed: counter(
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            database_size_bytes: gauge(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            database_size_in_use_bytes: gauge(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            quota_backend_bytes: gauge(
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            ),
            current_revision: gauge(
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store.",
            ),
            compacted_revision: gauge(
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction in store.",
            ),
            wal_fsync_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "etcd_disk_wal_fsync_duration_seconds",
                        "The latency distributions of fsync called by WAL.",
                    )
                    .buckets(disk_buckets),
                )
                .expect("a valid metric"),
            ),
            server_id: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("etcd_server_id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID."),
                    &["server_id"],
                )
                .expect("a valid metric"),
            ),
            raft_term: gauge("flotilla_raft_term", "The member's current Raft term."),
            grpc_started: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "grpc_server_started_total",
                        "Total number of RPCs started on the server.",
                    ),
                    &["grpc_type", "grpc_service", "grpc_method"],
                )
                .expect("a valid metric"),
            ),
            grpc_handled: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "grpc_server_handled_total",
                        "Total number of RPCs completed on the server, regardless of success or failure.",
                    ),
                    &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
                )
                .expect("a valid metric"),
            ),
            grpc_handling_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "grpc_server_handling_seconds",
                        "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                    )
                    .buckets(prometheus::DEFAULT_BUCKETS.to_vec()),
                    &["grpc_type", "grpc_service", "grpc_method"],
                )
                .expect("a valid metric"),
            ),
            member_id,
            peer_sent_failures: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "etcd_network_peer_sent_failures_total",
                        "The total number of send failures from peers.",
                    ),
                    &["To"],
                )
                .expect("a valid metric"),
            ),
            peer_messages_sent: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "flotilla_network_peer_messages_sent_total",
                        "Raft messages written to each peer's connection.",
                    ),
                    &["To"],
                )
                .expect("a valid metric"),
            ),
            peer_messages_received: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "flotilla_network_peer_messages_received_total",
                        "Raft messages received from each peer.",
                    ),
                    &["From"],
                )
                .expect("a valid metric"),
            ),
            active_peers: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("etcd_network_active_peers", "The current number of active peer connections."),
                    &["Local", "Remote"],
                )
                .expect("a valid metric"),
            ),
            registry,
        };
        metrics
            .server_id
            .with_label_values(&[&format!("{member_id:x}")])
            .set(1);
        metrics
            .quota_backend_bytes
            .set(i64::try_from(quota_backend_bytes).unwrap_or(i64::MAX));
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            metrics
                .registry
                .register(Box::new(process))
                .expect("the process collector registers once");
        }
        Arc::new(metrics)
    }

    /// The text exposition of every metric, the gauges read from `now` first.
    pub fn render(&self, now: Snapshot<'_>) -> String {
        let status = now.status;
        self.has_leader.set(i64::from(status.leader.is_some()));
        self.is_leader
            .set(i64::from(status.leader == Some(status.id)));
        self.proposals_committed.set(status.commit_index as i64);
        self.proposals_applied.set(status.applied_index as i64);
        self.raft_term.set(status.term as i64);
        let size = i64::try_from(now.database_size_bytes).unwrap_or(i64::MAX);
        self.database_size_bytes.set(size);
        self.database_size_in_use_bytes.set(size);
        self.current_revision.set(now.revisions.0);
        self.compacted_revision.set(now.revisions.1);
        // The transport counts; the counters here follow them (they only grow).
        let follow = |counter: &IntCounterVec, label: &str, value: u64| {
            let counter = counter.with_label_values(&[label]);
            counter.inc_by(value.saturating_sub(counter.get()));
        };
        let local = format!("{:x}", self.member_id);
        self.active_peers.reset();
        for (&peer, counters) in now.peers {
            let peer = format!("{peer:x}");
            follow(&self.peer_sent_failures, &peer, counters.messages_dropped);
            follow(&self.peer_messages_sent, &peer, counters.messages_sent);
            follow(
                &self.peer_messages_received,
                &peer,
                counters.messages_received,
            );
            if counters.connected {
                self.active_peers
                    .with_label_values(&[local.as_str(), peer.as_str()])
                    .set(1);
            }
        }
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("the text encoder writes into a Vec");
        String::from_utf8(text).expect("the exposition format is UTF-8")
    }

    /// Counts a gRPC call to `path` (`/package.Service/Method`) starting.
    pub fn grpc_started(&self, path: &str) -> Option<GrpcCall> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let kind = grpc_type(service, method);
        self.grpc_started
            .with_label_values(&[kind, service, method])
            .inc();
        Some(GrpcCall {
            kind,
            service: service.to_string(),
            method: method.to_string(),
            started: Instant::now(),
        })
    }

    /// Counts a unary call as handled with `code` (a gRPC status name, "OK" and so on).
    /// Streams are counted when they start only: their status comes at their end, after the
    /// response's headers this sees.
    pub fn grpc_handled(&self, call: &GrpcCall, code: &str) {
        if call.kind != "unary" {
            return;
        }
        let labels = [call.kind, call.service.as_str(), call.method.as_str()];
        self.grpc_handling_seconds
            .with_label_values(&labels)
            .observe(call.started.elapsed().as_secs_f64());
        self.grpc_handled
            .with_label_values(&[call.kind, &call.service, &call.method, code])
            .inc();
    }
}

/// A gRPC call in progress, for [`Metrics::grpc_handled`].
pub struct GrpcCall {
    kind: &'static str,
    service: String,
    method: String,
    started: Instant,
}

/// etcd's labels for the kinds of call.
fn grpc_type(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("etcdserverpb.Watch", "Watch") | ("etcdserverpb.Lease", "LeaseKeepAlive") => "bidi_stream",
        ("etcdserverpb.Maintenance", "Snapshot") | ("v3electionpb.Election", "Observe") => {
            "server_stream"
        }
        _ => "unary",
    }
}

/// The name Prometheus' gRPC metrics give a status code number.
pub fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

/// The real disk, with every fdatasync of a WAL file timed into a histogram.
#[derive(Clone, Debug)]
pub struct TimedDisk {
    inner: storage::StdDisk,
    wal_fsync_seconds: Option<Histogram>,
}

impl TimedDisk {
    /// The disk, timing WAL syncs into `wal_fsync_seconds` (none: timing nothing).
    pub fn new(wal_fsync_seconds: Option<Histogram>) -> TimedDisk {
        TimedDisk {
            inner: storage::StdDisk,
            wal_fsync_seconds,
        }
    }

    fn file(&self, path: &Path, inner: storage::StdFile) -> TimedFile {
        // Only the WAL's segments: snapshot files are synced too, but etcd's metric is the
        // WAL's, whose latency every write waits for.
        let is_wal = path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|name| name == "wal");
        TimedFile {
            inner,
            wal_fsync_seconds: self.wal_fsync_seconds.clone().filter(|_| is_wal),
        }
    }
}

/// A file of a [`TimedDisk`].
#[derive(Debug)]
pub struct TimedFile {
    inner: storage::StdFile,
    wal_fsync_seconds: Option<Histogram>,
}

impl storage::Disk for TimedDisk {
    type File = TimedFile;

    fn create_directory_all(&self, directory: &Path) -> std::io::Result<()> {
        self.inner.create_directory_all(directory)
    }

    fn create(&self, path: &Path) -> std::io::Result<TimedFile> {
        Ok(self.file(path, self.inner.create(path)?))
    }

    fn open(&self, path: &Path) -> std::io::Result<TimedFile> {
        Ok(self.file(path, self.inner.open(path)?))
    }

    fn list(&self, directory: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(directory)
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }

    fn sync_directory(&self, directory: &Path) -> std::io::Result<()> {
        self.inner.sync_directory(directory)
    }
}

impl storage::DiskFile for TimedFile {
    fn len_bytes(&self) -> std::io::Result<u64> {
        self.inner.len_bytes()
    }

    fn read_exact_at(&self, offset_bytes: u64, buffer: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact_at(offset_bytes, buffer)
    }

    fn write_all_at(&mut self, offset_bytes: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write_all_at(offset_bytes, data)
    }

    fn set_len(&mut self, length_bytes: u64) -> std::io::Result<()> {
        self.inner.set_len(length_bytes)
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        let started = Instant::now();
        let result = self.inner.sync_data();
        if let Some(histogram) = &self.wal_fsync_seconds {
            histogram.observe(started.elapsed().as_secs_f64());
        }
        result
    }
}

//! The peer transport: carries the Raft core's messages between nodes over TCP.
//!
//! The core produces plain [`raft::Message`] values; this module converts them to Flotilla's
//! own protobuf format (`proto/raftpb.proto`, package `raftpb`), frames them, and delivers them
//! to the peer's transport, which converts them back and hands them to its node through the
//! bounded `inbound` channel given to [`Transport::start`].
//!
//! # Wire format
//!
//! Every connection is a sequence of frames. A frame is a 5-byte header followed by a body:
//!
//! ```text
//! +-------------------------+-----------+-------------------------------+
//! | body length: u32, BE    | kind: u8  | body: protobuf, `length` bytes |
//! +-------------------------+-----------+-------------------------------+
//! ```
//!
//! | kind | body                      | sent by                                          |
//! |------|---------------------------|--------------------------------------------------|
//! | 1    | `raftpb.Handshake`        | the connecting node, as its first frame          |
//! | 2    | `raftpb.HandshakeReply`   | the accepting node, once, in answer              |
//! | 3    | `raftpb.MessageBatch`     | the connecting node, on a messages connection    |
//! | 4    | `raftpb.SnapshotChunk`    | the connecting node, on a snapshot connection    |
//! | 5    | `raftpb.SnapshotReceived` | the accepting node, after a whole snapshot       |
//!
//! A body longer than [`TransportConfig::frame_bytes_max`] is refused from its header alone
//! (nothing is allocated for it), and the connection is dropped. So is a frame of an unknown
//! kind, a body that does not decode or convert, a message whose sender or receiver is not the
//! pair named in the handshake, or a frame the connection's kind does not carry. Dropping the
//! connection is the whole reaction: the node and its other connections are unaffected, and
//! the sender reconnects.
//!
//! ## Connections
//!
//! Connections carry messages one way: from the node that opened them to the node that
//! accepted them. Each node opens its own connection to each peer it sends to. Rationale: a
//! connection then has a single writer and a single reader, and a node never waits for a
//! peer's connection before it can answer.
//!
//! 1. The connecting node sends a `Handshake`: protocol version (1), cluster id, its own node
//!    id, the node id it expects to reach, and the connection's kind (messages or snapshot).
//! 2. The accepting node answers with a `HandshakeReply`. It refuses (and logs and counts,
//!    see [`TransportCounters::connections_refused`]) a different protocol version, a different
//!    cluster id (so a node with another cluster token, from which the cluster id derives, is
//!    refused by its peers), a connection meant for another node id, or a sender id of 0 or its
//!    own. After a refusal it closes the connection. A node started with cluster id 0 (one
//!    joining a running cluster) instead adopts the cluster id of the first handshake it
//!    accepts, and refuses others from then on (see [`TransportConfig::cluster_id`]).
//! 3. On a messages connection the connecting node then sends `MessageBatch` frames and nothing
//!    comes back; the accepting node closes an older messages connection from the same peer
//!    when a new one is accepted, so a half-open connection from a crashed peer does not linger.
//! 4. On a snapshot connection the connecting node sends one InstallSnapshot message as
//!    consecutive `SnapshotChunk` frames ([`TransportConfig::snapshot_chunk_bytes`] of data
//!    each; the first carries the message with empty snapshot data and the total length), the
//!    accepting node reassembles them, hands the whole message to its node, answers
//!    `SnapshotReceived`, and closes the connection. Rationale for a separate connection: a
//!    snapshot of many megabytes would otherwise hold up heartbeats queued behind it, and the
//!    follower would start an election while it is still receiving the leader's snapshot.
//!
//! # Flow control
//!
//! * Sending: [`Transport::send`] never blocks. Each peer has a queue of at most
//!   [`TransportConfig::queue_messages_max`] messages and a writer task. A message for a full
//!   queue is dropped, counted, and its peer reported unreachable ([`Transport::take_unreachable`])
//!   so the runtime calls `Node::report_unreachable`, which moves the leader to probing that
//!   peer: Raft retransmits what was lost. Messages queued while the connection is being
//!   (re)established wait in the queue; the writer reconnects with exponential backoff between
//!   [`TransportConfig::reconnect_backoff_min`] and [`TransportConfig::reconnect_backoff_max`].
//! * Batching: when messages have queued up, the writer takes as many as fit in one frame
//!   (up to `frame_bytes_max` of encoded messages) and writes them with one write call.
//! * Receiving: messages are forwarded to `inbound` with back-pressure (the reader waits for
//!   room), not dropped. Rationale: a message dropped at the receiver is invisible to the
//!   sender's core, whereas waiting stops reading the socket, fills the sender's queue, and
//!   so surfaces at the sender as "unreachable" — exactly the signal its core uses to slow
//!   down. Memory stays bounded by the channel and the socket buffers.

mod convert;
mod frame;
mod inbound;
mod peer;

#[cfg(test)]
mod tests;

pub use convert::ConvertError;
pub use frame::FrameError;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raft::{Message, MessageBody, NodeId};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::warn;

/// The version of the connection protocol described above. A peer speaking another version
/// is refused at the handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// Settings of a [`Transport`]. [`TransportConfig::new`] gives defaults for everything but
/// the node's identity and address.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This node's id; never 0.
    pub local_id: NodeId,
    /// The cluster's id. Peers presenting another id are refused. 0 means not known yet (a
    /// member joining a running cluster, whose founding members it cannot know): the id of
    /// the first accepted handshake addressed to this node is adopted, as an etcd member
    /// joining with `--initial-cluster-state existing` learns the cluster id from its peers.
    /// Until then this node's own connections present 0, which its peers refuse, and are
    /// retried.
    pub cluster_id: u64,
    /// Where to listen for peers; port 0 picks a free port (see [`Transport::local_address`]).
    pub listen_address: SocketAddr,
    /// Messages queued per peer before further ones are dropped. Default 4096.
    pub queue_messages_max: usize,
    /// Largest frame body accepted or sent. Default 16 MiB. Must exceed
    /// `snapshot_chunk_bytes` and the core's largest AppendEntries message.
    pub frame_bytes_max: u32,
    /// Snapshot data per chunk frame. Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot accepted from a peer. Default 16 GiB.
    pub snapshot_bytes_max: u64,
    /// Connections from peers served at once; further ones are closed on accept. Default 256.
    pub connections_inbound_max: usize,
    /// First delay before reconnecting to a peer. Default 50 ms.
    pub reconnect_backoff_min: Duration,
    /// Longest delay between attempts to reconnect to a peer. Default 2 s.
    pub reconnect_backoff_max: Duration,
    /// Longest wait for a connect, a handshake, one write, one snapshot chunk or a snapshot's
    /// acknowledgement before the connection is given up. Default 5 s.
    pub io_timeout: Duration,
}

impl TransportConfig {
    /// Defaults for a node `local_id` of cluster `cluster_id` listening on `listen_address`.
    pub fn new(local_id: NodeId, cluster_id: u64, listen_address: SocketAddr) -> TransportConfig {
        TransportConfig {
            local_id,
            cluster_id,
            listen_address,
            queue_messages_max: 4096,
            frame_bytes_max: 16 * 1024 * 1024,
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_bytes_max: 16 * 1024 * 1024 * 1024,
            connections_inbound_max: 256,
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
        }
    }

    fn validate(&self) -> Result<(), TransportError> {
        let invalid = |reason: &str| {
            Err(TransportError::InvalidConfig {
                reason: reason.to_string(),
            })
        };
        if self.local_id == 0 {
            return invalid("local_id must not be 0");
        }
        if self.queue_messages_max == 0 {
            return invalid("queue_messages_max must be at least 1");
        }
        if self.connections_inbound_max == 0 {
            return invalid("connections_inbound_max must be at least 1");
        }
        if self.snapshot_chunk_bytes == 0 {
            return invalid("snapshot_chunk_bytes must be at least 1");
        }
        // Room for the chunk's other fields and, in the first chunk, the message header.
        let chunk_overhead_bytes = 64 * 1024;
        if self.snapshot_chunk_bytes as u64 + chunk_overhead_bytes > u64::from(self.frame_bytes_max)
        {
            return invalid("frame_bytes_max must exceed snapshot_chunk_bytes by 64 KiB");
        }
        if self.reconnect_backoff_min.is_zero() {
            return invalid("reconnect_backoff_min must not be zero");
        }
        if self.reconnect_backoff_min > self.reconnect_backoff_max {
            return invalid("reconnect_backoff_min must not exceed reconnect_backoff_max");
        }
        if self.io_timeout.is_zero() {
            return invalid("io_timeout must not be zero");
        }
        Ok(())
    }
}

/// An operating error of the transport. The transport is left as it was.
#[derive(Debug, Error)]
pub enum TransportError {
    /// A setting is out of range.
    #[error("invalid transport configuration: {reason}")]
    InvalidConfig {
        /// Which setting, and why.
        reason: String,
    },
    /// The listening socket could not be bound.
    #[error("binding the peer listener to {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The system's error.
        source: std::io::Error,
    },
    /// [`Transport::add_peer`] for an id already added.
    #[error("peer {id} is already known")]
    PeerExists {
        /// The peer's id.
        id: NodeId,
    },
    /// An operation on a peer that was never added, or was removed.
    #[error("peer {id} is not known")]
    UnknownPeer {
        /// The peer's id.
        id: NodeId,
    },
    /// A peer id of 0, or this node's own id.
    #[error("{id} cannot be a peer: {reason}")]
    InvalidPeer {
        /// The id given.
        id: NodeId,
        /// Why it cannot be a peer.
        reason: &'static str,
    },
    /// The transport was shut down.
    #[error("the transport is shut down")]
    ShutDown,
}

/// The outcome of sending one InstallSnapshot message, for `Node::report_snapshot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The peer the snapshot was for.
    pub peer: NodeId,
    /// True if the peer acknowledged the whole snapshot.
    pub success: bool,
}

/// Counters of one peer, by the peer's id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// Messages written to the peer's connection (a snapshot counts once).
    pub messages_sent: u64,
    /// Message batch frames written to the peer's connection; fewer than `messages_sent`
    /// when messages queued up and were batched.
    pub frames_sent: u64,
    /// Messages received from the peer and handed to the node.
    pub messages_received: u64,
    /// Messages for the peer that were dropped: queue full, connection lost with them in a
    /// write, too large for a frame, snapshot failed, or peer unknown.
    pub messages_dropped: u64,
    /// Attempts to connect to the peer that failed, were refused, or ended in an error.
    pub connections_failed: u64,
    /// Messages waiting in the peer's queue now.
    pub queue_messages: u64,
    /// True while a messages connection to the peer is established.
    pub connected: bool,
}

/// Counters of the whole transport, for monitoring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportCounters {
    /// Per peer, including ids that only ever sent to this node.
    pub peers: BTreeMap<NodeId, PeerCounters>,
    /// Inbound connections that passed the handshake.
    pub connections_accepted: u64,
    /// Inbound connections refused: wrong cluster id, protocol version or node id, or too many
    /// connections.
    pub connections_refused: u64,
    /// Inbound connections dropped for a malformed, oversized or unexpected frame or message.
    pub connections_dropped_malformed: u64,
}

/// The peer transport of one node. Dropping it stops its tasks; [`Transport::shutdown`] also
/// waits for them.
pub struct Transport {
    shared: Arc<Shared>,
    local_address: SocketAddr,
    peers: Mutex<HashMap<NodeId, Peer>>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

/// The transport's state shared with its tasks.
struct Shared {
    config: TransportConfig,
    /// The cluster id in force: `config.cluster_id`, or the adopted one when that was 0.
    cluster_id: AtomicU64,
    reports: Mutex<Reports>,
    reports_ready: Notify,
    statistics: Mutex<HashMap<NodeId, Arc<PeerStatistics>>>,
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    connections_dropped_malformed: AtomicU64,
    /// The newest messages connection from each peer, so that accepting a new one closes the
    /// old one. Holds a serial number (so a connection unregisters only itself) and the
    /// sender whose drop tells the old connection to stop.
    inbound_connections: Mutex<HashMap<NodeId, (u64, tokio::sync::oneshot::Sender<()>)>>,
    inbound_connection_serial: AtomicU64,
}

/// Reports waiting for the runtime. Coalesced per peer, so bounded by the number of peers
/// however long the runtime leaves them.
#[derive(Default)]
struct Reports {
    unreachable: BTreeSet<NodeId>,
    snapshots: BTreeMap<NodeId, bool>,
}

#[derive(Default)]
struct PeerStatistics {
    messages_sent: AtomicU64,
    frames_sent: AtomicU64,
    messages_received: AtomicU64,
    messages_dropped: AtomicU64,
    connections_failed: AtomicU64,
}

/// One peer this node sends to.
struct Peer {
    queue: mpsc::Sender<Message>,
    address: watch::Sender<String>,
    connected: Arc<AtomicBool>,
    writer: JoinHandle<()>,
    /// The snapshot being sent, if any; one at a time per peer, as the core sends them.
    snapshot: Option<JoinHandle<()>>,
}

impl Peer {
    fn abort(&self) {
        self.writer.abort();
        if let Some(snapshot) = &self.snapshot {
            snapshot.abort();
        }
    }
}

/// Locks a mutex, recovering from poisoning: every critical section here leaves the data
/// consistent, so a panic elsewhere is no reason to stop the transport.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn statistics(&self, peer: NodeId) -> Arc<PeerStatistics> {
        lock(&self.statistics).entry(peer).or_default().clone()
    }

    fn report_unreachable(&self, peer: NodeId) {
        let inserted = lock(&self.reports).unreachable.insert(peer);
        if inserted {
            self.reports_ready.notify_one();
        }
    }

    fn report_snapshot(&self, peer: NodeId, success: bool) {
        lock(&self.reports).snapshots.insert(peer, success);
        self.reports_ready.notify_one();
    }
}

impl Transport {
    /// Binds the listener and starts accepting peers. Messages received are forwarded to
    /// `inbound`; when it is full, reading from peers waits (see "Flow control" above).
    pub async fn start(
        config: TransportConfig,
        inbound: mpsc::Sender<Message>,
    ) -> Result<Transport, TransportError> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen_address)
            .await
            .map_err(|source| TransportError::Bind {
                address: config.listen_address,
                source,
            })?;
        let local_address = listener
            .local_addr()
            .map_err(|source| TransportError::Bind {
                address: config.listen_address,
                source,
            })?;
        let shared = Arc::new(Shared {
            cluster_id: AtomicU64::new(config.cluster_id),
            config,
            reports: Mutex::new(Reports::default()),
            reports_ready: Notify::new(),
            statistics: Mutex::new(HashMap::new()),
            connections_accepted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_dropped_malformed: AtomicU64::new(0),
            inbound_connections: Mutex::new(HashMap::new()),
            inbound_connection_serial: AtomicU64::new(0),
        });
        let accept_task = tokio::spawn(inbound::accept_loop(shared.clone(), listener, inbound));
        Ok(Transport {
            shared,
            local_address,
            peers: Mutex::new(HashMap::new()),
            accept_task: Mutex::new(Some(accept_task)),
        })
    }

    /// The address the listener is bound to (with the port chosen if the configured one
    /// was 0).
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// The cluster id in force: the configured one, or the one adopted from a peer when it
    /// was 0 (still 0 until a peer has connected).
    pub fn cluster_id(&self) -> u64 {
        self.shared.cluster_id.load(Ordering::Relaxed)
    }

    /// Starts sending to peer `id` at `address` ("host:port"). Messages for it are queued at
    /// once; the connection is made in the background.
    pub fn add_peer(&self, id: NodeId, address: String) -> Result<(), TransportError> {
        if id == 0 {
            return Err(TransportError::InvalidPeer {
                id,
                reason: "node id 0 names nobody",
            });
        }
        if id == self.shared.config.local_id {
            return Err(TransportError::InvalidPeer {
                id,
                reason: "it is this node",
            });
        }
        if self.is_shut_down() {
            return Err(TransportError::ShutDown);
        }
        let mut peers = lock(&self.peers);
        if peers.contains_key(&id) {
            return Err(TransportError::PeerExists { id });
        }
        let (queue, queue_receiver) = mpsc::channel(self.shared.config.queue_messages_max);
        let (address, address_receiver) = watch::channel(address);
        let connected = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(peer::run_writer(
            self.shared.clone(),
            id,
            queue_receiver,
            address_receiver,
            connected.clone(),
        ));
        peers.insert(
            id,
            Peer {
                queue,
                address,
                connected,
                writer,
                snapshot: None,
            },
        );
        Ok(())
    }

    /// Points peer `id` at a new address. An established connection to the old address is
    /// closed; queued messages go to the new one.
    pub fn update_peer(&self, id: NodeId, address: String) -> Result<(), TransportError> {
        let peers = lock(&self.peers);
        let peer = peers.get(&id).ok_or(TransportError::UnknownPeer { id })?;
        peer.address.send_if_modified(|current| {
            if *current == address {
                return false;
            }
            *current = address;
            true
        });
        Ok(())
    }

    /// Adds peer `id`, or points it at `address` if it is known.
    pub fn set_peer(&self, id: NodeId, address: String) -> Result<(), TransportError> {
        match self.update_peer(id, address.clone()) {
            Err(TransportError::UnknownPeer { .. }) => self.add_peer(id, address),
            other => other,
        }
    }

    /// Stops sending to peer `id`: its queued messages are dropped, its connection and any
    /// snapshot being sent to it are closed.
    pub fn remove_peer(&self, id: NodeId) -> Result<(), TransportError> {
        let peer = lock(&self.peers)
            .remove(&id)
            .ok_or(TransportError::UnknownPeer { id })?;
        peer.abort();
        Ok(())
    }

    /// Queues messages for their receivers; never blocks. A message that cannot be queued
    /// (unknown receiver, full queue, a snapshot while another is being sent to the same peer)
    /// is dropped and counted, and its receiver reported unreachable (or, for a snapshot,
    /// reported as a failed snapshot). A receiver whose connection is down is reported
    /// unreachable too, though its messages stay queued for the reconnection.
    pub fn send(&self, messages: Vec<Message>) {
        let mut peers = lock(&self.peers);
        for message in messages {
            let to = message.to;
            if message.from != self.shared.config.local_id {
                // Rationale: the receiver drops a connection carrying a message from anyone
                // but the handshaking node, so one bad message would cost all queued ones.
                warn!(
                    from = message.from,
                    to, "not sending a message from another node"
                );
                self.shared
                    .statistics(to)
                    .messages_dropped
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(peer) = peers.get_mut(&to) else {
                self.shared
                    .statistics(to)
                    .messages_dropped
                    .fetch_add(1, Ordering::Relaxed);
                self.shared.report_unreachable(to);
                continue;
            };
            if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                self.send_snapshot(to, peer, message);
                continue;
            }
            if !peer.connected.load(Ordering::Relaxed) {
                self.shared.report_unreachable(to);
            }
            if peer.queue.try_send(message).is_err() {
                self.shared
                    .statistics(to)
                    .messages_dropped
                    .fetch_add(1, Ordering::Relaxed);
                self.shared.report_unreachable(to);
            }
        }
    }

    fn send_snapshot(&self, to: NodeId, peer: &mut Peer, message: Message) {
        let busy = peer
            .snapshot
            .as_ref()
            .is_some_and(|task| !task.is_finished());
        if busy {
            warn!(
                peer = to,
                "dropping a snapshot: another is still being sent to this peer"
            );
            self.shared
                .statistics(to)
                .messages_dropped
                .fetch_add(1, Ordering::Relaxed);
            self.shared.report_snapshot(to, false);
            return;
        }
        let address = peer.address.borrow().clone();
        peer.snapshot = Some(tokio::spawn(peer::run_snapshot_sender(
            self.shared.clone(),
            to,
            address,
            message,
        )));
    }

    /// Peers found unreachable since the last call, each once, for
    /// `Node::report_unreachable`.
    pub fn take_unreachable(&self) -> Vec<NodeId> {
        std::mem::take(&mut lock(&self.shared.reports).unreachable)
            .into_iter()
            .collect()
    }

    /// Snapshot sends finished since the last call, the latest per peer, for
    /// `Node::report_snapshot`.
    pub fn take_snapshot_reports(&self) -> Vec<SnapshotReport> {
        std::mem::take(&mut lock(&self.shared.reports).snapshots)
            .into_iter()
            .map(|(peer, success)| SnapshotReport { peer, success })
            .collect()
    }

    /// Waits until there may be something for [`Transport::take_unreachable`] or
    /// [`Transport::take_snapshot_reports`]. A report made while nobody waits wakes the next
    /// waiter, so none is missed.
    pub async fn reports_ready(&self) {
        self.shared.reports_ready.notified().await;
    }

    /// The counters for monitoring.
    pub fn counters(&self) -> TransportCounters {
        let mut peers: BTreeMap<NodeId, PeerCounters> = lock(&self.shared.statistics)
            .iter()
            .map(|(id, statistics)| {
                let counters = PeerCounters {
                    messages_sent: statistics.messages_sent.load(Ordering::Relaxed),
                    frames_sent: statistics.frames_sent.load(Ordering::Relaxed),
                    messages_received: statistics.messages_received.load(Ordering::Relaxed),
                    messages_dropped: statistics.messages_dropped.load(Ordering::Relaxed),
                    connections_failed: statistics.connections_failed.load(Ordering::Relaxed),
                    queue_messages: 0,
                    connected: false,
                };
                (*id, counters)
            })
            .collect();
        for (id, peer) in lock(&self.peers).iter() {
            let counters = peers.entry(*id).or_default();
            counters.queue_messages = (peer.queue.max_capacity() - peer.queue.capacity()) as u64;
            counters.connected = peer.connected.load(Ordering::Relaxed);
        }
        TransportCounters {
            peers,
            connections_accepted: self.shared.connections_accepted.load(Ordering::Relaxed),
            connections_refused: self.shared.connections_refused.load(Ordering::Relaxed),
            connections_dropped_malformed: self
                .shared
                .connections_dropped_malformed
                .load(Ordering::Relaxed),
        }
    }

    fn is_shut_down(&self) -> bool {
        lock(&self.accept_task).is_none()
    }

    /// Stops listening, closes every connection, drops every queued message, and waits for
    /// the tasks to end, so that the listening port is free when this returns.
    pub async fn shutdown(&self) {
        let accept_task = lock(&self.accept_task).take();
        let peers: Vec<Peer> = lock(&self.peers).drain().map(|(_, peer)| peer).collect();
        let mut tasks = Vec::new();
        if let Some(task) = accept_task {
            task.abort();
            tasks.push(task);
        }
        for peer in peers {
            peer.abort();
            tasks.push(peer.writer);
            tasks.extend(peer.snapshot);
        }
        for task in tasks {
            // An aborted task ends with a cancellation error, which is the point.
            let _ = task.await;
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.accept_task).take() {
            task.abort();
        }
        for peer in lock(&self.peers).values() {
            peer.abort();
        }
    }
}

impl crate::runtime::PeerNetwork for Transport {
    fn send(&self, messages: Vec<Message>) {
        Transport::send(self, messages);
    }

    fn set_peer(&self, id: NodeId, address: String) {
        if let Err(error) = Transport::set_peer(self, id, address) {
            warn!(peer = id, %error, "not connecting to peer");
        }
    }

    fn remove_peer(&self, id: NodeId) {
        // An unknown peer is already as wanted: not sent to.
        let _ = Transport::remove_peer(self, id);
    }

    fn take_reports(&self) -> (Vec<NodeId>, Vec<(NodeId, bool)>) {
        let snapshots = self
            .take_snapshot_reports()
            .into_iter()
            .map(|report| (report.peer, report.success))
            .collect();
        (self.take_unreachable(), snapshots)
    }
}

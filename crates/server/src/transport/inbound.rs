//! The receiving side: the listener, the handshake, and one task per accepted connection
//! that decodes its frames and forwards the messages to the node.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use raft::{Message, MessageBody, NodeId, Snapshot, SnapshotMeta};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::convert::ConvertError;
use super::frame::{decode_body, encode_frame, read_frame, FrameError, FrameKind};
use super::{lock, Shared, PROTOCOL_VERSION};
use crate::proto::raftpb as pb;

/// Why a connection ended, either side. Logged, never returned to the runtime: the sender
/// reconnects and Raft retransmits.
#[derive(Debug, Error)]
pub(crate) enum ConnectionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("message does not convert: {0}")]
    Convert(#[from] ConvertError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for {what}")]
    Timeout { what: &'static str },
    #[error("connection closed by the peer")]
    Closed,
    #[error("refused by the peer: {reason}")]
    RefusedByPeer { reason: String },
    #[error("handshake refused: {reason}")]
    HandshakeRefused { reason: String },
    #[error("unexpected {kind:?} frame")]
    UnexpectedFrame { kind: FrameKind },
    #[error("message from {from} to {to} on a connection from node {peer} to node {local}")]
    Misaddressed {
        from: NodeId,
        to: NodeId,
        peer: NodeId,
        local: NodeId,
    },
    #[error("snapshot stream: {reason}")]
    Snapshot { reason: String },
    #[error("the node no longer takes messages")]
    InboundClosed,
}

/// Reads one frame of `kind` within `io_timeout` and decodes its body: each step of the
/// handshakes and of a snapshot's transfer expects exactly one kind of frame.
pub(crate) async fn read_expected<T: prost::Message + Default>(
    stream: &mut (impl AsyncRead + Unpin),
    kind: FrameKind,
    io_timeout: Duration,
    frame_bytes_max: u32,
    what: &'static str,
) -> Result<T, ConnectionError> {
    let frame = tokio::time::timeout(io_timeout, read_frame(stream, frame_bytes_max))
        .await
        .map_err(|_| ConnectionError::Timeout { what })??
        .ok_or(ConnectionError::Closed)?;
    if frame.kind != kind {
        return Err(ConnectionError::UnexpectedFrame { kind: frame.kind });
    }
    Ok(decode_body(frame.body)?)
}

/// Encodes `body` as one frame of `kind` and writes it within the I/O timeout.
async fn write_frame(
    shared: &Shared,
    stream: &mut BufReader<TcpStream>,
    kind: FrameKind,
    body: &impl prost::Message,
    what: &'static str,
) -> Result<(), ConnectionError> {
    let config = &shared.config;
    let mut buffer = BytesMut::new();
    encode_frame(kind, body, config.frame_bytes_max, &mut buffer)?;
    tokio::time::timeout(config.io_timeout, stream.get_mut().write_all(&buffer))
        .await
        .map_err(|_| ConnectionError::Timeout { what })??;
    Ok(())
}

impl ConnectionError {
    /// True if the peer sent something this protocol does not allow.
    fn is_malformed_input(&self) -> bool {
        match self {
            ConnectionError::Frame(FrameError::Io(_) | FrameError::Truncated) => false,
            ConnectionError::Frame(_)
            | ConnectionError::Convert(_)
            | ConnectionError::UnexpectedFrame { .. }
            | ConnectionError::Misaddressed { .. }
            | ConnectionError::Snapshot { .. } => true,
            _ => false,
        }
    }
}

/// Bytes read from a socket at a time. Rationale: most frames (heartbeats, responses) are
/// tens of bytes; buffering reads a burst of them with one system call.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Accepts connections until the task is aborted; aborting it drops the set of connection
/// tasks, which aborts them too.
pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    inbound: mpsc::Sender<Message>,
) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Rationale: errors such as running out of file descriptors persist for a
                // while; retrying at once would spin.
                warn!(%error, "accepting a peer connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= shared.config.connections_inbound_max {
            warn!(
                %remote,
                connections_inbound_max = shared.config.connections_inbound_max,
                "refusing a peer connection: too many connections"
            );
            shared.connections_refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        connections.spawn(serve_connection(
            shared.clone(),
            stream,
            remote,
            inbound.clone(),
        ));
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    remote: SocketAddr,
    inbound: mpsc::Sender<Message>,
) {
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    let handshake = match accept_handshake(&shared, &mut stream).await {
        Ok(handshake) => handshake,
        Err(error) => {
            if matches!(error, ConnectionError::HandshakeRefused { .. })
                || error.is_malformed_input()
            {
                shared.connections_refused.fetch_add(1, Ordering::Relaxed);
                warn!(%remote, %error, "refused a peer connection");
            } else {
                debug!(%remote, %error, "peer connection ended during the handshake");
            }
            return;
        }
    };
    shared.connections_accepted.fetch_add(1, Ordering::Relaxed);
    let peer = handshake.from;
    let outcome = if handshake.kind == pb::ConnectionKind::Snapshot as i32 {
        receive_snapshot(&shared, peer, &mut stream, &inbound).await
    } else {
        let (serial, superseded) = register_messages_connection(&shared, peer);
        let outcome = tokio::select! {
            outcome = receive_messages(&shared, peer, &mut stream, &inbound) => outcome,
            _ = superseded => {
                debug!(peer, %remote, "closing a messages connection replaced by a newer one");
                Ok(())
            }
        };
        unregister_messages_connection(&shared, peer, serial);
        outcome
    };
    if let Err(error) = outcome {
        if error.is_malformed_input() {
            shared
                .connections_dropped_malformed
                .fetch_add(1, Ordering::Relaxed);
            warn!(peer, %remote, %error, "dropping a peer connection");
        } else {
            debug!(peer, %remote, %error, "peer connection ended");
        }
    }
}

/// Reads and checks the handshake, and answers it.
async fn accept_handshake(
    shared: &Shared,
    stream: &mut BufReader<TcpStream>,
) -> Result<pb::Handshake, ConnectionError> {
    let config = &shared.config;
    let handshake: pb::Handshake = read_expected(
        stream,
        FrameKind::Handshake,
        config.io_timeout,
        config.frame_bytes_max,
        "the handshake",
    )
    .await?;
    let refusal = check_handshake(shared, &handshake);
    let reply = pb::HandshakeReply {
        accepted: refusal.is_none(),
        reason: refusal.clone().unwrap_or_default(),
    };
    write_frame(
        shared,
        stream,
        FrameKind::HandshakeReply,
        &reply,
        "the handshake reply",
    )
    .await?;
    match refusal {
        Some(reason) => Err(ConnectionError::HandshakeRefused { reason }),
        None => Ok(handshake),
    }
}

/// Why a handshake is refused, if it is.
fn check_handshake(shared: &Shared, handshake: &pb::Handshake) -> Option<String> {
    let config = &shared.config;
    if handshake.protocol_version != PROTOCOL_VERSION {
        return Some(format!(
            "protocol version {} is not {PROTOCOL_VERSION}",
            handshake.protocol_version
        ));
    }
    if handshake.to != config.local_id {
        return Some(format!(
            "this is node {:x}, not node {:x}",
            config.local_id, handshake.to
        ));
    }
    if handshake.from == 0 || handshake.from == config.local_id {
        return Some(format!("sender id {:x} is not a peer", handshake.from));
    }
    let kind_known = handshake.kind == pb::ConnectionKind::Messages as i32
        || handshake.kind == pb::ConnectionKind::Snapshot as i32;
    if !kind_known {
        return Some(format!("unknown connection kind {}", handshake.kind));
    }
    // Checked last, so that only a handshake acceptable in every other way can teach a
    // joining node (configured with cluster id 0) the id of the cluster that added it.
    if handshake.cluster_id == 0 {
        return Some("the sender does not know its cluster id yet".to_string());
    }
    let adopted = shared.cluster_id.compare_exchange(
        0,
        handshake.cluster_id,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    match adopted {
        Ok(_) => {
            info!(
                "joined cluster {:x}, as named by peer {:x}",
                handshake.cluster_id, handshake.from
            );
            None
        }
        Err(own) if own == handshake.cluster_id => None,
        Err(own) => Some(format!(
            "cluster id {:x} is not this node's cluster id {own:x}",
            handshake.cluster_id
        )),
    }
}

/// Makes this connection the newest messages connection from `peer`, closing the previous
/// one. Returns this connection's serial and the signal that a newer one replaced it.
fn register_messages_connection(shared: &Shared, peer: NodeId) -> (u64, oneshot::Receiver<()>) {
    let serial = shared
        .inbound_connection_serial
        .fetch_add(1, Ordering::Relaxed);
    let (replace, replaced) = oneshot::channel();
    // Dropping the previous sender wakes the previous connection's task, which then ends.
    lock(&shared.inbound_connections).insert(peer, (serial, replace));
    (serial, replaced)
}

fn unregister_messages_connection(shared: &Shared, peer: NodeId, serial: u64) {
    let mut connections = lock(&shared.inbound_connections);
    if connections
        .get(&peer)
        .is_some_and(|(newest, _)| *newest == serial)
    {
        connections.remove(&peer);
    }
}

/// Checks that a message travels from the handshaking peer to this node.
fn check_address(shared: &Shared, peer: NodeId, message: &Message) -> Result<(), ConnectionError> {
    let local = shared.config.local_id;
    if message.from != peer || message.to != local {
        return Err(ConnectionError::Misaddressed {
            from: message.from,
            to: message.to,
            peer,
            local,
        });
    }
    Ok(())
}

/// Forwards the batches of a messages connection until it ends.
async fn receive_messages(
    shared: &Shared,
    peer: NodeId,
    stream: &mut (impl AsyncRead + Unpin),
    inbound: &mpsc::Sender<Message>,
) -> Result<(), ConnectionError> {
    let statistics = shared.statistics(peer);
    loop {
        let Some(frame) = read_frame(stream, shared.config.frame_bytes_max).await? else {
            return Ok(());
        };
        if frame.kind != FrameKind::MessageBatch {
            return Err(ConnectionError::UnexpectedFrame { kind: frame.kind });
        }
        let batch: pb::MessageBatch = decode_body(frame.body)?;
        // Rationale: the whole batch is checked before any of it is forwarded, so a malformed
        // frame is refused as a unit.
        let messages = batch
            .messages
            .into_iter()
            .map(Message::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        for message in &messages {
            check_address(shared, peer, message)?;
        }
        for message in messages {
            inbound
                .send(message)
                .await
                .map_err(|_| ConnectionError::InboundClosed)?;
            statistics.messages_received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A snapshot being reassembled: the InstallSnapshot message's fields, and the data so far.
struct Assembly {
    from: NodeId,
    to: NodeId,
    term: u64,
    meta: SnapshotMeta,
    data_bytes: u64,
    data: BytesMut,
}

/// Reassembles the one snapshot a snapshot connection carries, forwards it and acknowledges
/// it.
async fn receive_snapshot(
    shared: &Shared,
    peer: NodeId,
    stream: &mut BufReader<TcpStream>,
    inbound: &mpsc::Sender<Message>,
) -> Result<(), ConnectionError> {
    let config = &shared.config;
    let mut assembly: Option<Assembly> = None;
    loop {
        let chunk: pb::SnapshotChunk = read_expected(
            stream,
            FrameKind::SnapshotChunk,
            config.io_timeout,
            config.frame_bytes_max,
            "a snapshot chunk",
        )
        .await?;
        let current = match (&mut assembly, chunk.message) {
            (None, Some(header)) => {
                assembly.insert(start_assembly(shared, peer, header, chunk.data_bytes)?)
            }
            (Some(current), None) => current,
            (None, None) => {
                return Err(snapshot_error(
                    "the first chunk does not carry the message".to_string(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(snapshot_error(
                    "a later chunk carries a message".to_string(),
                ))
            }
        };
        if chunk.offset != current.data.len() as u64 {
            return Err(snapshot_error(format!(
                "chunk at offset {} where {} was expected",
                chunk.offset,
                current.data.len()
            )));
        }
        if current.data.len() as u64 + chunk.data.len() as u64 > current.data_bytes {
            return Err(snapshot_error(format!(
                "chunks exceed the announced {} bytes",
                current.data_bytes
            )));
        }
        current.data.extend_from_slice(&chunk.data);
        if current.data.len() as u64 == current.data_bytes {
            break;
        }
    }
    let Some(assembly) = assembly else {
        return Err(snapshot_error("no snapshot received".to_string()));
    };
    let index = assembly.meta.index;
    let message = Message {
        from: assembly.from,
        to: assembly.to,
        term: assembly.term,
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: assembly.meta,
                data: assembly.data.freeze(),
            },
        },
    };
    inbound
        .send(message)
        .await
        .map_err(|_| ConnectionError::InboundClosed)?;
    shared
        .statistics(peer)
        .messages_received
        .fetch_add(1, Ordering::Relaxed);
    write_frame(
        shared,
        stream,
        FrameKind::SnapshotReceived,
        &pb::SnapshotReceived { index },
        "the snapshot acknowledgement",
    )
    .await
}

fn snapshot_error(reason: String) -> ConnectionError {
    ConnectionError::Snapshot { reason }
}

/// Checks the first chunk's message and announced length, and starts reassembling.
fn start_assembly(
    shared: &Shared,
    peer: NodeId,
    header: pb::Message,
    data_bytes: u64,
) -> Result<Assembly, ConnectionError> {
    let config = &shared.config;
    let message = Message::try_from(header)?;
    check_address(shared, peer, &message)?;
    let kind = message.body.kind_name();
    let MessageBody::InstallSnapshot { snapshot } = message.body else {
        return Err(snapshot_error(format!(
            "the first chunk carries a {kind} message, not InstallSnapshot"
        )));
    };
    if !snapshot.data.is_empty() {
        return Err(snapshot_error(
            "the first chunk's message carries data itself".to_string(),
        ));
    }
    if data_bytes > config.snapshot_bytes_max {
        return Err(snapshot_error(format!(
            "snapshot of {data_bytes} bytes exceeds the maximum of {} bytes",
            config.snapshot_bytes_max
        )));
    }
    // Rationale: reserve what was announced, but not more than a few chunks up front, so a
    // false announcement costs little memory before it is caught.
    let reserve_bytes = data_bytes.min(16 * config.snapshot_chunk_bytes as u64) as usize;
    Ok(Assembly {
        from: message.from,
        to: message.to,
        term: message.term,
        meta: snapshot.meta,
        data_bytes,
        data: BytesMut::with_capacity(reserve_bytes),
    })
}

//! The sending side: one writer task per peer draining its queue into a messages connection,
//! and one task per snapshot being sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use raft::{Message, MessageBody, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::frame::{decode_body, encode_frame, read_frame, FrameKind};
use super::inbound::{read_expected, ConnectionError};
use super::{Shared, PROTOCOL_VERSION};
use crate::proto::raftpb as pb;

/// How a messages connection ended without an error.
enum WriterExit {
    /// The peer was removed or the transport dropped: the task ends.
    QueueClosed,
    /// The peer's address changed: reconnect at once.
    AddressChanged,
}

/// Keeps a messages connection to `peer` and writes its queue into it, reconnecting with
/// exponential backoff. Ends when the queue's sender is dropped (the peer was removed).
pub(super) async fn run_writer(
    shared: Arc<Shared>,
    peer: NodeId,
    mut queue: mpsc::Receiver<Message>,
    mut address: watch::Receiver<String>,
    connected: Arc<AtomicBool>,
) {
    let config = &shared.config;
    let mut backoff = config.reconnect_backoff_min;
    // Rationale: a peer that is down would otherwise log a warning every backoff period.
    let mut failure_logged = false;
    // Rationale: peers that are not up yet when a cluster starts are the normal case, not a
    // warning; losing a peer that was connected is.
    let mut ever_connected = false;
    loop {
        let target = address.borrow_and_update().clone();
        let outcome = match connect(&shared, peer, &target, pb::ConnectionKind::Messages).await {
            Ok(stream) => {
                info!(peer, address = %target, "connected to peer");
                failure_logged = false;
                ever_connected = true;
                backoff = config.reconnect_backoff_min;
                connected.store(true, Ordering::Relaxed);
                let outcome = write_queue(&shared, peer, stream, &mut queue, &mut address).await;
                connected.store(false, Ordering::Relaxed);
                outcome
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(WriterExit::QueueClosed) => return,
            Ok(WriterExit::AddressChanged) => continue,
            Err(error) => {
                shared
                    .statistics(peer)
                    .connections_failed
                    .fetch_add(1, Ordering::Relaxed);
                shared.report_unreachable(peer);
                if failure_logged {
                    debug!(peer, address = %target, %error, "peer still unreachable");
                } else if ever_connected {
                    warn!(peer, address = %target, %error, "peer unreachable; reconnecting");
                    failure_logged = true;
                } else {
                    info!(peer, address = %target, %error, "peer not reachable yet; retrying");
                    failure_logged = true;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            // A new address is worth trying at once.
            changed = address.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        backoff = next_backoff(backoff, config.reconnect_backoff_max);
    }
}

fn next_backoff(backoff: Duration, backoff_max: Duration) -> Duration {
    backoff.saturating_mul(2).min(backoff_max)
}

/// Connects to `address` and completes the handshake as node `shared.config.local_id`
/// expecting node `peer`.
async fn connect(
    shared: &Shared,
    peer: NodeId,
    address: &str,
    kind: pb::ConnectionKind,
) -> Result<TcpStream, ConnectionError> {
    let config = &shared.config;
    let mut stream = tokio::time::timeout(config.io_timeout, TcpStream::connect(address))
        .await
        .map_err(|_| ConnectionError::Timeout { what: "connecting" })?
        .map_err(ConnectionError::Io)?;
    // Rationale: the writer batches by itself; Nagle's delay would only add latency to
    // heartbeats and votes.
    stream.set_nodelay(true).map_err(ConnectionError::Io)?;
    let handshake = pb::Handshake {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: shared.cluster_id.load(Ordering::Relaxed),
        from: config.local_id,
        to: peer,
        kind: kind.into(),
    };
    let mut buffer = BytesMut::new();
    encode_frame(
        FrameKind::Handshake,
        &handshake,
        config.frame_bytes_max,
        &mut buffer,
    )?;
    let exchange = async {
        stream.write_all(&buffer).await?;
        let frame = read_frame(&mut stream, config.frame_bytes_max)
            .await?
            .ok_or(ConnectionError::Closed)?;
        if frame.kind != FrameKind::HandshakeReply {
            return Err(ConnectionError::UnexpectedFrame { kind: frame.kind });
        }
        let reply: pb::HandshakeReply = decode_body(frame.body)?;
        if !reply.accepted {
            return Err(ConnectionError::RefusedByPeer {
                reason: reply.reason,
            });
        }
        Ok(())
    };
    tokio::time::timeout(config.io_timeout, exchange)
        .await
        .map_err(|_| ConnectionError::Timeout {
            what: "the handshake",
        })??;
    Ok(stream)
}

/// Writes the queue into an established messages connection until the queue closes, the
/// address changes, or the connection fails.
async fn write_queue(
    shared: &Shared,
    peer: NodeId,
    stream: TcpStream,
    queue: &mut mpsc::Receiver<Message>,
    address: &mut watch::Receiver<String>,
) -> Result<WriterExit, ConnectionError> {
    let (mut reader, mut writer) = stream.into_split();
    let mut probe = [0u8; 1];
    loop {
        // Biased, so that a close or an address change already known is acted on before
        // more messages are written into a connection that is going away.
        tokio::select! {
            biased;
            // The peer sends nothing after its handshake reply, so a completed read means
            // it closed the connection (or broke the protocol). Rationale: noticing the close
            // now, rather than at the next write, keeps that write from vanishing into a dead
            // socket (TCP accepts it locally and loses it) and reconnects sooner.
            _ = reader.read(&mut probe) => return Err(ConnectionError::Closed),
            changed = address.changed() => {
                if changed.is_err() {
                    return Ok(WriterExit::QueueClosed);
                }
                return Ok(WriterExit::AddressChanged);
            }
            message = queue.recv() => {
                let Some(first) = message else {
                    return Ok(WriterExit::QueueClosed);
                };
                write_batch(shared, peer, first, queue, &mut writer).await?;
            }
        }
    }
}

/// Writes `first` and whatever else has queued up, as many frames as needed but no more
/// than about two frames' worth of bytes in one write.
async fn write_batch(
    shared: &Shared,
    peer: NodeId,
    first: Message,
    queue: &mut mpsc::Receiver<Message>,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
) -> Result<(), ConnectionError> {
    let config = &shared.config;
    let frame_bytes_max = config.frame_bytes_max as usize;
    let statistics = shared.statistics(peer);
    let mut buffer = BytesMut::new();
    let mut batch = pb::MessageBatch::default();
    let mut batch_bytes = 0;
    let mut messages_written = 0u64;
    let mut frames_written = 0u64;
    let mut next = Some(first);
    while let Some(message) = next {
        let kind = message.body.kind_name();
        let proto = pb::Message::from(message);
        let message_bytes = prost::encoding::message::encoded_len(1, &proto);
        if message_bytes > frame_bytes_max {
            warn!(
                peer,
                kind, message_bytes, frame_bytes_max, "dropping a message too large for a frame"
            );
            statistics.messages_dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            if batch_bytes + message_bytes > frame_bytes_max {
                encode_frame(
                    FrameKind::MessageBatch,
                    &batch,
                    config.frame_bytes_max,
                    &mut buffer,
                )?;
                batch.messages.clear();
                batch_bytes = 0;
                frames_written += 1;
            }
            batch.messages.push(proto);
            batch_bytes += message_bytes;
            messages_written += 1;
        }
        if buffer.len() + batch_bytes >= frame_bytes_max {
            break;
        }
        next = queue.try_recv().ok();
    }
    if !batch.messages.is_empty() {
        encode_frame(
            FrameKind::MessageBatch,
            &batch,
            config.frame_bytes_max,
            &mut buffer,
        )?;
        frames_written += 1;
    }
    if buffer.is_empty() {
        return Ok(());
    }
    let written = tokio::time::timeout(config.io_timeout, writer.write_all(&buffer)).await;
    match written {
        Ok(Ok(())) => {
            statistics
                .messages_sent
                .fetch_add(messages_written, Ordering::Relaxed);
            statistics
                .frames_sent
                .fetch_add(frames_written, Ordering::Relaxed);
            Ok(())
        }
        Ok(Err(error)) => {
            statistics
                .messages_dropped
                .fetch_add(messages_written, Ordering::Relaxed);
            Err(ConnectionError::Io(error))
        }
        Err(_) => {
            statistics
                .messages_dropped
                .fetch_add(messages_written, Ordering::Relaxed);
            Err(ConnectionError::Timeout { what: "a write" })
        }
    }
}

/// Sends one InstallSnapshot message on a connection of its own and reports the outcome.
pub(super) async fn run_snapshot_sender(
    shared: Arc<Shared>,
    peer: NodeId,
    address: String,
    message: Message,
) {
    let index = match &message.body {
        MessageBody::InstallSnapshot { snapshot } => snapshot.meta.index,
        _ => 0,
    };
    let statistics = shared.statistics(peer);
    match send_snapshot(&shared, peer, &address, message).await {
        Ok(()) => {
            info!(peer, index, "snapshot sent");
            statistics.messages_sent.fetch_add(1, Ordering::Relaxed);
            shared.report_snapshot(peer, true);
        }
        Err(error) => {
            warn!(peer, index, %error, "sending a snapshot failed");
            statistics.messages_dropped.fetch_add(1, Ordering::Relaxed);
            statistics
                .connections_failed
                .fetch_add(1, Ordering::Relaxed);
            shared.report_snapshot(peer, false);
        }
    }
}

async fn send_snapshot(
    shared: &Shared,
    peer: NodeId,
    address: &str,
    mut message: Message,
) -> Result<(), ConnectionError> {
    let config = &shared.config;
    let MessageBody::InstallSnapshot { snapshot } = &mut message.body else {
        return Err(ConnectionError::Snapshot {
            reason: "not an InstallSnapshot message".to_string(),
        });
    };
    let index = snapshot.meta.index;
    // The first chunk carries the message with the data taken out; the data follows in
    // slices of the same buffer.
    let data = std::mem::take(&mut snapshot.data);
    let mut stream = connect(shared, peer, address, pb::ConnectionKind::Snapshot).await?;
    let mut header = Some(pb::Message::from(message));
    let mut offset = 0;
    let mut buffer = BytesMut::new();
    loop {
        let end = (offset + config.snapshot_chunk_bytes).min(data.len());
        let chunk = pb::SnapshotChunk {
            message: header.take(),
            data_bytes: if offset == 0 { data.len() as u64 } else { 0 },
            offset: offset as u64,
            data: data.slice(offset..end),
        };
        buffer.clear();
        encode_frame(
            FrameKind::SnapshotChunk,
            &chunk,
            config.frame_bytes_max,
            &mut buffer,
        )?;
        tokio::time::timeout(config.io_timeout, stream.write_all(&buffer))
            .await
            .map_err(|_| ConnectionError::Timeout {
                what: "a snapshot chunk",
            })??;
        offset = end;
        if offset == data.len() {
            break;
        }
    }
    let received: pb::SnapshotReceived = read_expected(
        &mut stream,
        FrameKind::SnapshotReceived,
        config.io_timeout,
        config.frame_bytes_max,
        "the snapshot's acknowledgement",
    )
    .await?;
    if received.index != index {
        return Err(ConnectionError::Snapshot {
            reason: format!(
                "peer acknowledged snapshot {} instead of {index}",
                received.index
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let max = Duration::from_secs(2);
        let mut backoff = Duration::from_millis(50);
        let mut seen = vec![backoff];
        for _ in 0..8 {
            backoff = next_backoff(backoff, max);
            seen.push(backoff);
        }
        assert_eq!(seen[1], Duration::from_millis(100));
        assert_eq!(seen[5], Duration::from_millis(1600));
        assert_eq!(seen[6], max);
        assert_eq!(seen[8], max);
    }
}

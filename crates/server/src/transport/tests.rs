//! Transports talking over loopback, through the public API only. Raw sockets stand in for a
//! misbehaving peer, written from the wire format documented in the module.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use raft::{
    AppendOutcome, ConfigChange, ConfigChangeStep, ConfigState, Entry, EntryPayload, Message,
    MessageBody, NodeId, Snapshot, SnapshotMeta,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{SnapshotReport, Transport, TransportConfig, TransportError};
use crate::proto::raftpb as pb;

const CLUSTER: u64 = 0xC1;
/// How long a test waits for something that should happen within milliseconds on loopback.
const PATIENCE: Duration = Duration::from_secs(10);

fn config(id: NodeId, cluster_id: u64) -> TransportConfig {
    let mut config = TransportConfig::new(id, cluster_id, "127.0.0.1:0".parse().unwrap());
    // Short backoff so that reconnection tests take moments, not seconds.
    config.reconnect_backoff_max = Duration::from_millis(200);
    config
}

async fn start(config: TransportConfig) -> (Transport, mpsc::Receiver<Message>) {
    let (sender, receiver) = mpsc::channel(1024);
    let transport = Transport::start(config, sender).await.unwrap();
    (transport, receiver)
}

async fn receive(inbound: &mut mpsc::Receiver<Message>, count: usize) -> Vec<Message> {
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        let message = tokio::time::timeout(PATIENCE, inbound.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} messages arrived", messages.len()))
            .expect("the transport keeps the channel open");
        messages.push(message);
    }
    messages
}

/// Asserts that nothing arrives within a moment.
async fn assert_nothing_arrives(inbound: &mut mpsc::Receiver<Message>) {
    let received = tokio::time::timeout(Duration::from_millis(300), inbound.recv()).await;
    assert!(received.is_err(), "unexpected message: {received:?}");
}

/// Waits until `condition` holds, polling.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn heartbeat(from: NodeId, to: NodeId, read_round: u64) -> Message {
    Message {
        from,
        to,
        term: 1,
        body: MessageBody::Heartbeat {
            leader_commit: 0,
            read_round,
        },
    }
}

fn snapshot_message(from: NodeId, to: NodeId, data: Bytes) -> Message {
    Message {
        from,
        to,
        term: 4,
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 77,
                    term: 3,
                    config: ConfigState::with_voters([1, 2, 3]),
                },
                data,
            },
        },
    }
}

/// One message of every kind but InstallSnapshot, which travels on its own connection.
fn every_kind_but_snapshot(from: NodeId, to: NodeId) -> Vec<Message> {
    let bodies = vec![
        MessageBody::VoteRequest {
            pre_vote: true,
            last_log_index: 10,
            last_log_term: 2,
            leadership_transfer: false,
        },
        MessageBody::VoteRequest {
            pre_vote: false,
            last_log_index: 11,
            last_log_term: 3,
            leadership_transfer: true,
        },
        MessageBody::VoteResponse {
            pre_vote: false,
            granted: true,
        },
        MessageBody::AppendEntries {
            prev_log_index: 5,
            prev_log_term: 2,
            entries: vec![
                Entry {
                    term: 3,
                    index: 6,
                    payload: EntryPayload::Empty,
                },
                Entry {
                    term: 3,
                    index: 7,
                    payload: EntryPayload::Normal(Bytes::from_static(b"put k v")),
                },
                Entry {
                    term: 3,
                    index: 8,
                    payload: EntryPayload::ConfigChange(ConfigChange::new([
                        ConfigChangeStep::AddLearner(4),
                        ConfigChangeStep::RemoveNode(3),
                    ])),
                },
            ],
            leader_commit: 6,
        },
        MessageBody::AppendEntriesResponse {
            outcome: AppendOutcome::Accepted { match_index: 8 },
        },
        MessageBody::AppendEntriesResponse {
            outcome: AppendOutcome::Rejected {
                rejected_index: 9,
                hint_index: 4,
                hint_term: 1,
            },
        },
        MessageBody::Heartbeat {
            leader_commit: 8,
            read_round: 12,
        },
        MessageBody::HeartbeatResponse { read_round: 12 },
        MessageBody::TimeoutNow,
        MessageBody::ReadIndexRequest { context: 99 },
        MessageBody::ReadIndexResponse {
            context: 99,
            index: 8,
        },
    ];
    bodies
        .into_iter()
        .map(|body| Message {
            from,
            to,
            term: 3,
            body,
        })
        .collect()
}

/// Bytes that differ everywhere, so a misplaced chunk cannot go unnoticed.
fn patterned_bytes(length: usize) -> Bytes {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut data = BytesMut::with_capacity(length);
    while data.len() < length {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.put_u64(state);
    }
    data.truncate(length);
    data.freeze()
}

#[tokio::test]
async fn two_transports_exchange_every_kind_of_message() {
    let (one, mut one_inbound) = start(config(1, CLUSTER)).await;
    let (two, mut two_inbound) = start(config(2, CLUSTER)).await;
    one.add_peer(2, two.local_address().to_string()).unwrap();
    two.add_peer(1, one.local_address().to_string()).unwrap();

    let one_to_two = every_kind_but_snapshot(1, 2);
    let two_to_one = every_kind_but_snapshot(2, 1);
    one.send(one_to_two.clone());
    two.send(two_to_one.clone());
    assert_eq!(
        receive(&mut two_inbound, one_to_two.len()).await,
        one_to_two
    );
    assert_eq!(
        receive(&mut one_inbound, two_to_one.len()).await,
        two_to_one
    );

    let snapshot = snapshot_message(1, 2, Bytes::from_static(b"state machine image"));
    one.send(vec![snapshot.clone()]);
    assert_eq!(receive(&mut two_inbound, 1).await, vec![snapshot]);

    let sent = one_to_two.len() as u64 + 1;
    eventually("one counts its messages to two as sent", || {
        one.counters().peers[&2].messages_sent == sent
    })
    .await;
    assert_eq!(two.counters().peers[&1].messages_received, sent);
    assert_eq!(one.counters().peers[&2].messages_dropped, 0);
    assert!(one.counters().peers[&2].connected);
}

#[tokio::test]
async fn three_transports_deliver_each_peers_messages_in_order() {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(config(id, CLUSTER)).await);
    }
    let addresses: Vec<SocketAddr> = nodes.iter().map(|(t, _)| t.local_address()).collect();
    for (index, (transport, _)) in nodes.iter().enumerate() {
        let local = index as NodeId + 1;
        for (peer_index, address) in addresses.iter().enumerate() {
            let peer = peer_index as NodeId + 1;
            if peer != local {
                transport.add_peer(peer, address.to_string()).unwrap();
            }
        }
    }
    let rounds = 200;
    for round in 0..rounds {
        for (index, (transport, _)) in nodes.iter().enumerate() {
            let local = index as NodeId + 1;
            let messages = (1..=3)
                .filter(|peer| *peer != local)
                .map(|peer| heartbeat(local, peer, round))
                .collect();
            transport.send(messages);
        }
        if round % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for (index, (_, inbound)) in nodes.iter_mut().enumerate() {
        let local = index as NodeId + 1;
        let received = receive(inbound, 2 * rounds as usize).await;
        for peer in (1..=3).filter(|peer| *peer != local) {
            let rounds_from_peer: Vec<u64> = received
                .iter()
                .filter(|message| message.from == peer)
                .map(|message| match message.body {
                    MessageBody::Heartbeat { read_round, .. } => read_round,
                    _ => panic!("unexpected {message:?}"),
                })
                .collect();
            assert_eq!(rounds_from_peer, (0..rounds).collect::<Vec<_>>());
        }
        assert!(received.iter().all(|message| message.to == local));
    }
}

#[tokio::test]
async fn order_is_preserved_when_messages_queue_up_and_are_batched() {
    let mut one_config = config(1, CLUSTER);
    one_config.queue_messages_max = 20_000;
    let (one, _one_inbound) = start(one_config).await;
    let (two, mut two_inbound) = start(config(2, CLUSTER)).await;
    one.add_peer(2, two.local_address().to_string()).unwrap();
    // Queued before the connection exists, and in one go: the writer must batch them.
    let count = 10_000u64;
    one.send((0..count).map(|round| heartbeat(1, 2, round)).collect());
    let received = receive(&mut two_inbound, count as usize).await;
    let rounds: Vec<u64> = received
        .iter()
        .map(|message| match message.body {
            MessageBody::Heartbeat { read_round, .. } => read_round,
            _ => panic!("unexpected {message:?}"),
        })
        .collect();
    assert_eq!(rounds, (0..count).collect::<Vec<_>>());
    eventually("one counts every message sent", || {
        one.counters().peers[&2].messages_sent == count
    })
    .await;
    let counters = one.counters().peers[&2];
    assert_eq!(counters.messages_dropped, 0);
    assert!(counters.frames_sent * 10 < count, "{counters:?}");
}

#[tokio::test]
async fn the_sender_reconnects_after_the_receiver_restarts() {
    let (one, _one_inbound) = start(config(1, CLUSTER)).await;
    let (two, mut two_inbound) = start(config(2, CLUSTER)).await;
    let two_address = two.local_address();
    one.add_peer(2, two_address.to_string()).unwrap();
    one.send(vec![heartbeat(1, 2, 1)]);
    assert_eq!(receive(&mut two_inbound, 1).await, vec![heartbeat(1, 2, 1)]);
    // The first send found the connection not yet made; start from a clean slate.
    one.take_unreachable();

    two.shutdown().await;
    drop(two);
    eventually("one notices that two is gone", || {
        !one.counters().peers[&2].connected && one.take_unreachable().contains(&2)
    })
    .await;
    // Sent while two is down: they wait in the queue.
    one.send((2..=4).map(|round| heartbeat(1, 2, round)).collect());

    let mut restarted_config = config(2, CLUSTER);
    restarted_config.listen_address = two_address;
    let (restarted, mut restarted_inbound) = start(restarted_config).await;
    let received = receive(&mut restarted_inbound, 3).await;
    assert_eq!(
        received,
        (2..=4)
            .map(|round| heartbeat(1, 2, round))
            .collect::<Vec<_>>()
    );
    assert!(one.counters().peers[&2].connections_failed >= 1);
    restarted.shutdown().await;
}

#[tokio::test]
async fn update_peer_moves_the_connection_to_the_new_address() {
    let (one, _one_inbound) = start(config(1, CLUSTER)).await;
    let (old, mut old_inbound) = start(config(2, CLUSTER)).await;
    let (new, mut new_inbound) = start(config(2, CLUSTER)).await;
    one.add_peer(2, old.local_address().to_string()).unwrap();
    one.send(vec![heartbeat(1, 2, 1)]);
    assert_eq!(receive(&mut old_inbound, 1).await, vec![heartbeat(1, 2, 1)]);

    one.update_peer(2, new.local_address().to_string()).unwrap();
    // The writer may still be switching; whatever was queued goes to the new address.
    eventually("one reconnects to the new address", || {
        new.counters().connections_accepted == 1
    })
    .await;
    one.send(vec![heartbeat(1, 2, 2)]);
    assert_eq!(receive(&mut new_inbound, 1).await, vec![heartbeat(1, 2, 2)]);
    assert_nothing_arrives(&mut old_inbound).await;
}

#[tokio::test]
async fn a_peer_of_another_cluster_is_refused() {
    let (one, mut one_inbound) = start(config(1, CLUSTER)).await;
    let (stranger, _stranger_inbound) = start(config(2, CLUSTER + 1)).await;
    stranger
        .add_peer(1, one.local_address().to_string())
        .unwrap();
    stranger.send(vec![heartbeat(2, 1, 1)]);
    eventually("one refuses the stranger", || {
        one.counters().connections_refused >= 1
    })
    .await;
    eventually("the stranger reports one unreachable", || {
        stranger.take_unreachable().contains(&1)
    })
    .await;
    assert_nothing_arrives(&mut one_inbound).await;
    assert_eq!(one.counters().connections_accepted, 0);
    assert!(stranger.counters().peers[&1].connections_failed >= 1);
    assert!(!stranger.counters().peers[&1].connected);
}

#[tokio::test]
async fn a_joining_node_adopts_the_cluster_id_of_the_first_peer_and_then_keeps_it() {
    let (member, mut member_inbound) = start(config(1, CLUSTER)).await;
    let (joiner, mut joiner_inbound) = start(config(2, 0)).await;
    assert_eq!(joiner.cluster_id(), 0);
    // Before it has heard from the cluster, the joiner's own connections are refused.
    joiner
        .add_peer(1, member.local_address().to_string())
        .unwrap();
    joiner.send(vec![heartbeat(2, 1, 1)]);
    eventually("the member refuses the joiner's unknown cluster id", || {
        member.counters().connections_refused >= 1
    })
    .await;
    assert_eq!(member.counters().connections_accepted, 0);

    // The member connects to it: the joiner takes its cluster id, and both directions work.
    member
        .add_peer(2, joiner.local_address().to_string())
        .unwrap();
    member.send(vec![heartbeat(1, 2, 7)]);
    assert_eq!(
        receive(&mut joiner_inbound, 1).await,
        vec![heartbeat(1, 2, 7)]
    );
    assert_eq!(joiner.cluster_id(), CLUSTER);
    joiner.send(vec![heartbeat(2, 1, 8)]);
    // The heartbeat refused at first may still be queued ahead of this one.
    loop {
        let arrived = receive(&mut member_inbound, 1).await;
        if arrived == vec![heartbeat(2, 1, 8)] {
            break;
        }
        assert_eq!(arrived, vec![heartbeat(2, 1, 1)]);
    }

    // A node of another cluster cannot take it over afterwards.
    let (stranger, _stranger_inbound) = start(config(3, CLUSTER + 1)).await;
    stranger
        .add_peer(2, joiner.local_address().to_string())
        .unwrap();
    stranger.send(vec![heartbeat(3, 2, 9)]);
    eventually("the joiner refuses the other cluster", || {
        joiner.counters().connections_refused >= 1
    })
    .await;
    assert_nothing_arrives(&mut joiner_inbound).await;
    assert_eq!(joiner.cluster_id(), CLUSTER);
}

#[tokio::test]
async fn a_connection_meant_for_another_node_is_refused() {
    let (one, mut one_inbound) = start(config(1, CLUSTER)).await;
    let (two, _two_inbound) = start(config(2, CLUSTER)).await;
    // Two believes node 3 lives at one's address.
    two.add_peer(3, one.local_address().to_string()).unwrap();
    two.send(vec![heartbeat(2, 3, 1)]);
    eventually("one refuses a connection for node 3", || {
        one.counters().connections_refused >= 1
    })
    .await;
    assert_nothing_arrives(&mut one_inbound).await;
}

/// Opens a raw connection to `address` and completes the handshake as node `from`.
async fn raw_connection(address: SocketAddr, from: NodeId, to: NodeId) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let handshake = pb::Handshake {
        protocol_version: super::PROTOCOL_VERSION,
        cluster_id: CLUSTER,
        from,
        to,
        kind: pb::ConnectionKind::Messages.into(),
    };
    write_raw_frame(&mut stream, 1, &handshake.encode_to_vec()).await;
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(header[4], 2, "a handshake reply");
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    let reply = pb::HandshakeReply::decode(&body[..]).unwrap();
    assert!(reply.accepted, "refused: {}", reply.reason);
    stream
}

async fn write_raw_frame(stream: &mut TcpStream, kind: u8, body: &[u8]) {
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.push(kind);
    frame.extend_from_slice(body);
    stream.write_all(&frame).await.unwrap();
}

/// Asserts that the other end closes the connection.
async fn assert_closed(stream: &mut TcpStream) {
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut buffer))
        .await
        .expect("the connection is closed in time");
    // A reset is as much a close as an orderly end.
    assert!(matches!(read, Ok(0) | Err(_)), "read {read:?}");
}

#[tokio::test]
async fn malformed_frames_drop_only_their_connection() {
    let mut one_config = config(1, CLUSTER);
    one_config.frame_bytes_max = 2 * 1024 * 1024;
    let (one, mut one_inbound) = start(one_config).await;
    let (two, _two_inbound) = start(config(2, CLUSTER)).await;
    two.add_peer(1, one.local_address().to_string()).unwrap();
    let address = one.local_address();

    // Kept open throughout: must not be disturbed by the others' misbehaviour.
    let mut good = raw_connection(address, 3, 1).await;
    let batch = |message: Message| {
        pb::MessageBatch {
            messages: vec![pb::Message::from(message)],
        }
        .encode_to_vec()
    };

    let mut oversized = raw_connection(address, 4, 1).await;
    oversized
        .write_all(&(3 * 1024 * 1024u32).to_be_bytes())
        .await
        .unwrap();
    oversized.write_all(&[3]).await.unwrap();
    assert_closed(&mut oversized).await;

    let mut undecodable = raw_connection(address, 4, 1).await;
    write_raw_frame(&mut undecodable, 3, &[0xff, 0xff, 0xff, 0xff]).await;
    assert_closed(&mut undecodable).await;

    let mut unknown_kind = raw_connection(address, 4, 1).await;
    write_raw_frame(&mut unknown_kind, 200, &[]).await;
    assert_closed(&mut unknown_kind).await;

    let mut no_body = raw_connection(address, 4, 1).await;
    let mut bodiless = pb::Message::from(heartbeat(4, 1, 1));
    bodiless.body = None;
    let frame = pb::MessageBatch {
        messages: vec![bodiless],
    };
    write_raw_frame(&mut no_body, 3, &frame.encode_to_vec()).await;
    assert_closed(&mut no_body).await;

    let mut impostor = raw_connection(address, 4, 1).await;
    write_raw_frame(&mut impostor, 3, &batch(heartbeat(5, 1, 1))).await;
    assert_closed(&mut impostor).await;

    let mut garbage = TcpStream::connect(address).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_closed(&mut garbage).await;

    let counters = one.counters();
    assert_eq!(counters.connections_dropped_malformed, 5);
    assert_eq!(counters.connections_refused, 1);
    assert_nothing_arrives(&mut one_inbound).await;

    // The node still serves: the connection opened first, and a transport.
    write_raw_frame(&mut good, 3, &batch(heartbeat(3, 1, 7))).await;
    assert_eq!(receive(&mut one_inbound, 1).await, vec![heartbeat(3, 1, 7)]);
    two.send(vec![heartbeat(2, 1, 8)]);
    assert_eq!(receive(&mut one_inbound, 1).await, vec![heartbeat(2, 1, 8)]);
}

#[tokio::test]
async fn a_new_connection_from_a_peer_replaces_its_old_one() {
    let (one, mut one_inbound) = start(config(1, CLUSTER)).await;
    let mut old = raw_connection(one.local_address(), 3, 1).await;
    let _new = raw_connection(one.local_address(), 3, 1).await;
    assert_closed(&mut old).await;
    assert_nothing_arrives(&mut one_inbound).await;
}

#[tokio::test]
async fn a_twenty_mebibyte_snapshot_arrives_intact() {
    let (one, _one_inbound) = start(config(1, CLUSTER)).await;
    let (two, mut two_inbound) = start(config(2, CLUSTER)).await;
    one.add_peer(2, two.local_address().to_string()).unwrap();
    let data = patterned_bytes(20 * 1024 * 1024 + 123);
    let snapshot = snapshot_message(1, 2, data.clone());
    one.send(vec![snapshot.clone()]);
    // Heartbeats are not held up behind the snapshot's chunks.
    one.send(vec![heartbeat(1, 2, 1)]);
    let received = receive(&mut two_inbound, 2).await;
    assert!(received.contains(&heartbeat(1, 2, 1)));
    let arrived = received
        .into_iter()
        .find(|message| matches!(message.body, MessageBody::InstallSnapshot { .. }))
        .expect("the snapshot arrived");
    let MessageBody::InstallSnapshot { snapshot: arrived } = arrived.body else {
        unreachable!("found by kind");
    };
    assert_eq!(arrived.data.len(), data.len());
    assert!(arrived.data == data, "the snapshot data differs");
    let MessageBody::InstallSnapshot { snapshot: sent } = snapshot.body else {
        unreachable!("built as a snapshot");
    };
    assert_eq!(arrived.meta, sent.meta);

    let mut reports = Vec::new();
    while reports.is_empty() {
        tokio::time::timeout(PATIENCE, one.reports_ready())
            .await
            .expect("the snapshot is reported");
        reports = one.take_snapshot_reports();
    }
    assert_eq!(
        reports,
        vec![SnapshotReport {
            peer: 2,
            success: true
        }]
    );
}

/// An address where nothing listens.
fn dead_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn a_snapshot_for_an_unreachable_peer_is_reported_failed() {
    let (one, _one_inbound) = start(config(1, CLUSTER)).await;
    one.add_peer(2, dead_address().to_string()).unwrap();
    one.send(vec![snapshot_message(1, 2, patterned_bytes(1000))]);
    eventually("the failed snapshot is reported", || {
        let reports = one.take_snapshot_reports();
        assert!(reports.iter().all(|report| !report.success));
        !reports.is_empty()
    })
    .await;
    assert_eq!(one.counters().peers[&2].messages_dropped, 1);
}

#[tokio::test]
async fn the_queue_of_a_dead_peer_stays_bounded() {
    let mut one_config = config(1, CLUSTER);
    one_config.queue_messages_max = 16;
    let (one, _one_inbound) = start(one_config).await;
    one.add_peer(2, dead_address().to_string()).unwrap();
    let sent = 10_000u64;
    for round in 0..sent {
        one.send(vec![heartbeat(1, 2, round)]);
    }
    let counters = one.counters().peers[&2];
    assert!(counters.queue_messages <= 16, "{counters:?}");
    assert_eq!(counters.messages_sent, 0);
    assert_eq!(counters.messages_dropped + counters.queue_messages, sent);
    assert!(one.take_unreachable().contains(&2));
    // Reported once until taken, not once per message.
    assert!(one.take_unreachable().is_empty());
}

#[tokio::test]
async fn a_slow_receiver_applies_back_pressure_instead_of_dropping() {
    let (one, _one_inbound) = start(config(1, CLUSTER)).await;
    let (sender, mut two_inbound) = mpsc::channel(1);
    let two = Transport::start(config(2, CLUSTER), sender).await.unwrap();
    one.add_peer(2, two.local_address().to_string()).unwrap();
    let count = 500;
    one.send((0..count).map(|round| heartbeat(1, 2, round)).collect());
    // Let the receiver fill its one-message channel and stall.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = receive(&mut two_inbound, count as usize).await;
    assert_eq!(
        received,
        (0..count)
            .map(|round| heartbeat(1, 2, round))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn peers_are_added_updated_and_removed_with_checks() {
    let (one, _one_inbound) = start(config(1, CLUSTER)).await;
    let address = "127.0.0.1:9".to_string();
    assert!(matches!(
        one.add_peer(0, address.clone()),
        Err(TransportError::InvalidPeer { id: 0, .. })
    ));
    assert!(matches!(
        one.add_peer(1, address.clone()),
        Err(TransportError::InvalidPeer { id: 1, .. })
    ));
    assert!(matches!(
        one.update_peer(2, address.clone()),
        Err(TransportError::UnknownPeer { id: 2 })
    ));
    assert!(matches!(
        one.remove_peer(2),
        Err(TransportError::UnknownPeer { id: 2 })
    ));
    one.add_peer(2, address.clone()).unwrap();
    assert!(matches!(
        one.add_peer(2, address.clone()),
        Err(TransportError::PeerExists { id: 2 })
    ));
    one.update_peer(2, "127.0.0.1:10".to_string()).unwrap();
    one.remove_peer(2).unwrap();
    // Messages for a removed peer are dropped and reported.
    one.take_unreachable();
    one.send(vec![heartbeat(1, 2, 1)]);
    assert_eq!(one.take_unreachable(), vec![2]);
    assert_eq!(one.counters().peers[&2].messages_dropped, 1);
    one.set_peer(2, address).unwrap();
    assert!(one.counters().peers.contains_key(&2));

    one.shutdown().await;
    assert!(matches!(
        one.add_peer(3, "127.0.0.1:9".to_string()),
        Err(TransportError::ShutDown)
    ));
}

#[tokio::test]
async fn invalid_settings_are_refused_at_start() {
    let (sender, _receiver) = mpsc::channel(1);
    let mut zero_id = config(1, CLUSTER);
    zero_id.local_id = 0;
    let mut chunk_too_large = config(1, CLUSTER);
    chunk_too_large.snapshot_chunk_bytes = chunk_too_large.frame_bytes_max as usize;
    let mut empty_queue = config(1, CLUSTER);
    empty_queue.queue_messages_max = 0;
    for invalid in [zero_id, chunk_too_large, empty_queue] {
        let started = Transport::start(invalid, sender.clone()).await;
        assert!(matches!(started, Err(TransportError::InvalidConfig { .. })));
    }
}

#[tokio::test]
async fn a_message_from_another_node_is_not_sent() {
    let (one, _one_inbound) = start(config(1, CLUSTER)).await;
    let (two, mut two_inbound) = start(config(2, CLUSTER)).await;
    one.add_peer(2, two.local_address().to_string()).unwrap();
    one.send(vec![heartbeat(3, 2, 1), heartbeat(1, 2, 2)]);
    // Only the second arrives, and the connection survived the first.
    assert_eq!(receive(&mut two_inbound, 1).await, vec![heartbeat(1, 2, 2)]);
    assert_eq!(two.counters().connections_dropped_malformed, 0);
}

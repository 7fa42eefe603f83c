//! Conversion between the core's plain message types and their protobuf form (`raftpb`).
//!
//! Encoding cannot fail. Decoding checks everything the protobuf decoder cannot: that every
//! `oneof` and required sub-message is present, that enumerations hold a known value and that
//! no node id is 0 ("nobody" in the core). Semantic checks (terms, indexes) are the core's:
//! `Node::step` ignores impossible content without panicking.
//!
//! Payload and snapshot bytes move as `Bytes` both ways: encoding hands the same buffer to the
//! protobuf type, and decoding from a `Bytes` frame yields slices of that frame.

use raft::{
    AppendOutcome, ConfigChange, ConfigChangeStep, ConfigState, ConfigTransition, Entry,
    EntryPayload, Message, MessageBody, NodeId, Snapshot, SnapshotMeta,
};
use thiserror::Error;

use crate::proto::raftpb as pb;
use pb::append_entries_response::Outcome;
use pb::entry::Payload;
use pb::message::Body;

/// Why a protobuf message is not a valid Raft message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConvertError {
    /// A `oneof` or sub-message that must be present is absent. An unset `oneof` is also what
    /// a peer speaking a newer protocol produces with a kind this version does not know.
    #[error("{field} is missing (unset, or a kind this version does not know)")]
    Missing {
        /// The protobuf field, as `Message.field`.
        field: &'static str,
    },
    /// A node id is 0, which names nobody.
    #[error("{field} is node id 0, which names nobody")]
    ZeroNodeId {
        /// The protobuf field, as `Message.field`.
        field: &'static str,
    },
    /// An enumeration holds a value this version does not know, or its unspecified value.
    #[error("{field} has unknown or unspecified value {value}")]
    UnknownEnumValue {
        /// The protobuf field, as `Message.field`.
        field: &'static str,
        /// The value received.
        value: i32,
    },
}

fn node_id(id: u64, field: &'static str) -> Result<NodeId, ConvertError> {
    if id == 0 {
        return Err(ConvertError::ZeroNodeId { field });
    }
    Ok(id)
}

fn node_ids(ids: Vec<u64>, field: &'static str) -> Result<Vec<NodeId>, ConvertError> {
    if ids.contains(&0) {
        return Err(ConvertError::ZeroNodeId { field });
    }
    Ok(ids)
}

// ----- Core to protobuf ----------------------------------------------------------------------

impl From<Message> for pb::Message {
    fn from(message: Message) -> pb::Message {
        pb::Message {
            from: message.from,
            to: message.to,
            term: message.term,
            body: Some(body_to_proto(message.body)),
        }
    }
}

fn body_to_proto(body: MessageBody) -> Body {
    match body {
        MessageBody::VoteRequest {
            pre_vote,
            last_log_index,
            last_log_term,
            leadership_transfer,
        } => Body::VoteRequest(pb::VoteRequest {
            pre_vote,
            last_log_index,
            last_log_term,
            leadership_transfer,
        }),
        MessageBody::VoteResponse { pre_vote, granted } => {
            Body::VoteResponse(pb::VoteResponse { pre_vote, granted })
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => Body::AppendEntries(pb::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries: entries.into_iter().map(pb::Entry::from).collect(),
            leader_commit,
        }),
        MessageBody::AppendEntriesResponse { outcome } => {
            let outcome = match outcome {
                AppendOutcome::Accepted { match_index } => {
                    Outcome::Accepted(pb::Accepted { match_index })
                }
                AppendOutcome::Rejected {
                    rejected_index,
                    hint_index,
                    hint_term,
                } => Outcome::Rejected(pb::Rejected {
                    rejected_index,
                    hint_index,
                    hint_term,
                }),
            };
            Body::AppendEntriesResponse(pb::AppendEntriesResponse {
                outcome: Some(outcome),
            })
        }
        MessageBody::Heartbeat {
            leader_commit,
            read_round,
        } => Body::Heartbeat(pb::Heartbeat {
            leader_commit,
            read_round,
        }),
        MessageBody::HeartbeatResponse { read_round } => {
            Body::HeartbeatResponse(pb::HeartbeatResponse { read_round })
        }
        MessageBody::InstallSnapshot { snapshot } => Body::InstallSnapshot(pb::InstallSnapshot {
            snapshot: Some(snapshot.into()),
        }),
        MessageBody::TimeoutNow => Body::TimeoutNow(pb::TimeoutNow {}),
        MessageBody::ReadIndexRequest { context } => {
            Body::ReadIndexRequest(pb::ReadIndexRequest { context })
        }
        MessageBody::ReadIndexResponse { context, index } => {
            Body::ReadIndexResponse(pb::ReadIndexResponse { context, index })
        }
    }
}

impl From<Entry> for pb::Entry {
    fn from(entry: Entry) -> pb::Entry {
        let payload = match entry.payload {
            EntryPayload::Empty => Payload::Empty(pb::EmptyPayload {}),
            EntryPayload::Normal(data) => Payload::Normal(data),
            EntryPayload::ConfigChange(change) => Payload::ConfigChange(change.into()),
        };
        pb::Entry {
            term: entry.term,
            index: entry.index,
            payload: Some(payload),
        }
    }
}

impl From<ConfigChange> for pb::ConfigChange {
    fn from(change: ConfigChange) -> pb::ConfigChange {
        let steps = change
            .steps
            .into_iter()
            .map(|step| {
                let kind = match step {
                    ConfigChangeStep::AddVoter(_) => pb::ConfigChangeStepKind::AddVoter,
                    ConfigChangeStep::AddLearner(_) => pb::ConfigChangeStepKind::AddLearner,
                    ConfigChangeStep::RemoveNode(_) => pb::ConfigChangeStepKind::RemoveNode,
                };
                pb::ConfigChangeStep {
                    kind: kind.into(),
                    node: step.node(),
                }
            })
            .collect();
        let transition = match change.transition {
            ConfigTransition::Auto => pb::ConfigTransition::Auto,
            ConfigTransition::JointAutoLeave => pb::ConfigTransition::JointAutoLeave,
            ConfigTransition::JointExplicitLeave => pb::ConfigTransition::JointExplicitLeave,
        };
        pb::ConfigChange {
            steps,
            transition: transition.into(),
        }
    }
}

impl From<Snapshot> for pb::Snapshot {
    fn from(snapshot: Snapshot) -> pb::Snapshot {
        pb::Snapshot {
            meta: Some(pb::SnapshotMeta {
                index: snapshot.meta.index,
                term: snapshot.meta.term,
                config: Some(snapshot.meta.config.into()),
            }),
            data: snapshot.data,
        }
    }
}

impl From<ConfigState> for pb::ConfigState {
    fn from(config: ConfigState) -> pb::ConfigState {
        pb::ConfigState {
            voters: config.voters,
            voters_outgoing: config.voters_outgoing,
            learners: config.learners,
            learners_next: config.learners_next,
            auto_leave: config.auto_leave,
        }
    }
}

// ----- Protobuf to core ----------------------------------------------------------------------

impl TryFrom<pb::Message> for Message {
    type Error = ConvertError;

    fn try_from(message: pb::Message) -> Result<Message, ConvertError> {
        let from = node_id(message.from, "Message.from")?;
        let to = node_id(message.to, "Message.to")?;
        let body = message.body.ok_or(ConvertError::Missing {
            field: "Message.body",
        })?;
        Ok(Message {
            from,
            to,
            term: message.term,
            body: body_from_proto(body)?,
        })
    }
}

fn body_from_proto(body: Body) -> Result<MessageBody, ConvertError> {
    let body = match body {
        Body::VoteRequest(request) => MessageBody::VoteRequest {
            pre_vote: request.pre_vote,
            last_log_index: request.last_log_index,
            last_log_term: request.last_log_term,
            leadership_transfer: request.leadership_transfer,
        },
        Body::VoteResponse(response) => MessageBody::VoteResponse {
            pre_vote: response.pre_vote,
            granted: response.granted,
        },
        Body::AppendEntries(append) => MessageBody::AppendEntries {
            prev_log_index: append.prev_log_index,
            prev_log_term: append.prev_log_term,
            entries: append
                .entries
                .into_iter()
                .map(Entry::try_from)
                .collect::<Result<_, _>>()?,
            leader_commit: append.leader_commit,
        },
        Body::AppendEntriesResponse(response) => {
            let outcome = match response.outcome {
                Some(Outcome::Accepted(accepted)) => AppendOutcome::Accepted {
                    match_index: accepted.match_index,
                },
                Some(Outcome::Rejected(rejected)) => AppendOutcome::Rejected {
                    rejected_index: rejected.rejected_index,
                    hint_index: rejected.hint_index,
                    hint_term: rejected.hint_term,
                },
                None => {
                    return Err(ConvertError::Missing {
                        field: "AppendEntriesResponse.outcome",
                    })
                }
            };
            MessageBody::AppendEntriesResponse { outcome }
        }
        Body::Heartbeat(heartbeat) => MessageBody::Heartbeat {
            leader_commit: heartbeat.leader_commit,
            read_round: heartbeat.read_round,
        },
        Body::HeartbeatResponse(response) => MessageBody::HeartbeatResponse {
            read_round: response.read_round,
        },
        Body::InstallSnapshot(install) => {
            let snapshot = install.snapshot.ok_or(ConvertError::Missing {
                field: "InstallSnapshot.snapshot",
            })?;
            MessageBody::InstallSnapshot {
                snapshot: snapshot.try_into()?,
            }
        }
        Body::TimeoutNow(pb::TimeoutNow {}) => MessageBody::TimeoutNow,
        Body::ReadIndexRequest(request) => MessageBody::ReadIndexRequest {
            context: request.context,
        },
        Body::ReadIndexResponse(response) => MessageBody::ReadIndexResponse {
            context: response.context,
            index: response.index,
        },
    };
    Ok(body)
}

impl TryFrom<pb::Entry> for Entry {
    type Error = ConvertError;

    fn try_from(entry: pb::Entry) -> Result<Entry, ConvertError> {
        let payload = match entry.payload {
            Some(Payload::Empty(pb::EmptyPayload {})) => EntryPayload::Empty,
            Some(Payload::Normal(data)) => EntryPayload::Normal(data),
            Some(Payload::ConfigChange(change)) => EntryPayload::ConfigChange(change.try_into()?),
            None => {
                return Err(ConvertError::Missing {
                    field: "Entry.payload",
                })
            }
        };
        Ok(Entry {
            term: entry.term,
            index: entry.index,
            payload,
        })
    }
}

impl TryFrom<pb::ConfigChange> for ConfigChange {
    type Error = ConvertError;

    fn try_from(change: pb::ConfigChange) -> Result<ConfigChange, ConvertError> {
        let steps = change
            .steps
            .into_iter()
            .map(|step| {
                let node = node_id(step.node, "ConfigChangeStep.node")?;
                match pb::ConfigChangeStepKind::try_from(step.kind) {
                    Ok(pb::ConfigChangeStepKind::AddVoter) => Ok(ConfigChangeStep::AddVoter(node)),
                    Ok(pb::ConfigChangeStepKind::AddLearner) => {
                        Ok(ConfigChangeStep::AddLearner(node))
                    }
                    Ok(pb::ConfigChangeStepKind::RemoveNode) => {
                        Ok(ConfigChangeStep::RemoveNode(node))
                    }
                    Ok(pb::ConfigChangeStepKind::Unspecified) | Err(_) => {
                        Err(ConvertError::UnknownEnumValue {
                            field: "ConfigChangeStep.kind",
                            value: step.kind,
                        })
                    }
                }
            })
            .collect::<Result<_, _>>()?;
        let transition = match pb::ConfigTransition::try_from(change.transition) {
            Ok(pb::ConfigTransition::Auto) => ConfigTransition::Auto,
            Ok(pb::ConfigTransition::JointAutoLeave) => ConfigTransition::JointAutoLeave,
            Ok(pb::ConfigTransition::JointExplicitLeave) => ConfigTransition::JointExplicitLeave,
            Ok(pb::ConfigTransition::Unspecified) | Err(_) => {
                return Err(ConvertError::UnknownEnumValue {
                    field: "ConfigChange.transition",
                    value: change.transition,
                })
            }
        };
        Ok(ConfigChange { steps, transition })
    }
}

impl TryFrom<pb::Snapshot> for Snapshot {
    type Error = ConvertError;

    fn try_from(snapshot: pb::Snapshot) -> Result<Snapshot, ConvertError> {
        let meta = snapshot.meta.ok_or(ConvertError::Missing {
            field: "Snapshot.meta",
        })?;
        let config = meta.config.ok_or(ConvertError::Missing {
            field: "SnapshotMeta.config",
        })?;
        Ok(Snapshot {
            meta: SnapshotMeta {
                index: meta.index,
                term: meta.term,
                config: config.try_into()?,
            },
            data: snapshot.data,
        })
    }
}

impl TryFrom<pb::ConfigState> for ConfigState {
    type Error = ConvertError;

    fn try_from(config: pb::ConfigState) -> Result<ConfigState, ConvertError> {
        Ok(ConfigState {
            voters: node_ids(config.voters, "ConfigState.voters")?,
            voters_outgoing: node_ids(config.voters_outgoing, "ConfigState.voters_outgoing")?,
            learners: node_ids(config.learners, "ConfigState.learners")?,
            learners_next: node_ids(config.learners_next, "ConfigState.learners_next")?,
            auto_leave: config.auto_leave,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;
    use prost::Message as _;

    fn node() -> impl Strategy<Value = NodeId> {
        1..=u64::MAX
    }

    fn nodes() -> impl Strategy<Value = Vec<NodeId>> {
        proptest::collection::vec(node(), 0..5)
    }

    fn config_state() -> impl Strategy<Value = ConfigState> {
        (nodes(), nodes(), nodes(), nodes(), any::<bool>()).prop_map(
            |(voters, voters_outgoing, learners, learners_next, auto_leave)| ConfigState {
                voters,
                voters_outgoing,
                learners,
                learners_next,
                auto_leave,
            },
        )
    }

    fn config_change() -> impl Strategy<Value = ConfigChange> {
        let step = prop_oneof![
            node().prop_map(ConfigChangeStep::AddVoter),
            node().prop_map(ConfigChangeStep::AddLearner),
            node().prop_map(ConfigChangeStep::RemoveNode),
        ];
        let transition = prop_oneof![
            Just(ConfigTransition::Auto),
            Just(ConfigTransition::JointAutoLeave),
            Just(ConfigTransition::JointExplicitLeave),
        ];
        (proptest::collection::vec(step, 0..4), transition)
            .prop_map(|(steps, transition)| ConfigChange { steps, transition })
    }

    fn bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let payload = prop_oneof![
            Just(EntryPayload::Empty),
            bytes().prop_map(EntryPayload::Normal),
            config_change().prop_map(EntryPayload::ConfigChange),
        ];
        (any::<u64>(), any::<u64>(), payload).prop_map(|(term, index, payload)| Entry {
            term,
            index,
            payload,
        })
    }

    fn outcome() -> impl Strategy<Value = AppendOutcome> {
        prop_oneof![
            any::<u64>().prop_map(|match_index| AppendOutcome::Accepted { match_index }),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(rejected_index, hint_index, hint_term)| AppendOutcome::Rejected {
                    rejected_index,
                    hint_index,
                    hint_term,
                }
            ),
        ]
    }

    fn snapshot() -> impl Strategy<Value = Snapshot> {
        (any::<u64>(), any::<u64>(), config_state(), bytes()).prop_map(
            |(index, term, config, data)| Snapshot {
                meta: SnapshotMeta {
                    index,
                    term,
                    config,
                },
                data,
            },
        )
    }

    fn body() -> impl Strategy<Value = MessageBody> {
        prop_oneof![
            (any::<bool>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
                |(pre_vote, last_log_index, last_log_term, leadership_transfer)| {
                    MessageBody::VoteRequest {
                        pre_vote,
                        last_log_index,
                        last_log_term,
                        leadership_transfer,
                    }
                }
            ),
            (any::<bool>(), any::<bool>())
                .prop_map(|(pre_vote, granted)| MessageBody::VoteResponse { pre_vote, granted }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(entry(), 0..6),
                any::<u64>()
            )
                .prop_map(|(prev_log_index, prev_log_term, entries, leader_commit)| {
                    MessageBody::AppendEntries {
                        prev_log_index,
                        prev_log_term,
                        entries,
                        leader_commit,
                    }
                }),
            outcome().prop_map(|outcome| MessageBody::AppendEntriesResponse { outcome }),
            (any::<u64>(), any::<u64>()).prop_map(|(leader_commit, read_round)| {
                MessageBody::Heartbeat {
                    leader_commit,
                    read_round,
                }
            }),
            any::<u64>().prop_map(|read_round| MessageBody::HeartbeatResponse { read_round }),
            snapshot().prop_map(|snapshot| MessageBody::InstallSnapshot { snapshot }),
            Just(MessageBody::TimeoutNow),
            any::<u64>().prop_map(|context| MessageBody::ReadIndexRequest { context }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(context, index)| MessageBody::ReadIndexResponse { context, index }),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        (node(), node(), any::<u64>(), body()).prop_map(|(from, to, term, body)| Message {
            from,
            to,
            term,
            body,
        })
    }

    fn encode(message: &Message) -> Bytes {
        let proto = pb::Message::from(message.clone());
        let mut buffer = BytesMut::with_capacity(proto.encoded_len());
        proto.encode(&mut buffer).expect("buffer has the capacity");
        buffer.freeze()
    }

    proptest! {
        #[test]
        fn round_trip_through_bytes(message in message()) {
            let encoded = encode(&message);
            let decoded = pb::Message::decode(encoded).expect("our own encoding decodes");
            let back = Message::try_from(decoded).expect("our own encoding converts");
            prop_assert_eq!(back, message);
        }

        /// Whatever a peer sends, decoding and converting end in a value or an error.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(batch) = pb::MessageBatch::decode(Bytes::from(data)) {
                for message in batch.messages {
                    if let Ok(message) = Message::try_from(message) {
                        prop_assert!(message.from != 0);
                        prop_assert!(message.to != 0);
                    }
                }
            }
        }

        /// A valid encoding with some bytes flipped converts or fails cleanly.
        #[test]
        fn corrupted_encodings_never_panic(
            message in message(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
        ) {
            let mut encoded = encode(&message).to_vec();
            if !encoded.is_empty() {
                for (position, mask) in flips {
                    let position = position.index(encoded.len());
                    encoded[position] ^= mask;
                }
            }
            if let Ok(proto) = pb::Message::decode(Bytes::from(encoded)) {
                let _ = Message::try_from(proto);
            }
        }
    }

    #[test]
    fn payload_bytes_decoded_from_a_frame_share_its_buffer() {
        let payload = Bytes::from(vec![7u8; 4096]);
        let message = Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![Entry {
                    term: 3,
                    index: 1,
                    payload: EntryPayload::Normal(payload),
                }],
                leader_commit: 0,
            },
        };
        let frame = encode(&message);
        let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let decoded = Message::try_from(pb::Message::decode(frame.clone()).unwrap()).unwrap();
        let MessageBody::AppendEntries { entries, .. } = decoded.body else {
            panic!("decoded into another kind: {decoded:?}");
        };
        let EntryPayload::Normal(data) = &entries[0].payload else {
            panic!("decoded into another payload: {:?}", entries[0]);
        };
        assert_eq!(data.len(), 4096);
        assert!(frame_range.contains(&(data.as_ptr() as usize)));
    }

    fn heartbeat() -> pb::Message {
        pb::Message::from(Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::Heartbeat {
                leader_commit: 0,
                read_round: 0,
            },
        })
    }

    #[test]
    fn a_message_without_body_is_rejected() {
        let mut proto = heartbeat();
        proto.body = None;
        assert_eq!(
            Message::try_from(proto),
            Err(ConvertError::Missing {
                field: "Message.body"
            })
        );
    }

    #[test]
    fn a_message_of_an_unknown_kind_is_rejected() {
        // Field 99 stands for a kind a newer peer might send: prost skips it and leaves the
        // oneof unset.
        let mut encoded = BytesMut::new();
        prost::encoding::uint64::encode(1, &1, &mut encoded);
        prost::encoding::uint64::encode(2, &2, &mut encoded);
        prost::encoding::uint64::encode(99, &5, &mut encoded);
        let proto = pb::Message::decode(encoded.freeze()).unwrap();
        assert_eq!(
            Message::try_from(proto),
            Err(ConvertError::Missing {
                field: "Message.body"
            })
        );
    }

    #[test]
    fn node_id_zero_is_rejected_as_sender_and_receiver() {
        let mut proto = heartbeat();
        proto.from = 0;
        assert_eq!(
            Message::try_from(proto),
            Err(ConvertError::ZeroNodeId {
                field: "Message.from"
            })
        );
        let mut proto = heartbeat();
        proto.to = 0;
        assert_eq!(
            Message::try_from(proto),
            Err(ConvertError::ZeroNodeId {
                field: "Message.to"
            })
        );
    }

    #[test]
    fn node_id_zero_is_rejected_in_a_configuration() {
        let mut config = ConfigState::with_voters([1, 2]);
        config.learners = vec![0];
        let proto = pb::Message::from(Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: 1,
                        term: 1,
                        config,
                    },
                    data: Bytes::new(),
                },
            },
        });
        assert_eq!(
            Message::try_from(proto),
            Err(ConvertError::ZeroNodeId {
                field: "ConfigState.learners"
            })
        );
    }

    fn append_one(payload: Option<Payload>) -> pb::Message {
        pb::Message {
            from: 1,
            to: 2,
            term: 1,
            body: Some(Body::AppendEntries(pb::AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![pb::Entry {
                    term: 1,
                    index: 1,
                    payload,
                }],
                leader_commit: 0,
            })),
        }
    }

    #[test]
    fn an_entry_without_payload_is_rejected() {
        assert_eq!(
            Message::try_from(append_one(None)),
            Err(ConvertError::Missing {
                field: "Entry.payload"
            })
        );
    }

    #[test]
    fn config_change_steps_with_unknown_kind_or_node_zero_are_rejected() {
        let change = |kind: i32, node: u64| {
            append_one(Some(Payload::ConfigChange(pb::ConfigChange {
                steps: vec![pb::ConfigChangeStep { kind, node }],
                transition: pb::ConfigTransition::Auto.into(),
            })))
        };
        assert_eq!(
            Message::try_from(change(0, 3)),
            Err(ConvertError::UnknownEnumValue {
                field: "ConfigChangeStep.kind",
                value: 0
            })
        );
        assert_eq!(
            Message::try_from(change(42, 3)),
            Err(ConvertError::UnknownEnumValue {
                field: "ConfigChangeStep.kind",
                value: 42
            })
        );
        assert_eq!(
            Message::try_from(change(pb::ConfigChangeStepKind::AddVoter.into(), 0)),
            Err(ConvertError::ZeroNodeId {
                field: "ConfigChangeStep.node"
            })
        );
    }

    #[test]
    fn an_unspecified_transition_is_rejected() {
        let proto = append_one(Some(Payload::ConfigChange(pb::ConfigChange {
            steps: vec![],
            transition: 0,
        })));
        assert_eq!(
            Message::try_from(proto),
            Err(ConvertError::UnknownEnumValue {
                field: "ConfigChange.transition",
                value: 0
            })
        );
    }

    #[test]
    fn missing_outcome_snapshot_meta_and_config_are_rejected() {
        let mut proto = heartbeat();
        proto.body = Some(Body::AppendEntriesResponse(pb::AppendEntriesResponse {
            outcome: None,
        }));
        assert_eq!(
            Message::try_from(proto.clone()),
            Err(ConvertError::Missing {
                field: "AppendEntriesResponse.outcome"
            })
        );
        proto.body = Some(Body::InstallSnapshot(pb::InstallSnapshot {
            snapshot: None,
        }));
        assert_eq!(
            Message::try_from(proto.clone()),
            Err(ConvertError::Missing {
                field: "InstallSnapshot.snapshot"
            })
        );
        proto.body = Some(Body::InstallSnapshot(pb::InstallSnapshot {
            snapshot: Some(pb::Snapshot {
                meta: None,
                data: Bytes::new(),
            }),
        }));
        assert_eq!(
            Message::try_from(proto.clone()),
            Err(ConvertError::Missing {
                field: "Snapshot.meta"
            })
        );
        proto.body = Some(Body::InstallSnapshot(pb::InstallSnapshot {
            snapshot: Some(pb::Snapshot {
                meta: Some(pb::SnapshotMeta {
                    index: 1,
                    term: 1,
                    config: None,
                }),
                data: Bytes::new(),
            }),
        }));
        assert_eq!(
            Message::try_from(proto),
            Err(ConvertError::Missing {
                field: "SnapshotMeta.config"
            })
        );
    }
}

//! The compact little-endian binary encoding of entries, hard states and snapshot metadata, as
//! FORMAT.md describes it. Decoding reads from a shared [`Bytes`] buffer so that entry payloads
//! come back as slices of it, not copies.

use bytes::Bytes;
use raft::{
    ConfigChange, ConfigChangeStep, ConfigState, ConfigTransition, Entry, EntryPayload, HardState,
    NodeId, SnapshotMeta,
};

/// Why bytes that passed their checksum still could not be decoded: a bug or a foreign file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) String);

pub(crate) type DecodeResult<T> = Result<T, DecodeError>;

pub(crate) fn put_u8(buffer: &mut Vec<u8>, value: u8) {
    buffer.push(value);
}

pub(crate) fn put_u32(buffer: &mut Vec<u8>, value: u32) {
    buffer.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(buffer: &mut Vec<u8>, value: u64) {
    buffer.extend_from_slice(&value.to_le_bytes());
}

/// Reads values in order from a shared buffer.
pub(crate) struct Decoder {
    buffer: Bytes,
    position: usize,
}

impl Decoder {
    pub(crate) fn new(buffer: Bytes) -> Decoder {
        Decoder {
            buffer,
            position: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.position == self.buffer.len()
    }

    fn take(&mut self, length: usize) -> DecodeResult<Bytes> {
        if self.buffer.len() - self.position < length {
            return Err(DecodeError(format!(
                "needs {length} bytes at {} of {}",
                self.position,
                self.buffer.len()
            )));
        }
        let slice = self.buffer.slice(self.position..self.position + length);
        self.position += length;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let slice = self.take(N)?;
        Ok(slice.as_ref().try_into().expect("take returned N bytes"))
    }

    pub(crate) fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn bytes(&mut self, length: usize) -> DecodeResult<Bytes> {
        self.take(length)
    }

    /// A count that must fit in what is left, at `minimum_item_bytes` per item, so that a bad
    /// count cannot make the decoder allocate without bound.
    fn count(&mut self, minimum_item_bytes: usize) -> DecodeResult<usize> {
        let count = self.u32()? as usize;
        let left = self.buffer.len() - self.position;
        if count.saturating_mul(minimum_item_bytes) > left {
            return Err(DecodeError(format!(
                "count {count} exceeds the {left} bytes left"
            )));
        }
        Ok(count)
    }
}

const PAYLOAD_EMPTY: u8 = 0;
const PAYLOAD_NORMAL: u8 = 1;
const PAYLOAD_CONFIG_CHANGE: u8 = 2;

const STEP_ADD_VOTER: u8 = 0;
const STEP_ADD_LEARNER: u8 = 1;
const STEP_REMOVE_NODE: u8 = 2;

const TRANSITION_AUTO: u8 = 0;
const TRANSITION_JOINT_AUTO_LEAVE: u8 = 1;
const TRANSITION_JOINT_EXPLICIT_LEAVE: u8 = 2;

/// The encoded size of `entries` as [`encode_entries`] writes them, to size buffers.
pub(crate) fn encoded_entries_size_bytes(entries: &[Entry]) -> usize {
    let per_entry: usize = entries
        .iter()
        .map(|entry| {
            9 + match &entry.payload {
                EntryPayload::Empty => 0,
                EntryPayload::Normal(data) => 4 + data.len(),
                EntryPayload::ConfigChange(change) => 5 + 9 * change.steps.len(),
            }
        })
        .sum();
    12 + per_entry
}

/// Writes consecutive entries: first index, count, then per entry its term and payload.
pub(crate) fn encode_entries(buffer: &mut Vec<u8>, entries: &[Entry]) {
    let first_index = entries.first().map_or(0, |entry| entry.index);
    put_u64(buffer, first_index);
    put_u32(
        buffer,
        u32::try_from(entries.len()).expect("a batch holds fewer than 2^32 entries"),
    );
    for entry in entries {
        put_u64(buffer, entry.term);
        match &entry.payload {
            EntryPayload::Empty => put_u8(buffer, PAYLOAD_EMPTY),
            EntryPayload::Normal(data) => {
                put_u8(buffer, PAYLOAD_NORMAL);
                put_u32(
                    buffer,
                    u32::try_from(data.len()).expect("an entry is under 4 GiB"),
                );
                buffer.extend_from_slice(data);
            }
            EntryPayload::ConfigChange(change) => {
                put_u8(buffer, PAYLOAD_CONFIG_CHANGE);
                encode_config_change(buffer, change);
            }
        }
    }
}

fn encode_config_change(buffer: &mut Vec<u8>, change: &ConfigChange) {
    let transition = match change.transition {
        ConfigTransition::Auto => TRANSITION_AUTO,
        ConfigTransition::JointAutoLeave => TRANSITION_JOINT_AUTO_LEAVE,
        ConfigTransition::JointExplicitLeave => TRANSITION_JOINT_EXPLICIT_LEAVE,
    };
    put_u8(buffer, transition);
    put_u32(buffer, change.steps.len() as u32);
    for step in &change.steps {
        let kind = match step {
            ConfigChangeStep::AddVoter(_) => STEP_ADD_VOTER,
            ConfigChangeStep::AddLearner(_) => STEP_ADD_LEARNER,
            ConfigChangeStep::RemoveNode(_) => STEP_REMOVE_NODE,
        };
        put_u8(buffer, kind);
        put_u64(buffer, step.node());
    }
}

/// Reads what [`encode_entries`] wrote.
pub(crate) fn decode_entries(decoder: &mut Decoder) -> DecodeResult<Vec<Entry>> {
    let first_index = decoder.u64()?;
    let count = decoder.count(9)?;
    let mut entries = Vec::with_capacity(count);
    for offset in 0..count as u64 {
        let term = decoder.u64()?;
        let payload = match decoder.u8()? {
            PAYLOAD_EMPTY => EntryPayload::Empty,
            PAYLOAD_NORMAL => {
                let length = decoder.u32()? as usize;
                EntryPayload::Normal(decoder.bytes(length)?)
            }
            PAYLOAD_CONFIG_CHANGE => EntryPayload::ConfigChange(decode_config_change(decoder)?),
            other => return Err(DecodeError(format!("unknown payload kind {other}"))),
        };
        entries.push(Entry {
            term,
            index: first_index + offset,
            payload,
        });
    }
    Ok(entries)
}

fn decode_config_change(decoder: &mut Decoder) -> DecodeResult<ConfigChange> {
    let transition = match decoder.u8()? {
        TRANSITION_AUTO => ConfigTransition::Auto,
        TRANSITION_JOINT_AUTO_LEAVE => ConfigTransition::JointAutoLeave,
        TRANSITION_JOINT_EXPLICIT_LEAVE => ConfigTransition::JointExplicitLeave,
        other => return Err(DecodeError(format!("unknown transition {other}"))),
    };
    let count = decoder.count(9)?;
    let mut steps = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = decoder.u8()?;
        let node = decoder.u64()?;
        steps.push(match kind {
            STEP_ADD_VOTER => ConfigChangeStep::AddVoter(node),
            STEP_ADD_LEARNER => ConfigChangeStep::AddLearner(node),
            STEP_REMOVE_NODE => ConfigChangeStep::RemoveNode(node),
            other => return Err(DecodeError(format!("unknown step kind {other}"))),
        });
    }
    Ok(ConfigChange { steps, transition })
}

/// Term, vote flag and vote, commit: 25 bytes.
pub(crate) fn encode_hard_state(buffer: &mut Vec<u8>, hard_state: &HardState) {
    put_u64(buffer, hard_state.term);
    put_u8(buffer, u8::from(hard_state.vote.is_some()));
    put_u64(buffer, hard_state.vote.unwrap_or(0));
    put_u64(buffer, hard_state.commit);
}

/// Reads what [`encode_hard_state`] wrote.
pub(crate) fn decode_hard_state(decoder: &mut Decoder) -> DecodeResult<HardState> {
    let term = decoder.u64()?;
    let has_vote = decoder.u8()?;
    let vote = decoder.u64()?;
    let commit = decoder.u64()?;
    let vote = match has_vote {
        0 => None,
        1 => Some(vote),
        other => return Err(DecodeError(format!("bad vote flag {other}"))),
    };
    Ok(HardState { term, vote, commit })
}

fn encode_nodes(buffer: &mut Vec<u8>, nodes: &[NodeId]) {
    put_u32(buffer, nodes.len() as u32);
    for node in nodes {
        put_u64(buffer, *node);
    }
}

fn decode_nodes(decoder: &mut Decoder) -> DecodeResult<Vec<NodeId>> {
    let count = decoder.count(8)?;
    (0..count).map(|_| decoder.u64()).collect()
}

/// Index, term, then the configuration's four node lists and its auto-leave flag.
pub(crate) fn encode_snapshot_meta(buffer: &mut Vec<u8>, meta: &SnapshotMeta) {
    put_u64(buffer, meta.index);
    put_u64(buffer, meta.term);
    encode_nodes(buffer, &meta.config.voters);
    encode_nodes(buffer, &meta.config.voters_outgoing);
    encode_nodes(buffer, &meta.config.learners);
    encode_nodes(buffer, &meta.config.learners_next);
    put_u8(buffer, u8::from(meta.config.auto_leave));
}

/// Reads what [`encode_snapshot_meta`] wrote.
pub(crate) fn decode_snapshot_meta(decoder: &mut Decoder) -> DecodeResult<SnapshotMeta> {
    let index = decoder.u64()?;
    let term = decoder.u64()?;
    let voters = decode_nodes(decoder)?;
    let voters_outgoing = decode_nodes(decoder)?;
    let learners = decode_nodes(decoder)?;
    let learners_next = decode_nodes(decoder)?;
    let auto_leave = match decoder.u8()? {
        0 => false,
        1 => true,
        other => return Err(DecodeError(format!("bad auto-leave flag {other}"))),
    };
    let config = ConfigState {
        voters,
        voters_outgoing,
        learners,
        learners_next,
        auto_leave,
    };
    Ok(SnapshotMeta {
        index,
        term,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_share_the_buffer() {
        let entries = vec![
            Entry {
                term: 3,
                index: 7,
                payload: EntryPayload::Empty,
            },
            Entry {
                term: 3,
                index: 8,
                payload: EntryPayload::Normal(Bytes::from_static(b"put")),
            },
            Entry {
                term: 4,
                index: 9,
                payload: EntryPayload::ConfigChange(ConfigChange {
                    steps: vec![
                        ConfigChangeStep::AddVoter(4),
                        ConfigChangeStep::AddLearner(5),
                        ConfigChangeStep::RemoveNode(1),
                    ],
                    transition: ConfigTransition::JointExplicitLeave,
                }),
            },
        ];
        let mut buffer = Vec::new();
        encode_entries(&mut buffer, &entries);
        assert_eq!(buffer.len(), encoded_entries_size_bytes(&entries));
        let shared = Bytes::from(buffer);
        let decoded = decode_entries(&mut Decoder::new(shared.clone())).unwrap();
        assert_eq!(decoded, entries);
        let EntryPayload::Normal(data) = &decoded[1].payload else {
            panic!("normal entry")
        };
        let start = shared.as_ptr() as usize;
        let inside = data.as_ptr() as usize;
        assert!(inside > start, "the payload points into the read buffer");
        assert!(
            inside < start + shared.len(),
            "the payload points into the read buffer"
        );
    }

    #[test]
    fn hard_state_and_snapshot_meta_round_trip() {
        for hard_state in [
            HardState::default(),
            HardState {
                term: 9,
                vote: Some(0),
                commit: 4,
            },
            HardState {
                term: u64::MAX,
                vote: Some(3),
                commit: u64::MAX,
            },
        ] {
            let mut buffer = Vec::new();
            encode_hard_state(&mut buffer, &hard_state);
            let decoded = decode_hard_state(&mut Decoder::new(Bytes::from(buffer))).unwrap();
            assert_eq!(decoded, hard_state);
        }
        let meta = SnapshotMeta {
            index: 10,
            term: 2,
            config: ConfigState {
                voters: vec![1, 2, 3],
                voters_outgoing: vec![1, 2],
                learners: vec![7],
                learners_next: vec![2],
                auto_leave: true,
            },
        };
        let mut buffer = Vec::new();
        encode_snapshot_meta(&mut buffer, &meta);
        assert_eq!(
            decode_snapshot_meta(&mut Decoder::new(Bytes::from(buffer))).unwrap(),
            meta
        );
    }

    #[test]
    fn a_huge_count_is_an_error_not_an_allocation() {
        let mut buffer = Vec::new();
        put_u64(&mut buffer, 1);
        put_u32(&mut buffer, u32::MAX);
        assert!(decode_entries(&mut Decoder::new(Bytes::from(buffer))).is_err());
    }
}

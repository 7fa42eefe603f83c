//! An in-memory three-node cluster driven in one thread, every node going through the full
//! Ready cycle (persist into MemoryStorage, send, apply, advance). Shared by the throughput
//! example and the criterion benchmark.

use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::{Config, ConfigState, EntryPayload, MemoryStorage, Message, Node, NodeId, Role};

/// What one run measured.
pub struct Measurement {
    /// Entries committed and applied on every node.
    pub entries: u64,
    /// Wall-clock time from the first proposal until every node applied the last entry.
    pub elapsed: Duration,
}

impl Measurement {
    /// Committed entries per second.
    pub fn entries_per_second(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64()
    }
}

/// The cluster: nodes 1, 2, 3 and the messages in flight between them.
pub struct Cluster {
    nodes: Vec<Node<MemoryStorage>>,
    in_flight: Vec<Message>,
    applied_entries: Vec<u64>,
    applied_index: Vec<u64>,
}

/// Entries below this many behind the applied index are compacted away, as a server would.
const COMPACTION_LAG_ENTRIES: u64 = 50_000;

impl Cluster {
    /// Three voters; node 1 is elected before this returns.
    pub fn new() -> Cluster {
        let config_state = ConfigState::with_voters([1, 2, 3]);
        let nodes = (1..=3)
            .map(|id| {
                let storage = MemoryStorage::new_with_config(config_state.clone());
                Node::new(Config::new(id), storage).expect("valid config")
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            in_flight: Vec::new(),
            applied_entries: vec![0; 3],
            applied_index: vec![0; 3],
        };
        cluster.nodes[0].campaign_now();
        loop {
            let progressed = cluster.step_all();
            if !progressed && cluster.nodes[0].role() == Role::Leader {
                break;
            }
        }
        cluster
    }

    fn node_position(id: NodeId) -> usize {
        (id - 1) as usize
    }

    /// Handles every node's Ready once and delivers what they sent. Returns true if anything
    /// happened.
    fn step_all(&mut self) -> bool {
        let mut progress = false;
        for position in 0..self.nodes.len() {
            let node = &mut self.nodes[position];
            while node.has_ready() {
                progress = true;
                let mut ready = node.ready();
                self.in_flight
                    .extend(std::mem::take(&mut ready.early_messages));
                if let Some(snapshot) = &ready.snapshot {
                    node.storage_mut().apply_snapshot(snapshot.clone());
                }
                node.storage_mut()
                    .append_owned(std::mem::take(&mut ready.entries));
                if let Some(hard_state) = ready.hard_state {
                    node.storage_mut().set_hard_state(hard_state);
                }
                self.in_flight.extend(ready.messages);
                for entry in &ready.committed_entries {
                    if let EntryPayload::Normal(data) = &entry.payload {
                        // "Applying" reads the payload, as a state machine would.
                        std::hint::black_box(data.len());
                        self.applied_entries[position] += 1;
                    }
                    self.applied_index[position] = entry.index;
                }
                node.advance();
                let applied = self.applied_index[position];
                if applied % COMPACTION_LAG_ENTRIES < 64 && applied > COMPACTION_LAG_ENTRIES {
                    let config = node.config_state().clone();
                    let storage = node.storage_mut();
                    if storage.create_snapshot(applied, config, Bytes::new()) {
                        storage.compact(applied - COMPACTION_LAG_ENTRIES / 2);
                    }
                }
            }
        }
        for message in std::mem::take(&mut self.in_flight) {
            progress = true;
            let position = Self::node_position(message.to);
            self.nodes[position].step(message);
        }
        progress
    }

    /// Proposes `total` entries of `payload_bytes` bytes each, `batch` at a time, and runs
    /// until every node has applied them all.
    pub fn run(&mut self, total: u64, batch: u64, payload_bytes: usize) -> Measurement {
        // One buffer whose slices are the payloads: entries share it, nothing is copied.
        let buffer = Bytes::from(vec![7u8; payload_bytes * batch as usize]);
        let start_applied: Vec<u64> = self.applied_entries.clone();
        let start = Instant::now();
        let mut proposed = 0;
        while self
            .applied_entries
            .iter()
            .zip(&start_applied)
            .any(|(now, before)| now - before < total)
        {
            if proposed < total {
                let count = batch.min(total - proposed);
                for position in 0..count as usize {
                    let payload =
                        buffer.slice(position * payload_bytes..(position + 1) * payload_bytes);
                    self.nodes[0]
                        .propose(payload)
                        .expect("the leader takes proposals");
                }
                proposed += count;
            }
            self.step_all();
        }
        Measurement {
            entries: total,
            elapsed: start.elapsed(),
        }
    }
}
